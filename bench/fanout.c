/* SPDX-License-Identifier: Apache-2.0 */
/* Release fan-out over several brokers (README "Scaling out", issue 9).
 *
 * Simulates N lightweight devices in one program: one libmosquitto client
 * each, driven by worker processes of PER_WORKER devices (one epoll loop
 * each), each device with its own certificate made
 * here (signed by a registered Device CA) and an SSL_CTX holding just that.
 * Phases, each timed:
 *   1. connect storm through the load balancer: every device connects,
 *      subscribes to <root>/<id>/down/update and reports firmware 1.0.0;
 *      the database's committed transactions during the storm, until every
 *      device's presence row is written, measure what presence costs;
 *   2. fan-out: runs --deploy CMD (creates and starts a deployment), then
 *      waits until every device has received a non-empty manifest;
 *   3. raw (with --raw-port, repeatable): one publisher client per broker,
 *      in this process, publishes a payload of the manifests' size to each
 *      device's topic on the broker the device is on (from device_presence),
 *      QoS 1, and waits until every device has received it.
 * Prints one "fanout: ..." line per figure; exits 1 if any device missed
 * anything within --timeout (a correctness check, also run tiny in CI).
 *
 *   fanout --port P --cafile CA --ca-dir DIR --db CONNINFO --devices N
 *          [--prefix fo-] [--deploy CMD] [--raw-port P --raw-cert C --raw-key K]...
 *          [--parallel 200] [--timeout 300] */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <mosquitto.h>
#include <openssl/ssl.h>

#include "cert.h"
#include "db.h"

#define MAX_RAW 8
/* Devices per worker process.  libmosquitto 2.0's mosquitto_loop() (the
 * only call that carries a non-blocking TLS connect on) uses select() and
 * returns MOSQ_ERR_INVAL for a socket or wake-up socketpair numbered
 * FD_SETSIZE (1024) or above; every client holds three descriptors (its
 * socket and a socketpair from mosquitto_new), so one process can drive
 * about 330 devices at most.  Above that the handshakes never went on,
 * the brokers timed them out and the loop spun on the sockets. */
#define PER_WORKER 250
/* Statuses a second, all workers together.  The broker queues at most
 * max_queued_messages (1,000 by default) for piniond's session; 9,800
 * statuses at once overflowed it ("Outgoing messages are being dropped for
 * client piniond-p1-b1") and the statuses were lost. */
#define STATUS_RATE 500

/* In memory shared by the parent and the workers: each worker writes its
 * own devices' flags, the parent counts them. */
struct dev {
    struct mosquitto *mq; /* the worker's */
    SSL_CTX *ctx;
    char id[64];
    int fd;
    volatile bool connecting, connected, got_manifest, got_raw;
    volatile bool want_status; /* set by the parent: publish a status */
    volatile int retries;
    double retry_at; /* 0: no reconnect pending */
    double out_at;   /* until CONNACK: when to ask for "writable" again */
    volatile size_t manifest_len;
};

/* Phases the parent sets for the workers. */
enum { PH_WAIT, PH_CONNECT, PH_STATUS, PH_RAW, PH_QUIT };
struct ctl {
    volatile int phase;
};

static struct dev *devs;
static struct ctl *ctl;
static int ndev, nconnected, nmanifest, nraw, nretries;
static int lo_dev, hi_dev; /* this worker's devices */
static int ep;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct dev *d = arg;
    if (rc != 0) {
        fprintf(stderr, "fanout: %s refused: %s\n", d->id, mosquitto_connack_string(rc));
        return;
    }
    char topic[128];
    snprintf(topic, sizeof(topic), "fleet/%s/down/update", d->id);
    mosquitto_subscribe(m, NULL, topic, 1);
    d->connected = true;
    d->connecting = false;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct dev *d = arg;
    (void)m;
    if (msg->payloadlen <= 0)
        return;
    if (ctl->phase >= PH_RAW) {
        d->got_raw = true;
    } else if (!d->got_manifest) {
        d->manifest_len = (size_t)msg->payloadlen;
        d->got_manifest = true;
    }
}

/* Re-arms the device's socket for what libmosquitto wants next. */
static void arm(struct dev *d)
{
    int fd = mosquitto_socket(d->mq);
    /* Until CONNACK, writable also means "TCP connected, go on with TLS";
     * but a connected socket is always writable, so it is asked for at most
     * every 5 ms, or the loop spins while the broker answers. */
    bool out = mosquitto_want_write(d->mq) || (!d->connected && now_s() >= d->out_at);
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = d};
    if (fd < 0) {
        d->fd = -1; /* closed: epoll dropped it */
        return;
    }
    /* A closed socket leaves epoll by itself, and its number may come back
     * for the next one: add whatever is not registered. */
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT)
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    d->fd = fd;
}

