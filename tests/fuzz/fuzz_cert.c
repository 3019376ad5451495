/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate and CSR ingestion in the CLI (lib/cert.h): `ca register`,
 * `service add` (pn_cert_load = file read + pn_cert_parse), `device cert
 * --csr` (pn_csr_load_key), and the PEM private key of a CA directory
 * (pn_key_load); then everything the CLI asks of a parsed certificate. */
#include <openssl/err.h>

#include "cert.h"
#include "fuzz.h"

static void inspect(X509 *x)
{
    char id[PN_CERT_ID_HEX], cn[256], hex[PN_KEYID_HEX], serial[PN_SERIAL_HEX], iso[32];
    struct pn_err err;
    FUZZ_ASSERT(pn_cert_id(x, id) == 0 && strlen(id) == 64);
    if (pn_cert_cn(x, cn, sizeof(cn), &err) < 0)
        fuzz_one_line(err.msg);
    char *subject = pn_cert_subject(x);
    free(subject);
    pn_cert_ski(x, hex);
    pn_cert_aki(x, hex);
    pn_cert_serial(x, serial);
    (void)pn_cert_spki_sha256(x, id);
    pn_time_iso(pn_cert_not_before(x), iso);
    pn_time_iso(pn_cert_not_after(x), iso);
    if (pn_cert_check_ca(x, 1800000000, &err) < 0)
        fuzz_one_line(err.msg);
    if (pn_cert_check_device(x, &err) < 0)
        fuzz_one_line(err.msg);
    if (pn_cert_check_dates(x, 1800000000, &err) < 0)
        fuzz_one_line(err.msg);
    (void)pn_cert_issued_by(x, x);
    unsigned char *der = NULL;
    int n = pn_cert_der(x, &der);
    FUZZ_ASSERT(n > 0);
    OPENSSL_free(der);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pn_err err;
    X509 *x = pn_cert_parse(data, size, "fuzz", &err);
    if (x) {
        inspect(x);
        X509_free(x);
    } else {
        fuzz_one_line(err.msg);
    }
    const char *path = fuzz_mem_path(0, data, size);
    EVP_PKEY *k = pn_csr_load_key(path, &err);
    if (k)
        FUZZ_ASSERT(pn_key_check(k, NULL) == 0);
    else
        fuzz_one_line(err.msg);
    EVP_PKEY_free(k);
    k = pn_key_load(path, &err);
    if (k) {
        char desc[64];
        pn_key_describe(k, desc, sizeof(desc));
        if (pn_key_check(k, &err) < 0)
            fuzz_one_line(err.msg);
    } else {
        fuzz_one_line(err.msg);
    }
    EVP_PKEY_free(k);
    ERR_clear_error();
    return 0;
}
