/* SPDX-License-Identifier: Apache-2.0 */
/* pinion_plugin.so: entry points, options and callback registration.  The
 * decisions live in admit.c and acl.c, the database in worker.c (a worker
 * thread, sync.h), the trust directory in trust.c.  Every callback here runs on
 * the broker's single thread and touches memory only. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 2.1 moved the broker and plugin API into <mosquitto.h>; its
 * mosquitto_broker.h and mosquitto_plugin.h only #warning and include it.
 * 2.0's <mosquitto.h> is the client library alone. */
#include <mosquitto.h>
#if LIBMOSQUITTO_MAJOR == 2 && LIBMOSQUITTO_MINOR == 0
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#endif
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "cert.h"
#include "denylog.h"
#include "handshake.h"
#include "err.h"
#include "fsutil.h"
#include "ident.h"
#include "metrics.h"
#include "ops.h"
#include "policy.h"
#include "presence.h"
#include "sync.h"
#include "version.h"

_Static_assert(PN_ACL_READ == MOSQ_ACL_READ && PN_ACL_WRITE == MOSQ_ACL_WRITE &&
                   PN_ACL_SUBSCRIBE == MOSQ_ACL_SUBSCRIBE &&
                   PN_ACL_UNSUBSCRIBE == MOSQ_ACL_UNSUBSCRIBE,
               "ACL access values differ from Mosquitto's");

struct plugin {
    mosquitto_plugin_id_t *pid;
    struct pn_policy policy;
    char topic_root[256];
    char broker_id[PN_BROKER_ID_MAX + 1], service_address[300];
    struct pn_sync_config cfg;
    struct pn_state *state;
    struct pn_sync *sync;
    bool reloading; /* between MOSQ_EVT_RELOAD and the next TICK */
    int deny_log_s; /* plugin_opt_deny_log_interval; 0: no lines for denials */
    struct pn_denylog *denylog;
    time_t denylog_swept;
    X509_VERIFY_PARAM *verify_params;         /* ours, owned by OpenSSL's table */
    bool watching;                            /* pn_handshake_watch() succeeded */
    bool broker21;                            /* the broker has 2.1's plugin API */
    struct waker *waker;                      /* NULL unless broker21 */
    bool loaded;                              /* the state came from the database once */
    void (*complete_auth)(const char *, int); /* 2.1's mosquitto_complete_basic_auth */
    struct waiting *waiting;                  /* CONNECTs held until the first load */
    const void *completing;    /* the waiting client being answered (answer_waiting) */
    bool completed;            /* ... and the broker did connect it (on_connect) */
    struct pn_metrics metrics; /* $SYS/broker/pinion/... (metrics.c) */
};

/* 2.1: a CONNECT that arrives before the plugin ever loaded its state (the
 * database was down when the broker started) waits up to WAIT_LOAD_S for
 * the load instead of being refused.  The answer comes from a TICK through
 * mosquitto_complete_basic_auth(), which takes only the client id: the
 * client itself may be gone by then (2.1 frees a waiting client that
 * disconnects without telling plugins), so everything the decision needs
 * is copied here, and its username is set before it waits. */
#define WAIT_LOAD_S 20
#define PN_STR_(x) #x
#define PN_STR(x) PN_STR_(x)
#define PN_ERR_AUTH_DELAYED (-5) /* MOSQ_ERR_AUTH_DELAYED, which 2.0 lacks */
#if !(LIBMOSQUITTO_MAJOR == 2 && LIBMOSQUITTO_MINOR == 0)
_Static_assert(PN_ERR_AUTH_DELAYED == MOSQ_ERR_AUTH_DELAYED, "MOSQ_ERR_AUTH_DELAYED changed");
#endif
/* 2.1's MOSQ_EVT_CONNECT and its event data, which 2.0's headers lack. */
#define PN_EVT_CONNECT 11
struct pn_evt_connect {
    void *future;
    struct mosquitto *client;
};
#if !(LIBMOSQUITTO_MAJOR == 2 && LIBMOSQUITTO_MINOR == 0)
_Static_assert(PN_EVT_CONNECT == MOSQ_EVT_CONNECT, "MOSQ_EVT_CONNECT changed");
_Static_assert(offsetof(struct pn_evt_connect, client) ==
                   offsetof(struct mosquitto_evt_connect, client),
               "struct mosquitto_evt_connect changed");
#endif
struct waiting {
    struct waiting *next;
    char *client_id;
    const void *client; /* presence's session key, never dereferenced */
    X509 *cert;
    time_t until;
};

#define OPT_PREFIX "pinion: plugin_opt_"

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") || !strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "off"))
        *out = false;
    else
        return -1;
    return 0;
}

