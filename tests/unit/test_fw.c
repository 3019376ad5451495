/* SPDX-License-Identifier: Apache-2.0 */
/* lib/fw: fwup archives.  Every archive of $PINION_FIXTURES/fwup (made by
 * fwup 1.16.0) must get fwup's own verdict and metadata as EXPECTED.md
 * records them; hostile archives built here must each be refused with
 * their own reason; pn_fw_pack must write what pn_fw_verify accepts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <sodium.h>

#include "check.h"
#include "zipread.h"
#include "fsutil.h"
#include "fw.h"
#include "fwkey.h"

static char fixtures[4096];
static char tmpdir[] = "/tmp/pinion-fw-XXXXXX";
static struct pn_fw_key prod, debug;
static unsigned char prod_sk[64], debug_sk[64];

static const char *fx(const char *name)
{
    return check_path(fixtures, "fwup", name);
}

static const char *tmp(const char *name)
{
    return check_path(tmpdir, name, NULL);
}

static void die(const char *what)
{
    fprintf(stderr, "test_fw: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void put(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
        die(path);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    struct pn_err err;
    unsigned char *b = pn_file_read(path, 64u << 20, len, &err);
    if (!b) {
        fprintf(stderr, "test_fw: %s\n", err.msg);
        exit(2);
    }
    return b;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int verify(const char *path, const struct pn_fw_key *keys, size_t n, struct pn_fw_info *info,
                  struct pn_err *err)
{
    memset(err, 0, sizeof(*err));
    return pn_fw_verify_path(path, keys, n, info, err);
}

/* Refused for `why`, with a one-line message containing `text`. */
static void expect_refusal(const char *path, const struct pn_fw_key *keys, size_t n,
                           enum pn_fw_reason why, const char *text)
{
    struct pn_fw_info info;
    struct pn_err err;
    int rc = verify(path, keys, n, &info, &err);
    CHECK(rc == -1);
    CHECK(info.reason == why);
    CHECK(strstr(err.msg, text) != NULL);
    CHECK(strchr(err.msg, '\n') == NULL);
    CHECK(info.meta_conf == NULL && info.meta.product == NULL);
    if (rc != -1 || info.reason != why || !strstr(err.msg, text))
        fprintf(stderr, "  %s: rc %d reason %d (want %d): %s\n", path, rc, info.reason, why,
                err.msg);
    pn_fw_info_free(&info);
}

static void expect_ok(const char *path, const struct pn_fw_key *keys, size_t n,
                      struct pn_fw_info *info)
{
    struct pn_err err;
    int rc = verify(path, keys, n, info, &err);
    CHECK(rc == 0);
    CHECK(info->reason == PN_FW_OK);
    if (rc != 0)
        fprintf(stderr, "  %s refused: %s\n", path, err.msg);
}

/* ------------------------------------------------------------------ fixtures */

struct expected {
    char name[128];
    char verdict[2][256]; /* fwup -V with prod.pub, with debug.pub */
    char meta[16][2][256];
    int nmeta;
};

/* Reads EXPECTED.md: "## NAME" sections holding fwup's output. */
static int load_expected(struct expected *ex, int max)
{
    size_t len;
    char *text = (char *)slurp(fx("EXPECTED.md"), &len);
    int n = -1, want = -1, in_meta = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "## ", 3) == 0) {
            if (++n >= max)
                break;
            memset(&ex[n], 0, sizeof(ex[n]));
            snprintf(ex[n].name, sizeof(ex[n].name), "%s", line + 3);
            want = -1;
            in_meta = 0;
        } else if (n < 0) {
            continue;
        } else if (strncmp(line, "$ fwup -V -p prod.pub", 21) == 0) {
            want = 0, in_meta = 0;
        } else if (strncmp(line, "$ fwup -V -p debug.pub", 22) == 0) {
            want = 1, in_meta = 0;
        } else if (strncmp(line, "$ fwup -m", 9) == 0) {
            want = -1, in_meta = 1;
        } else if (strncmp(line, "```", 3) == 0) {
            want = -1, in_meta = 0;
        } else if (want >= 0) {
            snprintf(ex[n].verdict[want], sizeof(ex[n].verdict[want]), "%s", line);
            want = -1;
        } else if (in_meta && strchr(line, '=') && ex[n].nmeta < 16) {
            char *eq = strchr(line, '=');
            *eq = '\0';
            char *v = eq + 1;
            size_t vl = strlen(v);
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                v[vl - 1] = '\0';
                v++;
            }
            snprintf(ex[n].meta[ex[n].nmeta][0], 256, "%s", line);
            snprintf(ex[n].meta[ex[n].nmeta][1], 256, "%s", v);
            ex[n].nmeta++;
        }
    }
    free(text);
    return n + 1;
}

