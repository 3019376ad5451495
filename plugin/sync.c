/* SPDX-License-Identifier: Apache-2.0 */
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "cert.h"
#include "db.h"
#include "ident.h"
#include "migrate.h"
#include "presence.h"
#include "trust.h"

#define SEEN_FLUSH_S 1     /* last_seen writes are batched at most once a second */
#define SEEN_MAX 100000    /* marks kept while the database is away */
#define BATCH 5000         /* keys per statement */

#define CA_SELECT                                                                         \
    "SELECT id, org_id, status, der, coalesce(jitp_product_id, 0), "                     \
    "array_to_json(jitp_tags)::text, extract(epoch FROM not_before)::bigint, "           \
    "extract(epoch FROM not_after)::bigint FROM ca_certificates"
#define DEVICE_SELECT "SELECT id, identifier, org_id, product_id, status FROM devices"
#define PIN_SELECT                                                                        \
    "SELECT id, device_id, status, extract(epoch FROM not_after)::bigint, spki_sha256 "  \
    "FROM device_certificates"
#define SERVICE_SELECT                                                                    \
    "SELECT id, name, extract(epoch FROM not_after)::bigint, der, status "                \
    "FROM service_identities"
/* Pinned certificates whose CA row was deleted (docs/protocol.md, "Admission": they are still
 * admitted): each goes into the trust directory as its own anchor (partial
 * chains are allowed), else TLS would refuse them once the CA's file is
 * gone, i.e. after the next start. */
#define ORPHAN_PIN_SELECT                                                                         \
    "SELECT der FROM device_certificates WHERE ca_id IS NULL AND status = 'active'"
#define BY_TEXT_KEYS " WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))"
#define BY_INT_KEYS " WHERE id IN (SELECT (jsonb_array_elements_text($1::jsonb))::bigint)"

struct pn_sync {
    struct pn_sync_config cfg; /* strings owned */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    struct pn_op *ops, **ops_tail;
    struct pn_pin_req *reqs, **reqs_tail;
    int nreqs;           /* queued pin requests */
    double reqs_since;   /* when the oldest of them was queued (monotonic s) */
    struct pn_op *trash; /* old snapshots, freed here rather than on the broker's thread */
    json_t *seen_dev, *seen_cert;
    int wake[2];
    atomic_bool ready, stop;
    /* worker only */
    PGconn *db;
    struct pn_presence *presence;
    bool registered; /* this broker's registry row written, its old presence cleared */
    time_t last_full, last_seen_flush;
    char last_error[PN_ERR_MAX];
};

/* ---------------------------------------------------------------- queues */

static void push_op(struct pn_sync *s, struct pn_op *op)
{
    if (!op)
        return;
    op->next = NULL;
    pthread_mutex_lock(&s->mu);
    *s->ops_tail = op;
    s->ops_tail = &op->next;
    pthread_mutex_unlock(&s->mu);
}

static void logf_(struct pn_sync *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(struct pn_sync *s, int level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    struct pn_op *op = pn_op_new(PN_OP_LOG);
    if (!op)
        return;
    op->level = level;
    op->text = strdup(buf);
    push_op(s, op);
}

static void wake(struct pn_sync *s)
{
    char c = 1;
    ssize_t r = write(s->wake[1], &c, 1);
    (void)r; /* a full pipe already means "wake up" */
}

void pn_sync_dispose(struct pn_sync *s, struct pn_op *op)
{
    op->next = NULL;
    pthread_mutex_lock(&s->mu);
    op->next = s->trash;
    s->trash = op;
    pthread_mutex_unlock(&s->mu);
    wake(s);
}

static void empty_trash(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    struct pn_op *op = s->trash;
    s->trash = NULL;
    pthread_mutex_unlock(&s->mu);
    while (op) {
        struct pn_op *next = op->next;
        pn_op_free(op);
        op = next;
    }
}

struct pn_op *pn_sync_take(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    struct pn_op *ops = s->ops;
    s->ops = NULL;
    s->ops_tail = &s->ops;
    pthread_mutex_unlock(&s->mu);
    return ops;
}

static double mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The worker is woken by the first request only: it waits PIN_LINGER_MS
 * for more (see persist_pins), and a write to the pipe per CONNECT would
 * cost the broker's thread a system call each. */
void pn_sync_pin(struct pn_sync *s, struct pn_pin_req *r)
{
    r->next = NULL;
    pthread_mutex_lock(&s->mu);
    bool first = s->nreqs == 0;
    if (first)
        s->reqs_since = mono_now();
    *s->reqs_tail = r;
    s->reqs_tail = &r->next;
    s->nreqs++;
    pthread_mutex_unlock(&s->mu);
    if (first)
        wake(s);
}

void pn_sync_seen(struct pn_sync *s, const char *identifier, const char *cert_id)
{
    pthread_mutex_lock(&s->mu);
    if (json_array_size(s->seen_dev) < SEEN_MAX) {
        json_array_append_new(s->seen_dev, json_string(identifier));
        json_array_append_new(s->seen_cert, json_string(cert_id));
    }
    pthread_mutex_unlock(&s->mu);
}

/* No wake(): a write() on the broker's thread at every CONNECT and
 * DISCONNECT would buy nothing, since the worker passes at least every
 * 100 ms and flushes presence at most that often anyway. */
void pn_sync_connected(struct pn_sync *s, const char *identifier, const void *client)
{
    pn_presence_connected(s->presence, identifier, client);
}

void pn_sync_disconnected(struct pn_sync *s, const char *identifier, const void *client)
{
    pn_presence_disconnected(s->presence, identifier, client);
}

bool pn_sync_ready(struct pn_sync *s)
{
    return atomic_load(&s->ready);
}

/* ------------------------------------------------------------ row -> op */

static int64_t col_i64(PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int hex32(const char *hex, unsigned char out[PN_SHA256])
{
    size_t n = 0;
    if (sodium_hex2bin(out, PN_SHA256, hex, strlen(hex), NULL, &n, NULL) != 0 || n != PN_SHA256)
        return -1;
    return 0;
}

static X509 *col_cert(PGresult *r, int row, int col)
{
    size_t len = 0;
    unsigned char *der = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &len);
    X509 *x = der ? pn_cert_parse(der, len, "database", NULL) : NULL;
    PQfreemem(der);
    return x;
}

static struct pn_op *ca_op(PGresult *r, int i)
{
    struct pn_op *op = pn_op_new(PN_OP_CA_PUT);
    struct pn_ca *ca = calloc(1, sizeof(*ca));
    if (!op || !ca)
        goto fail;
    snprintf(ca->id, sizeof(ca->id), "%s", PQgetvalue(r, i, 0));
    ca->org_id = col_i64(r, i, 1);
    ca->status = PQgetvalue(r, i, 2)[0] == 'a' ? PN_ACTIVE
                 : PQgetvalue(r, i, 2)[0] == 'd' ? PN_DISABLED
                                                 : PN_REVOKED;
    ca->cert = col_cert(r, i, 3);
    ca->jitp_product_id = col_i64(r, i, 4);
    ca->jitp_tags = strdup(PQgetvalue(r, i, 5));
    ca->not_before = (time_t)col_i64(r, i, 6);
    ca->not_after = (time_t)col_i64(r, i, 7);
    if (!ca->cert || !ca->jitp_tags)
        goto fail;
    op->ca = ca;
    return op;
fail:
    pn_ca_free(ca);
    pn_op_free(op);
    return NULL;
}

static struct pn_op *device_op(PGresult *r, int i)
{
    struct pn_op *op = pn_op_new(PN_OP_DEVICE_PUT);
    if (!op)
        return NULL;
    op->id = col_i64(r, i, 0);
    op->text = strdup(PQgetvalue(r, i, 1));
    op->org_id = col_i64(r, i, 2);
    op->product_id = col_i64(r, i, 3);
    op->status = PQgetvalue(r, i, 4)[0] == 'a' ? PN_ACTIVE : PN_REVOKED;
    if (!op->text) {
        pn_op_free(op);
        return NULL;
    }
    return op;
}

static struct pn_op *pin_op(PGresult *r, int i)
{
    struct pn_op *op = pn_op_new(PN_OP_PIN_PUT);
    if (!op)
        return NULL;
    op->id = col_i64(r, i, 1);
    op->status = PQgetvalue(r, i, 2)[0] == 'a' ? PN_ACTIVE : PN_REVOKED;
    op->not_after = (time_t)col_i64(r, i, 3);
    if (hex32(PQgetvalue(r, i, 0), op->bin) < 0 || hex32(PQgetvalue(r, i, 4), op->spki) < 0) {
        pn_op_free(op);
        return NULL;
    }
    return op;
}

static struct pn_op *service_op(PGresult *r, int i, X509 **cert)
{
    struct pn_op *op = pn_op_new(PN_OP_SERVICE_PUT);
    if (!op)
        return NULL;
    op->text = strdup(PQgetvalue(r, i, 1));
    op->not_after = (time_t)col_i64(r, i, 2);
    op->status = PQgetvalue(r, i, 4)[0] == 'a' ? PN_ACTIVE : PN_REVOKED;
    *cert = col_cert(r, i, 3);
    if (!op->text || hex32(PQgetvalue(r, i, 0), op->bin) < 0) {
        X509_free(*cert);
        *cert = NULL;
        pn_op_free(op);
        return NULL;
    }
    return op;
}

/* --------------------------------------------------------------- loading */

struct certs {
    X509 **v;
    size_t n, cap;
};

static void certs_add(struct certs *c, X509 *x)
{
    if (!x)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        X509 **nv = realloc(c->v, cap * sizeof(*nv));
        if (!nv)
            return;
        c->v = nv;
        c->cap = cap;
    }
    X509_up_ref(x);
    c->v[c->n++] = x;
}