/* One pass of the event loop, up to ms. */
static void pump(int ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, ms);
    for (int i = 0; i < n; i++) {
        struct dev *d = evs[i].data.ptr;
        /* mosquitto_loop, not loop_read/loop_write: only it carries an
         * asynchronous connect on to the TLS handshake.  Timeout 0. */
        /* A connection closed before CONNACK (e.g. a broker busy) is tried
         * again a second later, from misc_all: at once would turn a busy
         * broker into a storm of aborted handshakes. */
        if (mosquitto_loop(d->mq, 0, 10) != MOSQ_ERR_SUCCESS && !d->connected &&
            mosquitto_socket(d->mq) < 0 && !d->retry_at)
            d->retry_at = now_s() + 1;
        if (!d->connected)
            d->out_at = now_s() + 0.005;
        arm(d);
    }
}

static void misc_all(void)
{
    double now = now_s();
    for (int i = lo_dev; i < hi_dev; i++) {
        struct dev *d = &devs[i];
        if (d->retry_at && now >= d->retry_at) {
            d->retry_at = 0;
            d->retries++;
            mosquitto_reconnect_async(d->mq);
            arm(d);
        }
    }
    for (int i = lo_dev; i < hi_dev; i++)
        if (devs[i].fd >= 0) {
            mosquitto_loop_misc(devs[i].mq);
            arm(&devs[i]);
        }
}

