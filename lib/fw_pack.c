/* SPDX-License-Identifier: Apache-2.0 */
/* Packing a signed .fw from an image (fw_pack.h). */
#include "fw_pack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "fsutil.h"
#include "fw_internal.h"
#include "fwkey.h"
#include "semver.h"

struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* A value the way fwup writes meta.conf: bare when it is a plain word,
 * else double-quoted with '"', '\' and '$' escaped (libconfuse would
 * otherwise expand "${...}" from the environment of whoever parses it). */
static void sb_value(struct sbuf *b, const char *v)
{
    int bare = (v[0] >= '0' && v[0] <= '9') || (v[0] >= 'a' && v[0] <= 'z') ||
               (v[0] >= 'A' && v[0] <= 'Z');
    for (const char *p = v; *p && bare; p++)
        bare = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
               *p == '.' || *p == '_' || *p == '-';
    if (bare) {
        sb_str(b, v);
        return;
    }
    sb_add(b, "\"", 1);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '$')
            sb_add(b, "\\", 1);
        sb_add(b, p, 1);
    }
    sb_add(b, "\"", 1);
}

/* Builds meta.conf for one resource "image" of the given length and hash. */
static char *pack_meta_conf(const struct pn_fw_pack_meta *m, uint64_t length, const char *b2hex,
                            size_t *len)
{
    struct sbuf b = {0};
    const char *const keys[] = {"meta-product",        "meta-description", "meta-version",
                                "meta-author",         "meta-platform",    "meta-architecture",
                                "meta-vcs-identifier", "meta-misc"};
    const char *const vals[] = {m->product,  m->description,  m->version,        m->author,
                                m->platform, m->architecture, m->vcs_identifier, m->misc};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (!vals[i] || !vals[i][0])
            continue;
        sb_str(&b, keys[i]);
        sb_add(&b, "=", 1);
        sb_value(&b, vals[i]);
        sb_add(&b, "\n", 1);
    }
    char num[32];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)length);
    sb_str(&b, "file-resource \"image\" {\nlength=");
    sb_str(&b, num);
    sb_str(&b, "\nblake2b-256=");
    sb_str(&b, b2hex);
    sb_str(&b, "\n}\n"
               "task \"upgrade\" {\n"
               "on-resource \"image\" {\n"
               "funlist={2,raw_write,0}\n"
               "}\n"
               "}\n");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.len;
    return b.s;
}

static int check_pack_field(const char *opt, const char *v, int required, struct pn_err *err)
{
    if (!v || !v[0])
        return required ? pn_err_set(err, "%s is required", opt) : 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return pn_err_set(err, "%s must not contain control characters", opt);
    if (strlen(v) > 4096)
        return pn_err_set(err, "%s is longer than 4096 characters", opt);
    return 0;
}

static int same_field(const char *want, const char *got)
{
    return strcmp(want ? want : "", got ? got : "") == 0;
}

struct pack_out {
    int fd;
    EVP_MD_CTX *sha;
    uint64_t size;
};

static la_ssize_t pack_write(struct archive *a, void *arg, const void *buf, size_t n)
{
    struct pack_out *o = arg;
    if (pn_write_all(o->fd, buf, n) < 0) {
        archive_set_error(a, errno, "%s", strerror(errno));
        return -1;
    }
    EVP_DigestUpdate(o->sha, buf, n);
    o->size += n;
    return (la_ssize_t)n;
}

/* BLAKE2b-256 of a whole file, streamed; fills size. */
static int hash_file(int fd, unsigned char out[32], uint64_t *size, unsigned char *buf,
                     size_t bufsize)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = pn_pread_full(fd, buf, bufsize, (off_t)total);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        crypto_generichash_update(&st, buf, (size_t)n);
        total += (uint64_t)n;
    }
    crypto_generichash_final(&st, out, 32);
    *size = total;
    return 0;
}

