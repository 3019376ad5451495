/* SPDX-License-Identifier: Apache-2.0 */
/* Reading the database into ops: rows -> ops, the full load into a new
 * state, and the rows whose changes were notified (LISTEN pinion: the
 * triggers of schema/ send "<table> <op> <key>"). */
#include <stdio.h>

#include "cert.h"
#include "db.h"
#include "sync_internal.h"
#include "trust.h"

#define CA_SELECT                                                                                  \
    "SELECT id, org_id, status, der, coalesce(jitp_product_id, 0), "                               \
    "array_to_json(jitp_tags)::text, extract(epoch FROM not_before)::bigint, "                     \
    "extract(epoch FROM not_after)::bigint FROM ca_certificates"
#define DEVICE_SELECT "SELECT id, identifier, org_id, product_id, status FROM devices"
#define PIN_SELECT                                                                                 \
    "SELECT id, device_id, status, extract(epoch FROM not_after)::bigint, spki_sha256 "            \
    "FROM device_certificates"
#define SERVICE_SELECT                                                                             \
    "SELECT id, name, extract(epoch FROM not_after)::bigint, der, status "                         \
    "FROM service_identities"
/* Pinned certificates whose CA row was deleted (docs/protocol.md, "Admission": they are still
 * admitted): each goes into the trust directory as its own anchor (partial
 * chains are allowed), else TLS would refuse them once the CA's file is
 * gone, i.e. after the next start. */
#define ORPHAN_PIN_SELECT                                                                          \
    "SELECT der FROM device_certificates WHERE ca_id IS NULL AND status = 'active'"
#define BY_TEXT_KEYS " WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))"
#define BY_INT_KEYS " WHERE id IN (SELECT (jsonb_array_elements_text($1::jsonb))::bigint)"

/* ------------------------------------------------------------ row -> op */

static void certs_add(struct pn_certs *c, X509 *x)
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

void pn_certs_free(struct pn_certs *c)
{
    for (size_t i = 0; i < c->n; i++)
        X509_free(c->v[i]);
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}

static X509 *col_cert(PGresult *r, int row, int col)
{
    size_t len = 0;
    unsigned char *der = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &len);
    X509 *x = der ? pn_cert_parse(der, len, "database", NULL) : NULL;
    PQfreemem(der);
    return x;
}

/* Each row function makes the PUT op of row i (NULL when the row is
 * unusable) and adds the certificates the trust directory needs from it
 * to trust (NULL for the kinds that have none: devices, pins). */
static struct pn_op *ca_op(PGresult *r, int i, struct pn_certs *trust)
{
    struct pn_op *op = pn_op_new(PN_OP_CA_PUT);
    struct pn_ca *ca = calloc(1, sizeof(*ca));
    if (!op || !ca)
        goto fail;
    snprintf(ca->id, sizeof(ca->id), "%s", PQgetvalue(r, i, 0));
    ca->org_id = pn_col_i64(r, i, 1);
    ca->status = PQgetvalue(r, i, 2)[0] == 'a'   ? PN_ACTIVE
                 : PQgetvalue(r, i, 2)[0] == 'd' ? PN_DISABLED
                                                 : PN_REVOKED;
    ca->cert = col_cert(r, i, 3);
    ca->jitp_product_id = pn_col_i64(r, i, 4);
    ca->jitp_tags = strdup(PQgetvalue(r, i, 5));
    ca->not_before = (time_t)pn_col_i64(r, i, 6);
    ca->not_after = (time_t)pn_col_i64(r, i, 7);
    if (!ca->cert || !ca->jitp_tags)
        goto fail;
    op->ca = ca;
    certs_add(trust, ca->cert);
    return op;
fail:
    pn_ca_free(ca);
    pn_op_free(op);
    return NULL;
}

static struct pn_op *device_op(PGresult *r, int i, struct pn_certs *trust)
{
    (void)trust;
    struct pn_op *op = pn_op_new(PN_OP_DEVICE_PUT);
    if (!op)
        return NULL;
    op->id = pn_col_i64(r, i, 0);
    op->text = strdup(PQgetvalue(r, i, 1));
    op->org_id = pn_col_i64(r, i, 2);
    op->product_id = pn_col_i64(r, i, 3);
    op->status = PQgetvalue(r, i, 4)[0] == 'a' ? PN_ACTIVE : PN_REVOKED;
    if (!op->text) {
        pn_op_free(op);
        return NULL;
    }
    return op;
}

