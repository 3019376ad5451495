# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# piniond and reference devices for integration tests.  Source it after
# lib.sh and broker.sh:
#
#   . "$PINION_SOURCE/tests/harness/lib.sh"
#   . "$PINION_SOURCE/tests/harness/broker.sh"
#   . "$PINION_SOURCE/tests/harness/piniond.sh"
#   make_fleet                         # org, product, CA, keys, firmware 1.1.0
#   start_broker b1 || bail_out "broker: $OUT"
#   start_piniond p1 || bail_out "piniond: $OUT"
#   start_device dev-1 --run-for 30
#   "$PINION" deployment create acme sensor d1 --firmware "$FW_UUID" --version "< 1.1.0"
#
# make_fleet creates, in $T:
#   org acme, product sensor, a Device CA ca/ registered with JITP for sensor;
#   svc.pem/svc.key: a self-signed service identity "piniond" (also usable
#       with probe: `probe b1 "$T/svc" some-client-id ...`);
#   fw.pub/fw.priv: a firmware key registered to acme; rk.pub/rk.priv: the
#       release key piniond signs manifests with;
#   fw110.fw (= fw-1.1.0.fw): image-1.1.0.bin (300 kB of random bytes)
#       packed with fw.priv as sensor 1.1.0 for rpi4/aarch64 and uploaded
#       into the artifacts dir $T/art.
# and sets FW_UUID, FW_SHA256 (of the .fw), FW_SIZE, FW_ARTIFACT (the stored
# file, $T/art/<sha256>.fw).  make_firmware VERSION [IMAGE_BYTES] packs and
# uploads another one as fw-VERSION.fw, setting the same variables.
#
# PN_MANIFEST_TOOL is tests/tools/pn-manifest-tool (crafted manifests; see
# its source for the options).
#
# start_piniond NAME [CONFIG LINES...]  config $T/piniond-NAME.conf (tick_ms =
#     200, client_id = "piniond-NAME", broker $PD_BROKER, default b1; extra
#     lines are appended and override), log $T/piniond-NAME.log, PID in
#     PD_PID[NAME].  Waits until it is connected; returns 1 (log in $OUT) if
#     it exits or does not connect within 10 s.  Stopped at exit.
# stop_piniond NAME [SIGNAL]       default TERM; waits up to 10 s, then KILL.
# start_device ID [pinion-device options...]  certificate devs/ID.{pem,key}
#     (made once), state dir $T/dev-ID.state, log $T/dev-ID.log, PID in
#     DEV_PID[ID].  Options given come last, so they override the defaults
#     (sensor 1.0.0 rpi4 aarch64, release key rk.pub; --fw-key adds a key to
#     fw.pub).  Runs until stopped (or --run-for); stopped at exit.
# stop_device ID [SIGNAL]
# device_cert ID                   makes devs/ID.{pem,key} if absent.
# accepted_count ID / refused_count ID   lines in $T/dev-ID.log
# wait_sql SECS SQL EXPECTED       poll until `sql SQL` prints EXPECTED;
#                                  on timeout returns 1, last output in $OUT.
# wait_file SECS FILE ERE          poll until FILE has a line matching ERE.
# flip_byte FILE                   alters one byte in the middle of FILE.
#
# PINION_KEEP_LOGS=DIR (when running a script by hand) copies $T, with every
# log, to DIR at exit.

# shellcheck disable=SC2034 # set here for the scripts that source this file
declare -A PD_PID PD_LOG PD_CONF DEV_PID DEV_LOG
PD_BROKER=${PD_BROKER:-b1}
FW_UUID=""
FW_SHA256=""
FW_SIZE=""
FW_ARTIFACT=""
PN_MANIFEST_TOOL=$PINION_BUILD/tests/tools/pn-manifest-tool

