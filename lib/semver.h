/* SPDX-License-Identifier: Apache-2.0 */
/* Semantic Versioning 2.0.0: parsing, precedence, and the version
 * requirements deployments use (NervesHub / Elixir style):
 *   "1.2.3"             exactly that version (same as "== 1.2.3")
 *   ">= 1.0.0 and < 2.0.0", "< 1.1.0", "!= 1.0.1"
 *   "~> 1.2"  (>= 1.2.0 and < 2.0.0-0),  "~> 1.2.3"  (>= 1.2.3 and < 1.3.0-0):
 *             the next line's prereleases are outside, as in Elixir
 *   "a or b"   ("and" binds tighter than "or")
 * Pure functions, no allocation beyond the caller's struct. */
#ifndef PINION_LIB_SEMVER_H
#define PINION_LIB_SEMVER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define PN_SEMVER_MAX 128

struct pn_semver {
    uint64_t major, minor, patch;
    char pre[PN_SEMVER_MAX]; /* prerelease without '-', "" if none */
};

/* 0 / -1: "X is not a SemVer version (MAJOR.MINOR.PATCH[-PRE][+BUILD])". */
int pn_semver_parse(const char *s, struct pn_semver *out, struct pn_err *err);

/* <0, 0, >0 by SemVer precedence (build metadata ignored). */
int pn_semver_cmp(const struct pn_semver *a, const struct pn_semver *b);

/* A parsed requirement: "or" of "and"s of clauses.  Validation and matching
 * both go through pn_semver_req_parse, so a requirement is matched exactly as
 * it was validated (one grammar, one parser):
 *   req    := "" | branch (" or " branch)*
 *   branch := clause (" and " clause)*
 *   clause := [OP] VERSION    OP: == != >= <= > < ~>
 * Tokens are separated by spaces (more than one, or none between OP and
 * VERSION, is fine); every branch and clause must be non-empty. */
#define PN_SEMVER_REQ_MAX 512    /* bytes of requirement text */
#define PN_SEMVER_REQ_CLAUSES 64 /* more than 512 bytes can hold */

enum pn_semver_op {
    PN_SEMVER_EQ,
    PN_SEMVER_NE,
    PN_SEMVER_GE,
    PN_SEMVER_LE,
    PN_SEMVER_GT,
    PN_SEMVER_LT,
    PN_SEMVER_TILDE, /* ~>: v >= lo and v < hi */
};

struct pn_semver_clause {
    enum pn_semver_op op;
    bool new_branch;         /* preceded by "or" (false for the first) */
    struct pn_semver lo, hi; /* hi: only for ~> */
};

struct pn_semver_req {
    size_t n; /* 0: the empty requirement, matches all */
    struct pn_semver_clause c[PN_SEMVER_REQ_CLAUSES];
};

/* Parses req into out.  0 / -1: "'X' is not a version requirement ...". */
int pn_semver_req_parse(const char *req, struct pn_semver_req *out, struct pn_err *err);

/* True when v satisfies a parsed requirement. */
bool pn_semver_req_match(const struct pn_semver_req *req, const struct pn_semver *v);

/* Checks a requirement's syntax (pn_semver_req_parse).  "" is valid. */
int pn_semver_req_valid(const char *req, struct pn_err *err);

/* True when version satisfies req ("" matches everything).  An invalid
 * version or requirement (one pn_semver_req_valid refuses) never matches. */
bool pn_semver_matches(const char *version, const char *req);

#endif
