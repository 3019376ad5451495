/* SPDX-License-Identifier: Apache-2.0 */
/* pinion db migrate */
#include <stdio.h>

#include "args.h"
#include "cli.h"
#include "migrate.h"
#include "output.h"
#include "query.h"

static int cmd_migrate(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    struct pn_err err;
    int from = 0, to = 0;

    if (cli_parse(ctx, argc, argv, NULL, pos, 0, 0, &rc) < 0)
        return rc;
    if (!cli_db_raw(ctx))
        return 1;
    if (pn_migrate(ctx->db, &from, &to, &err) < 0)
        return cli_fail_err(&err);
    json_t *o = json_pack("{s:i, s:i, s:i}", "from", from, "to", to, "applied", to - from);
    if (!ctx->json) {
        if (from == to)
            printf("schema is up to date (version %d)\n", to);
        else
            printf("migrated schema from version %d to %d\n", from, to);
        json_decref(o);
        return 0;
    }
    cli_print_obj(ctx, o);
    return 0;
}

const struct cli_cmd cli_db_cmds[] = {
    {"migrate", cmd_migrate, "", "create or upgrade the database schema",
     "Applies every migration this binary carries that the database lacks, each in its own\n"
     "transaction; running it again is a no-op. A database newer than this binary is refused."},
    {NULL, NULL, NULL, NULL, NULL},
};
