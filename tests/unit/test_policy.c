/* SPDX-License-Identifier: Apache-2.0 */
/* plugin/policy.h: the CONNECT decision (pn_admit_decide, docs/protocol.md,
 * "Admission"; pn_admit_reload_keeps at SIGHUP) and topic access
 * (pn_acl_allows, "Topics and access") as pure functions of an in-memory
 * state filled here directly, with certificates made by lib/cert.h.  No
 * broker, no database. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cert.h"
#include "check.h"
#include "ops.h"
#include "policy.h"
#include "state.h"
#include "testcert.h"

#define DAY 86400

static time_t now;
static struct pn_err err;

/* ------------------------------------------------------------ fixtures */

static EVP_PKEY *key_ec(void)
{
    EVP_PKEY *k = pn_key_generate("ec", &err);
    if (!k) {
        fprintf(stderr, "key generation failed: %s\n", err.msg);
        exit(2);
    }
    return k;
}

static X509 *must(X509 *x, const char *what)
{
    if (!x) {
        fprintf(stderr, "cannot make %s: %s\n", what, err.msg);
        exit(2);
    }
    return x;
}

/* A certificate of kind for key, signed by issuer/ikey (NULL: self-signed),
 * valid `days` from now. */
static X509 *mk(enum pn_cert_kind kind, const char *cn, long days, EVP_PKEY *key, X509 *issuer,
                EVP_PKEY *ikey)
{
    struct pn_cert_spec spec = {kind, cn, NULL, days};
    return must(pn_cert_make(&spec, key, issuer, ikey, &err), cn ? cn : "certificate");
}

/* A device certificate whose subject is replaced by `cn` taken as it is
 * (any length, any characters), re-signed by the issuer. */
static X509 *mk_raw_cn(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey)
{
    X509 *x = mk(PN_CERT_DEVICE, "placeholder", 30, key, issuer, ikey);
    X509_NAME *n = X509_NAME_new();
    if (!n ||
        !X509_NAME_add_entry_by_NID(n, NID_commonName, V_ASN1_UTF8STRING, (const unsigned char *)cn,
                                    (int)strlen(cn), -1, 0) ||
        !X509_set_subject_name(x, n) || !X509_sign(x, ikey, EVP_sha256())) {
        fprintf(stderr, "cannot make a certificate with the raw CN '%s'\n", cn);
        exit(2);
    }
    X509_NAME_free(n);
    return x;
}

static void bin_id(X509 *x, unsigned char out[PN_SHA256])
{
    unsigned int n = 0;
    if (!X509_digest(x, EVP_sha256(), out, &n) || n != PN_SHA256) {
        fprintf(stderr, "X509_digest failed\n");
        exit(2);
    }
}

/* Registers issuer as a CA of org 1 (JITP into product jitp, or none). */
static struct pn_ca *put_ca(struct pn_state *s, X509 *cert, int64_t jitp)
{
    struct pn_ca *ca = calloc(1, sizeof(*ca));
    if (!ca || pn_cert_id(cert, ca->id) < 0) {
        fprintf(stderr, "cannot make a CA\n");
        exit(2);
    }
    X509_up_ref(cert);
    ca->cert = cert;
    ca->org_id = 1;
    ca->status = PN_ACTIVE;
    ca->not_before = pn_cert_not_before(cert);
    ca->not_after = pn_cert_not_after(cert);
    ca->jitp_product_id = jitp;
    ca->jitp_tags = strdup(jitp ? "[\"a\",\"b\"]" : "[]");
    return pn_state_put_ca(s, ca);
}

static struct pn_pin *put_pin(struct pn_state *s, struct pn_device *d, X509 *cert, char status)
{
    unsigned char id[PN_SHA256], spki[PN_SHA256];
    bin_id(cert, id);
    pn_cert_spki_sha256_bin(cert, spki);
    return pn_state_put_pin(s, id, d, spki, pn_cert_not_after(cert), status);
}

static const struct pn_policy POL_DEFAULT = {"fleet", PN_IDENTITY_CN, PN_ROTATE_SAME_KEY, false};

static enum pn_admit_kind decide(const struct pn_state *s, const struct pn_policy *pol, X509 *cert,
                                 const char *cid, bool ready, time_t t, struct pn_admission *a)
{
    pn_admit_decide(s, pol, cert, NULL, cid, ready, t, a);
    return a->kind;
}

/* The refusal reason contains `what` (printed when it does not). */
static int why(const struct pn_admission *a, const char *what)
{
    if (a->kind == PN_REFUSE && strstr(a->reason, what))
        return 1;
    fprintf(stderr, "  kind %d, reason '%s', expected a refusal with '%s'\n", a->kind, a->reason,
            what);
    return 0;
}

/* ------------------------------------------------------------- the PKI */

static EVP_PKEY *ca_key, *ca2_key, *noj_key, *other_key, *svc_key, *a_key, *b_key;
static X509 *ca_cert, *ca2_cert, *noj_cert, *other_cert, *svc_cert;
static X509 *a_cert, *b_cert;

static void make_pki(void)
{
    ca_key = key_ec();
    ca2_key = key_ec();
    noj_key = key_ec();
    other_key = key_ec();
    svc_key = key_ec();
    a_key = key_ec();
    b_key = key_ec();
    ca_cert = mk(PN_CERT_CA, "JITP CA", 365, ca_key, NULL, NULL);
    ca2_cert = mk(PN_CERT_CA, "CA two", 365, ca2_key, NULL, NULL);
    noj_cert = mk(PN_CERT_CA, "no-JITP CA", 365, noj_key, NULL, NULL);
    other_cert = mk(PN_CERT_CA, "unregistered CA", 365, other_key, NULL, NULL);
    svc_cert = mk(PN_CERT_DEVICE, "svc", 30, svc_key, NULL, NULL);
    a_cert = mk(PN_CERT_DEVICE, "A", 30, a_key, ca_cert, ca_key);
    b_cert = mk(PN_CERT_DEVICE, "B", 30, b_key, ca_cert, ca_key);
}

