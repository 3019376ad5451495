#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Connect storms against whole brokers on this machine, same listener
# (TLS, require_certificate, port on loopback), same certificates:
#   (a) plain Mosquitto, `cafile` = the Device CA, no plugin;
#   (b) Mosquitto + Pinion, every device already pinned (loaded at start);
#   (c) Mosquitto + Pinion, every device connecting for the first time
#       (pinning, JITP), then checks that every pin is in PostgreSQL and
#       how long after the last CONNACK the last one got there.
# Each run starts a fresh broker; runs alternate a c b / c b a / ... so that
# a machine whose speed drifts does not favour one broker.  Prints one line
# per run, then the median of each and the ratios (b)/(a) and (c)/(a), with
# the broker's CPU time per connect (steadier than rates on a busy machine).
#
#   bash bench/connect_storm.sh [N=2000] [ROUNDS=3] [CONCURRENCY=50] [BUILD_DIR=build]
#
# Certificates are made once (EC P-256) and cached in $BUILD/bench-cache
# (PINION_BENCH_CACHE overrides).  Exit status 0 when every CONNACK was
# positive and every pin was stored; no time is asserted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-2000}
ROUNDS=${2:-3}
CONC=${3:-50}
BUILD=$(cd "${4:-build}" && pwd)
. bench/brokers.sh

bench_setup "$N"
say "connect storm: $N EC P-256 devices, $CONC connecting at a time, $ROUNDS rounds;" \
    "$(bench_machine)"

declare -A RATES CPU PGCPU
fail=0

# storm LABEL: one storm against the running broker; appends to the figures.
storm() {
    local label=$1 line
    if ! line=$("$BUILD/bench/mqtt_load" storm --port "$PORT" --cafile "$CACHE/server.pem" \
        --certs "$CACHE/devs" -n "$N" -c "$CONC" --broker-pid "$BROKER_PID" --pg-pid "$PG_PID"); then
        say "($label) $line"
        LAST=$line
        say "($label) FAILED: not every device was admitted"
        fail=1
        return 0
    fi
    LAST=$line
    RATES[$label]+="$(field rate "$line") "
    CPU[$label]+="$(field broker_cpu_ms "$line") "
    PGCPU[$label]+="$(field pg_cpu_ms "$line") "
}

run_a() {
    start_broker plain
    storm a
    say "(a) plain     $LAST"
    stop_broker
}

run_c() {
    # TRUNCATE, not DELETE: no dead rows left for autovacuum to clean up
    # during the storm (a fleet switching to Pinion starts without them).
    psql_b -c "SET client_min_messages = warning" \
        -c "TRUNCATE device_certificates, devices, device_presence CASCADE" -c "VACUUM ANALYZE"
    start_broker pinion
    storm c
    local t0=$EPOCHREALTIME n=0 waited
    for _ in $(seq 1 100); do
        n=$(psql_b -At -c "SELECT count(*) FROM device_certificates WHERE status = 'active'")
        [ "$n" -ge "$N" ] && break
        sleep 0.05
    done
    waited=$(awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN {printf "%.2f", a - b}')
    say "(c) first     $LAST pins=$n durable_after_s=$waited"
    if [ "$n" -ne "$N" ]; then
        say "(c) FAILED: $n of $N pins in PostgreSQL 5 s after the storm"
        fail=1
    fi
    stop_broker
}

run_b() {
    start_broker pinion
    storm b
    say "(b) pinned    $LAST"
    stop_broker
}

RB="" RC=""
for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2 == 0)); then
        run_a; run_c; run_b
    else
        run_c; run_b; run_a
    fi
    # Ratios within a round: its three runs were seconds apart.
    set -- ${RATES[a]:-0}; ra=${!#}
    set -- ${RATES[b]:-0}; rb=${!#}
    set -- ${RATES[c]:-0}; rc=${!#}
    RB+="$(ratio "$rb" "$ra") " RC+="$(ratio "$rc" "$ra") "
    say "round $((r + 1)): (b)/(a) $(ratio "$rb" "$ra")  (c)/(a) $(ratio "$rc" "$ra")"
done

ma=$(median ${RATES[a]:-0}) mb=$(median ${RATES[b]:-0}) mc=$(median ${RATES[c]:-0})
ca=$(median ${CPU[a]:-0}) cb=$(median ${CPU[b]:-0}) cc=$(median ${CPU[c]:-0})
say "median CONNACKs/s: (a) plain $ma  (b) pinned $mb  (c) first connect $mc"
say "median broker CPU ms per connect: (a) $ca  (b) $cb  (c) $cc;" \
    "PostgreSQL CPU ms per connect (c): $(median ${PGCPU[c]:-0})"
say "ratio of medians (b)/(a) = $(ratio "$mb" "$ma")   (c)/(a) = $(ratio "$mc" "$ma");" \
    "median of round ratios (b)/(a) = $(median $RB)   (c)/(a) = $(median $RC)   [targets 0.95, 0.85]"
pc=$(median ${PGCPU[c]:-0})
say "CPU ratio (a)/(b) = $(ratio "$ca" "$cb")   (a)/(c) = $(ratio "$ca" "$cc")   (a)/(c + its PostgreSQL) =" \
    "$(awk -v a="$ca" -v c="$cc" -v p="$pc" 'BEGIN {printf "%.2f", (c + p > 0 ? a / (c + p) : 0)}')"
exit "$fail"
