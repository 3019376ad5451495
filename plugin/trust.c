/* SPDX-License-Identifier: Apache-2.0 */
#include "trust.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "cert.h"
#include "fsutil.h"

struct entry {
    unsigned long hash;
    int suffix;
    char id[PN_CERT_ID_HEX];
};

static bool our_name(const char *name, unsigned long *hash, int *suffix)
{
    if (strlen(name) < 10 || name[8] != '.')
        return false;
    for (int i = 0; i < 8; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return false;
    for (const char *p = name + 9; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    if (strlen(name + 9) > 6)
        return false;
    *hash = strtoul(name, NULL, 16);
    *suffix = atoi(name + 9);
    return true;
}

/* Reads the directory's files of ours.  *out is malloc'd. */
static int scan(const char *dir, struct entry **out, size_t *nout, struct pn_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return pn_err_set(err, "trust_dir %s: %s", dir, strerror(errno));
    struct entry *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned long hash;
        int suffix;
        if (!our_name(de->d_name, &hash, &suffix))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        X509 *x = pn_cert_load(path, NULL);
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct entry *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                X509_free(x);
                break;
            }
            v = nv;
        }
        v[n].hash = hash;
        v[n].suffix = suffix;
        v[n].id[0] = '\0';
        if (x)
            pn_cert_id(x, v[n].id);
        X509_free(x);
        n++;
    }
    closedir(d);
    *out = v;
    *nout = n;
    return 0;
}

static int write_cert(const char *dir, X509 *x, unsigned long hash, int suffix, struct pn_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%08lx.%d", dir, hash, suffix);
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_X509(b, x)) {
        BIO_free(b);
        return pn_err_set(err, "%s: cannot encode certificate", path);
    }
    char *data = NULL;
    long len = BIO_get_mem_data(b, &data);
    int rc = pn_file_replace(path, data, (size_t)len, 0644, err);
    BIO_free(b);
    return rc;
}

int pn_trust_sync(const char *dir, X509 *const *certs, size_t n, bool compact, struct pn_err *err)
{
    struct entry *have = NULL;
    size_t nhave = 0;
    int written = 0;

    if (scan(dir, &have, &nhave, err) < 0)
        return -1;
    if (compact) {
        for (size_t i = 0; i < nhave; i++) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%08lx.%d", dir, have[i].hash, have[i].suffix);
            unlink(path);
        }
        nhave = 0;
    }
    for (size_t c = 0; c < n; c++) {
        char id[PN_CERT_ID_HEX];
        pn_cert_id(certs[c], id);
        unsigned long hash = X509_subject_name_hash(certs[c]);
        int next = 0;
        bool present = false;
        for (size_t i = 0; i < nhave; i++) {
            if (have[i].hash != hash)
                continue;
            if (strcmp(have[i].id, id) == 0)
                present = true;
            if (have[i].suffix >= next)
                next = have[i].suffix + 1;
        }
        if (present)
            continue;
        if (write_cert(dir, certs[c], hash, next, err) < 0) {
            free(have);
            return -1;
        }
        written++;
        struct entry *nv = realloc(have, (nhave + 1) * sizeof(*have));
        if (!nv) {
            free(have);
            return pn_err_set(err, "out of memory");
        }
        have = nv;
        have[nhave].hash = hash;
        have[nhave].suffix = next;
        memcpy(have[nhave].id, id, sizeof(id));
        nhave++;
    }
    free(have);
    return written;
}
