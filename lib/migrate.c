/* SPDX-License-Identifier: Apache-2.0 */
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>

#include "db.h"

/* An arbitrary constant naming Pinion's migration lock. */
#define MIGRATE_LOCK_KEY "7306321587102001"

int pn_migrate_latest(void)
{
    int v = 0;
    for (int i = 0; i < pn_migrations_count; i++)
        if (pn_migrations[i].version > v)
            v = pn_migrations[i].version;
    return v;
}

int pn_migrate_current(PGconn *db, int *version, struct pn_err *err)
{
    PGresult *res =
        pn_db_q(db, err, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL);
    if (!res)
        return -1;
    int exists = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    *version = 0;
    if (!exists)
        return 0;
    res = pn_db_q(db, err, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL);
    if (!res)
        return -1;
    *version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

int pn_migrate(PGconn *db, int *from, int *to, struct pn_err *err)
{
    const char *lock[] = {MIGRATE_LOCK_KEY};
    int current = 0;

    if (pn_db_cmd(db, err, "SELECT pg_advisory_lock($1::bigint)", 1, lock) < 0)
        return -1;
    if (pn_db_cmd(db, err,
                  "CREATE TABLE IF NOT EXISTS schema_migrations ("
                  " version integer PRIMARY KEY,"
                  " name text NOT NULL,"
                  " applied_at timestamptz NOT NULL DEFAULT now())",
                  0, NULL) < 0)
        goto fail;
    if (pn_migrate_current(db, &current, err) < 0)
        goto fail;
    if (from)
        *from = current;
    if (current > pn_migrate_latest()) {
        pn_err_set(err,
                   "database schema is at version %d, newer than this pinion "
                   "understands (%d); refusing to touch it",
                   current, pn_migrate_latest());
        goto fail;
    }
    for (int i = 0; i < pn_migrations_count; i++) {
        const struct pn_migration *m = &pn_migrations[i];
        if (m->version <= current)
            continue;
        if (pn_db_begin(db, err) < 0)
            goto fail;
        PGresult *res = PQexec(db, m->sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            pn_err_set(err, "migration %s failed: %s", m->name, msg ? msg : "unknown error");
            PQclear(res);
            pn_db_rollback(db);
            goto fail;
        }
        PQclear(res);
        char vbuf[16];
        snprintf(vbuf, sizeof(vbuf), "%d", m->version);
        const char *v[] = {vbuf, m->name};
        if (pn_db_cmd(db, err, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                      v) < 0 ||
            pn_db_commit(db, err) < 0) {
            pn_db_rollback(db);
            pn_err_prefix(err, "migration %s", m->name);
            goto fail;
        }
        current = m->version;
    }
    if (to)
        *to = current;
    pn_db_cmd(db, NULL, "SELECT pg_advisory_unlock($1::bigint)", 1, lock);
    return 0;
fail:
    pn_db_cmd(db, NULL, "SELECT pg_advisory_unlock($1::bigint)", 1, lock);
    return -1;
}

int pn_db_check_schema(PGconn *db, struct pn_err *err)
{
    int have = 0;
    if (pn_migrate_current(db, &have, err) < 0)
        return -1;
    int want = pn_migrate_latest();
    if (have == want)
        return 0;
    if (have > want)
        return pn_err_set(err,
                          "database schema is at version %d, newer than this pinion "
                          "understands (%d); upgrade pinion",
                          have, want);
    if (have == 0) /* name it: libpq's defaults may have picked another database */
        return pn_err_set(err,
                          "database \"%s\" (%s, port %s, user %s) has no Pinion schema; "
                          "run `pinion db migrate` if it is the right one (--db / PINION_DB)",
                          PQdb(db), PQhost(db), PQport(db), PQuser(db));
    return pn_err_set(err,
                      "database schema is at version %d, this pinion needs %d; "
                      "run `pinion db migrate`",
                      have, want);
}