static const char *meta_field(const struct pn_fw_meta *m, const char *key)
{
    if (strcmp(key, "meta-product") == 0)
        return m->product;
    if (strcmp(key, "meta-version") == 0)
        return m->version;
    if (strcmp(key, "meta-description") == 0)
        return m->description;
    if (strcmp(key, "meta-author") == 0)
        return m->author;
    if (strcmp(key, "meta-platform") == 0)
        return m->platform;
    if (strcmp(key, "meta-architecture") == 0)
        return m->architecture;
    if (strcmp(key, "meta-vcs-identifier") == 0)
        return m->vcs_identifier;
    if (strcmp(key, "meta-misc") == 0)
        return m->misc;
    if (strcmp(key, "meta-uuid") == 0)
        return m->uuid;
    return NULL; /* meta-creation-date, meta-nickname: not Pinion's */
}

static void check_meta(const struct expected *ex, const struct pn_fw_meta *m)
{
    int compared = 0;
    for (int i = 0; i < ex->nmeta; i++) {
        const char *got = meta_field(m, ex->meta[i][0]);
        if (!got)
            continue;
        compared++;
        CHECK_STREQ(got, ex->meta[i][1]);
    }
    CHECK(compared == 9); /* the eight meta-* fields and the uuid */
}

/* fwup's verdict, as the reason pn_fw_verify must give. */
static void check_verdict(const char *name, const char *fwup, const struct pn_fw_key *key,
                          const struct expected *ex)
{
    struct pn_fw_info info;
    struct pn_err err;
    const char *mismatch = strstr(fwup, "digest mismatch for ");
    int rc = verify(fx(name), key, 1, &info, &err);
    if (strcmp(fwup, "Valid archive with a good signature") == 0) {
        CHECK(rc == 0);
        if (rc != 0) {
            fprintf(stderr, "  %s with %s: refused: %s\n", name, key->id, err.msg);
            return;
        }
        CHECK(info.key_index == 0);
        CHECK_STREQ(info.key_id, key->id);
        check_meta(ex, &info.meta);
        /* Size and SHA-256 of the file, computed independently. */
        size_t len;
        unsigned char *all = slurp(fx(name), &len), h[32];
        char hx[65];
        crypto_hash_sha256(h, all, len);
        sodium_bin2hex(hx, sizeof(hx), h, 32);
        CHECK(info.size == len);
        CHECK_STREQ(info.sha256_hex, hx);
        /* meta.conf and its signature, exactly as stored in the zip. */
        size_t mlen = 0, slen = 0;
        unsigned char *mc = zip_entry(fx(name), "meta.conf", &mlen);
        unsigned char *sig = zip_entry(fx(name), "meta.conf.ed25519", &slen);
        CHECK(mc && info.meta_conf_len == mlen && memcmp(mc, info.meta_conf, mlen) == 0);
        CHECK(sig && slen == 64 && memcmp(sig, info.meta_conf_sig, 64) == 0);
        free(all);
        free(mc);
        free(sig);
        pn_fw_info_free(&info);
        return;
    }
    CHECK(rc == -1);
    if (strstr(fwup, "Expecting signed firmware archive")) {
        CHECK(info.reason == PN_FW_UNSIGNED);
        CHECK(strstr(err.msg, "unsigned") != NULL);
    } else if (strstr(fwup, "fails digital signature verification")) {
        CHECK(info.reason == PN_FW_UNKNOWN_KEY);
        CHECK(strstr(err.msg, "does not verify with any registered key") != NULL);
    } else if (mismatch) {
        CHECK(info.reason == PN_FW_HASH);
        CHECK(strstr(err.msg, mismatch + strlen("digest mismatch for ")) != NULL);
        CHECK(strstr(err.msg, "BLAKE2b-256") != NULL);
    } else {
        fprintf(stderr, "  unknown fwup verdict for %s: %s\n", name, fwup);
        CHECK(0);
    }
    if (rc == 0)
        fprintf(stderr, "  %s with %s: accepted, fwup says: %s\n", name, key->id, fwup);
}

static void test_fixtures(void)
{
    static struct expected ex[32];
    int n = load_expected(ex, 32);
    CHECK(n >= 8);

    /* Every archive in the directory has fwup's verdict recorded. */
    DIR *d = opendir(fx(""));
    struct dirent *de;
    int archives = 0;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 3, ".fw") != 0)
            continue;
        archives++;
        int found = 0;
        for (int i = 0; i < n; i++)
            found |= strcmp(ex[i].name, de->d_name) == 0;
        CHECK(found);
    }
    if (d)
        closedir(d);
    CHECK(archives == n);

    for (int i = 0; i < n; i++) {
        const char *name = ex[i].name;
        CHECK(ex[i].verdict[0][0] && ex[i].verdict[1][0]);
        check_verdict(name, ex[i].verdict[0], &prod, &ex[i]);
        check_verdict(name, ex[i].verdict[1], &debug, &ex[i]);

        /* fwup -m: metadata of every archive, accepted or not. */
        size_t mlen = 0;
        unsigned char *mc = zip_entry(fx(name), "meta.conf", &mlen);
        struct pn_fw_meta m;
        struct pn_err err;
        CHECK(mc != NULL);
        CHECK(mc && pn_fw_meta_parse(mc, mlen, &m, &err) == 0);
        if (mc) {
            check_meta(&ex[i], &m);
            CHECK(m.nresources == 2);
            pn_fw_meta_free(&m);
        }
        free(mc);

        /* Both keys registered: the right one is reported. */
        struct pn_fw_key both[2] = {debug, prod};
        struct pn_fw_info info;
        if (verify(fx(name), both, 2, &info, &err) == 0) {
            int by_prod = strcmp(ex[i].verdict[0], "Valid archive with a good signature") == 0;
            CHECK(info.key_index == (by_prod ? 1 : 0));
            CHECK_STREQ(info.key_id, by_prod ? prod.id : debug.id);
            pn_fw_info_free(&info);
        }
    }

    /* The example in the issue, spelled out. */
    size_t mlen = 0;
    unsigned char *mc = zip_entry(fx("sensor-1.1.0-prod.fw"), "meta.conf", &mlen);
    char uuid[PN_FW_UUID_LEN + 1];
    pn_fw_uuid(mc, mlen, uuid);
    CHECK_STREQ(uuid, "bce7acb5-1455-5a33-846a-dbffe3c4ca76");
    free(mc);
}

