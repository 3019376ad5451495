/* SPDX-License-Identifier: Apache-2.0 */
#include "denylog.h"

#include <stdlib.h>
#include <string.h>

#include "map.h"

#define WHAT_MAX 200

struct client {
    time_t since;            /* start of its interval: its last reported line */
    unsigned long count;     /* denials counted, not logged, since then */
    char last[WHAT_MAX + 1]; /* the latest of those */
    char id[];               /* map key */
};

struct pn_denylog {
    struct pn_map *clients; /* client id -> struct client */
    int interval;
    time_t overflow_since;
    unsigned long overflow; /* denials of clients beyond PN_DENYLOG_MAX_CLIENTS */
};

static const void *client_key(const void *v, size_t *n)
{
    const struct client *c = v;
    *n = strlen(c->id);
    return c->id;
}

struct pn_denylog *pn_denylog_new(int interval_s)
{
    struct pn_denylog *dl = calloc(1, sizeof(*dl));
    if (!dl)
        return NULL;
    dl->interval = interval_s;
    if (!(dl->clients = pn_map_new(64, client_key))) {
        free(dl);
        return NULL;
    }
    return dl;
}

void pn_denylog_free(struct pn_denylog *dl)
{
    if (!dl)
        return;
    size_t i = 0;
    void *v;
    while (pn_map_next(dl->clients, &i, &v))
        free(v);
    pn_map_free(dl->clients);
    free(dl);
}

static void remember(struct client *c, const char *what)
{
    size_t n = strlen(what);
    if (n > WHAT_MAX)
        n = WHAT_MAX;
    memcpy(c->last, what, n);
    c->last[n] = '\0';
}

bool pn_denylog_hit(struct pn_denylog *dl, const char *client_id, const char *what, time_t now)
{
    size_t n = strlen(client_id);
    struct client *c = pn_map_get(dl->clients, client_id, n);
    if (c) {
        c->count++;
        remember(c, what);
        return false;
    }
    int err = 0;
    if (pn_map_count(dl->clients) >= PN_DENYLOG_MAX_CLIENTS ||
        !(c = calloc(1, sizeof(*c) + n + 1))) {
        if (dl->overflow++ == 0)
            dl->overflow_since = now;
        return false;
    }
    memcpy(c->id, client_id, n + 1);
    c->since = now;
    pn_map_put(dl->clients, c, &err);
    if (err) {
        free(c);
        return false;
    }
    return true;
}

void pn_denylog_sweep(struct pn_denylog *dl, time_t now, pn_denylog_report_fn report, void *arg)
{
    if (pn_map_count(dl->clients) == 0 && dl->overflow == 0)
        return;
    /* Clients to forget are collected first: the map must not change
     * while it is iterated. */
    struct client *gone[1024];
    size_t ngone = 0, i = 0;
    void *v;
    while (ngone < sizeof(gone) / sizeof(gone[0]) && pn_map_next(dl->clients, &i, &v)) {
        struct client *c = v;
        if (now - c->since < dl->interval)
            continue;
        if (c->count == 0) {
            gone[ngone++] = c;
            continue;
        }
        report(arg, c->id, c->count, c->last);
        c->count = 0;
        c->since = now;
    }
    for (size_t k = 0; k < ngone; k++) {
        pn_map_del(dl->clients, gone[k]->id, strlen(gone[k]->id));
        free(gone[k]);
    }
    if (dl->overflow && now - dl->overflow_since >= dl->interval) {
        report(arg, NULL, dl->overflow, "");
        dl->overflow = 0;
    }
}
