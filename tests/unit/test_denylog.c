/* SPDX-License-Identifier: Apache-2.0 */
/* plugin/denylog.h: at most one logged line per client per interval for
 * denied publishes and subscriptions, with the rest counted and reported
 * when the interval ends. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "denylog.h"

struct reports {
    int n;
    char client[200], last[256];
    unsigned long count;
};

static void report(void *arg, const char *client_id, unsigned long count, const char *last_what)
{
    struct reports *r = arg;
    r->n++;
    snprintf(r->client, sizeof(r->client), "%s", client_id ? client_id : "(others)");
    snprintf(r->last, sizeof(r->last), "%s", last_what);
    r->count = count;
}

static void test_flood(void)
{
    struct pn_denylog *dl = pn_denylog_new(10);
    struct reports r = {0};
    CHECK(dl != NULL);
    /* The first denial of A is logged, the next 99 in the interval not. */
    CHECK(pn_denylog_hit(dl, "A", "publish to 'x/1'", 1000));
    int logged = 0;
    for (int i = 0; i < 99; i++)
        logged += pn_denylog_hit(dl, "A", i == 98 ? "publish to 'x/last'" : "publish to 'x/2'",
                                 1000 + i / 20);
    CHECK(logged == 0);
    /* Another client has its own interval. */
    CHECK(pn_denylog_hit(dl, "B", "subscription to '#'", 1003));
    pn_denylog_sweep(dl, 1009, report, &r);
    CHECK(r.n == 0);
    pn_denylog_sweep(dl, 1010, report, &r);
    CHECK(r.n == 1);
    CHECK_STREQ(r.client, "A");
    CHECK(r.count == 99);
    CHECK_STREQ(r.last, "publish to 'x/last'");
    /* A's new interval began with that report: still counted, not logged. */
    CHECK(!pn_denylog_hit(dl, "A", "publish to 'x/3'", 1011));
    pn_denylog_sweep(dl, 1013, report, &r);
    CHECK(r.n == 1); /* B had nothing more: forgotten, without a line */
    CHECK(pn_denylog_hit(dl, "B", "subscription to '#'", 1014));
    pn_denylog_sweep(dl, 1020, report, &r);
    CHECK(r.n == 2);
    CHECK_STREQ(r.client, "A");
    CHECK(r.count == 1);
    /* A quiet interval forgets A: its next denial is logged again. */
    pn_denylog_sweep(dl, 1030, report, &r);
    CHECK(r.n == 2);
    CHECK(pn_denylog_hit(dl, "A", "publish to 'x/4'", 1031));
    pn_denylog_free(dl);
}

/* Memory stays bounded whatever the number of client ids. */
static void test_many_clients(void)
{
    struct pn_denylog *dl = pn_denylog_new(5);
    struct reports r = {0};
    char id[32];
    int logged = 0;
    for (int i = 0; i < PN_DENYLOG_MAX_CLIENTS + 50; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        logged += pn_denylog_hit(dl, id, "publish to 'x'", 100);
    }
    CHECK(logged == PN_DENYLOG_MAX_CLIENTS);
    pn_denylog_sweep(dl, 105, report, &r);
    CHECK(r.n == 1);
    CHECK_STREQ(r.client, "(others)");
    CHECK(r.count == 50);
    /* The tracked clients are forgotten over the following sweeps. */
    for (time_t t = 106; t < 400; t++)
        pn_denylog_sweep(dl, t, report, &r);
    CHECK(pn_denylog_hit(dl, "c1", "publish to 'x'", 400));
    CHECK(r.n == 1);
    pn_denylog_free(dl);
}

int main(void)
{
    test_flood();
    test_many_clients();
    return check_done("test_denylog");
}
