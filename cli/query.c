/* SPDX-License-Identifier: Apache-2.0 */
/* The CLI's side of the database shared by the command groups: the
 * connection, look-ups of an org, a product or a certificate id prefix, and
 * the run-a-query-and-print bodies of the show and list commands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "db.h"
#include "migrate.h"
#include "output.h"
#include "query.h"

PGconn *cli_db_raw(struct cli_ctx *ctx)
{
    struct pn_err err;
    if (ctx->db)
        return ctx->db;
    const char *ci = ctx->conninfo ? ctx->conninfo : getenv("PINION_DB");
    ctx->db = pn_db_connect(ci, &err);
    if (!ctx->db)
        cli_fail_err(&err);
    return ctx->db;
}

PGconn *cli_db(struct cli_ctx *ctx)
{
    struct pn_err err;
    int fresh = ctx->db == NULL;
    PGconn *db = cli_db_raw(ctx);
    if (db && fresh && pn_db_check_schema(db, &err) < 0) {
        cli_fail_err(&err);
        return NULL;
    }
    return db;
}

int cli_org_id(struct cli_ctx *ctx, const char *org, char id[24])
{
    struct pn_err err;
    const char *v[] = {org};
    PGresult *res = pn_db_q(ctx->db, &err, "SELECT id FROM orgs WHERE name = $1", 1, v);
    if (!res)
        return cli_fail_err(&err), -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        cli_fail("no organisation named '%s'", org);
        return -1;
    }
    snprintf(id, 24, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int cli_product_id(struct cli_ctx *ctx, const char *org_id, const char *org, const char *product,
                   char id[24])
{
    struct pn_err err;
    const char *v[] = {org_id, product};
    PGresult *res =
        pn_db_q(ctx->db, &err, "SELECT id FROM products WHERE org_id = $1 AND name = $2", 2, v);
    if (!res)
        return cli_fail_err(&err), -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        cli_fail("organisation '%s' has no product named '%s'", org, product);
        return -1;
    }
    snprintf(id, 24, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int cli_org_product(struct cli_ctx *ctx, const char *org, const char *product, char org_id[24],
                    char product_id[24])
{
    if (!cli_db(ctx) || cli_org_id(ctx, org, org_id) < 0 ||
        cli_product_id(ctx, org_id, org, product, product_id) < 0)
        return -1;
    return 0;
}

int cli_resolve_cert(struct cli_ctx *ctx, char table, const char *arg, char id[65])
{
    struct pn_err err;
    char prefix[65];
    size_t n = strlen(arg);
    if (n < 8 || n > 64) {
        cli_fail("'%s' is not a certificate id (8 to 64 hex digits)", arg);
        return -1;
    }
    for (size_t i = 0; i <= n; i++) {
        char c = arg[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (c && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            cli_fail("'%s' is not a certificate id (8 to 64 hex digits)", arg);
            return -1;
        }
        prefix[i] = c;
    }
    const char *v[] = {prefix};
    const char *sql = table == 'c'
                          ? "SELECT id FROM ca_certificates WHERE id LIKE $1 || '%' LIMIT 2"
                          : "SELECT id FROM device_certificates WHERE id LIKE $1 || '%' LIMIT 2";
    PGresult *res = pn_db_q(ctx->db, &err, sql, 1, v);
    if (!res)
        return cli_fail_err(&err), -1;
    int rows = PQntuples(res);
    if (rows == 1)
        snprintf(id, 65, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (rows == 0) {
        cli_fail("no %s certificate with id %s", table == 'c' ? "CA" : "device", prefix);
        return -1;
    }
    if (rows > 1) {
        cli_fail("certificate id prefix %s is ambiguous; give more digits", prefix);
        return -1;
    }
    return 0;
}

int cli_show(struct cli_ctx *ctx, const char *sql, int n, const char *const *values,
             const char *missing)
{
    struct pn_err err;
    PGresult *res = pn_db_q(ctx->db, &err, sql, n, values);
    if (!res)
        return cli_fail_err(&err);
    int rc = cli_print_row(ctx, res, missing);
    PQclear(res);
    return rc;
}

int cli_list(struct cli_ctx *ctx, const char *sql, int n, const char *const *values)
{
    struct pn_err err;
    PGresult *res = pn_db_q(ctx->db, &err, sql, n, values);
    if (!res)
        return cli_fail_err(&err);
    cli_print_rows(ctx, cli_rows(res));
    PQclear(res);
    return 0;
}

int cli_list_org(struct cli_ctx *ctx, int argc, char **argv, const char *sql)
{
    const char *pos[1];
    int rc;
    char org_id[24];
    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    const char *v[] = {org_id};
    return cli_list(ctx, sql, 1, v);
}
