/* SPDX-License-Identifier: Apache-2.0 */
#include "presence.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "db.h"
#include "fsutil.h"
#include "map.h"

#define FLUSH_MS 100        /* marks reach the database within this, in batches */
#define PENDING_MAX 1000000 /* devices with a mark not yet written */
#define BATCH 5000          /* devices per statement */
#define LIVE_S 10           /* a registry row beaten this recently is a running broker's */
#define CONFLICT_RETRY_S 60 /* a broker_id in use elsewhere: checked and logged this often */

/* The session the broker last admitted for a device (main thread only). */
struct session {
    const void *client;
    int64_t gen;
    size_t len;
    char identifier[];
};

struct pn_presence {
    char broker_id[PN_BROKER_ID_MAX + 1];
    char *service_address;
    int64_t next_gen;        /* main thread */
    struct pn_map *sessions; /* main thread: identifier -> session */
    pthread_mutex_t mu;
    json_t *pending; /* identifier -> [connected 0/1, generation, at_ms]; latest mark wins */
    bool dropped;    /* worker: a mark was lost (PENDING_MAX), logged once */
    long last_flush_ms, last_beat_ms; /* worker */
    /* Worker: the started_at this run wrote into its registry row ("" when
     * it holds none), which tells its row from that of another broker
     * configured with the same broker_id by mistake. */
    char started[64];
    char conflict[512]; /* worker: why this broker writes no presence, "" if it does */
    long conflict_ms;   /* worker: when it was last checked */
    bool conflict_new;  /* worker: not yet logged */
    /* Worker: a live registry row found at start is watched for one more
     * heartbeat before it is taken (see claim); until claim_ms (pn_mono_ms)
     * marks wait and nothing is written.  0: not watching. */
    long claim_ms;
    char claim_hb[64]; /* the row's heartbeat_at when it was found */
};