static void certs_free(struct certs *c)
{
    for (size_t i = 0; i < c->n; i++)
        X509_free(c->v[i]);
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}

/* Streams a query row by row (single-row mode) so that a million pins
 * never sit in one PGresult. */
static int stream(PGconn *db, const char *sql, struct pn_state *st,
                  struct pn_op *(*row)(PGresult *, int), struct pn_err *err)
{
    if (!PQsendQueryParams(db, sql, 0, NULL, NULL, NULL, NULL, 0) || !PQsetSingleRowMode(db))
        return pn_err_set(err, "database: %s", PQerrorMessage(db));
    int rc = 0;
    PGresult *r;
    while ((r = PQgetResult(db))) {
        ExecStatusType t = PQresultStatus(r);
        if (t == PGRES_SINGLE_TUPLE) {
            struct pn_op *op = row(r, 0);
            if (op)
                pn_apply_op(&st, op, NULL, NULL);
            pn_op_free(op);
        } else if (t != PGRES_TUPLES_OK && rc == 0) {
            const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            rc = pn_err_set(err, "database: %s", m ? m : PQerrorMessage(db));
        }
        PQclear(r);
    }
    return rc;
}

/* Reads everything into a new state, in one consistent snapshot. */
static struct pn_state *load_all(PGconn *db, struct certs *trust, struct pn_err *err)
{
    struct pn_state *st = NULL;
    PGresult *r = NULL;

    if (pn_db_cmd(db, err, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) < 0)
        return NULL;
    r = pn_db_q(db, err, "SELECT count(*) FROM device_certificates", 0, NULL);
    if (!r)
        goto fail;
    st = pn_state_new((size_t)col_i64(r, 0, 0) + 1024);
    PQclear(r);
    if (!st) {
        pn_err_set(err, "out of memory");
        goto fail;
    }
    if (!(r = pn_db_q(db, err, CA_SELECT, 0, NULL)))
        goto fail;
    for (int i = 0; i < PQntuples(r); i++) {
        struct pn_op *op = ca_op(r, i);
        if (!op)
            continue;
        certs_add(trust, op->ca->cert);
        pn_apply_op(&st, op, NULL, NULL);
        pn_op_free(op);
    }
    PQclear(r);
    if (!(r = pn_db_q(db, err, SERVICE_SELECT, 0, NULL)))
        goto fail;
    for (int i = 0; i < PQntuples(r); i++) {
        X509 *x = NULL;
        struct pn_op *op = service_op(r, i, &x);
        certs_add(trust, x);
        X509_free(x);
        if (op)
            pn_apply_op(&st, op, NULL, NULL);
        pn_op_free(op);
    }
    PQclear(r);
    if (!(r = pn_db_q(db, err, ORPHAN_PIN_SELECT, 0, NULL)))
        goto fail;
    for (int i = 0; i < PQntuples(r); i++) {
        X509 *x = col_cert(r, i, 0);
        certs_add(trust, x);
        X509_free(x);
    }
    PQclear(r);
    r = NULL;
    if (stream(db, DEVICE_SELECT, st, device_op, err) < 0 ||
        stream(db, PIN_SELECT, st, pin_op, err) < 0)
        goto fail;
    if (pn_db_cmd(db, err, "COMMIT", 0, NULL) < 0)
        goto fail;
    return st;
fail:
    PQclear(r);
    pn_db_rollback(db);
    pn_state_free(st);
    return NULL;
}

/* The statements that store pins, planned once per connection (parsing
 * and planning them was most of the database's work per pin).  Every
 * device row is locked FOR UPDATE before its pins are judged; see
 * persist_batch. */
#define PIN_SQL_CA_LOCK                                                                            \
    "SELECT id, status FROM ca_certificates WHERE id = ANY ($1::text[]) ORDER BY id FOR SHARE"
#define PIN_SQL_STORED                                                                             \
    "SELECT c.id, d.identifier FROM device_certificates c JOIN devices d ON d.id = c.device_id "   \
    "WHERE c.id = ANY ($1::text[])"
/* A JITP device that does not exist yet: the new row is ours (locked) until
 * COMMIT.  Nothing returned: it exists, and PIN_SQL_DEVICE locks it. */
