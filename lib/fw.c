#include "fw.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <confuse.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "fsutil.h"
#include "fwkey.h"
#include "semver.h"

#define SIG_ENTRY "meta.conf.ed25519"
#define META_ENTRY "meta.conf"
#define DATA_PREFIX "data/"
#define NAME_MAX_LEN 1024

/* ------------------------------------------------------------------ small helpers */

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

/* SHA-256 through OpenSSL: with the CPU's SHA extensions it runs at ~4x
 * the speed of libsodium's portable code, and the archive's SHA-256 is
 * computed on every upload. */
static EVP_MD_CTX *sha256_new(void)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c);
        c = NULL;
    }
    return c;
}

static void sha256_done(EVP_MD_CTX *c, unsigned char out[32])
{
    unsigned int n = 32;
    EVP_DigestFinal_ex(c, out, &n);
    EVP_MD_CTX_free(c);
}

static ssize_t pread_full(int fd, void *buf, size_t len, off_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, (char *)buf + got, len - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* An entry or resource name is safe when it is relative, made of non-empty
 * '/'-separated segments none of which is "." or "..", and holds no
 * backslash and no control character. */
static int name_safe(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '/')
        return 0;
    const char *seg = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/' || c == '\0') {
            size_t len = (size_t)(p - seg);
            if (len == 0 || (len == 1 && seg[0] == '.') ||
                (len == 2 && seg[0] == '.' && seg[1] == '.'))
                return 0;
            if (c == '\0')
                return 1;
            seg = p + 1;
        } else if (c == '\\' || c < 0x20 || c == 0x7f) {
            return 0;
        }
    }
}

/* For messages: the name with anything unprintable replaced by '?'. */
static const char *printable(const char *s, char *buf, size_t size)
{
    snprintf(buf, size, "%s", s);
    return pn_printable(buf);
}

/* ------------------------------------------------------------------ uuid */

void pn_fw_uuid(const void *meta_conf, size_t len, char out[PN_FW_UUID_LEN + 1])
{
    /* fwup's namespace uuid 2053dffb-d51e-4310-b93b-956da89f9f34. */
    static const unsigned char ns[16] = {0x20, 0x53, 0xdf, 0xfb, 0xd5, 0x1e, 0x43, 0x10,
                                         0xb9, 0x3b, 0x95, 0x6d, 0xa8, 0x9f, 0x9f, 0x34};
    unsigned char h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, ns, sizeof(ns));
    crypto_generichash_update(&st, meta_conf, len);
    crypto_generichash_final(&st, h, sizeof(h));
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x50);
    char x[33];
    hex(h, 16, x);
    snprintf(out, PN_FW_UUID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", x, x + 8, x + 12, x + 16,
             x + 20);
}

/* ------------------------------------------------------------------ meta.conf */

/* Section layout of fwup 1.16's meta.conf.  Only the options Pinion reads
 * are typed; "__unknown" makes libconfuse (CFGF_IGNORE_UNKNOWN) skip every
 * other option, as fwup does.  The sections themselves must be declared:
 * libconfuse 3.3 cannot skip an unknown section reliably.  No function is
 * declared (fwup's include()/define() are creation-time only), so include
 * directives in an archive are ignored rather than read from this host. */
#define UNKNOWN CFG_STR("__unknown", 0, CFGF_NONE)

