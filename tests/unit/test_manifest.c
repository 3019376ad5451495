/* SPDX-License-Identifier: Apache-2.0 */
/* lib/manifest: DSSE envelopes (PAE, sign, verify) and the update manifest
 * payload (encode, decode, the device's acceptance rule).  DSSE is checked
 * against its spec's test vector and re-verified independently here with
 * libsodium and jansson, without going through pn_dsse_verify. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "check.h"
#include "fwkey.h"
#include "manifest.h"

#define HELLO_TYPE "http://example.com/HelloWorld"

static unsigned char pk[32], sk[64], pk2[32], sk2[64];
static char kid[17], kid2[17];

static int has(const struct pn_err *err, const char *needle)
{
    if (strstr(err->msg, needle))
        return 1;
    fprintf(stderr, "  error was: \"%s\", expected it to contain \"%s\"\n", err->msg, needle);
    return 0;
}

static char *b64(const void *data, size_t len, int variant)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, variant);
    char *s = malloc(cap);
    sodium_bin2base64(s, cap, data, len, variant);
    return s;
}

/* Verifies env with the default expectations; returns the result and
 * leaves the error in *err. */
static int verify(const char *env, const unsigned char *key, const char *keyid, const char *type,
                  struct pn_err *err)
{
    unsigned char *body = (unsigned char *)"sentinel";
    size_t len = 99;
    int r = pn_dsse_verify(env, strlen(env), key, keyid, type, &body, &len, err);
    if (r < 0) {
        CHECK(body == NULL && len == 0);
    }
    free(body);
    return r;
}

/* Returns env with obj[key] (obj = the envelope, or its first signature when
 * in_sig) replaced by value, or deleted when value is NULL.  Steals value. */
