/* SPDX-License-Identifier: Apache-2.0 */
/* fw_bench ARCHIVE.fw KEY.pub ARTIFACT_DIR [RUNS [IMAGE]]
 *
 * Times, on one archive, the best of RUNS (default 5) of:
 *   verify  pn_fw_verify: signature, every resource's BLAKE2b-256, SHA-256
 *           of the file, central directory;
 *   upload  the same pass copying the file into ARTIFACT_DIR, then fsync and
 *           rename to <sha256>.fw (what `pinion firmware upload` does around
 *           its one INSERT); the stored file is removed after each run;
 *   floor   with IMAGE: libsodium's BLAKE2b-256 of IMAGE alone, read in 1 MiB
 *           blocks: the least any verification through libsodium can take.
 * Prints "verify_s=S upload_s=S floor_s=S size=BYTES data=BYTES maxrss_kib=K"
 * for bench/fw_verify.sh (floor_s=0 without IMAGE). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "fw.h"
#include "fwkey.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int fail(const struct pn_err *err)
{
    fprintf(stderr, "fw_bench: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fw_bench ARCHIVE.fw KEY.pub ARTIFACT_DIR [RUNS]\n");
        return 2;
    }
    int runs = argc > 4 ? atoi(argv[4]) : 5;
    struct pn_err err;
    struct pn_fw_key key;
    struct pn_fw_info info;
    if (sodium_init() < 0 || pn_fwkey_load_pub(argv[2], key.pk, &err) < 0)
        return fail(&err);
    pn_fwkey_id(key.pk, key.id);

    double best_verify = 1e9, best_upload = 1e9;
    unsigned long long size = 0, data = 0;
    for (int i = 0; i < runs; i++) {
        double t = now();
        if (pn_fw_verify_path(argv[1], &key, 1, &info, &err) < 0)
            return fail(&err);
        t = now() - t;
        if (t < best_verify)
            best_verify = t;
        size = info.size;
        data = info.data_bytes;
        pn_fw_info_free(&info);
    }
    for (int i = 0; i < runs; i++) {
        struct pn_fw_artifact art;
        double t = now();
        int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            perror(argv[1]);
            return 1;
        }
        if (pn_fw_artifact_open(&art, argv[3], &err) < 0)
            return fail(&err);
        if (pn_fw_verify(fd, &key, 1, art.fd, &info, &err) < 0 ||
            pn_fw_artifact_publish(&art, info.sha256_hex, &err) < 0)
            return fail(&err);
        close(fd);
        t = now() - t;
        if (t < best_upload)
            best_upload = t;
        pn_fw_artifact_discard(&art);
        pn_fw_info_free(&info);
    }
    double best_floor = 0;
    if (argc > 5) {
        static unsigned char buf[1 << 20];
        best_floor = 1e9;
        for (int i = 0; i < runs; i++) {
            int fd = open(argv[5], O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                perror(argv[5]);
                return 1;
            }
            double t = now();
            crypto_generichash_state st;
            unsigned char h[32];
            ssize_t n;
            crypto_generichash_init(&st, NULL, 0, sizeof(h));
            while ((n = read(fd, buf, sizeof(buf))) > 0)
                crypto_generichash_update(&st, buf, (size_t)n);
            crypto_generichash_final(&st, h, sizeof(h));
            t = now() - t;
            close(fd);
            if (t < best_floor)
                best_floor = t;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("verify_s=%.4f upload_s=%.4f floor_s=%.4f size=%llu data=%llu maxrss_kib=%ld\n",
           best_verify, best_upload, best_floor, size, data, ru.ru_maxrss);
    return 0;
}
