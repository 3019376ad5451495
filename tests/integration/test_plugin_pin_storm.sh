#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Issue 13: a first-connect storm (a fleet switched over to Pinion, a
# broker restarted after CA rotation) is stored in few transactions, and
# every admitted first connect is durable within a second.
#
# 300 devices of a JITP Device CA connect at once (the bench load
# generator, 50 handshakes at a time) while a service identity listens to
# registration events.  Then:
#  - every device got CONNACK 0;
#  - every pin is in PostgreSQL within 1 s of the last CONNACK;
#  - the pins were stored by far fewer transactions than pins (the
#    distinct xmin of their rows; one transaction per pin was the cost
#    before);
#  - a registration event per device reached the service;
#  - after the broker is killed with SIGKILL, a new broker admits every
#    device as pinned (nothing lost) and logs no pin.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

N=300
LOAD=$PINION_BUILD/bench/mqtt_load
[ -x "$LOAD" ] || bail_out "$LOAD is not built"


setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
setup "$LOAD" certs --ca ca --out devs -n "$N"
setup "$PINION" service add listener devs/svc.pem
# mqtt_load names the service's certificate svc.pem; pn-probe wants PREFIX.pem/.key
openssl x509 -in devs/svc.pem -out svc.pem 2>/dev/null
openssl pkey -in devs/svc.pem -out svc.key 2>/dev/null

start_broker b1 || bail_out "broker did not start: $OUT"
probe_bg b1 svc listener events.out --sub 'fleet/events/certificates/registered/#' \
    --expect "$N" --stay 60
wait_until 10 grep -q '^suback ' events.out || bail_out "the service did not subscribe: $(cat events.out)"

expect_ok "$N devices connecting for the first time are all admitted" -- \
    "$LOAD" storm --port "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --certs devs -n "$N" -c 50
diag "$OUT"
stored_within() {
    [ "$(sql "SELECT count(*) FROM device_certificates WHERE status = 'active'")" -eq "$N" ]
}
if wait_until 1 stored_within; then
    pass "every pin is in PostgreSQL within 1 s of the last CONNACK"
else
    fail "every pin is in PostgreSQL within 1 s of the last CONNACK" \
        "$(sql "SELECT count(*) FROM device_certificates") of $N"
fi
wait_until 10 stored_within || true
assert_eq "each pinned device was created (JITP) with first_seen set" \
    "$(sql "SELECT count(*) FROM devices WHERE identifier LIKE 'bench-%' AND first_seen IS NOT NULL")" "$N"

txns=$(sql "SELECT count(DISTINCT xmin::text) FROM device_certificates")
diag "transactions that stored the $N pins: $txns"
if [ "$txns" -le $((N / 2)) ]; then
    pass "the pins were stored by at most $((N / 2)) transactions ($txns)"
else
    fail "the pins were stored by at most $((N / 2)) transactions" "$txns transactions"
fi

wait_until 20 grep -q '^done' events.out || true
assert_eq "a registration event per device reached the service" \
    "$(grep -c '^msg fleet/events/certificates/registered/' events.out)" "$N"

kill -KILL "${BROKER_PID[b1]}"
wait "${BROKER_PID[b1]}" 2>/dev/null || true
unset 'BROKER_PID[b1]'
: >"${BROKER_LOG[b1]}"
_broker_launch b1 || bail_out "broker did not restart: $OUT"
expect_ok "after SIGKILL and a restart, every device is admitted again" -- \
    "$LOAD" storm --port "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --certs devs -n "$N" -c 50
wait_log b1 "loaded .* $N pinned certificates" 5 ||
    true
assert_match "the restarted broker loaded every pin" "$(cat "${BROKER_LOG[b1]}")" \
    "loaded [0-9]+ CAs, $N devices, $N pinned certificates"
sleep 0.5
assert_no_match "... as pinned devices: nothing is pinned again" "$(cat "${BROKER_LOG[b1]}")" \
    "pinion: pinned certificate"
done_testing
