/* SPDX-License-Identifier: Apache-2.0 */
/* Minimal assertions for unit tests: each failed CHECK prints file:line and
 * the expression; main() returns check_done(), non-zero if anything failed. */
#ifndef PINION_TESTS_CHECK_H
#define PINION_TESTS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(expr)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr);               \
        }                                                                                          \
    } while (0)

#define CHECK_STREQ(a, b)                                                                          \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        check_count++;                                                                             \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                           \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK_STREQ failed: %s == \"%s\", expected \"%s\"\n",          \
                    __FILE__, __LINE__, #a, check_a_ ? check_a_ : "(null)",                        \
                    check_b_ ? check_b_ : "(null)");                                               \
        }                                                                                          \
    } while (0)

/* Joins a/b[/c] into one of 16 rotating buffers, so a few results can be
 * used in the same call.  c may be NULL. */
static inline const char *check_path(const char *a, const char *b, const char *c)
{
    static char path[16][4200];
    static int slot;
    slot = (slot + 1) % 16;
    snprintf(path[slot], sizeof(path[slot]), "%s/%s%s%s", a, b, c ? "/" : "", c ? c : "");
    return path[slot];
}

static inline int check_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
