/* SPDX-License-Identifier: Apache-2.0 */
/* piniond: the release service.  One process: a PostgreSQL connection, one
 * MQTT session per live broker in the registry (as a service identity),
 * and a loop that (1) releases
 * running deployments to eligible devices within their concurrency,
 * (2) ingests device status, (3) serves firmware chunks.  Every piece of
 * rollout state lives in PostgreSQL, so a restarted piniond resumes where
 * it stopped and several instances can share the work. */
#ifndef PINION_SERVICE_PINIOND_H
#define PINION_SERVICE_PINIOND_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>
#include <mosquitto.h>

#include "err.h"
#include "fsutil.h" /* pn_mono_ms */
#include "ident.h"
#include "metrics.h"

struct pd_config {
    char *database, *mqtt_host, *ca_file, *cert_file, *key_file, *client_id, *topic_root,
        *release_key, *artifacts, *cdn_url;
    char *metrics_listen; /* HOST:PORT of the Prometheus listener; NULL: none */
    int mqtt_port, verify_ttl, manifest_ttl, chunk_max, penalty, max_attempts, tick_ms;
    int inflight_timeout; /* s without a status report before an update expires */
    /* Per-device limits (limits.c): token buckets, requests per second and
     * burst; what exceeds them is dropped and counted. */
    int get_rate, get_burst, status_rate, status_burst;
    int limit_log_period;  /* s: one summary line per device and period */
    int inflight_cache_ms; /* how long a device's in-flight firmware is trusted */
};

/* A release check that passed, reusable for verify_ttl seconds as long as
 * neither the stored file nor the key or firmware rows changed. */
struct pd_verified {
    int64_t firmware_id;
    char fw_version[32], key_version[32]; /* row versions (xmin) */
    unsigned long long dev, ino, size;
    long long mtime_ns;
    time_t at;
};

#define PD_VERIFIED_MAX 64

/* A status from a device whose row does not exist yet: the plugin creates a
 * JITP device's row moments after its first CONNECT, and the device may
 * report before that.  Retried a few times before it is ignored. */
struct pd_retry {
    char identifier[129];
    void *payload;
    int len, tries;
    long due_ms;
};

#define PD_RETRY_MAX 256

#define PD_STR_(x) #x
#define PD_STR(x) PD_STR_(x)

/* Per-device lines of "ignored ..." logged in full each period; beyond
 * them the period's summary line counts the rest. */
#define PD_LOG_BUDGET 20
/* In-flight firmware remembered per device (one is the norm). */
#define PD_INFLIGHT_MAX 4

struct pd_bucket {
    double tokens;
    long at_ms;
};

/* What piniond keeps about a device that sent it something: its limits'
 * buckets, what it counted this period, and which firmware was in flight
 * for it when last read from the database.  In pd.devs, keyed by
 * identifier; dropped once idle with full buckets. */
struct pd_dev {
    char identifier[PN_IDENT_BUF];
    size_t idlen;
    struct pd_bucket get, status;
    long seen_ms;
    bool period_open;
    long period_ms; /* when this period started (its first message) */
    unsigned long got_get, got_status, dropped_get, dropped_status, unlogged;
    int logged;
    bool inflight_known; /* false: ask the database */
    long inflight_at;
    unsigned long inflight_connects; /* pd.connects when it was read */
    int ninflight;
    char inflight[PD_INFLIGHT_MAX][37];
};

/* The update states in which a device holds a manifest (its update is in
 * flight), as an SQL list: the one definition every query uses. */
#define PD_INFLIGHT "('released', 'received', 'downloading', 'installing', 'rescheduled')"

struct pn_map;
struct pd;

/* One broker of the registry (table brokers) and piniond's session to it. */
struct pd_broker {
    struct pd *pd;
    char id[65];
    char address[256]; /* service_address: host:port */
    char host[256];
    int port;
    struct mosquitto *mq;
    bool connected; /* CONNACK received, subscriptions sent */
    bool listed;    /* in the registry's last read */
    long next_try_ms, attempt_ms;
    long down_since_ms; /* 0 while connected */
    long reported_ms;   /* last "cannot reach" report */
    char why[128];      /* why it is not connected */
};

#define PD_BROKERS_MAX 256

/* The message handler piniond.c installs on every session. */
typedef void (*pd_message_fn)(struct pd *pd, struct pd_broker *b,
                              const struct mosquitto_message *msg);

struct pd {
    struct pd_config cfg;
    PGconn *db;
    struct pd_broker *brokers[PD_BROKERS_MAX];
    int nbrokers;
    long last_registry_ms;
    pd_message_fn on_message;
    /* Prepares what a new database connection needs (0 / -1 with err). */
    int (*prepare_db)(struct pd *pd, struct pn_err *err);
    unsigned char release_sk[64];
    char release_key_id[17];
    struct pd_verified verified[PD_VERIFIED_MAX];
    time_t last_renew;
    struct pd_retry retry[PD_RETRY_MAX];
    int nretry;
    struct pn_map *devs; /* identifier -> struct pd_dev */
    long last_sweep;
    struct pd_metrics *metrics; /* metrics.c; NULL when metrics_listen is unset */
    /* Sessions (re)connected so far.  A session that was down missed the
     * down/update notices published on its broker meanwhile, so what was
     * read of any device's firmware in flight before is no longer trusted. */
    unsigned long connects;
};

