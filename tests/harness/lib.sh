# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Test library for tests/integration/test_*.sh.  Source it first thing:
#
#   . "$PINION_SOURCE/tests/harness/lib.sh"
#   expect_ok   "org create works" -- "$PINION" org create acme
#   expect_fail "duplicate org refused" "already exists" -- "$PINION" org create acme
#   assert_eq   "one org" "$(sql "SELECT count(*) FROM orgs")" 1
#   done_testing
#
# What sourcing it does (ctest sets PINION, PINION_BUILD, PINION_SOURCE,
# PINION_FIXTURES and PINION_HARNESS_STATE):
#   - sources $PINION_HARNESS_STATE/pg.env, written by tests/harness/pg.sh
#     start (PGHOST, PGPORT, PGUSER, PG_DATADIR, PG_PID, PINION_PG_BIN);
#   - creates a fresh database named after the script plus $$ and exports
#     PINION_DB="host=... port=... user=postgres dbname=<it>" (the name is in
#     PINION_TEST_DB), then runs `$PINION db migrate` on it;
#   - creates a private work dir $T (mktemp -d, mode 0755 so that servers
#     running as other users can read files in it) and cd's into it;
#   - on exit (normal, failure, SIGINT/SIGTERM): runs the commands registered
#     with on_exit (last registered first), drops the database, removes $T.
#
# Output is TAP-like: "ok N - desc" / "not ok N - desc" followed by "#"
# lines with the reason; done_testing prints "N passed, M failed" and exits
# non-zero if anything failed (or nothing ran).  A script that ends without
# done_testing also exits non-zero.
#
# Helpers:
#   expect_ok DESC -- CMD...            CMD must exit 0
#   expect_fail DESC PATTERN -- CMD...  CMD must exit 1 or 2 (not a crash),
#                                       with exactly one line on stderr that
#                                       matches the ERE PATTERN (ignoring case)
#   expect_status DESC CODE -- CMD...   CMD must exit with status CODE
#       All three leave CMD's stdout in $OUT, stderr in $ERR, status in $RC.
#       CMD may be a shell function.  They must run in the main shell (not in
#       a pipeline or $(...)), or the counts are lost.
#   assert_eq DESC ACTUAL EXPECTED
#   assert_match DESC STRING REGEX      bash [[ STRING =~ REGEX ]] (ERE)
#   assert_no_match DESC STRING REGEX
#   pass DESC / fail DESC [REASON...]   record a result of your own check
#   diag MSG...                         print "# MSG"
#   bail_out MSG                        abort the script (counts as failure)
#   skip_all REASON                     end the script successfully, untested
#   sql "SQL" [psql args...]            psql -XAtq on the test db; prints rows
#   json_get PATH [JSON]                field of a JSON document (arg or stdin):
#                                       PATH like .name, .[0].id, .a.b; strings
#                                       raw, others compact JSON; 1 if absent
#   on_exit CMD...                      run CMD at exit (one argument: a shell
#                                       string, eval'd; several: a command)
#   wait_until SECONDS CMD...           poll CMD every 0.1 s until it exits 0;
#                                       returns 1 on timeout (no result printed)
#   free_port                           a free TCP port on loopback, 26000-26999
#   now_ms                              milliseconds since the epoch
#   has_line FILE ERE                   FILE has a line matching ERE
#   wait_kicked START_MS FILE...        polls (10 ms, up to 3 s) until every
#                                       pn-probe output FILE says
#                                       `disconnected`; prints the ms since
#                                       START_MS (">3000" and 1 on timeout)
#   assert_kicked_fast DESC MS          MS (from wait_kicked) is under 1 s,
#                                       the bound on every kick
#   setup CMD...                        CMD must succeed (output dropped), or
#                                       the script bails out with its stderr
#   make_ca NAME [ID...]                Device CA NAME/ (ca.pem, ca.key)
#                                       registered to org acme with proof of
#                                       possession and JITP into product
#                                       sensor; certificates for each ID in
#                                       NAME-devs/

if [ -n "${_PN_LIB_LOADED:-}" ]; then
    return 0
fi
_PN_LIB_LOADED=1

_PN_PASSED=0
_PN_FAILED=0
_PN_NUM=0
_PN_DONE=0
_PN_CLEANUPS=()
_PN_DB_CREATED=0
OUT=""
ERR=""
RC=0

