/* SPDX-License-Identifier: Apache-2.0 */
/* Releasing deployments: who gets a manifest, when, and with which
 * sequence number.  Each deployment is handled in one transaction holding
 * its row lock (FOR UPDATE SKIP LOCKED), so concurrent piniond instances
 * never release the same deployment at once; manifests are published only
 * after the release is committed, and every (re)issue takes a fresh
 * per-device sequence from devices.manifest_sequence, so no sequence is
 * ever reused even when a process dies between commit and publish. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "db.h"
#include "fw.h"
#include "manifest.h"
#include "piniond.h"
#include "semver.h"

#define CANDIDATES 500 /* rows per page in pick_page (its LIMIT) */

struct fwrow {
    int64_t id;
    char uuid[64], product[128], version[64], platform[128], architecture[128], sha256[65],
        key_id[17], fw_version[32], key_version[32], status[16];
    char artifact[4096];
    int64_t size;
    bool key_present;
    unsigned char pk[32], sig[64];
    unsigned char *meta_conf;
    size_t meta_conf_len;
};

static void fwrow_free(struct fwrow *f)
{
    free(f->meta_conf);
    f->meta_conf = NULL;
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* Loads a firmware row with everything a manifest and a release check need. */
static int load_fw(struct pd *pd, int64_t firmware_id, struct fwrow *f, struct pn_err *err)
{
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)firmware_id);
    const char *v[] = {id};
    PGresult *r =
        pn_db_q(pd->db, err,
                "SELECT f.uuid, p.name, f.version, f.platform, f.architecture, f.size, "
                "f.sha256, f.key_id, f.artifact, f.status, f.xmin::text, "
                "encode(f.meta_conf, 'base64'), encode(f.meta_conf_sig, 'hex'), "
                "encode(k.public_key, 'hex'), k.xmin::text "
                "FROM firmware f JOIN products p ON p.id = f.product_id "
                "LEFT JOIN firmware_keys k ON k.org_id = f.org_id AND k.key_id = f.key_id "
                "WHERE f.id = $1",
                1, v);
    if (!r)
        return -1;
    memset(f, 0, sizeof(*f));
    if (PQntuples(r) != 1) {
        PQclear(r);
        return pn_err_set(err, "firmware %s no longer exists", id);
    }
    f->id = firmware_id;
    copy(f->uuid, sizeof(f->uuid), PQgetvalue(r, 0, 0));
    copy(f->product, sizeof(f->product), PQgetvalue(r, 0, 1));
    copy(f->version, sizeof(f->version), PQgetvalue(r, 0, 2));
    copy(f->platform, sizeof(f->platform), PQgetvalue(r, 0, 3));
    copy(f->architecture, sizeof(f->architecture), PQgetvalue(r, 0, 4));
    f->size = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
    copy(f->sha256, sizeof(f->sha256), PQgetvalue(r, 0, 6));
    copy(f->key_id, sizeof(f->key_id), PQgetvalue(r, 0, 7));
    const char *art = PQgetvalue(r, 0, 8);
    if (art[0] == '/' || !pd->cfg.artifacts)
        copy(f->artifact, sizeof(f->artifact), art);
    else
        snprintf(f->artifact, sizeof(f->artifact), "%s/%s", pd->cfg.artifacts, art);
    copy(f->status, sizeof(f->status), PQgetvalue(r, 0, 9));
    copy(f->fw_version, sizeof(f->fw_version), PQgetvalue(r, 0, 10));
    /* meta.conf travels as base64 from the server: decode it here. */
    const char *b64 = PQgetvalue(r, 0, 11);
    size_t blen = strlen(b64), mlen = 0;
    f->meta_conf = malloc(blen + 1);
    int ok = f->meta_conf && sodium_base642bin(f->meta_conf, blen, b64, blen, "\n", &mlen, NULL,
                                               sodium_base64_VARIANT_ORIGINAL) == 0;
    f->meta_conf_len = mlen;
    size_t slen = 0;
    ok = ok &&
         sodium_hex2bin(f->sig, sizeof(f->sig), PQgetvalue(r, 0, 12), strlen(PQgetvalue(r, 0, 12)),
                        NULL, &slen, NULL) == 0 &&
         slen == 64;
    f->key_present = !PQgetisnull(r, 0, 13);
    if (f->key_present) {
        size_t klen = 0;
        ok = ok &&
             sodium_hex2bin(f->pk, sizeof(f->pk), PQgetvalue(r, 0, 13),
                            strlen(PQgetvalue(r, 0, 13)), NULL, &klen, NULL) == 0 &&
             klen == 32;
        copy(f->key_version, sizeof(f->key_version), PQgetvalue(r, 0, 14));
    }
    PQclear(r);
    if (!ok) {
        fwrow_free(f);
        return pn_err_set(err, "firmware %s has an unreadable stored meta.conf or key", f->uuid);
    }
    return 0;
}

/* The release check (docs/protocol.md, "Rollout rules"): the stored bytes hash to what was
 * uploaded, the signature still verifies, its key is still registered and
 * the firmware is not revoked.  A pass is reused for verify_ttl seconds,
 * and never across a change of the file (device, inode, size, mtime) or of
 * the firmware or key rows (their xmin). */
