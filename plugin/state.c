/* SPDX-License-Identifier: Apache-2.0 */
#include "state.h"

#include <stdlib.h>
#include <string.h>

/* Where each map's key lives in its value. */
static const void *ca_key(const void *v, size_t *n)
{
    const struct pn_ca *ca = v;
    *n = strlen(ca->id);
    return ca->id;
}

static const void *device_key(const void *v, size_t *n)
{
    const struct pn_device *d = v;
    *n = strlen(d->identifier);
    return d->identifier;
}

static const void *device_id_key(const void *v, size_t *n)
{
    const struct pn_device *d = v;
    *n = sizeof(d->id);
    return &d->id;
}

static const void *pin_key(const void *v, size_t *n)
{
    *n = PN_SHA256;
    return ((const struct pn_pin *)v)->id;
}

static const void *service_key(const void *v, size_t *n)
{
    *n = PN_SHA256;
    return ((const struct pn_service *)v)->id;
}

static const void *service_name_key(const void *v, size_t *n)
{
    const struct pn_service *sv = v;
    *n = strlen(sv->name);
    return sv->name;
}

struct pn_state *pn_state_new(size_t devices_hint)
{
    struct pn_state *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cas = pn_map_new(16, ca_key);
    s->devices = pn_map_new(devices_hint, device_key);
    s->devices_by_id = pn_map_new(devices_hint, device_id_key);
    s->pins = pn_map_new(devices_hint, pin_key);
    s->services = pn_map_new(4, service_key);
    s->services_by_name = pn_map_new(4, service_name_key);
    if (!s->cas || !s->devices || !s->devices_by_id || !s->pins || !s->services ||
        !s->services_by_name) {
        pn_state_free(s);
        return NULL;
    }
    return s;
}

void pn_ca_free(struct pn_ca *ca)
{
    if (!ca)
        return;
    X509_free(ca->cert);
    free(ca->jitp_tags);
    free(ca);
}

/* Frees every value of a map (not the map). */
static void free_values(struct pn_map *m, void (*fn)(void *))
{
    size_t i = 0;
    void *v;
    while (m && pn_map_next(m, &i, &v))
        fn(v);
}

static void ca_free_void(void *ca)
{
    pn_ca_free(ca);
}

void pn_state_free(struct pn_state *s)
{
    if (!s)
        return;
    /* Each object is owned by exactly one map; the by-id/by-name maps only
     * index them. */
    free_values(s->cas, ca_free_void);
    free_values(s->pins, free);
    free_values(s->devices, free);
    free_values(s->services, free);
    pn_map_free(s->cas);
    pn_map_free(s->devices);
    pn_map_free(s->devices_by_id);
    pn_map_free(s->pins);
    pn_map_free(s->services);
    pn_map_free(s->services_by_name);
    free(s);
}

struct pn_ca *pn_state_put_ca(struct pn_state *s, struct pn_ca *ca)
{
    int err = 0;
    struct pn_ca *old = pn_map_put(s->cas, ca, &err);
    if (err) {
        pn_ca_free(ca);
        return NULL;
    }
    pn_ca_free(old);
    return ca;
}

void pn_state_del_ca(struct pn_state *s, const char *hex_id)
{
    pn_ca_free(pn_map_del(s->cas, hex_id, strlen(hex_id)));
}

/* A new device in the identifier map (not yet in the by-id map). */
static struct pn_device *device_add(struct pn_state *s, const char *identifier)
{
    size_t n = strlen(identifier);
    int err = 0;
    struct pn_device *d = calloc(1, sizeof(*d) + n + 1);
    if (!d)
        return NULL;
    memcpy(d->identifier, identifier, n + 1);
    pn_map_put(s->devices, d, &err);
    if (err) {
        free(d);
        return NULL;
    }
    return d;
}

static void drop_pins(struct pn_state *s, struct pn_device *d)
{
    struct pn_pin *p = d->pins;
    while (p) {
        struct pn_pin *next = p->next;
        pn_map_del(s->pins, p->id, PN_SHA256);
        free(p);
        p = next;
    }
    d->pins = NULL;
}

struct pn_device *pn_state_put_device(struct pn_state *s, int64_t id, const char *identifier,
                                      int64_t org_id, int64_t product_id, char status)
{
    int err = 0;
    struct pn_device *d = pn_map_get(s->devices_by_id, &id, sizeof(id));
    if (d && strcmp(d->identifier, identifier) != 0) {
        /* Renamed: the pins belong to the certificate's identity, which is
         * bound to the old identifier; drop them with the old name. */
        pn_state_del_device(s, id);
        d = NULL;
    }
    if (!d) {
        d = pn_map_get(s->devices, identifier, strlen(identifier));
        if (d && d->id != 0 && d->id != id && d->status != PN_GONE) {
            /* Another row used this identifier before (deleted, then
             * re-created): forget the old device. */
            pn_map_del(s->devices_by_id, &d->id, sizeof(d->id));
            drop_pins(s, d);
        }
    }
    if (!d && !(d = device_add(s, identifier)))
        return NULL;
    if (d->id != id) {
        if (d->id)
            pn_map_del(s->devices_by_id, &d->id, sizeof(d->id));
        d->id = id;
        pn_map_put(s->devices_by_id, d, &err);
        if (err)
            return NULL;
    }
    d->org_id = org_id;
    d->product_id = product_id;
    d->status = status;
    return d;
}