/* ------------------------------------------------------------------ hostile archives */

struct ent {
    const char *name;
    const void *data;
    size_t len;
    int store;      /* stored instead of deflated */
    uint64_t zeros; /* when data is NULL: this many zero bytes */
};

static void build(const char *path, const struct ent *e, size_t n)
{
    struct archive *a = archive_write_new();
    static unsigned char zero[1 << 20];
    archive_write_set_format_zip(a);
    archive_write_set_format_option(a, "zip", "compression-level", "1");
    if (archive_write_open_filename(a, path) != ARCHIVE_OK)
        die(path);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        uint64_t size = e[i].data ? e[i].len : e[i].zeros;
        archive_entry_set_pathname(ae, e[i].name);
        archive_entry_set_size(ae, (la_int64_t)size);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, 0644);
        if (e[i].store)
            archive_write_zip_set_compression_store(a);
        else
            archive_write_zip_set_compression_deflate(a);
        if (archive_write_header(a, ae) != ARCHIVE_OK) {
            fprintf(stderr, "test_fw: %s: %s\n", e[i].name, archive_error_string(a));
            exit(2);
        }
        if (e[i].data) {
            archive_write_data(a, e[i].data, e[i].len);
        } else {
            for (uint64_t done = 0; done < size;) {
                size_t k = size - done < sizeof(zero) ? (size_t)(size - done) : sizeof(zero);
                archive_write_data(a, zero, k);
                done += k;
            }
        }
        archive_entry_free(ae);
    }
    archive_write_close(a);
    archive_write_free(a);
}

static void hexof(const void *data, size_t len, char out[65])
{
    unsigned char h[32];
    crypto_generichash(h, 32, data, len, NULL, 0);
    sodium_bin2hex(out, 65, h, 32);
}

static void sha256of(const void *data, size_t len, char out[65])
{
    unsigned char h[32];
    crypto_hash_sha256(h, data, len);
    sodium_bin2hex(out, 65, h, 32);
}

/* meta.conf declaring one resource of `length` bytes with the BLAKE2b-256
 * of data[0..len).  Each call returns a new string (freed at exit). */
static char *confs[64];
static int nconfs;

static char *conf_for(const char *name, uint64_t length, const void *data, size_t len)
{
    char h[65], *conf = malloc(4096);
    hexof(data, len, h);
    snprintf(conf, 4096,
             "meta-product=sensor\nmeta-version=1.0.0\nmeta-platform=rpi4\n"
             "meta-architecture=aarch64\nfile-resource \"%s\" {\nlength=%llu\nblake2b-256=%s\n}\n",
             name, (unsigned long long)length, h);
    if (nconfs < 64)
        confs[nconfs++] = conf;
    return conf;
}

static unsigned char *sign(const char *conf)
{
    static unsigned char sig[2][64];
    static int slot;
    slot ^= 1;
    pn_fwkey_sign(prod_sk, conf, strlen(conf), sig[slot]);
    return sig[slot];
}

#define SIGNED(conf)                                                                               \
    {"meta.conf.ed25519", sign(conf), 64, 1, 0},                                                   \
    {                                                                                              \
        "meta.conf", conf, strlen(conf), 0, 0                                                      \
    }

