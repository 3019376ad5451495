/* SPDX-License-Identifier: Apache-2.0 */
/* What the operator typed (cli/args.c): a subcommand's options and
 * positional arguments, the checks on names, identifiers and tags, and the
 * CA named by --ca or --ca-cert/--ca-key. */
#ifndef PINION_CLI_ARGS_H
#define PINION_CLI_ARGS_H

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cli.h"

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

/* The signing CA of `device cert` and `ca verification-cert`: --ca DIR
 * (DIR/ca.pem and DIR/ca.key, as `ca create` writes them) or --ca-cert FILE
 * with --ca-key FILE (any names, e.g. AWS's rootCA.pem and rootCA.key).
 * Prints the error and returns -1, or 0 with *cert and *key to free and
 * *label naming the CA for later messages (DIR or the certificate file). */
int cli_ca_load(const char *dir, const char *cert_path, const char *key_path, X509 **cert,
                EVP_PKEY **key, const char **label);

#endif
