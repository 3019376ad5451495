/* SPDX-License-Identifier: Apache-2.0 */
/* The lists between the broker's main thread and the worker, under one
 * mutex: ops to apply (worker -> main), pin requests and last-seen marks
 * (main -> worker), applied ops to free (main -> worker).  The main
 * thread's side must stay cheap: it runs on every CONNECT. */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "fsutil.h"
#include "presence.h"
#include "sync_internal.h"

#define SEEN_MAX 100000 /* marks kept while the database is away */

void pn_sync_push(struct pn_sync *s, struct pn_op *op)
{
    if (!op)
        return;
    op->next = NULL;
    pthread_mutex_lock(&s->mu);
    *s->ops_tail = op;
    s->ops_tail = &op->next;
    pthread_mutex_unlock(&s->mu);
}

void pn_sync_log(struct pn_sync *s, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    struct pn_op *op = pn_op_new(PN_OP_LOG);
    if (!op)
        return;
    op->level = level;
    op->text = strdup(buf);
    pn_sync_push(s, op);
}

void pn_sync_wake(struct pn_sync *s)
{
    char c = 1;
    ssize_t r = write(s->wake[1], &c, 1);
    (void)r; /* a full pipe already means "wake up" */
}

void pn_sync_dispose(struct pn_sync *s, struct pn_op *op)
{
    op->next = NULL;
    pthread_mutex_lock(&s->mu);
    op->next = s->trash;
    s->trash = op;
    pthread_mutex_unlock(&s->mu);
    pn_sync_wake(s);
}

void pn_sync_empty_trash(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    struct pn_op *op = s->trash;
    s->trash = NULL;
    pthread_mutex_unlock(&s->mu);
    while (op) {
        struct pn_op *next = op->next;
        pn_op_free(op);
        op = next;
    }
}

struct pn_op *pn_sync_take(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    struct pn_op *ops = s->ops;
    s->ops = NULL;
    s->ops_tail = &s->ops;
    pthread_mutex_unlock(&s->mu);
    return ops;
}

/* The worker is woken by the first request only: it waits PIN_LINGER_MS
 * for more (see pn_persist_pins), and a write to the pipe per CONNECT
 * would cost the broker's thread a system call each. */
void pn_sync_pin(struct pn_sync *s, struct pn_pin_req *r)
{
    r->next = NULL;
    pthread_mutex_lock(&s->mu);
    bool first = s->nreqs == 0;
    if (first)
        s->reqs_since = pn_mono_ms();
    *s->reqs_tail = r;
    s->reqs_tail = &r->next;
    s->nreqs++;
    pthread_mutex_unlock(&s->mu);
    if (first)
        pn_sync_wake(s);
}

int pn_sync_pins_due_ms(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nreqs;
    long since = s->reqs_since;
    pthread_mutex_unlock(&s->mu);
    if (n == 0)
        return 1000;
    if (n >= PIN_BATCH)
        return 0;
    long left = since + PIN_LINGER_MS - pn_mono_ms();
    return left > 0 ? (int)left : 0;
}

struct pn_pin_req *pn_sync_take_pins(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    struct pn_pin_req *list = s->reqs;
    s->reqs = NULL;
    s->reqs_tail = &s->reqs;
    s->nreqs = 0;
    pthread_mutex_unlock(&s->mu);
    return list;
}

void pn_sync_return_pins(struct pn_sync *s, struct pn_pin_req *list)
{
    pthread_mutex_lock(&s->mu);
    struct pn_pin_req **tail = &list;
    if (s->nreqs == 0)
        s->reqs_since = pn_mono_ms();
    while (*tail) {
        tail = &(*tail)->next;
        s->nreqs++;
    }
    *tail = s->reqs;
    if (!s->reqs)
        s->reqs_tail = tail;
    s->reqs = list;
    pthread_mutex_unlock(&s->mu);
}

void pn_sync_seen(struct pn_sync *s, const char *identifier, const char *cert_id)
{
    pthread_mutex_lock(&s->mu);
    if (json_array_size(s->seen_dev) < SEEN_MAX) {
        json_array_append_new(s->seen_dev, json_string(identifier));
        json_array_append_new(s->seen_cert, json_string(cert_id));
    }
    pthread_mutex_unlock(&s->mu);
}

void pn_sync_take_seen(struct pn_sync *s, json_t **devs, json_t **certs)
{
    pthread_mutex_lock(&s->mu);
    *devs = s->seen_dev;
    *certs = s->seen_cert;
    s->seen_dev = json_array();
    s->seen_cert = json_array();
    pthread_mutex_unlock(&s->mu);
}

/* No wake(): a write() on the broker's thread at every CONNECT and
 * DISCONNECT would buy nothing, since the worker passes at least every
 * 100 ms and flushes presence at most that often anyway. */
void pn_sync_connected(struct pn_sync *s, const char *identifier, const void *client)
{
    pn_presence_connected(s->presence, identifier, client);
}

void pn_sync_disconnected(struct pn_sync *s, const char *identifier, const void *client)
{
    pn_presence_disconnected(s->presence, identifier, client);
}

bool pn_sync_ready(struct pn_sync *s)
{
    return atomic_load(&s->ready);
}
