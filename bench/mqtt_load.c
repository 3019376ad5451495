/* SPDX-License-Identifier: Apache-2.0 */
/* A load generator for whole brokers: many MQTT-over-TLS clients with
 * their own client certificates in one process (epoll, non-blocking
 * OpenSSL, bounded concurrency), for comparing Mosquitto with and without
 * the plugin (bench/connect_storm.sh, bench/msg_throughput.sh).
 *
 *   mqtt_load certs --ca DIR --out DIR -n N
 *       N device certificates (EC P-256, CN bench-000000...) signed by the
 *       CA of `pinion ca create`, each DIR/<i>.pem holding certificate and
 *       key, plus DIR/svc.pem (CN bench-svc) for a service identity.
 *       Existing files are kept (a cache).
 *   mqtt_load storm --port P --cafile SERVER.pem --certs DIR -n N [-c C]
 *                   [--broker-pid PID] [--pg-pid PID]
 *       N devices connect, C at a time; each stays connected until all
 *       have their CONNACK.  Prints one line: connects, CONNACKs per
 *       second, CONNACK latency (TCP connect to CONNACK) p50/p99/max, and
 *       the CPU time the broker (and PostgreSQL's processes) used per
 *       connect.
 *   mqtt_load pub --port P --cafile SERVER.pem --certs DIR -n N --qos Q
 *                 --dir up|down --msgs M [--svc-id ID] [--broker-pid PID]
 *       N devices and one service (svc.pem, client id ID) connect.  up:
 *       the service subscribes to fleet/+/up/# and the devices publish M
 *       messages in all to their own fleet/<id>/up/data; down: each device
 *       subscribes to its fleet/<id>/down/# and the service publishes M
 *       messages round robin.  At most 500 messages are in transit at a
 *       time (the broker's queues never drop any).  Prints messages per
 *       second received and the broker's CPU time per message.
 *
 * Exit status: 0 when every client was admitted (and every message
 * arrived), 1 otherwise, 2 on usage errors. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "bench.h"
#include "cert.h"

#define ID_PREFIX "bench-"
#define WINDOW 500 /* messages in transit at most (pub) */
#define RBUF 65536

enum cstate { C_IDLE, C_TCP, C_TLS, C_CONNACK, C_SUBACK, C_READY, C_CLOSED };

struct conn {
    int fd;
    SSL *ssl;
    enum cstate st;
    char id[32];
    double t0, lat;
    int connack;        /* -1 until received */
    unsigned short pid; /* last packet id used */
    unsigned char rbuf[RBUF];
    size_t rlen;
    unsigned char *wbuf;
    size_t wlen, wcap;
};

struct opts {
    int port, n, c, qos;
    long msgs;
    const char *cafile, *certs, *ca, *out, *dir, *svc_id;
    int broker_pid, pg_pid;
};

static SSL_CTX *ctx;
static int ep;
static long received, puback, sent, dropped, failed;
static char first_error[256];

static void note_error(const char *what)
{
    unsigned long e = ERR_get_error();
    if (!first_error[0]) {
        if (e)
            snprintf(first_error, sizeof(first_error), "%s: %s", what, ERR_reason_error_string(e));
        else
            snprintf(first_error, sizeof(first_error), "%s", what);
    }
    ERR_clear_error();
}

/* ------------------------------------------------------------ CPU time */

/* utime + stime of one process, in clock ticks (0 if gone). */
static long long proc_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command may contain spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (long long)(ut + st);
}

/* A process and its children (PostgreSQL's backends), in clock ticks.
 * Backends that exited meanwhile are not counted; ours stay. */
static long long tree_ticks(int pid)
{
    long long t = proc_ticks(pid);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int child = atoi(e->d_name);
        if (child <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", child);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        int ppid = 0;
        if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == pid)
            t += proc_ticks(child);
    }
    if (d)
        closedir(d);
    return t;
}

