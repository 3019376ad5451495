/* What devices report on R/<id>/up/status: their firmware (used to target
 * deployments) and the progress of an update.  A device is done when it
 * reports the released firmware's uuid; a `failed` report costs an attempt,
 * and after max_attempts the device is held back for `penalty` seconds and
 * counts against the deployment, which pauses itself at max-failures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "db.h"
#include "piniond.h"

#define STATUS_MAX 16384
#define INFLIGHT "('released', 'received', 'downloading', 'installing', 'rescheduled')"

static const char *const states[] = {"idle",       "received", "downloading", "installing",
                                     "complete",   "failed",   "rescheduled", NULL};

/* A string field of at most max bytes without control characters, or NULL. */
static const char *field(json_t *obj, const char *key, size_t max, bool *bad)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return NULL;
    const char *s = json_string_value(v);
    if (!s || strlen(s) > max) {
        *bad = true;
        return NULL;
    }
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20) {
            *bad = true;
            return NULL;
        }
    return s;
}

int pd_handle_status(struct pd *pd, const char *identifier, const void *payload, int len,
                     bool final)
{
    struct pn_err err;
    json_error_t jerr;
    bool bad = false;
    if (len <= 0 || len > STATUS_MAX) {
        pd_log("ignored status from %s: %d bytes (limit %d)", identifier, len, STATUS_MAX);
        return 0;
    }
    json_t *j = json_loadb(payload, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        pd_log("ignored status from %s: not a JSON object", identifier);
        json_decref(j);
        return 0;
    }
    json_t *fw = json_object_get(j, "firmware");
    if (fw && !json_is_object(fw))
        bad = true;
    const char *uuid = fw ? field(fw, "uuid", 64, &bad) : NULL;
    const char *version = fw ? field(fw, "version", 64, &bad) : NULL;
    const char *platform = fw ? field(fw, "platform", 128, &bad) : NULL;
    const char *arch = fw ? field(fw, "architecture", 128, &bad) : NULL;
    const char *state = field(j, "state", 32, &bad);
    const char *reason = field(j, "reason", 512, &bad);
    json_t *prog = json_object_get(j, "progress");
    if (prog && !json_is_null(prog) && !json_is_number(prog))
        bad = true;
    if (state) {
        int i = 0;
        while (states[i] && strcmp(states[i], state) != 0)
            i++;
        if (!states[i])
            bad = true;
    }
    if (bad) {
        pd_log("ignored status from %s: malformed fields", identifier);
        json_decref(j);
        return 0;
    }

    bool clear = false;
    if (pn_db_begin(pd->db, &err) < 0)
        goto dberr;
    /* A report's firmware object replaces all four fields together (an
     * absent one becomes unknown), so they never describe two firmwares. */
    const char *dv[] = {identifier, uuid, version, platform, arch, fw ? "t" : "f"};
    PGresult *r = pn_db_q(pd->db, &err,
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
        json_decref(j);
        if (!final)
            return 1;
        pd_log("ignored status from %s: no such active device", identifier);
        return 0;
    }
    char device_id[24];
    snprintf(device_id, sizeof(device_id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);

    const char *uv[] = {device_id};
    r = pn_db_q(pd->db, &err,
                "SELECT u.deployment_id, u.attempts, f.uuid, dp.name FROM device_updates u "
                "JOIN deployments dp ON dp.id = u.deployment_id "
                "JOIN firmware f ON f.id = dp.firmware_id "
                "WHERE u.device_id = $1 AND u.state IN " INFLIGHT " FOR UPDATE OF u",
                1, uv);
    if (!r)
        goto dberr;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *dep = PQgetvalue(r, i, 0), *name = PQgetvalue(r, i, 3);
        int attempts = atoi(PQgetvalue(r, i, 1));
        const char *why = reason ? reason : "";
        if (uuid && strcmp(uuid, PQgetvalue(r, i, 2)) == 0) {
            const char *v[] = {device_id, dep};
            if (pn_db_cmd(pd->db, &err,
                          "UPDATE device_updates SET state = 'complete', reason = '', "
                          "updated_at = now() WHERE device_id = $1 AND deployment_id = $2",
                          2, v) < 0)
                goto dberr_r;
            clear = true;
            pd_log("%s completed deployment %s (firmware %s)", identifier, name, uuid);
        } else if (state && strcmp(state, "failed") == 0) {
            attempts++;
            char att[16], pen[16];
            snprintf(att, sizeof(att), "%d", attempts);
            snprintf(pen, sizeof(pen), "%d", pd->cfg.penalty);
            bool held = attempts >= pd->cfg.max_attempts;
            const char *v[] = {device_id, dep, att, why, pen};
            /* Held back: penalty.  Otherwise expires_at = now() makes the
             * next renewal re-issue the manifest with a fresh sequence. */
            if (pn_db_cmd(pd->db, &err,
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
                pd_log("%s failed attempt %d of deployment %s: %s; it will be retried",
                       identifier, attempts, name, why);
                continue;
            }
            clear = true;
            pd_log("%s failed deployment %s %d times (%s): held back for %d s", identifier, name,
                   attempts, why, pd->cfg.penalty);
            const char *fv[] = {dep};
            PGresult *f = pn_db_q(pd->db, &err,
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
                if (pn_db_cmd(pd->db, &err,
                              "UPDATE deployments SET state = 'paused', state_reason = $2, "
                              "updated_at = now() WHERE id = $1 AND state = 'running'",
                              2, pv) < 0)
                    goto dberr_r;
                pn_db_audit(pd->db, "deployment.paused", name, NULL, NULL);
                pd_log("deployment %s %s", name, reason_text);
            }
        } else if (state && strcmp(state, "idle") != 0 && strcmp(state, "complete") != 0) {
            const char *v[] = {device_id, dep, state, why};
            if (pn_db_cmd(pd->db, &err,
                          "UPDATE device_updates SET state = $3, reason = $4, updated_at = now() "
                          "WHERE device_id = $1 AND deployment_id = $2",
                          4, v) < 0)
                goto dberr_r;
        }
    }
    PQclear(r);
    if (pn_db_commit(pd->db, &err) < 0)
        goto dberr;
    if (clear)
        pd_clear_manifest(pd, identifier);
    json_decref(j);
    return 0;
dberr_r:
    PQclear(r);
dberr:
    pn_db_rollback(pd->db);
    pd_log("status from %s not recorded: %s", identifier, err.msg);
    json_decref(j);
    return 0;
}
