#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# docs/protocol.md, "Topics and access": a device reads only R/<id>/down/# and writes only
# R/<id>/up/#; a service identity reads and writes all of R/#.  Every check
# is what a client observes on the wire: SUBACK / PUBACK reason codes and
# the messages that do (or do not) arrive.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"


# ------------------------------------------------------------------ PKI
setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
setup "$PINION" device cert --ca ca --id A --out devs
setup "$PINION" device cert --ca ca --id B --out devs

# Service identity: self-signed P-256, extendedKeyUsage clientAuth.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout svc.key \
    -out svc.pem -days 30 -subj /CN=pinion-svc -addext extendedKeyUsage=clientAuth \
    -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1 || bail_out "openssl req failed"
setup "$PINION" service add svc svc.pem

start_broker b1 || bail_out "broker did not start: $OUT"

# Lines of a background probe's output file.
has_exact_line() { grep -qxF -- "$2" "$1"; }
# Waits for a background probe to finish (it ends by itself after --stay).
wait_probe() { wait "$1" 2>/dev/null || true; }

# ----------------------------------------------- subscriptions of device A
probe b1 devs/A A --v5 --qos 1 \
    --sub 'fleet/B/down/#' --sub 'fleet/+/down/#' --sub '#' --sub 'fleet/#' \
    --sub '$share/g/fleet/B/down/#' --sub 'fleet/A/#' --sub 'fleet/A/up/#' \
    --sub '+/A/down/#' --sub 'fleet/A/down/#'
assert_eq "A connects" "$RC" 0
for f in 'fleet/B/down/#' 'fleet/+/down/#' '#' 'fleet/#' '$share/g/fleet/B/down/#' \
    'fleet/A/#' 'fleet/A/up/#' '+/A/down/#'; do
    code=$(awk -v f="$f" '$1 == "suback" && $2 == f {print $3}' <<<"$OUT")
    if [[ $code =~ ^[0-9]+$ ]] && [ "$code" -ge 128 ]; then
        pass "A may not subscribe to $f (suback $code)"
    else
        fail "A may not subscribe to $f" "suback code '$code', expected >= 128" "$OUT"
    fi
done
assert_match "A may subscribe to its own fleet/A/down/# (granted QoS 1)" "$OUT" \
    $'(^|\n)suback fleet/A/down/# 1(\n|$)'

# ------------------------------------------- publishes of device A, seen by
# a service subscribed to all of fleet/#.
probe_bg b1 svc svc-watch "$T/watch.out" --v5 --qos 1 --sub 'fleet/#' --stay 4
watch_pid=$PROBE_PID
wait_until 5 has_exact_line "$T/watch.out" 'suback fleet/# 1' ||
    fail "service subscribed to fleet/#" "$(cat "$T/watch.out")"
grep -qxF 'suback fleet/# 1' "$T/watch.out" && pass "service may subscribe to fleet/# (granted QoS 1)"

probe b1 devs/A A --v5 --qos 1 --pub 'fleet/A/down/update=forged-by-A' \
    --pub 'fleet/B/up/status=forged-by-A' --pub '$CONTROL/x=forged-by-A' \
    --pub 'fleet/A/up/status={"v":"from-A"}'
assert_match "A may not publish to fleet/A/down/update (puback 135)" "$OUT" \
    $'(^|\n)puback fleet/A/down/update 135(\n|$)'
assert_match "A may not publish to fleet/B/up/status (puback 135)" "$OUT" \
    $'(^|\n)puback fleet/B/up/status 135(\n|$)'
assert_match "A may not publish to \$CONTROL/x (puback 135)" "$OUT" \
    $'(^|\n)puback \$CONTROL/x 135(\n|$)'
assert_match "A may publish to fleet/A/up/status (puback 0)" "$OUT" \
    $'(^|\n)puback fleet/A/up/status 0(\n|$)'