/* State: CAs ca (JITP), ca2 (JITP), noj (no JITP); devices A and B with
 * pinned certificates; revoked device R; service "svc". */
static struct pn_state *make_state(void)
{
    struct pn_state *s = pn_state_new(16);
    CHECK(s != NULL);
    CHECK(put_ca(s, ca_cert, 7) != NULL);
    CHECK(put_ca(s, ca2_cert, 7) != NULL);
    CHECK(put_ca(s, noj_cert, 0) != NULL);
    struct pn_device *a = pn_state_put_device(s, 1, "A", 1, 7, PN_ACTIVE);
    struct pn_device *b = pn_state_put_device(s, 2, "B", 1, 7, PN_ACTIVE);
    struct pn_device *r = pn_state_put_device(s, 3, "R", 1, 7, PN_REVOKED);
    CHECK(a && b && r);
    CHECK(put_pin(s, a, a_cert, PN_ACTIVE) != NULL);
    CHECK(put_pin(s, b, b_cert, PN_ACTIVE) != NULL);
    unsigned char sid[PN_SHA256];
    bin_id(svc_cert, sid);
    CHECK(pn_state_put_service(s, sid, "svc", pn_cert_not_after(svc_cert)) != NULL);
    return s;
}

static X509 *without_aki(X509 *cert, EVP_PKEY *ikey)
{
    return must(testcert_without_aki(cert, ikey), "a certificate without AKI");
}

/* ----------------------------------------------------------------- ACL */

#define R PN_ACL_READ
#define W PN_ACL_WRITE
#define S PN_ACL_SUBSCRIBE
#define U PN_ACL_UNSUBSCRIBE

static int allows(const struct pn_state *s, const char *user, const char *cid, const char *topic,
                  int access)
{
    return pn_acl_allows(s, "fleet", user, cid, topic, access);
}

static void test_acl_device(void)
{
    struct pn_state *s = make_state();

    /* Its own down tree: subscribe and read. */
    CHECK(allows(s, "A", "A", "fleet/A/down/#", S));
    CHECK(allows(s, "A", "A", "fleet/A/down/update", S));
    CHECK(allows(s, "A", "A", "fleet/A/down/+", S));
    CHECK(allows(s, "A", "A", "fleet/A/down/chunk", R));
    CHECK(allows(s, "A", "A", "fleet/A/down/update", R));
    /* Its own up tree: publish. */
    CHECK(allows(s, "A", "A", "fleet/A/up/status", W));
    CHECK(allows(s, "A", "A", "fleet/A/up/get", W));
    CHECK(allows(s, "A", "A", "fleet/A/down/#", U));

    /* Subscriptions that reach beyond its down tree. */
    const char *bad_subs[] = {"fleet/B/down/#",
                              "fleet/+/down/#",
                              "#",
                              "+/#",
                              "fleet/#",
                              "fleet/+/#",
                              "fleet/A/#",
                              "fleet/A/+/#",
                              "fleet/A/+/update",
                              "$share/g/fleet/A/down/#",
                              "$share/g/fleet/B/down/#",
                              "$share/g/#",
                              "fleet/A/up/#",
                              "fleet/A/up/status",
                              "fleet/A/downx/#",
                              "fleet/Ax/down/#",
                              "fleet/events/#",
                              "$SYS/#",
                              "$CONTROL/#",
                              "fleetx/A/down/#",
                              "A/down/#",
                              "/fleet/A/down/#",
                              ""};
    for (size_t i = 0; i < sizeof(bad_subs) / sizeof(*bad_subs); i++) {
        int ok = allows(s, "A", "A", bad_subs[i], S);
        CHECK(!ok);
        if (ok)
            fprintf(stderr, "  device A may subscribe to '%s'\n", bad_subs[i]);
    }
    /* Messages it must not receive. */
    CHECK(!allows(s, "A", "A", "fleet/B/down/chunk", R));
    CHECK(!allows(s, "A", "A", "fleet/A/up/status", R));
    CHECK(!allows(s, "A", "A", "fleet/events/certificates/registered/x", R));
    CHECK(!allows(s, "A", "A", "$SYS/broker/uptime", R));

    /* Publications outside its up tree. */
    const char *bad_pubs[] = {"fleet/A/down/update",
                              "fleet/A/down/chunk",
                              "fleet/B/up/status",
                              "$CONTROL/x",
                              "$SYS/x",
                              "fleet/A/upx",
                              "fleet/A/upx/status",
                              "fleet/A",
                              "fleet/events/x",
                              "fleet/Ax/up/status",
                              "other/x",
                              "A/up/status"};
    for (size_t i = 0; i < sizeof(bad_pubs) / sizeof(*bad_pubs); i++) {
        int ok = allows(s, "A", "A", bad_pubs[i], W);
        CHECK(!ok);
        if (ok)
            fprintf(stderr, "  device A may publish to '%s'\n", bad_pubs[i]);
    }

    /* The identity behind the request. */
    CHECK(!allows(s, "A", "B", "fleet/A/down/#", S)); /* username != client id */
    CHECK(!allows(s, "A", NULL, "fleet/A/down/#", S));
    CHECK(!allows(s, NULL, "A", "fleet/A/down/#", S)); /* no username: not authenticated */
    CHECK(!allows(s, NULL, "A", "fleet/A/up/status", W));
    CHECK(!allows(s, "R", "R", "fleet/R/down/#", S)); /* revoked device */
    CHECK(!allows(s, "R", "R", "fleet/R/up/status", W));
    CHECK(!allows(s, "Z", "Z", "fleet/Z/down/#", S)); /* unknown device */
    CHECK(!allows(s, "Z", "Z", "fleet/Z/up/status", W));
    CHECK(!allows(s, "A", "A", NULL, S));
    /* Client ids that are not identifiers never get a tree, even if a
     * username like that were set. */
    CHECK(!allows(s, "+", "+", "fleet/+/down/#", S));
    CHECK(!allows(s, "#", "#", "fleet/#/down/#", S));

    /* A device revoked after it connected loses everything at once. */
    CHECK(pn_state_put_device(s, 1, "A", 1, 7, PN_REVOKED) != NULL);
    CHECK(!allows(s, "A", "A", "fleet/A/down/#", S));
    CHECK(!allows(s, "A", "A", "fleet/A/down/update", R));
    CHECK(!allows(s, "A", "A", "fleet/A/up/status", W));
    /* ... and so does a deleted one. */
    CHECK(pn_state_del_device(s, 2) != NULL);
    CHECK(!allows(s, "B", "B", "fleet/B/down/#", S));
    CHECK(!allows(s, "B", "B", "fleet/B/up/status", W));

    /* Another topic root. */
    struct pn_state *s2 = make_state();
    CHECK(pn_acl_allows(s2, "site.1/fleet", "A", "A", "site.1/fleet/A/down/#", S));
    CHECK(pn_acl_allows(s2, "site.1/fleet", "A", "A", "site.1/fleet/A/up/status", W));
    CHECK(!pn_acl_allows(s2, "site.1/fleet", "A", "A", "fleet/A/down/#", S));
    CHECK(!pn_acl_allows(s2, "site.1/fleet", "A", "A", "site.1/fleet/B/down/#", S));
    CHECK(!pn_acl_allows(s2, "site.1/fleet", "A", "A", "site.1/#", S));
    pn_state_free(s2);
    pn_state_free(s);
}

