/* SPDX-License-Identifier: Apache-2.0 */
#include "cert.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "fsutil.h"

#define CERT_FILE_MAX (1024 * 1024)

static void hex(const unsigned char *bin, size_t len, char *out, size_t outlen)
{
    if (outlen < 2 * len + 1) {
        out[0] = '\0';
        return;
    }
    sodium_bin2hex(out, outlen, bin, len);
}

/* SHA-256 fetched once: EVP_sha256() makes OpenSSL 3 look the
 * implementation up in its provider store (locks, name comparisons) on
 * every use, a third of a pinned CONNECT's decision in the plugin (issue
 * 13), which hashes every client certificate. */
static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_free(void)
{
    EVP_MD_free(sha256);
    sha256 = NULL;
}

static void sha256_fetch(void)
{
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256)
        atexit(sha256_free); /* in the plugin: run when it is unloaded */
}

int pn_cert_id_bin(X509 *cert, unsigned char out[PN_CERT_ID_BIN])
{
    unsigned char *der = NULL;
    unsigned int mdlen = 0;
    pthread_once(&sha256_once, sha256_fetch);
    int n = i2d_X509(cert, &der);
    int ok = n > 0 &&
             EVP_Digest(der, (size_t)n, out, &mdlen, sha256 ? sha256 : EVP_sha256(), NULL) &&
             mdlen == PN_CERT_ID_BIN;
    OPENSSL_free(der);
    return ok ? 0 : -1;
}

int pn_cert_id(X509 *cert, char out[PN_CERT_ID_HEX])
{
    unsigned char md[PN_CERT_ID_BIN];
    if (pn_cert_id_bin(cert, md) < 0) {
        out[0] = '\0';
        return -1;
    }
    hex(md, sizeof(md), out, PN_CERT_ID_HEX);
    return 0;
}

X509 *pn_cert_parse(const unsigned char *buf, size_t len, const char *what, struct pn_err *err)
{
    X509 *x = NULL;
    ERR_clear_error();
    if (len == 0) {
        pn_err_set(err, "%s: empty file, expected a certificate", what);
        return NULL;
    }
    if (memmem(buf, len, "-----BEGIN", 10)) {
        if (!memmem(buf, len, "-----BEGIN CERTIFICATE-----", 27) &&
            !memmem(buf, len, "-----BEGIN X509 CERTIFICATE-----", 32) &&
            !memmem(buf, len, "-----BEGIN TRUSTED CERTIFICATE-----", 35)) {
            pn_err_set(err, "%s: PEM file holds no CERTIFICATE block", what);
            return NULL;
        }
        BIO *b = BIO_new_mem_buf(buf, (int)len);
        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!x)
            pn_err_ssl(err, "%s: truncated or corrupt PEM certificate", what);
        return x;
    }
    const unsigned char *p = buf;
    x = d2i_X509(NULL, &p, (long)len);
    if (!x) {
        pn_err_ssl(err, "%s: not a certificate (neither PEM nor DER)", what);
        return NULL;
    }
    if ((size_t)(p - buf) != len) {
        X509_free(x);
        pn_err_set(err, "%s: trailing data after the DER certificate", what);
        return NULL;
    }
    return x;
}

X509 *pn_cert_load(const char *path, struct pn_err *err)
{
    size_t len = 0;
    unsigned char *buf = pn_file_read(path, CERT_FILE_MAX, &len, err);
    if (!buf)
        return NULL;
    X509 *x = pn_cert_parse(buf, len, path, err);
    free(buf);
    return x;
}

EVP_PKEY *pn_key_load(const char *path, struct pn_err *err)
{
    size_t len = 0;
    unsigned char *buf = pn_file_read(path, CERT_FILE_MAX, &len, err);
    if (!buf)
        return NULL;
    BIO *b = BIO_new_mem_buf(buf, (int)len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (!k)
        pn_err_ssl(err, "%s: not an unencrypted PEM private key", path);
    return k;
}

static void ec_group(EVP_PKEY *key, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t got = 0;
    if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, out, outlen, &got))
        out[0] = '\0';
}

