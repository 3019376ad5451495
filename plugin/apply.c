/* SPDX-License-Identifier: Apache-2.0 */
/* Applies what the worker learned from the database to the in-memory
 * state, on the broker's main thread, and says whom to disconnect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ident.h"
#include "ops.h"
#include "policy.h"

struct pn_op *pn_op_new(enum pn_op_kind kind)
{
    struct pn_op *op = calloc(1, sizeof(*op));
    if (op)
        op->kind = kind;
    return op;
}

void pn_op_free(struct pn_op *op)
{
    if (!op)
        return;
    pn_ca_free(op->ca);
    pn_state_free(op->state);
    free(op->text);
    free(op->payload);
    free(op);
}

void pn_pin_req_free(struct pn_pin_req *r)
{
    if (!r)
        return;
    free(r->jitp_tags);
    free(r->der);
    free(r);
}

static void kick_service(pn_kick_fn kick, void *arg, const char *name)
{
    char user[320];
    if (!kick || !name[0] || strlen(name) > 255)
        return;
    snprintf(user, sizeof(user), "%s%s", PN_SERVICE_USER_PREFIX, name);
    kick(arg, user, 1);
}

/* Carries pins made on this broker but not yet read back from the
 * database (and their JITP devices) from the old state into a new
 * snapshot, and kicks every client the snapshot no longer admits. */
static void swap_snapshot(struct pn_state **sp, struct pn_state *next, pn_kick_fn kick, void *arg)
{
    struct pn_state *old = *sp;
    size_t i = 0;
    void *v;
    while (pn_map_next(old->pins, &i, &v)) {
        struct pn_pin *p = v;
        if (!p->dev)
            continue;
        if (p->pending) {
            if (pn_map_get(next->pins, p->id, PN_SHA256))
                continue;
            struct pn_device *d =
                pn_map_get(next->devices, p->dev->identifier, strlen(p->dev->identifier));
            if (!d && p->dev->id == 0)
                d = pn_state_add_pending_device(next, p->dev->identifier, p->dev->org_id,
                                                p->dev->product_id);
            if (d && d->status == PN_ACTIVE) {
                struct pn_pin *np =
                    pn_state_put_pin(next, p->id, d, p->spki, p->not_after, p->status);
                if (np)
                    np->pending = true;
            }
            continue;
        }
        if (p->status != PN_ACTIVE || p->dev->status != PN_ACTIVE)
            continue;
        struct pn_pin *np = pn_map_get(next->pins, p->id, PN_SHA256);
        if (!np || np->status != PN_ACTIVE || !np->dev || np->dev->status != PN_ACTIVE ||
            strcmp(np->dev->identifier, p->dev->identifier) != 0) {
            if (kick)
                kick(arg, p->dev->identifier, 0);
        }
    }
    i = 0;
    while (pn_map_next(old->services, &i, &v)) {
        struct pn_service *sv = v;
        struct pn_service *nsv = pn_map_get(next->services, sv->id, PN_SHA256);
        if (sv->status == PN_ACTIVE &&
            (!nsv || strcmp(nsv->name, sv->name) != 0 || nsv->status != PN_ACTIVE))
            kick_service(kick, arg, sv->name);
    }
    *sp = next;
}

void pn_apply_op(struct pn_state **sp, struct pn_op *op, pn_kick_fn kick, void *arg)
{
    struct pn_state *s = *sp;
    struct pn_device *d;
    struct pn_pin *p;
    char name[256];

    switch (op->kind) {
    case PN_OP_SNAPSHOT: {
        struct pn_state *next = op->state;
        op->state = *sp; /* the old state leaves with the op */
        swap_snapshot(sp, next, kick, arg);
        break;
    }
    case PN_OP_CA_PUT:
        pn_state_put_ca(s, op->ca);
        op->ca = NULL;
        break;
    case PN_OP_CA_DEL:
        pn_state_del_ca(s, op->text);
        break;
    case PN_OP_DEVICE_PUT: {
        d = pn_map_get(s->devices_by_id, &op->id, sizeof(op->id));
        if (!d) {
            /* A device pinned here by JITP is still pending (id 0) until
             * this, its first row, arrives: if the row already says
             * revoked, its live session must be kicked too. */
            d = pn_map_get(s->devices, op->text, strlen(op->text));
            if (d && d->id != 0)
                d = NULL;
        }
        bool was_active = d && d->status == PN_ACTIVE;
        char old_ident[PN_IDENT_BUF] = "";
        if (d)
            snprintf(old_ident, sizeof(old_ident), "%s", d->identifier);
        d = pn_state_put_device(s, op->id, op->text, op->org_id, op->product_id, op->status);
        if (was_active && kick &&
            (!d || d->status != PN_ACTIVE || strcmp(old_ident, d->identifier)))
            kick(arg, old_ident, 0);
        break;
    }
    case PN_OP_DEVICE_DEL:
        d = pn_state_del_device(s, op->id);
        if (d && kick)
            kick(arg, d->identifier, 0);
        break;
    case PN_OP_PIN_PUT:
        d = pn_map_get(s->devices_by_id, &op->id, sizeof(op->id));
        if (!d)
            break; /* its device is not known yet; the next full load fixes this */
        p = pn_map_get(s->pins, op->bin, PN_SHA256);
        bool was_active = p && p->status == PN_ACTIVE && p->dev && p->dev->status == PN_ACTIVE;
        struct pn_device *old_dev = p ? p->dev : NULL;
        p = pn_state_put_pin(s, op->bin, d, op->spki, op->not_after, op->status);
        if (p)
            p->pending = false;
        if (was_active && kick && (!p || p->status != PN_ACTIVE || old_dev != d))
            kick(arg, old_dev->identifier, 0);
        break;
    case PN_OP_PIN_DEL:
        p = pn_map_get(s->pins, op->bin, PN_SHA256);
        if (p && p->dev && kick)
            kick(arg, p->dev->identifier, 0);
        d = pn_state_del_pin(s, op->bin);
        /* A JITP device made here for this pin (still pending, id 0) was
         * not stored either.  Left behind, it made the next first connect
         * of its identifier look like one of an existing device, which the
         * worker then found missing and refused, until the next full load. */
        if (d && d->id == 0 && !d->pins)
            d->status = PN_GONE;
        break;
    case PN_OP_SERVICE_PUT: {
        /* Revoked (or renamed): every session under the old name goes,
         * NAME and NAME-* alike, since they share the username. */
        const struct pn_service *was = pn_map_get(s->services, op->bin, PN_SHA256);
        bool svc_was_active = was && was->status == PN_ACTIVE;
        snprintf(name, sizeof(name), "%s", was ? was->name : "");
        struct pn_service *sv = pn_state_put_service(s, op->bin, op->text, op->not_after);
        if (sv)
            sv->status = op->status;
        if (svc_was_active && (!sv || sv->status != PN_ACTIVE || strcmp(name, sv->name) != 0))
            kick_service(kick, arg, name);
        break;
    }
    case PN_OP_SERVICE_DEL:
        if (pn_state_del_service(s, op->bin, name, sizeof(name)) == 0)
            kick_service(kick, arg, name);
        break;
    case PN_OP_PUBLISH:
    case PN_OP_LOG:
    case PN_OP_KICK:
        break;
    }
}
