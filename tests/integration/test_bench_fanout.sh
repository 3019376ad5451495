#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The release fan-out benchmark (bench/fanout.c, README "Scaling out"), run
# tiny: FANOUT_DEVICES simulated devices (default 20) through HAProxy over
# three brokers, one deployment to all of them, then the same payloads from
# one process.  Asserts correctness only (every device connected, is
# present, got its manifest and the raw message), never a time.
# bench/fanout.sh runs it with 10,000 devices and prints the figures.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"
. "$PINION_SOURCE/tests/harness/haproxy.sh"

N=${FANOUT_DEVICES:-20}
make_fleet
for b in b1 b2 b3; do
    start_broker "$b" || bail_out "broker $b: $OUT"
done
start_haproxy b1 b2 b3
start_piniond p1 || bail_out "piniond did not start: $OUT"
for b in b2 b3; do
    wait_file 10 "${PD_LOG[p1]}" "connected to broker $b " || bail_out "piniond found no $b"
done
"$PINION" deployment create acme sensor fan --firmware "$FW_UUID" --version "< 1.1.0" \
    --concurrency "$N" >/dev/null || bail_out "deployment create"
expect_ok "fanout: $N devices, release, raw publish" -- "$PINION_BUILD/bench/fanout" \
    --port "$HAPROXY_PORT" --cafile "$BROKER_CA" --ca-dir "$T/ca" --db "$PINION_DB" \
    --devices "$N" --deploy "'$PINION' deployment start acme fan >/dev/null" \
    --raw-port "${BROKER_PORT[b1]}" --raw-port "${BROKER_PORT[b2]}" \
    --raw-port "${BROKER_PORT[b3]}" --raw-cert "$T/svc.pem" --raw-key "$T/svc.key" --timeout "${FANOUT_TIMEOUT:-120}"
diag "$OUT"
[ -z "$ERR" ] || diag "$(tail -3 <<<"$ERR")"
assert_match "all $N devices connected and present" "$OUT" "connect storm: $N/$N connected"
assert_match "all $N received their manifest" "$OUT" "release: $N/$N devices received"
assert_match "all $N received the raw message" "$OUT" "raw: $N/$N devices received"
assert_eq "piniond released each device once" \
    "$(grep -c 'released sensor 1.1.0 to fo-[0-9]* (deployment fan, sequence 1) on broker b[123]$' "${PD_LOG[p1]}")" "$N"

done_testing
