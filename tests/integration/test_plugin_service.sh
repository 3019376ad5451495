#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Service identities can be taken back (issue 10, part 4):
#   - `pinion service revoke NAME` kicks every session of the service (NAME
#     and NAME-*) on every broker sharing the database within 1 s, and its
#     certificate is refused from then on, naming the revocation, also after
#     a broker restart; the change is audit-logged and final;
#   - `pinion service remove NAME` kicks it the same way and deletes it; its
#     certificate leaves the trust directory when the broker next starts;
#   - a service certificate that is not yet valid is refused;
#   - CLI errors are one line and a non-zero exit.
# And refusals a user can see (part 6): denied publishes and subscriptions
# give one NOTICE line per client per 10 s, the rest counted in a later line.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

command -v faketime >/dev/null || bail_out "faketime is not installed (scripts/deps installs it)"

certid() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

# A self-signed P-256 service certificate NAME.{pem,key}; extra args go
# before openssl (e.g. faketime -f +2d).
mksvc() {
    local name=$1
    shift
    "$@" openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$name.key" -out "$name.pem" -days 30 -subj "/CN=$name" \
        -addext extendedKeyUsage=clientAuth -addext basicConstraints=critical,CA:FALSE \
        >/dev/null 2>&1 || bail_out "openssl could not make $name.pem"
}

# connect_bg BROKER CERTPREFIX CLIENTID: a client that stays 20 s, output in
# $T/<BROKER>-<CLIENTID>.out; waits for its CONNACK 0.
connect_bg() {
    local f="$T/$1-$3.out"
    rm -f "$f" # a file left by an earlier session must not answer for this one
    probe_bg "$1" "$2" "$3" "$f" --stay 20
    on_exit "kill $PROBE_PID 2>/dev/null || true"
    wait_until 5 has_line "$f" '^connack' || bail_out "$3 got no CONNACK from $1: $(cat "$f")"
    grep -qx 'connack 0' "$f" || bail_out "$3 refused by $1: $(cat "$f")"
}

# refused DESC BROKER CERTPREFIX CLIENTID REASON_ERE: CONNACK "not
# authorised", and a new refusal line naming the certificate and reason.
refused() {
    local desc=$1 b=$2 prefix=$3 cid=$4 re=$5 before lines
    before=$(grep -c 'pinion: refused certificate' "${BROKER_LOG[$b]}")
    probe "$b" "$prefix" "$cid"
    lines=$(grep 'pinion: refused certificate' "${BROKER_LOG[$b]}" | tail -n "+$((before + 1))")
    if [ "$RC" -ne 5 ] || [ "$(head -n1 <<<"$OUT")" != "connack 5" ]; then
        fail "$desc" "pn-probe exit $RC, expected 5 (connack 5)" "output: $OUT $ERR"
    elif ! grep -Eq "pinion: refused certificate $(certid "$prefix.pem") identifier .+: ($re)" \
        <<<"$lines"; then
        fail "$desc" "no refusal line naming the certificate and /$re/" "$lines"
    else
        pass "$desc"
    fi
}

