#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Release fan-out over three brokers behind HAProxy (issue 9; README
# "Scaling out"): runs tests/integration/test_bench_fanout.sh with N
# simulated devices (default 10,000) against a throwaway PostgreSQL, and
# prints bench/fanout's figures: the connect storm and the database
# transactions presence cost, the time until every device had its
# manifest, and the same payloads published from one process.
#   bash bench/fanout.sh [N] [BUILD_DIR]
# HAProxy needs about two descriptors a connection, so N is bounded by half
# the hard descriptor limit (20,000 here: N = 9,900 at most); the devices'
# worker processes need no more than the default 1,024 each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-10000}
BUILD=$(cd "${2:-build}" && pwd)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ $((2 * N + 200)) -le "$(ulimit -n)" ] ||
    echo "fanout.sh: HAProxy needs ~$((2 * N + 200)) descriptors, the limit is $(ulimit -n)" >&2
. bench/common.sh
bench_pg
bench_harness_env
export FANOUT_DEVICES=$N FANOUT_TIMEOUT=$((N / 20 + 120)) HAPROXY_MAXCONN=$((N + 100))
bash tests/integration/test_bench_fanout.sh
