#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# docs/protocol.md, "Admission": revoking a device, one of its certificates, or a CA with
# --cascade refuses new connects and kicks live sessions within 1 second,
# on every broker that shares the database.  Revoking a CA without
# --cascade only stops new devices of that CA.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"


cert_id() { openssl x509 -in "$1" -outform der | sha256sum | cut -c1-64; }


setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca1 A B E
make_ca ca2 C1 C2 C3
make_ca ca3 D
make_ca ca4 P N

start_broker b1 || bail_out "broker b1 did not start: $OUT"
start_broker b2 || bail_out "broker b2 did not start: $OUT"

pinned() { [ "$(sql "SELECT count(*) FROM device_certificates c JOIN devices d ON d.id = c.device_id WHERE d.identifier = '$1' AND c.status = 'active'")" = 1 ]; }

# connect_bg BROKER CERTPREFIX ID [STAY]: a device that stays connected
# STAY (default 10) seconds, output in $T/<BROKER>-<ID>.out; waits for its
# CONNACK and its pin.
declare -A PIDS
connect_bg() {
    local b=$1 prefix=$2 id=$3 f="$T/$1-$3.out"
    probe_bg "$b" "$prefix" "$id" "$f" --stay "${4:-10}"
    PIDS[$b-$id]=$PROBE_PID
    if ! wait_until 5 has_line "$f" '^connack'; then
        bail_out "$id did not get a CONNACK from $b: $(cat "$f")"
    fi
    grep -qx 'connack 0' "$f" || bail_out "$id refused by $b: $(cat "$f") $(tail -3 "${BROKER_LOG[$b]}")"
    wait_until 5 pinned "$id" || bail_out "$id was not pinned"
}

assert_refused() { # DESC BROKER CERTPREFIX ID
    probe "$2" "$3" "$4"
    if [ "$RC" -eq 5 ] && grep -qx 'connack 5' <<<"$OUT"; then
        pass "$1"
    else
        fail "$1" "exit $RC, expected 5 (CONNACK not authorised)" "$OUT"
    fi
}

# ------------------------------------------------ pinion device revoke A
connect_bg b1 ca1-devs/A A
t0=$(now_ms)
expect_ok "pinion device revoke A" -- "$PINION" device revoke A
t1=$(now_ms)
ms=$(wait_kicked "$t1" "$T/b1-A.out")
assert_kicked_fast "A is disconnected after device revoke" "$ms"
diag "device revoke took $((t1 - t0)) ms; probe: $(grep '^disconnected' "$T/b1-A.out")"
assert_refused "A's reconnect is refused" b1 ca1-devs/A A
assert_match "broker log names the reason" "$(cat "${BROKER_LOG[b1]}")" \
    'refused certificate [0-9a-f]{64} identifier A: device is revoked'

# ------------------------------- pinion device revoke B --cert CERTID
connect_bg b1 ca1-devs/B B
bid=$(cert_id ca1-devs/B.pem)
t0=$(now_ms)
expect_ok "pinion device revoke B --cert CERTID" -- "$PINION" device revoke B --cert "$bid"
t1=$(now_ms)
ms=$(wait_kicked "$t1" "$T/b1-B.out")
assert_kicked_fast "B is disconnected after its certificate is revoked" "$ms"
assert_refused "B's reconnect with the revoked certificate is refused" b1 ca1-devs/B B
assert_eq "device B itself stays active" "$(sql "SELECT status FROM devices WHERE identifier = 'B'")" active

# --------------------- pinion ca revoke CA2 --cascade; CA3's D unaffected
for id in C1 C2 C3; do connect_bg b1 ca2-devs/$id $id; done
connect_bg b1 ca3-devs/D D 3
ca2=$(cert_id ca2/ca.pem)
t0=$(now_ms)
expect_ok "pinion ca revoke CA2 --cascade" -- "$PINION" ca revoke "$ca2" --cascade
t1=$(now_ms)
ms=$(wait_kicked "$t1" "$T/b1-C1.out" "$T/b1-C2.out" "$T/b1-C3.out")
assert_kicked_fast "all 3 devices of CA2 are disconnected" "$ms"
for id in C1 C2 C3; do
    assert_refused "$id's reconnect is refused" b1 ca2-devs/$id $id
done
# D's session (3 s) must run to its end undisturbed, then D reconnects.
wait "${PIDS[b1-D]}" 2>/dev/null
assert_eq "D (another CA) stayed connected to the end of its session" \
    "$(cat "$T/b1-D.out")" $'connack 0\ndone'
probe b1 ca3-devs/D D
assert_eq "D can still reconnect" "$RC" 0

# ---------------------- two brokers sharing the database: one revocation
connect_bg b1 ca1-devs/E E
connect_bg b2 ca1-devs/E E
t0=$(now_ms)
expect_ok "pinion device revoke E" -- "$PINION" device revoke E
t1=$(now_ms)
ms=$(wait_kicked "$t1" "$T/b1-E.out" "$T/b2-E.out")
assert_kicked_fast "E is disconnected from both brokers" "$ms"
assert_refused "b1 refuses E's reconnect" b1 ca1-devs/E E
assert_refused "b2 refuses E's reconnect" b2 ca1-devs/E E

# --------------- pinion ca revoke CA4 (no --cascade): pinned P keeps going
connect_bg b1 ca4-devs/P P 3
ca4=$(cert_id ca4/ca.pem)
expect_ok "pinion ca revoke CA4 (no --cascade)" -- "$PINION" ca revoke "$ca4"
assert_eq "CA4 is revoked in the database" \
    "$(sql "SELECT status FROM ca_certificates WHERE id = '$ca4'")" revoked
# P's 3 s session outlives the brokers' 1 s reaction time.
wait "${PIDS[b1-P]}" 2>/dev/null
assert_eq "pinned P stayed connected to the end of its session" \
    "$(cat "$T/b1-P.out")" $'connack 0\ndone'
probe b1 ca4-devs/P P
assert_eq "pinned P can reconnect" "$RC" 0
assert_refused "new device N of the revoked CA is refused" b1 ca4-devs/N N
assert_refused "b2 refuses N too" b2 ca4-devs/N N
assert_eq "N was not pinned" "$(sql "SELECT count(*) FROM devices WHERE identifier = 'N'")" 0
assert_match "broker log says the CA is revoked" "$(cat "${BROKER_LOG[b1]}")" \
    'identifier N: CA [0-9a-f]+ is revoked'

done_testing
