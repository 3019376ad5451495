/* SPDX-License-Identifier: Apache-2.0 */
/* Writing to the database from the worker: pins (and the JITP devices
 * they create) in batches, with the rules another broker could break
 * checked again under locks; the registration event of each new pin; and
 * the last-seen marks.  Pins reach the state as ops from here. */
#include <stdio.h>

#include "db.h"
#include "ident.h"
#include "sync_internal.h"

#define SEEN_FLUSH_S 1 /* last_seen writes are batched at most once a second */
/* last_seen and last_used are kept to the minute: a connect within a
 * minute of the stored time does not write the row again.  A broker
 * restart's reconnect storm then costs PostgreSQL no row versions, index
 * entries or WAL for them (two thirds of its work per pinned connect:
 * 0.046 of 0.055 ms in pg_stat_statements). */
#define SEEN_GRAIN "interval '1 minute'"
#define BATCH 5000 /* keys per statement */

/* The statements that store pins, planned once per connection (parsing
 * and planning them was most of the database's work per pin).  Every
 * device row is locked FOR UPDATE before its pins are judged; see
 * persist_batch. */
#define PIN_SQL_CA_LOCK                                                                            \
    "SELECT id, status FROM ca_certificates WHERE id = ANY ($1::text[]) ORDER BY id FOR SHARE"
/* The device by a subquery, not a join: one index lookup per stored
 * certificate whatever the statistics say, where a join leaves the planner
 * free to hash the whole devices table (the tables of a fleet switching to
 * Pinion start empty, with no statistics). */
#define PIN_SQL_STORED                                                                             \
    "SELECT c.id, (SELECT d.identifier FROM devices d WHERE d.id = c.device_id) FROM "             \
    "device_certificates c WHERE c.id = ANY ($1::text[])"
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
    "SELECT identifier, org_id, product_id, ARRAY(SELECT "                                         \
    "jsonb_array_elements_text(tags::jsonb)), "                                                    \
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
    "now()) ON CONFLICT (id) DO NOTHING RETURNING (extract(epoch FROM pinned_at) * "               \
    "1000)::bigint, "                                                                              \
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

int pn_persist_prepare(PGconn *db, struct pn_err *err)
{
    for (size_t i = 0; i < sizeof(pin_sql) / sizeof(pin_sql[0]); i++)
        if (pn_db_prepare(db, err, pin_sql[i].name, pin_sql[i].sql, pin_sql[i].n) < 0)
            return -1;
    return 0;
}

/* Undoes a pin the database would not take: the device is disconnected
 * and its in-memory pin dropped. */
static void unpin(struct pn_sync *s, const struct pn_pin_req *r, const char *why)
{
    struct pn_op *op = pn_op_new(PN_OP_PIN_DEL);
    if (op && pn_hex32(r->cert_id, op->bin) == 0)
        pn_sync_push(s, op);
    else
        pn_op_free(op);
    op = pn_op_new(PN_OP_KICK);
    if (op) {
        op->text = strdup(r->identifier);
        pn_sync_push(s, op);
    }
    pn_sync_log(s, PN_LOG_WARNING, "pinion: refused certificate %s identifier %s: %s", r->cert_id,
                r->identifier, why);
}

static void publish_registration(struct pn_sync *s, const struct pn_pin_req *r, const char *org,
                                 long long pinned_ms)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:I}", "certificateId", r->cert_id,
                           "caCertificateId", r->ca_id, "deviceId", r->identifier, "orgId", org,
                           "timestamp", (json_int_t)pinned_ms, "certificateStatus", "ACTIVE",
                           "certificateRegistrationTimestamp", (json_int_t)pinned_ms);
    struct pn_op *op = pn_op_new(PN_OP_PUBLISH);
    char topic[256];
    snprintf(topic, sizeof(topic), "%s/" PN_EVENTS_LEVEL "/certificates/registered/%s",
             s->cfg.topic_root, r->ca_id);
    if (!ev || !op || !(op->payload = json_dumps(ev, JSON_COMPACT)) ||
        !(op->text = strdup(topic))) {
        json_decref(ev);
        pn_op_free(op);
        return;
    }
    op->len = strlen(op->payload);
    json_decref(ev);
    pn_sync_push(s, op);
}