static bool broker_id_valid(const char *v)
{
    size_t n = strlen(v);
    return n >= 1 && n <= PN_BROKER_ID_MAX &&
           strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "abcdefghijklmnopqrstuvwxyz"
                     "0123456789._-") == n;
}

/* host:port, as piniond will dial it ([v6]:port too). */
static bool address_valid(const char *v)
{
    /* No blanks or '/': the brokers table's CHECK refuses them too. */
    char host[256];
    int port;
    return !strpbrk(v, " \t/") && pn_addr_split(v, host, sizeof(host), &port) == 0;
}

/* Defaults: the host's name as broker_id and <hostname>:8883 as
 * service_address, right for one broker per host on the usual port. */
static void default_broker(struct plugin *p)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !broker_id_valid(host))
        snprintf(host, sizeof(host), "localhost");
    snprintf(p->broker_id, sizeof(p->broker_id), "%.64s", host);
    snprintf(p->service_address, sizeof(p->service_address), "%s:8883", host);
}

static int parse_options(struct plugin *p, struct mosquitto_opt *opts, int n)
{
    default_broker(p);
    p->cfg.resync_s = 300;
    p->deny_log_s = 10;
    p->metrics.interval_s = 10; /* Mosquitto's default sys_interval */
    snprintf(p->topic_root, sizeof(p->topic_root), "fleet");
    p->policy.identity = PN_IDENTITY_CN;
    p->policy.rotation = PN_ROTATE_SAME_KEY;
    for (int i = 0; i < n; i++) {
        const char *k = opts[i].key, *v = opts[i].value ? opts[i].value : "";
        if (!strcmp(k, "database")) {
            p->cfg.conninfo = v;
        } else if (!strcmp(k, "trust_dir")) {
            p->cfg.trust_dir = v;
        } else if (!strcmp(k, "topic_root")) {
            if (!pn_topic_root_valid(v)) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "topic_root '%s' is invalid (levels "
                                                "of A-Z a-z 0-9 . _ -, no wildcards)",
                                     v);
                return -1;
            }
            snprintf(p->topic_root, sizeof(p->topic_root), "%s", v);
        } else if (!strcmp(k, "broker_id")) {
            if (!broker_id_valid(v)) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "broker_id '%s' is invalid (1 to 64 "
                                                "of A-Z a-z 0-9 . _ -)",
                                     v);
                return -1;
            }
            snprintf(p->broker_id, sizeof(p->broker_id), "%s", v);
        } else if (!strcmp(k, "service_address")) {
            if (!address_valid(v)) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "service_address '%s' is not "
                                                "host:port",
                                     v);
                return -1;
            }
            snprintf(p->service_address, sizeof(p->service_address), "%s", v);
        } else if (!strcmp(k, "identity")) {
            if (!strcmp(v, "cn"))
                p->policy.identity = PN_IDENTITY_CN;
            else if (!strcmp(v, "client_id"))
                p->policy.identity = PN_IDENTITY_CLIENT_ID;
            else {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "identity must be cn or client_id, "
                                                "not '%s'",
                                     v);
                return -1;
            }
        } else if (!strcmp(k, "rotation")) {
            if (!strcmp(v, "same_key"))
                p->policy.rotation = PN_ROTATE_SAME_KEY;
            else if (!strcmp(v, "any"))
                p->policy.rotation = PN_ROTATE_ANY;
            else if (!strcmp(v, "none"))
                p->policy.rotation = PN_ROTATE_NONE;
            else {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "rotation must be same_key, any or "
                                                "none, not '%s'",
                                     v);
                return -1;
            }
        } else if (!strcmp(k, "allow_expired_pinned")) {
            if (parse_bool(v, &p->policy.allow_expired_pinned) < 0) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "allow_expired_pinned must be true "
                                                "or false, not '%s'",
                                     v);
                return -1;
            }
        } else if (!strcmp(k, "resync_interval")) {
            char *end;
            long s = strtol(v, &end, 10);
            if (*end || s < 5 || s > 86400) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "resync_interval must be 5 to 86400 "
                                                "seconds, not '%s'",
                                     v);
                return -1;
            }
            p->cfg.resync_s = (int)s;
        } else if (!strcmp(k, "deny_log_interval")) {
            char *end;
            long s = strtol(v, &end, 10);
            if (!*v || *end || s < 0 || s > 3600) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "deny_log_interval must be 0 to "
                                                "3600 seconds, not '%s'",
                                     v);
                return -1;
            }
            p->deny_log_s = (int)s;
        } else if (!strcmp(k, "sys_interval")) {
            /* The plugin API does not expose the broker's sys_interval. */
            char *end;
            long s = strtol(v, &end, 10);
            if (!*v || *end || s < 0 || s > 86400) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     OPT_PREFIX "sys_interval must be 0 to 86400 "
                                                "seconds, not '%s'",
                                     v);
                return -1;
            }
            p->metrics.interval_s = (int)s;
        } else {
            mosquitto_log_printf(MOSQ_LOG_ERR, "pinion: unknown option plugin_opt_%s", k);
            return -1;
        }
    }
    if (!p->cfg.conninfo || !*p->cfg.conninfo) {
        mosquitto_log_printf(MOSQ_LOG_ERR, OPT_PREFIX "database is required (a libpq conninfo)");
        return -1;
    }
    if (!p->cfg.trust_dir || !*p->cfg.trust_dir) {
        mosquitto_log_printf(MOSQ_LOG_ERR, OPT_PREFIX "trust_dir is required (the listener's "
                                                      "capath)");
        return -1;
    }
    struct stat st;
    errno = 0; /* a stale errno would otherwise explain a non-directory */
    if (stat(p->cfg.trust_dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
        access(p->cfg.trust_dir, W_OK | X_OK) < 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, OPT_PREFIX "trust_dir %s: %s", p->cfg.trust_dir,
                             errno ? strerror(errno) : "not a writable directory");
        return -1;
    }
    p->cfg.topic_root = p->topic_root;
    p->cfg.broker_id = p->broker_id;
    p->cfg.service_address = p->service_address;
    p->policy.topic_root = p->topic_root;
    p->cfg.rotation = p->policy.rotation;
    return 0;
}

