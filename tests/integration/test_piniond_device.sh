#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The reference device against crafted manifests, and piniond against
# garbage on the devices' up/ topics.
#   - Manifests published (retained, QoS 1) as the service identity, signed
#     with tests/tools/pn-manifest-tool: another release key (with its own
#     or with our key id), another device, expired, replayed (5 then 3), a
#     meta.conf signature that no firmware key verifies: each is refused with
#     one `refused manifest:` line and nothing is downloaded.
#   - A manifest with a wrong SHA-256 for real, released firmware: the
#     device downloads it, finds the mismatch and reports `failed`.
#   - Malformed, oversized and foreign payloads on up/status and up/get,
#     and chunk requests for firmware not released to the device, are
#     ignored with a log line; piniond keeps serving: a device completes a
#     rollout afterwards.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

TOOL=$PN_MANIFEST_TOOL
[ -x "$TOOL" ] || bail_out "$TOOL is not built"

make_fleet
FW110=$FW_UUID
make_firmware 1.2.0 20000 # uploaded, never deployed
FW120=$FW_UUID
FW_UUID=$FW110
"$PINION" release-key create --out "$T/other-rk" >/dev/null 2>&1 || bail_out "release-key create"
RK_ID=$(python3 -c 'import base64,hashlib,sys; print(hashlib.sha256(base64.b64decode(open(sys.argv[1]).read())).hexdigest()[:16])' "$T/rk.pub")
for d in sha-dev good-1; do
    o=$("$PINION" device create acme sensor "$d" --tags "$d" 2>&1) || bail_out "device create $d: $o"
done
start_broker b1 || bail_out "broker: $OUT"
start_piniond p1 || bail_out "piniond did not start: $OUT"
PID1=${PD_PID[p1]}
PDLOG=${PD_LOG[p1]}

NOW=$(date +%s)
craft() { # craft DEVICE SEQUENCE [tool options]: envelope on stdout
    local dev=$1 seq=$2
    shift 2
    "$TOOL" --key "$T/rk.priv" --device "$dev" --sequence "$seq" --deployment crafted \
        --fw "$T/fw110.fw" --fw-key "$T/fw.pub" "$@"
}
publish() { # publish TOPIC PAYLOAD: retained, QoS 1, as the service
    probe b1 "$T/svc" "piniond-pub-$RANDOM" --qos 1 --retain --pub "$1=$2"
    [[ $OUT == *"puback $1 0"* ]] || bail_out "could not publish to $1: $OUT $ERR"
}
dev_lines() { # dev_lines ID ERE: count of matching lines in the device log
    grep -Ec -- "$2" "$T/dev-$1.log" || true
}

# ------------------------------------------------------- refused manifests
declare -A ENV REASON
ENV[v-otherkey]=$("$TOOL" --key "$T/other-rk.priv" --device v-otherkey --sequence 1 \
    --fw "$T/fw110.fw" --fw-key "$T/fw.pub") || bail_out "tool: other key"
REASON[v-otherkey]='DSSE envelope has no signature with key id'
# Signed by another key but claiming our release key's id.
ENV[v-forged]=$("$TOOL" --key "$T/other-rk.priv" --device v-forged --sequence 1 \
    --fw "$T/fw110.fw" --fw-key "$T/fw.pub" | sed -E "s/\"keyid\":\"[0-9a-f]{16}\"/\"keyid\":\"$RK_ID\"/")
[[ ${ENV[v-forged]} == *"\"keyid\":\"$RK_ID\""* ]] || bail_out "could not forge the key id: ${ENV[v-forged]:0:300}"
REASON[v-forged]='DSSE signature with key id "'$RK_ID'" does not verify'
ENV[v-elsewhere]=$(craft someone-else 1) || bail_out "tool: another device"
REASON[v-elsewhere]='manifest is for device someone-else, not v-elsewhere'
ENV[v-expired]=$(craft v-expired 1 --issued-at $((NOW - 7200)) --expires-at $((NOW - 60))) ||
    bail_out "tool: expired"
