/* SPDX-License-Identifier: Apache-2.0 */
/* Per-device limits: one device must not slow everyone's downloads.
 *
 * Each device has two token buckets (chunk requests, status reports): a
 * message beyond them is dropped before it is parsed, and counted.  The
 * "ignored ..." lines about a device's messages are written in full up to
 * PD_LOG_BUDGET a period; at the end of a period in which anything was
 * dropped or left unlogged, one summary line gives the counts.  So a flood
 * costs a hash lookup per message, a bounded number of database round
 * trips and a bounded number of log lines. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "map.h"
#include "piniond.h"

#define SWEEP_MS 1000 /* a full pass over the devices heard of in the last minute */
#define IDLE_MS 60000 /* a device unheard of this long, buckets full, is forgotten */

static const void *dev_key(const void *val, size_t *klen)
{
    const struct pd_dev *d = val;
    *klen = d->idlen;
    return d->identifier;
}

int pd_limits_init(struct pd *pd)
{
    pd->devs = pn_map_new(1024, dev_key);
    return pd->devs ? 0 : -1;
}

void pd_limits_free(struct pd *pd)
{
    if (!pd->devs)
        return;
    void *v;
    for (size_t i = 0; pn_map_next(pd->devs, &i, &v);)
        free(v);
    pn_map_free(pd->devs);
    pd->devs = NULL;
}

struct pd_dev *pd_dev_get(struct pd *pd, const char *identifier)
{
    size_t n = strlen(identifier);
    struct pd_dev *d = pn_map_get(pd->devs, identifier, n);
    long now = pn_mono_ms();
    if (!d) {
        if (n >= sizeof(d->identifier) || !(d = calloc(1, sizeof(*d))))
            return NULL;
        memcpy(d->identifier, identifier, n);
        d->idlen = n;
        d->get = (struct pd_bucket){pd->cfg.get_burst, now};
        d->status = (struct pd_bucket){pd->cfg.status_burst, now};
        int err = 0;
        pn_map_put(pd->devs, d, &err);
        if (err < 0) {
            free(d);
            return NULL;
        }
    }
    d->seen_ms = now;
    return d;
}

/* Refills at rate tokens a second, up to burst. */
static void refill(struct pd_bucket *b, long now, int rate, int burst)
{
    if (now > b->at_ms) {
        b->tokens += (double)(now - b->at_ms) * rate / 1000.0;
        if (b->tokens > burst)
            b->tokens = burst;
        b->at_ms = now;
    }
}

static void open_period(struct pd_dev *d, long now)
{
    if (!d->period_open) {
        d->period_open = true;
        d->period_ms = now;
    }
}

bool pd_dev_admit(struct pd *pd, struct pd_dev *dev, bool status)
{
    long now = pn_mono_ms();
    struct pd_bucket *b = status ? &dev->status : &dev->get;
    refill(b, now, status ? pd->cfg.status_rate : pd->cfg.get_rate,
           status ? pd->cfg.status_burst : pd->cfg.get_burst);
    open_period(dev, now);
    if (status)
        dev->got_status++;
    else
        dev->got_get++;
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return true;
    }
    if (status)
        dev->dropped_status++;
    else
        dev->dropped_get++;
    return false;
}

void pd_log_ignored(struct pd *pd, const char *identifier, const char *fmt, ...)
{
    struct pd_dev *d = pd_dev_get(pd, identifier);
    if (d) {
        open_period(d, pn_mono_ms());
        if (d->logged >= PD_LOG_BUDGET) {
            d->unlogged++;
            return;
        }
        d->logged++;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    pd_log("%s", line);
}

void pd_inflight_forget(struct pd *pd, const char *identifier)
{
    struct pd_dev *d = pn_map_get(pd->devs, identifier, strlen(identifier));
    if (d)
        d->inflight_known = false;
}

/* The period's one line, if anything was dropped or left unlogged. */
static void close_period(struct pd *pd, struct pd_dev *d, long now)
{
    if (d->dropped_get || d->dropped_status || d->unlogged)
        pd_log("%s in the last %ld s: %lu chunk requests, %lu dropped over the per-device limit "
               "(%d/s, burst %d); %lu status reports, %lu dropped over the limit (%d/s, burst "
               "%d); %lu more ignored messages not logged",
               d->identifier, (now - d->period_ms + 500) / 1000, d->got_get, d->dropped_get,
               pd->cfg.get_rate, pd->cfg.get_burst, d->got_status, d->dropped_status,
               pd->cfg.status_rate, pd->cfg.status_burst, d->unlogged);
    d->period_open = false;
    d->got_get = d->got_status = d->dropped_get = d->dropped_status = d->unlogged = 0;
    d->logged = 0;
}

void pd_limits_sweep(struct pd *pd)
{
    long now = pn_mono_ms();
    if (now - pd->last_sweep < SWEEP_MS)
        return;
    pd->last_sweep = now;
    size_t nidle = 0, cap = 0;
    struct pd_dev **idle = NULL;
    void *v;
    for (size_t i = 0; pn_map_next(pd->devs, &i, &v);) {
        struct pd_dev *d = v;
        if (d->period_open && now - d->period_ms >= pd->cfg.limit_log_period * 1000L)
            close_period(pd, d, now);
        if (d->period_open || now - d->seen_ms < IDLE_MS)
            continue;
        /* Forgetting a device whose buckets are full changes no decision. */
        refill(&d->get, now, pd->cfg.get_rate, pd->cfg.get_burst);
        refill(&d->status, now, pd->cfg.status_rate, pd->cfg.status_burst);
        if (d->get.tokens < pd->cfg.get_burst || d->status.tokens < pd->cfg.status_burst)
            continue;
        if (nidle == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct pd_dev **n = realloc(idle, ncap * sizeof(*n));
            if (!n)
                break;
            idle = n;
            cap = ncap;
        }
        idle[nidle++] = d;
    }
    for (size_t k = 0; k < nidle; k++) {
        pn_map_del(pd->devs, idle[k]->identifier, idle[k]->idlen);
        free(idle[k]);
    }
    free(idle);
}