static cfg_opt_t file_resource_opts[] = {
    CFG_INT_LIST("length", 0, CFGF_NONE), CFG_STR("blake2b-256", 0, CFGF_NONE),
    CFG_STR("sha256", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t partition_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t osii_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t mbr_opts[] = {
    CFG_SEC("partition", partition_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("osii", osii_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES), UNKNOWN,
    CFG_END()};
static cfg_opt_t gpt_partition_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t gpt_opts[] = {
    CFG_SEC("partition", gpt_partition_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    UNKNOWN, CFG_END()};
static cfg_opt_t uboot_opts[] = {UNKNOWN, CFG_END()};
static cfg_opt_t event_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t on_init_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t on_finish_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t on_error_opts[] = {CFG_STR_LIST("funlist", 0, CFGF_NONE), UNKNOWN, CFG_END()};
static cfg_opt_t task_opts[] = {
    CFG_STR_LIST("reqlist", 0, CFGF_NONE),
    CFG_SEC("on-init", on_init_opts, CFGF_NONE),
    CFG_SEC("on-finish", on_finish_opts, CFGF_NONE),
    CFG_SEC("on-error", on_error_opts, CFGF_NONE),
    CFG_SEC("on-resource", event_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    UNKNOWN,
    CFG_END()};
static cfg_opt_t meta_opts[] = {
    CFG_STR("meta-product", 0, CFGF_NONE),
    CFG_STR("meta-description", 0, CFGF_NONE),
    CFG_STR("meta-version", 0, CFGF_NONE),
    CFG_STR("meta-author", 0, CFGF_NONE),
    CFG_STR("meta-platform", 0, CFGF_NONE),
    CFG_STR("meta-architecture", 0, CFGF_NONE),
    CFG_STR("meta-vcs-identifier", 0, CFGF_NONE),
    CFG_STR("meta-misc", 0, CFGF_NONE),
    CFG_SEC("file-resource", file_resource_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("mbr", mbr_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("gpt", gpt_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("task", task_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("uboot-environment", uboot_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    UNKNOWN,
    CFG_END()};

enum hash_kind { HASH_BLAKE2B, HASH_SHA256 };

/* A file-resource of meta.conf, and what the archive showed of it. */
struct resource {
    char *name;
    uint64_t length; /* bytes stored in the archive (data parts of a sparse map) */
    enum hash_kind kind;
    unsigned char digest[32];
    int seen;
};

static void resources_free(struct resource *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        free(r[i].name);
    free(r);
}

/* libconfuse reports parse errors through this; they end up as one
 * sentence built from the line number, not on stderr. */
static void quiet_cfg_error(cfg_t *cfg, const char *fmt, va_list ap)
{
    (void)cfg;
    (void)fmt;
    (void)ap;
}

/* "${" reaches libconfuse's environment expansion unless its '$' is
 * escaped by an odd number of backslashes. */
static int refers_to_env(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '$' || s[i + 1] != '{')
            continue;
        size_t bs = 0;
        while (bs < i && s[i - 1 - bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return 1;
    }
    return 0;
}

static int parse_digest(const char *hexstr, unsigned char out[32])
{
    if (!hexstr || strlen(hexstr) != 64)
        return -1;
    for (const char *p = hexstr; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return -1; /* fwup compares lowercase hex text */
    size_t n = 0;
    if (sodium_hex2bin(out, 32, hexstr, 64, NULL, &n, NULL) != 0 || n != 32)
        return -1;
    return 0;
}

/* Reads one file-resource section into r.  fwup's length is a list: one
 * value, or a sparse map alternating data and hole sizes, of which only
 * the data parts are stored. */
static int resource_read(cfg_t *sec, struct resource *r, struct pn_err *err)
{
    char pname[128];
    const char *title = cfg_title(sec);
    if (!title || !name_safe(title))
        return pn_err_set(err, "meta.conf declares a resource with an unsafe name '%s'",
                          printable(title ? title : "", pname, sizeof(pname)));
    r->name = strdup(title);
    if (!r->name)
        return pn_err_set(err, "out of memory");
    uint64_t total = 0;
    unsigned n = cfg_size(sec, "length");
    for (unsigned i = 0; i < n; i++) {
        long v = cfg_getnint(sec, "length", i);
        if (v < 0)
            return pn_err_set(err, "meta.conf: resource %s has a negative length", title);
        if (i % 2 == 0) {
            if ((uint64_t)v > (uint64_t)INT64_MAX - total)
                return pn_err_set(err, "meta.conf: resource %s has an impossible length", title);
            total += (uint64_t)v;
        }
    }
    r->length = total;
    const char *b2 = cfg_getstr(sec, "blake2b-256");
    const char *s2 = cfg_getstr(sec, "sha256");
    if (b2) {
        r->kind = HASH_BLAKE2B;
        if (parse_digest(b2, r->digest) < 0)
            return pn_err_set(err, "meta.conf: resource %s has a malformed blake2b-256", title);
    } else if (s2) {
        r->kind = HASH_SHA256;
        if (parse_digest(s2, r->digest) < 0)
            return pn_err_set(err, "meta.conf: resource %s has a malformed sha256", title);
    } else {
        return pn_err_set(err, "meta.conf: resource %s has no blake2b-256 (or sha256)", title);
    }
    return 0;
}

/* Parses meta.conf; fills meta and, when res is non-NULL, the resources. */
static int meta_parse(const void *buf, size_t len, struct pn_fw_meta *meta,
                      struct resource **res, size_t *nres, struct pn_err *err)
{
    memset(meta, 0, sizeof(*meta));
    if (res) {
        *res = NULL;
        *nres = 0;
    }
    if (memchr(buf, '\0', len))
        return pn_err_set(err, "meta.conf contains a NUL byte");
    if (refers_to_env(buf, len))
        return pn_err_set(err, "meta.conf refers to an environment variable (${...}), which "
                               "would expand differently on every machine");
    char *text = malloc(len + 1);
    if (!text)
        return pn_err_set(err, "out of memory");
    memcpy(text, buf, len);
    text[len] = '\0';

    int rc = -1;
    struct resource *r = NULL;
    size_t n = 0;
    cfg_t *cfg = cfg_init(meta_opts, CFGF_IGNORE_UNKNOWN);
    if (!cfg) {
        pn_err_set(err, "out of memory");
        goto out;
    }
    cfg_set_error_function(cfg, quiet_cfg_error);
    if (cfg_parse_buf(cfg, text) != CFG_SUCCESS) {
        pn_err_set(err, "meta.conf is not valid fwup syntax (near line %d)", cfg->line);
        goto out;
    }
    static const char *const keys[] = {"meta-product",      "meta-version",
                                       "meta-platform",     "meta-architecture",
                                       "meta-author",       "meta-description",
                                       "meta-vcs-identifier", "meta-misc"};
    char **fields[] = {&meta->product, &meta->version, &meta->platform, &meta->architecture,
                       &meta->author,  &meta->description, &meta->vcs_identifier, &meta->misc};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = cfg_getstr(cfg, keys[i]);
        /* Stored as text: refuse what is not UTF-8 here, naming the field
         * (jansson's json_string checks UTF-8). */
        json_t *utf8 = v ? json_string(v) : NULL;
        if (v && !utf8) {
            pn_err_set(err, "meta.conf field %s is not valid UTF-8", keys[i]);
            goto out;
        }
        json_decref(utf8);
        if (!(*fields[i] = xstrdup(v))) {
            pn_err_set(err, "out of memory");
            goto out;
        }
    }
    n = cfg_size(cfg, "file-resource");
    meta->nresources = n;
    if (res) {
        r = calloc(n ? n : 1, sizeof(*r));
        if (!r) {
            pn_err_set(err, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (resource_read(cfg_getnsec(cfg, "file-resource", (unsigned)i), &r[i], err) < 0)
                goto out;
    }
    pn_fw_uuid(buf, len, meta->uuid);
    rc = 0;
out:
    if (cfg)
        cfg_free(cfg);
    free(text);
    if (rc < 0) {
        resources_free(r, n);
        pn_fw_meta_free(meta);
    } else if (res) {
        *res = r;
        *nres = n;
    }
    return rc;
}

int pn_fw_meta_parse(const void *meta_conf, size_t len, struct pn_fw_meta *meta,
                     struct pn_err *err)
{
    return meta_parse(meta_conf, len, meta, NULL, NULL, err);
}

void pn_fw_meta_free(struct pn_fw_meta *meta)
{
    free(meta->product);
    free(meta->version);
    free(meta->platform);
    free(meta->architecture);
    free(meta->author);
    free(meta->description);
    free(meta->vcs_identifier);
    free(meta->misc);
    memset(meta, 0, sizeof(*meta));
}

void pn_fw_info_free(struct pn_fw_info *info)
{
    pn_fw_meta_free(&info->meta);
    free(info->meta_conf);
    info->meta_conf = NULL;
    info->meta_conf_len = 0;
}

/* ------------------------------------------------------------------ the reader thread */

/* The archive's raw bytes flow through a ring of buffers.  A second thread
 * reads the file into the ring, hashes every byte with SHA-256 and writes
 * the copy; libarchive, on the calling thread, reads the same buffers
 * (without copying) to inflate and BLAKE2b-hash the resources.  The two
 * hashes thus run on two cores, and the file is read once.
 *
 * Slot k of the ring holds buffer number k % RING_SLOTS.  The reader may
 * fill buffer n when fewer than RING_SLOTS buffers are filled and not yet
 * released; libarchive holds one buffer at a time (it must stay valid until
 * its next read callback), which it releases on that next call. */
#define RING_SLOTS 8
#define SLOT_BYTES (1u << 20)
#define WRITEBACK_BYTES (16u << 20) /* start writeback of the copy every 16 MiB */

struct ring {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started;
    unsigned char *buf[RING_SLOTS];
    size_t len[RING_SLOTS];
    uint64_t filled;   /* buffers filled by the reader */
    uint64_t taken;    /* buffers handed to libarchive */
    uint64_t released; /* buffers given back */
    int holding;       /* libarchive holds buffer taken - 1 */
    int eof, stop;
    int read_errno, write_errno;
    int in_fd, out_fd;
    EVP_MD_CTX *sha;
    uint64_t total;
};

static void *ring_main(void *arg)
{
    struct ring *r = arg;
    uint64_t flushed = 0, pending = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->stop && r->filled - r->released >= RING_SLOTS)
            pthread_cond_wait(&r->cv, &r->mu);
        int stop = r->stop;
        uint64_t n = r->filled;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            break;

        unsigned char *b = r->buf[n % RING_SLOTS];
        ssize_t got = pread_full(r->in_fd, b, SLOT_BYTES, (off_t)r->total);
        int e = got < 0 ? errno : 0;

        pthread_mutex_lock(&r->mu);
        if (got > 0) {
            r->len[n % RING_SLOTS] = (size_t)got;
            r->filled++;
        } else if (got == 0) {
            r->eof = 1;
        } else {
            r->read_errno = e ? e : EIO;
        }
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (got <= 0)
            break;

        /* The buffer cannot be refilled before this iteration ends, so it
         * is safe to hash and copy it while libarchive reads it too. */
        EVP_DigestUpdate(r->sha, b, (size_t)got);
        r->total += (uint64_t)got;
        if (r->out_fd >= 0) {
            if (pn_write_all(r->out_fd, b, (size_t)got) < 0) {
                pthread_mutex_lock(&r->mu);
                r->write_errno = errno ? errno : EIO;
                pthread_cond_broadcast(&r->cv);
                pthread_mutex_unlock(&r->mu);
                break;
            }
            /* Let the kernel write the copy back while we go on, so the
             * final fsync finds little left to do. */
            pending += (uint64_t)got;
            if (pending >= WRITEBACK_BYTES) {
                sync_file_range(r->out_fd, (off_t)flushed, (off_t)pending,
                                SYNC_FILE_RANGE_WRITE);
                flushed += pending;
                pending = 0;
            }
        }
    }
    return NULL;
}

static int ring_start(struct ring *r, int in_fd, int out_fd)
{
    memset(r, 0, sizeof(*r));
    r->in_fd = in_fd;
    r->out_fd = out_fd;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (int i = 0; i < RING_SLOTS; i++)
        if (!(r->buf[i] = malloc(SLOT_BYTES)))
            return -1;
    if (!(r->sha = sha256_new()))
        return -1;
    if (pthread_create(&r->thread, NULL, ring_main, r) != 0)
        return -1;
    r->started = 1;
    return 0;
}

/* Stops the reader (if still running), waits for it and frees the ring. */
static void ring_finish(struct ring *r)
{
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
        r->started = 0;
    }
    for (int i = 0; i < RING_SLOTS; i++)
        free(r->buf[i]);
    if (r->sha)
        EVP_MD_CTX_free(r->sha);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    memset(r->buf, 0, sizeof(r->buf));
    r->sha = NULL;
}

static la_ssize_t ring_read(struct archive *a, void *arg, const void **out)
{
    struct ring *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->holding) {
        r->released++;
        r->holding = 0;
        pthread_cond_broadcast(&r->cv);
    }
    while (r->taken == r->filled && !r->eof && !r->read_errno && !r->write_errno)
        pthread_cond_wait(&r->cv, &r->mu);
    if (r->read_errno || r->write_errno) {
        int e = r->read_errno ? r->read_errno : r->write_errno;
        pthread_mutex_unlock(&r->mu);
        archive_set_error(a, e, "%s", strerror(e));
        return -1;
    }
    if (r->taken == r->filled) { /* end of file */
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    uint64_t n = r->taken++;
    r->holding = 1;
    pthread_mutex_unlock(&r->mu);
    *out = r->buf[n % RING_SLOTS];
    return (la_ssize_t)r->len[n % RING_SLOTS];
}

/* After libarchive is done: lets the reader hash (and copy) the rest of the
 * file, the central directory included, and waits for it.  0 / -1 (errno
 * of the failed read or write in *e, which is 'r' or 'w'). */
static int ring_drain(struct ring *r, int *e, char *which)
{
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (r->holding) {
            r->released++;
            r->holding = 0;
            pthread_cond_broadcast(&r->cv);
        }
        if (r->read_errno || r->write_errno || (r->eof && r->taken == r->filled))
            break;
        if (r->taken < r->filled) {
            r->taken++;
            r->holding = 1;
            continue;
        }
        pthread_cond_wait(&r->cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    r->started = 0;
    if (r->read_errno) {
        *e = r->read_errno;
        *which = 'r';
        return -1;
    }
    if (r->write_errno) {
        *e = r->write_errno;
        *which = 'w';
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ central directory */

/* Reads a regular file with pread for libarchive's seeking zip reader. */
struct preader {
    int fd;
    int64_t pos, size;
    unsigned char buf[65536];
};

static la_ssize_t preader_read(struct archive *a, void *arg, const void **out)
{
    struct preader *p = arg;
    ssize_t n = pread_full(p->fd, p->buf, sizeof(p->buf), (off_t)p->pos);
    if (n < 0) {
        archive_set_error(a, errno, "%s", strerror(errno));
        return -1;
    }
    p->pos += n;
    *out = p->buf;
    return n;
}

static la_int64_t preader_seek(struct archive *a, void *arg, la_int64_t off, int whence)
{
    struct preader *p = arg;
    (void)a;
    int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? p->pos : p->size;
    int64_t to = base + off;
    if (to < 0)
        return ARCHIVE_FATAL;
    if (to > p->size)
        to = p->size;
    p->pos = to;
    return to;
}

struct seen_entry {
    char *name;
    uint64_t size;
};

/* Streaming readers (fwup reading stdin, and pn_fw_verify) follow the
 * local headers; readers of files (fwup -i FILE, unzip, Python) follow the
 * central directory.  Both must see the same entries, in the same order and
 * with the same sizes, or the archive means different things to different
 * tools; a file cut short at its central directory is refused here too. */
static int cross_check(int fd, const struct seen_entry *seen, size_t nseen, struct pn_err *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return pn_err_set(err, "cannot stat the archive: %s", strerror(errno));
    struct preader *p = calloc(1, sizeof(*p));
    if (!p)
        return pn_err_set(err, "out of memory");
    p->fd = fd;
    p->size = st.st_size;
    struct archive *a = archive_read_new();
    int rc = -1;
    size_t i = 0;
    struct archive_entry *e;
    archive_read_support_format_zip_seekable(a);
    archive_read_set_read_callback(a, preader_read);
    archive_read_set_seek_callback(a, preader_seek);
    archive_read_set_callback_data(a, p);
    if (archive_read_open1(a) != ARCHIVE_OK) {
        pn_err_set(err, "truncated or corrupt zip: %s", archive_error_string(a));
        goto out;
    }
    for (;; i++) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            pn_err_set(err, "truncated or corrupt zip: central directory: %s",
                       archive_error_string(a) ? archive_error_string(a) : "unreadable");
            goto out;
        }
        const char *name = archive_entry_pathname(e);
        if (i >= nseen || !name || strcmp(name, seen[i].name) != 0 ||
            !archive_entry_size_is_set(e) || (uint64_t)archive_entry_size(e) != seen[i].size) {
            char pn[128];
            pn_err_set(err, "corrupt zip: the central directory does not match the entries "
                            "(at %s)",
                       printable(i < nseen ? seen[i].name : name ? name : "?", pn, sizeof(pn)));
            goto out;
        }
    }
    if (i != nseen) {
        pn_err_set(err, "corrupt zip: the central directory lists %zu entries, the archive "
                        "holds %zu", i, nseen);
        goto out;
    }
    rc = 0;
out:
    archive_read_free(a);
    free(p);
    return rc;
}

/* Every view of the archive must read the same bytes.  libarchive exposes
 * neither the central directory's local-header offsets nor its CRCs, so
 * this reads just those fields: the entries the central directory lists
 * must start at offset 0 and follow each other with no gap (local header,
 * data, data descriptor) up to the central directory itself, each with the
 * CRC and sizes its local header or data descriptor carries.  Without it,
 * a second archive hidden after the first (or inside a stored resource)
 * could be what fwup -i and unzip read, while this verifier (and fwup
 * reading a stream) read the signed one. */

#define ZIP_CD_MAX (64u << 20) /* a central directory larger than this is refused */

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int read_exact(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* The zip64 extended information of an extra field (id 1): the fields whose
 * 32-bit value is all ones, in the order usize, csize, offset. */
static int zip64_extra(const unsigned char *x, size_t xlen, uint64_t *usize, uint64_t *csize,
                       uint64_t *off, bool *present)
{
    *present = false;
    for (size_t i = 0; i + 4 <= xlen;) {
        uint16_t id = (uint16_t)le(x + i, 2), len = (uint16_t)le(x + i + 2, 2);
        if (i + 4 + len > xlen)
            return -1;
        if (id == 1) {
            const unsigned char *f = x + i + 4;
            size_t k = 0;
            *present = true;
            uint64_t *want[] = {usize, csize, off};
            for (int j = 0; j < 3; j++) {
                if (!want[j] || *want[j] != 0xffffffffu)
                    continue;
                if (k + 8 > len)
                    return -1;
                *want[j] = le(f + k, 8);
                k += 8;
            }
        }
        i += 4 + (size_t)len;
    }
    return 0;
}

static int layout_check(int fd, const struct seen_entry *seen, size_t nseen, struct pn_err *err)
{
    struct stat st;
    unsigned char tail[22 + 65535 + 20], *cd = NULL;
    int rc = -1;
    if (fstat(fd, &st) < 0)
        return pn_err_set(err, "cannot stat the archive: %s", strerror(errno));
    uint64_t size = (uint64_t)st.st_size;
    size_t tl = size < sizeof(tail) ? (size_t)size : sizeof(tail);
    if (tl < 22 || read_exact(fd, tail, tl, size - tl) < 0)
        return pn_err_set(err, "corrupt zip: no end of central directory");
    /* The end record: its comment runs exactly to the end of the file. */
    long eo = -1;
    for (long i = (long)tl - 22; i >= 0; i--)
        if (!memcmp(tail + i, "PK\5\6", 4) && (uint64_t)i + 22 + le(tail + i + 20, 2) == tl) {
            eo = i;
            break;
        }
    if (eo < 0)
        return pn_err_set(err, "corrupt zip: no end of central directory");
    uint64_t entries = le(tail + eo + 10, 2), cd_size = le(tail + eo + 12, 4),
             cd_off = le(tail + eo + 16, 4), eocd_at = size - tl + (uint64_t)eo;
    if (entries == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        unsigned char loc[20], z[56];
        if (eo < 20 || memcmp(tail + eo - 20, "PK\6\7", 4) != 0)
            return pn_err_set(err, "corrupt zip: zip64 end of central directory locator missing");
        memcpy(loc, tail + eo - 20, 20);
        uint64_t zo = le(loc + 8, 8);
        if (zo + 56 > eocd_at || read_exact(fd, z, 56, zo) < 0 || memcmp(z, "PK\6\6", 4) != 0)
            return pn_err_set(err, "corrupt zip: zip64 end of central directory missing");
        entries = le(z + 32, 8);
        cd_size = le(z + 40, 8);
        cd_off = le(z + 48, 8);
        eocd_at = zo;
    }
    if (entries != nseen)
        return pn_err_set(err, "corrupt zip: the central directory lists %llu entries, the "
                               "archive holds %zu", (unsigned long long)entries, nseen);
    if (cd_size > ZIP_CD_MAX || cd_off > eocd_at || cd_size != eocd_at - cd_off)
        return pn_err_set(err, "corrupt zip: the central directory is not where the end record "
                               "says");
    cd = malloc(cd_size ? (size_t)cd_size : 1);
    if (!cd)
        return pn_err_set(err, "out of memory");
    if (read_exact(fd, cd, (size_t)cd_size, cd_off) < 0) {
        pn_err_set(err, "corrupt zip: cannot read the central directory");
        goto out;
    }
    uint64_t next = 0; /* where the next local header must start */
    size_t c = 0;
    for (size_t i = 0; i < nseen; i++) {
        char pn[128];
        if (c + 46 > cd_size || memcmp(cd + c, "PK\1\2", 4) != 0) {
            pn_err_set(err, "corrupt zip: central directory entry %zu is malformed", i);
            goto out;
        }
        const unsigned char *h = cd + c;
        uint64_t flags = le(h + 8, 2), crc = le(h + 16, 4), csize = le(h + 20, 4),
                 usize = le(h + 24, 4), lho = le(h + 42, 4);
        size_t nlen = (size_t)le(h + 28, 2), xlen = (size_t)le(h + 30, 2),
               clen = (size_t)le(h + 32, 2);
        bool z64 = false;
        if (c + 46 + nlen + xlen + clen > cd_size ||
            zip64_extra(h + 46 + nlen, xlen, &usize, &csize, &lho, &z64) < 0) {
            pn_err_set(err, "corrupt zip: central directory entry %zu is malformed", i);
            goto out;
        }
        if (nlen != strlen(seen[i].name) || memcmp(h + 46, seen[i].name, nlen) != 0 ||
            usize != seen[i].size) {
            pn_err_set(err, "corrupt zip: the central directory does not match the entries (at "
                            "%s)", printable(seen[i].name, pn, sizeof(pn)));
            goto out;
        }
        unsigned char lh[30];
        if (lho != next || read_exact(fd, lh, sizeof(lh), lho) < 0 || memcmp(lh, "PK\3\4", 4)) {
            pn_err_set(err, "corrupt zip: the central directory's %s is not the entry read at "
                            "offset %llu", printable(seen[i].name, pn, sizeof(pn)),
                       (unsigned long long)next);
            goto out;
        }
        uint64_t lnlen = le(lh + 26, 2), lxlen = le(lh + 28, 2);
        uint64_t data = lho + 30 + lnlen + lxlen, end = data + csize;
        if (end < data || end > cd_off) {
            pn_err_set(err, "corrupt zip: %s runs past the central directory",
                       printable(seen[i].name, pn, sizeof(pn)));
            goto out;
        }
        uint64_t got_crc = le(lh + 14, 4);
        if (flags & 8) { /* data descriptor: [PK\7\8] crc csize usize (8-byte sizes in zip64) */
            unsigned char dd[24];
            bool lz64 = false;
            if (lxlen) {
                unsigned char *lx = malloc((size_t)lxlen);
                uint64_t u = 0, cs = 0;
                int bad = !lx || read_exact(fd, lx, (size_t)lxlen, lho + 30 + lnlen) < 0 ||
                          zip64_extra(lx, (size_t)lxlen, &u, &cs, NULL, &lz64) < 0;
                free(lx);
                if (bad) {
                    pn_err_set(err, "corrupt zip: the local header of %s is malformed",
                               printable(seen[i].name, pn, sizeof(pn)));
                    goto out;
                }
            }
            size_t sizes = lz64 ? 16 : 8, sig = 0;
            if (end + 4 <= cd_off && read_exact(fd, dd, 4, end) == 0 && !memcmp(dd, "PK\7\10", 4))
                sig = 4;
            if (end + sig + 4 + sizes > cd_off ||
                read_exact(fd, dd, 4 + sizes, end + sig) < 0) {
                pn_err_set(err, "corrupt zip: the data descriptor of %s is missing",
                           printable(seen[i].name, pn, sizeof(pn)));
                goto out;
            }
            got_crc = le(dd, 4);
            if (le(dd + 4, (int)sizes / 2) != csize || le(dd + 4 + sizes / 2, (int)sizes / 2) != usize) {
                pn_err_set(err, "corrupt zip: the sizes of %s differ between its data descriptor "
                                "and the central directory", printable(seen[i].name, pn, sizeof(pn)));
                goto out;
            }
            end += sig + 4 + sizes;
        }
        if (got_crc != crc) {
            pn_err_set(err, "corrupt zip: the CRC of %s differs between its entry and the central "
                            "directory", printable(seen[i].name, pn, sizeof(pn)));
            goto out;
        }
        next = end;
        c += 46 + nlen + xlen + clen;
    }
    if (next != cd_off) {
        pn_err_set(err, "corrupt zip: %llu bytes between the last entry and the central "
                        "directory", (unsigned long long)(cd_off - next));
        goto out;
    }
    rc = 0;
out:
    free(cd);
    return rc;
}

/* ------------------------------------------------------------------ verification */

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
    if (!name_safe(*name))
        return refuse(v, PN_FW_UNSAFE_NAME, "unsafe entry name '%s'",
                      printable(*name, pn, sizeof(pn)));
    if (archive_entry_filetype(*e) != AE_IFREG)
        return refuse(v, PN_FW_UNSAFE_NAME, "entry '%s' is not a regular file",
                      printable(*name, pn, sizeof(pn)));
    if (archive_entry_is_encrypted(*e))
        return refuse(v, PN_FW_CORRUPT, "entry '%s' is encrypted",
                      printable(*name, pn, sizeof(pn)));
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
    else if (!(sha = sha256_new()))
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
            refuse(v, PN_FW_TOO_LARGE, "resource %s is larger than declared (%llu bytes)",
                   r->name, (unsigned long long)r->length);
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
        sha256_done(sha, d);
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
        return refuse(v, PN_FW_NO_KEYS, "no firmware keys are registered to check the "
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
            return refuse(v, PN_FW_BAD_SIGNATURE, "meta.conf.ed25519 is %s%zu bytes, not an "
                                                  "Ed25519 signature (64 bytes)",
                          n > PN_FW_SIG_BYTES ? "over " : "", n > PN_FW_SIG_BYTES ? n - 1 : n);
        memcpy(info->meta_conf_sig, sig, PN_FW_SIG_BYTES);
        have_sig = 1;
        if (remember(v, name, n) < 0)
            return -1;
        if ((r = next_entry(v, &e, &name)) != 0)
            return r > 0 ? refuse(v, PN_FW_ORDER, "entry out of order: meta.conf must follow "
                                                  "meta.conf.ed25519")
                         : -1;
    }
    if (strcmp(name, META_ENTRY) != 0) {
        if (strcmp(name, SIG_ENTRY) == 0)
            return refuse(v, PN_FW_ORDER, "entry out of order: meta.conf.ed25519 appears twice");
        return refuse(v, PN_FW_ORDER, "entry out of order: '%s' where meta.conf%s was expected",
                      printable(name, pn, sizeof(pn)),
                      have_sig ? "" : " (or meta.conf.ed25519)");
    }
    info->meta_conf = malloc(PN_FW_META_CONF_MAX + 1);
    if (!info->meta_conf)
        return refuse(v, PN_FW_IO, "out of memory");
    if (read_small(v, META_ENTRY, info->meta_conf, PN_FW_META_CONF_MAX + 1,
                   &info->meta_conf_len) < 0)
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
            return refuse(v, PN_FW_ORDER, "entry out of order: meta.conf.ed25519 must be the "
                                          "first entry");
    }
    /* Nothing of meta.conf is believed before its signature verifies. */
    if (verify_signature(v, keys, nkeys, have_sig) < 0)
        return -1;
    if (meta_parse(info->meta_conf, info->meta_conf_len, &info->meta, &v->res, &v->nres,
                   v->err) < 0) {
        info->reason = PN_FW_META_INVALID;
        return -1;
    }

    while ((r = next_entry(v, &e, &name)) == 0) {
        if (strcmp(name, SIG_ENTRY) == 0 || strcmp(name, META_ENTRY) == 0)
            return refuse(v, PN_FW_ORDER, "entry out of order: %s after the resources", name);
        if (strncmp(name, DATA_PREFIX, strlen(DATA_PREFIX)) != 0)
            return refuse(v, PN_FW_UNDECLARED, "unexpected entry '%s' (resources live in data/)",
                          printable(name, pn, sizeof(pn)));
        const char *rname = name + strlen(DATA_PREFIX);
        struct resource *res = NULL;
        for (size_t i = 0; i < v->nres && !res; i++)
            if (strcmp(v->res[i].name, rname) == 0)
                res = &v->res[i];
        if (!res)
            return refuse(v, PN_FW_UNDECLARED, "entry '%s' is not a resource declared in "
                                               "meta.conf",
                          printable(name, pn, sizeof(pn)));
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
    if (ring_start(&v.ring, fd, copy_fd) < 0) {
        refuse(&v, PN_FW_IO, "cannot start reading the archive: out of resources");
        goto out;
    }
    v.a = archive_read_new();
    if (!v.a) {
        refuse(&v, PN_FW_IO, "out of memory");
        goto out;
    }
    archive_read_support_format_zip_streamable(v.a);
    if (archive_read_open(v.a, &v.ring, NULL, ring_read, NULL) != ARCHIVE_OK) {
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
    if (ring_drain(&v.ring, &e, &which) < 0) {
        refuse(&v, PN_FW_IO, "cannot %s: %s", which == 'r' ? "read the archive" : "write the copy",
               strerror(e));
        goto out;
    }
    info->size = v.ring.total;
    sha256_done(v.ring.sha, info->sha256);
    v.ring.sha = NULL;
    hex(info->sha256, 32, info->sha256_hex);
    if (cross_check(copy_fd >= 0 ? copy_fd : fd, v.seen, v.nseen, err) < 0 ||
        layout_check(copy_fd >= 0 ? copy_fd : fd, v.seen, v.nseen, err) < 0) {
        info->reason = PN_FW_CORRUPT;
        goto out;
    }
    info->reason = PN_FW_OK;
    rc = 0;
out:
    if (v.a)
        archive_read_free(v.a);
    ring_finish(&v.ring);
    resources_free(v.res, v.nres);
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

/* ------------------------------------------------------------------ packing */

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
        bare = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
               (*p >= 'A' && *p <= 'Z') || *p == '.' || *p == '_' || *p == '-';
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
static char *pack_meta_conf(const struct pn_fw_pack_meta *m, uint64_t length,
                            const char *b2hex, size_t *len)
{
    struct sbuf b = {0};
    const char *const keys[] = {"meta-product",  "meta-description",  "meta-version",
                                "meta-author",   "meta-platform",     "meta-architecture",
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
        ssize_t n = pread_full(fd, buf, bufsize, (off_t)total);
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

static int pack_add(struct archive *a, const char *name, const void *data, size_t len,
                    time_t mtime, struct pn_err *err)
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
    hex(b2, 32, b2hex);
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
        !same_field(m->author, parsed.author) ||
        !same_field(m->description, parsed.description) ||
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
    if (!(po.sha = sha256_new()) || !(a = archive_write_new())) {
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
        ssize_t n = pread_full(in, buf, want, (off_t)done);
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
        sha256_done(po.sha, info->sha256);
        po.sha = NULL;
        hex(info->sha256, 32, info->sha256_hex);
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

/* ------------------------------------------------------------------ artifact store */

int pn_fw_artifact_open(struct pn_fw_artifact *a, const char *dir, struct pn_err *err)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
    struct stat st;
    if (stat(dir, &st) < 0)
        return pn_err_set(err, "artifact directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return pn_err_set(err, "artifact directory %s: not a directory", dir);
    if (snprintf(a->dir, sizeof(a->dir), "%s", dir) >= (int)sizeof(a->dir) ||
        snprintf(a->tmp, sizeof(a->tmp), "%s/.upload-XXXXXX", dir) >= (int)sizeof(a->tmp))
        return pn_err_set(err, "artifact directory %s: path too long", dir);
    a->fd = mkostemp(a->tmp, O_CLOEXEC);
    if (a->fd < 0) {
        int e = errno;
        a->tmp[0] = '\0';
        return pn_err_set(err, "artifact directory %s: %s", dir, strerror(e));
    }
    if (fchmod(a->fd, 0644) < 0 || fstat(a->fd, &st) < 0) {
        int e = errno;
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "artifact directory %s: %s", dir, strerror(e));
    }
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    return 0;
}

int pn_fw_artifact_publish(struct pn_fw_artifact *a, const char *sha256_hex,
                           struct pn_err *err)
{
    if (a->fd < 0 || !a->tmp[0])
        return pn_err_set(err, "internal error: no artifact to publish");
    if (strlen(sha256_hex) != 64 || strspn(sha256_hex, "0123456789abcdef") != 64) {
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "internal error: bad artifact name");
    }
    char path[sizeof(a->path)];
    if (snprintf(path, sizeof(path), "%s/%s.fw", a->dir, sha256_hex) >= (int)sizeof(path)) {
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "artifact directory %s: path too long", a->dir);
    }
    int rc = fsync(a->fd);
    int e = errno;
    if (close(a->fd) < 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    a->fd = -1;
    if (rc == 0 && rename(a->tmp, path) < 0) {
        rc = -1;
        e = errno;
    }
    if (rc < 0) {
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "storing %s: %s", path, strerror(e));
    }
    a->tmp[0] = '\0';
    snprintf(a->path, sizeof(a->path), "%s", path);
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        e = errno;
        if (dfd >= 0)
            close(dfd);
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "storing %s: %s", path, strerror(e));
    }
    close(dfd);
    return 0;
}

void pn_fw_artifact_discard(struct pn_fw_artifact *a)
{
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
    if (a->tmp[0]) {
        unlink(a->tmp);
        a->tmp[0] = '\0';
    }
    if (a->path[0]) {
        /* Two uploads of one archive race only when the first one's commit
         * failed; then the name may already hold the second one's file. */
        struct stat st;
        if (stat(a->path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino)
            unlink(a->path);
        a->path[0] = '\0';
    }
}

void pn_fw_artifact_keep(struct pn_fw_artifact *a)
{
    a->path[0] = '\0';
}
