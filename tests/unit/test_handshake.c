/* SPDX-License-Identifier: Apache-2.0 */
/* plugin/handshake.h: while watching, a real OpenSSL verification of a
 * client certificate with the "ssl_client" parameters (as a TLS server
 * runs it) records the certificate whose key verified the leaf; nothing
 * is recorded without watching, for other purposes, or after expiry. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cert.h"
#include "check.h"
#include "handshake.h"
#include "testcert.h"

static struct pn_err err;

static EVP_PKEY *key(void)
{
    EVP_PKEY *k = pn_key_generate("ec", &err);
    if (!k) {
        fprintf(stderr, "key generation failed: %s\n", err.msg);
        exit(2);
    }
    return k;
}

static X509 *mk(enum pn_cert_kind kind, const char *cn, EVP_PKEY *k, X509 *issuer, EVP_PKEY *ikey)
{
    struct pn_cert_spec spec = {kind, cn, NULL, 30};
    X509 *x = pn_cert_make(&spec, k, issuer, ikey, &err);
    if (!x) {
        fprintf(stderr, "cannot make %s: %s\n", cn, err.msg);
        exit(2);
    }
    return x;
}

/* Verifies leaf (with the untrusted chain `chain`, may be NULL) against a
 * store holding `anchor`, as a TLS server verifies a client's chain
 * ("ssl_client") or, with tls false, without any purpose.  Returns
 * X509_verify_cert's answer. */
static int verify(X509 *leaf, STACK_OF(X509) * chain, X509 *anchor, int tls)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int ok = -1;
    if (st && ctx && X509_STORE_add_cert(st, anchor) && X509_STORE_CTX_init(ctx, st, leaf, chain) &&
        (!tls || X509_STORE_CTX_set_default(ctx, "ssl_client"))) {
        X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
        ok = X509_verify_cert(ctx);
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return ok;
}

/* The recorded issuer of leaf is `want` (NULL: none recorded). */
static int issuer_is(X509 *leaf, X509 *want)
{
    X509 *got = pn_handshake_issuer(leaf);
    int same = want ? got && X509_cmp(got, want) == 0 : got == NULL;
    X509_free(got);
    return same;
}

static X509 *without_aki(X509 *cert, EVP_PKEY *ikey)
{
    X509 *out = testcert_without_aki(cert, ikey);
    if (!out)
        exit(2);
    return out;
}

/* A copy of x as a trust store may hold it: from a TRUSTED CERTIFICATE
 * PEM (X509_AUX) that trusts it for TLS clients. */
static X509 *aux_trusted(X509 *x)
{
    X509 *c = X509_dup(x);
    if (!c || !X509_add1_trust_object(c, OBJ_nid2obj(NID_client_auth)))
        exit(2);
    return c;
}

/* As verify(), against a store holding the n certificates of anchors. */
static int verify_in(X509 *leaf, STACK_OF(X509) * chain, X509 **anchors, size_t n)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int ok = -1;
    for (size_t i = 0; st && i < n; i++)
        if (!X509_STORE_add_cert(st, anchors[i]))
            goto out;
    if (st && ctx && X509_STORE_CTX_init(ctx, st, leaf, chain) &&
        X509_STORE_CTX_set_default(ctx, "ssl_client")) {
        X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
        ok = X509_verify_cert(ctx);
    }
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return ok;
}

/* OpenSSL skips the purpose check of a trusted certificate whose explicit
 * trust settings trust it for TLS clients (x509_vfy.c, check_purpose()).
 * A leaf whose issuer was skipped so must not stay pending, to be paired
 * with the first CA of a later chain whose own leaf was skipped (a leaf
 * found in the store as it is, PARTIAL_CHAIN).  Here the later chain's CA
 * is a certificate the client made up: the registered CA's name and
 * public key, signed by nobody.  Recording it would let the plugin skip
 * the signature check of a device the registered CA never signed. */
