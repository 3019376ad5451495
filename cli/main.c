/* SPDX-License-Identifier: Apache-2.0 */
/* pinion: the operator's CLI.  main() only dispatches "pinion GROUP CMD"
 * to the table of the group's file (cli/ca.c, cli/device.c, ...); each
 * command parses its own options and prints its own usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sodium.h>

#include "cli.h"
#include "output.h"
#include "version.h"

static const struct cli_group groups[] = {
    {"db", cli_db_cmds, "database schema"},
    {"org", cli_org_cmds, "organisations"},
    {"product", cli_product_cmds, "products of an organisation"},
    {"ca", cli_ca_cmds, "Device CAs: create, register with proof of possession, manage"},
    {"device", cli_device_cmds, "device certificates and device records"},
    {"key", cli_key_cmds, "fwup-compatible Ed25519 firmware signing keys"},
    {"firmware", cli_firmware_cmds, "firmware archives: pack, verify and upload, list"},
    {"service", cli_service_cmds, "service identities (piniond and other back ends)"},
    {"release-key", cli_release_key_cmds, "the service's manifest-signing key"},
    {"deployment", cli_deployment_cmds, "firmware rollouts to groups of devices"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pinion [--db CONNINFO] [--json] GROUP COMMAND [ARGS...]\n\n"
                 "Pinion: device PKI and firmware releases for Mosquitto.\n\n");
    for (const struct cli_group *g = groups; g->name; g++) {
        fprintf(out, "%s: %s\n", g->name, g->summary);
        for (const struct cli_cmd *c = g->cmds; c->name; c++)
            fprintf(out, "  pinion %s %s %s\n      %s\n", g->name, c->name,
                    c->usage ? c->usage : "", c->summary);
    }
    fprintf(out, "\nEvery command takes --db CONNINFO (or $PINION_DB), --json and --help.\n"
                 "Errors are one line on stderr and a non-zero exit status.\n");
}

static void group_usage(FILE *out, const struct cli_group *g)
{
    fprintf(out, "usage: pinion %s COMMAND [ARGS...]\n\n%s:\n", g->name, g->summary);
    for (const struct cli_cmd *c = g->cmds; c->name; c++)
        fprintf(out, "  pinion %s %s %s\n      %s\n", g->name, c->name, c->usage ? c->usage : "",
                c->summary);
}

int main(int argc, char **argv)
{
    struct cli_ctx ctx = {0};
    int i = 1;

    /* Global options may precede the group. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts("pinion " PINION_VERSION_FULL);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            ctx.json = 1;
        } else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            ctx.conninfo = argv[++i];
        } else if (strncmp(argv[i], "--db=", 5) == 0) {
            ctx.conninfo = argv[i] + 5;
        } else {
            fprintf(stderr, "pinion: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0)
        return cli_fail("libsodium failed to initialise");

    const struct cli_group *g = groups;
    while (g->name && strcmp(g->name, argv[i]) != 0)
        g++;
    if (!g->name) {
        fprintf(stderr, "pinion: unknown command '%s' (see pinion --help)\n", argv[i]);
        return 2;
    }
    i++;
    if (i >= argc || strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
        group_usage(i >= argc ? stderr : stdout, g);
        return i >= argc ? 2 : 0;
    }
    const struct cli_cmd *c = g->cmds;
    while (c->name && strcmp(c->name, argv[i]) != 0)
        c++;
    if (!c->name) {
        fprintf(stderr, "pinion %s: unknown command '%s'\n", g->name, argv[i]);
        group_usage(stderr, g);
        return 2;
    }
    ctx.group = g->name;
    ctx.cmd = c;
    int rc = c->run(&ctx, argc - i, argv + i);
    fflush(stdout);
    if (ctx.db)
        PQfinish(ctx.db);
    return rc;
}
