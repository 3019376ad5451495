/* SPDX-License-Identifier: Apache-2.0 */
/* The CONNECT decision (docs/protocol.md, "Admission"), made from memory only.
 *
 * Order matters: a pinned certificate is judged by its pin alone (its CA
 * may since have been disabled, expired or deleted: NervesHub semantics),
 * so the expensive chain and policy checks run only on a certificate's
 * first connect. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cert.h"
#include "err.h"
#include "ident.h"
#include "policy.h"

static enum pn_admit_kind refuse(struct pn_admission *out, enum pn_refusal code, const char *fmt,
                                 ...) __attribute__((format(printf, 3, 4)));

static enum pn_admit_kind refuse(struct pn_admission *out, enum pn_refusal code, const char *fmt,
                                 ...)
{
    va_list ap;
    out->refusal = code;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
    return PN_REFUSE;
}

/* Whether ca issued cert: names and key identifiers match
 * (X509_check_issued), and cert's signature verifies with ca's key.  The
 * TLS handshake has verified that signature already, with the key of
 * tls_issuer (handshake.h; NULL when unknown): when that is ca's own
 * certificate, or another with ca's key (a renewed CA), the answer is
 * known and the ECDSA check, the costliest step of a first connect, is not
 * repeated.  Any other key (a revoked or re-keyed CA with the same name
 * that OpenSSL still caches, or another trust store) gets the full check. */
static bool issued_by(X509 *cert, const struct pn_ca *ca, X509 *tls_issuer,
                      struct pn_admission *out)
{
    if (X509_check_issued(ca->cert, cert) != X509_V_OK)
        return false;
    /* Both keys present: EVP_PKEY_eq(NULL, NULL) is 1. */
    EVP_PKEY *ca_key = X509_get0_pubkey(ca->cert);
    EVP_PKEY *tls_key = tls_issuer ? X509_get0_pubkey(tls_issuer) : NULL;
    if (ca_key && tls_key &&
        (X509_cmp(tls_issuer, ca->cert) == 0 || EVP_PKEY_eq(tls_key, ca_key) == 1)) {
        out->ca_sig_from_tls++;
        return true;
    }
    out->ca_sig_checks++;
    return pn_cert_issued_by(cert, ca->cert);
}

/* The registered CA that issued cert.  Several CAs may share a key (a
 * renewed CA); an active one is preferred so that renewing a CA does not
 * lock out its devices. */
static struct pn_ca *find_issuer(const struct pn_state *s, X509 *cert, X509 *tls_issuer,
                                 struct pn_admission *out)
{
    struct pn_ca *best = NULL;
    size_t i = 0;
    void *v;
    while (pn_map_next(s->cas, &i, &v)) {
        struct pn_ca *ca = v;
        if (!issued_by(cert, ca, tls_issuer, out))
            continue;
        if (!best || (best->status != PN_ACTIVE && ca->status == PN_ACTIVE))
            best = ca;
    }
    return best;
}

/* A service NAME connects as NAME or NAME-<anything>; no device may use
 * such a name, so neither can take the other's session over (Mosquitto
 * disconnects the older of two clients with one client id). */
static bool in_service_namespace(const char *name, const char *client_id)
{
    size_t n = strlen(name);
    return strncmp(client_id, name, n) == 0 && (client_id[n] == '\0' || client_id[n] == '-');
}

/* The service whose namespace holds identifier, or NULL. */
static const struct pn_service *service_owning(const struct pn_state *s, const char *identifier)
{
    size_t i = 0;
    void *v;
    while (pn_map_next(s->services_by_name, &i, &v))
        if (in_service_namespace(((const struct pn_service *)v)->name, identifier))
            return v;
    return NULL;
}

static bool rotation_allows(const struct pn_device *d, enum pn_rotation r,
                            const unsigned char spki[PN_SHA256], const char **why)
{
    bool any_active = false, same_key = false;
    for (const struct pn_pin *p = d->pins; p; p = p->next) {
        if (p->status != PN_ACTIVE)
            continue;
        any_active = true;
        if (memcmp(p->spki, spki, PN_SPKI_KEPT) == 0)
            same_key = true;
    }
    if (!any_active || r == PN_ROTATE_ANY)
        return true;
    if (r == PN_ROTATE_NONE) {
        *why = "device already has a pinned certificate (rotation none)";
        return false;
    }
    if (!same_key) {
        *why = "certificate has a different key than the device's pinned one (rotation same_key)";
        return false;
    }
    return true;
}

