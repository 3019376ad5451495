/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to the fw_*.c files: what the verification's parts share.  Not
 * installed, not for callers (they include fw.h or fw_verify.h). */
#ifndef PINION_LIB_FW_INTERNAL_H
#define PINION_LIB_FW_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <archive.h>
#include <openssl/evp.h>

#include "fsutil.h" /* pn_pread_full */
#include "fw_verify.h"

#define SIG_ENTRY "meta.conf.ed25519"
#define META_ENTRY "meta.conf"
#define DATA_PREFIX "data/"
#define NAME_MAX_LEN 1024

/* fw_util.c */

/* b[0..n) as lowercase hex into out (2n + 1 bytes). */
void pn_fw_hex(const unsigned char *b, size_t n, char *out);
/* strdup of s, or of "" when s is NULL. */
char *pn_fw_strdup(const char *s);
EVP_MD_CTX *pn_fw_sha256_new(void);
/* Finishes and frees c. */
void pn_fw_sha256_done(EVP_MD_CTX *c, unsigned char out[32]);
int pn_fw_name_safe(const char *s);
const char *pn_fw_printable(const char *s, char *buf, size_t size);

/* fw_meta.c */

enum hash_kind { HASH_BLAKE2B, HASH_SHA256 };

/* A file-resource of meta.conf, and what the archive showed of it. */
struct resource {
    char *name;
    uint64_t length; /* bytes stored in the archive (data parts of a sparse map) */
    enum hash_kind kind;
    unsigned char digest[32];
    int seen;
};

void pn_fw_resources_free(struct resource *r, size_t n);
/* Parses meta.conf; fills meta and, when res is non-NULL, the resources. */
int pn_fw_meta_parse_resources(const void *buf, size_t len, struct pn_fw_meta *meta,
                               struct resource **res, size_t *nres, struct pn_err *err);

/* fw_ring.c */

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

int pn_fw_ring_start(struct ring *r, int in_fd, int out_fd);
void pn_fw_ring_finish(struct ring *r);
la_ssize_t pn_fw_ring_read(struct archive *a, void *arg, const void **out);
int pn_fw_ring_drain(struct ring *r, int *e, char *which);

/* fw_zip.c */

struct seen_entry {
    char *name;
    uint64_t size;
};

int pn_fw_zip_cross_check(int fd, const struct seen_entry *seen, size_t nseen, struct pn_err *err);
int pn_fw_zip_layout_check(int fd, const struct seen_entry *seen, size_t nseen, struct pn_err *err);

#endif
