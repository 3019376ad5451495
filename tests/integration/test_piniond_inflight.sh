#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Updates in flight that can no longer finish do not hold a deployment's
# slots for ever (docs/protocol.md, "Rollout rules"):
#   - a device revoked while in flight: its update is `cancelled`, its
#     retained manifest cleared, and the slot goes to the next device;
#   - a device that never reports (offline) for inflight_timeout seconds:
#     `expired`, manifest cleared, slot freed; it is not released to again
#     until it has connected since, and then it is;
#   - a release check failing while every slot is taken (artifact altered on
#     disk): the deployment pauses with the reason and its in-flight updates
#     are cancelled, manifests cleared;
#   - a deployment paused by hand keeps renewing its in-flight manifests;
#   - piniond restarted with more than 1,000 in-flight updates publishes
#     every one of them again, not just the first 1,000, unchanged (same
#     sequence): a restart changes nothing a device sees.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
FW110=$FW_UUID
for d in r-off r-on x-off x-on k-off p-off; do
    o=$("$PINION" device create acme sensor "$d" --tags "${d%%-*}" 2>&1) || bail_out "device create $d: $o"
done
start_broker b1 || bail_out "broker: $OUT"

# update_of ID: "state|reason" of the device's update (one deployment each here).
update_of() {
    sql "SELECT u.state || '|' || u.reason FROM device_updates u JOIN devices d ON d.id = u.device_id
         WHERE d.identifier = '$1'"
}
# retained ID: the retained manifest on the device's update topic, as the
# service sees it when it subscribes ("" when there is none).
retained() {
    probe b1 "$T/svc" "piniond-look-$RANDOM" --sub "fleet/$1/down/update" --stay 1
    grep -c "^msg fleet/$1/down/update " <<<"$OUT" || true
}
# report_once ID: the device reports its firmware (1.0.0), then goes offline.
report_once() {
    start_device "$1" --run-for 2
    wait_sql 20 "SELECT firmware_version FROM devices WHERE identifier = '$1'" 1.0.0 ||
        bail_out "$1 did not report"
    stop_device "$1"
}

start_piniond p1 || bail_out "piniond: $OUT"
for d in r-off x-off k-off p-off; do report_once "$d"; done

# ------------------------------------------------- revoked while in flight
start_device r-on --run-for 120
"$PINION" deployment create acme sensor dr --firmware "$FW_UUID" --tags r --concurrency 1 \
    >/dev/null || bail_out "deployment create dr"
"$PINION" deployment start acme dr >/dev/null || bail_out "deployment start dr"
wait_sql 20 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'r-off'" released ||
    bail_out "r-off (offline, lowest id) was not released first: $OUT"
sleep 1
assert_eq "with r-off in flight, r-on waits (concurrency 1)" "$(update_of r-on)" ""
assert_eq "r-off's manifest is retained for it" "$(retained r-off)" 1
expect_ok "device revoke r-off" -- "$PINION" device revoke r-off
if wait_sql 20 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'r-off'" cancelled; then
    pass "r-off's update is cancelled"
else
    fail "r-off's update is cancelled" "state: $OUT"
fi
assert_eq "... with the reason" "$(update_of r-off)" "cancelled|device revoked"
assert_eq "... and its retained manifest cleared" "$(retained r-off)" 0
if wait_sql 30 "SELECT firmware_uuid FROM devices WHERE identifier = 'r-on'" "$FW_UUID"; then
    pass "the freed slot went to r-on, which completed"
else
    fail "the freed slot went to r-on, which completed" "$(update_of r-on)"
fi
stop_piniond p1

# ------------------------------------------------- no status for inflight_timeout
start_piniond p2 "inflight_timeout = 3" || bail_out "piniond p2: $OUT"
start_device x-on --run-for 120
"$PINION" deployment create acme sensor dx --firmware "$FW_UUID" --tags x --concurrency 1 \
    >/dev/null || bail_out "deployment create dx"
"$PINION" deployment start acme dx >/dev/null || bail_out "deployment start dx"
wait_sql 20 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'x-off'" released ||
    bail_out "x-off was not released first: $OUT"
if wait_sql 20 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'x-off'" expired; then
    pass "x-off's update expires after 3 s without a status report"
else
    fail "x-off's update expires after 3 s without a status report" "state: $OUT"
fi
assert_eq "... with the reason" "$(update_of x-off)" "expired|no status report for 3 s"
assert_eq "... and its retained manifest cleared" "$(retained x-off)" 0
if wait_sql 30 "SELECT firmware_uuid FROM devices WHERE identifier = 'x-on'" "$FW_UUID"; then
    pass "the freed slot went to x-on, which completed"
else
    fail "the freed slot went to x-on, which completed" "$(update_of x-on)"
fi
sleep 4 # more than inflight_timeout: a re-release would have happened by now
assert_eq "x-off, still offline, is not released again" "$(update_of x-off)" \
    "expired|no status report for 3 s"
assert_eq "... (one manifest sequence so far)" \
    "$(sql "SELECT manifest_sequence FROM devices WHERE identifier = 'x-off'")" 1
