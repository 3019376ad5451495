#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Deployment version requirements (issue 10, part 5): `deployment create
# --version` refuses a requirement with an empty "or" branch, which used to
# match every version; and a requirement stored anyway (by an older CLI or
# by hand) that the parser refuses, empty branch or over 512 bytes, releases
# the firmware to no device, while a valid one next to it is released.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
# Devices already on 2.0.0 (tags old, long): firmware 1.1.0 would be a
# downgrade for them.  new-1 on 1.0.0 is the one a valid requirement takes.
sql "INSERT INTO devices (identifier, org_id, product_id, tags, firmware_uuid, firmware_version,
       firmware_platform, firmware_architecture)
     SELECT x.id, o.id, p.id, x.tags, 'u-' || x.id, x.ver, 'rpi4', 'aarch64'
     FROM (VALUES ('old-1', '{old}'::text[], '2.0.0'), ('old-2', '{old}', '2.0.0'),
                  ('long-1', '{long}', '2.0.0'), ('new-1', '{new}', '1.0.0')) x(id, tags, ver),
          orgs o JOIN products p ON p.org_id = o.id
     WHERE o.name = 'acme' AND p.name = 'sensor'" >/dev/null

for req in " or 9.9.9" "9.9.9 or  or 8.8.8" "1.0.0 or " "1.0.0 and" "~> 1.2-rc"; do
    expect_fail "deployment create --version '$req' is refused in one line" \
        "--version: .*is not a version requirement" -- \
        "$PINION" deployment create acme sensor dX --firmware "$FW_UUID" --tags old --version "$req"
done
long="2.0.0"
while [ ${#long} -le 512 ]; do long="$long or 2.0.0"; done
expect_fail "deployment create --version of ${#long} bytes is refused" "longer than 512 bytes" -- \
    "$PINION" deployment create acme sensor dX --firmware "$FW_UUID" --tags long --version "$long"
assert_eq "no deployment was stored by the refused commands" \
    "$(sql "SELECT count(*) FROM deployments")" "0"
expect_ok "deployment create --version '>= 1.0.0-rc.1 and < 1.1.0 or ~> 3.0' is accepted" -- \
    "$PINION" deployment create acme sensor dOk --firmware "$FW_UUID" --tags other \
    --version ">= 1.0.0-rc.1 and < 1.1.0 or ~> 3.0"

# Stored as an older CLI did (it accepted the empty branch), and one over
# the limit that validation always refused but matching did not check.
for d in "dEmpty|old| or 9.9.9" "dLong|long|$long"; do
    IFS='|' read -r name tag req <<<"$d"
    sql "INSERT INTO deployments (org_id, product_id, name, firmware_id, tags, version_req,
           concurrency, state)
         SELECT o.id, p.id, '$name', f.id, '{$tag}', '$req', 10, 'running'
         FROM orgs o JOIN products p ON p.org_id = o.id JOIN firmware f ON f.product_id = p.id
         WHERE o.name = 'acme' AND p.name = 'sensor' AND f.uuid = '$FW_UUID'" >/dev/null
done

start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 || bail_out "piniond: $OUT"
expect_ok "deployment dGood (--version '~> 1.0') created" -- \
    "$PINION" deployment create acme sensor dGood --firmware "$FW_UUID" --tags new --version "~> 1.0"
expect_ok "deployment dGood started" -- "$PINION" deployment start acme dGood
if wait_sql 20 "SELECT count(*) FROM device_updates u JOIN devices d ON d.id = u.device_id
                WHERE d.identifier = 'new-1'" 1; then
    pass "the device matching '~> 1.0' was released"
else
    fail "the device matching '~> 1.0' was released" "$OUT"
fi
# piniond has ticked (every 200 ms) with dEmpty and dLong running since it
# started; a few more ticks, then nothing may have been released for them.
sleep 1.5
assert_eq "devices on 2.0.0 got no release from the stored invalid requirements" \
    "$(sql "SELECT coalesce(string_agg(d.identifier, ',' ORDER BY d.identifier), 'none')
            FROM device_updates u JOIN devices d ON d.id = u.device_id
            WHERE d.identifier <> 'new-1'")" "none"
assert_no_match "piniond logged no release to them" "$(cat "$T/piniond-p1.log")" \
    "released sensor 1.1.0 to (old|long)-"
done_testing