#define PIN_SQL_DEVICE_NEW                                                                         \
    "WITH ins AS (INSERT INTO devices (identifier, org_id, product_id, tags, first_seen, "         \
    "last_seen) VALUES ($1, $2, $3, ARRAY(SELECT jsonb_array_elements_text($4::jsonb)), now(), "   \
    "now()) ON CONFLICT (identifier) DO NOTHING RETURNING id, org_id, status, product_id) "        \
    "SELECT ins.id, ins.org_id, ins.status, o.name, ins.product_id FROM ins JOIN orgs o ON "       \
    "o.id = ins.org_id"
/* The batch's new JITP devices and their pins, by one statement (see
 * persist_new_devices).  $1: a JSON array of the requests, in identifier
 * order, one per identifier. */
#define PIN_SQL_NEW_DEVICES                                                                        \
    "WITH u AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS u(identifier text, org_id bigint, " \
    "product_id bigint, tags text, cert_id text, ca_id text, serial text, ski text, aki text, "    \
    "spki text, not_before timestamptz, not_after timestamptz, der text)), "                       \
    "dev AS (INSERT INTO devices (identifier, org_id, product_id, tags, first_seen, last_seen) "   \
    "SELECT identifier, org_id, product_id, ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), " \
    "now(), now() FROM u ORDER BY identifier ON CONFLICT (identifier) DO NOTHING RETURNING id, "   \
    "identifier, org_id, product_id), "                                                            \
    "pin AS (INSERT INTO device_certificates (id, device_id, ca_id, serial, ski, aki, "            \
    "spki_sha256, not_before, not_after, der, last_used) SELECT u.cert_id, dev.id, u.ca_id, "      \
    "u.serial, u.ski, u.aki, u.spki, u.not_before, u.not_after, decode(u.der, 'hex'), now() FROM " \
    "u JOIN dev USING (identifier) ORDER BY u.cert_id ON CONFLICT (id) DO NOTHING RETURNING id, "  \
    "device_id, (extract(epoch FROM pinned_at) * 1000)::bigint AS pinned_ms, extract(epoch FROM "  \
    "not_after)::bigint AS not_after) "                                                            \
    "SELECT dev.identifier, dev.id, dev.org_id, o.name, dev.product_id, pin.id, pin.pinned_ms, "   \
    "pin.not_after FROM dev JOIN orgs o ON o.id = dev.org_id LEFT JOIN pin ON pin.device_id = "    \
    "dev.id"
#define PIN_SQL_DEVICE                                                                             \
    "SELECT d.id, d.org_id, d.status, o.name, d.product_id FROM devices d JOIN orgs o ON o.id "    \
    "= d.org_id WHERE d.identifier = $1 FOR UPDATE OF d"
#define PIN_SQL_ROTATION                                                                           \
    "SELECT count(*), count(*) FILTER (WHERE spki_sha256 = $3) FROM device_certificates WHERE "    \
    "device_id = $1 AND status = 'active' AND id <> $2"
#define PIN_SQL_INSERT                                                                             \
    "INSERT INTO device_certificates (id, device_id, ca_id, serial, ski, aki, spki_sha256, "       \
    "not_before, not_after, der, last_used) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "     \
    "now()) ON CONFLICT (id) DO NOTHING RETURNING (extract(epoch FROM pinned_at) * 1000)::bigint, " \
    "extract(epoch FROM not_after)::bigint"
/* Once per batch, for the devices whose pins it stored. */
#define PIN_SQL_SEEN                                                                               \
    "UPDATE devices SET first_seen = coalesce(first_seen, now()), last_seen = now() WHERE id = "   \
    "ANY ($1::bigint[])"
#define PIN_SQL_MINE "SELECT 1 FROM device_certificates WHERE id = $1 AND device_id = $2"
#define PIN_SQL_DEVICE_UNDO "DELETE FROM devices WHERE id = $1"

static const struct {
    const char *name, *sql;
    int n;
} pin_sql[] = {
    {"pin_ca_lock", PIN_SQL_CA_LOCK, 1},
    {"pin_stored", PIN_SQL_STORED, 1},
    {"pin_new_devices", PIN_SQL_NEW_DEVICES, 1},
    {"pin_device_new", PIN_SQL_DEVICE_NEW, 4},
    {"pin_device", PIN_SQL_DEVICE, 1},
    {"pin_rotation", PIN_SQL_ROTATION, 3},
    {"pin_insert", PIN_SQL_INSERT, 10},
    {"pin_mine", PIN_SQL_MINE, 2},
    {"pin_seen", PIN_SQL_SEEN, 1},
    {"pin_device_undo", PIN_SQL_DEVICE_UNDO, 1},
};

