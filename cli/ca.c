/* SPDX-License-Identifier: Apache-2.0 */
/* pinion ca ...: Device CAs.  `create` and `verification-cert` work on
 * files only (the CA's private key never reaches the database); `code`,
 * `register` and the management commands work on ca_certificates. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509v3.h>
#include <sodium.h>

#include "args.h"
#include "cert.h"
#include "cli.h"
#include "db.h"
#include "fsutil.h"
#include "output.h"
#include "query.h"

#define CODE_BYTES 32 /* 64 hex characters: fits a CN (ub-common-name 64) */

static long parse_days(const char *s, long dflt)
{
    if (!s)
        return dflt;
    char *end;
    errno = 0;
    long d = strtol(s, &end, 10);
    if (errno || *end || d < 1 || d > 36500)
        return -1;
    return d;
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return cli_fail("%s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return cli_fail("%s: not a directory", dir);
    return 0;
}

/* Prints what a command produced about one certificate file. */
static json_t *cert_summary(X509 *x)
{
    char id[PN_CERT_ID_HEX], nb[32], na[32], serial[PN_SERIAL_HEX];
    pn_cert_id(x, id);
    pn_cert_serial(x, serial);
    pn_time_iso(pn_cert_not_before(x), nb);
    pn_time_iso(pn_cert_not_after(x), na);
    char *subject = pn_cert_subject(x);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "subject", subject ? subject : "",
                          "serial", serial, "not_before", nb, "not_after", na);
    free(subject);
    return o;
}

