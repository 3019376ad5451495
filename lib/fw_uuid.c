/* SPDX-License-Identifier: Apache-2.0 */
/* fwup's meta-uuid of an archive (fw.h). */
#include "fw_internal.h"

#include <stdio.h>

#include <sodium.h>

void pn_fw_uuid(const void *meta_conf, size_t len, char out[PN_FW_UUID_LEN + 1])
{
    /* fwup's namespace uuid 2053dffb-d51e-4310-b93b-956da89f9f34. */
    static const unsigned char ns[16] = {0x20, 0x53, 0xdf, 0xfb, 0xd5, 0x1e, 0x43, 0x10,
                                         0xb9, 0x3b, 0x95, 0x6d, 0xa8, 0x9f, 0x9f, 0x34};
    unsigned char h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, ns, sizeof(ns));
    crypto_generichash_update(&st, meta_conf, len);
    crypto_generichash_final(&st, h, sizeof(h));
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x50);
    char x[33];
    pn_fw_hex(h, 16, x);
    snprintf(out, PN_FW_UUID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", x, x + 8, x + 12, x + 16,
             x + 20);
}
