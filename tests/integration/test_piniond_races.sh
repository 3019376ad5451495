#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# piniond sharing the database and the brokers with other instances.  A
# psql session plays the other instance, doing in PostgreSQL exactly what
# it would, at the moment that hurts:
#   - a status report whose transaction PostgreSQL aborts as a deadlock
#     victim is run again and recorded, not dropped;
#   - re-issuing a manifest never waits for a device's row locked by a
#     status transaction (which locks the device, then its updates): it
#     locks both at once and skips the device until the next pass, so the
#     status transaction never deadlocks with it;
#   - clearing a completed update's retained manifest never wipes a newer
#     manifest that another instance published on the same broker;
#   - after its session to a broker reconnects, piniond no longer trusts
#     what it had read of a device's firmware in flight (the notices of
#     manifests published meanwhile were missed): a chunk request for
#     firmware released while the session was down is served;
#   - a restarted piniond publishes an in-flight manifest again byte for
#     byte (same sequence), in case it was recorded but never published:
#     a restart changes nothing a device sees;
#   - a device whose first status report was sent while piniond was not
#     connected (lost) is known to piniond soon after it connects: the
#     reference device reports again every --status-every seconds;
#   - a failed release check cancels the deployment's updates in flight
#     without deadlocking with a status transaction that holds a device
#     and then wants the deployment's row (a device held back);
#   - ending stale updates never deadlocks with a status transaction of a
#     device that has two updates in flight;
#   - a completed update's retained manifest is cleared on the broker it
#     was published on, also when the device has another update in flight
#     recorded on another broker;
#   - a status transaction in which a statement failed (here the audit row
#     of the pause it causes) is not taken for recorded: its COMMIT
#     PostgreSQL answers with ROLLBACK.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
FW1=$FW_UUID
make_firmware 1.2.0
FW2=$FW_UUID
for d in dl-1 rn-1 cl-1 ch-1 rs-1 lt-1 fr-1 es-1 cc-1 pf-1; do
    o=$("$PINION" device create acme sensor "$d" --tags "${d%%-*}" 2>&1) || bail_out "device create $d: $o"
    device_cert "$d"
done
# piniond's connections wait 3 s before looking for a deadlock; the other
# "instance" sets its own wait, so that the test decides who is the victim.
setup sql "ALTER DATABASE \"$PINION_TEST_DB\" SET deadlock_timeout = '3s'"
start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 "inflight_cache_ms = 60000" || bail_out "piniond: $OUT"
PDLOG=${PD_LOG[p1]}

STATUS_IDLE='{"firmware":{"uuid":"factory","version":"1.0.0","platform":"rpi4","architecture":"aarch64"},"state":"idle"}'
for d in dl-1 rn-1 cl-1 ch-1 rs-1 fr-1 es-1 cc-1 pf-1; do
    probe b1 "$T/devs/$d" "$d" --qos 1 --pub "fleet/$d/up/status=$STATUS_IDLE"
    wait_sql 10 "SELECT firmware_platform FROM devices WHERE identifier = '$d'" rpi4 ||
        bail_out "$d's status was not recorded"
done
state_of() {
    sql "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id
         JOIN deployments dp ON dp.id = u.deployment_id WHERE d.identifier = '$1' AND dp.name = '$2'"
}
for d in dl rn cl rs cc; do
    "$PINION" deployment create acme sensor "d-$d" --firmware "$FW1" --tags "$d" >/dev/null ||
        bail_out "deployment create d-$d"
    "$PINION" deployment start acme "d-$d" >/dev/null || bail_out "deployment start d-$d"
    wait_sql 15 "SELECT u.broker_id FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = '$d-1'" b1 ||
        bail_out "$d-1 was not released to on b1: $OUT"
done

