/* SPDX-License-Identifier: Apache-2.0 */
#include "fwkey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "fsutil.h"

/* A key file is a few dozen bytes; anything much larger is not one. */
#define KEY_FILE_MAX 4096

#define PUB_B64_LEN 44  /* sodium_base64_ENCODED_LEN(32, ORIGINAL) - 1 */
#define PRIV_B64_LEN 88 /* sodium_base64_ENCODED_LEN(64, ORIGINAL) - 1 */

/* Decodes the contents of a key file into out (up to 64 bytes) and sets *n
 * to 32 or 64.  Base64 (standard alphabet, padded, whitespace ignored) is
 * tried first; if it does not give a key length, a 32- or 64-byte file is
 * taken as raw bytes, as fwup does.  Random raw bytes cannot be mistaken for
 * base64 of a key: 32 or 64 base64 characters decode to 24 or 48 bytes. */
static int decode_key(const unsigned char *buf, size_t len, unsigned char out[64], size_t *n)
{
    size_t got = 0;
    if (sodium_base642bin(out, 64, (const char *)buf, len, " \r\n\t", &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL) == 0 &&
        (got == 32 || got == 64)) {
        *n = got;
        return 0;
    }
    if (len == 32 || len == 64) {
        memcpy(out, buf, len);
        *n = len;
        return 0;
    }
    *n = 0;
    return -1;
}

/* Reads and decodes a key file; the file's bytes are wiped before they are
 * freed, since a private key may be in them (also one given by mistake). */
static int read_key(const char *path, unsigned char out[64], size_t *n, struct pn_err *err)
{
    size_t len = 0;
    unsigned char *buf = pn_file_read(path, KEY_FILE_MAX, &len, err);
    if (!buf)
        return -1;
    int r = decode_key(buf, len, out, n);
    sodium_memzero(buf, len);
    free(buf);
    if (r < 0)
        *n = 0;
    return 0;
}

int pn_fwkey_load_pub(const char *path, unsigned char pk[32], struct pn_err *err)
{
    unsigned char key[64];
    size_t n = 0;
    int r = -1;

    if (read_key(path, key, &n, err) < 0)
        goto out;
    if (n == 64) {
        r = pn_err_set(err, "%s: looks like a private key; register the .pub file", path);
        goto out;
    }
    if (n != 32) {
        r = pn_err_set(err, "%s: not an Ed25519 public key (expected 32 bytes, base64 or raw)",
                       path);
        goto out;
    }
    /* Refuses small-order and non-canonical encodings, which no key pair
     * produces and which would accept forged signatures of some messages. */
    if (!crypto_core_ed25519_is_valid_point(key)) {
        r = pn_err_set(err, "%s: not a valid Ed25519 public key", path);
        goto out;
    }
    memcpy(pk, key, 32);
    r = 0;
out:
    sodium_memzero(key, sizeof(key));
    return r;
}

int pn_fwkey_load_priv(const char *path, unsigned char sk[64], struct pn_err *err)
{
    unsigned char key[64], pk2[32], sk2[64];
    size_t n = 0;
    int r = -1;

    if (read_key(path, key, &n, err) < 0)
        goto out;
    if (n == 32) {
        r = pn_err_set(err, "%s: looks like a public key; give the .priv file", path);
        goto out;
    }
    if (n != 64) {
        r = pn_err_set(err, "%s: not an Ed25519 private key (expected 64 bytes, base64 or raw)",
                       path);
        goto out;
    }
    /* libsodium signs with the stored public half as-is: a mismatched half
     * gives signatures nobody can verify, so such a file is refused. */
    if (crypto_sign_seed_keypair(pk2, sk2, key) != 0 || sodium_memcmp(pk2, key + 32, 32) != 0) {
        r = pn_err_set(err,
                       "%s: inconsistent Ed25519 private key (its public half does not match "
                       "its seed)",
                       path);
        goto out;
    }
    memcpy(sk, key, 64);
    r = 0;
out:
    sodium_memzero(key, sizeof(key));
    sodium_memzero(sk2, sizeof(sk2));
    sodium_memzero(pk2, sizeof(pk2));
    return r;
}

void pn_fwkey_id(const unsigned char pk[32], char out[17])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, pk, 32);
    sodium_bin2hex(out, 17, h, 8);
}

int pn_fwkey_sign(const unsigned char sk[64], const void *msg, size_t len, unsigned char sig[64])
{
    return crypto_sign_detached(sig, NULL, msg, len, sk) == 0 ? 0 : -1;
}

int pn_fwkey_verify(const unsigned char pk[32], const void *msg, size_t len,
                    const unsigned char sig[64])
{
    return crypto_sign_verify_detached(sig, msg, len, pk) == 0 ? 0 : -1;
}

/* Both files are created exclusively (O_EXCL), which is also the check that
 * neither exists: .pub first, then .priv; if .priv cannot be created, the
 * .pub just made is removed again.  An existing file is never touched. */
int pn_fwkey_create(const char *prefix, unsigned char pk_out[32], struct pn_err *err)
{
    char pub_path[4096], priv_path[4096];
    unsigned char pk[32], sk[64];
    char pub_b64[PUB_B64_LEN + 1], priv_b64[PRIV_B64_LEN + 1];
    int r = -1;

    if (!prefix || !*prefix)
        return pn_err_set(err, "key prefix is empty");
    if (snprintf(pub_path, sizeof(pub_path), "%s.pub", prefix) >= (int)sizeof(pub_path) ||
        snprintf(priv_path, sizeof(priv_path), "%s.priv", prefix) >= (int)sizeof(priv_path))
        return pn_err_set(err, "%s: path too long", prefix);

    crypto_sign_keypair(pk, sk);
    sodium_bin2base64(pub_b64, sizeof(pub_b64), pk, sizeof(pk), sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(priv_b64, sizeof(priv_b64), sk, sizeof(sk), sodium_base64_VARIANT_ORIGINAL);

    if (pn_file_create(pub_path, pub_b64, PUB_B64_LEN, 0600, err) < 0)
        goto out;
    if (pn_file_create(priv_path, priv_b64, PRIV_B64_LEN, 0600, err) < 0) {
        unlink(pub_path);
        goto out;
    }
    if (pk_out)
        memcpy(pk_out, pk, 32);
    r = 0;
out:
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(priv_b64, sizeof(priv_b64));
    return r;
}