static double ticks_ms(long long t)
{
    return (double)t * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* ---------------------------------------------------------- certificates */

static int make_certs(const struct opts *o)
{
    struct pn_err err;
    X509 *ca = NULL;
    EVP_PKEY *cakey = NULL;
    if (pn_ca_dir_load(o->ca, &ca, &cakey, &err) < 0) {
        fprintf(stderr, "mqtt_load: %s\n", err.msg);
        return 1;
    }
    mkdir(o->out, 0755);
    int made = 0;
    for (int i = -1; i < o->n; i++) {
        char path[4096], cn[64];
        if (i < 0) {
            snprintf(path, sizeof(path), "%s/svc.pem", o->out);
            snprintf(cn, sizeof(cn), ID_PREFIX "svc");
        } else {
            snprintf(path, sizeof(path), "%s/%d.pem", o->out, i);
            snprintf(cn, sizeof(cn), ID_PREFIX "%06d", i);
        }
        if (access(path, R_OK) == 0)
            continue;
        EVP_PKEY *k = pn_key_generate("ec", &err);
        struct pn_cert_spec spec = {PN_CERT_DEVICE, cn, NULL, 3650};
        X509 *x = k ? pn_cert_make(&spec, k, ca, cakey, &err) : NULL;
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
        FILE *f = x ? fopen(tmp, "w") : NULL;
        if (!f || !PEM_write_X509(f, x) || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) ||
            fclose(f) != 0 || rename(tmp, path) < 0) {
            fprintf(stderr, "mqtt_load: cannot make %s: %s\n", path, x ? strerror(errno) : err.msg);
            return 1;
        }
        X509_free(x);
        EVP_PKEY_free(k);
        made++;
    }
    printf("certs: %d made, %d cached in %s\n", made, o->n + 1 - made, o->out);
    X509_free(ca);
    EVP_PKEY_free(cakey);
    return 0;
}

static int load_identity(const char *path, X509 **x, EVP_PKEY **k)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    *x = PEM_read_X509(f, NULL, NULL, NULL);
    *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return *x && *k ? 0 : -1;
}

/* ------------------------------------------------------------ MQTT bytes */

static void wput(struct conn *c, const void *p, size_t n)
{
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap * 2 : 4096;
        while (cap < c->wlen + n)
            cap *= 2;
        c->wbuf = realloc(c->wbuf, cap);
        if (!c->wbuf) {
            perror("mqtt_load");
            exit(1);
        }
        c->wcap = cap;
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

static void wput_remlen(struct conn *c, size_t len)
{
    do {
        unsigned char b = len % 128;
        len /= 128;
        if (len)
            b |= 0x80;
        wput(c, &b, 1);
    } while (len);
}

static void wput_str(struct conn *c, const char *s)
{
    size_t n = strlen(s);
    unsigned char l[2] = {(unsigned char)(n >> 8), (unsigned char)n};
    wput(c, l, 2);
    wput(c, s, n);
}

static unsigned short next_pid(struct conn *c)
{
    if (++c->pid == 0)
        c->pid = 1;
    return c->pid;
}

static void mqtt_connect(struct conn *c)
{
    static const unsigned char vh[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
    unsigned char h = 0x10;
    wput(c, &h, 1);
    wput_remlen(c, sizeof(vh) + 2 + strlen(c->id));
    wput(c, vh, sizeof(vh));
    wput_str(c, c->id);
}

static void mqtt_subscribe(struct conn *c, const char *filter, int qos)
{
    unsigned char h = 0x82, q = (unsigned char)qos;
    unsigned short pid = next_pid(c);
    unsigned char p[2] = {(unsigned char)(pid >> 8), (unsigned char)pid};
    wput(c, &h, 1);
    wput_remlen(c, 2 + 2 + strlen(filter) + 1);
    wput(c, p, 2);
    wput_str(c, filter);
    wput(c, &q, 1);
}

static void mqtt_publish(struct conn *c, const char *topic, int qos)
{
    static const char payload[64] = "0123456789abcdef0123456789abcdef0123456789abcdef012345678";
    unsigned char h = (unsigned char)(0x30 | (qos << 1));
    wput(c, &h, 1);
    wput_remlen(c, 2 + strlen(topic) + (qos ? 2 : 0) + sizeof(payload));
    wput_str(c, topic);
    if (qos) {
        unsigned short pid = next_pid(c);
        unsigned char p[2] = {(unsigned char)(pid >> 8), (unsigned char)pid};
        wput(c, p, 2);
    }
    wput(c, payload, sizeof(payload));
}

/* ------------------------------------------------------------ connection */

static void conn_close(struct conn *c, enum cstate st)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->st != C_READY && c->st != C_CLOSED && c->connack < 0)
        failed++;
    else if (st == C_CLOSED && c->st == C_READY)
        dropped++;
    c->st = st;
}

