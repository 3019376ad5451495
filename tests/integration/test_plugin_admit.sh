#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Device admission at CONNECT (docs/protocol.md: "Identities",
# "Admission", "Registration event") on real Mosquitto
# brokers with the plugin, as a device or an operator observes it: CONNACK
# codes, the broker log, rows in PostgreSQL and the registration event.
#
# The PKI is made with the pinion CLI; openssl (and, for a 129-character CN
# that OpenSSL's encoder refuses, python3-cryptography) only for
# certificates the CLI will not make.  Dates are moved with faketime: around
# the CLI for expired / not-yet-valid certificates, and around a whole
# broker (BROKER_WRAPPER) to see a CA or a pinned certificate expire.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

command -v openssl >/dev/null || bail_out "openssl is not installed"
command -v faketime >/dev/null || bail_out "faketime is not installed (scripts/deps installs it)"

# ------------------------------------------------------------------ helpers

certid() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

# Registers the CA in DIR for org acme; extra args go to `ca register`.
# Sets CAID to its certificate id.
register_ca() {
    local dir=$1 code
    shift
    code=$("$PINION" ca code acme 2>/dev/null) || bail_out "ca code failed"
    "$PINION" ca verification-cert --ca "$dir" --code "$code" --out "$dir/verify.pem" \
        >/dev/null || bail_out "verification-cert for $dir failed"
    "$PINION" ca register acme "$dir/ca.pem" --verification-cert "$dir/verify.pem" "$@" \
        >/dev/null || bail_out "ca register $dir failed"
    CAID=$(certid "$dir/ca.pem")
}

# A CLI-made device certificate: devcert CADIR ID OUTDIR [device cert opts].
devcert() {
    local ca=$1 id=$2 out=$3
    shift 3
    "$PINION" device cert --ca "$ca" --id "$id" --out "$out" "$@" >/dev/null ||
        bail_out "device cert $id failed"
}

# An openssl-made certificate signed by ca/ca.key: ocert NAME SUBJECT KEY
# [BASIC_CONSTRAINTS].  KEY: ec | rsa1024.  Writes odevs/NAME.{key,pem}.
ocert() {
    local name=$1 subj=$2 key=$3 bc=${4:-critical,CA:FALSE}
    mkdir -p odevs
    case $key in
        ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "odevs/$name.key" 2>/dev/null ;;
        rsa1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 \
            -out "odevs/$name.key" 2>/dev/null ;;
    esac
    printf '%s\n' "basicConstraints=$bc" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=clientAuth" "subjectKeyIdentifier=hash" \
        "authorityKeyIdentifier=keyid" >"odevs/$name.ext"
    if ! openssl req -new -key "odevs/$name.key" -subj "$subj" -out "odevs/$name.csr" \
        2>/dev/null || ! openssl x509 -req -in "odevs/$name.csr" -CA ca/ca.pem -CAkey ca/ca.key \
        -days 30 -sha256 -extfile "odevs/$name.ext" -out "odevs/$name.pem" 2>/dev/null; then
        bail_out "openssl could not make odevs/$name ($subj)"
    fi
}

# BROKER_WRAPPER that runs a broker OFFSET (e.g. +2d) away from real time
# (libfaketime preloaded directly; the plugin is never sanitized).
broker_faketime() {
    local lib
    for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        [ -r "$lib" ] && break
    done
    [ -r "$lib" ] || bail_out "libfaketime.so.1 not found"
    echo "env LD_PRELOAD=$lib FAKETIME=$1"
}

# The CLI under faketime(1); LeakSanitizer does not work with libfaketime.
cli_faketime() {
    local offset=$1
    shift
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0:verify_asan_link_order=0" \
        faketime -f "$offset" "$PINION" "$@"
}

# Certificates that must never be pinned (checked at the end).
REFUSED_IDS=()

_refusals() { grep -c 'pinion: refused certificate' "${BROKER_LOG[$1]}"; }

