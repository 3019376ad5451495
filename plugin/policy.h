/* SPDX-License-Identifier: Apache-2.0 */
/* The plugin's decisions as pure functions of the in-memory state: who may
 * connect (admit.c) and what a connected client may do (acl.c).  No
 * Mosquitto calls, no I/O: unit-testable and benchmarkable on their own. */
#ifndef PINION_PLUGIN_POLICY_H
#define PINION_PLUGIN_POLICY_H

#include <stdbool.h>
#include <time.h>

#include <openssl/x509.h>

#include "state.h"

/* Usernames the plugin gives service identities; '$' and '/' never occur
 * in device identifiers, so no device can ever carry one. */
#define PN_SERVICE_USER_PREFIX "$service/"

enum pn_identity_mode { PN_IDENTITY_CN, PN_IDENTITY_CLIENT_ID };
enum pn_rotation { PN_ROTATE_SAME_KEY, PN_ROTATE_ANY, PN_ROTATE_NONE };

struct pn_policy {
    const char *topic_root;
    enum pn_identity_mode identity;
    enum pn_rotation rotation;
    bool allow_expired_pinned;
};

enum pn_admit_kind {
    PN_REFUSE,
    PN_ADMIT_SERVICE, /* a registered service identity */
    PN_ADMIT_PINNED,  /* certificate already pinned: admitted from the pin */
    PN_ADMIT_NEW,     /* first connect of this certificate: pin it */
};

/* Why a CONNECT was refused, in classes an operator can count and alert on
 * ($SYS/broker/pinion/refused/<name>, metrics.c); the sentence in
 * pn_admission.reason says the rest. */
enum pn_refusal {
    PN_REFUSED_NO_CERT,    /* no client certificate */
    PN_REFUSED_BAD_CERT,   /* not a usable device certificate */
    PN_REFUSED_UNKNOWN_CA, /* issuer is not a registered Device CA */
    PN_REFUSED_CA_DISABLED,
    PN_REFUSED_REVOKED,        /* certificate, device, CA or service revoked */
    PN_REFUSED_DELETED,        /* pinned to a deleted device */
    PN_REFUSED_EXPIRED,        /* outside a validity period */
    PN_REFUSED_CLIENT_ID,      /* client id is not the identity's */
    PN_REFUSED_IDENTIFIER,     /* invalid, reserved or in a service's namespace */
    PN_REFUSED_UNKNOWN_DEVICE, /* unknown device and no JITP */
    PN_REFUSED_ORG,            /* device of another organisation */
    PN_REFUSED_ROTATION,       /* the rotation policy forbids the new certificate */
    PN_REFUSED_DATABASE,       /* first connect while the database is away */
    PN_REFUSED_INTERNAL,       /* out of memory */
    PN_REFUSED_COUNT
};

struct pn_admission {
    enum pn_admit_kind kind;
    enum pn_refusal refusal; /* PN_REFUSE only */
    char cert_id[65];
    unsigned char cert_bin[PN_SHA256];
    char identifier[129]; /* device identifier, or service name */
    char reason[320];     /* why it was refused */
    /* PN_ADMIT_NEW only: */
    struct pn_ca *ca;
    struct pn_device *dev; /* NULL: the device is to be created (JITP) */
    unsigned char spki[PN_SHA256];
    time_t not_after;
    /* Signatures of registered CAs over cert: checked here, or known from
     * the TLS handshake (tls_issuer) and not checked again. */
    unsigned ca_sig_checks, ca_sig_from_tls;
};

/* Decides a CONNECT (docs/protocol.md, "Admission").  cert may be NULL
 * (refused).  tls_issuer: the certificate whose key the TLS handshake
 * verified cert's signature with (handshake.h), or NULL when unknown.
 * db_ready: whether the worker is in touch with the database; first
 * connects are refused without it (fail closed).  Always fills out. */
void pn_admit_decide(const struct pn_state *s, const struct pn_policy *pol, X509 *cert,
                     X509 *tls_issuer, const char *client_id, bool db_ready, time_t now,
                     struct pn_admission *out);

/* Whether a session re-authenticated without a certificate at SIGHUP
 * (Mosquitto re-checks offline durable sessions too) keeps its place: the
 * identity given at its admission (username: identifier, or
 * PN_SERVICE_USER_PREFIX + name) is still admissible.  The caller asks only
 * during a reload: a certificate-less CONNECT is refused at any other time. */
bool pn_admit_reload_keeps(const struct pn_state *s, const char *client_id, const char *username);

/* Access kinds, numerically equal to Mosquitto's MOSQ_ACL_*. */
enum { PN_ACL_READ = 1, PN_ACL_WRITE = 2, PN_ACL_SUBSCRIBE = 4, PN_ACL_UNSUBSCRIBE = 8 };

/* docs/protocol.md, "Topics and access".  username is what the plugin set
 * at CONNECT (identifier, or PN_SERVICE_USER_PREFIX + name).  Returns true to allow. */
bool pn_acl_allows(const struct pn_state *s, const char *topic_root, const char *username,
                   const char *client_id, const char *topic, int access);

#endif
