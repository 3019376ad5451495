/* SPDX-License-Identifier: Apache-2.0 */
/* What devices report on R/<id>/up/status: their firmware (used to target
 * deployments) and the progress of an update.  A device is done when it
 * reports the released firmware's uuid; a `failed` report costs an attempt,
 * and after max_attempts the device is held back for `penalty` seconds and
 * counts against the deployment, which pauses itself at max-failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "messages.h"
#include "piniond.h"

/* Runs of one status transaction before the report is given up: a run
 * PostgreSQL aborts as a deadlock victim or for a serialization failure
 * is run again (the message is not dropped). */
#define STATUS_TRIES 5

/* One run of the status transaction: its connection, and the SQLSTATE of
 * the statement that failed ("" if none). */
struct txn {
    PGconn *db;
    char sqlstate[6];
};

static PGresult *tq(struct txn *t, struct pn_err *err, const char *sql, int n, const char *const *v)
{
    return pn_db_exec(t->db, err, sql, n, v, NULL, NULL, t->sqlstate);
}

static int tcmd(struct txn *t, struct pn_err *err, const char *sql, int n, const char *const *v)
{
    PGresult *r = tq(t, err, sql, n, v);
    PQclear(r);
    return r ? 0 : -1;
}

/* Brokers whose retained manifest one report may clear (one per ended
 * update recorded on a distinct broker; one is the norm). */
#define CLEARS_MAX 8

/* What a committed status run leaves to do after its commit. */
struct status_done {
    bool clear;
    /* The brokers holding the retained manifests of the updates it ended,
     * each its own: a device's other update in flight may be recorded on
     * another broker, whose manifest is not the one that ended. */
    int nclear;
    char clear_on[CLEARS_MAX][65];
    unsigned long completed, failed, held_back;
};

/* Row i of the in-flight updates ended: its manifest is to be cleared. */
static void clear_later(struct status_done *done, PGresult *r, int i)
{
    done->clear = true;
    if (PQgetisnull(r, i, 4))
        return; /* published nowhere */
    const char *broker = PQgetvalue(r, i, 4);
    for (int k = 0; k < done->nclear; k++)
        if (strcmp(done->clear_on[k], broker) == 0)
            return;
    if (done->nclear < CLEARS_MAX)
        snprintf(done->clear_on[done->nclear++], sizeof(done->clear_on[0]), "%s", broker);
}

/* One run of the status transaction.  Locks, in the order every writer of
 * these rows takes them (rollout.c's reissue too): the device's row, then
 * its in-flight device_updates, then their deployments.  0 recorded, 1 no
 * such active device (rolled back), -1 failed (rolled back; err, and
 * t->sqlstate says whether a new run may succeed). */
