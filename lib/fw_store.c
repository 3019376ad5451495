/* SPDX-License-Identifier: Apache-2.0 */
/* The artifact store: verified archives by content address (fw_store.h). */
#include "fw_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int pn_fw_artifact_open(struct pn_fw_artifact *a, const char *dir, struct pn_err *err)
{
    memset(a, 0, sizeof(*a));
    a->fd = -1;
    struct stat st;
    if (stat(dir, &st) < 0)
        return pn_err_set(err, "artifact directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return pn_err_set(err, "artifact directory %s: not a directory", dir);
    if (snprintf(a->dir, sizeof(a->dir), "%s", dir) >= (int)sizeof(a->dir) ||
        snprintf(a->tmp, sizeof(a->tmp), "%s/.upload-XXXXXX", dir) >= (int)sizeof(a->tmp))
        return pn_err_set(err, "artifact directory %s: path too long", dir);
    a->fd = mkostemp(a->tmp, O_CLOEXEC);
    if (a->fd < 0) {
        int e = errno;
        a->tmp[0] = '\0';
        return pn_err_set(err, "artifact directory %s: %s", dir, strerror(e));
    }
    if (fchmod(a->fd, 0644) < 0 || fstat(a->fd, &st) < 0) {
        int e = errno;
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "artifact directory %s: %s", dir, strerror(e));
    }
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    return 0;
}

int pn_fw_artifact_publish(struct pn_fw_artifact *a, const char *sha256_hex, struct pn_err *err)
{
    if (a->fd < 0 || !a->tmp[0])
        return pn_err_set(err, "internal error: no artifact to publish");
    if (strlen(sha256_hex) != 64 || strspn(sha256_hex, "0123456789abcdef") != 64) {
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "internal error: bad artifact name");
    }
    char path[sizeof(a->path)];
    if (snprintf(path, sizeof(path), "%s/%s.fw", a->dir, sha256_hex) >= (int)sizeof(path)) {
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "artifact directory %s: path too long", a->dir);
    }
    int rc = fsync(a->fd);
    int e = errno;
    if (close(a->fd) < 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    a->fd = -1;
    if (rc == 0 && rename(a->tmp, path) < 0) {
        rc = -1;
        e = errno;
    }
    if (rc < 0) {
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "storing %s: %s", path, strerror(e));
    }
    a->tmp[0] = '\0';
    snprintf(a->path, sizeof(a->path), "%s", path);
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        e = errno;
        if (dfd >= 0)
            close(dfd);
        pn_fw_artifact_discard(a);
        return pn_err_set(err, "storing %s: %s", path, strerror(e));
    }
    close(dfd);
    return 0;
}

void pn_fw_artifact_discard(struct pn_fw_artifact *a)
{
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
    if (a->tmp[0]) {
        unlink(a->tmp);
        a->tmp[0] = '\0';
    }
    if (a->path[0]) {
        /* Two uploads of one archive race only when the first one's commit
         * failed; then the name may already hold the second one's file. */
        struct stat st;
        if (stat(a->path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino)
            unlink(a->path);
        a->path[0] = '\0';
    }
}

void pn_fw_artifact_keep(struct pn_fw_artifact *a)
{
    a->path[0] = '\0';
}