static struct pn_op *pin_op(PGresult *r, int i, struct pn_certs *trust)
{
    (void)trust;
    struct pn_op *op = pn_op_new(PN_OP_PIN_PUT);
    if (!op)
        return NULL;
    op->id = pn_col_i64(r, i, 1);
    op->status = PQgetvalue(r, i, 2)[0] == 'a' ? PN_ACTIVE : PN_REVOKED;
    op->not_after = (time_t)pn_col_i64(r, i, 3);
    if (pn_hex32(PQgetvalue(r, i, 0), op->bin) < 0 || pn_hex32(PQgetvalue(r, i, 4), op->spki) < 0) {
        pn_op_free(op);
        return NULL;
    }
    return op;
}

static struct pn_op *service_op(PGresult *r, int i, struct pn_certs *trust)
{
    struct pn_op *op = pn_op_new(PN_OP_SERVICE_PUT);
    if (!op)
        return NULL;
    op->text = strdup(PQgetvalue(r, i, 1));
    op->not_after = (time_t)pn_col_i64(r, i, 2);
    op->status = PQgetvalue(r, i, 4)[0] == 'a' ? PN_ACTIVE : PN_REVOKED;
    X509 *cert = col_cert(r, i, 3);
    if (!op->text || pn_hex32(PQgetvalue(r, i, 0), op->bin) < 0) {
        X509_free(cert);
        pn_op_free(op);
        return NULL;
    }
    certs_add(trust, cert);
    X509_free(cert);
    return op;
}

/* The key of a DEL op, from the notified key.  0 / -1 (unusable key). */
static int text_key(const char *key, struct pn_op *op)
{
    return (op->text = strdup(key)) ? 0 : -1;
}

static int int_key(const char *key, struct pn_op *op)
{
    op->id = strtoll(key, NULL, 10);
    return 0;
}

static int hex_key(const char *key, struct pn_op *op)
{
    return pn_hex32(key, op->bin);
}

/* The tables the worker follows, in the order their changes are applied:
 * CAs and services first, then devices, then pins, so a pin always finds
 * its device. */
