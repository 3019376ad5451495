# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shared by the bench/*.sh scripts (source it from the repository root with
# BUILD set): a throwaway work directory and PostgreSQL, the environment the
# test harness expects, and one line describing the machine.

# bench_pg: W, a fresh directory, and a throwaway PostgreSQL in $W/pg
# (PINION_PG_DURABLE passes through), both removed at exit.  A caller that
# needs more at exit sets its own trap and calls bench_pg_cleanup from it.
bench_pg() {
    W=$(mktemp -d /tmp/pinion-bench.XXXXXX)
    chmod 0755 "$W"
    trap bench_pg_cleanup EXIT
    bash tests/harness/pg.sh start "$W/pg" >/dev/null
}
bench_pg_cleanup() {
    bash tests/harness/pg.sh stop "$W/pg" >/dev/null 2>&1
    rm -rf "$W"
}

# bench_harness_env: what tests/harness/lib.sh needs to run a test script
# against the built tree and bench_pg's PostgreSQL.
bench_harness_env() {
    export PINION="$BUILD/pinion" PINION_BUILD="$BUILD" PINION_SOURCE="$PWD" \
        PINION_PLUGIN="$BUILD/plugin/pinion_plugin.so" PINION_PROBE="$BUILD/tests/tools/pn-probe" \
        PINION_HARNESS_STATE="$W/pg" PINION_FIXTURES="$PWD/tests/fixtures"
}

# bench_machine: "2 CPUs (model), load 0.1 0.2 0.3", for a benchmark's first line.
bench_machine() {
    echo "$(nproc) CPUs ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')), load" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}