# make_fleet: everything a rollout needs except the broker and piniond.
make_fleet() {
    local o
    if [ -n "${PINION_KEEP_LOGS:-}" ]; then
        # Debugging: keep the test's logs after it ends.
        on_exit "mkdir -p '$PINION_KEEP_LOGS' && cp -a '$T'/. '$PINION_KEEP_LOGS'/ 2>/dev/null"
    fi
    o=$("$PINION" org create acme 2>&1) || bail_out "org create: $o"
    o=$("$PINION" product create acme sensor 2>&1) || bail_out "product create: $o"
    o=$("$PINION" ca create --cn "Pinion test CA" --out "$T/ca" 2>&1) || bail_out "ca create: $o"
    local code
    code=$("$PINION" ca code acme 2>/dev/null) || bail_out "ca code failed"
    o=$("$PINION" ca verification-cert --ca "$T/ca" --code "$code" --out "$T/verify.pem" 2>&1) ||
        bail_out "verification-cert: $o"
    o=$("$PINION" ca register acme "$T/ca/ca.pem" --verification-cert "$T/verify.pem" \
        --jitp sensor 2>&1) || bail_out "ca register: $o"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/svc.key" \
        -out "$T/svc.pem" -days 30 -subj /CN=piniond -addext extendedKeyUsage=clientAuth \
        >/dev/null 2>&1 || bail_out "cannot make the service certificate"
    o=$("$PINION" service add piniond "$T/svc.pem" 2>&1) || bail_out "service add: $o"
    o=$("$PINION" key create --out "$T/fw" 2>&1) || bail_out "key create: $o"
    o=$("$PINION" key register acme release "$T/fw.pub" 2>&1) || bail_out "key register: $o"
    o=$("$PINION" release-key create --out "$T/rk" 2>&1) || bail_out "release-key create: $o"
    mkdir -p "$T/art" "$T/devs"
    make_firmware 1.1.0
}

# make_firmware VERSION [IMAGE_BYTES]: packs a random image as sensor
# VERSION for rpi4/aarch64 with fw.priv and uploads it to $T/art.
make_firmware() {
    local ver=$1 bytes=${2:-300000} o
    head -c "$bytes" /dev/urandom >"$T/image-$ver.bin"
    o=$("$PINION" firmware pack --key "$T/fw.priv" --product sensor --version "$ver" \
        --platform rpi4 --architecture aarch64 "$T/image-$ver.bin" -o "$T/fw-$ver.fw" 2>&1) ||
        bail_out "firmware pack $ver: $o"
    o=$("$PINION" firmware upload acme sensor "$T/fw-$ver.fw" --artifacts "$T/art" --json 2>&1) ||
        bail_out "firmware upload $ver: $o"
    # shellcheck disable=SC2034
    FW_UUID=$(json_get .uuid "$o") || bail_out "firmware upload printed no uuid: $o"
    FW_SHA256=$(sha256sum "$T/fw-$ver.fw" | cut -d' ' -f1)
    # shellcheck disable=SC2034
    FW_SIZE=$(stat -c %s "$T/fw-$ver.fw")
    FW_ARTIFACT="$T/art/$FW_SHA256.fw"
    [ -f "$FW_ARTIFACT" ] || bail_out "upload stored no $FW_ARTIFACT"
    [ "$ver" = 1.1.0 ] && cp "$T/fw-$ver.fw" "$T/fw110.fw"
    return 0
}

# flip_byte FILE: flips one byte in the middle of FILE (a stored artifact
# altered on disk after upload).
flip_byte() {
    python3 - "$1" <<'PY' || bail_out "cannot alter $1"
import os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(os.path.getsize(p) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0x55]))
PY
}

# ---------------------------------------------------------------- piniond

