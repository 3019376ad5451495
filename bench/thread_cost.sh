#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What a thread of its own costs a broker, whatever the thread does.
# Pinion's plugin has one (the worker: PostgreSQL, the trust directory),
# and its mere presence makes Mosquitto a multi-threaded process: glibc then
# takes its arena lock in malloc and free and wraps system calls for
# cancellation, and the kernel counts references to the file of every
# descriptor a system call uses.  This measures that part of Pinion's cost
# on its own: the same broker with and without one idle thread preloaded
# (bench/idle_thread), side by side, alternating, as the broker's CPU time
#   - per connect in a connect storm of the plain broker (connect_storm's a);
#   - per message, QoS 0 and 1, 100 devices -> service, of the allow-all broker
#     (msg_throughput's second baseline).
# Prints each run, then the medians and the ratios (without / with).
#
#   bash bench/thread_cost.sh [N=2000] [MSGS=200000] [ROUNDS=3] [BUILD_DIR=build]
#
# Exit status 0 when every CONNACK was positive and every message arrived;
# no time is asserted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-2000}
MSGS=${2:-200000}
ROUNDS=${3:-3}
BUILD=$(cd "${4:-build}" && pwd)
M=$((N < 100 ? N : 100)) # devices publishing
. bench/brokers.sh

bench_setup "$N"
say "thread cost: storms of $N devices, $MSGS messages from $M devices, $ROUNDS rounds;" \
    "$(bench_machine)"

pin_all "$N"

declare -A CPU
fail=0
# one KIND WHAT ARGS...: one run of mqtt_load WHAT against a fresh broker.
one() {
    local kind=$1 what=$2 key=$3 line
    shift 3
    start_broker "$kind"
    local threads want=1
    threads=$(ls "/proc/$BROKER_PID/task" | wc -l)
    [[ $kind != *_thread ]] || want=2
    if [ "$threads" -ne "$want" ]; then
        say "($kind) FAILED: the broker has $threads threads, not $want"
        fail=1
    fi
    if ! line=$("$BUILD/bench/mqtt_load" "$what" --port "$PORT" --cafile "$CACHE/server.pem" \
        --certs "$CACHE/devs" --broker-pid "$BROKER_PID" "$@"); then
        say "($kind) FAILED: $line"
        fail=1
    fi
    stop_broker
    say "$(printf '%-16s' "$kind") $line"
    if [ "$what" = storm ]; then
        CPU[$kind.$key]+="$(field broker_cpu_ms "$line") "
    else
        CPU[$kind.$key]+="$(field broker_cpu_us "$line") "
    fi
}

for ((r = 0; r < ROUNDS; r++)); do
    order=(plain plain_thread)
    ((r % 2 == 0)) || order=(plain_thread plain)
    for k in "${order[@]}"; do one "$k" storm storm -n "$N" -c 50; done
    for qos in 0 1; do
        order=(allowall allowall_thread)
        ((r % 2 == 0)) || order=(allowall_thread allowall)
        for k in "${order[@]}"; do
            one "$k" pub "q$qos" -n "$M" --dir up --qos "$qos" --msgs "$MSGS"
        done
    done
done

p=$(median ${CPU[plain.storm]:-0}) pt=$(median ${CPU[plain_thread.storm]:-0})
say "connect storm, broker CPU ms per connect: plain $p, with an idle thread $pt: ratio $(ratio "$p" "$pt")"
for qos in 0 1; do
    a=$(median ${CPU[allowall.q$qos]:-0}) at=$(median ${CPU[allowall_thread.q$qos]:-0})
    say "messages QoS $qos, broker CPU us per message: allow-all $a, with an idle thread $at:" \
        "ratio $(ratio "$a" "$at")"
done
exit "$fail"
