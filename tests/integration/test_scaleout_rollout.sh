#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One fleet over three brokers behind HAProxy (README "Scaling out"):
#   - 30 reference devices connect through HAProxy (mode tcp, round robin,
#     TLS passed through), spread over brokers b1, b2, b3, and each broker
#     records its devices' presence in the database;
#   - one piniond, configured with no broker at all, finds the three in the
#     registry and opens a session to each;
#   - a deployment with concurrency 10 completes on all 30: each device
#     accepted exactly one manifest, no (device, sequence) was issued twice,
#     each manifest was published once, on its device's broker, and
#     `deployment show` counts 30 complete;
#   - `device revoke` kicks the device within 1 s, on whichever broker it is.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"
. "$PINION_SOURCE/tests/harness/haproxy.sh"

N=30
CONC=10
make_fleet
make_firmware 1.2.0 20000
for b in b1 b2 b3; do
    start_broker "$b" || bail_out "broker $b: $OUT"
done
start_haproxy b1 b2 b3
wait_sql 10 "SELECT string_agg(id || '=' || service_address, ',' ORDER BY id) FROM brokers" \
    "b1=127.0.0.1:${BROKER_PORT[b1]},b2=127.0.0.1:${BROKER_PORT[b2]},b3=127.0.0.1:${BROKER_PORT[b3]}" ||
    fail "the three brokers registered with their service_address" "brokers: $OUT"
# mqtt_port names none of the brokers: piniond must find them itself.
start_piniond p1 "mqtt_port = 1" || bail_out "piniond did not start: $OUT"
wait_file 10 "${PD_LOG[p1]}" 'connected to broker b3 ' && wait_file 5 "${PD_LOG[p1]}" 'connected to broker b2 ' &&
    wait_file 5 "${PD_LOG[p1]}" 'connected to broker b1 '
assert_eq "piniond has a session on each of the 3 brokers" \
    "$(grep -oE 'connected to broker b[123] at 127.0.0.1:[0-9]+ as piniond-p1-b[123]$' "${PD_LOG[p1]}" | sort -u | wc -l)" 3

DEVS=()
for i in $(seq -w 1 $N); do
    DEVS+=("dev-$i")
    start_device "dev-$i" --port "$HAPROXY_PORT" --chunk 4096
done
wait_sql 60 "SELECT count(*) FROM devices WHERE firmware_version = '1.0.0'" "$N" ||
    bail_out "only $OUT of $N devices reported their firmware through HAProxy"
pass "all $N devices connected through HAProxy and reported firmware 1.0.0"
wait_sql 10 "SELECT count(*) FROM device_presence" "$N" ||
    fail "the brokers recorded where each of the $N devices is" "rows: $OUT"
spread=$(sql "SELECT string_agg(broker_id || '=' || n, ' ' ORDER BY broker_id) FROM (SELECT broker_id, count(*) n FROM device_presence GROUP BY broker_id) x")
diag "devices per broker: $spread"
assert_match "round robin put devices on all three brokers" "$spread" '^b1=[1-9][0-9]* b2=[1-9][0-9]* b3=[1-9][0-9]*$'

expect_ok "deployment created with --concurrency $CONC" -- \
    "$PINION" deployment create acme sensor d1 --firmware "$FW_UUID" --concurrency $CONC \
    --version "< 1.2.0"
expect_ok "deployment started" -- "$PINION" deployment start acme d1
INFLIGHT="SELECT count(*) FROM device_updates WHERE state IN ('released','received','downloading','installing','rescheduled')"
max=0
deadline=$((SECONDS + 150))
while [ $SECONDS -lt $deadline ]; do
    row=$(sql "SELECT ($INFLIGHT), (SELECT count(*) FROM device_updates WHERE state = 'complete')")
    [ "${row%%|*}" -gt "$max" ] && max=${row%%|*}
    [ "${row##*|}" -ge "$N" ] && break
    sleep 0.2
done
assert_eq "all $N updates complete" "$(sql "SELECT state, count(*) FROM device_updates GROUP BY state")" "complete|$N"
ok=no
[ "$max" -le $CONC ] && ok=yes
assert_eq "never more than $CONC in flight (max seen $max)" "$ok" yes
assert_eq "deployment show counts $N complete" \
    "$("$PINION" deployment show acme d1 --json | json_get .devices)" "{\"complete\":$N}"
assert_eq "all $N devices run 1.2.0" \
    "$(sql "SELECT count(*) FROM devices WHERE firmware_uuid = '$FW_UUID'")" "$N"

bad=()
for d in "${DEVS[@]}"; do
    a=$(grep '^accepted manifest ' "$T/dev-$d.log")
    [ "$a" == "accepted manifest 1 for sensor 1.2.0" ] || bad+=("$d: $(tr '\n' ';' <<<"$a")")
done
if [ ${#bad[@]} -eq 0 ]; then
    pass "each device accepted exactly one manifest (sequence 1)"
else
    fail "each device accepted exactly one manifest (sequence 1)" "${bad[@]}"
fi
released=$(grep -oE 'released sensor 1.2.0 to dev-[0-9]+ \(deployment d1, sequence [0-9]+\) on broker b[123]' "${PD_LOG[p1]}")
assert_eq "piniond published $N manifests, each (device, sequence) once" \
    "$(sort -u <<<"$released" | wc -l):$(wc -l <<<"$released")" "$N:$N"
on=$(sed -E 's/.* on broker //' <<<"$released" | sort -u | tr '\n' ' ')
assert_eq "manifests were published on all three brokers" "$on" "b1 b2 b3 "
# Each manifest went to the broker its device was on when released: a
# device's log shows it got the manifest on its first connection.
assert_eq "no device refused a manifest" "$(cat "$T"/dev-dev-*.log | grep -c '^refused manifest: ')" 0

# ----------------------------------------------------- revoke, any broker
# dev-01 comes back through HAProxy (on whichever broker round robin
# gives); the revoke reaches it there through the brokers' LISTEN.
stop_device dev-01
"$PINION_PROBE" --port "$HAPROXY_PORT" --cafile "$BROKER_CA" --cert "$T/devs/dev-01.pem" \
    --key "$T/devs/dev-01.key" --id dev-01 --stay 30 >"$T/p.out" 2>&1 &
PROBE_PID=$!
on_exit "kill $PROBE_PID 2>/dev/null || true"
wait_file 5 "$T/p.out" '^connack 0' || bail_out "probe did not connect: $(cat "$T/p.out")"
dev01_present() { [ -n "$(sql "SELECT broker_id FROM device_presence WHERE identifier = 'dev-01'")" ]; }
wait_until 5 dev01_present || fail "dev-01's presence was recorded"
on=$(sql "SELECT broker_id FROM device_presence WHERE identifier = 'dev-01'")
diag "dev-01 is on broker $on"
t0=$(date +%s%N)
"$PINION" device revoke dev-01 >"$T/rev.out" 2>&1 || fail "device revoke failed" "$(cat "$T/rev.out")"
wait_file 5 "$T/p.out" '^disconnected' || true
ms=$((($(date +%s%N) - t0) / 1000000))
assert_match "dev-01 was disconnected by broker $on" "$(cat "$T/p.out")" $'\ndisconnected'
ok=no
[ "$ms" -le 1000 ] && ok=yes
assert_eq "... within 1 s of the revoke (${ms} ms)" "$ok" yes
wait_sql 5 "SELECT count(*) FROM device_presence WHERE identifier = 'dev-01'" 0 ||
    fail "its presence was cleared" "rows: $OUT"

done_testing
