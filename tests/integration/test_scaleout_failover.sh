#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Devices that change broker, and a broker lost (README "Scaling out"):
#   - a device moved mid-download (disconnected from b1, reconnected to b2)
#     gets its manifest re-issued on b2 within 2 s of showing up there,
#     with a higher sequence than the one it had on b1, resumes from its
#     offset and completes; the retained copy on b1 is cleared;
#   - b2 killed with SIGKILL mid-rollout: every device it held reconnects
#     through HAProxy to b1 or b3 and completes; piniond logs b2 as lost,
#     and uses it again once it is restarted; no (device, sequence) is
#     issued twice.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"
. "$PINION_SOURCE/tests/harness/haproxy.sh"

make_fleet
make_firmware 1.2.0 $((2 << 20))
FW=$FW_UUID
for b in b1 b2 b3; do
    start_broker "$b" || bail_out "broker $b: $OUT"
done
start_haproxy b1 b2 b3
start_piniond p1 "chunk_max = 4096" || bail_out "piniond did not start: $OUT"
wait_until 10 grep -q 'connected to broker b3 ' "${PD_LOG[p1]}" || bail_out "piniond found no b3"
wait_until 10 grep -q 'connected to broker b2 ' "${PD_LOG[p1]}" || bail_out "piniond found no b2"

part_size() {
    local f="$T/dev-$1.state/$FW.part"
    [ -f "$f" ] && stat -c %s "$f" || echo 0
}
# wait_part ID BYTES: until the partial download holds at least BYTES.
wait_part() {
    local i
    for ((i = 0; i < 6000; i++)); do
        [ "$(part_size "$1")" -ge "$2" ] && return 0
        sleep 0.01
    done
    return 1
}

# ------------------------------------------------------- moved mid-download
o=$("$PINION" device create acme sensor mover --tags mover 2>&1) || bail_out "device create: $o"
start_device mover --port "${BROKER_PORT[b1]}" --chunk 4096
"$PINION" deployment create acme sensor dm --firmware "$FW" --version "< 1.2.0" --tags mover \
    >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dm >/dev/null || bail_out "deployment start"
wait_part mover $((256 << 10)) ||
    bail_out "mover did not download 256 KiB on b1: $(tail -3 "${DEV_LOG[mover]}")"
stop_device mover KILL
had=$(part_size mover)
diag "mover stopped on b1 with $had bytes"
assert_match "mover took sequence 1 on b1" "$(grep '^accepted manifest' "${DEV_LOG[mover]}")" \
    '^accepted manifest 1 for sensor 1.2.0$'
start_device mover --port "${BROKER_PORT[b2]}" --chunk 4096
# Time from its CONNACK on b2 to the re-issued manifest there.
t_conn=""
t_acc=""
deadline=$((SECONDS + 20))
while [ $SECONDS -lt $deadline ]; do
    [ -z "$t_conn" ] && [ "$(grep -c '^connack 0' "${DEV_LOG[mover]}")" -ge 2 ] && t_conn=$(now_ms)
    if grep -q '^accepted manifest 2 ' "${DEV_LOG[mover]}"; then
        t_acc=$(now_ms)
        break
    fi
    sleep 0.05
done
[ -n "$t_conn" ] || fail "mover's CONNACK on b2 was seen" "$(cat "${DEV_LOG[mover]}")"
assert_match "on b2 mover accepted a manifest with a higher sequence (2)" \
    "$(grep '^accepted manifest' "${DEV_LOG[mover]}" | tail -1)" '^accepted manifest 2 for sensor 1.2.0$'
if [ -n "$t_acc" ] && [ -n "$t_conn" ] && [ $((t_acc - t_conn)) -le 2000 ]; then
    pass "... within 2 s of its connect on b2 ($((t_acc - t_conn)) ms)"
else
    fail "... within 2 s of its connect on b2" "connack at ${t_conn:-never}, accepted at ${t_acc:-never}"
fi
assert_match "piniond published it on b2" "$(cat "${PD_LOG[p1]}")" \
    'released sensor 1.2.0 to mover \(deployment dm, sequence 2\) on broker b2'
wait_sql 60 "SELECT firmware_uuid FROM devices WHERE identifier = 'mover'" "$FW" ||
    fail "mover completed the update on b2" "firmware_uuid is $OUT"
line=$(grep -E '^resuming download at byte [0-9]+ of [0-9]+$' "${DEV_LOG[mover]}" | head -1)
at=$(sed -E 's/^resuming download at byte ([0-9]+) of.*/\1/' <<<"$line")
ok=no
[ -n "$at" ] && [ "$at" -ge $((had - 4096)) ] && [ "$at" -ge $((256 << 10)) ] && ok=yes
assert_eq "mover resumed from its offset on b2 (at ${at:-none}, had $had)" "$ok" yes
assert_eq "mover's installed image is the packed one" \
    "$(sha256sum <"$T/dev-mover.state/installed.img")" "$(sha256sum <"$T/image-1.2.0.bin")"
assert_eq "mover: complete, sequence 2" \
    "$(sql "SELECT d.manifest_sequence || ' ' || u.state FROM devices d
            JOIN device_updates u ON u.device_id = d.id WHERE d.identifier = 'mover'")" "2 complete"