wait_probe "$watch_pid"
watch=$(cat "$T/watch.out")
assert_match "service receives A's fleet/A/up/status" "$watch" \
    $'(^|\n)msg fleet/A/up/status \\{"v":"from-A"\\}(\n|$)'
assert_no_match "service receives none of A's refused publishes" "$watch" 'forged-by-A'
assert_no_match "service watcher stayed connected" "$watch" $'(^|\n)disconnected '

# ---------------- the service writes to device trees; A sees only its own.
probe_bg b1 devs/A A "$T/a.out" --v5 --qos 1 --sub 'fleet/A/down/#' --sub 'fleet/+/down/#' \
    --sub '#' --stay 3
a_pid=$PROBE_PID
probe_bg b1 devs/B B "$T/b.out" --v5 --qos 1 --sub 'fleet/B/down/#' --stay 3
b_pid=$PROBE_PID
wait_until 5 has_exact_line "$T/a.out" 'suback fleet/A/down/# 1' || diag "A: $(cat "$T/a.out")"
wait_until 5 has_exact_line "$T/b.out" 'suback fleet/B/down/# 1' || diag "B: $(cat "$T/b.out")"

probe b1 svc svc-pub --v5 --qos 1 --pub 'fleet/B/down/update=for-B-only' \
    --pub 'fleet/B/down/chunk=chunk-for-B' --pub 'fleet/events/x=event' \
    --pub 'fleet/A/down/update=hello-A'
assert_eq "service connects" "$RC" 0
assert_match "service may publish to fleet/B/down/update (puback 0)" "$OUT" \
    $'(^|\n)puback fleet/B/down/update 0(\n|$)'
assert_match "service may publish to fleet/A/down/update (puback 0)" "$OUT" \
    $'(^|\n)puback fleet/A/down/update 0(\n|$)'

wait_probe "$a_pid"
wait_probe "$b_pid"
a=$(cat "$T/a.out")
b=$(cat "$T/b.out")
assert_match "B receives the service's message on its own tree" "$b" \
    $'(^|\n)msg fleet/B/down/update for-B-only(\n|$)'
assert_match "A receives the service's message on fleet/A/down/update" "$a" \
    $'(^|\n)msg fleet/A/down/update hello-A(\n|$)'
assert_no_match "A receives nothing from B's tree or elsewhere" \
    "$(grep '^msg ' <<<"$a" | grep -v '^msg fleet/A/down/update hello-A$')" '.'
assert_eq "A received exactly one message" "$(grep -c '^msg ' <<<"$a")" 1

# Retained messages are filtered on the way out too.
probe b1 svc svc-pub --v5 --qos 1 --retain --pub 'fleet/B/down/update=retained-for-B' \
    --pub 'fleet/A/down/update=retained-for-A'
probe b1 devs/A A --v5 --qos 1 --sub 'fleet/A/down/#' --sub 'fleet/B/down/#' --stay 1
assert_match "A gets its own retained update" "$OUT" \
    $'(^|\n)msg fleet/A/down/update retained-for-A(\n|$)'
assert_no_match "A does not get B's retained update" "$OUT" 'retained-for-B'

# The confinement does not depend on the protocol version.
probe b1 devs/A A --qos 1 --sub '#' --sub 'fleet/B/down/#' --sub 'fleet/A/down/#' \
    --pub 'fleet/B/up/status=v311-forged' --stay 1
assert_match "MQTT 3.1.1: '#' refused (suback 128)" "$OUT" $'(^|\n)suback # 128(\n|$)'
assert_match "MQTT 3.1.1: fleet/B/down/# refused (suback 128)" "$OUT" \
    $'(^|\n)suback fleet/B/down/# 128(\n|$)'
assert_match "MQTT 3.1.1: own tree granted" "$OUT" $'(^|\n)suback fleet/A/down/# 1(\n|$)'
assert_no_match "MQTT 3.1.1: A still receives only its own retained message" \
    "$(grep '^msg ' <<<"$OUT")" 'retained-for-B'

done_testing
