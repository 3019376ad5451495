#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# piniond rolls a firmware out to 20 reference devices with --concurrency 5:
# never more than 5 in flight (polled in the database while it runs), all
# 20 end on the new firmware with their update complete, each having
# accepted exactly one manifest; a device that connects after the
# deployment began is picked up by the same piniond process.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

N=20
CONC=5
make_fleet
start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 || bail_out "piniond did not start: $OUT"
PID1=${PD_PID[p1]}

# 1 KiB chunks: each download is ~300 round trips, long enough for the
# polling below to see the devices in flight.
DEVS=()
for i in $(seq -w 1 $N); do
    DEVS+=("dev-$i")
    start_device "dev-$i" --run-for 170 --chunk 1024
done
wait_sql 30 "SELECT count(*) FROM devices WHERE firmware_platform = 'rpi4' AND firmware_version = '1.0.0'" "$N" ||
    bail_out "only $OUT of $N devices reported their firmware to piniond"
pass "all $N devices connected and reported firmware 1.0.0 on rpi4/aarch64"

expect_ok "deployment created with --concurrency $CONC" -- \
    "$PINION" deployment create acme sensor d1 --firmware "$FW_UUID" --concurrency $CONC \
    --version "< 1.1.0"
expect_ok "deployment started" -- "$PINION" deployment start acme d1

# Poll while it runs: the in-flight count must never exceed the concurrency.
INFLIGHT="SELECT count(*) FROM device_updates WHERE state IN ('released','received','downloading','installing','rescheduled')"
max=0
samples=0
deadline=$((SECONDS + 90))
while [ $SECONDS -lt $deadline ]; do
    row=$(sql "SELECT ($INFLIGHT), (SELECT count(*) FROM device_updates WHERE state = 'complete')")
    inflight=${row%%|*}
    done_n=${row##*|}
    samples=$((samples + 1))
    [ "$inflight" -gt "$max" ] && max=$inflight
    [ "$done_n" -ge "$N" ] && break
    sleep 0.05
done
diag "$samples samples of the in-flight count; maximum $max"
if [ "$max" -le $CONC ]; then
    pass "never more than $CONC devices in flight (max seen $max)"
else
    fail "never more than $CONC devices in flight" "max seen $max"
fi
assert_eq "the concurrency was used: $CONC in flight at some point" "$max" "$CONC"

assert_eq "all $N device_updates rows are complete" \
    "$(sql "SELECT state, count(*) FROM device_updates GROUP BY state")" "complete|$N"
assert_eq "all $N devices run the new firmware (devices.firmware_uuid)" \
    "$(sql "SELECT count(*) FROM devices WHERE firmware_uuid = '$FW_UUID' AND firmware_version = '1.1.0'")" "$N"
assert_eq "each device was issued exactly one sequence (devices.manifest_sequence = 1)" \
    "$(sql "SELECT count(*) FROM devices WHERE manifest_sequence = 1")" "$N"

bad=()
for d in "${DEVS[@]}"; do
    a=$(grep '^accepted manifest ' "$T/dev-$d.log")
    if [ "$a" != "accepted manifest 1 for sensor 1.1.0" ] || ! grep -qx 'installed sensor 1.1.0' "$T/dev-$d.log"; then
        bad+=("$d: $(printf '%s' "$a" | tr '\n' ';')")
    fi
done
if [ ${#bad[@]} -eq 0 ]; then
    pass "each device log has exactly one 'accepted manifest 1' line and an install"
else
    fail "each device log has exactly one 'accepted manifest 1' line and an install" "${bad[@]}"
fi
assert_eq "no device refused a manifest piniond issued for it" \
    "$(cat "$T"/dev-dev-*.log | grep '^refused manifest: ' | grep -vc 'replayed or old manifest: sequence 1 is not above the last accepted 1')" 0

# A device that appears after the deployment began (here: after the first
# 20 completed) is released to by the same running process.
start_device dev-late --run-for 170
if wait_sql 30 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'dev-late'" complete; then
    pass "a device started after the deployment began completes it"
else
    fail "a device started after the deployment began completes it" "state: '$OUT'" \
        "$(tail -5 "$T/dev-dev-late.log")"
fi
assert_eq "the late device accepted exactly one manifest" "$(accepted_count dev-late)" 1
assert_eq "the late device runs the new firmware" \
    "$(sql "SELECT firmware_uuid FROM devices WHERE identifier = 'dev-late'")" "$FW_UUID"
if kill -0 "$PID1" 2>/dev/null && [ "$(grep -c 'piniond: starting' "${PD_LOG[p1]}")" -eq 1 ]; then
    pass "piniond was not restarted"
else
    fail "piniond was not restarted" "$(tail -5 "${PD_LOG[p1]}")"
fi
assert_eq "deployment shows $((N + 1)) complete" \
    "$("$PINION" deployment show acme d1 --json | json_get .devices)" "{\"complete\":$((N + 1))}"

done_testing
