/* SPDX-License-Identifier: Apache-2.0 */
/* What the CLI prints (cli/output.c): one-line errors, query results as
 * JSON, and JSON shown as --json or as a table / "key: value" lines. */
#ifndef PINION_CLI_OUTPUT_H
#define PINION_CLI_OUTPUT_H

#include <jansson.h>
#include <libpq-fe.h>

#include "cli.h"
#include "err.h"

/* Prints "pinion: <message>" on stderr; returns 1 (the exit code). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* cli_fail with err's sentence. */
int cli_fail_err(const struct pn_err *err);

/* Converts a result into an array of objects keyed by column name:
 * integers and booleans become JSON numbers/booleans, json/jsonb columns
 * are embedded, NULL becomes null, everything else a string.  New ref. */
json_t *cli_rows(const PGresult *res);

/* Prints rows (an array of objects) as JSON with --json, else as an aligned
 * table whose columns are the keys of the first row (arrays joined with
 * ","), or "(none)" when empty.  Steals the reference. */
void cli_print_rows(struct cli_ctx *ctx, json_t *rows);

/* Prints the first row of res as an object (cli_print_obj); when res has
 * no row, prints `missing` as the one-line error instead.  Returns the exit
 * code.  Does not PQclear(res). */
int cli_print_row(struct cli_ctx *ctx, const PGresult *res, const char *missing);

/* Prints one object as JSON with --json, else as "key: value" lines.
 * Steals the reference. */
void cli_print_obj(struct cli_ctx *ctx, json_t *obj);

/* Serialises a JSON value compactly (for SQL parameters).  Caller frees. */
char *cli_json_text(const json_t *v);

#endif