static int prepare_pin_sql(PGconn *db, struct pn_err *err)
{
    for (size_t i = 0; i < sizeof(pin_sql) / sizeof(pin_sql[0]); i++)
        if (pn_db_prepare(db, err, pin_sql[i].name, pin_sql[i].sql, pin_sql[i].n) < 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

struct pn_sync *pn_sync_new(const struct pn_sync_config *cfg)
{
    struct pn_sync *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->wake[0] = s->wake[1] = -1;
    s->cfg.conninfo = strdup(cfg->conninfo);
    s->cfg.trust_dir = strdup(cfg->trust_dir);
    s->cfg.topic_root = strdup(cfg->topic_root);
    s->cfg.resync_s = cfg->resync_s;
    s->cfg.rotation = cfg->rotation;
    s->presence = pn_presence_new(cfg->broker_id, cfg->service_address);
    s->seen_dev = json_array();
    s->seen_cert = json_array();
    s->ops_tail = &s->ops;
    s->reqs_tail = &s->reqs;
    pthread_mutex_init(&s->mu, NULL);
    if (!s->cfg.conninfo || !s->cfg.trust_dir || !s->cfg.topic_root || !s->presence ||
        !s->seen_dev ||
        !s->seen_cert || pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        pn_sync_free(s);
        return NULL;
    }
    return s;
}

static int connect_db(struct pn_sync *s, struct pn_err *err)
{
    s->db = pn_db_connect_app(s->cfg.conninfo, "pinion-plugin", 5, err);
    if (!s->db)
        return -1;
    if (pn_db_check_schema(s->db, err) < 0 || pn_db_cmd(s->db, err, "LISTEN pinion", 0, NULL) < 0 ||
        (!s->registered && pn_presence_register(s->presence, s->db, err) < 0) ||
        prepare_pin_sql(s->db, err) < 0) {
        PQfinish(s->db);
        s->db = NULL;
        return -1;
    }
    /* Once per run: after a lost connection the rows still hold. */
    s->registered = true;
    return 0;
}

int pn_sync_load_now(struct pn_sync *s, struct pn_state **out, struct pn_err *err)
{
    struct certs trust = {0};
    if (!s->db && connect_db(s, err) < 0)
        return -1;
    struct pn_state *st = load_all(s->db, &trust, err);
    if (!st) {
        certs_free(&trust);
        PQfinish(s->db);
        s->db = NULL;
        return -1;
    }
    if (pn_trust_sync(s->cfg.trust_dir, trust.v, trust.n, true, err) < 0) {
        certs_free(&trust);
        pn_state_free(st);
        return -1;
    }
    certs_free(&trust);
    s->last_full = time(NULL);
    atomic_store(&s->ready, true);
    *out = st;
    return 0;
}

/* --------------------------------------------------------------- worker */

static void lost(struct pn_sync *s, const char *why)
{
    /* why may point into the connection (PQerrorMessage): copy it before
     * PQfinish frees it, and keep the first line only. */
    char msg[256];
    size_t n = why ? strcspn(why, "\n") : 0;
    if (n >= sizeof(msg))
        n = sizeof(msg) - 1; /* a log line, not the whole server message */
    memcpy(msg, why ? why : "", n);
    msg[n] = '\0';
    if (s->db)
        PQfinish(s->db);
    s->db = NULL;
    if (atomic_exchange(&s->ready, false))
        logf_(s, PN_LOG_WARNING,
              "pinion: database connection lost (%s); pinned devices are admitted from memory, "
              "first connects are refused until it is back",
              msg[0] ? msg : "no reason given");
}

/* Full reload: a new snapshot for the main thread. */
static int reload(struct pn_sync *s, struct pn_err *err)
{
    struct certs trust = {0};
    struct pn_state *st = load_all(s->db, &trust, err);
    if (!st) {
        certs_free(&trust);
        lost(s, err->msg);
        return -1;
    }
    struct pn_err terr;
    if (pn_trust_sync(s->cfg.trust_dir, trust.v, trust.n, false, &terr) < 0)
        logf_(s, PN_LOG_ERR, "pinion: %s", terr.msg);
    certs_free(&trust);
    struct pn_op *op = pn_op_new(PN_OP_SNAPSHOT);
    if (!op) {
        pn_state_free(st);
        return -1;
    }
    op->state = st;
    push_op(s, op);
    s->last_full = time(NULL);
    return 0;
}

/* Fetches the rows whose keys were notified and queues PUT ops for those
 * found and DEL ops for those gone. */
static int fetch_changed(struct pn_sync *s, json_t *keys, const char *sql, int table)
{
    struct pn_err err;
    if (json_array_size(keys) == 0)
        return 0;
    char *text = json_dumps(keys, JSON_COMPACT);
    const char *v[] = {text};
    PGresult *r = pn_db_q(s->db, &err, sql, 1, v);
    free(text);
    if (!r) {
        lost(s, err.msg);
        return -1;
    }
    struct certs trust = {0};
    json_t *found = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        struct pn_op *op = NULL;
        X509 *x = NULL;
        switch (table) {
        case 'c':
            op = ca_op(r, i);
            if (op)
                certs_add(&trust, op->ca->cert);
            break;
        case 's':
            op = service_op(r, i, &x);
            certs_add(&trust, x);
            X509_free(x);
            break;
        case 'd':
            op = device_op(r, i);
            break;
        case 'p':
            op = pin_op(r, i);
            break;
        }
        json_object_set_new(found, PQgetvalue(r, i, 0), json_true());
        push_op(s, op);
    }
    PQclear(r);
    size_t idx;
    json_t *k;
    json_array_foreach(keys, idx, k)
    {
        const char *key = json_string_value(k);
        if (json_object_get(found, key))
            continue;
        struct pn_op *op = pn_op_new(table == 'c'   ? PN_OP_CA_DEL
                                     : table == 's' ? PN_OP_SERVICE_DEL
                                     : table == 'd' ? PN_OP_DEVICE_DEL
                                                    : PN_OP_PIN_DEL);
        if (!op)
            continue;
        if (table == 'c')
            op->text = strdup(key);
        else if (table == 'd')
            op->id = strtoll(key, NULL, 10);
        else if (hex32(key, op->bin) < 0) {
            pn_op_free(op);
            continue;
        }
        push_op(s, op);
    }
    json_decref(found);
    if (trust.n && pn_trust_sync(s->cfg.trust_dir, trust.v, trust.n, false, &err) < 0)
        logf_(s, PN_LOG_ERR, "pinion: %s", err.msg);
    certs_free(&trust);
    return 0;
}

/* Reads every pending NOTIFY ("<table> <op> <key>") and applies the
 * changes table by table: CAs and services first, then devices, then
 * pins, so a pin always finds its device. */
static int handle_notifies(struct pn_sync *s)
{
    json_t *seen = json_object();
    json_t *cas = json_array(), *svcs = json_array(), *devs = json_array(), *pins = json_array();
    PGnotify *n;
    int count = 0;
    int self = PQbackendPID(s->db);
    while ((n = PQnotifies(s->db))) {
        char table[64], op[16], key[80];
        /* This connection's own writes (pins and their JITP devices) were
         * queued as ops by persist_batch when they committed. */
        if (n->be_pid != self && sscanf(n->extra, "%63s %15s %79s", table, op, key) == 3) {
            char tagged[160];
            snprintf(tagged, sizeof(tagged), "%s %s", table, key);
            if (!json_object_get(seen, tagged)) {
                json_object_set_new(seen, tagged, json_true());
                if (strcmp(table, "ca_certificates") == 0)
                    json_array_append_new(cas, json_string(key));
                else if (strcmp(table, "service_identities") == 0)
                    json_array_append_new(svcs, json_string(key));
                else if (strcmp(table, "devices") == 0)
                    json_array_append_new(devs, json_string(key));
                else if (strcmp(table, "device_certificates") == 0)
                    json_array_append_new(pins, json_string(key));
            }
        }
        PQfreemem(n);
        count++;
    }
    int rc = 0;
    if (fetch_changed(s, cas, CA_SELECT BY_TEXT_KEYS, 'c') < 0 ||
        fetch_changed(s, svcs, SERVICE_SELECT BY_TEXT_KEYS, 's') < 0 ||
        fetch_changed(s, devs, DEVICE_SELECT BY_INT_KEYS, 'd') < 0 ||
        fetch_changed(s, pins, PIN_SELECT BY_TEXT_KEYS, 'p') < 0)
        rc = -1;
    json_decref(seen);
    json_decref(cas);
    json_decref(svcs);
    json_decref(devs);
    json_decref(pins);
    return rc < 0 ? -1 : count;
}

/* Undoes a pin the database would not take: the device is disconnected
 * and its in-memory pin dropped. */
static void unpin(struct pn_sync *s, const struct pn_pin_req *r, const char *why)
{
    struct pn_op *op = pn_op_new(PN_OP_PIN_DEL);
    if (op && hex32(r->cert_id, op->bin) == 0)
        push_op(s, op);
    else
        pn_op_free(op);
    op = pn_op_new(PN_OP_KICK);
    if (op) {
        op->text = strdup(r->identifier);
        push_op(s, op);
    }
    logf_(s, PN_LOG_WARNING, "pinion: refused certificate %s identifier %s: %s", r->cert_id,
          r->identifier, why);
}

static void publish_registration(struct pn_sync *s, const struct pn_pin_req *r,
                                 const char *org, long long pinned_ms)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:I}", "certificateId", r->cert_id,
                           "caCertificateId", r->ca_id, "deviceId", r->identifier, "orgId", org,
                           "timestamp", (json_int_t)pinned_ms, "certificateStatus", "ACTIVE",
                           "certificateRegistrationTimestamp", (json_int_t)pinned_ms);
    struct pn_op *op = pn_op_new(PN_OP_PUBLISH);
    char topic[256];
    snprintf(topic, sizeof(topic), "%s/" PN_EVENTS_LEVEL "/certificates/registered/%s",
             s->cfg.topic_root, r->ca_id);
    if (!ev || !op || !(op->payload = json_dumps(ev, JSON_COMPACT)) || !(op->text = strdup(topic))) {
        json_decref(ev);
        pn_op_free(op);
        return;
    }
    op->len = strlen(op->payload);
    json_decref(ev);
    push_op(s, op);
}

