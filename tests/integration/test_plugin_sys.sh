#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The plugin's counters under $SYS/broker/pinion/ (issue 11): after 3
# admitted devices (2 first connects, 1 pinned reconnect) and 2 refused
# ones (a CA registered without JITP that does not know the device, a
# wrong client id), a subscriber with access to
# $SYS (a service identity) reads exactly those numbers, retained, within
# sys_interval; a revocation counts a kick; devices may not read $SYS.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
# A second Device CA, registered without just-in-time provisioning.
"$PINION" ca create --cn "Other CA" --out "$T/ca2" >/dev/null 2>&1 || bail_out "ca create"
code=$("$PINION" ca code acme 2>/dev/null) || bail_out "ca code"
"$PINION" ca verification-cert --ca "$T/ca2" --code "$code" --out "$T/verify2.pem" \
    >/dev/null 2>&1 || bail_out "verification-cert"
"$PINION" ca register acme "$T/ca2/ca.pem" --verification-cert "$T/verify2.pem" >/dev/null 2>&1 ||
    bail_out "ca register"
"$PINION" device cert --ca "$T/ca2" --id dev-x --out "$T/devs2" >/dev/null 2>&1 ||
    bail_out "device cert dev-x"
start_broker b1 sys_interval=1 || bail_out "broker: $OUT"

connects() { # DESC CERTPREFIX CLIENTID EXPECTED_CONNACK
    probe b1 "$2" "$3"
    assert_eq "$1" "$(head -n1 <<<"$OUT")" "connack $4"
}
device_cert dev-1
device_cert dev-2
connects "dev-1 admitted (first connect)" "$T/devs/dev-1" dev-1 0
connects "dev-2 admitted (first connect)" "$T/devs/dev-2" dev-2 0
wait_sql 10 "SELECT count(*) FROM device_certificates" 2 || bail_out "pins not stored: $OUT"
connects "dev-1 admitted again (pinned)" "$T/devs/dev-1" dev-1 0
connects "an unknown device of a CA without JITP is refused" "$T/devs2/dev-x" dev-x 5
connects "dev-2 with another client id is refused" "$T/devs/dev-2" dev-9 5

# sys_interval=1: the values are published within a second or two; a new
# subscriber gets the retained ones.
until_secs 15 sys_is b1 refused/total 2 || diag "values: $SYS"
assert_eq "suback: a service may subscribe to \$SYS/broker/pinion/#" \
    "$(grep '^suback' <<<"$OUT")" 'suback $SYS/broker/pinion/# 0'
assert_eq "admitted/new: 2" "$(sys_get admitted/new)" 2
assert_eq "admitted/pinned: 1" "$(sys_get admitted/pinned)" 1
assert_eq "refused/total: 2" "$(sys_get refused/total)" 2
assert_eq "refused/unknown_device: 1" "$(sys_get refused/unknown_device)" 1
assert_eq "refused/client_id: 1" "$(sys_get refused/client_id)" 1
assert_eq "refused/expired: 0" "$(sys_get refused/expired)" 0
assert_eq "pins/created: 2" "$(sys_get pins/created)" 2
assert_eq "pins/total: 2" "$(sys_get pins/total)" 2
assert_eq "database/connected: 1" "$(sys_get database/connected)" 1
assert_eq "load/cas: 2 (the CAs loaded at start)" "$(sys_get load/cas)" 2
assert_eq "load/services: 1" "$(sys_get load/services)" 1
assert_match "load/time: the start-up load, a Unix time" "$(sys_get load/time)" '^1[0-9]{9}$'
assert_eq "kicks: 0 so far" "$(sys_get kicks)" 0
# The subscriber's own CONNECTs count too (one per sys_values call).
assert_match "admitted/service counts the subscriber's connects" \
    "$(sys_get admitted/service)" '^[1-9][0-9]*$'
assert_match "values are retained (Mosquitto's \$SYS convention)" \
    "$(grep -c '^msg \$SYS/broker/pinion/refused/total 2$' <<<"$OUT")" '^[12]$'

# A revocation kicks.
expect_ok "dev-1 revoked" -- "$PINION" device revoke dev-1
if until_secs 15 sys_is b1 kicks 1; then
    pass "kicks: 1 after a revocation"
else
    fail "kicks: 1 after a revocation" "$SYS"
fi

# Devices are not given $SYS.
probe b1 "$T/devs/dev-2" dev-2 --sub '$SYS/broker/pinion/#' --stay 1
assert_eq "a device's subscription to \$SYS/broker/pinion/# is refused" \
    "$(grep '^suback' <<<"$OUT")" 'suback $SYS/broker/pinion/# 128'
assert_eq "and it receives nothing from \$SYS" "$(grep -c '^msg ' <<<"$OUT")" 0

done_testing
