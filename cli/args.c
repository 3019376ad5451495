/* SPDX-License-Identifier: Apache-2.0 */
/* What the operator typed: a subcommand's options and positional arguments,
 * the checks on names, identifiers and tags, and the CA that --ca or
 * --ca-cert/--ca-key name.  Nothing here talks to the database. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cert.h"
#include "ident.h"
#include "output.h"

#define MAX_OPTS 32

static void print_usage(const struct cli_ctx *ctx, FILE *out, int full)
{
    const struct cli_cmd *c = ctx->cmd;
    fprintf(out, "usage: pinion %s %s %s\n", ctx->group, c->name, c->usage ? c->usage : "");
    if (!full)
        return;
    fprintf(out, "\n%s\n", c->summary);
    if (c->help)
        fprintf(out, "\n%s\n", c->help);
    fprintf(out, "\ncommon options:\n"
                 "  --db CONNINFO   PostgreSQL conninfo or URI (default: $PINION_DB)\n"
                 "  --json          print JSON instead of a table\n"
                 "  --help          this text\n");
}

int cli_parse(struct cli_ctx *ctx, int argc, char **argv, const struct cli_opt *opts,
              const char **pos, int min, int max, int *exit_code)
{
    struct option lo[MAX_OPTS + 4];
    int n = 0, help = 0, npos = 0;

    for (; opts && opts[n].name && n < MAX_OPTS; n++)
        lo[n] = (struct option){opts[n].name, opts[n].has_arg ? required_argument : no_argument,
                                NULL, 1000 + n};
    lo[n++] = (struct option){"db", required_argument, NULL, 'd'};
    lo[n++] = (struct option){"json", no_argument, NULL, 'j'};
    lo[n++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n] = (struct option){NULL, 0, NULL, 0};

    optind = 0; /* GNU: full re-initialisation for each subcommand */
    opterr = 0;
    for (;;) {
        int prev = optind ? optind : 1;
        int c = getopt_long(argc, argv, "-h", lo, NULL);
        if (c == -1)
            break;
        if (c == 1) { /* positional, in order */
            if (npos >= max) {
                fprintf(stderr, "pinion %s %s: unexpected argument '%s'\n", ctx->group,
                        ctx->cmd->name, optarg);
                print_usage(ctx, stderr, 0);
                *exit_code = 2;
                return -1;
            }
            pos[npos++] = optarg;
        } else if (c == 'd') {
            ctx->conninfo = optarg;
        } else if (c == 'j') {
            ctx->json = 1;
        } else if (c == 'h') {
            help = 1;
        } else if (c >= 1000) {
            const struct cli_opt *o = &opts[c - 1000];
            if (o->has_arg)
                *o->value = optarg;
            else
                *o->flag = 1;
        } else {
            const char *bad = prev < argc ? argv[prev] : "?";
            fprintf(stderr, "pinion %s %s: bad or incomplete option '%s'\n", ctx->group,
                    ctx->cmd->name, bad);
            print_usage(ctx, stderr, 0);
            *exit_code = 2;
            return -1;
        }
    }
    if (help) {
        print_usage(ctx, stdout, 1);
        *exit_code = 0;
        return -1;
    }
    if (npos < min) {
        fprintf(stderr, "pinion %s %s: missing argument\n", ctx->group, ctx->cmd->name);
        print_usage(ctx, stderr, 0);
        *exit_code = 2;
        return -1;
    }
    return npos;
}

json_t *cli_tags(const char *csv)
{
    json_t *tags = json_array();
    if (!csv || !*csv)
        return tags;
    char *dup = strdup(csv), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!pn_tag_valid(t)) {
            cli_fail("invalid tag '%s': tags are 1-64 characters of A-Z a-z 0-9 . _ : -", t);
            json_decref(tags);
            free(dup);
            return NULL;
        }
        int dup_tag = 0;
        size_t i;
        json_t *e;
        json_array_foreach(tags, i, e) if (strcmp(json_string_value(e), t) == 0) dup_tag = 1;
        if (!dup_tag)
            json_array_append_new(tags, json_string(t));
    }
    free(dup);
    return tags;
}

char *cli_tags_text(const char *csv)
{
    json_t *tags = cli_tags(csv);
    char *text = tags ? cli_json_text(tags) : NULL;
    json_decref(tags);
    return text;
}

int cli_check_identifier(const char *identifier)
{
    if (!pn_ident_valid(identifier))
        return cli_fail("invalid device identifier '%s': use 1-128 characters of "
                        "A-Z a-z 0-9 . _ : -",
                        identifier),
               -1;
    if (pn_ident_reserved(identifier))
        return cli_fail("device identifier '%s' is reserved", identifier), -1;
    return 0;
}

int cli_check_name(const char *what, const char *name)
{
    if (pn_name_valid(name))
        return 0;
    cli_fail("invalid %s name '%s': use 1-64 characters of A-Z a-z 0-9 . _ -", what, name);
    return -1;
}

int cli_ca_load(const char *dir, const char *cert_path, const char *key_path, X509 **cert,
                EVP_PKEY **key, const char **label)
{
    struct pn_err err;
    *cert = NULL;
    *key = NULL;
    if (dir && (cert_path || key_path)) {
        cli_fail("give either --ca DIR or --ca-cert FILE with --ca-key FILE, not both");
        return -1;
    }
    if (!dir && (!cert_path || !key_path)) {
        cli_fail("the CA: --ca DIR (DIR/ca.pem and DIR/ca.key), or --ca-cert FILE and "
                 "--ca-key FILE");
        return -1;
    }
    int rc = dir ? pn_ca_dir_load(dir, cert, key, &err)
                 : pn_ca_files_load(cert_path, key_path, cert, key, &err);
    if (rc < 0) {
        cli_fail_err(&err);
        return -1;
    }
    *label = dir ? dir : cert_path;
    return 0;
}