static enum pn_admit_kind decide(const struct pn_state *s, const struct pn_policy *pol, X509 *cert,
                                 X509 *tls_issuer, const char *client_id, bool db_ready, time_t now,
                                 struct pn_admission *out)
{
    struct pn_err err;

    snprintf(out->identifier, sizeof(out->identifier), "%s", client_id ? client_id : "-");
    snprintf(out->cert_id, sizeof(out->cert_id), "-");
    if (!cert)
        return refuse(out, PN_REFUSED_NO_CERT, "no client certificate");
    if (pn_cert_id_bin(cert, out->cert_bin) < 0)
        return refuse(out, PN_REFUSED_BAD_CERT, "cannot hash the certificate");
    sodium_bin2hex(out->cert_id, sizeof(out->cert_id), out->cert_bin, PN_SHA256);

    /* 1. Service identities. */
    const struct pn_service *svc = pn_map_get(s->services, out->cert_bin, PN_SHA256);
    if (svc) {
        snprintf(out->identifier, sizeof(out->identifier), "%s", svc->name);
        if (svc->status != PN_ACTIVE)
            return refuse(out, PN_REFUSED_REVOKED, "service '%s' is revoked", svc->name);
        /* Both dates: the TLS layer checks none (NO_CHECK_TIME). */
        if (pn_cert_check_dates(cert, now, &err) < 0)
            return refuse(out, PN_REFUSED_EXPIRED, "service %s", err.msg);
        if (!client_id || !in_service_namespace(svc->name, client_id))
            return refuse(out, PN_REFUSED_CLIENT_ID,
                          "client id '%s' is not the service's name '%s' or '%s-...'",
                          client_id ? client_id : "", svc->name, svc->name);
        return PN_ADMIT_SERVICE;
    }

    /* 2. Pinned certificates: the pin decides. */
    const struct pn_pin *pin = pn_map_get(s->pins, out->cert_bin, PN_SHA256);
    if (pin) {
        const struct pn_device *d = pin->dev;
        if (d)
            snprintf(out->identifier, sizeof(out->identifier), "%s", d->identifier);
        if (!d || d->status == PN_GONE)
            return refuse(out, PN_REFUSED_DELETED, "device was deleted");
        if (d->status != PN_ACTIVE)
            return refuse(out, PN_REFUSED_REVOKED, "device is revoked");
        if (pin->status != PN_ACTIVE)
            return refuse(out, PN_REFUSED_REVOKED, "certificate is revoked");
        if (now > (time_t)pin->not_after && !pol->allow_expired_pinned)
            return refuse(out, PN_REFUSED_EXPIRED, "pinned certificate has expired");
        if (!client_id || strcmp(client_id, d->identifier) != 0)
            return refuse(out, PN_REFUSED_CLIENT_ID,
                          "client id '%s' is not the device identifier '%s'",
                          client_id ? client_id : "", d->identifier);
        if (pn_ident_reserved(d->identifier))
            return refuse(out, PN_REFUSED_IDENTIFIER, "identifier '%s' is reserved", d->identifier);
        const struct pn_service *owner = service_owning(s, d->identifier);
        if (owner)
            return refuse(out, PN_REFUSED_IDENTIFIER,
                          "identifier '%s' is in service '%s''s client id namespace", d->identifier,
                          owner->name);
        return PN_ADMIT_PINNED;
    }

    /* 3. First connect of this certificate. */
    if (pn_cert_check_device(cert, &err) < 0)
        return refuse(out, PN_REFUSED_BAD_CERT, "%s", err.msg);
    char ident[PN_IDENT_MAX + 2];
    if (pol->identity == PN_IDENTITY_CN) {
        if (pn_cert_cn(cert, ident, sizeof(ident), &err) < 0)
            return refuse(out, PN_REFUSED_BAD_CERT, "%s", err.msg);
    } else {
        if (!client_id || strlen(client_id) > PN_IDENT_MAX)
            return refuse(out, PN_REFUSED_IDENTIFIER, "client id is not a valid device identifier");
        memcpy(ident, client_id, strlen(client_id) + 1);
    }
    if (!pn_ident_valid(ident))
        return refuse(out, PN_REFUSED_IDENTIFIER, "'%.128s' is not a valid device identifier",
                      ident);
    memcpy(out->identifier, ident, strlen(ident) + 1);
    if (pn_ident_reserved(ident))
        return refuse(out, PN_REFUSED_IDENTIFIER, "identifier '%s' is reserved", ident);
    const struct pn_service *owner = service_owning(s, ident);
    if (owner)
        return refuse(out, PN_REFUSED_IDENTIFIER,
                      "identifier '%s' is in service '%s''s client id namespace", ident,
                      owner->name);
    if (!client_id || strcmp(client_id, ident) != 0)
        return refuse(out, PN_REFUSED_CLIENT_ID, "client id '%s' is not the device identifier '%s'",
                      client_id ? client_id : "", ident);

