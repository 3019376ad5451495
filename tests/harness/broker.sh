# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Real Mosquitto brokers with the built plugin, for integration tests.
# Source it after lib.sh:
#
#   . "$PINION_SOURCE/tests/harness/lib.sh"
#   . "$PINION_SOURCE/tests/harness/broker.sh"
#   start_broker b1                      # plugin defaults
#   start_broker b2 identity=client_id   # extra plugin_opt_KEY=VALUE
#   probe b1 "$T/devs/dev-1" dev-1 --sub 'fleet/dev-1/down/#' --stay 1
#   prepare_broker b3; ...; launch_broker b3   # edit the config before launching
#   stop_broker b1
#
# Each broker gets $T/broker-NAME/ with its config, log (BROKER_LOG[NAME]),
# and its own trust directory (the listener's capath = plugin_opt_trust_dir),
# a free loopback port (BROKER_PORT[NAME]); all brokers share the test's
# database ($PINION_DB).  The TLS server certificate ($BROKER_CA, also the
# file clients trust) is made once per test with openssl.  Brokers are
# stopped at exit.  When the built plugin is readable by the `mosquitto`
# user the broker drops to it, as in production; otherwise `user root`.
#
# The broker is $PINION_MOSQUITTO (default Debian's /usr/sbin/mosquitto;
# `scripts/test --mosquitto VERSION` sets it to a build of that release).
# BROKER_VERSION is its version; each launch prints it as a diag line.  The
# plugin is configured as the README says for that version
# (BROKER_PLUGIN_STYLE): 2.0 `per_listener_settings false` + `plugin`
# ("listener"), 2.1 and later `global_plugin` ("global").  A test may set
# BROKER_PLUGIN_STYLE before prepare_broker/start_broker to try the other.
#
# probe NAME CERTPREFIX CLIENTID [pn-probe options]: runs tests/tools/pn-probe
# against broker NAME with CERTPREFIX.pem / CERTPREFIX.key; its output lines
# (connack, suback, puback, msg, disconnected, done) land in $OUT, its exit
# status in $RC (0 connected, 5 refused, 3 closed before CONNACK).

declare -A BROKER_PORT BROKER_LOG BROKER_PID BROKER_DIR BROKER_TRUST BROKER_CONF
BROKER_CA=""
PINION_MOSQUITTO=${PINION_MOSQUITTO:-/usr/sbin/mosquitto}
[ -x "$PINION_MOSQUITTO" ] || bail_out "no broker at $PINION_MOSQUITTO (PINION_MOSQUITTO)"
BROKER_VERSION=$("$PINION_MOSQUITTO" -h 2>&1 | sed -n 's/^mosquitto version \([0-9][0-9.]*\).*/\1/p' | head -1)
[ -n "$BROKER_VERSION" ] || bail_out "$PINION_MOSQUITTO does not say its version"
case $BROKER_VERSION in
1.* | 2.0.*) : "${BROKER_PLUGIN_STYLE:=listener}" ;;
*) : "${BROKER_PLUGIN_STYLE:=global}" ;;
esac

broker_server_cert() {
    [ -n "$BROKER_CA" ] && return 0
    local d="$T/broker-tls"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/server.key" -out "$d/server.pem" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "extendedKeyUsage=serverAuth" >/dev/null 2>&1 ||
        bail_out "cannot make the broker's TLS certificate"
    chmod 0644 "$d/server.key" "$d/server.pem"
    BROKER_CA="$d/server.pem"
}

_broker_user_line() {
    if [ "$(id -u)" -eq 0 ] && ! runuser -u mosquitto -- test -r "$PINION_PLUGIN" 2>/dev/null; then
        echo "user root"
    fi
}

# Writes the config of broker NAME (plugin options as KEY=VALUE args).
broker_config() {
    local name=$1
    shift
    local dir=${BROKER_DIR[$name]}
    {
        # 2.1 deprecates per_listener_settings (gone in 3.0); global_plugin
        # gives the plugin every listener without it.
        [ "$BROKER_PLUGIN_STYLE" = global ] || echo "per_listener_settings false"
        echo "allow_anonymous false"
        echo "set_tcp_nodelay true"
        _broker_user_line
        echo "persistence ${BROKER_PERSISTENCE:-false}"
        echo "persistence_location $dir/"
        echo "log_dest file ${BROKER_LOG[$name]}"
        echo "log_type error"
        echo "log_type warning"
        echo "log_type notice"
        echo "log_type information"
        echo "log_timestamp_format %H:%M:%S"
        if [ "$BROKER_PLUGIN_STYLE" = global ]; then
            echo "global_plugin $PINION_PLUGIN"
        else
            echo "plugin $PINION_PLUGIN"
        fi
        echo "plugin_opt_database $PINION_DB"
        echo "plugin_opt_trust_dir ${BROKER_TRUST[$name]}"
        # The registry entry piniond dials (README "Scaling out").
        echo "plugin_opt_broker_id $name"
        echo "plugin_opt_service_address 127.0.0.1:${BROKER_PORT[$name]}"
        local kv
        for kv in "$@"; do
            echo "plugin_opt_${kv%%=*} ${kv#*=}"
        done
        echo "listener ${BROKER_PORT[$name]} 127.0.0.1"
        echo "certfile $T/broker-tls/server.pem"
        echo "keyfile $T/broker-tls/server.key"
        echo "capath ${BROKER_TRUST[$name]}"
        echo "require_certificate true"
    } >"${BROKER_CONF[$name]}"
}

