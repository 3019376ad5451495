/* SPDX-License-Identifier: Apache-2.0 */
/* Small, careful system helpers: whole-file reads with a size cap,
 * exclusive creation (never overwrite a key), atomic replacement, full
 * reads and writes, and the one monotonic clock every program uses. */
#ifndef PINION_LIB_FSUTIL_H
#define PINION_LIB_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* Reads a whole regular file of at most max bytes.  Returns a malloc'd
 * buffer with a NUL appended (not counted in *len); caller frees.  NULL and
 * err on failure ("PATH: No such file or directory", "PATH: larger than ..."). */
unsigned char *pn_file_read(const char *path, size_t max, size_t *len, struct pn_err *err);

/* Creates path with the given mode and contents; fails if it exists.  The
 * data is fsync'd; on any failure the partial file is removed. 0 / -1. */
int pn_file_create(const char *path, const void *data, size_t len, mode_t mode, struct pn_err *err);

/* Writes to a temporary name in the same directory, fsyncs, sets mode and
 * renames over path, so readers see the old or the new file, never half. */
int pn_file_replace(const char *path, const void *data, size_t len, mode_t mode,
                    struct pn_err *err);

/* Writes all of data to fd, retrying short writes and EINTR.  0 / -1
 * (errno set). */
int pn_write_all(int fd, const void *data, size_t len);

/* pread until len bytes or end of file: bytes read, or -1 (errno). */
ssize_t pn_pread_full(int fd, void *buf, size_t len, off_t off);

/* Returns 1 if path exists (any type), else 0. */
int pn_file_exists(const char *path);

/* CLOCK_MONOTONIC in microseconds and in milliseconds: for intervals and
 * deadlines, never for dates. */
long long pn_mono_us(void);
long pn_mono_ms(void);

#endif
