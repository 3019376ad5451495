#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Firmware verification and upload throughput, next to coreutils on the same
# bytes.  Packs MIB MiB of random data (default 256) with `pinion firmware
# pack`, then reports, best of RUNS (default 5) with warm caches:
#   pinion verify (signature + every resource's BLAKE2b-256)  vs  b2sum -l 256 IMAGE
#   pinion upload (verify + SHA-256 of the file + store)      vs  sha256sum ARCHIVE
# Targets: verify >= 0.9 x b2sum's rate, upload >= 0.9 x sha256sum's rate.
#   bash bench/fw_verify.sh [MIB] [BUILD_DIR] [RUNS]
# The work directory (and the artifact directory) is under $TMPDIR (/tmp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MIB=${1:-256}
BUILD=${2:-build}
RUNS=${3:-5}
[ -x "$BUILD/pinion" ] && [ -x "$BUILD/bench/fw_bench" ] ||
    { echo "build first: cmake -S . -B $BUILD && cmake --build $BUILD" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/pinion-fwbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir "$W/artifacts"

"$BUILD/pinion" key create --out "$W/key" >/dev/null
head -c $((MIB << 20)) /dev/urandom >"$W/image.bin"
start=$(date +%s%N)
"$BUILD/pinion" firmware pack --key "$W/key.priv" --product bench --version 1.0.0 \
    --platform any --architecture any "$W/image.bin" -o "$W/bench.fw" >/dev/null
pack_s=$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.2f", ns / 1e9 }')

# best CMD...: the shortest wall time of RUNS runs, in seconds (one warm-up).
best() {
    "$@" >/dev/null
    local b=999999999999 i t
    for ((i = 0; i < RUNS; i++)); do
        t=$(date +%s%N)
        "$@" >/dev/null
        t=$(($(date +%s%N) - t))
        [ "$t" -lt "$b" ] && b=$t
    done
    awk -v ns="$b" 'BEGIN { printf "%.4f", ns / 1e9 }'
}

b2_s=$(best b2sum -l 256 "$W/image.bin")
sha_s=$(best sha256sum "$W/bench.fw")
"$BUILD/bench/fw_bench" "$W/bench.fw" "$W/key.pub" "$W/artifacts" 1 >/dev/null # warm-up
read -r verify upload floor size data rss < <("$BUILD/bench/fw_bench" "$W/bench.fw" \
    "$W/key.pub" "$W/artifacts" "$RUNS" "$W/image.bin")
verify_s=${verify#verify_s=}
upload_s=${upload#upload_s=}
floor_s=${floor#floor_s=}
size=${size#size=}
data=${data#data=}
rss=${rss#maxrss_kib=}

awk -v mib="$MIB" -v size="$size" -v data="$data" -v pack="$pack_s" -v b2="$b2_s" \
    -v sha="$sha_s" -v ver="$verify_s" -v up="$upload_s" -v floor="$floor_s" -v runs="$RUNS" \
    -v rss="$rss" 'BEGIN {
    M = 1048576
    printf "image %d MiB of random data; archive %.1f MiB (pinion firmware pack: %s s); best of %d, warm cache\n\n", mib, size / M, pack, runs
    printf "%-58s %9s %10s\n", "", "seconds", "MiB/s"
    printf "%-58s %9.3f %10.0f\n", "b2sum -l 256 IMAGE", b2, data / M / b2
    printf "%-58s %9.3f %10.0f\n", "pinion verify: signature + BLAKE2b-256 of every resource", ver, data / M / ver
    printf "%-58s %9.3f %10.0f\n", "sha256sum ARCHIVE", sha, size / M / sha
    printf "%-58s %9.3f %10.0f\n", "pinion upload: verify + SHA-256 of the file + store", up, size / M / up
    printf "%-58s %9.3f %10.0f\n", "(libsodium BLAKE2b-256 of IMAGE alone: verify'"'"'s floor)", floor, data / M / floor
    printf "\npeak RSS of the benchmark process (all runs): %.1f MiB\n", rss / 1024
    printf "\nverify / b2sum      = %.2f  (target >= 0.90)  %s\n", b2 / ver, (b2 / ver >= 0.9) ? "met" : "NOT MET"
    printf "upload / sha256sum  = %.2f  (target >= 0.90)  %s\n", sha / up, (sha / up >= 0.9) ? "met" : "NOT MET"
}'