REASON[v-expired]='manifest expired at '
ENV[v-badsig]=$(craft v-badsig 1 --flip-meta-conf-sig) || bail_out "tool: bad meta.conf signature"
REASON[v-badsig]='firmware meta.conf is not signed by any of this device.s firmware keys'
VICTIMS=(v-otherkey v-forged v-elsewhere v-expired v-badsig)

for v in "${VICTIMS[@]}" v-replay; do
    start_device "$v" --run-for 170
done
for v in "${VICTIMS[@]}" v-replay; do
    wait_file 15 "$T/dev-$v.log" '^status idle' || bail_out "$v did not connect: $(cat "$T/dev-$v.log")"
done
for v in "${VICTIMS[@]}"; do
    publish "fleet/$v/down/update" "${ENV[$v]}"
done
# Replay: sequence 5, then 3.  Sequence 5 is a control: the tool's manifest
# with nothing wrong is accepted (its firmware is not released to v-replay by
# piniond, so the download goes nowhere).
publish fleet/v-replay/down/update "$(craft v-replay 5)"
wait_file 10 "$T/dev-v-replay.log" '^accepted manifest 5 ' ||
    bail_out "v-replay did not accept a valid crafted manifest: $(cat "$T/dev-v-replay.log")"
pass "a correctly crafted manifest (sequence 5) is accepted"
publish fleet/v-replay/down/update "$(craft v-replay 3)"
VICTIMS+=(v-replay)
REASON[v-replay]='replayed or old manifest: sequence 3 is not above the last accepted 5'

for v in "${VICTIMS[@]}"; do
    wait_file 10 "$T/dev-$v.log" '^refused manifest: ' || true
done
sleep 1 # room for anything that should not happen (a download, a second line)
for v in "${VICTIMS[@]}"; do
    log=$(cat "$T/dev-$v.log")
    r=$(grep '^refused manifest: ' <<<"$log")
    if [ "$(grep -c . <<<"$r")" -eq 1 ] && grep -Eq -- "^refused manifest: ${REASON[$v]}" <<<"$r"; then
        pass "$v: one refusal: ${r#refused manifest: }"
    else
        fail "$v: exactly one refusal matching '${REASON[$v]}'" "$log"
    fi
done
for v in v-otherkey v-forged v-elsewhere v-expired v-badsig; do
    if [ "$(dev_lines "$v" '^(accepted manifest|status (received|downloading|installing|failed))')" -eq 0 ] &&
        ! grep -q "chunk request from $v" "$PDLOG"; then
        pass "$v accepted nothing and requested no chunk"
    else
        fail "$v accepted nothing and requested no chunk" "$(cat "$T/dev-$v.log")"
    fi
done
assert_eq "v-replay: only sequence 5 was accepted, one download started" \
    "$(dev_lines v-replay '^accepted manifest'):$(dev_lines v-replay '^status received')" "1:1"
assert_eq "v-replay's state keeps sequence 5" \
    "$(json_get .last_sequence <"$T/dev-v-replay.state/state.json")" 5
# Chunk requests for firmware that piniond did not release to the device.
if wait_file 5 "$PDLOG" "ignored chunk request from v-replay for firmware $FW_UUID: not released to it"; then
    pass "piniond ignored v-replay's chunk request (firmware not released to it)"
else
    fail "piniond ignored v-replay's chunk request (firmware not released to it)" "$(tail -5 "$PDLOG")"
fi
assert_eq "v-replay got no chunk (no download progress)" \
    "$(dev_lines v-replay '^status (downloading|installing|failed)|^installed')" 0

# ------------------------------------------- wrong SHA-256 for real firmware
# sha-dev reports once, goes away, is released the firmware (retained
# manifest), which is then replaced by a crafted one with a wrong SHA-256.
start_device sha-dev --run-for 2
wait_sql 15 "SELECT firmware_platform FROM devices WHERE identifier = 'sha-dev'" rpi4 ||
    bail_out "sha-dev did not report"
