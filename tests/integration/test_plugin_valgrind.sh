#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The plugin under Valgrind: it loads, admits (and pins) a device, kicks it
# on revocation, refuses its reconnect, and unloads at SIGTERM with no
# memory errors and no definite leak in pinion code.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

# The plugin is never built with sanitizers (see CMakeLists.txt), so this
# test also runs in the sanitizer build.
command -v valgrind >/dev/null 2>&1 || skip_all "valgrind is not installed"


setup "$PINION" org create acme
setup "$PINION" product create acme sensor
make_ca ca # ca/, JITP into sensor
setup "$PINION" device cert --ca ca --id A --out devs
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout svc.key \
    -out svc.pem -days 30 -subj /CN=pinion-svc -addext extendedKeyUsage=clientAuth \
    -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1 || bail_out "openssl req failed"
setup "$PINION" service add svc svc.pem

# The broker drops privileges after Valgrind opened its log; the log dir
# only needs to exist.
mkdir -p "$T/vg"
chmod 0777 "$T/vg"
BROKER_WRAPPER="valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99"
BROKER_WRAPPER+=" --num-callers=30 --keep-debuginfo=yes --vgdb=no --log-file=$T/vg/vg.%p.log"
start_broker b1 || bail_out "broker did not start under valgrind: $OUT"
vg_pid=${BROKER_PID[b1]}
assert_match "plugin loaded its state under valgrind" "$(cat "${BROKER_LOG[b1]}")" \
    'pinion: loaded 1 CAs, 0 devices, 0 pinned certificates, 1 service identities'

pinned() { [ "$(sql "SELECT count(*) FROM device_certificates WHERE status = 'active'")" = 1 ]; }

# Admission and pinning.
probe_bg b1 devs/A A "$T/a.out" --v5 --qos 1 --sub 'fleet/A/down/#' --sub '#' \
    --pub 'fleet/A/up/status=hello' --stay 30
a_pid=$PROBE_PID
wait_until 20 has_line "$T/a.out" '^suback #' || diag "A: $(cat "$T/a.out")"
assert_match "A is admitted" "$(cat "$T/a.out")" $'(^|\n)connack 0(\n|$)'
assert_match "A's own subscription is granted" "$(cat "$T/a.out")" $'(^|\n)suback fleet/A/down/# 1(\n|$)'
assert_match "A's '#' subscription is refused" "$(cat "$T/a.out")" $'(^|\n)suback # 135(\n|$)'
if wait_until 10 pinned; then pass "A is pinned"; else fail "A is pinned"; fi

# A service publishes to A (ACL READ path, broker publish path).
probe b1 svc svc-pub --v5 --qos 1 --pub 'fleet/A/down/update=from-svc'
assert_match "service publishes to A" "$OUT" $'(^|\n)puback fleet/A/down/update 0(\n|$)'
wait_until 10 has_line "$T/a.out" '^msg fleet/A/down/update from-svc$'
assert_match "A receives the service's message" "$(cat "$T/a.out")" \
    $'(^|\n)msg fleet/A/down/update from-svc(\n|$)'

# Revocation: the NOTIFY path and the kick.
expect_ok "pinion device revoke A" -- "$PINION" device revoke A
if wait_until 10 has_line "$T/a.out" '^disconnected '; then
    pass "A is kicked after revocation"
else
    fail "A is kicked after revocation" "$(cat "$T/a.out")"
fi
wait "$a_pid" 2>/dev/null
probe b1 devs/A A
assert_eq "A's reconnect is refused" "$RC" 5

# The database connection is lost (backend terminated) and comes back: the
# loss is logged readably and the worker reconnects.
sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
     WHERE application_name = 'pinion-plugin' AND datname = current_database()" >/dev/null
if wait_log b1 'pinion: database connection lost \(' 20; then
    pass "the lost database connection is logged"
else
    fail "the lost database connection is logged" "$(tail -5 "${BROKER_LOG[b1]}")"
fi
assert_match "... with libpq's reason as text" \
    "$(grep -a 'database connection lost' "${BROKER_LOG[b1]}" | head -1)" \
    'connection lost \([[:print:]]*(terminat|server closed|connection)[[:print:]]*\); pinned'
if wait_log b1 'pinion: database connected; state reloaded' 30; then
    pass "the plugin reconnects to the database"
else
    fail "the plugin reconnects to the database" "$(tail -5 "${BROKER_LOG[b1]}")"
fi

# A SIGHUP (reload) under valgrind, too.
hup_broker b1
wait_log b1 'Reloading config' 10 || diag "no reload logged"

# Unload: SIGTERM and wait for Valgrind's final report.
kill -TERM "$vg_pid"
status=0
for ((i = 0; i < 600; i++)); do
    kill -0 "$vg_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$vg_pid" 2>/dev/null; then
    fail "broker exits within 60 s of SIGTERM under valgrind"
    stop_broker b1
else
    wait "$vg_pid" 2>/dev/null
    status=$?
    unset 'BROKER_PID[b1]'
    pass "broker exits after SIGTERM under valgrind"
fi
assert_eq "valgrind exit status (99 = errors or definite leaks)" "$status" 0
assert_match "plugin unloaded, broker terminated" "$(cat "${BROKER_LOG[b1]}")" 'mosquitto version .* terminating'

vglog=$(ls "$T"/vg/vg.*.log 2>/dev/null | head -1)
if [ -z "$vglog" ]; then
    fail "valgrind wrote a log" "nothing in $T/vg"
else
    vg=$(cat "$vglog")
    assert_match "valgrind: ERROR SUMMARY 0 errors" "$vg" 'ERROR SUMMARY: 0 errors from 0 contexts'
    assert_match "valgrind: the leak check ran" "$vg" '(definitely lost: [0-9,]+ bytes|All heap blocks were freed)'
    # Definite-leak records whose stacks go through pinion code: a frame in
    # pinion_plugin.so, or one naming a function defined in it (Valgrind
    # keeps the unloaded plugin's debug info with --keep-debuginfo).
    nm "$PINION_PLUGIN" 2>/dev/null | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u >"$T/pinion.syms"
    [ -s "$T/pinion.syms" ] || diag "no symbols in $PINION_PLUGIN: leak attribution by file only"
    pinion_leaks=$(awk '
        FNR == NR { sym[$1] = 1; next }
        /are definitely lost in loss record/ { rec = $0; inrec = 1; hit = 0; next }
        inrec && /^==[0-9]+== *$/ { if (hit) print rec; inrec = 0; next }
        inrec && /pinion_plugin\.so/ { hit = 1 }
        inrec && match($0, /(at|by) 0x[0-9A-Fa-f]+: [A-Za-z_][A-Za-z0-9_]*/) {
            f = substr($0, RSTART, RLENGTH); sub(/.*: /, "", f)
            if (f in sym) hit = 1
        }
    ' "$T/pinion.syms" "$vglog")
    assert_eq "no definite leak from pinion code" "$pinion_leaks" ""
    if ! grep -q 'ERROR SUMMARY: 0 errors' "$vglog" || [ -n "$pinion_leaks" ]; then
        diag "$(grep -E -A30 'Invalid|uninitialised|definitely lost in' "$vglog" | head -120)"
    fi
    diag "$(grep -E 'definitely lost:|indirectly lost:|possibly lost:|ERROR SUMMARY' "$vglog")"
fi

done_testing
