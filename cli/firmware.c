/* SPDX-License-Identifier: Apache-2.0 */
/* pinion firmware pack | upload | list | show: the firmware registry.
 *
 * upload verifies an fwup archive against the organisation's registered
 * keys while it copies it into the artifact directory (one pass), then
 * records it; a refusal at any point leaves neither a row nor a file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "args.h"
#include "cli.h"
#include "db.h"
#include "fw.h"
#include "ident.h"
#include "fwkey.h"
#include "output.h"
#include "query.h"
#include "semver.h"

#define DEFAULT_ARTIFACTS "/var/lib/pinion/artifacts"
#define MAX_ARGS 64

/* cli_parse knows long options only; the documented usage spells
 * the output of pack "-o" (README, "CLI reference").
 * Rewrites "-o X" / "-oX" to "--out X" / "--out=X" in a copy of argv. */
static char **short_out(int argc, char **argv, char **storage, size_t nstorage)
{
    if ((size_t)argc + 1 > nstorage)
        return NULL;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "-o") == 0) {
            storage[i] = "--out";
        } else if (i > 0 && strncmp(argv[i], "-o", 2) == 0 && argv[i][2] != '-') {
            size_t n = strlen(argv[i]) + 5;
            char *s = malloc(n);
            if (!s)
                return NULL;
            snprintf(s, n, "--out=%s", argv[i] + 2);
            storage[i] = s;
        } else {
            storage[i] = argv[i];
        }
    }
    storage[argc] = NULL;
    return storage;
}

static void free_short_out(int argc, char **argv, char **storage)
{
    for (int i = 0; i < argc; i++)
        if (storage[i] != argv[i] && strncmp(storage[i], "--out=", 6) == 0)
            free(storage[i]);
}

static int cmd_fw_pack(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *key = NULL, *out = NULL;
    struct pn_fw_pack_meta m = {0};
    const struct cli_opt opts[] = {
        {"key", 1, &key, NULL},
        {"out", 1, &out, NULL},
        {"product", 1, &m.product, NULL},
        {"version", 1, &m.version, NULL},
        {"platform", 1, &m.platform, NULL},
        {"architecture", 1, &m.architecture, NULL},
        {"author", 1, &m.author, NULL},
        {"description", 1, &m.description, NULL},
        {"vcs-identifier", 1, &m.vcs_identifier, NULL},
        {"misc", 1, &m.misc, NULL},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[1];
    char *args[MAX_ARGS];
    int rc;
    struct pn_err err;
    struct pn_fw_info info;
    unsigned char sk[64];

    char **av = short_out(argc, argv, args, MAX_ARGS);
    if (!av)
        return cli_fail("too many arguments");
    int n = cli_parse(ctx, argc, av, opts, pos, 1, 1, &rc);
    free_short_out(argc, argv, args);
    if (n < 0)
        return rc;
    if (!key || !out || !m.product || !m.version || !m.platform || !m.architecture) {
        cli_fail("firmware pack needs --key, --product, --version, --platform, --architecture "
                 "and -o OUT.fw");
        return 2;
    }
    /* What upload will demand, refused before anything is written. */
    if (!pn_name_valid(m.product))
        return cli_fail("--product '%s' is not a product name ([A-Za-z0-9._-]{1,64})", m.product);
    if (pn_fwkey_load_priv(key, sk, &err) < 0)
        return cli_fail_err(&err);
    rc = pn_fw_pack(sk, &m, pos[0], out, &info, &err);
    sodium_memzero(sk, sizeof(sk));
    if (rc < 0)
        return cli_fail_err(&err);
    cli_print_obj(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "file", out,
                                 "uuid", info.meta.uuid, "product", info.meta.product, "version",
                                 info.meta.version, "platform", info.meta.platform, "architecture",
                                 info.meta.architecture, "key_id", info.key_id, "size",
                                 (json_int_t)info.size, "sha256", info.sha256_hex));
    pn_fw_info_free(&info);
    return 0;
}

