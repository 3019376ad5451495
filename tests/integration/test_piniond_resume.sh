#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Downloads resume (docs/protocol.md, "Chunk format") on the reference device:
#   - a device killed with SIGKILL mid-download and started again takes the
#     same retained manifest again (byte for byte the one it accepted, so no
#     replay), resumes from the bytes it has instead of from 0, and installs
#     an image identical to the one packed;
#   - a device whose connection is taken over mid-download reconnects and
#     carries on from where it was;
#   - piniond released each device exactly once (manifest sequence 1): the
#     resumes needed no re-issue;
#   - a manifest it has finished (installed) is still not taken again;
#   - piniond losing its database connection mid-download reconnects and
#     serves the rest.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

MIB=8
make_fleet
make_firmware 1.2.0 $((MIB << 20))
FW=$FW_UUID
for d in kill-1 drop-1; do
    o=$("$PINION" device create acme sensor "$d" --tags "$d" 2>&1) || bail_out "device create $d: $o"
done
start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 "chunk_max = 4096" || bail_out "piniond: $OUT"

# part_size ID: bytes of the device's partial download (0 if none).
part_size() {
    local f="$T/dev-$1.state/$FW.part"
    [ -f "$f" ] && stat -c %s "$f" || echo 0
}
# wait_part ID BYTES: until the partial download holds at least BYTES.
wait_part() {
    local i
    for ((i = 0; i < 3000; i++)); do
        [ "$(part_size "$1")" -ge "$2" ] && return 0
        sleep 0.01
    done
    return 1
}

# ------------------------------------------------- killed mid-download
# 4 KiB chunks: ~1,500 round trips, long enough to stop it in the middle.
start_device kill-1 --chunk 4096
"$PINION" deployment create acme sensor dk --firmware "$FW" --version "< 1.2.0" --tags kill-1 \
    >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dk >/dev/null || bail_out "deployment start"
wait_part kill-1 $((1 << 20)) || bail_out "kill-1 did not download 1 MiB: $(tail -3 "${DEV_LOG[kill-1]}")"
stop_device kill-1 KILL
had=$(part_size kill-1)
total=$(stat -c %s "$T/fw-1.2.0.fw")
diag "kill-1 killed with $had of $total bytes"
if [ "$had" -ge $((1 << 20)) ] && [ "$had" -lt "$total" ]; then
    pass "kill-1 was killed mid-download ($had of $total bytes)"
else
    bail_out "kill-1 was not stopped mid-download ($had of $total bytes)"
fi

# piniond's database connection is cut meanwhile: it reconnects (and
# prepares its chunk lookup again) before serving the rest.
sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
     WHERE application_name = 'piniond' AND datname = current_database()" >/dev/null
start_device kill-1 --chunk 4096
wait_sql 60 "SELECT firmware_uuid FROM devices WHERE identifier = 'kill-1'" "$FW" ||
    fail "kill-1 finished the update after its restart" "firmware_uuid is $OUT"
line=$(grep -E '^resuming download at byte [0-9]+ of [0-9]+$' "${DEV_LOG[kill-1]}" | head -1)
assert_match "kill-1 resumed instead of starting over" "$line" "^resuming download at byte [0-9]+ of $total\$"
at=$(sed -E 's/^resuming download at byte ([0-9]+) of.*/\1/' <<<"$line")
ok=no
[ -n "$at" ] && [ "$at" -ge $((had - 4096)) ] && [ "$at" -ge $((1 << 20)) ] && ok=yes
assert_eq "... from the bytes it had when killed (at $at, had $had)" "$ok" yes
assert_eq "kill-1 refused nothing" "$(refused_count kill-1)" 0
assert_eq "kill-1's installed image is the packed one" \
    "$(sha256sum <"$T/dev-kill-1.state/installed.img")" "$(sha256sum <"$T/image-1.2.0.bin")"
assert_eq "kill-1: one release, sequence 1, complete" \
    "$(sql "SELECT d.manifest_sequence || ' ' || u.state FROM devices d
            JOIN device_updates u ON u.device_id = d.id WHERE d.identifier = 'kill-1'")" "1 complete"
assert_match "piniond reconnected to the database" "$(cat "${PD_LOG[p1]}")" \
    'database connection lost; reconnecting'
assert_eq "piniond released kill-1 once" \
    "$(grep -c 'released sensor 1.2.0 to kill-1 ' "${PD_LOG[p1]}")" 1

# ------------------------------------------------- connection taken over
start_device drop-1 --chunk 4096
"$PINION" deployment create acme sensor dd --firmware "$FW" --version "< 1.2.0" --tags drop-1 \
    >/dev/null || bail_out "deployment create"
"$PINION" deployment start acme dd >/dev/null || bail_out "deployment start"
wait_part drop-1 $((1 << 20)) || bail_out "drop-1 did not download 1 MiB"
# Same certificate, same client id: the broker drops the device's session.
probe b1 "$T/devs/drop-1" drop-1 --stay 0.2
assert_eq "a second connection as drop-1 is admitted (takes the session over)" "$RC" 0
wait_sql 60 "SELECT firmware_uuid FROM devices WHERE identifier = 'drop-1'" "$FW" ||
    fail "drop-1 finished the update after losing its connection" "firmware_uuid is $OUT"
assert_eq "drop-1 reconnected (two CONNACKs before the install)" \
    "$(sed -n '1,/^installed/p' "${DEV_LOG[drop-1]}" | grep -c '^connack 0$')" 2
assert_eq "drop-1 did not start over (no second 'status received')" \
    "$(grep -c '^status received$' "${DEV_LOG[drop-1]}")" 1
assert_eq "drop-1 refused nothing" "$(refused_count drop-1)" 0
assert_eq "drop-1's installed image is the packed one" \
    "$(sha256sum <"$T/dev-drop-1.state/installed.img")" "$(sha256sum <"$T/image-1.2.0.bin")"
assert_eq "drop-1: one release, sequence 1" \
    "$(sql "SELECT manifest_sequence FROM devices WHERE identifier = 'drop-1'")" 1

# ------------------------------------------------- finished manifests stay finished
# kill-1 restarts once more: the retained manifest (if still there) is for
# the firmware it now runs, and the state no longer holds an unfinished one.
assert_eq "kill-1's state holds no unfinished manifest" \
    "$(json_get .manifest_sha256 "$(cat "$T/dev-kill-1.state/state.json")")" ""
n_inst=$(grep -c '^installed ' "${DEV_LOG[kill-1]}")
stop_device kill-1
start_device kill-1 --chunk 4096
sleep 2
assert_eq "kill-1 did not install again after another restart" \
    "$(grep -c '^installed ' "${DEV_LOG[kill-1]}")" "$n_inst"
assert_eq "... nor start another download" "$(grep -c '^status received$' "${DEV_LOG[kill-1]}")" 1

done_testing
