/* SPDX-License-Identifier: Apache-2.0 */
/* Firmware bytes over MQTT (docs/protocol.md, "Chunk format").  A device asks on
 * R/<id>/up/get with {"uuid","offset","length"} and gets R/<id>/down/chunk:
 * "PNC1", the 16-byte uuid, offset (u64) and length (u32), big-endian,
 * then the bytes of the stored .fw.  Only firmware currently released to
 * that device is served; length is capped at chunk_max; an offset at or
 * past the end gets a chunk of length 0. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "messages.h"
#include "piniond.h"

#define HEADER 32

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

int pd_chunks_prepare(struct pd *pd, struct pn_err *err)
{
    /* Planning this join costs ~1 ms, running it ~0.1 ms: plan it once. */
    if (pn_db_prepare(pd->db, err, PD_CHUNK_STMT,
                      "SELECT f.artifact, f.size FROM devices d "
                      "JOIN device_updates u ON u.device_id = d.id "
                      "JOIN deployments dp ON dp.id = u.deployment_id "
                      "JOIN firmware f ON f.id = dp.firmware_id "
                      "WHERE d.identifier = $1 AND d.status = 'active' AND f.uuid = $2 "
                      "AND f.status = 'active' AND u.state IN " PD_INFLIGHT " LIMIT 1",
                      2) < 0)
        return -1;
    return pn_db_prepare(pd->db, err, PD_INFLIGHT_STMT,
                         "SELECT f.uuid FROM devices d "
                         "JOIN device_updates u ON u.device_id = d.id "
                         "JOIN deployments dp ON dp.id = u.deployment_id "
                         "JOIN firmware f ON f.id = dp.firmware_id "
                         "WHERE d.identifier = $1 AND d.status = 'active' "
                         "AND f.status = 'active' AND u.state IN " PD_INFLIGHT
                         " LIMIT " PD_STR(PD_INFLIGHT_MAX),
                         1);
}

/* Runs a prepared statement, once more after a reconnect if the connection
 * was lost (the device would otherwise wait for its retry). */
static PGresult *query(struct pd *pd, struct pn_err *err, const char *stmt, int n,
                       const char *const *v)
{
    PGresult *r = pn_db_q_prepared(pd->db, err, stmt, n, v);
    if (!r && pd->db && PQstatus(pd->db) != CONNECTION_OK && pd_ensure_db(pd) == 0)
        r = pn_db_q_prepared(pd->db, err, stmt, n, v);
    return r;
}

/* Whether uuid may be in flight for the device, from what piniond last
 * read (at most inflight_cache_ms ago, not since a manifest for the device
 * was published by any instance, and not before a session (re)connected:
 * while it was down, its broker's down/update notices were missed): a
 * request that cannot be served costs no database round trip.  1 maybe (the chunk lookup decides),
 * 0 no, -1 database error (logged by the caller). */
static int maybe_inflight(struct pd *pd, struct pd_dev *dev, const char *uuid, struct pn_err *err)
{
    long now = pn_mono_ms();
    if (!dev->inflight_known || dev->inflight_connects != pd->connects ||
        now - dev->inflight_at >= pd->cfg.inflight_cache_ms) {
        const char *v[] = {dev->identifier};
        PGresult *r = query(pd, err, PD_INFLIGHT_STMT, 1, v);
        if (!r)
            return -1;
        dev->ninflight = 0;
        for (int i = 0; i < PQntuples(r) && i < PD_INFLIGHT_MAX; i++)
            snprintf(dev->inflight[dev->ninflight++], sizeof(dev->inflight[0]), "%s",
                     PQgetvalue(r, i, 0));
        PQclear(r);
        dev->inflight_known = true;
        dev->inflight_at = now;
        dev->inflight_connects = pd->connects;
    }
    for (int i = 0; i < dev->ninflight; i++)
        if (strcmp(dev->inflight[i], uuid) == 0)
            return 1;
    return 0;
}

void pd_handle_get(struct pd *pd, struct pd_broker *b, struct pd_dev *dev, const void *payload,
                   int len)
{
    struct pn_err err;
    struct pd_get g;
    const char *identifier = dev->identifier;
    if (pd_msg_parse_get(payload, len < 0 ? 0 : (size_t)len, &g, &err) < 0) {
        pd_log_ignored(pd, identifier, "ignored chunk request from %s: %s", identifier, err.msg);
        return;
    }
    int maybe = maybe_inflight(pd, dev, g.uuid, &err);
    PGresult *r = NULL;
    if (maybe > 0) {
        const char *v[] = {identifier, g.uuid};
        r = query(pd, &err, PD_CHUNK_STMT, 2, v);
    }
    if (maybe < 0 || (maybe > 0 && !r)) {
        pd_log(PD_ERR "chunk request from %s: %s", identifier, err.msg);
        return;
    }
    if (!maybe || PQntuples(r) != 1) {
        if (r) {
            /* Ended since it was read (completed, cancelled, revoked). */
            PQclear(r);
            dev->inflight_known = false;
        }
        pd_log_ignored(pd, identifier,
                       "ignored chunk request from %s for firmware %s: not released to it",
                       identifier, g.uuid);
        return;
    }
    char path[4096];
    const char *art = PQgetvalue(r, 0, 0);
    if (art[0] == '/' || !pd->cfg.artifacts)
        snprintf(path, sizeof(path), "%s", art);
    else
        snprintf(path, sizeof(path), "%s/%s", pd->cfg.artifacts, art);
    uint64_t size = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);

    uint64_t offset = g.offset, want = g.length;
    uint64_t n = want < (uint64_t)pd->cfg.chunk_max ? want : (uint64_t)pd->cfg.chunk_max;
    if (offset >= size)
        n = 0;
    else if (n > size - offset)
        n = size - offset;
    unsigned char *buf = malloc(HEADER + n);
    if (!buf)
        return;
    memcpy(buf, "PNC1", 4);
    memcpy(buf + 4, g.uuid_bin, 16);
    put_be(buf + 20, offset, 8);
    put_be(buf + 28, n, 4);
    if (n) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        /* A short read is retried: pread may return less than asked. */
        ssize_t got = fd >= 0 ? pn_pread_full(fd, buf + HEADER, n, (off_t)offset) : -1;
        if (fd >= 0)
            close(fd);
        if (got != (ssize_t)n) {
            pd_log(PD_ERR "cannot read %s for %s: stored artifact unreadable", path, identifier);
            free(buf);
            return;
        }
    }
    char topic[512];
    snprintf(topic, sizeof(topic), "%s/%s/down/chunk", pd->cfg.topic_root, identifier);
    if (pd_publish(b, topic, buf, (int)(HEADER + n), false) == 0)
        pd_metrics_add(pd->metrics, PD_M_CHUNK_BYTES, (unsigned long)n);
    free(buf);
}
