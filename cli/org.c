/* SPDX-License-Identifier: Apache-2.0 */
/* pinion org create | pinion product create */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "db.h"
#include "output.h"
#include "query.h"

static int cmd_org_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    struct pn_err err;
    char state[6];

    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (cli_check_name("organisation", pos[0]) < 0 || !cli_db(ctx))
        return 1;
    PGresult *res = pn_db_exec(ctx->db, &err,
                               "INSERT INTO orgs (name) VALUES ($1) RETURNING id, name, created_at",
                               1, pos, NULL, NULL, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            return cli_fail("organisation '%s' already exists", pos[0]);
        return cli_fail_err(&err);
    }
    pn_db_audit(ctx->db, NULL, "org.create", pos[0], NULL);
    json_t *rows = cli_rows(res);
    PQclear(res);
    cli_print_obj(ctx, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    return 0;
}

static int cmd_product_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[2];
    int rc;
    struct pn_err err;
    char state[6], org_id[24];

    if (cli_parse(ctx, argc, argv, NULL, pos, 2, 2, &rc) < 0)
        return rc;
    if (cli_check_name("product", pos[1]) < 0 || !cli_db(ctx) ||
        cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    const char *v[] = {org_id, pos[1], pos[0]};
    PGresult *res = pn_db_exec(ctx->db, &err,
                               "INSERT INTO products (org_id, name) VALUES ($1, $2) "
                               "RETURNING id, $3::text AS org, name, created_at",
                               3, v, NULL, NULL, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            return cli_fail("organisation '%s' already has a product '%s'", pos[0], pos[1]);
        return cli_fail_err(&err);
    }
    pn_db_audit(ctx->db, NULL, "product.create", pos[1], NULL);
    json_t *rows = cli_rows(res);
    PQclear(res);
    cli_print_obj(ctx, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    return 0;
}

const struct cli_cmd cli_org_cmds[] = {
    {"create", cmd_org_create, "ORG", "create an organisation", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

const struct cli_cmd cli_product_cmds[] = {
    {"create", cmd_product_create, "ORG PRODUCT", "create a product in an organisation", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
