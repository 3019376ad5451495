/* SPDX-License-Identifier: Apache-2.0 */
/* lib/fwkey: fwup key files, key ids and signatures, checked against real
 * fwup 1.16.0 keys and archives in $PINION_FIXTURES/fwup (EXPECTED.md). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <sodium.h>

#include "check.h"
#include "zipread.h"
#include "fsutil.h"
#include "fwkey.h"

static char fixtures[4096];
static char tmpdir[] = "/tmp/pinion-fwkey-XXXXXX";

static const char *fx(const char *name)
{
    return check_path(fixtures, "fwup", name);
}

static const char *tmp(const char *name)
{
    return check_path(tmpdir, name, NULL);
}

static void put(const char *name, const void *data, size_t len)
{
    FILE *f = fopen(tmp(name), "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", tmp(name));
        exit(2);
    }
}

static void put_str(const char *name, const char *s)
{
    put(name, s, strlen(s));
}

static int err_has(const struct pn_err *err, const char *a, const char *b)
{
    int ok = strstr(err->msg, a) != NULL && (!b || strstr(err->msg, b) != NULL) &&
             strchr(err->msg, '\n') == NULL;
    if (!ok)
        fprintf(stderr, "  unexpected message: %s\n", err->msg);
    return ok;
}

static unsigned char prod_pk[32], prod_sk[64], debug_pk[32], debug_sk[64];

static void test_fixture_keys(void)
{
    struct pn_err err = {0};
    char id[17];

    CHECK(pn_fwkey_load_pub(fx("prod.pub"), prod_pk, &err) == 0);
    CHECK(pn_fwkey_load_priv(fx("prod.priv"), prod_sk, &err) == 0);
    CHECK(pn_fwkey_load_pub(fx("debug.pub"), debug_pk, &err) == 0);
    CHECK(pn_fwkey_load_priv(fx("debug.priv"), debug_sk, &err) == 0);

    /* The private key derives exactly the public key of the .pub file. */
    unsigned char pk[32];
    crypto_sign_ed25519_sk_to_pk(pk, prod_sk);
    CHECK(memcmp(pk, prod_pk, 32) == 0);
    unsigned char seed_pk[32], seed_sk[64];
    crypto_sign_seed_keypair(seed_pk, seed_sk, prod_sk);
    CHECK(memcmp(seed_pk, prod_pk, 32) == 0);
    CHECK(memcmp(seed_sk, prod_sk, 64) == 0);
    crypto_sign_ed25519_sk_to_pk(pk, debug_sk);
    CHECK(memcmp(pk, debug_pk, 32) == 0);
    CHECK(memcmp(prod_pk, debug_pk, 32) != 0);

    /* Computed independently: sha256(base64decode(X.pub))[:16]. */
    pn_fwkey_id(prod_pk, id);
    CHECK_STREQ(id, "ca051a500a499d2a");
    pn_fwkey_id(debug_pk, id);
    CHECK_STREQ(id, "832a3ea851983269");
}

/* Signing meta.conf with the archive's key must reproduce fwup's signature
 * byte for byte (Ed25519 is deterministic). */
static void test_archive(const char *file, const unsigned char *sk, const unsigned char *pk,
                         const unsigned char *other_pk)
{
    size_t mlen = 0, slen = 0;
    unsigned char *meta = zip_entry(fx(file), "meta.conf", &mlen);
    unsigned char *sig = zip_entry(fx(file), "meta.conf.ed25519", &slen);
    unsigned char mine[64];

    CHECK(meta != NULL && mlen >= 10);
    CHECK(sig != NULL && slen == 64);
    if (!meta || !sig || slen != 64) {
        fprintf(stderr, "  in %s\n", file);
        free(meta);
        free(sig);
        return;
    }
    CHECK(pn_fwkey_sign(sk, meta, mlen, mine) == 0);
    CHECK(memcmp(mine, sig, 64) == 0);
    CHECK(pn_fwkey_verify(pk, meta, mlen, sig) == 0);
    CHECK(pn_fwkey_verify(other_pk, meta, mlen, sig) != 0);

    meta[mlen / 2] ^= 0x01;
    CHECK(pn_fwkey_verify(pk, meta, mlen, sig) != 0);
    meta[mlen / 2] ^= 0x01;
    CHECK(pn_fwkey_verify(pk, meta, mlen - 1, sig) != 0);
    sig[10] ^= 0x80;
    CHECK(pn_fwkey_verify(pk, meta, mlen, sig) != 0);
    sig[10] ^= 0x80;
    CHECK(pn_fwkey_verify(pk, meta, mlen, sig) == 0);
    free(meta);
    free(sig);
}

