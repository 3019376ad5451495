/* SPDX-License-Identifier: Apache-2.0 */
/* fwup-compatible Ed25519 firmware keys (docs/protocol.md, "Identities").
 *
 * Files are fwup's: PREFIX.pub holds base64 of the 32-byte public key (44
 * characters), PREFIX.priv base64 of libsodium's 64-byte secret key, which is
 * seed || public key (88 characters).  Raw 32/64-byte files are accepted too,
 * as fwup does.  Signatures are pure Ed25519 (crypto_sign_detached), so a
 * signature made here is byte-identical to fwup's for the same key and data.
 *
 * The key id of a public key is the first 16 lowercase hex characters of the
 * SHA-256 of its 32 raw bytes.  All functions need sodium_init() first. */
#ifndef PINION_LIB_FWKEY_H
#define PINION_LIB_FWKEY_H

#include <stddef.h>

#include "err.h"

#define PN_FWKEY_PUBLICKEYBYTES 32
#define PN_FWKEY_SECRETKEYBYTES 64
#define PN_FWKEY_SIGBYTES 64
#define PN_FWKEY_ID_LEN 16 /* hex characters, without the NUL */

/* Reads a public key file (base64 of 32 bytes, surrounding whitespace
 * allowed, or 32 raw bytes) into pk.  Refuses anything else with one
 * sentence naming the file, and a private key file with its own sentence. */
int pn_fwkey_load_pub(const char *path, unsigned char pk[32], struct pn_err *err);

/* Reads a private key file (base64 of 64 bytes or 64 raw bytes: seed ||
 * public key) into sk.  Refuses a key whose public half is not the one its
 * seed derives.  No copy of the secret is left behind except in sk, which
 * the caller wipes (sodium_memzero) when done. */
int pn_fwkey_load_priv(const char *path, unsigned char sk[64], struct pn_err *err);

/* Writes the key id of pk: 16 lowercase hex characters and a NUL. */
void pn_fwkey_id(const unsigned char pk[32], char out[17]);

/* Ed25519 signature of msg[0..len) with sk.  0 / -1. */
int pn_fwkey_sign(const unsigned char sk[64], const void *msg, size_t len, unsigned char sig[64]);

/* Returns 0 when sig is a valid signature of msg[0..len) by pk, else -1. */
int pn_fwkey_verify(const unsigned char pk[32], const void *msg, size_t len,
                    const unsigned char sig[64]);

/* Generates a key pair and writes PREFIX.pub (44 base64 characters) and
 * PREFIX.priv (88), no newline, both mode 0600.  Refuses if either file
 * exists and never leaves one of the two behind on failure.  When pk_out is
 * non-NULL it receives the public key.  0 / -1. */
int pn_fwkey_create(const char *prefix, unsigned char pk_out[32], struct pn_err *err);

#endif
