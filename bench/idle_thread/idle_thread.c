/* SPDX-License-Identifier: Apache-2.0 */
/* Preloaded into a broker (LD_PRELOAD) by bench/thread_cost.sh: starts one
 * thread that never runs.  Its only effect is that the process is no longer
 * single-threaded, which is what any plugin with a thread of its own (such
 * as Pinion's worker) does to Mosquitto: glibc then takes its arena lock in
 * malloc and free and wraps system calls for cancellation, and the kernel
 * counts references to the file of every descriptor a system call uses. */
#include <pthread.h>
#include <unistd.h>

static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

__attribute__((constructor)) static void start_idle_thread(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, idle, NULL) == 0)
        pthread_detach(t);
}