static void test_archives(void)
{
    test_archive("gateway-2.0.0-prod.fw", prod_sk, prod_pk, debug_pk);
    test_archive("sensor-1.0.0-prod.fw", prod_sk, prod_pk, debug_pk);
    test_archive("sensor-1.1.0-prod.fw", prod_sk, prod_pk, debug_pk);
    test_archive("sensor-1.2.0-big-prod.fw", prod_sk, prod_pk, debug_pk);
    /* Only data/ was changed: meta.conf's signature is still good. */
    test_archive("sensor-1.1.0-tampered-data.fw", prod_sk, prod_pk, debug_pk);
    test_archive("sensor-1.1.0-debug.fw", debug_sk, debug_pk, prod_pk);

    /* meta.conf was edited after signing: no key verifies it. */
    size_t mlen = 0, slen = 0;
    unsigned char *meta = zip_entry(fx("sensor-1.1.0-tampered-meta.fw"), "meta.conf", &mlen);
    unsigned char *sig = zip_entry(fx("sensor-1.1.0-tampered-meta.fw"), "meta.conf.ed25519", &slen);
    CHECK(meta && sig && slen == 64);
    if (meta && sig && slen == 64) {
        CHECK(pn_fwkey_verify(prod_pk, meta, mlen, sig) != 0);
        CHECK(pn_fwkey_verify(debug_pk, meta, mlen, sig) != 0);
    }
    free(meta);
    free(sig);

    /* The unsigned archive has no signature entry at all. */
    meta = zip_entry(fx("sensor-1.0.0-unsigned.fw"), "meta.conf", &mlen);
    sig = zip_entry(fx("sensor-1.0.0-unsigned.fw"), "meta.conf.ed25519", &slen);
    CHECK(meta != NULL);
    CHECK(sig == NULL);
    free(meta);
    free(sig);
}

static void test_formats(void)
{
    struct pn_err err = {0};
    unsigned char pk[32], sk[64];
    char b64[100];

    /* Raw bytes. */
    put("raw.pub", prod_pk, 32);
    put("raw.priv", prod_sk, 64);
    memset(pk, 0, 32);
    memset(sk, 0, 64);
    CHECK(pn_fwkey_load_pub(tmp("raw.pub"), pk, &err) == 0);
    CHECK(memcmp(pk, prod_pk, 32) == 0);
    CHECK(pn_fwkey_load_priv(tmp("raw.priv"), sk, &err) == 0);
    CHECK(memcmp(sk, prod_sk, 64) == 0);

    /* Base64 with a trailing newline, CRLF, surrounding blanks. */
    sodium_bin2base64(b64, sizeof(b64), prod_pk, 32, sodium_base64_VARIANT_ORIGINAL);
    char text[200];
    snprintf(text, sizeof(text), "%s\n", b64);
    put_str("nl.pub", text);
    memset(pk, 0, 32);
    CHECK(pn_fwkey_load_pub(tmp("nl.pub"), pk, &err) == 0);
    CHECK(memcmp(pk, prod_pk, 32) == 0);
    snprintf(text, sizeof(text), "  %s\r\n\t\n", b64);
    put_str("ws.pub", text);
    memset(pk, 0, 32);
    CHECK(pn_fwkey_load_pub(tmp("ws.pub"), pk, &err) == 0);
    CHECK(memcmp(pk, prod_pk, 32) == 0);
    sodium_bin2base64(b64, sizeof(b64), debug_sk, 64, sodium_base64_VARIANT_ORIGINAL);
    snprintf(text, sizeof(text), "%s\r\n", b64);
    put_str("crlf.priv", text);
    memset(sk, 0, 64);
    CHECK(pn_fwkey_load_priv(tmp("crlf.priv"), sk, &err) == 0);
    CHECK(memcmp(sk, debug_sk, 64) == 0);
}

static void refuse_pub(const char *name, const char *what)
{
    struct pn_err err = {0};
    unsigned char pk[32];
    CHECK(pn_fwkey_load_pub(tmp(name), pk, &err) < 0);
    CHECK(err_has(&err, tmp(name), what));
}

static void refuse_priv(const char *name, const char *what)
{
    struct pn_err err = {0};
    unsigned char sk[64];
    CHECK(pn_fwkey_load_priv(tmp(name), sk, &err) < 0);
    CHECK(err_has(&err, tmp(name), what));
}

