#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One device cannot slow everyone's downloads (issue 10, part 3).  A hostile
# device floods piniond with 10,000 chunk requests for firmware not released
# to it and 5,000 status reports, at QoS 0, as fast as mosquitto_pub sends
# them; meanwhile another device with a release in flight asks for chunks:
#   - each of its chunks is answered within 200 ms, and its status report
#     is recorded;
#   - piniond logs the hostile device once for the period (counts of what
#     it dropped over the per-device limits), not once per message, and saw
#     every message (the broker dropped none from its session);
#   - requests for firmware not in flight cost no database round trip.
# The broker runs with the settings of examples/mosquitto.conf that protect
# piniond's session.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

RTT_TOOL=$PINION_BUILD/tests/tools/pn-rtt
make_fleet
for d in good-1 hostile-1; do
    o=$("$PINION" device create acme sensor "$d" --tags "$d" 2>&1) || bail_out "device create $d: $o"
    device_cert "$d"
done
prepare_broker b1
# The broker settings README "piniond" recommends (examples/mosquitto.conf).
grep -E '^(max_queued_messages|max_queued_bytes|max_inflight_messages|max_packet_size) ' \
    "$PINION_SOURCE/examples/mosquitto.conf" >>"${BROKER_CONF[b1]}"
launch_broker b1 || bail_out "broker: $OUT"
start_piniond p1 || bail_out "piniond: $OUT"
PDLOG=${PD_LOG[p1]}

# good-1 reports its firmware and is released 1.1.0 (a retained manifest).
STATUS_IDLE='{"firmware":{"uuid":"factory","version":"1.0.0","product":"sensor","platform":"rpi4","architecture":"aarch64"},"state":"idle","progress":0}'
probe b1 "$T/devs/good-1" good-1 --qos 1 --pub "fleet/good-1/up/status=$STATUS_IDLE"
wait_sql 10 "SELECT firmware_platform FROM devices WHERE identifier = 'good-1'" rpi4 ||
    bail_out "good-1's status was not recorded"
"$PINION" deployment create acme sensor dg --firmware "$FW_UUID" --version "< 1.1.0" \
    --tags good-1 >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dg >/dev/null || bail_out "deployment start"
wait_file 15 "$PDLOG" 'released sensor 1.1.0 to good-1 ' || bail_out "good-1 was not released to"

GET='{"uuid":"'"$FW_UUID"'","offset":0,"length":4096}'
# Before the flood: a chunk request is answered.
"$RTT_TOOL" --port "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --cert "$T/devs/good-1.pem" \
    --key "$T/devs/good-1.key" --id good-1 --sub fleet/good-1/down/chunk \
    --req "fleet/good-1/up/get=$GET" --count 3 --interval 50 >"$T/rtt-before.out" 2>&1
diag "before the flood: $(tr '\n' ' ' <"$T/rtt-before.out")"
assert_eq "without a flood, good-1's 3 chunk requests are answered" \
    "$(grep -c '^rtt ' "$T/rtt-before.out")" 3

# The flood: hostile-1 asks for firmware released to good-1 only.
for ((i = 0; i < 10000; i++)); do
    printf '{"uuid":"%s","offset":%d,"length":65536}\n' "$FW_UUID" $((i * 65536))
done >"$T/gets.txt"
for ((i = 0; i < 5000; i++)); do
    printf '{"firmware":{"uuid":"factory","version":"1.0.0","platform":"rpi4","architecture":"aarch64"},"state":"downloading","progress":%d}\n' $((i % 100))