/* Loads the organisation's firmware keys.  Returns the count (keys and
 * names malloc'd) or -1 after printing an error. */
static int org_keys(struct cli_ctx *ctx, const char *org_id, struct pn_fw_key **keys, char ***names)
{
    struct pn_err err;
    const char *v[] = {org_id};
    PGresult *res = pn_db_q(ctx->db, &err,
                            "SELECT key_id, encode(public_key, 'hex'), name FROM firmware_keys "
                            "WHERE org_id = $1 ORDER BY id",
                            1, v);
    if (!res)
        return cli_fail_err(&err), -1;
    int n = PQntuples(res);
    *keys = calloc((size_t)n + 1, sizeof(**keys));
    *names = calloc((size_t)n + 1, sizeof(**names));
    if (!*keys || !*names) {
        PQclear(res);
        return cli_fail("out of memory"), -1;
    }
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        if (sodium_hex2bin((*keys)[i].pk, 32, PQgetvalue(res, i, 1), 64, NULL, &len, NULL) != 0 ||
            len != 32) {
            PQclear(res);
            return cli_fail("firmware key '%s' in the database is malformed",
                            PQgetvalue(res, i, 2)),
                   -1;
        }
        snprintf((*keys)[i].id, sizeof((*keys)[i].id), "%s", PQgetvalue(res, i, 0));
        (*names)[i] = strdup(PQgetvalue(res, i, 2));
    }
    PQclear(res);
    return n;
}

static void free_keys(struct pn_fw_key *keys, char **names, int n)
{
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(keys);
}

/* The firmware row as upload and show print it. */
#define FW_COLUMNS                                                                                 \
    "f.uuid, o.name AS org, p.name AS product, f.version, f.platform, f.architecture, "            \
    "f.author, f.description, f.vcs_identifier, f.misc, k.name AS key, f.key_id, f.size, "         \
    "f.sha256, f.artifact, f.status, f.uploaded_at "
#define FW_JOINS                                                                                   \
    "FROM firmware f JOIN orgs o ON o.id = f.org_id JOIN products p ON p.id = f.product_id "       \
    "LEFT JOIN firmware_keys k ON k.org_id = f.org_id AND k.key_id = f.key_id "

