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
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 1 || p > 65535)
        return -1;
    size_t n = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']') {
        addr++;
        n = n >= 2 ? n - 2 : 0;
    }
    if (n == 0 || n >= hlen)
        return -1;
    memcpy(host, addr, n);
    host[n] = '\0';
    *port = (int)p;
    return 0;
}