static int release_check(struct pd *pd, const struct fwrow *f, struct pn_err *err)
{
    if (strcmp(f->status, "active") != 0)
        return pn_err_set(err, "firmware %s is revoked", f->uuid);
    if (!f->key_present)
        return pn_err_set(err, "firmware %s: its signing key %s is no longer registered", f->uuid,
                          f->key_id);
    struct stat st;
    if (stat(f->artifact, &st) < 0)
        return pn_err_set(err, "firmware %s: stored artifact %s is missing", f->uuid, f->artifact);
    long long mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    time_t now = time(NULL);
    struct pd_verified *slot = NULL, *oldest = &pd->verified[0];
    for (int i = 0; i < PD_VERIFIED_MAX; i++) {
        struct pd_verified *v = &pd->verified[i];
        if (v->firmware_id == f->id)
            slot = v;
        if (v->at < oldest->at)
            oldest = v;
    }
    if (slot && now - slot->at < pd->cfg.verify_ttl && slot->dev == (unsigned long long)st.st_dev &&
        slot->ino == (unsigned long long)st.st_ino &&
        slot->size == (unsigned long long)st.st_size && slot->mtime_ns == mtime_ns &&
        !strcmp(slot->fw_version, f->fw_version) && !strcmp(slot->key_version, f->key_version))
        return 0;
    if (slot)
        slot->firmware_id = 0;

    struct pn_fw_key key;
    memcpy(key.pk, f->pk, 32);
    copy(key.id, sizeof(key.id), f->key_id);
    struct pn_fw_info info;
    long long t0 = pn_mono_us();
    int verified = pn_fw_verify_path(f->artifact, &key, 1, &info, err);
    pd_metrics_check_done(pd->metrics, t0, verified == 0);
    if (verified < 0) {
        pn_fw_info_free(&info);
        return pn_err_prefix(err, "firmware %s: stored artifact fails verification", f->uuid);
    }
    int rc = 0;
    if (strcmp(info.sha256_hex, f->sha256) != 0)
        rc = pn_err_set(err,
                        "firmware %s: stored artifact's SHA-256 %s differs from the "
                        "uploaded %s",
                        f->uuid, info.sha256_hex, f->sha256);
    else if (strcmp(info.meta.uuid, f->uuid) != 0 || info.meta_conf_len != f->meta_conf_len ||
             memcmp(info.meta_conf, f->meta_conf, f->meta_conf_len) != 0)
        rc = pn_err_set(err,
                        "firmware %s: stored artifact's meta.conf differs from the uploaded "
                        "one",
                        f->uuid);
    pn_fw_info_free(&info);
    if (rc < 0) {
        pd_metrics_add(pd->metrics, PD_M_CHECKS_FAILED, 1);
        return -1;
    }
    slot = oldest;
    slot->firmware_id = f->id;
    copy(slot->fw_version, sizeof(slot->fw_version), f->fw_version);
    copy(slot->key_version, sizeof(slot->key_version), f->key_version);
    slot->dev = (unsigned long long)st.st_dev;
    slot->ino = (unsigned long long)st.st_ino;
    slot->size = (unsigned long long)st.st_size;
    slot->mtime_ns = mtime_ns;
    slot->at = now;
    pd_log("release check passed for firmware %s (%s %s)", f->uuid, f->product, f->version);
    return 0;
}

/* Pauses a deployment with a reason, inside the caller's transaction. */
static void pause_deployment(struct pd *pd, const char *dep_id, const char *name,
                             const char *reason)
{
    const char *v[] = {dep_id, reason};
    PGresult *r = pn_db_q(pd->db, NULL,
                          "UPDATE deployments SET state = 'paused', state_reason = $2, "
                          "updated_at = now() WHERE id = $1 AND state = 'running' RETURNING id",
                          2, v);
    int paused = r ? PQntuples(r) : 0;
    PQclear(r);
    if (!paused) /* already paused (by hand, or by another instance) */
        return;
    json_t *d = json_pack("{s:s}", "reason", reason);
    char *dt = json_dumps(d, JSON_COMPACT);
    pn_db_audit(pd->db, NULL, "deployment.paused", name, dt);
    free(dt);
    json_decref(d);
    pd_log(PD_WARNING "deployment %s paused: %s", name, reason);
}

/* Locks, in id order, the rows of the devices that have an in-flight update
 * matching `where` (as in end_inflight), inside the caller's transaction. */
static int lock_devices(struct pd *pd, const char *where, int n, const char *const *v,
                        struct pn_err *err)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT d.id FROM devices d JOIN device_updates u ON u.device_id = d.id "
             "JOIN deployments dp ON dp.id = u.deployment_id "
             "WHERE u.state IN " PD_INFLIGHT " AND (%s) ORDER BY d.id FOR UPDATE OF d",
             where);
    PGresult *r = pn_db_q(pd->db, err, sql, n, v);
    PQclear(r);
    return r ? 0 : -1;
}

/* Ends in-flight updates matching `where` (SQL over u = device_updates,
 * d = devices and dp = deployments, parameters $1.. in v) with `state` and
 * `reason`, inside the caller's transaction, which must hold no deployment
 * row; appends [identifier, broker] of each device to `ended`, whose
 * retained manifests the caller clears after commit.  The devices' rows
 * are locked first, in id order, then their updates: the order of every
 * other writer of these rows (status.c's transaction, which locks a
 * deployment's row last; reissue), so that none of them deadlocks with
 * this.  Updating the updates' rows alone, as before, waited for a status
 * transaction's update row while holding others (or the deployment's row
 * it then wanted). */
