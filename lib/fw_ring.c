/* SPDX-License-Identifier: Apache-2.0 */
/* The reader thread of pn_fw_verify: reads, hashes and copies the archive
 * while libarchive inflates it (fw_internal.h). */
#include "fw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <openssl/evp.h>

#include "fsutil.h"

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
        ssize_t got = pn_pread_full(r->in_fd, b, SLOT_BYTES, (off_t)r->total);
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
                sync_file_range(r->out_fd, (off_t)flushed, (off_t)pending, SYNC_FILE_RANGE_WRITE);
                flushed += pending;
                pending = 0;
            }
        }
    }
    return NULL;
}

int pn_fw_ring_start(struct ring *r, int in_fd, int out_fd)
{
    memset(r, 0, sizeof(*r));
    r->in_fd = in_fd;
    r->out_fd = out_fd;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (int i = 0; i < RING_SLOTS; i++)
        if (!(r->buf[i] = malloc(SLOT_BYTES)))
            return -1;
    if (!(r->sha = pn_fw_sha256_new()))
        return -1;
    if (pthread_create(&r->thread, NULL, ring_main, r) != 0)
        return -1;
    r->started = 1;
    return 0;
}

/* Stops the reader (if still running), waits for it and frees the ring. */
void pn_fw_ring_finish(struct ring *r)
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

la_ssize_t pn_fw_ring_read(struct archive *a, void *arg, const void **out)
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
int pn_fw_ring_drain(struct ring *r, int *e, char *which)
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