# refused DESC BROKER CERTPREFIX CLIENTID REASON_ERE [pn-probe opts]: the
# CONNECT is answered "not authorised" (pn-probe exit 5, connack 5) and the
# broker logs exactly one refusal line naming the certificate id and the
# reason.
refused() {
    local desc=$1 b=$2 prefix=$3 cid=$4 re=$5 before id lines n
    shift 5
    before=$(_refusals "$b")
    id=$(certid "$prefix.pem")
    probe "$b" "$prefix" "$cid" "$@"
    lines=$(grep 'pinion: refused certificate' "${BROKER_LOG[$b]}" | tail -n "+$((before + 1))")
    n=$(grep -c . <<<"$lines")
    if [ "$RC" -ne 5 ] || [ "$(head -n1 <<<"$OUT")" != "connack 5" ]; then
        fail "$desc: refused at CONNECT" "pn-probe exit $RC, expected 5 (connack 5)" \
            "output: $OUT" "stderr: $ERR"
    elif [ "$n" -ne 1 ]; then
        fail "$desc: refused at CONNECT" "$n new refusal lines in the log, expected 1" "$lines"
    elif ! grep -Eq "pinion: refused certificate $id identifier .+: .*($re)" <<<"$lines"; then
        fail "$desc: refused at CONNECT" "log line lacks id $id or reason /$re/" "$lines"
    else
        pass "$desc: refused at CONNECT"
    fi
}

# admitted DESC BROKER CERTPREFIX CLIENTID [pn-probe opts]
admitted() {
    local desc=$1
    shift
    probe "$@"
    if [ "$RC" -eq 0 ] && [ "$(head -n1 <<<"$OUT")" = "connack 0" ]; then
        pass "$desc: admitted"
    else
        fail "$desc: admitted" "pn-probe exit $RC, expected 0 (connack 0)" "output: $OUT" \
            "stderr: $ERR" "log: $(tail -n 3 "${BROKER_LOG[$2]}")"
    fi
}

pins_of() { sql "SELECT count(*) FROM device_certificates WHERE id = '$1'"; }
is_pinned() { [ "$(pins_of "$1")" = 1 ]; }
device_pins() {
    sql "SELECT count(*) FROM device_certificates c JOIN devices d ON d.id = c.device_id
         WHERE d.identifier = '$1'"
}

# ---------------------------------------------------------------- the PKI

"$PINION" org create acme >/dev/null || bail_out "org create failed"
"$PINION" product create acme sensor >/dev/null || bail_out "product create failed"

"$PINION" ca create --cn "Acme JITP CA" --out ca >/dev/null || bail_out "ca create failed"
register_ca ca --jitp sensor --tags a,b
CA_MAIN=$CAID
"$PINION" ca create --cn "Acme no-JITP CA" --out noj >/dev/null || bail_out "ca create failed"
register_ca noj
"$PINION" ca create --cn "Acme CA to disable" --out cb >/dev/null || bail_out "ca create failed"
register_ca cb --jitp sensor
CA_CB=$CAID
# Valid from 500 days ago: device certificates can be dated in the past.
cli_faketime -500d ca create --cn "Acme old CA" --out old --days 3650 >/dev/null ||
    bail_out "ca create under faketime failed"
register_ca old --jitp sensor
# Made 2 days ago for 3 days: expires one day from now.
cli_faketime -2d ca create --cn "Acme short CA" --out short --days 3 >/dev/null ||
    bail_out "ca create under faketime failed"
register_ca short --jitp sensor
"$PINION" ca create --cn "Acme Root" --out root >/dev/null || bail_out "ca create failed"
"$PINION" ca create --cn "Acme Intermediate" --out inter --parent root >/dev/null ||
    bail_out "ca create --parent failed"
register_ca inter --jitp sensor # the root is not registered
CA_INTER=$CAID
"$PINION" ca create --cn "Unregistered CA" --out unreg >/dev/null || bail_out "ca create failed"

for id in d1 d2 d3 e0 x1; do devcert ca "$id" devs; done
devcert ca e1 devs --days 1          # expires tomorrow (pinned-expiry checks)
devcert ca d1 devs2                  # d1 again, with a different key
devcert noj n1 devs
devcert noj n2 devs
devcert cb p1 devs
devcert cb p2 devs
devcert short s1 devs
devcert short s2 devs
devcert inter i1 devs
devcert unreg u1 devs
devcert ca cn-x devs
devcert ca cn-y devs
cli_faketime -400d device cert --ca old --id exp1 --out devs --days 1 >/dev/null ||
    bail_out "device cert under faketime -400d failed"
cli_faketime +30d device cert --ca old --id fut1 --out devs >/dev/null ||
    bail_out "device cert under faketime +30d failed"
"$PINION" device create acme sensor n2 >/dev/null || bail_out "device create n2 failed"

# Same key as devs/d1: a renewed certificate made from a CSR.
mkdir -p rot rot2
openssl req -new -key devs/d1.key -subj /CN=d1 -out rot/d1.csr 2>/dev/null ||
    bail_out "openssl req (CSR) failed"
