/* SPDX-License-Identifier: Apache-2.0 */
/* Verification of a .fw in one pass (fw_verify.h). */
#include "fw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "fwkey.h"

void pn_fw_info_free(struct pn_fw_info *info)
{
    pn_fw_meta_free(&info->meta);
    free(info->meta_conf);
    info->meta_conf = NULL;
    info->meta_conf_len = 0;
}

struct verify {
    struct archive *a;
    struct ring ring;
    struct pn_fw_info *info;
    struct pn_err *err;
    struct resource *res;
    size_t nres;
    struct seen_entry *seen;
    size_t nseen;
};

static int refuse(struct verify *v, enum pn_fw_reason why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(struct verify *v, enum pn_fw_reason why, const char *fmt, ...)
{
    v->info->reason = why;
    if (v->err) {
        /* Through pn_err_set, which keeps an error to one line: libarchive's
         * messages end in '\n' and entry names come from the archive. */
        char msg[PN_ERR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        pn_err_set(v->err, "%s", msg);
    }
    return -1;
}

/* libarchive failed: a failing read or write of ours, or a bad zip. */
static int archive_failed(struct verify *v, const char *what)
{
    if (v->ring.read_errno)
        return refuse(v, PN_FW_IO, "cannot read the archive: %s", strerror(v->ring.read_errno));
    if (v->ring.write_errno)
        return refuse(v, PN_FW_IO, "cannot write the copy: %s", strerror(v->ring.write_errno));
    const char *msg = archive_error_string(v->a);
    return refuse(v, PN_FW_CORRUPT, "truncated or corrupt zip: %s: %s", what,
                  msg ? msg : "read error");
}

static int remember(struct verify *v, const char *name, uint64_t size)
{
    struct seen_entry *s = realloc(v->seen, (v->nseen + 1) * sizeof(*s));
    if (!s)
        return refuse(v, PN_FW_IO, "out of memory");
    v->seen = s;
    if (!(s[v->nseen].name = strdup(name)))
        return refuse(v, PN_FW_IO, "out of memory");
    s[v->nseen++].size = size;
    return 0;
}

/* Reads at most max bytes of the current entry into buf; *got receives how
 * many (max means "max or more"). */
static int read_small(struct verify *v, const char *what, unsigned char *buf, size_t max,
                      size_t *got)
{
    size_t n = 0;
    *got = 0;
    while (n < max) {
        la_ssize_t r = archive_read_data(v->a, buf + n, max - n);
        if (r < 0)
            return archive_failed(v, what);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *got = n;
    return 0;
}

/* Next header; 1 at the end of the archive. */
static int next_entry(struct verify *v, struct archive_entry **e, const char **name)
{
    int r = archive_read_next_header(v->a, e);
    if (r == ARCHIVE_EOF)
        return 1;
    if (r != ARCHIVE_OK) {
        if (archive_format(v->a) == 0 && !v->ring.read_errno)
            return refuse(v, PN_FW_NOT_ZIP, "not a zip archive (fwup .fw files are zips)");
        return archive_failed(v, "reading an entry header");
    }
    char pn[128];
    *name = archive_entry_pathname(*e);
    if (!*name)
        return refuse(v, PN_FW_UNSAFE_NAME, "unsafe entry name: not readable as text");
    if (!pn_fw_name_safe(*name))
        return refuse(v, PN_FW_UNSAFE_NAME, "unsafe entry name '%s'",
                      pn_fw_printable(*name, pn, sizeof(pn)));
    if (archive_entry_filetype(*e) != AE_IFREG)
        return refuse(v, PN_FW_UNSAFE_NAME, "entry '%s' is not a regular file",
                      pn_fw_printable(*name, pn, sizeof(pn)));
    if (archive_entry_is_encrypted(*e))
        return refuse(v, PN_FW_CORRUPT, "entry '%s' is encrypted",
                      pn_fw_printable(*name, pn, sizeof(pn)));
    return 0;
}

/* Streams one resource through its hash, never past its declared length
 * by more than one of libarchive's blocks. */
static int check_resource(struct verify *v, struct resource *r)
{
    crypto_generichash_state b2;
    EVP_MD_CTX *sha = NULL;
    if (r->kind == HASH_BLAKE2B)
        crypto_generichash_init(&b2, NULL, 0, 32);
    else if (!(sha = pn_fw_sha256_new()))
        return refuse(v, PN_FW_IO, "out of memory");
    uint64_t got = 0;
    int rc = -1;
    for (;;) {
        const void *p;
        size_t n;
        la_int64_t off;
        int ar = archive_read_data_block(v->a, &p, &n, &off);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar != ARCHIVE_OK) {
            char what[NAME_MAX_LEN + 32];
            snprintf(what, sizeof(what), "reading resource %s", r->name);
            archive_failed(v, what);
            goto out;
        }
        v->info->data_bytes += n;
        if (off < 0 || (uint64_t)off != got) {
            refuse(v, PN_FW_CORRUPT, "corrupt zip: resource %s has a hole", r->name);
            goto out;
        }
        if (n > r->length - got) {
            refuse(v, PN_FW_TOO_LARGE, "resource %s is larger than declared (%llu bytes)", r->name,
                   (unsigned long long)r->length);
            goto out;
        }
        if (sha)
            EVP_DigestUpdate(sha, p, n);
        else
            crypto_generichash_update(&b2, p, n);
        got += n;
    }
    if (got != r->length) {
        refuse(v, PN_FW_LENGTH, "resource %s is %llu bytes, declared %llu", r->name,
               (unsigned long long)got, (unsigned long long)r->length);
        goto out;
    }
    unsigned char d[32];
    if (sha) {
        pn_fw_sha256_done(sha, d);
        sha = NULL;
    } else {
        crypto_generichash_final(&b2, d, sizeof(d));
    }
    if (sodium_memcmp(d, r->digest, 32) != 0) {
        refuse(v, PN_FW_HASH, "resource %s does not match its %s in meta.conf", r->name,
               r->kind == HASH_BLAKE2B ? "BLAKE2b-256" : "SHA-256");
        goto out;
    }
    rc = 0;
out:
    if (sha)
        EVP_MD_CTX_free(sha);
    return rc;
}

static int verify_signature(struct verify *v, const struct pn_fw_key *keys, size_t nkeys,
                            int have_sig)
{
    struct pn_fw_info *info = v->info;
    if (!have_sig)
        return refuse(v, PN_FW_UNSIGNED, "archive is unsigned (no meta.conf.ed25519)");
    if (nkeys == 0)
        return refuse(v, PN_FW_NO_KEYS,
                      "no firmware keys are registered to check the "
                      "signature against");
    for (size_t i = 0; i < nkeys; i++) {
        if (pn_fwkey_verify(keys[i].pk, info->meta_conf, info->meta_conf_len,
                            info->meta_conf_sig) == 0) {
            info->key_index = (int)i;
            snprintf(info->key_id, sizeof(info->key_id), "%s", keys[i].id);
            return 0;
        }
    }
    return refuse(v, PN_FW_UNKNOWN_KEY,
                  "signature of meta.conf does not verify with any registered key (signed by "
                  "an unregistered key, or meta.conf was altered)");
}

/* The stream pass: everything but the central directory. */
static int verify_stream(struct verify *v, const struct pn_fw_key *keys, size_t nkeys)
{
    struct pn_fw_info *info = v->info;
    struct archive_entry *e;
    const char *name;
    char pn[128];
    int have_sig = 0, r;

    if ((r = next_entry(v, &e, &name)) != 0)
        return r > 0 ? refuse(v, PN_FW_CORRUPT, "empty zip archive: no meta.conf") : -1;
    if (strcmp(name, SIG_ENTRY) == 0) {
        unsigned char sig[PN_FW_SIG_BYTES + 1];
        size_t n = 0;
        if (read_small(v, SIG_ENTRY, sig, sizeof(sig), &n) < 0)
            return -1;
        if (n != PN_FW_SIG_BYTES)
            return refuse(v, PN_FW_BAD_SIGNATURE,
                          "meta.conf.ed25519 is %s%zu bytes, not an "
                          "Ed25519 signature (64 bytes)",
                          n > PN_FW_SIG_BYTES ? "over " : "", n > PN_FW_SIG_BYTES ? n - 1 : n);
        memcpy(info->meta_conf_sig, sig, PN_FW_SIG_BYTES);
        have_sig = 1;
        if (remember(v, name, n) < 0)
            return -1;
        if ((r = next_entry(v, &e, &name)) != 0)
            return r > 0 ? refuse(v, PN_FW_ORDER,
                                  "entry out of order: meta.conf must follow "
                                  "meta.conf.ed25519")
                         : -1;
    }
    if (strcmp(name, META_ENTRY) != 0) {
        if (strcmp(name, SIG_ENTRY) == 0)
            return refuse(v, PN_FW_ORDER, "entry out of order: meta.conf.ed25519 appears twice");
        return refuse(v, PN_FW_ORDER, "entry out of order: '%s' where meta.conf%s was expected",
                      pn_fw_printable(name, pn, sizeof(pn)),
                      have_sig ? "" : " (or meta.conf.ed25519)");
    }
    info->meta_conf = malloc(PN_FW_META_CONF_MAX + 1);
    if (!info->meta_conf)
        return refuse(v, PN_FW_IO, "out of memory");
    if (read_small(v, META_ENTRY, info->meta_conf, PN_FW_META_CONF_MAX + 1, &info->meta_conf_len) <
        0)
        return -1;
    if (info->meta_conf_len > PN_FW_META_CONF_MAX)
        return refuse(v, PN_FW_META_SIZE, "meta.conf is too large (over %d bytes, fwup's limit)",
                      PN_FW_META_CONF_MAX);
    if (info->meta_conf_len < PN_FW_META_CONF_MIN)
        return refuse(v, PN_FW_META_SIZE, "meta.conf is too small (%zu bytes)",
                      info->meta_conf_len);
    if (remember(v, name, info->meta_conf_len) < 0)
        return -1;

    /* Without a signature in front the archive is refused as unsigned, but
     * one that merely comes late is a different mistake: look ahead. */
    if (!have_sig) {
        if ((r = next_entry(v, &e, &name)) < 0)
            return -1;
        if (r == 0 && strcmp(name, SIG_ENTRY) == 0)
            return refuse(v, PN_FW_ORDER,
                          "entry out of order: meta.conf.ed25519 must be the "
                          "first entry");
    }
    /* Nothing of meta.conf is believed before its signature verifies. */
    if (verify_signature(v, keys, nkeys, have_sig) < 0)
        return -1;
    if (pn_fw_meta_parse_resources(info->meta_conf, info->meta_conf_len, &info->meta, &v->res,
                                   &v->nres, v->err) < 0) {
        info->reason = PN_FW_META_INVALID;
        return -1;
    }

    while ((r = next_entry(v, &e, &name)) == 0) {
        if (strcmp(name, SIG_ENTRY) == 0 || strcmp(name, META_ENTRY) == 0)
            return refuse(v, PN_FW_ORDER, "entry out of order: %s after the resources", name);
        if (strncmp(name, DATA_PREFIX, strlen(DATA_PREFIX)) != 0)
            return refuse(v, PN_FW_UNDECLARED, "unexpected entry '%s' (resources live in data/)",
                          pn_fw_printable(name, pn, sizeof(pn)));
        const char *rname = name + strlen(DATA_PREFIX);
        struct resource *res = NULL;
        for (size_t i = 0; i < v->nres && !res; i++)
            if (strcmp(v->res[i].name, rname) == 0)
                res = &v->res[i];
        if (!res)
            return refuse(v, PN_FW_UNDECLARED,
                          "entry '%s' is not a resource declared in "
                          "meta.conf",
                          pn_fw_printable(name, pn, sizeof(pn)));
        if (res->seen)
            return refuse(v, PN_FW_DUPLICATE, "resource %s appears twice in the archive",
                          res->name);
        res->seen = 1;
        if (check_resource(v, res) < 0 || remember(v, name, res->length) < 0)
            return -1;
    }
    if (r < 0)
        return -1;
    for (size_t i = 0; i < v->nres; i++)
        if (!v->res[i].seen)
            return refuse(v, PN_FW_MISSING, "resource %s is missing from the archive",
                          v->res[i].name);
    return 0;
}

int pn_fw_verify(int fd, const struct pn_fw_key *keys, size_t nkeys, int copy_fd,
                 struct pn_fw_info *info, struct pn_err *err)
{
    struct verify v;
    struct stat st;
    memset(&v, 0, sizeof(v));
    memset(info, 0, sizeof(*info));
    info->key_index = -1;
    v.info = info;
    v.err = err;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return refuse(&v, PN_FW_IO, "the archive is not a regular file");
    if (copy_fd >= 0 && (fstat(copy_fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 0))
        return refuse(&v, PN_FW_IO, "the copy must go to a new, empty regular file");
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    int rc = -1;
    if (pn_fw_ring_start(&v.ring, fd, copy_fd) < 0) {
        refuse(&v, PN_FW_IO, "cannot start reading the archive: out of resources");
        goto out;
    }
    v.a = archive_read_new();
    if (!v.a) {
        refuse(&v, PN_FW_IO, "out of memory");
        goto out;
    }
    archive_read_support_format_zip_streamable(v.a);
    if (archive_read_open(v.a, &v.ring, NULL, pn_fw_ring_read, NULL) != ARCHIVE_OK) {
        if (archive_format(v.a) == 0 && !v.ring.read_errno)
            refuse(&v, PN_FW_NOT_ZIP, "not a zip archive (fwup .fw files are zips)");
        else
            archive_failed(&v, "opening");
        goto out;
    }
    if (verify_stream(&v, keys, nkeys) < 0)
        goto out;

    int e = 0;
    char which = 0;
    if (pn_fw_ring_drain(&v.ring, &e, &which) < 0) {
        refuse(&v, PN_FW_IO, "cannot %s: %s", which == 'r' ? "read the archive" : "write the copy",
               strerror(e));
        goto out;
    }
    info->size = v.ring.total;
    pn_fw_sha256_done(v.ring.sha, info->sha256);
    v.ring.sha = NULL;
    pn_fw_hex(info->sha256, 32, info->sha256_hex);
    if (pn_fw_zip_cross_check(copy_fd >= 0 ? copy_fd : fd, v.seen, v.nseen, err) < 0 ||
        pn_fw_zip_layout_check(copy_fd >= 0 ? copy_fd : fd, v.seen, v.nseen, err) < 0) {
        info->reason = PN_FW_CORRUPT;
        goto out;
    }
    info->reason = PN_FW_OK;
    rc = 0;
out:
    if (v.a)
        archive_read_free(v.a);
    pn_fw_ring_finish(&v.ring);
    pn_fw_resources_free(v.res, v.nres);
    for (size_t i = 0; i < v.nseen; i++)
        free(v.seen[i].name);
    free(v.seen);
    if (rc < 0) {
        enum pn_fw_reason why = info->reason;
        uint64_t data = info->data_bytes;
        pn_fw_info_free(info);
        memset(info, 0, sizeof(*info));
        info->key_index = -1;
        info->reason = why == PN_FW_OK ? PN_FW_IO : why;
        info->data_bytes = data;
    }
    return rc;
}

int pn_fw_verify_path(const char *path, const struct pn_fw_key *keys, size_t nkeys,
                      struct pn_fw_info *info, struct pn_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        memset(info, 0, sizeof(*info));
        info->key_index = -1;
        info->reason = PN_FW_IO;
        return pn_err_set(err, "%s: %s", path, strerror(errno));
    }
    int rc = pn_fw_verify(fd, keys, nkeys, -1, info, err);
    close(fd);
    return rc;
}