void pn_key_describe(EVP_PKEY *key, char *out, size_t outlen)
{
    char group[64];
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
        snprintf(out, outlen, "RSA-%d", EVP_PKEY_get_bits(key));
        break;
    case EVP_PKEY_RSA_PSS:
        snprintf(out, outlen, "RSA-PSS-%d", EVP_PKEY_get_bits(key));
        break;
    case EVP_PKEY_EC:
        ec_group(key, group, sizeof(group));
        if (strcmp(group, "prime256v1") == 0)
            snprintf(out, outlen, "EC P-256");
        else if (strcmp(group, "secp384r1") == 0)
            snprintf(out, outlen, "EC P-384");
        else
            snprintf(out, outlen, "EC %s", group[0] ? group : "(unknown curve)");
        break;
    case EVP_PKEY_ED25519:
        snprintf(out, outlen, "Ed25519");
        break;
    default:
        snprintf(out, outlen, "%s", OBJ_nid2sn(EVP_PKEY_get_base_id(key)));
    }
}

int pn_key_check(EVP_PKEY *key, struct pn_err *err)
{
    char desc[80], group[64];
    if (!key)
        return pn_err_set(err, "no public key");
    pn_key_describe(key, desc, sizeof(desc));
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(key) >= 2048)
            return 0;
        return pn_err_set(err, "%s key is too weak (RSA needs at least 2048 bits)", desc);
    case EVP_PKEY_EC:
        ec_group(key, group, sizeof(group));
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0)
            return 0;
        return pn_err_set(err, "%s key is not accepted (use EC P-256 or P-384)", desc);
    default:
        return pn_err_set(err, "%s key is not accepted (use RSA >= 2048 or EC P-256/P-384)", desc);
    }
}

static bool self_signed(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK;
}

/* SHA-1 and MD5 signatures are collision-prone: a forged certificate with
 * the same signature is a practical attack for them. */
static int check_sig_hash(X509 *x, const char *what, struct pn_err *err)
{
    int mdnid = NID_undef, pknid = NID_undef, secbits = 0;
    uint32_t flags = 0;
    if (!X509_get_signature_info(x, &mdnid, &pknid, &secbits, &flags))
        return pn_err_ssl(err, "%s: unsupported signature algorithm", what);
    if (mdnid == NID_sha1 || mdnid == NID_md5 || mdnid == NID_md5_sha1 || mdnid == NID_md4)
        return pn_err_set(err,
                          "%s is signed with %s, which is not accepted (use SHA-256 or "
                          "stronger)",
                          what, OBJ_nid2sn(mdnid));
    return 0;
}

time_t pn_asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return (time_t)-1;
    return timegm(&tm);
}

time_t pn_cert_not_before(X509 *cert)
{
    return pn_asn1_time(X509_get0_notBefore(cert));
}

time_t pn_cert_not_after(X509 *cert)
{
    return pn_asn1_time(X509_get0_notAfter(cert));
}

void pn_time_iso(time_t t, char out[32])
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "?");
}

int pn_cert_check_dates(X509 *cert, time_t now, struct pn_err *err)
{
    char when[32];
    time_t nb = pn_cert_not_before(cert), na = pn_cert_not_after(cert);
    if (nb == (time_t)-1 || na == (time_t)-1)
        return pn_err_set(err, "certificate has unreadable validity dates");
    if (now < nb) {
        pn_time_iso(nb, when);
        return pn_err_set(err, "certificate is not valid before %s", when);
    }
    if (now > na) {
        pn_time_iso(na, when);
        return pn_err_set(err, "certificate expired on %s", when);
    }
    return 0;
}

int pn_cert_check_ca(X509 *ca, time_t now, struct pn_err *err)
{
    uint32_t fl = X509_get_extension_flags(ca);
    if (fl & EXFLAG_INVALID)
        return pn_err_set(err, "CA certificate has invalid or duplicated extensions");
    if (!(fl & EXFLAG_BCONS) || !(fl & EXFLAG_CA))
        return pn_err_set(err, "certificate is not a CA (basicConstraints CA:TRUE missing)");
    if ((fl & EXFLAG_KUSAGE) && !(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN))
        return pn_err_set(err, "CA certificate's keyUsage lacks keyCertSign");
    if (!X509_get0_subject_key_id(ca))
        return pn_err_set(err, "CA certificate has no subjectKeyIdentifier");
    if (pn_key_check(X509_get0_pubkey(ca), err) < 0)
        return pn_err_prefix(err, "CA certificate");
    if (!self_signed(ca) && check_sig_hash(ca, "CA certificate", err) < 0)
        return -1;
    if (pn_cert_check_dates(ca, now, err) < 0)
        return pn_err_prefix(err, "CA");
    return 0;
}

