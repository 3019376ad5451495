/* SPDX-License-Identifier: Apache-2.0 */
/* lib/cert and lib/ident: identifiers (docs/protocol.md, "Identities"), certificate ids,
 * parsing, the key/CA/device policy checks and pinion's own certificates.
 * Hostile certificates are built here with the plain OpenSSL API, so that
 * the checks are exercised on inputs pn_cert_make would never produce. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cert.h"
#include "check.h"
#include "ident.h"

static int err_has(const struct pn_err *err, const char *a, const char *b)
{
    int ok = strstr(err->msg, a) != NULL && (!b || strstr(err->msg, b) != NULL) &&
             strchr(err->msg, '\n') == NULL;
    if (!ok)
        fprintf(stderr, "  unexpected message: \"%s\" (wanted \"%s\"%s%s)\n", err->msg, a,
                b ? " and " : "", b ? b : "");
    return ok;
}

/* ---------------------------------------------------------------- ident */

/* HOST:PORT as brokers' service_address and piniond's metrics_listen give
 * it (one parser for both). */
static void test_addr_split(void)
{
    char host[16];
    int port = 0;
    CHECK(pn_addr_split("127.0.0.1:8883", host, sizeof(host), &port) == 0);
    CHECK(strcmp(host, "127.0.0.1") == 0 && port == 8883);
    CHECK(pn_addr_split("[::1]:9100", host, sizeof(host), &port) == 0);
    CHECK(strcmp(host, "::1") == 0 && port == 9100);
    CHECK(pn_addr_split("broker-2:1", host, sizeof(host), &port) == 0 && port == 1);
    CHECK(pn_addr_split("h:65535", host, sizeof(host), &port) == 0 && port == 65535);
    CHECK(pn_addr_split("nonsense", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("127.0.0.1:", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split(":8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("[]:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h:0", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h:65536", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h:80x", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("a-very-long-host-name:80", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split(NULL, host, sizeof(host), &port) < 0);
    /* Brackets only around the whole host, right before the port's colon;
     * an unbracketed IPv6 address is ambiguous (where does its port
     * start?); the port is digits only (strtol also takes a sign and
     * leading blanks); no blanks or control characters in the host. */
    CHECK(pn_addr_split("[:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("[::1:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("::1]:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("[::1]x:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("[[::1]]:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("::1:8883", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h:+80", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h: 80", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h:-0", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("h:99999999999999999999", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("a b:80", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("a\nb:80", host, sizeof(host), &port) < 0);
    CHECK(pn_addr_split("[fe80::1]:1", host, sizeof(host), &port) == 0);
    CHECK(strcmp(host, "fe80::1") == 0 && port == 1);
}

static void test_topic_root(void)
{
    char s[PN_TOPIC_ROOT_MAX + 2];

    CHECK(pn_topic_root_valid("fleet"));
    CHECK(pn_topic_root_valid("acme/fleet-1/v2"));
    CHECK(pn_topic_root_valid("a.b_c-d"));
    CHECK(!pn_topic_root_valid(""));
    CHECK(!pn_topic_root_valid(NULL));
    CHECK(!pn_topic_root_valid("/fleet"));
    CHECK(!pn_topic_root_valid("fleet/"));
    CHECK(!pn_topic_root_valid("a//b"));
    CHECK(!pn_topic_root_valid("+"));
    CHECK(!pn_topic_root_valid("fleet/#"));
    CHECK(!pn_topic_root_valid("a/+/b"));
    CHECK(!pn_topic_root_valid("$SYS"));
    CHECK(!pn_topic_root_valid("$share/g/fleet"));
    CHECK(!pn_topic_root_valid("a:b"));
    CHECK(!pn_topic_root_valid("a b"));
    CHECK(!pn_topic_root_valid("caf\xc3\xa9"));
    memset(s, 'x', sizeof(s));
    s[PN_TOPIC_ROOT_MAX] = '\0';
    s[100] = '/';
    CHECK(pn_topic_root_valid(s));
    s[PN_TOPIC_ROOT_MAX] = 'x';
    s[PN_TOPIC_ROOT_MAX + 1] = '\0';
    CHECK(!pn_topic_root_valid(s));
}

static void test_ident(void)
{
    char s[200];

    CHECK(pn_ident_valid("dev-1"));
    CHECK(pn_ident_valid("A.z_0:9-x"));
    CHECK(pn_ident_valid("0"));
    CHECK(pn_ident_valid("..")); /* allowed by the rule; never used as a path alone */
    CHECK(!pn_ident_valid("a/b"));
    CHECK(!pn_ident_valid("a+b"));
    CHECK(!pn_ident_valid("a#b"));
    CHECK(!pn_ident_valid("$sys"));
    CHECK(!pn_ident_valid("a$"));
    CHECK(!pn_ident_valid("a b"));
    CHECK(!pn_ident_valid(" a"));
    CHECK(!pn_ident_valid("a\tb"));
    CHECK(!pn_ident_valid("a\n"));
    CHECK(!pn_ident_valid("a*b"));
    CHECK(!pn_ident_valid(""));
    CHECK(!pn_ident_valid(NULL));
    CHECK(!pn_ident_valid_n("", 0));
    CHECK(!pn_ident_valid_n(NULL, 3));

    /* NUL inside: the whole length counts, not the C string. */
    CHECK(pn_ident_valid_n("abc", 3));
    CHECK(!pn_ident_valid_n("ab\0cd", 5));
    CHECK(!pn_ident_valid_n("abc\0", 4));
    CHECK(!pn_ident_valid_n("\0", 1));
    CHECK(pn_ident_valid_n("ab/", 2)); /* exactly len bytes are looked at */

    /* Invalid UTF-8, and valid but non-ASCII UTF-8. */
    CHECK(!pn_ident_valid("caf\xc3"));
    CHECK(!pn_ident_valid("\xff"));
    CHECK(!pn_ident_valid("a\xffz"));
    CHECK(!pn_ident_valid("\xc3"));
    CHECK(!pn_ident_valid("caf\xc3\xa9"));
    CHECK(!pn_ident_valid_n("ab\xc3", 3));

    /* 128 characters is the limit. */
    memset(s, 'x', sizeof(s));
    s[128] = '\0';
    CHECK(pn_ident_valid(s));
    CHECK(pn_ident_valid_n(s, 128));
    s[128] = 'x';
    s[129] = '\0';
    CHECK(!pn_ident_valid(s));
    CHECK(!pn_ident_valid_n(s, 129));
    s[150] = '\0';
    CHECK(!pn_ident_valid(s));

    /* Tags and names, for completeness. */
    CHECK(pn_tag_valid("beta:1"));
    CHECK(!pn_tag_valid("a,b"));
    CHECK(pn_name_valid("acme-co.1"));
    CHECK(!pn_name_valid("a:b"));
}

/* ----------------------------------------------------------- helpers */

static EVP_PKEY *gen(const char *type)
{
    struct pn_err err = {0};
    EVP_PKEY *k = pn_key_generate(type, &err);
    if (!k) {
        fprintf(stderr, "pn_key_generate(%s): %s\n", type, err.msg);
        exit(2);
    }
    return k;
}

static X509 *make(enum pn_cert_kind kind, const char *cn, const char *san, EVP_PKEY *key,
                  X509 *issuer, EVP_PKEY *issuer_key)
{
    struct pn_err err = {0};
    struct pn_cert_spec spec = {kind, cn, san, 30};
    X509 *x = pn_cert_make(&spec, key, issuer, issuer_key, &err);
    if (!x) {
        fprintf(stderr, "pn_cert_make(%s): %s\n", cn ? cn : "(no CN)", err.msg);
        exit(2);
    }
    return x;
}

/* A certificate as a parser sees it: encoded and decoded again (so that no
 * cached state of the object that built it survives).  Frees x. */
static X509 *reparse(X509 *x)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    const unsigned char *p = der;
    X509 *y = n > 0 ? d2i_X509(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    X509_free(x);
    if (!y) {
        fprintf(stderr, "reparse failed\n");
        exit(2);
    }
    return y;
}

struct ext {
    int nid;
    const char *value;
};

/* A certificate built with the bare OpenSSL API: subject CN, the given
 * extensions (terminated by {0}), signed by issuer_key with md. */
static X509 *custom(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                    const EVP_MD *md, const struct ext *exts)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX ctx;
    int ok = x && name && X509_set_version(x, X509_VERSION_3) &&
             ASN1_INTEGER_set(X509_get_serialNumber(x), 4242) &&
             X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                        (const unsigned char *)cn, -1, -1, 0) &&
             X509_set_subject_name(x, name) &&
             X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
             X509_gmtime_adj(X509_getm_notAfter(x), 86400) && X509_set_pubkey(x, key);
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    for (; ok && exts && exts->nid; exts++) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, exts->nid, exts->value);
        ok = e && X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    ok = ok && X509_sign(x, issuer_key ? issuer_key : key, md) > 0;
    X509_NAME_free(name);
    if (!ok) {
        ERR_print_errors_fp(stderr);
        fprintf(stderr, "custom(%s) failed\n", cn);
        exit(2);
    }
    return reparse(x);
}

static char *to_pem(X509 *x, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out;
    PEM_write_bio_X509(b, x);
    long n = BIO_get_mem_data(b, &data);
    out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

/* ------------------------------------------------------------ keys */

static void test_key_check(void)
{
    struct pn_err err = {0};
    char desc[64];

    EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
    CHECK(rsa1024 != NULL);
    CHECK(pn_key_check(rsa1024, &err) < 0);
    CHECK(err_has(&err, "RSA-1024", "too weak"));

    EVP_PKEY *p521 = EVP_EC_gen("P-521");
    CHECK(p521 != NULL);
    CHECK(pn_key_check(p521, &err) < 0);
    CHECK(err_has(&err, "secp521r1", "not accepted"));

    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    CHECK(ed != NULL);
    CHECK(pn_key_check(ed, &err) < 0);
    CHECK(err_has(&err, "Ed25519", "not accepted"));

    CHECK(pn_key_check(NULL, &err) < 0);

    EVP_PKEY *rsa2048 = gen("rsa"), *p256 = gen("ec"), *p384 = gen("ec384");
    CHECK(pn_key_check(rsa2048, &err) == 0);
    CHECK(pn_key_check(p256, &err) == 0);
    CHECK(pn_key_check(p384, &err) == 0);
    pn_key_describe(rsa2048, desc, sizeof(desc));
    CHECK_STREQ(desc, "RSA-2048");
    pn_key_describe(p256, desc, sizeof(desc));
    CHECK_STREQ(desc, "EC P-256");
    pn_key_describe(p384, desc, sizeof(desc));
    CHECK_STREQ(desc, "EC P-384");

    EVP_PKEY *rsa3072 = EVP_RSA_gen(3072);
    CHECK(rsa3072 && pn_key_check(rsa3072, &err) == 0);
    EVP_PKEY *rsa2047 = EVP_RSA_gen(2047);
    CHECK(rsa2047 && pn_key_check(rsa2047, &err) < 0);

    CHECK(pn_key_generate("dsa", &err) == NULL);
    CHECK(err_has(&err, "unknown key type", "dsa"));

    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(p521);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(rsa2048);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa3072);
    EVP_PKEY_free(rsa2047);
}

/* ------------------------------------------- made by pn_cert_make */

static void test_make_and_check(void)
{
    struct pn_err err = {0};
    time_t now = time(NULL);
    char cn[200], ski[PN_KEYID_HEX], aki[PN_KEYID_HEX], serial[PN_SERIAL_HEX];

    EVP_PKEY *cakey = gen("ec"), *devkey = gen("ec"), *rsakey = gen("rsa");
    X509 *ca = make(PN_CERT_CA, "Test CA", NULL, cakey, NULL, NULL);
    X509 *dev = make(PN_CERT_DEVICE, "dev-1", NULL, devkey, ca, cakey);
    X509 *rdev = make(PN_CERT_DEVICE, "dev-rsa", NULL, rsakey, ca, cakey);

    /* The CA passes the CA checks, and not the device checks. */
    CHECK(pn_cert_check_ca(ca, now, &err) == 0);
    CHECK(pn_cert_check_device(ca, &err) < 0);
    CHECK(err_has(&err, "CA:TRUE", NULL));
    /* The devices pass the device checks, and not the CA checks. */
    CHECK(pn_cert_check_device(dev, &err) == 0);
    CHECK(pn_cert_check_device(rdev, &err) == 0);
    CHECK(pn_cert_check_ca(dev, now, &err) < 0);
    CHECK(err_has(&err, "not a CA", NULL));

    /* Validity: now is inside; 31 days on is expired; 2 minutes before is
     * not yet valid (notBefore is backdated one minute). */
    CHECK(pn_cert_check_dates(dev, now, &err) == 0);
    CHECK(pn_cert_check_dates(dev, now - 50, &err) == 0);
    CHECK(pn_cert_check_dates(dev, now + 31 * 86400L, &err) < 0);
    CHECK(err_has(&err, "expired on", NULL));
    CHECK(pn_cert_check_dates(dev, now - 120, &err) < 0);
    CHECK(err_has(&err, "not valid before", NULL));
    CHECK(pn_cert_check_ca(ca, now + 31 * 86400L, &err) < 0);
    CHECK(err_has(&err, "expired", NULL));
    CHECK(pn_cert_not_after(dev) - pn_cert_not_before(dev) == 30 * 86400L + 60);

    /* What the certificates carry. */
    CHECK(pn_cert_cn(dev, cn, sizeof(cn), &err) == 0);
    CHECK_STREQ(cn, "dev-1");
    CHECK(pn_cert_cn(dev, cn, 5, &err) < 0); /* "dev-1" + NUL does not fit in 5 */
    pn_cert_ski(ca, ski);
    pn_cert_aki(dev, aki);
    CHECK(strlen(ski) == 40);
    CHECK_STREQ(aki, ski);
    pn_cert_ski(dev, ski);
    CHECK(strlen(ski) == 40 && strcmp(ski, aki) != 0);
    pn_cert_serial(dev, serial);
    CHECK(strlen(serial) == 32 && serial[0] >= '4' && serial[0] <= '7');
    uint32_t xku = X509_get_extended_key_usage(dev);
    CHECK((xku & XKU_SSL_CLIENT) && !(xku & XKU_SSL_SERVER));
    CHECK(X509_get_signature_nid(dev) == NID_ecdsa_with_SHA256);
    char *subject = pn_cert_subject(dev);
    CHECK_STREQ(subject, "CN=dev-1");
    free(subject);

    /* Issued by its CA, verified by OpenSSL's own chain verification too. */
    CHECK(pn_cert_issued_by(dev, ca));
    CHECK(pn_cert_issued_by(rdev, ca));
    CHECK(pn_cert_issued_by(ca, ca));
    CHECK(!pn_cert_issued_by(ca, dev));
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX_init(vctx, store, dev, NULL);
    X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_CLIENT);
    CHECK(X509_verify_cert(vctx) == 1);
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);

    /* A P-384 CA signs with SHA-384. */
    EVP_PKEY *k384 = gen("ec384");
    X509 *ca384 = make(PN_CERT_CA, "CA 384", NULL, k384, NULL, NULL);
    X509 *dev384 = make(PN_CERT_DEVICE, "dev-384", NULL, devkey, ca384, k384);
    CHECK(X509_get_signature_nid(dev384) == NID_ecdsa_with_SHA384);
    CHECK(pn_cert_check_ca(ca384, now, &err) == 0);
    CHECK(pn_cert_check_device(dev384, &err) == 0);
    CHECK(pn_cert_issued_by(dev384, ca384));
    CHECK(!pn_cert_issued_by(dev384, ca));

    /* Verification certificate: the code as CN and as SAN URI. */
    X509 *v =
        make(PN_CERT_VERIFICATION, "0123abcd", "URI:urn:pinion:verify:0123abcd", devkey, ca, cakey);
    CHECK(pn_cert_cn(v, cn, sizeof(cn), &err) == 0);
    CHECK_STREQ(cn, "0123abcd");
    GENERAL_NAMES *names = X509_get_ext_d2i(v, NID_subject_alt_name, NULL, NULL);
    CHECK(names && sk_GENERAL_NAME_num(names) == 1);
    if (names && sk_GENERAL_NAME_num(names) == 1) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, 0);
        CHECK(g->type == GEN_URI);
        CHECK_STREQ((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                    "urn:pinion:verify:0123abcd");
    }
    GENERAL_NAMES_free(names);
    CHECK(pn_cert_issued_by(v, ca));

    /* Device identifiers of up to 128 characters fit in the CN (longer
     * than X.520's 64). */
    memset(cn, 'z', 128);
    cn[128] = '\0';
    X509 *long_dev = make(PN_CERT_DEVICE, cn, NULL, devkey, ca, cakey);
    char back[200];
    CHECK(pn_cert_cn(long_dev, back, sizeof(back), &err) == 0);
    CHECK_STREQ(back, cn);
    CHECK(pn_cert_issued_by(long_dev, ca));
    cn[128] = 'z';
    cn[129] = '\0';
    struct pn_cert_spec spec129 = {PN_CERT_DEVICE, cn, NULL, 30};
    CHECK(pn_cert_make(&spec129, devkey, ca, cakey, &err) == NULL);
    CHECK(err_has(&err, "as a CN", NULL));
    struct pn_cert_spec bad_utf8 = {PN_CERT_CA, "caf\xc3", NULL, 30};
    CHECK(pn_cert_make(&bad_utf8, cakey, NULL, NULL, &err) == NULL);
    CHECK(err_has(&err, "as a CN", NULL));

    X509_free(long_dev);
    X509_free(v);
    X509_free(dev384);
    X509_free(ca384);
    EVP_PKEY_free(k384);
    X509_free(rdev);
    X509_free(dev);
    X509_free(ca);
    EVP_PKEY_free(rsakey);
    EVP_PKEY_free(devkey);
    EVP_PKEY_free(cakey);
}

/* ------------------------------------------------------ certificate id */

static void test_cert_id(void)
{
    char id[PN_CERT_ID_HEX], hex[65];
    unsigned char md[crypto_hash_sha256_BYTES], *der = NULL;
    EVP_PKEY *k = gen("ec");
    X509 *x = make(PN_CERT_CA, "Id CA", NULL, k, NULL, NULL);

    int n = i2d_X509(x, &der);
    CHECK(n > 0);
    crypto_hash_sha256(md, der, (unsigned long long)n);
    sodium_bin2hex(hex, sizeof(hex), md, sizeof(md));
    CHECK(pn_cert_id(x, id) == 0);
    CHECK_STREQ(id, hex);
    CHECK(strlen(id) == 64);
    for (const char *p = id; *p; p++)
        CHECK((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));

    /* pn_cert_der gives the same bytes. */
    unsigned char *der2 = NULL;
    int n2 = pn_cert_der(x, &der2);
    CHECK(n2 == n && memcmp(der, der2, (size_t)n) == 0);
    OPENSSL_free(der2);

    /* A different certificate for the same key has a different id. */
    X509 *y = make(PN_CERT_CA, "Id CA", NULL, k, NULL, NULL);
    char id2[PN_CERT_ID_HEX];
    CHECK(pn_cert_id(y, id2) == 0);
    CHECK(strcmp(id, id2) != 0);

    OPENSSL_free(der);
    X509_free(x);
    X509_free(y);
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------- parsing */

static void test_parse(void)
{
    struct pn_err err = {0};
    char id[PN_CERT_ID_HEX], id2[PN_CERT_ID_HEX];
    EVP_PKEY *k = gen("ec");
    X509 *x = make(PN_CERT_CA, "Parse CA", NULL, k, NULL, NULL);
    pn_cert_id(x, id);

    size_t plen;
    char *pem = to_pem(x, &plen);
    unsigned char *der = NULL;
    int dlen = i2d_X509(x, &der);

    /* PEM and DER of the same certificate parse to the same id. */
    X509 *p = pn_cert_parse((unsigned char *)pem, plen, "x.pem", &err);
    CHECK(p != NULL);
    if (p) {
        pn_cert_id(p, id2);
        CHECK_STREQ(id2, id);
        X509_free(p);
    }
    p = pn_cert_parse(der, (size_t)dlen, "x.der", &err);
    CHECK(p != NULL);
    if (p) {
        pn_cert_id(p, id2);
        CHECK_STREQ(id2, id);
        X509_free(p);
    }

    /* Garbage, empty, truncated PEM and DER, trailing bytes after DER. */
    const char *garbage = "hello, this is not a certificate\n";
    CHECK(pn_cert_parse((const unsigned char *)garbage, strlen(garbage), "g.pem", &err) == NULL);
    CHECK(err_has(&err, "g.pem", "not a certificate"));
    CHECK(pn_cert_parse((const unsigned char *)"", 0, "e.pem", &err) == NULL);
    CHECK(err_has(&err, "e.pem", "empty"));
    CHECK(pn_cert_parse((unsigned char *)pem, plen / 2, "half.pem", &err) == NULL);
    CHECK(err_has(&err, "half.pem", NULL));
    CHECK(pn_cert_parse((unsigned char *)pem, plen - 30, "cut.pem", &err) == NULL);
    CHECK(err_has(&err, "cut.pem", NULL));
    CHECK(pn_cert_parse(der, (size_t)dlen / 2, "half.der", &err) == NULL);
    CHECK(err_has(&err, "half.der", NULL));
    CHECK(pn_cert_parse(der, (size_t)dlen - 1, "short.der", &err) == NULL);
    CHECK(err_has(&err, "short.der", NULL));
    unsigned char *longer = malloc((size_t)dlen + 3);
    memcpy(longer, der, (size_t)dlen);
    memcpy(longer + dlen, "\0\0\x01", 3);
    CHECK(pn_cert_parse(longer, (size_t)dlen + 3, "trail.der", &err) == NULL);
    CHECK(err_has(&err, "trail.der", "trailing"));
    CHECK(pn_cert_parse(longer, (size_t)dlen + 1, "trail1.der", &err) == NULL);
    CHECK(err_has(&err, "trail1.der", "trailing"));
    free(longer);

    /* A PEM file with no CERTIFICATE block (a key, say). */
    const char *keypem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n"
                         "-----END PRIVATE KEY-----\n";
    CHECK(pn_cert_parse((const unsigned char *)keypem, strlen(keypem), "k.pem", &err) == NULL);
    CHECK(err_has(&err, "k.pem", "no CERTIFICATE"));

    /* A PEM block whose base64 is damaged. */
    char *bad = strdup(pem);
    bad[40] = '!';
    CHECK(pn_cert_parse((unsigned char *)bad, plen, "bad.pem", &err) == NULL);
    CHECK(err_has(&err, "bad.pem", NULL));
    free(bad);

    /* Missing file through pn_cert_load. */
    CHECK(pn_cert_load("/nonexistent/pinion/ca.pem", &err) == NULL);
    CHECK(err_has(&err, "/nonexistent/pinion/ca.pem", NULL));

    free(pem);
    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* ---------------------------------------------------------- issued_by */

static void test_issued_by(void)
{
    EVP_PKEY *k1 = gen("ec"), *k2 = gen("ec"), *dk = gen("ec");
    X509 *real = make(PN_CERT_CA, "Same Name CA", NULL, k1, NULL, NULL);
    X509 *twin = make(PN_CERT_CA, "Same Name CA", NULL, k2, NULL, NULL);
    X509 *dev = make(PN_CERT_DEVICE, "dev-1", NULL, dk, real, k1);

    CHECK(X509_NAME_cmp(X509_get_subject_name(real), X509_get_subject_name(twin)) == 0);
    CHECK(pn_cert_issued_by(dev, real));
    CHECK(!pn_cert_issued_by(dev, twin));

    /* Without an authorityKeyIdentifier, names alone match both CAs: only
     * the signature can tell them apart. */
    static const struct ext no_aki[] = {
        {NID_basic_constraints, "critical,CA:FALSE"}, {NID_ext_key_usage, "clientAuth"}, {0, NULL}};
    X509 *bare = custom("dev-2", dk, real, k1, EVP_sha256(), no_aki);
    CHECK(X509_get0_authority_key_id(bare) == NULL);
    CHECK(pn_cert_issued_by(bare, real));
    CHECK(!pn_cert_issued_by(bare, twin));
    X509 *bare_twin = custom("dev-3", dk, twin, k2, EVP_sha256(), no_aki);
    CHECK(pn_cert_issued_by(bare_twin, twin));
    CHECK(!pn_cert_issued_by(bare_twin, real));

    /* A signature tampered with after signing. */
    unsigned char *der = NULL;
    int n = i2d_X509(dev, &der);
    der[n - 1] ^= 0x01;
    const unsigned char *p = der;
    X509 *tampered = d2i_X509(NULL, &p, n);
    CHECK(tampered != NULL);
    if (tampered)
        CHECK(!pn_cert_issued_by(tampered, real));
    X509_free(tampered);
    OPENSSL_free(der);

    X509_free(bare_twin);
    X509_free(bare);
    X509_free(dev);
    X509_free(twin);
    X509_free(real);
    EVP_PKEY_free(dk);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k1);
}

/* ---------------------------------------- hostile device and CA certs */

static void test_policy_refusals(void)
{
    struct pn_err err = {0};
    time_t now = time(NULL);
    EVP_PKEY *cak = gen("ec"), *dk = gen("ec");
    X509 *ca = make(PN_CERT_CA, "Policy CA", NULL, cak, NULL, NULL);

    static const struct ext good[] = {{NID_basic_constraints, "critical,CA:FALSE"},
                                      {NID_key_usage, "critical,digitalSignature"},
                                      {NID_ext_key_usage, "clientAuth"},
                                      {NID_authority_key_identifier, "keyid:always"},
                                      {0, NULL}};
    X509 *x = custom("good", dk, ca, cak, EVP_sha256(), good);
    CHECK(pn_cert_check_device(x, &err) == 0);
    CHECK(pn_cert_issued_by(x, ca));
    X509_free(x);

    /* No extendedKeyUsage at all: allowed (any use). */
    static const struct ext no_eku[] = {{NID_basic_constraints, "critical,CA:FALSE"}, {0, NULL}};
    x = custom("no-eku", dk, ca, cak, EVP_sha256(), no_eku);
    CHECK(pn_cert_check_device(x, &err) == 0);
    X509_free(x);
    /* No extensions at all (a v3 certificate without any). */
    x = custom("bare", dk, ca, cak, EVP_sha256(), NULL);
    CHECK(pn_cert_check_device(x, &err) == 0);
    X509_free(x);

    static const struct ext catrue[] = {
        {NID_basic_constraints, "critical,CA:TRUE"}, {NID_ext_key_usage, "clientAuth"}, {0, NULL}};
    x = custom("ca-true", dk, ca, cak, EVP_sha256(), catrue);
    CHECK(pn_cert_check_device(x, &err) < 0);
    CHECK(err_has(&err, "CA:TRUE", NULL));
    X509_free(x);

    static const struct ext server_only[] = {
        {NID_basic_constraints, "critical,CA:FALSE"}, {NID_ext_key_usage, "serverAuth"}, {0, NULL}};
    x = custom("server-only", dk, ca, cak, EVP_sha256(), server_only);
    CHECK(pn_cert_check_device(x, &err) < 0);
    CHECK(err_has(&err, "extendedKeyUsage", "clientAuth"));
    X509_free(x);

    static const struct ext codesign[] = {{NID_ext_key_usage, "codeSigning,emailProtection"},
                                          {0, NULL}};
    x = custom("codesign", dk, ca, cak, EVP_sha256(), codesign);
    CHECK(pn_cert_check_device(x, &err) < 0);
    CHECK(err_has(&err, "clientAuth", NULL));
    X509_free(x);

    static const struct ext both[] = {{NID_ext_key_usage, "serverAuth,clientAuth"}, {0, NULL}};
    x = custom("both", dk, ca, cak, EVP_sha256(), both);
    CHECK(pn_cert_check_device(x, &err) == 0);
    X509_free(x);

    /* SHA-1 signature. */
    x = custom("sha1", dk, ca, cak, EVP_sha1(), good);
    CHECK(pn_cert_check_device(x, &err) < 0);
    CHECK(err_has(&err, "SHA1", NULL));
    X509_free(x);

    /* Weak device keys. */
    EVP_PKEY *weak = EVP_RSA_gen(1024), *p521 = EVP_EC_gen("P-521");
    x = custom("rsa1024", weak, ca, cak, EVP_sha256(), good);
    CHECK(pn_cert_check_device(x, &err) < 0);
    CHECK(err_has(&err, "RSA-1024", NULL));
    X509_free(x);
    x = custom("p521", p521, ca, cak, EVP_sha256(), good);
    CHECK(pn_cert_check_device(x, &err) < 0);
    CHECK(err_has(&err, "secp521r1", NULL));
    X509_free(x);

    /* CA candidates: without SKI, without keyCertSign, RSA-1024, not CA,
     * an intermediate signed with SHA-1. */
    static const struct ext ca_no_ski[] = {{NID_basic_constraints, "critical,CA:TRUE"}, {0, NULL}};
    x = custom("ca-no-ski", cak, NULL, NULL, EVP_sha256(), ca_no_ski);
    CHECK(pn_cert_check_ca(x, now, &err) < 0);
    CHECK(err_has(&err, "subjectKeyIdentifier", NULL));
    X509_free(x);
    static const struct ext ca_no_certsign[] = {{NID_basic_constraints, "critical,CA:TRUE"},
                                                {NID_key_usage, "critical,digitalSignature"},
                                                {NID_subject_key_identifier, "hash"},
                                                {0, NULL}};
    x = custom("ca-no-certsign", cak, NULL, NULL, EVP_sha256(), ca_no_certsign);
    CHECK(pn_cert_check_ca(x, now, &err) < 0);
    CHECK(err_has(&err, "keyCertSign", NULL));
    X509_free(x);
    static const struct ext ca_ok[] = {{NID_basic_constraints, "critical,CA:TRUE"},
                                       {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                       {NID_subject_key_identifier, "hash"},
                                       {0, NULL}};
    x = custom("ca-ok", cak, NULL, NULL, EVP_sha256(), ca_ok);
    CHECK(pn_cert_check_ca(x, now, &err) == 0);
    X509_free(x);
    x = custom("ca-weak", weak, NULL, NULL, EVP_sha256(), ca_ok);
    CHECK(pn_cert_check_ca(x, now, &err) < 0);
    CHECK(err_has(&err, "RSA-1024", "too weak"));
    X509_free(x);
    static const struct ext ca_false[] = {{NID_basic_constraints, "critical,CA:FALSE"},
                                          {NID_subject_key_identifier, "hash"},
                                          {0, NULL}};
    x = custom("ca-false", cak, NULL, NULL, EVP_sha256(), ca_false);
    CHECK(pn_cert_check_ca(x, now, &err) < 0);
    CHECK(err_has(&err, "not a CA", NULL));
    X509_free(x);
    EVP_PKEY *ik = gen("ec");
    x = custom("intermediate-sha1", ik, ca, cak, EVP_sha1(), ca_ok);
    CHECK(pn_cert_check_ca(x, now, &err) < 0);
    CHECK(err_has(&err, "SHA1", NULL));
    X509_free(x);
    /* A self-signed root's own signature hash does not matter. */
    x = custom("root-sha1", cak, NULL, NULL, EVP_sha1(), ca_ok);
    CHECK(pn_cert_check_ca(x, now, &err) == 0);
    X509_free(x);

    EVP_PKEY_free(ik);
    EVP_PKEY_free(weak);
    EVP_PKEY_free(p521);
    X509_free(ca);
    EVP_PKEY_free(dk);
    EVP_PKEY_free(cak);
}

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "libsodium failed to initialise\n");
        return 2;
    }
    test_ident();
    test_addr_split();
    test_topic_root();
    test_key_check();
    test_make_and_check();
    test_cert_id();
    test_parse();
    test_issued_by();
    test_policy_refusals();
    return check_done("test_cert");
}
