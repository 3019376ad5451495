/* SPDX-License-Identifier: Apache-2.0 */
/* piniond's bottom layer: logging, the database connection, and one MQTT
 * session per live broker of the registry (README "Scaling out").  It
 * calls nothing above it: messages go to pd->on_message, a new database
 * connection is prepared by pd->prepare_db.
 *
 * The sessions share one poll(): a release publishes each manifest once,
 * on the session of the broker its device is on, so the work of a release
 * does not grow with the number of brokers. */
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <mqtt_protocol.h>

#include "db.h"
#include "ident.h"
#include "migrate.h"
#include "piniond.h"

#define REGISTRY_MS 1000 /* how often the registry is read */
#define RETRY_MS 1000    /* reconnect attempts to a lost broker */
#define CONNECT_MS 3000  /* an attempt without CONNACK by then is abandoned */
#define REPORT_MS 30000  /* "cannot reach" reports about one broker */
#define REPORT_AFTER_MS 3000

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
    if (!pd->db || pn_db_check_schema(pd->db, &err) < 0 ||
        (pd->prepare_db && pd->prepare_db(pd, &err) < 0)) {
        if (pd->db)
            PQfinish(pd->db);
        pd->db = NULL;
        pd_log(PD_ERR "%s", err.msg);
        pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
        return -1;
    }
    return 0;
}

