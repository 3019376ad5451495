#include "semver.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A numeric identifier: digits, no leading zero (except "0"). */
static int parse_num(const char **p, uint64_t *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s) || (s[0] == '0' && isdigit((unsigned char)s[1])))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end - s > 19)
        return -1;
    *out = v;
    *p = end;
    return 0;
}

/* Dot-separated identifiers of [0-9A-Za-z-]; numeric ones without leading
 * zeros when check_zeros. */
static int parse_idents(const char **p, bool check_zeros)
{
    const char *s = *p;
    for (;;) {
        const char *start = s;
        bool digits = true;
        while (isalnum((unsigned char)*s) || *s == '-') {
            if (!isdigit((unsigned char)*s))
                digits = false;
            s++;
        }
        if (s == start)
            return -1;
        if (check_zeros && digits && s - start > 1 && *start == '0')
            return -1;
        if (*s != '.')
            break;
        s++;
    }
    *p = s;
    return 0;
}

int pn_semver_parse(const char *s, struct pn_semver *out, struct pn_err *err)
{
    const char *p = s;
    memset(out, 0, sizeof(*out));
    if (!s || strlen(s) >= PN_SEMVER_MAX || parse_num(&p, &out->major) < 0 || *p++ != '.' ||
        parse_num(&p, &out->minor) < 0 || *p++ != '.' || parse_num(&p, &out->patch) < 0)
        goto bad;
    if (*p == '-') {
        const char *pre = ++p;
        if (parse_idents(&p, true) < 0)
            goto bad;
        memcpy(out->pre, pre, (size_t)(p - pre));
        out->pre[p - pre] = '\0';
    }
    if (*p == '+') {
        p++;
        if (parse_idents(&p, false) < 0)
            goto bad;
    }
    if (*p)
        goto bad;
    return 0;
bad:
    return pn_err_set(err, "'%s' is not a SemVer version (MAJOR.MINOR.PATCH[-PRE][+BUILD])",
                      s ? s : "");
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

/* Prerelease precedence: identifiers compared one by one, numeric ones
 * numerically and below alphanumeric ones; a version without prerelease is
 * above any with one. */
static int cmp_pre(const char *a, const char *b)
{
    if (!*a || !*b)
        return !*a && !*b ? 0 : (!*a ? 1 : -1);
    while (*a && *b) {
        size_t la = strcspn(a, "."), lb = strcspn(b, ".");
        bool na = strspn(a, "0123456789") == la, nb = strspn(b, "0123456789") == lb;
        int c;
        if (na && nb)
            c = la != lb ? (la < lb ? -1 : 1) : strncmp(a, b, la);
        else if (na || nb)
            c = na ? -1 : 1;
        else {
            c = strncmp(a, b, la < lb ? la : lb);
            if (!c)
                c = la < lb ? -1 : la > lb;
        }
        if (c)
            return c < 0 ? -1 : 1;
        a += la + (a[la] == '.');
        b += lb + (b[lb] == '.');
    }
    return *a ? 1 : *b ? -1 : 0;
}

int pn_semver_cmp(const struct pn_semver *a, const struct pn_semver *b)
{
    int c = cmp_u64(a->major, b->major);
    if (!c)
        c = cmp_u64(a->minor, b->minor);
    if (!c)
        c = cmp_u64(a->patch, b->patch);
    return c ? c : cmp_pre(a->pre, b->pre);
}

/* One clause "OP VERSION".  For "~>" the version may have two parts. */
static int clause(const char *text, size_t len, const struct pn_semver *v, bool *result)
{
    char buf[PN_SEMVER_MAX + 8], op[3] = "";
    while (len && isspace((unsigned char)*text))
        text++, len--;
    while (len && isspace((unsigned char)text[len - 1]))
        len--;
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *p = buf;
    static const char *const ops[] = {"==", "!=", ">=", "<=", "~>", ">", "<"};
    for (size_t i = 0; i < sizeof(ops) / sizeof(*ops); i++)
        if (!strncmp(p, ops[i], strlen(ops[i]))) {
            snprintf(op, sizeof(op), "%s", ops[i]);
            p += strlen(ops[i]);
            break;
        }
    while (isspace((unsigned char)*p))
        p++;
    struct pn_semver want, upper;
    if (!strcmp(op, "~>")) {
        /* ~> 1.2 means >= 1.2.0 and < 2.0.0-0; ~> 1.2.3 means < 1.3.0-0: as in
         * Elixir, the next line's prereleases (2.0.0-rc.1) are outside. */
        char full[PN_SEMVER_MAX + 16];
        int dots = 0;
        for (const char *q = p; *q && *q != '-' && *q != '+'; q++)
            dots += *q == '.';
        size_t pl = strlen(p);
        memcpy(full, p, pl + 1);
        if (dots == 1)
            memcpy(full + pl, ".0", 3);
        if (pn_semver_parse(full, &want, NULL) < 0 || dots < 1 || dots > 2)
            return -1;
        memset(&upper, 0, sizeof(upper));
        if (dots == 1)
            upper.major = want.major + 1;
        else {
            upper.major = want.major;
            upper.minor = want.minor + 1;
        }
        upper.pre[0] = '0'; /* X.Y.0-0: the lowest version of that line */
        if (v)
            *result = pn_semver_cmp(v, &want) >= 0 && pn_semver_cmp(v, &upper) < 0;
        return 0;
    }
    if (pn_semver_parse(p, &want, NULL) < 0)
        return -1;
    if (!v)
        return 0;
    int c = pn_semver_cmp(v, &want);
    if (!op[0] || !strcmp(op, "=="))
        *result = c == 0;
    else if (!strcmp(op, "!="))
        *result = c != 0;
    else if (!strcmp(op, ">="))
        *result = c >= 0;
    else if (!strcmp(op, "<="))
        *result = c <= 0;
    else if (!strcmp(op, ">"))
        *result = c > 0;
    else
        *result = c < 0;
    return 0;
}

/* Finds " WORD " (surrounded by spaces) in [s, s+len). */
static const char *find_word(const char *s, size_t len, const char *word)
{
    size_t wl = strlen(word);
    for (size_t i = 0; i + wl + 2 <= len; i++)
        if (s[i] == ' ' && !strncmp(s + i + 1, word, wl) && s[i + wl + 1] == ' ')
            return s + i;
    return NULL;
}

/* Evaluates req against v (v NULL: syntax check only).  "or" of "and"s. */
static int evaluate(const char *req, const struct pn_semver *v, bool *result)
{
    size_t len = strlen(req);
    bool any = false;
    const char *alt = req, *end = req + len;
    while (alt < end) {
        const char *o = find_word(alt, (size_t)(end - alt), "or");
        const char *alt_end = o ? o : end;
        bool all = true;
        const char *c = alt;
        while (c < alt_end) {
            const char *a = find_word(c, (size_t)(alt_end - c), "and");
            const char *c_end = a ? a : alt_end;
            bool r = false;
            if (clause(c, (size_t)(c_end - c), v, &r) < 0)
                return -1;
            all = all && r;
            c = a ? a + 5 : alt_end;
        }
        any = any || all;
        alt = o ? o + 4 : end;
    }
    *result = any;
    return 0;
}

int pn_semver_req_valid(const char *req, struct pn_err *err)
{
    bool r;
    if (!req || !*req)
        return 0;
    if (strlen(req) > 512 || evaluate(req, NULL, &r) < 0)
        return pn_err_set(err, "'%s' is not a version requirement (e.g. \"< 1.1.0\", "
                               "\">= 1.0.0 and < 2.0.0\", \"~> 1.2\")", req);
    return 0;
}

bool pn_semver_matches(const char *version, const char *req)
{
    struct pn_semver v;
    bool r = false;
    if (pn_semver_parse(version, &v, NULL) < 0)
        return false;
    if (!req || !*req)
        return true;
    return evaluate(req, &v, &r) == 0 && r;
}
