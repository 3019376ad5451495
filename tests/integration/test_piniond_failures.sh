#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# How piniond handles failure:
#   - an artifact altered on disk after upload fails the release check: the
#     deployment is paused with the reason recorded and audited, and no
#     manifest is published;
#   - a device failing its install 3 times is held back ('penalty',
#     attempts 3) while the other devices of the deployment complete;
#   - a deployment with --max-failures 2 pauses itself once 2 devices failed,
#     and releases to nobody after that.
# The three deployments target disjoint device groups by tag.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
FW110=$FW_UUID
make_firmware 1.2.0
FW120=$FW_UUID
ART120=$FW_ARTIFACT

# Devices exist (with their group tag) before the broker loads its state.
for d in c-1 a-1 a-2 a-3 a-fail b-1 b-2 b-ok b-late; do
    g=grp${d:0:1}
    o=$("$PINION" device create acme sensor "$d" --tags "$g" 2>&1) || bail_out "device create $d: $o"
done
start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 || bail_out "piniond did not start: $OUT"

dev_sql() { # dev_sql IDENTIFIER DEPLOYMENT COLUMNS
    sql "SELECT u.$3 FROM device_updates u JOIN devices d ON d.id = u.device_id JOIN deployments dp ON dp.id = u.deployment_id WHERE d.identifier = '$1' AND dp.name = '$2'"
}

# ------------------------------------------------- tampered stored artifact
start_device c-1 --run-for 170
wait_sql 20 "SELECT firmware_platform FROM devices WHERE identifier = 'c-1'" rpi4 ||
    bail_out "c-1 did not report its firmware"
# Flip one byte in the middle of the stored archive.
flip_byte "$ART120"
probe_bg b1 "$T/svc" piniond-watch-updates "$T/watch.out" --qos 1 --sub 'fleet/+/down/update' --stay 3
WATCH=$PROBE_PID
expect_ok "deployment on the altered firmware created" -- \
    "$PINION" deployment create acme sensor dC --firmware "$FW120" --tags grpc --version "< 1.2.0"
expect_ok "deployment on the altered firmware started" -- "$PINION" deployment start acme dC
if wait_sql 15 "SELECT state FROM deployments WHERE name = 'dC'" paused; then
    pass "the release check failure paused the deployment"
else
    fail "the release check failure paused the deployment" "state: $OUT" "$(tail -5 "${PD_LOG[p1]}")"
fi
assert_match "deployments.state_reason says why" \
    "$(sql "SELECT state_reason FROM deployments WHERE name = 'dC'")" \
    "^release check failed: firmware $FW120: stored artifact"
assert_eq "audit_log has a deployment.paused row with that reason" \
    "$(sql "SELECT count(*) FROM audit_log WHERE action = 'deployment.paused' AND object = 'dC' AND detail->>'reason' LIKE 'release check failed%'")" 1
assert_match "piniond logged the failed release check" "$(cat "${PD_LOG[p1]}")" \
    "deployment dC paused: release check failed: firmware $FW120"
assert_eq "nothing was released (no device_updates row)" \
    "$(sql "SELECT count(*) FROM device_updates")" 0
wait "$WATCH"
assert_match "the service probe subscribed" "$(cat "$T/watch.out")" 'suback fleet/\+/down/update 1'
assert_no_match "the service probe saw no manifest on fleet/+/down/update" \
    "$(cat "$T/watch.out")" '(^|'$'\n'')msg '
assert_eq "the device accepted no manifest" "$(accepted_count c-1)" 0
assert_eq "piniond published no manifest" "$(grep -c ' released ' "${PD_LOG[p1]}")" 0

# ------------------------------------- penalty (A) and max-failures (B)
for d in a-1 a-2 a-3 b-ok; do
    start_device "$d" --run-for 170
done
start_device a-fail --run-for 170 --fail-installs 3
start_device b-1 --run-for 170 --fail-installs 1000
start_device b-2 --run-for 170 --fail-installs 1000
wait_sql 20 "SELECT count(*) FROM devices WHERE firmware_platform = 'rpi4' AND identifier ~ '^[ab]-'" 7 ||
    bail_out "only $OUT of 7 devices reported their firmware"
expect_ok "deployment dA created" -- \
    "$PINION" deployment create acme sensor dA --firmware "$FW110" --tags grpa --version "< 1.1.0"
expect_ok "deployment dB created with --max-failures 2" -- \
    "$PINION" deployment create acme sensor dB --firmware "$FW110" --tags grpb --version "< 1.1.0" \
    --max-failures 2
expect_ok "deployment dA started" -- "$PINION" deployment start acme dA
expect_ok "deployment dB started" -- "$PINION" deployment start acme dB

# A: the other devices complete, the failing one ends in penalty.
if wait_sql 60 "SELECT string_agg(d.identifier || '=' || u.state, ' ' ORDER BY d.identifier) FROM device_updates u JOIN devices d ON d.id = u.device_id JOIN deployments dp ON dp.id = u.deployment_id WHERE dp.name = 'dA'" \
    "a-1=complete a-2=complete a-3=complete a-fail=penalty"; then
    pass "dA: a-1..a-3 complete, a-fail is held back (penalty)"
else
    fail "dA: a-1..a-3 complete, a-fail is held back (penalty)" "got: $OUT" "$(tail -8 "$T/dev-a-fail.log")"
fi
assert_eq "a-fail: attempts 3, penalty in the future" \
    "$(dev_sql a-fail dA "attempts, penalty_until > now() + interval '200 seconds'")" "3|t"
assert_eq "a-fail reported 3 failed installs" \
    "$(grep -c '^status failed: simulated install failure' "$T/dev-a-fail.log")" 3
