#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# piniond logs in the form its host expects (issue 11): under systemd, whose
# journal sets JOURNAL_STREAM to stderr's device:inode, every line carries
# its syslog level as an sd-daemon "<N>" prefix (no timestamp: the journal
# adds one); elsewhere a UTC timestamp and, for warnings and errors, the
# level as a word.  And a bad metrics_listen stops it with one line.
. "$PINION_SOURCE/tests/harness/lib.sh"

PINIOND=$PINION_BUILD/service/piniond
"$PINION" release-key create --out rk >/dev/null || bail_out "release-key create failed"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout svc.key \
    -out svc.pem -days 30 -subj /CN=piniond >/dev/null 2>&1 || bail_out "openssl failed"
cp svc.pem ca.pem
{
    echo "database = \"$PINION_DB\""
    echo 'ca_file = "ca.pem"'
    echo 'cert_file = "svc.pem"'
    echo 'key_file = "svc.key"'
    echo "release_key = \"$PWD/rk.priv\""
} >pd.conf

# A broker in the registry, heartbeating, at an address where nothing
# listens: piniond warns that it cannot reach it (after 3 s).
dead=127.0.0.1:$(free_port)
sql "INSERT INTO brokers (id, service_address) VALUES ('b-dead', '$dead')" >/dev/null
sql "UPDATE brokers SET heartbeat_at = now() + interval '1 hour'" >/dev/null

# run LOGFILE [ENV...]: piniond for a moment, stderr appended to LOGFILE.
run() {
    local log=$1 pid
    shift
    env "$@" "$PINIOND" -c pd.conf 2>>"$log" &
    pid=$!
    wait_until 10 grep -q 'cannot reach broker' "$log" || true
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

: >journal.log
run journal.log JOURNAL_STREAM="$(stat -c '%d:%i' journal.log)"
diag "$(cat journal.log)"
assert_match "journal: info lines start with <6>" "$(head -n1 journal.log)" \
    '^<6>starting; release key [0-9a-f]{16}$'
assert_match "journal: the broker being unreachable is a warning, <4>" "$(cat journal.log)" \
    $'(^|\n)<4>cannot reach broker b-dead at 127\\.0\\.0\\.1:[0-9]+ '
assert_eq "journal: every line has a level prefix" "$(grep -vc '^<[0-7]>' journal.log)" 0

: >plain.log
run plain.log JOURNAL_STREAM=1:1 # inherited, but stderr is not the journal
diag "$(cat plain.log)"
assert_match "plain: UTC timestamp, no prefix" "$(head -n1 plain.log)" \
    '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z piniond: starting; release key '
assert_match "plain: the warning says so" "$(cat plain.log)" \
    'Z piniond: warning: cannot reach broker b-dead at 127\.0\.0\.1:[0-9]+ '

# metrics_listen: bad values stop piniond at start, with one line.
for bad in "nonsense" "127.0.0.1:" "no-such-host.invalid:9100"; do
    cp pd.conf bad.conf
    echo "metrics_listen = \"$bad\"" >>bad.conf
    expect_fail "metrics_listen '$bad' is refused" "^piniond: bad\\.conf: metrics_listen '" -- \
        "$PINIOND" -c bad.conf
done
port=$(free_port)
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(20)' "$port" &
holder=$!
on_exit "kill $holder 2>/dev/null || true"
wait_until 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
cp pd.conf bad.conf
echo "metrics_listen = \"127.0.0.1:$port\"" >>bad.conf
expect_fail "metrics_listen on a port in use" "metrics_listen '127\\.0\\.0\\.1:$port': cannot listen" -- \
    "$PINIOND" -c bad.conf

done_testing