stop_device sha-dev
expect_ok "deployment for sha-dev created" -- \
    "$PINION" deployment create acme sensor dS --firmware "$FW_UUID" --tags sha-dev
expect_ok "deployment for sha-dev started" -- "$PINION" deployment start acme dS
wait_file 10 "$PDLOG" 'released sensor 1.1.0 to sha-dev \(deployment dS, sequence 1\)' ||
    bail_out "piniond did not release to sha-dev: $(tail -5 "$PDLOG")"
sleep 0.5
publish fleet/sha-dev/down/update "$(craft sha-dev 10 --sha256 "$(printf '0%.0s' {1..64})")"
start_device sha-dev --run-for 170
if wait_file 20 "$T/dev-sha-dev.log" '^status failed: '; then
    pass "sha-dev reported a failed update"
else
    fail "sha-dev reported a failed update" "$(cat "$T/dev-sha-dev.log")"
fi
assert_eq "sha-dev: accepted the crafted manifest, downloaded, failed on the hash" \
    "$(grep -E '^(accepted manifest 10 |status downloading|status failed)' "$T/dev-sha-dev.log" | sort -u | tr '\n' ';')" \
    "accepted manifest 10 for sensor 1.1.0;status downloading;status failed: downloaded firmware does not match the manifest's SHA-256;"
assert_eq "sha-dev installed nothing" "$(dev_lines sha-dev '^installed')" 0
if wait_file 5 "$PDLOG" "sha-dev failed attempt 1 of deployment dS: downloaded firmware does not match"; then
    pass "piniond recorded the failed attempt"
else
    fail "piniond recorded the failed attempt" "$(tail -5 "$PDLOG")"
fi
assert_match "sha-dev still runs the factory firmware" \
    "$(sql "SELECT firmware_uuid FROM devices WHERE identifier = 'sha-dev'")" '^factory$'
stop_device sha-dev
expect_ok "deployment dS paused" -- "$PINION" deployment pause acme dS

