/* SPDX-License-Identifier: Apache-2.0 */
#include "manifest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "fwkey.h"
#include "ident.h"

#define SIG_BYTES 64

/* ------------------------------------------------------------ helpers */

/* Copies at most 64 bytes of untrusted text into out for an error message,
 * replacing anything but printable ASCII with '?', so a hostile envelope
 * cannot put control characters into the log. */
static const char *shown(const char *s, size_t len, char out[72])
{
    size_t i;
    for (i = 0; i < len && i < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (i < len) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

/* Standard base64 with padding, NUL-terminated; caller frees.  NULL if out
 * of memory. */
static char *b64_encode(const void *data, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(cap);
    if (s)
        sodium_bin2base64(s, cap, data, len, sodium_base64_VARIANT_ORIGINAL);
    return s;
}

/* Decodes all of s[0..slen) (no whitespace, canonical trailing bits; libsodium
 * checks both) with the first variant that accepts it.  *out is malloc'd
 * (caller frees), with a NUL appended that *out_len does not count.  -1 if
 * no variant accepts it, or the result exceeds max bytes. */
static int b64_decode(const char *s, size_t slen, size_t max, const int *variants,
                      unsigned char **out, size_t *out_len)
{
    size_t cap = slen / 4 * 3 + 3;
    unsigned char *buf;

    *out = NULL;
    *out_len = 0;
    if (slen / 4 * 3 > max + 3)
        return -1;
    buf = malloc(cap + 1);
    if (!buf)
        return -1;
    for (; *variants >= 0; variants++) {
        size_t n = 0;
        if (sodium_base642bin(buf, cap, s, slen, NULL, &n, NULL, *variants) == 0 && n <= max) {
            buf[n] = '\0';
            *out = buf;
            *out_len = n;
            return 0;
        }
    }
    free(buf);
    return -1;
}

/* DSSE lets signers use standard or URL-safe base64; padding is not fixed
 * either.  The encoding is outside the signature, so accepting all four
 * changes nothing about what is trusted. */
static const int dsse_variants[] = {
    sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
    sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING, -1};

/* Inside our own payload there is one encoding: what pn_manifest_encode writes. */
static const int manifest_variants[] = {sodium_base64_VARIANT_ORIGINAL, -1};

/* ------------------------------------------------------------ DSSE */

int pn_dsse_pae(const char *type, const void *body, size_t body_len, unsigned char **out,
                size_t *out_len, struct pn_err *err)
{
    char head[40], mid[40]; /* "DSSEv1 " LEN(type) " " and " " LEN(body) " " */
    size_t type_len;

    *out = NULL;
    *out_len = 0;
    if (!type || !*type)
        return pn_err_set(err, "DSSE payload type is empty");
    type_len = strnlen(type, PN_DSSE_TYPE_MAX + 1);
    if (type_len > PN_DSSE_TYPE_MAX)
        return pn_err_set(err, "DSSE payload type is longer than %d bytes", PN_DSSE_TYPE_MAX);
    if (!body && body_len)
        return pn_err_set(err, "DSSE payload is missing");
    if (body_len > PN_DSSE_ENVELOPE_MAX)
        return pn_err_set(err, "DSSE payload is larger than %d bytes", PN_DSSE_ENVELOPE_MAX);

    size_t h = (size_t)snprintf(head, sizeof(head), "DSSEv1 %zu ", type_len);
    size_t m = (size_t)snprintf(mid, sizeof(mid), " %zu ", body_len);
    size_t total = h + type_len + m + body_len;
    unsigned char *p = malloc(total);
    if (!p)
        return pn_err_set(err, "out of memory");
    memcpy(p, head, h);
    memcpy(p + h, type, type_len);
    memcpy(p + h + type_len, mid, m);
    if (body_len)
        memcpy(p + h + type_len + m, body, body_len);
    *out = p;
    *out_len = total;
    return 0;
}

char *pn_dsse_sign(const unsigned char sk[64], const char *keyid, const char *type,
                   const void *body, size_t len, struct pn_err *err)
{
    unsigned char *pae = NULL, sig[SIG_BYTES];
    size_t pae_len = 0;
    char *payload_b64 = NULL, *sig_b64 = NULL, *text = NULL;
    json_t *env = NULL, *entry = NULL;

    if (pn_dsse_pae(type, body, len, &pae, &pae_len, err) < 0)
        return NULL;
    if (keyid && strnlen(keyid, PN_DSSE_KEYID_MAX + 1) > PN_DSSE_KEYID_MAX) {
        pn_err_set(err, "DSSE key id is longer than %d bytes", PN_DSSE_KEYID_MAX);
        goto out;
    }
    if (crypto_sign_detached(sig, NULL, pae, pae_len, sk) != 0) {
        pn_err_set(err, "Ed25519 signing failed");
        goto out;
    }
    payload_b64 = b64_encode(body, len);
    sig_b64 = b64_encode(sig, sizeof(sig));
    if (!payload_b64 || !sig_b64) {
        pn_err_set(err, "out of memory");
        goto out;
    }

    entry = keyid ? json_pack("{s:s, s:s}", "keyid", keyid, "sig", sig_b64)
                  : json_pack("{s:s}", "sig", sig_b64);
    if (!entry) {
        pn_err_set(err, "DSSE key id is not valid UTF-8");
        goto out;
    }
    /* Keys in DSSE's order; jansson keeps insertion order. */
    env = json_pack("{s:s, s:s, s:[O]}", "payload", payload_b64, "payloadType", type, "signatures",
                    entry);
    if (!env) {
        pn_err_set(err, "DSSE payload type is not valid UTF-8");
        goto out;
    }
    text = json_dumps(env, JSON_COMPACT);
    if (!text) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    /* Never produce what pn_dsse_verify would refuse. */
    if (strlen(text) > PN_DSSE_ENVELOPE_MAX) {
        free(text);
        text = NULL;
        pn_err_set(err, "DSSE envelope would be larger than %d bytes", PN_DSSE_ENVELOPE_MAX);
    }
out:
    json_decref(entry);
    json_decref(env);
    free(payload_b64);
    free(sig_b64);
    free(pae);
    return text;
}

int pn_dsse_verify(const char *envelope, size_t len, const unsigned char pk[32], const char *keyid,
                   const char *expected_type, unsigned char **body, size_t *body_len,
                   struct pn_err *err)
{
    json_error_t jerr;
    json_t *root = NULL;
    unsigned char *payload = NULL, *pae = NULL;
    size_t payload_len = 0, pae_len = 0, matched = 0;
    char s1[72], s2[72];
    int r = -1, found = 0;

    *body = NULL;
    *body_len = 0;
    if (!envelope)
        return pn_err_set(err, "DSSE envelope is missing");
    if (len > PN_DSSE_ENVELOPE_MAX)
        return pn_err_set(err, "DSSE envelope is larger than %d bytes", PN_DSSE_ENVELOPE_MAX);
    root = json_loadb(envelope, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pn_err_set(err, "DSSE envelope is not valid JSON (line %d, column %d: %s)",
                          jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        pn_err_set(err, "DSSE envelope is not a JSON object");
        goto out;
    }
    json_t *jpayload = json_object_get(root, "payload");
    json_t *jtype = json_object_get(root, "payloadType");
    json_t *jsigs = json_object_get(root, "signatures");
    if (!json_is_string(jpayload)) {
        pn_err_set(err, "DSSE envelope has no \"payload\" string");
        goto out;
    }
    if (!json_is_string(jtype)) {
        pn_err_set(err, "DSSE envelope has no \"payloadType\" string");
        goto out;
    }
    if (!json_is_array(jsigs)) {
        pn_err_set(err, "DSSE envelope has no \"signatures\" array");
        goto out;
    }
    if (json_array_size(jsigs) == 0) {
        pn_err_set(err, "DSSE envelope has no signatures");
        goto out;
    }
    if (json_array_size(jsigs) > PN_DSSE_SIGS_MAX) {
        pn_err_set(err, "DSSE envelope has more than %d signatures", PN_DSSE_SIGS_MAX);
        goto out;
    }

    const char *type = json_string_value(jtype);
    size_t type_len = json_string_length(jtype);
    if (!expected_type || type_len != strlen(expected_type) ||
        memcmp(type, expected_type, type_len) != 0) {
        pn_err_set(err, "DSSE payload type is \"%s\", expected \"%s\"", shown(type, type_len, s1),
                   expected_type ? expected_type : "(none)");
        goto out;
    }
    if (b64_decode(json_string_value(jpayload), json_string_length(jpayload), PN_DSSE_ENVELOPE_MAX,
                   dsse_variants, &payload, &payload_len) < 0) {
        pn_err_set(err, "DSSE payload is not valid base64");
        goto out;
    }
    /* The signature covers PAE over these decoded bytes, exactly as received. */
    if (pn_dsse_pae(type, payload, payload_len, &pae, &pae_len, err) < 0)
        goto out;

    size_t i;
    json_t *jsig;
    json_array_foreach(jsigs, i, jsig)
    {
        json_t *jkid = json_object_get(jsig, "keyid"), *jsv = json_object_get(jsig, "sig");
        unsigned char *sig = NULL;
        size_t sig_len = 0;

        if (!json_is_object(jsig) || !json_is_string(jsv) || (jkid && !json_is_string(jkid))) {
            pn_err_set(err, "DSSE signature %zu is malformed (needs a \"sig\" string)", i + 1);
            goto out;
        }
        if (b64_decode(json_string_value(jsv), json_string_length(jsv), SIG_BYTES, dsse_variants,
                       &sig, &sig_len) < 0 ||
            sig_len != SIG_BYTES) {
            free(sig);
            pn_err_set(err, "DSSE signature %zu is not base64 of %d bytes", i + 1, SIG_BYTES);
            goto out;
        }
        if (keyid && (!jkid || json_string_length(jkid) != strlen(keyid) ||
                      memcmp(json_string_value(jkid), keyid, strlen(keyid)) != 0)) {
            free(sig);
            continue;
        }
        matched++;
        if (!found && crypto_sign_verify_detached(sig, pae, pae_len, pk) == 0)
            found = 1;
        free(sig);
    }
    if (keyid && !matched) {
        pn_err_set(err, "DSSE envelope has no signature with key id \"%s\"",
                   shown(keyid, strlen(keyid), s2));
        goto out;
    }
    if (!found) {
        if (keyid)
            pn_err_set(err, "DSSE signature with key id \"%s\" does not verify",
                       shown(keyid, strlen(keyid), s2));
        else
            pn_err_set(err, "DSSE signature does not verify with the given key");
        goto out;
    }
    *body = payload;
    *body_len = payload_len;
    payload = NULL;
    r = 0;
out:
    free(payload);
    free(pae);
    json_decref(root);
    return r;
}

/* ------------------------------------------------------------ manifest */

/* Length of a NUL-terminated string held in buf[size], or size if buf holds
 * no NUL (a caller's struct that was never terminated). */
static size_t buf_len(const char *buf, size_t size)
{
    return strnlen(buf, size);
}

static int is_lower_hex(const char *s, size_t size, size_t want)
{
    if (buf_len(s, size) != want)
        return 0;
    for (size_t i = 0; i < want; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Free text from meta.conf (product, version, ...): no control characters.
 * UTF-8 validity is jansson's: it refuses invalid UTF-8 both ways. */
static int text_ok(const char *s, size_t size, int may_be_empty)
{
    size_t n = buf_len(s, size);
    if (n == size || (n == 0 && !may_be_empty))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static int ident_ok(const char *s, size_t size)
{
    size_t n = buf_len(s, size);
    return n < size && pn_ident_valid_n(s, n);
}

/* The one set of rules for a manifest: encode refuses what decode would. */
static int validate(const struct pn_manifest *m, struct pn_err *err)
{
    const struct pn_manifest_firmware *fw = &m->firmware;

    if (!ident_ok(m->device, sizeof(m->device)))
        return pn_err_set(err, "manifest field \"device\" is not a valid device identifier");
    if (!ident_ok(m->deployment, sizeof(m->deployment)))
        return pn_err_set(err, "manifest field \"deployment\" is not a valid identifier");
    if (m->sequence < 1)
        return pn_err_set(err, "manifest field \"sequence\" must be a positive integer");
    if (m->issued_at < 0)
        return pn_err_set(err, "manifest field \"issued_at\" must not be negative");
    if (m->expires_at <= m->issued_at)
        return pn_err_set(err, "manifest field \"expires_at\" must be after \"issued_at\"");
    if (!ident_ok(fw->uuid, sizeof(fw->uuid)))
        return pn_err_set(err, "manifest field \"firmware.uuid\" is not a valid firmware uuid");
    if (!text_ok(fw->product, sizeof(fw->product), 0))
        return pn_err_set(err, "manifest field \"firmware.product\" is empty or holds control "
                               "characters");
    if (!text_ok(fw->version, sizeof(fw->version), 0))
        return pn_err_set(err, "manifest field \"firmware.version\" is empty or holds control "
                               "characters");
    if (!text_ok(fw->platform, sizeof(fw->platform), 1))
        return pn_err_set(err, "manifest field \"firmware.platform\" holds control characters");
    if (!text_ok(fw->architecture, sizeof(fw->architecture), 1))
        return pn_err_set(err, "manifest field \"firmware.architecture\" holds control characters");
    if (fw->size < 1)
        return pn_err_set(err, "manifest field \"firmware.size\" must be positive");
    if (!is_lower_hex(fw->sha256, sizeof(fw->sha256), 64))
        return pn_err_set(err, "manifest field \"firmware.sha256\" is not 64 lowercase hex "
                               "digits");
    if (!is_lower_hex(fw->key_id, sizeof(fw->key_id), PN_FWKEY_ID_LEN))
        return pn_err_set(err,
                          "manifest field \"firmware.key_id\" is not %d lowercase hex "
                          "digits",
                          PN_FWKEY_ID_LEN);
    if (!fw->meta_conf || fw->meta_conf_len == 0 || fw->meta_conf_len > PN_MANIFEST_META_CONF_MAX)
        return pn_err_set(err, "manifest field \"firmware.meta_conf\" must hold 1 to %d bytes",
                          PN_MANIFEST_META_CONF_MAX);
    if (fw->url) {
        size_t n = strnlen(fw->url, PN_MANIFEST_URL_MAX + 1);
        int ok = n > 0 && n <= PN_MANIFEST_URL_MAX;
        for (size_t i = 0; ok && i < n; i++)
            ok = fw->url[i] > 0x20 && fw->url[i] < 0x7f;
        if (!ok)
            return pn_err_set(err,
                              "manifest field \"firmware.url\" must be 1 to %d printable "
                              "ASCII characters without spaces",
                              PN_MANIFEST_URL_MAX);
    }
    return 0;
}

/* Sets obj[name] to a new string; -1 when value is not valid UTF-8. */
static int set_str(json_t *obj, const char *path, const char *name, const char *value,
                   struct pn_err *err)
{
    json_t *v = json_string(value);
    if (!v || json_object_set_new(obj, name, v) < 0)
        return pn_err_set(err, "manifest field \"%s%s\" is not valid UTF-8", path, name);
    return 0;
}

static int set_int(json_t *obj, const char *name, int64_t value, struct pn_err *err)
{
    json_t *v = json_integer((json_int_t)value);
    if (!v || json_object_set_new(obj, name, v) < 0)
        return pn_err_set(err, "out of memory");
    return 0;
}

static int set_b64(json_t *obj, const char *name, const void *data, size_t len, struct pn_err *err)
{
    char *s = b64_encode(data, len);
    if (!s)
        return pn_err_set(err, "out of memory");
    int r = set_str(obj, "firmware.", name, s, err);
    free(s);
    return r;
}

char *pn_manifest_encode(const struct pn_manifest *m, struct pn_err *err)
{
    const struct pn_manifest_firmware *fw = &m->firmware;
    json_t *root = json_object(), *f = json_object();
    char *text = NULL;

    if (!root || !f) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    if (validate(m, err) < 0)
        goto out;
    if (set_str(root, "", "device", m->device, err) < 0 ||
        set_str(root, "", "deployment", m->deployment, err) < 0 ||
        set_int(root, "sequence", m->sequence, err) < 0 ||
        set_int(root, "issued_at", m->issued_at, err) < 0 ||
        set_int(root, "expires_at", m->expires_at, err) < 0 ||
        set_str(f, "firmware.", "uuid", fw->uuid, err) < 0 ||
        set_str(f, "firmware.", "product", fw->product, err) < 0 ||
        set_str(f, "firmware.", "version", fw->version, err) < 0 ||
        set_str(f, "firmware.", "platform", fw->platform, err) < 0 ||
        set_str(f, "firmware.", "architecture", fw->architecture, err) < 0 ||
        set_int(f, "size", fw->size, err) < 0 ||
        set_str(f, "firmware.", "sha256", fw->sha256, err) < 0 ||
        set_str(f, "firmware.", "key_id", fw->key_id, err) < 0 ||
        set_b64(f, "meta_conf", fw->meta_conf, fw->meta_conf_len, err) < 0 ||
        set_b64(f, "meta_conf_sig", fw->meta_conf_sig, sizeof(fw->meta_conf_sig), err) < 0 ||
        (fw->url && set_str(f, "firmware.", "url", fw->url, err) < 0))
        goto out;
    if (json_object_set(root, "firmware", f) < 0) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    text = json_dumps(root, JSON_COMPACT);
    if (!text)
        pn_err_set(err, "out of memory");
out:
    json_decref(f);
    json_decref(root);
    return text;
}

static const char *const top_fields[] = {"device",     "deployment", "sequence", "issued_at",
                                         "expires_at", "firmware",   NULL};
static const char *const fw_fields[] = {"uuid",         "product",       "version", "platform",
                                        "architecture", "size",          "sha256",  "key_id",
                                        "meta_conf",    "meta_conf_sig", "url",     NULL};

/* Refuses a field the format does not define: a device must not accept a
 * manifest carrying a field it would silently ignore. */
static int only_known(json_t *obj, const char *path, const char *const *names, struct pn_err *err)
{
    const char *key;
    json_t *v;
    char s[72];
    json_object_foreach(obj, key, v)
    {
        const char *const *n = names;
        while (*n && strcmp(*n, key) != 0)
            n++;
        if (!*n)
            return pn_err_set(err, "manifest has an unknown field \"%s%s\"", path,
                              shown(key, strlen(key), s));
    }
    return 0;
}

/* Copies obj[name], a string of fewer than size bytes, into buf. */
static int get_str(json_t *obj, const char *path, const char *name, char *buf, size_t size,
                   struct pn_err *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return pn_err_set(err, "manifest has no field \"%s%s\"", path, name);
    if (!json_is_string(v))
        return pn_err_set(err, "manifest field \"%s%s\" is not a string", path, name);
    size_t n = json_string_length(v);
    if (n >= size)
        return pn_err_set(err, "manifest field \"%s%s\" is longer than %zu bytes", path, name,
                          size - 1);
    memcpy(buf, json_string_value(v), n);
    buf[n] = '\0';
    return 0;
}

static int get_int(json_t *obj, const char *path, const char *name, int64_t *out,
                   struct pn_err *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return pn_err_set(err, "manifest has no field \"%s%s\"", path, name);
    if (!json_is_integer(v))
        return pn_err_set(err, "manifest field \"%s%s\" is not an integer", path, name);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Decodes the base64 string obj[name] of at most max bytes. */
static int get_b64(json_t *obj, const char *name, size_t max, unsigned char **out, size_t *out_len,
                   struct pn_err *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return pn_err_set(err, "manifest has no field \"firmware.%s\"", name);
    if (!json_is_string(v))
        return pn_err_set(err, "manifest field \"firmware.%s\" is not a string", name);
    if (b64_decode(json_string_value(v), json_string_length(v), max, manifest_variants, out,
                   out_len) < 0)
        return pn_err_set(err,
                          "manifest field \"firmware.%s\" is not base64 of at most %zu "
                          "bytes",
                          name, max);
    return 0;
}

int pn_manifest_decode(const void *body, size_t len, struct pn_manifest *out, struct pn_err *err)
{
    struct pn_manifest m;
    json_error_t jerr;
    json_t *root = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int r = -1;

    memset(&m, 0, sizeof(m));
    memset(out, 0, sizeof(*out));
    if (!body)
        return pn_err_set(err, "manifest is missing");
    if (len > PN_DSSE_ENVELOPE_MAX)
        return pn_err_set(err, "manifest is larger than %d bytes", PN_DSSE_ENVELOPE_MAX);
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pn_err_set(err, "manifest is not valid JSON (line %d, column %d: %s)", jerr.line,
                          jerr.column, jerr.text);
    if (!json_is_object(root)) {
        pn_err_set(err, "manifest is not a JSON object");
        goto out;
    }
    json_t *f = json_object_get(root, "firmware");
    if (only_known(root, "", top_fields, err) < 0)
        goto out;
    if (!f) {
        pn_err_set(err, "manifest has no field \"firmware\"");
        goto out;
    }
    if (!json_is_object(f)) {
        pn_err_set(err, "manifest field \"firmware\" is not an object");
        goto out;
    }
    if (only_known(f, "firmware.", fw_fields, err) < 0)
        goto out;

    struct pn_manifest_firmware *fw = &m.firmware;
    if (get_str(root, "", "device", m.device, sizeof(m.device), err) < 0 ||
        get_str(root, "", "deployment", m.deployment, sizeof(m.deployment), err) < 0 ||
        get_int(root, "", "sequence", &m.sequence, err) < 0 ||
        get_int(root, "", "issued_at", &m.issued_at, err) < 0 ||
        get_int(root, "", "expires_at", &m.expires_at, err) < 0 ||
        get_str(f, "firmware.", "uuid", fw->uuid, sizeof(fw->uuid), err) < 0 ||
        get_str(f, "firmware.", "product", fw->product, sizeof(fw->product), err) < 0 ||
        get_str(f, "firmware.", "version", fw->version, sizeof(fw->version), err) < 0 ||
        get_str(f, "firmware.", "platform", fw->platform, sizeof(fw->platform), err) < 0 ||
        get_str(f, "firmware.", "architecture", fw->architecture, sizeof(fw->architecture), err) <
            0 ||
        get_int(f, "firmware.", "size", &fw->size, err) < 0 ||
        get_str(f, "firmware.", "sha256", fw->sha256, sizeof(fw->sha256), err) < 0 ||
        get_str(f, "firmware.", "key_id", fw->key_id, sizeof(fw->key_id), err) < 0 ||
        get_b64(f, "meta_conf", PN_MANIFEST_META_CONF_MAX, &fw->meta_conf, &fw->meta_conf_len,
                err) < 0 ||
        get_b64(f, "meta_conf_sig", SIG_BYTES, &sig, &sig_len, err) < 0)
        goto out;
    if (sig_len != SIG_BYTES) {
        pn_err_set(err, "manifest field \"firmware.meta_conf_sig\" is not %d bytes", SIG_BYTES);
        goto out;
    }
    memcpy(fw->meta_conf_sig, sig, SIG_BYTES);
    json_t *url = json_object_get(f, "url");
    if (url) {
        if (!json_is_string(url) || json_string_length(url) > PN_MANIFEST_URL_MAX) {
            pn_err_set(err,
                       "manifest field \"firmware.url\" is not a string of at most %d "
                       "bytes",
                       PN_MANIFEST_URL_MAX);
            goto out;
        }
        fw->url = strdup(json_string_value(url));
        if (!fw->url) {
            pn_err_set(err, "out of memory");
            goto out;
        }
    }
    if (validate(&m, err) < 0)
        goto out;
    *out = m;
    r = 0;
out:
    if (r < 0)
        pn_manifest_free(&m);
    free(sig);
    json_decref(root);
    return r;
}

void pn_manifest_free(struct pn_manifest *m)
{
    if (!m)
        return;
    free(m->firmware.meta_conf);
    free(m->firmware.url);
    m->firmware.meta_conf = NULL;
    m->firmware.meta_conf_len = 0;
    m->firmware.url = NULL;
}

/* "2024-05-01T12:00:00Z", or the number when it is out of gmtime's range. */
static const char *utc(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if ((int64_t)tt != t || !gmtime_r(&tt, &tm) ||
        strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "%" PRId64, t);
    return out;
}

int pn_manifest_check(const struct pn_manifest *m, const char *my_device, int64_t last_sequence,
                      int64_t now, struct pn_err *err)
{
    char t1[32], t2[32];

    if (!my_device || strncmp(m->device, my_device, sizeof(m->device)) != 0) {
        char s[72];
        return pn_err_set(err, "manifest is for device %s, not %s",
                          shown(m->device, buf_len(m->device, sizeof(m->device)), s),
                          my_device ? my_device : "(none)");
    }
    if (m->sequence <= last_sequence)
        return pn_err_set(err,
                          "replayed or old manifest: sequence %" PRId64
                          " is not above the last accepted %" PRId64,
                          m->sequence, last_sequence);
    if (now <= INT64_MAX - PN_MANIFEST_SKEW && m->issued_at > now + PN_MANIFEST_SKEW)
        return pn_err_set(err, "manifest issued in the future (%s, now %s)", utc(m->issued_at, t1),
                          utc(now, t2));
    if (now >= m->expires_at)
        return pn_err_set(err, "manifest expired at %s (now %s)", utc(m->expires_at, t1),
                          utc(now, t2));
    return 0;
}

char *pn_manifest_sign(const struct pn_manifest *m, const unsigned char sk[64], struct pn_err *err)
{
    char keyid[PN_FWKEY_ID_LEN + 1];
    char *body = pn_manifest_encode(m, err);
    if (!body)
        return NULL;
    pn_fwkey_id(sk + 32, keyid);
    char *env = pn_dsse_sign(sk, keyid, PN_MANIFEST_TYPE, body, strlen(body), err);
    free(body);
    return env;
}

int pn_manifest_open(const char *envelope, size_t len, const unsigned char pk[32],
                     struct pn_manifest *out, struct pn_err *err)
{
    char keyid[PN_FWKEY_ID_LEN + 1];
    unsigned char *body = NULL;
    size_t body_len = 0;

    memset(out, 0, sizeof(*out));
    pn_fwkey_id(pk, keyid);
    if (pn_dsse_verify(envelope, len, pk, keyid, PN_MANIFEST_TYPE, &body, &body_len, err) < 0)
        return -1;
    int r = pn_manifest_decode(body, body_len, out, err);
    free(body);
    return r;
}
