/* piniond: the release service.  One process: a PostgreSQL connection, an
 * MQTT connection as a service identity, and a loop that (1) releases
 * running deployments to eligible devices within their concurrency,
 * (2) ingests device status, (3) serves firmware chunks.  Every piece of
 * rollout state lives in PostgreSQL, so a restarted piniond resumes where
 * it stopped and several instances can share the work. */
#ifndef PINIOND_H
#define PINIOND_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>
#include <mosquitto.h>

#include "err.h"

struct pd_config {
    char *database, *mqtt_host, *ca_file, *cert_file, *key_file, *client_id, *topic_root,
        *release_key, *artifacts, *cdn_url;
    int mqtt_port, verify_ttl, manifest_ttl, chunk_max, penalty, max_attempts, tick_ms;
    int inflight_timeout; /* s without a status report before an update expires */
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

struct pd {
    struct pd_config cfg;
    PGconn *db;
    struct mosquitto *mq;
    bool mq_connected;
    unsigned char release_sk[64];
    char release_key_id[17];
    struct pd_verified verified[PD_VERIFIED_MAX];
    time_t last_renew;
    struct pd_retry retry[PD_RETRY_MAX];
    int nretry;
};

/* config.c */
int pd_config_load(const char *path, struct pd_config *cfg, struct pn_err *err);
void pd_config_free(struct pd_config *cfg);

/* One log line: "piniond: ..." with a UTC timestamp, on stderr. */
void pd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* rollout.c: releases and renews manifests; returns devices released. */
int pd_rollout_tick(struct pd *pd);
/* Re-issues in-flight manifests: with issued_before 0, those whose expiry
 * is near; else those issued before that time (used at start, in case an
 * earlier process stopped between recording a release and publishing it).
 * At most PD_RENEW_BATCH a call; returns how many, or -1. */
#define PD_RENEW_BATCH 1000
int pd_renew(struct pd *pd, time_t issued_before);
/* Ends in-flight updates that can no longer finish: `cancelled` when the
 * device is no longer active, `expired` after inflight_timeout seconds
 * without a status report.  Their retained manifests are cleared and their
 * slots freed; the devices may be released to again later. */
int pd_end_stale(struct pd *pd);
/* piniond.c: (re)connects to the database if the connection is gone, and
 * prepares what the new connection needs.  0 / -1 (logged). */
int pd_ensure_db(struct pd *pd);

/* chunks.c: prepares the chunk lookup on a new connection (0 / -1). */
#define PD_CHUNK_STMT "pd_chunk_source"
int pd_chunks_prepare(struct pd *pd, struct pn_err *err);

/* Clears the retained manifest of a device. */
void pd_clear_manifest(struct pd *pd, const char *identifier);

/* status.c / chunks.c: MQTT message handlers (identifier already valid).
 * pd_handle_status returns 1 when the device is unknown and final is false
 * (the caller may retry later), else 0; with final it logs and ignores. */
int pd_handle_status(struct pd *pd, const char *identifier, const void *payload, int len,
                     bool final);
void pd_handle_get(struct pd *pd, const char *identifier, const void *payload, int len);

/* Publishes (QoS 1); logs and returns -1 on failure. */
int pd_publish(struct pd *pd, const char *topic, const void *payload, int len, bool retain);

#endif