static void test_acl_service(void)
{
    struct pn_state *s = make_state();
    const char *svc = PN_SERVICE_USER_PREFIX "svc";

    CHECK(allows(s, svc, "svc", "fleet/#", S));
    CHECK(allows(s, svc, "svc", "fleet/+/up/#", S));
    CHECK(allows(s, svc, "svc", "fleet/events/#", S));
    CHECK(allows(s, svc, "svc", "$share/g/fleet/x/up/#", S));
    CHECK(allows(s, svc, "svc", "$share/g/fleet/#", S));
    CHECK(allows(s, svc, "svc", "fleet/x/up/status", R));
    CHECK(allows(s, svc, "svc", "fleet/x/down/update", W));
    CHECK(allows(s, svc, "svc", "fleet/x/down/chunk", W));
    CHECK(allows(s, svc, "svc", "fleet/events/certificates/registered/y", W));
    CHECK(allows(s, svc, "any-client-id", "fleet/x/down/update", W));

    CHECK(!allows(s, svc, "svc", "#", S));
    CHECK(!allows(s, svc, "svc", "+/#", S));
    CHECK(!allows(s, svc, "svc", "+/x/down/#", S));
    CHECK(!allows(s, svc, "svc", "$share/g/#", S));
    CHECK(!allows(s, svc, "svc", "$share/g/other/#", S));
    CHECK(!allows(s, svc, "svc", "$share/g", S));
    CHECK(!allows(s, svc, "svc", "other/x", W));
    CHECK(!allows(s, svc, "svc", "other/x", S));
    CHECK(!allows(s, svc, "svc", "other/x", R));
    CHECK(!allows(s, svc, "svc", "fleetx/a", W));
    CHECK(!allows(s, svc, "svc", "$SYS/x", W));
    CHECK(!allows(s, svc, "svc", "$CONTROL/dynamic-security/v1", W));
    /* $SYS (Mosquitto's and the plugin's counters) is readable by services,
     * for monitoring; never writable. */
    CHECK(allows(s, svc, "svc", "$SYS/#", S));
    CHECK(allows(s, svc, "svc", "$SYS/broker/pinion/#", S));
    CHECK(allows(s, svc, "svc", "$SYS/broker/pinion/admitted/new", R));
    CHECK(!allows(s, svc, "svc", "$SYS/broker/pinion/admitted/new", W));
    CHECK(!allows(s, svc, "svc", "$SYSx/#", S));

    /* Only registered service names. */
    const char *nosuch = PN_SERVICE_USER_PREFIX "nosuch";
    CHECK(!allows(s, nosuch, "nosuch", "fleet/#", S));
    CHECK(!allows(s, nosuch, "nosuch", "fleet/x/down/update", W));
    CHECK(!allows(s, nosuch, "nosuch", "fleet/x/up/status", R));
    CHECK(!allows(s, PN_SERVICE_USER_PREFIX, "x", "fleet/#", S));
    /* A revoked service loses its rights (also for its offline durable
     * sessions, which are judged by username), and so does a removed one. */
    unsigned char sid[PN_SHA256];
    bin_id(svc_cert, sid);
    struct pn_service *sv = pn_map_get(s->services, sid, PN_SHA256);
    CHECK(sv != NULL);
    sv->status = PN_REVOKED;
    CHECK(!allows(s, svc, "svc", "fleet/#", S));
    CHECK(!allows(s, svc, "svc-2", "fleet/x/down/update", W));
    CHECK(!allows(s, svc, "svc", "fleet/x/up/status", R));
    sv->status = PN_ACTIVE;
    CHECK(allows(s, svc, "svc", "fleet/#", S));
    CHECK(pn_state_del_service(s, sid, NULL, 0) == 0);
    CHECK(!allows(s, svc, "svc", "fleet/#", S));
    CHECK(!allows(s, svc, "svc", "fleet/x/down/update", W));
    pn_state_free(s);
}

/* ----------------------------------------------------------- admission */