static int end_inflight(struct pd *pd, const char *where, int n, const char *const *v,
                        const char *state, const char *reason, json_t *ended, struct pn_err *err)
{
    if (lock_devices(pd, where, n, v, err) < 0)
        return -1;
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "UPDATE device_updates u SET state = '%s', reason = $%d, updated_at = now() "
             "FROM devices d, deployments dp WHERE d.id = u.device_id AND dp.id = u.deployment_id "
             "AND u.state IN " PD_INFLIGHT " AND (%s) RETURNING d.identifier, dp.name, u.broker_id",
             state, n + 1, where);
    const char *args[8];
    for (int i = 0; i < n && i < 7; i++)
        args[i] = v[i];
    args[n] = reason;
    PGresult *r = pn_db_q(pd->db, err, sql, n + 1, args);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        json_array_append_new(ended, json_pack("[s, s?]", PQgetvalue(r, i, 0),
                                               PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2)));
        pd_log("%s %s's update (deployment %s): %s", state, PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), reason);
    }
    int count = PQntuples(r);
    PQclear(r);
    return count;
}

static void clear_manifests(struct pd *pd, json_t *ended)
{
    size_t i;
    json_t *id;
    json_array_foreach(ended, i, id)
    {
        pd_clear_manifest(pd, json_string_value(json_array_get(id, 0)),
                          json_string_value(json_array_get(id, 1)));
    }
}

/* A failed release check: the deployment's in-flight updates are
 * cancelled (their devices could not download the firmware anyway) and it
 * pauses with the reason, in a transaction of its own, begun with no row
 * locked: the devices' rows, their updates, then the deployment's row, as
 * a status transaction takes them.  Run inside a transaction holding the
 * deployment's row (as release_deployment did), it waited for a device
 * whose status transaction waited for that deployment row: a deadlock.
 * Their retained manifests are cleared after commit.  0 / -1 (logged). */
static int fail_release(struct pd *pd, const char *dep_id, const char *name, const char *why)
{
    struct pn_err err;
    char reason[PN_ERR_MAX + 32];
    snprintf(reason, sizeof(reason), "release check failed: %s", why);
    const char *v[] = {dep_id};
    json_t *ended = json_array();
    if (!ended || pn_db_begin(pd->db, &err) < 0 ||
        end_inflight(pd, "u.deployment_id = $1", 1, v, "cancelled", reason, ended, &err) < 0)
        goto fail;
    pause_deployment(pd, dep_id, name, reason);
    if (pn_db_commit(pd->db, &err) < 0)
        goto fail;
    clear_manifests(pd, ended);
    json_decref(ended);
    return 0;
fail:
    pn_db_rollback(pd->db);
    pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
    pd_log(PD_ERR "deployment %s: %s", name, ended ? err.msg : "out of memory");
    json_decref(ended);
    return -1;
}

struct issue {
    char identifier[129];
    int64_t sequence;
    time_t expires;      /* 0: issued + manifest_ttl */
    bool again;          /* published again as recorded (pd_republish), not a new issue */
    char broker[65];     /* where it is published; "" nowhere (device not on a broker we reach) */
    char old_broker[65]; /* where the previous manifest was, "" if unknown */
};

static int publish_manifest(struct pd *pd, const struct fwrow *f, const char *deployment,
                            const struct issue *is, time_t issued)
{
    struct pn_err err;
    struct pn_manifest m;
    memset(&m, 0, sizeof(m));
    copy(m.device, sizeof(m.device), is->identifier);
    copy(m.deployment, sizeof(m.deployment), deployment);
    m.sequence = is->sequence;
    m.issued_at = issued;
    m.expires_at = is->expires ? is->expires : issued + pd->cfg.manifest_ttl;
    copy(m.firmware.uuid, sizeof(m.firmware.uuid), f->uuid);
    copy(m.firmware.product, sizeof(m.firmware.product), f->product);
    copy(m.firmware.version, sizeof(m.firmware.version), f->version);
    copy(m.firmware.platform, sizeof(m.firmware.platform), f->platform);
    copy(m.firmware.architecture, sizeof(m.firmware.architecture), f->architecture);
    m.firmware.size = f->size;
    copy(m.firmware.sha256, sizeof(m.firmware.sha256), f->sha256);
    copy(m.firmware.key_id, sizeof(m.firmware.key_id), f->key_id);
    m.firmware.meta_conf = f->meta_conf;
    m.firmware.meta_conf_len = f->meta_conf_len;
    memcpy(m.firmware.meta_conf_sig, f->sig, 64);
    /* With a CDN, the same content-addressed file is also offered by URL;
     * the manifest's sha256 still decides what the device accepts. */
    char url[2048];
    if (pd->cfg.cdn_url) {
        snprintf(url, sizeof(url), "%s/%s.fw", pd->cfg.cdn_url, f->sha256);
        m.firmware.url = url;
    }
    char *env = pn_manifest_sign(&m, pd->release_sk, &err);
    if (!env) {
        pd_log(PD_ERR "cannot sign the manifest for %s: %s", is->identifier, err.msg);
        return -1;
    }
    char topic[512];
    snprintf(topic, sizeof(topic), "%s/%s/down/update", pd->cfg.topic_root, is->identifier);
    struct pd_broker *b = pd_broker_connected(pd, is->broker);
    int rc = 0;
    if (b)
        rc = pd_publish(b, topic, env, (int)strlen(env), true);
    free(env);
    pd_inflight_forget(pd, is->identifier);
    if (rc == 0 && is->again)
        pd_log("published again %s %s to %s (deployment %s, sequence %lld) on broker %s",
               f->product, f->version, is->identifier, deployment, (long long)is->sequence,
               b ? b->id : "-");
    else if (rc == 0)
        pd_log("released %s %s to %s (deployment %s, sequence %lld) %s%s", f->product, f->version,
               is->identifier, deployment, (long long)is->sequence,
               b ? "on broker " : "(published when piniond reaches a broker)", b ? b->id : "");
    /* The device moved: its manifest on the broker it left must not be
     * delivered there again. */
    if (b && is->old_broker[0] && strcmp(is->old_broker, is->broker) != 0)
        pd_clear_manifest(pd, is->identifier, is->old_broker);
    return rc;
}

