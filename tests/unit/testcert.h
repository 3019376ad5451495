/* SPDX-License-Identifier: Apache-2.0 */
/* Certificates shaped for unit tests that lib/cert.h does not make. */
#ifndef PINION_TESTS_TESTCERT_H
#define PINION_TESTS_TESTCERT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* cert with its authorityKeyIdentifier removed, re-signed by ikey, and
 * parsed back from DER as the broker receives it: its issuer is then known
 * by name alone, and only a signature tells same-named CAs apart.  Takes
 * cert; NULL on failure. */
static inline X509 *testcert_without_aki(X509 *cert, EVP_PKEY *ikey)
{
    int idx = X509_get_ext_by_NID(cert, NID_authority_key_identifier, -1);
    if (idx >= 0)
        X509_EXTENSION_free(X509_delete_ext(cert, idx));
    unsigned char *der = NULL;
    int n = X509_sign(cert, ikey, EVP_sha256()) > 0 ? i2d_X509(cert, &der) : -1;
    const unsigned char *p = der;
    X509 *out = n > 0 ? d2i_X509(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    X509_free(cert);
    return out;
}

#endif