static char *edit(const char *env, int in_sig, const char *key, json_t *value)
{
    json_t *root = json_loads(env, 0, NULL);
    json_t *obj = in_sig ? json_array_get(json_object_get(root, "signatures"), 0) : root;
    if (value)
        json_object_set_new(obj, key, value);
    else
        json_object_del(obj, key);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static void test_pae(void)
{
    static const char want[] = "DSSEv1 29 http://example.com/HelloWorld 11 hello world";
    unsigned char *pae = NULL;
    size_t len = 0;
    struct pn_err err;

    CHECK(pn_dsse_pae(HELLO_TYPE, "hello world", 11, &pae, &len, &err) == 0);
    CHECK(len == sizeof(want) - 1);
    CHECK(pae && memcmp(pae, want, sizeof(want) - 1) == 0);
    free(pae);

    /* An empty body still has its length and both spaces. */
    CHECK(pn_dsse_pae("t", "", 0, &pae, &len, &err) == 0);
    CHECK(len == 13 && memcmp(pae, "DSSEv1 1 t 0 ", 13) == 0);
    free(pae);

    /* Lengths are bytes, not characters: "é" is two. */
    CHECK(pn_dsse_pae("\xc3\xa9", "a\0b", 3, &pae, &len, &err) == 0);
    CHECK(len == 17 && memcmp(pae, "DSSEv1 2 \xc3\xa9 3 a\0b", 17) == 0);
    free(pae);

    CHECK(pn_dsse_pae("", "x", 1, &pae, &len, &err) < 0 && pae == NULL);
    CHECK(has(&err, "type is empty"));
}

/* The DSSE spec's example: the signature is over PAE, and the payload is
 * standard base64 with padding. */
static void test_round_trip(void)
{
    struct pn_err err;
    unsigned char *body = NULL;
    size_t len = 0;
    char *env = pn_dsse_sign(sk, kid, HELLO_TYPE, "hello world", 11, &err);

    CHECK(env != NULL);
    if (!env)
        return;
    CHECK(pn_dsse_verify(env, strlen(env), pk, kid, HELLO_TYPE, &body, &len, &err) == 0);
    CHECK(len == 11 && body && memcmp(body, "hello world", 11) == 0 && body[11] == '\0');
    free(body);
    CHECK(pn_dsse_verify(env, strlen(env), pk, NULL, HELLO_TYPE, &body, &len, &err) == 0);
    free(body);

    json_t *root = json_loads(env, JSON_REJECT_DUPLICATES, NULL);
    CHECK(json_is_object(root));
    CHECK(json_object_size(root) == 3);
    CHECK_STREQ(json_string_value(json_object_get(root, "payload")), "aGVsbG8gd29ybGQ=");
    CHECK_STREQ(json_string_value(json_object_get(root, "payloadType")), HELLO_TYPE);
    json_t *sigs = json_object_get(root, "signatures");
    CHECK(json_array_size(sigs) == 1);
    json_t *s0 = json_array_get(sigs, 0);
    CHECK_STREQ(json_string_value(json_object_get(s0, "keyid")), kid);
    const char *sig_b64 = json_string_value(json_object_get(s0, "sig"));
    CHECK(sig_b64 && strlen(sig_b64) == 88 && sig_b64[87] == '=');
    if (!sig_b64)
        sig_b64 = "";

    /* Independently: PAE by hand, the signature checked by libsodium. */
    char pae[128];
    int n = snprintf(pae, sizeof(pae), "DSSEv1 %zu %s %zu %s", strlen(HELLO_TYPE), HELLO_TYPE,
                     strlen("hello world"), "hello world");
    unsigned char sig[64];
    size_t sig_len = 0;
    CHECK(sodium_base642bin(sig, sizeof(sig), sig_b64, strlen(sig_b64), NULL, &sig_len, NULL,
                            sodium_base64_VARIANT_ORIGINAL) == 0 &&
          sig_len == 64);
    CHECK(crypto_sign_verify_detached(sig, (unsigned char *)pae, (size_t)n, pk) == 0);
    /* ... and it is not a signature of the bare body. */
    CHECK(crypto_sign_verify_detached(sig, (const unsigned char *)"hello world", 11, pk) != 0);
    json_decref(root);

    /* Without a keyid the field is left out, and verification needs none. */
    char *anon = pn_dsse_sign(sk, NULL, HELLO_TYPE, "x", 1, &err);
    CHECK(anon && strstr(anon, "keyid") == NULL);
    CHECK(anon && verify(anon, pk, NULL, HELLO_TYPE, &err) == 0);
    CHECK(anon && verify(anon, pk, kid, HELLO_TYPE, &err) < 0 && has(&err, "no signature"));
    free(anon);
    free(env);
}

/* What is signed is BODY's bytes: odd whitespace, key order, a NUL, bytes
 * that are not UTF-8 all come back exactly. */
static void test_exact_bytes(void)
{
    static const char odd[] = "{ \"z\" :1,\n\t\"a\":[ 2 , 1 ],  \"a2\":\"\\u00e9\" }  \n";
    static const unsigned char bin[] = {0xfb, 0xff, 0xfe, 0x00, 0x80, '{'};
    struct pn_err err;
    unsigned char *body = NULL;
    size_t len = 0;

    char *env = pn_dsse_sign(sk, kid, PN_MANIFEST_TYPE, odd, strlen(odd), &err);
    CHECK(env &&
          pn_dsse_verify(env, strlen(env), pk, kid, PN_MANIFEST_TYPE, &body, &len, &err) == 0);
    CHECK(len == strlen(odd) && body && memcmp(body, odd, len) == 0);
    free(body);
    body = NULL;
    free(env);

    env = pn_dsse_sign(sk, kid, "application/octet-stream", bin, sizeof(bin), &err);
    CHECK(env && pn_dsse_verify(env, strlen(env), pk, kid, "application/octet-stream", &body, &len,
                                &err) == 0);
    CHECK(len == sizeof(bin) && body && memcmp(body, bin, len) == 0);
    free(body);
    body = NULL;

    /* DSSE allows URL-safe base64 too: the same bytes, re-encoded, verify. */
    char *url = b64(bin, sizeof(bin), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    CHECK(strchr(url, '-') || strchr(url, '_'));
    char *env2 = edit(env, 0, "payload", json_string(url));
    CHECK(pn_dsse_verify(env2, strlen(env2), pk, kid, "application/octet-stream", &body, &len,
                         &err) == 0);
    CHECK(len == sizeof(bin) && body && memcmp(body, bin, len) == 0);
    free(body);
    free(env2);
    free(url);
    free(env);
}

static void test_refusals(void)
{
    struct pn_err err;
    char *env = pn_dsse_sign(sk, kid, HELLO_TYPE, "hello world", 11, &err), *bad;

    CHECK(env != NULL);
    if (!env)
        return;
    CHECK(verify(env, pk2, NULL, HELLO_TYPE, &err) < 0 && has(&err, "does not verify"));
    CHECK(verify(env, pk2, kid, HELLO_TYPE, &err) < 0 && has(&err, "does not verify"));

    /* Altered payload: a well-formed base64 of another body. */
    char *other = b64("hello World", 11, sodium_base64_VARIANT_ORIGINAL);
    bad = edit(env, 0, "payload", json_string(other));
    CHECK(verify(bad, pk, kid, HELLO_TYPE, &err) < 0 && has(&err, "does not verify"));
    free(bad);
    free(other);

    /* Altered payloadType: refused as unexpected, and, when expected, the
     * signature (which covers the type through PAE) fails. */
    bad = edit(env, 0, "payloadType", json_string("http://example.com/Other"));
    CHECK(verify(bad, pk, kid, HELLO_TYPE, &err) < 0 && has(&err, "payload type is"));
    CHECK(verify(bad, pk, kid, "http://example.com/Other", &err) < 0 &&
          has(&err, "does not verify"));
    free(bad);
    CHECK(verify(env, pk, kid, PN_MANIFEST_TYPE, &err) < 0 && has(&err, "expected"));

    /* Key ids. */
    CHECK(verify(env, pk, "0000000000000000", HELLO_TYPE, &err) < 0 &&
          has(&err, "no signature with key id \"0000000000000000\""));
    bad = edit(env, 1, "keyid", json_string(kid2));
    CHECK(verify(bad, pk, kid, HELLO_TYPE, &err) < 0 && has(&err, "no signature with key id"));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) == 0);
    free(bad);
    bad = edit(env, 1, "keyid", NULL);
    CHECK(verify(bad, pk, kid, HELLO_TYPE, &err) < 0 && has(&err, "no signature with key id"));
    free(bad);
    bad = edit(env, 1, "keyid", json_integer(7));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "malformed"));
    free(bad);

    /* Not JSON, not an object, duplicate keys. */
    CHECK(verify("not json {", pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "not valid JSON"));
    CHECK(verify("", pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "not valid JSON"));
    CHECK(verify("[1,2]", pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "not a JSON object"));
    size_t n = strlen(env);
    bad = malloc(n + 64);
    snprintf(bad, n + 64, "{\"payload\":\"eA==\",%s", env + 1);
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "not valid JSON"));
    free(bad);

    /* Missing or mistyped fields. */
    bad = edit(env, 0, "signatures", NULL);
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "no \"signatures\" array"));
    free(bad);
    bad = edit(env, 0, "signatures", json_array());
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "has no signatures"));
    free(bad);
    bad = edit(env, 0, "signatures", json_string("x"));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "no \"signatures\" array"));
    free(bad);
    bad = edit(env, 0, "payload", NULL);
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "no \"payload\" string"));
    free(bad);
    bad = edit(env, 0, "payloadType", json_integer(1));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "no \"payloadType\" string"));
    free(bad);
    bad = edit(env, 1, "sig", NULL);
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "signature 1 is malformed"));
    free(bad);

    /* Bad base64. */
    bad = edit(env, 0, "payload", json_string("not base64!"));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "payload is not valid base64"));
    free(bad);
    bad = edit(env, 0, "payload", json_string("aGVsbG8gd29ybGQ= "));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "payload is not valid base64"));
    free(bad);
    bad = edit(env, 1, "sig", json_string("%%%%"));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "not base64 of 64 bytes"));
    free(bad);
    unsigned char zeros[65] = {0};
    char *s63 = b64(zeros, 63, sodium_base64_VARIANT_ORIGINAL);
    bad = edit(env, 1, "sig", json_string(s63));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "not base64 of 64 bytes"));
    free(bad);
    free(s63);
    char *s64 = b64(zeros, 64, sodium_base64_VARIANT_ORIGINAL);
    bad = edit(env, 1, "sig", json_string(s64));
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "does not verify"));
    free(bad);
    free(s64);

    /* Oversized: a valid envelope padded past the limit with whitespace. */
    size_t big = PN_DSSE_ENVELOPE_MAX + 1;
    bad = malloc(big + 1);
    memset(bad, ' ', big);
    memcpy(bad, env, n);
    bad[big] = '\0';
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "larger than"));
    bad[big - 1] = '\0'; /* exactly at the limit: accepted */
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) == 0);
    free(bad);

    /* Too many signatures to look at. */
    json_t *root = json_loads(env, 0, NULL), *sigs = json_object_get(root, "signatures");
    for (int i = 0; i < PN_DSSE_SIGS_MAX; i++)
        json_array_append(sigs, json_array_get(sigs, 0));
    bad = json_dumps(root, JSON_COMPACT);
    CHECK(verify(bad, pk, NULL, HELLO_TYPE, &err) < 0 && has(&err, "more than"));
    free(bad);
    json_decref(root);

    /* Sign refuses what verify would refuse. */
    size_t huge_len = PN_DSSE_ENVELOPE_MAX / 4 * 3;
    unsigned char *huge = calloc(1, huge_len);
    CHECK(pn_dsse_sign(sk, kid, HELLO_TYPE, huge, huge_len, &err) == NULL &&
          has(&err, "larger than"));
    free(huge);
    CHECK(pn_dsse_sign(sk, kid, "", "x", 1, &err) == NULL && has(&err, "type is empty"));
    CHECK(pn_dsse_sign(sk, kid, "\xff", "x", 1, &err) == NULL && has(&err, "UTF-8"));
    free(env);
}

