/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the libFuzzer targets (one per parser of untrusted input, see
 * README "Fuzzing"): a target is one file tests/fuzz/fuzz_NAME.c defining
 * LLVMFuzzerTestOneInput, plus one pinion_fuzz(fuzz_NAME) line in
 * tests/fuzz/CMakeLists.txt; run.sh finds it by name. */
#ifndef PINION_TESTS_FUZZ_H
#define PINION_TESTS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* An invariant the code under test promised; abort() is a crash for
 * libFuzzer, which saves the input. */
#define FUZZ_ASSERT(expr)                                                                          \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #expr);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A memory file (memfd) holding data[0..size), rewritten in place for every
 * input: no disk, and APIs that take a path read it through
 * fuzz_mem_path().  slot picks one of a few independent files. */
static int fuzz_fds[4] = {-1, -1, -1, -1};

static inline int fuzz_mem_fd(int slot, const uint8_t *data, size_t size)
{
    if (fuzz_fds[slot] < 0 && (fuzz_fds[slot] = memfd_create("pinion-fuzz", MFD_CLOEXEC)) < 0)
        abort();
    int fd = fuzz_fds[slot];
    if (ftruncate(fd, 0) < 0)
        abort();
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);
        if (n <= 0)
            abort();
        done += (size_t)n;
    }
    return fd;
}

/* "/proc/self/fd/N" of fuzz_mem_fd(slot, ...): a regular file by fstat. */
static inline const char *fuzz_mem_path(int slot, const uint8_t *data, size_t size)
{
    static char paths[4][40];
    snprintf(paths[slot], sizeof(paths[slot]), "/proc/self/fd/%d", fuzz_mem_fd(slot, data, size));
    return paths[slot];
}

/* data[0..size) as a NUL-terminated string (cut at the first NUL); caller
 * frees. */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Every error message is one line. */
static inline void fuzz_one_line(const char *msg)
{
    FUZZ_ASSERT(msg[0] != '\0');
    FUZZ_ASSERT(!strchr(msg, '\n') && !strchr(msg, '\r'));
}

#endif
