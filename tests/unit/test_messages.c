/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's parsers of device messages (service/messages.c). */
#include <sodium.h>

#include "check.h"
#include "messages.h"

#define UUID "c1107809-4bd0-54ac-5317-ccfe8e855ce5"

static int get(const char *s, struct pd_get *g, struct pn_err *err)
{
    return pd_msg_parse_get(s, strlen(s), g, err);
}

static int status(const char *s, struct pd_status *st, struct pn_err *err)
{
    return pd_msg_parse_status(s, strlen(s), st, err);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    struct pd_get g;
    struct pn_err err;

    CHECK(get("{\"uuid\":\"" UUID "\",\"offset\":65536,\"length\":4096}", &g, &err) == 0);
    CHECK_STREQ(g.uuid, UUID);
    CHECK(g.offset == 65536 && g.length == 4096);
    CHECK(g.uuid_bin[0] == 0xc1 && g.uuid_bin[15] == 0xe5);
    CHECK(get("{\"uuid\":\"" UUID "\",\"offset\":0,\"length\":1}", &g, &err) == 0);

    const char *bad_get[] = {
        "garbage",
        "[]",
        "{}",
        "null",
        "{\"uuid\":\"" UUID "\",\"offset\":-1,\"length\":10}",
        "{\"uuid\":\"" UUID "\",\"offset\":0,\"length\":0}",
        "{\"uuid\":\"" UUID "\",\"offset\":\"0\",\"length\":10}",
        "{\"uuid\":\"" UUID "\",\"offset\":0.5,\"length\":10}",
        "{\"uuid\":\"../../etc/passwd\",\"offset\":0,\"length\":10}",
        "{\"uuid\":\"c1107809-4bd0-54ac-5317-ccfe8e855cez\",\"offset\":0,\"length\":10}",
        "{\"uuid\":\"c1107809-4bd0-54ac-5317-ccfe8e855c\\u0000e\",\"offset\":0,\"length\":10}",
        "{\"uuid\":\"" UUID "\",\"uuid\":\"" UUID "\",\"offset\":0,\"length\":10}",
        "{\"uuid\":7,\"offset\":0,\"length\":10}",
    };
    for (size_t i = 0; i < sizeof(bad_get) / sizeof(*bad_get); i++) {
        CHECK(get(bad_get[i], &g, &err) < 0);
        CHECK_STREQ(err.msg, "expected {\"uuid\",\"offset\",\"length\"}");
        CHECK(g.uuid[0] == '\0');
    }
    CHECK(pd_msg_parse_get("", 0, &g, &err) < 0);
    CHECK_STREQ(err.msg, "0 bytes (limit 1024)");
    char big[2000];
    memset(big, ' ', sizeof(big));
    CHECK(pd_msg_parse_get(big, sizeof(big), &g, &err) < 0);
    CHECK_STREQ(err.msg, "2000 bytes (limit 1024)");
    CHECK(pd_msg_parse_get("{\"uuid\"", 7, &g, &err) < 0); /* cut short, no NUL */

    struct pd_status st;
    CHECK(status("{\"firmware\":{\"uuid\":\"u\",\"version\":\"1.0.0\",\"platform\":\"rpi4\","
                 "\"architecture\":\"aarch64\"},\"state\":\"failed\",\"progress\":12,"
                 "\"reason\":\"disk full\"}",
                 &st, &err) == 0);
    CHECK(st.has_firmware);
    CHECK_STREQ(st.uuid, "u");
    CHECK_STREQ(st.version, "1.0.0");
    CHECK_STREQ(st.platform, "rpi4");
    CHECK_STREQ(st.architecture, "aarch64");
    CHECK_STREQ(st.state, "failed");
    CHECK_STREQ(st.reason, "disk full");
    pd_status_free(&st);
    CHECK(st.uuid == NULL && !st.has_firmware);

    /* A firmware object with only a uuid: the rest is unknown (NULL). */
    CHECK(status("{\"firmware\":{\"uuid\":\"new\",\"version\":null},\"state\":\"idle\"}", &st,
                 &err) == 0);
    CHECK(st.has_firmware && st.version == NULL && st.platform == NULL);
    pd_status_free(&st);
    CHECK(status("{\"state\":\"idle\"}", &st, &err) == 0);
    CHECK(!st.has_firmware && st.uuid == NULL && st.reason == NULL);
    pd_status_free(&st);
    CHECK(status("{}", &st, &err) == 0);
    pd_status_free(&st);

    const char *not_object[] = {"garbage", "[1,2]", "\"x\"", "{\"a\":1,\"a\":2}",
                                "{\"firmware\":{\"version\":\"1.0\\u0000.0\"}}"};
    for (size_t i = 0; i < sizeof(not_object) / sizeof(*not_object); i++) {
        CHECK(status(not_object[i], &st, &err) < 0);
        CHECK_STREQ(err.msg, "not a JSON object");
    }
    const char *malformed[] = {
        "{\"state\":\"dancing\"}",
        "{\"state\":7}",
        "{\"firmware\":\"1.0.0\"}",
        "{\"firmware\":{\"uuid\":5}}",
        "{\"progress\":\"half\"}",
        "{\"reason\":\"line\\nbreak\"}",
        "{\"firmware\":{\"platform\":\"" /* 129 bytes */
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}",
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(*malformed); i++) {
        CHECK(status(malformed[i], &st, &err) < 0);
        CHECK_STREQ(err.msg, "malformed fields");
        CHECK(st.uuid == NULL && st.state == NULL);
    }
    CHECK(pd_msg_parse_status("", 0, &st, &err) < 0);
    CHECK_STREQ(err.msg, "0 bytes (limit 16384)");
    static char huge[20000];
    memset(huge, ' ', sizeof(huge));
    CHECK(pd_msg_parse_status(huge, sizeof(huge), &st, &err) < 0);
    CHECK_STREQ(err.msg, "20000 bytes (limit 16384)");
    return check_done("test_messages");
}