struct pn_device *pn_state_add_pending_device(struct pn_state *s, const char *identifier,
                                              int64_t org_id, int64_t product_id)
{
    struct pn_device *d = pn_map_get(s->devices, identifier, strlen(identifier));
    if (d) {
        if (d->status != PN_GONE)
            return d;
        drop_pins(s, d);
    } else if (!(d = device_add(s, identifier))) {
        return NULL;
    }
    if (d->id)
        pn_map_del(s->devices_by_id, &d->id, sizeof(d->id));
    d->id = 0;
    d->org_id = org_id;
    d->product_id = product_id;
    d->status = PN_ACTIVE;
    return d;
}

struct pn_device *pn_state_del_device(struct pn_state *s, int64_t id)
{
    struct pn_device *d = pn_map_del(s->devices_by_id, &id, sizeof(id));
    if (!d)
        return NULL;
    drop_pins(s, d);
    d->status = PN_GONE;
    d->id = 0;
    return d;
}

static void unlink_pin(struct pn_pin *p)
{
    if (!p->dev)
        return;
    for (struct pn_pin **pp = &p->dev->pins; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    p->next = NULL;
    p->dev = NULL;
}

struct pn_pin *pn_state_put_pin(struct pn_state *s, const unsigned char id[PN_SHA256],
                                struct pn_device *dev, const unsigned char *spki, time_t not_after,
                                char status)
{
    int err = 0;
    struct pn_pin *p = pn_map_get(s->pins, id, PN_SHA256);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return NULL;
        memcpy(p->id, id, PN_SHA256);
        pn_map_put(s->pins, p, &err);
        if (err) {
            free(p);
            return NULL;
        }
    }
    if (p->dev != dev) {
        unlink_pin(p);
        p->dev = dev;
        p->next = dev->pins;
        dev->pins = p;
    }
    memcpy(p->spki, spki, PN_SPKI_KEPT);
    p->not_after = not_after < 0                      ? 0
                   : (uint64_t)not_after > UINT32_MAX ? UINT32_MAX
                                                      : (uint32_t)not_after;
    p->status = status;
    return p;
}

struct pn_device *pn_state_del_pin(struct pn_state *s, const unsigned char id[PN_SHA256])
{
    struct pn_pin *p = pn_map_del(s->pins, id, PN_SHA256);
    if (!p)
        return NULL;
    struct pn_device *d = p->dev;
    unlink_pin(p);
    free(p);
    return d;
}

struct pn_service *pn_state_put_service(struct pn_state *s, const unsigned char id[PN_SHA256],
                                        const char *name, time_t not_after)
{
    int err = 0;
    char old_name[128];
    pn_state_del_service(s, id, old_name, sizeof(old_name));
    size_t n = strlen(name);
    struct pn_service *v = calloc(1, sizeof(*v) + n + 1);
    if (!v)
        return NULL;
    memcpy(v->id, id, PN_SHA256);
    memcpy(v->name, name, n + 1);
    v->not_after = not_after;
    v->status = PN_ACTIVE;
    pn_map_put(s->services, v, &err);
    if (err) {
        free(v);
        return NULL;
    }
    struct pn_service *prev = pn_map_put(s->services_by_name, v, &err);
    if (prev && prev != v) {
        /* The name moved to a new certificate: the old one loses it. */
        pn_map_del(s->services, prev->id, PN_SHA256);
        free(prev);
    }
    return v;
}

int pn_state_del_service(struct pn_state *s, const unsigned char id[PN_SHA256], char *name_out,
                         size_t name_len)
{
    struct pn_service *v = pn_map_del(s->services, id, PN_SHA256);
    if (name_out && name_len)
        name_out[0] = '\0';
    if (!v)
        return -1;
    if (pn_map_get(s->services_by_name, v->name, strlen(v->name)) == v)
        pn_map_del(s->services_by_name, v->name, strlen(v->name));
    if (name_out && name_len) {
        size_t n = strlen(v->name);
        if (n >= name_len)
            n = name_len - 1;
        memcpy(name_out, v->name, n);
        name_out[n] = '\0';
    }
    free(v);
    return 0;
}
