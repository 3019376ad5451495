/* SPDX-License-Identifier: Apache-2.0 */
/* Benchmark of the plugin's decision path, without a broker: builds the
 * in-memory state for N devices with one pinned certificate each (default
 * one million), then measures
 *   - memory of the state (RSS growth) and build time,
 *   - CONNECT decisions for pinned certificates (the common case),
 *   - CONNECT decisions for first connects (chain check against the CAs),
 *   - ACL checks (publish to own up/, read of own down/, foreign subscribe).
 * Each decision is timed on its own (clock_gettime, whose own cost is
 * printed and left in): mean, p50, p99 and max.  Prints one line per
 * figure.  Usage: plugin_bench [devices] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "bench.h"
#include "cert.h"
#include "policy.h"
#include "state.h"

#define REAL_CERTS 1000

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Prints mean and percentiles of n samples (microseconds); sorts them. */
static void report(const char *what, double *us, long n, long ok, long total)
{
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += us[i];
    qsort(us, (size_t)n, sizeof(*us), cmp_double);
    printf("%s: mean %.3f us, p50 %.3f us, p99 %.3f us, max %.1f us (%ld/%ld as expected)\n", what,
           sum / n, us[n / 2], us[n * 99 / 100], us[n - 1], ok, total);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    if (n < REAL_CERTS)
        n = REAL_CERTS;
    if (sodium_init() < 0)
        return 1;
    struct pn_err err;

    /* One Device CA with JITP, and REAL_CERTS real device certificates. */
    EVP_PKEY *cakey = pn_key_generate("ec", &err);
    struct pn_cert_spec caspec = {PN_CERT_CA, "Bench CA", NULL, 365};
    X509 *cacert = pn_cert_make(&caspec, cakey, NULL, NULL, &err);
    EVP_PKEY *devkey = pn_key_generate("ec", &err);
    X509 **certs = calloc(REAL_CERTS, sizeof(*certs));
    char name[64];
    for (int i = 0; i < REAL_CERTS; i++) {
        snprintf(name, sizeof(name), "dev-%08d", i);
        struct pn_cert_spec spec = {PN_CERT_DEVICE, name, NULL, 365};
        X509 *made = pn_cert_make(&spec, devkey, cacert, cakey, &err);
        if (!made) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        /* As the broker has them: parsed from the DER that TLS received
         * (OpenSSL then keeps the encoding of the signed part). */
        unsigned char *der = NULL;
        const unsigned char *p = NULL;
        int len = i2d_X509(made, &der);
        p = der;
        certs[i] = len > 0 ? d2i_X509(NULL, &p, len) : NULL;
        OPENSSL_free(der);
        X509_free(made);
        if (!certs[i])
            return 1;
    }

    long rss0 = bench_rss_kib();
    double t0 = bench_now();
    struct pn_state *s = pn_state_new((size_t)n);
    struct pn_ca *ca = calloc(1, sizeof(*ca));
    pn_cert_id(cacert, ca->id);
    ca->org_id = 1;
    ca->status = PN_ACTIVE;
    ca->not_before = 0;
    ca->not_after = time(NULL) + 86400;
    X509_up_ref(cacert);
    ca->cert = cacert;
    ca->jitp_product_id = 1;
    ca->jitp_tags = strdup("[]");
    pn_state_put_ca(s, ca);
    unsigned char id[PN_SHA256], spki[PN_SHA256];
    pn_cert_spki_sha256_bin(certs[0], spki);
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "dev-%08ld", i);
        struct pn_device *d = pn_state_put_device(s, i + 1, name, 1, 1, PN_ACTIVE);
        if (i < REAL_CERTS) {
            unsigned int len = 0;
            X509_digest(certs[i], EVP_sha256(), id, &len);
        } else {
            randombytes_buf(id, sizeof(id));
        }
        pn_state_put_pin(s, id, d, spki, time(NULL) + 86400, PN_ACTIVE);
    }
    /* A few service identities, as in production (piniond and friends):
     * every CONNECT checks the identifier against their client ids. */
    for (int i = 0; i < 4; i++) {
        unsigned char sid[PN_SHA256];
        randombytes_buf(sid, sizeof(sid));
        snprintf(name, sizeof(name), "service-%d", i);
        pn_state_put_service(s, sid, name, time(NULL) + 86400);
    }
    double build = bench_now() - t0;
    long rss1 = bench_rss_kib();
    printf("state: %ld devices + %ld pins built in %.2f s, RSS +%.1f MiB (%.0f bytes per device)\n",
           n, n, build, (rss1 - rss0) / 1024.0, (rss1 - rss0) * 1024.0 / (double)n);

    struct pn_policy pol = {"fleet", PN_IDENTITY_CN, PN_ROTATE_SAME_KEY, false};
    struct pn_admission a;
    long iters = 200000, admitted = 0;
    double *us = calloc((size_t)(4000000), sizeof(*us));
    t0 = bench_now();
    for (long i = 0; i < 1000000; i++)
        bench_now();
    printf("clock: %.3f us per reading (included in every figure below)\n", bench_now() - t0);
    time_t now = time(NULL);
    for (long i = 0; i < iters; i++) {
        int k = (int)(i % REAL_CERTS);
        snprintf(name, sizeof(name), "dev-%08d", k);
        t0 = bench_now();
        pn_admit_decide(s, &pol, certs[k], NULL, name, true, now, &a);
        us[i] = (bench_now() - t0) * 1e6;
        admitted += a.kind == PN_ADMIT_PINNED;
    }
    report("connect (pinned)", us, iters, admitted, iters);

    /* First connects: drop the pins of the real certificates. */
    for (int i = 0; i < REAL_CERTS; i++) {
        unsigned int len = 0;
        X509_digest(certs[i], EVP_sha256(), id, &len);
        pn_state_del_pin(s, id);
    }
    iters = 20000;
    long fresh = 0;
    for (long i = 0; i < iters; i++) {
        int k = (int)(i % REAL_CERTS);
        snprintf(name, sizeof(name), "dev-%08d", k);
        t0 = bench_now();
        pn_admit_decide(s, &pol, certs[k], NULL, name, true, now, &a);
        us[i] = (bench_now() - t0) * 1e6;
        fresh += a.kind == PN_ADMIT_NEW;
    }
    report("connect (first, chain+policy checks)", us, iters, fresh, iters);
    /* As in the broker: TLS has verified each certificate with the
     * registered CA's key (plugin/handshake.h), so the plugin does not. */
    fresh = 0;
    for (long i = 0; i < iters; i++) {
        int k = (int)(i % REAL_CERTS);
        snprintf(name, sizeof(name), "dev-%08d", k);
        t0 = bench_now();
        pn_admit_decide(s, &pol, certs[k], cacert, name, true, now, &a);
        us[i] = (bench_now() - t0) * 1e6;
        fresh += a.kind == PN_ADMIT_NEW && a.ca_sig_from_tls == 1;
    }
    report("connect (first, CA signature known from TLS)", us, iters, fresh, iters);

    iters = 2000000;
    long ok = 0;
    char topic[128];
    for (long i = 0; i < iters; i++) {
        long k = i % n;
        snprintf(name, sizeof(name), "dev-%08ld", k);
        snprintf(topic, sizeof(topic), "fleet/%s/up/status", name);
        t0 = bench_now();
        ok += pn_acl_allows(s, "fleet", name, name, topic, PN_ACL_WRITE);
        double t1 = bench_now();
        ok += !pn_acl_allows(s, "fleet", name, name, "fleet/+/down/#", PN_ACL_SUBSCRIBE);
        us[2 * i] = (t1 - t0) * 1e6;
        us[2 * i + 1] = (bench_now() - t1) * 1e6;
    }
    report("acl", us, 2 * iters, ok, 2 * iters);
    free(us);

    t0 = bench_now();
    pn_state_free(s);
    printf("state freed in %.2f s\n", bench_now() - t0);
    for (int i = 0; i < REAL_CERTS; i++)
        X509_free(certs[i]);
    free(certs);
    X509_free(cacert);
    EVP_PKEY_free(cakey);
    EVP_PKEY_free(devkey);
    return 0;
}
