#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Database outages (docs/protocol.md, "Admission": decisions from memory, fail closed for
# first connects).  While PostgreSQL is down, pinned devices keep
# connecting and unknown ones are refused; when it comes back the plugin
# reconnects by itself and admits (and pins) them, with no broker restart.
# A broker started while the database is down refuses everyone until it
# can load, then admits; on Mosquitto 2.1 devices wait instead (delayed
# authentication, up to 20 s) and are answered once it has loaded.
#
# This test stops and starts PostgreSQL, so it runs its own cluster: the
# shared fixture cluster must never go away under the other tests.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"


# ------------------------------------------------ a private cluster, pg2
PG2_STATE=$T/pg2
on_exit "bash $(printf %q "$PINION_SOURCE/tests/harness/pg.sh") stop $(printf %q "$PG2_STATE") >/dev/null 2>&1"
bash "$PINION_SOURCE/tests/harness/pg.sh" start "$PG2_STATE" >"$T/pg2-start.log" 2>&1 ||
    bail_out "cannot start a private PostgreSQL cluster: $(tail -20 "$T/pg2-start.log")"
pg2_var() { (. "$PG2_STATE/pg.env" && eval "printf %s \"\$$1\""); }
PG2_HOST=$(pg2_var PGHOST)
PG2_PORT=$(pg2_var PGPORT)
PG2_DATA=$(pg2_var PG_DATADIR)
PG2_TMP=$(pg2_var PG_TMPDIR)
PG2_BIN=$(pg2_var PINION_PG_BIN)
[ -n "$PG2_HOST" ] && [ -n "$PG2_PORT" ] && [ -d "$PG2_DATA" ] || bail_out "bad $PG2_STATE/pg.env"

# Same server options as pg.sh start, so a restart serves the same socket.
PG2_OPTS="-c listen_addresses='' -k $PG2_HOST -p $PG2_PORT -c fsync=off"
PG2_OPTS="$PG2_OPTS -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u "${PINION_PG_USER:-postgres}" -- "$@")
    else
        (cd / && "$@")
    fi
}
pg2_stop() {
    as_pg "$PG2_BIN/pg_ctl" -D "$PG2_DATA" -m fast -w -t 30 stop >"$T/pg2-ctl.log" 2>&1
}
pg2_start() {
    as_pg env LC_ALL=C LANG=C "$PG2_BIN/pg_ctl" -D "$PG2_DATA" -l "$PG2_TMP/postgresql.log" \
        -w -t 30 -o "$PG2_OPTS" start >"$T/pg2-ctl.log" 2>&1 &&
        wait_until 15 "$PG2_BIN/pg_isready" -q -h "$PG2_HOST" -p "$PG2_PORT" -U postgres
}
pg2_up() { "$PG2_BIN/pg_isready" -q -h "$PG2_HOST" -p "$PG2_PORT" -U postgres; }

"$PG2_BIN/createdb" -h "$PG2_HOST" -p "$PG2_PORT" -U postgres pinion_outage ||
    bail_out "createdb on the private cluster failed"
# Everything below (CLI, brokers) uses the private cluster.
export PINION_DB="host=$PG2_HOST port=$PG2_PORT user=postgres dbname=pinion_outage"
sql2() {
    "$PG2_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -h "$PG2_HOST" -p "$PG2_PORT" -U postgres \
        -d pinion_outage -c "$1"
}
setup "$PINION" db migrate

# ------------------------------------------------------------------ PKI
setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
for id in P U Q R S; do setup "$PINION" device cert --ca ca --id "$id" --out devs; done

pins_of() {
    sql2 "SELECT count(*) FROM device_certificates c JOIN devices d ON d.id = c.device_id
          WHERE d.identifier = '$1' AND c.status = 'active'"
}
is_pinned() { [ "$(pins_of "$1")" = 1 ]; }
# admitted BROKER ID: one connect attempt, true when CONNACK 0.
admitted() { probe "$1" "devs/$2" "$2" && grep -qx 'connack 0' <<<"$OUT"; }

start_broker b1 || bail_out "broker b1 did not start: $OUT"
b1_pid=${BROKER_PID[b1]}

probe b1 devs/P P
assert_eq "P connects while the database is up" "$RC" 0
wait_until 5 is_pinned P
assert_eq "P is pinned" "$(pins_of P)" 1

# --------------------------------------------------- the database goes away
pg2_stop || bail_out "cannot stop the private cluster: $(cat "$T/pg2-ctl.log")"
if pg2_up; then bail_out "the private cluster is still up"; fi
if wait_log b1 'database connection lost' 10; then
    pass "broker notices the outage"
else
    fail "broker notices the outage" "$(tail -5 "${BROKER_LOG[b1]}")"
fi

probe b1 devs/P P
assert_eq "pinned P still connects while the database is down" "$RC" 0
probe b1 devs/P P --v5 --qos 1 --pub 'fleet/P/up/status=during-outage' --sub 'fleet/P/down/#'
assert_match "P may still publish to its own tree during the outage" "$OUT" \
    $'(^|\n)puback fleet/P/up/status (0|16)(\n|$)'
assert_match "P may still subscribe to its own tree during the outage" "$OUT" \
    $'(^|\n)suback fleet/P/down/# 1(\n|$)'
probe b1 devs/U U
if [ "$RC" -eq 5 ] && grep -qx 'connack 5' <<<"$OUT"; then
    pass "unknown U is refused while the database is down"
else
    fail "unknown U is refused while the database is down" "exit $RC" "$OUT"