# Sets up broker NAME (dirs, port, config from KEY=VALUE plugin options)
# without launching it, so that a test can edit its config first.
prepare_broker() {
    local name=$1
    shift
    broker_server_cert
    local dir="$T/broker-$name"
    mkdir -p "$dir/trust"
    chmod 0755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown mosquitto "$dir" "$dir/trust" 2>/dev/null || true; fi
    BROKER_DIR[$name]=$dir
    BROKER_TRUST[$name]=$dir/trust
    BROKER_CONF[$name]=$dir/mosquitto.conf
    BROKER_LOG[$name]=$dir/mosquitto.log
    [ -n "${BROKER_PORT[$name]:-}" ] || BROKER_PORT[$name]=$(free_port)
    broker_config "$name" "$@"
}

# Starts broker NAME and waits until it listens.  Returns 1 (and leaves the
# log in $OUT) when Mosquitto exits instead, e.g. the plugin refused to load.
start_broker() {
    prepare_broker "$@"
    launch_broker "$1"
}

# Launches broker NAME as prepare_broker (and the test) configured it.
# free_port only says a port was free a moment ago: when a concurrent test
# (ctest -j) took it before Mosquitto bound it, another one is tried.
launch_broker() {
    local name=$1 try old
    for try in 1 2 3; do
        _broker_launch "$name" && return 0
        grep -q "Address already in use" "${BROKER_LOG[$name]}" 2>/dev/null || return 1
        old=${BROKER_PORT[$name]}
        BROKER_PORT[$name]=$(free_port)
        sed -i -e "s/^listener $old /listener ${BROKER_PORT[$name]} /" \
            -e "s/^plugin_opt_service_address 127.0.0.1:$old\$/plugin_opt_service_address 127.0.0.1:${BROKER_PORT[$name]}/" \
            "${BROKER_CONF[$name]}"
        : >"${BROKER_LOG[$name]}"
        diag "broker $name: port $old was taken meanwhile (try $try); now ${BROKER_PORT[$name]}"
    done
    return 1
}

# How many times broker NAME's log says it started.
_broker_starts() {
    local n
    n=$(grep -c "mosquitto version .* running" "${BROKER_LOG[$1]}" 2>/dev/null)
    echo "${n:-0}"
}

_broker_launch() {
    local name=$1 started
    # A restarted broker appends to the same log: wait for a new start line.
    started=$(_broker_starts "$name")
    # The plugin is never built with sanitizers (even in a PINION_SANITIZE
    # build), so Mosquitto runs as it is; test_plugin_valgrind checks it.
    ${BROKER_WRAPPER:-} "$PINION_MOSQUITTO" -c "${BROKER_CONF[$name]}" >>"${BROKER_DIR[$name]}/stdout.log" 2>&1 &
    BROKER_PID[$name]=$!
    on_exit "stop_broker $name"
    local i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "${BROKER_PID[$name]}" 2>/dev/null; then
            OUT=$(cat "${BROKER_LOG[$name]}" "${BROKER_DIR[$name]}/stdout.log" 2>/dev/null)
            unset 'BROKER_PID[$name]'
            return 1
        fi
        if [ "$(_broker_starts "$name")" -gt "$started" ]; then
            diag "broker $name: $(grep -o "mosquitto version .* running" "${BROKER_LOG[$name]}" |
                tail -1) ($PINION_MOSQUITTO, plugin config: $BROKER_PLUGIN_STYLE)"
            return 0
        fi
        sleep 0.1
    done
    diag "broker $name did not start:"
    diag "$(tail -20 "${BROKER_LOG[$name]}")"
    return 1
}

# Restarts broker NAME with its current config (same port and trust dir).
restart_broker() {
    local name=$1
    stop_broker "$name"
    _broker_launch "$name"
}

stop_broker() {
    local name=$1
    stop_pid "${BROKER_PID[$1]:-}"
    unset 'BROKER_PID[$name]'
}

hup_broker() {
    kill -HUP "${BROKER_PID[$1]}"
}

probe() {
    local name=$1 prefix=$2 id=$3
    shift 3
    RC=0
    OUT=$("$PINION_PROBE" --port "${BROKER_PORT[$name]}" --cafile "$BROKER_CA" \
        --cert "$prefix.pem" --key "$prefix.key" --id "$id" "$@" 2>"$T/.probe.err") || RC=$?
    ERR=$(cat "$T/.probe.err")
}

# probe in the background: output to FILE; sets PROBE_PID.
probe_bg() {
    local name=$1 prefix=$2 id=$3 file=$4
    shift 4
    "$PINION_PROBE" --port "${BROKER_PORT[$name]}" --cafile "$BROKER_CA" \
        --cert "$prefix.pem" --key "$prefix.key" --id "$id" "$@" >"$file" 2>&1 &
    PROBE_PID=$!
}

# Waits (up to SECONDS) until broker NAME's log matches ERE.
wait_log() {
    local name=$1 re=$2 secs=${3:-5}
    wait_until "$secs" grep -Eq "$re" "${BROKER_LOG[$name]}"
}
