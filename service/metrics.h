/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's Prometheus metrics: counters incremented by the main loop
 * (lock-free), and an optional HTTP listener (libmicrohttpd, its own
 * thread) serving them at /metrics together with per-deployment gauges,
 * which that thread reads at scrape time over its own database connection,
 * so a scrape never holds up releases and costs nothing when nobody
 * scrapes.  Every function accepts a NULL struct pd_metrics (metrics off). */
#ifndef PINION_SERVICE_METRICS_H
#define PINION_SERVICE_METRICS_H

#include <stdbool.h>

#include "err.h"

enum pd_counter {
    PD_M_RELEASES,      /* manifests issued to devices by a deployment */
    PD_M_COMPLETIONS,   /* devices that reported the update complete */
    PD_M_FAILURES,      /* failed attempts reported by devices */
    PD_M_PENALTIES,     /* devices held back after max_attempts failures */
    PD_M_CHECKS,        /* release checks that verified the stored artifact */
    PD_M_CHECKS_FAILED, /* ... and found it unusable */
    PD_M_CHECK_US,      /* microseconds spent in them */
    PD_M_CHUNK_BYTES,   /* firmware bytes served in chunks */
    PD_M_DB_ERRORS,     /* failed database operations (and lost connections) */
    PD_M_COUNT
};

struct pd_metrics;

/* Starts the listener on `listen` ("HOST:PORT", "[IPv6]:PORT"); database
 * is the conninfo of piniond's own connection.  NULL and err set on
 * failure (a bad address, a port in use). */
struct pd_metrics *pd_metrics_start(const char *listen, const char *database, struct pn_err *err);
void pd_metrics_stop(struct pd_metrics *m);

void pd_metrics_add(struct pd_metrics *m, enum pd_counter c, unsigned long n);
/* A release check that started at `since_us` (pn_mono_us, fsutil.h) ended. */
void pd_metrics_check_done(struct pd_metrics *m, long long since_us, bool ok);
/* piniond's session to broker BROKER_ID (the registry's name) is up or down. */
void pd_metrics_broker(struct pd_metrics *m, const char *broker_id, bool connected);

#endif
