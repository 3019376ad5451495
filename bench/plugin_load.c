/* SPDX-License-Identifier: Apache-2.0 */
/* Loads the plugin's state from a real database the way the plugin does at
 * start (streamed rows, one consistent snapshot) and prints the time and
 * memory it took.  Run by bench/plugin_load.sh, which fills a throwaway
 * database with N devices and pins.  Usage: plugin_load CONNINFO TRUSTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include "bench.h"
#include "sync.h"

int main(int argc, char **argv)
{
    if (argc != 3 || sodium_init() < 0) {
        fprintf(stderr, "usage: plugin_load CONNINFO TRUSTDIR\n");
        return 2;
    }
    struct pn_sync_config cfg = {argv[1], argv[2], "fleet", 300, PN_ROTATE_SAME_KEY, NULL, NULL};
    struct pn_sync *s = pn_sync_new(&cfg);
    struct pn_state *st = NULL;
    struct pn_err err;
    long rss0 = bench_rss_kib();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (!s || pn_sync_load_now(s, &st, &err) < 0) {
        fprintf(stderr, "load failed: %s\n", s ? err.msg : "out of memory");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double dt = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("load: %zu devices, %zu pins, %zu CAs in %.2f s (%.0f pins/s), RSS +%.1f MiB\n",
           pn_map_count(st->devices), pn_map_count(st->pins), pn_map_count(st->cas), dt,
           (double)pn_map_count(st->pins) / dt, (bench_rss_kib() - rss0) / 1024.0);
    pn_state_free(st);
    pn_sync_free(s);
    return 0;
}
