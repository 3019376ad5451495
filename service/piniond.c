/* piniond main: configuration, the two connections, the loop, signals. */
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

#include <mqtt_protocol.h>
#include <sodium.h>

#include "db.h"
#include "fwkey.h"
#include "ident.h"
#include "piniond.h"
#include "version.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Whether stderr is the journal (systemd sets JOURNAL_STREAM to its
 * "device:inode" for services whose stderr goes there). */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
           (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void pd_log(const char *fmt, ...)
{
    /* A PD_ERR/PD_WARNING/PD_NOTICE prefix ("<N>", sd-daemon(3)) gives the
     * level; none is info.  The journal reads the prefix and timestamps
     * lines itself; elsewhere the level is a word after a UTC timestamp. */
    int level = 6;
    if (fmt[0] == '<' && fmt[1] >= '0' && fmt[1] <= '7' && fmt[2] == '>') {
        level = fmt[1] - '0';
        fmt += 3;
    }
    static const char *const words[] = {
        "emergency: ", "alert: ", "critical: ", "error: ", "warning: ", "", "", "debug: "};
    va_list ap;
    va_start(ap, fmt);
    if (stderr_is_journal()) {
        fprintf(stderr, "<%d>", level);
    } else {
        char when[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(stderr, "%s piniond: %s", when, words[level]);
    }
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int pd_publish(struct pd *pd, const char *topic, const void *payload, int len, bool retain)
{
    int rc = mosquitto_publish(pd->mq, NULL, topic, len, payload, 1, retain);
    if (rc != MOSQ_ERR_SUCCESS) {
        pd_log(PD_ERR "cannot publish to %s: %s", topic, mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct pd *pd = arg;
    if (rc != 0) {
        pd_log(PD_ERR "broker refused the connection: %s", mosquitto_reason_string(rc));
        return;
    }
    char status[300], get[300], update[300];
    snprintf(status, sizeof(status), "$share/piniond/%s/+/up/status", pd->cfg.topic_root);
    snprintf(get, sizeof(get), "$share/piniond/%s/+/up/get", pd->cfg.topic_root);
    snprintf(update, sizeof(update), "%s/+/down/update", pd->cfg.topic_root);
    mosquitto_subscribe(m, NULL, status, 1);
    mosquitto_subscribe(m, NULL, get, 1);
    /* Every instance sees every manifest published or cleared, by any
     * instance, as it happens (not the retained ones already there): the
     * cue to forget what it knew of that device's firmware in flight.
     * QoS 0: never held back behind unacknowledged QoS 1 messages, so it
     * reaches piniond before the device, having received it, can ask. */
    mosquitto_subscribe_v5(m, NULL, update, 0, MQTT_SUB_OPT_SEND_RETAIN_NEVER, NULL);
    pd->mq_connected = true;
    pd_metrics_broker(pd->metrics, pd->cfg.mqtt_host, pd->cfg.mqtt_port, true);
    pd_log("connected to %s:%d as %s", pd->cfg.mqtt_host, pd->cfg.mqtt_port, pd->cfg.client_id);
}

static void on_disconnect(struct mosquitto *m, void *arg, int rc)
{
    struct pd *pd = arg;
    (void)m;
    if (pd->mq_connected && rc) /* rc 0: our own disconnect, at stop */
        pd_log(PD_WARNING "disconnected from the broker (%s)", mosquitto_strerror(rc));
    else if (pd->mq_connected)
        pd_log("disconnected from the broker (%s)", mosquitto_strerror(rc));
    pd->mq_connected = false;
    pd_metrics_broker(pd->metrics, pd->cfg.mqtt_host, pd->cfg.mqtt_port, false);
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
    r->due_ms = pd_now_ms() + 300;
    pd->nretry++;
}

/* Statuses of devices that had no row yet: about 3 s of retries. */
static void run_retries(struct pd *pd)
{
    long now = pd_now_ms();
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
static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct pd *pd = arg;
    (void)m;
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
        pd_handle_get(pd, dev, msg->payload, msg->payloadlen);
    }
}

int pd_ensure_db(struct pd *pd)
{
    struct pn_err err;
    if (pd->db && PQstatus(pd->db) == CONNECTION_OK)
        return 0;
    if (pd->db) {
        PQfinish(pd->db);
        pd->db = NULL;
        pd_log(PD_WARNING "database connection lost; reconnecting");
        pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
    }
    pd->db = pn_db_connect_app(pd->cfg.database, "piniond", 5, &err);
    if (!pd->db || pn_db_check_schema(pd->db, &err) < 0 || pd_chunks_prepare(pd, &err) < 0) {
        if (pd->db)
            PQfinish(pd->db);
        pd->db = NULL;
        pd_log(PD_ERR "%s", err.msg);
        pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
        return -1;
    }
    return 0;
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
    pd.mq = mosquitto_new(pd.cfg.client_id, true, &pd);
    if (!pd.mq || mosquitto_tls_set(pd.mq, pd.cfg.ca_file, NULL, pd.cfg.cert_file,
                                    pd.cfg.key_file, NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "piniond: cannot use the TLS files (ca_file, cert_file, key_file)\n");
        return 1;
    }
    /* Chunks are request/response: don't let Nagle hold small packets. */
    mosquitto_int_option(pd.mq, MOSQ_OPT_TCP_NODELAY, 1);
    /* MQTT 5 for one subscription option: manifests without the retained
     * backlog (see on_connect). */
    mosquitto_int_option(pd.mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_callback_set(pd.mq, on_connect);
    mosquitto_disconnect_callback_set(pd.mq, on_disconnect);
    mosquitto_message_callback_set(pd.mq, on_message);
    pd_log("starting; release key %s", pd.release_key_id);
    int rc = mosquitto_connect(pd.mq, pd.cfg.mqtt_host, pd.cfg.mqtt_port, 30);
    if (rc != MOSQ_ERR_SUCCESS)
        pd_log(PD_WARNING "cannot connect to %s:%d yet: %s", pd.cfg.mqtt_host, pd.cfg.mqtt_port,
               mosquitto_strerror(rc));

    long last_tick = 0, last_retry = 0;
    bool renewed_all = false;
    time_t started = time(NULL);
    while (!stop_requested) {
        rc = mosquitto_loop(pd.mq, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS && !stop_requested) {
            if (pd_now_ms() - last_retry > 1000) {
                last_retry = pd_now_ms();
                mosquitto_reconnect(pd.mq);
            } else {
                usleep(50000);
            }
        }
        pd_limits_sweep(&pd);
        if (pd_now_ms() - last_tick < pd.cfg.tick_ms || !pd.mq_connected)
            continue;
        last_tick = pd_now_ms();
        if (pd_ensure_db(&pd) < 0)
            continue;
        if (!renewed_all) {
            /* An earlier process may have recorded releases it never
             * published: re-issue every in-flight manifest issued before
             * this process started, a batch a tick until none is left. */
            int n = pd_renew(&pd, started);
            renewed_all = n >= 0 && n < PD_RENEW_BATCH;
        }
        run_retries(&pd);
        pd_end_stale(&pd);
        int released = pd_rollout_tick(&pd);
        pd_metrics_add(pd.metrics, PD_M_RELEASES, released > 0 ? (unsigned long)released : 0);
        pd_renew(&pd, 0);
    }
    pd_log("stopping");
    mosquitto_disconnect(pd.mq);
    mosquitto_loop(pd.mq, 100, 1);
    mosquitto_destroy(pd.mq);
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