assert_eq "a-fail accepted 3 manifests, sequences 1, 2, 3" \
    "$(grep '^accepted manifest' "$T/dev-a-fail.log" | awk '{print $3}' | tr '\n' ' ')" "1 2 3 "
assert_eq "a-fail still runs the factory firmware" \
    "$(sql "SELECT firmware_version FROM devices WHERE identifier = 'a-fail'")" "1.0.0"
assert_eq "dA counts one failed device and keeps running" \
    "$(sql "SELECT state, failures FROM deployments WHERE name = 'dA'")" "running|1"
# Held back: nothing more is issued to it for a while, and its retained
# manifest was cleared.
seq_before=$(sql "SELECT manifest_sequence FROM devices WHERE identifier = 'a-fail'")
sleep 2
assert_eq "a-fail gets no new manifest while held back" \
    "$(sql "SELECT manifest_sequence FROM devices WHERE identifier = 'a-fail'"):$(dev_sql a-fail dA state)" \
    "$seq_before:penalty"
probe b1 "$T/svc" piniond-peek-a-fail --qos 1 --sub 'fleet/a-fail/down/update' --stay 1
assert_no_match "a-fail's retained manifest was cleared" "$OUT" '(^|'$'\n'')msg '

# B: two devices failing 3 times each reach max-failures 2.
if wait_sql 60 "SELECT state FROM deployments WHERE name = 'dB'" paused; then
    pass "dB paused itself"
else
    fail "dB paused itself" "state: $OUT" "$(sql "SELECT d.identifier, u.state, u.attempts FROM device_updates u JOIN devices d ON d.id = u.device_id")"
fi
assert_match "dB's state_reason mentions max-failures" \
    "$(sql "SELECT state_reason FROM deployments WHERE name = 'dB'")" 'max-failures 2'
assert_eq "dB counts 2 failures" "$(sql "SELECT failures FROM deployments WHERE name = 'dB'")" 2
assert_eq "b-1 and b-2 are in penalty after 3 attempts each" \
    "$(dev_sql b-1 dB "state, attempts"),$(dev_sql b-2 dB "state, attempts")" "penalty|3,penalty|3"
assert_eq "audit_log has dB's pause" \
    "$(sql "SELECT count(*) FROM audit_log WHERE action = 'deployment.paused' AND object = 'dB'")" 1
# Paused: a device that turns up now is not released to.
start_device b-late --run-for 170
wait_sql 20 "SELECT firmware_platform FROM devices WHERE identifier = 'b-late'" rpi4 ||
    bail_out "b-late did not report its firmware"
sleep 1.5
assert_eq "the paused deployment releases to no new device" \
    "$(sql "SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'b-late'"):$(accepted_count b-late)" "0:0"
assert_eq "none of the failing, paused or refused devices installed anything" \
    "$(cat "$T/dev-a-fail.log" "$T/dev-b-1.log" "$T/dev-b-2.log" "$T/dev-b-late.log" "$T/dev-c-1.log" | grep -c '^installed ')" 0

# D: max-failures counts devices, not failures.  One device held back twice
# (1 attempt each time, 2 s penalty) counts once; a second device makes 2.
stop_piniond p1
start_piniond p2 "max_attempts = 1" "penalty = 2" || bail_out "piniond p2: $OUT"
for d in d-1 d-2; do
    o=$("$PINION" device create acme sensor "$d" --tags grpd 2>&1) || bail_out "device create $d: $o"
done
start_device d-1 --run-for 170 --fail-installs 2
expect_ok "deployment dD created (--max-failures 2)" -- "$PINION" deployment create acme sensor dD \
    --firmware "$FW110" --tags grpd --concurrency 1 --max-failures 2
expect_ok "deployment dD started" -- "$PINION" deployment start acme dD
if wait_file 60 "${PD_LOG[p2]}" 'd-1 failed deployment dD 1 times .* held back' &&
    wait_sql 60 "SELECT count(*) FROM device_updates u JOIN deployments dp ON dp.id = u.deployment_id WHERE dp.name = 'dD' AND u.state = 'complete'" 1; then
    pass "d-1 was held back after its first failure, and completed after its second release"
else
    fail "d-1 was held back after its first failure, and completed after its second release" \
        "$(tail -5 "${PD_LOG[p2]}")"
fi
assert_eq "d-1 failed twice (two install failures)" \
    "$(grep -c '^status failed: simulated install failure' "$T/dev-d-1.log")" 2
assert_eq "... yet dD counts one failed device and keeps running" \
    "$(sql "SELECT state, failures FROM deployments WHERE name = 'dD'")" "running|1"
start_device d-2 --run-for 170 --fail-installs 5
if wait_sql 60 "SELECT state FROM deployments WHERE name = 'dD'" paused; then
    pass "a second failing device pauses dD (max-failures 2)"
else
    fail "a second failing device pauses dD (max-failures 2)" "state $OUT"
fi
assert_eq "... counting 2 devices" "$(sql "SELECT failures FROM deployments WHERE name = 'dD'")" 2

# Started again, dD's count begins at 0: d-2, still failing, is held back once
# more and counts 1 (the devices held back before the start no longer count,
# or dD would pause again at once).
expect_ok "dD started again" -- "$PINION" deployment start acme dD
held_twice() { [ "$(grep -c 'd-2 failed deployment dD .* held back' "${PD_LOG[p2]}")" -ge 2 ]; }
if wait_until 60 held_twice; then
    pass "d-2 was released again and held back again"
else
    fail "d-2 was released again and held back again" "$(tail -5 "${PD_LOG[p2]}")"
fi
sleep 0.5
assert_eq "... and dD counts 1 failed device since its start, and keeps running" \
    "$(sql "SELECT state, failures FROM deployments WHERE name = 'dD'")" "running|1"

done_testing
