/* SPDX-License-Identifier: Apache-2.0 */
#include "ident.h"

#include <stdlib.h>
#include <string.h>

static bool charset_ok(const char *s, size_t len, size_t max, bool colon)
{
    if (!s || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-' || (colon && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

bool pn_ident_valid_n(const char *s, size_t len)
{
    return charset_ok(s, len, PN_IDENT_MAX, true);
}

bool pn_ident_valid(const char *s)
{
    return s && pn_ident_valid_n(s, strnlen(s, PN_IDENT_MAX + 1));
}

bool pn_ident_reserved(const char *s)
{
    return s && strcmp(s, PN_EVENTS_LEVEL) == 0;
}

bool pn_tag_valid(const char *s)
{
    return s && charset_ok(s, strnlen(s, 65), 64, true);
}

bool pn_name_valid(const char *s)
{
    return s && charset_ok(s, strnlen(s, 65), 64, false);
}

bool pn_topic_root_valid(const char *s)
{
    if (!s || strnlen(s, PN_TOPIC_ROOT_MAX + 1) > PN_TOPIC_ROOT_MAX)
        return false;
    for (;;) {
        const char *slash = strchr(s, '/');
        size_t len = slash ? (size_t)(slash - s) : strlen(s);
        if (!charset_ok(s, len, PN_TOPIC_ROOT_MAX, false))
            return false;
        if (!slash)
            return true;
        s = slash + 1;
    }
}

int pn_addr_split(const char *addr, char *host, size_t hlen, int *port)
{
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || colon == addr)
        return -1;
    /* Digits only: strtol alone would also take a sign and leading blanks. */
    const char *digits = colon + 1;
    if (!digits[0] || digits[strspn(digits, "0123456789")] != '\0')
        return -1;
    long p = strtol(digits, NULL, 10);
    if (p < 1 || p > 65535)
        return -1;
    size_t n = (size_t)(colon - addr);
    if (addr[0] == '[') {
        /* [IPv6]:PORT: the bracket closes right before the port's colon. */
        if (n < 2 || colon[-1] != ']')
            return -1;
        addr++;
        n -= 2;
    } else if (memchr(addr, ':', n)) {
        /* An IPv6 address without brackets: where its port starts is a
         * guess ("::1:8883"). */
        return -1;
    }
    if (n == 0 || n >= hlen)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (addr[i] == '[' || addr[i] == ']' || (unsigned char)addr[i] <= ' ' || addr[i] == 0x7f)
            return -1;
    memcpy(host, addr, n);
    host[n] = '\0';
    *port = (int)p;
    return 0;
}
