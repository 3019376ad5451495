/* SPDX-License-Identifier: Apache-2.0 */
#include "db.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *finish_connect(PGconn *db, struct pn_err *err);

PGconn *pn_db_connect(const char *conninfo, struct pn_err *err)
{
    return finish_connect(PQconnectdb(conninfo ? conninfo : ""), err);
}

PGconn *pn_db_connect_app(const char *conninfo, const char *app, int timeout_s, struct pn_err *err)
{
    char t[16];
    snprintf(t, sizeof(t), "%d", timeout_s);
    /* Later keywords override earlier ones, and the expanded conninfo
     * stands where "dbname" is: so the defaults go first. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {t, app, conninfo ? conninfo : "", NULL};
    return finish_connect(PQconnectdbParams(keys, vals, 1), err);
}

static PGconn *finish_connect(PGconn *db, struct pn_err *err)
{
    if (!db) {
        pn_err_set(err, "database: out of memory");
        return NULL;
    }
    if (PQstatus(db) != CONNECTION_OK) {
        char msg[PN_ERR_MAX];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db));
        /* libpq messages span lines; keep the first meaningful one. */
        msg[strcspn(msg, "\n")] = '\0';
        pn_err_set(err, "cannot connect to database: %s", msg[0] ? msg : "unknown error");
        PQfinish(db);
        return NULL;
    }
    /* Keep server notices (e.g. "relation already exists, skipping") off
     * the CLI's stderr: they are not errors. */
    PQsetNoticeProcessor(db, quiet_notice, NULL);
    /* Every timestamp Pinion prints or parses is UTC. */
    PGresult *res = PQexec(db, "SET TimeZone TO 'UTC'");
    PQclear(res);
    return db;
}

/* res if the statement succeeded; else NULL with err (and sqlstate) set. */
static PGresult *checked(PGconn *db, struct pn_err *err, PGresult *res, char sqlstate[6])
{
    if (sqlstate)
        sqlstate[0] = '\0';
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;

    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate && state)
        snprintf(sqlstate, 6, "%s", state);
    if (primary) {
        pn_err_set(err, "database: %s", primary);
    } else {
        char msg[PN_ERR_MAX];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db));
        msg[strcspn(msg, "\n")] = '\0';
        pn_err_set(err, "database: %s", msg[0] ? msg : "query failed");
    }
    if (err && state)
        snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", state);
    PQclear(res);
    return NULL;
}

PGresult *pn_db_exec(PGconn *db, struct pn_err *err, const char *sql, int n,
                     const char *const *values, const int *lengths, const int *formats,
                     char sqlstate[6])
{
    return checked(db, err, PQexecParams(db, sql, n, NULL, values, lengths, formats, 0), sqlstate);
}

bool pn_db_conflict(const char *sqlstate)
{
    return sqlstate && (!strcmp(sqlstate, PN_SQLSTATE_DEADLOCK) ||
                        !strcmp(sqlstate, PN_SQLSTATE_SERIALIZATION) ||
                        !strcmp(sqlstate, PN_SQLSTATE_LOCK_TIMEOUT));
}

int pn_db_prepare(PGconn *db, struct pn_err *err, const char *name, const char *sql, int n)
{
    PGresult *res = checked(db, err, PQprepare(db, name, sql, n, NULL), NULL);
    PQclear(res);
    return res ? 0 : -1;
}

PGresult *pn_db_q_prepared(PGconn *db, struct pn_err *err, const char *name, int n,
                           const char *const *values)
{
    return checked(db, err, PQexecPrepared(db, name, n, values, NULL, NULL, 0), NULL);
}

PGresult *pn_db_q(PGconn *db, struct pn_err *err, const char *sql, int n, const char *const *values)
{
    return pn_db_exec(db, err, sql, n, values, NULL, NULL, NULL);
}

int pn_db_cmd(PGconn *db, struct pn_err *err, const char *sql, int n, const char *const *values)
{
    PGresult *res = pn_db_q(db, err, sql, n, values);
    if (!res)
        return -1;
    PQclear(res);
    return 0;
}

int pn_db_begin(PGconn *db, struct pn_err *err)
{
    return pn_db_cmd(db, err, "BEGIN", 0, NULL);
}

int pn_db_commit(PGconn *db, struct pn_err *err)
{
    PGresult *res = pn_db_q(db, err, "COMMIT", 0, NULL);
    if (!res)
        return -1;
    /* COMMIT of a transaction a failed statement aborted is no error to
     * PostgreSQL: it rolls back and answers ROLLBACK. */
    bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    PQclear(res);
    if (rolled_back)
        return pn_err_set(err, "database: the transaction was rolled back (a statement in it "
                               "failed)");
    return 0;
}

void pn_db_rollback(PGconn *db)
{
    PGresult *res = PQexec(db, "ROLLBACK");
    PQclear(res);
}

int pn_db_audit(PGconn *db, struct pn_err *err, const char *action, const char *object,
                const char *detail_json)
{
    const char *v[] = {action, object, detail_json ? detail_json : "{}"};
    return pn_db_cmd(
        db, err, "INSERT INTO audit_log (action, object, detail) VALUES ($1, $2, $3::jsonb)", 3, v);
}
