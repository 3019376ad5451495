#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# piniond's per-device memory stays right with several instances, and its
# limits are the configured ones:
#   - two instances share the device messages (shared subscription); both
#     have judged a device's requests "not released" from memory (in-flight
#     cache of 60 s); one of them releases the firmware: the device's very
#     next chunk requests are answered by both, because every instance
#     learns of the manifest from the broker, not from the cache's expiry;
#   - once the update is complete (manifest cleared), requests for it are
#     ignored again;
#   - a configured status limit (burst 3, 1/s) keeps 3 of 10 statuses sent
#     at once, and the period's one summary line counts the 7 others.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

RTT_TOOL=$PINION_BUILD/tests/tools/pn-rtt
make_fleet
for d in c-1 s-1; do
    o=$("$PINION" device create acme sensor "$d" --tags "$d" 2>&1) || bail_out "device create $d: $o"
    device_cert "$d"
done
start_broker b1 || bail_out "broker: $OUT"
for p in p1 p2; do
    start_piniond "$p" "inflight_cache_ms = 60000" "device_status_rate = 1" \
        "device_status_burst = 3" "limit_log_period = 2" || bail_out "piniond $p: $OUT"
done

STATUS_IDLE='{"firmware":{"uuid":"factory","version":"1.0.0","product":"sensor","platform":"rpi4","architecture":"aarch64"},"state":"idle","progress":0}'
probe b1 "$T/devs/c-1" c-1 --qos 1 --pub "fleet/c-1/up/status=$STATUS_IDLE"
wait_sql 10 "SELECT firmware_platform FROM devices WHERE identifier = 'c-1'" rpi4 ||
    bail_out "c-1's status was not recorded"

# rtt OUTFILE COUNT TIMEOUT_MS: c-1 asks for the first chunk of FW_UUID.
rtt() {
    "$RTT_TOOL" --port "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --cert "$T/devs/c-1.pem" \
        --key "$T/devs/c-1.key" --id c-1 --sub fleet/c-1/down/chunk \
        --req 'fleet/c-1/up/get={"uuid":"'"$FW_UUID"'","offset":0,"length":1024}' \
        --count "$2" --interval 20 --timeout "$3" >"$1" 2>&1
}

# ------------------------------------------- before the release
rtt "$T/before.out" 6 300
assert_eq "before the release, c-1's 6 chunk requests get no answer" \
    "$(grep -c '^timeout ' "$T/before.out")" 6
for p in p1 p2; do
    if wait_file 5 "${PD_LOG[$p]}" "ignored chunk request from c-1 for firmware $FW_UUID: not released to it"; then
        pass "$p judged some of them (not released)"
    else
        fail "$p judged some of them (not released)" "$(tail -5 "${PD_LOG[$p]}")"
    fi
done

# ------------------------------------------- released by one instance
"$PINION" deployment create acme sensor dc --firmware "$FW_UUID" --version "< 1.1.0" \
    --tags c-1 >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dc >/dev/null || bail_out "deployment start"
wait_until 15 grep -q 'released sensor 1.1.0 to c-1 ' "${PD_LOG[p1]}" "${PD_LOG[p2]}" ||
    bail_out "c-1 was not released to"
n1=$(wc -l <"${PD_LOG[p1]}")
n2=$(wc -l <"${PD_LOG[p2]}")
rtt "$T/after.out" 6 2000
diag "after the release: $(tr '\n' ' ' <"$T/after.out")"
assert_eq "right after the release, c-1's 6 chunk requests are all answered" \
    "$(grep -c '^rtt ' "$T/after.out")" 6
assert_eq "... and neither instance ignored one" \
    "$( (tail -n +"$((n1 + 1))" "${PD_LOG[p1]}"; tail -n +"$((n2 + 1))" "${PD_LOG[p2]}") |
        grep -c 'ignored chunk request from c-1')" 0

# ------------------------------------------- complete: the manifest is cleared
STATUS_DONE='{"firmware":{"uuid":"'"$FW_UUID"'","version":"1.1.0","product":"sensor","platform":"rpi4","architecture":"aarch64"},"state":"idle","progress":0}'
probe b1 "$T/devs/c-1" c-1 --qos 1 --pub "fleet/c-1/up/status=$STATUS_DONE"
wait_sql 10 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id
             WHERE d.identifier = 'c-1'" complete || fail "c-1 completed" "state $OUT"
rtt "$T/done.out" 4 300
assert_eq "after completion, c-1's requests for it get no answer again" \
    "$(grep -c '^timeout ' "$T/done.out")" 4

# ------------------------------------------- a configured status limit
# One instance, so that one bucket sees all of s-1's statuses.
stop_piniond p2
args=()
for ((i = 0; i < 10; i++)); do
    args+=(--pub "fleet/s-1/up/status={\"state\":\"idle\",\"progress\":$i}")
done
probe b1 "$T/devs/s-1" s-1 --qos 1 "${args[@]}"
assert_eq "s-1's 10 statuses were accepted by the broker" "$(grep -c '^puback .* 0$' <<<"$OUT")" 10
wait_file 10 "${PD_LOG[p1]}" 'piniond: s-1 in the last' ||
    fail "the period's summary line for s-1 was logged" "$(tail -3 "${PD_LOG[p1]}")"
sleep 2.5 # a second period would have ended by now
lines=$(grep 'piniond: s-1 in the last' "${PD_LOG[p1]}")
diag "$lines"
assert_eq "one summary line for the burst, not one per status" "$(grep -c . <<<"$lines")" 1
assert_match "10 statuses, the 7 over the burst of 3 dropped" "$lines" \
    ': 0 chunk requests, 0 dropped .*; 10 status reports, 7 dropped over the limit \(1/s, burst 3\)'
assert_eq "s-1's statuses within the limit were recorded" \
    "$(sql "SELECT last_seen IS NOT NULL FROM devices WHERE identifier = 's-1'")" t

done_testing