# other_begin: a psql session ("the other instance") reading statements
# from a fifo; other SQL sends it a line; its output is in $T/other.out.
other_begin() {
    rm -f "$T/other.in" "$T/other.out"
    mkfifo "$T/other.in"
    "$PINION_PG_BIN/psql" -XAtq -h "$PGHOST" -p "$PGPORT" -U postgres -d "$PINION_TEST_DB" \
        <"$T/other.in" >"$T/other.out" 2>&1 &
    OTHER_PID=$!
    exec 7>"$T/other.in"
    on_exit "kill $OTHER_PID 2>/dev/null || true"
}
other() { echo "$1" >&7; }
other_end() {
    exec 7>&-
    wait "$OTHER_PID" 2>/dev/null || true
}
piniond_waits_for_lock() {
    [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'piniond'
              AND wait_event_type = 'Lock'")" = 1 ]
}

# ------------------------------------------------- status: deadlock victim
# The other instance re-issues the way piniond did before: the update's
# row first, then the device's.  piniond's status transaction locks the
# device's row, then waits for the update's: a deadlock, and piniond,
# waiting first, is the victim.
other_begin
other "SET deadlock_timeout = '30s';"
other "BEGIN;"
other "SELECT 'locked-u' FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'dl-1' FOR UPDATE OF u;"
wait_file 5 "$T/other.out" '^locked-u$' || bail_out "the other session did not lock: $(cat "$T/other.out")"
probe b1 "$T/devs/dl-1" dl-1 --qos 1 \
    --pub 'fleet/dl-1/up/status={"state":"downloading","progress":10}'
wait_until 10 piniond_waits_for_lock || bail_out "piniond's status transaction never waited for the lock"
other "UPDATE devices SET last_seen = last_seen WHERE identifier = 'dl-1';"
other "SELECT 'updated-d';"
other "COMMIT;"
wait_file 20 "$T/other.out" '^updated-d$' || bail_out "the other session never got the device: $(cat "$T/other.out")"
other_end
if wait_sql 15 "$(printf "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'dl-1'")" downloading; then
    pass "a status report whose transaction was a deadlock victim is recorded"
else
    fail "a status report whose transaction was a deadlock victim is recorded" "state: $OUT" \
        "$(grep -E 'dl-1' "$PDLOG" | tail -3)"
fi
assert_match "... after PostgreSQL chose it as the victim, run again" \
    "$(grep 'status from dl-1' "$PDLOG")" "deadlock detected \(SQLSTATE 40P01\); running it again"
assert_no_match "... and not given up" "$(cat "$PDLOG")" "status from dl-1 not recorded"

# ------------------------------------------------- renewal vs a status transaction
# The other instance is in the middle of recording a status report of
# rn-1: it holds the device's row and will lock its updates next.  piniond
# must not take the update's row and then wait for the device's.
SEQ=$(sql "SELECT manifest_sequence FROM devices WHERE identifier = 'rn-1'")
other_begin
other "SET deadlock_timeout = '1s';"
other "BEGIN;"
other "UPDATE devices SET last_seen = now() WHERE identifier = 'rn-1';"
other "SELECT 'locked-d';"
wait_file 5 "$T/other.out" '^locked-d$' || bail_out "the other session did not lock: $(cat "$T/other.out")"
# Due for renewal at piniond's next pass.
setup sql "UPDATE device_updates SET expires_at = now() WHERE device_id = (SELECT id FROM devices WHERE identifier = 'rn-1')"
sleep 1.5 # several passes (tick_ms 200)
other "SELECT 'locked-u' FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'rn-1' FOR UPDATE OF u;"
if wait_file 5 "$T/other.out" '^locked-u$'; then
    pass "a status transaction holding the device gets its update's row: the renewal left both alone"
else
    fail "a status transaction holding the device gets its update's row: the renewal left both alone" \
        "$(cat "$T/other.out")"
fi
other "COMMIT;"
other_end
assert_no_match "... no deadlock" "$(cat "$T/other.out")" "deadlock"
if wait_sql 10 "SELECT manifest_sequence > $SEQ FROM devices WHERE identifier = 'rn-1'" t; then
    pass "... and the manifest is renewed once the device is free"
