/* SPDX-License-Identifier: Apache-2.0 */
/* The plugin's worker thread: its own PostgreSQL connection, LISTEN for
 * changes with a periodic full reload as fallback, the trust directory,
 * and persistence of pins and last-seen marks.  It never calls a broker
 * function; it queues pn_ops that the main thread takes on TICK.
 * Implemented by worker.c, queues.c, load.c and persist.c (their shared
 * parts: sync_internal.h). */
#ifndef PINION_PLUGIN_SYNC_H
#define PINION_PLUGIN_SYNC_H

#include <stdbool.h>

#include "err.h"
#include "ops.h"
#include "policy.h"
#include "state.h"

struct pn_sync;

struct pn_sync_config {
    const char *conninfo;
    const char *trust_dir;
    const char *topic_root;
    int resync_s;
    /* The broker's rotation policy, checked again when a pin is stored. */
    enum pn_rotation rotation;
    /* This broker in the registry (presence.h). */
    const char *broker_id, *service_address;
};

/* Copies the configuration.  NULL on allocation failure. */
struct pn_sync *pn_sync_new(const struct pn_sync_config *cfg);

/* Connects and loads everything once, synchronously (plugin init, before
 * the broker serves anyone), writing the trust directory from scratch.
 * On success *out receives the state.  On failure the caller starts with
 * an empty state and the worker keeps retrying. */
int pn_sync_load_now(struct pn_sync *s, struct pn_state **out, struct pn_err *err);

int pn_sync_start(struct pn_sync *s, struct pn_err *err);
/* Stops and joins the worker, frees everything still queued. */
void pn_sync_free(struct pn_sync *s);

/* True while the worker is connected and has a complete load. */
bool pn_sync_ready(struct pn_sync *s);

/* Main thread -> worker.  pn_sync_pin takes ownership of r. */
void pn_sync_pin(struct pn_sync *s, struct pn_pin_req *r);
void pn_sync_seen(struct pn_sync *s, const char *identifier, const char *cert_id);

/* Main thread: a device admitted / a client gone (presence.h). */
void pn_sync_connected(struct pn_sync *s, const char *identifier, const void *client);
void pn_sync_disconnected(struct pn_sync *s, const char *identifier, const void *client);

/* Worker -> main thread: takes every queued op, oldest first (caller
 * applies and frees them with pn_op_free). */
struct pn_op *pn_sync_take(struct pn_sync *s);

/* Hands an applied op back for freeing on the worker thread (a replaced
 * snapshot can hold a million objects: freeing it would stall the broker). */
void pn_sync_dispose(struct pn_sync *s, struct pn_op *op);

#endif
