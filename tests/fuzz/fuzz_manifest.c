/* SPDX-License-Identifier: Apache-2.0 */
/* Signed update manifests (lib/manifest.h) as the reference device reads
 * them (examples/device/pinion_device.c on_manifest): pn_manifest_open with
 * the release key, pn_manifest_check, then the firmware key over meta.conf.
 * The release key is fixed (seed below), so seeds signed with it (corpus
 * in tests/fuzz/corpus/fuzz_manifest, see tests/fuzz/README.md) reach
 * the payload; since mutations break the signature, the payload decoder is
 * also run on the input directly, with an encode/decode round trip. */
#include <sodium.h>

#include "fuzz.h"
#include "fwkey.h"
#include "manifest.h"

static unsigned char release_pk[32], release_sk[64], fw_pk[32];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsigned char seed[32];
    if (sodium_init() < 0)
        abort();
    memset(seed, 0x5e, sizeof(seed)); /* the fuzzing release key: not secret */
    crypto_sign_seed_keypair(release_pk, release_sk, seed);
    /* The device's firmware key: tests/fixtures/fwup/prod.pub, which signed
     * the seeds' firmware. */
    static const char prod_pub[] = "REBtMQ7SkYSR4qCxGDfbmcDGn9j1EpgKeV/jHQOuLV0=";
    size_t n = 0;
    if (sodium_base642bin(fw_pk, sizeof(fw_pk), prod_pub, strlen(prod_pub), NULL, &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        n != 32)
        abort();
    return 0;
}

static void same_manifest(const struct pn_manifest *a, const struct pn_manifest *b)
{
    FUZZ_ASSERT(!strcmp(a->device, b->device) && !strcmp(a->deployment, b->deployment));
    FUZZ_ASSERT(a->sequence == b->sequence && a->issued_at == b->issued_at &&
                a->expires_at == b->expires_at);
    const struct pn_manifest_firmware *x = &a->firmware, *y = &b->firmware;
    FUZZ_ASSERT(!strcmp(x->uuid, y->uuid) && !strcmp(x->product, y->product) &&
                !strcmp(x->version, y->version) && !strcmp(x->platform, y->platform) &&
                !strcmp(x->architecture, y->architecture) && x->size == y->size &&
                !strcmp(x->sha256, y->sha256) && !strcmp(x->key_id, y->key_id));
    FUZZ_ASSERT(x->meta_conf_len == y->meta_conf_len &&
                !memcmp(x->meta_conf, y->meta_conf, x->meta_conf_len));
    FUZZ_ASSERT(!memcmp(x->meta_conf_sig, y->meta_conf_sig, 64));
    FUZZ_ASSERT((!x->url && !y->url) || (x->url && y->url && !strcmp(x->url, y->url)));
}

/* What the device does after the signature held. */
static void device_checks(const struct pn_manifest *m)
{
    struct pn_err err;
    FUZZ_ASSERT(m->firmware.meta_conf && m->firmware.meta_conf_len > 0);
    if (pn_manifest_check(m, m->device, m->sequence - 1, m->issued_at, &err) < 0)
        fuzz_one_line(err.msg);
    if (pn_manifest_check(m, "dev-1", 0, 1800000000, &err) < 0)
        fuzz_one_line(err.msg);
    (void)pn_fwkey_verify(fw_pk, m->firmware.meta_conf, m->firmware.meta_conf_len,
                          m->firmware.meta_conf_sig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pn_manifest m;
    struct pn_err err;
    char *env = fuzz_str(data, size); /* the device hands over an MQTT payload */

    if (pn_manifest_open(env, size, release_pk, &m, &err) == 0) {
        device_checks(&m);
        pn_manifest_free(&m);
    } else {
        fuzz_one_line(err.msg);
    }
    unsigned char *body = NULL;
    size_t body_len = 0;
    if (pn_dsse_verify(env, size, release_pk, NULL, PN_MANIFEST_TYPE, &body, &body_len, &err) == 0)
        FUZZ_ASSERT(body && body[body_len] == '\0');
    else
        FUZZ_ASSERT(!body);
    free(body);

    /* The payload decoder on the input itself; what decodes re-encodes,
     * and the encoding decodes to the same manifest, also once signed. */
    if (pn_manifest_decode(data, size, &m, &err) == 0) {
        device_checks(&m);
        char *json = pn_manifest_encode(&m, &err);
        FUZZ_ASSERT(json);
        struct pn_manifest again;
        FUZZ_ASSERT(pn_manifest_decode(json, strlen(json), &again, &err) == 0);
        same_manifest(&m, &again);
        pn_manifest_free(&again);
        free(json);
        char *signed_env = pn_manifest_sign(&m, release_sk, &err);
        if (signed_env) { /* may exceed PN_DSSE_ENVELOPE_MAX */
            FUZZ_ASSERT(
                pn_manifest_open(signed_env, strlen(signed_env), release_pk, &again, &err) == 0);
            same_manifest(&m, &again);
            pn_manifest_free(&again);
            free(signed_env);
        }
        pn_manifest_free(&m);
    } else {
        fuzz_one_line(err.msg);
    }
    free(env);
    return 0;
}
