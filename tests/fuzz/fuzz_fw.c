/* SPDX-License-Identifier: Apache-2.0 */
/* The .fw reader (lib/fw.h, pn_fw_verify): what `firmware upload` runs on an
 * uploaded archive, against the fixtures' keys (tests/fixtures/fwup
 * prod.pub and debug.pub), so the seeds from the fixtures verify and the
 * fuzzer starts past the signature.  The copy the reader writes while it
 * verifies must be the input byte for byte. */
#include <sodium.h>

#include "fuzz.h"
#include "fw.h"
#include "fwkey.h"
#include "semver.h"

static struct pn_fw_key keys[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const pubs[] = {"REBtMQ7SkYSR4qCxGDfbmcDGn9j1EpgKeV/jHQOuLV0=",
                                       "W0hveCd0X3YjP1LE6uAUD3R597qzCR7R93IU+CaMF/A="};
    if (sodium_init() < 0)
        abort();
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        if (sodium_base642bin(keys[i].pk, 32, pubs[i], strlen(pubs[i]), NULL, &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            n != 32)
            abort();
        pn_fwkey_id(keys[i].pk, keys[i].id);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pn_fw_info info;
    struct pn_err err;
    int fd = fuzz_mem_fd(0, data, size);
    int copy = fuzz_mem_fd(1, NULL, 0);
    if (pn_fw_verify(fd, keys, 2, copy, &info, &err) == 0) {
        FUZZ_ASSERT(info.reason == PN_FW_OK && info.size == size);
        FUZZ_ASSERT(info.key_index == 0 || info.key_index == 1);
        FUZZ_ASSERT(!strcmp(info.key_id, keys[info.key_index].id));
        FUZZ_ASSERT(pn_fwkey_verify(keys[info.key_index].pk, info.meta_conf, info.meta_conf_len,
                                    info.meta_conf_sig) == 0);
        struct pn_semver v;
        FUZZ_ASSERT(pn_semver_parse(info.meta.version, &v, NULL) == 0);
        char uuid[PN_FW_UUID_LEN + 1];
        pn_fw_uuid(info.meta_conf, info.meta_conf_len, uuid);
        FUZZ_ASSERT(!strcmp(uuid, info.meta.uuid));
        unsigned char *back = malloc(size + 1);
        FUZZ_ASSERT(back && pread(copy, back, size + 1, 0) == (ssize_t)size);
        FUZZ_ASSERT(!memcmp(back, data, size));
        free(back);
    } else {
        FUZZ_ASSERT(info.reason != PN_FW_OK);
        fuzz_one_line(err.msg);
    }
    pn_fw_info_free(&info);
    return 0;
}