/* Mosquitto verifies client chains with OpenSSL's "ssl_client" parameters.
 * Registering our own set of that name lets a registered intermediate CA
 * be a trust anchor (PARTIAL_CHAIN) and hands every date check to the
 * plugin (NO_CHECK_TIME), so that a pinned device whose Device CA expired
 * still connects.  Only client-certificate verification in this process
 * is affected. */
static int install_verify_params(struct plugin *p)
{
    X509_VERIFY_PARAM *vp = X509_VERIFY_PARAM_new();
    if (!vp || !X509_VERIFY_PARAM_set1_name(vp, "ssl_client") ||
        !X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_CLIENT) ||
        !X509_VERIFY_PARAM_set_trust(vp, X509_TRUST_SSL_CLIENT) ||
        !X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_NO_CHECK_TIME) ||
        !X509_VERIFY_PARAM_add0_table(vp)) {
        X509_VERIFY_PARAM_free(vp);
        return -1;
    }
    p->verify_params = vp;
    return 0;
}

/* X509_VERIFY_PARAM_free() never frees a parameter set's name (OpenSSL's
 * built-in sets use literals), so the copy set1_name made would leak: drop
 * it through set1_name itself, while the set is still ours and in the
 * table, just before the table goes. */
static void remove_verify_params(X509_VERIFY_PARAM *vp)
{
    if (vp && X509_VERIFY_PARAM_lookup("ssl_client") == vp)
        X509_VERIFY_PARAM_set1_name(vp, NULL);
    X509_VERIFY_PARAM_table_cleanup();
}

/* --------------------------------------------------------------- waker */

/* Mosquitto 2.0, and 2.1 built with websockets (its default), wake their
 * loop at least every 100 ms, so TICK runs that often.  2.1 built without
 * websockets sleeps in epoll_wait until its next scheduled event, and a
 * TICK skipped because its requested interval has not passed schedules
 * nothing: the worker's kicks, pin results and events then wait for the
 * next network event (seconds on a quiet broker).  No broker function may
 * be called from another thread, so the waker, a thread of ours, sends the
 * main thread a signal with a no-op handler whenever no TICK has run for
 * WAKE_STALE_MS: epoll_wait returns EINTR, the loop runs and TICK fires.
 * (SA_RESTART restarts the main thread's other system calls.)  On brokers
 * that tick every 100 ms it sends none unless the main thread stalls (0 in
 * bench/revoke_latency.sh on 2.1.2 with websockets; about 2 a second
 * without). */
#define WAKE_CHECK_MS 50
#define WAKE_STALE_MS 150

struct waker {
    pthread_t thread, main_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    int signo;
    struct sigaction old_action;
    atomic_llong last_tick_ms;
    atomic_ulong signals; /* sent, for the log at cleanup */
};

static void wake_handler(int signo)
{
    (void)signo; /* interrupting epoll_wait is all it is for */
}

