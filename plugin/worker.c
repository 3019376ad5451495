/* SPDX-License-Identifier: Apache-2.0 */
/* The worker thread: its own PostgreSQL connection, the loop that reads
 * notified changes (load.c), stores pins and marks (persist.c) and
 * presence, reloads everything now and then, and reconnects with backoff
 * when the connection is lost.  Only this file drops the connection. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "db.h"
#include "migrate.h"
#include "presence.h"
#include "sync_internal.h"
#include "trust.h"

/* ------------------------------------------------------------ lifecycle */

struct pn_sync *pn_sync_new(const struct pn_sync_config *cfg)
{
    struct pn_sync *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->wake[0] = s->wake[1] = -1;
    s->cfg.conninfo = strdup(cfg->conninfo);
    s->cfg.trust_dir = strdup(cfg->trust_dir);
    s->cfg.topic_root = strdup(cfg->topic_root);
    s->cfg.resync_s = cfg->resync_s;
    s->cfg.rotation = cfg->rotation;
    s->presence = pn_presence_new(cfg->broker_id, cfg->service_address);
    s->seen_dev = json_array();
    s->seen_cert = json_array();
    s->ops_tail = &s->ops;
    s->reqs_tail = &s->reqs;
    pthread_mutex_init(&s->mu, NULL);
    if (!s->cfg.conninfo || !s->cfg.trust_dir || !s->cfg.topic_root || !s->presence ||
        !s->seen_dev || !s->seen_cert || pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        pn_sync_free(s);
        return NULL;
    }
    return s;
}

static int connect_db(struct pn_sync *s, struct pn_err *err)
{
    s->db = pn_db_connect_app(s->cfg.conninfo, "pinion-plugin", 5, err);
    if (!s->db)
        return -1;
    if (pn_db_check_schema(s->db, err) < 0 || pn_db_cmd(s->db, err, "LISTEN pinion", 0, NULL) < 0 ||
        (!s->registered && pn_presence_register(s->presence, s->db, err) < 0) ||
        pn_persist_prepare(s->db, err) < 0) {
        PQfinish(s->db);
        s->db = NULL;
        return -1;
    }
    /* Once per run: after a lost connection the rows still hold. */
    s->registered = true;
    pn_persist_measure(s); /* the table's size, for pn_persist_analyze */
    return 0;
}

int pn_sync_load_now(struct pn_sync *s, struct pn_state **out, struct pn_err *err)
{
    struct pn_certs trust = {0};
    if (!s->db && connect_db(s, err) < 0)
        return -1;
    struct pn_state *st = pn_load_all(s->db, &trust, err);
    if (!st) {
        pn_certs_free(&trust);
        PQfinish(s->db);
        s->db = NULL;
        return -1;
    }
    if (pn_trust_sync(s->cfg.trust_dir, trust.v, trust.n, true, err) < 0) {
        pn_certs_free(&trust);
        pn_state_free(st);
        return -1;
    }
    pn_certs_free(&trust);
    s->last_full = time(NULL);
    atomic_store(&s->ready, true);
    *out = st;
    return 0;
}

/* --------------------------------------------------------------- worker */

static void lost(struct pn_sync *s, const char *why)
{
    /* why may point into the connection (PQerrorMessage): copy it before
     * PQfinish frees it, and keep the first line only. */
    char msg[256];
    size_t n = why ? strcspn(why, "\n") : 0;
    if (n >= sizeof(msg))
        n = sizeof(msg) - 1; /* a log line, not the whole server message */
    memcpy(msg, why ? why : "", n);
    msg[n] = '\0';
    if (s->db)
        PQfinish(s->db);
    s->db = NULL;
    if (atomic_exchange(&s->ready, false))
        pn_sync_log(s, PN_LOG_WARNING,
                    "pinion: database connection lost (%s); pinned devices are admitted from "
                    "memory, first connects are refused until it is back",
                    msg[0] ? msg : "no reason given");
}

/* Full reload: a new snapshot for the main thread. */
static int reload(struct pn_sync *s, struct pn_err *err)
{
    struct pn_certs trust = {0};
    struct pn_state *st = pn_load_all(s->db, &trust, err);
    if (!st) {
        pn_certs_free(&trust);
        lost(s, err->msg);
        return -1;
    }
    struct pn_err terr;
    if (pn_trust_sync(s->cfg.trust_dir, trust.v, trust.n, false, &terr) < 0)
        pn_sync_log(s, PN_LOG_ERR, "pinion: %s", terr.msg);
    pn_certs_free(&trust);
    struct pn_op *op = pn_op_new(PN_OP_SNAPSHOT);
    if (!op) {
        pn_state_free(st);
        return -1;
    }
    op->state = st;
    pn_sync_push(s, op);
    s->last_full = time(NULL);
    return 0;
}