devcert ca d1 rot --csr rot/d1.csr
cp devs/d1.key rot/d1.key
devcert ca d1 rot2 --csr rot/d1.csr
cp devs/d1.key rot2/d1.key

# A self-signed P-256 service certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout svc.key \
    -out svc.pem -days 30 -subj /CN=svc -addext extendedKeyUsage=clientAuth >/dev/null 2>&1 ||
    bail_out "openssl could not make the service certificate"
"$PINION" service add svc svc.pem >/dev/null || bail_out "service add failed"

start_broker b1 || bail_out "broker b1 did not start: $OUT"

# ------------------------------------------- JITP first connect and event

probe_bg b1 svc svc "$T/svc.out" --sub 'fleet/events/#' --expect 1 --stay 15
SVC_PID=$PROBE_PID
on_exit "kill $SVC_PID 2>/dev/null || true"
if wait_until 5 grep -q '^suback fleet/events/# 0$' "$T/svc.out"; then
    pass "service identity subscribes to fleet/events/#"
else
    fail "service identity subscribes to fleet/events/#" "$(cat "$T/svc.out")"
fi

D1=$(certid devs/d1.pem)
t0=$(now_ms)
admitted "JITP device d1, first try" b1 devs/d1 d1
if wait_until 3 is_pinned "$D1"; then
    ms=$(($(now_ms) - t0))
    if [ "$ms" -le 1000 ]; then
        pass "d1's certificate pinned in device_certificates within 1 s (${ms} ms)"
    else
        fail "d1's certificate pinned in device_certificates within 1 s" "took ${ms} ms"
    fi
else
    fail "d1's certificate pinned in device_certificates within 1 s" "no row after 3 s"
fi
assert_eq "d1 created by JITP with the CA's product and tags" \
    "$(sql "SELECT p.name || ' ' || array_to_string(d.tags, ',') || ' ' || d.status
            FROM devices d JOIN products p ON p.id = d.product_id
            WHERE d.identifier = 'd1'")" "sensor a,b active"
assert_eq "the pin binds d1's certificate to d1 and its CA" \
    "$(sql "SELECT d.identifier || ' ' || c.ca_id || ' ' || c.status FROM device_certificates c
            JOIN devices d ON d.id = c.device_id WHERE c.id = '$D1'")" "d1 $CA_MAIN active"
assert_eq "d1's first_seen is set" \
    "$(sql "SELECT first_seen IS NOT NULL FROM devices WHERE identifier = 'd1'")" t

wait_until 3 grep -q '^msg ' "$T/svc.out"
kill "$SVC_PID" 2>/dev/null
wait "$SVC_PID" 2>/dev/null
ev=$(grep -m1 '^msg ' "$T/svc.out")
assert_eq "registration event on fleet/events/certificates/registered/<caCertificateId>" \
    "$(cut -d' ' -f2 <<<"$ev")" "fleet/events/certificates/registered/$CA_MAIN"
payload=$(cut -d' ' -f3- <<<"$ev")
assert_eq "event certificateId" "$(json_get .certificateId "$payload")" "$D1"
assert_eq "event caCertificateId" "$(json_get .caCertificateId "$payload")" "$CA_MAIN"
assert_eq "event deviceId" "$(json_get .deviceId "$payload")" d1
assert_eq "event certificateStatus" "$(json_get .certificateStatus "$payload")" ACTIVE
assert_match "event orgId, timestamp and certificateRegistrationTimestamp" \
    "$(json_get .orgId "$payload") $(json_get .timestamp "$payload") $(json_get .certificateRegistrationTimestamp "$payload")" \
    '^acme [0-9]{13} [0-9]{13}$'

admitted "pinned d1 reconnects" b1 devs/d1 d1

# ------------------------------------------------------------- refusals

# An unregistered CA is not in the trust directory (the plugin writes only
# registered ones there), so the TLS layer alone refuses its devices.
REFUSED_IDS+=("$(certid devs/u1.pem)")
probe b1 devs/u1 u1
if [ "$RC" -ne 0 ] && ! grep -q '^connack 0' <<<"$OUT"; then
    pass "unregistered CA: TLS handshake refused (pn-probe exit $RC)"
else
    fail "unregistered CA: TLS handshake refused" "exit $RC, output $OUT"