static int conn_start(struct conn *c, int port, X509 *x, EVP_PKEY *k)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->connack = -1;
    c->t0 = bench_now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (c->fd < 0 || setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        return -1;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS)
        return -1;
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_use_certificate(c->ssl, x) || !SSL_use_PrivateKey(c->ssl, k) ||
        !SSL_set_fd(c->ssl, c->fd) || !SSL_set1_host(c->ssl, "localhost"))
        return -1;
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return -1;
    c->st = C_TCP;
    return 0;
}

static void on_packet(struct conn *c, unsigned char type, const unsigned char *p, size_t n)
{
    switch (type >> 4) {
    case 2: /* CONNACK */
        c->connack = n >= 2 ? p[1] : 255;
        c->lat = bench_now() - c->t0;
        c->st = c->connack == 0 ? C_READY : C_CLOSED;
        break;
    case 9: /* SUBACK */
        if (n < 3 || p[2] >= 0x80) {
            note_error("subscription refused");
            failed++;
        }
        c->st = C_READY;
        break;
    case 4: /* PUBACK */
        puback++;
        break;
    case 3: { /* PUBLISH */
        received++;
        int qos = (type >> 1) & 3;
        if (qos && n >= 2) {
            size_t tl = (size_t)p[0] << 8 | p[1];
            if (2 + tl + 2 <= n) {
                unsigned char ack[4] = {0x40, 2, p[2 + tl], p[3 + tl]};
                wput(c, ack, 4);
            }
        }
        break;
    }
    default:
        break;
    }
}

/* Splits the read buffer into packets. */
static void parse(struct conn *c)
{
    size_t off = 0;
    while (c->rlen - off >= 2) {
        size_t len = 0, i = 1;
        int shift = 0;
        unsigned char b;
        do {
            if (off + i >= c->rlen)
                goto partial;
            b = c->rbuf[off + i++];
            len |= (size_t)(b & 0x7f) << shift;
            shift += 7;
        } while ((b & 0x80) && shift < 28);
        if (off + i + len > c->rlen)
            break;
        on_packet(c, c->rbuf[off], c->rbuf + off + i, len);
        off += i + len;
    }
partial:
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->rlen == RBUF) { /* one packet larger than the buffer: not ours */
        note_error("packet too large");
        conn_close(c, C_CLOSED);
    }
}

/* Moves a connection as far as its socket allows. */
static void drive(struct conn *c, unsigned int events)
{
    if (c->st == C_TCP) {
        /* Connected (or failed) only once the socket says so. */
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int e = 0;
        socklen_t l = sizeof(e);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0 || e) {
            note_error(strerror(e));
            conn_close(c, C_CLOSED);
            return;
        }
        c->st = C_TLS;
    }
    if (c->st == C_TLS) {
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                note_error("TLS handshake");
                conn_close(c, C_CLOSED);
            }
            return;
        }
        mqtt_connect(c);
        c->st = C_CONNACK;
    }
    for (int round = 0; round < 2 && c->ssl; round++) {
        while (c->wlen) {
            int w = SSL_write(c->ssl, c->wbuf, (int)c->wlen);
            if (w <= 0) {
                int e = SSL_get_error(c->ssl, w);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    note_error("write");
                    conn_close(c, C_CLOSED);
                    return;
                }
                break;
            }
            memmove(c->wbuf, c->wbuf + w, c->wlen - (size_t)w);
            c->wlen -= (size_t)w;
        }
        if (round)
            break;
        for (;;) {
            int r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(RBUF - c->rlen));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    break;
                if (c->connack < 0)
                    note_error("connection closed before CONNACK");
                conn_close(c, C_CLOSED);
                return;
            }
            c->rlen += (size_t)r;
            parse(c);
            if (!c->ssl)
                return;
        }
    }
}