static int record_status(struct pd *pd, struct txn *t, const char *identifier,
                         const struct pd_status *st, struct status_done *done, struct pn_err *err)
{
    const char *uuid = st->uuid, *state = st->state, *reason = st->reason;
    bool fw = st->has_firmware;
    memset(done, 0, sizeof(*done));
    t->sqlstate[0] = '\0';
    if (tcmd(t, err, "BEGIN", 0, NULL) < 0)
        goto dberr;
    /* A report's firmware object replaces all four fields together (an
     * absent one becomes unknown), so they never describe two firmwares. */
    const char *dv[] = {identifier,       uuid,          st->version, st->platform,
                        st->architecture, fw ? "t" : "f"};
    PGresult *r = tq(t, err,
                     "UPDATE devices SET last_seen = now(), "
                     "firmware_uuid = CASE WHEN $6::bool THEN $2 ELSE firmware_uuid END, "
                     "firmware_version = CASE WHEN $6::bool THEN $3 ELSE firmware_version END, "
                     "firmware_platform = CASE WHEN $6::bool THEN $4 "
                     "ELSE firmware_platform END, "
                     "firmware_architecture = CASE WHEN $6::bool THEN $5 "
                     "ELSE firmware_architecture END "
                     "WHERE identifier = $1 AND status = 'active' RETURNING id",
                     6, dv);
    if (!r)
        goto dberr;
    if (PQntuples(r) != 1) {
        PQclear(r);
        pn_db_rollback(pd->db);
        return 1;
    }
    char device_id[24];
    snprintf(device_id, sizeof(device_id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);

    const char *uv[] = {device_id};
    r = tq(t, err,
           "SELECT u.deployment_id, u.attempts, f.uuid, dp.name, u.broker_id "
           "FROM device_updates u "
           "JOIN deployments dp ON dp.id = u.deployment_id "
           "JOIN firmware f ON f.id = dp.firmware_id "
           "WHERE u.device_id = $1 AND u.state IN " PD_INFLIGHT " FOR UPDATE OF u",
           1, uv);
    if (!r)
        goto dberr;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *dep = PQgetvalue(r, i, 0), *name = PQgetvalue(r, i, 3);
        int attempts = atoi(PQgetvalue(r, i, 1));
        const char *why = reason ? reason : "";
        if (uuid && strcmp(uuid, PQgetvalue(r, i, 2)) == 0) {
            const char *v[] = {device_id, dep};
            if (tcmd(t, err,
                     "UPDATE device_updates SET state = 'complete', reason = '', "
                     "updated_at = now() WHERE device_id = $1 AND deployment_id = $2",
                     2, v) < 0)
                goto dberr_r;
            clear_later(done, r, i);
            done->completed++;
            pd_log("%s completed deployment %s (firmware %s)", identifier, name, uuid);
        } else if (state && strcmp(state, "failed") == 0) {
            attempts++;
            char att[16], pen[16];
            snprintf(att, sizeof(att), "%d", attempts);
            snprintf(pen, sizeof(pen), "%d", pd->cfg.penalty);
            bool held = attempts >= pd->cfg.max_attempts;
            done->failed++;
            done->held_back += held;
            const char *v[] = {device_id, dep, att, why, pen};
            /* Held back: penalty.  Otherwise expires_at = now() makes the
             * next renewal re-issue the manifest with a fresh sequence. */
            if (tcmd(t, err,
                     held ? "UPDATE device_updates SET state = 'penalty', attempts = $3, "
                            "reason = $4, penalty_until = now() + make_interval(secs => $5::int), "
                            "held_back = true, updated_at = now() "
                            "WHERE device_id = $1 AND deployment_id = $2"
                          : "UPDATE device_updates SET state = 'released', attempts = $3, "
                            "reason = $4, expires_at = now(), updated_at = now() "
                            "WHERE device_id = $1 AND deployment_id = $2",
                     held ? 5 : 4, v) < 0)
                goto dberr_r;
            if (!held) {
                pd_log("%s failed attempt %d of deployment %s: %s; it will be retried", identifier,
                       attempts, name, why);
                continue;
            }
            clear_later(done, r, i);
            pd_log("%s failed deployment %s %d times (%s): held back for %d s", identifier, name,
                   attempts, why, pd->cfg.penalty);
            const char *fv[] = {dep};
            PGresult *f = tq(t, err,
                             "UPDATE deployments SET failures = (SELECT count(*) FROM "
                             "device_updates WHERE deployment_id = $1 AND held_back), "
                             "updated_at = now() WHERE id = $1 RETURNING failures, max_failures",
                             1, fv);
            if (!f)
                goto dberr_r;
            int failures = atoi(PQgetvalue(f, 0, 0)), maxf = atoi(PQgetvalue(f, 0, 1));
            PQclear(f);
            if (maxf > 0 && failures >= maxf) {
                char reason_text[160];
                snprintf(reason_text, sizeof(reason_text),
                         "paused itself: %d devices failed (max-failures %d)", failures, maxf);
                const char *pv[] = {dep, reason_text};
                if (tcmd(t, err,
                         "UPDATE deployments SET state = 'paused', state_reason = $2, "
                         "updated_at = now() WHERE id = $1 AND state = 'running'",
                         2, pv) < 0)
                    goto dberr_r;
                pn_db_audit(pd->db, NULL, "deployment.paused", name, NULL);
                pd_log(PD_WARNING "deployment %s %s", name, reason_text);
            }
        } else if (state && strcmp(state, "idle") != 0 && strcmp(state, "complete") != 0) {
            const char *v[] = {device_id, dep, state, why};
            if (tcmd(t, err,
                     "UPDATE device_updates SET state = $3, reason = $4, updated_at = now() "
                     "WHERE device_id = $1 AND deployment_id = $2",
                     4, v) < 0)
                goto dberr_r;
        }
    }
    PQclear(r);
    /* pn_db_commit: an audit row that failed above leaves an aborted
     * transaction, whose COMMIT "succeeds" with nothing written. */
    if (pn_db_commit(t->db, err) < 0)
        goto dberr;
    return 0;
dberr_r:
    PQclear(r);
dberr:
    pn_db_rollback(pd->db);
    return -1;
}

int pd_handle_status(struct pd *pd, const char *identifier, const void *payload, int len,
                     bool final)
{
    struct pn_err err;
    struct pd_status st;
    if (pd_msg_parse_status(payload, len < 0 ? 0 : (size_t)len, &st, &err) < 0) {
        pd_log_ignored(pd, identifier, "ignored status from %s: %s", identifier, err.msg);
        return 0;
    }
    struct txn t = {.db = pd->db};
    struct status_done done;
    int rc = -1;
    for (int run = 1; run <= STATUS_TRIES; run++) {
        rc = record_status(pd, &t, identifier, &st, &done, &err);
        if (rc < 0)
            pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
        if (rc >= 0 || !pn_db_conflict(t.sqlstate))
            break;
        if (run < STATUS_TRIES)
            pd_log(PD_NOTICE "status from %s: %s (SQLSTATE %s); running it again (%d of %d)",
                   identifier, err.msg, t.sqlstate, run + 1, STATUS_TRIES);
    }
    pd_status_free(&st);
    if (rc == 1) {
        if (!final)
            return 1;
        pd_log_ignored(pd, identifier, "ignored status from %s: no such active device", identifier);
        return 0;
    }
    if (rc < 0) {
        pd_log(PD_ERR "status from %s not recorded: %s", identifier, err.msg);
        return 0;
    }
    pd_metrics_add(pd->metrics, PD_M_COMPLETIONS, done.completed);
    pd_metrics_add(pd->metrics, PD_M_FAILURES, done.failed);
    pd_metrics_add(pd->metrics, PD_M_PENALTIES, done.held_back);
    if (done.clear && done.nclear == 0)
        pd_clear_manifest(pd, identifier, NULL); /* forgets what is in flight */
    for (int k = 0; k < done.nclear; k++)
        pd_clear_manifest(pd, identifier, done.clear_on[k]);
    return 0;
}