static void *waker_main(void *arg)
{
    struct waker *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += WAKE_CHECK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cv, &w->mu, &until);
        if (!w->stop && pn_mono_ms() - atomic_load(&w->last_tick_ms) > WAKE_STALE_MS) {
            pthread_kill(w->main_thread, w->signo);
            atomic_fetch_add(&w->signals, 1);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Called from mosquitto_plugin_init, on the broker's main thread.  A
 * signal someone else already handles is left alone (no waker). */
static struct waker *waker_start(void)
{
    struct waker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->signo = SIGRTMIN + 6; /* Mosquitto itself uses SIGRTMIN (log rotation) */
    w->main_thread = pthread_self();
    atomic_init(&w->last_tick_ms, pn_mono_ms());
    atomic_init(&w->signals, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wake_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    bool ok = sigaction(w->signo, NULL, &w->old_action) == 0 &&
              w->old_action.sa_handler == SIG_DFL && !(w->old_action.sa_flags & SA_SIGINFO) &&
              pthread_mutex_init(&w->mu, NULL) == 0;
    if (ok && pthread_cond_init(&w->cv, &ca) != 0) {
        pthread_mutex_destroy(&w->mu);
        ok = false;
    }
    pthread_condattr_destroy(&ca);
    if (!ok) {
        free(w);
        return NULL;
    }
    if (sigaction(w->signo, &sa, NULL) != 0 ||
        pthread_create(&w->thread, NULL, waker_main, w) != 0) {
        sigaction(w->signo, &w->old_action, NULL);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

/* After the join no signal can be pending for the main thread (this one):
 * any sent was delivered when it returned from the join's system calls, so
 * restoring the default action cannot kill the broker. */
static void waker_stop(struct waker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    sigaction(w->signo, &w->old_action, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ------------------------------------------------------------ callbacks */

static void fill_pin_req(struct pn_pin_req *r, const struct pn_admission *a, X509 *cert)
{
    snprintf(r->cert_id, sizeof(r->cert_id), "%s", a->cert_id);
    snprintf(r->ca_id, sizeof(r->ca_id), "%s", a->ca->id);
    snprintf(r->identifier, sizeof(r->identifier), "%s", a->identifier);
    r->org_id = a->ca->org_id;
    r->product_id = a->ca->jitp_product_id;
    pn_cert_serial(cert, r->serial);
    pn_cert_ski(cert, r->ski);
    pn_cert_aki(cert, r->aki);
    pn_cert_spki_sha256(cert, r->spki);
    pn_time_iso(pn_cert_not_before(cert), r->not_before);
    pn_time_iso(pn_cert_not_after(cert), r->not_after);
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der);
    if (n > 0) {
        r->der = malloc((size_t)n);
        if (r->der) {
            memcpy(r->der, der, (size_t)n);
            r->derlen = n;
        }
    }
    OPENSSL_free(der);
}

/* First connect of a certificate: pin it in memory now (so the next
 * connect is decided by the pin) and let the worker make it durable. */
static int pin_new(struct plugin *p, const struct pn_admission *a, X509 *cert)
{
    struct pn_device *d = a->dev;
    struct pn_pin_req *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    fill_pin_req(r, a, cert);
    if (!d) {
        r->jitp_tags = strdup(a->ca->jitp_tags);
        d = pn_state_add_pending_device(p->state, a->identifier, a->ca->org_id,
                                        a->ca->jitp_product_id);
    }
    struct pn_pin *pin =
        d ? pn_state_put_pin(p->state, a->cert_bin, d, a->spki, a->not_after, PN_ACTIVE) : NULL;
    if (!pin || !r->der || (!a->dev && !r->jitp_tags)) {
        pn_pin_req_free(r);
        return -1;
    }
    pin->pending = true;
    pn_sync_pin(p->sync, r);
    return 0;
}

/* Holds a CONNECT until the first load (see struct waiting).  Only a
 * device can wait: its username is its client id, which the decision must
 * then confirm; a service's username depends on the state not loaded yet. */
static bool wait_for_load(struct plugin *p, struct mosquitto *client, const char *cid, X509 *cert)
{
    if (!pn_ident_valid(cid) || mosquitto_set_username(client, cid) != MOSQ_ERR_SUCCESS)
        return false;
    struct waiting *w;
    for (w = p->waiting; w; w = w->next)
        if (!strcmp(w->client_id, cid))
            break; /* its earlier connection went away: the broker allows one */
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w || !(w->client_id = strdup(cid))) {
            free(w);
            return false;
        }
        w->next = p->waiting;
        p->waiting = w;
    }
    X509_free(w->cert);
    w->cert = cert;
    w->client = client;
    w->until = time(NULL) + WAIT_LOAD_S;
    return true;
}

static bool admit_waiting(struct plugin *p, struct waiting *w, time_t now)
{
    struct pn_admission a;
    if (!p->loaded) {
        if (pn_cert_id(w->cert, a.cert_id) < 0)
            snprintf(a.cert_id, sizeof(a.cert_id), "-");
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "pinion: refused certificate %s identifier %s: database unavailable "
                             "for %d s since the broker started",
                             a.cert_id, w->client_id, WAIT_LOAD_S);
        return false;
    }
    pn_admit_decide(p->state, &p->policy, w->cert, NULL, w->client_id, pn_sync_ready(p->sync), now,
                    &a);
    if ((a.kind == PN_ADMIT_PINNED || a.kind == PN_ADMIT_NEW) &&
        strcmp(a.identifier, w->client_id) != 0) {
        a.kind = PN_REFUSE;
        a.refusal = PN_REFUSED_CLIENT_ID;
        snprintf(a.reason, sizeof(a.reason),
                 "identifier differs from the client id set while "
                 "waiting for the database");
    } else if (a.kind == PN_ADMIT_SERVICE) {
        a.kind = PN_REFUSE;
        a.refusal = PN_REFUSED_DATABASE;
        snprintf(a.reason, sizeof(a.reason),
                 "a service that connected before the first load "
                 "must reconnect");
    }
    if (a.kind == PN_ADMIT_PINNED) {
        pn_sync_seen(p->sync, a.identifier, a.cert_id);
    } else if (a.kind == PN_ADMIT_NEW && pin_new(p, &a, w->cert) < 0) {
        a.kind = PN_REFUSE;
        a.refusal = PN_REFUSED_INTERNAL;
        snprintf(a.reason, sizeof(a.reason), "out of memory while pinning");
    }
    pn_metrics_admission(&p->metrics, &a);
    if (a.kind == PN_REFUSE)
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "pinion: refused certificate %s identifier %s: %s",
                             a.cert_id, a.identifier, a.reason);
    return a.kind != PN_REFUSE;
}

/* From TICK: answers the waiting CONNECTs once the state is loaded, or when
 * their time is up. */
static void answer_waiting(struct plugin *p)
{
    time_t now = time(NULL);
    struct waiting **pp = &p->waiting;
    while (*pp) {
        struct waiting *w = *pp;
        if (!p->loaded && now < w->until) {
            pp = &w->next;
            continue;
        }
        *pp = w->next; /* unlinked before the broker runs anything for it */
        bool ok = admit_waiting(p, w, now);
        /* As on_basic_auth does, piniond must find the device on this
         * broker, but only if the broker connects it: 2.1 tells plugins
         * nothing of a waiting client that left (its context is dropped
         * without MOSQ_EVT_DISCONNECT), and a presence recorded for it
         * would never be cleared.  The broker connects it inside
         * complete_auth, where MOSQ_EVT_CONNECT (on_connect) says so. */
        p->completing = w->client;
        p->completed = false;
        p->complete_auth(w->client_id, ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH);
        p->completing = NULL;
        if (ok && p->completed)
            pn_sync_connected(p->sync, w->client_id, w->client);
        X509_free(w->cert);
        free(w->client_id);
        free(w);
    }
}

static void free_waiting(struct plugin *p)
{
    while (p->waiting) {
        struct waiting *w = p->waiting;
        p->waiting = w->next;
        X509_free(w->cert);
        free(w->client_id);
        free(w);
    }
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
    struct plugin *p = userdata;
    struct mosquitto_evt_basic_auth *ed = event_data;
    struct pn_admission a;
    (void)event;

    X509 *cert = mosquitto_client_certificate(ed->client);
    const char *cid = mosquitto_client_id(ed->client);
    /* At SIGHUP Mosquitto re-authenticates every session, offline durable
     * ones too, without a certificate: those keep theirs while the identity
     * they were given is still admissible.  A certificate-less CONNECT at
     * any other time is refused.  "reloading" lasts until the next TICK,
     * and 2.1 reads the network before it (its TICK waits its turn; 2.0
     * serves websockets first): a new CONNECT there, on a listener that
     * asks no certificate, would claim any identity by its username.  A
     * new connection has no subscriptions before it is authorised; the
     * sessions worth keeping have them (without any, an offline session
     * holds no messages, and the device loses nothing by reconnecting). */
    if (!cert && p->reloading && mosquitto_client_sub_count(ed->client) > 0 &&
        pn_admit_reload_keeps(p->state, cid, mosquitto_client_username(ed->client)))
        return MOSQ_ERR_SUCCESS;
    if (!p->loaded && cert && cid && p->complete_auth && wait_for_load(p, ed->client, cid, cert))
        return PN_ERR_AUTH_DELAYED; /* wait_for_load keeps cert */

    X509 *tls_issuer = pn_handshake_issuer(cert);
    pn_admit_decide(p->state, &p->policy, cert, tls_issuer, cid, pn_sync_ready(p->sync), time(NULL),
                    &a);
    X509_free(tls_issuer);
    int rc = MOSQ_ERR_SUCCESS;
    char user[256];
    switch (a.kind) {
    case PN_REFUSE:
        break;
    case PN_ADMIT_SERVICE:
        snprintf(user, sizeof(user), "%s%s", PN_SERVICE_USER_PREFIX, a.identifier);
        break;
    case PN_ADMIT_PINNED:
        snprintf(user, sizeof(user), "%s", a.identifier);
        pn_sync_seen(p->sync, a.identifier, a.cert_id);
        pn_sync_connected(p->sync, a.identifier, ed->client);
        break;
    case PN_ADMIT_NEW:
        snprintf(user, sizeof(user), "%s", a.identifier);
        if (pin_new(p, &a, cert) < 0) {
            a.kind = PN_REFUSE;
            a.refusal = PN_REFUSED_INTERNAL;
            snprintf(a.reason, sizeof(a.reason), "out of memory while pinning");
        } else {
            pn_sync_connected(p->sync, a.identifier, ed->client);
        }
        break;
    }
    pn_metrics_admission(&p->metrics, &a);
    if (a.kind == PN_REFUSE) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "pinion: refused certificate %s identifier %s: %s",
                             a.cert_id, a.identifier, a.reason);
        rc = MOSQ_ERR_AUTH;
    } else if (mosquitto_set_username(ed->client, user) != MOSQ_ERR_SUCCESS) {
        rc = MOSQ_ERR_AUTH;
    }
    X509_free(cert);
    return rc;
}