static void test_refusals(void)
{
    struct pn_err err = {0};
    unsigned char pk[32], sk[64], buf[80];
    char b64[200], path[4300];
    const char *not_pub = "not an Ed25519 public key (expected 32 bytes, base64 or raw)";
    const char *not_priv = "not an Ed25519 private key (expected 64 bytes, base64 or raw)";

    /* The exact sentence, naming the file. */
    put_str("garbage.pub", "hello, world\n");
    CHECK(pn_fwkey_load_pub(tmp("garbage.pub"), pk, &err) < 0);
    snprintf(path, sizeof(path), "%s: %s", tmp("garbage.pub"), not_pub);
    CHECK_STREQ(err.msg, path);

    put_str("garbage.priv", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n");
    refuse_priv("garbage.priv", not_priv);
    put("empty.pub", "", 0);
    refuse_pub("empty.pub", not_pub);
    put("empty.priv", "", 0);
    refuse_priv("empty.priv", not_priv);

    /* Truncated base64 (padding or characters missing). */
    sodium_bin2base64(b64, sizeof(b64), prod_pk, 32, sodium_base64_VARIANT_ORIGINAL);
    put("trunc.pub", b64, 43);
    refuse_pub("trunc.pub", not_pub);
    put("trunc2.pub", b64, 40);
    refuse_pub("trunc2.pub", not_pub);
    sodium_bin2base64(b64, sizeof(b64), prod_sk, 64, sodium_base64_VARIANT_ORIGINAL);
    put("trunc.priv", b64, 80);
    refuse_priv("trunc.priv", not_priv);
    put("trunc2.priv", b64, 87);
    refuse_priv("trunc2.priv", not_priv);

    /* Wrong lengths, base64 and raw. */
    memset(buf, 0x42, sizeof(buf));
    sodium_bin2base64(b64, sizeof(b64), buf, 31, sodium_base64_VARIANT_ORIGINAL);
    put_str("b31.pub", b64);
    refuse_pub("b31.pub", not_pub);
    sodium_bin2base64(b64, sizeof(b64), buf, 33, sodium_base64_VARIANT_ORIGINAL);
    put_str("b33.pub", b64);
    refuse_pub("b33.pub", not_pub);
    sodium_bin2base64(b64, sizeof(b64), buf, 63, sodium_base64_VARIANT_ORIGINAL);
    put_str("b63.priv", b64);
    refuse_priv("b63.priv", not_priv);
    sodium_bin2base64(b64, sizeof(b64), buf, 65, sodium_base64_VARIANT_ORIGINAL);
    put_str("b65.priv", b64);
    refuse_priv("b65.priv", not_priv);
    put("r31.pub", prod_pk, 31);
    refuse_pub("r31.pub", not_pub);
    put("r33.pub", buf, 33);
    refuse_pub("r33.pub", not_pub);
    put("r63.priv", prod_sk, 63);
    refuse_priv("r63.priv", not_priv);
    put("r65.priv", buf, 65);
    refuse_priv("r65.priv", not_priv);

    /* URL-safe alphabet is not fwup's. */
    sodium_bin2base64(b64, sizeof(b64), prod_pk, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    put_str("url.pub", b64);
    if (strpbrk(b64, "-_"))
        refuse_pub("url.pub", not_pub);

    /* The wrong half of a pair. */
    CHECK(pn_fwkey_load_pub(fx("prod.priv"), pk, &err) < 0);
    CHECK(err_has(&err, "prod.priv: looks like a private key", ".pub"));
    put("raw64.pub", prod_sk, 64);
    refuse_pub("raw64.pub", "looks like a private key");
    CHECK(pn_fwkey_load_priv(fx("prod.pub"), sk, &err) < 0);
    CHECK(err_has(&err, "prod.pub: looks like a public key", ".priv"));

    /* Not a point of the curve's main subgroup (the identity). */
    memset(buf, 0, 32);
    buf[0] = 1;
    put("identity.pub", buf, 32);
    refuse_pub("identity.pub", "not a valid Ed25519 public key");

    /* Inconsistent: the public half altered, or replaced by another key's. */
    memcpy(buf, prod_sk, 64);
    buf[40] ^= 0x01;
    sodium_bin2base64(b64, sizeof(b64), buf, 64, sodium_base64_VARIANT_ORIGINAL);
    put_str("altered.priv", b64);
    refuse_priv("altered.priv", "inconsistent");
    memcpy(buf + 32, debug_pk, 32);
    put("mixed.priv", buf, 64);
    refuse_priv("mixed.priv", "inconsistent");

    /* Missing and unreadable files. */
    CHECK(pn_fwkey_load_pub(tmp("missing.pub"), pk, &err) < 0);
    CHECK(err_has(&err, tmp("missing.pub"), "No such file"));
    CHECK(pn_fwkey_load_priv(tmpdir, sk, &err) < 0);
    CHECK(err_has(&err, tmpdir, NULL));
    char big[5000];
    memset(big, 'A', sizeof(big));
    put("big.pub", big, sizeof(big));
    CHECK(pn_fwkey_load_pub(tmp("big.pub"), pk, &err) < 0);
    CHECK(err_has(&err, tmp("big.pub"), NULL));
}

static int file_is(const char *path, size_t len, mode_t mode)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    return (size_t)st.st_size == len && (st.st_mode & 07777) == mode;
}

static void test_create(void)
{
    struct pn_err err = {0};
    unsigned char pk[32], pk2[32], sk[64], sig[64];
    size_t len;

    umask(022);
    CHECK(pn_fwkey_create(tmp("new"), pk, &err) == 0);
    CHECK(file_is(tmp("new.pub"), 44, 0600));
    CHECK(file_is(tmp("new.priv"), 88, 0600));
    CHECK(pn_fwkey_load_pub(tmp("new.pub"), pk2, &err) == 0);
    CHECK(memcmp(pk, pk2, 32) == 0);
    CHECK(pn_fwkey_load_priv(tmp("new.priv"), sk, &err) == 0);
    CHECK(memcmp(sk + 32, pk, 32) == 0);
    CHECK(pn_fwkey_sign(sk, "abc", 3, sig) == 0);
    CHECK(pn_fwkey_verify(pk, "abc", 3, sig) == 0);
    CHECK(pn_fwkey_verify(prod_pk, "abc", 3, sig) != 0);

    /* The files are plain base64 without a newline, like fwup -g writes. */
    unsigned char *text = pn_file_read(tmp("new.pub"), 100, &len, &err);
    CHECK(text && len == 44 && text[43] == '=' && !strchr((char *)text, '\n'));
    free(text);
    text = pn_file_read(tmp("new.priv"), 100, &len, &err);
    CHECK(text && len == 88 && text[86] == '=' && text[87] == '=');
    free(text);

    /* Never overwrites: both exist. */
    CHECK(pn_fwkey_create(tmp("new"), NULL, &err) < 0);
    CHECK(err_has(&err, tmp("new.pub"), "already exists"));
    CHECK(pn_fwkey_load_pub(tmp("new.pub"), pk2, &err) == 0);
    CHECK(memcmp(pk, pk2, 32) == 0);
    unsigned char sk2[64];
    CHECK(pn_fwkey_load_priv(tmp("new.priv"), sk2, &err) == 0);
    CHECK(memcmp(sk, sk2, 64) == 0);

    /* Only .priv exists: refused, it is kept, and no .pub is left behind. */
    put_str("half.priv", "keep me");
    CHECK(pn_fwkey_create(tmp("half"), NULL, &err) < 0);
    CHECK(err_has(&err, tmp("half.priv"), "already exists"));
    CHECK(!pn_file_exists(tmp("half.pub")));
    text = pn_file_read(tmp("half.priv"), 100, &len, &err);
    CHECK(text && len == 7 && memcmp(text, "keep me", 7) == 0);
    free(text);

    /* Only .pub exists: refused, kept, and no .priv is created. */
    put_str("other.pub", "keep me too");
    CHECK(pn_fwkey_create(tmp("other"), NULL, &err) < 0);
    CHECK(err_has(&err, tmp("other.pub"), "already exists"));
    CHECK(!pn_file_exists(tmp("other.priv")));
    text = pn_file_read(tmp("other.pub"), 100, &len, &err);
    CHECK(text && len == 11);
    free(text);

    /* A directory that does not exist. */
    CHECK(pn_fwkey_create(tmp("nodir/key"), NULL, &err) < 0);
    CHECK(err_has(&err, tmp("nodir/key.pub"), NULL));
    CHECK(!pn_file_exists(tmp("nodir")));

    /* Two keys are different keys. */
    CHECK(pn_fwkey_create(tmp("second"), pk2, &err) == 0);
    CHECK(memcmp(pk, pk2, 32) != 0);
    sodium_memzero(sk, sizeof(sk));
    sodium_memzero(sk2, sizeof(sk2));
}

static void cleanup(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlink(tmp(de->d_name));
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

int main(void)
{
    const char *f = getenv("PINION_FIXTURES");
    if (sodium_init() < 0) {
        fprintf(stderr, "libsodium failed to initialise\n");
        return 2;
    }
    snprintf(fixtures, sizeof(fixtures), "%s", f ? f : "tests/fixtures");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_fixture_keys();
    test_archives();
    test_formats();
    test_refusals();
    test_create();
    cleanup();
    sodium_memzero(prod_sk, sizeof(prod_sk));
    sodium_memzero(debug_sk, sizeof(debug_sk));
    return check_done("test_fwkey");
}
