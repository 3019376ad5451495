/* SPDX-License-Identifier: Apache-2.0 */
/* The shape of the pinion CLI: the context every command receives, the
 * tables main.c dispatches "pinion GROUP NAME" through (one per command
 * group, each defined in the group's file), and the few commands one group
 * borrows from another.  The helpers the commands share have their own
 * headers: args.h (options and argument checks), output.h (errors, tables,
 * JSON), query.h (the connection and look-ups); dependencies run one way,
 * query -> args -> output. */
#ifndef PINION_CLI_CLI_H
#define PINION_CLI_CLI_H

#include <libpq-fe.h>

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

extern const struct cli_cmd cli_db_cmds[], cli_org_cmds[], cli_product_cmds[], cli_ca_cmds[],
    cli_device_cmds[], cli_key_cmds[], cli_service_cmds[], cli_firmware_cmds[];
extern const struct cli_cmd cli_release_key_cmds[];

/* Writes PREFIX.pub / PREFIX.priv (--out PREFIX) and prints the key id. */
int cli_key_files_create(struct cli_ctx *ctx, int argc, char **argv);
extern const struct cli_cmd cli_deployment_cmds[];
/* pinion deployment watch (cli/watch.c). */
int cli_deployment_watch(struct cli_ctx *ctx, int argc, char **argv);

#endif
