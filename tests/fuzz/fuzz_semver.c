/* SPDX-License-Identifier: Apache-2.0 */
/* SemVer versions and deployment version requirements (lib/semver.h): what
 * `deployment create --version` validates and piniond matches.  Checks that
 * validation and matching agree: valid <=> pn_semver_req_parse succeeds, an
 * invalid requirement matches no version, and precedence is a total order. */
#include "fuzz.h"
#include "semver.h"

static const char *const versions[] = {"0.0.0",   "1.0.0-rc.1", "1.0.0", "1.2.3",      "1.9.9",
                                       "2.0.0-0", "2.0.0",      "9.9.9", "10.0.0-x.7", "3.0.0+b.1"};
#define NVERSIONS (sizeof(versions) / sizeof(*versions))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_str(data, size);
    struct pn_err err;
    static struct pn_semver_req req; /* 20 KiB: off the stack */
    struct pn_semver fixed[NVERSIONS];
    for (size_t i = 0; i < NVERSIONS; i++)
        FUZZ_ASSERT(pn_semver_parse(versions[i], &fixed[i], NULL) == 0);

    /* The whole input as a requirement. */
    int valid = pn_semver_req_valid(s, &err);
    int parsed = pn_semver_req_parse(s, &req, NULL);
    FUZZ_ASSERT((valid == 0) == (parsed == 0));
    if (valid < 0)
        fuzz_one_line(err.msg);
    for (size_t i = 0; i < NVERSIONS; i++) {
        bool m = pn_semver_matches(versions[i], s);
        if (parsed < 0)
            FUZZ_ASSERT(!m); /* an invalid requirement never matches */
        else
            FUZZ_ASSERT(m == pn_semver_req_match(&req, &fixed[i]));
    }
    if (parsed == 0 && !s[0])
        FUZZ_ASSERT(req.n == 0);

    /* The input as "VERSION\nVERSION": parsing, and cmp antisymmetric,
     * reflexive and consistent with the fixed versions' order. */
    char *nl = strchr(s, '\n');
    if (nl)
        *nl = '\0';
    struct pn_semver a, b;
    if (pn_semver_parse(s, &a, &err) == 0) {
        FUZZ_ASSERT(pn_semver_cmp(&a, &a) == 0);
        FUZZ_ASSERT(pn_semver_matches(s, "")); /* "" matches every valid version */
        for (size_t i = 0; i < NVERSIONS; i++) {
            int c = pn_semver_cmp(&a, &fixed[i]);
            FUZZ_ASSERT(c == -pn_semver_cmp(&fixed[i], &a));
            for (size_t j = 0; j < NVERSIONS; j++)
                if (c < 0 && pn_semver_cmp(&fixed[i], &fixed[j]) <= 0)
                    FUZZ_ASSERT(pn_semver_cmp(&a, &fixed[j]) < 0); /* transitive */
        }
        if (nl && pn_semver_parse(nl + 1, &b, NULL) == 0)
            FUZZ_ASSERT(pn_semver_cmp(&a, &b) == -pn_semver_cmp(&b, &a));
    } else {
        fuzz_one_line(err.msg);
        FUZZ_ASSERT(!pn_semver_matches(s, "")); /* an invalid version never matches */
    }
    free(s);
    return 0;
}