else
    fail "... and the manifest is renewed once the device is free" "$(grep -E 'renew|rn-1' "$PDLOG" | tail -3)"
fi

# ------------------------------------------------- a clear never wipes a newer manifest
# Another instance released d-cl2 (1.2.0) to cl-1 on b1, recorded it and
# published its manifest, retained on b1.  cl-1 then reports d-cl done.
"$PINION" deployment create acme sensor d-cl2 --firmware "$FW2" --tags cl >/dev/null ||
    bail_out "deployment create d-cl2"
setup sql "WITH s AS (UPDATE devices SET manifest_sequence = manifest_sequence + 1
           WHERE identifier = 'cl-1' RETURNING id, manifest_sequence)
           INSERT INTO device_updates (device_id, deployment_id, state, sequence, issued_at,
           expires_at, broker_id) SELECT s.id, dp.id, 'released', s.manifest_sequence, now(),
           now() + interval '1 day', 'b1' FROM s, deployments dp WHERE dp.name = 'd-cl2'"
probe b1 "$T/svc" "piniond-other-$RANDOM" --qos 1 --retain --pub "fleet/cl-1/down/update=newer-manifest"
retained_cl() {
    probe b1 "$T/svc" "piniond-look-$RANDOM" --sub "fleet/cl-1/down/update" --stay 1
    sed -n 's/^msg fleet\/cl-1\/down\/update //p' <<<"$OUT"
}
assert_eq "the newer manifest is retained on b1" "$(retained_cl)" newer-manifest
probe b1 "$T/devs/cl-1" cl-1 --qos 1 \
    --pub "fleet/cl-1/up/status={\"firmware\":{\"uuid\":\"$FW1\",\"version\":\"1.1.0\",\"platform\":\"rpi4\",\"architecture\":\"aarch64\"},\"state\":\"idle\"}"
wait_sql 10 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id JOIN deployments dp ON dp.id = u.deployment_id WHERE d.identifier = 'cl-1' AND dp.name = 'd-cl'" complete ||
    bail_out "cl-1 did not complete d-cl: $OUT"
sleep 0.5
assert_eq "completing d-cl does not clear the newer manifest on b1" "$(retained_cl)" newer-manifest
assert_match "... piniond says why" "$(cat "$PDLOG")" "cl-1 has a newer manifest in flight on broker b1: not cleared there"

# ------------------------------------------------- the clear goes where the manifest is
# cc-1's d-cc manifest is retained on b1.  Another instance recorded a
# second update of cc-1 (d-cc2, installing: no manifest needed any more)
# on broker b9, which this piniond does not reach.  cc-1 completes d-cc:
# the manifest to clear is d-cc's, on b1, not one on b9.
"$PINION" deployment create acme sensor d-cc2 --firmware "$FW2" --tags cc >/dev/null ||
    bail_out "deployment create d-cc2"
setup sql "INSERT INTO device_updates (device_id, deployment_id, state, sequence, issued_at,
           expires_at, broker_id) SELECT d.id, dp.id, 'installing', 7, now(),
           now() + interval '1 day', 'b9' FROM devices d, deployments dp
           WHERE d.identifier = 'cc-1' AND dp.name = 'd-cc2'"
retained_cc() {
    probe b1 "$T/svc" "piniond-look-$RANDOM" --sub "fleet/cc-1/down/update" --stay 1
    sed -n 's/^msg fleet\/cc-1\/down\/update //p' <<<"$OUT"
}
[ -n "$(retained_cc)" ] || bail_out "cc-1 has no retained manifest on b1"
probe b1 "$T/devs/cc-1" cc-1 --qos 1 \
    --pub "fleet/cc-1/up/status={\"firmware\":{\"uuid\":\"$FW1\",\"version\":\"1.1.0\",\"platform\":\"rpi4\",\"architecture\":\"aarch64\"},\"state\":\"idle\"}"