start_device x-off --run-for 120
if wait_sql 30 "SELECT firmware_uuid FROM devices WHERE identifier = 'x-off'" "$FW_UUID"; then
    pass "once x-off connects again it is released to and completes"
else
    fail "once x-off connects again it is released to and completes" "$(update_of x-off)"
fi
stop_device x-off
stop_piniond p2

# ------------------------------------------------- release check fails, slots full
make_firmware 1.2.0
start_piniond p3 || bail_out "piniond p3: $OUT"
"$PINION" deployment create acme sensor dk --firmware "$FW_UUID" --tags k --concurrency 1 \
    >/dev/null || bail_out "deployment create dk"
"$PINION" deployment start acme dk >/dev/null || bail_out "deployment start dk"
wait_sql 20 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'k-off'" released ||
    bail_out "k-off was not released: $OUT"
assert_eq "k-off's manifest is retained for it" "$(retained k-off)" 1
flip_byte "$FW_ARTIFACT"
if wait_sql 90 "SELECT state FROM deployments WHERE name = 'dk'" paused; then
    pass "with its one slot taken, dk still pauses when the stored artifact changes"
else
    fail "with its one slot taken, dk still pauses when the stored artifact changes" "state $OUT"
fi
assert_match "... with the reason" "$(sql "SELECT state_reason FROM deployments WHERE name = 'dk'")" \
    '^release check failed: firmware .*'
assert_match "k-off's update is cancelled with that reason" "$(update_of k-off)" \
    '^cancelled\|release check failed: '
assert_eq "... and its retained manifest cleared" "$(retained k-off)" 0
stop_piniond p3

# ------------------------------------------------- paused by hand: in flight goes on
# The device in flight keeps a valid manifest: it is renewed at half of
# manifest_ttl (60 s here, the smallest allowed) although the deployment
# is paused.
start_piniond p5 "manifest_ttl = 60" || bail_out "piniond p5: $OUT"
"$PINION" deployment create acme sensor dp --firmware "$FW110" --tags p --concurrency 1 \
    >/dev/null || bail_out "deployment create dp"
"$PINION" deployment start acme dp >/dev/null || bail_out "deployment start dp"
wait_sql 20 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'p-off'" released ||
    bail_out "p-off was not released: $OUT"
"$PINION" deployment pause acme dp >/dev/null || bail_out "deployment pause dp"
if wait_sql 50 "SELECT manifest_sequence FROM devices WHERE identifier = 'p-off'" 2; then
    pass "p-off's manifest is renewed while its deployment is paused"
else
    fail "p-off's manifest is renewed while its deployment is paused" "sequence $OUT"
fi
assert_eq "... the deployment stays paused and p-off in flight" \
    "$(sql "SELECT state FROM deployments WHERE name = 'dp'")|$(update_of p-off)" "paused|released|"
assert_eq "... and the renewed manifest is retained for it" "$(retained p-off)" 1
stop_piniond p5

# ------------------------------------------------- restart with > 1,000 in flight
N=1100
sql "INSERT INTO devices (identifier, org_id, product_id, firmware_platform, firmware_architecture)
     SELECT 'm-' || g, o.id, p.id, 'rpi4', 'aarch64' FROM generate_series(1, $N) g,
            orgs o JOIN products p ON p.org_id = o.id WHERE o.name = 'acme' AND p.name = 'sensor';
     INSERT INTO deployments (org_id, product_id, name, firmware_id, state, concurrency)
     SELECT o.id, p.id, 'dm', f.id, 'running', $((N + 10)) FROM orgs o
            JOIN products p ON p.org_id = o.id JOIN firmware f ON f.product_id = p.id
     WHERE o.name = 'acme' AND p.name = 'sensor' AND f.version = '1.1.0';
     INSERT INTO device_updates (device_id, deployment_id, state, sequence, issued_at, expires_at)
     SELECT d.id, dp.id, 'released', 1, now() - interval '1 minute', now() + interval '1 day'
     FROM devices d, deployments dp WHERE d.identifier LIKE 'm-%' AND dp.name = 'dm';
     UPDATE devices SET manifest_sequence = 1 WHERE identifier LIKE 'm-%'" >/dev/null ||
    bail_out "cannot make $N in-flight updates"
start_piniond p4 "inflight_timeout = 3600" || bail_out "piniond p4: $OUT"
# Recorded on no broker (none reachable then): published on b1 now.
if wait_sql 60 "SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier LIKE 'm-%' AND u.broker_id = 'b1'" "$N"; then
    pass "a restarted piniond published all $N in-flight manifests"
else
    fail "a restarted piniond published all $N in-flight manifests" "$OUT published"
fi
assert_eq "... each exactly once" \
    "$(grep -o 'published again sensor 1.1.0 to m-[0-9]* (deployment dm, sequence 1)' "${PD_LOG[p4]}" | sort -u | wc -l):$(grep -c 'published again sensor 1.1.0 to m-' "${PD_LOG[p4]}")" "$N:$N"
assert_eq "... unchanged: no new sequence (1 everywhere)" \
    "$(sql "SELECT count(*) FROM devices WHERE identifier LIKE 'm-%' AND manifest_sequence <> 1")" 0

done_testing
