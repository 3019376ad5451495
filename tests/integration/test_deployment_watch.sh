#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A rollout you can watch (issue 11): a 10-device rollout followed by
#   - `pinion deployment watch` on a terminal (under script(1)): the view
#     shows the deployment from "10 to go" to "10 up to date, 0 to go", with
#     devices in flight and completions in its last events, and exits 0
#     when the rollout is finished;
#   - the same without a terminal: plain lines, one per change and one per
#     device event, exit 0;
#   - with --json: one JSON object per change, exit 0;
#   - `curl` of piniond's metrics listener during the rollout: the
#     deployment's devices in flight and per state, and at the end the
#     releases, completions and chunk bytes that happened.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

command -v script >/dev/null || bail_out "script(1) (util-linux) is not installed"
command -v curl >/dev/null || bail_out "curl is not installed"

N=10
make_fleet
# 2 MB in 1 KiB chunks: each download takes ~2,000 round trips, so that the
# rollout lasts long enough to be seen in flight.
make_firmware 1.2.0 2000000
start_broker b1 || bail_out "broker: $OUT"
MPORT=$(free_port)
start_piniond p1 "metrics_listen = \"127.0.0.1:$MPORT\"" || bail_out "piniond did not start: $OUT"
METRICS="http://127.0.0.1:$MPORT/metrics"

for i in $(seq -w 1 $N); do
    start_device "dev-$i" --run-for 170 --chunk 1024
done
wait_sql 30 "SELECT count(*) FROM devices WHERE firmware_version = '1.0.0' AND firmware_platform = 'rpi4'" "$N" ||
    bail_out "only $OUT of $N devices reported their firmware"
expect_ok "deployment created" -- "$PINION" deployment create acme sensor d1 --firmware "$FW_UUID" \
    --concurrency 3 --version "< 1.2.0"

# Three watchers, started before the deployment: a terminal, a pipe, --json.
script -qfec "$PINION deployment watch acme d1 --interval 0.3" "$T/watch.tty" \
    </dev/null >/dev/null 2>&1 &
TTY_PID=$!
"$PINION" deployment watch acme d1 --interval 0.3 >"$T/watch.txt" 2>&1 &
TXT_PID=$!
"$PINION" --json deployment watch acme d1 --interval 0.3 >"$T/watch.json" 2>&1 &
JSON_PID=$!
on_exit "kill $TTY_PID $TXT_PID $JSON_PID 2>/dev/null || true"
wait_until 10 grep -q 'to go' "$T/watch.tty" || bail_out "no view on the terminal: $(cat "$T/watch.tty")"
expect_ok "deployment started" -- "$PINION" deployment start acme d1

# During the rollout: the metrics show the deployment's devices in flight.
scrape() { curl -sf "$METRICS" >"$T/metrics.txt"; }
metric() { awk -v k="$1" '$1 == k { print $2 }' "$T/metrics.txt"; }
inflight_seen() {
    scrape && [ "$(metric 'piniond_deployment_inflight{org="acme",deployment="d1"}')" -gt 0 ] 2>/dev/null
}
if wait_until 60 inflight_seen; then
    pass "curl during the rollout: piniond_deployment_inflight{org=\"acme\",deployment=\"d1\"} = $(metric 'piniond_deployment_inflight{org="acme",deployment="d1"}')"
    diag "$(grep '^piniond_deployment' "$T/metrics.txt")"
    assert_match "in flight is at most the concurrency (3)" \
        "$(metric 'piniond_deployment_inflight{org="acme",deployment="d1"}')" '^[1-3]$'
    assert_match "the states in flight are listed per device state" \
        "$(grep -c '^piniond_deployment_devices{org="acme",deployment="d1",state="\(released\|received\|downloading\|installing\)"}' "$T/metrics.txt")" '^[1-4]$'
    assert_eq "the deployment is running" \
        "$(metric 'piniond_deployment_running{org="acme",deployment="d1"}')" 1
else
    fail "curl during the rollout shows devices in flight" "$(cat "$T/metrics.txt" 2>/dev/null)"
fi

# The rollout ends: every watcher exits 0 by itself.
# (Within 2 minutes in all; one still running then is stopped and fails.)
WATCH_END=$((SECONDS + 120))
watcher_exit() { # DESC PID
    local rc=0
    while kill -0 "$2" 2>/dev/null && [ $SECONDS -lt $WATCH_END ]; do
        sleep 0.1
    done
    if kill -0 "$2" 2>/dev/null; then
        kill "$2"
        fail "$1" "still running 2 minutes after the deployment started"
        return
    fi
    wait "$2" || rc=$?
    assert_eq "$1" "$rc" 0
}
watcher_exit "watch on a terminal exits 0 when the rollout is finished" $TTY_PID
watcher_exit "watch without a terminal exits 0" $TXT_PID
watcher_exit "watch --json exits 0" $JSON_PID
assert_eq "all $N devices completed" \
    "$(sql "SELECT state, count(*) FROM device_updates GROUP BY state")" "complete|$N"

