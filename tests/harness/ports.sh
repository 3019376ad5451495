# shellcheck shell=bash
# free_port_in BASE: prints a port in BASE..BASE+999, tried from a random
# start, on which nothing listens on loopback; returns 1 if none is free.
# Sourced by pg.sh (PostgreSQL, 55000-55999) and lib.sh (brokers, 56000-).
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