/* Takes the next sequence of a device and records the (re)issue, with the
 * broker it will be published on: the live broker the device is on, if
 * piniond has a session there; inside the caller's transaction. */
static int record_issue(struct pd *pd, const char *device_id, const char *dep_id, time_t issued,
                        bool fresh, struct issue *is, struct pn_err *err)
{
    const char *v[] = {device_id};
    PGresult *r = pn_db_q(pd->db, err,
                          "UPDATE devices SET manifest_sequence = manifest_sequence + 1 "
                          "WHERE id = $1 RETURNING manifest_sequence, identifier, "
                          "(SELECT p.broker_id FROM live_device_presence p "
                          " WHERE p.identifier = devices.identifier)",
                          1, v);
    if (!r)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return pn_err_set(err, "device %s vanished", device_id);
    }
    is->sequence = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    copy(is->identifier, sizeof(is->identifier), PQgetvalue(r, 0, 1));
    is->broker[0] = '\0';
    if (PQgetisnull(r, 0, 2)) {
        /* Connected nowhere: retained on one broker, as with a single
         * broker; if the device shows up on another, it is re-issued
         * there.  Other instances learn of it there (down/update). */
        struct pd_broker *b = pd_broker_fallback(pd);
        if (b)
            copy(is->broker, sizeof(is->broker), b->id);
    } else {
        const char *on = PQgetvalue(r, 0, 2);
        if (pd_broker_connected(pd, on))
            copy(is->broker, sizeof(is->broker), on);
        else
            pd_log("%s is on broker %s, which piniond cannot reach: its manifest (sequence "
                   "%lld) waits until piniond reaches it or the device moves",
                   is->identifier, on, (long long)is->sequence);
    }
    PQclear(r);
    char seq[24], iss[24], exp[24];
    snprintf(seq, sizeof(seq), "%lld", (long long)is->sequence);
    snprintf(iss, sizeof(iss), "%lld", (long long)issued);
    snprintf(exp, sizeof(exp), "%lld", (long long)(issued + pd->cfg.manifest_ttl));
    const char *u[] = {
        device_id, dep_id, seq, iss, exp, fresh ? "t" : "f", is->broker[0] ? is->broker : NULL};
    return pn_db_cmd(
        pd->db, err,
        "INSERT INTO device_updates (device_id, deployment_id, state, attempts, sequence, "
        "issued_at, expires_at, broker_id) VALUES ($1, $2, 'released', 0, $3, "
        "to_timestamp($4), to_timestamp($5), $7) ON CONFLICT (device_id, deployment_id) DO UPDATE "
        "SET "
        "broker_id = EXCLUDED.broker_id, "
        "state = CASE WHEN $6::bool THEN 'released' ELSE device_updates.state END, "
        "attempts = CASE WHEN device_updates.state = 'penalty' THEN 0 "
        "ELSE device_updates.attempts END, "
        "sequence = EXCLUDED.sequence, issued_at = EXCLUDED.issued_at, "
        "expires_at = EXCLUDED.expires_at, penalty_until = NULL, updated_at = now()",
        7, u);
}

/* One page of candidates with ids above *after (advanced); matching ones
 * are appended to ids[*n].  Returns the number of rows read, or -1. */