#define PIN_CONFLICTS 20 /* conflicts a pin survives before it is refused */
#define RETRY -2         /* persist_batch: lost a conflict, the connection is fine */

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
    long long active = pn_col_i64(res, 0, 0), same_key = pn_col_i64(res, 0, 1);
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
    o->device_id = pn_col_i64(res, 0, 0);
    o->org_id = pn_col_i64(res, 0, 1);
    o->product_id = pn_col_i64(res, 0, 4);
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
        o->not_after = (time_t)pn_col_i64(res, 0, 1);
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
static int persist_new_devices(struct pn_sync *s, struct pn_pin_req **v, int n, const char **status,
                               const char **stored, struct pin_outcome *out, bool *done,
                               struct pn_err *err)
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
        json_t *row = json_pack(
            "{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:s, s:s, s:s}", "identifier",
            r->identifier, "org_id", (json_int_t)r->org_id, "product_id", (json_int_t)r->product_id,
            "tags", r->jitp_tags, "cert_id", r->cert_id, "ca_id", r->ca_id, "serial", r->serial,
            "ski", r->ski[0] ? r->ski : NULL, "aki", r->aki[0] ? r->aki : NULL, "spki", r->spki,
            "not_before", r->not_before, "not_after", r->not_after, "der", hex);
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
        o->device_id = pn_col_i64(res, row, 1);
        o->org_id = pn_col_i64(res, row, 2);
        snprintf(o->org, sizeof(o->org), "%s", PQgetvalue(res, row, 3));
        o->product_id = pn_col_i64(res, row, 4);
        if (!PQgetisnull(res, row, 5) && strcmp(PQgetvalue(res, row, 5), v[i]->cert_id) == 0) {
            o->stored = true;
            o->pinned_ms = atoll(PQgetvalue(res, row, 6));
            o->not_after = (time_t)pn_col_i64(res, row, 7);
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
 * Returns 0 when done (stored, or refused for good), -1 with err when the
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
static int persist_batch(struct pn_sync *s, struct pn_pin_req **v, int n, struct pn_err *err)
{
    struct pin_outcome *out = calloc((size_t)n, sizeof(*out));
    const char **status = calloc((size_t)n, sizeof(*status));
    const char **stored = calloc((size_t)n, sizeof(*stored));
    bool *done = NULL;
    PGresult *cas = NULL, *known = NULL;
    char *ca_keys = batch_keys(v, NULL, n, 'c'), *cert_keys = batch_keys(v, NULL, n, 'k');
    int rc = 0;
    if (!out || !status || !stored || !ca_keys || !cert_keys) {
        pn_err_set(err, "out of memory");
        goto fail;
    }
    qsort(v, (size_t)n, sizeof(*v), by_identifier);

    /* Explicit: the locking argument above needs READ COMMITTED, whatever
     * default_transaction_isolation says. */
    if (pn_db_cmd(s->db, err, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL) < 0)
        goto fail;
    const char *cav[] = {ca_keys}, *cev[] = {cert_keys};
    if (!(cas = pn_db_q_prepared(s->db, err, "pin_ca_lock", 1, cav)) ||
        !(known = pn_db_q_prepared(s->db, err, "pin_stored", 1, cev)))
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
        persist_new_devices(s, v, n, status, stored, out, done, err) < 0)
        goto fail;
    bool any = false; /* a stored pin whose device's last_seen must be set */
    for (int i = 0; i < n; i++) {
        if (!done[i] && persist_one(s, v[i], status[i], stored[i], &out[i], err) < 0)
            goto fail;
        any |= out[i].stored && !out[i].created;
    }
    if (any) {
        char *ids = batch_keys(v, out, n, 'd');
        const char *sv[] = {ids};
        PGresult *res = NULL;
        if (!ids)
            pn_err_set(err, "out of memory");
        else
            res = pn_db_q_prepared(s->db, err, "pin_seen", 1, sv);
        free(ids);
        if (!res)
            goto fail;
        PQclear(res);
    }
    if (pn_db_commit(s->db, err) < 0)
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
        if (dop && pop && (dop->text = strdup(r->identifier)) &&
            pn_hex32(r->cert_id, pop->bin) == 0 && pn_hex32(r->spki, pop->spki) == 0) {
            dop->id = pop->id = out[i].device_id;
            dop->org_id = out[i].org_id;
            dop->product_id = out[i].product_id;
            dop->status = pop->status = PN_ACTIVE;
            pop->not_after = out[i].not_after;
            pn_sync_push(s, dop);
            pn_sync_push(s, pop);
        } else {
            pn_op_free(dop);
            pn_op_free(pop);
        }
        s->pins_since_analyze++;
        publish_registration(s, r, out[i].org, out[i].pinned_ms);
        pn_sync_log(s, PN_LOG_NOTICE, "pinion: pinned certificate %s to device %s (CA %s)",
                    r->cert_id, r->identifier, r->ca_id);
    }
    goto done;