/* A denied publish or subscription, at NOTICE (Mosquitto logs its own only
 * at debug level): the first of a client in deny_log_interval seconds in
 * full, the rest counted (pn_denylog).  Denied deliveries (READ) are not
 * the client's doing and are not logged. */
static void log_denial(struct plugin *p, struct mosquitto *client, const char *topic, int access)
{
    if (!p->denylog || (access != MOSQ_ACL_WRITE && access != MOSQ_ACL_SUBSCRIBE))
        return;
    const char *cid = mosquitto_client_id(client);
    char what[232];
    /* A flood of denials is counted at the cost of this line and a map
     * lookup; the rest is formatted only for the lines that are logged. */
    snprintf(what, sizeof(what), "%s '%.200s'",
             access == MOSQ_ACL_WRITE ? "publish to" : "subscription to", topic ? topic : "");
    if (!pn_denylog_hit(p->denylog, cid ? cid : "", what, time(NULL)))
        return;
    const char *user = mosquitto_client_username(client), *addr = mosquitto_client_address(client);
    char id[129], who[200];
    /* The client chose these bytes: no control characters in the log. */
    snprintf(id, sizeof(id), "%s", cid ? cid : "");
    snprintf(who, sizeof(who), "%.128s", user ? user : "-");
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         "pinion: denied %s for client '%s' (user '%s', address %s); "
                         "further denials of this client are counted for %d s",
                         pn_printable(what), pn_printable(id), pn_printable(who), addr ? addr : "-",
                         p->deny_log_s);
}

