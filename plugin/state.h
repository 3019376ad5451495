/* SPDX-License-Identifier: Apache-2.0 */
/* The plugin's in-memory picture of the PKI: CAs, devices, pinned
 * certificates and service identities.  Every CONNECT and ACL decision is
 * made from this alone; it is only ever touched on the broker's main
 * thread.  The worker thread (worker.c) builds new objects and hands them
 * over as ops, which the TICK callback applies. */
#ifndef PINION_PLUGIN_STATE_H
#define PINION_PLUGIN_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "map.h"

#define PN_SHA256 32

enum pn_status { PN_ACTIVE = 'a', PN_DISABLED = 'd', PN_REVOKED = 'r', PN_GONE = 'x' };

struct pn_ca {
    char id[65]; /* certificate id, hex */
    int64_t org_id;
    char status; /* PN_ACTIVE / PN_DISABLED / PN_REVOKED */
    time_t not_before, not_after;
    X509 *cert;              /* owned */
    int64_t jitp_product_id; /* 0: no just-in-time provisioning */
    char *jitp_tags;         /* JSON array text, owned; "[]" when none */
};

struct pn_pin;

struct pn_device {
    int64_t id; /* database id; 0 while its JITP insert is pending */
    int64_t org_id, product_id;
    char status;         /* PN_ACTIVE / PN_REVOKED / PN_GONE (deleted) */
    struct pn_pin *pins; /* this device's pinned certificates */
    char identifier[];   /* map key */
};

/* Bytes of a key's SHA-256 kept per pin: enough to tell a device's keys
 * apart (rotation same_key; finding a key whose hash starts like another's
 * takes 2^128 tries), and half the memory.  The worker compares whole
 * hashes in the database. */
#define PN_SPKI_KEPT 16

/* A million of these stay in memory: 72 bytes, so that with its malloc
 * header it takes 80 (issue 13: at most 200 bytes per pinned device). */
struct pn_pin {
    unsigned char id[PN_SHA256];      /* certificate id, binary; map key */
    unsigned char spki[PN_SPKI_KEPT]; /* SHA-256 of the SubjectPublicKeyInfo, first bytes */
    struct pn_device *dev;
    struct pn_pin *next; /* next pin of the same device */
    uint32_t not_after;  /* Unix time, saturated to 0..UINT32_MAX (2106-02-07):
                            a certificate valid beyond that expires then */
    char status;         /* PN_ACTIVE / PN_REVOKED */
    bool pending;        /* pinned here, not yet seen back from the database */
};

struct pn_service {
    unsigned char id[PN_SHA256];
    time_t not_after;
    char status; /* PN_ACTIVE / PN_REVOKED; a revoked service keeps its name reserved */
    char name[];
};

struct pn_state {
    struct pn_map *cas;              /* hex id -> pn_ca */
    struct pn_map *devices;          /* identifier -> pn_device */
    struct pn_map *devices_by_id;    /* int64 id -> pn_device (ids > 0 only) */
    struct pn_map *pins;             /* binary id -> pn_pin */
    struct pn_map *services;         /* binary id -> pn_service */
    struct pn_map *services_by_name; /* name -> pn_service */
};

struct pn_state *pn_state_new(size_t devices_hint);
void pn_state_free(struct pn_state *s);

/* Each upsert takes ownership of its argument (freeing it on failure) and
 * returns the object now in the state, or NULL on allocation failure. */
struct pn_ca *pn_state_put_ca(struct pn_state *s, struct pn_ca *ca);
void pn_state_del_ca(struct pn_state *s, const char *hex_id);

/* Upserts by database id; a pending JITP device with the same identifier
 * is adopted.  Existing objects are updated in place so pins keep their
 * pointers. `was_active` (may be NULL) receives whether the identifier was
 * admissible before. */
struct pn_device *pn_state_put_device(struct pn_state *s, int64_t id, const char *identifier,
                                      int64_t org_id, int64_t product_id, char status);
/* A device created in memory by JITP at CONNECT, before the database has
 * it (id 0). */
struct pn_device *pn_state_add_pending_device(struct pn_state *s, const char *identifier,
                                              int64_t org_id, int64_t product_id);
/* Marks a device gone and drops its pins; returns it (still allocated
 * until pn_state_free) or NULL. */
struct pn_device *pn_state_del_device(struct pn_state *s, int64_t id);

/* spki: the key's SHA-256 (only its first PN_SPKI_KEPT bytes are read). */
struct pn_pin *pn_state_put_pin(struct pn_state *s, const unsigned char id[PN_SHA256],
                                struct pn_device *dev, const unsigned char *spki, time_t not_after,
                                char status);
/* Removes a pin; returns the device it belonged to (or NULL). */
struct pn_device *pn_state_del_pin(struct pn_state *s, const unsigned char id[PN_SHA256]);

/* A new service starts PN_ACTIVE; set ->status after for another. */
struct pn_service *pn_state_put_service(struct pn_state *s, const unsigned char id[PN_SHA256],
                                        const char *name, time_t not_after);
/* Removes a service identity; copies its name into name_out (if not NULL). */
int pn_state_del_service(struct pn_state *s, const unsigned char id[PN_SHA256], char *name_out,
                         size_t name_len);

/* Frees a CA object (X509 and strings). */
void pn_ca_free(struct pn_ca *ca);

#endif