static struct archive_entry *pack_entry(const char *name, uint64_t size, time_t mtime)
{
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return NULL;
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    if (mtime)
        archive_entry_set_mtime(e, mtime, 0);
    return e;
}

static int pack_add(struct archive *a, const char *name, const void *data, size_t len, time_t mtime,
                    struct pn_err *err)
{
    struct archive_entry *e = pack_entry(name, len, mtime);
    if (!e)
        return pn_err_set(err, "out of memory");
    int ok = archive_write_header(a, e) == ARCHIVE_OK &&
             archive_write_data(a, data, len) == (la_ssize_t)len;
    archive_entry_free(e);
    if (!ok)
        return pn_err_set(err, "writing %s: %s", name, archive_error_string(a));
    return 0;
}

int pn_fw_pack(const unsigned char sk[64], const struct pn_fw_pack_meta *m, const char *image,
               const char *out, struct pn_fw_info *info, struct pn_err *err)
{
    if (info) {
        memset(info, 0, sizeof(*info));
        info->key_index = -1;
    }
    if (check_pack_field("--product", m->product, 1, err) < 0 ||
        check_pack_field("--version", m->version, 1, err) < 0 ||
        check_pack_field("--platform", m->platform, 1, err) < 0 ||
        check_pack_field("--architecture", m->architecture, 1, err) < 0 ||
        check_pack_field("--author", m->author, 0, err) < 0 ||
        check_pack_field("--description", m->description, 0, err) < 0 ||
        check_pack_field("--vcs-identifier", m->vcs_identifier, 0, err) < 0 ||
        check_pack_field("--misc", m->misc, 0, err) < 0)
        return -1;
    struct pn_semver sv;
    if (pn_semver_parse(m->version, &sv, err) < 0)
        return pn_err_prefix(err, "--version");

    int rc = -1, in = -1, outfd = -1, created = 0;
    unsigned char *buf = NULL;
    char *conf = NULL;
    size_t conf_len = 0;
    struct archive *a = NULL;
    struct archive_entry *e = NULL;
    struct pack_out po = {-1, NULL, 0};
    struct pn_fw_meta parsed = {0};
    unsigned char b2[32], b2again[32], sig[64];
    char b2hex[65];
    uint64_t size = 0;
    struct stat st;

    in = open(image, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        pn_err_set(err, "%s: %s", image, strerror(errno));
        goto out;
    }
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
        pn_err_set(err, "%s: not a regular file", image);
        goto out;
    }
    posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (!(buf = malloc(SLOT_BYTES))) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    /* meta.conf, which comes first, carries the image's hash: one pass to
     * hash it, a second to compress it (checked to give the same hash). */
    if (hash_file(in, b2, &size, buf, SLOT_BYTES) < 0) {
        pn_err_set(err, "%s: %s", image, strerror(errno));
        goto out;
    }
    pn_fw_hex(b2, 32, b2hex);
    if (!(conf = pack_meta_conf(m, size, b2hex, &conf_len))) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    if (conf_len > PN_FW_META_CONF_MAX) {
        pn_err_set(err, "the metadata make meta.conf larger than fwup's limit (%d bytes)",
                   PN_FW_META_CONF_MAX);
        goto out;
    }
    /* What fwup (and Pinion) will read back must be exactly what was given. */
    if (pn_fw_meta_parse(conf, conf_len, &parsed, err) < 0) {
        pn_err_prefix(err, "internal error: the generated meta.conf does not parse");
        goto out;
    }
    if (!same_field(m->product, parsed.product) || !same_field(m->version, parsed.version) ||
        !same_field(m->platform, parsed.platform) ||
        !same_field(m->architecture, parsed.architecture) ||
        !same_field(m->author, parsed.author) || !same_field(m->description, parsed.description) ||
        !same_field(m->vcs_identifier, parsed.vcs_identifier) ||
        !same_field(m->misc, parsed.misc) || parsed.nresources != 1) {
        pn_err_set(err, "the metadata cannot be represented faithfully in meta.conf");
        goto out;
    }
    if (pn_fwkey_sign(sk, conf, conf_len, sig) < 0) {
        pn_err_set(err, "signing meta.conf failed");
        goto out;
    }

    outfd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (outfd < 0) {
        if (errno == EEXIST)
            pn_err_set(err, "%s: already exists, refusing to overwrite", out);
        else
            pn_err_set(err, "%s: %s", out, strerror(errno));
        goto out;
    }
    created = 1;
    po.fd = outfd;
    if (!(po.sha = pn_fw_sha256_new()) || !(a = archive_write_new())) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    if (archive_write_set_format_zip(a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open2(a, &po, NULL, pack_write, NULL, NULL) != ARCHIVE_OK) {
        pn_err_set(err, "%s: %s", out, archive_error_string(a));
        goto out;
    }
    time_t now = time(NULL);
    /* fwup's form: the signature stored, everything else deflated; only
     * meta.conf carries a time (fwup's meta-creation-date). */
    if (archive_write_zip_set_compression_store(a) != ARCHIVE_OK ||
        pack_add(a, SIG_ENTRY, sig, sizeof(sig), 0, err) < 0 ||
        archive_write_zip_set_compression_deflate(a) != ARCHIVE_OK ||
        pack_add(a, META_ENTRY, conf, conf_len, now, err) < 0)
        goto out;
    if (!(e = pack_entry("data/image", size, 0)) || archive_write_header(a, e) != ARCHIVE_OK) {
        pn_err_set(err, "writing data/image: %s", archive_error_string(a));
        goto out;
    }
    crypto_generichash_state st2;
    crypto_generichash_init(&st2, NULL, 0, 32);
    uint64_t done = 0;
    while (done < size) {
        size_t want = size - done < SLOT_BYTES ? (size_t)(size - done) : SLOT_BYTES;
        ssize_t n = pn_pread_full(in, buf, want, (off_t)done);
        if (n < 0) {
            pn_err_set(err, "%s: %s", image, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        crypto_generichash_update(&st2, buf, (size_t)n);
        if (archive_write_data(a, buf, (size_t)n) != n) {
            pn_err_set(err, "writing data/image: %s", archive_error_string(a));
            goto out;
        }
        done += (uint64_t)n;
    }
    crypto_generichash_final(&st2, b2again, 32);
    if (done != size || memcmp(b2, b2again, 32) != 0) {
        pn_err_set(err, "%s changed while it was being packed", image);
        goto out;
    }
    if (archive_write_close(a) != ARCHIVE_OK) {
        pn_err_set(err, "%s: %s", out, archive_error_string(a));
        goto out;
    }
    if (fsync(outfd) < 0 || close(outfd) < 0) {
        outfd = -1;
        pn_err_set(err, "%s: %s", out, strerror(errno));
        goto out;
    }
    outfd = -1;
    if (info) {
        info->reason = PN_FW_OK;
        info->meta = parsed;
        memset(&parsed, 0, sizeof(parsed));
        info->meta_conf = (unsigned char *)conf;
        info->meta_conf_len = conf_len;
        conf = NULL;
        memcpy(info->meta_conf_sig, sig, sizeof(sig));
        pn_fwkey_id(sk + 32, info->key_id);
        info->size = po.size;
        info->data_bytes = size;
        pn_fw_sha256_done(po.sha, info->sha256);
        po.sha = NULL;
        pn_fw_hex(info->sha256, 32, info->sha256_hex);
    }
    rc = 0;
out:
    if (e)
        archive_entry_free(e);
    if (a)
        archive_write_free(a);
    if (po.sha)
        EVP_MD_CTX_free(po.sha);
    if (outfd >= 0)
        close(outfd);
    if (rc < 0 && created)
        unlink(out);
    if (in >= 0)
        close(in);
    pn_fw_meta_free(&parsed);
    free(conf);
    free(buf);
    return rc;
}