#define PIN_BATCH 256    /* pins per transaction at most */
#define PIN_LINGER_MS 20 /* a pin request waits this long for others to share its COMMIT */
#define PIN_CONFLICTS 20 /* conflicts a pin survives before it is refused */

/* A statement that lost a conflict (serialization failure, deadlock, lock
 * timeout): the same transaction is likely to pass a moment later. */
static bool conflict(const char *sqlstate)
{
    return !strcmp(sqlstate, "40001") || !strcmp(sqlstate, "40P01") ||
           !strcmp(sqlstate, "55P03");
}

/* What became of one pin request in a batch; acted on after COMMIT. */
struct pin_outcome {
    const char *why; /* refused: unpin with this reason (static or in msg) */
    char msg[128];
    bool stored;  /* stored: ops, registration event, log line */
    bool created; /* its device row was created here, first/last seen set */
    int64_t device_id, org_id, product_id;
    char org[128];
    long long pinned_ms;
    time_t not_after;
};

static int by_identifier(const void *a, const void *b)
{
    const struct pn_pin_req *x = *(const struct pn_pin_req *const *)a;
    const struct pn_pin_req *y = *(const struct pn_pin_req *const *)b;
    int c = strcmp(x->identifier, y->identifier);
    return c ? c : strcmp(x->cert_id, y->cert_id);
}

/* Keys of the batch as a PostgreSQL array literal (hex CA or certificate
 * ids, or device ids: nothing that needs quoting), for "= ANY ($1)",
 * which the planner turns into index lookups.  NULL when out of memory. */
static char *batch_keys(struct pn_pin_req **v, const struct pin_outcome *out, int n, char what)
{
    char *text = malloc((size_t)n * 66 + 3), *p = text;
    if (!text)
        return NULL;
    *p++ = '{';
    for (int i = 0; i < n; i++) {
        if (what == 'd' && (!out[i].stored || out[i].created))
            continue;
        if (p > text + 1)
            *p++ = ',';
        if (what == 'd')
            p += sprintf(p, "%lld", (long long)out[i].device_id);
        else
            p += sprintf(p, "%s", what == 'c' ? v[i]->ca_id : v[i]->cert_id);
    }
    *p++ = '}';
    *p = '\0';
    return text;
}

/* The rotation policy of admit.c, enforced again where pins are stored:
 * two brokers may each admit another key for one device at the same
 * moment, each right for what it knows.  The caller holds the device row
 * FOR UPDATE, so the pins of one device are stored one at a time and this
 * query (a new statement: READ COMMITTED gives it a new snapshot) sees
 * every pin committed before, and those stored earlier in this batch.  The
 * certificate itself is left out: it may be a retry, or the same
 * certificate pinned by another broker.  *why is set (static text) when
 * the policy refuses. */
static int rotation_check(struct pn_sync *s, const struct pn_pin_req *r, const char *device_id,
                          const char **why, struct pn_err *err)
{
    *why = NULL;
    if (s->cfg.rotation == PN_ROTATE_ANY)
        return 0;
    const char *v[] = {device_id, r->cert_id, r->spki};
    PGresult *res = pn_db_q_prepared(s->db, err, "pin_rotation", 3, v);
    if (!res)
        return -1;
    long long active = col_i64(res, 0, 0), same_key = col_i64(res, 0, 1);
    PQclear(res);
    if (active == 0)
        return 0;
    if (s->cfg.rotation == PN_ROTATE_NONE)
        *why = "device already has a pinned certificate (rotation none), pinned meanwhile by "
               "another broker";
    else if (same_key == 0)
        *why = "certificate has a different key than the device's pinned one (rotation "
               "same_key), pinned meanwhile by another broker";
    return 0;
}

/* Judges and stores one pin inside the batch's transaction (the CA rows
 * are locked, ca_status is this pin's CA's status, stored_ident the
 * identifier its certificate is already pinned to, or NULL).  Writes
 * nothing for a refused pin.  0, or -1 when a statement failed (err). */
