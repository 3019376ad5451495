/* SPDX-License-Identifier: Apache-2.0 */
/* piniond main: configuration, routing of device messages, the loop,
 * signals.  Connections live in conn.c. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "db.h"
#include "fwkey.h"
#include "ident.h"
#include "piniond.h"
#include "version.h"

/* At start, how long in-flight manifests wait for every broker session
 * before they are published again (pd_republish). */
#define REPUBLISH_WAIT_MS 5000

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void retry_later(struct pd *pd, const char *ident, const void *payload, int len)
{
    struct pd_retry *r = &pd->retry[pd->nretry];
    r->payload = malloc((size_t)len);
    if (!r->payload)
        return;
    memcpy(r->payload, payload, (size_t)len);
    snprintf(r->identifier, sizeof(r->identifier), "%s", ident);
    r->len = len;
    r->tries = 1;
    r->due_ms = pn_mono_ms() + 300;
    pd->nretry++;
}

/* Statuses of devices that had no row yet: about 3 s of retries. */
static void run_retries(struct pd *pd)
{
    long now = pn_mono_ms();
    for (int i = 0; i < pd->nretry;) {
        struct pd_retry *r = &pd->retry[i];
        if (r->due_ms > now) {
            i++;
            continue;
        }
        if (pd_handle_status(pd, r->identifier, r->payload, r->len, r->tries >= 10) == 1) {
            r->tries++;
            r->due_ms = now + 300;
            i++;
            continue;
        }
        free(r->payload);
        pd->retry[i] = pd->retry[--pd->nretry];
    }
}

/* Routes R/<id>/up/status and R/<id>/up/get, within the device's limits,
 * and notes R/<id>/down/update; anything else is ignored. */
static void on_message(struct pd *pd, struct pd_broker *b, const struct mosquitto_message *msg)
{
    size_t rl = strlen(pd->cfg.topic_root);
    const char *t = msg->topic;
    if (strncmp(t, pd->cfg.topic_root, rl) != 0 || t[rl] != '/')
        return;
    t += rl + 1;
    const char *slash = strchr(t, '/');
    if (!slash)
        return;
    size_t il = (size_t)(slash - t);
    char ident[PN_IDENT_BUF];
    bool is_status = strcmp(slash, "/up/status") == 0, is_get = strcmp(slash, "/up/get") == 0;
    if (!is_status && !is_get) {
        if (strcmp(slash, "/down/update") == 0 && pn_ident_valid_n(t, il)) {
            memcpy(ident, t, il);
            ident[il] = '\0';
            pd_inflight_forget(pd, ident);
        }
        return;
    }
    if (!pn_ident_valid_n(t, il)) {
        pd_log("ignored message on %s: invalid device identifier", msg->topic);
        return;
    }
    memcpy(ident, t, il);
    ident[il] = '\0';
    /* Before anything costs more than a hash lookup: the device's limits. */
    struct pd_dev *dev = pd_dev_get(pd, ident);
    if (!dev || !pd_dev_admit(pd, dev, is_status))
        return;
    if (!pd->db || PQstatus(pd->db) != CONNECTION_OK) {
        if (is_status && pd->nretry < PD_RETRY_MAX)
            retry_later(pd, ident, msg->payload, msg->payloadlen);
        return; /* chunk requests are repeated by devices */
    }
    if (is_status) {
        bool full = pd->nretry == PD_RETRY_MAX;
        if (pd_handle_status(pd, ident, msg->payload, msg->payloadlen, full) == 1)
            retry_later(pd, ident, msg->payload, msg->payloadlen);
    } else {
        pd_handle_get(pd, b, dev, msg->payload, msg->payloadlen);
    }
}