/* Two signers: the right one is found by keyid, or by trying each. */
static void test_multi(void)
{
    struct pn_err err;
    char *e1 = pn_dsse_sign(sk2, kid2, HELLO_TYPE, "m", 1, &err);
    char *e2 = pn_dsse_sign(sk, kid, HELLO_TYPE, "m", 1, &err);
    json_t *r1 = json_loads(e1, 0, NULL), *r2 = json_loads(e2, 0, NULL);
    json_array_append(json_object_get(r1, "signatures"),
                      json_array_get(json_object_get(r2, "signatures"), 0));
    char *both = json_dumps(r1, JSON_COMPACT);
    CHECK(verify(both, pk, kid, HELLO_TYPE, &err) == 0);
    CHECK(verify(both, pk, NULL, HELLO_TYPE, &err) == 0);
    CHECK(verify(both, pk2, kid2, HELLO_TYPE, &err) == 0);
    CHECK(verify(both, pk2, kid, HELLO_TYPE, &err) < 0 && has(&err, "does not verify"));
    free(both);
    json_decref(r1);
    json_decref(r2);
    free(e1);
    free(e2);
}

/* ------------------------------------------------------------ manifest */

static const char meta_conf[] = "meta-product = \"sensor\"\nmeta-version = \"1.1.0\"\n"
                                "file-resource \"image\" { length = 4 }\n";

