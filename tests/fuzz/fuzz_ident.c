/* SPDX-License-Identifier: Apache-2.0 */
/* Identifiers, tags, names and topic roots (lib/ident.h): every value that
 * may end up in a topic, a file name or a table.  Each validator is checked
 * against a straightforward restatement of its rule. */
#include <stdbool.h>

#include "fuzz.h"
#include "ident.h"

static bool in_set(unsigned char c, const char *extra)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr(extra, c));
}

/* ^[A-Za-z0-9<extra>]{1,max}$ over exactly len bytes. */
static bool ref_valid(const char *s, size_t len, const char *extra, size_t max)
{
    if (len < 1 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!in_set((unsigned char)s[i], extra))
            return false;
    return true;
}

static bool ref_topic_root(const char *s)
{
    size_t len = strlen(s);
    if (len < 1 || len > PN_TOPIC_ROOT_MAX || s[0] == '/' || s[len - 1] == '/' || strstr(s, "//"))
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] != '/' && !in_set((unsigned char)s[i], "._-"))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *raw = (const char *)data;
    FUZZ_ASSERT(pn_ident_valid_n(raw, size) == ref_valid(raw, size, "._:-", PN_IDENT_MAX));
    char *s = fuzz_str(data, size);
    size_t len = strlen(s);
    FUZZ_ASSERT(pn_ident_valid(s) == ref_valid(s, len, "._:-", PN_IDENT_MAX));
    FUZZ_ASSERT(pn_tag_valid(s) == ref_valid(s, len, "._:-", 64));
    FUZZ_ASSERT(pn_name_valid(s) == ref_valid(s, len, "._-", 64));
    FUZZ_ASSERT(pn_topic_root_valid(s) == ref_topic_root(s));
    if (pn_ident_reserved(s))
        FUZZ_ASSERT(pn_ident_valid(s));
    free(s);
    return 0;
}