static void test_hostile(void)
{
    const char *payload = "hello, fleet";
    size_t plen = strlen(payload);
    char *conf = conf_for("image", plen, payload, plen);
    struct pn_fw_info info;
    struct pn_err err;

    /* The well-formed baseline, built the same way, is accepted. */
    struct ent good[] = {SIGNED(conf), {"data/image", payload, plen, 0, 0}};
    build(tmp("good.fw"), good, 3);
    expect_ok(tmp("good.fw"), &prod, 1, &info);
    CHECK_STREQ(info.meta.product, "sensor");
    CHECK(info.data_bytes == plen);
    pn_fw_info_free(&info);
    struct ent stored[] = {SIGNED(conf), {"data/image", payload, plen, 1, 0}};
    build(tmp("stored.fw"), stored, 3);
    expect_ok(tmp("stored.fw"), &prod, 1, &info);
    pn_fw_info_free(&info);

    /* A decompression bomb: 256 MiB of zeros declared as 10 bytes.  It must
     * be refused after at most one of libarchive's blocks, not inflated. */
    char *bconf = conf_for("image", 10, "\0\0\0\0\0\0\0\0\0\0", 10);
    struct ent bomb[] = {SIGNED(bconf), {"data/image", NULL, 0, 0, 256u << 20}};
    build(tmp("bomb.fw"), bomb, 3);
    struct stat st;
    CHECK(stat(tmp("bomb.fw"), &st) == 0 && st.st_size < (2 << 20));
    double t0 = now();
    expect_refusal(tmp("bomb.fw"), &prod, 1, PN_FW_TOO_LARGE,
                   "resource image is larger than declared (10 bytes)");
    double dt = now() - t0;
    CHECK(verify(tmp("bomb.fw"), &prod, 1, &info, &err) == -1);
    CHECK(info.data_bytes <= (1u << 20));
    CHECK(dt < 2.0);
    printf("bomb: refused in %.3f s after inflating %llu bytes\n", dt,
           (unsigned long long)info.data_bytes);

    /* Longer than declared by a little, and shorter. */
    char *lconf = conf_for("image", plen - 1, payload, plen - 1);
    struct ent longer[] = {SIGNED(lconf), {"data/image", payload, plen, 0, 0}};
    build(tmp("longer.fw"), longer, 3);
    expect_refusal(tmp("longer.fw"), &prod, 1, PN_FW_TOO_LARGE, "larger than declared");
    char *sconf = conf_for("image", plen + 5, payload, plen);
    struct ent shorter[] = {SIGNED(sconf), {"data/image", payload, plen, 0, 0}};
    build(tmp("shorter.fw"), shorter, 3);
    expect_refusal(tmp("shorter.fw"), &prod, 1, PN_FW_LENGTH,
                   "resource image is 12 bytes, declared 17");

    /* Path tricks.  (libarchive, like fwup reading through it, turns
     * backslashes into slashes; either way these are refused.) */
    const char *unsafe[] = {"data/../../x",   "/etc/passwd",  "data\\..\\..\\x",
                            "..\\evil",       "data/./image", "data//image",
                            "data/ima\x01ge", "../meta.conf", "data/image/.."};
    for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
        struct ent e[] = {SIGNED(conf), {unsafe[i], payload, plen, 0, 0}};
        char name[32];
        snprintf(name, sizeof(name), "unsafe%zu.fw", i);
        build(tmp(name), e, 3);
        expect_refusal(tmp(name), &prod, 1, PN_FW_UNSAFE_NAME, "unsafe entry name");
    }
    char *uconf = conf_for("../../x", plen, payload, plen);
    struct ent udecl[] = {SIGNED(uconf), {"data/image", payload, plen, 0, 0}};
    build(tmp("udecl.fw"), udecl, 3);
    expect_refusal(tmp("udecl.fw"), &prod, 1, PN_FW_META_INVALID, "unsafe name");

    /* Duplicated, missing and undeclared resources. */
    struct ent dup[] = {
        SIGNED(conf), {"data/image", payload, plen, 0, 0}, {"data/image", payload, plen, 0, 0}};
    build(tmp("dup.fw"), dup, 4);
    expect_refusal(tmp("dup.fw"), &prod, 1, PN_FW_DUPLICATE, "resource image appears twice");
    struct ent missing[] = {SIGNED(conf)};
    build(tmp("missing.fw"), missing, 2);
    expect_refusal(tmp("missing.fw"), &prod, 1, PN_FW_MISSING,
                   "resource image is missing from the archive");
    struct ent extra[] = {
        SIGNED(conf), {"data/image", payload, plen, 0, 0}, {"data/extra", payload, plen, 0, 0}};
    build(tmp("extra.fw"), extra, 4);
    expect_refusal(tmp("extra.fw"), &prod, 1, PN_FW_UNDECLARED, "data/extra");
    struct ent outside[] = {
        SIGNED(conf), {"data/image", payload, plen, 0, 0}, {"README", payload, plen, 0, 0}};
    build(tmp("outside.fw"), outside, 4);
    expect_refusal(tmp("outside.fw"), &prod, 1, PN_FW_UNDECLARED, "unexpected entry 'README'");

    /* Order. */
    struct ent late_sig[] = {{"meta.conf", conf, strlen(conf), 0, 0},
                             {"meta.conf.ed25519", sign(conf), 64, 1, 0},
                             {"data/image", payload, plen, 0, 0}};
    build(tmp("late-sig.fw"), late_sig, 3);
    expect_refusal(tmp("late-sig.fw"), &prod, 1, PN_FW_ORDER, "entry out of order");
    struct ent data_first[] = {{"data/image", payload, plen, 0, 0}, SIGNED(conf)};
    build(tmp("data-first.fw"), data_first, 3);
    expect_refusal(tmp("data-first.fw"), &prod, 1, PN_FW_ORDER, "entry out of order");
    struct ent two_meta[] = {
        SIGNED(conf), {"meta.conf", conf, strlen(conf), 0, 0}, {"data/image", payload, plen, 0, 0}};
    build(tmp("two-meta.fw"), two_meta, 4);
    expect_refusal(tmp("two-meta.fw"), &prod, 1, PN_FW_ORDER, "entry out of order");

    /* meta.conf: 49,999 bytes is fwup's limit, 50,000 is over it. */
    static char big[50001];
    for (size_t size = 49999; size <= 50000; size++) {
        size_t base = strlen(conf);
        memcpy(big, conf, base);
        memset(big + base, '#', size - base - 1);
        big[size - 1] = '\n';
        big[size] = '\0';
        struct ent e[] = {SIGNED(big), {"data/image", payload, plen, 0, 0}};
        build(tmp("bigmeta.fw"), e, 3);
        if (size == 49999) {
            expect_ok(tmp("bigmeta.fw"), &prod, 1, &info);
            CHECK(info.meta_conf_len == 49999);
            pn_fw_info_free(&info);
        } else {
            expect_refusal(tmp("bigmeta.fw"), &prod, 1, PN_FW_META_SIZE, "meta.conf is too large");
        }
    }
    struct ent tiny[] = {SIGNED("a=b\n"), {"data/image", payload, plen, 0, 0}};
    build(tmp("tiny.fw"), tiny, 3);
    expect_refusal(tmp("tiny.fw"), &prod, 1, PN_FW_META_SIZE, "meta.conf is too small");

    /* Signatures. */
    struct ent unsigned_[] = {{"meta.conf", conf, strlen(conf), 0, 0},
                              {"data/image", payload, plen, 0, 0}};
    build(tmp("unsigned.fw"), unsigned_, 2);
    expect_refusal(tmp("unsigned.fw"), &prod, 1, PN_FW_UNSIGNED, "unsigned");
    expect_refusal(tmp("good.fw"), &prod, 0, PN_FW_NO_KEYS, "no firmware keys");
    expect_refusal(tmp("good.fw"), &debug, 1, PN_FW_UNKNOWN_KEY, "any registered key");
    struct ent short_sig[] = {{"meta.conf.ed25519", sign(conf), 63, 1, 0},
                              {"meta.conf", conf, strlen(conf), 0, 0},
                              {"data/image", payload, plen, 0, 0}};
    build(tmp("short-sig.fw"), short_sig, 3);
    expect_refusal(tmp("short-sig.fw"), &prod, 1, PN_FW_BAD_SIGNATURE, "is 63 bytes");
    char altered[4096];
    snprintf(altered, sizeof(altered), "%s", conf);
    altered[strlen("meta-product=se")] = 'x';
    struct ent alt[] = {{"meta.conf.ed25519", sign(conf), 64, 1, 0},
                        {"meta.conf", altered, strlen(altered), 0, 0},
                        {"data/image", payload, plen, 0, 0}};
    build(tmp("altered.fw"), alt, 3);
    expect_refusal(tmp("altered.fw"), &prod, 1, PN_FW_UNKNOWN_KEY, "meta.conf was altered");

    /* Resource hashes: tampered data; the older sha256 form; sparse maps. */
    struct ent tampered[] = {SIGNED(conf), {"data/image", "hello, fleeT", plen, 0, 0}};
    build(tmp("tampered.fw"), tampered, 3);
    expect_refusal(tmp("tampered.fw"), &prod, 1, PN_FW_HASH,
                   "resource image does not match its BLAKE2b-256");
    char oldconf[1024], sh[65];
    sha256of(payload, plen, sh);
    snprintf(oldconf, sizeof(oldconf),
             "meta-product=sensor\nmeta-version=0.9.0\nfile-resource \"image\" {\n"
             "length=%zu\nsha256=%s\n}\n",
             plen, sh);
    struct ent old[] = {SIGNED(oldconf), {"data/image", payload, plen, 0, 0}};
    build(tmp("old.fw"), old, 3);
    expect_ok(tmp("old.fw"), &prod, 1, &info);
    pn_fw_info_free(&info);
    struct ent oldbad[] = {SIGNED(oldconf), {"data/image", "hello, fleeT", plen, 0, 0}};
    build(tmp("oldbad.fw"), oldbad, 3);
    expect_refusal(tmp("oldbad.fw"), &prod, 1, PN_FW_HASH, "does not match its SHA-256");
    char sparse[1024], bh[65];
    hexof(payload, plen, bh);
    snprintf(sparse, sizeof(sparse),
             "meta-product=sensor\nmeta-version=1.0.0\nfile-resource \"image\" {\n"
             "length={5,4096,7,8192}\nblake2b-256=%s\n}\n",
             bh);
    struct ent sp[] = {SIGNED(sparse), {"data/image", payload, plen, 0, 0}};
    build(tmp("sparse.fw"), sp, 3);
    expect_ok(tmp("sparse.fw"), &prod, 1, &info);
    pn_fw_info_free(&info);
    char nohash[512];
    snprintf(nohash, sizeof(nohash),
             "meta-product=sensor\nfile-resource \"image\" {\n"
             "length=%zu\n}\n",
             plen);
    struct ent nh[] = {SIGNED(nohash), {"data/image", payload, plen, 0, 0}};
    build(tmp("nohash.fw"), nh, 3);
    expect_refusal(tmp("nohash.fw"), &prod, 1, PN_FW_META_INVALID, "no blake2b-256");

    /* meta.conf that would read the parsing host's environment, or that
     * does not parse. */
    char envconf[4096];
    snprintf(envconf, sizeof(envconf), "%smeta-author=\"${PINION_DB}\"\n", conf);
    struct ent env[] = {SIGNED(envconf), {"data/image", payload, plen, 0, 0}};
    build(tmp("env.fw"), env, 3);
    expect_refusal(tmp("env.fw"), &prod, 1, PN_FW_META_INVALID, "environment variable");
    char broken[4096];
    snprintf(broken, sizeof(broken), "%smeta-author = = x\n", conf);
    struct ent brk[] = {SIGNED(broken), {"data/image", payload, plen, 0, 0}};
    build(tmp("broken.fw"), brk, 3);
    expect_refusal(tmp("broken.fw"), &prod, 1, PN_FW_META_INVALID, "not valid fwup syntax");
}

