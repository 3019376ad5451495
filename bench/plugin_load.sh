#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# How long the plugin takes to load N pinned devices (default 1,000,000)
# from PostgreSQL at broker start, and how much memory they take.  Starts a
# throwaway cluster, fills it with SQL, runs bench/plugin_load, stops it.
#   bash bench/plugin_load.sh [N] [BUILD_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000000}
BUILD=${2:-build}
. bench/common.sh
bench_pg
. "$W/pg/pg.env"
"$PINION_PG_BIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres bench
DB="host=$PGHOST port=$PGPORT user=postgres dbname=bench"
"$BUILD/pinion" --db "$DB" db migrate >/dev/null
"$BUILD/pinion" --db "$DB" org create acme >/dev/null
"$BUILD/pinion" --db "$DB" product create acme sensor >/dev/null
start=$SECONDS
psql -X -q -h "$PGHOST" -p "$PGPORT" -U postgres bench <<SQL
INSERT INTO devices (identifier, org_id, product_id)
  SELECT 'dev-' || g, 1, 1 FROM generate_series(1, $N) g;
INSERT INTO device_certificates (id, device_id, serial, spki_sha256, not_before, not_after, der)
  SELECT encode(sha256(('c' || d.id)::bytea), 'hex'), d.id, '01',
         encode(sha256(('k' || d.id)::bytea), 'hex'), now(), now() + interval '1 year', '\x00'
  FROM devices d;
SQL
echo "filled $N devices and pins in $((SECONDS - start)) s"
"$BUILD/bench/plugin_load" "$DB" "$W"