static int persist_one(struct pn_sync *s, const struct pn_pin_req *r, const char *ca_status,
                       const char *stored_ident, struct pin_outcome *o, struct pn_err *err)
{
    PGresult *res = NULL;
    char org_id[24], product_id[24], device_id[24];
    bool created = false;
    snprintf(org_id, sizeof(org_id), "%lld", (long long)r->org_id);
    snprintf(product_id, sizeof(product_id), "%lld", (long long)r->product_id);

    /* A certificate already stored (a retry after a lost COMMIT answer, or
     * the same certificate pinned by another broker) is not judged again:
     * its row is the truth, and brokers follow it.  Read after the CA
     * lock: sees a pin another broker committed before a revocation that
     * this transaction waited for. */
    if (stored_ident) {
        if (strcmp(stored_ident, r->identifier) != 0)
            o->why = "certificate is pinned to another device";
        return 0;
    }
    if (strcmp(ca_status, "active") != 0) {
        snprintf(o->msg, sizeof(o->msg), "CA %.16s was %s before the pin was stored", r->ca_id,
                 ca_status[0] ? ca_status : "deleted");
        o->why = o->msg;
        return 0;
    }
    if (r->jitp_tags) {
        const char *v[] = {r->identifier, org_id, product_id, r->jitp_tags};
        if (!(res = pn_db_q_prepared(s->db, err, "pin_device_new", 4, v)))
            return -1;
        created = o->created = PQntuples(res) == 1;
    }
    if (!created) {
        PQclear(res);
        const char *dv[] = {r->identifier};
        if (!(res = pn_db_q_prepared(s->db, err, "pin_device", 1, dv)))
            return -1;
    }
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), org_id) != 0 ||
        PQgetvalue(res, 0, 2)[0] != 'a') {
        o->why = PQntuples(res) != 1               ? "device no longer exists"
                 : PQgetvalue(res, 0, 2)[0] != 'a' ? "device is revoked"
                                                   : "device belongs to another organisation";
        PQclear(res);
        return 0;
    }
    snprintf(device_id, sizeof(device_id), "%s", PQgetvalue(res, 0, 0));
    snprintf(o->org, sizeof(o->org), "%s", PQgetvalue(res, 0, 3));
    o->device_id = col_i64(res, 0, 0);
    o->org_id = col_i64(res, 0, 1);
    o->product_id = col_i64(res, 0, 4);
    PQclear(res);
    /* A device row this transaction created has no pins but those it
     * stores itself (nobody else can see the row before COMMIT). */
    if (!created && rotation_check(s, r, device_id, &o->why, err) < 0)
        return -1;
    if (o->why)
        return 0;

    char *der = malloc((size_t)r->derlen * 2 + 3);
    if (!der) {
        pn_err_set(err, "out of memory");
        return -1;
    }
    memcpy(der, "\\x", 2);
    sodium_bin2hex(der + 2, (size_t)r->derlen * 2 + 1, r->der, (size_t)r->derlen);
    const char *cv[] = {r->cert_id,
                        device_id,
                        r->ca_id,
                        r->serial,
                        r->ski[0] ? r->ski : NULL,
                        r->aki[0] ? r->aki : NULL,
                        r->spki,
                        r->not_before,
                        r->not_after,
                        der};
    res = pn_db_q_prepared(s->db, err, "pin_insert", 10, cv);
    free(der);
    if (!res)
        return -1;
    if (PQntuples(res) == 1) {
        o->stored = true;
        o->pinned_ms = atoll(PQgetvalue(res, 0, 0));
        o->not_after = (time_t)col_i64(res, 0, 1);
        PQclear(res);
        return 0;
    }
    PQclear(res);
    /* Stored meanwhile by another broker (it committed while this
     * transaction waited): fine if it is ours. */
    const char *mv[] = {r->cert_id, device_id};
    if (!(res = pn_db_q_prepared(s->db, err, "pin_mine", 2, mv)))
        return -1;
    bool mine = PQntuples(res) == 1;
    PQclear(res);
    if (!mine) {
        o->why = "certificate is pinned to another device";
        /* Only possible with identity client_id (one certificate, two
         * identifiers): the device row made for it must not stay. */
        const char *uv[] = {device_id};
        if (created && !(res = pn_db_q_prepared(s->db, err, "pin_device_undo", 1, uv)))
            return -1;
        PQclear(res);
    }
    return 0;
}

/* The common case of a first-connect storm, fast: JITP devices that do
 * not exist yet, each created with its pin by one statement for the whole
 * batch instead of two per pin (PostgreSQL's CPU per pin was the largest
 * cost of a storm beyond TLS, issue 13).  Only requests whose CA row is
 * locked and active and whose certificate is not stored yet take part, the
 * first of each identifier (a second certificate for a new device is judged
 * by the rotation policy in persist_one).  A device row created here has no
 * pins but its own, so the rotation rule holds; devices are inserted in
 * identifier order, as persist_one locks them.  done[i] is set for the
 * requests settled here; the others go through persist_one, which also
 * sees a device another broker created meanwhile.  0, or -1 (err). */
static int persist_new_devices(struct pn_sync *s, struct pn_pin_req **v, int n,
                               const char **status, const char **stored,
                               struct pin_outcome *out, bool *done, struct pn_err *err)
{
    json_t *rows = json_array();
    char *hex = NULL;
    int rc = -1, count = 0;
    if (!rows)
        goto oom;
    for (int i = 0; i < n; i++) {
        const struct pn_pin_req *r = v[i];
        if (!r->jitp_tags || stored[i] || strcmp(status[i], "active") != 0 ||
            (i > 0 && strcmp(v[i - 1]->identifier, r->identifier) == 0))
            continue;
        if (!(hex = malloc((size_t)r->derlen * 2 + 1)))
            goto oom;
        sodium_bin2hex(hex, (size_t)r->derlen * 2 + 1, r->der, (size_t)r->derlen);
        json_t *row = json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:s, s:s, s:s}",
                                "identifier", r->identifier, "org_id", (json_int_t)r->org_id,
                                "product_id", (json_int_t)r->product_id, "tags", r->jitp_tags,
                                "cert_id", r->cert_id, "ca_id", r->ca_id, "serial", r->serial,
                                "ski", r->ski[0] ? r->ski : NULL, "aki", r->aki[0] ? r->aki : NULL,
                                "spki", r->spki, "not_before", r->not_before, "not_after",
                                r->not_after, "der", hex);
        free(hex);
        hex = NULL;
        if (!row || json_array_append_new(rows, row) < 0)
            goto oom;
        count++;
    }
    if (count == 0) {
        json_decref(rows);
        return 0;
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    rows = NULL;
    if (!text)
        goto oom;
    const char *pv[] = {text};
    PGresult *res = pn_db_q_prepared(s->db, err, "pin_new_devices", 1, pv);
    free(text);
    if (!res)
        return -1;
    rc = 0;
    for (int row = 0; row < PQntuples(res) && rc == 0; row++) {
        const char *ident = PQgetvalue(res, row, 0);
        int i = 0;
        while (i < n && strcmp(v[i]->identifier, ident) != 0)
            i++;
        if (i == n)
            continue; /* cannot happen: the rows come from the requests */
        struct pin_outcome *o = &out[i];
        done[i] = true;
        o->created = true;
        o->device_id = col_i64(res, row, 1);
        o->org_id = col_i64(res, row, 2);
        snprintf(o->org, sizeof(o->org), "%s", PQgetvalue(res, row, 3));
        o->product_id = col_i64(res, row, 4);
        if (!PQgetisnull(res, row, 5) && strcmp(PQgetvalue(res, row, 5), v[i]->cert_id) == 0) {
            o->stored = true;
            o->pinned_ms = atoll(PQgetvalue(res, row, 6));
            o->not_after = (time_t)col_i64(res, row, 7);
            continue;
        }
        /* The certificate was pinned meanwhile, so to another device (this
         * one is new): the device row made for it must not stay. */
        o->why = "certificate is pinned to another device";
        char device_id[24];
        snprintf(device_id, sizeof(device_id), "%lld", (long long)o->device_id);
        const char *uv[] = {device_id};
        PGresult *u = pn_db_q_prepared(s->db, err, "pin_device_undo", 1, uv);
        if (!u)
            rc = -1;
        PQclear(u);
    }
    PQclear(res);
    return rc;
oom:
    free(hex);
    json_decref(rows);
    pn_err_set(err, "out of memory");
    return -1;
}

