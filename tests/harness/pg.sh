#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Throwaway PostgreSQL cluster for the integration tests.
#
#   pg.sh start STATE_DIR   initdb + start on a private port and unix socket,
#                           write STATE_DIR/pg.env (shell exports)
#   pg.sh stop  STATE_DIR   stop that cluster and delete its files; never fails
#
# The cluster lives in a fresh `mktemp -d` under /tmp (never in the source or
# build tree), owned by the user the server runs as.  PostgreSQL refuses to
# run as root, so as root every server-side command goes through
# `runuser -u postgres --`; otherwise it runs as the current user.  The server
# listens on no TCP address at all (listen_addresses=''), only on a unix
# socket in that temp dir.
#
# STATE_DIR/pg.env exports:
#   PGHOST         the socket directory
#   PGPORT         the private port (names the socket file)
#   PGUSER         postgres (superuser, trust authentication)
#   PG_DATADIR     the data directory
#   PG_PID         the postmaster's PID
#   PG_TMPDIR      the temp dir holding data, socket and log (removed by stop)
#   PINION_PG_BIN  the PostgreSQL bin directory (createdb, psql, pg_isready...)
#
# Environment: PINION_PG_BIN overrides the bin directory, PINION_PG_USER the
# unprivileged user used when running as root (default postgres).
# PINION_PG_DURABLE=1 keeps PostgreSQL's durability settings (fsync,
# synchronous_commit, full_page_writes on, as a production server runs):
# benchmarks of what must be durable use it; tests run faster without.
# PINION_PG_OPTS adds server options (e.g. "-c shared_preload_libraries=
# pg_stat_statements" to profile a benchmark's statements).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

PROG=pg.sh
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
    echo "usage: bash pg.sh start|stop STATE_DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
ACTION=$1
STATE_DIR=$2
ENV_FILE=$STATE_DIR/pg.env

find_pg_bin() {
    if [ -n "${PINION_PG_BIN:-}" ] && [ -x "$PINION_PG_BIN/pg_ctl" ]; then
        echo "$PINION_PG_BIN"; return 0
    fi
    if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
        echo /usr/lib/postgresql/15/bin; return 0
    fi
    # Any other Debian-packaged version, newest first.
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
        [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    # Non-Debian layouts: ask pg_config (never trust a bare `pg_ctl` on PATH).
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null)
        [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    fi
    return 1
}

# The user the server runs as, and how to run a command as that user.
if [ "$(id -u)" -eq 0 ]; then
    PG_OS_USER=${PINION_PG_USER:-postgres}
    as_pg() { (cd / && runuser -u "$PG_OS_USER" -- "$@" 9>&-); }
else
    PG_OS_USER=$(id -un)
    as_pg() { (cd / && "$@" 9>&-); }
fi

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stops the cluster described by $ENV_FILE (if any) and removes its temp dir.
do_stop() {
    if [ ! -f "$ENV_FILE" ]; then
        say "no cluster recorded in $ENV_FILE; nothing to stop"
        return 0
    fi
    local PG_DATADIR="" PG_PID="" PG_TMPDIR="" PINION_PG_BIN=""
    # Read the values without executing anything else from the file.
    PG_DATADIR=$(sed -n 's/^export PG_DATADIR=//p' "$ENV_FILE" | tail -n1)
    PG_PID=$(sed -n 's/^export PG_PID=//p' "$ENV_FILE" | tail -n1)
    PG_TMPDIR=$(sed -n 's/^export PG_TMPDIR=//p' "$ENV_FILE" | tail -n1)
    PINION_PG_BIN=$(sed -n 's/^export PINION_PG_BIN=//p' "$ENV_FILE" | tail -n1)
    # Values were written with printf %q; paths we create need no quoting,
    # but strip a pair of quotes just in case.
    PG_DATADIR=${PG_DATADIR//\'/}; PG_TMPDIR=${PG_TMPDIR//\'/}; PINION_PG_BIN=${PINION_PG_BIN//\'/}

    # A PID recorded at start is only trusted if it is still a postmaster for
    # this data dir (the PID may have been reused since).
    if [ -n "$PG_DATADIR" ] && [ -f "$PG_DATADIR/postmaster.pid" ]; then
        local live
        live=$(head -n1 "$PG_DATADIR/postmaster.pid" 2>/dev/null)
        [ -n "$live" ] && PG_PID=$live
    elif pid_alive "$PG_PID"; then
        if ! tr '\0' ' ' <"/proc/$PG_PID/cmdline" 2>/dev/null | grep -q -- "$PG_DATADIR"; then
            PG_PID=""
        fi
    fi

    if pid_alive "$PG_PID"; then
        say "stopping PostgreSQL (pid $PG_PID, data $PG_DATADIR)"
        if [ -n "$PINION_PG_BIN" ] && [ -x "$PINION_PG_BIN/pg_ctl" ] && [ -d "$PG_DATADIR" ]; then
            as_pg "$PINION_PG_BIN/pg_ctl" -D "$PG_DATADIR" -m fast -w -t 15 stop >/dev/null 2>&1
        else
            kill -INT "$PG_PID" 2>/dev/null   # SIGINT = fast shutdown
        fi
        local i
        for i in $(seq 1 50); do
            pid_alive "$PG_PID" || break
            sleep 0.1
        done
        if pid_alive "$PG_PID"; then
            say "PostgreSQL (pid $PG_PID) did not stop; sending SIGQUIT then SIGKILL"
            kill -QUIT "$PG_PID" 2>/dev/null
            sleep 1
            # Kill the postmaster's children too: they would hold the socket.
            pkill -KILL -P "$PG_PID" 2>/dev/null
            kill -KILL "$PG_PID" 2>/dev/null
            for i in $(seq 1 50); do pid_alive "$PG_PID" || break; sleep 0.1; done
        fi
        pid_alive "$PG_PID" && say "warning: pid $PG_PID is still alive"
        say "stopped"
    else
        say "PostgreSQL is not running"
    fi

    # Only ever delete a directory this script created.
    case "$PG_TMPDIR" in
        /tmp/pinion-pg.*)
            if [ -d "$PG_TMPDIR" ]; then
                rm -rf -- "$PG_TMPDIR"
                say "removed $PG_TMPDIR"
            fi
            ;;
        "") ;;
        *) say "warning: not removing unexpected directory '$PG_TMPDIR'" ;;
    esac
    rm -f -- "$ENV_FILE"
    return 0
}