wait_sql 10 "SELECT u.state FROM device_updates u JOIN devices d ON d.id = u.device_id JOIN deployments dp ON dp.id = u.deployment_id WHERE d.identifier = 'cc-1' AND dp.name = 'd-cc'" complete ||
    bail_out "cc-1 did not complete d-cc: $OUT"
sleep 0.5
assert_eq "completing d-cc clears its manifest on b1, though cc-1 has an update on b9" \
    "$(retained_cc)" ""

# ------------------------------------------------- a rolled-back status is not recorded
# pf-1's third failure (max_attempts 3) holds it back and pauses d-pf
# (max-failures 1); the audit row of that pause is refused (as with a
# role without INSERT on audit_log), which aborts the transaction.
"$PINION" deployment create acme sensor d-pf --firmware "$FW1" --tags pf --max-failures 1 \
    >/dev/null || bail_out "deployment create d-pf"
"$PINION" deployment start acme d-pf >/dev/null || bail_out "deployment start d-pf"
PF_U="SELECT u.attempts || ' ' || u.state FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'pf-1'"
wait_sql 15 "$PF_U" "0 released" || bail_out "pf-1 was not released to: $OUT"
setup sql "ALTER TABLE audit_log ADD CONSTRAINT test_no_pause CHECK (action <> 'deployment.paused') NOT VALID"
for n in 1 2; do
    probe b1 "$T/devs/pf-1" pf-1 --qos 1 --pub 'fleet/pf-1/up/status={"state":"failed","reason":"test"}'
    wait_sql 10 "$PF_U" "$n released" || bail_out "pf-1's failure $n was not recorded: $OUT"
done
probe b1 "$T/devs/pf-1" pf-1 --qos 1 --pub 'fleet/pf-1/up/status={"state":"failed","reason":"test"}'
if wait_file 10 "$PDLOG" 'status from pf-1 not recorded'; then
    pass "a status transaction PostgreSQL rolled back at COMMIT is reported as not recorded"
else
    fail "a status transaction PostgreSQL rolled back at COMMIT is reported as not recorded" \
        "$(grep -E 'pf-1|d-pf' "$PDLOG" | tail -4)"
fi
assert_eq "... and nothing of it is in the database" "$(sql "$PF_U")" "2 released"
setup sql "ALTER TABLE audit_log DROP CONSTRAINT test_no_pause"

# ------------------------------------------------- a reconnected session forgets
GET='{"uuid":"'"$FW1"'","offset":0,"length":1024}'
chunk_answer() {
    probe b1 "$T/devs/ch-1" ch-1 --qos 1 --sub fleet/ch-1/down/chunk --pub "fleet/ch-1/up/get=$GET" --stay 1
    grep -c '^msg fleet/ch-1/down/chunk ' <<<"$OUT" || true
}
assert_eq "nothing in flight for ch-1: its chunk request is not answered" "$(chunk_answer)" 0
# Another instance releases 1.1.0 to ch-1 (the notice of its manifest is
# what piniond misses while its session is down); then piniond's session
# to b1 is taken over and comes back.
"$PINION" deployment create acme sensor d-ch --firmware "$FW1" --tags ch >/dev/null ||
    bail_out "deployment create d-ch"
setup sql "INSERT INTO device_updates (device_id, deployment_id, state, sequence, issued_at,
           expires_at, broker_id) SELECT d.id, dp.id, 'released', 1, now(),
           now() + interval '1 day', 'b1' FROM devices d, deployments dp
           WHERE d.identifier = 'ch-1' AND dp.name = 'd-ch'"
CONNECTS=$(grep -c 'connected to broker b1' "$PDLOG")
probe b1 "$T/svc" piniond-p1-b1 --stay 0.3
wait_file 10 "$PDLOG" 'lost broker b1' || bail_out "piniond's session was not taken over"
wait_until 10 test "$(grep -c 'connected to broker b1' "$PDLOG")" -gt "$CONNECTS" ||
    bail_out "piniond did not reconnect to b1"
if [ "$(chunk_answer)" = 1 ]; then
    pass "after its session reconnected, piniond serves firmware released meanwhile"