    struct pn_ca *ca = find_issuer(s, cert, tls_issuer, out);
    if (!ca)
        return refuse(out, PN_REFUSED_UNKNOWN_CA, "issuer is not a registered Device CA");
    if (ca->status == PN_DISABLED)
        return refuse(out, PN_REFUSED_CA_DISABLED, "CA %.16s is disabled", ca->id);
    if (ca->status != PN_ACTIVE)
        return refuse(out, PN_REFUSED_REVOKED, "CA %.16s is revoked", ca->id);
    if (now < ca->not_before || now > ca->not_after)
        return refuse(out, PN_REFUSED_EXPIRED, "CA %.16s is outside its validity period", ca->id);
    if (pn_cert_check_dates(cert, now, &err) < 0)
        return refuse(out, PN_REFUSED_EXPIRED, "%s", err.msg);
    if (!db_ready)
        return refuse(out, PN_REFUSED_DATABASE,
                      "database unavailable: first connects are refused until it is "
                      "back");

    if (pn_cert_spki_sha256_bin(cert, out->spki) < 0)
        return refuse(out, PN_REFUSED_BAD_CERT, "cannot hash the public key");
    struct pn_device *d = pn_map_get(s->devices, ident, strlen(ident));
    if (d && d->status == PN_GONE)
        d = NULL;
    if (!d) {
        if (!ca->jitp_product_id)
            return refuse(out, PN_REFUSED_UNKNOWN_DEVICE,
                          "unknown device, and CA %.16s has no JITP settings", ca->id);
    } else {
        const char *why = NULL;
        if (d->status != PN_ACTIVE)
            return refuse(out, PN_REFUSED_REVOKED, "device is revoked");
        if (d->org_id != ca->org_id)
            return refuse(out, PN_REFUSED_ORG,
                          "device belongs to another organisation than CA %.16s", ca->id);
        if (!rotation_allows(d, pol->rotation, out->spki, &why))
            return refuse(out, PN_REFUSED_ROTATION, "%s", why);
    }
    out->ca = ca;
    out->dev = d;
    out->not_after = pn_cert_not_after(cert);
    return PN_ADMIT_NEW;
}

void pn_admit_decide(const struct pn_state *s, const struct pn_policy *pol, X509 *cert,
                     X509 *tls_issuer, const char *client_id, bool db_ready, time_t now,
                     struct pn_admission *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = decide(s, pol, cert, tls_issuer, client_id, db_ready, now, out);
    if (out->kind == PN_REFUSE) { /* logged: the client id is the client's */
        pn_printable(out->identifier);
        pn_printable(out->reason);
    }
}

/* At SIGHUP Mosquitto re-authenticates every session, including offline
 * durable ones, which have no certificate: the identity the plugin gave
 * each (its username) decides.  A service keeps its session while the
 * service is active; a device while it is active, has an active pin, and
 * its client id is still its identifier (as at its admission). */
bool pn_admit_reload_keeps(const struct pn_state *s, const char *client_id, const char *username)
{
    if (!username)
        return false;
    size_t sp = strlen(PN_SERVICE_USER_PREFIX);
    if (!strncmp(username, PN_SERVICE_USER_PREFIX, sp)) {
        const struct pn_service *sv =
            pn_map_get(s->services_by_name, username + sp, strlen(username + sp));
        return sv && sv->status == PN_ACTIVE;
    }
    if (!pn_ident_valid(username) || !client_id || strcmp(client_id, username) != 0)
        return false;
    const struct pn_device *d = pn_map_get(s->devices, username, strlen(username));
    if (!d || d->status != PN_ACTIVE)
        return false;
    for (const struct pn_pin *pin = d->pins; pin; pin = pin->next)
        if (pin->status == PN_ACTIVE)
            return true;
    return false;
}
