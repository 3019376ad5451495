/* SPDX-License-Identifier: Apache-2.0 */
#include "semver.h"

#include <ctype.h>
#include <errno.h>
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

/* One clause "[OP] VERSION" at *p (no blank before it); *p moves past it.
 * For "~>" the version may have two parts. */
static int parse_clause(const char **p, struct pn_semver_clause *c)
{
    static const struct {
        const char *text;
        enum pn_semver_op op;
    } ops[] = {{"==", PN_SEMVER_EQ}, {"!=", PN_SEMVER_NE},    {">=", PN_SEMVER_GE},
               {"<=", PN_SEMVER_LE}, {"~>", PN_SEMVER_TILDE}, {">", PN_SEMVER_GT},
               {"<", PN_SEMVER_LT}};
    const char *s = *p;
    c->op = PN_SEMVER_EQ; /* a bare version means exactly that version */
    for (size_t i = 0; i < sizeof(ops) / sizeof(*ops); i++)
        if (!strncmp(s, ops[i].text, strlen(ops[i].text))) {
            c->op = ops[i].op;
            s += strlen(ops[i].text);
            break;
        }
    while (*s == ' ')
        s++;
    size_t len = strcspn(s, " ");
    char buf[PN_SEMVER_MAX + 3];
    if (len == 0 || len >= PN_SEMVER_MAX)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (c->op == PN_SEMVER_TILDE) {
        /* ~> 1.2 means >= 1.2.0 and < 2.0.0-0; ~> 1.2.3 means < 1.3.0-0: as in
         * Elixir, the next line's prereleases (2.0.0-rc.1) are outside. */
        size_t core = strcspn(buf, "-+");
        int dots = 0;
        for (size_t i = 0; i < core; i++)
            dots += buf[i] == '.';
        if (dots == 1 && core == len)
            memcpy(buf + len, ".0", 3);
        else if (dots != 2)
            return -1; /* "~> 1", "~> 1.2-rc" (no third part to hang it on) */
        if (pn_semver_parse(buf, &c->lo, NULL) < 0)
            return -1;
        memset(&c->hi, 0, sizeof(c->hi));
        c->hi.major = c->lo.major + (dots == 1); /* no overflow: at most 19 digits */
        c->hi.minor = dots == 1 ? 0 : c->lo.minor + 1;
        c->hi.pre[0] = '0'; /* X.Y.0-0: the lowest version of that line */
    } else if (pn_semver_parse(buf, &c->lo, NULL) < 0) {
        return -1;
    }
    *p = s + len;
    return 0;
}

int pn_semver_req_parse(const char *req, struct pn_semver_req *out, struct pn_err *err)
{
    out->n = 0;
    if (!req || !*req)
        return 0;
    if (strlen(req) > PN_SEMVER_REQ_MAX)
        return pn_err_set(err, "version requirement is longer than %d bytes", PN_SEMVER_REQ_MAX);
    const char *p = req;
    bool new_branch = false;
    for (;;) {
        while (*p == ' ')
            p++;
        /* An empty clause or branch (" or 1.0.0", "1.0.0 or  or 2.0.0",
         * "1.0.0 and ") is refused here: it used to count as true and so
         * made the whole requirement match every version. */
        if (out->n == PN_SEMVER_REQ_CLAUSES || parse_clause(&p, &out->c[out->n]) < 0)
            break;
        out->c[out->n++].new_branch = new_branch;
        while (*p == ' ')
            p++;
        if (!*p)
            return 0;
        if (!strncmp(p, "and ", 4))
            new_branch = false, p += 4;
        else if (!strncmp(p, "or ", 3))
            new_branch = true, p += 3;
        else
            break;
    }
    out->n = 0;
    pn_err_set(err,
               "'%s' is not a version requirement (e.g. \"< 1.1.0\", "
               "\">= 1.0.0 and < 2.0.0\", \"~> 1.2\", \"1.0.0 or 1.1.0\")",
               req);
    if (err)
        pn_printable(err->msg); /* one line, whatever the text held */
    return -1;
}

static bool clause_match(const struct pn_semver_clause *c, const struct pn_semver *v)
{
    int cmp = pn_semver_cmp(v, &c->lo);
    switch (c->op) {
    case PN_SEMVER_EQ:
        return cmp == 0;
    case PN_SEMVER_NE:
        return cmp != 0;
    case PN_SEMVER_GE:
        return cmp >= 0;
    case PN_SEMVER_LE:
        return cmp <= 0;
    case PN_SEMVER_GT:
        return cmp > 0;
    case PN_SEMVER_LT:
        return cmp < 0;
    case PN_SEMVER_TILDE:
        return cmp >= 0 && pn_semver_cmp(v, &c->hi) < 0;
    }
    return false;
}

/* "and" binds tighter than "or": a branch holds while all its clauses do,
 * the requirement when any branch does. */
bool pn_semver_req_match(const struct pn_semver_req *req, const struct pn_semver *v)
{
    if (req->n == 0)
        return true;
    bool any = false, all = true;
    for (size_t i = 0; i < req->n; i++) {
        if (req->c[i].new_branch) {
            any = any || all;
            all = true;
        }
        all = all && clause_match(&req->c[i], v);
    }
    return any || all;
}

int pn_semver_req_valid(const char *req, struct pn_err *err)
{
    struct pn_semver_req r;
    return pn_semver_req_parse(req, &r, err);
}

bool pn_semver_matches(const char *version, const char *req)
{
    struct pn_semver v;
    struct pn_semver_req r;
    if (pn_semver_parse(version, &v, NULL) < 0 || pn_semver_req_parse(req, &r, NULL) < 0)
        return false;
    return pn_semver_req_match(&r, &v);
}