else
    fail "after its session reconnected, piniond serves firmware released meanwhile" \
        "$OUT" "$(grep ch-1 "$PDLOG" | tail -3)"
fi

# ------------------------------------------------- failed release check vs a status transaction
# The other instance records fr-1's last allowed failure of d-fr: it holds
# the device's row and its update's, and will take d-fr's row next (to
# count the failure).  Meanwhile d-fr's firmware is revoked: piniond's
# release check fails and it cancels d-fr's updates in flight.  It must
# wait for the device's row holding nothing the status transaction wants
# (before: holding d-fr's row, waiting for the update's: a deadlock).
make_firmware 1.3.0
FW3=$FW_UUID
"$PINION" deployment create acme sensor d-fr --firmware "$FW3" --tags fr >/dev/null ||
    bail_out "deployment create d-fr"
"$PINION" deployment start acme d-fr >/dev/null || bail_out "deployment start d-fr"
wait_sql 15 "SELECT u.broker_id FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'fr-1'" b1 ||
    bail_out "fr-1 was not released to on b1: $OUT"
# What piniond logged from here on (the first section's deadlock is wanted).
log_since() { tail -n +$(($1 + 1)) "$PDLOG"; }
MARK=$(wc -l <"$PDLOG")
other_begin
other "SET deadlock_timeout = '30s';"
other "BEGIN;"
other "UPDATE devices SET last_seen = now() WHERE identifier = 'fr-1';"
other "SELECT 'locked-u' FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'fr-1' FOR UPDATE OF u;"
wait_file 5 "$T/other.out" '^locked-u$' || bail_out "the other session did not lock: $(cat "$T/other.out")"
setup sql "UPDATE firmware SET status = 'revoked' WHERE uuid = '$FW3'"
wait_until 10 piniond_waits_for_lock || bail_out "piniond never waited for fr-1 ($(grep d-fr "$PDLOG" | tail -2))"
other "UPDATE deployments SET failures = failures + 1, updated_at = now() WHERE name = 'd-fr';"
other "SELECT 'counted';"
other "COMMIT;"
wait_file 20 "$T/other.out" '^counted$' || bail_out "the other session never got d-fr: $(cat "$T/other.out")"
other_end
if wait_sql 15 "SELECT u.state || ' ' || dp.state FROM device_updates u JOIN devices d ON d.id = u.device_id JOIN deployments dp ON dp.id = u.deployment_id WHERE d.identifier = 'fr-1' AND dp.name = 'd-fr'" "cancelled paused"; then
    pass "a failed release check cancels fr-1's update and pauses d-fr while a status transaction holds fr-1"
else
    fail "a failed release check cancels fr-1's update and pauses d-fr while a status transaction holds fr-1" \
        "$OUT" "$(grep -E 'd-fr|fr-1' "$PDLOG" | tail -3)"
fi
assert_no_match "... with no deadlock" "$(cat "$T/other.out"; log_since "$MARK")" "deadlock"
assert_eq "... and the failure the status transaction counted is kept" \
    "$(sql "SELECT failures FROM deployments WHERE name = 'd-fr'")" 1

# ------------------------------------------------- ending stale updates vs a status transaction
# es-1 has two updates in flight (two deployments), both without a status
# report for longer than inflight_timeout.  The other instance records a
# status of es-1: it holds the device's row, then locks its updates one by
# one.  piniond, ending both, must wait for the device's row (before: it
# took one update's row, the one the status transaction wanted next, and
# waited for the other: a deadlock).
for dp in d-es1 d-es2; do
    "$PINION" deployment create acme sensor "$dp" --firmware "$FW2" --tags es >/dev/null ||
        bail_out "deployment create $dp"