static void report_denials(void *arg, const char *client_id, unsigned long count,
                           const char *last_what)
{
    struct plugin *p = arg;
    char id[129], what[232];
    /* Stored as the client sent them (log_denial). */
    snprintf(id, sizeof(id), "%s", client_id ? client_id : "");
    snprintf(what, sizeof(what), "%s", last_what);
    if (client_id)
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "pinion: denied %lu more publishes/subscriptions for client '%s' in "
                             "the last %d s (last: %s)",
                             count, pn_printable(id), p->deny_log_s, pn_printable(what));
    else
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "pinion: denied %lu more publishes/subscriptions of other clients "
                             "(too many clients denied at once to name them)",
                             count);
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    struct plugin *p = userdata;
    struct mosquitto_evt_acl_check *ed = event_data;
    (void)event;
    if (pn_acl_allows(p->state, p->topic_root, mosquitto_client_username(ed->client),
                      mosquitto_client_id(ed->client), ed->topic, ed->access))
        return MOSQ_ERR_SUCCESS;
    log_denial(p, ed->client, ed->topic, ed->access);
    return MOSQ_ERR_ACL_DENIED;
}

static void kick(void *arg, const char *name, int is_username)
{
    ((struct plugin *)arg)->metrics.v[PN_M_KICKS]++;
    /* Mosquitto does not say whether anyone was connected under that name. */
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "pinion: access revoked for %s (disconnected if online)",
                         name);
    if (is_username)
        mosquitto_kick_client_by_username(name, false);
    else
        mosquitto_kick_client_by_clientid(name, false);
}

/* On 2.1 a TICK callback asks for its next call in next_ms, and the loop
 * then waits at most that long, unless it wakes earlier and skips the TICK
 * as not yet due (then only the waker helps).  Measured on 2.1.2 without
 * websockets, with the waker (bench/revoke_latency.sh, median of kicks):
 * no request 126 ms, 100 ms 44 ms, 50 ms 17 ms; the request alone, without
 * the waker, changed nothing (3.8-4 s).  2.0 names the field next_ns, at
 * the same place, and ignores it. */