fi
refused "expired device certificate, first connect" b1 devs/exp1 exp1 'certificate expired on'
REFUSED_IDS+=("$(certid devs/exp1.pem)")
refused "not-yet-valid device certificate" b1 devs/fut1 fut1 'not valid before'
REFUSED_IDS+=("$(certid devs/fut1.pem)")
refused "client id differs from the CN" b1 devs/d2 other-id "client id 'other-id' is not"
REFUSED_IDS+=("$(certid devs/d2.pem)")
refused "pinned d1 with another client id" b1 devs/d1 d1x "client id 'd1x' is not"
refused "unknown device of a CA without JITP" b1 devs/n1 n1 'no JITP'
REFUSED_IDS+=("$(certid devs/n1.pem)")
admitted "pre-created device n2 of a CA without JITP" b1 devs/n2 n2
refused "new key for pinned d1 (rotation same_key)" b1 devs2/d1 d1 'different key'
# Service 'svc' connects as svc or svc-...: no device may hold those client
# ids (it would take the service's session over), nor may the service use a
# device's.  'events' is a level of the topic root, not a device.
devcert ca svc-1 devs
refused "a device named in the service's namespace (svc-1)" b1 devs/svc-1 svc-1 \
    "identifier 'svc-1' is in service 'svc''s client id namespace"
REFUSED_IDS+=("$(certid devs/svc-1.pem)")
ocert events /CN=events ec
refused "the reserved identifier 'events'" b1 odevs/events events "identifier 'events' is reserved"
REFUSED_IDS+=("$(certid odevs/events.pem)")
refused "the service identity with a device's client id" b1 svc d1 \
    "client id 'd1' is not the service's name 'svc'"

ocert catrue /CN=catrue ec critical,CA:TRUE
refused "CA:TRUE certificate used as a device certificate" b1 odevs/catrue catrue 'CA:TRUE'
REFUSED_IDS+=("$(certid odevs/catrue.pem)")

# RSA-1024: Debian's OpenSSL (security level 2) refuses such a key in the
# TLS handshake already; if a build lets it through, the plugin must.
ocert rsa1k /CN=rsa1k rsa1024
REFUSED_IDS+=("$(certid odevs/rsa1k.pem)")
before=$(_refusals b1)
probe b1 odevs/rsa1k rsa1k
if [ "$RC" -eq 5 ]; then
    assert_match "RSA-1024 device key refused by the plugin" \
        "$(tail -n "+$((before + 1))" "${BROKER_LOG[b1]}" | grep 'refused certificate')" 'RSA-1024'
elif [ "$RC" -ne 0 ] && ! grep -q '^connack 0' <<<"$OUT"; then
    pass "RSA-1024 device key refused (TLS handshake, pn-probe exit $RC)"
else
    fail "RSA-1024 device key refused" "exit $RC, output $OUT"
fi

# Identifiers that are not ^[A-Za-z0-9._:-]{1,128}$, as CN.  The client id
# equals the CN so that only the identifier rule can refuse them.
ocert slash '/CN=a\/b' ec
ocert plus '/CN=a\+b' ec
ocert hash '/CN=a#b' ec
# shellcheck disable=SC2016 # '$x' is meant literally
ocert dollar '/CN=$x' ec
ocert space '/CN=a b' ec
ocert nocn '/O=Acme/OU=no common name' ec
refused "CN a/b" b1 odevs/slash 'a/b' 'not a valid device identifier'
refused "CN a+b" b1 odevs/plus 'a+b' 'not a valid device identifier'
refused "CN a#b" b1 odevs/hash 'a#b' 'not a valid device identifier'
# shellcheck disable=SC2016
refused "CN \$x" b1 odevs/dollar '$x' 'not a valid device identifier'
refused "CN 'a b'" b1 odevs/space 'a b' 'not a valid device identifier'
refused "certificate without a CN" b1 odevs/nocn nocn 'no CN'
for n in slash plus hash dollar space nocn; do REFUSED_IDS+=("$(certid "odevs/$n.pem")"); done

# 129 characters: OpenSSL's encoder stops at 64 (ub-common-name), so
# python3-cryptography writes this one.
long=$(printf 'L%.0s' $(seq 129))
if "$([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)" - "$long" <<'EOF' 2>"$T/py.err"; then
import datetime, sys, warnings
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
warnings.simplefilter("ignore")
ca = x509.load_pem_x509_certificate(open("ca/ca.pem", "rb").read())
cakey = serialization.load_pem_private_key(open("ca/ca.key", "rb").read(), None)
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sys.argv[1],
                                                    _validate=False)]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(cakey.public_key()),
                       critical=False)
        .sign(cakey, hashes.SHA256()))
