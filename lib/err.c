/* SPDX-License-Identifier: Apache-2.0 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

char *pn_printable(char *s)
{
    for (unsigned char *p = (unsigned char *)s; p && *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return s;
}

/* An error is one line: libraries' messages (libarchive's end in '\n') and
 * values from hostile input lose their control characters here. */
static void one_line(char *msg)
{
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    pn_printable(msg);
}

int pn_err_set(struct pn_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        one_line(err->msg);
        err->sqlstate[0] = '\0';
    }
    return -1;
}

int pn_err_ssl(struct pn_err *err, const char *fmt, ...)
{
    unsigned long e = ERR_peek_last_error();
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        if (e) {
            size_t n = strlen(err->msg);
            char buf[256];
            ERR_error_string_n(e, buf, sizeof(buf));
            const char *reason = ERR_reason_error_string(e);
            snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", reason ? reason : buf);
        }
        one_line(err->msg);
        err->sqlstate[0] = '\0';
    }
    ERR_clear_error();
    return -1;
}

int pn_err_prefix(struct pn_err *err, const char *fmt, ...)
{
    if (err) {
        char old[PN_ERR_MAX];
        va_list ap;
        memcpy(old, err->msg, sizeof(old));
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof(err->msg)) {
            size_t used = (size_t)n, room = sizeof(err->msg) - used;
            size_t olen = strnlen(old, sizeof(old) - 1);
            if (room > 2) {
                memcpy(err->msg + used, ": ", 2);
                used += 2;
                room -= 2;
                size_t take = olen < room - 1 ? olen : room - 1;
                memcpy(err->msg + used, old, take);
                err->msg[used + take] = '\0';
            }
        }
    }
    return -1;
}