static void poll_once(int ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, ms);
    for (int i = 0; i < n; i++)
        drive(evs[i].data.ptr, evs[i].events);
}

/* ------------------------------------------------------------- the runs */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct ident {
    X509 *x;
    EVP_PKEY *k;
};

static struct ident *load_all(const struct opts *o)
{
    struct ident *v = calloc((size_t)o->n + 1, sizeof(*v));
    char path[4096];
    for (int i = 0; v && i <= o->n; i++) {
        if (i == o->n)
            snprintf(path, sizeof(path), "%s/svc.pem", o->certs);
        else
            snprintf(path, sizeof(path), "%s/%d.pem", o->certs, i);
        if (load_identity(path, &v[i].x, &v[i].k) < 0) {
            fprintf(stderr, "mqtt_load: cannot read %s (make it with `mqtt_load certs`)\n", path);
            exit(1);
        }
    }
    return v;
}

static void free_all(struct ident *ids, int nids, struct conn *cs, int n)
{
    for (int i = 0; i < n; i++) {
        conn_close(&cs[i], C_IDLE);
        free(cs[i].wbuf);
    }
    free(cs);
    for (int i = 0; i < nids; i++) {
        X509_free(ids[i].x);
        EVP_PKEY_free(ids[i].k);
    }
    free(ids);
}

/* Connects conns[0..n-1] with at most `conc` handshakes in flight; returns
 * the time taken until the last CONNACK. */
static double connect_all(const struct opts *o, struct conn *cs, struct ident *ids, int n, int conc)
{
    int next = 0, done = 0;
    double t0 = bench_now(), deadline = t0 + 120;
    while (done < n && bench_now() < deadline) {
        int inflight = 0;
        done = 0;
        for (int i = 0; i < next; i++) {
            if (cs[i].st == C_TCP || cs[i].st == C_TLS || cs[i].st == C_CONNACK)
                inflight++;
            else
                done++;
        }
        while (next < n && inflight < conc) {
            if (conn_start(&cs[next], o->port, ids[next].x, ids[next].k) < 0) {
                note_error("cannot start a connection");
                conn_close(&cs[next], C_CLOSED);
            } else {
                inflight++;
            }
            next++;
        }
        if (done < n)
            poll_once(50);
    }
    double last = t0;
    for (int i = 0; i < n; i++)
        if (cs[i].connack >= 0 && cs[i].t0 + cs[i].lat > last)
            last = cs[i].t0 + cs[i].lat;
    return last - t0;
}

