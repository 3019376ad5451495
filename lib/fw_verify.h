/* SPDX-License-Identifier: Apache-2.0 */
/* fwup firmware archives (.fw): verification and metadata, what a device
 * needs (README, "CLI reference": firmware archives; the uuid:
 * docs/protocol.md, "Identities"); packing is in fw_pack.h, the artifact
 * store in fw_store.h, and fw.h includes all three.
 *
 * A .fw is a zip whose entries come in this order: an optional
 * meta.conf.ed25519 (64 raw bytes, the Ed25519 signature of meta.conf),
 * meta.conf (fwup's libconfuse syntax, 10..49,999 bytes), then one
 * data/<resource> per file-resource declared in meta.conf, each with the
 * declared length and BLAKE2b-256 (older archives: SHA-256).
 *
 * pn_fw_verify() reads an archive once, front to back, and checks all of
 * that while it computes the SHA-256 and size of the file and, optionally,
 * copies its bytes to a second file: one pass verifies, hashes and stores.
 * Memory use does not depend on the archive's size, and no resource is
 * inflated much past its declared length.
 *
 * The uuid of an archive is fwup's meta-uuid: BLAKE2b-256 of fwup's
 * namespace uuid (2053dffb-d51e-4310-b93b-956da89f9f34) followed by the
 * bytes of meta.conf, truncated to 16 bytes, with the version nibble set to
 * 5 (fwup sets no variant bits).  It is therefore covered by the signature.
 *
 * All functions need sodium_init() first. */
#ifndef PINION_LIB_FW_VERIFY_H
#define PINION_LIB_FW_VERIFY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define PN_FW_META_CONF_MIN 10    /* bytes, as fwup */
#define PN_FW_META_CONF_MAX 49999 /* bytes, as fwup (it refuses >= 50,000) */
#define PN_FW_SIG_BYTES 64
#define PN_FW_UUID_LEN 36 /* characters, without the NUL */

/* Why pn_fw_verify() refused an archive (info->reason). */
enum pn_fw_reason {
    PN_FW_OK = 0,
    PN_FW_IO,            /* reading the archive or writing the copy failed */
    PN_FW_NOT_ZIP,       /* not a zip archive at all */
    PN_FW_CORRUPT,       /* truncated or malformed zip, or entries that disagree */
    PN_FW_ORDER,         /* entries not in fwup's order */
    PN_FW_UNSAFE_NAME,   /* absolute, "..", backslash, control characters, ... */
    PN_FW_META_SIZE,     /* meta.conf too large or too small */
    PN_FW_META_INVALID,  /* meta.conf does not parse, or declares bad resources */
    PN_FW_UNSIGNED,      /* no meta.conf.ed25519 */
    PN_FW_BAD_SIGNATURE, /* meta.conf.ed25519 is not 64 bytes */
    PN_FW_NO_KEYS,       /* no candidate keys were given */
    PN_FW_UNKNOWN_KEY,   /* the signature verifies with none of the keys */
    PN_FW_UNDECLARED,    /* data/ entry not declared in meta.conf */
    PN_FW_DUPLICATE,     /* a resource appears twice */
    PN_FW_MISSING,       /* a declared resource is absent */
    PN_FW_TOO_LARGE,     /* a resource is longer than declared */
    PN_FW_LENGTH,        /* a resource is shorter than declared */
    PN_FW_HASH,          /* a resource's hash differs from the declared one */
};

/* A candidate public key (e.g. one of an organisation's firmware_keys). */
struct pn_fw_key {
    unsigned char pk[32];
    char id[17]; /* pn_fwkey_id() of pk */
};

/* Metadata of meta.conf.  Every string is malloc'd and non-NULL ("" when
 * meta.conf does not set it); pn_fw_meta_free() releases them. */
struct pn_fw_meta {
    char *product, *version, *platform, *architecture, *author, *description, *vcs_identifier,
        *misc;
    char uuid[PN_FW_UUID_LEN + 1];
    size_t nresources; /* file-resources declared */
};

/* What pn_fw_verify() learnt.  Owned pointers are released by
 * pn_fw_info_free(); the struct may be reused after that. */
struct pn_fw_info {
    enum pn_fw_reason reason; /* PN_FW_OK on success */
    struct pn_fw_meta meta;   /* filled once meta.conf verified and parsed */
    int key_index;            /* index in keys[] of the key that signed meta.conf, or -1 */
    char key_id[17];          /* its id, or "" */
    unsigned char meta_conf_sig[PN_FW_SIG_BYTES];
    unsigned char *meta_conf; /* the exact bytes of meta.conf (malloc'd), or NULL */
    size_t meta_conf_len;
    uint64_t size;            /* bytes in the archive file */
    uint64_t data_bytes;      /* sum of the resources' lengths */
    unsigned char sha256[32]; /* of the whole archive file */
    char sha256_hex[65];
};

/* Verifies the archive open for reading on fd (a regular file, read whole
 * with pread: fd's offset is neither used nor moved) against
 * keys[0..nkeys): entry order and
 * names, meta.conf's size and signature, every resource's presence (once),
 * length and hash, and that the zip's central directory lists exactly the
 * entries that were read.  When copy_fd >= 0 every byte read is also
 * written there (it must be a fresh, empty regular file opened read-write).
 * Fills info (zeroed first) and returns 0; on refusal returns -1 with
 * info->reason and one sentence in err naming the cause. */
int pn_fw_verify(int fd, const struct pn_fw_key *keys, size_t nkeys, int copy_fd,
                 struct pn_fw_info *info, struct pn_err *err);

/* Same for a path (opened O_RDONLY, closed before returning). */
int pn_fw_verify_path(const char *path, const struct pn_fw_key *keys, size_t nkeys,
                      struct pn_fw_info *info, struct pn_err *err);

void pn_fw_info_free(struct pn_fw_info *info);

/* Parses meta.conf text as fwup does (libconfuse, unknown options ignored)
 * and fills meta (zeroed first), including the uuid.  Nothing is verified
 * here beyond syntax and the resource declarations.  Refuses text that
 * refers to environment variables ("${...}"), which libconfuse would expand
 * from the parsing process's environment.  0 / -1. */
int pn_fw_meta_parse(const void *meta_conf, size_t len, struct pn_fw_meta *meta,
                     struct pn_err *err);
void pn_fw_meta_free(struct pn_fw_meta *meta);

/* fwup's meta-uuid of meta.conf's bytes: 36 characters and a NUL. */
void pn_fw_uuid(const void *meta_conf, size_t len, char out[PN_FW_UUID_LEN + 1]);

#endif
