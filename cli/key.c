/* SPDX-License-Identifier: Apache-2.0 */
/* pinion key create | register | list: fwup-compatible firmware keys.
 * Private keys stay in files on the operator's machine; only public keys
 * are registered, per organisation, in firmware_keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "db.h"
#include "fwkey.h"
#include "output.h"
#include "query.h"

/* `key create` and `release-key create`: the same Ed25519 key files in
 * fwup's format, for different jobs. */
int cli_key_files_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *out = NULL;
    const struct cli_opt opts[] = {{"out", 1, &out, NULL}, {NULL, 0, NULL, NULL}};
    const char *pos[1];
    int rc;
    struct pn_err err;
    unsigned char pk[32];
    char id[17], pub_path[4096], priv_path[4096];

    if (cli_parse(ctx, argc, argv, opts, pos, 0, 0, &rc) < 0)
        return rc;
    if (!out || !*out) {
        cli_fail("%s create needs --out PREFIX (writes PREFIX.pub and PREFIX.priv)", ctx->group);
        return 2;
    }
    if (pn_fwkey_create(out, pk, &err) < 0)
        return cli_fail_err(&err);
    pn_fwkey_id(pk, id);
    snprintf(pub_path, sizeof(pub_path), "%s.pub", out);
    snprintf(priv_path, sizeof(priv_path), "%s.priv", out);
    cli_print_obj(
        ctx, json_pack("{s:s, s:s, s:s}", "key_id", id, "public", pub_path, "private", priv_path));
    return 0;
}

/* After a unique violation: says which of the two constraints was hit. */
static int duplicate(struct cli_ctx *ctx, const char *org_id, const char *org, const char *name,
                     const char *key_id)
{
    struct pn_err err;
    const char *v[] = {org_id, key_id};
    PGresult *res = pn_db_q(
        ctx->db, &err, "SELECT name FROM firmware_keys WHERE org_id = $1 AND key_id = $2", 2, v);
    if (!res)
        return cli_fail_err(&err);
    if (PQntuples(res) == 1) {
        int r =
            cli_fail("this key is already registered as '%s' in '%s'", PQgetvalue(res, 0, 0), org);
        PQclear(res);
        return r;
    }
    PQclear(res);
    return cli_fail("organisation '%s' already has a key named '%s'", org, name);
}

static int cmd_key_register(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *pos[3];
    int rc;
    struct pn_err err;
    char state[6], org_id[24], key_id[17];
    unsigned char pk[32];

    if (cli_parse(ctx, argc, argv, NULL, pos, 3, 3, &rc) < 0)
        return rc;
    const char *org = pos[0], *name = pos[1], *path = pos[2];
    if (cli_check_name("key", name) < 0)
        return 1;
    if (pn_fwkey_load_pub(path, pk, &err) < 0)
        return cli_fail_err(&err);
    pn_fwkey_id(pk, key_id);
    if (!cli_db(ctx) || cli_org_id(ctx, org, org_id) < 0)
        return 1;

    const char *v[] = {org_id, name, key_id, (const char *)pk, org};
    const int lengths[] = {0, 0, 0, 32, 0};
    const int formats[] = {0, 0, 0, 1, 0};
    if (pn_db_begin(ctx->db, &err) < 0)
        return cli_fail_err(&err);
    PGresult *res = pn_db_exec(ctx->db, &err,
                               "INSERT INTO firmware_keys (org_id, name, key_id, public_key) "
                               "VALUES ($1, $2, $3, $4) "
                               "RETURNING name, key_id, $5::text AS org, created_at",
                               5, v, lengths, formats, state);
    if (!res) {
        pn_db_rollback(ctx->db);
        if (strcmp(state, PN_SQLSTATE_UNIQUE) == 0)
            return duplicate(ctx, org_id, org, name, key_id);
        return cli_fail_err(&err);
    }
    json_t *detail = json_pack("{s:s, s:s}", "org", org, "key_id", key_id);
    char *detail_text = cli_json_text(detail);
    json_decref(detail);
    int ok = pn_db_audit(ctx->db, &err, "key.register", name, detail_text) == 0 &&
             pn_db_commit(ctx->db, &err) == 0;
    free(detail_text);
    if (!ok) {
        PQclear(res);
        pn_db_rollback(ctx->db);
        return cli_fail_err(&err);
    }
    json_t *rows = cli_rows(res);
    PQclear(res);
    cli_print_obj(ctx, json_incref(json_array_get(rows, 0)));
    json_decref(rows);
    return 0;
}

static int cmd_key_list(struct cli_ctx *ctx, int argc, char **argv)
{
    return cli_list_org(ctx, argc, argv,
                        "SELECT name, key_id, encode(public_key, 'base64') AS public_key, "
                        "created_at FROM firmware_keys WHERE org_id = $1 ORDER BY name");
}

const struct cli_cmd cli_key_cmds[] = {
    {"create", cli_key_files_create, "--out PREFIX",
     "generate an Ed25519 firmware signing key pair",
     "Writes PREFIX.pub (base64 public key) and PREFIX.priv (base64 private key), mode 0600,\n"
     "in fwup's format: fwup's -s PREFIX.priv and -p PREFIX.pub take them as they are.\n"
     "Refuses to overwrite either file.  Works offline: no database is needed.\n"
     "Keep PREFIX.priv secret; register only PREFIX.pub."},
    {"register", cmd_key_register, "ORG NAME PREFIX.pub",
     "trust a firmware public key for an organisation's uploads",
     "Accepts fwup's .pub format (base64 of the 32-byte Ed25519 key) or the raw 32 bytes.\n"
     "Firmware uploaded to ORG must carry a signature by one of its registered keys.\n"
     "The key id is the first 16 hex characters of SHA-256 of the public key."},
    {"list", cmd_key_list, "ORG", "list an organisation's firmware keys", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
