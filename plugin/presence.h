/* SPDX-License-Identifier: Apache-2.0 */
/* Which broker each device is on, and this broker's row in the registry
 * (README "Scaling out").
 *
 * The main thread notes admissions and disconnects in memory (a map lookup
 * and a queued mark); the worker thread writes them to device_presence in
 * one transaction per pass, a device's latest mark only, and upserts the
 * brokers row as a heartbeat.  Nothing here touches the database on the
 * CONNECT path. */
#ifndef PINION_PLUGIN_PRESENCE_H
#define PINION_PLUGIN_PRESENCE_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "err.h"

#define PN_BROKER_ID_MAX 64
#define PN_HEARTBEAT_S 2 /* piniond deems a broker down after 5 missed beats */

struct pn_presence;

/* Copies both strings.  NULL on allocation failure. */
struct pn_presence *pn_presence_new(const char *broker_id, const char *service_address);
void pn_presence_free(struct pn_presence *p);

/* Main thread.  client is the broker's client object, used only to tell a
 * session from the one that replaced it: on client-id takeover the old
 * session's DISCONNECT arrives after the new session's admission, and must
 * not clear the device's presence. */
void pn_presence_connected(struct pn_presence *p, const char *identifier, const void *client);
void pn_presence_disconnected(struct pn_presence *p, const char *identifier, const void *client);

/* At start (the broker's main thread, or the worker's when the database
 * was down then): (re)writes this broker's registry row and deletes the
 * presence rows a previous run of it left behind.  Never sleeps: a row
 * beaten in the last 10 s under another service address is watched for
 * one heartbeat first (3 s, by pn_presence_flush, which writes no marks
 * meanwhile): if it is beaten again, another running broker has this
 * broker_id, and this one leaves its row and rows alone
 * (pn_presence_conflict). */
int pn_presence_register(struct pn_presence *p, PGconn *db, struct pn_err *err);
/* Heartbeat (every PN_HEARTBEAT_S) and the queued marks (every pass that
 * has some), in one transaction.  -1 when the database failed: the marks
 * are kept for the next try. */
int pn_presence_flush(struct pn_presence *p, PGconn *db, struct pn_err *err);
/* Worker thread: a message to log when this broker found its broker_id in
 * use by another running broker (then it writes no presence, and checks
 * again every minute), once per finding; else NULL. */
const char *pn_presence_conflict(struct pn_presence *p);
/* Whether a mark was lost since the last call (too many pending). */
bool pn_presence_dropped(struct pn_presence *p);
/* Clean stop: removes this broker's row and its presence rows, so piniond
 * drops it at once rather than after missed heartbeats. */
void pn_presence_unregister(struct pn_presence *p, PGconn *db);

#endif