static int cmd_fw_upload(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *dir = NULL;
    const struct cli_opt opts[] = {{"artifacts", 1, &dir, NULL}, {NULL, 0, NULL, NULL}};
    const char *pos[3];
    int rc, fd = -1, nkeys = -1, in_tx = 0;
    struct pn_err err;
    struct pn_fw_info info = {0};
    struct pn_fw_artifact art = {.fd = -1};
    struct pn_fw_key *keys = NULL;
    char **names = NULL, org_id[24], product_id[24], state[6];
    PGresult *res = NULL;

    if (cli_parse(ctx, argc, argv, opts, pos, 3, 3, &rc) < 0)
        return rc;
    const char *org = pos[0], *product = pos[1], *file = pos[2];
    if (!dir || !*dir)
        dir = getenv("PINION_ARTIFACTS");
    if (!dir || !*dir)
        dir = DEFAULT_ARTIFACTS;
    /* The row records an absolute path, whatever the caller's directory. */
    char absdir[4096];
    if (!realpath(dir, absdir)) {
        /* A new host: say what to do, not only what is missing. */
        if (errno == ENOENT)
            return cli_fail("artifact directory %s does not exist: create it (the piniond "
                            "package makes " DEFAULT_ARTIFACTS
                            "; by hand: install -d -m 2775 -g pinion DIR) or choose another "
                            "with --artifacts DIR or $PINION_ARTIFACTS",
                            dir);
        return cli_fail("artifact directory %s: %s", dir, strerror(errno));
    }
    dir = absdir;
    if (cli_org_product(ctx, org, product, org_id, product_id) < 0)
        return 1;
    if ((nkeys = org_keys(ctx, org_id, &keys, &names)) < 0)
        return 1;

    rc = 1;
    fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not hang us */
    if (fd < 0) {
        cli_fail("%s: %s", file, strerror(errno));
        goto out;
    }
    if (pn_fw_artifact_open(&art, dir, &err) < 0) {
        cli_fail_err(&err);
        goto out;
    }
    if (pn_fw_verify(fd, keys, (size_t)nkeys, art.fd, &info, &err) < 0) {
        if (info.reason == PN_FW_NO_KEYS)
            cli_fail("%s: organisation '%s' has no registered firmware keys (pinion key "
                     "register)",
                     file, org);
        else
            cli_fail("%s: %s", file, err.msg);
        goto out;
    }
    if (strcmp(info.meta.product, product) != 0) {
        cli_fail("%s: product mismatch: the firmware is for product '%s', not '%s'", file,
                 info.meta.product, product);
        goto out;
    }
    struct pn_semver sv;
    if (pn_semver_parse(info.meta.version, &sv, &err) < 0) {
        cli_fail("%s: meta-version %s", file, err.msg);
        goto out;
    }

    char size[24], artifact[sizeof(art.path)];
    snprintf(size, sizeof(size), "%llu", (unsigned long long)info.size);
    snprintf(artifact, sizeof(artifact), "%s/%s.fw", dir, info.sha256_hex);
    const char *v[] = {info.meta.uuid,
                       org_id,
                       product_id,
                       info.meta.version,
                       info.meta.platform,
                       info.meta.architecture,
                       info.meta.author,
                       info.meta.description,
                       info.meta.vcs_identifier,
                       info.meta.misc,
                       info.key_id,
                       size,
                       info.sha256_hex,
                       (const char *)info.meta_conf,
                       (const char *)info.meta_conf_sig,
                       artifact};
    const int lengths[] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (int)info.meta_conf_len, PN_FW_SIG_BYTES, 0};
    const int formats[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0};
    if (pn_db_begin(ctx->db, &err) < 0) {
        cli_fail_err(&err);
        goto out;
    }
    in_tx = 1;
    res = pn_db_exec(ctx->db, &err,
                     "INSERT INTO firmware (uuid, org_id, product_id, version, platform, "
                     "architecture, author, description, vcs_identifier, misc, key_id, size, "
                     "sha256, meta_conf, meta_conf_sig, artifact) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
                     "$16)",
                     16, v, lengths, formats, state);
    if (!res) {
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            cli_fail("%s: duplicate uuid: firmware %s is already uploaded", file, info.meta.uuid);
        else
            cli_fail_err(&err);
        goto out;
    }
    PQclear(res);
    res = NULL;
    json_t *detail =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "org", org, "product", product, "version",
                  info.meta.version, "key_id", info.key_id, "sha256", info.sha256_hex);
    char *detail_text = cli_json_text(detail);
    json_decref(detail);
    int ok = pn_db_audit(ctx->db, &err, "firmware.upload", info.meta.uuid, detail_text) == 0;
    free(detail_text);
    /* The file appears under its name before the row is committed: a crash
     * in between leaves an unreferenced file, never a row without one. */
    if (!ok || pn_fw_artifact_publish(&art, info.sha256_hex, &err) < 0 ||
        pn_db_commit(ctx->db, &err) < 0) {
        cli_fail_err(&err);
        goto out;
    }
    in_tx = 0;
    pn_fw_artifact_keep(&art);

    const char *q[] = {info.meta.uuid};
    res = pn_db_q(ctx->db, &err, "SELECT " FW_COLUMNS FW_JOINS "WHERE f.uuid = $1", 1, q);
    if (!res) {
        cli_fail_err(&err);
        goto out;
    }
    json_t *rows = cli_rows(res);
    cli_print_obj(ctx, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    rc = 0;
out:
    if (res)
        PQclear(res);
    if (in_tx)
        pn_db_rollback(ctx->db);
    pn_fw_artifact_discard(&art);
    if (fd >= 0)
        close(fd);
    pn_fw_info_free(&info);
    free_keys(keys, names, nkeys);
    return rc;
}

