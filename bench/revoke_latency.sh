#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Revocation latency: N times, a device connects (JITP, pinned), the broker
# stays quiet for 0.3-1.3 s, `pinion device revoke` runs, and the time until
# the device sees its connection closed is measured (10 ms polling).  Prints
# each figure, then min / median / max, and the broker that ran.
#   bash bench/revoke_latency.sh [--mosquitto VERSION] [N] [BUILD_DIR]
# --mosquitto VERSION: a broker built by scripts/mosquitto-build (VERSION-nows:
# 2.1 without websockets, where TICK work waits for the loop; see README).
# Uses the test harness (tests/harness/) and a throwaway PostgreSQL cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = --inner ]; then
    N=$2
    set +eu
    . "$PINION_SOURCE/tests/harness/lib.sh"
    . "$PINION_SOURCE/tests/harness/broker.sh"
    now_ms() { echo $(($(date +%s%N) / 1000000)); }
    q() { "$@" >/dev/null 2>&1 || bail_out "setup failed: $*"; }
    q "$PINION" org create acme
    q "$PINION" product create acme sensor
    q "$PINION" ca create --cn "Bench CA" --out ca
    code=$("$PINION" ca code acme 2>/dev/null)
    q "$PINION" ca verification-cert --ca ca --code "$code" --out v.pem
    q "$PINION" ca register acme ca/ca.pem --verification-cert v.pem --jitp sensor
    start_broker b1 || bail_out "broker: $OUT"
    tstart=$(now_ms)
    echo "BROKER $(grep -o 'mosquitto version [0-9.]*' "${BROKER_LOG[b1]}" | head -1)"
    for ((i = 1; i <= N; i++)); do
        id=d$i f="$T/d$i.out"
        q "$PINION" device cert --ca ca --id "$id" --out devs
        probe_bg b1 "devs/$id" "$id" "$f" --stay 30
        wait_until 5 grep -qx 'connack 0' "$f" || bail_out "$id not admitted: $(cat "$f")"
        wait_until 5 test "$(sql "SELECT count(*) FROM device_certificates c JOIN devices d ON d.id = c.device_id WHERE d.identifier = '$id'")" = 1 ||
            bail_out "$id not pinned"
        sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + r / 32768 }')"
        q "$PINION" device revoke "$id"
        t0=$(now_ms)
        while ! grep -q '^disconnected' "$f"; do
            [ $(($(now_ms) - t0)) -lt 10000 ] || break
            sleep 0.01
        done
        echo "RESULT $(($(now_ms) - t0))"
        kill "$PROBE_PID" 2>/dev/null
        wait "$PROBE_PID" 2>/dev/null
    done
    t1=$(now_ms)
    stop_broker b1
    echo "UP $(((t1 - tstart) / 1000))"
    grep 'waker sent' "${BROKER_LOG[b1]}" 2>/dev/null
    pass done
    done_testing
    exit 0
fi

mosq=""
if [ "${1:-}" = --mosquitto ]; then
    v=$2
    shift 2
    a=("${v%-nows}")
    [ "${v%-nows}" = "$v" ] || a+=(--no-websockets)
    mosq=$(bash scripts/mosquitto-build "${a[@]}" | tail -1)
    export PINION_MOSQUITTO=$mosq
fi
N=${1:-10}
BUILD=$(cd "${2:-build}" && pwd)
[ -x "$BUILD/plugin/pinion_plugin.so" ] || { echo "build first: cmake -S . -B build && cmake --build build" >&2; exit 1; }
. bench/common.sh
bench_pg
bench_harness_env
out=$(bash "$0" --inner "$N" 2>&1) || true
grep -q '^RESULT ' <<<"$out" || { echo "failed: $(grep -m3 'Bail out\|not ok' <<<"$out")" >&2; exit 1; }
grep '^BROKER ' <<<"$out" | sed 's/^BROKER //'
grep '^RESULT ' <<<"$out" | awk '{ print $2 }' | sort -n | awk '
    { v[NR] = $1; printf "%s ms\n", $1 }
    END { printf "revocation to disconnect over %d runs: min %d ms, median %d ms, max %d ms\n",
          NR, v[1], v[int((NR + 1) / 2)], v[NR] }'
w=$(grep -o 'pinion: waker sent [0-9]* signals' <<<"$out" || true)
[ -z "$w" ] || echo "${w#pinion: } in $(grep '^UP ' <<<"$out" | cut -d' ' -f2) s"

