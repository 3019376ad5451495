#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A JITP device's first pin that the database refuses (here: its CA was
# disabled while the pin waited to be stored) leaves no device behind in
# the broker's memory either.  Else the next first connect of that
# identifier, once the CA is enabled again, was taken for one of an
# existing device, the worker found no such device row, and the device
# was disconnected and refused ("device no longer exists") until the next
# full reload (resync_interval, 5 minutes by default).
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
setup "$PINION" device cert --ca ca --id X --out devs
CA=$(sql "SELECT id FROM ca_certificates")
pins_of() {
    sql "SELECT count(*) FROM device_certificates c JOIN devices d ON d.id = c.device_id
         WHERE d.identifier = '$1' AND c.status = 'active'"
}
waiting_in() {
    [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
              AND wait_event_type = 'Lock' AND query LIKE '$1'")" -ge 1 ]
}

start_broker b1 || bail_out "broker did not start: $OUT"

# The CA is disabled by a transaction that holds its row for 2 s: X's
# first connect is admitted from memory meanwhile, and its pin, waiting for
# the CA row, finds the CA disabled.
"$PINION_PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres \
    -d "$PINION_TEST_DB" -c "BEGIN; UPDATE ca_certificates SET status = 'disabled' WHERE id = '$CA';
        SELECT pg_sleep(2); COMMIT;" >/dev/null 2>"$T/.hold.err" &
hold=$!
sleeping() {
    [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
              AND wait_event = 'PgSleep'")" -ge 1 ]
}
wait_until 10 sleeping ||
    bail_out "psql did not disable the CA: $(cat "$T/.hold.err")"
probe_bg b1 devs/X X "$T/x1.out" --stay 6
x1=$PROBE_PID
wait_until 10 waiting_in '%FROM ca_certificates%FOR SHARE' ||
    bail_out "the pin of X is not waiting for the CA row: $(cat "$T/x1.out") $(cat "$T/.hold.err")"
wait "$hold"
wait "$x1" 2>/dev/null
assert_eq "X, admitted from memory, is disconnected once its pin is refused" \
    "$(grep -oE '^(connack [0-9]+|disconnected)' "$T/x1.out" | tr '\n' ' ')" "connack 0 disconnected "
assert_eq "nothing of X is stored" "$(sql "SELECT count(*) FROM devices WHERE identifier = 'X'")" 0

setup "$PINION" ca enable "$CA"
sleep 0.5 # the broker reads the change from its NOTIFY
probe_bg b1 devs/X X "$T/x2.out" --stay 3
x2=$PROBE_PID
wait "$x2" 2>/dev/null
assert_eq "X connects again once its CA is enabled, and stays" \
    "$(grep -oE '^(connack [0-9]+|disconnected|done)' "$T/x2.out" | tr '\n' ' ')" "connack 0 done "
assert_eq "X is pinned" "$(pins_of X)" 1
assert_no_match "no 'device no longer exists' refusal" "$(cat "${BROKER_LOG[b1]}")" \
    'identifier X: device no longer exists'
done_testing
