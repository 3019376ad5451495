/* SPDX-License-Identifier: Apache-2.0 */
/* pinion device ...: device certificates (offline, from a CA directory or
 * a CSR) and device records (database). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cert.h"
#include "cli.h"
#include "db.h"
#include "fsutil.h"
#include "ident.h"
#include "output.h"
#include "query.h"

static int cmd_cert(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *cadir = NULL, *cacert = NULL, *cakeyfile = NULL, *calabel = NULL, *ident = NULL,
               *out = NULL, *keytype = "ec", *csr = NULL, *days_s = NULL, *pos[1];
    struct cli_opt opts[] = {
        {"ca", 1, &cadir, NULL}, {"ca-cert", 1, &cacert, NULL}, {"ca-key", 1, &cakeyfile, NULL},
        {"id", 1, &ident, NULL}, {"out", 1, &out, NULL},        {"key", 1, &keytype, NULL},
        {"csr", 1, &csr, NULL},  {"days", 1, &days_s, NULL},    {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    if (cli_parse(ctx, argc, argv, opts, pos, 0, 0, &rc) < 0)
        return rc;
    if (!ident || !out)
        return cli_fail("device cert needs --ca DIR (or --ca-cert FILE --ca-key FILE), "
                        "--id IDENTIFIER and --out DIR");
    if (cli_check_identifier(ident) < 0)
        return 1;
    if (strcmp(keytype, "ec") != 0 && strcmp(keytype, "rsa") != 0)
        return cli_fail("--key must be ec or rsa");
    long days = 3650;
    if (days_s) {
        char *end;
        errno = 0;
        days = strtol(days_s, &end, 10);
        if (errno || *end || days < 1 || days > 36500)
            return cli_fail("--days must be a whole number from 1 to 36500");
    }

    X509 *ca = NULL, *x = NULL;
    EVP_PKEY *cakey = NULL, *key = NULL;
    char keypath[4096], certpath[4096];
    rc = 1;
    if (cli_ca_load(cadir, cacert, cakeyfile, &ca, &cakey, &calabel) < 0)
        goto out;
    if (pn_cert_check_ca(ca, time(NULL), &err) < 0) {
        cli_fail("%s: %s", calabel, err.msg);
        goto out;
    }
    /* With --csr the private key stays wherever it was made (a secure
     * element, an HSM, the device itself); only its public half is used. */
    key = csr ? pn_csr_load_key(csr, &err) : pn_key_generate(keytype, &err);
    if (!key) {
        cli_fail_err(&err);
        goto out;
    }
    if (mkdir(out, 0755) < 0 && errno != EEXIST) {
        cli_fail("%s: %s", out, strerror(errno));
        goto out;
    }
    snprintf(keypath, sizeof(keypath), "%s/%s.key", out, ident);
    snprintf(certpath, sizeof(certpath), "%s/%s.pem", out, ident);
    if (pn_file_exists(certpath) || (!csr && pn_file_exists(keypath))) {
        cli_fail("%s already holds a certificate or key for '%s'; refusing to overwrite", out,
                 ident);
        goto out;
    }
    struct pn_cert_spec spec = {PN_CERT_DEVICE, ident, NULL, days};
    if (!(x = pn_cert_make(&spec, key, ca, cakey, &err))) {
        cli_fail_err(&err);
        goto out;
    }
    if (!csr && pn_key_write_pem(keypath, key, &err) < 0) {
        cli_fail_err(&err);
        goto out;
    }
    if (pn_cert_write_pem(certpath, x, &err) < 0) {
        if (!csr)
            unlink(keypath);
        cli_fail_err(&err);
        goto out;
    }
    char id[PN_CERT_ID_HEX], na[32], kd[64];
    pn_cert_id(x, id);
    pn_time_iso(pn_cert_not_after(x), na);
    pn_key_describe(key, kd, sizeof(kd));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "identifier", ident, "key_type",
                          kd, "not_after", na, "certificate", certpath);
    json_object_set_new(o, "key", csr ? json_null() : json_string(keypath));
    cli_print_obj(ctx, o);
    rc = 0;
out:
    X509_free(ca);
    X509_free(x);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(key);
    return rc;
}

static int print_device(struct cli_ctx *ctx, const char *ident)
{
    const char *v[] = {ident};
    char missing[200];
    snprintf(missing, sizeof(missing), "no device '%.128s'", ident);
    return cli_show(
        ctx,
        "SELECT d.identifier, o.name AS org, p.name AS product, to_jsonb(d.tags) AS tags, "
        "d.status, d.firmware_uuid, d.firmware_version, d.first_seen, d.last_seen, d.created_at, "
        "coalesce((SELECT jsonb_agg(jsonb_build_object('id', c.id, 'ca_id', c.ca_id, "
        "'status', c.status, 'not_after', to_char(c.not_after, " PN_SQL_ISO_UTC "), "
        "'pinned_at', to_char(c.pinned_at, " PN_SQL_ISO_UTC ")) ORDER BY c.pinned_at) "
        "FROM device_certificates c WHERE c.device_id = d.id), '[]'::jsonb) AS certificates "
        "FROM devices d JOIN orgs o ON o.id = d.org_id JOIN products p ON p.id = d.product_id "
        "WHERE d.identifier = $1",
        1, v, missing);
}

