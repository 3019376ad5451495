/* SPDX-License-Identifier: Apache-2.0 */
/* Device messages to piniond, parsed without I/O (see messages.h). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "messages.h"

int pd_msg_parse_get(const void *payload, size_t len, struct pd_get *out, struct pn_err *err)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > PD_GET_MAX)
        return pn_err_set(err, "%zu bytes (limit %d)", len, PD_GET_MAX);
    json_error_t jerr;
    json_t *j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *ju = json_object_get(j, "uuid"), *jo = json_object_get(j, "offset"),
           *jl = json_object_get(j, "length");
    const char *uuid = json_string_value(ju);
    size_t ubytes = 0;
    /* json_string_value may hold a NUL: its length must be exactly 36. */
    bool ok =
        json_is_object(j) && uuid && json_string_length(ju) == 36 && strlen(uuid) == 36 &&
        json_is_integer(jo) && json_is_integer(jl) && json_integer_value(jo) >= 0 &&
        json_integer_value(jl) > 0 &&
        sodium_hex2bin(out->uuid_bin, sizeof(out->uuid_bin), uuid, 36, "-", &ubytes, NULL) == 0 &&
        ubytes == 16;
    if (ok) {
        memcpy(out->uuid, uuid, 36);
        out->uuid[36] = '\0';
        out->offset = (uint64_t)json_integer_value(jo);
        out->length = (uint64_t)json_integer_value(jl);
    }
    json_decref(j);
    if (!ok) {
        memset(out, 0, sizeof(*out));
        return pn_err_set(err, "expected {\"uuid\",\"offset\",\"length\"}");
    }
    return 0;
}

static const char *const states[] = {"idle",     "received", "downloading", "installing",
                                     "complete", "failed",   "rescheduled", NULL};

/* A copy of string field `key` of at most max bytes without control
 * characters; NULL when absent or null.  Sets *bad on anything else. */
static char *field(json_t *obj, const char *key, size_t max, bool *bad)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return NULL;
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) != strlen(s) || strlen(s) > max) {
        *bad = true;
        return NULL;
    }
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20) {
            *bad = true;
            return NULL;
        }
    char *c = strdup(s);
    if (!c)
        *bad = true;
    return c;
}

int pd_msg_parse_status(const void *payload, size_t len, struct pd_status *out, struct pn_err *err)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > PD_STATUS_MAX)
        return pn_err_set(err, "%zu bytes (limit %d)", len, PD_STATUS_MAX);
    json_error_t jerr;
    json_t *j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        return pn_err_set(err, "not a JSON object");
    }
    bool bad = false;
    json_t *fw = json_object_get(j, "firmware");
    if (fw && !json_is_object(fw))
        bad = true;
    out->has_firmware = fw != NULL;
    if (fw && !bad) {
        out->uuid = field(fw, "uuid", 64, &bad);
        out->version = field(fw, "version", 64, &bad);
        out->platform = field(fw, "platform", 128, &bad);
        out->architecture = field(fw, "architecture", 128, &bad);
    }
    out->state = field(j, "state", 32, &bad);
    out->reason = field(j, "reason", 512, &bad);
    json_t *prog = json_object_get(j, "progress");
    if (prog && !json_is_null(prog) && !json_is_number(prog))
        bad = true;
    if (out->state) {
        int i = 0;
        while (states[i] && strcmp(states[i], out->state) != 0)
            i++;
        if (!states[i])
            bad = true;
    }
    json_decref(j);
    if (bad) {
        pd_status_free(out);
        return pn_err_set(err, "malformed fields");
    }
    return 0;
}

void pd_status_free(struct pd_status *s)
{
    free(s->uuid);
    free(s->version);
    free(s->platform);
    free(s->architecture);
    free(s->state);
    free(s->reason);
    memset(s, 0, sizeof(*s));
}
