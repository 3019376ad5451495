/* Semantic Versioning 2.0.0: parsing, precedence, and the version
 * requirements deployments use (NervesHub / Elixir style):
 *   "1.2.3"             exactly that version (same as "== 1.2.3")
 *   ">= 1.0.0 and < 2.0.0", "< 1.1.0", "!= 1.0.1"
 *   "~> 1.2"  (>= 1.2.0 and < 2.0.0-0),  "~> 1.2.3"  (>= 1.2.3 and < 1.3.0-0):
 *             the next line's prereleases are outside, as in Elixir
 *   "a or b"   ("and" binds tighter than "or")
 * Pure functions, no allocation beyond the caller's struct. */
#ifndef PN_SEMVER_H
#define PN_SEMVER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define PN_SEMVER_MAX 128

struct pn_semver {
    uint64_t major, minor, patch;
    char pre[PN_SEMVER_MAX];   /* prerelease without '-', "" if none */
};

/* 0 / -1: "X is not a SemVer version (MAJOR.MINOR.PATCH[-PRE][+BUILD])". */
int pn_semver_parse(const char *s, struct pn_semver *out, struct pn_err *err);

/* <0, 0, >0 by SemVer precedence (build metadata ignored). */
int pn_semver_cmp(const struct pn_semver *a, const struct pn_semver *b);

/* Checks a requirement's syntax.  "" (no requirement) is valid. */
int pn_semver_req_valid(const char *req, struct pn_err *err);

/* True when version satisfies req ("" matches everything).  An invalid
 * version or requirement never matches. */
bool pn_semver_matches(const char *version, const char *req);

#endif