/* Persists up to PIN_BATCH pins (and their JITP devices) in one
 * transaction: one WAL flush for all of them instead of one each.
 * Returns 0 when done (stored, or refused for good), -1 when the
 * connection was lost and the requests should be retried.
 *
 * The broker admitted the certificates from memory, which may be behind
 * the database: the rules that depend on other writers are checked again
 * here, under locks, so that what is stored never breaks them (issue 10),
 * for each pin exactly as if it were alone:
 *  - the CA rows are read FOR SHARE (in id order).  `ca disable/revoke`
 *    lock their row FOR UPDATE first, so either this transaction commits
 *    before their cascade UPDATE runs (which then revokes the new pins), or
 *    it waits for them and then reads the new status (READ COMMITTED
 *    re-reads a row it waited for);
 *  - each device row is locked FOR UPDATE before its rotation check.
 * Pins are handled in identifier order, so brokers storing batches at the
 * same time lock device rows in one order.  A statement failing on the
 * server (say a deadlock, possible only with identity client_id and one
 * certificate under two identifiers) rolls the batch back; its pins are
 * then stored one per transaction, where such an error refuses that pin
 * alone.  Pins, devices and events reach the state as ops from here: the
 * NOTIFYs of this connection's own writes are not fetched again. */
static int persist_batch(struct pn_sync *s, struct pn_pin_req **v, int n)
{
    struct pn_err err;
    struct pin_outcome *out = calloc((size_t)n, sizeof(*out));
    const char **status = calloc((size_t)n, sizeof(*status));
    const char **stored = calloc((size_t)n, sizeof(*stored));
    bool *done = NULL;
    PGresult *cas = NULL, *known = NULL;
    char *ca_keys = batch_keys(v, NULL, n, 'c'), *cert_keys = batch_keys(v, NULL, n, 'k');
    int rc = 0;
    if (!out || !status || !stored || !ca_keys || !cert_keys) {
        pn_err_set(&err, "out of memory");
        goto fail;
    }
    qsort(v, (size_t)n, sizeof(*v), by_identifier);

    /* Explicit: the locking argument above needs READ COMMITTED, whatever
     * default_transaction_isolation says. */
    if (pn_db_cmd(s->db, &err, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL) < 0)
        goto fail;
    const char *cav[] = {ca_keys}, *cev[] = {cert_keys};
    if (!(cas = pn_db_q_prepared(s->db, &err, "pin_ca_lock", 1, cav)) ||
        !(known = pn_db_q_prepared(s->db, &err, "pin_stored", 1, cev)))
        goto fail;
    for (int i = 0; i < n; i++) {
        status[i] = "";
        for (int j = 0; j < PQntuples(cas); j++)
            if (strcmp(PQgetvalue(cas, j, 0), v[i]->ca_id) == 0)
                status[i] = PQgetvalue(cas, j, 1);
        for (int j = 0; j < PQntuples(known); j++)
            if (strcmp(PQgetvalue(known, j, 0), v[i]->cert_id) == 0)
                stored[i] = PQgetvalue(known, j, 1);
    }
    if (!(done = calloc((size_t)n, sizeof(*done))) ||
        persist_new_devices(s, v, n, status, stored, out, done, &err) < 0)
        goto fail;
    bool any = false; /* a stored pin whose device's last_seen must be set */
    for (int i = 0; i < n; i++) {
        if (!done[i] && persist_one(s, v[i], status[i], stored[i], &out[i], &err) < 0)
            goto fail;
        any |= out[i].stored && !out[i].created;
    }
    if (any) {
        char *ids = batch_keys(v, out, n, 'd');
        const char *sv[] = {ids};
        PGresult *res = NULL;
        if (!ids)
            pn_err_set(&err, "out of memory");
        else
            res = pn_db_q_prepared(s->db, &err, "pin_seen", 1, sv);
        free(ids);
        if (!res)
            goto fail;
        PQclear(res);
    }
    if (pn_db_commit(s->db, &err) < 0)
        goto fail;

    for (int i = 0; i < n; i++) {
        const struct pn_pin_req *r = v[i];
        if (out[i].why) {
            unpin(s, r, out[i].why);
            continue;
        }
        if (!out[i].stored)
            continue;
        struct pn_op *dop = pn_op_new(PN_OP_DEVICE_PUT), *pop = pn_op_new(PN_OP_PIN_PUT);
        if (dop && pop && (dop->text = strdup(r->identifier)) && hex32(r->cert_id, pop->bin) == 0 &&
            hex32(r->spki, pop->spki) == 0) {
            dop->id = pop->id = out[i].device_id;
            dop->org_id = out[i].org_id;
            dop->product_id = out[i].product_id;
            dop->status = pop->status = PN_ACTIVE;
            pop->not_after = out[i].not_after;
            push_op(s, dop);
            push_op(s, pop);
        } else {
            pn_op_free(dop);
            pn_op_free(pop);
        }
        publish_registration(s, r, out[i].org, out[i].pinned_ms);
        logf_(s, PN_LOG_NOTICE, "pinion: pinned certificate %s to device %s (CA %s)", r->cert_id,
              r->identifier, r->ca_id);
    }
    goto done;
fail:
    if (s->db && PQstatus(s->db) == CONNECTION_OK) {
        pn_db_rollback(s->db);
        if (n > 1) {
            /* One of them made the server refuse: one transaction each. */
            for (int i = 0; i < n && rc == 0; i++)
                rc = persist_batch(s, &v[i], 1);
            if (rc < 0) /* the rest is retried; those done are done again, idempotently */
                goto done;
        } else if (conflict(err.sqlstate) && ++v[0]->conflicts < PIN_CONFLICTS) {
            /* Not the pin's fault: the device keeps its session and the
             * batch is retried after PIN_LINGER_MS (persist_pins). */
            if (v[0]->conflicts == 1)
                logf_(s, PN_LOG_WARNING, "pinion: storing the pin of %s is retried: %s",
                      v[0]->identifier, err.msg);
            rc = -1;
        } else {
            /* The server answered: retrying would fail the same way. */
            unpin(s, v[0], err.msg);
        }
    } else {
        lost(s, err.msg);
        rc = -1;
    }
done:
    PQclear(cas);
    PQclear(known);
    free(ca_keys);
    free(cert_keys);
    free(out);
    free(status);
    free(stored);
    free(done);
    return rc;
}

/* Milliseconds until the queued pin requests are due (PIN_LINGER_MS after
 * the oldest, or at once when a batch is full); 1000 when none is queued. */
static int pins_due_ms(struct pn_sync *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nreqs;
    double since = s->reqs_since;
    pthread_mutex_unlock(&s->mu);
    if (n == 0)
        return 1000;
    if (n >= PIN_BATCH)
        return 0;
    double left = since + PIN_LINGER_MS / 1000.0 - mono_now();
    return left > 0 ? (int)(left * 1000) + 1 : 0;
}

/* Takes every queued pin request, once they are due, and stores them,
 * PIN_BATCH per transaction.  Waiting a few milliseconds for more makes a
 * first-connect storm cost one transaction (one WAL flush) per batch
 * instead of one per pin; each pin is still durable well within a second.
 * Returns how many requests it handled. */
