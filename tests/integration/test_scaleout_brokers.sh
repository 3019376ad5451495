#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The broker registry and device presence (README "Scaling out"):
#   - a broker added while piniond runs is used without restarting it;
#   - a broker piniond cannot reach (wrong service_address) is reported,
#     naming it and its devices, and a release to a device there says so;
#   - a broker stopped cleanly leaves the registry at once, with its
#     presence rows;
#   - presence is kept when a device's old session goes after the new one
#     came: a client-id takeover on one broker, or the old connection on
#     b1 closing after the device connected to b2.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
start_broker b1 || bail_out "broker b1: $OUT"
start_piniond p1 || bail_out "piniond did not start: $OUT"
PID=${PD_PID[p1]}

# ------------------------------------------------------------ added broker
start_broker b2 || bail_out "broker b2: $OUT"
if wait_file 10 "${PD_LOG[p1]}" 'connected to broker b2 at 127.0.0.1:[0-9]+ as piniond-p1-b2$'; then
    pass "piniond opened a session to b2 when it appeared in the registry"
else
    fail "piniond opened a session to b2 when it appeared in the registry" "$(tail -5 "${PD_LOG[p1]}")"
fi
o=$("$PINION" device create acme sensor new-1 --tags new 2>&1) || bail_out "device create: $o"
start_device new-1 --port "${BROKER_PORT[b2]}"
"$PINION" deployment create acme sensor dn --firmware "$FW_UUID" --version "< 1.1.0" --tags new \
    >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dn >/dev/null || bail_out "deployment start"
if wait_sql 60 "SELECT firmware_uuid FROM devices WHERE identifier = 'new-1'" "$FW_UUID"; then
    pass "a device on the added broker b2 completed its update"
else
    fail "a device on the added broker b2 completed its update" "firmware_uuid is $OUT"
fi
assert_match "... its manifest published on b2" "$(cat "${PD_LOG[p1]}")" \
    'released sensor 1.1.0 to new-1 \(deployment dn, sequence 1\) on broker b2'
if kill -0 "$PID" 2>/dev/null && [ "$(grep -c 'starting;' "${PD_LOG[p1]}")" = 1 ]; then
    pass "... by the same piniond process, never restarted"
else
    fail "... by the same piniond process, never restarted" "$(grep 'starting;' "${PD_LOG[p1]}")"
fi
stop_device new-1

# ------------------------------------------------------ unreachable broker
# b3 registers an address where nothing listens: devices reach it, piniond
# does not.
dead=$(free_port)
start_broker b3 "service_address=127.0.0.1:$dead" || bail_out "broker b3: $OUT"
o=$("$PINION" device create acme sensor lost-1 --tags lost 2>&1) || bail_out "device create: $o"
# It reports its firmware through b1 first (through b3 piniond would never
# hear it), then the load balancer puts it on b3.
start_device lost-1 --port "${BROKER_PORT[b1]}"
wait_sql 10 "SELECT firmware_version FROM devices WHERE identifier = 'lost-1'" 1.0.0 ||
    bail_out "lost-1 did not report through b1: $OUT"
stop_device lost-1
start_device lost-1 --port "${BROKER_PORT[b3]}"
wait_sql 10 "SELECT broker_id FROM device_presence WHERE identifier = 'lost-1'" b3 ||
    bail_out "lost-1 is not present on b3: $OUT"
"$PINION" deployment create acme sensor dl --firmware "$FW_UUID" --version "< 1.1.0" --tags lost \
    >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dl >/dev/null || bail_out "deployment start"
if wait_file 15 "${PD_LOG[p1]}" "cannot reach broker b3 at 127.0.0.1:$dead \(.*\); devices connected there get no manifest until piniond can: 1, e.g. lost-1$"; then
    pass "piniond reports b3 as unreachable, with its device"
else
    fail "piniond reports b3 as unreachable, with its device" "$(grep b3 "${PD_LOG[p1]}")"
fi
if wait_file 10 "${PD_LOG[p1]}" "lost-1 is on broker b3, which piniond cannot reach: its manifest \(sequence 1\) waits"; then
    pass "the release to lost-1 says where it waits"
else
    fail "the release to lost-1 says where it waits" "$(grep lost-1 "${PD_LOG[p1]}")"
fi
assert_eq "lost-1's update is recorded as published nowhere" \
    "$(sql "SELECT u.state || ' ' || coalesce(u.broker_id, 'none') FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'lost-1'")" \
    "released none"
assert_eq "lost-1 got no manifest" "$(accepted_count lost-1)" 0
stop_device lost-1
stop_broker b3

# ------------------------------------------------------ broker stopped cleanly
probe_bg b2 "$T/devs/new-1" new-1 "$T/p2.out" --stay 30
P2=$PROBE_PID
wait_sql 10 "SELECT broker_id FROM device_presence WHERE identifier = 'new-1'" b2 ||
    fail "new-1 present on b2" "$OUT"
stop_broker b2
wait "$P2" 2>/dev/null
assert_eq "b2 stopped: its registry row is gone" "$(sql "SELECT count(*) FROM brokers WHERE id = 'b2'")" 0
assert_eq "... and its presence rows" "$(sql "SELECT count(*) FROM device_presence WHERE broker_id = 'b2'")" 0
if wait_file 5 "${PD_LOG[p1]}" 'broker b2 at 127.0.0.1:[0-9]+ left the registry'; then
    pass "piniond dropped b2 at once"
else
    fail "piniond dropped b2 at once" "$(tail -3 "${PD_LOG[p1]}")"
fi

# ------------------------------------------------------ presence is kept
device_cert take-1
probe_bg b1 "$T/devs/take-1" take-1 "$T/t1.out" --stay 30
T1=$PROBE_PID
wait_sql 10 "SELECT broker_id FROM device_presence WHERE identifier = 'take-1'" b1 ||
    fail "take-1 present on b1" "$OUT"
g1=$(sql "SELECT generation FROM device_presence WHERE identifier = 'take-1'")
probe_bg b1 "$T/devs/take-1" take-1 "$T/t2.out" --stay 30
T2=$PROBE_PID
wait_file 5 "$T/t1.out" '^disconnected' || fail "the first session of take-1 was taken over"
sleep 1
assert_eq "after a takeover on b1, take-1 is still present on b1 (newer connection)" \
    "$(sql "SELECT broker_id || ' ' || (generation > $g1) FROM device_presence WHERE identifier = 'take-1'")" "b1 true"

start_broker b2 || bail_out "broker b2 again: $OUT"
probe_bg b2 "$T/devs/take-1" take-1 "$T/t3.out" --stay 30
T3=$PROBE_PID
wait_sql 10 "SELECT broker_id FROM device_presence WHERE identifier = 'take-1'" b2 ||
    fail "take-1 now present on b2" "$OUT"
kill "$T2" 2>/dev/null # its connection to b1 closes after the one to b2 came
wait "$T2" 2>/dev/null
sleep 1
assert_eq "take-1's old connection on b1 closing left it present on b2" \
    "$(sql "SELECT broker_id FROM device_presence WHERE identifier = 'take-1'")" b2
kill "$T3" 2>/dev/null
wait "$T3" "$T1" 2>/dev/null
if wait_sql 5 "SELECT count(*) FROM device_presence WHERE identifier = 'take-1'" 0; then
    pass "take-1 gone from b2: no presence"
else
    fail "take-1 gone from b2: no presence" "$OUT rows"
fi

done_testing