static int cmd_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *tags_csv = NULL, *pos[3];
    struct cli_opt opts[] = {{"tags", 1, &tags_csv, NULL}, {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    char org_id[24], product_id[24], state[6];
    if (cli_parse(ctx, argc, argv, opts, pos, 3, 3, &rc) < 0)
        return rc;
    if (cli_check_identifier(pos[2]) < 0)
        return 1;
    char *tags_text = cli_tags_text(tags_csv);
    if (!tags_text)
        return 1;
    rc = 1;
    if (cli_org_product(ctx, pos[0], pos[1], org_id, product_id) < 0)
        goto out;
    /* A service NAME connects as NAME or NAME-...: no device may. */
    const char *sv[] = {pos[2]};
    PGresult *svc = pn_db_q(ctx->db, &err,
                            "SELECT name FROM service_identities WHERE $1 = name "
                            "OR left($1, length(name) + 1) = name || '-' LIMIT 1",
                            1, sv);
    if (!svc) {
        cli_fail_err(&err);
        goto out;
    }
    if (PQntuples(svc) == 1) {
        cli_fail("device identifier '%s' is in service '%s''s client id namespace (%s, %s-...)",
                 pos[2], PQgetvalue(svc, 0, 0), PQgetvalue(svc, 0, 0), PQgetvalue(svc, 0, 0));
        PQclear(svc);
        goto out;
    }
    PQclear(svc);
    const char *v[] = {pos[2], org_id, product_id, tags_text};
    PGresult *res =
        pn_db_exec(ctx->db, &err,
                   "INSERT INTO devices (identifier, org_id, product_id, tags) "
                   "VALUES ($1, $2, $3, ARRAY(SELECT jsonb_array_elements_text($4::jsonb)))",
                   4, v, NULL, NULL, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            cli_fail("device '%s' already exists", pos[2]);
        else
            cli_fail_err(&err);
        goto out;
    }
    PQclear(res);
    pn_db_audit(ctx->db, NULL, "device.create", pos[2], NULL);
    rc = print_device(ctx, pos[2]);
out:
    free(tags_text);
    return rc;
}

static int cmd_list(struct cli_ctx *ctx, int argc, char **argv)
{
    return cli_list_org(
        ctx, argc, argv,
        "SELECT d.identifier, p.name AS product, to_jsonb(d.tags) AS tags, d.status, "
        "d.firmware_version, d.last_seen, "
        "(SELECT count(*) FROM device_certificates c WHERE c.device_id = d.id "
        " AND c.status = 'active') AS certificates "
        "FROM devices d JOIN products p ON p.id = d.product_id WHERE d.org_id = $1 "
        "ORDER BY d.identifier");
}

static int cmd_show(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx))
        return 1;
    return print_device(ctx, pos[0]);
}

/* Revokes a whole device (all its certificates with it), or with --cert
 * just one of its certificates.  Brokers kick the device on the change. */
static int cmd_revoke(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *certarg = NULL, *pos[1];
    struct cli_opt opts[] = {{"cert", 1, &certarg, NULL}, {NULL, 0, NULL, NULL}};
    int rc;
    struct pn_err err;
    char certid[65];
    if (cli_parse(ctx, argc, argv, opts, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx))
        return 1;
    if (certarg && cli_resolve_cert(ctx, 'd', certarg, certid) < 0)
        return 1;
    if (pn_db_begin(ctx->db, &err) < 0)
        return cli_fail_err(&err);
    const char *v[] = {pos[0], certarg ? certid : NULL};
    PGresult *res =
        pn_db_q(ctx->db, &err, "SELECT id FROM devices WHERE identifier = $1 FOR UPDATE", 1, v);
    if (!res)
        goto fail;
    if (PQntuples(res) != 1) {
        PQclear(res);
        pn_db_rollback(ctx->db);
        return cli_fail("no device '%s'", pos[0]);
    }
    PQclear(res);
    long long n = 0;
    if (certarg) {
        res = pn_db_q(ctx->db, &err,
                      "UPDATE device_certificates c SET status = 'revoked' FROM devices d "
                      "WHERE d.id = c.device_id AND d.identifier = $1 AND c.id = $2",
                      2, v);
        if (!res)
            goto fail;
        n = atoll(PQcmdTuples(res));
        PQclear(res);
        if (n == 0) {
            pn_db_rollback(ctx->db);
            return cli_fail("certificate %.16s… does not belong to device '%s'", certid, pos[0]);
        }
    } else {
        if (pn_db_cmd(ctx->db, &err,
                      "UPDATE devices SET status = 'revoked', updated_at = now() "
                      "WHERE identifier = $1",
                      1, v) < 0)
            goto fail;
        res = pn_db_q(ctx->db, &err,
                      "UPDATE device_certificates c SET status = 'revoked' FROM devices d "
                      "WHERE d.id = c.device_id AND d.identifier = $1 AND c.status <> 'revoked'",
                      1, v);
        if (!res)
            goto fail;
        n = atoll(PQcmdTuples(res));
        PQclear(res);
    }
    if (pn_db_audit(ctx->db, &err, certarg ? "device.revoke_cert" : "device.revoke",
                    certarg ? certid : pos[0], NULL) < 0 ||
        pn_db_commit(ctx->db, &err) < 0)
        goto fail;
    json_t *o =
        json_pack("{s:s, s:s, s:I}", "identifier", pos[0], "revoked",
                  certarg ? "certificate" : "device", "revoked_certificates", (json_int_t)n);
    cli_print_obj(ctx, o);
    return 0;
fail:
    pn_db_rollback(ctx->db);
    return cli_fail_err(&err);
}

