#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined)
# and runs each for SECONDS on its corpus, after replaying every input saved
# under regressions/<target>/.
#
#   tests/fuzz/run.sh SECONDS [TARGET...]      default: every tests/fuzz/fuzz_*.c
#
# Build dir: build-fuzz (PINION_FUZZ_BUILD_DIR overrides).  Seeds are read
# from corpus/<target>/ and never written; what the fuzzer finds goes to
# BUILD/fuzz-corpus/<target>/ (kept between runs), crashes to
# BUILD/fuzz-crashes/<target>/.  Prints one line per target: executions,
# coverage (libFuzzer's final cov: and ft:), crashes.  Exits 1 when any
# target crashed or a regression input fails, 2 on a usage or build error.
# PINION_FUZZ_JOBS (default 1) runs that many targets at once.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [[ ! ${1:-} =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
    echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
secs=$1
shift
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for src in "$HERE"/fuzz_*.c; do
        targets+=("$(basename "$src" .c)")
    done
fi
build=${PINION_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}

mkdir -p "$build"
echo "fuzz: building ${targets[*]} in $build"
if ! CC=${CC:-clang} cmake -S "$ROOT" -B "$build" -DPINION_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/build.log" 2>&1 ||
    ! cmake --build "$build" -j2 --target "${targets[@]}" >>"$build/build.log" 2>&1; then
    tail -n 30 "$build/build.log" >&2
    echo "fuzz: build failed (log: $build/build.log)" >&2
    exit 2
fi

# Leaks are bugs too (libFuzzer reports them as crashes); halt on UB.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# run_one TARGET: replay, then fuzz; writes its summary line to OUT/TARGET.sum
run_one() {
    local t=$1 bin=$build/tests/fuzz/$1 log=$build/fuzz-logs/$1.log
    local work=$build/fuzz-corpus/$t crashes=$build/fuzz-crashes/$t/ seeds=$HERE/corpus/$t
    local reg=$HERE/regressions/$t status=ok
    mkdir -p "$work" "$crashes" "$(dirname "$log")"
    : >"$log"
    if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
        # Each saved input runs once; any crash fails the run.
        if ! "$bin" -runs=1 "$reg"/* >>"$log" 2>&1; then
            echo "$t: regression input crashes again (log: $log)" >"$build/fuzz-logs/$t.sum"
            return
        fi
    fi
    local dirs=("$work")
    [ -d "$seeds" ] && dirs+=("$seeds")
    local before
    before=$(find "$crashes" -type f | wc -l)
    "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$crashes" \
        -timeout=10 -rss_limit_mb=2048 "${dirs[@]}" >>"$log" 2>&1
    local rc=$?
    local after
    after=$(find "$crashes" -type f | wc -l)
    local execs cov ft
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        status="CRASH (exit $rc; input in $crashes; log: $log)"
    fi
    printf '%-22s %10s execs  cov %6s  ft %6s  crashes %d  %s\n' "$t" "${execs:-?}" \
        "${cov:-?}" "${ft:-?}" "$((after - before))" "$status" >"$build/fuzz-logs/$t.sum"
}

jobs=${PINION_FUZZ_JOBS:-1}
for t in "${targets[@]}"; do
    if [ ! -x "$build/tests/fuzz/$t" ]; then
        echo "fuzz: no target $t" >&2
        exit 2
    fi
    rm -f "$build/fuzz-logs/$t.sum"
    run_one "$t" &
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n
    done
done
wait

bad=0
for t in "${targets[@]}"; do
    line=$(cat "$build/fuzz-logs/$t.sum" 2>/dev/null || echo "$t: no result")
    echo "$line"
    [[ $line == *" ok" ]] || bad=1
done
if [ "$bad" -ne 0 ]; then
    echo "fuzz: FAILED: reproduce with $build/tests/fuzz/TARGET INPUT; then fix the bug and" \
        "save the input as tests/fuzz/regressions/TARGET/NAME" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs}s each without a crash"