# ------------------------------------------------- hostile chunks
# A crafted manifest for firmware not released to v-chunks (piniond serves
# it nothing), then chunks published as the service: the device writes only
# the bytes of the firmware it asked for, at the offset it asked for, never
# past the manifest's size, and a withdrawn (cleared) manifest stops it.
chunk() { # chunk UUID_HEX OFFSET COUNT [LENGTH_FIELD]: publish a PNC1 chunk of fw110.fw's bytes
    python3 - "$1" "$2" "$3" "${4:-}" "$T/fw110.fw" "$T/chunk.bin" <<'PY' || bail_out "chunk"
import struct, sys
uuid, off, count, lfield, src, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
data = open(src, "rb").read()[off:off + count]
data += b"\0" * (count - len(data))
n = int(lfield) if lfield else len(data)
open(out, "wb").write(b"PNC1" + bytes.fromhex(uuid) + struct.pack(">QI", off, n) + data)
PY
    mosquitto_pub -h 127.0.0.1 -p "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" --cert "$T/svc.pem" \
        --key "$T/svc.key" -i "piniond-chunk-$RANDOM" -q 1 -t fleet/v-chunks/down/chunk \
        -f "$T/chunk.bin" || bail_out "mosquitto_pub chunk"
}
part_size() { stat -c %s "$T/dev-v-chunks.state/$FW110.part" 2>/dev/null || echo none; }
U=${FW110//-/}
start_device v-chunks --run-for 170
wait_file 15 "$T/dev-v-chunks.log" '^status idle' || bail_out "v-chunks did not connect"
publish fleet/v-chunks/down/update "$(craft v-chunks 1)"
wait_file 10 "$T/dev-v-chunks.log" '^accepted manifest 1 ' || bail_out "v-chunks did not accept"
chunk 00000000000000000000000000000000 0 1000
sleep 1
assert_eq "a chunk of another firmware (uuid) is not written" "$(part_size)" none
chunk "$U" 0 1000
# -s, not -e: the device creates the file, then writes to it.
wait_until 5 test -s "$T/dev-v-chunks.state/$FW110.part"
assert_eq "the chunk asked for is written" "$(part_size)" 1000
chunk "$U" 500 1000
sleep 0.5
assert_eq "a chunk at another offset is not written" "$(part_size)" 1000
chunk "$U" 1000 "$(stat -c %s "$T/fw110.fw")"
wait_file 10 "$T/dev-v-chunks.log" '^status failed: download is larger than the manifest says' ||
    fail "a chunk running past the manifest's size fails the download" "$(tail -3 "$T/dev-v-chunks.log")"
assert_eq "... and the partial file is gone" "$(part_size)" none
publish fleet/v-chunks/down/update "$(craft v-chunks 2)"
wait_file 10 "$T/dev-v-chunks.log" '^accepted manifest 2 ' || bail_out "v-chunks did not accept 2"
chunk "$U" 0 1000
chunk "$U" 1000 0
wait_file 10 "$T/dev-v-chunks.log" '^status failed: the service has no more bytes' ||
    fail "an empty chunk before the manifest's size fails the download" "$(tail -3 "$T/dev-v-chunks.log")"
assert_eq "... and drops the partial file" "$(part_size)" none
assert_eq "no install from any of that" "$(dev_lines v-chunks '^installed ')" 0
publish fleet/v-chunks/down/update "$(craft v-chunks 3)"
wait_file 10 "$T/dev-v-chunks.log" '^accepted manifest 3 ' || bail_out "v-chunks did not accept 3"
chunk "$U" 0 1000
# -s, not -e: the device creates the file, then writes to it.
wait_until 5 test -s "$T/dev-v-chunks.state/$FW110.part"
probe b1 "$T/svc" "piniond-clear-$RANDOM" --qos 1 --retain --pub "fleet/v-chunks/down/update="
wait_file 10 "$T/dev-v-chunks.log" '^abandoned the download of sensor 1.1.0: the service withdrew it' ||
    fail "a withdrawn (cleared) manifest stops the download" "$(tail -3 "$T/dev-v-chunks.log")"
assert_eq "... and drops the partial file" "$(part_size)" none
stop_device v-chunks

# ------------------------------------------------- garbage on up/ topics
device_cert noisy
BIG_STATUS="{\"state\":\"idle\",\"reason\":\"$(head -c 17000 /dev/zero | tr '\0' x)\"}"
BIG_GET="{\"uuid\":\"$FW_UUID\",\"offset\":0,\"length\":1,\"pad\":\"$(head -c 2000 /dev/zero | tr '\0' y)\"}"
probe_bg b1 "$T/devs/noisy" noisy "$T/noisy.out" --qos 1 --sub 'fleet/noisy/down/#' --stay 2 \
    --pub 'fleet/noisy/up/status=this is not JSON' \
    --pub 'fleet/noisy/up/status=["an","array"]' \
    --pub 'fleet/noisy/up/status={"state":"exploded"}' \
    --pub 'fleet/noisy/up/status={"firmware":"not an object"}' \
    --pub 'fleet/noisy/up/status={"firmware":{"uuid":7},"state":"idle"}' \
    --pub 'fleet/noisy/up/status={"state":"idle","state":"failed"}' \
    --pub "fleet/noisy/up/status=$BIG_STATUS" \
    --pub 'fleet/noisy/up/get=garbage' \
    --pub 'fleet/noisy/up/get={"uuid":"'"$FW_UUID"'","offset":-1,"length":10}' \
    --pub 'fleet/noisy/up/get={"uuid":"../../etc/passwd","offset":0,"length":10}' \
    --pub "fleet/noisy/up/get=$BIG_GET" \
    --pub 'fleet/noisy/up/get={"uuid":"'"$FW_UUID"'","offset":0,"length":65536}'
NOISY=$PROBE_PID
# Foreign: a device that does not exist, an invalid identifier, binary and
# empty payloads (published by the service identity, which may write all of
# fleet/#).
printf 'PNC1\0\1\2\3\377\376binary\0' >"$T/binary.bin"
mq_pub() {
    mosquitto_pub -h 127.0.0.1 -p "${BROKER_PORT[b1]}" --cafile "$BROKER_CA" \
        --cert "$T/svc.pem" --key "$T/svc.key" -i "piniond-mqpub-$RANDOM" -q 1 "$@"
}
mq_pub -t fleet/ghost/up/status -m '{"state":"idle","firmware":{"uuid":"x","version":"9.9.9"}}' ||
    fail "mosquitto_pub to fleet/ghost/up/status"
# shellcheck disable=SC2016 # a literal $ in the topic
mq_pub -t 'fleet/bad$id/up/status' -m '{"state":"idle"}' || fail "mosquitto_pub to fleet/bad\$id"
mq_pub -t fleet/noisy/up/status -f "$T/binary.bin" || fail "mosquitto_pub binary"
mq_pub -t fleet/noisy/up/get -f "$T/binary.bin" || fail "mosquitto_pub binary"
mq_pub -t fleet/noisy/up/status -n || fail "mosquitto_pub empty"
mq_pub -t fleet/noisy/up/get -n || fail "mosquitto_pub empty"
wait "$NOISY"
wait_file 5 "$PDLOG" 'ignored chunk request from noisy: 0 bytes' || true # the last one sent
# An unknown device's status is retried for ~3 s (its row may be about to
# appear) before it is ignored.
wait_file 10 "$PDLOG" 'ignored status from ghost: no such active device' || true
noisy=$(cat "$T/noisy.out")
assert_eq "the noisy device's 12 publishes were all accepted by the broker" \
    "$(grep -c '^puback fleet/noisy/up/.* 0$' <<<"$noisy")" 12
assert_no_match "the noisy device got no chunk and no manifest" "$noisy" '(^|'$'\n'')msg '

pdlog=$(cat "$PDLOG")
expect_log() { # expect_log DESC ERE [COUNT]
    local n
    n=$(grep -Ec -- "$2" <<<"$pdlog")
    if [ "$n" -eq "${3:-1}" ]; then
        pass "piniond logged: $1"
    else
        fail "piniond logged: $1" "$n lines match /$2/, expected ${3:-1}"
    fi
}
expect_log "non-JSON, JSON array, duplicate-key and binary status ignored" \
    'ignored status from noisy: not a JSON object' 4
expect_log "status with fields of the wrong type or value ignored" \
    'ignored status from noisy: malformed fields' 3
expect_log "oversized status ignored" 'ignored status from noisy: 1[0-9]{4} bytes \(limit 16384\)'
expect_log "empty status ignored" 'ignored status from noisy: 0 bytes \(limit 16384\)'
expect_log "malformed chunk requests ignored" \
    'ignored chunk request from noisy: expected \{"uuid","offset","length"\}' 4
expect_log "oversized and empty chunk requests ignored" \
    'ignored chunk request from noisy: [0-9]+ bytes \(limit 1024\)' 2
expect_log "chunk request for firmware not released to noisy ignored" \
    "ignored chunk request from noisy for firmware $FW_UUID: not released to it"
expect_log "status from an unknown device ignored" 'ignored status from ghost: no such active device'
# shellcheck disable=SC2016
expect_log "message under an invalid identifier ignored" \
    'ignored message on fleet/bad\$id/up/status: invalid device identifier'
assert_eq "no device row was made up for ghost" \
    "$(sql "SELECT count(*) FROM devices WHERE identifier = 'ghost'")" 0
assert_eq "noisy's recorded firmware was not touched by the garbage" \
    "$(sql "SELECT coalesce(firmware_uuid, '-') || coalesce(firmware_version, '-') FROM devices WHERE identifier = 'noisy'")" "--"
# A firmware object replaces all four fields together: a uuid without a
# version leaves the version unknown, never the previous firmware's.
sql "UPDATE devices SET firmware_uuid = 'old', firmware_version = '1.0.0',
     firmware_platform = 'rpi4', firmware_architecture = 'aarch64' WHERE identifier = 'noisy'" >/dev/null
probe b1 "$T/devs/noisy" noisy --qos 1 --pub 'fleet/noisy/up/status={"firmware":{"uuid":"new-one"},"state":"idle"}'
wait_sql 10 "SELECT firmware_uuid FROM devices WHERE identifier = 'noisy'" new-one ||
    fail "a uuid-only status is recorded" "firmware_uuid $OUT"
assert_eq "a uuid-only status leaves version, platform and architecture unknown" \
    "$(sql "SELECT coalesce(firmware_version, '-') || coalesce(firmware_platform, '-') || coalesce(firmware_architecture, '-') FROM devices WHERE identifier = 'noisy'")" "---"
probe b1 "$T/devs/noisy" noisy --qos 1 --pub 'fleet/noisy/up/status={"state":"idle"}'
sleep 0.5
assert_eq "a status without a firmware object keeps the firmware fields" \
    "$(sql "SELECT firmware_uuid FROM devices WHERE identifier = 'noisy'")" new-one

# ------------------------------------------------- piniond keeps serving
if kill -0 "$PID1" 2>/dev/null; then pass "piniond is still running"; else fail "piniond is still running" "$(tail "$PDLOG")"; fi
start_device good-1 --run-for 170
wait_sql 15 "SELECT firmware_platform FROM devices WHERE identifier = 'good-1'" rpi4 ||
    bail_out "good-1 did not report"
expect_ok "deployment for good-1 created" -- \
    "$PINION" deployment create acme sensor dG --firmware "$FW_UUID" --tags good-1
expect_ok "deployment for good-1 started" -- "$PINION" deployment start acme dG
if wait_sql 30 "SELECT firmware_uuid FROM devices WHERE identifier = 'good-1'" "$FW_UUID"; then
    pass "after all that, a device still completes an update"
else
    fail "after all that, a device still completes an update" "$(cat "$T/dev-good-1.log")" "$(tail -5 "$PDLOG")"
fi
assert_eq "good-1 installed once" "$(dev_lines good-1 '^installed sensor 1.1.0$')" 1

# ------------------------ chunk requests only for what is released, in flight
# Asked on the devices' behalf by the service identity: sha-dev still has
# 1.1.0 in flight (dS), good-1 has completed it, 1.2.0 was never deployed.
get() { printf '{"uuid":"%s","offset":0,"length":16}' "$1"; }
probe b1 "$T/svc" piniond-get --qos 1 --stay 2 \
    --sub 'fleet/sha-dev/down/chunk' --sub 'fleet/good-1/down/chunk' \
    --pub "fleet/sha-dev/up/get=$(get "$FW110")" \
    --pub "fleet/sha-dev/up/get=$(get "$FW120")" \
    --pub "fleet/good-1/up/get=$(get "$FW110")" \
    --pub "fleet/good-1/up/get=$(get "$FW120")"
assert_eq "only the firmware in flight for sha-dev is served (one chunk, to sha-dev)" \
    "$(grep -o '^msg fleet/[^ ]*/down/chunk PNC1' <<<"$OUT" | tr '\n' ';')" \
    "msg fleet/sha-dev/down/chunk PNC1;"
pdlog=$(cat "$PDLOG")
expect_log "sha-dev's request for never-released firmware ignored" \
    "ignored chunk request from sha-dev for firmware $FW120: not released to it"
expect_log "good-1's request for the firmware it completed ignored" \
    "ignored chunk request from good-1 for firmware $FW110: not released to it"
expect_log "good-1's request for never-released firmware ignored" \
    "ignored chunk request from good-1 for firmware $FW120: not released to it"

done_testing