# What a person saw on the terminal: frames separated by the redraw escape.
frames=$(sed 's/\x1b\[H\x1b\[J/\n=====\n/g; s/\r//g' "$T/watch.tty")
first=$(awk '/^=====$/ { n++; next } n == 1' <<<"$frames")
last=$(awk '/^=====$/ { n++ } END { }; /^=====$/ { buf = ""; next } { buf = buf $0 "\n" } END { printf "%s", buf }' <<<"$frames")
diag "first frame:" "$first" "last frame:" "$last"
assert_match "first frame: the deployment, not started yet, 10 to go" "$first" \
    'deployment acme/d1: created'
assert_match "first frame: 10 targeted, 0 up to date, 10 to go" "$first" \
    "devices +$N targeted: 0 up to date, $N to go"
assert_match "a frame shows devices in flight" "$frames" \
    "$N targeted: [0-9]+ up to date, [0-9]+ to go \([1-3] in flight"
assert_match "a frame shows a rate and an estimate of the time left" "$frames" \
    'rate +[0-9]+\.[0-9] devices/min, time left [0-9]+[hms]'
assert_match "last frame: running, 10 up to date, 0 to go" "$last" \
    "deployment acme/d1: running.*devices +$N targeted: $N up to date, 0 to go \(0 in flight"
assert_match "last frame: complete $N" "$last" "states +complete $N"
assert_match "last frame: the last events are completions" "$last" \
    'last events:.*dev-[0-9]+ complete'
assert_match "last frame says it is finished" "$last" 'finished: every targeted device'

# Without a terminal: plain lines, no escapes.
assert_eq "plain output has no terminal escapes" "$(grep -c $'\x1b' "$T/watch.txt")" 0
assert_match "plain: a first line with 10 to go" "$(head -n1 "$T/watch.txt")" \
    "^[0-9:]{8} acme/d1 created: $N targeted, 0 up to date, $N to go"
assert_match "plain: the last line says finished" "$(tail -n1 "$T/watch.txt")" \
    "running: $N targeted, $N up to date, 0 to go, 0 in flight.*; finished$"
assert_eq "plain: one event line per completed device" \
    "$(grep -c '^event [0-9:]* dev-[0-9]* complete$' "$T/watch.txt")" "$N"

# --json: one object per line.
bad=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
f, l = rows[0], rows[-1]
ok = (len(rows) >= 3 and f["remaining"] == 10 and not f["finished"] and l["finished"]
      and l["up_to_date"] == 10 and l["remaining"] == 0 and l["devices"] == {"complete": 10}
      and any(r["inflight"] > 0 for r in rows))
print("" if ok else "rows=%d first=%s last=%s" % (len(rows), f, l))
' "$T/watch.json" 2>&1)
if [ -z "$bad" ]; then
    pass "--json: objects from 10 remaining to finished, devices {complete: 10}"
else
    fail "--json: objects from 10 remaining to finished" "$bad"
fi

# After the rollout, the counters match what happened.
scrape || bail_out "curl $METRICS failed"
assert_eq "piniond_releases_total $N" "$(metric piniond_releases_total)" "$N"
assert_eq "piniond_completions_total $N" "$(metric piniond_completions_total)" "$N"
assert_eq "piniond_failures_total 0" "$(metric piniond_failures_total)" 0
assert_eq "devices complete: $N" \
    "$(metric 'piniond_deployment_devices{org="acme",deployment="d1",state="complete"}')" "$N"
assert_eq "in flight: 0" "$(metric 'piniond_deployment_inflight{org="acme",deployment="d1"}')" 0
chunk=$(metric piniond_chunk_bytes_total)
if [ "${chunk:-0}" -ge $((N * FW_SIZE)) ]; then
    pass "piniond_chunk_bytes_total $chunk >= $N x $FW_SIZE"
else
    fail "piniond_chunk_bytes_total >= $N x $FW_SIZE" "got '$chunk'"
fi
assert_match "at least one release check, timed" "$(metric piniond_release_checks_total)" '^[1-9]'
assert_eq "the broker connection is up" \
    "$(metric "piniond_broker_connected{broker=\"b1\"}")" 1
assert_eq "content type of the Prometheus text format" \
    "$(curl -sf -o /dev/null -w '%{content_type}' "$METRICS")" 'text/plain; version=0.0.4'
assert_eq "other paths: 404" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/")" 404

# Errors are one line.
expect_fail "watch of an unknown deployment" "no deployment named 'nope'" -- \
    "$PINION" deployment watch acme nope
expect_fail "a bad --interval" "--interval must be" -- \
    "$PINION" deployment watch acme d1 --interval 0
expect_status "a finished deployment: watch prints its state once and exits 0" 0 -- \
    timeout 30 "$PINION" deployment watch acme d1
assert_eq "one summary line, saying finished" "$(grep -vc '^event ' <<<"$OUT")" 1

done_testing
