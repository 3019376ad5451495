/* pinion release-key create: the service's manifest-signing key.
 *
 * piniond signs every update manifest (SPEC section 8) with this Ed25519
 * key; devices embed its public half and refuse manifests it did not sign.
 * The files are in fwup's format, like firmware keys (lib/fwkey.h), and the
 * DSSE keyid of a manifest is this key's key id.  Offline: no database. */
#include <stdio.h>

#include "cli.h"
#include "fwkey.h"

static int cmd_release_key_create(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *out = NULL;
    const struct cli_opt opts[] = {{"out", 1, &out, NULL}, {NULL, 0, NULL, NULL}};
    const char *pos[1];
    int rc;
    struct pn_err err;
    unsigned char pk[PN_FWKEY_PUBLICKEYBYTES];
    char id[PN_FWKEY_ID_LEN + 1], pub_path[4096], priv_path[4096];

    if (cli_parse(ctx, argc, argv, opts, pos, 0, 0, &rc) < 0)
        return rc;
    if (!out || !*out) {
        cli_fail("release-key create needs --out PREFIX (writes PREFIX.pub and PREFIX.priv)");
        return 2;
    }
    if (pn_fwkey_create(out, pk, &err) < 0)
        return cli_fail_err(&err);
    pn_fwkey_id(pk, id);
    snprintf(pub_path, sizeof(pub_path), "%s.pub", out);
    snprintf(priv_path, sizeof(priv_path), "%s.priv", out);
    cli_print_obj(ctx, json_pack("{s:s, s:s, s:s}", "key_id", id, "public", pub_path, "private",
                                 priv_path));
    return 0;
}

const struct cli_cmd cli_release_key_cmds[] = {
    {"create", cmd_release_key_create, "--out PREFIX",
     "generate the service's Ed25519 manifest-signing key pair",
     "This is the release key: piniond signs every update manifest (a DSSE envelope)\n"
     "with PREFIX.priv, and devices embed PREFIX.pub to check that a manifest comes\n"
     "from the service, is meant for them, is fresh and is not a replay.  It is not a\n"
     "firmware signing key (see pinion key create); do not register it with an org.\n"
     "Writes PREFIX.pub (base64 public key) and PREFIX.priv (base64 private key),\n"
     "mode 0600, in fwup's format.  Refuses to overwrite either file.  Works offline:\n"
     "no database is needed.  Give PREFIX.priv to piniond only; the printed key_id is\n"
     "the keyid of the manifests' signatures."},
    {NULL, NULL, NULL, NULL, NULL},
};
