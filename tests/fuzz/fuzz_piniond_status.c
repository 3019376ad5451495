/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's up/status parser (service/messages.h): what any device may
 * send to fleet/<id>/up/status.  On success every string is within its
 * limit and free of control characters, and the state is one of docs/protocol.md,
 * "Status messages"; on failure nothing is left allocated (LeakSanitizer) and
 * the reason is one line. */
#include "fuzz.h"
#include "messages.h"

static void clean(const char *s, size_t max)
{
    if (!s)
        return;
    FUZZ_ASSERT(strlen(s) <= max);
    for (const char *p = s; *p; p++)
        FUZZ_ASSERT((unsigned char)*p >= 0x20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const states[] = {"idle",     "received", "downloading", "installing",
                                         "complete", "failed",   "rescheduled"};
    struct pd_status st;
    struct pn_err err;
    if (pd_msg_parse_status(data, size, &st, &err) < 0) {
        fuzz_one_line(err.msg);
        FUZZ_ASSERT(!st.uuid && !st.version && !st.platform && !st.architecture && !st.state &&
                    !st.reason);
        return 0;
    }
    FUZZ_ASSERT(size > 0 && size <= PD_STATUS_MAX);
    if (!st.has_firmware)
        FUZZ_ASSERT(!st.uuid && !st.version && !st.platform && !st.architecture);
    clean(st.uuid, 64);
    clean(st.version, 64);
    clean(st.platform, 128);
    clean(st.architecture, 128);
    clean(st.state, 32);
    clean(st.reason, 512);
    if (st.state) {
        bool known = false;
        for (size_t i = 0; i < sizeof(states) / sizeof(*states); i++)
            known = known || strcmp(st.state, states[i]) == 0;
        FUZZ_ASSERT(known);
    }
    pd_status_free(&st);
    return 0;
}