open("odevs/long.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open("odevs/long.key", "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
EOF
    refused "CN of 129 characters" b1 odevs/long "$long" 'not a valid device identifier'
    REFUSED_IDS+=("$(certid odevs/long.pem)")
else
    fail "CN of 129 characters" "python3-cryptography could not make the certificate" \
        "$(cat "$T/py.err")"
fi

# Now as if the unregistered CA had been left in the trust directory (a
# stale or hand-edited capath): TLS accepts the chain, the plugin refuses.
hash=$(openssl x509 -in unreg/ca.pem -noout -subject_hash)
cp unreg/ca.pem "${BROKER_TRUST[b1]}/$hash.0"
chmod 0644 "${BROKER_TRUST[b1]}/$hash.0"
refused "CA in the trust dir but not registered" b1 devs/u1 u1 'not a registered Device CA'

# -------------------------------------- intermediate CA as trust anchor

admitted "device of a registered intermediate CA (root not registered)" b1 devs/i1 i1
I1=$(certid devs/i1.pem)
if wait_until 3 is_pinned "$I1"; then
    assert_eq "i1 pinned under the intermediate CA" \
        "$(sql "SELECT ca_id FROM device_certificates WHERE id = '$I1'")" "$CA_INTER"
else
    fail "i1 pinned under the intermediate CA" "no row after 3 s"
fi

# ------------------------------------------------------------- rotation

admitted "renewed certificate, same key (rotation same_key)" b1 rot/d1 d1
ROT=$(certid rot/d1.pem)
if wait_until 3 is_pinned "$ROT"; then
    assert_eq "... pinned as d1's second certificate" "$(device_pins d1)" 2
else
    fail "... pinned as d1's second certificate" "no row after 3 s"
fi
admitted "the first certificate of d1 still connects" b1 devs/d1 d1

start_broker bany rotation=any || bail_out "broker rotation=any did not start: $OUT"
admitted "new key for pinned d1 with rotation any" bany devs2/d1 d1
if wait_until 3 is_pinned "$(certid devs2/d1.pem)"; then
    assert_eq "... pinned as d1's third certificate" "$(device_pins d1)" 3
else
    fail "... pinned as d1's third certificate" "no row after 3 s"
fi
start_broker bnone rotation=none || bail_out "broker rotation=none did not start: $OUT"
refused "renewed certificate, same key, with rotation none" bnone rot2/d1 d1 'rotation none'
REFUSED_IDS+=("$(certid rot2/d1.pem)")
admitted "pinned d1 with rotation none" bnone devs/d1 d1
stop_broker bany
stop_broker bnone

# ----------------------------------------------------- identity=client_id

start_broker b2 identity=client_id || bail_out "broker identity=client_id did not start: $OUT"
admitted "identity client_id: CN cn-x as client id thing-1" b2 devs/cn-x thing-1
CNX=$(certid devs/cn-x.pem)
if wait_until 3 is_pinned "$CNX"; then
    assert_eq "... the device is thing-1, with the certificate pinned to it" \
        "$(sql "SELECT d.identifier FROM device_certificates c JOIN devices d
                ON d.id = c.device_id WHERE c.id = '$CNX'")" thing-1
else
    fail "... the device is thing-1, with the certificate pinned to it" "no row after 3 s"
fi
assert_eq "... no device named after the CN" \
    "$(sql "SELECT count(*) FROM devices WHERE identifier = 'cn-x'")" 0
admitted "identity client_id: pinned thing-1 reconnects" b2 devs/cn-x thing-1
refused "identity client_id: pinned certificate with another client id" b2 devs/cn-x thing-2 \
    "client id 'thing-2' is not"
refused "identity client_id: invalid client id dev/1" b2 devs/cn-y dev/1 \
    'not a valid device identifier'
REFUSED_IDS+=("$(certid devs/cn-y.pem)")
stop_broker b2

# ---------------------------- CA disabled, device revoked (and kicked)

admitted "p1 of CA cb (pinned before the CA is disabled)" b1 devs/p1 p1
admitted "d3 (to be revoked)" b1 devs/d3 d3
wait_until 3 is_pinned "$(certid devs/p1.pem)" || diag "p1 not pinned after 3 s"
wait_until 3 is_pinned "$(certid devs/d3.pem)" || diag "d3 not pinned after 3 s"
probe_bg b1 devs/d3 d3 "$T/d3.out" --sub 'fleet/d3/down/#' --stay 10
D3_PID=$PROBE_PID
on_exit "kill $D3_PID 2>/dev/null || true"
wait_until 5 grep -q '^suback' "$T/d3.out" || diag "d3's live session did not start"
"$PINION" ca disable "$CA_CB" >/dev/null || bail_out "ca disable failed"
"$PINION" device revoke d3 >/dev/null || bail_out "device revoke failed"
t0=$(now_ms)
# Changes are applied in the order they were committed: once d3 is kicked,
# the CA's new status is in the broker's memory too.
if wait_until 3 grep -q '^disconnected' "$T/d3.out"; then
    ms=$(($(now_ms) - t0))
    if [ "$ms" -le 1000 ]; then
        pass "revoked d3's live session disconnected within 1 s (${ms} ms)"
    else
        fail "revoked d3's live session disconnected within 1 s" "took ${ms} ms"
    fi
else
    fail "revoked d3's live session disconnected within 1 s" "$(cat "$T/d3.out")"
fi
wait "$D3_PID" 2>/dev/null
refused "revoked d3 reconnects" b1 devs/d3 d3 'is revoked'
refused "new device of a disabled CA" b1 devs/p2 p2 'CA [0-9a-f]+ is disabled'
REFUSED_IDS+=("$(certid devs/p2.pem)")
admitted "pinned p1 after its CA was disabled" b1 devs/p1 p1
# Deleted (SQL only; the pins keep ca_id NULL): still admitted, also by a
# broker started afterwards, whose trust directory no longer has the CA.
sql "DELETE FROM ca_certificates WHERE id = '$CA_CB'" >/dev/null || bail_out "cannot delete CA cb"
admitted "pinned p1 after its CA was deleted" b1 devs/p1 p1
start_broker bdel || bail_out "broker bdel: $OUT"
admitted "pinned p1 after its CA was deleted, on a broker started since" bdel devs/p1 p1
probe bdel devs/p2 p2
if [ "$RC" -ne 0 ] && ! grep -qx 'connack 0' <<<"$OUT"; then
    pass "... while a new device of that CA is refused there (TLS: exit $RC)"
else
    fail "... while a new device of that CA is refused there" "exit $RC, output $OUT"
fi
stop_broker bdel

# ------------------------------------- time: CA and pinned cert expiry

admitted "s1 of the short-lived CA, pinned while it is valid" b1 devs/s1 s1
admitted "e1 (certificate valid 1 day), pinned" b1 devs/e1 e1
wait_until 3 is_pinned "$(certid devs/s1.pem)" || diag "s1 not pinned after 3 s"
wait_until 3 is_pinned "$(certid devs/e1.pem)" || diag "e1 not pinned after 3 s"

# A broker living two days ahead: the short CA has expired there.
BROKER_WRAPPER=$(broker_faketime +2d) start_broker bft ||
    bail_out "broker under faketime did not start: $OUT"
admitted "faketime +2d: pinned s1 although its CA has expired" bft devs/s1 s1
refused "faketime +2d: new device s2 of the expired CA" bft devs/s2 s2 \
    'outside its validity period'
refused "faketime +2d: pinned e1 whose own certificate has expired" bft devs/e1 e1 \
    'pinned certificate has expired'
stop_broker bft
BROKER_WRAPPER=$(broker_faketime +2d) start_broker bft2 allow_expired_pinned=true ||
    bail_out "broker under faketime did not start: $OUT"
admitted "faketime +2d, allow_expired_pinned true: pinned e1 with an expired certificate" \
    bft2 devs/e1 e1
stop_broker bft2
admitted "real time: s2 of the short CA (still valid here)" b1 devs/s2 s2

# ------------------------------------------------------------- the end

sleep 0.3 # a wrongly admitted certificate would be pinned by now
pinned_refused=""
for id in "${REFUSED_IDS[@]}"; do
    [ "$(pins_of "$id")" = 0 ] || pinned_refused+=" $id"
done
assert_eq "no refused certificate was pinned (${#REFUSED_IDS[@]} checked)" "$pinned_refused" ""
assert_eq "no device row for refused identifiers" \
    "$(sql "SELECT string_agg(identifier, ',') FROM devices
            WHERE identifier IN ('u1','exp1','fut1','d2','other-id','n1','catrue','rsa1k',
                                 'nocn','dev/1','thing-2','cn-y','p2')")" ""

done_testing
