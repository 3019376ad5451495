#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# All rollout state lives in PostgreSQL:
#   - piniond killed with SIGKILL in the middle of a rollout and started
#     again finishes it, and never issues a (device, sequence) pair twice:
#     every device's accepted sequences are strictly increasing, end at
#     devices.manifest_sequence, and no "released ... sequence N" repeats;
#   - two piniond instances (different client ids) on one database share a
#     rollout: every device is released exactly once, and the concurrency
#     holds across both; neither releases while the deployment's row is
#     locked by someone else.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
# 4 MiB served in 4 KiB chunks: each download takes about a second, so the
# rollout is still running when piniond is killed.
make_firmware 1.2.0 $((4 << 20))
ONE=()
TWO=()
for i in $(seq -w 1 10); do
    ONE+=("one-$i")
    TWO+=("two-$i")
done
for d in "${ONE[@]}"; do
    o=$("$PINION" device create acme sensor "$d" --tags one 2>&1) || bail_out "device create $d: $o"
done
for d in "${TWO[@]}"; do
    o=$("$PINION" device create acme sensor "$d" --tags two 2>&1) || bail_out "device create $d: $o"
done
start_broker b1 || bail_out "broker: $OUT"

INFLIGHT="state IN ('released','received','downloading','installing','rescheduled')"
dep_counts() { # dep_counts DEPLOYMENT: "in-flight|complete"
    sql "SELECT count(*) FILTER (WHERE u.$INFLIGHT), count(*) FILTER (WHERE u.state = 'complete') FROM device_updates u JOIN deployments dp ON dp.id = u.deployment_id WHERE dp.name = '$1'"
}