start_piniond() {
    local name=$1
    shift
    local conf="$T/piniond-$name.conf" log="$T/piniond-$name.log"
    # shellcheck disable=SC2034
    PD_CONF[$name]=$conf
    PD_LOG[$name]=$log
    {
        echo "database = \"$PINION_DB\""
        echo "mqtt_host = \"127.0.0.1\""
        echo "mqtt_port = ${BROKER_PORT[$PD_BROKER]}"
        echo "ca_file = \"$BROKER_CA\""
        echo "cert_file = \"$T/svc.pem\""
        echo "key_file = \"$T/svc.key\""
        echo "release_key = \"$T/rk.priv\""
        echo "artifacts = \"$T/art\""
        echo "client_id = \"piniond-$name\""
        echo "tick_ms = 200"
        local l
        for l in "$@"; do
            echo "$l"
        done
    } >"$conf"
    "$PINION_BUILD/service/piniond" -c "$conf" >>"$log" 2>&1 &
    PD_PID[$name]=$!
    on_exit "stop_piniond $name"
    local i start
    start=$(wc -l <"$log")
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "${PD_PID[$name]}" 2>/dev/null; then
            OUT=$(cat "$log")
            { wait "${PD_PID[$name]}"; } 2>/dev/null
            unset 'PD_PID[$name]'
            return 1
        fi
        if tail -n +"$((start + 1))" "$log" | grep -q "piniond: connected to"; then
            return 0
        fi
        sleep 0.1
    done
    OUT=$(cat "$log")
    return 1
}

stop_piniond() {
    local name=$1
    stop_pid "${PD_PID[$1]:-}" "${2:-TERM}"
    unset 'PD_PID[$name]'
}

# ---------------------------------------------------------------- devices

# The plugin's counters under $SYS/broker/pinion/ on broker NAME, as a
# service identity (make_fleet's piniond) reads them: the retained values
# below SUBTREE (default all) in $SYS, one "name value" a line, and the
# probe's output in $OUT.  sys_get NAME: one value; sys_is BROKER NAME
# VALUE: whether it has that value now.
sys_values() {
    probe "$1" "$T/svc" piniond --sub "\$SYS/broker/pinion/${2:-#}" --stay 1
    SYS=$(grep '^msg \$SYS/broker/pinion/' <<<"$OUT" | sed 's/^msg \$SYS\/broker\/pinion\///')
}
sys_get() { awk -v k="$1" '$1 == k { v = $2 } END { print v }' <<<"$SYS"; }
sys_is() {
    sys_values "$1"
    [ "$(sys_get "$2")" = "$3" ]
}

device_cert() {
    local id=$1 o
    [ -f "$T/devs/$id.pem" ] && return 0
    mkdir -p "$T/devs"
    o=$("$PINION" device cert --ca "$T/ca" --id "$id" --out "$T/devs" 2>&1) ||
        bail_out "device cert $id: $o"
}

start_device() {
    local id=$1
    shift
    device_cert "$id"
    # shellcheck disable=SC2034
    DEV_LOG[$id]="$T/dev-$id.log"
    "$PINION_BUILD/examples/device/pinion-device" --port "${BROKER_PORT[$PD_BROKER]}" \
        --cafile "$BROKER_CA" --cert "$T/devs/$id.pem" --key "$T/devs/$id.key" --id "$id" \
        --release-key "$T/rk.pub" --fw-key "$T/fw.pub" --state "$T/dev-$id.state" \
        --product sensor --version 1.0.0 --platform rpi4 --architecture aarch64 \
        "$@" >>"$T/dev-$id.log" 2>&1 &
    DEV_PID[$id]=$!
    on_exit "stop_device $id"
}

stop_device() {
    local id=$1 sig=${2:-TERM} pid=${DEV_PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || true
    unset 'DEV_PID[$id]'
}

accepted_count() {
    grep -c '^accepted manifest ' "$T/dev-$1.log" 2>/dev/null || true
}

refused_count() {
    grep -c '^refused manifest: ' "$T/dev-$1.log" 2>/dev/null || true
}

# ---------------------------------------------------------------- waiting

_pd_sql_is() {
    OUT=$(sql "$1" 2>&1)
    [ "$OUT" == "$2" ]
}

wait_sql() {
    local secs=$1 q=$2 want=$3 i
    for ((i = 0; i < secs * 5; i++)); do
        _pd_sql_is "$q" "$want" && return 0
        sleep 0.2
    done
    _pd_sql_is "$q" "$want"
}

wait_file() {
    wait_until "$1" grep -Eq -- "$3" "$2"
}
