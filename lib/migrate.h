/* SPDX-License-Identifier: Apache-2.0 */
/* Schema migrations compiled from schema/NNN_name.sql (see
 * cmake/embed_schema.cmake), recorded in the schema_migrations table. */
#ifndef PINION_LIB_MIGRATE_H
#define PINION_LIB_MIGRATE_H

#include <libpq-fe.h>

#include "err.h"

struct pn_migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct pn_migration pn_migrations[];
extern const int pn_migrations_count;

/* The newest schema version this binary knows. */
int pn_migrate_latest(void);

/* Reads the database's schema version into *version (0 for a database
 * Pinion never touched).  0 / -1. */
int pn_migrate_current(PGconn *db, int *version, struct pn_err *err);

/* Applies every migration newer than the database's version, each in its
 * own transaction, serialised against concurrent migrators by an advisory
 * lock.  Refuses a database newer than this binary.  *from and *to receive
 * the versions before and after (both may be NULL).  0 / -1. */
int pn_migrate(PGconn *db, int *from, int *to, struct pn_err *err);

/* Returns 0 when the database's schema is exactly the version this binary
 * was built with, else -1 with a sentence telling the operator what to do. */
int pn_db_check_schema(PGconn *db, struct pn_err *err);

#endif