static void test_admit_pinned(void)
{
    struct pn_state *s = make_state();
    struct pn_admission a;
    struct pn_policy pol = POL_DEFAULT;
    char hex[PN_CERT_ID_HEX];

    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    CHECK_STREQ(a.identifier, "A");
    pn_cert_id(a_cert, hex);
    CHECK_STREQ(a.cert_id, hex);
    /* The pin, not the database, decides. */
    CHECK(decide(s, &pol, a_cert, "A", false, now, &a) == PN_ADMIT_PINNED);
    /* The client id must still be the identifier. */
    CHECK(decide(s, &pol, a_cert, "B", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "client id 'B' is not the device identifier 'A'"));
    CHECK(decide(s, &pol, a_cert, NULL, true, now, &a) == PN_REFUSE);
    CHECK(decide(s, &pol, NULL, "A", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "no client certificate"));
    /* identity client_id: the pin binds the identifier too. */
    pol.identity = PN_IDENTITY_CLIENT_ID;
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    CHECK(decide(s, &pol, a_cert, "A2", true, now, &a) == PN_REFUSE);
    pol.identity = PN_IDENTITY_CN;

    /* Not re-checked against the CA: disabled, revoked, expired or gone. */
    char caid[PN_CERT_ID_HEX];
    pn_cert_id(ca_cert, caid);
    struct pn_ca *ca = pn_map_get(s->cas, caid, strlen(caid));
    CHECK(ca != NULL);
    ca->status = PN_DISABLED;
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    ca->status = PN_REVOKED;
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    ca->status = PN_ACTIVE;
    ca->not_after = now - DAY;
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    pn_state_del_ca(s, caid);
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);

    /* Expiry of the pinned certificate itself. */
    time_t later = pn_cert_not_after(a_cert) + 10;
    CHECK(decide(s, &pol, a_cert, "A", true, later, &a) == PN_REFUSE);
    CHECK(why(&a, "pinned certificate has expired"));
    pol.allow_expired_pinned = true;
    CHECK(decide(s, &pol, a_cert, "A", true, later, &a) == PN_ADMIT_PINNED);
    pol.allow_expired_pinned = false;
    /* A pin keeps its expiry in 32 bits (issue 13: a pin must fit in 72
     * bytes): a certificate valid until 9999 is valid now, and until the
     * end of that range (2106), not beyond; one from before 1970 is
     * expired. */
    CHECK(sizeof(struct pn_pin) <= 72);
    struct pn_pin *ap = pn_map_get(s->pins, a.cert_bin, PN_SHA256);
    CHECK(ap != NULL);
    if (ap) {
        unsigned char pid[PN_SHA256], pspki[PN_SPKI_KEPT];
        struct pn_device *pd = ap->dev;
        memcpy(pid, ap->id, sizeof(pid));
        memcpy(pspki, ap->spki, sizeof(pspki));
        pn_state_put_pin(s, pid, pd, pspki, (time_t)253402300799, PN_ACTIVE); /* 9999 */
        CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
        CHECK(decide(s, &pol, a_cert, "A", true, (time_t)UINT32_MAX, &a) == PN_ADMIT_PINNED);
        CHECK(decide(s, &pol, a_cert, "A", true, (time_t)UINT32_MAX + 1, &a) == PN_REFUSE);
        pn_state_put_pin(s, pid, pd, pspki, (time_t)-86400, PN_ACTIVE);
        CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_REFUSE);
        pn_state_put_pin(s, pid, pd, pspki, pn_cert_not_after(a_cert), PN_ACTIVE);
        CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    }

    /* Revoked certificate; revoked device. */
    struct pn_device *b = pn_map_get(s->devices, "B", 1);
    CHECK(put_pin(s, b, b_cert, PN_REVOKED) != NULL);
    CHECK(decide(s, &pol, b_cert, "B", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "revoked"));
    pol.allow_expired_pinned = true;
    CHECK(decide(s, &pol, b_cert, "B", true, now, &a) == PN_REFUSE);
    pol.allow_expired_pinned = false;
    CHECK(put_pin(s, b, b_cert, PN_ACTIVE) != NULL);
    CHECK(decide(s, &pol, b_cert, "B", true, now, &a) == PN_ADMIT_PINNED);
    CHECK(pn_state_put_device(s, 2, "B", 1, 7, PN_REVOKED) != NULL);
    CHECK(decide(s, &pol, b_cert, "B", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "device is revoked"));
    /* A revoked device gets no new certificate either (here: unpinned,
     * same key, from a JITP CA). */
    X509 *b2 = mk(PN_CERT_DEVICE, "B", 30, b_key, ca2_cert, ca2_key);
    CHECK(decide(s, &pol, b2, "B", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "revoked"));
    X509_free(b2);
    pn_state_free(s);
}