static int cmd_fw_list(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[2];
    int rc, n;
    char org_id[24], product_id[24];

    if ((n = cli_parse(ctx, argc, argv, NULL, pos, 1, 2, &rc)) < 0)
        return rc;
    if (!cli_db(ctx) || cli_org_id(ctx, pos[0], org_id) < 0)
        return 1;
    if (n == 2 && cli_product_id(ctx, org_id, pos[0], pos[1], product_id) < 0)
        return 1;
    const char *v[] = {org_id, n == 2 ? product_id : NULL};
    return cli_list(ctx,
                    "SELECT f.uuid, p.name AS product, f.version, f.platform, f.architecture, "
                    "k.name AS key, f.size, f.status, f.uploaded_at " FW_JOINS
                    "WHERE f.org_id = $1 AND ($2::bigint IS NULL OR f.product_id = $2) "
                    "ORDER BY p.name, f.uploaded_at, f.id",
                    2, v);
}

static int cmd_fw_show(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    int rc;
    struct pn_err err;

    if (cli_parse(ctx, argc, argv, NULL, pos, 1, 1, &rc) < 0)
        return rc;
    if (!cli_db(ctx))
        return 1;
    const char *v[] = {pos[0]};
    PGresult *res = pn_db_q(ctx->db, &err,
                            "SELECT " FW_COLUMNS ", encode(f.meta_conf_sig, 'base64') AS "
                            "meta_conf_sig " FW_JOINS "WHERE f.uuid = lower($1)",
                            1, v);
    if (!res)
        return cli_fail_err(&err);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return cli_fail("no firmware with uuid %s", pos[0]);
    }
    json_t *rows = cli_rows(res);
    PQclear(res);
    json_t *row = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    /* base64 from PostgreSQL wraps at 76 characters. */
    const char *sig = json_string_value(json_object_get(row, "meta_conf_sig"));
    if (sig) {
        char flat[128];
        size_t j = 0;
        for (const char *p = sig; *p && j + 1 < sizeof(flat); p++)
            if (*p != '\n')
                flat[j++] = *p;
        flat[j] = '\0';
        json_object_set_new(row, "meta_conf_sig", json_string(flat));
    }
    cli_print_obj(ctx, row);
    return 0;
}

const struct cli_cmd cli_firmware_cmds[] = {
    {"pack", cmd_fw_pack,
     "--key PREFIX.priv --product P --version V --platform X --architecture Y\n"
     "                     [--author A] [--description D] [--vcs-identifier C] [--misc M]\n"
     "                     IMAGE -o OUT.fw",
     "wrap any image into a signed, fwup-compatible .fw archive",
     "Writes OUT.fw (refusing to overwrite it) in fwup's form: meta.conf.ed25519 (stored),\n"
     "meta.conf (deflated) and data/image (deflated).  meta.conf holds the meta-* fields, a\n"
     "file-resource \"image\" with its length and BLAKE2b-256, and a task \"upgrade\" that\n"
     "raw-writes the image at block 0, so `fwup -a -t upgrade` can apply it.  The version\n"
     "must be SemVer 2.0.0.  The image is streamed, never loaded whole.  No database needed."},
    {"upload", cmd_fw_upload, "ORG PRODUCT FILE.fw [--artifacts DIR]",
     "verify an fwup archive against ORG's keys and store it",
     "The archive must be signed by one of ORG's registered firmware keys; every resource\n"
     "must be present once with its declared length and hash; meta-product must be PRODUCT,\n"
     "meta-version SemVer, and its uuid (fwup's meta-uuid) new.  The file is stored as\n"
     "DIR/<sha256>.fw (DIR: --artifacts, $PINION_ARTIFACTS, or " DEFAULT_ARTIFACTS ")\n"
     "and recorded in one transaction; a refusal leaves neither a row nor a file."},
    {"list", cmd_fw_list, "ORG [PRODUCT]", "list an organisation's firmware", NULL},
    {"show", cmd_fw_show, "UUID", "show one firmware", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
