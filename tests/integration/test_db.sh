#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pinion db migrate, org create, product create, connection errors and the
# CLI's usage/exit-status conventions (README, "CLI reference";
# docs/data-model.md).
. "$PINION_SOURCE/tests/harness/lib.sh"

# ---- db migrate (lib.sh already ran it once on this fresh database)

for t in orgs products ca_certificates registration_codes devices device_certificates \
    service_identities firmware_keys firmware deployments device_updates audit_log \
    schema_migrations; do
    assert_eq "table $t exists after db migrate" \
        "$(sql "SELECT to_regclass('public.$t') IS NOT NULL")" t
done

versions_before=$(sql "SELECT count(*) FROM schema_migrations")
assert_match "schema_migrations has rows" "$versions_before" '^[1-9][0-9]*$'
latest=$(sql "SELECT max(version) FROM schema_migrations")

expect_ok "db migrate again succeeds" -- "$PINION" db migrate
assert_match "db migrate again says up to date" "$OUT" 'up to date'
assert_eq "db migrate again adds no schema_migrations rows" \
    "$(sql "SELECT count(*) FROM schema_migrations")" "$versions_before"

expect_ok "db migrate --json" -- "$PINION" --json db migrate
assert_eq "db migrate --json: nothing applied" "$(json_get .applied "$OUT")" 0
assert_eq "db migrate --json: at latest version" "$(json_get .to "$OUT")" "$latest"

# A fresh, empty database: other commands refuse it until it is migrated.
bare="${PINION_TEST_DB}_bare"
"$PINION_PG_BIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres "$bare" ||
    bail_out "createdb $bare failed"
on_exit "$PINION_PG_BIN/dropdb" --force --if-exists -h "$PGHOST" -p "$PGPORT" -U postgres "$bare"
bare_db="host=$PGHOST port=$PGPORT user=postgres dbname=$bare"
expect_fail "org create on an unmigrated database is refused" 'db migrate' -- \
    "$PINION" --db "$bare_db" org create acme
expect_ok "db migrate via --db on an empty database" -- "$PINION" --db "$bare_db" db migrate
assert_match "db migrate reports the migration" "$OUT" 'migrated'
expect_ok "--db after the command name works too" -- "$PINION" db migrate --db "$bare_db"
assert_match "... and is up to date" "$OUT" 'up to date'

# ---- a database newer than this binary

sql "INSERT INTO schema_migrations (version, name) VALUES (999, '999_future.sql')" ||
    bail_out "cannot insert future migration"
expect_fail "db migrate refuses a newer schema" 'newer' -- "$PINION" db migrate
expect_fail "org create refuses a newer schema" 'newer' -- "$PINION" org create future
assert_eq "nothing was written to the newer database" \
    "$(sql "SELECT count(*) FROM orgs WHERE name = 'future'")" 0
assert_eq "schema_migrations untouched by the refused migrate" \
    "$(sql "SELECT count(*) FROM schema_migrations")" "$((versions_before + 1))"
sql "DELETE FROM schema_migrations WHERE version = 999" || bail_out "cannot delete row 999"
expect_ok "back at the binary's version, db migrate is a no-op" -- "$PINION" db migrate
assert_match "... up to date" "$OUT" 'up to date'

# ---- a database without Pinion's schema (e.g. libpq's default when --db and
# PINION_DB are both missing) is named, so nobody migrates the wrong one

expect_fail "a database without the schema is refused, naming it" \
    "database \"postgres\" \(.*, port $PGPORT, user postgres\) has no Pinion schema" -- \
    env PINION_DB="host=$PGHOST port=$PGPORT user=postgres dbname=postgres" \
    "$PINION" org create nowhere
assert_eq "... and nothing was created there" \
    "$(psql -X -A -t -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres \
        -c "SELECT to_regclass('public.orgs') IS NULL")" t

# ---- org create