static long now_ms(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const void *session_key(const void *val, size_t *klen)
{
    const struct session *s = val;
    *klen = s->len;
    return s->identifier;
}

struct pn_presence *pn_presence_new(const char *broker_id, const char *service_address)
{
    struct pn_presence *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    /* Benchmarks drive the worker without a broker: any name does. */
    snprintf(p->broker_id, sizeof(p->broker_id), "%s", broker_id ? broker_id : "pinion");
    p->service_address = strdup(service_address ? service_address : "localhost:8883");
    p->sessions = pn_map_new(1024, session_key);
    p->pending = json_object();
    /* Generations grow across restarts too: the start time in ms, times a
     * thousand, leaves room for a thousand connects a millisecond. */
    p->next_gen = (int64_t)now_ms(CLOCK_REALTIME) * 1000;
    pthread_mutex_init(&p->mu, NULL);
    if (!p->service_address || !p->sessions || !p->pending) {
        pn_presence_free(p);
        return NULL;
    }
    return p;
}

void pn_presence_free(struct pn_presence *p)
{
    if (!p)
        return;
    if (p->sessions) {
        void *v;
        for (size_t i = 0; pn_map_next(p->sessions, &i, &v);)
            free(v);
        pn_map_free(p->sessions);
    }
    json_decref(p->pending);
    pthread_mutex_destroy(&p->mu);
    free(p->service_address);
    free(p);
}

static void mark(struct pn_presence *p, const char *identifier, bool connected, int64_t gen)
{
    json_t *m =
        json_pack("[b, I, I]", connected, (json_int_t)gen, (json_int_t)now_ms(CLOCK_REALTIME));
    if (!m)
        return;
    pthread_mutex_lock(&p->mu);
    if (json_object_size(p->pending) < PENDING_MAX || json_object_get(p->pending, identifier))
        json_object_set_new(p->pending, identifier, m);
    else {
        json_decref(m);
        p->dropped = true;
    }
    pthread_mutex_unlock(&p->mu);
}

void pn_presence_connected(struct pn_presence *p, const char *identifier, const void *client)
{
    size_t n = strlen(identifier);
    struct session *s = pn_map_get(p->sessions, identifier, n);
    if (!s) {
        if (!(s = malloc(sizeof(*s) + n + 1)))
            return;
        memcpy(s->identifier, identifier, n + 1);
        s->len = n;
        int err = 0;
        pn_map_put(p->sessions, s, &err);
        if (err < 0) {
            free(s);
            return;
        }
    }
    s->client = client;
    s->gen = ++p->next_gen;
    mark(p, identifier, true, s->gen);
}

void pn_presence_disconnected(struct pn_presence *p, const char *identifier, const void *client)
{
    size_t n = strlen(identifier);
    struct session *s = pn_map_get(p->sessions, identifier, n);
    /* Another session of the device took over: it is still here. */
    if (!s || s->client != client)
        return;
    mark(p, identifier, false, s->gen);
    pn_map_del(p->sessions, identifier, n);
    free(s);
}

/* ---------------------------------------------------------- worker side */

static void set_conflict(struct pn_presence *p, const char *address, const char *since)
{
    snprintf(p->conflict, sizeof(p->conflict),
             "broker_id '%s' is in use by another running broker (service address %s, "
             "registered at %s): this broker records no presence, so piniond sends no updates "
             "to its devices; give each broker its own plugin_opt_broker_id",
             p->broker_id, address, since);
    p->conflict_new = true;
    p->conflict_ms = pn_mono_ms();
    p->started[0] = '\0';
}

/* The registry row's heartbeat and registration, or 0 when there is none. */
static int read_row(PGconn *db, const char *id, char hb[64], char started[64], char addr[128],
                    bool *live, struct pn_err *err)
{
    char live_s[16];
    snprintf(live_s, sizeof(live_s), "%d", LIVE_S);
    const char *v[] = {id, live_s};
    PGresult *r = pn_db_q(db, err,
                          "SELECT heartbeat_at::text, started_at::text, service_address, "
                          "heartbeat_at > now() - make_interval(secs => $2) "
                          "FROM brokers WHERE id = $1",
                          2, v);
    if (!r)
        return -1;
    int n = PQntuples(r);
    if (n == 1) {
        snprintf(hb, 64, "%s", PQgetvalue(r, 0, 0));
        snprintf(started, 64, "%s", PQgetvalue(r, 0, 1));
        snprintf(addr, 128, "%s", PQgetvalue(r, 0, 2));
        *live = PQgetvalue(r, 0, 3)[0] == 't';
    }
    PQclear(r);
    return n;
}

/* Takes the registry row: (re)writes it with a new started_at and deletes
 * the presence rows a previous run left. */
static int take_row(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    const char *v[] = {p->broker_id, p->service_address};
    if (pn_db_begin(db, err) < 0)
        return -1;
    PGresult *r = pn_db_q(db, err,
                          "INSERT INTO brokers (id, service_address) VALUES ($1, $2) "
                          "ON CONFLICT (id) DO UPDATE SET service_address = $2, "
                          "started_at = clock_timestamp(), heartbeat_at = now() "
                          "RETURNING started_at::text",
                          2, v);
    if (!r || pn_db_cmd(db, err, "DELETE FROM device_presence WHERE broker_id = $1", 1, v) < 0 ||
        pn_db_commit(db, err) < 0) {
        PQclear(r);
        pn_db_rollback(db);
        return -1;
    }
    snprintf(p->started, sizeof(p->started), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    p->conflict[0] = '\0';
    p->last_beat_ms = pn_mono_ms();
    return 0;
}

/* A row beaten within LIVE_S by another run is either a broker that
 * crashed a moment ago (this one, restarted) or a second broker with the
 * same broker_id.  Waiting out one heartbeat tells them apart: only a
 * running broker beats again.  Taking its row would delete its devices'
 * presence and have piniond send their updates here.  The wait is not a
 * sleep: register runs on the broker's main thread (mosquitto_plugin_init,
 * through pn_sync_load_now), and a sleep there held the broker's start for
 * 3 s after every crash; on the worker it would hold pins and kicks.  The
 * row is checked again by the first flush after claim_ms (settle). */
static int claim(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    char started[64], addr[128];
    bool live = false;
    int n = read_row(db, p->broker_id, p->claim_hb, started, addr, &live, err);
    if (n < 0)
        return -1;
    /* With this broker's own service address the row is its own, from a
     * run that crashed a moment ago (or piniond could not tell the two
     * brokers apart anyway): taken at once, so that the devices of a
     * restarted broker are found there without delay. */
    if (n == 1 && live && strcmp(addr, p->service_address) != 0) {
        p->started[0] = '\0';
        p->claim_ms = pn_mono_ms() + (PN_HEARTBEAT_S + 1) * 1000L;
        return 0;
    }
    return take_row(p, db, err);
}

/* The end of claim's wait: beaten again, the row is another running
 * broker's; else it is taken.  Until take_row succeeds claim_ms stays set,
 * so a failure is retried by the next flush. */
static int settle(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    char hb[64], started[64], addr[128];
    bool live = false;
    int n = read_row(db, p->broker_id, hb, started, addr, &live, err);
    if (n < 0)
        return -1;
    if (n == 1 && strcmp(hb, p->claim_hb) != 0) {
        p->claim_ms = 0;
        set_conflict(p, addr, started);
        return 0;
    }
    if (take_row(p, db, err) < 0)
        return -1;
    p->claim_ms = 0;
    return 0;
}

int pn_presence_register(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    return claim(p, db, err);
}

/* The heartbeat, in the flush's transaction: 1 when this run's own row was
 * beaten, 0 when it has none (see resolve), -1 on error. */
static int beat(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    const char *v[] = {p->broker_id, p->service_address, p->started};
    PGresult *r = pn_db_q(db, err,
                          "UPDATE brokers SET service_address = $2, heartbeat_at = now() "
                          "WHERE id = $1 AND started_at = $3::timestamptz",
                          3, v);
    if (!r)
        return -1;
    int mine = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return mine;
}

/* This run holds no registry row (it was taken or deleted, or another
 * broker held it): takes it when no running broker holds it, else records
 * the conflict. */
static int resolve(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    char hb[64], started[64], addr[128];
    bool live = false;
    int n = read_row(db, p->broker_id, hb, started, addr, &live, err);
    if (n < 0)
        return -1;
    if (n == 1 && (live || p->started[0])) {
        set_conflict(p, addr, started);
        return 0;
    }
    return take_row(p, db, err);
}

const char *pn_presence_conflict(struct pn_presence *p)
{
    if (!p->conflict_new)
        return NULL;
    p->conflict_new = false;
    return p->conflict;
}

/* Puts marks that could not be written back, unless newer ones came. */
static void put_back(struct pn_presence *p, json_t *marks)
{
    const char *k;
    json_t *v;
    pthread_mutex_lock(&p->mu);
    json_object_foreach(marks, k, v)
    {
        if (!json_object_get(p->pending, k))
            json_object_set(p->pending, k, v);
    }
    pthread_mutex_unlock(&p->mu);
}

static int write_marks(struct pn_presence *p, PGconn *db, json_t *marks, struct pn_err *err)
{
    json_t *conn = json_array(), *disc = json_array();
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(marks, k, v)
    {
        json_t *row = json_pack("[s, O, O]", k, json_array_get(v, 1), json_array_get(v, 2));
        json_array_append_new(json_is_true(json_array_get(v, 0)) ? conn : disc, row);
    }
    for (int which = 0; which < 2 && rc == 0; which++) {
        json_t *all = which ? disc : conn;
        for (size_t off = 0; off < json_array_size(all) && rc == 0; off += BATCH) {
            json_t *part = json_array();
            for (size_t i = off; i < off + BATCH && i < json_array_size(all); i++)
                json_array_append(part, json_array_get(all, i));
            char *text = json_dumps(part, JSON_COMPACT);
            const char *args[] = {p->broker_id, text};
            /* A connect older than the row is a late mark from the broker
             * the device left; a disconnect clears only this broker's own
             * session (or an older one of it). */
            rc = !text ? pn_err_set(err, "out of memory")
                 : which == 0
                     ? pn_db_cmd(db, err,
                                 "INSERT INTO device_presence (identifier, broker_id, generation, "
                                 "connected_at) SELECT x->>0, $1, (x->>1)::bigint, "
                                 "to_timestamp((x->>2)::double precision / 1000) "
                                 "FROM jsonb_array_elements($2::jsonb) x "
                                 "ON CONFLICT (identifier) DO UPDATE SET broker_id = $1, "
                                 "generation = EXCLUDED.generation, "
                                 "connected_at = EXCLUDED.connected_at "
                                 "WHERE device_presence.connected_at <= EXCLUDED.connected_at",
                                 2, args)
                     : pn_db_cmd(db, err,
                                 "DELETE FROM device_presence p "
                                 "USING jsonb_array_elements($2::jsonb) x "
                                 "WHERE p.identifier = x->>0 AND p.broker_id = $1 "
                                 "AND p.generation <= (x->>1)::bigint",
                                 2, args);
            free(text);
            json_decref(part);
        }
    }
    json_decref(conn);
    json_decref(disc);
    return rc;
}

int pn_presence_flush(struct pn_presence *p, PGconn *db, struct pn_err *err)
{
    long now = pn_mono_ms();
    if (p->claim_ms) /* marks wait until the row is this run's, or another's */
        return now < p->claim_ms ? 0 : settle(p, db, err);
    bool due_beat = now - p->last_beat_ms >= PN_HEARTBEAT_S * 1000L;
    if (!due_beat && now - p->last_flush_ms < FLUSH_MS)
        return 0;
    pthread_mutex_lock(&p->mu);
    json_t *marks = NULL;
    if (json_object_size(p->pending) > 0) {
        marks = p->pending;
        p->pending = json_object();
    }
    pthread_mutex_unlock(&p->mu);
    if (!marks && !due_beat)
        return 0;
    p->last_flush_ms = now;
    if (p->conflict[0]) {
        /* Another broker's devices are in device_presence under this
         * broker_id: nothing of this one's may go there. */
        json_decref(marks);
        if (now - p->conflict_ms < CONFLICT_RETRY_S * 1000L)
            return 0;
        p->conflict_ms = now;
        return resolve(p, db, err);
    }
    if (pn_db_begin(db, err) < 0)
        goto fail;
    int mine = due_beat ? beat(p, db, err) : 1;
    if (mine < 0 || (mine && marks && write_marks(p, db, marks, err) < 0) ||
        (mine ? pn_db_commit(db, err) : (pn_db_rollback(db), 0)) < 0) {
        pn_db_rollback(db);
        goto fail;
    }
    if (!mine) {
        if (marks)
            put_back(p, marks);
        json_decref(marks);
        return resolve(p, db, err);
    }
    if (due_beat)
        p->last_beat_ms = now;
    json_decref(marks);
    return 0;
fail:
    if (marks) {
        put_back(p, marks);
        json_decref(marks);
    }
    return -1;
}

bool pn_presence_dropped(struct pn_presence *p)
{
    pthread_mutex_lock(&p->mu);
    bool d = p->dropped;
    p->dropped = false;
    pthread_mutex_unlock(&p->mu);
    return d;
}

void pn_presence_unregister(struct pn_presence *p, PGconn *db)
{
    struct pn_err err;
    const char *v[] = {p->broker_id, p->started};
    /* Only this run's own row and presence: with a broker_id conflict the
     * rows are another broker's. */
    if (!p->started[0])
        return;
    pn_db_cmd(db, &err,
              "DELETE FROM device_presence WHERE broker_id = $1 AND EXISTS (SELECT 1 FROM "
              "brokers WHERE id = $1 AND started_at = $2::timestamptz)",
              2, v);
    pn_db_cmd(db, &err, "DELETE FROM brokers WHERE id = $1 AND started_at = $2::timestamptz", 2, v);
}