static void test_admit_first_connect(void)
{
    struct pn_state *s = make_state();
    struct pn_admission a;
    struct pn_policy pol = POL_DEFAULT;
    EVP_PKEY *k = key_ec();
    char caid[PN_CERT_ID_HEX];
    pn_cert_id(ca_cert, caid);

    /* JITP: unknown identifier, CA with JITP settings. */
    X509 *n = mk(PN_CERT_DEVICE, "N", 30, k, ca_cert, ca_key);
    CHECK(decide(s, &pol, n, "N", true, now, &a) == PN_ADMIT_NEW);
    CHECK_STREQ(a.identifier, "N");
    CHECK(a.ca != NULL && a.dev == NULL);
    CHECK(a.ca && strcmp(a.ca->id, caid) == 0 && a.ca->jitp_product_id == 7);
    CHECK(a.not_after == pn_cert_not_after(n));
    unsigned char spki[PN_SHA256];
    pn_cert_spki_sha256_bin(n, spki);
    CHECK(memcmp(a.spki, spki, PN_SHA256) == 0);
    /* Fail closed without the database. */
    CHECK(decide(s, &pol, n, "N", false, now, &a) == PN_REFUSE);
    CHECK(why(&a, "database"));
    /* Client id must equal the CN. */
    CHECK(decide(s, &pol, n, "M", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "client id 'M' is not the device identifier 'N'"));
    CHECK(decide(s, &pol, n, NULL, true, now, &a) == PN_REFUSE);

    /* The CA's state and dates. */
    struct pn_ca *ca = pn_map_get(s->cas, caid, strlen(caid));
    ca->status = PN_DISABLED;
    CHECK(decide(s, &pol, n, "N", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "disabled"));
    ca->status = PN_REVOKED;
    CHECK(decide(s, &pol, n, "N", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "revoked"));
    ca->status = PN_ACTIVE;
    time_t na = ca->not_after, nb = ca->not_before;
    ca->not_after = now - 1;
    CHECK(decide(s, &pol, n, "N", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "outside its validity period"));
    ca->not_after = na;
    ca->not_before = now + DAY;
    CHECK(decide(s, &pol, n, "N", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "outside its validity period"));
    ca->not_before = nb;
    CHECK(decide(s, &pol, n, "N", true, now, &a) == PN_ADMIT_NEW);

    /* The device certificate's own dates. */
    CHECK(decide(s, &pol, n, "N", true, pn_cert_not_after(n) + 10, &a) == PN_REFUSE);
    CHECK(why(&a, "expired"));
    ca->not_before = now - DAY; /* so that only the device certificate is too new */
    CHECK(decide(s, &pol, n, "N", true, pn_cert_not_before(n) - 10, &a) == PN_REFUSE);
    CHECK(why(&a, "not valid before"));
    ca->not_before = nb;

    /* Issuer not registered. */
    X509 *u = mk(PN_CERT_DEVICE, "U", 30, k, other_cert, other_key);
    CHECK(decide(s, &pol, u, "U", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "not a registered Device CA"));
    /* Same issuer name and AKI, but a forged signature: not issued by it. */
    X509 *forged = mk(PN_CERT_DEVICE, "F", 30, k, ca_cert, other_key);
    CHECK(decide(s, &pol, forged, "F", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "not a registered Device CA"));

    /* No JITP: unknown devices refused, known ones admitted. */
    X509 *q = mk(PN_CERT_DEVICE, "Q", 30, k, noj_cert, noj_key);
    CHECK(decide(s, &pol, q, "Q", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "no JITP"));
    struct pn_device *qd = pn_state_put_device(s, 10, "Q", 1, 7, PN_ACTIVE);
    CHECK(decide(s, &pol, q, "Q", true, now, &a) == PN_ADMIT_NEW);
    CHECK(a.dev == qd);
    /* A device of another organisation. */
    CHECK(pn_state_put_device(s, 10, "Q", 2, 9, PN_ACTIVE) != NULL);
    CHECK(decide(s, &pol, q, "Q", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "another organisation"));

    /* Certificates that are no device certificates, or weak. */
    X509 *catrue = mk(PN_CERT_CA, "C1", 30, k, ca_cert, ca_key);
    CHECK(decide(s, &pol, catrue, "C1", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "CA:TRUE"));
    X509 *server = mk(PN_CERT_SERVER, "C2", 30, k, ca_cert, ca_key); /* serverAuth+clientAuth */
    CHECK(decide(s, &pol, server, "C2", true, now, &a) == PN_ADMIT_NEW);
    X509 *verif = mk(PN_CERT_VERIFICATION, "C3", 30, k, ca_cert, ca_key); /* no EKU */
    CHECK(decide(s, &pol, verif, "C3", true, now, &a) == PN_ADMIT_NEW);
    EVP_PKEY *rsa1k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    CHECK(rsa1k != NULL);
    X509 *weak = mk(PN_CERT_DEVICE, "W", 30, rsa1k, ca_cert, ca_key);
    CHECK(decide(s, &pol, weak, "W", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "RSA-1024"));
    X509 *sha1 = mk(PN_CERT_DEVICE, "S1", 30, k, ca_cert, ca_key);
    CHECK(X509_sign(sha1, ca_key, EVP_sha1()) > 0);
    CHECK(decide(s, &pol, sha1, "S1", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "SHA1"));

    /* Identifiers. */
    char long128[129], long129[130], long300[301];
    memset(long128, 'L', 128);
    long128[128] = '\0';
    memset(long129, 'L', 129);
    long129[129] = '\0';
    memset(long300, 'L', 300);
    long300[300] = '\0';
    const char *bad[] = {"a/b", "a+b", "a#b", "$x", "a b", "", "caf\xc3\xa9", long129, long300};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        X509 *x = mk_raw_cn(bad[i], k, ca_cert, ca_key);
        int refused = decide(s, &pol, x, bad[i], true, now, &a) == PN_REFUSE;
        CHECK(refused);
        if (!refused)
            fprintf(stderr, "  CN '%s' admitted\n", bad[i]);
        X509_free(x);
    }
    X509 *ok128 = mk_raw_cn(long128, k, ca_cert, ca_key);
    CHECK(decide(s, &pol, ok128, long128, true, now, &a) == PN_ADMIT_NEW);
    X509 *nocn = mk(PN_CERT_DEVICE, NULL, 30, k, ca_cert, ca_key);
    CHECK(decide(s, &pol, nocn, "x", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "no CN"));

    /* identity client_id: the identifier is the client id, whatever the CN. */
    pol.identity = PN_IDENTITY_CLIENT_ID;
    CHECK(decide(s, &pol, n, "thing-1", true, now, &a) == PN_ADMIT_NEW);
    CHECK_STREQ(a.identifier, "thing-1");
    CHECK(decide(s, &pol, nocn, "thing-2", true, now, &a) == PN_ADMIT_NEW);
    CHECK(decide(s, &pol, n, "dev/1", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "not a valid device identifier"));
    CHECK(decide(s, &pol, n, "+", true, now, &a) == PN_REFUSE);
    CHECK(decide(s, &pol, n, "", true, now, &a) == PN_REFUSE);
    CHECK(decide(s, &pol, n, long129, true, now, &a) == PN_REFUSE);
    CHECK(decide(s, &pol, n, NULL, true, now, &a) == PN_REFUSE);
    pol.identity = PN_IDENTITY_CN;

    X509 *xs[] = {n, u, forged, q, catrue, server, verif, weak, sha1, ok128, nocn};
    for (size_t i = 0; i < sizeof(xs) / sizeof(*xs); i++)
        X509_free(xs[i]);
    EVP_PKEY_free(rsa1k);
    EVP_PKEY_free(k);
    pn_state_free(s);
}