done >"$T/statuses.txt"
# hostile_pub TOPIC FILE: one connection publishing FILE's lines as fast as
# mosquitto_pub goes.  It stays connected 1 s after the last line: closing
# at once can reset the connection and make the broker discard what it has
# not read yet, which would shrink the flood.
hostile_pub() {
    {
        cat "$2"
        echo "${1##*/}: $(wc -l <"$2") lines written at $((($(date +%s%N) - start) / 1000000)) ms" >&2
        sleep 1
    } | mosquitto_pub -h 127.0.0.1 -p "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" \
        --cert "$T/devs/hostile-1.pem" --key "$T/devs/hostile-1.key" -i hostile-1 -q 0 \
        -t "$1" -l
}
xacts() {
    sql "SELECT pg_stat_clear_snapshot()" >/dev/null
    sql "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
}
xacts_before=$(xacts)
before_lines=$(wc -l <"$PDLOG")
start=$(date +%s%N)
{
    hostile_pub fleet/hostile-1/up/get "$T/gets.txt"
    hostile_pub fleet/hostile-1/up/status "$T/statuses.txt"
} >"$T/flood.out" 2>&1 &
FLOOD=$!
on_exit "kill $FLOOD 2>/dev/null || true"
sleep 0.05
# good-1, during the flood: 60 chunk requests 50 ms apart, then a status.
STATUS_DL='{"firmware":{"uuid":"factory","version":"1.0.0","product":"sensor","platform":"rpi4","architecture":"aarch64"},"state":"downloading","progress":1}'
"$RTT_TOOL" --port "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --cert "$T/devs/good-1.pem" \
    --key "$T/devs/good-1.key" --id good-1 --sub fleet/good-1/down/chunk \
    --req "fleet/good-1/up/get=$GET" --count 60 --interval 50 --timeout 6000 \
    --then "fleet/good-1/up/status=$STATUS_DL" >"$T/rtt.out" 2>&1
wait "$FLOOD"
diag "$(cat "$T/flood.out")"
diag "during the flood: $(tr '\n' ' ' <"$T/rtt.out")"
rtts=$(grep -E '^(rtt|timeout) ' "$T/rtt.out" | cut -d' ' -f2)
max=$(sort -n <<<"$rtts" | tail -1)
assert_eq "good-1's 60 chunk requests during the flood were all answered" \
    "$(grep -c '^rtt ' "$T/rtt.out")" 60
slow=$(awk '$1 > 200' <<<"$rtts" | wc -l)
assert_eq "... each within 200 ms (slowest: $max ms)" "$slow" 0
assert_match "good-1's status during the flood was accepted by the broker" "$(cat "$T/rtt.out")" \
    'puback fleet/good-1/up/status'
wait_sql 5 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id
            WHERE d.identifier = 'good-1'" downloading ||
    fail "good-1's status during the flood is recorded (state downloading)" "state is $OUT"
[ "$OUT" = downloading ] && pass "good-1's status during the flood is recorded (state downloading)"

# One summary line for hostile-1 at the end of its period (10 s by default).
wait_file 20 "$PDLOG" 'piniond: hostile-1 in the last [0-9]+ s: ' ||
    fail "piniond logged hostile-1's period" "$(tail -5 "$PDLOG")"
flood_log=$(tail -n +"$((before_lines + 1))" "$PDLOG")
summary=$(grep -E 'piniond: hostile-1 in the last [0-9]+ s: ' <<<"$flood_log")
diag "$summary"
assert_eq "hostile-1's flood is summarised in one line" "$(grep -c . <<<"$summary")" 1
assert_match "... which counts what was dropped over the limits" "$summary" \
    'hostile-1 in the last [0-9]+ s: [0-9]+ chunk requests, [1-9][0-9]* dropped over the per-device limit \(1000/s, burst 5000\); [0-9]+ status reports, [1-9][0-9]* dropped over the limit \(2/s, burst 30\); [0-9]+ more ignored messages not logged'
n_about=$(grep -c 'hostile-1' <<<"$flood_log")
ok=no
[ "$n_about" -le 25 ] && ok=yes
assert_eq "piniond wrote at most 25 lines about hostile-1 ($n_about), not one per message" "$ok" yes
seen=$(sed -E 's/.*: ([0-9]+) chunk requests, .*; ([0-9]+) status reports.*/\1 \2/' <<<"$summary")
read -r seen_get seen_status <<<"$seen"
assert_eq "piniond saw all 10000 chunk requests and 5000 statuses (none dropped by the broker)" \
    "$seen_get $seen_status" "10000 5000"
assert_no_match "the broker dropped no message for piniond" "$(cat "${BROKER_LOG[b1]}")" \
    'Outgoing messages are being dropped for client piniond-p1'
# Requests for firmware not in flight were answered from memory, and the
# statuses over the limit never reached the database: over the whole
# window (flood, good-1's requests, piniond's ticks every 200 ms) the
# database committed far fewer transactions than the 15,000 messages.
commits=$(($(xacts) - xacts_before))
diag "database transactions during the flood window: $commits"
ok=no
[ "$commits" -lt 2000 ] && ok=yes
assert_eq "fewer than 2000 database transactions for 15,000 messages ($commits)" "$ok" yes
assert_eq "piniond is still running" "$(kill -0 "${PD_PID[p1]}" 2>/dev/null && echo yes)" yes

done_testing
