/* SPDX-License-Identifier: Apache-2.0 */
/* Shared plumbing of the pinion CLI: command tables, option parsing, the
 * database connection, and output as a human table or JSON (--json). */
#ifndef PINION_CLI_CLI_H
#define PINION_CLI_CLI_H

#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "err.h"

struct cli_ctx {
    const char *conninfo; /* --db, else $PINION_DB, else libpq defaults */
    int json;             /* --json */
    PGconn *db;           /* opened on first cli_db() */
    const char *group;    /* e.g. "ca", for messages */
    const struct cli_cmd *cmd;
};

struct cli_cmd {
    const char *name;
    int (*run)(struct cli_ctx *ctx, int argc, char **argv);
    const char *usage;   /* arguments after "pinion GROUP NAME" */
    const char *summary; /* one line */
    const char *help;    /* further paragraphs for --help, may be NULL */
};

struct cli_group {
    const char *name;
    const struct cli_cmd *cmds; /* terminated by {NULL} */
    const char *summary;
};

/* An option of one subcommand.  has_arg: 0 → *flag = 1; 1 → *value = arg. */
struct cli_opt {
    const char *name;
    int has_arg;
    const char **value;
    int *flag;
};

/* Parses argv (argv[0] is the subcommand name) with the subcommand's
 * options plus the common --db, --json and --help.  Positional arguments
 * go to pos[]; their count must lie in [min, max].  Returns the count, or
 * -1 after printing the usage/--help text (*exit_code set to 0 for --help,
 * 2 for a usage error). */
int cli_parse(struct cli_ctx *ctx, int argc, char **argv, const struct cli_opt *opts,
              const char **pos, int min, int max, int *exit_code);

/* Connects (once) and checks the schema version.  Prints the error and
 * returns NULL on failure. */
PGconn *cli_db(struct cli_ctx *ctx);

/* Like cli_db without the schema check (for `db migrate`). */
PGconn *cli_db_raw(struct cli_ctx *ctx);

/* Prints "pinion: <message>" on stderr; returns 1 (the exit code). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The signing CA of `device cert` and `ca verification-cert`: --ca DIR
 * (DIR/ca.pem and DIR/ca.key, as `ca create` writes them) or --ca-cert FILE
 * with --ca-key FILE (any names, e.g. AWS's rootCA.pem and rootCA.key).
 * Prints the error and returns -1, or 0 with *cert and *key to free and
 * *label naming the CA for later messages (DIR or the certificate file). */
int cli_ca_load(const char *dir, const char *cert_path, const char *key_path, X509 **cert,
                EVP_PKEY **key, const char **label);
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

/* Runs a parameterised query and prints its single row (cli_print_row). */
int cli_show(struct cli_ctx *ctx, const char *sql, int n, const char *const *values,
             const char *missing);

/* The body of every "list ORG" command: parses exactly one argument (the
 * organisation), resolves it, and runs cli_list(sql) with its id as $1. */
int cli_list_org(struct cli_ctx *ctx, int argc, char **argv, const char *sql);

/* Runs a parameterised query and prints all its rows (cli_print_rows). */
int cli_list(struct cli_ctx *ctx, const char *sql, int n, const char *const *values);

/* Prints one object as JSON with --json, else as "key: value" lines.
 * Steals the reference. */
void cli_print_obj(struct cli_ctx *ctx, json_t *obj);

/* Splits "a,b,c" into a JSON array of strings, validating each as a tag
 * (^[A-Za-z0-9._:-]{1,64}$).  NULL and "" give []. Returns NULL after
 * printing an error. */
json_t *cli_tags(const char *csv);

/* cli_tags, serialised for an SQL parameter.  NULL after printing an
 * error.  Caller frees. */
char *cli_tags_text(const char *csv);

/* Validates a device identifier (docs/protocol.md, "Identities", and
 * not reserved); prints an error and returns -1 if it is not one. */
int cli_check_identifier(const char *identifier);

/* Validates an org, product or key name (^[A-Za-z0-9._-]{1,64}$). */
int cli_check_name(const char *what, const char *name);

/* Resolves a certificate id given in full or as a unique prefix of at
 * least 8 hex digits, in ca_certificates (table 'c') or
 * device_certificates ('d').  Prints an error and returns -1 if none or
 * several match. */
int cli_resolve_cert(struct cli_ctx *ctx, char table, const char *arg, char id[65]);

/* Serialises a JSON value compactly (for SQL parameters).  Caller frees. */
char *cli_json_text(const json_t *v);

/* Looks up an org by name; prints an error and returns -1 if missing. */
int cli_org_id(struct cli_ctx *ctx, const char *org, char id[24]);

/* Looks up a product of an org; prints an error and returns -1 if missing. */
int cli_product_id(struct cli_ctx *ctx, const char *org_id, const char *org,
                   const char *product, char id[24]);

/* Connects, then looks up ORG and its PRODUCT; prints an error and returns
 * -1 if any of that fails. */
int cli_org_product(struct cli_ctx *ctx, const char *org, const char *product, char org_id[24],
                    char product_id[24]);

extern const struct cli_cmd cli_db_cmds[], cli_org_cmds[], cli_product_cmds[], cli_ca_cmds[],
    cli_device_cmds[], cli_key_cmds[], cli_service_cmds[], cli_firmware_cmds[];
extern const struct cli_cmd cli_release_key_cmds[];

/* Writes PREFIX.pub / PREFIX.priv (--out PREFIX) and prints the key id. */
int cli_key_files_create(struct cli_ctx *ctx, int argc, char **argv);
extern const struct cli_cmd cli_deployment_cmds[];
/* pinion deployment watch (cli/watch.c). */
int cli_deployment_watch(struct cli_ctx *ctx, int argc, char **argv);

#endif
