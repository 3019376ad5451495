# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# HAProxy (Debian's haproxy) in front of test brokers, as a fleet runs it:
# mode tcp, TLS passed through (each broker still sees the device's client
# certificate), round robin, health checks.  Source it after broker.sh:
#
#   start_broker b1; start_broker b2
#   start_haproxy b1 b2 b3           # b3 may start later: down until it listens
#   start_device dev-1 --port "$HAPROXY_PORT"
#   stop_haproxy
#
# Config and log in $T/haproxy/; a free loopback port in HAPROXY_PORT;
# stopped at exit.  Every broker named must have a port already
# (prepare_broker or start_broker).  Health checks every 200 ms, a server is
# down after 2 failures and up again after 1 success.  HAPROXY_MAXCONN
# (default 4000; HAProxy needs about two descriptors a connection).
HAPROXY_PORT=""
HAPROXY_PID=""

start_haproxy() {
    command -v haproxy >/dev/null || skip_all "haproxy is not installed (scripts/deps)"
    local dir="$T/haproxy" name
    mkdir -p "$dir"
    [ -n "$HAPROXY_PORT" ] || HAPROXY_PORT=$(free_port)
    {
        echo "global"
        echo "    maxconn ${HAPROXY_MAXCONN:-4000}"
        echo "defaults"
        echo "    mode tcp"
        echo "    timeout connect 2s"
        echo "    timeout client 1h"
        echo "    timeout server 1h"
        echo "frontend devices"
        echo "    bind 127.0.0.1:$HAPROXY_PORT"
        echo "    default_backend brokers"
        echo "backend brokers"
        echo "    balance roundrobin"
        echo "    default-server inter 200ms fall 2 rise 1"
        for name in "$@"; do
            [ -n "${BROKER_PORT[$name]:-}" ] || bail_out "start_haproxy: broker $name has no port"
            echo "    server $name 127.0.0.1:${BROKER_PORT[$name]} check"
        done
    } >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 ||
        bail_out "haproxy refused its config: $(cat "$dir/check.log")"
    haproxy -db -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    on_exit stop_haproxy
    wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$HAPROXY_PORT" 2>/dev/null ||
        bail_out "haproxy did not listen on $HAPROXY_PORT: $(cat "$dir/haproxy.log")"
}

stop_haproxy() {
    stop_pid "$HAPROXY_PID" TERM 5
    HAPROXY_PID=""
}