# Whether broker NAME's trust directory holds the certificate in FILE.
in_trust() {
    local want f
    want=$(certid "$2")
    for f in "${BROKER_TRUST[$1]}"/*.[0-9]*; do
        [ -f "$f" ] && [ "$(certid "$f")" = "$want" ] && return 0
    done
    return 1
}

# ------------------------------------------------------------------ setup
mksvc svc
mksvc svc2
mksvc svc2b
mksvc svc3
mksvc fut faketime -f +2d # notBefore two days from now
setup "$PINION" service add svc svc.pem
setup "$PINION" service add svc2 svc2.pem
setup "$PINION" service add svc3 svc3.pem
SVC=$(certid svc.pem)
SVC2=$(certid svc2.pem)

start_broker b1 || bail_out "broker b1 did not start: $OUT"
start_broker b2 || bail_out "broker b2 did not start: $OUT"

# mqtt_tls BROKER CERTPREFIX CLIENTID SESSION_ARGS...: one MQTT 3.1.1
# CONNECT sent through openssl s_client (which can save and resume TLS
# sessions: -sess_out FILE / -sess_in FILE), closing 1 s later; prints
# "reused" or "new", then the CONNACK's return code (0 accepted, 5 not
# authorised) or "none".
mqtt_tls() {
    local b=$1 prefix=$2 id=$3 out connect
    shift 3
    connect=$(printf '\\x10\\x%02x\\x00\\x04MQTT\\x04\\x02\\x00\\x3c\\x00\\x%02x%s' \
        $((12 + ${#id})) "${#id}" "$id")
    out=$( (printf '%b' "$connect"; sleep 1) |
        timeout 10 openssl s_client -connect "127.0.0.1:${BROKER_PORT[$b]}" -CAfile "$BROKER_CA" \
            -cert "$prefix.pem" -key "$prefix.key" "$@" 2>/dev/null | od -An -tx1 -v |
        tr '\n' ' ' | tr -s ' ')
    # "Reused," in s_client's report, and the CONNACK's four bytes.
    if [[ $out == *' 52 65 75 73 65 64 2c '* ]]; then echo -n "reused "; else echo -n "new "; fi
    if [[ $out =~ \ 20\ 02\ 00\ 0([0-5])\  ]]; then echo "${BASH_REMATCH[1]}"; else echo none; fi
}

# ----------------------------------------------------------------- revoke
# A TLS session of svc's, to resume after the revocation.
assert_eq "svc connects over a new TLS session (openssl s_client)" \
    "$(mqtt_tls b1 svc svc-tls -sess_out "$T/svc.sess")" "new 0"
connect_bg b1 svc svc
connect_bg b1 svc svc-eu-1
connect_bg b2 svc svc
connect_bg b1 svc2 svc2
t0=$(now_ms)
expect_ok "pinion service revoke svc" -- "$PINION" service revoke svc --json
t1=$(now_ms)
assert_eq "revoke --json: status" "$(json_get .status "$OUT") $(json_get .previous_status "$OUT")" \
    "revoked active"
ms=$(wait_kicked "$t1" "$T/b1-svc.out" "$T/b1-svc-eu-1.out" "$T/b2-svc.out")
assert_kicked_fast "every session of svc (svc, svc-eu-1; brokers b1 and b2) is disconnected" "$ms"
diag "service revoke took $((t1 - t0)) ms"
assert_no_match "another service (svc2) stays connected" "$(cat "$T/b1-svc2.out")" 'disconnected'
refused "b1 refuses svc after revoke, naming it" b1 svc svc "service 'svc' is revoked"
refused "b1 refuses svc-eu-1 too" b1 svc svc-eu-1 "service 'svc' is revoked"
refused "b2 refuses svc" b2 svc svc "service 'svc' is revoked"
assert_eq "a resumed TLS session of svc is refused too (the plugin checks every CONNECT)" \
    "$(mqtt_tls b1 svc svc-tls -sess_in "$T/svc.sess")" "reused 5"
assert_eq "service list shows svc revoked" \
    "$("$PINION" service list --json | python3 -c 'import json,sys; print(" ".join(r["name"]+"="+r["status"] for r in json.load(sys.stdin)))')" \
    "svc=revoked svc2=active svc3=active"
assert_eq "audit log: service.revoke of svc's certificate, with its name" \
    "$(sql "SELECT action || ' ' || coalesce(detail->>'name', '-') || ' ' ||
                   coalesce(detail->>'from', '-')
            FROM audit_log WHERE object = '$SVC' ORDER BY id")" $'service.add - -\nservice.revoke svc active'
if sql "UPDATE service_identities SET status = 'active' WHERE name = 'svc'" >/dev/null 2>&1; then
    fail "the database refuses to un-revoke a service" "UPDATE succeeded"
else
    pass "the database refuses to un-revoke a service (revocation is final)"
fi
expect_fail "the revoked certificate cannot be added again under another name" \
    'already registered' -- "$PINION" service add svc-new svc.pem
setup "$PINION" org create acme
setup "$PINION" product create acme sensor
expect_fail "a revoked service's name stays reserved from devices" "namespace" -- \
    "$PINION" device create acme sensor svc-7

restart_broker b1 || bail_out "b1 did not restart: $OUT"
refused "after a broker restart, svc is still refused by name" b1 svc svc "service 'svc' is revoked"
probe b1 svc2 svc2
assert_eq "after the restart svc2 still connects" "$RC" 0
if in_trust b1 svc.pem; then
    pass "a revoked service's certificate stays in the trust directory (refusals name it)"
else
    fail "a revoked service's certificate stays in the trust directory"
fi

# ----------------------------------------------------------------- remove
connect_bg b1 svc2 svc2
connect_bg b2 svc2 svc2-x
t1=$(now_ms)
expect_ok "pinion service remove svc2" -- "$PINION" service remove svc2
ms=$(wait_kicked "$t1" "$T/b1-svc2.out" "$T/b2-svc2-x.out")
assert_kicked_fast "svc2 is disconnected from b1 and b2 after remove" "$ms"
assert_eq "svc2's row is gone" "$(sql "SELECT count(*) FROM service_identities WHERE name = 'svc2'")" 0
assert_eq "audit log: service.remove" \
    "$(sql "SELECT action || ' ' || (detail->>'name') FROM audit_log WHERE object = '$SVC2'
            ORDER BY id DESC LIMIT 1")" "service.remove svc2"
refused "b1 refuses the removed svc2" b1 svc2 svc2 'issuer is not a registered Device CA'
refused "b2 refuses the removed svc2" b2 svc2 svc2-x \
    "issuer is not a registered Device CA|client id 'svc2-x' is not the device identifier"
restart_broker b1 || bail_out "b1 did not restart: $OUT"
if in_trust b1 svc2.pem; then
    fail "after a restart the removed certificate is no longer in b1's trust directory"
else
    pass "after a restart the removed certificate is no longer in b1's trust directory"
fi
probe b1 svc2 svc2
if [ "$RC" -ne 0 ] && [ "$RC" -ne 5 ] && ! grep -q '^connack' <<<"$OUT"; then
    pass "after a restart the removed svc2 fails already in TLS (pn-probe exit $RC)"
else
    fail "after a restart the removed svc2 fails already in TLS" "exit $RC, output $OUT"
fi
expect_ok "the name can be given a new certificate: service add svc2 svc2b.pem" -- \
    "$PINION" service add svc2 svc2b.pem
wait_until 3 in_trust b2 svc2b.pem || fail "b2 wrote svc2b.pem into its trust directory"
probe b2 svc2b svc2
assert_eq "svc2 connects to b2 with its new certificate" "$RC" 0

# ------------------------------------------------------------- CLI errors
expect_fail "service revoke of an unknown name" "^pinion: no service 'nosuch'$" -- \
    "$PINION" service revoke nosuch
expect_fail "service remove of an unknown name" "^pinion: no service 'nosuch'$" -- \
    "$PINION" service remove nosuch
expect_fail "service revoke of an invalid name" 'invalid service name' -- \
    "$PINION" service revoke 'a b'
expect_status "service revoke without a name is a usage error" 2 -- "$PINION" service revoke
expect_ok "revoking again is harmless" -- "$PINION" service revoke svc --json
assert_eq "... and says it was already revoked" "$(json_get .previous_status "$OUT")" revoked

# ------------------------------------------------------------ not before
expect_fail "service add refuses a certificate not yet valid" 'not valid before' -- \
    "$PINION" service add fut fut.pem
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0:verify_asan_link_order=0" \
    faketime -f +3d "$PINION" service add fut fut.pem >/dev/null ||
    bail_out "service add fut under faketime +3d failed"
wait_until 3 in_trust b1 fut.pem || fail "b1 wrote fut.pem into its trust directory"
refused "a service certificate not yet valid is refused" b1 fut fut \
    'service certificate is not valid before'

# ------------------------------------------------------------ deny lines
make_ca ca # ca/, JITP into sensor
setup "$PINION" device cert --ca ca --id A --out devs
setup "$PINION" device cert --ca ca --id C --out devs
# TLS admits A only once b1's worker has written the new CA into its trust
# directory (CI on 2.1.2 once probed before that: no PUBACK at all).
wait_until 5 in_trust b1 ca/ca.pem || bail_out "b1 did not write the new CA into its trust directory"

denials() { grep -E "pinion: denied .*client '$2'" "${BROKER_LOG[$1]}"; }
pubs=()
for i in $(seq 1 30); do pubs+=(--pub "fleet/B/up/x=$i"); done
t0=$(now_ms)
probe b1 devs/A A --qos 1 --pub 'fleet/A/up/status=ok' "${pubs[@]}"
assert_eq "A's 30 forged publishes are refused" "$(grep -c '^puback fleet/B/up/x ' <<<"$OUT")" 30
probe b1 devs/C C --qos 1 --sub '#' --sub 'fleet/C/down/#'
assert_match "C's subscription to # is refused" "$OUT" $'(^|\n)suback # 128(\n|$)'
lines=$(denials b1 A)
if [ $(($(now_ms) - t0)) -lt 9000 ]; then
    assert_eq "one line for A's 30 denials within the interval" "$(grep -c . <<<"$lines")" 1
fi
assert_match "the line names the client, what was denied and where from" "$lines" \
    "pinion: denied publish to 'fleet/B/up/x' for client 'A' \(user 'A', address 127\.0\.0\.1\)"
assert_match "C's denied subscription has its own line" "$(denials b1 C)" \
    "pinion: denied subscription to '#' for client 'C'"
assert_no_match "allowed publishes and subscriptions leave no line" \
    "$(cat "${BROKER_LOG[b1]}")" "denied .*(fleet/A/up/status|fleet/C/down)"
if wait_until 15 has_line "${BROKER_LOG[b1]}" "denied [0-9]+ more .* for client 'A'"; then
    assert_match "after the interval one line counts the other 29" "$(denials b1 A | tail -n1)" \
        "pinion: denied 29 more publishes/subscriptions for client 'A' in the last 10 s \(last: publish to 'fleet/B/up/x'\)"
else
    fail "after the interval one line counts the other 29" "no such line" "$(denials b1 A)"
fi
assert_eq "two lines for A in all" "$(denials b1 A | grep -c .)" 2
assert_eq "C's single denial needs no count line" "$(denials b1 C | grep -c .)" 1

done_testing
