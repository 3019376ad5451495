/* SPDX-License-Identifier: Apache-2.0 */
/* plugin/metrics.c: counting CONNECT decisions and publishing only what
 * changed, at the configured interval. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "metrics.h"

struct sink {
    int n;
    char last_topic[128], last_value[32];
    char all[4096];
};

static void publish(void *arg, const char *topic, const char *value)
{
    struct sink *k = arg;
    k->n++;
    snprintf(k->last_topic, sizeof(k->last_topic), "%s", topic);
    snprintf(k->last_value, sizeof(k->last_value), "%s", value);
    size_t l = strlen(k->all);
    snprintf(k->all + l, sizeof(k->all) - l, "%s=%s\n", topic, value);
}

int main(void)
{
    struct pn_metrics m = {0};
    struct pn_admission a = {0};
    struct sink k = {0};
    m.interval_s = 10;

    for (int i = 0; i < PN_M_COUNT; i++)
        CHECK(pn_metrics_name(i) != NULL);
    a.kind = PN_ADMIT_NEW;
    pn_metrics_admission(&m, &a);
    a.kind = PN_ADMIT_PINNED;
    pn_metrics_admission(&m, &a);
    pn_metrics_admission(&m, &a);
    a.kind = PN_REFUSE;
    a.refusal = PN_REFUSED_UNKNOWN_CA;
    pn_metrics_admission(&m, &a);
    a.refusal = PN_REFUSED_REVOKED;
    pn_metrics_admission(&m, &a);

    /* First publication: every value. */
    CHECK(pn_metrics_tick(&m, NULL, true, 1000, publish, &k) == PN_M_COUNT);
    CHECK(strstr(k.all, "$SYS/broker/pinion/admitted/pinned=2\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/admitted/new=1\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/pins/created=1\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/refused/total=2\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/refused/unknown_ca=1\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/refused/revoked=1\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/refused/expired=0\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/database/connected=1\n") != NULL);

    /* Nothing before the interval; then only what changed. */
    k = (struct sink){0};
    a.refusal = PN_REFUSED_EXPIRED;
    pn_metrics_admission(&m, &a);
    CHECK(pn_metrics_tick(&m, NULL, true, 1005, publish, &k) == 0);
    CHECK(pn_metrics_tick(&m, NULL, false, 1010, publish, &k) == 4);
    CHECK(strstr(k.all, "$SYS/broker/pinion/refused/total=3\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/refused/expired=1\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/database/connected=0\n") != NULL);
    CHECK(strstr(k.all, "$SYS/broker/pinion/database/disconnects=1\n") != NULL);

    /* Interval 0: counted, never published. */
    struct pn_metrics off = {0};
    k = (struct sink){0};
    pn_metrics_admission(&off, &a);
    CHECK(pn_metrics_tick(&off, NULL, true, 1000, publish, &k) == 0 && k.n == 0);
    CHECK(off.v[PN_M_REFUSED_TOTAL] == 1);
    return check_done("metrics");
}