int pd_publish(struct pd_broker *b, const char *topic, const void *payload, int len, bool retain)
{
    int rc = b && b->mq ? mosquitto_publish(b->mq, NULL, topic, len, payload, 1, retain)
                        : MOSQ_ERR_NO_CONN;
    if (rc != MOSQ_ERR_SUCCESS) {
        pd_log(PD_ERR "cannot publish to %s on broker %s: %s", topic, b ? b->id : "-",
               mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ sessions */

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct pd_broker *b = arg;
    struct pd *pd = b->pd;
    if (rc != 0) {
        snprintf(b->why, sizeof(b->why), "refused: %s", mosquitto_reason_string(rc));
        pd_log(PD_ERR "broker %s (%s) refused the connection: %s", b->id, b->address,
               mosquitto_reason_string(rc));
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
     * reaches piniond before the device, having received it, can ask.
     * On every broker: a manifest is published on its device's broker. */
    mosquitto_subscribe_v5(m, NULL, update, 0, MQTT_SUB_OPT_SEND_RETAIN_NEVER, NULL);
    b->connected = true;
    pd->connects++; /* invalidates every device's in-flight firmware (chunks.c) */
    b->down_since_ms = 0;
    b->reported_ms = 0;
    pd_metrics_broker(pd->metrics, b->id, true);
    pd_log("connected to broker %s at %s as %s-%s", b->id, b->address, pd->cfg.client_id, b->id);
}

static void on_disconnect(struct mosquitto *m, void *arg, int rc)
{
    struct pd_broker *b = arg;
    (void)m;
    if (b->connected) {
        pd_log(PD_WARNING "lost broker %s at %s (%s); reconnecting", b->id, b->address,
               mosquitto_strerror(rc));
        snprintf(b->why, sizeof(b->why), "%s", mosquitto_strerror(rc));
    }
    b->connected = false;
    pd_metrics_broker(b->pd->metrics, b->id, false);
    if (!b->down_since_ms)
        b->down_since_ms = pn_mono_ms();
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct pd_broker *b = arg;
    (void)m;
    if (b->pd->on_message)
        b->pd->on_message(b->pd, b, msg);
}

/* A new client object for every attempt: after a broker died, an old one
 * can sit in a half-connected state until its keepalive runs out. */
static void try_connect(struct pd_broker *b)
{
    struct pd *pd = b->pd;
    b->attempt_ms = pn_mono_ms();
    b->next_try_ms = b->attempt_ms + RETRY_MS;
    if (b->mq)
        mosquitto_destroy(b->mq);
    char cid[256];
    snprintf(cid, sizeof(cid), "%s-%s", pd->cfg.client_id, b->id);
    b->mq = mosquitto_new(cid, true, b);
    if (!b->mq || mosquitto_tls_set(b->mq, pd->cfg.ca_file, NULL, pd->cfg.cert_file,
                                    pd->cfg.key_file, NULL) != MOSQ_ERR_SUCCESS) {
        snprintf(b->why, sizeof(b->why), "cannot use the TLS files");
        return;
    }
    /* Chunks are request/response: don't let Nagle hold small packets. */
    mosquitto_int_option(b->mq, MOSQ_OPT_TCP_NODELAY, 1);
    /* MQTT 5 for one subscription option: manifests without the retained
     * backlog (see on_connect). */
    mosquitto_int_option(b->mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_callback_set(b->mq, on_connect);
    mosquitto_disconnect_callback_set(b->mq, on_disconnect);
    mosquitto_message_callback_set(b->mq, on_message);
    int rc = mosquitto_connect_async(b->mq, b->host, b->port, 30);
    if (rc != MOSQ_ERR_SUCCESS)
        snprintf(b->why, sizeof(b->why), "%s",
                 rc == MOSQ_ERR_ERRNO ? "connection refused or unreachable"
                                      : mosquitto_strerror(rc));
}

static struct pd_broker *session_new(struct pd *pd, const char *id, const char *address)
{
    struct pd_broker *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->pd = pd;
    snprintf(b->id, sizeof(b->id), "%s", id);
    snprintf(b->address, sizeof(b->address), "%s", address);
    b->down_since_ms = pn_mono_ms();
    if (pn_addr_split(address, b->host, sizeof(b->host), &b->port) < 0) {
        snprintf(b->why, sizeof(b->why), "service_address '%s' is not host:port", address);
        return b; /* kept, so that it is reported */
    }
    try_connect(b);
    return b;
}

static void session_free(struct pd_broker *b)
{
    if (b->mq) {
        if (b->connected) {
            mosquitto_disconnect(b->mq);
            mosquitto_loop(b->mq, 100, 1);
        }
        mosquitto_destroy(b->mq);
    }
    free(b);
}

static struct pd_broker *find(struct pd *pd, const char *id)
{
    for (int i = 0; i < pd->nbrokers; i++)
        if (!strcmp(pd->brokers[i]->id, id))
            return pd->brokers[i];
    return NULL;
}

struct pd_broker *pd_broker_connected(struct pd *pd, const char *id)
{
    struct pd_broker *b = id ? find(pd, id) : NULL;
    return b && b->connected ? b : NULL;
}

struct pd_broker *pd_broker_fallback(struct pd *pd)
{
    struct pd_broker *best = NULL;
    for (int i = 0; i < pd->nbrokers; i++) {
        struct pd_broker *b = pd->brokers[i];
        if (b->connected && (!best || strcmp(b->id, best->id) < 0))
            best = b;
    }
    return best;
}

int pd_brokers_connected(struct pd *pd)
{
    int n = 0;
    for (int i = 0; i < pd->nbrokers; i++)
        n += pd->brokers[i]->connected;
    return n;
}

char *pd_brokers_connected_json(struct pd *pd)
{
    json_t *a = json_array();
    for (int i = 0; i < pd->nbrokers; i++)
        if (pd->brokers[i]->connected)
            json_array_append_new(a, json_string(pd->brokers[i]->id));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* A broker in the registry that piniond cannot reach holds devices that
 * get no manifest: say so, naming it, every REPORT_MS. */
static void report_unreachable(struct pd *pd, struct pd_broker *b, long now)
{
    if (b->connected || !b->down_since_ms || now - b->down_since_ms < REPORT_AFTER_MS ||
        (b->reported_ms && now - b->reported_ms < REPORT_MS))
        return;
    b->reported_ms = now;
    struct pn_err err;
    const char *v[] = {b->id};
    PGresult *r = pn_db_q(pd->db, &err,
                          "SELECT count(*), min(identifier) FROM live_device_presence "
                          "WHERE broker_id = $1",
                          1, v);
    long n = r ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    char example[140] = "";
    if (r && n > 0)
        snprintf(example, sizeof(example), ", e.g. %s", PQgetvalue(r, 0, 1));
    PQclear(r);
    pd_log(PD_WARNING "cannot reach broker %s at %s (%s); devices connected there get no "
                      "manifest until piniond can: %ld%s",
           b->id, b->address, b->why[0] ? b->why : "not connected", n, example);
}

void pd_brokers_refresh(struct pd *pd, bool force)
{
    long now = pn_mono_ms();
    if (!force && now - pd->last_registry_ms < REGISTRY_MS)
        return;
    pd->last_registry_ms = now;
    struct pn_err err;
    PGresult *r = pn_db_q(pd->db, &err,
                          "SELECT id, service_address FROM brokers "
                          "WHERE heartbeat_at > now() - interval '10 seconds' ORDER BY id",
                          0, NULL);
    if (!r) {
        pd_log(PD_ERR "reading the broker registry: %s", err.msg);
        return;
    }
    for (int i = 0; i < pd->nbrokers; i++)
        pd->brokers[i]->listed = false;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0), *addr = PQgetvalue(r, i, 1);
        struct pd_broker *b = find(pd, id);
        if (b && strcmp(b->address, addr) != 0) {
            pd_log("broker %s moved from %s to %s", id, b->address, addr);
            for (int k = 0; k < pd->nbrokers; k++)
                if (pd->brokers[k] == b)
                    pd->brokers[k] = pd->brokers[--pd->nbrokers];
            session_free(b);
            b = NULL;
        }
        if (!b) {
            if (pd->nbrokers == PD_BROKERS_MAX) {
                pd_log(PD_WARNING "broker %s ignored: piniond keeps at most %d sessions", id,
                       PD_BROKERS_MAX);
                continue;
            }
            pd_log("broker %s at %s is in the registry; connecting", id, addr);
            if (!(b = session_new(pd, id, addr)))
                continue;
            pd->brokers[pd->nbrokers++] = b;
        }
        b->listed = true;
    }
    PQclear(r);
    for (int i = 0; i < pd->nbrokers;) {
        struct pd_broker *b = pd->brokers[i];
        if (b->listed) {
            report_unreachable(pd, b, now);
            i++;
            continue;
        }
        pd_log("broker %s at %s left the registry (stopped, or no heartbeat for 10 s)", b->id,
               b->address);
        pd->brokers[i] = pd->brokers[--pd->nbrokers];
        session_free(b);
    }
}

void pd_brokers_loop(struct pd *pd, int timeout_ms)
{
    struct pollfd fds[PD_BROKERS_MAX];
    int n = 0;
    for (int i = 0; i < pd->nbrokers; i++) {
        struct pd_broker *b = pd->brokers[i];
        int fd = b->mq ? mosquitto_socket(b->mq) : -1;
        fds[n].fd = fd; /* negative: ignored by poll */
        fds[n].events = (short)(POLLIN | (fd >= 0 && mosquitto_want_write(b->mq) ? POLLOUT : 0));
        fds[n].revents = 0;
        n++;
    }
    if (n == 0)
        usleep((useconds_t)timeout_ms * 1000);
    else
        poll(fds, (nfds_t)n, timeout_ms);
    long now = pn_mono_ms();
    for (int i = 0; i < pd->nbrokers; i++) {
        struct pd_broker *b = pd->brokers[i];
        if (!b->mq) {
            if (b->host[0] && now >= b->next_try_ms)
                try_connect(b);
            continue;
        }
        int rc = mosquitto_socket(b->mq) >= 0 ? mosquitto_loop(b->mq, 0, 1) : MOSQ_ERR_NO_CONN;
        /* libmosquitto does not always report a refused asynchronous
         * connect: an attempt without CONNACK in CONNECT_MS is retried. */
        if (rc == MOSQ_ERR_SUCCESS && (b->connected || now - b->attempt_ms < CONNECT_MS))
            continue;
        if (rc == MOSQ_ERR_SUCCESS)
            snprintf(b->why, sizeof(b->why), "no answer within %d s", CONNECT_MS / 1000);
        if (b->connected)
            on_disconnect(b->mq, b, rc);
        if (!b->down_since_ms)
            b->down_since_ms = now;
        if (now >= b->next_try_ms)
            try_connect(b);
    }
}

void pd_brokers_close(struct pd *pd)
{
    for (int i = 0; i < pd->nbrokers; i++)
        session_free(pd->brokers[i]);
    pd->nbrokers = 0;
}