#define TICK_REQUEST_MS 50
#if LIBMOSQUITTO_MAJOR == 2 && LIBMOSQUITTO_MINOR == 0
#define TICK_NEXT_MS next_ns
#else
#define TICK_NEXT_MS next_ms
#endif

/* Retained, as Mosquitto publishes its own $SYS values. */
static void publish_sys(void *arg, const char *topic, const char *value)
{
    (void)arg;
    mosquitto_broker_publish_copy(NULL, topic, (int)strlen(value), value, 0, true, NULL);
}

static const int log_levels[] = {MOSQ_LOG_INFO, MOSQ_LOG_NOTICE, MOSQ_LOG_WARNING, MOSQ_LOG_ERR};

/* TICK (about ten times a second): the only place where what the worker
 * learned reaches the state and the broker. */
static int on_tick(int event, void *event_data, void *userdata)
{
    struct plugin *p = userdata;
    (void)event;
    p->reloading = false;
    if (p->waker)
        atomic_store(&p->waker->last_tick_ms, pn_mono_ms());
    if (p->broker21)
        ((struct mosquitto_evt_tick *)event_data)->TICK_NEXT_MS = TICK_REQUEST_MS;
    time_t now = time(NULL);
    pn_handshake_expire(now);
    if (p->denylog && now != p->denylog_swept) {
        p->denylog_swept = now;
        pn_denylog_sweep(p->denylog, now, report_denials, p);
    }
    struct pn_op *op = pn_sync_take(p->sync);
    while (op) {
        struct pn_op *next = op->next;
        switch (op->kind) {
        case PN_OP_LOG:
            mosquitto_log_printf(log_levels[op->level], "%s", op->text);
            break;
        case PN_OP_PUBLISH:
            mosquitto_broker_publish_copy(NULL, op->text, (int)op->len, op->payload, 1, false,
                                          NULL);
            break;
        case PN_OP_KICK:
            kick(p, op->text, 0);
            break;
        default:
            pn_apply_op(&p->state, op, kick, p);
        }
        if (op->kind == PN_OP_SNAPSHOT) {
            p->loaded = true;
            pn_metrics_loaded(&p->metrics, p->state, now);
            pn_sync_dispose(p->sync, op);
        } else {
            pn_op_free(op);
        }
        op = next;
    }
    if (p->waiting)
        answer_waiting(p);
    pn_metrics_tick(&p->metrics, p->state, pn_sync_ready(p->sync), now, publish_sys, p);
    return MOSQ_ERR_SUCCESS;
}

/* A client gone (also failed TLS handshakes, with no client id, and the
 * old session of a client-id takeover, which presence.c tells apart). */
static int on_disconnect(int event, void *event_data, void *userdata)
{
    struct plugin *p = userdata;
    struct mosquitto_evt_disconnect *ed = event_data;
    (void)event;
    const char *user = mosquitto_client_username(ed->client);
    if (user && pn_ident_valid(user))
        pn_sync_disconnected(p->sync, user, ed->client);
    /* A client gone while it waited for the first load: its answer must
     * not record a session that no DISCONNECT would ever end. */
    for (struct waiting **pp = &p->waiting; *pp;) {
        struct waiting *w = *pp;
        if (w->client != ed->client) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        X509_free(w->cert);
        free(w->client_id);
        free(w);
    }
    return MOSQ_ERR_SUCCESS;
}

/* 2.1 only: a CONNECT accepted.  Only answer_waiting wants to know. */
static int on_connect(int event, void *event_data, void *userdata)
{
    struct plugin *p = userdata;
    (void)event;
    if (p->completing && ((struct pn_evt_connect *)event_data)->client == p->completing)
        p->completed = true;
    return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
    struct plugin *p = userdata;
    (void)event;
    (void)event_data;
    p->reloading = true;
    return MOSQ_ERR_SUCCESS;
}

/* ---------------------------------------------------------- entry points */

__attribute__((visibility("default"))) int mosquitto_plugin_version(int count, const int *versions)
{
    for (int i = 0; i < count; i++)
        if (versions[i] == 5)
            return 5;
    return -1;
}

/* 2.1 lists a plugin with its name and version (its log lines and the
 * broker's listPlugins control command); 2.0 has no such function.  It is
 * looked up rather than linked so that one binary loads into both. */
static bool set_info(mosquitto_plugin_id_t *identifier)
{
    typedef int (*set_info_fn)(mosquitto_plugin_id_t *, const char *, const char *);
    set_info_fn f = (set_info_fn)dlsym(RTLD_DEFAULT, "mosquitto_plugin_set_info");
    if (f)
        f(identifier, "pinion", PINION_VERSION);
    return f != NULL;
}

