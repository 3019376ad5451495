#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Message throughput through whole brokers on this machine, same listener
# and certificates: plain Mosquitto (no plugin, so no ACL at all), the same
# with an allow-all ACL plugin (the issue's other baseline: Mosquitto then
# asks a plugin about every publish and delivery) and Mosquitto + Pinion.
#   up:   N devices publish to their own fleet/<id>/up/data, one service
#         identity subscribed to fleet/+/up/# receives;
#   down: the service publishes to fleet/<id>/down/data round robin, each
#         device subscribed to its own fleet/<id>/down/# receives.
# QoS 0 and QoS 1, 64-byte payloads, at most 500 messages in transit.  Runs
# alternate plain, allow-all, pinion / pinion, allow-all, plain; prints each
# run, the medians, the ratios pinion/plain and pinion/allow-all (target
# 0.9) and the broker's CPU time per message.
#
#   bash bench/msg_throughput.sh [N=100] [MSGS=100000] [ROUNDS=3] [BUILD_DIR=build]
#
# Exit status 0 when every message arrived; no time is asserted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-100}
MSGS=${2:-100000}
ROUNDS=${3:-3}
BUILD=$(cd "${4:-build}" && pwd)
. bench/brokers.sh

bench_setup "$N"
say "message throughput: $N devices + 1 service, $MSGS messages a run, $ROUNDS rounds;" \
    "$(bench_machine)"

pin_all "$N"

declare -A RATE CPU
fail=0
run() {
    local kind=$1 dir=$2 qos=$3 line
    start_broker "$kind"
    if ! line=$("$BUILD/bench/mqtt_load" pub --port "$PORT" --cafile "$CACHE/server.pem" \
        --certs "$CACHE/devs" -n "$N" --dir "$dir" --qos "$qos" --msgs "$MSGS" \
        --broker-pid "$BROKER_PID"); then
        say "($kind) $line"
        say "($kind) FAILED: not every message arrived"
        fail=1
    fi
    stop_broker
    say "$(printf '%-6s' "$kind") $line"
    RATE[$kind.$dir.$qos]+="$(field rate "$line") "
    CPU[$kind.$dir.$qos]+="$(field broker_cpu_us "$line") "
}

for ((r = 0; r < ROUNDS; r++)); do
    for dir in up down; do
        for qos in 0 1; do
            if ((r % 2 == 0)); then
                run plain "$dir" "$qos"; run allowall "$dir" "$qos"; run pinion "$dir" "$qos"
            else
                run pinion "$dir" "$qos"; run allowall "$dir" "$qos"; run plain "$dir" "$qos"
            fi
        done
    done
done

for dir in up down; do
    for qos in 0 1; do
        k=$dir.$qos
        pr=$(median ${RATE[plain.$k]:-0}) ar=$(median ${RATE[allowall.$k]:-0})
        qr=$(median ${RATE[pinion.$k]:-0})
        pc=$(median ${CPU[plain.$k]:-0}) ac=$(median ${CPU[allowall.$k]:-0})
        qc=$(median ${CPU[pinion.$k]:-0})
        say "$(printf '%-4s' "$dir") qos $qos: plain $pr, allow-all plugin $ar, pinion $qr msg/s" \
            "($pc, $ac, $qc us CPU each): pinion/plain $(ratio "$qr" "$pr")," \
            "pinion/allow-all $(ratio "$qr" "$ar") (CPU $(ratio "$pc" "$qc"), $(ratio "$ac" "$qc")) [target 0.9]"
    done
done
exit "$fail"
