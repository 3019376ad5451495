/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's up/get parser (service/messages.h): what any device may send
 * to fleet/<id>/up/get.  On success the request is well formed (a 36-byte
 * uuid whose hex digits are the 16 bytes chunk headers carry, a positive
 * length); on failure the output is empty and the reason one line. */
#include "fuzz.h"
#include "messages.h"

#include <sodium.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pd_get g;
    struct pn_err err;
    if (pd_msg_parse_get(data, size, &g, &err) < 0) {
        fuzz_one_line(err.msg);
        static const struct pd_get zero;
        FUZZ_ASSERT(memcmp(&g, &zero, sizeof(g)) == 0);
        return 0;
    }
    FUZZ_ASSERT(size > 0 && size <= PD_GET_MAX);
    FUZZ_ASSERT(strlen(g.uuid) == 36);
    FUZZ_ASSERT(g.length > 0);
    FUZZ_ASSERT(g.offset <= (uint64_t)INT64_MAX && g.length <= (uint64_t)INT64_MAX);
    unsigned char again[16];
    size_t n = 0;
    FUZZ_ASSERT(sodium_hex2bin(again, sizeof(again), g.uuid, 36, "-", &n, NULL) == 0 && n == 16);
    FUZZ_ASSERT(memcmp(again, g.uuid_bin, 16) == 0);
    return 0;
}
