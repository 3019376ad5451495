/* SPDX-License-Identifier: Apache-2.0 */
/* GET /metrics in the Prometheus text format (version 0.0.4). */
#include "metrics.h"

#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "db.h"
#include "fsutil.h"
#include "ident.h"
#include "piniond.h" /* PD_INFLIGHT */

#define BROKERS_MAX 16

struct broker_state {
    char name[300];
    bool connected;
};

struct pd_metrics {
    atomic_ullong c[PD_M_COUNT];
    pthread_mutex_t mu; /* brokers */
    struct broker_state brokers[BROKERS_MAX];
    int nbrokers;
    struct MHD_Daemon *httpd;
    char *database;
    PGconn *db; /* the listener thread's own connection */
};

struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->failed)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A label value: backslash, double quote and newline escaped. */
static void put_label(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(b, "\\%c", *s);
        else if (*s == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *s);
    }
}

static void counter(struct buf *b, const char *name, const char *help, unsigned long long v)
{
    put(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, v);
}

/* Per-deployment gauges, read now.  Deployments that never released
 * anything have no rows and show only their state. */
static void put_deployments(struct pd_metrics *m, struct buf *b)
{
    struct pn_err err;
    if (m->db && PQstatus(m->db) != CONNECTION_OK) {
        PQfinish(m->db);
        m->db = NULL;
    }
    if (!m->db)
        m->db = pn_db_connect_app(m->database, "piniond-metrics", 5, &err);
    PGresult *r = m->db ? pn_db_q(m->db, &err,
                                  "SELECT o.name, dp.name, dp.state, coalesce(("
                                  "SELECT jsonb_object_agg(state, n) FROM (SELECT u.state, "
                                  "count(*) AS n FROM device_updates u WHERE u.deployment_id = "
                                  "dp.id GROUP BY u.state) s), '{}')::text, "
                                  "(SELECT count(*) FROM device_updates u WHERE u.deployment_id = "
                                  "dp.id AND u.state IN " PD_INFLIGHT ") "
                                  "FROM deployments dp JOIN orgs o ON o.id = dp.org_id "
                                  "ORDER BY o.name, dp.name",
                                  0, NULL)
                        : NULL;
    put(b,
        "# HELP piniond_metrics_database_up Whether the metrics listener could read the "
        "deployments.\n# TYPE piniond_metrics_database_up gauge\n"
        "piniond_metrics_database_up %d\n",
        r != NULL);
    if (!r) {
        atomic_fetch_add(&m->c[PD_M_DB_ERRORS], 1);
        return;
    }
    put(b, "# HELP piniond_deployment_running Whether a deployment is running (1) or not "
           "(0, created or paused).\n# TYPE piniond_deployment_running gauge\n");
    for (int i = 0; i < PQntuples(r); i++) {
        put(b, "piniond_deployment_running{org=\"");
        put_label(b, PQgetvalue(r, i, 0));
        put(b, "\",deployment=\"");
        put_label(b, PQgetvalue(r, i, 1));
        put(b, "\"} %d\n", strcmp(PQgetvalue(r, i, 2), "running") == 0);
    }
    put(b, "# HELP piniond_deployment_inflight Devices with an update of the deployment in "
           "flight.\n# TYPE piniond_deployment_inflight gauge\n");
    json_t **states = calloc((size_t)PQntuples(r) + 1, sizeof(*states));
    for (int i = 0; states && i < PQntuples(r); i++) {
        states[i] = json_loads(PQgetvalue(r, i, 3), 0, NULL);
        long long n = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        put(b, "piniond_deployment_inflight{org=\"");
        put_label(b, PQgetvalue(r, i, 0));
        put(b, "\",deployment=\"");
        put_label(b, PQgetvalue(r, i, 1));
        put(b, "\"} %lld\n", n);
    }
    put(b, "# HELP piniond_deployment_devices Devices of the deployment in each update state.\n"
           "# TYPE piniond_deployment_devices gauge\n");
    for (int i = 0; states && i < PQntuples(r); i++) {
        const char *k;
        json_t *v;
        json_object_foreach(states[i], k, v)
        {
            put(b, "piniond_deployment_devices{org=\"");
            put_label(b, PQgetvalue(r, i, 0));
            put(b, "\",deployment=\"");
            put_label(b, PQgetvalue(r, i, 1));
            put(b, "\",state=\"");
            put_label(b, k);
            put(b, "\"} %lld\n", (long long)json_integer_value(v));
        }
        json_decref(states[i]);
    }
    free(states);
    PQclear(r);
}