int pn_cert_check_device(X509 *cert, struct pn_err *err)
{
    uint32_t fl = X509_get_extension_flags(cert);
    if (fl & EXFLAG_INVALID)
        return pn_err_set(err, "certificate has invalid or duplicated extensions");
    if (fl & EXFLAG_CA)
        return pn_err_set(err, "certificate has CA:TRUE and cannot be a device certificate");
    if ((fl & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT))
        return pn_err_set(err, "certificate's extendedKeyUsage lacks clientAuth");
    if (pn_key_check(X509_get0_pubkey(cert), err) < 0)
        return pn_err_prefix(err, "device certificate");
    return check_sig_hash(cert, "device certificate", err);
}

int pn_cert_cn(X509 *cert, char *out, size_t outlen, struct pn_err *err)
{
    X509_NAME *name = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (idx < 0)
        return pn_err_set(err, "certificate subject has no CN");
    if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
        return pn_err_set(err, "certificate subject has more than one CN");
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0)
        return pn_err_ssl(err, "certificate CN is not valid text");
    if ((size_t)n != strlen((char *)utf8) || (size_t)n + 1 > outlen) {
        OPENSSL_free(utf8);
        return pn_err_set(err, "certificate CN contains NUL or is too long");
    }
    memcpy(out, utf8, (size_t)n + 1);
    OPENSSL_free(utf8);
    return 0;
}

char *pn_cert_subject(X509 *cert)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return NULL;
    X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
    }
    BIO_free(b);
    return s;
}

static void octets_hex(const ASN1_OCTET_STRING *o, char out[PN_KEYID_HEX])
{
    out[0] = '\0';
    if (o && ASN1_STRING_length(o) > 0 && ASN1_STRING_length(o) <= 64)
        hex(ASN1_STRING_get0_data(o), (size_t)ASN1_STRING_length(o), out, PN_KEYID_HEX);
}

void pn_cert_ski(X509 *cert, char out[PN_KEYID_HEX])
{
    octets_hex(X509_get0_subject_key_id(cert), out);
}

void pn_cert_aki(X509 *cert, char out[PN_KEYID_HEX])
{
    octets_hex(X509_get0_authority_key_id(cert), out);
}

void pn_cert_serial(X509 *cert, char out[PN_SERIAL_HEX])
{
    out[0] = '\0';
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *h = bn ? BN_bn2hex(bn) : NULL;
    if (h) {
        snprintf(out, PN_SERIAL_HEX, "%s", h);
        for (char *p = out; *p; p++)
            if (*p >= 'A' && *p <= 'F')
                *p = (char)(*p - 'A' + 'a');
    }
    OPENSSL_free(h);
    BN_free(bn);
}

int pn_cert_spki_sha256_bin(X509 *cert, unsigned char out[32])
{
    unsigned char *der = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (n <= 0)
        return -1;
    crypto_hash_sha256(out, der, (unsigned long long)n);
    OPENSSL_free(der);
    return 0;
}

int pn_cert_spki_sha256(X509 *cert, char out[PN_CERT_ID_HEX])
{
    unsigned char md[32];
    out[0] = '\0';
    if (pn_cert_spki_sha256_bin(cert, md) < 0)
        return -1;
    hex(md, sizeof(md), out, PN_CERT_ID_HEX);
    return 0;
}

bool pn_cert_issued_by(X509 *cert, X509 *issuer)
{
    /* X509_check_issued compares issuer/subject names and AKI against the
     * issuer's SKI (and key usage); the signature is checked separately. */
    if (X509_check_issued(issuer, cert) != X509_V_OK)
        return false;
    EVP_PKEY *k = X509_get0_pubkey(issuer);
    int ok = k && X509_verify(cert, k) == 1;
    ERR_clear_error();
    return ok;
}