static void test_skipped_purpose_checks(void)
{
    EVP_PKEY *reg_key = key(), *old_key = key(), *k = key(), *nobody_key = key();
    /* The old key of the re-keyed CA, still in OpenSSL's store. */
    X509 *old = mk(PN_CERT_CA, "Device CA", old_key, NULL, NULL);
    X509 *nobody = mk(PN_CERT_CA, "Nobody", nobody_key, NULL, NULL);
    /* The registered CA's name and key, issued by "Nobody". */
    X509 *fake = mk(PN_CERT_CA, "Device CA", reg_key, nobody, nobody_key);
    /* A certificate the store holds as it is (e.g. a service's). */
    X509 *svc = mk(PN_CERT_DEVICE, "svc", k, fake, reg_key);
    /* A device the old key signed, without AKI (named like the new CA's). */
    X509 *dev = without_aki(mk(PN_CERT_DEVICE, "d9", k, old, old_key), old_key);
    X509 *store[] = {aux_trusted(old), aux_trusted(svc)};

    /* dev's handshake: verified with the old key (issuer not watched). */
    CHECK(verify_in(dev, NULL, store, 2) == 1);
    /* Another handshake: svc and the made-up CA. */
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, fake);
    (void)verify_in(svc, chain, store, 2);
    /* Whatever is recorded for dev must be the key that verified it. */
    X509 *got = pn_handshake_issuer(dev);
    CHECK(!got || X509_verify(dev, X509_get0_pubkey(got)) == 1);
    X509_free(got);

    sk_X509_free(chain);
    X509 *certs[] = {old, nobody, fake, svc, dev, store[0], store[1]};
    for (size_t i = 0; i < sizeof(certs) / sizeof(*certs); i++)
        X509_free(certs[i]);
    EVP_PKEY *keys[] = {reg_key, old_key, k, nobody_key};
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++)
        EVP_PKEY_free(keys[i]);
}

int main(void)
{
    if (sodium_init() < 0)
        return 2;
    EVP_PKEY *root_key = key(), *int_key = key(), *dev_key = key();
    X509 *root = mk(PN_CERT_CA, "Root CA", root_key, NULL, NULL);
    X509 *inter = mk(PN_CERT_CA, "Intermediate CA", int_key, root, root_key);
    X509 *d1 = mk(PN_CERT_DEVICE, "d1", dev_key, root, root_key);
    X509 *d2 = mk(PN_CERT_DEVICE, "d2", dev_key, root, root_key);
    X509 *d3 = mk(PN_CERT_DEVICE, "d3", dev_key, inter, int_key);

    /* Not watching: nothing. */
    CHECK(verify(d1, NULL, root, 1) == 1);
    CHECK(issuer_is(d1, NULL));

    CHECK(pn_handshake_watch() == 0);
    CHECK(verify(d1, NULL, root, 1) == 1);
    CHECK(verify(d2, NULL, root, 1) == 1);
    CHECK(issuer_is(d1, root));
    CHECK(issuer_is(d1, NULL)); /* taken */
    CHECK(issuer_is(d2, root));

    /* Through an intermediate the client sent: the leaf's own issuer,
     * not the anchor. */
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, inter);
    CHECK(verify(d3, chain, root, 1) == 1);
    CHECK(issuer_is(d3, inter));
    /* The intermediate registered and trusted on its own (PARTIAL_CHAIN). */
    CHECK(verify(d3, NULL, inter, 1) == 1);
    CHECK(issuer_is(d3, inter));

    /* Verification for no purpose (not a TLS server's): nothing. */
    CHECK(verify(d1, NULL, root, 0) == 1);
    CHECK(issuer_is(d1, NULL));

    /* A self-signed certificate trusted as it is has no issuer to record. */
    CHECK(verify(root, NULL, root, 1) == 1);
    CHECK(issuer_is(root, NULL));
    /* ... and does not leave itself behind as the next chain's leaf. */
    CHECK(verify(d1, NULL, root, 1) == 1);
    CHECK(issuer_is(d1, root));

    test_skipped_purpose_checks();

    /* Records of handshakes that never reached a CONNECT expire. */
    CHECK(verify(d2, NULL, root, 1) == 1);
    pn_handshake_expire(time(NULL) + 3600);
    CHECK(issuer_is(d2, NULL));

    /* Counted: the plugin loaded twice watches until both are gone. */
    CHECK(pn_handshake_watch() == 0);
    pn_handshake_unwatch();
    CHECK(verify(d1, NULL, root, 1) == 1);
    CHECK(issuer_is(d1, root));
    pn_handshake_unwatch();
    CHECK(verify(d1, NULL, root, 1) == 1);
    CHECK(issuer_is(d1, NULL));
    /* OpenSSL's own purpose check is back. */
    CHECK(X509_check_purpose(d1, X509_PURPOSE_SSL_CLIENT, 0) == 1);

    sk_X509_free(chain);
    X509 *certs[] = {root, inter, d1, d2, d3};
    for (size_t i = 0; i < sizeof(certs) / sizeof(*certs); i++)
        X509_free(certs[i]);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(int_key);
    EVP_PKEY_free(dev_key);
    return check_done("test_handshake");
}