/* pinion device tag IDENTIFIER +a -b: "-b" must not be taken for an option,
 * so this command reads its arguments itself. */
static int cmd_tag(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *ident = NULL;
    json_t *add = json_array(), *del = json_array();
    struct pn_err err;
    int rc = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            ctx->json = 1;
        } else if (strcmp(a, "--db") == 0 && i + 1 < argc) {
            ctx->conninfo = argv[++i];
        } else if (strncmp(a, "--db=", 5) == 0) {
            ctx->conninfo = a + 5;
        } else if (strcmp(a, "--help") == 0) {
            printf("usage: pinion device tag IDENTIFIER +TAG... -TAG...\n\n"
                   "add (+) and remove (-) tags of a device\n");
            rc = 0;
            goto out;
        } else if (!ident && a[0] != '+' && a[0] != '-') {
            ident = a;
        } else if ((a[0] == '+' || a[0] == '-') && ident) {
            if (!pn_tag_valid(a + 1)) {
                cli_fail("invalid tag '%s': tags are 1-64 characters of A-Z a-z 0-9 . _ : -",
                         a + 1);
                goto out;
            }
            json_array_append_new(a[0] == '+' ? add : del, json_string(a + 1));
        } else {
            fprintf(stderr,
                    "pinion device tag: unexpected argument '%s'\n"
                    "usage: pinion device tag IDENTIFIER +TAG... -TAG...\n",
                    a);
            rc = 2;
            goto out;
        }
    }
    if (!ident || (json_array_size(add) == 0 && json_array_size(del) == 0)) {
        fprintf(stderr, "usage: pinion device tag IDENTIFIER +TAG... -TAG...\n");
        rc = 2;
        goto out;
    }
    if (!cli_db(ctx))
        goto out;
    char *a_text = cli_json_text(add), *d_text = cli_json_text(del);
    const char *v[] = {ident, a_text, d_text};
    PGresult *res =
        pn_db_q(ctx->db, &err,
                "UPDATE devices SET updated_at = now(), tags = ARRAY("
                " SELECT t FROM (SELECT unnest(tags) UNION SELECT "
                "jsonb_array_elements_text($2::jsonb)) s(t)"
                " WHERE t NOT IN (SELECT jsonb_array_elements_text($3::jsonb)) ORDER BY t) "
                "WHERE identifier = $1 RETURNING identifier",
                3, v);
    free(a_text);
    free(d_text);
    if (!res) {
        cli_fail_err(&err);
        goto out;
    }
    int found = PQntuples(res);
    PQclear(res);
    if (!found) {
        cli_fail("no device '%s'", ident);
        goto out;
    }
    pn_db_audit(ctx->db, NULL, "device.tag", ident, NULL);
    rc = print_device(ctx, ident);
out:
    json_decref(add);
    json_decref(del);
    return rc;
}

const struct cli_cmd cli_device_cmds[] = {
    {"cert", cmd_cert,
     "--ca DIR|--ca-cert FILE --ca-key FILE --id IDENTIFIER --out DIR [--key ec|rsa] [--csr FILE] "
     "[--days N]",
     "issue a device certificate from the CA in DIR",
     "Writes OUT/IDENTIFIER.pem (and OUT/IDENTIFIER.key, mode 0600, unless --csr is given).\n"
     "The certificate has CN = IDENTIFIER, CA:FALSE, extendedKeyUsage clientAuth, SKI and AKI.\n"
     "Keys: EC P-256 (default) or RSA-2048. With --csr FILE the request's public key is certified\n"
     "after its signature is checked; no private key is involved. Works offline, like AWS IoT's\n"
     "device certificates, so the same files serve both."},
    {"create", cmd_create, "ORG PRODUCT IDENTIFIER [--tags a,b]",
     "create a device record (needed when its CA has no JITP settings)", NULL},
    {"list", cmd_list, "ORG", "list ORG's devices", NULL},
    {"show", cmd_show, "IDENTIFIER", "show a device and its pinned certificates", NULL},
    {"revoke", cmd_revoke, "IDENTIFIER [--cert CERTID]",
     "revoke a device (or just one of its certificates)",
     "Brokers refuse the device from then on and disconnect it within a second."},
    {"tag", cmd_tag, "IDENTIFIER +TAG... -TAG...", "add and remove tags of a device", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