/* Truncations anywhere, and files that are not zips at all. */
static void test_truncated(void)
{
    size_t len;
    unsigned char *all = slurp(fx("sensor-1.1.0-prod.fw"), &len);
    size_t cd = 0;
    for (size_t i = 0; i + 4 <= len && !cd; i++)
        if (memcmp(all + i, "PK\001\002", 4) == 0)
            cd = i;
    CHECK(cd > 0);
    size_t cuts[] = {1,    3,       30, 64,      100,      147,      200,    600,
                     2000, cd - 16, cd, cd + 10, len - 22, len - 10, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        struct pn_fw_info info;
        struct pn_err err;
        put(tmp("cut.fw"), all, cuts[i]);
        CHECK(verify(tmp("cut.fw"), &prod, 1, &info, &err) == -1);
        CHECK(info.reason == PN_FW_CORRUPT || info.reason == PN_FW_NOT_ZIP);
        CHECK(strstr(err.msg, "truncated") || strstr(err.msg, "not a zip"));
        if (!(info.reason == PN_FW_CORRUPT || info.reason == PN_FW_NOT_ZIP))
            fprintf(stderr, "  cut at %zu: reason %d: %s\n", cuts[i], info.reason, err.msg);
        pn_fw_info_free(&info);
    }

    /* A central directory entry whose size disagrees with the entry. */
    unsigned char *copy = malloc(len);
    memcpy(copy, all, len);
    /* In the central directory record of data/hello.txt (46-byte fixed part
     * before the name), the uncompressed size is at offset 24. */
    unsigned char *p = memmem(copy + cd, len - cd, "data/hello.txt", 14);
    CHECK(p != NULL);
    if (p) {
        p[24 - 46] ^= 0x01;
        put(tmp("cdsize.fw"), copy, len);
        expect_refusal(tmp("cdsize.fw"), &prod, 1, PN_FW_CORRUPT, "zip");
    }
    free(copy);

    /* Extra bytes between entries, which a streaming reader skips: the
     * central directory no longer points at the entries read. */
    size_t third = 0;
    for (size_t i = 0, seen = 0; i + 4 <= len && !third; i++)
        if (memcmp(all + i, "PK\003\004", 4) == 0 && ++seen == 3)
            third = i;
    CHECK(third > 0);
    unsigned char *gap = malloc(len + 100);
    memcpy(gap, all, third);
    memset(gap + third, 'x', 100);
    memcpy(gap + third + 100, all + third, len - third);
    put(tmp("gap.fw"), gap, len + 100);
    expect_refusal(tmp("gap.fw"), &prod, 1, PN_FW_CORRUPT, "corrupt zip");
    free(gap);

    put(tmp("notzip.fw"), "this is not a zip file at all\n", 30);
    expect_refusal(tmp("notzip.fw"), &prod, 1, PN_FW_NOT_ZIP, "not a zip archive");
    put(tmp("empty.fw"), "", 0);
    expect_refusal(tmp("empty.fw"), &prod, 1, PN_FW_NOT_ZIP, "not a zip archive");
    static const unsigned char gz[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
                                       0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    put(tmp("gz.fw"), gz, sizeof(gz));
    expect_refusal(tmp("gz.fw"), &prod, 1, PN_FW_NOT_ZIP, "not a zip archive");
    /* A zip with nothing in it. */
    static const unsigned char eocd[22] = {'P', 'K', 5, 6};
    put(tmp("emptyzip.fw"), eocd, sizeof(eocd));
    expect_refusal(tmp("emptyzip.fw"), &prod, 1, PN_FW_CORRUPT, "no meta.conf");
    /* Found by tests/fuzz (fuzz_fw): libarchive's message for an entry
     * longer than its header says ends in '\n', which reached the error. */
    expect_refusal(check_path(fixtures, "../fuzz/regressions/fuzz_fw", "zip-size-error-newline.fw"),
                   &prod, 1, PN_FW_CORRUPT, "wrong size");
    struct pn_fw_info info;
    struct pn_err err;
    CHECK(pn_fw_verify_path(tmp("nosuch.fw"), &prod, 1, &info, &err) == -1);
    CHECK(info.reason == PN_FW_IO && strstr(err.msg, "No such file"));
    CHECK(pn_fw_verify_path(tmpdir, &prod, 1, &info, &err) == -1);
    CHECK(info.reason == PN_FW_IO);
    free(all);
}

/* One pass verifies, hashes and copies; the artifact store names the copy
 * by its SHA-256. */
static void test_copy_and_store(void)
{
    struct pn_fw_artifact art;
    struct pn_fw_info info;
    struct pn_err err;
    char store[4200];
    snprintf(store, sizeof(store), "%s/store", tmpdir);
    CHECK(mkdir(store, 0755) == 0);

    CHECK(pn_fw_artifact_open(&art, store, &err) == 0);
    int fd = open(fx("sensor-1.2.0-big-prod.fw"), O_RDONLY);
    CHECK(pn_fw_verify(fd, &prod, 1, art.fd, &info, &err) == 0);
    close(fd);
    CHECK(pn_fw_artifact_publish(&art, info.sha256_hex, &err) == 0);
    char want[4300];
    snprintf(want, sizeof(want), "%s/%s.fw", store, info.sha256_hex);
    CHECK_STREQ(art.path, want);
    size_t a_len, b_len;
    unsigned char *a = slurp(fx("sensor-1.2.0-big-prod.fw"), &a_len);
    unsigned char *b = slurp(want, &b_len);
    CHECK(a_len == b_len && memcmp(a, b, a_len) == 0);
    CHECK(info.size == a_len);
    struct stat st;
    CHECK(stat(want, &st) == 0 && (st.st_mode & 0777) == 0644);
    free(a);
    free(b);
    pn_fw_artifact_keep(&art);
    pn_fw_artifact_discard(&art);
    CHECK(pn_file_exists(want));
    pn_fw_info_free(&info);

    /* A refusal while copying: discard leaves the directory as it was. */
    CHECK(pn_fw_artifact_open(&art, store, &err) == 0);
    fd = open(fx("sensor-1.1.0-tampered-data.fw"), O_RDONLY);
    CHECK(pn_fw_verify(fd, &prod, 1, art.fd, &info, &err) == -1);
    close(fd);
    pn_fw_artifact_discard(&art);
    pn_fw_artifact_discard(&art);
    /* Published, then the caller's transaction fails: discard removes it. */
    CHECK(pn_fw_artifact_open(&art, store, &err) == 0);
    fd = open(fx("gateway-2.0.0-prod.fw"), O_RDONLY);
    CHECK(pn_fw_verify(fd, &prod, 1, art.fd, &info, &err) == 0);
    close(fd);
    CHECK(pn_fw_artifact_publish(&art, info.sha256_hex, &err) == 0);
    pn_fw_artifact_discard(&art);
    pn_fw_info_free(&info);
    int files = 0;
    DIR *d = opendir(store);
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' || strncmp(de->d_name, ".upload", 7) == 0)
            files++;
    closedir(d);
    CHECK(files == 1);

    CHECK(pn_fw_artifact_open(&art, tmp("nosuch-dir"), &err) == -1);
    CHECK(strstr(err.msg, "No such file") != NULL);
    /* The copy must start empty. */
    put(tmp("nonempty"), "x", 1);
    fd = open(fx("gateway-2.0.0-prod.fw"), O_RDONLY);
    int cfd = open(tmp("nonempty"), O_RDWR);
    CHECK(pn_fw_verify(fd, &prod, 1, cfd, &info, &err) == -1 && info.reason == PN_FW_IO);
    close(fd);
    close(cfd);
}

/* ------------------------------------------------------------------ packing */

static void test_pack(void)
{
    struct pn_fw_info info, v;
    struct pn_err err;
    size_t ilen = 3u << 20;
    unsigned char *img = malloc(ilen);
    randombytes_buf(img, ilen);
    put(tmp("image.bin"), img, ilen);

    struct pn_fw_pack_meta m = {"sensor",   "2.1.0-rc.1+build.7",   "rpi4",
                                "aarch64",  "Ada \"the\" Lovelace", "a \\ b $HOME ${HOME} 100%",
                                "0123abcd", "channel=beta"};
    CHECK(pn_fw_pack(prod_sk, &m, tmp("image.bin"), tmp("packed.fw"), &info, &err) == 0);
    CHECK_STREQ(info.key_id, prod.id);
    expect_ok(tmp("packed.fw"), &prod, 1, &v);
    CHECK_STREQ(v.meta.uuid, info.meta.uuid);
    CHECK_STREQ(v.sha256_hex, info.sha256_hex);
    CHECK(v.size == info.size);
    CHECK(v.data_bytes == ilen);
    CHECK_STREQ(v.meta.product, "sensor");
    CHECK_STREQ(v.meta.version, "2.1.0-rc.1+build.7");
    CHECK_STREQ(v.meta.platform, "rpi4");
    CHECK_STREQ(v.meta.architecture, "aarch64");
    CHECK_STREQ(v.meta.author, "Ada \"the\" Lovelace");
    CHECK_STREQ(v.meta.description, "a \\ b $HOME ${HOME} 100%");
    CHECK_STREQ(v.meta.vcs_identifier, "0123abcd");
    CHECK_STREQ(v.meta.misc, "channel=beta");
    CHECK(v.meta.nresources == 1);
    char uuid[PN_FW_UUID_LEN + 1];
    pn_fw_uuid(v.meta_conf, v.meta_conf_len, uuid);
    CHECK_STREQ(uuid, v.meta.uuid);
    CHECK(v.meta.uuid[14] == '5');

    /* Structure: fwup's entries, in fwup's order and compression. */
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    archive_read_support_format_zip_seekable(a);
    CHECK(archive_read_open_filename(a, tmp("packed.fw"), 65536) == ARCHIVE_OK);
    const char *names[] = {"meta.conf.ed25519", "meta.conf", "data/image"};
    int i = 0;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK && i < 3) {
        CHECK_STREQ(archive_entry_pathname(e), names[i]);
        i++;
    }
    CHECK(i == 3);
    archive_read_free(a);
    size_t mlen;
    unsigned char *mc = zip_entry(tmp("packed.fw"), "meta.conf", &mlen);
    char h[65], line[200];
    hexof(img, ilen, h);
    snprintf(line, sizeof(line), "file-resource \"image\" {\nlength=%zu\nblake2b-256=%s\n}\n", ilen,
             h);
    CHECK(mc && memmem(mc, mlen, line, strlen(line)) != NULL);
    CHECK(mc && memmem(mc, mlen, "funlist={2,raw_write,0}", 23) != NULL);
    CHECK(mc && memmem(mc, mlen, "meta-product=sensor\n", 20) == mc);
    free(mc);
    size_t ilen2;
    unsigned char *back = zip_entry(tmp("packed.fw"), "data/image", &ilen2);
    CHECK(back && ilen2 == ilen && memcmp(back, img, ilen) == 0);
    free(back);
    pn_fw_info_free(&v);
    pn_fw_info_free(&info);

    /* Refusals: existing output, bad version, missing fields, control
     * characters, a missing image; none leaves a file behind. */
    CHECK(pn_fw_pack(prod_sk, &m, tmp("image.bin"), tmp("packed.fw"), NULL, &err) == -1);
    CHECK(strstr(err.msg, "already exists") != NULL);
    struct pn_fw_pack_meta bad = m;
    bad.version = "1.0";
    CHECK(pn_fw_pack(prod_sk, &bad, tmp("image.bin"), tmp("p2.fw"), NULL, &err) == -1);
    CHECK(strstr(err.msg, "--version: '1.0' is not a SemVer version") != NULL);
    bad = m;
    bad.platform = NULL;
    CHECK(pn_fw_pack(prod_sk, &bad, tmp("image.bin"), tmp("p2.fw"), NULL, &err) == -1);
    CHECK(strstr(err.msg, "--platform is required") != NULL);
    bad = m;
    bad.description = "two\nlines";
    CHECK(pn_fw_pack(prod_sk, &bad, tmp("image.bin"), tmp("p2.fw"), NULL, &err) == -1);
    CHECK(strstr(err.msg, "control characters") != NULL);
    CHECK(pn_fw_pack(prod_sk, &m, tmp("nosuch.bin"), tmp("p2.fw"), NULL, &err) == -1);
    CHECK(strstr(err.msg, "No such file") != NULL);
    CHECK(!pn_file_exists(tmp("p2.fw")));

    /* An empty image and optional fields left out. */
    put(tmp("empty.bin"), "", 0);
    struct pn_fw_pack_meta min = {"p", "0.0.1", "x", "y", NULL, NULL, NULL, NULL};
    CHECK(pn_fw_pack(debug_sk, &min, tmp("empty.bin"), tmp("empty-image.fw"), NULL, &err) == 0);
    expect_ok(tmp("empty-image.fw"), &debug, 1, &v);
    CHECK_STREQ(v.meta.author, "");
    CHECK(v.data_bytes == 0);
    pn_fw_info_free(&v);
    free(img);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[4300];
    while (d && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int main(void)
{
    struct pn_err err;
    const char *fxdir = getenv("PINION_FIXTURES");
    if (sodium_init() < 0 || !fxdir)
        return fprintf(stderr, "test_fw: needs libsodium and PINION_FIXTURES\n"), 2;
    snprintf(fixtures, sizeof(fixtures), "%s", fxdir);
    if (!mkdtemp(tmpdir))
        die("mkdtemp");
    if (pn_fwkey_load_pub(fx("prod.pub"), prod.pk, &err) < 0 ||
        pn_fwkey_load_pub(fx("debug.pub"), debug.pk, &err) < 0 ||
        pn_fwkey_load_priv(fx("prod.priv"), prod_sk, &err) < 0 ||
        pn_fwkey_load_priv(fx("debug.priv"), debug_sk, &err) < 0) {
        fprintf(stderr, "test_fw: %s\n", err.msg);
        return 2;
    }
    pn_fwkey_id(prod.pk, prod.id);
    pn_fwkey_id(debug.pk, debug.id);

    test_fixtures();
    test_hostile();
    test_truncated();
    test_copy_and_store();
    test_pack();

    rm_rf(tmpdir);
    for (int i = 0; i < nconfs; i++)
        free(confs[i]);
    return check_done("test_fw");
}
