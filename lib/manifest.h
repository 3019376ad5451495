/* SPDX-License-Identifier: Apache-2.0 */
/* Signed update manifests (docs/protocol.md, "Manifest and DSSE"): DSSE
 * envelopes and their payload.
 *
 * A manifest tells one device which firmware to install.  Its payload (type
 * PN_MANIFEST_TYPE) is compact JSON binding the device, the deployment, a
 * per-device sequence number, an issue and an expiry time, and the firmware's
 * identity, hash and fwup signature (meta.conf and meta.conf.ed25519), so a
 * device holding the firmware public keys checks the firmware end to end
 * before downloading a byte.  The payload travels in a DSSE envelope signed
 * with the service's release key (an Ed25519 key in fwup's file format, see
 * fwkey.h; the envelope's keyid is that key's pn_fwkey_id):
 *
 *   {"payload": base64(BODY), "payloadType": TYPE,
 *    "signatures": [{"keyid": K, "sig": base64(Ed25519(PAE(TYPE, BODY)))}]}
 *
 * Any DSSE implementation can verify it.  What is signed is BODY's own bytes,
 * and pn_dsse_verify returns exactly those bytes: never re-serialise a parsed
 * payload and expect its signature to hold.
 *
 * All functions need sodium_init() first.  Fallible ones return 0 / -1 (or a
 * pointer / NULL) and fill err (may be NULL) with one sentence. */
#ifndef PINION_LIB_MANIFEST_H
#define PINION_LIB_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define PN_MANIFEST_TYPE "application/vnd.pinion.update+json"

/* Upper bound on a whole envelope, checked before parsing and when signing.
 * A manifest's meta.conf (at most PN_MANIFEST_META_CONF_MAX bytes) is base64
 * twice, in the payload and again as the payload: ~1.8x, so 64 KiB would
 * not hold every meta.conf fwup accepts; 128 KiB does, with room. */
#define PN_DSSE_ENVELOPE_MAX (128 * 1024)
#define PN_DSSE_TYPE_MAX 256  /* bytes of payloadType */
#define PN_DSSE_KEYID_MAX 256 /* bytes of a signature's keyid */
#define PN_DSSE_SIGS_MAX 16   /* signatures looked at in one envelope */

/* fwup's own limit on meta.conf (10 to 49,999 bytes). */
#define PN_MANIFEST_META_CONF_MAX 49999
#define PN_MANIFEST_URL_MAX 2048
/* How far in the future issued_at may be (device clock behind the service's). */
#define PN_MANIFEST_SKEW 300

/* PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, with
 * SP one space and LEN the byte length in ASCII decimal.  *out is malloc'd
 * (caller frees); *out_len its length.  Refuses an empty or over-long type. */
int pn_dsse_pae(const char *type, const void *body, size_t body_len, unsigned char **out,
                size_t *out_len, struct pn_err *err);

/* Signs body[0..len) with sk over PAE(type, body) and returns the envelope
 * as compact JSON (payload and sig in standard base64 with padding), NUL-
 * terminated; caller frees with free().  keyid NULL omits the signature's
 * "keyid" (DSSE allows it); otherwise it is written as given.  Refuses an
 * envelope that would exceed PN_DSSE_ENVELOPE_MAX.  NULL on failure. */
char *pn_dsse_sign(const unsigned char sk[64], const char *keyid, const char *type,
                   const void *body, size_t len, struct pn_err *err);

/* Checks envelope[0..len) and returns its payload.  The envelope must be a
 * JSON object (no duplicate keys) with string "payload" and "payloadType"
 * and a non-empty array "signatures" of objects with a string "sig" and an
 * optional string "keyid"; payloadType must equal expected_type.  With keyid
 * non-NULL only signatures carrying that keyid count; with NULL any does.
 * Succeeds when one of them is a valid Ed25519 signature by pk of PAE over
 * the decoded payload bytes.  Base64 may be standard or URL-safe, as DSSE
 * allows.  On success *body is a malloc'd copy of those bytes with a NUL
 * appended (not counted in *body_len); caller frees.  On failure *body is
 * NULL and err says which check failed. */
