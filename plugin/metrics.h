/* SPDX-License-Identifier: Apache-2.0 */
/* The plugin's counters, published under $SYS/broker/pinion/ (retained,
 * like Mosquitto's own $SYS tree) every sys_interval seconds.  CONNECT and
 * kicks only increment integers here; formatting and publishing happen on
 * TICK, and only values that changed since the last publication are sent
 * again.  No Mosquitto calls: the caller passes the publish function. */
#ifndef PINION_PLUGIN_METRICS_H
#define PINION_PLUGIN_METRICS_H

#include <stdbool.h>
#include <time.h>

#include "policy.h"
#include "state.h"

#define PN_SYS_ROOT "$SYS/broker/pinion/"

/* Published values, in publication order; names are the topics below
 * PN_SYS_ROOT. */
enum pn_metric {
    PN_M_ADMITTED_PINNED,
    PN_M_ADMITTED_NEW,
    PN_M_ADMITTED_SERVICE,
    PN_M_REFUSED_TOTAL,
    PN_M_REFUSED_FIRST, /* PN_REFUSED_COUNT values, one per pn_refusal */
    PN_M_PINS_CREATED = PN_M_REFUSED_FIRST + PN_REFUSED_COUNT,
    PN_M_PINS_TOTAL,
    PN_M_KICKS,
    PN_M_CA_SIG_CHECKED,  /* a registered CA's signature checked on a first connect */
    PN_M_CA_SIG_FROM_TLS, /* ... known from the TLS handshake instead (handshake.h) */
    PN_M_DB_CONNECTED,
    PN_M_DB_DISCONNECTS,
    PN_M_LOAD_AT,
    PN_M_LOAD_CAS,
    PN_M_LOAD_DEVICES,
    PN_M_LOAD_PINS,
    PN_M_LOAD_SERVICES,
    PN_M_COUNT
};

struct pn_metrics {
    unsigned long v[PN_M_COUNT];
    unsigned long sent[PN_M_COUNT];
    bool ever_sent;
    int interval_s; /* 0: not published */
    time_t next_at;
};

/* Counts one CONNECT decision (the broker's thread, on the CONNECT path:
 * integer increments only). */
void pn_metrics_admission(struct pn_metrics *m, const struct pn_admission *a);

/* A complete state was loaded from the database and applied at `now`. */
void pn_metrics_loaded(struct pn_metrics *m, const struct pn_state *s, time_t now);

/* The topic (below PN_SYS_ROOT) of a metric, e.g. "refused/expired". */
const char *pn_metrics_name(enum pn_metric i);

typedef void (*pn_metrics_publish_fn)(void *arg, const char *topic, const char *value);

/* Called on every TICK: when interval_s has passed, records the gauges
 * (db_ready, the state's pin count) and publishes every value that changed
 * (all of them the first time).  Returns how many were published. */
int pn_metrics_tick(struct pn_metrics *m, const struct pn_state *s, bool db_ready, time_t now,
                    pn_metrics_publish_fn publish, void *arg);

#endif
