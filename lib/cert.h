/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 identity and policy for Pinion: certificate ids, loading, the
 * checks of docs/protocol.md, "Identities" (key strength, CA flags, extended key usage,
 * signature hash), and creation of CA, device and verification
 * certificates.  Everything here is pure OpenSSL 3; no database. */
#ifndef PINION_LIB_CERT_H
#define PINION_LIB_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "err.h"

#define PN_CERT_ID_HEX 65 /* 64 hex characters + NUL */
#define PN_CERT_ID_BIN 32 /* SHA-256 */

/* Certificate id: lowercase hex SHA-256 of the DER (AWS IoT certificateId).
 * 0 / -1 (out is then ""). */
int pn_cert_id(X509 *cert, char out[PN_CERT_ID_HEX]);
/* The same as 32 bytes (the plugin's maps are keyed by it).  Cheap enough
 * for every CONNECT: the digest is fetched from OpenSSL once.  0 / -1. */
int pn_cert_id_bin(X509 *cert, unsigned char out[PN_CERT_ID_BIN]);

/* Parses one certificate from PEM (first certificate in the text) or DER.
 * Refuses trailing garbage after DER.  Returns a new X509 (X509_free) or
 * NULL with err naming `what` (usually the file name). */
X509 *pn_cert_parse(const unsigned char *buf, size_t len, const char *what, struct pn_err *err);

/* Reads and parses a certificate file (PEM or DER, at most 1 MiB). */
X509 *pn_cert_load(const char *path, struct pn_err *err);

/* Reads an unencrypted PEM private key. Caller owns it (EVP_PKEY_free). */
EVP_PKEY *pn_key_load(const char *path, struct pn_err *err);

/* Accepted device and CA keys: RSA >= 2048 bits, ECDSA P-256 or P-384.
 * 0 / -1 with err saying what the key is ("RSA-1024 key is too weak"). */
int pn_key_check(EVP_PKEY *key, struct pn_err *err);

/* Describes a key for people: "EC P-256", "RSA-2048". */
void pn_key_describe(EVP_PKEY *key, char *out, size_t outlen);

/* Checks a Device CA candidate: CA:TRUE, a subject key identifier, an
 * accepted key, no SHA-1/MD5 signature unless self-signed, and within its
 * validity period at `now`. */
int pn_cert_check_ca(X509 *ca, time_t now, struct pn_err *err);

/* Checks a device certificate's static properties (not its dates): not a
 * CA, extendedKeyUsage (when present) includes clientAuth, accepted key,
 * no SHA-1/MD5 signature. */
int pn_cert_check_device(X509 *cert, struct pn_err *err);

/* 0 when now lies within [notBefore, notAfter], else -1 with "expired on
 * ..." or "not valid before ...". */
int pn_cert_check_dates(X509 *cert, time_t now, struct pn_err *err);

/* The subject's single commonName as UTF-8 into out.  Fails when there is
 * none, more than one, it contains NUL, or it does not fit. */
int pn_cert_cn(X509 *cert, char *out, size_t outlen, struct pn_err *err);

/* One-line RFC 2253 subject.  malloc'd; caller frees. */
char *pn_cert_subject(X509 *cert);

/* Lowercase hex of the subject / authority key identifier, "" if absent.
 * out must hold 2*20+1 bytes at least; longer identifiers are refused. */
#define PN_KEYID_HEX 129
void pn_cert_ski(X509 *cert, char out[PN_KEYID_HEX]);
void pn_cert_aki(X509 *cert, char out[PN_KEYID_HEX]);

/* Lowercase hex serial number. */
#define PN_SERIAL_HEX 130
void pn_cert_serial(X509 *cert, char out[PN_SERIAL_HEX]);

/* SHA-256 of the DER SubjectPublicKeyInfo, as lowercase hex or binary. */
int pn_cert_spki_sha256(X509 *cert, char out[PN_CERT_ID_HEX]);
int pn_cert_spki_sha256_bin(X509 *cert, unsigned char out[32]);

/* An ASN1_TIME as Unix time, (time_t)-1 when unreadable. */
time_t pn_asn1_time(const ASN1_TIME *t);

/* notBefore / notAfter as Unix time. */
time_t pn_cert_not_before(X509 *cert);
time_t pn_cert_not_after(X509 *cert);

/* True when issuer's subject names cert's issuer, AKI (if present) equals
 * issuer's SKI, and cert's signature verifies with issuer's key. */
bool pn_cert_issued_by(X509 *cert, X509 *issuer);

/* DER encoding; *der is OPENSSL_malloc'd (OPENSSL_free).  Returns length
 * or -1. */
int pn_cert_der(X509 *cert, unsigned char **der);

/* Formats a Unix time as ISO 8601 UTC ("2026-11-27T10:00:00Z"). */
void pn_time_iso(time_t t, char out[32]);

/* --- creation ------------------------------------------------------- */

enum pn_cert_kind {
    PN_CERT_CA,           /* CA:TRUE, keyCertSign, cRLSign */
    PN_CERT_DEVICE,       /* CA:FALSE, digitalSignature, EKU clientAuth */
    PN_CERT_VERIFICATION, /* CA:FALSE, proof-of-possession certificate */
    PN_CERT_SERVER,       /* CA:FALSE, EKU serverAuth+clientAuth, SAN DNS/IP */
};

struct pn_cert_spec {
    enum pn_cert_kind kind;
    const char *cn;  /* subject CN; NULL for none */
    const char *san; /* optional subjectAltName value, OpenSSL syntax
                        e.g. "URI:urn:pinion:verify:abc" */
    long days;       /* validity from now (notBefore backdated 60 s) */
};

/* Makes a certificate for subject_key's public key, signed by issuer_key
 * (issuer NULL: self-signed with subject_key).  SHA-256 (SHA-384 for P-384
 * issuers), random positive 127-bit serial, SKI and AKI.  New X509 or NULL. */
X509 *pn_cert_make(const struct pn_cert_spec *spec, EVP_PKEY *subject_key, X509 *issuer,
                   EVP_PKEY *issuer_key, struct pn_err *err);

/* Generates a key: "ec" (P-256), "ec384" (P-384) or "rsa" (2048). */
EVP_PKEY *pn_key_generate(const char *type, struct pn_err *err);

/* Writes PEM; never overwrites (pn_file_create). Keys get mode 0600,
 * certificates 0644. */
int pn_cert_write_pem(const char *path, X509 *cert, struct pn_err *err);
int pn_key_write_pem(const char *path, EVP_PKEY *key, struct pn_err *err);

/* Reads a PKCS#10 CSR (PEM or DER), checks its self-signature (proof that
 * the requester holds the key) and returns its public key (EVP_PKEY_free). */
EVP_PKEY *pn_csr_load_key(const char *path, struct pn_err *err);

/* A CA directory made by `pinion ca create`: DIR/ca.pem + DIR/ca.key.
 * Checks that the key belongs to the certificate. */
int pn_ca_dir_load(const char *dir, X509 **cert, EVP_PKEY **key, struct pn_err *err);

/* The same from two named files (AWS's recipe names them rootCA.pem and
 * rootCA.key).  On success the caller frees both (X509_free, EVP_PKEY_free). */
int pn_ca_files_load(const char *cert_path, const char *key_path, X509 **cert, EVP_PKEY **key,
                     struct pn_err *err);

#endif
