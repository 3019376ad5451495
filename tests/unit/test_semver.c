/* SPDX-License-Identifier: Apache-2.0 */
/* SemVer 2.0.0 parsing, precedence and deployment version requirements. */
#include "check.h"
#include "semver.h"

static int cmp(const char *a, const char *b)
{
    struct pn_semver x, y;
    if (pn_semver_parse(a, &x, NULL) < 0 || pn_semver_parse(b, &y, NULL) < 0)
        return 99;
    return pn_semver_cmp(&x, &y);
}

int main(void)
{
    struct pn_semver v;
    struct pn_err err;
    const char *good[] = {"0.0.0",
                          "1.2.3",
                          "10.20.30",
                          "1.0.0-alpha",
                          "1.0.0-alpha.1",
                          "1.0.0-0.3.7",
                          "1.0.0-x.7.z.92",
                          "1.0.0+20130313144700",
                          "1.0.0-beta+exp.sha.5114f85",
                          "1.0.0-x-y-z.--"};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        CHECK(pn_semver_parse(good[i], &v, NULL) == 0);
    const char *bad[] = {
        "",       "1",      "1.2",     "1.2.3.4", "01.2.3",   "1.02.3",
        "1.2.03", "v1.2.3", "1.2.3-",  "1.2.3+",  "1.2.3-01", "1.2.3-a..b",
        "1.2.3 ", " 1.2.3", "1.2.3-é", "-1.2.3",  "1.2.x",    "99999999999999999999.0.0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        CHECK(pn_semver_parse(bad[i], &v, &err) < 0);
    }
    CHECK(pn_semver_parse("1.2", &v, &err) < 0 && strstr(err.msg, "not a SemVer version"));

    /* Precedence example from semver.org, in increasing order. */
    const char *order[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                           "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                           "1.0.0-rc.1",  "1.0.0",         "1.0.1",
                           "1.1.0",       "2.0.0",         "10.0.0"};
    for (size_t i = 0; i + 1 < sizeof(order) / sizeof(*order); i++) {
        CHECK(cmp(order[i], order[i + 1]) < 0);
        CHECK(cmp(order[i + 1], order[i]) > 0);
    }
    CHECK(cmp("1.0.0+build.1", "1.0.0+build.2") == 0);

    CHECK(pn_semver_matches("1.0.0", "< 1.1.0"));
    CHECK(!pn_semver_matches("1.1.0", "< 1.1.0"));
    CHECK(pn_semver_matches("1.1.0-rc.1", "< 1.1.0"));
    CHECK(pn_semver_matches("1.5.0", ">= 1.0.0 and < 2.0.0"));
    CHECK(!pn_semver_matches("2.0.0", ">= 1.0.0 and < 2.0.0"));
    CHECK(pn_semver_matches("3.0.0", "< 1.0.0 or >= 3.0.0"));
    CHECK(!pn_semver_matches("2.0.0", "< 1.0.0 or >= 3.0.0"));
    CHECK(pn_semver_matches("1.2.3", "1.2.3"));
    CHECK(pn_semver_matches("1.2.3", "== 1.2.3"));
    CHECK(!pn_semver_matches("1.2.4", "1.2.3"));
    CHECK(pn_semver_matches("1.2.4", "!= 1.2.3"));
    CHECK(pn_semver_matches("1.9.0", "~> 1.2"));
    CHECK(!pn_semver_matches("2.0.0", "~> 1.2"));
    CHECK(!pn_semver_matches("1.1.9", "~> 1.2"));
    CHECK(pn_semver_matches("1.2.9", "~> 1.2.3"));
    CHECK(!pn_semver_matches("1.3.0", "~> 1.2.3"));
    /* The next line's prereleases are not in the range (Elixir's ~>). */
    CHECK(!pn_semver_matches("2.0.0-rc.1", "~> 1.2"));
    CHECK(!pn_semver_matches("2.0.0-0", "~> 1.2"));
    CHECK(!pn_semver_matches("1.3.0-beta", "~> 1.2.3"));
    CHECK(pn_semver_matches("1.9.9", "~> 1.2"));
    CHECK(pn_semver_matches("1.2.4-rc.1", "~> 1.2.3"));
    CHECK(pn_semver_matches("1.0.0", ""));
    CHECK(!pn_semver_matches("not.a.version", ""));
    CHECK(!pn_semver_matches("1.0.0", "<< 1.0.0"));

    CHECK(pn_semver_req_valid("", NULL) == 0);
    CHECK(pn_semver_req_valid(">= 1.0.0 and < 2.0.0 or == 3.0.0", NULL) == 0);
    const char *badreq[] = {"<",    "1.0",        "> 1.0.0 and",        "and < 1.0.0",
                            "~> 1", "~> 1.2.3.4", ">= 1.0.0 & < 2.0.0", "latest"};
    for (size_t i = 0; i < sizeof(badreq) / sizeof(*badreq); i++)
        CHECK(pn_semver_req_valid(badreq[i], &err) < 0);
    CHECK(strstr(err.msg, "not a version requirement") != NULL);

    /* An empty "or" branch or "and" clause is refused, and never matches:
     * it used to count as true, so the requirement matched every version
     * (a downgrade included). */
    const char *empty[] = {" or 9.9.9",           "or 9.9.9",           "9.9.9 or  or 8.8.8",
                           "9.9.9 or ",           "9.9.9 or",           "9.9.9 and ",
                           "9.9.9 and or 8.8.8",  "9.9.9 or and 8.8.8", " ",
                           "9.9.9 and and 8.8.8", "9.9.9 9.9.8",        "9.9.9 or 8.8.8 or"};
    for (size_t i = 0; i < sizeof(empty) / sizeof(*empty); i++) {
        CHECK(pn_semver_req_valid(empty[i], &err) < 0);
        CHECK(strstr(err.msg, "not a version requirement") != NULL);
        CHECK(!pn_semver_matches("1.0.0", empty[i]));
        CHECK(!pn_semver_matches("9.9.9", empty[i]));
    }
    /* Over 512 bytes: refused by validation and so never matches, even when
     * every clause in it would. */
    char longreq[600] = "1.0.0";
    while (strlen(longreq) <= 512)
        strcat(longreq, " or 1.0.0");
    CHECK(pn_semver_req_valid(longreq, &err) < 0 && strstr(err.msg, "512 bytes"));
    CHECK(!pn_semver_matches("1.0.0", longreq));
    longreq[strlen(longreq) - 9] = '\0'; /* 508 bytes: valid, matches */
    CHECK(strlen(longreq) <= 512 && pn_semver_req_valid(longreq, NULL) == 0);
    CHECK(pn_semver_matches("1.0.0", longreq));

    /* The forms users write, valid and matching as documented. */
    struct {
        const char *req, *yes, *no;
    } forms[] = {
        {"~> 1.2", "1.2.0", "1.1.9"},
        {"~>1.2", "1.99.0", "2.0.0"},
        {"~> 1.2.3", "1.2.3", "1.2.2"},
        {"~> 1.2.3-rc.1", "1.2.3-rc.2", "1.2.3-beta"},
        {"~> 1.2.3", "1.2.99", "1.3.0-0"},
        {">= 1.0.0 and < 2.0.0", "2.0.0-rc.1", "2.0.0"},
        {">=1.0.0 and <2.0.0", "1.0.0", "0.9.9"},
        {">  1.0.0  and  <=  1.5.0", "1.5.0", "1.0.0"},
        {"< 1.0.0 or >= 3.0.0", "0.1.0", "1.0.0"},
        {"< 1.0.0 or >= 3.0.0", "3.0.0", "2.9.9"},
        {"1.0.0 or 1.1.0 or ~> 2.0", "1.1.0", "1.0.1"},
        {"1.0.0 or 1.1.0 or ~> 2.0", "2.5.0", "3.0.0"},
        {"> 1.0.0 and < 1.1.0 or == 2.0.0", "2.0.0", "1.1.0"},
        {"> 1.0.0 and < 1.1.0 or == 2.0.0", "1.0.5", "2.0.1"},
        {">= 1.0.0-rc.1 and < 1.0.0", "1.0.0-rc.2", "1.0.0"},
        {">= 1.0.0-rc.1 and < 1.0.0", "1.0.0-rc.1", "1.0.0-beta"},
        {"== 1.1.0-beta.2", "1.1.0-beta.2+build.7", "1.1.0-beta.11"},
        {"!= 1.0.1", "1.0.2", "1.0.1"},
        {" 1.2.3 ", "1.2.3", "1.2.4"},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(*forms); i++) {
        struct pn_semver_req r;
        CHECK(pn_semver_req_valid(forms[i].req, NULL) == 0);
        CHECK(pn_semver_req_parse(forms[i].req, &r, NULL) == 0 && r.n > 0);
        CHECK(pn_semver_matches(forms[i].yes, forms[i].req));
        CHECK(!pn_semver_matches(forms[i].no, forms[i].req));
    }
    /* Malformed forms: refused, and match nothing. */
    const char *malformed[] = {"~> 1.2-rc",       "~> 1.2+b",         "=> 1.0.0",
                               "> = 1.0.0",       "= 1.0.0",          "1.0.0 AND 2.0.0",
                               "1.0.0 || 2.0.0",  ">= 1.0.0,< 2.0.0", "1.0.0\tor 2.0.0",
                               "1.0.0 or\n2.0.0", "^1.2.0",           "1.0.0and 2.0.0"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(*malformed); i++) {
        CHECK(pn_semver_req_valid(malformed[i], &err) < 0);
        CHECK(!strchr(err.msg, '\n') && !strchr(err.msg, '\t')); /* one line */
        CHECK(!pn_semver_matches("1.0.0", malformed[i]));
        CHECK(!pn_semver_matches("1.2.0", malformed[i]));
    }
    return check_done("test_semver");
}