static void usage(FILE *to)
{
    fprintf(to, "usage: piniond -c|--config CONFIG\n       piniond --version\n\n"
                "Releases firmware to devices: see README section \"piniond\".\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"config", required_argument, NULL, 'c'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {0}};
    const char *conf = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
        if (c == 'c') {
            conf = optarg;
        } else if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 'V') {
            puts("piniond " PINION_VERSION_FULL);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!conf || optind != argc) {
        usage(stderr);
        return 2;
    }
    setvbuf(stderr, NULL, _IOLBF, 0);
    if (sodium_init() < 0)
        return 1;

    static struct pd pd;
    struct pn_err err;
    if (pd_config_load(conf, &pd.cfg, &err) < 0) {
        fprintf(stderr, "piniond: %s\n", err.msg);
        return 1;
    }
    if (pn_fwkey_load_priv(pd.cfg.release_key, pd.release_sk, &err) < 0) {
        fprintf(stderr, "piniond: release_key %s\n", err.msg);
        return 1;
    }
    pn_fwkey_id(pd.release_sk + 32, pd.release_key_id);
    if (pd.cfg.metrics_listen &&
        !(pd.metrics = pd_metrics_start(pd.cfg.metrics_listen, pd.cfg.database, &err))) {
        fprintf(stderr, "piniond: %s: %s\n", conf, err.msg);
        return 1;
    }
    if (pd_limits_init(&pd) < 0) {
        fprintf(stderr, "piniond: out of memory\n");
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    mosquitto_lib_init();
    /* Checked once here, so that a wrong path stops piniond at start
     * rather than at every broker it meets. */
    struct mosquitto *probe = mosquitto_new(pd.cfg.client_id, true, NULL);
    if (!probe || mosquitto_tls_set(probe, pd.cfg.ca_file, NULL, pd.cfg.cert_file, pd.cfg.key_file,
                                    NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "piniond: cannot use the TLS files (ca_file, cert_file, key_file)\n");
        mosquitto_destroy(probe);
        mosquitto_lib_cleanup();
        return 1;
    }
    mosquitto_destroy(probe);
    pd.on_message = on_message;
    pd.prepare_db = pd_chunks_prepare;
    pd_log("starting; release key %s", pd.release_key_id);

    long last_tick = 0;
    bool republished_all = false;
    long long republish_after[3] = {0, 0, 0};
    time_t started = time(NULL);
    long started_ms = pn_mono_ms();
    while (!stop_requested) {
        pd_brokers_loop(&pd, 50);
        pd_limits_sweep(&pd);
        if (pd_ensure_db(&pd) < 0) {
            usleep(200000);
            continue;
        }
        pd_brokers_refresh(&pd, false);
        if (pn_mono_ms() - last_tick < pd.cfg.tick_ms || pd_brokers_connected(&pd) == 0)
            continue;
        last_tick = pn_mono_ms();
        /* Once every session is up (or after REPUBLISH_WAIT_MS): a manifest
         * recorded on a broker not reached by then is issued again. */
        if (!republished_all && (pd_brokers_connected(&pd) == pd.nbrokers ||
                                 pn_mono_ms() - started_ms >= REPUBLISH_WAIT_MS)) {
            /* An earlier process may have recorded releases it never
             * published: publish every in-flight manifest issued before
             * this process started again, as it was recorded (a new
             * sequence would be a new manifest to its device), a batch a
             * tick until none is left. */
            int n = pd_republish(&pd, started, republish_after);
            republished_all = n >= 0 && n < PD_RENEW_BATCH;
        }
        run_retries(&pd);
        pd_end_stale(&pd);
        pd_follow_moves(&pd);
        int released = pd_rollout_tick(&pd);
        pd_metrics_add(pd.metrics, PD_M_RELEASES, released > 0 ? (unsigned long)released : 0);
        pd_renew(&pd);
    }
    pd_log("stopping");
    pd_brokers_close(&pd);
    mosquitto_lib_cleanup();
    if (pd.db)
        PQfinish(pd.db);
    for (int i = 0; i < pd.nretry; i++)
        free(pd.retry[i].payload);
    pd_limits_free(&pd);
    pd_metrics_stop(pd.metrics);
    sodium_memzero(pd.release_sk, sizeof(pd.release_sk));
    pd_config_free(&pd.cfg);
    return 0;
}