int pn_cert_der(X509 *cert, unsigned char **der)
{
    *der = NULL;
    int n = i2d_X509(cert, der);
    return n > 0 ? n : -1;
}

/* --- creation ------------------------------------------------------- */

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value, struct pn_err *err)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ext)
        return pn_err_ssl(err, "cannot build %s extension '%s'", OBJ_nid2sn(nid), value);
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : pn_err_ssl(err, "cannot add %s extension", OBJ_nid2sn(nid));
}

/* OpenSSL enforces X.520's ub-common-name (64) when it encodes a CN, but a
 * device identifier, which is the device certificate's CN, may have 128
 * characters (docs/protocol.md, "Identities"; AWS IoT thing names too).  So the CN is
 * checked here (valid UTF-8, 1 to 128 characters) and added as a
 * UTF8String as it is; OpenSSL reads such names without complaint. */
static int add_cn(X509_NAME *name, const char *cn)
{
    ASN1_STRING *s = NULL;
    int ok = ASN1_mbstring_ncopy(&s, (const unsigned char *)cn, -1, MBSTRING_UTF8,
                                 B_ASN1_UTF8STRING, 1, 128) > 0 &&
             X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                                        ASN1_STRING_get0_data(s), ASN1_STRING_length(s), -1, 0);
    ASN1_STRING_free(s);
    return ok ? 0 : -1;
}

static const EVP_MD *sig_md(EVP_PKEY *key)
{
    char group[64];
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
        ec_group(key, group, sizeof(group));
        if (strcmp(group, "secp384r1") == 0)
            return EVP_sha384();
    }
    return EVP_sha256();
}

X509 *pn_cert_make(const struct pn_cert_spec *spec, EVP_PKEY *subject_key, X509 *issuer,
                   EVP_PKEY *issuer_key, struct pn_err *err)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *bn = NULL;
    unsigned char rnd[16];
    X509V3_CTX ctx;

    if (!x || !name)
        goto ssl_fail;
    if (!issuer)
        issuer_key = subject_key;
    if (!X509_set_version(x, X509_VERSION_3))
        goto ssl_fail;
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        goto ssl_fail;
    rnd[0] &= 0x7f; /* positive */
    rnd[0] |= 0x40; /* and always 16 bytes long */
    bn = BN_bin2bn(rnd, sizeof(rnd), NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        goto ssl_fail;
    if (spec->cn && add_cn(name, spec->cn) < 0) {
        pn_err_ssl(err, "cannot use '%s' as a CN", spec->cn);
        goto fail;
    }
    if (!X509_set_subject_name(x, name) ||
        !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name))
        goto ssl_fail;
    /* Backdate a minute so a device whose clock is slightly behind the
     * issuing machine's still accepts a fresh certificate. */
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), spec->days, 0, NULL))
        goto ssl_fail;
    if (!X509_set_pubkey(x, subject_key))
        goto ssl_fail;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    bool rsa = EVP_PKEY_get_base_id(subject_key) == EVP_PKEY_RSA;
    switch (spec->kind) {
    case PN_CERT_CA:
        if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE", err) < 0 ||
            add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature", err) <
                0)
            goto fail;
        break;
    case PN_CERT_DEVICE:
    case PN_CERT_VERIFICATION:
    case PN_CERT_SERVER:
        if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE", err) < 0 ||
            add_ext(x, &ctx, NID_key_usage,
                    rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature",
                    err) < 0)
            goto fail;
        if (spec->kind == PN_CERT_DEVICE &&
            add_ext(x, &ctx, NID_ext_key_usage, "clientAuth", err) < 0)
            goto fail;
        if (spec->kind == PN_CERT_SERVER &&
            add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth", err) < 0)
            goto fail;
        break;
    }
    if (spec->san && add_ext(x, &ctx, NID_subject_alt_name, spec->san, err) < 0)
        goto fail;
    if (add_ext(x, &ctx, NID_subject_key_identifier, "hash", err) < 0 ||
        add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err) < 0)
        goto fail;
    if (!X509_sign(x, issuer_key, sig_md(issuer_key)))
        goto ssl_fail;
    BN_free(bn);
    X509_NAME_free(name);
    return x;