fi
assert_match "broker log says the database is unavailable" "$(cat "${BROKER_LOG[b1]}")" \
    'refused certificate [0-9a-f]{64} identifier U: database unavailable'

# Long enough for the plugin's reconnect backoff to grow.
sleep 3

# ------------------------------------------------ the database comes back
pg2_start || bail_out "cannot restart the private cluster: $(cat "$T/pg2-ctl.log")"
t0=$SECONDS
if wait_until 15 admitted b1 U; then
    pass "U is admitted within 15 s of the database coming back ($((SECONDS - t0)) s)"
else
    fail "U is admitted within 15 s of the database coming back" "$OUT" \
        "$(tail -8 "${BROKER_LOG[b1]}")"
fi
wait_until 5 is_pinned U
assert_eq "U is pinned in the database" "$(pins_of U)" 1
assert_match "broker log says the database is back" "$(cat "${BROKER_LOG[b1]}")" \
    'pinion: database connected'
assert_eq "the broker was not restarted" \
    "$(kill -0 "$b1_pid" 2>/dev/null && grep -c 'mosquitto version .* starting' "${BROKER_LOG[b1]}")" 1
probe b1 devs/P P
assert_eq "P still connects after the outage" "$RC" 0
stop_broker b1

# ---------------------------- a broker started while the database is down
pg2_stop || bail_out "cannot stop the private cluster: $(cat "$T/pg2-ctl.log")"
# As a restarted broker would, b2 finds the trust directory its last run
# wrote (the plugin rewrites it only from a load), so TLS accepts devices.
prepare_broker b2
cp -p "${BROKER_TRUST[b1]}"/* "${BROKER_TRUST[b2]}"/
if launch_broker b2; then
    pass "broker starts while the database is down"
else
    fail "broker starts while the database is down" "$OUT"
    done_testing
fi
assert_match "it logs that it cannot load" "$(cat "${BROKER_LOG[b2]}")" \
    'pinion: cannot load from the database'
case $BROKER_VERSION in
2.0.*)
    probe b2 devs/P P
    assert_no_match "pinned P is refused by a broker that never loaded" "$RC" '^0$'
    probe b2 devs/Q Q
    assert_no_match "new Q is refused by a broker that never loaded" "$RC" '^0$'
    sleep 2
    ;;
*)
    # R gives up after 10 s (pn-probe's CONNACK wait) and is gone when its
    # 20 s are up: the answer for a client that left must do no harm.
    probe_bg b2 devs/R R "$T/wait-R.out"
    if wait_log b2 'refused certificate [0-9a-f]{64} identifier R: database unavailable for 20 s' 30; then
        pass "a device that waited 20 s for the first load is refused, with a log line"
    else
        fail "a device that waited 20 s for the first load is refused" "$(tail -5 "${BROKER_LOG[b2]}")"
    fi
    assert_eq "R got no CONNACK while it waited" "$(grep -c '^connack' "$T/wait-R.out")" 0
    probe_bg b2 devs/P P "$T/wait-P.out" --stay 8
    wait_P=$PROBE_PID
    probe_bg b2 devs/Q Q "$T/wait-Q.out"
    wait_Q=$PROBE_PID
    # S leaves while it waits, and the load comes before its 20 s are up:
    # 2.1 tells plugins nothing of a waiting client that leaves, and its
    # answer then admits no one, so S must not be recorded as present.
    probe_bg b2 devs/S S "$T/wait-S.out"
    wait_S=$PROBE_PID
    sleep 1 # (pn-probe waits 10 s for its CONNACK; the worker retries every 5 s)
    kill "$wait_S"
    wait "$wait_S" 2>/dev/null
    assert_eq "pinned P and new Q wait for the first load (no CONNACK yet)" \
        "$(cat "$T/wait-P.out" "$T/wait-Q.out" | grep -c '^connack')" 0
    ;;
esac
pg2_start || bail_out "cannot restart the private cluster: $(cat "$T/pg2-ctl.log")"
if [ -n "${wait_P:-}" ]; then
    # A device admitted after waiting is where piniond looks for it.
    wait_until 10 grep -qx 'connack 0' "$T/wait-P.out"
    if wait_until 7 test "$(sql2 "SELECT broker_id FROM device_presence WHERE identifier = 'P'")" = b2; then
        pass "waiting P, once admitted, is recorded as present on b2"
    else
        fail "waiting P, once admitted, is recorded as present on b2" \
            "$(sql2 "SELECT * FROM device_presence")"
    fi
    wait "$wait_P" "$wait_Q"
    assert_eq "S, which left while it waited, is not recorded as present" \
        "$(sql2 "SELECT count(*) FROM device_presence WHERE identifier = 'S'")" 0
    assert_eq "once it has loaded, waiting P is admitted" "$(head -1 "$T/wait-P.out")" "connack 0"
    assert_eq "and waiting Q too" "$(head -1 "$T/wait-Q.out")" "connack 0"
    kill -0 "${BROKER_PID[b2]}" 2>/dev/null && pass "the broker is still running" ||
        fail "the broker is still running"
fi
t0=$SECONDS
if wait_until 15 admitted b2 P; then
    pass "P is admitted once the database is up ($((SECONDS - t0)) s)"
else
    fail "P is admitted once the database is up" "exit $RC" "$OUT" "$(tail -8 "${BROKER_LOG[b2]}")"
fi
admitted b2 Q
assert_eq "new Q is admitted once the database is up" "$RC" 0
wait_until 5 is_pinned Q
assert_eq "Q is pinned" "$(pins_of Q)" 1

done_testing
