/* SPDX-License-Identifier: Apache-2.0 */
/* Thin helpers over libpq: connect, run a parameterised statement, and turn
 * a server error into one sentence.  SQL is always sent with PQexecParams
 * (or, for multi-statement migration text, PQexec of a compiled-in file);
 * nothing is ever spliced into SQL text. */
#ifndef PINION_LIB_DB_H
#define PINION_LIB_DB_H

#include <libpq-fe.h>

#include <stdbool.h>

#include "err.h"

/* SQLSTATE of a unique_violation, for "already exists" messages. */
#define PN_SQLSTATE_UNIQUE "23505"
/* SQLSTATEs of a transaction PostgreSQL aborted so that others could go on
 * (deadlock victim, serialization failure): the same transaction, run
 * again from its BEGIN, may well succeed. */
#define PN_SQLSTATE_DEADLOCK "40P01"
#define PN_SQLSTATE_SERIALIZATION "40001"
/* SQLSTATE of a lock wait that lock_timeout ended. */
#define PN_SQLSTATE_LOCK_TIMEOUT "55P03"

/* Whether a failed statement lost a conflict with another transaction
 * (one of the three above): not the data's fault, so the whole
 * transaction, run again, is likely to pass.  sqlstate may be "" or NULL. */
bool pn_db_conflict(const char *sqlstate);

/* Opens a connection.  conninfo may be a keyword/value string or a URI;
 * NULL or "" means libpq's defaults (PG* environment variables).
 * Returns NULL and fills err on failure.  Caller owns the PGconn (PQfinish). */
PGconn *pn_db_connect(const char *conninfo, struct pn_err *err);

/* Same, with a default connect_timeout (seconds; the conninfo's own
 * setting wins) and an application_name, for long-running programs. */
PGconn *pn_db_connect_app(const char *conninfo, const char *app, int timeout_s, struct pn_err *err);

/* to_char() format of a timestamptz as ISO 8601 UTC ("2026-11-27T13:08:00Z");
 * every connection from pn_db_connect runs with TimeZone UTC. */
#define PN_SQL_ISO_UTC "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

/* Runs one statement with n parameters.  lengths/formats may be NULL (all
 * text).  On success returns the result (caller PQclear()s it).  On failure
 * returns NULL, fills err with "database: <server message>" and, when
 * sqlstate is non-NULL, copies the 5-character SQLSTATE (else "").
 * Results are requested in text format. */
PGresult *pn_db_exec(PGconn *db, struct pn_err *err, const char *sql, int n,
                     const char *const *values, const int *lengths, const int *formats,
                     char sqlstate[6]);

/* Shorthand for text-only parameters and no SQLSTATE interest.  Every
 * pn_db_ function that runs something on a connection takes the connection,
 * then err, then what to run (statement, prepared name, audit entry). */
PGresult *pn_db_q(PGconn *db, struct pn_err *err, const char *sql, int n,
                  const char *const *values);

/* A statement run often (once per firmware chunk): planned once per
 * connection with pn_db_prepare, then run by name with text parameters. */
int pn_db_prepare(PGconn *db, struct pn_err *err, const char *name, const char *sql, int n);
PGresult *pn_db_q_prepared(PGconn *db, struct pn_err *err, const char *name, int n,
                           const char *const *values);

/* Runs a statement whose result is not needed.  0 / -1. */
int pn_db_cmd(PGconn *db, struct pn_err *err, const char *sql, int n, const char *const *values);

int pn_db_begin(PGconn *db, struct pn_err *err);
/* -1 also when PostgreSQL rolled the transaction back instead (a statement
 * in it failed, its error ignored). */
int pn_db_commit(PGconn *db, struct pn_err *err);
/* Best effort; never fails the caller. */
void pn_db_rollback(PGconn *db);

/* Appends a row to audit_log.  detail_json may be NULL ("{}"). */
int pn_db_audit(PGconn *db, struct pn_err *err, const char *action, const char *object,
                const char *detail_json);

#endif
