/* SPDX-License-Identifier: Apache-2.0 */
/* Messages between the worker thread and the broker's main thread.
 *
 * Worker -> main: struct pn_op, applied to the state on TICK (apply.c).
 * Main -> worker: struct pn_pin_req (persist a new pin) and "seen" marks
 * (last_seen / last_used updates).  Both directions go through struct
 * pn_sync's mutex-protected lists; nothing else is shared. */
#ifndef PINION_PLUGIN_OPS_H
#define PINION_PLUGIN_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "state.h"

enum pn_op_kind {
    PN_OP_SNAPSHOT,    /* state: a complete new state from a full load; after
                          pn_apply_op it holds the replaced state */
    PN_OP_CA_PUT,      /* ca */
    PN_OP_CA_DEL,      /* text: hex id */
    PN_OP_DEVICE_PUT,  /* id, text: identifier, org_id, product_id, status */
    PN_OP_DEVICE_DEL,  /* id */
    PN_OP_PIN_PUT,     /* bin, id: device id, spki, not_after, status */
    PN_OP_PIN_DEL,     /* bin */
    PN_OP_SERVICE_PUT, /* bin, text: name, not_after, status */
    PN_OP_SERVICE_DEL, /* bin */
    PN_OP_PUBLISH,     /* text: topic, payload/len */
    PN_OP_LOG,         /* level, text */
    PN_OP_KICK,        /* text: client id */
};

struct pn_op {
    struct pn_op *next;
    enum pn_op_kind kind;
    int64_t id, org_id, product_id;
    char status;
    time_t not_after;
    unsigned char bin[PN_SHA256], spki[PN_SHA256];
    struct pn_ca *ca;
    struct pn_state *state;
    char *text;
    char *payload;
    size_t len;
    int level; /* PN_LOG_* */
};

enum { PN_LOG_INFO, PN_LOG_NOTICE, PN_LOG_WARNING, PN_LOG_ERR };

struct pn_op *pn_op_new(enum pn_op_kind kind);
void pn_op_free(struct pn_op *op);

/* A pin to persist: everything the device_certificates row (and, for
 * JITP, the devices row) needs, computed on the main thread from the
 * certificate at CONNECT. */
struct pn_pin_req {
    struct pn_pin_req *next;
    char cert_id[65], ca_id[65], identifier[129];
    int64_t org_id, product_id;
    char *jitp_tags; /* JSON array; non-NULL: create the device (JITP) */
    unsigned char *der;
    int derlen;
    char serial[130], ski[129], aki[129], spki[65], not_before[32], not_after[32];
    int conflicts; /* transactions lost to a lock or serialization conflict */
};

void pn_pin_req_free(struct pn_pin_req *r);

/* Applies one op to the state on the main thread.  kick(arg, name,
 * is_username) is called for every client that must be disconnected
 * because of the change (may be NULL, e.g. while building a snapshot).
 * PUBLISH and LOG ops are not handled here.  Frees nothing. */
typedef void (*pn_kick_fn)(void *arg, const char *name, int is_username);
void pn_apply_op(struct pn_state **s, struct pn_op *op, pn_kick_fn kick, void *arg);

#endif
