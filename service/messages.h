/* SPDX-License-Identifier: Apache-2.0 */
/* Parsing of the two messages devices send piniond (docs/protocol.md,
 * "Chunk format" and "Status messages").  Pure functions: no I/O, no logging, no global state, so
 * that they can be unit-tested and fuzzed on their own.  On failure err holds the reason as piniond
 * logs it after "ignored chunk request from <id>: " or "ignored status from <id>: ". */
#ifndef PINION_SERVICE_MESSAGES_H
#define PINION_SERVICE_MESSAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PD_GET_MAX 1024     /* bytes of an up/get payload */
#define PD_STATUS_MAX 16384 /* bytes of an up/status payload */

/* R/<id>/up/get: {"uuid":U,"offset":O,"length":L}. */
struct pd_get {
    char uuid[37];              /* as sent: 36 characters */
    unsigned char uuid_bin[16]; /* its 16 bytes, as chunk headers carry them */
    uint64_t offset;            /* >= 0 */
    uint64_t length;            /* > 0, not yet capped at chunk_max */
};

/* 0, or -1 with err set ("N bytes (limit 1024)", or the expected shape). */
int pd_msg_parse_get(const void *payload, size_t len, struct pd_get *out, struct pn_err *err);

/* R/<id>/up/status: {"firmware":{"uuid","version","platform","architecture"},
 * "state","progress","reason"}.  Every string is NULL when absent (or JSON
 * null) and is owned by the struct: free with pd_status_free. */
struct pd_status {
    bool has_firmware; /* a "firmware" object was sent (it replaces all four fields) */
    char *uuid, *version, *platform, *architecture;
    char *state;  /* one of idle, received, downloading, installing, complete, failed,
                     rescheduled */
    char *reason; /* at most 512 bytes */
};

/* 0, or -1 with err set ("N bytes (limit 16384)", "not a JSON object",
 * "malformed fields") and *out empty.  Strings hold no control characters. */
int pd_msg_parse_status(const void *payload, size_t len, struct pd_status *out, struct pn_err *err);
void pd_status_free(struct pd_status *s);

#endif