static int run_storm(const struct opts *o)
{
    struct ident *ids = load_all(o);
    struct conn *cs = calloc((size_t)o->n, sizeof(*cs));
    for (int i = 0; i < o->n; i++) {
        cs[i].fd = -1;
        snprintf(cs[i].id, sizeof(cs[i].id), ID_PREFIX "%06d", i);
    }
    long long b0 = o->broker_pid ? proc_ticks(o->broker_pid) : 0;
    long long p0 = o->pg_pid ? tree_ticks(o->pg_pid) : 0;
    double secs = connect_all(o, cs, ids, o->n, o->c);
    long long b1 = o->broker_pid ? proc_ticks(o->broker_pid) : 0;
    long long p1 = o->pg_pid ? tree_ticks(o->pg_pid) : 0;
    double *lat = calloc((size_t)o->n, sizeof(*lat));
    int ok = 0, refused = 0;
    for (int i = 0; i < o->n; i++) {
        if (cs[i].connack == 0)
            lat[ok++] = cs[i].lat * 1000;
        else if (cs[i].connack > 0)
            refused++;
    }
    qsort(lat, (size_t)ok, sizeof(*lat), cmp_double);
    printf("storm n=%d conc=%d ok=%d refused=%d failed=%d secs=%.3f rate=%.1f "
           "p50_ms=%.2f p99_ms=%.2f max_ms=%.2f broker_cpu_ms=%.3f pg_cpu_ms=%.3f\n",
           o->n, o->c, ok, refused, o->n - ok - refused, secs, ok / secs, ok ? lat[ok / 2] : 0,
           ok ? lat[(ok * 99) / 100] : 0, ok ? lat[ok - 1] : 0,
           o->broker_pid ? ticks_ms(b1 - b0) / o->n : 0, o->pg_pid ? ticks_ms(p1 - p0) / o->n : 0);
    if (first_error[0])
        fprintf(stderr, "mqtt_load: first error: %s\n", first_error);
    free(lat);
    free_all(ids, o->n + 1, cs, o->n);
    return ok == o->n ? 0 : 1;
}

static void flush_all(struct conn *cs, int n)
{
    for (int i = 0; i < n; i++)
        if (cs[i].wlen && cs[i].ssl)
            drive(&cs[i], 0);
}