/* A first connect whose CA signature the TLS handshake has checked
 * (handshake.h): with the registered CA's key the plugin does not check it
 * again; with any other key (an impostor CA of the same name that OpenSSL
 * still trusts) it does, and refuses what that key signed. */
static void test_admit_tls_issuer(void)
{
    struct pn_state *s = make_state();
    struct pn_admission a;
    struct pn_policy pol = POL_DEFAULT;
    EVP_PKEY *k = key_ec(), *imp_key = key_ec();
    X509 *t1 = mk(PN_CERT_DEVICE, "T1", 30, k, ca_cert, ca_key);

    pn_admit_decide(s, &pol, t1, ca_cert, "T1", true, now, &a);
    CHECK(a.kind == PN_ADMIT_NEW);
    CHECK(a.ca_sig_from_tls == 1 && a.ca_sig_checks == 0);
    pn_admit_decide(s, &pol, t1, NULL, "T1", true, now, &a);
    CHECK(a.kind == PN_ADMIT_NEW);
    CHECK(a.ca_sig_from_tls == 0 && a.ca_sig_checks == 1);

    /* The CA renewed: another certificate, the same key. */
    X509 *renewed = mk(PN_CERT_CA, "JITP CA", 730, ca_key, NULL, NULL);
    pn_admit_decide(s, &pol, t1, renewed, "T1", true, now, &a);
    CHECK(a.kind == PN_ADMIT_NEW && a.ca_sig_from_tls == 1 && a.ca_sig_checks == 0);

    /* An impostor named like the registered CA, with its own key: TLS
     * verified T2 with it.  Names match the registered CA; the key does not. */
    X509 *imp = mk(PN_CERT_CA, "JITP CA", 365, imp_key, NULL, NULL);
    CHECK(X509_NAME_cmp(X509_get_subject_name(imp), X509_get_subject_name(ca_cert)) == 0);
    X509 *t2 = without_aki(mk(PN_CERT_DEVICE, "T2", 30, k, imp, imp_key), imp_key);
    CHECK(X509_check_issued(ca_cert, t2) == X509_V_OK);
    pn_admit_decide(s, &pol, t2, imp, "T2", true, now, &a);
    CHECK(a.kind == PN_REFUSE);
    CHECK(why(&a, "not a registered Device CA"));
    CHECK(a.ca_sig_from_tls == 0 && a.ca_sig_checks == 1);

    /* The registered CA's device, with another key reported: checked. */
    pn_admit_decide(s, &pol, t1, imp, "T1", true, now, &a);
    CHECK(a.kind == PN_ADMIT_NEW && a.ca_sig_from_tls == 0 && a.ca_sig_checks == 1);

    X509_free(t2);
    X509_free(imp);
    X509_free(renewed);
    X509_free(t1);
    EVP_PKEY_free(imp_key);
    EVP_PKEY_free(k);
    pn_state_free(s);
}

static void test_admit_rotation(void)
{
    struct pn_state *s = make_state();
    struct pn_admission a;
    struct pn_policy pol = POL_DEFAULT;
    EVP_PKEY *k2 = key_ec();
    /* A renewed certificate for A's key, and one for a new key, from
     * another registered CA of the same organisation. */
    X509 *same = mk(PN_CERT_DEVICE, "A", 60, a_key, ca2_cert, ca2_key);
    X509 *other = mk(PN_CERT_DEVICE, "A", 60, k2, ca_cert, ca_key);
    struct pn_device *ad = pn_map_get(s->devices, "A", 1);

    CHECK(decide(s, &pol, same, "A", true, now, &a) == PN_ADMIT_NEW);
    CHECK(a.dev == ad);
    CHECK(decide(s, &pol, other, "A", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "different key"));
    pol.rotation = PN_ROTATE_ANY;
    CHECK(decide(s, &pol, same, "A", true, now, &a) == PN_ADMIT_NEW);
    CHECK(decide(s, &pol, other, "A", true, now, &a) == PN_ADMIT_NEW);
    CHECK(a.dev == ad);
    pol.rotation = PN_ROTATE_NONE;
    CHECK(decide(s, &pol, same, "A", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "rotation none"));
    CHECK(decide(s, &pol, other, "A", true, now, &a) == PN_REFUSE);
    /* Whatever the rotation policy, the pinned certificate still works. */
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);

    /* Once the renewed certificate is pinned, it is judged by its pin. */
    pol.rotation = PN_ROTATE_SAME_KEY;
    CHECK(put_pin(s, ad, same, PN_ACTIVE) != NULL);
    CHECK(decide(s, &pol, same, "A", true, now, &a) == PN_ADMIT_PINNED);
    CHECK(decide(s, &pol, a_cert, "A", true, now, &a) == PN_ADMIT_PINNED);
    CHECK(decide(s, &pol, other, "A", true, now, &a) == PN_REFUSE);

    X509_free(same);
    X509_free(other);
    EVP_PKEY_free(k2);
    pn_state_free(s);
}