static struct buf render(struct pd_metrics *m)
{
    struct buf b = {0};
    unsigned long long c[PD_M_COUNT];
    for (int i = 0; i < PD_M_COUNT; i++)
        c[i] = atomic_load(&m->c[i]);
    counter(&b, "piniond_releases_total", "Manifests issued to devices by deployments.",
            c[PD_M_RELEASES]);
    counter(&b, "piniond_completions_total", "Updates devices reported complete.",
            c[PD_M_COMPLETIONS]);
    counter(&b, "piniond_failures_total", "Failed update attempts devices reported.",
            c[PD_M_FAILURES]);
    counter(&b, "piniond_penalties_total", "Devices held back after max_attempts failed attempts.",
            c[PD_M_PENALTIES]);
    counter(&b, "piniond_release_checks_total", "Release checks that verified a stored artifact.",
            c[PD_M_CHECKS]);
    counter(&b, "piniond_release_checks_failed_total",
            "Release checks that found a stored artifact unusable.", c[PD_M_CHECKS_FAILED]);
    put(&b,
        "# HELP piniond_release_check_seconds_total Time spent in release checks.\n"
        "# TYPE piniond_release_check_seconds_total counter\n"
        "piniond_release_check_seconds_total %.6f\n",
        (double)c[PD_M_CHECK_US] / 1e6);
    counter(&b, "piniond_chunk_bytes_total", "Firmware bytes served in chunks.",
            c[PD_M_CHUNK_BYTES]);
    counter(&b, "piniond_database_errors_total", "Failed database operations and lost connections.",
            c[PD_M_DB_ERRORS]);
    put(&b, "# HELP piniond_broker_connected Whether the MQTT connection to the broker is up.\n"
            "# TYPE piniond_broker_connected gauge\n");
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->nbrokers; i++) {
        put(&b, "piniond_broker_connected{broker=\"");
        put_label(&b, m->brokers[i].name);
        put(&b, "\"} %d\n", m->brokers[i].connected);
    }
    pthread_mutex_unlock(&m->mu);
    put_deployments(m, &b);
    return b;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct pd_metrics *m = cls;
    (void)version;
    (void)upload;
    (void)con_cls;
    struct MHD_Response *resp;
    unsigned int status = MHD_HTTP_OK;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET\n";
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: metrics are at /metrics\n";
        status = MHD_HTTP_NOT_FOUND;
        resp =
            MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
    } else {
        if (*upload_size)
            return MHD_NO;
        struct buf b = render(m);
        if (b.failed) {
            free(b.p);
            return MHD_NO;
        }
        resp = MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(b.p);
        else
            MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
    }
    if (!resp)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

struct pd_metrics *pd_metrics_start(const char *listen, const char *database, struct pn_err *err)
{
    char host[256], port[8];
    int p;
    if (pn_addr_split(listen, host, sizeof(host), &p) < 0)
        return pn_err_set(err, "metrics_listen '%s' is not HOST:PORT", listen), NULL;
    snprintf(port, sizeof(port), "%d", p);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai)
        return pn_err_set(err, "metrics_listen '%s': %s", listen, gai_strerror(gai)), NULL;
    struct pd_metrics *m = calloc(1, sizeof(*m));
    if (!m || !(m->database = strdup(database))) {
        freeaddrinfo(ai);
        free(m);
        return pn_err_set(err, "out of memory"), NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    m->httpd = MHD_start_daemon(flags, 0, NULL, NULL, answer, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!m->httpd) {
        pn_err_set(err, "metrics_listen '%s': cannot listen (address in use or not local?)",
                   listen);
        pd_metrics_stop(m);
        return NULL;
    }
    return m;
}

void pd_metrics_stop(struct pd_metrics *m)
{
    if (!m)
        return;
    if (m->httpd)
        MHD_stop_daemon(m->httpd); /* joins its thread: m->db is ours again */
    if (m->db)
        PQfinish(m->db);
    pthread_mutex_destroy(&m->mu);
    free(m->database);
    free(m);
}

void pd_metrics_add(struct pd_metrics *m, enum pd_counter c, unsigned long n)
{
    if (m && c < PD_M_COUNT)
        atomic_fetch_add(&m->c[c], n);
}

void pd_metrics_check_done(struct pd_metrics *m, long long since_us, bool ok)
{
    if (!m)
        return;
    long long d = pn_mono_us() - since_us;
    atomic_fetch_add(&m->c[PD_M_CHECKS], 1);
    atomic_fetch_add(&m->c[PD_M_CHECK_US], (unsigned long long)(d > 0 ? d : 0));
    if (!ok)
        atomic_fetch_add(&m->c[PD_M_CHECKS_FAILED], 1);
}

void pd_metrics_broker(struct pd_metrics *m, const char *name, bool connected)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->nbrokers && strcmp(m->brokers[i].name, name) != 0)
        i++;
    if (i == m->nbrokers && i < BROKERS_MAX) {
        snprintf(m->brokers[i].name, sizeof(m->brokers[i].name), "%s", name);
        m->nbrokers++;
    }
    if (i < m->nbrokers)
        m->brokers[i].connected = connected;
    pthread_mutex_unlock(&m->mu);
}
