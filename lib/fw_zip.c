/* SPDX-License-Identifier: Apache-2.0 */
/* The zip layout of a .fw: its central directory and local headers
 * cross-checked against what the streaming read saw (fw_internal.h). */
#include "fw_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

/* Reads a regular file with pread for libarchive's seeking zip reader. */
struct preader {
    int fd;
    int64_t pos, size;
    unsigned char buf[65536];
};

static la_ssize_t preader_read(struct archive *a, void *arg, const void **out)
{
    struct preader *p = arg;
    ssize_t n = pn_pread_full(p->fd, p->buf, sizeof(p->buf), (off_t)p->pos);
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

/* Streaming readers (fwup reading stdin, and pn_fw_verify) follow the
 * local headers; readers of files (fwup -i FILE, unzip, Python) follow the
 * central directory.  Both must see the same entries, in the same order and
 * with the same sizes, or the archive means different things to different
 * tools; a file cut short at its central directory is refused here too. */
int pn_fw_zip_cross_check(int fd, const struct seen_entry *seen, size_t nseen, struct pn_err *err)
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
            pn_err_set(err,
                       "corrupt zip: the central directory does not match the entries "
                       "(at %s)",
                       pn_fw_printable(i < nseen ? seen[i].name
                                       : name    ? name
                                                 : "?",
                                       pn, sizeof(pn)));
            goto out;
        }
    }
    if (i != nseen) {
        pn_err_set(err,
                   "corrupt zip: the central directory lists %zu entries, the archive "
                   "holds %zu",
                   i, nseen);
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
    return pn_pread_full(fd, buf, n, (off_t)off) == (ssize_t)n ? 0 : -1;
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

int pn_fw_zip_layout_check(int fd, const struct seen_entry *seen, size_t nseen, struct pn_err *err)
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
        return pn_err_set(err,
                          "corrupt zip: the central directory lists %llu entries, the "
                          "archive holds %zu",
                          (unsigned long long)entries, nseen);
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
            pn_err_set(err,
                       "corrupt zip: the central directory does not match the entries (at "
                       "%s)",
                       pn_fw_printable(seen[i].name, pn, sizeof(pn)));
            goto out;
        }
        unsigned char lh[30];
        if (lho != next || read_exact(fd, lh, sizeof(lh), lho) < 0 || memcmp(lh, "PK\3\4", 4)) {
            pn_err_set(err,
                       "corrupt zip: the central directory's %s is not the entry read at "
                       "offset %llu",
                       pn_fw_printable(seen[i].name, pn, sizeof(pn)), (unsigned long long)next);
            goto out;
        }
        uint64_t lnlen = le(lh + 26, 2), lxlen = le(lh + 28, 2);
        uint64_t data = lho + 30 + lnlen + lxlen, end = data + csize;
        if (end < data || end > cd_off) {
            pn_err_set(err, "corrupt zip: %s runs past the central directory",
                       pn_fw_printable(seen[i].name, pn, sizeof(pn)));
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
                               pn_fw_printable(seen[i].name, pn, sizeof(pn)));
                    goto out;
                }
            }
            size_t sizes = lz64 ? 16 : 8, sig = 0;
            if (end + 4 <= cd_off && read_exact(fd, dd, 4, end) == 0 && !memcmp(dd, "PK\7\10", 4))
                sig = 4;
            if (end + sig + 4 + sizes > cd_off || read_exact(fd, dd, 4 + sizes, end + sig) < 0) {
                pn_err_set(err, "corrupt zip: the data descriptor of %s is missing",
                           pn_fw_printable(seen[i].name, pn, sizeof(pn)));
                goto out;
            }
            got_crc = le(dd, 4);
            if (le(dd + 4, (int)sizes / 2) != csize ||
                le(dd + 4 + sizes / 2, (int)sizes / 2) != usize) {
                pn_err_set(err,
                           "corrupt zip: the sizes of %s differ between its data descriptor "
                           "and the central directory",
                           pn_fw_printable(seen[i].name, pn, sizeof(pn)));
                goto out;
            }
            end += sig + 4 + sizes;
        }
        if (got_crc != crc) {
            pn_err_set(err,
                       "corrupt zip: the CRC of %s differs between its entry and the central "
                       "directory",
                       pn_fw_printable(seen[i].name, pn, sizeof(pn)));
            goto out;
        }
        next = end;
        c += 46 + nlen + xlen + clen;
    }
    if (next != cd_off) {
        pn_err_set(err,
                   "corrupt zip: %llu bytes between the last entry and the central "
                   "directory",
                   (unsigned long long)(cd_off - next));
        goto out;
    }
    rc = 0;
out:
    free(cd);
    return rc;
}