static int pick_page(struct pd *pd, PGresult *dep, const struct fwrow *f, char after[24],
                     const char *req, int slots, char ids[][24], int *n, struct pn_err *err)
{
    const char *v[] = {PQgetvalue(dep, 0, 0),
                       PQgetvalue(dep, 0, 2),
                       PQgetvalue(dep, 0, 3),
                       PQgetvalue(dep, 0, 5),
                       f->uuid,
                       f->platform,
                       f->architecture,
                       after};
    PGresult *r =
        pn_db_q(pd->db, err,
                "SELECT d.id, d.firmware_version FROM devices d "
                "WHERE d.org_id = $2 AND d.product_id = $3 AND d.status = 'active' AND d.id > $8 "
                "AND d.tags @> ARRAY(SELECT jsonb_array_elements_text($4::jsonb)) "
                "AND d.firmware_uuid IS DISTINCT FROM $5 "
                "AND d.firmware_platform = $6 AND d.firmware_architecture = $7 "
                "AND NOT EXISTS (SELECT 1 FROM device_updates u WHERE u.device_id = d.id AND "
                " ((u.deployment_id = $1 AND (u.state = 'complete' OR (u.state = 'penalty' AND "
                "   u.penalty_until > now()) OR (u.state = 'expired' AND "
                "   (d.last_seen IS NULL OR d.last_seen <= u.updated_at)))) "
                "  OR u.state IN " PD_INFLIGHT ")) "
                "ORDER BY d.id LIMIT " PD_STR(CANDIDATES) " FOR UPDATE OF d SKIP LOCKED",
                8, v);
    if (!r)
        return -1;
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        copy(after, 24, PQgetvalue(r, i, 0));
        if (*n >= slots)
            continue;
        const char *ver = PQgetisnull(r, i, 1) ? NULL : PQgetvalue(r, i, 1);
        if (req[0] && (!ver || !pn_semver_matches(ver, req)))
            continue;
        copy(ids[*n], 24, PQgetvalue(r, i, 0));
        (*n)++;
    }
    PQclear(r);
    return rows;
}

/* Picks up to `slots` eligible devices for a locked deployment.  The SemVer
 * requirement is applied here, so candidates are read in pages by id until
 * enough match: devices failing it can never starve those after them. */
static int pick(struct pd *pd, PGresult *dep, int slots, const struct fwrow *f, char ids[][24],
                struct pn_err *err)
{
    const char *req = PQgetvalue(dep, 0, 6);
    char after[24] = "0";
    int n = 0;
    for (;;) {
        int rows = pick_page(pd, dep, f, after, req, slots, ids, &n, err);
        if (rows < 0)
            return -1;
        if (n >= slots || rows < CANDIDATES)
            return n;
    }
}

static int release_deployment(struct pd *pd, const char *dep_id)
{
    struct pn_err err;
    struct fwrow f = {0};
    struct issue *issues = NULL;
    char(*ids)[24] = NULL;
    int n = 0;
    char name[129] = "";

    if (pn_db_begin(pd->db, &err) < 0)
        goto dberr;
    const char *v[] = {dep_id};
    PGresult *dep = pn_db_q(pd->db, &err,
                            "SELECT d.id, d.name, d.org_id, d.product_id, d.firmware_id, "
                            "array_to_json(d.tags)::text, d.version_req, d.concurrency, "
                            "(SELECT count(*) FROM device_updates u WHERE u.deployment_id = d.id "
                            " AND u.state IN " PD_INFLIGHT ") "
                            "FROM deployments d WHERE d.id = $1 AND d.state = 'running' "
                            "FOR UPDATE SKIP LOCKED",
                            1, v);
    if (!dep)
        goto dberr;
    if (PQntuples(dep) != 1) { /* paused meanwhile, or another piniond has it */
        PQclear(dep);
        pn_db_rollback(pd->db);
        return 0;
    }
    copy(name, sizeof(name), PQgetvalue(dep, 0, 1));
    int slots = atoi(PQgetvalue(dep, 0, 7)) - atoi(PQgetvalue(dep, 0, 8));
    /* Checked even with every slot taken: a failure must stop the devices
     * in flight too, not wait for a free slot. */
    if (load_fw(pd, strtoll(PQgetvalue(dep, 0, 4), NULL, 10), &f, &err) < 0 ||
        release_check(pd, &f, &err) < 0) {
        PQclear(dep);
        fwrow_free(&f);
        /* The deployment's row is let go first: fail_release locks it last. */
        pn_db_rollback(pd->db);
        fail_release(pd, dep_id, name, err.msg);
        return 0;
    }
    if (slots <= 0) {
        PQclear(dep);
        pn_db_rollback(pd->db);
        fwrow_free(&f);
        return 0;
    }
    ids = calloc((size_t)slots, sizeof(*ids));
    issues = calloc((size_t)slots, sizeof(*issues));
    if (!ids || !issues) {
        PQclear(dep);
        pn_db_rollback(pd->db);
        goto out;
    }
    n = pick(pd, dep, slots, &f, ids, &err);
    PQclear(dep);
    if (n < 0)
        goto dberr;
    time_t issued = time(NULL);
    for (int i = 0; i < n; i++)
        if (record_issue(pd, ids[i], dep_id, issued, true, &issues[i], &err) < 0)
            goto dberr;
    if (pn_db_commit(pd->db, &err) < 0)
        goto dberr;
    for (int i = 0; i < n; i++)
        publish_manifest(pd, &f, name, &issues[i], issued);
out:
    fwrow_free(&f);
    free(ids);
    free(issues);
    return n;
dberr:
    pn_db_rollback(pd->db);
    pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
    pd_log(PD_ERR "deployment %s: %s", name[0] ? name : dep_id, err.msg);
    fwrow_free(&f);
    free(ids);
    free(issues);
    return -1;
}

int pd_rollout_tick(struct pd *pd)
{
    struct pn_err err;
    PGresult *r = pn_db_q(
        pd->db, &err, "SELECT id FROM deployments WHERE state = 'running' ORDER BY id", 0, NULL);
    if (!r) {
        pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
        pd_log(PD_ERR "%s", err.msg);
        return -1;
    }
    int total = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int n = release_deployment(pd, PQgetvalue(r, i, 0));
        if (n > 0)
            total += n;
    }
    PQclear(r);
    return total;
}

