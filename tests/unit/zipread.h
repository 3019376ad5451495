/* SPDX-License-Identifier: Apache-2.0 */
/* One entry of a zip read with libarchive, independently of lib/fw, for
 * unit tests that compare lib/fw's results with the archive's bytes. */
#ifndef PINION_TESTS_ZIPREAD_H
#define PINION_TESTS_ZIPREAD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

/* Reads one entry of a zip with libarchive.  Returns a malloc'd buffer, or
 * NULL if the archive has no such entry. */
static inline unsigned char *zip_entry(const char *path, const char *entry, size_t *len)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    unsigned char *buf = NULL;

    archive_read_support_format_zip(a);
    if (archive_read_open_filename(a, path, 16384) != ARCHIVE_OK) {
        fprintf(stderr, "%s: %s\n", path, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        if (strcmp(archive_entry_pathname(e), entry) != 0)
            continue;
        size_t cap = 4096, n = 0;
        buf = malloc(cap);
        if (!buf)
            break;
        for (;;) {
            if (n == cap) {
                unsigned char *nb = realloc(buf, cap *= 2);
                if (!nb) {
                    free(buf);
                    buf = NULL;
                    break;
                }
                buf = nb;
            }
            la_ssize_t r = archive_read_data(a, buf + n, cap - n);
            if (r < 0) {
                fprintf(stderr, "%s: %s\n", path, archive_error_string(a));
                free(buf);
                buf = NULL;
                break;
            }
            if (r == 0)
                break;
            n += (size_t)r;
        }
        *len = n;
        break;
    }
    archive_read_free(a);
    return buf;
}

#endif