# Prints a port in 25000-25999 on which nothing listens on loopback (the
# socket dir is fresh and empty anyway).
pick_port() { free_port_in 25000; }

do_start() {
    mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
    STATE_DIR=$(cd "$STATE_DIR" && pwd)
    ENV_FILE=$STATE_DIR/pg.env

    if [ -f "$ENV_FILE" ]; then
        say "found stale state in $ENV_FILE; stopping it first"
        do_stop
    fi

    local bin
    bin=$(find_pg_bin) || die "no PostgreSQL server binaries found (install postgresql: bash scripts/deps)"
    say "using PostgreSQL binaries in $bin ($("$bin/postgres" --version 2>/dev/null))"

    if [ "$(id -u)" -eq 0 ] && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        say "creating system user $PG_OS_USER to run the server (PostgreSQL refuses root)"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER" ||
            die "cannot create user $PG_OS_USER"
    fi

    local tmp
    tmp=$(mktemp -d /tmp/pinion-pg.XXXXXX) || die "mktemp failed"
    local data=$tmp/data sock=$tmp/sock log=$tmp/postgresql.log
    mkdir -p "$sock"
    # Traversable by everyone: clients running as other users (e.g. Mosquitto
    # dropped to user mosquitto, loading the plugin) reach the socket here.
    # The data dir itself stays 0700, as PostgreSQL demands.
    chmod 0755 "$tmp" "$sock"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R "$PG_OS_USER:" "$tmp" || { rm -rf -- "$tmp"; die "cannot chown $tmp to $PG_OS_USER"; }
    fi

    # Record what we are about to create, so that `stop` can clean up even if
    # start fails half way.
    write_env() {
        {
            echo "# Written by tests/harness/pg.sh start; removed by pg.sh stop."
            printf 'export PGHOST=%q\n' "$sock"
            printf 'export PGPORT=%q\n' "${port:-}"
            printf 'export PGUSER=%q\n' postgres
            printf 'export PG_DATADIR=%q\n' "$data"
            printf 'export PG_PID=%q\n' "${pid:-}"
            printf 'export PG_TMPDIR=%q\n' "$tmp"
            printf 'export PINION_PG_BIN=%q\n' "$bin"
        } >"$ENV_FILE.tmp" && mv -f "$ENV_FILE.tmp" "$ENV_FILE"
    }
    local port="" pid=""
    write_env || die "cannot write $ENV_FILE"

    fail_start() {
        say "error: $*" >&2
        if [ -f "$log" ]; then
            echo "---- last lines of $log ----" >&2
            tail -n 30 "$log" >&2
            echo "----" >&2
        fi
        do_stop >&2
        exit 1
    }

    say "initdb in $data (user $PG_OS_USER)"
    as_pg env LC_ALL=C LANG=C "$bin/initdb" -D "$data" -U postgres --auth=trust \
        --no-locale -E UTF8 --no-sync >"$tmp/initdb.log" 2>&1 ||
        { cat "$tmp/initdb.log" >&2; fail_start "initdb failed"; }

    port=$(pick_port) || fail_start "no free port in 25000-25999"
    write_env

    say "starting PostgreSQL on port $port, socket dir $sock"
    local opts="-c listen_addresses='' -k $sock -p $port -c max_connections=200"
    if [ "${PINION_PG_DURABLE:-0}" = 1 ]; then
        say "durable: fsync, synchronous_commit and full_page_writes on"
    else
        opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    opts="$opts ${PINION_PG_OPTS:-}"
    as_pg env LC_ALL=C LANG=C "$bin/pg_ctl" -D "$data" -l "$log" -w -t 30 -o "$opts" start \
        >"$tmp/pg_ctl.log" 2>&1 ||
        { cat "$tmp/pg_ctl.log" >&2; fail_start "pg_ctl start failed"; }

    pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null)
    write_env

    say "waiting for pg_isready"
    local i ready=0
    for i in $(seq 1 150); do
        if "$bin/pg_isready" -q -h "$sock" -p "$port" -U postgres -d postgres; then
            ready=1
            break
        fi
        pid_alive "$pid" || fail_start "PostgreSQL exited during startup"
        sleep 0.2
    done
    [ "$ready" -eq 1 ] || fail_start "PostgreSQL not ready after 30 s"

    say "ready: pid $pid, PGHOST=$sock PGPORT=$port; environment in $ENV_FILE"
}

# Serialise start/stop on one state dir (e.g. two ctest runs in one build
# dir), so that one never tears down a cluster another is half-way starting.
lock_state() {
    [ -d "$STATE_DIR" ] || return 0
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$STATE_DIR/.pg.lock" || return 0
    flock -w 60 9 || say "warning: could not lock $STATE_DIR/.pg.lock; going on"
}

case "$ACTION" in
    start)
        mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
        lock_state
        do_start
        ;;
    stop)
        if [ -d "$STATE_DIR" ]; then
            ENV_FILE=$(cd "$STATE_DIR" && pwd)/pg.env
            lock_state
        fi
        do_stop
        exit 0
        ;;
    *) usage ;;
esac
