/* SPDX-License-Identifier: Apache-2.0 */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

unsigned char *pn_file_read(const char *path, size_t max, size_t *len, struct pn_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        pn_err_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        pn_err_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((unsigned long long)st.st_size > max) {
        pn_err_set(err, "%s: larger than %zu bytes", path, max);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        pn_err_set(err, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    for (;;) {
        if (n + 1 >= cap) { /* file grew while reading: still honour max */
            if (cap > max) {
                pn_err_set(err, "%s: larger than %zu bytes", path, max);
                goto fail;
            }
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            pn_err_set(err, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

int pn_write_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int pn_file_create(const char *path, const void *data, size_t len, mode_t mode, struct pn_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        if (errno == EEXIST)
            return pn_err_set(err, "%s: already exists, refusing to overwrite", path);
        return pn_err_set(err, "%s: %s", path, strerror(errno));
    }
    if (fchmod(fd, mode) < 0 || pn_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return pn_err_set(err, "%s: %s", path, strerror(e));
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(path);
        return pn_err_set(err, "%s: %s", path, strerror(e));
    }
    return 0;
}

int pn_file_replace(const char *path, const void *data, size_t len, mode_t mode, struct pn_err *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return pn_err_set(err, "%s: path too long", path);
    unlink(tmp);
    if (pn_file_create(tmp, data, len, mode, err) < 0)
        return -1;
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return pn_err_set(err, "%s: %s", path, strerror(e));
    }
    return 0;
}

int pn_file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

ssize_t pn_pread_full(int fd, void *buf, size_t len, off_t off)
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

long long pn_mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

long pn_mono_ms(void)
{
    return (long)(pn_mono_us() / 1000);
}
