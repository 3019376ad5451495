/* SPDX-License-Identifier: Apache-2.0 */
/* pn-rtt: measures how long a request takes to be answered over MQTT, as
 * a device would see it.  It connects with a client certificate,
 * subscribes to the answer topic, then --count times publishes the request
 * and waits (up to --timeout ms) for the next message on the answer topic,
 * --interval ms apart.  Then it publishes each --then TOPIC=PAYLOAD at
 * QoS 1 and waits for its PUBACK.  Output, one line each:
 *
 *   rtt MS        (milliseconds, one decimal, from publish to answer)
 *   timeout MS    (no answer within --timeout)
 *   puback TOPIC
 *
 * Exit status: 0 when connected and done, 1 on errors, 5 when refused. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

#define MAX_THEN 8

struct rtt {
    const char *resp;
    int connack, subscribed, answers, acked;
};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static void on_connect(struct mosquitto *m, void *arg, int rc)
{
    struct rtt *r = arg;
    r->connack = rc;
    if (rc == 0)
        mosquitto_subscribe(m, NULL, r->resp, 1);
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *granted)
{
    struct rtt *r = arg;
    (void)m;
    (void)mid;
    r->subscribed = n > 0 && granted[0] < 128 ? 1 : -1;
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    struct rtt *r = arg;
    (void)m;
    if (strcmp(msg->topic, r->resp) == 0)
        r->answers++;
}

static void on_publish(struct mosquitto *m, void *arg, int mid)
{
    struct rtt *r = arg;
    (void)m;
    (void)mid;
    r->acked++;
}

/* Runs the network loop until *flag differs from `from` or ms pass. */
static bool wait_change(struct mosquitto *m, const int *flag, int from, double ms)
{
    double end = now_ms() + ms;
    while (*flag == from && now_ms() < end)
        if (mosquitto_loop(m, 5, 1) != MOSQ_ERR_SUCCESS)
            return false;
    return *flag != from;
}

static void usage(void)
{
    fprintf(stderr, "usage: pn-rtt --port P --cafile F --cert F --key F --id ID --sub TOPIC\n"
                    "       --req TOPIC=PAYLOAD [--count N] [--interval MS] [--timeout MS]\n"
                    "       [--qos N] [--then TOPIC=PAYLOAD]...\n");
    exit(1);
}

int main(int argc, char **argv)
{
    struct rtt r = {.connack = -1};
    const char *cafile = NULL, *cert = NULL, *key = NULL, *id = NULL, *req = NULL;
    char *then[MAX_THEN];
    int nthen = 0, port = 0, count = 1, qos = 1;
    double interval = 100, timeout = 5000;
    static struct option lo[] = {{"port", 1, 0, 'p'},
                                 {"cafile", 1, 0, 'a'},
                                 {"cert", 1, 0, 'c'},
                                 {"key", 1, 0, 'k'},
                                 {"id", 1, 0, 'i'},
                                 {"sub", 1, 0, 's'},
                                 {"req", 1, 0, 'r'},
                                 {"count", 1, 0, 'n'},
                                 {"interval", 1, 0, 'w'},
                                 {"timeout", 1, 0, 't'},
                                 {"qos", 1, 0, 'q'},
                                 {"then", 1, 0, 'T'},
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
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 's':
            r.resp = optarg;
            break;
        case 'r':
            req = optarg;
            break;
        case 'n':
            count = atoi(optarg);
            break;
        case 'w':
            interval = atof(optarg);
            break;
        case 't':
            timeout = atof(optarg);
            break;
        case 'q':
            qos = atoi(optarg);
            break;
        case 'T':
            if (nthen == MAX_THEN)
                usage();
            then[nthen++] = optarg;
            break;
        default:
            usage();
        }
    }
    char *eq = req ? strchr(req, '=') : NULL;
    if (!port || !cafile || !r.resp || !eq)
        usage();
    *eq = '\0';
    const char *req_payload = eq + 1;

    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(id, true, &r);
    if (!m || mosquitto_tls_set(m, cafile, NULL, cert, key, NULL) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "pn-rtt: cannot use the TLS files\n");
        return 1;
    }
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_subscribe_callback_set(m, on_subscribe);
    mosquitto_message_callback_set(m, on_message);
    mosquitto_publish_callback_set(m, on_publish);
    if (mosquitto_connect(m, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "pn-rtt: cannot connect\n");
        return 1;
    }
    if (!wait_change(m, &r.connack, -1, 10000) || r.connack != 0) {
        printf("connack %d\n", r.connack);
        return r.connack > 0 ? 5 : 1;
    }
    if (!wait_change(m, &r.subscribed, 0, 10000) || r.subscribed < 0) {
        fprintf(stderr, "pn-rtt: subscription to %s refused\n", r.resp);
        return 1;
    }
    for (int i = 0; i < count; i++) {
        int before = r.answers;
        double t0 = now_ms();
        mosquitto_publish(m, NULL, req, (int)strlen(req_payload), req_payload, qos, false);
        if (wait_change(m, &r.answers, before, timeout))
            printf("rtt %.1f\n", now_ms() - t0);
        else
            printf("timeout %.0f\n", now_ms() - t0);
        fflush(stdout);
        double next = now_ms() + interval;
        while (i + 1 < count && now_ms() < next)
            mosquitto_loop(m, 5, 1);
    }
    for (int i = 0; i < nthen; i++) {
        char *teq = strchr(then[i], '=');
        if (!teq)
            usage();
        *teq = '\0';
        int before = r.acked;
        mosquitto_publish(m, NULL, then[i], (int)strlen(teq + 1), teq + 1, 1, false);
        if (wait_change(m, &r.acked, before, timeout))
            printf("puback %s\n", then[i]);
    }
    mosquitto_disconnect(m);
    mosquitto_loop(m, 100, 1);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return 0;
}
