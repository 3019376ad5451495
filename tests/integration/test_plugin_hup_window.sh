#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# At SIGHUP Mosquitto re-authenticates every session without a
# certificate where it has none (offline durable ones), and the plugin
# keeps those it gave an identity.  That exemption must not reach a new
# CONNECT: here a listener asks for no certificate, and clients claim
# pinned devices' identifiers as client id and username just as the broker
# reloads (on 2.1 its next TICK, which ended the exemption, may come after
# the next network pass; on 2.0 after websockets' pass).  None may get in.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
ids="D1 D2 D3 D4"
for id in $ids; do setup "$PINION" device cert --ca ca --id "$id" --out devs; done

prepare_broker b1
plain=$(free_port)
# A listener without TLS, where the plugin still decides (allow_anonymous
# false: every client needs its admission).
printf 'listener %s 127.0.0.1\n' "$plain" >>"${BROKER_CONF[b1]}"
launch_broker b1 || bail_out "broker did not start: $OUT"
for id in $ids; do
    probe b1 "devs/$id" "$id"
    [ "$RC" = 0 ] || bail_out "$id was not admitted: $OUT"
done

# forge ROUNDS HUP: CONNECTs (MQTT 3.1.1, client id = username = a pinned
# identifier, no certificate) on the plain listener; with HUP, each round
# signals the broker and sends them a moment later, while it reloads.
# Prints how many CONNACKs accepted.
forge() {
    python3 - "$plain" "${BROKER_PID[b1]}" "$1" "$2" $ids <<'PY'
import os, random, signal, socket, struct, sys, time
port, pid, rounds, hup = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
ids = sys.argv[5:]
def s(b): return struct.pack("!H", len(b)) + b
def connect(cid):
    body = s(b"MQTT") + bytes([4, 0x82]) + struct.pack("!H", 60) + s(cid.encode()) + s(cid.encode())
    return bytes([0x10, len(body)]) + body
accepted = 0
for r in range(rounds):
    socks = []
    for cid in ids * 2:
        c = socket.create_connection(("127.0.0.1", port))
        socks.append((c, cid))
    time.sleep(0.01)
    if hup:
        os.kill(pid, signal.SIGHUP)
        time.sleep(random.uniform(0, 0.004))
    for c, cid in socks:
        c.sendall(connect(cid))
    for c, cid in socks:
        c.settimeout(3)
        try:
            a = c.recv(4)
            if len(a) == 4 and a[0] == 0x20 and a[3] == 0:
                accepted += 1
        except OSError:
            pass
        c.close()
    time.sleep(0.06)
print(accepted)
PY
}

assert_eq "a CONNECT without a certificate claiming pinned D1..D4 is refused" "$(forge 3 0)" 0
n=$(forge 40 1)
assert_eq "... also when it comes while the broker reloads (40 SIGHUPs)" "$n" 0
sleep 0.5
assert_eq "... and after the reloads" "$(forge 3 0)" 0
kill -0 "${BROKER_PID[b1]}" 2>/dev/null && pass "the broker is still running" ||
    fail "the broker is still running"
probe b1 devs/D1 D1
assert_eq "D1 with its certificate is still admitted" "$RC" 0
done_testing
