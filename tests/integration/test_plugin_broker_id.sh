#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Two brokers configured with the same plugin_opt_broker_id (a copied
# config): the second finds the first's registry row beaten and beaten
# again, logs an error naming the fix, and writes nothing under that id, so
# the first's devices stay where piniond looks for them.  A broker that
# crashed and restarts at once is no conflict: it takes its row back.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
for id in dev-1 dev-2 dev-3; do device_cert "$id"; done
start_broker b1 || bail_out "b1: $OUT"
probe_bg b1 "$T/devs/dev-1" dev-1 "$T/dev-1.out" --stay 30
wait_sql 10 "SELECT broker_id FROM device_presence WHERE identifier = 'dev-1'" b1 ||
    bail_out "dev-1 is not recorded on b1: $(sql "SELECT * FROM device_presence")"
b1_address=$(sql "SELECT service_address FROM brokers WHERE id = 'b1'")

# b2 with b1's broker_id.  Telling b1's row from a crashed run's takes a
# heartbeat (3 s); the broker's main thread must not wait it out: that
# held Mosquitto's start (mosquitto_plugin_init) for 3 s.
t0=$(now_ms)
start_broker b2 broker_id=b1 || bail_out "b2: $OUT"
t=$(($(now_ms) - t0))
if [ "$t" -lt 2500 ]; then
    pass "b2 starts without waiting out b1's heartbeat (${t} ms)"
else
    fail "b2 starts without waiting out b1's heartbeat" "took ${t} ms"
fi
if wait_log b2 "pinion: broker_id 'b1' is in use by another running broker \\(service address $b1_address" 15; then
    pass "the second broker with broker_id b1 logs the conflict, naming the other broker's address"
else
    fail "the second broker with broker_id b1 logs the conflict" "$(grep pinion: "${BROKER_LOG[b2]}" | tail -5)"
fi
assert_match "... and the fix" "$(grep 'is in use by another' "${BROKER_LOG[b2]}" | head -1)" \
    'give each broker its own plugin_opt_broker_id'
probe_bg b2 "$T/devs/dev-2" dev-2 "$T/dev-2.out" --stay 20
wait_until 10 grep -qx 'connack 0' "$T/dev-2.out" || bail_out "b2 did not admit dev-2: $(cat "$T/dev-2.out")"
sleep 3 # more than a presence flush and a heartbeat of b2
assert_eq "dev-1 is still recorded on b1" \
    "$(sql "SELECT broker_id FROM device_presence WHERE identifier = 'dev-1'")" b1
assert_eq "b2 recorded nothing for dev-2 under b1's id" \
    "$(sql "SELECT count(*) FROM device_presence WHERE identifier = 'dev-2'")" 0
assert_eq "the registry row still has b1's address" \
    "$(sql "SELECT service_address FROM brokers WHERE id = 'b1'")" "$b1_address"
stop_broker b2

# b1 crashes and restarts within its heartbeat's life: no conflict.
kill -KILL "${BROKER_PID[b1]}"
wait "${BROKER_PID[b1]}" 2>/dev/null
BROKER_PID[b1]=""
t0=$(now_ms)
launch_broker b1 || bail_out "b1 did not restart: $OUT"
t=$(($(now_ms) - t0))
if [ "$t" -lt 2500 ]; then
    pass "b1 restarts after a crash without waiting out its old heartbeat (${t} ms)"
else
    fail "b1 restarts after a crash without waiting out its old heartbeat" "took ${t} ms"
fi
probe_bg b1 "$T/devs/dev-3" dev-3 "$T/dev-3.out" --stay 10
if wait_sql 15 "SELECT broker_id FROM device_presence WHERE identifier = 'dev-3'" b1; then
    pass "b1 restarted after a crash takes its row back and records dev-3"
else
    fail "b1 restarted after a crash records dev-3" "$(grep pinion: "${BROKER_LOG[b1]}" | tail -5)"
fi
assert_eq "... without logging a conflict" \
    "$(grep -c 'is in use by another running broker' "${BROKER_LOG[b1]}")" 0
done_testing