expect_ok "org create acme" -- "$PINION" org create acme
assert_match "org create prints the org" "$OUT" 'acme'
assert_eq "org acme is stored" "$(sql "SELECT count(*) FROM orgs WHERE name = 'acme'")" 1
expect_fail "org create acme again is refused" 'already exists' -- "$PINION" org create acme
assert_eq "still one org acme" "$(sql "SELECT count(*) FROM orgs WHERE name = 'acme'")" 1
expect_fail "org name with a slash is refused" 'invalid' -- "$PINION" org create a/b
expect_fail "empty org name is refused" 'invalid' -- "$PINION" org create ""
expect_status "org create without a name is a usage error (exit 2)" 2 -- "$PINION" org create
assert_match "... saying what is missing" "$ERR" 'missing argument'
assert_eq "no invalid org was stored" "$(sql "SELECT count(*) FROM orgs")" 1
expect_ok "org create --json" -- "$PINION" --json org create other-org
assert_eq "org create --json gives the name" "$(json_get .name "$OUT")" other-org
assert_match "org create --json gives an id" "$(json_get .id "$OUT")" '^[0-9]+$'

# ---- product create

expect_ok "product create acme sensor" -- "$PINION" product create acme sensor
assert_match "product create prints the product" "$OUT" 'sensor'
expect_ok "product create --json acme gateway" -- "$PINION" product create --json acme gateway
assert_eq "product create --json: name" "$(json_get .name "$OUT")" gateway
assert_eq "product create --json: org" "$(json_get .org "$OUT")" acme
assert_eq "products stored under acme" \
    "$(sql "SELECT string_agg(p.name, ',' ORDER BY p.name) FROM products p
            JOIN orgs o ON o.id = p.org_id WHERE o.name = 'acme'")" gateway,sensor
expect_fail "product create acme sensor again is refused" 'already' -- \
    "$PINION" product create acme sensor
expect_ok "same product name in another org is fine" -- "$PINION" product create other-org sensor
expect_fail "product create in a missing org is refused" 'nosuch' -- \
    "$PINION" product create nosuch x
expect_fail "invalid product name is refused" 'invalid' -- "$PINION" product create acme 'a b'

# ---- audit

assert_match "org and product creation are audited" \
    "$(sql "SELECT string_agg(DISTINCT action, ',' ORDER BY action) FROM audit_log")" \
    'org\.create.*product\.create'

# ---- connection errors

expect_fail "unreachable --db gives one line" '^pinion: cannot connect to database' -- \
    "$PINION" --db "host=$PGHOST port=1 user=postgres dbname=x connect_timeout=5" org create x
expect_fail "unreachable --db on db migrate" 'cannot connect to database' -- \
    "$PINION" --db "host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=5" db migrate
expect_fail "unreachable PINION_DB" 'cannot connect to database' -- \
    env PINION_DB="host=$PGHOST port=1 user=postgres dbname=x" "$PINION" org create x
expect_fail "missing database" 'cannot connect to database' -- \
    "$PINION" --db "host=$PGHOST port=$PGPORT user=postgres dbname=no_such_db_$$" db migrate
expect_fail "malformed conninfo" 'cannot connect to database|invalid' -- \
    "$PINION" --db "this is not a conninfo" db migrate

# ---- usage and exit statuses

expect_ok "pinion --help" -- "$PINION" --help
assert_match "pinion --help prints usage" "$OUT" 'usage: pinion'
assert_match "pinion --help lists db migrate" "$OUT" 'db migrate'
expect_ok "pinion db migrate --help" -- "$PINION" db migrate --help
assert_match "db migrate --help prints usage" "$OUT" 'usage: pinion db migrate'
assert_match "db migrate --help mentions --db" "$OUT" '--db'
expect_ok "pinion org create --help" -- "$PINION" org create --help
assert_match "org create --help prints usage" "$OUT" 'usage: pinion org create'
expect_status "unknown command exits 2" 2 -- "$PINION" frobnicate
assert_match "unknown command is named" "$ERR" 'frobnicate'
expect_status "unknown subcommand exits 2" 2 -- "$PINION" db frobnicate
assert_match "unknown subcommand is named" "$ERR" 'frobnicate'
expect_status "unknown option exits 2" 2 -- "$PINION" db migrate --frobnicate
expect_status "no arguments exits 2" 2 -- "$PINION"

done_testing
