/* SPDX-License-Identifier: Apache-2.0 */
/* One human sentence describing why an operation failed.
 *
 * Every fallible libpinion function takes a struct pn_err * (may be NULL)
 * and, on failure, returns -1 (or NULL) after filling it.  The same
 * sentence reaches the CLI's stderr or the broker's log unchanged. */
#ifndef PINION_LIB_ERR_H
#define PINION_LIB_ERR_H

#include <stddef.h>

#define PN_ERR_MAX 512

struct pn_err {
    char msg[PN_ERR_MAX];
    /* The server's SQLSTATE when a database statement failed (lib/db.c),
     * else "": lets a caller tell a conflict worth retrying
     * (pn_db_conflict) from a refusal. */
    char sqlstate[6];
};

/* Sets err->msg (printf-style) and returns -1 so callers can
 * `return pn_err_set(err, "...")`.  NULL err is allowed. */
int pn_err_set(struct pn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Like pn_err_set, then appends ": <first OpenSSL error>" when the
 * OpenSSL error queue holds one, and clears the queue. */
int pn_err_ssl(struct pn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Shows the control characters of s (in place) as '?', so a value from a
 * device, a certificate or signed metadata cannot break a line or drive a
 * terminal.  Returns s. */
char *pn_printable(char *s);

/* Prefixes an existing message: "<prefix>: <old message>". */
int pn_err_prefix(struct pn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
