/* SPDX-License-Identifier: Apache-2.0 */
/* $SYS/broker/pinion/...: what the plugin decided and what it holds, for
 * the dashboards and exporters that already read Mosquitto's $SYS tree. */
#include "metrics.h"

#include <stdio.h>
#include <string.h>

static const char *const names[PN_M_COUNT] = {
    [PN_M_ADMITTED_PINNED] = "admitted/pinned",
    [PN_M_ADMITTED_NEW] = "admitted/new",
    [PN_M_ADMITTED_SERVICE] = "admitted/service",
    [PN_M_REFUSED_TOTAL] = "refused/total",
    [PN_M_REFUSED_FIRST + PN_REFUSED_NO_CERT] = "refused/no_certificate",
    [PN_M_REFUSED_FIRST + PN_REFUSED_BAD_CERT] = "refused/bad_certificate",
    [PN_M_REFUSED_FIRST + PN_REFUSED_UNKNOWN_CA] = "refused/unknown_ca",
    [PN_M_REFUSED_FIRST + PN_REFUSED_CA_DISABLED] = "refused/ca_disabled",
    [PN_M_REFUSED_FIRST + PN_REFUSED_REVOKED] = "refused/revoked",
    [PN_M_REFUSED_FIRST + PN_REFUSED_DELETED] = "refused/deleted",
    [PN_M_REFUSED_FIRST + PN_REFUSED_EXPIRED] = "refused/expired",
    [PN_M_REFUSED_FIRST + PN_REFUSED_CLIENT_ID] = "refused/client_id",
    [PN_M_REFUSED_FIRST + PN_REFUSED_IDENTIFIER] = "refused/identifier",
    [PN_M_REFUSED_FIRST + PN_REFUSED_UNKNOWN_DEVICE] = "refused/unknown_device",
    [PN_M_REFUSED_FIRST + PN_REFUSED_ORG] = "refused/organisation",
    [PN_M_REFUSED_FIRST + PN_REFUSED_ROTATION] = "refused/rotation",
    [PN_M_REFUSED_FIRST + PN_REFUSED_DATABASE] = "refused/database",
    [PN_M_REFUSED_FIRST + PN_REFUSED_INTERNAL] = "refused/internal",
    [PN_M_PINS_CREATED] = "pins/created",
    [PN_M_PINS_TOTAL] = "pins/total",
    [PN_M_KICKS] = "kicks",
    [PN_M_CA_SIG_CHECKED] = "ca_signatures/checked",
    [PN_M_CA_SIG_FROM_TLS] = "ca_signatures/from_tls",
    [PN_M_DB_CONNECTED] = "database/connected",
    [PN_M_DB_DISCONNECTS] = "database/disconnects",
    [PN_M_LOAD_AT] = "load/time",
    [PN_M_LOAD_CAS] = "load/cas",
    [PN_M_LOAD_DEVICES] = "load/devices",
    [PN_M_LOAD_PINS] = "load/pins",
    [PN_M_LOAD_SERVICES] = "load/services",
};

const char *pn_metrics_name(enum pn_metric i)
{
    return i < PN_M_COUNT ? names[i] : NULL;
}

void pn_metrics_admission(struct pn_metrics *m, const struct pn_admission *a)
{
    m->v[PN_M_CA_SIG_CHECKED] += a->ca_sig_checks;
    m->v[PN_M_CA_SIG_FROM_TLS] += a->ca_sig_from_tls;
    switch (a->kind) {
    case PN_ADMIT_PINNED:
        m->v[PN_M_ADMITTED_PINNED]++;
        break;
    case PN_ADMIT_NEW:
        m->v[PN_M_ADMITTED_NEW]++;
        m->v[PN_M_PINS_CREATED]++;
        break;
    case PN_ADMIT_SERVICE:
        m->v[PN_M_ADMITTED_SERVICE]++;
        break;
    case PN_REFUSE:
        m->v[PN_M_REFUSED_TOTAL]++;
        if (a->refusal < PN_REFUSED_COUNT)
            m->v[PN_M_REFUSED_FIRST + a->refusal]++;
        break;
    }
}

void pn_metrics_loaded(struct pn_metrics *m, const struct pn_state *s, time_t now)
{
    m->v[PN_M_LOAD_AT] = (unsigned long)now;
    m->v[PN_M_LOAD_CAS] = pn_map_count(s->cas);
    m->v[PN_M_LOAD_DEVICES] = pn_map_count(s->devices);
    m->v[PN_M_LOAD_PINS] = pn_map_count(s->pins);
    m->v[PN_M_LOAD_SERVICES] = pn_map_count(s->services);
}

int pn_metrics_tick(struct pn_metrics *m, const struct pn_state *s, bool db_ready, time_t now,
                    pn_metrics_publish_fn publish, void *arg)
{
    /* Counted here rather than where the worker notices: the worker's
     * thread must not write the broker thread's counters. */
    if (m->v[PN_M_DB_CONNECTED] && !db_ready)
        m->v[PN_M_DB_DISCONNECTS]++;
    m->v[PN_M_DB_CONNECTED] = db_ready;
    if (m->interval_s <= 0 || now < m->next_at)
        return 0;
    m->next_at = now + m->interval_s;
    m->v[PN_M_PINS_TOTAL] = s ? pn_map_count(s->pins) : 0;
    int n = 0;
    char topic[128], value[32];
    for (int i = 0; i < PN_M_COUNT; i++) {
        if (m->ever_sent && m->sent[i] == m->v[i])
            continue;
        snprintf(topic, sizeof(topic), PN_SYS_ROOT "%s", names[i]);
        snprintf(value, sizeof(value), "%lu", m->v[i]);
        publish(arg, topic, value);
        m->sent[i] = m->v[i];
        n++;
    }
    m->ever_sent = true;
    return n;
}
