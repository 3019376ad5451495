/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the benchmark programs. */
#ifndef PINION_BENCH_BENCH_H
#define PINION_BENCH_BENCH_H

#include <stdio.h>
#include <time.h>

/* Resident set size of this process, KiB (-1 if unknown). */
static inline long bench_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static inline double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#endif
