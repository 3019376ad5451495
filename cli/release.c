/* SPDX-License-Identifier: Apache-2.0 */
/* pinion release-key create: the service's manifest-signing key.
 *
 * piniond signs every update manifest (docs/protocol.md, "Manifest and
 * DSSE") with this Ed25519 key; devices embed its public half and refuse
 * manifests it did not sign.
 * The files are in fwup's format, like firmware keys (lib/fwkey.h), and the
 * DSSE keyid of a manifest is this key's key id.  Offline: no database. */
#include <stdio.h>

#include "cli.h"
#include "fwkey.h"

const struct cli_cmd cli_release_key_cmds[] = {
    {"create", cli_key_files_create, "--out PREFIX",
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
