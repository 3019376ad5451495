/* SPDX-License-Identifier: Apache-2.0 */
/* meta.conf parsing (lib/fw.h, pn_fw_meta_parse): fwup's libconfuse syntax,
 * as read from an archive (before the signature is checked, an attacker's
 * text) and from a manifest on the device. */
#include "fuzz.h"
#include "fw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pn_fw_meta meta;
    struct pn_err err;
    if (pn_fw_meta_parse(data, size, &meta, &err) == 0) {
        char uuid[PN_FW_UUID_LEN + 1];
        pn_fw_uuid(data, size, uuid);
        FUZZ_ASSERT(!strcmp(uuid, meta.uuid));
        const char *fields[] = {meta.product,        meta.version, meta.platform,
                                meta.architecture,   meta.author,  meta.description,
                                meta.vcs_identifier, meta.misc};
        for (size_t i = 0; i < sizeof(fields) / sizeof(*fields); i++)
            FUZZ_ASSERT(fields[i] != NULL);
        pn_fw_meta_free(&meta);
    } else {
        fuzz_one_line(err.msg);
    }
    return 0;
}