static void test_admit_service(void)
{
    struct pn_state *s = make_state();
    struct pn_admission a;
    struct pn_policy pol = POL_DEFAULT;

    /* A service connects as its name or <name>-<anything>, nothing else:
     * it must not be able to take a device's session over. */
    CHECK(decide(s, &pol, svc_cert, "svc", false, now, &a) == PN_ADMIT_SERVICE);
    CHECK_STREQ(a.identifier, "svc");
    CHECK(decide(s, &pol, svc_cert, "svc-2", false, now, &a) == PN_ADMIT_SERVICE);
    CHECK(decide(s, &pol, svc_cert, "A", false, now, &a) == PN_REFUSE);
    CHECK(why(&a, "is not the service's name 'svc'"));
    CHECK(decide(s, &pol, svc_cert, "svcx", false, now, &a) == PN_REFUSE);
    CHECK(decide(s, &pol, svc_cert, NULL, false, now, &a) == PN_REFUSE);
    /* A refusal is logged: the client's own bytes cannot break the line. */
    CHECK(decide(s, &pol, svc_cert, "x\ny\x1b", false, now, &a) == PN_REFUSE);
    CHECK(why(&a, "client id 'x?y?' is not the service's name"));

    /* ... and no device may take a service's name: first connect (JITP)
     * or pinned. */
    EVP_PKEY *k = key_ec();
    X509 *d1 = mk(PN_CERT_DEVICE, "svc", 30, k, ca_cert, ca_key);
    X509 *d2 = mk(PN_CERT_DEVICE, "svc-1", 30, k, ca_cert, ca_key);
    X509 *d3 = mk(PN_CERT_DEVICE, "svcx", 30, k, ca_cert, ca_key);
    X509 *d4 = mk(PN_CERT_DEVICE, "events", 30, k, ca_cert, ca_key);
    CHECK(decide(s, &pol, d1, "svc", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "in service 'svc''s client id namespace"));
    CHECK(decide(s, &pol, d2, "svc-1", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "in service 'svc''s client id namespace"));
    CHECK(decide(s, &pol, d3, "svcx", true, now, &a) == PN_ADMIT_NEW);
    CHECK(decide(s, &pol, d4, "events", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "identifier 'events' is reserved"));
    struct pn_device *dv = pn_state_put_device(s, 99, "svc-9", 1, 7, PN_ACTIVE);
    X509 *d5 = mk(PN_CERT_DEVICE, "svc-9", 30, k, ca_cert, ca_key);
    unsigned char d5id[PN_SHA256], d5spki[PN_SHA256];
    bin_id(d5, d5id);
    CHECK(pn_cert_spki_sha256_bin(d5, d5spki) == 0);
    CHECK(dv && pn_state_put_pin(s, d5id, dv, d5spki, pn_cert_not_after(d5), PN_ACTIVE));
    CHECK(decide(s, &pol, d5, "svc-9", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "in service 'svc''s client id namespace"));
    X509_free(d1);
    X509_free(d2);
    X509_free(d3);
    X509_free(d4);
    X509_free(d5);
    EVP_PKEY_free(k);
    CHECK(decide(s, &pol, svc_cert, "svc", true, pn_cert_not_after(svc_cert) + 10, &a) ==
          PN_REFUSE);
    CHECK(why(&a, "service certificate expired on"));
    /* Not yet valid: the TLS layer checks no dates, the plugin does. */
    CHECK(decide(s, &pol, svc_cert, "svc", true, pn_cert_not_before(svc_cert) - 10, &a) ==
          PN_REFUSE);
    CHECK(why(&a, "service certificate is not valid before"));
    unsigned char sid[PN_SHA256];
    bin_id(svc_cert, sid);
    /* Revoked: refused by name, for every client id of its namespace, and
     * the name stays reserved from devices. */
    struct pn_service *sv = pn_map_get(s->services, sid, PN_SHA256);
    CHECK(sv != NULL);
    sv->status = PN_REVOKED;
    CHECK(decide(s, &pol, svc_cert, "svc", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "service 'svc' is revoked"));
    CHECK(decide(s, &pol, svc_cert, "svc-eu", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "service 'svc' is revoked"));
    EVP_PKEY *k6 = key_ec();
    X509 *d6 = mk(PN_CERT_DEVICE, "svc-6", 30, k6, ca_cert, ca_key);
    CHECK(decide(s, &pol, d6, "svc-6", true, now, &a) == PN_REFUSE);
    CHECK(why(&a, "in service 'svc''s client id namespace"));
    X509_free(d6);
    EVP_PKEY_free(k6);
    CHECK(pn_state_del_service(s, sid, NULL, 0) == 0);
    /* Self-signed, not from a registered CA: nothing admits it now. */
    CHECK(decide(s, &pol, svc_cert, "svc", true, now, &a) == PN_REFUSE);
    pn_state_free(s);
}

/* Sessions re-authenticated without a certificate at SIGHUP keep their
 * place while the identity they were given (username) is admissible. */