/* Renewal rows from `from` on that share its firmware failed their release
 * check: each of their deployments fails (cancel in flight, pause), each in
 * a transaction of its own. */
static void fail_rows(struct pd *pd, PGresult *r, int from, int n, const char *why)
{
    const char *fid = PQgetvalue(r, from, 3);
    for (int k = from; k < n && !strcmp(PQgetvalue(r, k, 3), fid); k++)
        if (k == from || strcmp(PQgetvalue(r, k, 1), PQgetvalue(r, k - 1, 1)) != 0)
            fail_release(pd, PQgetvalue(r, k, 1), PQgetvalue(r, k, 2), why);
}

/* Re-issues, each with a fresh sequence, the in-flight updates a query
 * selects (columns: device, deployment, its name, firmware, old broker),
 * locked FOR UPDATE OF d, u SKIP LOCKED so that two instances never
 * re-issue the same one.  The device's row is locked with its updates, in
 * the one statement that never waits: record_issue then writes both, and a
 * status transaction (status.c), which locks the device first and its
 * updates second, is skipped over, never waited for.  Locking u alone here
 * and waiting for d in record_issue was the opposite order and deadlocked
 * with status reports.  `what` names the work in the log.  Returns rows,
 * or -1. */
static int reissue(struct pd *pd, const char *sql, int nv, const char *const *v, const char *what)
{
    struct pn_err err;
    if (pn_db_begin(pd->db, &err) < 0)
        goto dberr;
    PGresult *r = pn_db_q(pd->db, &err, sql, nv, v);
    if (!r)
        goto dberr;
    int n = PQntuples(r);
    struct issue *issues = calloc((size_t)n + 1, sizeof(*issues));
    bool *publish = calloc((size_t)n + 1, sizeof(*publish));
    struct fwrow *fws = calloc((size_t)n + 1, sizeof(*fws));
    char(*failed)[PN_ERR_MAX] = calloc((size_t)n + 1, sizeof(*failed)); /* per firmware: why */
    time_t issued = time(NULL);
    int nfw = 0, result = -1;
    if (!issues || !publish || !fws || !failed)
        goto fail;
    /* Rows come grouped by firmware: check each firmware once, before any
     * sequence is taken.  A failure cancels its deployments' updates, after
     * this transaction (fail_release). */
    bool ok = false;
    for (int i = 0; i < n; i++) {
        const char *dep_id = PQgetvalue(r, i, 1);
        int64_t fid = strtoll(PQgetvalue(r, i, 3), NULL, 10);
        if (nfw == 0 || fws[nfw - 1].id != fid) {
            ok = load_fw(pd, fid, &fws[nfw], &err) == 0 && release_check(pd, &fws[nfw], &err) == 0;
            if (!ok)
                snprintf(failed[nfw], sizeof(failed[nfw]), "%s", err.msg[0] ? err.msg : "?");
            fws[nfw++].id = fid;
        }
        if (!ok)
            continue;
        if (record_issue(pd, PQgetvalue(r, i, 0), dep_id, issued, false, &issues[i], &err) < 0)
            goto fail;
        copy(issues[i].old_broker, sizeof(issues[i].old_broker), PQgetvalue(r, i, 4));
        publish[i] = true;
    }
    if (pn_db_commit(pd->db, &err) < 0)
        goto fail;
    for (int i = 0, k = -1; i < n; i++) {
        int64_t fid = strtoll(PQgetvalue(r, i, 3), NULL, 10);
        bool first = k < 0 || fws[k].id != fid;
        while (k < 0 || fws[k].id != fid)
            k++;
        if (publish[i])
            publish_manifest(pd, &fws[k], PQgetvalue(r, i, 2), &issues[i], issued);
        else if (first && failed[k][0])
            fail_rows(pd, r, i, n, failed[k]);
    }
    result = n;
fail:
    if (result < 0) {
        pn_db_rollback(pd->db);
        pd_log(PD_ERR "%s: %s", what, err.msg);
    }
    for (int k = 0; k < nfw; k++)
        fwrow_free(&fws[k]);
    free(fws);
    free(failed);
    free(publish);
    free(issues);
    PQclear(r);
    return result;
dberr:
    pn_db_rollback(pd->db);
    pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
    pd_log(PD_ERR "%s: %s", what, err.msg);
    return -1;
}

#define REISSUE_COLUMNS                                                                            \
    "SELECT u.device_id, u.deployment_id, dp.name, dp.firmware_id, u.broker_id "                   \
    "FROM device_updates u JOIN deployments dp ON dp.id = u.deployment_id "                        \
    "JOIN devices d ON d.id = u.device_id "
/* Device row and update rows together (see reissue). */
#define REISSUE_LOCK " FOR UPDATE OF d, u SKIP LOCKED"