int pn_dsse_verify(const char *envelope, size_t len, const unsigned char pk[32], const char *keyid,
                   const char *expected_type, unsigned char **body, size_t *body_len,
                   struct pn_err *err);

/* The payload of a manifest.  Strings are NUL-terminated; their limits are
 * those of the arrays (device and deployment: identifiers, docs/protocol.md,
 * "Identities"). */
struct pn_manifest {
    char device[129];     /* ^[A-Za-z0-9._:-]{1,128}$ */
    char deployment[129]; /* same rule */
    int64_t sequence;     /* >= 1, strictly increasing per device */
    int64_t issued_at;    /* Unix seconds, >= 0 */
    int64_t expires_at;   /* Unix seconds, > issued_at */
    struct pn_manifest_firmware {
        char uuid[64];            /* fwup's meta-uuid, [A-Za-z0-9._:-] */
        char product[128];        /* non-empty */
        char version[64];         /* non-empty */
        char platform[128];       /* may be empty */
        char architecture[128];   /* may be empty */
        int64_t size;             /* bytes of the .fw file, >= 0 */
        char sha256[65];          /* of the .fw file: 64 lowercase hex */
        char key_id[17];          /* firmware key: 16 lowercase hex */
        unsigned char *meta_conf; /* owned: 1..PN_MANIFEST_META_CONF_MAX bytes */
        size_t meta_conf_len;
        unsigned char meta_conf_sig[64]; /* fwup's meta.conf.ed25519 */
        char *url;                       /* owned, optional (NULL): where to fetch the .fw */
    } firmware;
};

/* Returns the payload as compact JSON: {"device", "deployment", "sequence",
 * "issued_at", "expires_at", "firmware": {"uuid", "product", "version",
 * "platform", "architecture", "size", "sha256", "key_id", "meta_conf"
 * (base64), "meta_conf_sig" (base64), "url" (only when set)}}.  m must pass
 * the same checks as pn_manifest_decode, so what is encoded always decodes.
 * Caller frees with free().  NULL on failure. */
char *pn_manifest_encode(const struct pn_manifest *m, struct pn_err *err);

/* Parses and validates a payload strictly: every field present with its
 * JSON type (integers, not reals), no unknown or duplicate fields, limits as
 * in struct pn_manifest.  On success out owns meta_conf and url (release
 * with pn_manifest_free); on failure out is left zeroed and owns nothing. */
int pn_manifest_decode(const void *body, size_t len, struct pn_manifest *out, struct pn_err *err);

/* Frees meta_conf and url and sets them to NULL.  Safe on a zeroed struct
 * and twice. */
void pn_manifest_free(struct pn_manifest *m);

/* The device's acceptance rule for a decoded, signature-checked manifest:
 * it is for my_device, its sequence is above last_sequence (the highest one
 * this device accepted before; 0 if none), it was not issued more than
 * PN_MANIFEST_SKEW seconds after now, and now is before expires_at. */
int pn_manifest_check(const struct pn_manifest *m, const char *my_device, int64_t last_sequence,
                      int64_t now, struct pn_err *err);

/* Encodes m and signs it with the release key sk as a PN_MANIFEST_TYPE
 * envelope whose keyid is pn_fwkey_id of sk's public half.  Caller frees
 * with free().  NULL on failure. */
char *pn_manifest_sign(const struct pn_manifest *m, const unsigned char sk[64], struct pn_err *err);

/* pn_dsse_verify with the release public key pk (requiring its key id and
 * PN_MANIFEST_TYPE), then pn_manifest_decode.  Does not run
 * pn_manifest_check, which needs the device's own state.  Ownership of out
 * as for pn_manifest_decode. */
int pn_manifest_open(const char *envelope, size_t len, const unsigned char pk[32],
                     struct pn_manifest *out, struct pn_err *err);

#endif
