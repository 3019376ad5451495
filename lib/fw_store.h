/* SPDX-License-Identifier: Apache-2.0 */
/* The artifact store of verified .fw archives (server side). */
#ifndef PINION_LIB_FW_STORE_H
#define PINION_LIB_FW_STORE_H

#include <sys/types.h>

#include "err.h"

/* The artifact store: a directory of verified archives named
 * <sha256>.fw.  An upload writes to a temporary file in the directory
 * (pn_fw_artifact_open, then pn_fw_verify with copy_fd = a->fd), publishes
 * it under its content address (fsync, rename, fsync of the directory) and,
 * if anything later fails, discards it: the temporary file, or the
 * published one. */
struct pn_fw_artifact {
    int fd;          /* the temporary file, read-write; -1 once closed */
    char tmp[4096];  /* its path, "" once renamed or removed */
    char path[4096]; /* <dir>/<sha256>.fw once published, else "" */
    char dir[4096];  /* the directory, as given */
    dev_t dev;       /* identity of the file, so that a discard never */
    ino_t ino;       /* removes another upload's file of the same name */
};

/* Creates a temporary file (mode 0644) in dir.  0 / -1. */
int pn_fw_artifact_open(struct pn_fw_artifact *a, const char *dir, struct pn_err *err);

/* fsyncs and closes the temporary file, renames it to <dir>/<sha256_hex>.fw
 * (replacing a stale file of that name: same name, same bytes) and fsyncs
 * the directory.  0 / -1 (the temporary file is removed on failure). */
int pn_fw_artifact_publish(struct pn_fw_artifact *a, const char *sha256_hex, struct pn_err *err);

/* Closes and removes whatever the artifact still holds on disk.  Safe to
 * call more than once. */
void pn_fw_artifact_discard(struct pn_fw_artifact *a);

/* Forgets a published artifact so that a later discard keeps it. */
void pn_fw_artifact_keep(struct pn_fw_artifact *a);

#endif