static void test_admit_reload_keeps(void)
{
    struct pn_state *s = make_state();
    /* Services: by name, while active; any client id of theirs. */
    CHECK(pn_admit_reload_keeps(s, "svc", PN_SERVICE_USER_PREFIX "svc"));
    CHECK(pn_admit_reload_keeps(s, "svc-2", PN_SERVICE_USER_PREFIX "svc"));
    CHECK(!pn_admit_reload_keeps(s, "svc", PN_SERVICE_USER_PREFIX "other"));
    CHECK(!pn_admit_reload_keeps(s, "svc", PN_SERVICE_USER_PREFIX));
    /* Devices: active, with an active pin, client id == identifier. */
    CHECK(pn_admit_reload_keeps(s, "A", "A"));
    CHECK(pn_admit_reload_keeps(s, "B", "B"));
    CHECK(!pn_admit_reload_keeps(s, "B", "A")); /* client id is not the username */
    CHECK(!pn_admit_reload_keeps(s, NULL, "A"));
    CHECK(!pn_admit_reload_keeps(s, "A", NULL));
    CHECK(!pn_admit_reload_keeps(s, NULL, NULL));
    CHECK(!pn_admit_reload_keeps(s, "R", "R")); /* revoked device */
    CHECK(!pn_admit_reload_keeps(s, "Z", "Z")); /* unknown device */
    CHECK(!pn_admit_reload_keeps(s, "", ""));
    /* Not a service's username without the prefix. */
    CHECK(!pn_admit_reload_keeps(s, "svc", "svc"));
    /* A device without a pin, or whose pins are all revoked. */
    struct pn_device *c = pn_state_put_device(s, 4, "C", 1, 7, PN_ACTIVE);
    CHECK(c != NULL);
    CHECK(!pn_admit_reload_keeps(s, "C", "C"));
    EVP_PKEY *k = key_ec();
    X509 *c1 = mk(PN_CERT_DEVICE, "C", 30, k, ca_cert, ca_key);
    X509 *c2 = mk(PN_CERT_DEVICE, "C", 30, k, ca_cert, ca_key);
    CHECK(put_pin(s, c, c1, PN_REVOKED) != NULL);
    CHECK(!pn_admit_reload_keeps(s, "C", "C"));
    /* One active pin among revoked ones is enough. */
    CHECK(put_pin(s, c, c2, PN_ACTIVE) != NULL);
    CHECK(pn_admit_reload_keeps(s, "C", "C"));
    CHECK(put_pin(s, c, c2, PN_REVOKED) != NULL);
    CHECK(!pn_admit_reload_keeps(s, "C", "C"));
    /* A username that is not a valid identifier (a topic wildcard, a
     * level separator) keeps nothing, even if such a device were known. */
    const char *bad[] = {"a/b", "a+", "#"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pn_device *d = pn_state_put_device(s, 10 + (int64_t)i, bad[i], 1, 7, PN_ACTIVE);
        X509 *x = mk(PN_CERT_DEVICE, "x", 30, k, ca_cert, ca_key);
        CHECK(d && put_pin(s, d, x, PN_ACTIVE) != NULL);
        CHECK(!pn_admit_reload_keeps(s, bad[i], bad[i]));
        X509_free(x);
    }
    /* Revoking a device or a service ends it. */
    CHECK(pn_state_put_device(s, 1, "A", 1, 7, PN_REVOKED) != NULL);
    CHECK(!pn_admit_reload_keeps(s, "A", "A"));
    unsigned char sid[PN_SHA256];
    bin_id(svc_cert, sid);
    struct pn_service *sv = pn_map_get(s->services, sid, PN_SHA256);
    CHECK(sv != NULL);
    if (sv)
        sv->status = PN_REVOKED;
    CHECK(!pn_admit_reload_keeps(s, "svc", PN_SERVICE_USER_PREFIX "svc"));
    X509_free(c1);
    X509_free(c2);
    EVP_PKEY_free(k);
    pn_state_free(s);
}

/* ------------------------------------------------------- applying ops */

struct kicks {
    int n;
    char last[320];
    int is_username;
};

static void record_kick(void *arg, const char *name, int is_username)
{
    struct kicks *k = arg;
    k->n++;
    snprintf(k->last, sizeof(k->last), "%s", name);
    k->is_username = is_username;
}

static struct pn_op *service_put(const char *name, char status)
{
    struct pn_op *op = pn_op_new(PN_OP_SERVICE_PUT);
    CHECK(op != NULL);
    bin_id(svc_cert, op->bin);
    op->text = strdup(name);
    op->not_after = pn_cert_not_after(svc_cert);
    op->status = status;
    return op;
}

/* Revoking a service (its row's status) kicks every session under its
 * username, once; a full reload that finds it revoked does too. */
static void test_apply_service_revoke(void)
{
    struct pn_state *s = make_state();
    struct kicks k = {0};
    struct pn_op *op = service_put("svc", PN_ACTIVE);
    pn_apply_op(&s, op, record_kick, &k);
    pn_op_free(op);
    CHECK(k.n == 0);
    op = service_put("svc", PN_REVOKED);
    pn_apply_op(&s, op, record_kick, &k);
    pn_op_free(op);
    CHECK(k.n == 1);
    CHECK_STREQ(k.last, PN_SERVICE_USER_PREFIX "svc");
    CHECK(k.is_username == 1);
    unsigned char sid[PN_SHA256];
    bin_id(svc_cert, sid);
    const struct pn_service *sv = pn_map_get(s->services, sid, PN_SHA256);
    CHECK(sv && sv->status == PN_REVOKED);
    CHECK(pn_map_get(s->services_by_name, "svc", 3) == sv);
    op = service_put("svc", PN_REVOKED); /* a repeated notification */
    pn_apply_op(&s, op, record_kick, &k);
    pn_op_free(op);
    CHECK(k.n == 1);
    pn_state_free(s);

    /* The same change seen by a full reload (snapshot). */
    s = make_state();
    struct pn_state *next = make_state();
    sv = pn_map_get(next->services, sid, PN_SHA256);
    ((struct pn_service *)sv)->status = PN_REVOKED;
    op = pn_op_new(PN_OP_SNAPSHOT);
    CHECK(op != NULL);
    op->state = next;
    k.n = 0;
    pn_apply_op(&s, op, record_kick, &k);
    pn_op_free(op); /* frees the old state */
    CHECK(k.n == 1);
    CHECK_STREQ(k.last, PN_SERVICE_USER_PREFIX "svc");
    pn_state_free(s);
}

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "libsodium failed to initialise\n");
        return 2;
    }
    now = time(NULL);
    make_pki();
    test_acl_device();
    test_acl_service();
    test_admit_pinned();
    test_admit_first_connect();
    test_admit_tls_issuer();
    test_admit_rotation();
    test_admit_service();
    test_admit_reload_keeps();
    test_apply_service_revoke();

    X509 *certs[] = {ca_cert, ca2_cert, noj_cert, other_cert, svc_cert, a_cert, b_cert};
    for (size_t i = 0; i < sizeof(certs) / sizeof(*certs); i++)
        X509_free(certs[i]);
    EVP_PKEY *keys[] = {ca_key, ca2_key, noj_key, other_key, svc_key, a_key, b_key};
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++)
        EVP_PKEY_free(keys[i]);
    return check_done("test_policy");
}