static int persist_pins(struct pn_sync *s)
{
    int n = 0;
    if (pins_due_ms(s) > 0)
        return 0;
    pthread_mutex_lock(&s->mu);
    struct pn_pin_req *list = s->reqs;
    s->reqs = NULL;
    s->reqs_tail = &s->reqs;
    s->nreqs = 0;
    pthread_mutex_unlock(&s->mu);
    struct pn_pin_req *batch[PIN_BATCH];
    while (list) {
        int k = 0;
        struct pn_pin_req *rest = list;
        while (rest && k < PIN_BATCH) {
            batch[k++] = rest;
            rest = rest->next;
        }
        if (!s->db || persist_batch(s, batch, k) < 0) {
            /* Database gone: put them all back, in order, for later. */
            pthread_mutex_lock(&s->mu);
            struct pn_pin_req **tail = &list;
            if (s->nreqs == 0)
                s->reqs_since = mono_now();
            while (*tail) {
                tail = &(*tail)->next;
                s->nreqs++;
            }
            *tail = s->reqs;
            if (!s->reqs)
                s->reqs_tail = tail;
            s->reqs = list;
            pthread_mutex_unlock(&s->mu);
            return n;
        }
        for (int i = 0; i < k; i++)
            pn_pin_req_free(batch[i]);
        list = rest;
        n += k;
    }
    return n;
}

static void flush_seen(struct pn_sync *s)
{
    time_t now = time(NULL);
    if (now - s->last_seen_flush < SEEN_FLUSH_S)
        return;
    s->last_seen_flush = now;
    pthread_mutex_lock(&s->mu);
    json_t *devs = s->seen_dev, *certs = s->seen_cert;
    s->seen_dev = json_array();
    s->seen_cert = json_array();
    pthread_mutex_unlock(&s->mu);
    struct pn_err err;
    for (size_t off = 0; off < json_array_size(devs); off += BATCH) {
        json_t *d = json_array(), *c = json_array();
        for (size_t i = off; i < off + BATCH && i < json_array_size(devs); i++) {
            json_array_append(d, json_array_get(devs, i));
            json_array_append(c, json_array_get(certs, i));
        }
        char *dt = json_dumps(d, JSON_COMPACT), *ct = json_dumps(c, JSON_COMPACT);
        const char *dv[] = {dt}, *cv[] = {ct};
        if (pn_db_cmd(s->db, &err,
                      "UPDATE devices SET last_seen = now() WHERE identifier IN "
                      "(SELECT jsonb_array_elements_text($1::jsonb))",
                      1, dv) < 0 ||
            pn_db_cmd(s->db, &err,
                      "UPDATE device_certificates SET last_used = now() WHERE id IN "
                      "(SELECT jsonb_array_elements_text($1::jsonb))",
                      1, cv) < 0)
            logf_(s, PN_LOG_WARNING, "pinion: cannot record last_seen: %s", err.msg);
        free(dt);
        free(ct);
        json_decref(d);
        json_decref(c);
    }
    json_decref(devs);
    json_decref(certs);
}

static void drain_wake(struct pn_sync *s)
{
    char buf[64];
    while (read(s->wake[0], buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ;
}

/* Sleeps up to ms, or until woken. */
static void nap(struct pn_sync *s, int ms)
{
    struct pollfd p = {s->wake[0], POLLIN, 0};
    if (poll(&p, 1, ms) > 0)
        drain_wake(s);
}

static void *worker(void *arg)
{
    struct pn_sync *s = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int backoff = 250;
    /* After a pass that did work, libpq may already hold notifications it
     * read while answering our own queries; the socket will not signal
     * them again, so the next pass must not sleep. */
    int timeout = 1000;

    while (!atomic_load(&s->stop)) {
        if (!s->db) {
            struct pn_err err;
            if (connect_db(s, &err) < 0 || reload(s, &err) < 0) {
                if (strcmp(err.msg, s->last_error) != 0) {
                    logf_(s, PN_LOG_WARNING, "pinion: database unavailable, retrying: %s",
                          err.msg);
                    snprintf(s->last_error, sizeof(s->last_error), "%s", err.msg);
                }
                nap(s, backoff);
                backoff = backoff < 4000 ? backoff * 2 : 5000;
                continue;
            }
            backoff = 250;
            s->last_error[0] = '\0';
            atomic_store(&s->ready, true);
            logf_(s, PN_LOG_NOTICE, "pinion: database connected; state reloaded");
        }
        struct pollfd p[2] = {{PQsocket(s->db), POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR) {
            nap(s, 100);
            continue;
        }
        if (p[1].revents)
            drain_wake(s);
        empty_trash(s);
        if (!PQconsumeInput(s->db) || PQstatus(s->db) != CONNECTION_OK) {
            lost(s, PQerrorMessage(s->db));
            continue;
        }
        struct pn_err err;
        int notified = handle_notifies(s);
        if (notified < 0)
            continue;
        int pinned = persist_pins(s);
        if (!s->db)
            continue;
        /* Presence marks are flushed at least every 100 ms; pins when due. */
        int due = pins_due_ms(s);
        timeout = notified > 0 || pinned > 0 ? 0 : due < 100 ? due : 100;
        flush_seen(s);
        if (pn_presence_flush(s->presence, s->db, &err) < 0) {
            lost(s, err.msg);
            continue;
        }
        const char *conflict = pn_presence_conflict(s->presence);
        if (conflict)
            logf_(s, PN_LOG_ERR, "pinion: %s", conflict);
        if (pn_presence_dropped(s->presence))
            logf_(s, PN_LOG_WARNING, "pinion: too many presence marks pending; some were lost");
        if (s->cfg.resync_s > 0 && time(NULL) - s->last_full >= s->cfg.resync_s)
            reload(s, &err);
    }
    return NULL;
}

int pn_sync_start(struct pn_sync *s, struct pn_err *err)
{
    if (pthread_create(&s->thread, NULL, worker, s) != 0)
        return pn_err_set(err, "cannot start the worker thread");
    s->started = true;
    return 0;
}

void pn_sync_free(struct pn_sync *s)
{
    if (!s)
        return;
    if (s->started) {
        atomic_store(&s->stop, true);
        wake(s);
        pthread_join(s->thread, NULL);
    }
    if (s->db && s->registered)
        pn_presence_unregister(s->presence, s->db);
    if (s->db)
        PQfinish(s->db);
    pn_presence_free(s->presence);
    struct pn_op *op = s->ops;
    while (op) {
        struct pn_op *next = op->next;
        pn_op_free(op);
        op = next;
    }
    empty_trash(s);
    struct pn_pin_req *r = s->reqs;
    while (r) {
        struct pn_pin_req *next = r->next;
        pn_pin_req_free(r);
        r = next;
    }
    json_decref(s->seen_dev);
    json_decref(s->seen_cert);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    pthread_mutex_destroy(&s->mu);
    free((char *)s->cfg.conninfo);
    free((char *)s->cfg.trust_dir);
    free((char *)s->cfg.topic_root);
    free(s);
}