# ---------------------------------------------------------------- reporting

diag() {
    local line
    while IFS= read -r line; do
        printf '# %s\n' "$line"
    done <<<"$*"
}

# Prints text (e.g. captured stderr) indented under a result, at most N lines.
_pn_show() {
    local label=$1 text=$2 max=${3:-25}
    [ -n "$text" ] || return 0
    printf '#   %s:\n' "$label"
    local n=0 line
    while IFS= read -r line; do
        n=$((n + 1))
        if [ "$n" -gt "$max" ]; then
            printf '#     ... (truncated)\n'
            break
        fi
        printf '#     %s\n' "$line"
    done <<<"$text"
}

pass() {
    _PN_NUM=$((_PN_NUM + 1))
    _PN_PASSED=$((_PN_PASSED + 1))
    printf 'ok %d - %s\n' "$_PN_NUM" "$1"
}

fail() {
    _PN_NUM=$((_PN_NUM + 1))
    _PN_FAILED=$((_PN_FAILED + 1))
    printf 'not ok %d - %s\n' "$_PN_NUM" "$1"
    shift
    local r
    for r in "$@"; do
        diag "  $r"
    done
    # Where the failing assertion is in the test script.
    local i
    for ((i = 1; i < ${#BASH_SOURCE[@]}; i++)); do
        if [ "${BASH_SOURCE[$i]}" != "${BASH_SOURCE[0]}" ]; then
            printf '#   at %s line %s\n' "${BASH_SOURCE[$i]##*/}" "${BASH_LINENO[$((i - 1))]}"
            break
        fi
    done
}

bail_out() {
    printf 'Bail out! %s\n' "$*"
    _PN_FAILED=$((_PN_FAILED + 1))
    exit 1
}

skip_all() {
    printf '1..0 # SKIP %s\n' "$*"
    _PN_DONE=1
    exit 0
}

done_testing() {
    _PN_DONE=1
    printf '1..%d\n' "$_PN_NUM"
    printf '%d passed, %d failed\n' "$_PN_PASSED" "$_PN_FAILED"
    if [ "$_PN_FAILED" -gt 0 ]; then
        exit 1
    fi
    if [ "$_PN_NUM" -eq 0 ]; then
        echo "# no tests ran"
        exit 1
    fi
    exit 0
}

# ---------------------------------------------------------------- commands

_pn_cmdline() {
    local s="" a
    for a in "$@"; do
        s+="$(printf '%q' "$a") "
    done
    printf '%s' "${s% }"
}

# Runs "$@" capturing stdout/stderr into OUT/ERR and the status into RC;
# _PN_ERR_LINES gets the exact number of lines written to stderr.
_pn_run() {
    local o e
    o=$(mktemp "${T:-/tmp}/.pn_out.XXXXXX") || bail_out "mktemp failed"
    e=$(mktemp "${T:-/tmp}/.pn_err.XXXXXX") || bail_out "mktemp failed"
    if "$@" >"$o" 2>"$e"; then
        RC=0
    else
        RC=$?
    fi
    OUT=$(cat "$o")
    ERR=$(cat "$e")
    # Count lines exactly: newlines, plus an unterminated last line.
    _PN_ERR_LINES=$(wc -l <"$e")
    if [ -s "$e" ] && [ "$(tail -c1 "$e" | wc -l)" -eq 0 ]; then
        _PN_ERR_LINES=$((_PN_ERR_LINES + 1))
    fi
    rm -f "$o" "$e"
}

_pn_split() { # usage check: $1 must be "--"
    if [ "${1:-}" != "--" ]; then
        bail_out "${FUNCNAME[1]}: missing '--' before the command (usage: $2)"
    fi
}

expect_ok() {
    local desc=$1
    shift
    _pn_split "${1:-}" "expect_ok DESC -- CMD..."
    shift
    _pn_run "$@"
    if [ "$RC" -eq 0 ]; then
        pass "$desc"
    else
        fail "$desc" "command: $(_pn_cmdline "$@")" "exit status $RC, expected 0"
        _pn_show stderr "$ERR"
        _pn_show stdout "$OUT" 10
    fi
}

expect_status() {
    local desc=$1 want=$2
    shift 2
    _pn_split "${1:-}" "expect_status DESC CODE -- CMD..."
    shift
    _pn_run "$@"
    if [ "$RC" -eq "$want" ]; then
        pass "$desc"
    else
        fail "$desc" "command: $(_pn_cmdline "$@")" "exit status $RC, expected $want"
        _pn_show stderr "$ERR"
        _pn_show stdout "$OUT" 10
    fi
}

expect_fail() {
    local desc=$1 pattern=$2
    shift 2
    _pn_split "${1:-}" "expect_fail DESC PATTERN -- CMD..."
    shift
    _pn_run "$@"
    local why=""
    if [ "$RC" -eq 0 ]; then
        why="exit status 0, expected a refusal (1 or 2)"
    elif [ "$RC" -ge 128 ]; then
        why="exit status $RC: killed by signal $((RC - 128)) (crash?), expected 1 or 2"
    elif [ "$RC" -ne 1 ] && [ "$RC" -ne 2 ]; then
        why="exit status $RC, expected 1 or 2"
    elif [ "$_PN_ERR_LINES" -ne 1 ]; then
        why="stderr has $_PN_ERR_LINES lines, expected exactly one"
    elif ! grep -Eiq -- "$pattern" <<<"$ERR"; then
        why="stderr does not match /$pattern/i"
    fi
    if [ -z "$why" ]; then
        pass "$desc"
    else
        fail "$desc" "command: $(_pn_cmdline "$@")" "$why"
        _pn_show stderr "$ERR"
        _pn_show stdout "$OUT" 10
    fi
}

assert_eq() {
    local desc=$1 actual=$2 expected=$3
    if [ "$actual" == "$expected" ]; then
        pass "$desc"
    else
        fail "$desc" "values differ"
        _pn_show expected "$expected"
        _pn_show got "$actual"
    fi
}

assert_match() {
    local desc=$1 string=$2 regex=$3
    if [[ $string =~ $regex ]]; then
        pass "$desc"
    else
        fail "$desc" "does not match /$regex/"
        _pn_show got "$string"
    fi
}

assert_no_match() {
    local desc=$1 string=$2 regex=$3
    if [[ $string =~ $regex ]]; then
        fail "$desc" "unexpectedly matches /$regex/"
        _pn_show got "$string"
    else
        pass "$desc"
    fi
}

# ---------------------------------------------------------------- utilities

sql() {
    local q=$1
    shift
    "$PINION_PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres \
        -d "$PINION_TEST_DB" -c "$q" "$@"
}

json_get() {
    local path=$1
    if [ $# -ge 2 ]; then
        printf '%s' "$2" | python3 -c "$_PN_JSON_GET" "$path"
    else
        python3 -c "$_PN_JSON_GET" "$path"
    fi
}
_PN_JSON_GET='
import json, re, sys
try:
    v = json.load(sys.stdin)
except ValueError as e:
    sys.stderr.write("json_get: not JSON: %s\n" % e)
    sys.exit(2)
for part in re.findall(r"\[(-?\d+)\]|\.?([^.\[\]]+)", sys.argv[1]):
    try:
        v = v[int(part[0])] if part[0] else v[part[1]]
    except (KeyError, IndexError, TypeError):
        sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
'

on_exit() {
    if [ $# -eq 1 ]; then
        _PN_CLEANUPS+=("$1")
    else
        _PN_CLEANUPS+=("$(_pn_cmdline "$@")")
    fi
}

# stop_pid PID [SIGNAL [SECONDS]]: sends SIGNAL (TERM) to PID, waits up to
# SECONDS (10) for it to exit, then kills it; reaps it without a job notice.
stop_pid() {
    local pid=$1 sig=${2:-TERM} secs=${3:-10} i
    [ -n "$pid" ] || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || true
}

wait_until() {
    local secs=$1
    shift
    local tries=$((secs * 10)) i
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# until_secs SECS CMD...: like wait_until, for a CMD that itself takes a
# second or more (wait_until counts tries, not seconds).
until_secs() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
    done
}

. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"
free_port() { free_port_in 26000; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }

has_line() { grep -qE -- "$2" "$1"; }

wait_kicked() {
    local start=$1 f all
    shift
    local deadline=$(($(now_ms) + 3000))
    while :; do
        all=1
        for f in "$@"; do
            grep -q '^disconnected ' "$f" || { all=0; break; }
        done
        if [ "$all" = 1 ]; then
            echo $(($(now_ms) - start))
            return 0
        fi
        [ "$(now_ms)" -lt "$deadline" ] || { echo ">3000"; return 1; }
        sleep 0.01
    done
}

setup() { "$@" >/dev/null 2>"$T/.setup.err" || bail_out "setup failed: $* : $(cat "$T/.setup.err")"; }

make_ca() {
    local name=$1 code id
    shift
    setup "$PINION" ca create --cn "Test CA $name" --out "$name"
    code=$("$PINION" ca code acme 2>/dev/null) || bail_out "ca code failed"
    setup "$PINION" ca verification-cert --ca "$name" --code "$code" --out "$name-v.pem"
    setup "$PINION" ca register acme "$name/ca.pem" --verification-cert "$name-v.pem" --jitp sensor
    for id in "$@"; do
        setup "$PINION" device cert --ca "$name" --id "$id" --out "$name-devs"
    done
}

assert_kicked_fast() {
    if [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -lt 1000 ]; then
        pass "$1 (${2} ms)"
    else
        fail "$1" "disconnected after $2 ms, expected < 1000 ms"
    fi
}

# ---------------------------------------------------------------- exit

_pn_on_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP
    local i
    for ((i = ${#_PN_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${_PN_CLEANUPS[$i]}" || diag "cleanup failed: ${_PN_CLEANUPS[$i]}"
    done
    cd / 2>/dev/null
    if [ "$_PN_DB_CREATED" -eq 1 ]; then
        "$PINION_PG_BIN/dropdb" --force --if-exists -h "$PGHOST" -p "$PGPORT" -U postgres \
            "$PINION_TEST_DB" >/dev/null 2>&1 || diag "could not drop database $PINION_TEST_DB"
    fi
    if [ -n "${T:-}" ] && [ -d "$T" ]; then
        case "$T" in
            /tmp/pinion-test.*) rm -rf -- "$T" ;;
        esac
    fi
    if [ "$_PN_DONE" -ne 1 ]; then
        printf '# script ended before done_testing (exit status %d)\n' "$rc"
        printf '%d passed, %d failed\n' "$_PN_PASSED" "$_PN_FAILED"
        [ "$rc" -eq 0 ] && rc=1
    fi
    exit "$rc"
}

# ---------------------------------------------------------------- setup

trap _pn_on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

[ -n "${PINION:-}" ] || bail_out "PINION is not set (run integration tests through ctest)"
[ -x "$PINION" ] || bail_out "PINION=$PINION is not an executable"
[ -n "${PINION_HARNESS_STATE:-}" ] ||
    bail_out "PINION_HARNESS_STATE is not set (run integration tests through ctest)"
[ -f "$PINION_HARNESS_STATE/pg.env" ] ||
    bail_out "$PINION_HARNESS_STATE/pg.env is missing: is the PostgreSQL fixture running? (ctest runs harness.pg_start first; by hand: bash tests/harness/pg.sh start $PINION_HARNESS_STATE)"
# shellcheck disable=SC1091
. "$PINION_HARNESS_STATE/pg.env" || bail_out "cannot read $PINION_HARNESS_STATE/pg.env"
[ -x "$PINION_PG_BIN/createdb" ] || bail_out "PINION_PG_BIN=$PINION_PG_BIN has no createdb"

T=$(mktemp -d /tmp/pinion-test.XXXXXX) || bail_out "mktemp -d failed"
chmod 0755 "$T"
export T

_pn_script=${BASH_SOURCE[${#BASH_SOURCE[@]} - 1]}
_pn_script=${_pn_script##*/}
_pn_script=${_pn_script%.sh}
_pn_script=$(printf '%s' "$_pn_script" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_' '_' | cut -c1-40)
PINION_TEST_DB="${_pn_script:-test}_$$"
export PINION_TEST_DB
unset _pn_script

if ! _pn_msg=$("$PINION_PG_BIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres \
    "$PINION_TEST_DB" 2>&1); then
    bail_out "createdb $PINION_TEST_DB failed: $_pn_msg"
fi
_PN_DB_CREATED=1
export PINION_DB="host=$PGHOST port=$PGPORT user=postgres dbname=$PINION_TEST_DB"

if ! _pn_msg=$("$PINION" db migrate 2>&1); then
    bail_out "pinion db migrate on $PINION_TEST_DB failed: $_pn_msg"
fi
diag "database $PINION_TEST_DB: $_pn_msg"
unset _pn_msg

cd "$T" || bail_out "cannot cd to $T"
