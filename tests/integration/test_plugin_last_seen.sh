#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A pinned connect records devices.last_seen and device_certificates.last_used
# (the worker writes them in batches), to the minute: a connect within a
# minute of the stored time leaves the row alone, so that a broker
# restart's reconnect storm does not rewrite every device (issue 13).
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
start_broker b1 || bail_out "broker: $OUT"
for id in old-1 new-1; do
    device_cert "$id"
    probe b1 "$T/devs/$id" "$id"
    assert_eq "$id admitted (first connect)" "$(head -n1 <<<"$OUT")" "connack 0"
done
wait_sql 10 "SELECT count(*) FROM device_certificates" 2 || bail_out "pins not stored"
assert_eq "a first connect sets first_seen, last_seen and last_used" \
    "$(sql "SELECT count(*) FROM devices d JOIN device_certificates c ON c.device_id = d.id
            WHERE d.first_seen IS NOT NULL AND d.last_seen IS NOT NULL
            AND c.last_used IS NOT NULL")" 2

# old-1 was last seen two hours ago; new-1 ten seconds ago.
sql "UPDATE devices SET last_seen = now() - interval '2 hours' WHERE identifier = 'old-1';
     UPDATE device_certificates SET last_used = now() - interval '2 hours'
       WHERE device_id = (SELECT id FROM devices WHERE identifier = 'old-1');
     UPDATE devices SET last_seen = now() - interval '10 seconds' WHERE identifier = 'new-1';
     UPDATE device_certificates SET last_used = now() - interval '10 seconds'
       WHERE device_id = (SELECT id FROM devices WHERE identifier = 'new-1');" >/dev/null
seen_of() {
    sql "SELECT d.last_seen::text || ' ' || c.last_used::text FROM devices d
         JOIN device_certificates c ON c.device_id = d.id WHERE d.identifier = '$1'"
}
new_before=$(seen_of new-1)

probe b1 "$T/devs/new-1" new-1
assert_eq "new-1 admitted (pinned)" "$(head -n1 <<<"$OUT")" "connack 0"
probe b1 "$T/devs/old-1" old-1
assert_eq "old-1 admitted (pinned)" "$(head -n1 <<<"$OUT")" "connack 0"
# Marks are written in order, so new-1's were handled once old-1's are.
if wait_sql 10 "SELECT count(*) FROM devices d JOIN device_certificates c ON c.device_id = d.id
                WHERE d.identifier = 'old-1' AND d.last_seen > now() - interval '1 minute'
                AND c.last_used > now() - interval '1 minute'" 1; then
    pass "old-1's last_seen and last_used are now"
else
    fail "old-1's last_seen and last_used are now" "$(seen_of old-1)"
fi
assert_eq "new-1's, ten seconds old, are left as they were" "$(seen_of new-1)" "$new_before"
done_testing
