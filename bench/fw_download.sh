#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Firmware download over MQTT (docs/protocol.md, "Chunk format"): one reference device takes a
# release of MIB MiB (default 64) from piniond through Mosquitto with the
# plugin, on loopback, real TLS.  For each chunk size, prints the time from
# `deployment start` to the device reporting the new firmware (release,
# download, SHA-256 and archive verification, install, reconnect), and the
# rate.  Then the same for 4 MiB in 16 KiB chunks on a broker without
# `set_tcp_nodelay true`, to show what Nagle's algorithm costs.
#   bash bench/fw_download.sh [MIB] [BUILD_DIR]
# Uses the test harness (tests/harness/) and a throwaway PostgreSQL cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = --inner ]; then
    # One run: MIB CHUNK NODELAY, inside the harness.
    shift
    MIB=$1 CHUNK=$2 NODELAY=$3
    set +eu
    . "$PINION_SOURCE/tests/harness/lib.sh"
    . "$PINION_SOURCE/tests/harness/broker.sh"
    . "$PINION_SOURCE/tests/harness/piniond.sh"
    make_fleet
    make_firmware 1.2.0 $((MIB << 20))
    prepare_broker b1
    [ "$NODELAY" = 1 ] || sed -i '/^set_tcp_nodelay/d' "${BROKER_CONF[b1]}"
    launch_broker b1 || bail_out "broker: $OUT"
    start_piniond p1 "chunk_max = $CHUNK" || bail_out "piniond: $OUT"
    start_device dev-1 --chunk "$CHUNK"
    wait_sql 20 "SELECT firmware_version FROM devices WHERE identifier = 'dev-1'" 1.0.0 ||
        bail_out "the device did not report"
    "$PINION" deployment create acme sensor d1 --firmware "$FW_UUID" --version "< 1.2.0" >/dev/null
    s=$(date +%s%N)
    "$PINION" deployment start acme d1 >/dev/null
    wait_sql 900 "SELECT firmware_version FROM devices WHERE identifier = 'dev-1'" 1.2.0 ||
        bail_out "the device did not take the update"
    e=$(date +%s%N)
    cmp -s "$T/image-1.2.0.bin" "$T/dev-dev-1.state/installed.img" || bail_out "installed image differs"
    echo "RESULT $FW_SIZE $(((e - s) / 1000000))"
    pass "done"
    done_testing
    exit 0
fi

MIB=${1:-64}
BUILD=$(cd "${2:-build}" && pwd)
[ -x "$BUILD/service/piniond" ] && [ -x "$BUILD/examples/device/pinion-device" ] ||
    { echo "build first: cmake -S . -B build && cmake --build build" >&2; exit 1; }
. bench/common.sh
bench_pg
bench_harness_env

run() { # MIB CHUNK NODELAY LABEL
    local out line
    out=$(bash "$0" --inner "$1" "$2" "$3" 2>&1) || true
    line=$(grep '^RESULT ' <<<"$out" || true)
    if [ -z "$line" ]; then
        printf '%-44s failed: %s\n' "$4" "$(grep -m1 'Bail out' <<<"$out")"
        return
    fi
    read -r _ size ms <<<"$line"
    awk -v l="$4" -v size="$size" -v ms="$ms" \
        'BEGIN { printf "%-44s %8.2f s %8.1f MiB/s\n", l, ms / 1000, size / 1048576 / (ms / 1000) }'
}

printf '%-44s %10s %14s\n' "release of a ${MIB} MiB image, loopback TLS" "time" "rate"
for c in 16384 65536 262144; do
    run "$MIB" "$c" 1 "chunks of $((c / 1024)) KiB, set_tcp_nodelay true"
done
run 4 16384 0 "4 MiB, 16 KiB chunks, set_tcp_nodelay false"
