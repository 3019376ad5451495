/* SPDX-License-Identifier: Apache-2.0 */
/* fwup key files (lib/fwkey.h): `key register` reads a public key file,
 * `firmware pack` and piniond's release_key a private one.  A key that
 * loads must work: its signatures verify. */
#include <sodium.h>

#include "fuzz.h"
#include "fwkey.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char pk[32], sk[64], sig[64];
    char id[17];
    struct pn_err err;
    const char *path = fuzz_mem_path(0, data, size);
    if (pn_fwkey_load_pub(path, pk, &err) == 0) {
        pn_fwkey_id(pk, id);
        FUZZ_ASSERT(strlen(id) == PN_FWKEY_ID_LEN);
    } else {
        fuzz_one_line(err.msg);
    }
    if (pn_fwkey_load_priv(path, sk, &err) == 0) {
        FUZZ_ASSERT(pn_fwkey_sign(sk, data, size, sig) == 0);
        FUZZ_ASSERT(pn_fwkey_verify(sk + 32, data, size, sig) == 0);
        sodium_memzero(sk, sizeof(sk));
    } else {
        fuzz_one_line(err.msg);
    }
    return 0;
}