int pd_renew(struct pd *pd)
{
    char arg[24];
    snprintf(arg, sizeof(arg), "%lld", (long long)pd->cfg.manifest_ttl / 2);
    const char *v[] = {arg};
    /* In-flight updates of running deployments, and of paused ones: a pause
     * (by hand or at max-failures) lets the devices in flight finish. */
    return reissue(pd,
                   REISSUE_COLUMNS "WHERE u.state IN " PD_INFLIGHT " "
                                   "AND u.expires_at < now() + make_interval(secs => $1::int) "
                                   "ORDER BY dp.firmware_id, u.deployment_id, u.device_id "
                                   "LIMIT " PD_STR(PD_RENEW_BATCH) REISSUE_LOCK,
                   1, v, "renewing manifests");
}

/* At start, instead of re-issuing: publishes again, byte for byte, the
 * manifests of the in-flight updates issued before issued_before (an
 * earlier process may have recorded a release and stopped before
 * publishing it), with their recorded sequence, times and broker, so that
 * a restarted piniond changes nothing a device sees (a new sequence would
 * be a new manifest to it).  Ed25519 signatures are deterministic: the
 * same fields give the same bytes.  The rows stay locked (FOR UPDATE OF d,
 * u SKIP LOCKED, as reissue) until the copies are published, so a re-issue
 * by another instance is published after them, never before.  An update
 * recorded on no broker (none was reachable) is published where
 * record_issue would put it now, and that broker recorded; one recorded on
 * a broker piniond does not reach is recorded on none, as record_issue
 * does, so that pd_follow_moves issues it where the device shows up (the
 * caller waits a few seconds for every session first); a firmware failing
 * its release check is left to the renewal.
 * `after` (firmware, device, deployment ids) is where the last call
 * stopped, advanced.  Returns rows read (at most PD_RENEW_BATCH), or -1. */
int pd_republish(struct pd *pd, time_t issued_before, long long after[3])
{
    struct pn_err err;
    char before[24], a0[24], a1[24], a2[24];
    snprintf(before, sizeof(before), "%lld", (long long)issued_before);
    snprintf(a0, sizeof(a0), "%lld", after[0]);
    snprintf(a1, sizeof(a1), "%lld", after[1]);
    snprintf(a2, sizeof(a2), "%lld", after[2]);
    const char *v[] = {before, a0, a1, a2};
    if (pn_db_begin(pd->db, &err) < 0)
        goto dberr;
    PGresult *r = pn_db_q(
        pd->db, &err,
        "SELECT dp.firmware_id, u.device_id, u.deployment_id, dp.name, u.broker_id, u.sequence, "
        "extract(epoch FROM u.issued_at)::bigint, extract(epoch FROM u.expires_at)::bigint, "
        "d.identifier, (SELECT p.broker_id FROM live_device_presence p "
        "WHERE p.identifier = d.identifier) FROM device_updates u JOIN deployments dp ON dp.id = "
        "u.deployment_id "
        "JOIN devices d ON d.id = u.device_id "
        "WHERE u.state IN " PD_INFLIGHT " AND u.issued_at < to_timestamp($1::bigint) "
        "AND (dp.firmware_id, u.device_id, u.deployment_id) > ($2::bigint, $3::bigint, $4::bigint) "
        "ORDER BY dp.firmware_id, u.device_id, u.deployment_id "
        "LIMIT " PD_STR(PD_RENEW_BATCH) " FOR UPDATE OF d, u SKIP LOCKED",
        4, v);
    if (!r)
        goto dberr;
    int n = PQntuples(r);
    struct fwrow f = {0};
    bool ok = false;
    for (int i = 0; i < n; i++) {
        int64_t fid = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        if (i == 0 || f.id != fid) {
            fwrow_free(&f);
            ok = load_fw(pd, fid, &f, &err) == 0 && release_check(pd, &f, &err) == 0;
            f.id = fid;
            if (!ok)
                pd_log(PD_WARNING "not publishing again the manifests of firmware %lld: %s",
                       (long long)fid, err.msg);
        }
        const char *on = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4);
        struct pd_broker *b = NULL;
        if (on)
            b = pd_broker_connected(pd, on);
        else if (!PQgetisnull(r, i, 9))
            b = pd_broker_connected(pd, PQgetvalue(r, i, 9));
        else
            b = pd_broker_fallback(pd);
        if (!ok || (!b && !on))
            continue;
        if (!b || !on) {
            const char *uv[] = {PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), b ? b->id : NULL};
            if (pn_db_cmd(pd->db, &err,
                          "UPDATE device_updates SET broker_id = $3 "
                          "WHERE device_id = $1 AND deployment_id = $2",
                          3, uv) < 0) {
                fwrow_free(&f);
                PQclear(r);
                goto dberr;
            }
            if (!b) {
                pd_log("%s's manifest (sequence %s) was recorded on broker %s, which piniond "
                       "cannot reach: it is issued again where the device shows up",
                       PQgetvalue(r, i, 8), PQgetvalue(r, i, 5), on);
                continue;
            }
        }
        struct issue is = {.sequence = strtoll(PQgetvalue(r, i, 5), NULL, 10),
                           .expires = (time_t)strtoll(PQgetvalue(r, i, 7), NULL, 10),
                           .again = true};
        copy(is.identifier, sizeof(is.identifier), PQgetvalue(r, i, 8));
        copy(is.broker, sizeof(is.broker), b->id);
        publish_manifest(pd, &f, PQgetvalue(r, i, 3), &is,
                         (time_t)strtoll(PQgetvalue(r, i, 6), NULL, 10));
    }
    fwrow_free(&f);
    if (n > 0)
        for (int k = 0; k < 3; k++)
            after[k] = strtoll(PQgetvalue(r, n - 1, k), NULL, 10);
    PQclear(r);
    if (pn_db_commit(pd->db, &err) < 0)
        goto dberr;
    return n;