static void destroy(struct plugin *p)
{
    if (!p)
        return;
    if (p->watching)
        pn_handshake_unwatch();
    pn_sync_free(p->sync);
    pn_state_free(p->state);
    pn_denylog_free(p->denylog);
    free(p);
}

__attribute__((visibility("default"))) int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier,
                                                                 void **userdata,
                                                                 struct mosquitto_opt *options,
                                                                 int option_count)
{
    struct pn_err err;
    /* First, so that any error below is read against the version that
     * logged it. */
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "pinion: plugin version " PINION_VERSION_FULL);
    struct plugin *p = calloc(1, sizeof(*p));
    if (!p || sodium_init() < 0) {
        free(p);
        return MOSQ_ERR_NOMEM;
    }
    p->pid = identifier;
    p->broker21 = set_info(identifier);
    p->complete_auth =
        (void (*)(const char *, int))dlsym(RTLD_DEFAULT, "mosquitto_complete_basic_auth");
    if (parse_options(p, options, option_count) < 0) {
        free(p);
        return MOSQ_ERR_INVAL;
    }
    if (install_verify_params(p) < 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "pinion: cannot install TLS verification parameters");
        free(p);
        return MOSQ_ERR_UNKNOWN;
    }
    if (pn_handshake_watch() < 0)
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "pinion: OpenSSL has no purpose check for TLS clients to watch: "
                             "every first connect checks its CA's signature itself");
    else
        p->watching = true;
    p->sync = pn_sync_new(&p->cfg);
    if (p->deny_log_s > 0)
        p->denylog = pn_denylog_new(p->deny_log_s);
    if (!p->sync || (p->deny_log_s > 0 && !p->denylog)) {
        destroy(p);
        return MOSQ_ERR_NOMEM;
    }
    p->cfg.conninfo = p->cfg.trust_dir = NULL; /* options are the broker's; sync copied them */
    if (pn_sync_load_now(p->sync, &p->state, &err) == 0) {
        p->loaded = true;
        pn_metrics_loaded(&p->metrics, p->state, time(NULL));
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "pinion: loaded %zu CAs, %zu devices, %zu pinned certificates, %zu "
                             "service identities",
                             pn_map_count(p->state->cas), pn_map_count(p->state->devices),
                             pn_map_count(p->state->pins), pn_map_count(p->state->services));
    } else {
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "pinion: cannot load from the database (%s); %s until it is "
                             "reachable",
                             err.msg,
                             p->complete_auth ? "devices wait (up to " PN_STR(WAIT_LOAD_S) " s)"
                                              : "refusing devices");
        p->state = pn_state_new(1024);
    }
    if (!p->state || pn_sync_start(p->sync, &err) < 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "pinion: %s", p->state ? err.msg : "out of memory");
        destroy(p);
        return MOSQ_ERR_UNKNOWN;
    }
    if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, p) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, p) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, p) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, p) ||
        mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, p) ||
        (p->complete_auth &&
         mosquitto_callback_register(identifier, PN_EVT_CONNECT, on_connect, NULL, p))) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "pinion: cannot register callbacks");
        destroy(p);
        return MOSQ_ERR_UNKNOWN;
    }
    if (p->broker21) {
        p->waker = waker_start();
        if (!p->waker)
            mosquitto_log_printf(MOSQ_LOG_WARNING,
                                 "pinion: no waker thread (signal %d is in use or no thread): on "
                                 "a broker built without websockets, kicks and events may wait "
                                 "for network activity",
                                 SIGRTMIN + 6);
    }
    *userdata = p;
    return MOSQ_ERR_SUCCESS;
}

__attribute__((visibility("default"))) int
mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    struct plugin *p = userdata;
    (void)options;
    (void)option_count;
    if (!p)
        return MOSQ_ERR_SUCCESS;
    mosquitto_callback_unregister(p->pid, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
    mosquitto_callback_unregister(p->pid, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
    mosquitto_callback_unregister(p->pid, MOSQ_EVT_TICK, on_tick, NULL);
    mosquitto_callback_unregister(p->pid, MOSQ_EVT_RELOAD, on_reload, NULL);
    mosquitto_callback_unregister(p->pid, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
    if (p->complete_auth)
        mosquitto_callback_unregister(p->pid, PN_EVT_CONNECT, on_connect, NULL);
    if (p->waker)
        mosquitto_log_printf(MOSQ_LOG_INFO, "pinion: waker sent %lu signals",
                             atomic_load(&p->waker->signals));
    waker_stop(p->waker);
    free_waiting(p);
    X509_VERIFY_PARAM *vp = p->verify_params;
    destroy(p);
    remove_verify_params(vp);
    return MOSQ_ERR_SUCCESS;
}
