# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# free_port_in BASE: prints a port in BASE..BASE+999, tried from a random
# start, on which nothing listens on loopback; returns 1 if none is free.
# Sourced by pg.sh (PostgreSQL, 25000-25999), lib.sh (brokers and other
# servers, 26000-26999) and bench/brokers.sh (27000-27999).  All below
# Linux's ephemeral range (32768-60999 by default): a port there can be
# taken at any moment by the local end of an outgoing connection (a client
# of another test), which free_port_in cannot see coming.
free_port_in() {
    local base=$1 start n p
    start=$((base + RANDOM % 1000))
    for ((n = 0; n < 1000; n++)); do
        p=$((base + (start - base + n) % 1000))
        if command -v ss >/dev/null 2>&1 && ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
            continue
        fi
        # A successful connect means something listens there.
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        echo "$p"
        return 0
    done
    return 1
}
