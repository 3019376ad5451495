#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Targeting: the SemVer requirement, tags, platform and architecture decide
# who is released; devices failing the requirement, however many come first
# (more than one page of candidates), never starve an eligible device after
# them; a status from a device whose row appears moments later is kept.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
# 600 devices of the product with tag beta, already on 2.0.0 (so only the
# SemVer requirement, applied by piniond, excludes them),
# with lower ids than any real device below: more than one page (500).
sql "INSERT INTO devices (identifier, org_id, product_id, tags, firmware_uuid, firmware_version,
       firmware_platform, firmware_architecture)
     SELECT 'old-' || g, o.id, p.id, '{beta}', 'u-' || g, '2.0.0', 'rpi4', 'aarch64'
     FROM generate_series(1, 600) g, orgs o JOIN products p ON p.org_id = o.id
     WHERE o.name = 'acme' AND p.name = 'sensor'" >/dev/null
# And devices that fail the other criteria: wrong platform, wrong tags.
sql "INSERT INTO devices (identifier, org_id, product_id, tags, firmware_uuid, firmware_version,
       firmware_platform, firmware_architecture)
     SELECT x.id, o.id, p.id, x.tags, 'u', '1.0.0', x.plat, 'aarch64'
     FROM (VALUES ('other-platform', '{beta}'::text[], 'x86'),
                  ('untagged', '{}'::text[], 'rpi4')) x(id, tags, plat),
          orgs o JOIN products p ON p.org_id = o.id
     WHERE o.name = 'acme' AND p.name = 'sensor'" >/dev/null

start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 'cdn_url = "https://cdn.example.com/fw"' || bail_out "piniond: $OUT"
expect_ok "device 'late' created with tag beta" -- \
    "$PINION" device create acme sensor late --tags beta
start_device late --run-for 60
wait_sql 15 "SELECT firmware_version FROM devices WHERE identifier = 'late'" "1.0.0" ||
    bail_out "device 'late' never reported its firmware: $OUT"
pass "device 'late' reported firmware 1.0.0 (its status was recorded)"

# A service identity watches the manifest piniond publishes for 'late'.
probe_bg b1 "$T/svc" piniond-watch "$T/watch.out" --sub fleet/late/down/update --expect 1 --stay 40
WATCH=$PROBE_PID
sleep 0.5
expect_status "deployment create without --firmware is a usage error" 2 -- \
    "$PINION" deployment create acme sensor d0 --tags beta
expect_ok "deployment for tag beta, version < 1.1.0 (firmware uuid given in upper case)" -- \
    "$PINION" deployment create acme sensor d1 --firmware "${FW_UUID^^}" --tags beta \
    --version "< 1.1.0" --concurrency 3
expect_ok "deployment started" -- "$PINION" deployment start acme d1
expect_ok "deployment list" -- "$PINION" --json deployment list acme
assert_eq "deployment list shows d1 running" "$(json_get '.[0].name' "$OUT") $(json_get '.[0].state' "$OUT")" "d1 running"
expect_fail "deployment list of an unknown org is refused" "no organisation" -- \
    "$PINION" deployment list nosuch
if wait_sql 30 "SELECT firmware_uuid FROM devices WHERE identifier = 'late'" "$FW_UUID"; then
    pass "the eligible device behind 600 non-matching ones was released and updated"
else
    fail "the eligible device behind 600 non-matching ones was released and updated" "$OUT"
fi
wait "$WATCH" || true
url=$(sed -n 's/^msg fleet\/late\/down\/update //p' "$T/watch.out" | head -1 | python3 -c '
import base64, json, sys
env = json.loads(sys.stdin.read())
print(json.loads(base64.b64decode(env["payload"]))["firmware"].get("url", ""))' 2>/dev/null)
assert_eq "with cdn_url set, the manifest offers the content-addressed file by URL" \
    "$url" "https://cdn.example.com/fw/$FW_SHA256.fw"
assert_eq "only that device got an update row" \
    "$(sql "SELECT string_agg(d.identifier, ',') FROM device_updates u JOIN devices d ON d.id = u.device_id")" \
    "late"

# A JITP device reports at once on its first connect; its row is written by
# the plugin moments later.  The status must not be lost: here it arrives
# half a second before the row exists (published for the device by the
# service identity, which may use the whole tree).
probe b1 "$T/svc" piniond-early --qos 1 \
    --pub 'fleet/early/up/status={"state":"idle","firmware":{"uuid":"f","version":"1.0.0","platform":"rpi4","architecture":"aarch64"}}'
assert_eq "the early status was published" "$RC" 0
sleep 0.5
expect_ok "device 'early' created after its status arrived" -- \
    "$PINION" device create acme sensor early
if wait_sql 10 "SELECT firmware_version FROM devices WHERE identifier = 'early'" "1.0.0"; then
    pass "a status that arrived before its device row was recorded once the row existed"
else
    fail "a status that arrived before its device row was recorded once the row existed" "$OUT"
fi
done_testing
