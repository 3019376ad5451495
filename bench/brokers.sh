# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shared by bench/connect_storm.sh and bench/msg_throughput.sh: a throwaway
# PostgreSQL with the schema, one org, a JITP Device CA and a service
# identity `piniond`; cached device certificates; brokers started one at a
# time on one port with identical listener settings:
#   plain  - Mosquitto, cafile = the Device CA, use_identity_as_username (how
#            a plain broker admits certificate-only clients), no plugin and
#            no ACL at all;
#   allowall - plain with an ACL plugin that allows everything
#            (bench/allow_all): what asking any plugin costs Mosquitto;
#   pinion - Mosquitto + the built plugin, capath = its trust directory;
#   KIND_thread - KIND with one idle thread preloaded (bench/idle_thread):
#            what a plugin's own thread costs (bench/thread_cost.sh).
# Source it with N, BUILD set and the repository root as working directory.

. bench/common.sh

say() { printf 'bench: %s\n' "$*"; }
field() { sed -n "s/.*[ ]$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR ? v[int((NR+1)/2)] : 0)}'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2f", (y > 0 ? x / y : 0)}'; }

bench_setup() {
    local n=$1
    CACHE=${PINION_BENCH_CACHE:-$BUILD/bench-cache}
    W=$(mktemp -d /tmp/pinion-bench.XXXXXX)
    chmod 0755 "$W"
    BROKER_PID=""
    trap 'stop_broker; bench_pg_cleanup' EXIT
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    mkdir -p "$CACHE"
    # One writer at a time: ctest may run two benchmarks at once.
    exec 8>"$CACHE/.lock"
    flock 8
    if [ ! -f "$CACHE/ca/ca.pem" ]; then
        "$BUILD/pinion" ca create --cn "Pinion Bench CA" --out "$CACHE/ca" --days 3650 >/dev/null
    fi
    if [ ! -f "$CACHE/server.pem" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$CACHE/server.key" -out "$CACHE/server.pem" -days 3650 -subj /CN=localhost \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -addext "extendedKeyUsage=serverAuth" >/dev/null 2>&1
    fi
    "$BUILD/bench/mqtt_load" certs --ca "$CACHE/ca" --out "$CACHE/devs" -n "$n" >/dev/null
    flock -u 8
    exec 8>&-

    # Durable, as in production: a pin counts once its COMMIT is on disk.
    PINION_PG_DURABLE=1 bash tests/harness/pg.sh start "$W/pg" >/dev/null
    . "$W/pg/pg.env"
    "$PINION_PG_BIN/createdb" -h "$PGHOST" -p "$PGPORT" -U postgres bench
    DB="host=$PGHOST port=$PGPORT user=postgres dbname=bench"
    local P=("$BUILD/pinion" --db "$DB")
    "${P[@]}" db migrate >/dev/null
    "${P[@]}" org create acme >/dev/null
    "${P[@]}" product create acme sensor >/dev/null
    local code
    code=$("${P[@]}" ca code acme 2>/dev/null)
    "${P[@]}" ca verification-cert --ca "$CACHE/ca" --code "$code" --out "$W/verify.pem" >/dev/null
    "${P[@]}" ca register acme "$CACHE/ca/ca.pem" --verification-cert "$W/verify.pem" \
        --jitp sensor >/dev/null
    "${P[@]}" service add piniond "$CACHE/devs/svc.pem" >/dev/null
    PORT=$(. tests/harness/ports.sh && free_port_in 27000)
    mkdir -p "$W/trust" "$W/plain-trust"
    cp "$CACHE/ca/ca.pem" "$W/plain-trust/$(openssl x509 -in "$CACHE/ca/ca.pem" -noout -subject_hash).0"
}

psql_b() { "$PINION_PG_BIN/psql" -X -q -h "$PGHOST" -p "$PGPORT" -U postgres bench "$@"; }

# start_broker plain|pinion: a fresh broker, waits until it accepts.
start_broker() {
    local kind=$1 conf=$W/$1.conf preload=
    # KIND_thread: KIND with one idle thread preloaded (bench/thread_cost.sh).
    if [[ $kind == *_thread ]]; then
        kind=${kind%_thread}
        preload=$BUILD/bench/bench_idle_thread.so
    fi
    {
        echo "per_listener_settings false"
        echo "allow_anonymous false"
        echo "set_tcp_nodelay true"
        [ "$(id -u)" -ne 0 ] || echo "user root"
        echo "persistence false"
        echo "log_dest file $W/$kind.log"
        echo "log_type error"
        echo "max_queued_messages 1000"
        echo "max_inflight_messages 0" # unlimited: nothing waits in a queue
        if [ "$kind" = pinion ]; then
            echo "plugin $BUILD/plugin/pinion_plugin.so"
            echo "plugin_opt_database $DB"
            echo "plugin_opt_trust_dir $W/trust"
        elif [ "$kind" = allowall ]; then
            echo "plugin $BUILD/bench/bench_allow_all.so"
        fi
        echo "listener $PORT 127.0.0.1"
        echo "certfile $CACHE/server.pem"
        echo "keyfile $CACHE/server.key"
        if [ "$kind" = pinion ]; then
            echo "capath $W/trust"
        elif [ "$kind" = plain_capath ]; then
            # The plain broker with Pinion's kind of trust store (a hashed
            # directory), to tell that cost apart from the plugin's.
            echo "capath $W/plain-trust"
            echo "use_identity_as_username true"
        else
            echo "cafile $CACHE/ca/ca.pem"
            # A plain broker admits certificate-only clients this way.
            echo "use_identity_as_username true"
        fi
        echo "require_certificate true"
    } >"$conf"
    LD_PRELOAD=$preload mosquitto -c "$conf" >>"$W/$kind.stdout" 2>&1 &
    BROKER_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            say "broker $kind exited: $(tail -5 "$W/$kind.log" "$W/$kind.stdout" 2>/dev/null)"
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            sleep 0.3 # the plugin's initial load has finished once the loop accepts
            return 0
        fi
        sleep 0.05
    done
    say "broker $kind did not start"
    exit 1
}

# pin_all COUNT: the first COUNT cached devices connect once to a Pinion
# broker, so that the runs after measure pinned clients, not first connects.
pin_all() {
    start_broker pinion
    "$BUILD/bench/mqtt_load" storm --port "$PORT" --cafile "$CACHE/server.pem" \
        --certs "$CACHE/devs" -n "$1" >/dev/null
    stop_broker
}

stop_broker() {
    [ -n "${BROKER_PID:-}" ] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}