static int cmd_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *cn = NULL, *out = NULL, *days_s = NULL, *parent = NULL, *pos[1];
    struct cli_opt opts[] = {{"cn", 1, &cn, NULL},
                             {"out", 1, &out, NULL},
                             {"days", 1, &days_s, NULL},
                             {"parent", 1, &parent, NULL},
                             {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    if (cli_parse(ctx, argc, argv, opts, pos, 0, 0, &rc) < 0)
        return rc;
    if (!cn || !out)
        return cli_fail("ca create needs --cn NAME and --out DIR");
    if (!*cn || strlen(cn) > 64)
        return cli_fail("--cn must be 1 to 64 characters");
    long days = parse_days(days_s, 3650);
    if (days < 0)
        return cli_fail("--days must be a whole number from 1 to 36500");

    X509 *pcert = NULL;
    EVP_PKEY *pkey = NULL;
    if (parent && pn_ca_dir_load(parent, &pcert, &pkey, &err) < 0)
        return cli_fail_err(&err);
    if (pcert && pn_cert_check_ca(pcert, time(NULL), &err) < 0) {
        X509_free(pcert);
        EVP_PKEY_free(pkey);
        return cli_fail("--parent %s: %s", parent, err.msg);
    }
    if (make_dir(out)) {
        X509_free(pcert);
        EVP_PKEY_free(pkey);
        return 1;
    }
    char keypath[4096], certpath[4096];
    snprintf(keypath, sizeof(keypath), "%s/ca.key", out);
    snprintf(certpath, sizeof(certpath), "%s/ca.pem", out);
    if (pn_file_exists(keypath) || pn_file_exists(certpath)) {
        X509_free(pcert);
        EVP_PKEY_free(pkey);
        return cli_fail("%s already holds a CA (ca.key or ca.pem); refusing to overwrite", out);
    }
    EVP_PKEY *key = pn_key_generate("ec", &err);
    struct pn_cert_spec spec = {PN_CERT_CA, cn, NULL, days};
    X509 *x = key ? pn_cert_make(&spec, key, pcert, pkey, &err) : NULL;
    rc = 0;
    if (!x || pn_key_write_pem(keypath, key, &err) < 0) {
        rc = cli_fail_err(&err);
    } else if (pn_cert_write_pem(certpath, x, &err) < 0) {
        unlink(keypath);
        rc = cli_fail_err(&err);
    } else {
        json_t *o = cert_summary(x);
        json_object_set_new(o, "certificate", json_string(certpath));
        json_object_set_new(o, "key", json_string(keypath));
        cli_print_obj(ctx, o);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    X509_free(pcert);
    EVP_PKEY_free(pkey);
    return rc;
}

static int cmd_code(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    struct pn_err err;
    char org_id[24];
    unsigned char raw[CODE_BYTES], digest[crypto_hash_sha256_BYTES];
    char code[2 * CODE_BYTES + 1], code_hash[2 * crypto_hash_sha256_BYTES + 1];

    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(code, sizeof(code), raw, sizeof(raw));
    crypto_hash_sha256(digest, (const unsigned char *)code, strlen(code));
    sodium_bin2hex(code_hash, sizeof(code_hash), digest, sizeof(digest));
    sodium_memzero(raw, sizeof(raw));
    const char *v[] = {code_hash, org_id};
    PGresult *res = pn_db_q(ctx->db, &err,
                            "INSERT INTO registration_codes (code_sha256, org_id, expires_at) "
                            "VALUES ($1, $2, now() + interval '1 hour') "
                            "RETURNING to_char(expires_at, " PN_SQL_ISO_UTC ")",
                            2, v);
    if (!res)
        return cli_fail_err(&err);
    json_t *o = json_pack("{s:s, s:s, s:s}", "code", code, "org", pos[0], "expires_at",
                          PQgetvalue(res, 0, 0));
    PQclear(res);
    pn_db_audit(ctx->db, NULL, "ca.code", pos[0], NULL);
    if (!ctx->json) {
        printf("%s\n", code);
        fprintf(stderr, "registration code for '%s', single use, valid until %s\n", pos[0],
                json_string_value(json_object_get(o, "expires_at")));
        json_decref(o);
        return 0;
    }
    cli_print_obj(ctx, o);
    return 0;
}

static bool code_syntax_ok(const char *code)
{
    if (strlen(code) != 2 * CODE_BYTES)
        return false;
    for (const char *p = code; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static int cmd_verification_cert(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *cadir = NULL, *cacert = NULL, *cakeyfile = NULL, *calabel = NULL, *code = NULL,
               *out = NULL, *style = "both", *pos[1];
    struct cli_opt opts[] = {
        {"ca", 1, &cadir, NULL},  {"ca-cert", 1, &cacert, NULL}, {"ca-key", 1, &cakeyfile, NULL},
        {"code", 1, &code, NULL}, {"out", 1, &out, NULL},        {"style", 1, &style, NULL},
        {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    if (cli_parse(ctx, argc, argv, opts, pos, 0, 0, &rc) < 0)
        return rc;
    if (!code || !out)
        return cli_fail("ca verification-cert needs --ca DIR (or --ca-cert FILE --ca-key FILE), "
                        "--code CODE and --out FILE");
    if (!code_syntax_ok(code))
        return cli_fail("'%s' is not a registration code (64 lowercase hex digits from "
                        "`pinion ca code`)",
                        code);
    bool cn = strcmp(style, "cn") == 0 || strcmp(style, "both") == 0;
    bool uri = strcmp(style, "uri") == 0 || strcmp(style, "both") == 0;
    if (!cn && !uri)
        return cli_fail("--style must be cn, uri or both");

    X509 *ca = NULL;
    EVP_PKEY *cakey = NULL;
    if (cli_ca_load(cadir, cacert, cakeyfile, &ca, &cakey, &calabel) < 0)
        return 1;
    char san[128];
    snprintf(san, sizeof(san), "URI:urn:pinion:verify:%s", code);
    struct pn_cert_spec spec = {PN_CERT_VERIFICATION, cn ? code : "pinion verification",
                                uri ? san : NULL, 1};
    /* The verification certificate only proves that the CA's key signed
     * the code; its own key is thrown away. */
    EVP_PKEY *key = pn_key_generate("ec", &err);
    X509 *x = key ? pn_cert_make(&spec, key, ca, cakey, &err) : NULL;
    rc = 0;
    if (!x || pn_cert_write_pem(out, x, &err) < 0) {
        rc = cli_fail_err(&err);
    } else {
        json_t *o = cert_summary(x);
        json_object_set_new(o, "certificate", json_string(out));
        cli_print_obj(ctx, o);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    return rc;
}

/* Collects the registration codes a verification certificate carries:
 * its CN (AWS IoT style) and SAN URIs urn:pinion:verify:<code>
 * (NervesHub style).  Returns how many were stored in codes[]. */
static int verification_codes(X509 *v, char codes[][2 * CODE_BYTES + 1], int max)
{
    int n = 0;
    char cn[256];
    if (pn_cert_cn(v, cn, sizeof(cn), NULL) == 0 && code_syntax_ok(cn) && n < max)
        memcpy(codes[n++], cn, 2 * CODE_BYTES + 1); /* code_syntax_ok: exactly 64 hex + NUL */
    GENERAL_NAMES *names = X509_get_ext_d2i(v, NID_subject_alt_name, NULL, NULL);
    static const char prefix[] = "urn:pinion:verify:";
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        const char *s = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        int plen = (int)sizeof(prefix) - 1;
        if (len == plen + 2 * CODE_BYTES && strncmp(s, prefix, (size_t)plen) == 0) {
            char c[2 * CODE_BYTES + 1];
            memcpy(c, s + plen, 2 * CODE_BYTES);
            c[2 * CODE_BYTES] = '\0';
            if (code_syntax_ok(c) && n < max)
                memcpy(codes[n++], c, sizeof(c));
        }
    }
    GENERAL_NAMES_free(names);
    return n;
}

/* Claims a registration code for org_id inside the open transaction: the
 * row is locked, and every way it can be unusable has its own sentence. */
static int claim_code(struct cli_ctx *ctx, char codes[][2 * CODE_BYTES + 1], int ncodes,
                      const char *org_id, const char *ca_id)
{
    struct pn_err err;
    for (int i = 0; i < ncodes; i++) {
        unsigned char digest[crypto_hash_sha256_BYTES];
        char h[2 * crypto_hash_sha256_BYTES + 1];
        crypto_hash_sha256(digest, (const unsigned char *)codes[i], strlen(codes[i]));
        sodium_bin2hex(h, sizeof(h), digest, sizeof(digest));
        const char *v[] = {h};
        PGresult *res = pn_db_q(ctx->db, &err,
                                "SELECT org_id, used_at IS NOT NULL, expires_at <= now(), "
                                "to_char(expires_at, " PN_SQL_ISO_UTC ") "
                                "FROM registration_codes WHERE code_sha256 = $1 "
                                "FOR UPDATE",
                                1, v);
        if (!res)
            return cli_fail_err(&err), -1;
        if (PQntuples(res) == 0) {
            PQclear(res);
            continue;
        }
        int wrong_org = strcmp(PQgetvalue(res, 0, 0), org_id) != 0;
        int used = PQgetvalue(res, 0, 1)[0] == 't';
        int expired = PQgetvalue(res, 0, 2)[0] == 't';
        char expires[64];
        snprintf(expires, sizeof(expires), "%s", PQgetvalue(res, 0, 3));
        PQclear(res);
        if (wrong_org)
            return cli_fail("the registration code was issued to another organisation"), -1;
        if (used)
            return cli_fail("the registration code has already been used"), -1;
        if (expired)
            return cli_fail("the registration code expired at %s; get a new one with "
                            "`pinion ca code`",
                            expires),
                   -1;
        const char *u[] = {h, ca_id};
        if (pn_db_cmd(ctx->db, &err,
                      "UPDATE registration_codes SET used_at = now(), used_for = $2 "
                      "WHERE code_sha256 = $1",
                      2, u) < 0)
            return cli_fail_err(&err), -1;
        return 0;
    }
    cli_fail("the verification certificate's code is unknown (get one with `pinion ca code`)");
    return -1;
}

static const char CA_COLUMNS[] = "c.id, c.subject, c.status, c.not_before, "
                                 "c.not_after, c.ski, c.serial, p.name AS jitp_product, "
                                 "to_jsonb(c.jitp_tags) AS jitp_tags, c.description";

static int print_ca(struct cli_ctx *ctx, const char *id)
{
    char sql[1024];
    snprintf(
        sql, sizeof(sql),
        "SELECT %s, o.name AS org, c.created_at AS registered_at, "
        "(SELECT count(*) FROM device_certificates d WHERE d.ca_id = c.id) AS pinned_certificates "
        "FROM ca_certificates c JOIN orgs o ON o.id = c.org_id "
        "LEFT JOIN products p ON p.id = c.jitp_product_id WHERE c.id = $1",
        CA_COLUMNS);
    const char *v[] = {id};
    char missing[128];
    snprintf(missing, sizeof(missing), "no CA certificate with id %s", id);
    return cli_show(ctx, sql, 1, v, missing);
}

static int cmd_register(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *vpath = NULL, *jitp = NULL, *tags_csv = NULL, *desc = "", *pos[2];
    struct cli_opt opts[] = {{"verification-cert", 1, &vpath, NULL},
                             {"jitp", 1, &jitp, NULL},
                             {"tags", 1, &tags_csv, NULL},
                             {"description", 1, &desc, NULL},
                             {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    if (cli_parse(ctx, argc, argv, opts, pos, 2, 2, &rc) < 0)
        return rc;
    if (!vpath)
        return cli_fail("ca register needs --verification-cert FILE (proof of possession)");
    if (tags_csv && !jitp)
        return cli_fail("--tags needs --jitp PRODUCT");
    if (strlen(desc) > 1024)
        return cli_fail("--description is longer than 1024 characters");

    X509 *ca = NULL, *v = NULL;
    json_t *tags = NULL;
    char *tags_text = NULL, *subject = NULL;
    unsigned char *der = NULL;
    rc = 1;

    if (!(ca = pn_cert_load(pos[1], &err)) || !(v = pn_cert_load(vpath, &err))) {
        cli_fail_err(&err);
        goto out;
    }
    if (pn_cert_check_ca(ca, time(NULL), &err) < 0) {
        cli_fail("%s: %s", pos[1], err.msg);
        goto out;
    }
    if (!pn_cert_issued_by(v, ca)) {
        cli_fail("%s: the verification certificate is not signed by this CA's key", vpath);
        goto out;
    }
    if (pn_cert_check_dates(v, time(NULL), &err) < 0) {
        cli_fail("%s: verification %s", vpath, err.msg);
        goto out;
    }
    char codes[4][2 * CODE_BYTES + 1];
    int ncodes = verification_codes(v, codes, 4);
    if (ncodes == 0) {
        cli_fail("%s: carries no registration code (as subject CN or SAN URI "
                 "urn:pinion:verify:CODE)",
                 vpath);
        goto out;
    }
    if (!(tags = cli_tags(tags_csv)))
        goto out;
    if (!cli_db(ctx))
        goto out;

    char org_id[24], product_id[24] = "";
    if (cli_org_id(ctx, pos[0], org_id) < 0)
        goto out;
    if (jitp && cli_product_id(ctx, org_id, pos[0], jitp, product_id) < 0)
        goto out;

    char id[PN_CERT_ID_HEX], ski[PN_KEYID_HEX], aki[PN_KEYID_HEX], serial[PN_SERIAL_HEX];
    char nb[32], na[32];
    pn_cert_id(ca, id);
    pn_cert_ski(ca, ski);
    pn_cert_aki(ca, aki);
    pn_cert_serial(ca, serial);
    pn_time_iso(pn_cert_not_before(ca), nb);
    pn_time_iso(pn_cert_not_after(ca), na);
    subject = pn_cert_subject(ca);
    int derlen = pn_cert_der(ca, &der);
    tags_text = cli_json_text(tags);
    if (derlen < 0 || !subject || !tags_text) {
        cli_fail("cannot encode CA certificate");
        goto out;
    }

    if (pn_db_begin(ctx->db, &err) < 0) {
        cli_fail_err(&err);
        goto out;
    }
    if (claim_code(ctx, codes, ncodes, org_id, id) < 0)
        goto rollback;
    char state[6];
    const char *iv[] = {id,
                        org_id,
                        subject,
                        ski,
                        aki[0] ? aki : NULL,
                        serial,
                        nb,
                        na,
                        (const char *)der,
                        product_id[0] ? product_id : NULL,
                        tags_text,
                        desc};
    int lens[12] = {0, 0, 0, 0, 0, 0, 0, 0, derlen, 0, 0, 0};
    int fmts[12] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
    PGresult *res = pn_db_exec(
        ctx->db, &err,
        "INSERT INTO ca_certificates (id, org_id, subject, ski, aki, serial, not_before, "
        "not_after, der, jitp_product_id, jitp_tags, description) VALUES ($1, $2, $3, $4, $5, "
        "$6, $7, $8, $9, $10, ARRAY(SELECT jsonb_array_elements_text($11::jsonb)), $12)",
        12, iv, lens, fmts, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            cli_fail("CA %s is already registered", id);
        else
            cli_fail_err(&err);
        goto rollback;
    }
    PQclear(res);
    char detail[256];
    snprintf(detail, sizeof(detail), "{\"org\": \"%s\"}", pos[0]);
    if (pn_db_audit(ctx->db, &err, "ca.register", id, detail) < 0 ||
        pn_db_commit(ctx->db, &err) < 0) {
        cli_fail_err(&err);
        goto rollback;
    }
    rc = print_ca(ctx, id);
    goto out;

rollback:
    pn_db_rollback(ctx->db);
out:
    OPENSSL_free(der);
    free(tags_text);
    free(subject);
    json_decref(tags);
    X509_free(ca);
    X509_free(v);
    return rc;
}

static int cmd_list(struct cli_ctx *ctx, int argc, char **argv)
{
    return cli_list_org(ctx, argc, argv,
                        "SELECT c.id, c.subject, c.status, c.not_after, "
                        "p.name AS jitp_product, to_jsonb(c.jitp_tags) AS jitp_tags, c.description "
                        "FROM ca_certificates c LEFT JOIN products p ON p.id = c.jitp_product_id "
                        "WHERE c.org_id = $1 ORDER BY c.created_at, c.id");
}

static int cmd_show(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    char id[65];
    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_resolve_cert(ctx, 'c', pos[0], id) < 0)
        return 1;
    return print_ca(ctx, id);
}

/* disable / enable / revoke: one status transition each.  Revocation is
 * final; with --cascade it also revokes every certificate pinned under the
 * CA, which makes brokers kick those devices. */
static int set_status(struct cli_ctx *ctx, int argc, char **argv, const char *to)
{
    const char *pos[1];
    int cascade = 0, rc;
    struct cli_opt revoke_opts[] = {{"cascade", 0, NULL, &cascade}, {NULL, 0, NULL, NULL}};
    struct pn_err err;
    char id[65];
    bool revoke = strcmp(to, "revoked") == 0;
    if (cli_parse(ctx, argc, argv, revoke ? revoke_opts : NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_resolve_cert(ctx, 'c', pos[0], id) < 0)
        return 1;
    /* Brokers store new pins in transactions that read the CA row FOR
     * SHARE (plugin/persist.c).  Locking it FOR UPDATE first makes each such
     * transaction either wait for this one and then see the new status, or
     * commit before the lock is granted; READ COMMITTED (explicit: it gives
     * each statement a new snapshot) then lets the cascade UPDATE below see
     * and revoke the pins those committed. */
    if (pn_db_cmd(ctx->db, &err, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL) < 0)
        return cli_fail_err(&err);
    const char *v[] = {id, to};
    PGresult *res =
        pn_db_q(ctx->db, &err, "SELECT status FROM ca_certificates WHERE id = $1 FOR UPDATE", 1, v);
    if (!res)
        goto fail;
    if (PQntuples(res) != 1) { /* deleted since it was resolved */
        PQclear(res);
        pn_db_rollback(ctx->db);
        return cli_fail("no CA certificate with id %s", id);
    }
    char was[16];
    snprintf(was, sizeof(was), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (strcmp(was, "revoked") == 0 && !revoke) {
        pn_db_rollback(ctx->db);
        return cli_fail("CA %.16s… is revoked; revocation is final", id);
    }
    if (pn_db_cmd(ctx->db, &err,
                  "UPDATE ca_certificates SET status = $2, updated_at = now() WHERE id = $1", 2,
                  v) < 0)
        goto fail;
    long long cascaded = 0;
    if (revoke && cascade) {
        res = pn_db_q(ctx->db, &err,
                      "UPDATE device_certificates SET status = 'revoked' "
                      "WHERE ca_id = $1 AND status <> 'revoked'",
                      1, v);
        if (!res)
            goto fail;
        cascaded = atoll(PQcmdTuples(res));
        PQclear(res);
    }
    char action[32], detail[64];
    snprintf(action, sizeof(action), "ca.%s",
             revoke         ? "revoke"
             : to[0] == 'd' ? "disable"
                            : "enable");
    snprintf(detail, sizeof(detail), "{\"from\": \"%s\", \"cascaded\": %lld}", was, cascaded);
    if (pn_db_audit(ctx->db, &err, action, id, detail) < 0 || pn_db_commit(ctx->db, &err) < 0)
        goto fail;
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", id, "previous_status", was, "status", to);
    if (revoke)
        json_object_set_new(o, "revoked_device_certificates", json_integer(cascaded));
    cli_print_obj(ctx, o);
    return 0;
fail:
    pn_db_rollback(ctx->db);
    return cli_fail_err(&err);
}

static int cmd_disable(struct cli_ctx *ctx, int argc, char **argv)
{
    return set_status(ctx, argc, argv, "disabled");
}

static int cmd_enable(struct cli_ctx *ctx, int argc, char **argv)
{
    return set_status(ctx, argc, argv, "active");
}

static int cmd_revoke(struct cli_ctx *ctx, int argc, char **argv)
{
    return set_status(ctx, argc, argv, "revoked");
}

const struct cli_cmd cli_ca_cmds[] = {
    {"create", cmd_create, "--cn NAME --out DIR [--days N] [--parent DIR]",
     "create a Device CA: a new P-256 key and certificate in DIR (ca.key, ca.pem)",
     "The key is written to DIR/ca.key with mode 0600 and is never stored in the database.\n"
     "--parent DIR signs the new CA with the CA in DIR (an intermediate CA); default: "
     "self-signed.\n"
     "--days sets the validity (default 3650). Nothing is overwritten."},
    {"code", cmd_code, "ORG", "issue a one-time registration code for ORG, valid for 1 hour",
     "Prints the code on stdout. Only its SHA-256 is stored."},
    {"verification-cert", cmd_verification_cert,
     "--ca DIR|--ca-cert FILE --ca-key FILE --code CODE --out FILE [--style both|cn|uri]",
     "make the proof-of-possession certificate for `ca register`, signed by the CA in DIR",
     "The code is carried as subject CN (AWS IoT style) and/or as SAN URI\n"
     "urn:pinion:verify:CODE (NervesHub style); default both."},
    {"register", cmd_register,
     "ORG CA.pem --verification-cert V.pem [--jitp PRODUCT [--tags a,b]] [--description TEXT]",
     "register a Device CA for ORG with proof of possession of its key",
     "The CA must have CA:TRUE, a subjectKeyIdentifier, an RSA>=2048 or EC P-256/P-384 key and be\n"
     "within its validity. V.pem must be signed by the CA's key and carry an unused, unexpired "
     "code\n"
     "of ORG. With --jitp, devices unknown to Pinion are created on first connect in PRODUCT with\n"
     "the given tags (just-in-time provisioning); without it, devices must exist beforehand."},
    {"list", cmd_list, "ORG", "list ORG's Device CAs", NULL},
    {"show", cmd_show, "ID", "show one CA (ID: certificate id or a unique prefix of 8+ digits)",
     NULL},
    {"disable", cmd_disable, "ID",
     "stop admitting new devices of this CA (pinned ones still connect)", NULL},
    {"enable", cmd_enable, "ID", "re-enable a disabled CA", NULL},
    {"revoke", cmd_revoke, "ID [--cascade]", "revoke a CA for good",
     "New devices of the CA are refused. With --cascade every device certificate pinned under it\n"
     "is revoked too, and brokers disconnect those devices within a second."},
    {NULL, NULL, NULL, NULL, NULL},
};
