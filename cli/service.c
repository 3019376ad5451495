/* SPDX-License-Identifier: Apache-2.0 */
/* pinion service ...: certificates granted the service role (read and
 * write all of the topic root).  The plugin also trusts them for TLS, so a
 * service may use a self-signed certificate. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>

#include "args.h"
#include "cert.h"
#include "cli.h"
#include "db.h"
#include "output.h"
#include "query.h"

static int cmd_add(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[2];
    int rc;
    struct pn_err err;
    char state[6];
    if (cli_parse(ctx, argc, argv, NULL, pos, 2, 2, &rc) < 0)
        return rc;
    if (cli_check_name("service", pos[0]) < 0)
        return 1;
    X509 *x = pn_cert_load(pos[1], &err);
    if (!x)
        return cli_fail_err(&err);
    rc = 1;
    unsigned char *der = NULL;
    char *subject = pn_cert_subject(x);
    if (pn_key_check(X509_get0_pubkey(x), &err) < 0 ||
        pn_cert_check_dates(x, time(NULL), &err) < 0) {
        cli_fail("%s: %s", pos[1], err.msg);
        goto out;
    }
    if (X509_get_extension_flags(x) & EXFLAG_CA && !(X509_get_extension_flags(x) & EXFLAG_SS)) {
        cli_fail("%s: a CA certificate cannot be a service identity", pos[1]);
        goto out;
    }
    if (!cli_db(ctx))
        goto out;
    /* The service will connect as NAME or NAME-...: refuse a name that
     * devices already use, which would lock them out. */
    const char *nv[] = {pos[0]};
    PGresult *taken = pn_db_q(ctx->db, &err,
                              "SELECT identifier FROM devices WHERE identifier = $1 "
                              "OR left(identifier, length($1) + 1) = $1 || '-' "
                              "ORDER BY identifier LIMIT 1",
                              1, nv);
    if (!taken) {
        cli_fail_err(&err);
        goto out;
    }
    if (PQntuples(taken) == 1) {
        cli_fail("device '%s' already uses the client ids service '%s' would connect as (%s, "
                 "%s-...): choose another name",
                 PQgetvalue(taken, 0, 0), pos[0], pos[0], pos[0]);
        PQclear(taken);
        goto out;
    }
    PQclear(taken);
    char id[PN_CERT_ID_HEX], na[32];
    pn_cert_id(x, id);
    pn_time_iso(pn_cert_not_after(x), na);
    int derlen = pn_cert_der(x, &der);
    const char *v[] = {id, pos[0], subject ? subject : "", (const char *)der, na};
    int lens[] = {0, 0, 0, derlen, 0}, fmts[] = {0, 0, 0, 1, 0};
    PGresult *res = pn_db_exec(ctx->db, &err,
                               "INSERT INTO service_identities (id, name, subject, der, not_after) "
                               "VALUES ($1, $2, $3, $4, $5) "
                               "RETURNING name, id, subject, not_after, created_at",
                               5, v, lens, fmts, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            cli_fail("a service named '%s' or this certificate is already registered", pos[0]);
        else
            cli_fail_err(&err);
        goto out;
    }
    pn_db_audit(ctx->db, NULL, "service.add", id, NULL);
    json_t *rows = cli_rows(res);
    PQclear(res);
    cli_print_obj(ctx, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    rc = 0;
out:
    OPENSSL_free(der);
    free(subject);
    X509_free(x);
    return rc;
}

static int cmd_list(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    if (cli_parse(ctx, argc, argv, NULL, pos, 0, 0, &rc) < 0)
        return rc;
    if (!cli_db(ctx))
        return 1;
    return cli_list(ctx,
                    "SELECT name, id, status, subject, not_after, created_at "
                    "FROM service_identities ORDER BY name",
                    0, NULL);
}

/* revoke / remove NAME: one transaction that locks the row, changes it and
 * writes the audit entry.  The table's trigger then tells every broker,
 * which kicks all sessions of the service (NAME and NAME-*, found by the
 * username the plugin gave them) and refuses the certificate from then on:
 * revoked, by name; removed, as a certificate nothing admits (and, from the
 * broker's next start, not even TLS trusts, unless it is also a CA). */
static int change(struct cli_ctx *ctx, int argc, char **argv, bool remove)
{
    const char *pos[1];
    int rc;
    struct pn_err err;
    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (cli_check_name("service", pos[0]) < 0 || !cli_db(ctx))
        return 1;
    if (pn_db_begin(ctx->db, &err) < 0)
        return cli_fail_err(&err);
    const char *v[] = {pos[0]};
    PGresult *res =
        pn_db_q(ctx->db, &err,
                "SELECT id, status FROM service_identities WHERE name = $1 FOR UPDATE", 1, v);
    if (!res)
        goto fail;
    if (PQntuples(res) != 1) {
        PQclear(res);
        pn_db_rollback(ctx->db);
        return cli_fail("no service '%s'", pos[0]);
    }
    char id[65], was[16];
    snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
    snprintf(was, sizeof(was), "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    const char *iv[] = {id};
    if (pn_db_cmd(ctx->db, &err,
                  remove ? "DELETE FROM service_identities WHERE id = $1"
                         : "UPDATE service_identities SET status = 'revoked', updated_at = now() "
                           "WHERE id = $1",
                  1, iv) < 0)
        goto fail;
    json_t *detail = json_pack("{s:s, s:s}", "name", pos[0], "from", was);
    char *detail_text = detail ? cli_json_text(detail) : NULL;
    json_decref(detail);
    if (!detail_text) {
        pn_db_rollback(ctx->db);
        return cli_fail("out of memory");
    }
    int ok = pn_db_audit(ctx->db, &err, remove ? "service.remove" : "service.revoke", id,
                         detail_text) == 0 &&
             pn_db_commit(ctx->db, &err) == 0;
    free(detail_text);
    if (!ok)
        goto fail;
    cli_print_obj(ctx, json_pack("{s:s, s:s, s:s, s:s}", "name", pos[0], "id", id,
                                 "previous_status", was, "status", remove ? "removed" : "revoked"));
    return 0;
fail:
    pn_db_rollback(ctx->db);
    return cli_fail_err(&err);
}

static int cmd_revoke(struct cli_ctx *ctx, int argc, char **argv)
{
    return change(ctx, argc, argv, false);
}

static int cmd_remove(struct cli_ctx *ctx, int argc, char **argv)
{
    return change(ctx, argc, argv, true);
}

const struct cli_cmd cli_service_cmds[] = {
    {"add", cmd_add, "NAME CERT.pem", "grant the service role to a certificate",
     "A service identity may read and write everything under the topic root (piniond uses\n"
     "one). Brokers add the certificate to their trust directory, so it may be self-signed."},
    {"list", cmd_list, "", "list service identities", NULL},
    {"revoke", cmd_revoke, "NAME", "revoke a service identity (final)",
     "Every broker disconnects all sessions of the service (NAME and NAME-*) within a second\n"
     "and refuses its certificate from then on. The name stays reserved; to give the service\n"
     "a new certificate, remove it and add it again."},
    {"remove", cmd_remove, "NAME", "delete a service identity",
     "Every broker disconnects the service's sessions within a second; its certificate admits\n"
     "nothing any more and leaves the trust directory when each broker next starts."},
    {NULL, NULL, NULL, NULL, NULL},
};
