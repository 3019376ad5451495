/* SPDX-License-Identifier: Apache-2.0 */
/* What the files of the worker share, and nothing the rest of the plugin
 * may use (it has sync.h):
 *   worker.c   the thread, its connection and loop; pn_sync_new/start/free
 *   queues.c   the lists between the broker's thread and the worker
 *   load.c     reading rows into ops: the full load and notified changes
 *   persist.c  writing: pins, their registration events, last-seen marks
 * worker.c calls load.c and persist.c, which call queues.c; nothing calls
 * back up.  A lost connection is reported up as -1 with err, and worker.c
 * alone drops the connection. */
#ifndef PINION_PLUGIN_SYNC_INTERNAL_H
#define PINION_PLUGIN_SYNC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "sync.h"

#define PIN_BATCH 256    /* pins per transaction at most */
#define PIN_LINGER_MS 20 /* a pin request waits this long for others to share its COMMIT */

struct pn_sync {
    struct pn_sync_config cfg; /* strings owned */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    struct pn_op *ops, **ops_tail;
    struct pn_pin_req *reqs, **reqs_tail;
    int nreqs;           /* queued pin requests */
    long reqs_since;     /* when the oldest of them was queued (pn_mono_ms) */
    struct pn_op *trash; /* old snapshots, freed here rather than on the broker's thread */
    json_t *seen_dev, *seen_cert;
    int wake[2];
    atomic_bool ready, stop;
    /* worker only */
    PGconn *db;
    struct pn_presence *presence;
    bool registered; /* this broker's registry row written, its old presence cleared */
    time_t last_full, last_seen_flush;
    /* Pins stored by this worker since its last ANALYZE, and the table's
     * size then (see pn_persist_analyze). */
    long pins_since_analyze;
    double pins_at_analyze;
    char last_error[PN_ERR_MAX];
};

/* ------------------------------------------------- queues.c (both threads) */

/* Queues op for the main thread (NULL: nothing). */
void pn_sync_push(struct pn_sync *s, struct pn_op *op);
/* Queues a log line for the main thread (the worker never logs itself). */
void pn_sync_log(struct pn_sync *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pn_sync_wake(struct pn_sync *s);
/* Worker: frees the ops the main thread handed back (pn_sync_dispose). */
void pn_sync_empty_trash(struct pn_sync *s);
/* Worker: milliseconds until the queued pin requests are due (PIN_LINGER_MS
 * after the oldest, or at once when a batch is full); 1000 when none is. */
int pn_sync_pins_due_ms(struct pn_sync *s);
/* Worker: takes every queued pin request (oldest first; caller owns). */
struct pn_pin_req *pn_sync_take_pins(struct pn_sync *s);
/* Worker: puts requests taken but not stored back in front of the queue. */
void pn_sync_return_pins(struct pn_sync *s, struct pn_pin_req *list);
/* Worker: takes the last-seen marks (two arrays of one length; caller
 * owns both references). */
void pn_sync_take_seen(struct pn_sync *s, json_t **devs, json_t **certs);

/* ------------------------------------------------------------- load.c */

/* Certificates for the trust directory, each holding a reference. */
struct pn_certs {
    X509 **v;
    size_t n, cap;
};
void pn_certs_free(struct pn_certs *c);

/* Reads everything into a new state, in one consistent snapshot, adding
 * the trust directory's certificates to trust.  NULL with err. */
struct pn_state *pn_load_all(PGconn *db, struct pn_certs *trust, struct pn_err *err);

/* Reads every pending NOTIFY and queues the changes as ops.  The number
 * of notifications read, or -1 with err when the connection failed. */
int pn_load_notified(struct pn_sync *s, struct pn_err *err);

/* ---------------------------------------------------------- persist.c */

/* Prepares the statements that store pins, once per connection. */
int pn_persist_prepare(PGconn *db, struct pn_err *err);

/* Stores the queued pin requests once they are due.  How many it handled,
 * or -1 with err when the connection failed (they are queued again). */
int pn_persist_pins(struct pn_sync *s, struct pn_err *err);

/* ANALYZE after many pins stored from small tables (persist.c).  measure
 * reads the pin table's size as PostgreSQL last estimated it into
 * pins_at_analyze (false when the query failed). */
void pn_persist_analyze(struct pn_sync *s);
bool pn_persist_measure(struct pn_sync *s);

/* Writes the last-seen marks, at most every SEEN_FLUSH_S; a failure is
 * logged, the marks dropped. */
void pn_persist_seen(struct pn_sync *s);

/* ------------------------------------------------------- shared helpers */

static inline int64_t pn_col_i64(PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* 64 hex characters into 32 bytes.  0 / -1. */
static inline int pn_hex32(const char *hex, unsigned char out[PN_SHA256])
{
    size_t n = 0;
    if (sodium_hex2bin(out, PN_SHA256, hex, strlen(hex), NULL, &n, NULL) != 0 || n != PN_SHA256)
        return -1;
    return 0;
}

#endif
