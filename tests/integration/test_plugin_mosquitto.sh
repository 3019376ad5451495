#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The plugin on the Mosquitto release under test (README "Mosquitto
# versions"; scripts/test --mosquitto VERSION picks the broker):
#   - devices are admitted with the configuration the README gives for that
#     version (2.0: per_listener_settings false + plugin; 2.1: global_plugin);
#   - on 2.1 the plugin names itself (mosquitto_plugin_set_info) and the
#     2.0-style configuration still works, with 2.1's deprecation notice;
#   - a revocation after the broker has been quiet for a while still kicks
#     within 1 s (2.1 built without websockets otherwise sleeps seconds
#     before the plugin's TICK runs).
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

# What the broker said: messages from before its log file is open (e.g.
# configuration notices) go to its stdout.
said() { cat "${BROKER_DIR[$1]}/stdout.log" "${BROKER_LOG[$1]}" 2>/dev/null; }
pinned() { [ "$(sql "SELECT count(*) FROM device_certificates c JOIN devices d ON d.id = c.device_id WHERE d.identifier = '$1' AND c.status = 'active'")" = 1 ]; }

setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
for id in d1 d2 q1 q2 q3; do setup "$PINION" device cert --ca ca --id "$id" --out devs; done

start_broker b1 || bail_out "broker b1 did not start: $OUT"
log1=$(said b1)
assert_match "the broker log names the version under test" "$log1" \
    "mosquitto version $BROKER_VERSION running"
probe b1 devs/d1 d1
assert_eq "a device is admitted ($BROKER_PLUGIN_STYLE configuration)" "$RC $(head -1 <<<"$OUT")" "0 connack 0"
wait_until 5 pinned d1 && pass "and pinned" || fail "d1 was not pinned"

case $BROKER_VERSION in
2.0.*)
    diag "2.0: no plugin info or global_plugin to check"
    ;;
*)
    assert_match "2.1 names the plugin and its version (mosquitto_plugin_set_info)" "$log1" \
        "Plugin pinion version [0-9]+\.[0-9]+\.[0-9]+ loaded"
    assert_no_match "global_plugin needs no per_listener_settings (no deprecation notice)" \
        "$log1" "per_listener_settings.*deprecated"
    BROKER_PLUGIN_STYLE=listener start_broker b2 || bail_out "broker b2 did not start: $OUT"
    probe b2 devs/d2 d2
    assert_eq "the 2.0 configuration still admits devices on 2.1" "$RC $(head -1 <<<"$OUT")" \
        "0 connack 0"
    assert_match "and 2.1 says per_listener_settings is deprecated" \
        "$(said b2)" "per_listener_settings' option is now deprecated"
    ;;
esac

# A device connects, nothing happens on the broker for 1.2-1.7 s, then it is
# revoked: the kick must not wait for the broker's next network event.
for id in q1 q2 q3; do
    f="$T/$id.out"
    probe_bg b1 "devs/$id" "$id" "$f" --stay 20
    wait_until 5 grep -qx 'connack 0' "$f" || bail_out "$id not admitted: $(cat "$f")"
    wait_until 5 pinned "$id" || bail_out "$id was not pinned"
    sleep "1.$((2 + RANDOM % 6))"
    setup "$PINION" device revoke "$id"
    t0=$(now_ms)
    wait_until 3 grep -q '^disconnected' "$f"
    ms=$(($(now_ms) - t0))
    if grep -q '^disconnected' "$f" && [ "$ms" -lt 1000 ]; then
        pass "$id, revoked after a quiet broker, is kicked within 1 s ($ms ms)"
    else
        fail "$id, revoked after a quiet broker, is kicked within 1 s" "after $ms ms: $(cat "$f")"
    fi
done

done_testing