static SSL_CTX *device_ctx(const char *cafile, X509 *cert, EVP_PKEY *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1 ||
        SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

static long long commits(PGconn *db)
{
    PGresult *r = PQexec(db, "SELECT xact_commit FROM pg_stat_database "
                             "WHERE datname = current_database()");
    long long n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

static int presence_rows(PGconn *db, const char *prefix)
{
    const char *v[] = {prefix};
    PGresult *r = PQexecParams(db,
                               "SELECT count(*) FROM device_presence WHERE "
                               "starts_with(identifier, $1)",
                               1, NULL, v, NULL, NULL, 0);
    int n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return n;
}

/* The parent's view of the workers' devices. */
static void recount(void)
{
    int c = 0, m = 0, r = 0, t = 0;
    for (int i = 0; i < ndev; i++) {
        c += devs[i].connected;
        m += devs[i].got_manifest;
        r += devs[i].got_raw;
        t += devs[i].retries;
    }
    nconnected = c, nmanifest = m, nraw = r, nretries = t;
}

/* Waits until *count reaches target or the deadline; returns the time. */
static double wait_for(int *count, int target, double deadline)
{
    recount();
    while (*count < target && now_s() < deadline) {
        usleep(5000);
        recount();
    }
    return now_s();
}

static const char *status_json = "{\"firmware\":{\"uuid\":\"factory\",\"version\":\"1.0.0\","
                                 "\"product\":\"sensor\",\"platform\":\"rpi4\",\"architecture\":"
                                 "\"aarch64\"},\"state\":\"idle\",\"progress\":0}";

/* A worker: devices [lo, hi), at most `parallel` handshakes at a time,
 * driven by its own epoll loop until the parent says PH_QUIT. */
static int worker(int lo, int hi, int port, int parallel, double status_rate)
{
    lo_dev = lo, hi_dev = hi;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return 1;
    for (int i = lo; i < hi; i++) {
        struct dev *d = &devs[i];
        d->mq = mosquitto_new(d->id, true, d);
        if (!d->mq) {
            fprintf(stderr, "fanout: cannot make device %s\n", d->id);
            return 1;
        }
        /* Ours as it is: libmosquitto's defaults would want a cafile. */
        mosquitto_int_option(d->mq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
        mosquitto_void_option(d->mq, MOSQ_OPT_SSL_CTX, d->ctx);
        mosquitto_connect_callback_set(d->mq, on_connect);
        mosquitto_message_callback_set(d->mq, on_message);
    }
    int next = lo;
    double last_misc = now_s(), status_credit = 0, last_status = now_s();
    while (ctl->phase != PH_QUIT) {
        if (ctl->phase == PH_WAIT) {
            usleep(10000);
            continue;
        }
        int pending = 0;
        for (int i = lo; i < next; i++)
            pending += devs[i].connecting;
        for (; next < hi && pending < parallel; next++, pending++) {
            devs[next].connecting = true;
            int crc = mosquitto_connect_async(devs[next].mq, "127.0.0.1", port, 300);
            if (crc != MOSQ_ERR_SUCCESS)
                fprintf(stderr, "fanout: %s: connect: %s\n", devs[next].id,
                        mosquitto_strerror(crc));
            arm(&devs[next]);
        }
        /* Statuses after the storm, so that the storm's figure is presence
         * alone (piniond records each status in a transaction). */
        if (ctl->phase >= PH_STATUS) {
            status_credit += (now_s() - last_status) * status_rate;
            status_credit = status_credit > 20 ? 20 : status_credit;
            last_status = now_s();
            for (int i = lo; i < hi && status_credit >= 1; i++) {
                if (!devs[i].want_status)
                    continue;
                devs[i].want_status = false;
                status_credit--;
                char topic[128];
                snprintf(topic, sizeof(topic), "fleet/%s/up/status", devs[i].id);
                mosquitto_publish(devs[i].mq, NULL, topic, (int)strlen(status_json), status_json, 1,
                                  false);
                arm(&devs[i]);
            }
        }
        for (int i = lo; i < next; i++)
            if (devs[i].connecting && devs[i].fd >= 0 && now_s() >= devs[i].out_at)
                arm(&devs[i]);
        pump(next > lo && pending ? 5 : 20);
        if (now_s() - last_misc > 1) {
            misc_all();
            last_misc = now_s();
        }
    }
    for (int i = lo; i < hi; i++) {
        mosquitto_disconnect(devs[i].mq);
        mosquitto_loop_write(devs[i].mq, 1);
        mosquitto_destroy(devs[i].mq);
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: fanout --port P --cafile CA --ca-dir DIR --db CONNINFO --devices N\n"
                    "  [--prefix fo-] [--deploy CMD] [--raw-port P --raw-cert C --raw-key K]...\n"
                    "  [--parallel 200] [--timeout 300]\n");
}

int main(int argc, char **argv)
{
    const char *cafile = NULL, *ca_dir = NULL, *conninfo = NULL, *prefix = "fo-", *deploy = NULL;
    const char *raw_cert = NULL, *raw_key = NULL;
    int port = 0, parallel = 200, nraw_ports = 0, raw_ports[MAX_RAW];
    double timeout = 300;
    static const struct option lo[] = {{"port", 1, 0, 'p'},
                                       {"cafile", 1, 0, 'a'},
                                       {"ca-dir", 1, 0, 'c'},
                                       {"db", 1, 0, 'd'},
                                       {"devices", 1, 0, 'n'},
                                       {"prefix", 1, 0, 'x'},
                                       {"deploy", 1, 0, 'D'},
                                       {"raw-port", 1, 0, 'r'},
                                       {"raw-cert", 1, 0, 'C'},
                                       {"raw-key", 1, 0, 'K'},
                                       {"parallel", 1, 0, 'P'},
                                       {"timeout", 1, 0, 't'},
                                       {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'a':
            cafile = optarg;
            break;
        case 'c':
            ca_dir = optarg;
            break;
        case 'd':
            conninfo = optarg;
            break;
        case 'n':
            ndev = atoi(optarg);
            break;
        case 'x':
            prefix = optarg;
            break;
        case 'D':
            deploy = optarg;
            break;
        case 'r':
            if (nraw_ports < MAX_RAW)
                raw_ports[nraw_ports++] = atoi(optarg);
            break;
        case 'C':
            raw_cert = optarg;
            break;
        case 'K':
            raw_key = optarg;
            break;
        case 'P':
            parallel = atoi(optarg);
            break;
        case 't':
            timeout = atof(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!port || !cafile || !ca_dir || !conninfo || ndev <= 0 || parallel <= 0 ||
        (nraw_ports && (!raw_cert || !raw_key))) {
        usage();
        return 2;
    }
    struct pn_err err;
    X509 *ca;
    EVP_PKEY *cakey;
    if (pn_ca_dir_load(ca_dir, &ca, &cakey, &err) < 0) {
        fprintf(stderr, "fanout: %s\n", err.msg);
        return 1;
    }
    PGconn *db = PQconnectdb(conninfo);
    if (PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "fanout: database: %s", PQerrorMessage(db));
        return 1;
    }
    mosquitto_lib_init();
    devs = mmap(NULL, (size_t)ndev * sizeof(*devs), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (devs == MAP_FAILED || ctl == MAP_FAILED)
        return 1;

    double t0 = now_s();
    for (int i = 0; i < ndev; i++) {
        struct dev *d = &devs[i];
        snprintf(d->id, sizeof(d->id), "%s%d", prefix, i);
        d->fd = -1;
        EVP_PKEY *key = pn_key_generate("ec", &err);
        struct pn_cert_spec spec = {PN_CERT_DEVICE, d->id, NULL, 30};
        X509 *x = key ? pn_cert_make(&spec, key, ca, cakey, &err) : NULL;
        d->ctx = x ? device_ctx(cafile, x, key) : NULL;
        X509_free(x);
        EVP_PKEY_free(key);
        if (!d->ctx) {
            fprintf(stderr, "fanout: cannot make device %s\n", d->id);
            return 1;
        }
    }
    printf("fanout: %d device certificates made in %.1f s\n", ndev, now_s() - t0);
    fflush(stdout);
    fflush(stderr);
    int nworkers = (ndev + PER_WORKER - 1) / PER_WORKER;
    int wpar = parallel / nworkers > 0 ? parallel / nworkers : 1;
    pid_t *pids = calloc((size_t)nworkers, sizeof(*pids));
    for (int w = 0; w < nworkers; w++) {
        int first = w * PER_WORKER, last = first + PER_WORKER < ndev ? first + PER_WORKER : ndev;
        pids[w] = fork();
        if (pids[w] == 0) {
            close(PQsocket(db)); /* the parent's session: no Terminate from here */
            _exit(worker(first, last, port, wpar, (double)STATUS_RATE / nworkers));
        }
        if (pids[w] < 0) {
            perror("fanout: fork");
            ctl->phase = PH_QUIT;
            return 1;
        }
    }
    printf("fanout: %d worker processes (%d devices each at most, %d handshakes at a time each)\n",
           nworkers, PER_WORKER, wpar);

    /* The database's transactions with no device around (piniond's ticks,
     * the brokers' heartbeats), over 3 s, to set the storm's figure off. */
    long long b0 = commits(db);
    usleep(3000000);
    long long b1 = commits(db);
    printf("fanout: idle: %.0f transactions/s in the database before the storm\n", (b1 - b0) / 3.0);

    /* 1. Connect storm, at most `parallel` handshakes at a time. */
    long long c0 = commits(db);
    double deadline = now_s() + timeout;
    t0 = now_s();
    ctl->phase = PH_CONNECT;
    while (nconnected < ndev && now_s() < deadline) {
        wait_for(&nconnected, ndev, now_s() + 1);
        fprintf(stderr, "fanout: %.0f s: %d connected, %d retried\n", now_s() - t0, nconnected,
                nretries);
    }
    double t_conn = now_s() - t0;
    while (presence_rows(db, prefix) < ndev && now_s() < deadline)
        wait_for(&nconnected, ndev + 1, now_s() + 0.1); /* keeps the sessions served */
    double t_pres = now_s() - t0;
    /* Backends publish their counters about once a second: wait for them. */
    wait_for(&nconnected, ndev + 1, now_s() + 1.5);
    long long c1 = commits(db);
    printf("fanout: connect storm: %d/%d connected in %.2f s (%.0f/s, %d attempts retried)\n",
           nconnected, ndev, t_conn, nconnected / t_conn, nretries);
    printf("fanout: presence: %d rows after %.2f s; %lld transactions committed in the database "
           "(all clients, until 1.5 s later), %.0f/s over the storm\n",
           presence_rows(db, prefix), t_pres, c1 - c0, (c1 - c0) / t_pres);
    int rc = nconnected == ndev && presence_rows(db, prefix) == ndev ? 0 : 1;

    /* 2. Fan-out of a release by piniond. */
    if (deploy) {
        for (int i = 0; i < ndev; i++)
            devs[i].want_status = true;
        ctl->phase = PH_STATUS; /* the workers publish their devices' statuses, paced */
        /* Every device's status (firmware 1.0.0) recorded first. */
        char like[80];
        snprintf(like, sizeof(like), "%s%%", prefix);
        const char *v[] = {like};
        double last_resend = now_s();
        for (;;) {
            /* A status the broker dropped is asked for again. */
            if (now_s() - last_resend > (double)ndev / STATUS_RATE + 5) {
                PGresult *q = PQexecParams(db,
                                           "SELECT d.identifier FROM device_presence d "
                                           "LEFT JOIN devices v ON v.identifier = d.identifier "
                                           "AND v.firmware_version = '1.0.0' "
                                           "WHERE d.identifier LIKE $1 AND v.identifier IS NULL",
                                           1, NULL, v, NULL, NULL, 0);
                int nq = PQresultStatus(q) == PGRES_TUPLES_OK ? PQntuples(q) : 0;
                for (int k = 0; k < nq; k++) {
                    int i = atoi(PQgetvalue(q, k, 0) + strlen(prefix));
                    if (i >= 0 && i < ndev)
                        devs[i].want_status = true;
                }
                if (nq)
                    fprintf(stderr, "fanout: %d statuses not recorded: sent again\n", nq);
                PQclear(q);
                last_resend = now_s();
            }
            PGresult *r = PQexecParams(db,
                                       "SELECT count(*) FROM devices WHERE identifier LIKE $1 "
                                       "AND firmware_version = '1.0.0'",
                                       1, NULL, v, NULL, NULL, 0);
            int n = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
            PQclear(r);
            if (n >= ndev || now_s() > deadline)
                break;
            wait_for(&nconnected, ndev + 1, now_s() + 0.2);
        }
        t0 = now_s();
        if (system(deploy) != 0) {
            fprintf(stderr, "fanout: --deploy command failed\n");
            return 1;
        }
        double t_first = 0;
        while (nmanifest < ndev && now_s() < t0 + timeout) {
            wait_for(&nmanifest, nmanifest + 1, t0 + timeout);
            if (nmanifest > 0 && !t_first)
                t_first = now_s();
        }
        double t_all = now_s() - t0;
        size_t len = 0;
        for (int i = 0; i < ndev; i++)
            len = devs[i].manifest_len > len ? devs[i].manifest_len : len;
        printf("fanout: release: %d/%d devices received their manifest %.2f s after the "
               "deployment started (first after %.2f s); %.0f manifests/s signed and delivered "
               "(first to last); manifest %zu bytes\n",
               nmanifest, ndev, t_all, t_first - t0, nmanifest / (now_s() - t_first + 1e-9), len);
        if (nmanifest != ndev)
            rc = 1;

        /* 3. The same payloads from one process, one client per broker. */
        if (nraw_ports) {
            struct mosquitto *pub[MAX_RAW];
            PGresult *r =
                PQexecParams(db,
                             "SELECT p.identifier, b.service_address FROM device_presence "
                             "p JOIN brokers b ON b.id = p.broker_id "
                             "WHERE p.identifier LIKE $1",
                             1, NULL, v, NULL, NULL, 0);
            char *payload = malloc(len ? len : 1);
            memset(payload, 'x', len ? len : 1);
            for (int k = 0; k < nraw_ports; k++) {
                char cid[64];
                snprintf(cid, sizeof(cid), "piniond-raw-%d", k);
                pub[k] = mosquitto_new(cid, true, NULL);
                if (mosquitto_tls_set(pub[k], cafile, NULL, raw_cert, raw_key, NULL) ||
                    mosquitto_connect(pub[k], "127.0.0.1", raw_ports[k], 300)) {
                    fprintf(stderr, "fanout: raw publisher cannot connect to %d\n", raw_ports[k]);
                    return 1;
                }
                mosquitto_loop_start(pub[k]);
            }
            ctl->phase = PH_RAW;
            t0 = now_s();
            for (int i = 0; r && i < PQntuples(r); i++) {
                const char *addr = PQgetvalue(r, i, 1), *colon = strrchr(addr, ':');
                int p = colon ? atoi(colon + 1) : 0, k = 0;
                while (k < nraw_ports && raw_ports[k] != p)
                    k++;
                if (k == nraw_ports)
                    continue;
                char topic[128];
                snprintf(topic, sizeof(topic), "fleet/%s/down/update", PQgetvalue(r, i, 0));
                mosquitto_publish(pub[k], NULL, topic, (int)len, payload, 1, false);
            }
            double t_pubd = now_s() - t0;
            wait_for(&nraw, ndev, t0 + timeout);
            double t_raw = now_s() - t0;
            printf("fanout: raw: %d/%d devices received a %zu-byte message from one process "
                   "(one client per broker) %.2f s after the first publish (%.0f/s; publishing "
                   "took %.2f s)\n",
                   nraw, ndev, len, t_raw, nraw / t_raw, t_pubd);
            if (nraw != ndev)
                rc = 1;
            for (int k = 0; k < nraw_ports; k++) {
                mosquitto_disconnect(pub[k]);
                mosquitto_loop_stop(pub[k], false);
                mosquitto_destroy(pub[k]);
            }
            PQclear(r);
            free(payload);
        }
    }
    ctl->phase = PH_QUIT;
    for (int w = 0; w < nworkers; w++)
        waitpid(pids[w], NULL, 0);
    free(pids);
    for (int i = 0; i < ndev; i++)
        SSL_CTX_free(devs[i].ctx);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    PQfinish(db);
    mosquitto_lib_cleanup();
    return rc;
}