static const struct table_kind {
    const char *table;   /* as named in a NOTIFY */
    const char *by_keys; /* its rows by a JSON array of keys ($1) */
    struct pn_op *(*row)(PGresult *r, int i, struct pn_certs *trust);
    enum pn_op_kind del; /* the op for a key whose row is gone */
    int (*key)(const char *key, struct pn_op *op);
} kinds[] = {
    {"ca_certificates", CA_SELECT BY_TEXT_KEYS, ca_op, PN_OP_CA_DEL, text_key},
    {"service_identities", SERVICE_SELECT BY_TEXT_KEYS, service_op, PN_OP_SERVICE_DEL, hex_key},
    {"devices", DEVICE_SELECT BY_INT_KEYS, device_op, PN_OP_DEVICE_DEL, int_key},
    {"device_certificates", PIN_SELECT BY_TEXT_KEYS, pin_op, PN_OP_PIN_DEL, hex_key},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

/* --------------------------------------------------------------- loading */

/* Streams a query row by row (single-row mode) so that a million pins
 * never sit in one PGresult. */
static int stream(PGconn *db, struct pn_err *err, const char *sql, struct pn_state *st,
                  struct pn_op *(*row)(PGresult *, int, struct pn_certs *))
{
    if (!PQsendQueryParams(db, sql, 0, NULL, NULL, NULL, NULL, 0) || !PQsetSingleRowMode(db))
        return pn_err_set(err, "database: %s", PQerrorMessage(db));
    int rc = 0;
    PGresult *r;
    while ((r = PQgetResult(db))) {
        ExecStatusType t = PQresultStatus(r);
        if (t == PGRES_SINGLE_TUPLE) {
            struct pn_op *op = row(r, 0, NULL);
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

/* Applies every row of a query (few rows: CAs, services) to st. */
static int load_rows(PGconn *db, const char *sql, struct pn_state *st, struct pn_certs *trust,
                     struct pn_op *(*row)(PGresult *, int, struct pn_certs *), struct pn_err *err)
{
    PGresult *r = pn_db_q(db, err, sql, 0, NULL);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        struct pn_op *op = row(r, i, trust);
        if (op)
            pn_apply_op(&st, op, NULL, NULL);
        pn_op_free(op);
    }
    PQclear(r);
    return 0;
}

struct pn_state *pn_load_all(PGconn *db, struct pn_certs *trust, struct pn_err *err)
{
    struct pn_state *st = NULL;
    PGresult *r = NULL;

    if (pn_db_cmd(db, err, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) < 0)
        return NULL;
    r = pn_db_q(db, err, "SELECT count(*) FROM device_certificates", 0, NULL);
    if (!r)
        goto fail;
    st = pn_state_new((size_t)pn_col_i64(r, 0, 0) + 1024);
    PQclear(r);
    r = NULL;
    if (!st) {
        pn_err_set(err, "out of memory");
        goto fail;
    }
    if (load_rows(db, CA_SELECT, st, trust, ca_op, err) < 0 ||
        load_rows(db, SERVICE_SELECT, st, trust, service_op, err) < 0)
        goto fail;
    if (!(r = pn_db_q(db, err, ORPHAN_PIN_SELECT, 0, NULL)))
        goto fail;
    for (int i = 0; i < PQntuples(r); i++) {
        X509 *x = col_cert(r, i, 0);
        certs_add(trust, x);
        X509_free(x);
    }
    PQclear(r);
    r = NULL;
    if (stream(db, err, DEVICE_SELECT, st, device_op) < 0 ||
        stream(db, err, PIN_SELECT, st, pin_op) < 0)
        goto fail;
    if (pn_db_commit(db, err) < 0)
        goto fail;
    return st;
fail:
    PQclear(r);
    pn_db_rollback(db);
    pn_state_free(st);
    return NULL;
}

/* ------------------------------------------------------ notified changes */

/* Fetches the rows of kind k whose keys were notified and queues PUT ops
 * for those found and DEL ops for those gone.  -1 with err when the query
 * failed. */
static int fetch_changed(struct pn_sync *s, const struct table_kind *k, json_t *keys,
                         struct pn_err *err)
{
    if (json_array_size(keys) == 0)
        return 0;
    char *text = json_dumps(keys, JSON_COMPACT);
    const char *v[] = {text};
    PGresult *r = pn_db_q(s->db, err, k->by_keys, 1, v);
    free(text);
    if (!r)
        return -1;
    struct pn_certs trust = {0};
    json_t *found = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        json_object_set_new(found, PQgetvalue(r, i, 0), json_true());
        pn_sync_push(s, k->row(r, i, &trust));
    }
    PQclear(r);
    size_t idx;
    json_t *jk;
    json_array_foreach(keys, idx, jk)
    {
        const char *key = json_string_value(jk);
        if (json_object_get(found, key))
            continue;
        struct pn_op *op = pn_op_new(k->del);
        if (!op)
            continue;
        if (k->key(key, op) < 0) {
            pn_op_free(op);
            continue;
        }
        pn_sync_push(s, op);
    }
    json_decref(found);
    struct pn_err terr;
    if (trust.n && pn_trust_sync(s->cfg.trust_dir, trust.v, trust.n, false, &terr) < 0)
        pn_sync_log(s, PN_LOG_ERR, "pinion: %s", terr.msg);
    pn_certs_free(&trust);
    return 0;
}

/* Reads every pending NOTIFY ("<table> <op> <key>"), each key once, and
 * applies the changes kind by kind, in the order of kinds[]. */
int pn_load_notified(struct pn_sync *s, struct pn_err *err)
{
    json_t *seen = json_object();
    json_t *keys[NKINDS];
    for (size_t k = 0; k < NKINDS; k++)
        keys[k] = json_array();
    PGnotify *n;
    int count = 0;
    int self = PQbackendPID(s->db);
    while ((n = PQnotifies(s->db))) {
        char table[64], op[16], key[80];
        /* This connection's own writes (pins and their JITP devices) were
         * queued as ops by persist.c when they committed. */
        if (n->be_pid != self && sscanf(n->extra, "%63s %15s %79s", table, op, key) == 3) {
            char tagged[160];
            snprintf(tagged, sizeof(tagged), "%s %s", table, key);
            if (!json_object_get(seen, tagged)) {
                json_object_set_new(seen, tagged, json_true());
                for (size_t k = 0; k < NKINDS; k++)
                    if (strcmp(table, kinds[k].table) == 0)
                        json_array_append_new(keys[k], json_string(key));
            }
        }
        PQfreemem(n);
        count++;
    }
    int rc = 0;
    for (size_t k = 0; k < NKINDS && rc == 0; k++)
        rc = fetch_changed(s, &kinds[k], keys[k], err);
    json_decref(seen);
    for (size_t k = 0; k < NKINDS; k++)
        json_decref(keys[k]);
    return rc < 0 ? -1 : count;
}