done
MARK=$(wc -l <"$PDLOG")
kill -STOP "${PD_PID[p1]}"
on_exit "kill -CONT ${PD_PID[p1]} 2>/dev/null || true"
setup sql "INSERT INTO device_updates (device_id, deployment_id, state, sequence, issued_at,
           expires_at, broker_id, updated_at) SELECT d.id, dp.id, 'released', 1, now(),
           now() + interval '1 day', 'b1', now() - interval '2 hours' FROM devices d, deployments dp
           WHERE d.identifier = 'es-1' AND dp.name IN ('d-es1', 'd-es2') ORDER BY dp.id"
other_begin
other "SET deadlock_timeout = '30s';"
other "BEGIN;"
other "UPDATE devices SET last_seen = now() WHERE identifier = 'es-1';"
# The update piniond's scan meets second first: piniond takes the first.
other "SELECT 'locked-u1' FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'es-1' ORDER BY u.ctid DESC LIMIT 1 FOR UPDATE OF u;"
wait_file 5 "$T/other.out" '^locked-u1$' || bail_out "the other session did not lock: $(cat "$T/other.out")"
kill -CONT "${PD_PID[p1]}"
wait_until 10 piniond_waits_for_lock || bail_out "piniond never waited for es-1 ($(grep es-1 "$PDLOG" | tail -2))"
other "SELECT 'locked-u2' FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'es-1' FOR UPDATE OF u;"
other "UPDATE device_updates SET state = 'downloading', updated_at = now() WHERE device_id = (SELECT id FROM devices WHERE identifier = 'es-1');"
other "COMMIT;"
wait_file 20 "$T/other.out" '^locked-u2$' || bail_out "the other session never got es-1's updates: $(cat "$T/other.out")"
other_end
sleep 1
assert_no_match "ending stale updates does not deadlock with es-1's status transaction" \
    "$(cat "$T/other.out"; log_since "$MARK")" "deadlock"
assert_eq "... which is recorded (es-1 reported: its updates are not stale any more)" \
    "$(sql "SELECT string_agg(u.state, ' ') FROM device_updates u JOIN devices d ON d.id = u.device_id WHERE d.identifier = 'es-1'")" \
    "downloading downloading"

# ------------------------------------------------- a restart changes nothing
retained_of() {
    probe b1 "$T/svc" "piniond-look-$RANDOM" --sub "fleet/$1/down/update" --stay 1
    sed -n "s|^msg fleet/$1/down/update ||p" <<<"$OUT"
}
BEFORE=$(retained_of rs-1)
[ -n "$BEFORE" ] || bail_out "rs-1 has no retained manifest"
stop_piniond p1
# As if p1 had stopped between recording rs-1's release and publishing it.
probe b1 "$T/svc" "piniond-other-$RANDOM" --qos 1 --retain --pub "fleet/rs-1/down/update="
assert_eq "(rs-1's retained manifest is gone)" "$(retained_of rs-1)" ""
# lt-1 comes up while no piniond is connected: its first report is lost.
start_device lt-1 --status-every 2 --run-for 60
wait_file 10 "$T/dev-lt-1.log" '^status idle' || bail_out "lt-1 did not report"
assert_eq "(lt-1's first report reached no one)" \
    "$(sql "SELECT coalesce(firmware_platform, '-') FROM devices WHERE identifier = 'lt-1'")" -
start_piniond p1 "inflight_cache_ms = 60000" || bail_out "piniond did not start again: $OUT"
wait_file 10 "$PDLOG" 'published again sensor 1.1.0 to rs-1 ' ||
    fail "the restarted piniond publishes rs-1's manifest again" "$(grep rs-1 "$PDLOG" | tail -3)"
assert_eq "a restarted piniond publishes rs-1's manifest again, byte for byte" \
    "$(retained_of rs-1)" "$BEFORE"
assert_eq "... with no new sequence" \
    "$(sql "SELECT manifest_sequence FROM devices WHERE identifier = 'rs-1'")" 1
if wait_sql 10 "SELECT firmware_platform FROM devices WHERE identifier = 'lt-1'" rpi4; then
    pass "lt-1, whose first report was lost, reports again and is known to piniond"
else
    fail "lt-1, whose first report was lost, reports again and is known to piniond" "$OUT"
fi

done_testing