ssl_fail:
    pn_err_ssl(err, "cannot create certificate");
fail:
    BN_free(bn);
    X509_NAME_free(name);
    X509_free(x);
    return NULL;
}

EVP_PKEY *pn_key_generate(const char *type, struct pn_err *err)
{
    EVP_PKEY *k = NULL;
    if (!type || strcmp(type, "ec") == 0)
        k = EVP_EC_gen("P-256");
    else if (strcmp(type, "ec384") == 0)
        k = EVP_EC_gen("P-384");
    else if (strcmp(type, "rsa") == 0)
        k = EVP_RSA_gen(2048);
    else {
        pn_err_set(err, "unknown key type '%s' (use ec or rsa)", type);
        return NULL;
    }
    if (!k)
        pn_err_ssl(err, "key generation failed");
    return k;
}

static int write_bio(const char *path, BIO *b, mode_t mode, struct pn_err *err)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    int rc = pn_file_create(path, data, (size_t)n, mode, err);
    return rc;
}

int pn_cert_write_pem(const char *path, X509 *cert, struct pn_err *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_X509(b, cert)) {
        BIO_free(b);
        return pn_err_ssl(err, "%s: cannot encode certificate", path);
    }
    int rc = write_bio(path, b, 0644, err);
    BIO_free(b);
    return rc;
}

int pn_key_write_pem(const char *path, EVP_PKEY *key, struct pn_err *err)
{
    BIO *b = BIO_new(BIO_s_secmem());
    if (!b)
        b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(b);
        return pn_err_ssl(err, "%s: cannot encode private key", path);
    }
    int rc = write_bio(path, b, 0600, err);
    BIO_free(b);
    return rc;
}

EVP_PKEY *pn_csr_load_key(const char *path, struct pn_err *err)
{
    size_t len = 0;
    unsigned char *buf = pn_file_read(path, CERT_FILE_MAX, &len, err);
    X509_REQ *req = NULL;
    if (!buf)
        return NULL;
    ERR_clear_error();
    if (memmem(buf, len, "-----BEGIN", 10)) {
        BIO *b = BIO_new_mem_buf(buf, (int)len);
        req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else {
        const unsigned char *p = buf;
        req = d2i_X509_REQ(NULL, &p, (long)len);
    }
    free(buf);
    if (!req) {
        pn_err_ssl(err, "%s: not a certificate signing request (PEM or DER)", path);
        return NULL;
    }
    EVP_PKEY *k = X509_REQ_get_pubkey(req);
    if (!k || X509_REQ_verify(req, k) != 1) {
        EVP_PKEY_free(k);
        X509_REQ_free(req);
        pn_err_ssl(err, "%s: the request's signature does not verify", path);
        return NULL;
    }
    X509_REQ_free(req);
    if (pn_key_check(k, err) < 0) {
        EVP_PKEY_free(k);
        pn_err_prefix(err, "%s", path);
        return NULL;
    }
    return k;
}

int pn_ca_dir_load(const char *dir, X509 **cert, EVP_PKEY **key, struct pn_err *err)
{
    char c[4096], k[4096];
    snprintf(c, sizeof(c), "%s/ca.pem", dir);
    snprintf(k, sizeof(k), "%s/ca.key", dir);
    return pn_ca_files_load(c, k, cert, key, err);
}

int pn_ca_files_load(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key,
                     struct pn_err *err)
{
    *cert = NULL;
    *key = NULL;
    if (!(*cert = pn_cert_load(cert_path, err)))
        return -1;
    if (!(*key = pn_key_load(key_path, err)))
        goto fail;
    if (X509_check_private_key(*cert, *key) != 1) {
        pn_err_ssl(err, "%s: key does not belong to %s", key_path, cert_path);
        goto fail;
    }
    return 0;
fail:
    X509_free(*cert);
    EVP_PKEY_free(*key);
    *cert = NULL;
    *key = NULL;
    return -1;
}
