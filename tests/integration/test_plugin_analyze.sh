#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The broker's worker analyzes the device tables itself once it has stored
# 500 pins (plugin/persist.c, pn_persist_analyze): a first-connect storm
# from empty tables would otherwise have each pin's foreign-key check
# planned as a scan of an empty devices table until autovacuum's ANALYZE.
#
# What an operator can see: pg_stat_user_tables.analyze_count (manual
# ANALYZE, not autoanalyze_count) of device_certificates and devices is 0
# before the storm, and at least 1 within a few seconds of 600 devices'
# first connects to one broker.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

N=600
LOAD=$PINION_BUILD/bench/mqtt_load
[ -x "$LOAD" ] || bail_out "$LOAD is not built"

setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
setup "$LOAD" certs --ca ca --out devs -n "$N"

analyzed() { # TABLE: manual ANALYZE count
    sql "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = '$1'"
}

start_broker b1 || bail_out "broker did not start: $OUT"
assert_eq "before the storm nothing has analyzed device_certificates" \
    "$(analyzed device_certificates)" 0

expect_ok "$N devices connecting for the first time are all admitted" -- \
    "$LOAD" storm --port "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --certs devs -n "$N" -c 50
diag "$OUT"
stored() {
    [ "$(sql "SELECT count(*) FROM device_certificates WHERE status = 'active'")" -eq "$N" ]
}
wait_until 10 stored ||
    bail_out "only $(sql "SELECT count(*) FROM device_certificates") of $N pins stored"

# Statistics reach pg_stat_user_tables asynchronously (within a second or so).
has_analyzed() { [ "$(analyzed device_certificates)" -ge 1 ] && [ "$(analyzed devices)" -ge 1 ]; }
wait_until 5 has_analyzed || true
n=$(analyzed device_certificates)
if [ "${n:-0}" -ge 1 ]; then
    pass "after $N pins the broker analyzed device_certificates ($n)"
else
    fail "after $N pins the broker analyzed device_certificates" "analyze_count = ${n:-none}"
fi
n=$(analyzed devices)
if [ "${n:-0}" -ge 1 ]; then
    pass "... and devices ($n)"
else
    fail "... and devices" "analyze_count = ${n:-none}"
fi
done_testing