/* config.c */
int pd_config_load(const char *path, struct pd_config *cfg, struct pn_err *err);
void pd_config_free(struct pd_config *cfg);

/* conn.c: the bottom layer, which calls nothing above it: logging, the
 * database connection and the broker sessions. */
/* One log line on stderr: "<UTC time> piniond: ...", or, when stderr is
 * the systemd journal, "<N>..." with the syslog level N (sd-daemon(3)).
 * The format may begin with a level (default info), e.g.
 * pd_log(PD_ERR "cannot ..."). */
void pd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define PD_ERR "<3>"
#define PD_WARNING "<4>"
#define PD_NOTICE "<5>"
/* (Re)connects to the database if the connection is gone, and runs
 * pd->prepare_db on a new one.  0 / -1 (logged). */
int pd_ensure_db(struct pd *pd);
/* Reads the live brokers from the registry (at most once a second, or now
 * with force) and opens, keeps or closes sessions to match. */
void pd_brokers_refresh(struct pd *pd, bool force);
/* Waits up to timeout_ms for traffic on any session and handles it;
 * reconnects lost sessions (once a second). */
void pd_brokers_loop(struct pd *pd, int timeout_ms);
void pd_brokers_close(struct pd *pd);
/* The connected session to broker id, or NULL. */
struct pd_broker *pd_broker_connected(struct pd *pd, const char *id);
int pd_brokers_connected(struct pd *pd);
/* Where the manifest of a device connected nowhere is kept: the connected
 * broker with the lowest id (the same for every instance), or NULL. */
struct pd_broker *pd_broker_fallback(struct pd *pd);
/* JSON array text of the connected brokers' ids (caller frees). */
char *pd_brokers_connected_json(struct pd *pd);
/* Publishes (QoS 1) on one session; logs and returns -1 on failure. */
int pd_publish(struct pd_broker *b, const char *topic, const void *payload, int len, bool retain);

/* limits.c: per-device limits and accounting.  pd_dev_get finds or makes
 * the device's entry (NULL only when out of memory). */
int pd_limits_init(struct pd *pd);
void pd_limits_free(struct pd *pd);
struct pd_dev *pd_dev_get(struct pd *pd, const char *identifier);
/* Takes one request from the device's get or status bucket: true if it
 * may be handled, false if it is over the limit (dropped and counted). */
bool pd_dev_admit(struct pd *pd, struct pd_dev *dev, bool status);
/* Logs an "ignored ..." line about a device's message, unless the device
 * used its PD_LOG_BUDGET lines this period: then it is only counted. */
void pd_log_ignored(struct pd *pd, const char *identifier, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A manifest for the device was published or cleared: read its in-flight
 * firmware from the database again at its next request. */
void pd_inflight_forget(struct pd *pd, const char *identifier);
/* Writes the summary line of each device whose period ended, and forgets
 * idle devices.  Called from the main loop; does its work once a second. */
void pd_limits_sweep(struct pd *pd);

/* rollout.c: releases and renews manifests; returns devices released. */
int pd_rollout_tick(struct pd *pd);
/* Re-issues in-flight manifests whose expiry is near (a fresh sequence).
 * At most PD_RENEW_BATCH a call; returns how many, or -1. */
#define PD_RENEW_BATCH 1000
int pd_renew(struct pd *pd);
/* At start: publishes again, unchanged (same sequence, same bytes), the
 * in-flight manifests issued before issued_before, in case an earlier
 * process stopped between recording a release and publishing it.  `after`
 * starts at {0, 0, 0} and is advanced; at most PD_RENEW_BATCH rows a call;
 * returns rows read, or -1. */
int pd_republish(struct pd *pd, time_t issued_before, long long after[3]);
/* Ends in-flight updates that can no longer finish: `cancelled` when the
 * device is no longer active, `expired` after inflight_timeout seconds
 * without a status report.  Their retained manifests are cleared and their
 * slots freed; the devices may be released to again later. */
int pd_end_stale(struct pd *pd);
/* Re-issues the manifests of devices now on another live broker than the
 * one their manifest was published on (a fresh sequence, published there,
 * the retained copy on the old broker cleared).  Returns how many, or -1. */
int pd_follow_moves(struct pd *pd);

/* chunks.c: prepares the chunk lookup on a new connection (0 / -1). */
#define PD_CHUNK_STMT "pd_chunk_source"
#define PD_INFLIGHT_STMT "pd_inflight"
int pd_chunks_prepare(struct pd *pd, struct pn_err *err);

/* Clears the retained manifest of a device on broker_id (NULL or a broker
 * piniond is not connected to: nothing to do). */
void pd_clear_manifest(struct pd *pd, const char *identifier, const char *broker_id);

/* status.c / chunks.c: MQTT message handlers (identifier already valid).
 * pd_handle_status returns 1 when the device is unknown and final is false
 * (the caller may retry later), else 0; with final it logs and ignores. */
int pd_handle_status(struct pd *pd, const char *identifier, const void *payload, int len,
                     bool final);
/* Answers on the session b the request arrived on. */
void pd_handle_get(struct pd *pd, struct pd_broker *b, struct pd_dev *dev, const void *payload,
                   int len);

#endif