static void good_manifest(struct pn_manifest *m)
{
    memset(m, 0, sizeof(*m));
    strcpy(m->device, "sensor-0001");
    strcpy(m->deployment, "acme.prod-rollout");
    m->sequence = 7;
    m->issued_at = 1700000000;
    m->expires_at = 1700086400;
    strcpy(m->firmware.uuid, "0b7ad0b6-4d6f-5f0b-9c6e-6f8a6a1b2c3d");
    strcpy(m->firmware.product, "sensor");
    strcpy(m->firmware.version, "1.1.0");
    strcpy(m->firmware.platform, "rpi4");
    strcpy(m->firmware.architecture, "arm");
    m->firmware.size = 123456;
    strcpy(m->firmware.sha256, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    strcpy(m->firmware.key_id, "ca051a500a499d2a");
    m->firmware.meta_conf_len = strlen(meta_conf);
    m->firmware.meta_conf = malloc(m->firmware.meta_conf_len);
    memcpy(m->firmware.meta_conf, meta_conf, m->firmware.meta_conf_len);
    for (int i = 0; i < 64; i++)
        m->firmware.meta_conf_sig[i] = (unsigned char)(i * 7 + 1);
    m->firmware.url = strdup("https://fw.example.com/0b7ad0b6.fw");
}

static int same(const struct pn_manifest *a, const struct pn_manifest *b)
{
    const struct pn_manifest_firmware *x = &a->firmware, *y = &b->firmware;
    return strcmp(a->device, b->device) == 0 && strcmp(a->deployment, b->deployment) == 0 &&
           a->sequence == b->sequence && a->issued_at == b->issued_at &&
           a->expires_at == b->expires_at && strcmp(x->uuid, y->uuid) == 0 &&
           strcmp(x->product, y->product) == 0 && strcmp(x->version, y->version) == 0 &&
           strcmp(x->platform, y->platform) == 0 && strcmp(x->architecture, y->architecture) == 0 &&
           x->size == y->size && strcmp(x->sha256, y->sha256) == 0 &&
           strcmp(x->key_id, y->key_id) == 0 && x->meta_conf_len == y->meta_conf_len &&
           memcmp(x->meta_conf, y->meta_conf, x->meta_conf_len) == 0 &&
           memcmp(x->meta_conf_sig, y->meta_conf_sig, 64) == 0 &&
           ((!x->url && !y->url) || (x->url && y->url && strcmp(x->url, y->url) == 0));
}

/* Decodes text (expected to fail) and checks the error and that nothing
 * is left owned. */
static int refuses(const char *text, const char *why)
{
    struct pn_manifest m;
    struct pn_err err;
    int r = pn_manifest_decode(text, strlen(text), &m, &err);
    int ok = r < 0 && m.firmware.meta_conf == NULL && m.firmware.url == NULL && has(&err, why);
    if (r == 0)
        pn_manifest_free(&m);
    return ok;
}

/* Good encoding with one field changed: in_fw picks the firmware object. */
static char *with(const char *good, int in_fw, const char *key, json_t *value)
{
    json_t *root = json_loads(good, 0, NULL);
    json_t *obj = in_fw ? json_object_get(root, "firmware") : root;
    if (value)
        json_object_set_new(obj, key, value);
    else
        json_object_del(obj, key);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

#define REFUSES(in_fw, key, value, why)                                                            \
    do {                                                                                           \
        char *t_ = with(good, in_fw, key, value);                                                  \
        CHECK(refuses(t_, why));                                                                   \
        free(t_);                                                                                  \
    } while (0)

static void test_manifest_codec(void)
{
    struct pn_manifest m, d;
    struct pn_err err;

    good_manifest(&m);
    char *good = pn_manifest_encode(&m, &err);
    CHECK(good != NULL);
    if (!good)
        return;
    static const char head[] =
        "{\"device\":\"sensor-0001\",\"deployment\":\"acme.prod-rollout\",\"sequence\":7,"
        "\"issued_at\":1700000000,\"expires_at\":1700086400,\"firmware\":{\"uuid\":";
    CHECK(strncmp(good, head, sizeof(head) - 1) == 0);
    CHECK(strchr(good, ' ') == NULL); /* compact */
    json_t *root = json_loads(good, 0, NULL);
    json_t *fw = json_object_get(root, "firmware");
    CHECK(json_object_size(root) == 6 && json_object_size(fw) == 11);
    char *mc = b64(meta_conf, strlen(meta_conf), sodium_base64_VARIANT_ORIGINAL);
    CHECK_STREQ(json_string_value(json_object_get(fw, "meta_conf")), mc);
    free(mc);
    CHECK(strlen(json_string_value(json_object_get(fw, "meta_conf_sig"))) == 88);
    CHECK(json_integer_value(json_object_get(fw, "size")) == 123456);
    json_decref(root);

    CHECK(pn_manifest_decode(good, strlen(good), &d, &err) == 0);
    CHECK(same(&m, &d));
    pn_manifest_free(&d);
    CHECK(d.firmware.meta_conf == NULL && d.firmware.url == NULL);
    pn_manifest_free(&d); /* twice is fine */

    /* Without a url the field is absent and comes back NULL. */
    free(m.firmware.url);
    m.firmware.url = NULL;
    m.firmware.platform[0] = '\0';
    char *nourl = pn_manifest_encode(&m, &err);
    CHECK(nourl && strstr(nourl, "url") == NULL);
    CHECK(nourl && pn_manifest_decode(nourl, strlen(nourl), &d, &err) == 0 && same(&m, &d) &&
          d.firmware.url == NULL);
    pn_manifest_free(&d);
    free(nourl);

    /* Types. */
    REFUSES(0, "sequence", json_string("7"), "\"sequence\" is not an integer");
    REFUSES(0, "issued_at", json_real(1700000000.0), "\"issued_at\" is not an integer");
    REFUSES(0, "device", json_integer(1), "\"device\" is not a string");
    REFUSES(0, "firmware", json_array(), "\"firmware\" is not an object");
    REFUSES(1, "size", json_real(1.5), "\"firmware.size\" is not an integer");
    REFUSES(1, "size", json_string("12"), "\"firmware.size\" is not an integer");
    REFUSES(1, "meta_conf", json_null(), "\"firmware.meta_conf\" is not a string");
    REFUSES(1, "url", json_null(), "\"firmware.url\"");
    REFUSES(1, "product", json_true(), "\"firmware.product\" is not a string");
    CHECK(refuses("[]", "not a JSON object"));
    CHECK(refuses("{\"device\":", "not valid JSON"));

    /* Missing, unknown, duplicate fields. */
    REFUSES(0, "expires_at", NULL, "no field \"expires_at\"");
    REFUSES(1, "sha256", NULL, "no field \"firmware.sha256\"");
    REFUSES(0, "firmware", NULL, "no field \"firmware\"");
    REFUSES(0, "extra", json_true(), "unknown field \"extra\"");
    REFUSES(1, "delta", json_true(), "unknown field \"firmware.delta\"");
    {
        size_t n = strlen(good);
        char *dup = malloc(n + 32);
        snprintf(dup, n + 32, "{\"device\":\"other\",%s", good + 1);
        CHECK(refuses(dup, "not valid JSON"));
        free(dup);
    }

    /* meta_conf_sig: exactly 64 bytes of standard base64. */
    unsigned char b[65] = {1};
    char *s65 = b64(b, 65, sodium_base64_VARIANT_ORIGINAL);
    char *s63 = b64(b, 63, sodium_base64_VARIANT_ORIGINAL);
    char *s64u = b64(m.firmware.meta_conf_sig, 64, sodium_base64_VARIANT_URLSAFE);
    REFUSES(1, "meta_conf_sig", json_string(s65), "\"firmware.meta_conf_sig\"");
    REFUSES(1, "meta_conf_sig", json_string(s63), "\"firmware.meta_conf_sig\" is not 64 bytes");
    REFUSES(1, "meta_conf_sig", json_string("!!"), "\"firmware.meta_conf_sig\" is not base64");
    if (strpbrk(s64u, "-_"))
        REFUSES(1, "meta_conf_sig", json_string(s64u), "\"firmware.meta_conf_sig\"");
    free(s65);
    free(s63);
    free(s64u);
    REFUSES(1, "meta_conf", json_string(""), "\"firmware.meta_conf\" must hold");
    REFUSES(1, "meta_conf", json_string("bWV0YQ"), "\"firmware.meta_conf\" is not base64");

    /* sha256 and key_id. */
    REFUSES(1, "sha256",
            json_string("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
            "\"firmware.sha256\" is not 64 lowercase hex");
    REFUSES(1, "sha256",
            json_string("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0"),
            "\"firmware.sha256\" is not 64 lowercase hex");
    REFUSES(1, "sha256",
            json_string("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g"),
            "\"firmware.sha256\" is not 64 lowercase hex");
    REFUSES(1, "sha256",
            json_string("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08a"),
            "\"firmware.sha256\" is longer than 64 bytes");
    REFUSES(1, "key_id", json_string("CA051A500A499D2A"), "\"firmware.key_id\" is not 16");

    /* Device identifiers (docs/protocol.md, "Identities"), and the other limits. */
    char long_id[130];
    memset(long_id, 'a', 129);
    long_id[129] = '\0';
    REFUSES(0, "device", json_string("dev/+#"), "\"device\" is not a valid device identifier");
    REFUSES(0, "device", json_string(""), "\"device\" is not a valid device identifier");
    REFUSES(0, "device", json_string("dev 1"), "\"device\" is not a valid device identifier");
    REFUSES(0, "device", json_string(long_id), "\"device\" is longer than 128 bytes");
    long_id[128] = '\0';
    {
        char *t = with(good, 0, "device", json_string(long_id));
        CHECK(pn_manifest_decode(t, strlen(t), &d, &err) == 0 && strlen(d.device) == 128);
        pn_manifest_free(&d);
        free(t);
    }
    REFUSES(0, "deployment", json_string("a/b"), "\"deployment\" is not a valid identifier");
    REFUSES(0, "sequence", json_integer(0), "\"sequence\" must be a positive integer");
    REFUSES(0, "expires_at", json_integer(1700000000), "\"expires_at\" must be after");
    REFUSES(1, "size", json_integer(-1), "\"firmware.size\" must be positive");
    REFUSES(1, "size", json_integer(0), "\"firmware.size\" must be positive");
    REFUSES(1, "version", json_string(""), "\"firmware.version\" is empty");
    REFUSES(1, "product", json_string("a\nb"), "\"firmware.product\"");
    REFUSES(1, "uuid", json_string("a b"), "\"firmware.uuid\"");
    REFUSES(1, "url", json_string("http://x/a b"), "\"firmware.url\"");
    REFUSES(1, "url", json_string(""), "\"firmware.url\"");

    /* Encode refuses what decode would refuse. */
    strcpy(m.firmware.sha256, "xyz");
    CHECK(pn_manifest_encode(&m, &err) == NULL && has(&err, "firmware.sha256"));
    strcpy(m.firmware.sha256, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    strcpy(m.device, "a/b");
    CHECK(pn_manifest_encode(&m, &err) == NULL && has(&err, "\"device\""));
    strcpy(m.device, "sensor-0001");
    strcpy(m.firmware.product, "\xff");
    CHECK(pn_manifest_encode(&m, &err) == NULL && has(&err, "UTF-8"));

    free(good);
    pn_manifest_free(&m);
}

static void test_manifest_check(void)
{
    struct pn_manifest m;
    struct pn_err err;
    const int64_t now = 1700000100;

    good_manifest(&m);
    CHECK(pn_manifest_check(&m, "sensor-0001", 6, now, &err) == 0);
    CHECK(pn_manifest_check(&m, "sensor-0001", 0, now, &err) == 0);
    CHECK(pn_manifest_check(&m, "sensor-0002", 6, now, &err) < 0 &&
          has(&err, "manifest is for device sensor-0001"));
    CHECK(pn_manifest_check(&m, "sensor-000", 6, now, &err) < 0 && has(&err, "is for device"));
    CHECK(pn_manifest_check(&m, "sensor-0001", 7, now, &err) < 0 &&
          has(&err, "replayed or old manifest"));
    CHECK(pn_manifest_check(&m, "sensor-0001", 8, now, &err) < 0 &&
          has(&err, "replayed or old manifest"));
    CHECK(pn_manifest_check(&m, "sensor-0001", 6, m.expires_at, &err) < 0 &&
          has(&err, "manifest expired at 2023-11-15T22:13:20Z"));
    CHECK(pn_manifest_check(&m, "sensor-0001", 6, m.expires_at - 1, &err) == 0);
    CHECK(pn_manifest_check(&m, "sensor-0001", 6, m.issued_at - PN_MANIFEST_SKEW, &err) == 0);
    CHECK(pn_manifest_check(&m, "sensor-0001", 6, m.issued_at - PN_MANIFEST_SKEW - 1, &err) < 0 &&
          has(&err, "future"));
    CHECK(pn_manifest_check(&m, "sensor-0001", 6, 0, &err) < 0 && has(&err, "future"));
    pn_manifest_free(&m);
}

/* The whole path: sign with the release key, open with its public key. */
static void test_manifest_envelope(void)
{
    struct pn_manifest m, d;
    struct pn_err err;

    good_manifest(&m);
    char *env = pn_manifest_sign(&m, sk, &err);
    CHECK(env != NULL);
    if (!env)
        return;
    CHECK(pn_manifest_open(env, strlen(env), pk, &d, &err) == 0 && same(&m, &d));
    pn_manifest_free(&d);
    CHECK(pn_manifest_open(env, strlen(env), pk2, &d, &err) < 0 &&
          has(&err, "no signature with key id") && d.firmware.meta_conf == NULL);

    /* The envelope names the release key, and its payload is the encoding. */
    json_t *root = json_loads(env, 0, NULL);
    CHECK_STREQ(json_string_value(json_object_get(root, "payloadType")),
                "application/vnd.pinion.update+json");
    CHECK_STREQ(json_string_value(json_object_get(
                    json_array_get(json_object_get(root, "signatures"), 0), "keyid")),
                kid);
    char *enc = pn_manifest_encode(&m, &err);
    char *enc_b64 = b64(enc, strlen(enc), sodium_base64_VARIANT_ORIGINAL);
    CHECK_STREQ(json_string_value(json_object_get(root, "payload")), enc_b64);
    free(enc);
    free(enc_b64);
    json_decref(root);

    /* A validly signed envelope of another type is no manifest. */
    char *enc2 = pn_manifest_encode(&m, &err);
    char *other = pn_dsse_sign(sk, kid, "application/json", enc2, strlen(enc2), &err);
    CHECK(pn_manifest_open(other, strlen(other), pk, &d, &err) < 0 && has(&err, "payload type is"));
    free(other);
    /* A validly signed envelope of the right type but a bad body. */
    other = pn_dsse_sign(sk, kid, PN_MANIFEST_TYPE, "{\"device\":1}", 12, &err);
    CHECK(pn_manifest_open(other, strlen(other), pk, &d, &err) < 0 &&
          has(&err, "manifest has no field \"firmware\""));
    free(other);
    free(enc2);
    free(env);
    pn_manifest_free(&m);

    /* The largest manifest the limits allow still fits in an envelope. */
    good_manifest(&m);
    free(m.firmware.meta_conf);
    m.firmware.meta_conf_len = PN_MANIFEST_META_CONF_MAX;
    m.firmware.meta_conf = malloc(PN_MANIFEST_META_CONF_MAX);
    randombytes_buf(m.firmware.meta_conf, PN_MANIFEST_META_CONF_MAX);
    free(m.firmware.url);
    m.firmware.url = malloc(PN_MANIFEST_URL_MAX + 1);
    memset(m.firmware.url, 'u', PN_MANIFEST_URL_MAX);
    m.firmware.url[PN_MANIFEST_URL_MAX] = '\0';
    memset(m.device, 'd', 128);
    memset(m.deployment, 'e', 128);
    memset(m.firmware.uuid, 'f', 63);
    memset(m.firmware.product, 'p', 127);
    memset(m.firmware.version, 'v', 63);
    memset(m.firmware.platform, 'l', 127);
    memset(m.firmware.architecture, 'a', 127);
    m.sequence = m.issued_at = INT64_MAX - 1;
    m.expires_at = INT64_MAX;
    m.firmware.size = INT64_MAX;
    env = pn_manifest_sign(&m, sk, &err);
    CHECK(env != NULL);
    CHECK(env && strlen(env) <= PN_DSSE_ENVELOPE_MAX);
    CHECK(env && pn_manifest_open(env, strlen(env), pk, &d, &err) == 0 && same(&m, &d));
    pn_manifest_free(&d);
    free(env);
    m.firmware.meta_conf_len++;
    CHECK(pn_manifest_encode(&m, &err) == NULL && has(&err, "\"firmware.meta_conf\""));
    pn_manifest_free(&m);
}

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "libsodium failed to initialise\n");
        return 2;
    }
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    pn_fwkey_id(pk, kid);
    pn_fwkey_id(pk2, kid2);

    test_pae();
    test_round_trip();
    test_exact_bytes();
    test_refusals();
    test_multi();
    test_manifest_codec();
    test_manifest_check();
    test_manifest_envelope();

    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(sk2, sizeof(sk2));
    return check_done("test_manifest");
}