# The retained manifest left on b1 was cleared when mover moved.
probe b1 "$T/svc" piniond-check --sub 'fleet/mover/down/update' --stay 1
assert_no_match "no manifest for mover is retained on b1" "$OUT" '^msg fleet/mover/down/update'
stop_device mover

# ------------------------------------------------ broker killed mid-rollout
N=9
DEVS=()
for i in $(seq 1 $N); do
    DEVS+=("k-$i")
    start_device "k-$i" --port "$HAPROXY_PORT" --chunk 4096
done
wait_sql 30 "SELECT count(*) FROM device_presence WHERE identifier LIKE 'k-%'" "$N" ||
    bail_out "only $OUT of $N devices are present"
wait_sql 30 "SELECT count(*) FROM devices WHERE identifier LIKE 'k-%' AND firmware_version = '1.0.0'" "$N" ||
    bail_out "only $OUT of $N devices reported"
held=$(sql "SELECT string_agg(identifier, ' ' ORDER BY identifier) FROM device_presence WHERE broker_id = 'b2' AND identifier LIKE 'k-%'")
diag "b2 holds: $held"
[ -n "$held" ] || bail_out "round robin put no device on b2"
"$PINION" deployment create acme sensor dk --firmware "$FW" --version "< 1.2.0" \
    >/dev/null || bail_out "deployment create dk"
"$PINION" deployment start acme dk >/dev/null || bail_out "deployment start dk"
first=${held%% *}
wait_part "$first" $((128 << 10)) ||
    bail_out "$first did not start downloading"
kill -KILL "${BROKER_PID[b2]}"
wait "${BROKER_PID[b2]}" 2>/dev/null
unset 'BROKER_PID[b2]'
diag "b2 killed; $first had $(part_size "$first") bytes"
if wait_file 10 "${PD_LOG[p1]}" 'lost broker b2 at 127.0.0.1:[0-9]+'; then
    pass "piniond logged b2 as lost"
else
    fail "piniond logged b2 as lost" "$(tail -5 "${PD_LOG[p1]}")"
fi
wait_sql 120 "SELECT count(*) FROM devices WHERE identifier LIKE 'k-%' AND firmware_uuid = '$FW'" "$N" ||
    fail "all $N devices completed after b2 was lost" "$OUT of $N"
assert_eq "dk: all $N updates complete" \
    "$(sql "SELECT u.state, count(*) FROM device_updates u JOIN deployments d ON d.id = u.deployment_id WHERE d.name = 'dk' GROUP BY u.state")" "complete|$N"
wait_sql 10 "SELECT count(*) FROM device_presence WHERE broker_id IN ('b1', 'b3') AND identifier IN ($(sed -E "s/([^ ]+)/'\1'/g; s/ /, /g" <<<"$held"))" "$(wc -w <<<"$held")" ||
    fail "b2's devices are now on b1 or b3" "$OUT of them"
# A device that only reconnected keeps the download it has in memory: the
# re-issued manifest names the same firmware, so it carries on from its
# offset ("received" is reported only for a download from byte 0).
for d in $held; do
    log=$(cat "${DEV_LOG[$d]}")
    if [ "$(grep -c '^accepted manifest [0-9]* for sensor 1.2.0' <<<"$log")" -ge 2 ] &&
        [ "$(grep -c '^status received' <<<"$log")" -eq 1 ] && ! grep -q '^abandoned' <<<"$log"; then
        pass "$d (was on b2) took a re-issued manifest and carried on from its offset"
    else
        fail "$d (was on b2) took a re-issued manifest and carried on from its offset" "$log"
    fi
done
dups=$(grep -oE 'released sensor 1.2.0 to [^ ]+ \(deployment [^,]+, sequence [0-9]+\)' "${PD_LOG[p1]}" |
    sed -E 's/\(deployment [^,]+, /(/' | sort | uniq -d)
assert_eq "no (device, sequence) was issued twice" "$dups" ""
assert_eq "no device refused a manifest" "$(cat "$T"/dev-k-*.log | grep -c '^refused manifest: ')" 0

restart_broker b2 || bail_out "b2 did not restart"
b2_sessions() { [ "$(grep -c 'connected to broker b2 ' "${PD_LOG[p1]}")" -ge 2 ]; }
if wait_until 20 b2_sessions; then
    pass "piniond reconnected to b2 after its restart"
else
    fail "piniond reconnected to b2 after its restart" "$(tail -5 "${PD_LOG[p1]}")"
fi
# A new device on the restarted b2 joins the running deployment dk.
start_device after-1 --port "${BROKER_PORT[b2]}" --chunk 65536
wait_sql 60 "SELECT firmware_uuid FROM devices WHERE identifier = 'after-1'" "$FW" ||
    fail "a device on the restarted b2 completed" "firmware_uuid is $OUT"
assert_match "piniond used b2 again" "$(cat "${PD_LOG[p1]}")" \
    'released sensor 1.2.0 to after-1 \(deployment dk, sequence 1\) on broker b2'

done_testing