# Per device: the sequences it accepted must be strictly increasing and the
# last one must be devices.manifest_sequence (nothing issued after it).
check_sequences() { # check_sequences DESC DEVICES...
    local desc=$1 d bad=() seqs dbseq
    shift
    for d in "$@"; do
        seqs=$(grep '^accepted manifest ' "$T/dev-$d.log" | awk '{print $3}' | tr '\n' ' ')
        dbseq=$(sql "SELECT manifest_sequence FROM devices WHERE identifier = '$d'")
        if ! python3 -c '
import sys
s = [int(x) for x in sys.argv[1].split()]
db = int(sys.argv[2])
ok = s and all(a < b for a, b in zip(s, s[1:])) and s[-1] <= db
sys.exit(0 if ok else 1)' "$seqs" "$dbseq"; then
            bad+=("$d: accepted [$seqs], devices.manifest_sequence $dbseq")
        fi
    done
    if [ ${#bad[@]} -eq 0 ]; then pass "$desc"; else fail "$desc" "${bad[@]}"; fi
}

# ------------------------------------------------ SIGKILL mid-rollout
start_piniond p1 || bail_out "piniond did not start: $OUT"
for d in "${ONE[@]}"; do
    start_device "$d" --run-for 170 --chunk 4096
done
wait_sql 20 "SELECT count(*) FROM devices WHERE firmware_platform = 'rpi4' AND 'one' = ANY(tags)" 10 ||
    bail_out "only $OUT of 10 devices reported"
expect_ok "deployment d1 created (concurrency 2)" -- \
    "$PINION" deployment create acme sensor d1 --firmware "$FW_UUID" --tags one --concurrency 2
expect_ok "deployment d1 started" -- "$PINION" deployment start acme d1
# Kill after the first completions, while later devices are downloading.
wait_sql 40 "SELECT count(*) FILTER (WHERE state = 'complete') >= 2 AND count(*) FILTER (WHERE state = 'downloading') >= 1 FROM device_updates" t ||
    bail_out "no completions followed by downloads: $(tail -5 "${PD_LOG[p1]}")"
stop_piniond p1 KILL
at_kill=$(dep_counts d1)
diag "killed piniond with SIGKILL; in flight|complete: $at_kill"
if [ "${at_kill%%|*}" -gt 0 ] && [ "${at_kill##*|}" -lt 10 ]; then
    pass "piniond was killed mid-rollout (devices in flight, not all complete)"
else
    fail "piniond was killed mid-rollout (devices in flight, not all complete)" "$at_kill"
fi
sleep 1 # down for a while: what devices send meanwhile is lost
start_piniond p1 || bail_out "piniond did not start again: $OUT"
if wait_sql 60 "SELECT state, count(*) FROM device_updates GROUP BY state" "complete|10"; then
    pass "the restarted piniond completed the rollout"
else
    fail "the restarted piniond completed the rollout" "$OUT" "$(tail -5 "${PD_LOG[p1]}")"
fi
assert_eq "all 10 devices run the new firmware" \
    "$(sql "SELECT count(*) FROM devices WHERE firmware_uuid = '$FW_UUID' AND 'one' = ANY(tags)")" 10
check_sequences "per device, accepted sequences strictly increase up to devices.manifest_sequence" "${ONE[@]}"
dups=$(grep -o 'released sensor 1.2.0 to [^ ]* (deployment d1, sequence [0-9]*)' "${PD_LOG[p1]}" | sort | uniq -d)
assert_eq "no (device, sequence) pair was released twice" "$dups" ""
assert_eq "device_updates.sequence = devices.manifest_sequence for every device" \
    "$(sql "SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE u.sequence = d.manifest_sequence AND 'one' = ANY(d.tags)")" 10
assert_eq "every device installed exactly once" \
    "$(for d in "${ONE[@]}"; do grep -c '^installed ' "$T/dev-$d.log"; done | sort -u)" 1
stop_piniond p1

# ------------------------------------------------ two instances, one database
start_piniond p2 "tick_ms = 20" || bail_out "piniond p2 did not start: $OUT"
start_piniond p3 "tick_ms = 20" || bail_out "piniond p3 did not start: $OUT"
for d in "${TWO[@]}"; do
    start_device "$d" --run-for 170 --chunk 4096
done
wait_sql 20 "SELECT count(*) FROM devices WHERE firmware_platform = 'rpi4' AND 'two' = ANY(tags)" 10 ||
    bail_out "only $OUT of 10 devices reported"
expect_ok "deployment d2 created (concurrency 3)" -- \
    "$PINION" deployment create acme sensor d2 --firmware "$FW_UUID" --tags two --concurrency 3
# Instances exclude each other with the deployment's row lock: while a
# third party (standing in for another instance) holds a lock on d2's row,
# neither instance releases anything.  FOR KEY SHARE conflicts with piniond's
# FOR UPDATE but not with the UPDATE of `deployment start`.
(
    printf "BEGIN;\nSELECT 'locked' FROM deployments WHERE name = 'd2' FOR KEY SHARE;\n"
    sleep 3
    printf "COMMIT;\n"
) | PGAPPNAME=pinion-test-lock "$PINION_PG_BIN/psql" -XAtq -h "$PGHOST" -p "$PGPORT" -U postgres \
    -d "$PINION_TEST_DB" >"$T/lock.out" 2>&1 &
LOCKER=$!
wait_sql 5 "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pinion-test-lock' AND state = 'idle in transaction'" 1 ||
    bail_out "could not hold a lock on d2: $(cat "$T/lock.out")"
expect_ok "deployment d2 started" -- "$PINION" deployment start acme d2
sleep 1.5
assert_eq "nothing is released while another holder locks the deployment row" \
    "$(sql "SELECT count(*) FROM device_updates u JOIN deployments dp ON dp.id = u.deployment_id WHERE dp.name = 'd2'")" 0
wait "$LOCKER"
max=0
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
    c=$(dep_counts d2)
    [ "${c%%|*}" -gt "$max" ] && max=${c%%|*}
    [ "${c##*|}" -ge 10 ] && break
    sleep 0.05
done
assert_eq "the two instances completed all 10 devices" "${c##*|}" 10
if [ "$max" -le 3 ]; then
    pass "never more than 3 in flight across both instances (max seen $max)"
else
    fail "never more than 3 in flight across both instances" "max seen $max"
fi
bad=()
for d in "${TWO[@]}"; do
    n=$(accepted_count "$d")
    [ "$n" -eq 1 ] || bad+=("$d: $n accepted manifests")
done
if [ ${#bad[@]} -eq 0 ]; then
    pass "every device accepted exactly one manifest"
else
    fail "every device accepted exactly one manifest" "${bad[@]}"
fi
assert_eq "device_updates rows for d2 = devices, all complete, sequence 1" \
    "$(sql "SELECT count(*), count(*) FILTER (WHERE u.state = 'complete' AND u.sequence = 1) FROM device_updates u JOIN deployments dp ON dp.id = u.deployment_id WHERE dp.name = 'd2'")" "10|10"
released=$(cat "${PD_LOG[p2]}" "${PD_LOG[p3]}" | grep -o 'released sensor 1.2.0 to two-[0-9]* (deployment d2, sequence [0-9]*)')
assert_eq "the two logs together release each device once" \
    "$(sort <<<"$released" | uniq | wc -l):$(wc -l <<<"$released")" "10:10"
diag "releases by p2: $(grep -c 'deployment d2' "${PD_LOG[p2]}"), by p3: $(grep -c 'deployment d2' "${PD_LOG[p3]}")"
if kill -0 "${PD_PID[p2]}" 2>/dev/null && kill -0 "${PD_PID[p3]}" 2>/dev/null; then
    pass "both instances stayed up (distinct client ids)"
else
    fail "both instances stayed up (distinct client ids)" "$(tail -3 "${PD_LOG[p2]}")" "$(tail -3 "${PD_LOG[p3]}")"
fi
assert_no_match "neither instance was disconnected by the broker" \
    "$(cat "${PD_LOG[p2]}" "${PD_LOG[p3]}")" 'disconnected from the broker'

done_testing