static void drain_wake(struct pn_sync *s)
{
    char buf[64];
    while (read(s->wake[0], buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ;
}

/* Sleeps up to ms, or until woken. */
static void nap(struct pn_sync *s, int ms)
{
    struct pollfd p = {s->wake[0], POLLIN, 0};
    if (poll(&p, 1, ms) > 0)
        drain_wake(s);
}

static void *worker(void *arg)
{
    struct pn_sync *s = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int backoff = 250;
    /* After a pass that did work, libpq may already hold notifications it
     * read while answering our own queries; the socket will not signal
     * them again, so the next pass must not sleep. */
    int timeout = 1000;

    while (!atomic_load(&s->stop)) {
        if (!s->db) {
            struct pn_err err;
            if (connect_db(s, &err) < 0 || reload(s, &err) < 0) {
                if (strcmp(err.msg, s->last_error) != 0) {
                    pn_sync_log(s, PN_LOG_WARNING, "pinion: database unavailable, retrying: %s",
                                err.msg);
                    snprintf(s->last_error, sizeof(s->last_error), "%s", err.msg);
                }
                nap(s, backoff);
                backoff = backoff < 4000 ? backoff * 2 : 5000;
                continue;
            }
            backoff = 250;
            s->last_error[0] = '\0';
            atomic_store(&s->ready, true);
            pn_sync_log(s, PN_LOG_NOTICE, "pinion: database connected; state reloaded");
        }
        struct pollfd p[2] = {{PQsocket(s->db), POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR) {
            nap(s, 100);
            continue;
        }
        if (p[1].revents)
            drain_wake(s);
        pn_sync_empty_trash(s);
        if (!PQconsumeInput(s->db) || PQstatus(s->db) != CONNECTION_OK) {
            lost(s, PQerrorMessage(s->db));
            continue;
        }
        struct pn_err err;
        int notified = pn_load_notified(s, &err);
        if (notified < 0) {
            lost(s, err.msg);
            continue;
        }
        int pinned = pn_persist_pins(s, &err);
        if (pinned < 0) {
            lost(s, err.msg);
            continue;
        }
        /* Presence marks are flushed at least every 100 ms; pins when due. */
        int due = pn_sync_pins_due_ms(s);
        timeout = notified > 0 || pinned > 0 ? 0 : due < 100 ? due : 100;
        pn_persist_seen(s);
        pn_persist_analyze(s);
        if (pn_presence_flush(s->presence, s->db, &err) < 0) {
            lost(s, err.msg);
            continue;
        }
        const char *conflict = pn_presence_conflict(s->presence);
        if (conflict)
            pn_sync_log(s, PN_LOG_ERR, "pinion: %s", conflict);
        if (pn_presence_dropped(s->presence))
            pn_sync_log(s, PN_LOG_WARNING,
                        "pinion: too many presence marks pending; some were lost");
        if (s->cfg.resync_s > 0 && time(NULL) - s->last_full >= s->cfg.resync_s)
            reload(s, &err);
    }
    return NULL;
}

int pn_sync_start(struct pn_sync *s, struct pn_err *err)
{
    if (pthread_create(&s->thread, NULL, worker, s) != 0)
        return pn_err_set(err, "cannot start the worker thread");
    s->started = true;
    return 0;
}

void pn_sync_free(struct pn_sync *s)
{
    if (!s)
        return;
    if (s->started) {
        atomic_store(&s->stop, true);
        pn_sync_wake(s);
        pthread_join(s->thread, NULL);
    }
    if (s->db && s->registered)
        pn_presence_unregister(s->presence, s->db);
    if (s->db)
        PQfinish(s->db);
    pn_presence_free(s->presence);
    struct pn_op *op = s->ops;
    while (op) {
        struct pn_op *next = op->next;
        pn_op_free(op);
        op = next;
    }
    pn_sync_empty_trash(s);
    struct pn_pin_req *r = s->reqs;
    while (r) {
        struct pn_pin_req *next = r->next;
        pn_pin_req_free(r);
        r = next;
    }
    json_decref(s->seen_dev);
    json_decref(s->seen_cert);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    free((char *)s->cfg.conninfo);
    free((char *)s->cfg.trust_dir);
    free((char *)s->cfg.topic_root);
    free(s);
}