fail:
    if (s->db && PQstatus(s->db) == CONNECTION_OK) {
        pn_db_rollback(s->db);
        if (n > 1) {
            /* One of them made the server refuse: one transaction each. */
            for (int i = 0; i < n && rc == 0; i++)
                rc = persist_batch(s, &v[i], 1, err);
            if (rc < 0) /* the rest is retried; those done are done again, idempotently */
                goto done;
        } else if (pn_db_conflict(err->sqlstate) && ++v[0]->conflicts < PIN_CONFLICTS) {
            /* Not the pin's fault: the device keeps its session and the
             * batch is retried after PIN_LINGER_MS (pn_persist_pins). */
            if (v[0]->conflicts == 1)
                pn_sync_log(s, PN_LOG_WARNING, "pinion: storing the pin of %s is retried: %s",
                            v[0]->identifier, err->msg);
            rc = RETRY;
        } else {
            /* The server answered: retrying would fail the same way. */
            unpin(s, v[0], err->msg);
        }
    } else {
        rc = -1; /* the connection failed: err says how */
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

/* Takes every queued pin request, once they are due, and stores them,
 * PIN_BATCH per transaction.  Waiting a few milliseconds for more makes a
 * first-connect storm cost one transaction (one WAL flush) per batch
 * instead of one per pin; each pin is still durable well within a second. */
int pn_persist_pins(struct pn_sync *s, struct pn_err *err)
{
    int n = 0;
    if (pn_sync_pins_due_ms(s) > 0)
        return 0;
    struct pn_pin_req *list = pn_sync_take_pins(s);
    struct pn_pin_req *batch[PIN_BATCH];
    while (list) {
        int k = 0;
        struct pn_pin_req *rest = list;
        while (rest && k < PIN_BATCH) {
            batch[k++] = rest;
            rest = rest->next;
        }
        if (!s->db)
            pn_err_set(err, "not connected");
        int rc = s->db ? persist_batch(s, batch, k, err) : -1;
        if (rc < 0) {
            /* Database gone, or a conflict lost: put them all back, in
             * order, for later (PIN_LINGER_MS). */
            pn_sync_return_pins(s, list);
            return rc == RETRY ? n : -1;
        }
        for (int i = 0; i < k; i++)
            pn_pin_req_free(batch[i]);
        list = rest;
        n += k;
    }
    return n;
}

/* A fleet switching to Pinion starts from nearly empty tables, and
 * PostgreSQL plans the foreign-key checks of this connection's inserts once,
 * for the table as it was then: a sequential scan of `devices` for every
 * pin, growing with the storm, until autovacuum's ANALYZE (up to a minute
 * later) has them planned again.  Measured with pg_stat_statements in a
 * 2,000-device storm from empty tables: the check took 0.048 ms a pin
 * instead of 0.002.  So the worker analyzes the tables itself once it has
 * stored ANALYZE_MIN pins and then whenever its pins have grown the table by
 * a fifth.  Without owning the tables ANALYZE only warns, and nothing changes. */
#define ANALYZE_MIN 500

bool pn_persist_measure(struct pn_sync *s)
{
    PGresult *r = PQexec(s->db, "SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = "
                                "'device_certificates'::regclass");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        s->pins_at_analyze = atof(PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok;
}

void pn_persist_analyze(struct pn_sync *s)
{
    if (!s->db || s->pins_since_analyze < ANALYZE_MIN ||
        s->pins_since_analyze * 5.0 < s->pins_at_analyze)
        return;
    PGresult *r = PQexec(s->db, "SET client_min_messages = error; "
                                "ANALYZE devices, device_certificates, device_presence; "
                                "RESET client_min_messages");
    PQclear(r);
    if (!pn_persist_measure(s))
        s->pins_at_analyze += (double)s->pins_since_analyze;
    s->pins_since_analyze = 0;
}

void pn_persist_seen(struct pn_sync *s)
{
    time_t now = time(NULL);
    if (now - s->last_seen_flush < SEEN_FLUSH_S)
        return;
    s->last_seen_flush = now;
    json_t *devs, *certs;
    pn_sync_take_seen(s, &devs, &certs);
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
                      "(SELECT jsonb_array_elements_text($1::jsonb)) AND "
                      "(last_seen IS NULL OR last_seen < now() - " SEEN_GRAIN ")",
                      1, dv) < 0 ||
            pn_db_cmd(s->db, &err,
                      "UPDATE device_certificates SET last_used = now() WHERE id IN "
                      "(SELECT jsonb_array_elements_text($1::jsonb)) AND "
                      "(last_used IS NULL OR last_used < now() - " SEEN_GRAIN ")",
                      1, cv) < 0)
            pn_sync_log(s, PN_LOG_WARNING, "pinion: cannot record last_seen: %s", err.msg);
        free(dt);
        free(ct);
        json_decref(d);
        json_decref(c);
    }
    json_decref(devs);
    json_decref(certs);
}
