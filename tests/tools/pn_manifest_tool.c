/* SPDX-License-Identifier: Apache-2.0 */
/* pn-manifest-tool: signs an update manifest (docs/protocol.md,
 * "Manifest and DSSE") from
 * command-line fields and prints its DSSE envelope, one line on stdout, so
 * that integration tests can publish crafted manifests (wrong key, wrong
 * device, expired, replayed, bad firmware signature, wrong hash) as the
 * service identity and watch the reference device refuse them.
 *
 *   pn-manifest-tool --key RELEASE.priv --device ID --sequence N
 *       [--deployment NAME] [--issued-at UNIX] [--expires-at UNIX]
 *       [--fw FILE.fw --fw-key FW.pub]     take every firmware field from a
 *                                          verified .fw
 *       [--uuid U] [--product P] [--version V] [--platform X]
 *       [--architecture Y] [--size N] [--sha256 HEX] [--key-id HEX]
 *       [--meta-conf FILE] [--meta-conf-sig HEX] [--flip-meta-conf-sig]
 *       [--url URL]                        override single fields
 *
 * Defaults: deployment "crafted", issued now, expiring an hour later.
 * Fields given explicitly win over those from --fw.  The manifest must pass
 * pn_manifest_sign's own validation (e.g. expires after it is issued), so
 * the tool cannot make a structurally invalid one.  Exit status 0, or 1
 * with one line on stderr. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "fw.h"
#include "fwkey.h"
#include "manifest.h"

static int die(const char *fmt, const char *arg)
{
    fprintf(stderr, "pn-manifest-tool: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 1;
}

static int set_str(char *dst, size_t n, const char *src, const char *what)
{
    if (strlen(src) >= n)
        return die("%s is too long", what);
    snprintf(dst, n, "%s", src);
    return 0;
}

static int read_file(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    if (!buf)
        return -1;
    *out = buf;
    *len = n;
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pn-manifest-tool --key RELEASE.priv --device ID --sequence N\n"
            "         [--deployment NAME] [--issued-at UNIX] [--expires-at UNIX]\n"
            "         [--fw FILE.fw --fw-key FW.pub] [--uuid U] [--product P] [--version V]\n"
            "         [--platform X] [--architecture Y] [--size N] [--sha256 HEX]\n"
            "         [--key-id HEX] [--meta-conf FILE] [--meta-conf-sig HEX]\n"
            "         [--flip-meta-conf-sig] [--url URL]\n");
}

int main(int argc, char **argv)
{
    enum {
        O_KEY = 1,
        O_DEVICE,
        O_SEQ,
        O_DEP,
        O_ISSUED,
        O_EXPIRES,
        O_FW,
        O_FWKEY,
        O_UUID,
        O_PRODUCT,
        O_VERSION,
        O_PLATFORM,
        O_ARCH,
        O_SIZE,
        O_SHA,
        O_KEYID,
        O_META,
        O_SIG,
        O_FLIP,
        O_URL
    };
    static struct option lo[] = {{"key", 1, 0, O_KEY},
                                 {"device", 1, 0, O_DEVICE},
                                 {"sequence", 1, 0, O_SEQ},
                                 {"deployment", 1, 0, O_DEP},
                                 {"issued-at", 1, 0, O_ISSUED},
                                 {"expires-at", 1, 0, O_EXPIRES},
                                 {"fw", 1, 0, O_FW},
                                 {"fw-key", 1, 0, O_FWKEY},
                                 {"uuid", 1, 0, O_UUID},
                                 {"product", 1, 0, O_PRODUCT},
                                 {"version", 1, 0, O_VERSION},
                                 {"platform", 1, 0, O_PLATFORM},
                                 {"architecture", 1, 0, O_ARCH},
                                 {"size", 1, 0, O_SIZE},
                                 {"sha256", 1, 0, O_SHA},
                                 {"key-id", 1, 0, O_KEYID},
                                 {"meta-conf", 1, 0, O_META},
                                 {"meta-conf-sig", 1, 0, O_SIG},
                                 {"flip-meta-conf-sig", 0, 0, O_FLIP},
                                 {"url", 1, 0, O_URL},
                                 {0, 0, 0, 0}};
    /* Every option is remembered and applied after --fw, in that order. */
    const char *val[O_URL + 1] = {0};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c < O_KEY || c > O_URL) {
            usage();
            return 1;
        }
        val[c] = optarg ? optarg : "";
    }
    if (optind != argc || !val[O_KEY] || !val[O_DEVICE] || !val[O_SEQ]) {
        usage();
        return 1;
    }
    if (sodium_init() < 0)
        return 1;

    struct pn_err err;
    unsigned char sk[64];
    if (pn_fwkey_load_priv(val[O_KEY], sk, &err) < 0)
        return die("%s", err.msg);

    struct pn_manifest m;
    memset(&m, 0, sizeof(m));
    time_t now = time(NULL);
    m.sequence = strtoll(val[O_SEQ], NULL, 10);
    m.issued_at = val[O_ISSUED] ? strtoll(val[O_ISSUED], NULL, 10) : (int64_t)now;
    m.expires_at = val[O_EXPIRES] ? strtoll(val[O_EXPIRES], NULL, 10) : m.issued_at + 3600;
    if (set_str(m.device, sizeof(m.device), val[O_DEVICE], "--device") ||
        set_str(m.deployment, sizeof(m.deployment), val[O_DEP] ? val[O_DEP] : "crafted",
                "--deployment"))
        return 1;

    if (val[O_FW]) {
        struct pn_fw_key key;
        if (!val[O_FWKEY])
            return die("%s", "--fw needs --fw-key FW.pub to verify the archive");
        if (pn_fwkey_load_pub(val[O_FWKEY], key.pk, &err) < 0)
            return die("%s", err.msg);
        pn_fwkey_id(key.pk, key.id);
        struct pn_fw_info info;
        if (pn_fw_verify_path(val[O_FW], &key, 1, &info, &err) < 0) {
            pn_fw_info_free(&info);
            return die("%s", err.msg);
        }
        snprintf(m.firmware.uuid, sizeof(m.firmware.uuid), "%s", info.meta.uuid);
        snprintf(m.firmware.product, sizeof(m.firmware.product), "%s", info.meta.product);
        snprintf(m.firmware.version, sizeof(m.firmware.version), "%s", info.meta.version);
        snprintf(m.firmware.platform, sizeof(m.firmware.platform), "%s", info.meta.platform);
        snprintf(m.firmware.architecture, sizeof(m.firmware.architecture), "%s",
                 info.meta.architecture);
        m.firmware.size = (int64_t)info.size;
        snprintf(m.firmware.sha256, sizeof(m.firmware.sha256), "%s", info.sha256_hex);
        snprintf(m.firmware.key_id, sizeof(m.firmware.key_id), "%s", info.key_id);
        memcpy(m.firmware.meta_conf_sig, info.meta_conf_sig, 64);
        m.firmware.meta_conf = info.meta_conf; /* taken over */
        m.firmware.meta_conf_len = info.meta_conf_len;
        info.meta_conf = NULL;
        pn_fw_info_free(&info);
    }

    struct {
        int opt;
        char *dst;
        size_t n;
    } strs[] = {
        {O_UUID, m.firmware.uuid, sizeof(m.firmware.uuid)},
        {O_PRODUCT, m.firmware.product, sizeof(m.firmware.product)},
        {O_VERSION, m.firmware.version, sizeof(m.firmware.version)},
        {O_PLATFORM, m.firmware.platform, sizeof(m.firmware.platform)},
        {O_ARCH, m.firmware.architecture, sizeof(m.firmware.architecture)},
        {O_SHA, m.firmware.sha256, sizeof(m.firmware.sha256)},
        {O_KEYID, m.firmware.key_id, sizeof(m.firmware.key_id)},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (val[strs[i].opt] &&
            set_str(strs[i].dst, strs[i].n, val[strs[i].opt], lo[strs[i].opt - 1].name))
            return 1;
    if (val[O_SIZE])
        m.firmware.size = strtoll(val[O_SIZE], NULL, 10);
    if (val[O_META]) {
        free(m.firmware.meta_conf);
        m.firmware.meta_conf = NULL;
        if (read_file(val[O_META], &m.firmware.meta_conf, &m.firmware.meta_conf_len) < 0)
            return die("cannot read %s", val[O_META]);
    }
    if (val[O_SIG]) {
        size_t n = 0;
        if (sodium_hex2bin(m.firmware.meta_conf_sig, 64, val[O_SIG], strlen(val[O_SIG]), NULL, &n,
                           NULL) != 0 ||
            n != 64)
            return die("%s", "--meta-conf-sig must be 128 hex digits");
    }
    if (val[O_FLIP])
        m.firmware.meta_conf_sig[0] ^= 0x01;
    if (val[O_URL])
        m.firmware.url = strdup(val[O_URL]);

    char *env = pn_manifest_sign(&m, sk, &err);
    sodium_memzero(sk, sizeof(sk));
    pn_manifest_free(&m);
    if (!env)
        return die("%s", err.msg);
    printf("%s\n", env);
    free(env);
    return 0;
}