static int run_pub(const struct opts *o)
{
    bool up = strcmp(o->dir, "up") == 0;
    struct ident *ids = load_all(o);
    int n = o->n + 1; /* the service is the last one */
    struct conn *cs = calloc((size_t)n, sizeof(*cs));
    for (int i = 0; i < n; i++) {
        cs[i].fd = -1;
        if (i < o->n)
            snprintf(cs[i].id, sizeof(cs[i].id), ID_PREFIX "%06d", i);
        else
            snprintf(cs[i].id, sizeof(cs[i].id), "%s", o->svc_id);
    }
    struct conn *svc = &cs[o->n];
    connect_all(o, cs, ids, n, o->c);
    for (int i = 0; i < n; i++)
        if (cs[i].connack != 0) {
            fprintf(stderr, "mqtt_load: %s was not admitted (%s)\n", cs[i].id,
                    first_error[0] ? first_error : "refused");
            return 1;
        }
    /* Subscriptions. */
    char topic[128];
    if (up) {
        svc->st = C_SUBACK;
        mqtt_subscribe(svc, "fleet/+/up/#", o->qos);
    } else {
        for (int i = 0; i < o->n; i++) {
            snprintf(topic, sizeof(topic), "fleet/%s/down/#", cs[i].id);
            cs[i].st = C_SUBACK;
            mqtt_subscribe(&cs[i], topic, o->qos);
        }
    }
    flush_all(cs, n);
    double deadline = bench_now() + 30;
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < n; i++)
            waiting += cs[i].st == C_SUBACK;
        if (!waiting || bench_now() > deadline)
            break;
        poll_once(50);
    }
    if (failed) {
        fprintf(stderr, "mqtt_load: %s\n", first_error);
        return 1;
    }
    /* Messages: at most WINDOW in transit, so that the broker's queues
     * (max_queued_messages 1000) never drop one. */
    long long b0 = o->broker_pid ? proc_ticks(o->broker_pid) : 0;
    double t0 = bench_now(), last = t0;
    deadline = t0 + 120;
    int rr = 0;
    while (received < o->msgs && bench_now() < deadline) {
        while (sent < o->msgs && sent - received < WINDOW) {
            if (up) {
                struct conn *c = &cs[rr];
                snprintf(topic, sizeof(topic), "fleet/%s/up/data", c->id);
                mqtt_publish(c, topic, o->qos);
            } else {
                snprintf(topic, sizeof(topic), "fleet/%s/down/data", cs[rr].id);
                mqtt_publish(svc, topic, o->qos);
            }
            rr = (rr + 1) % o->n;
            sent++;
        }
        flush_all(cs, n);
        long before = received;
        poll_once(50);
        if (received > before)
            last = bench_now();
    }
    /* QoS 1: the last PUBACKs to the publishers. */
    while (o->qos && puback < sent && bench_now() < deadline)
        poll_once(50);
    long long b1 = o->broker_pid ? proc_ticks(o->broker_pid) : 0;
    double secs = last - t0;
    printf("pub dir=%s qos=%d devices=%d msgs=%ld received=%ld pubacks=%ld secs=%.3f rate=%.0f "
           "broker_cpu_us=%.2f\n",
           o->dir, o->qos, o->n, o->msgs, received, puback, secs, received / secs,
           o->broker_pid ? ticks_ms(b1 - b0) * 1000 / (double)o->msgs : 0);
    bool ok = received == o->msgs && (!o->qos || puback == o->msgs) && !dropped;
    if (!ok)
        fprintf(stderr, "mqtt_load: %ld of %ld messages arrived, %ld connections dropped%s%s\n",
                received, o->msgs, dropped, first_error[0] ? "; " : "", first_error);
    free_all(ids, n, cs, n);
    return ok ? 0 : 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: mqtt_load certs --ca DIR --out DIR -n N\n"
                    "       mqtt_load storm --port P --cafile F --certs DIR -n N [-c C] "
                    "[--broker-pid PID] [--pg-pid PID]\n"
                    "       mqtt_load pub --port P --cafile F --certs DIR -n N --qos 0|1 "
                    "--dir up|down --msgs M [--svc-id ID] [--broker-pid PID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct opts o = {.c = 50, .msgs = 100000, .dir = "up", .svc_id = "piniond"};
    static const struct option lo[] = {
        {"port", 1, NULL, 'p'},       {"cafile", 1, NULL, 'f'}, {"certs", 1, NULL, 'd'},
        {"ca", 1, NULL, 'a'},         {"out", 1, NULL, 'o'},    {"qos", 1, NULL, 'q'},
        {"msgs", 1, NULL, 'm'},       {"dir", 1, NULL, 'D'},    {"svc-id", 1, NULL, 's'},
        {"broker-pid", 1, NULL, 'b'}, {"pg-pid", 1, NULL, 'g'}, {NULL, 0, NULL, 0}};
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "n:c:", lo, NULL)) != -1) {
        switch (ch) {
        case 'n':
            o.n = atoi(optarg);
            break;
        case 'c':
            o.c = atoi(optarg);
            break;
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'f':
            o.cafile = optarg;
            break;
        case 'd':
            o.certs = optarg;
            break;
        case 'a':
            o.ca = optarg;
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'q':
            o.qos = atoi(optarg);
            break;
        case 'm':
            o.msgs = atol(optarg);
            break;
        case 'D':
            o.dir = optarg;
            break;
        case 's':
            o.svc_id = optarg;
            break;
        case 'b':
            o.broker_pid = atoi(optarg);
            break;
        case 'g':
            o.pg_pid = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (o.n <= 0 || o.c <= 0 || o.qos < 0 || o.qos > 1 || o.msgs <= 0)
        usage();
    if (!strcmp(mode, "certs")) {
        if (!o.ca || !o.out)
            usage();
        return make_certs(&o);
    }
    if (!o.port || !o.cafile || !o.certs || (strcmp(mode, "storm") && strcmp(mode, "pub")) ||
        (strcmp(o.dir, "up") && strcmp(o.dir, "down")))
        usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_load_verify_locations(ctx, o.cafile, NULL)) {
        fprintf(stderr, "mqtt_load: cannot read %s\n", o.cafile);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ep = epoll_create1(EPOLL_CLOEXEC);
    int rc = !strcmp(mode, "storm") ? run_storm(&o) : run_pub(&o);
    close(ep);
    SSL_CTX_free(ctx);
    return rc;
}
