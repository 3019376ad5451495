/* SPDX-License-Identifier: Apache-2.0 */
/* pn-probe: a scripted MQTT client for the integration tests.  It connects
 * with a client certificate, subscribes, publishes, then listens, printing
 * one line per thing a device would observe:
 *
 *   connack RC              (0 accepted, 5 not authorised; v5 reason codes with --v5)
 *   suback FILTER QOS       (QOS >= 128 means refused)
 *   puback TOPIC RC         (QoS 1 publishes; v5 gives the reason code)
 *   msg TOPIC PAYLOAD       (payload printed as text)
 *   disconnected RC MS      (the broker closed the connection, after MS ms)
 *   done                    (the --stay time ran out, or --expect N messages came)
 *
 * Exit status: 0 when connected (whatever happened later), 5 when the
 * CONNECT was refused, 1 on other errors, 3 when the connection closed
 * before CONNACK (e.g. TLS handshake refused). */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#define MAX_ITEMS 32

struct probe {
    const char *subs[MAX_ITEMS];
    int nsubs;
    const char *pub_topic[MAX_ITEMS], *pub_payload[MAX_ITEMS];
    int npubs, qos, expect, got;
    bool retain;
    int sub_mids[MAX_ITEMS], pub_mids[MAX_ITEMS];
    int connack; /* -1 until CONNACK */
    bool closed, leaving;
    int pending; /* subacks + pubacks still awaited */
    struct timespec t0;
};

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags,
                       const mosquitto_property *props)
{
    struct probe *p = arg;
    (void)flags;
    (void)props;
    p->connack = rc;
    printf("connack %d\n", rc);
    fflush(stdout);
    if (rc != 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &p->t0);
    for (int i = 0; i < p->nsubs; i++) {
        mosquitto_subscribe_v5(m, &p->sub_mids[i], p->subs[i], p->qos, 0, NULL);
        p->pending++;
    }
    for (int i = 0; i < p->npubs; i++) {
        mosquitto_publish_v5(m, &p->pub_mids[i], p->pub_topic[i], (int)strlen(p->pub_payload[i]),
                             p->pub_payload[i], p->qos, p->retain, NULL);
        if (p->qos > 0)
            p->pending++;
    }
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    struct probe *p = arg;
    (void)m;
    (void)props;
    for (int i = 0; i < p->nsubs; i++)
        if (p->sub_mids[i] == mid)
            printf("suback %s %d\n", p->subs[i], n > 0 ? granted[0] : -1);
    p->pending--;
    fflush(stdout);
}

static void on_publish(struct mosquitto *m, void *arg, int mid, int rc,
                       const mosquitto_property *props)
{
    struct probe *p = arg;
    (void)m;
    (void)props;
    for (int i = 0; i < p->npubs; i++)
        if (p->pub_mids[i] == mid && p->qos > 0) {
            printf("puback %s %d\n", p->pub_topic[i], rc);
            p->pending--;
        }
    fflush(stdout);
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    struct probe *p = arg;
    (void)m;
    (void)props;
    printf("msg %s %.*s\n", msg->topic, msg->payloadlen, (const char *)msg->payload);
    fflush(stdout);
    p->got++;
}

static void on_disconnect(struct mosquitto *m, void *arg, int rc, const mosquitto_property *props)
{
    struct probe *p = arg;
    (void)m;
    (void)props;
    if (p->connack == 0 && !p->leaving)
        printf("disconnected %d %ld\n", rc, ms_since(&p->t0));
    p->closed = true;
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: pn-probe --port P --cafile F --cert F --key F --id ID [--host H]\n"
                    "       [--sub FILTER]... [--pub TOPIC=PAYLOAD]... [--qos N] [--retain]\n"
                    "       [--stay SECONDS] [--expect N] [--v5] [--clean 0|1]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    struct probe p = {.connack = -1};
    const char *host = "127.0.0.1", *cafile = NULL, *cert = NULL, *key = NULL, *id = NULL;
    int port = 0, v5 = 0, clean = 1;
    double stay = 0;
    static struct option lo[] = {{"host", 1, 0, 'h'},   {"port", 1, 0, 'p'},  {"cafile", 1, 0, 'a'},
                                 {"cert", 1, 0, 'c'},   {"key", 1, 0, 'k'},   {"id", 1, 0, 'i'},
                                 {"sub", 1, 0, 's'},    {"pub", 1, 0, 'P'},   {"qos", 1, 0, 'q'},
                                 {"retain", 0, 0, 'r'}, {"stay", 1, 0, 'w'},  {"expect", 1, 0, 'e'},
                                 {"v5", 0, 0, '5'},     {"clean", 1, 0, 'C'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'a':
            cafile = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 's':
            if (p.nsubs < MAX_ITEMS)
                p.subs[p.nsubs++] = optarg;
            break;
        case 'P': {
            char *eq = strchr(optarg, '=');
            if (!eq || p.npubs >= MAX_ITEMS)
                usage();
            *eq = '\0';
            p.pub_topic[p.npubs] = optarg;
            p.pub_payload[p.npubs++] = eq + 1;
            break;
        }
        case 'q':
            p.qos = atoi(optarg);
            break;
        case 'r':
            p.retain = true;
            break;
        case 'w':
            stay = atof(optarg);
            break;
        case 'e':
            p.expect = atoi(optarg);
            break;
        case '5':
            v5 = 1;
            break;
        case 'C':
            clean = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (!port || !cafile)
        usage();
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(id, clean, &p);
    if (!m)
        return 1;
    if (v5)
        mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    if (mosquitto_tls_set(m, cafile, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "pn-probe: cannot use the TLS files\n");
        return 1;
    }
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_subscribe_v5_callback_set(m, on_subscribe);
    mosquitto_publish_v5_callback_set(m, on_publish);
    mosquitto_message_v5_callback_set(m, on_message);
    mosquitto_disconnect_v5_callback_set(m, on_disconnect);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (mosquitto_connect_bind_v5(m, host, port, 30, NULL, NULL) != MOSQ_ERR_SUCCESS) {
        printf("connect-failed\n");
        return 3;
    }
    /* Wait for CONNACK (10 s), then for acks, then --stay / --expect. */
    while (!p.closed) {
        int rc = mosquitto_loop(m, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS && !p.closed) {
            if (p.connack == 0)
                printf("disconnected %d %ld\n", rc, ms_since(&p.t0));
            p.closed = true;
            break;
        }
        if (p.connack == -1) {
            if (ms_since(&start) > 10000)
                break;
            continue;
        }
        if (p.connack != 0)
            break;
        if (p.pending > 0 && ms_since(&p.t0) < 5000)
            continue;
        if (p.expect > 0 && p.got >= p.expect) {
            printf("done\n");
            break;
        }
        if (ms_since(&p.t0) >= (long)(stay * 1000)) {
            printf("done\n");
            break;
        }
    }
    p.leaving = true;
    if (!p.closed)
        mosquitto_disconnect(m);
    fflush(stdout);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    if (p.connack == -1)
        return 3;
    return p.connack == 0 ? 0 : 5;
}
