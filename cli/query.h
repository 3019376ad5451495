/* SPDX-License-Identifier: Apache-2.0 */
/* The CLI's side of the database shared by the command groups
 * (cli/query.c): the connection, look-ups by name or id prefix, and the
 * run-and-print bodies of show and list commands.  Each command's own
 * statements stay in its group's file. */
#ifndef PINION_CLI_QUERY_H
#define PINION_CLI_QUERY_H

#include <libpq-fe.h>

#include "cli.h"

/* Connects (once) and checks the schema version.  Prints the error and
 * returns NULL on failure. */
PGconn *cli_db(struct cli_ctx *ctx);

/* Like cli_db without the schema check (for `db migrate`). */
PGconn *cli_db_raw(struct cli_ctx *ctx);

/* Looks up an org by name; prints an error and returns -1 if missing. */
int cli_org_id(struct cli_ctx *ctx, const char *org, char id[24]);

/* Looks up a product of an org; prints an error and returns -1 if missing. */
int cli_product_id(struct cli_ctx *ctx, const char *org_id, const char *org, const char *product,
                   char id[24]);

/* Connects, then looks up ORG and its PRODUCT; prints an error and returns
 * -1 if any of that fails. */
int cli_org_product(struct cli_ctx *ctx, const char *org, const char *product, char org_id[24],
                    char product_id[24]);

/* Resolves a certificate id given in full or as a unique prefix of at
 * least 8 hex digits, in ca_certificates (table 'c') or
 * device_certificates ('d').  Prints an error and returns -1 if none or
 * several match. */
int cli_resolve_cert(struct cli_ctx *ctx, char table, const char *arg, char id[65]);

/* Runs a parameterised query and prints its single row (cli_print_row). */
int cli_show(struct cli_ctx *ctx, const char *sql, int n, const char *const *values,
             const char *missing);

/* Runs a parameterised query and prints all its rows (cli_print_rows). */
int cli_list(struct cli_ctx *ctx, const char *sql, int n, const char *const *values);

/* The body of every "list ORG" command: parses exactly one argument (the
 * organisation), resolves it, and runs cli_list(sql) with its id as $1. */
int cli_list_org(struct cli_ctx *ctx, int argc, char **argv, const char *sql);

#endif