dberr:
    pn_db_rollback(pd->db);
    pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
    pd_log(PD_ERR "publishing in-flight manifests again: %s", err.msg);
    return -1;
}

int pd_follow_moves(struct pd *pd)
{
    char *brokers = pd_brokers_connected_json(pd);
    if (!brokers)
        return -1;
    const char *v[] = {brokers};
    /* Only towards brokers piniond reaches: elsewhere the manifest could
     * not be published, and the unreachable broker is reported instead.
     * Not while installing: the device needs no manifest to finish, and
     * it reconnects (anywhere) after its reboot to report. */
    int n =
        reissue(pd,
                REISSUE_COLUMNS "JOIN live_device_presence p ON p.identifier = d.identifier "
                                "WHERE u.state IN " PD_INFLIGHT " "
                                "AND u.state <> 'installing' "
                                "AND u.broker_id IS DISTINCT FROM p.broker_id "
                                "AND p.broker_id IN (SELECT jsonb_array_elements_text($1::jsonb)) "
                                "ORDER BY dp.firmware_id, u.deployment_id, u.device_id "
                                "LIMIT " PD_STR(PD_RENEW_BATCH) REISSUE_LOCK,
                1, v, "re-issuing manifests of devices that moved");
    free(brokers);
    return n;
}

int pd_end_stale(struct pd *pd)
{
    struct pn_err err;
    json_t *ended = json_array();
    char secs[24];
    snprintf(secs, sizeof(secs), "%d", pd->cfg.inflight_timeout);
    const char *v[] = {secs};
    char why[96];
    snprintf(why, sizeof(why), "no status report for %d s", pd->cfg.inflight_timeout);
    int a = -1, b = -1;
    /* Every device of both kinds locked at once, in id order (a second
     * sorted run after the first could cross another instance's). */
    if (!ended || pn_db_begin(pd->db, &err) < 0 ||
        lock_devices(
            pd, "d.status <> 'active' OR u.updated_at < now() - make_interval(secs => $1::int)", 1,
            v, &err) < 0)
        goto fail;
    a = end_inflight(pd, "d.status <> 'active'", 0, NULL, "cancelled", "device revoked", ended,
                     &err);
    if (a < 0)
        goto fail;
    b = end_inflight(pd, "u.updated_at < now() - make_interval(secs => $1::int)", 1, v, "expired",
                     why, ended, &err);
    if (b < 0 || pn_db_commit(pd->db, &err) < 0)
        goto fail;
    clear_manifests(pd, ended);
    json_decref(ended);
    return a + b;
fail:
    pn_db_rollback(pd->db);
    pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
    pd_log(PD_ERR "ending stale updates: %s", err.msg);
    json_decref(ended);
    return -1;
}

/* An empty retained message must never land after a newer manifest for
 * the same device on the same broker (by this instance or another one,
 * e.g. the device moved back, or completed and was released to again):
 * it would wipe it, and a device connecting later would never see it.  So
 * the clear is decided and published while holding the device's row lock,
 * which every (re)issue takes before it publishes (record_issue; publish
 * after commit), and only if PostgreSQL then holds no update of the device
 * in flight with its manifest on that broker: a newer manifest is either
 * seen here (no clear) or published after the clear.  Called after the
 * caller's own transaction is committed. */
void pd_clear_manifest(struct pd *pd, const char *identifier, const char *broker_id)
{
    pd_inflight_forget(pd, identifier);
    struct pd_broker *b = pd_broker_connected(pd, broker_id);
    if (!b)
        return;
    char topic[512];
    snprintf(topic, sizeof(topic), "%s/%s/down/update", pd->cfg.topic_root, identifier);
    struct pn_err err;
    const char *v[] = {identifier, broker_id};
    PGresult *r = NULL;
    if (pn_db_begin(pd->db, &err) < 0 ||
        pn_db_cmd(pd->db, &err, "SELECT 1 FROM devices WHERE identifier = $1 FOR UPDATE", 1, v) <
            0 ||
        /* A statement of its own: its snapshot is taken after the lock. */
        !(r = pn_db_q(pd->db, &err,
                      "SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id "
                      "WHERE d.identifier = $1 AND u.broker_id = $2 AND u.state IN " PD_INFLIGHT,
                      2, v))) {
        /* Cleared anyway: an ended update's manifest left retained could
         * still be installed; a wiped newer one is published again at its
         * renewal. */
        pn_db_rollback(pd->db);
        pd_metrics_add(pd->metrics, PD_M_DB_ERRORS, 1);
        pd_log(PD_ERR "clearing the manifest of %s on broker %s: %s; cleared unchecked", identifier,
               b->id, err.msg);
        pd_publish(b, topic, NULL, 0, true);
        return;
    }
    bool newer = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    PQclear(r);
    if (newer)
        pd_log("%s has a newer manifest in flight on broker %s: not cleared there", identifier,
               b->id);
    else
        pd_publish(b, topic, NULL, 0, true);
    pn_db_commit(pd->db, NULL);
}
