/* SPDX-License-Identifier: Apache-2.0 */
/* Packing a signed fwup archive (.fw) from an image. */
#ifndef PINION_LIB_FW_PACK_H
#define PINION_LIB_FW_PACK_H

#include "err.h"
#include "fw_verify.h"

/* Metadata for pn_fw_pack(); NULL or "" leaves an optional field out. */
struct pn_fw_pack_meta {
    const char *product, *version, *platform, *architecture; /* required */
    const char *author, *description, *vcs_identifier, *misc;
};

/* Writes a new signed archive at out (refuses an existing file) holding
 * the file image as its only resource, data/image, in fwup's form:
 * meta.conf.ed25519 (stored), meta.conf (deflated; meta-* lines, a
 * file-resource "image" with length and blake2b-256, and a task "upgrade"
 * that raw-writes the image at block 0), data/image (deflated).  The image
 * is streamed, never loaded whole.  When info is non-NULL it receives the
 * archive's metadata, uuid, key id, size and SHA-256 (free it with
 * pn_fw_info_free).  The version must be SemVer 2.0.0 (lib/semver.h).
 * On failure nothing is left at out.  0 / -1. */
int pn_fw_pack(const unsigned char sk[64], const struct pn_fw_pack_meta *m, const char *image,
               const char *out, struct pn_fw_info *info, struct pn_err *err);

#endif
