#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A first connect's Device CA signature (issue 13): the TLS handshake has
# just verified it, and when it did so with the registered CA's own key the
# plugin does not verify it again ($SYS/broker/pinion/ca_signatures/from_tls
# counts those).  When TLS verified it with another key, here an impostor
# CA with the registered CA's very name in the broker's trust directory
# (what OpenSSL's capath cache keeps after a CA is re-keyed or revoked),
# the plugin checks the signature itself (ca_signatures/checked) and
# refuses the device: the impostor's device is not let in under the
# registered CA's organisation.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

make_fleet
start_broker b1 sys_interval=1 || bail_out "broker: $OUT"

for id in dev-1 dev-2 dev-3; do
    device_cert "$id"
    probe b1 "$T/devs/$id" "$id"
    assert_eq "$id admitted (first connect)" "$(head -n1 <<<"$OUT")" "connack 0"
done
wait_sql 10 "SELECT count(*) FROM device_certificates" 3 || bail_out "pins not stored"
until_secs 15 sys_is b1 ca_signatures/from_tls 3 || diag "values: $SYS"
assert_eq "3 CA signatures taken from the TLS handshake" "$(sys_get ca_signatures/from_tls)" 3
assert_eq "none checked again by the plugin" "$(sys_get ca_signatures/checked)" 0

# The impostor: its own key, the registered CA's name (pinion ca create
# with the same CN), and a device certificate without an
# authorityKeyIdentifier, so that names alone match the registered CA.
"$PINION" ca create --cn "Pinion test CA" --out "$T/imp" >/dev/null 2>&1 ||
    bail_out "ca create (impostor)"
assert_eq "the impostor has the registered CA's subject" \
    "$(openssl x509 -in "$T/imp/ca.pem" -noout -subject_hash)" \
    "$(openssl x509 -in "$T/ca/ca.pem" -noout -subject_hash)"
openssl ecparam -name prime256v1 -genkey -noout -out "$T/imp1.key" 2>/dev/null &&
    openssl req -new -key "$T/imp1.key" -subj /CN=imp1 -out "$T/imp1.csr" 2>/dev/null &&
    printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
        extendedKeyUsage=clientAuth subjectKeyIdentifier=none authorityKeyIdentifier=none \
        >"$T/imp1.ext" &&
    openssl x509 -req -in "$T/imp1.csr" -CA "$T/imp/ca.pem" -CAkey "$T/imp/ca.key" \
        -CAcreateserial -days 30 -sha256 -extfile "$T/imp1.ext" -out "$T/imp1.pem" 2>/dev/null ||
    bail_out "cannot make the impostor's device certificate"
assert_no_match "imp1 has no authorityKeyIdentifier" \
    "$(openssl x509 -in "$T/imp1.pem" -noout -text)" 'Authority Key Identifier'

# A fresh broker, whose OpenSSL has not read the registered CA yet: its
# file in the trust directory now holds the impostor, as a capath cache
# would after a re-key.  TLS accepts imp1's chain.
start_broker b2 sys_interval=1 || bail_out "broker b2: $OUT"
hash=$(openssl x509 -in "$T/ca/ca.pem" -noout -subject_hash)
wait_until 50 test -s "${BROKER_TRUST[b2]}/$hash.0" || bail_out "b2 wrote no trust file"
cp "$T/imp/ca.pem" "${BROKER_TRUST[b2]}/$hash.0"
probe b2 "$T/imp1" imp1
assert_eq "imp1, signed by the impostor, is refused" "$(head -n1 <<<"$OUT")" "connack 5"
wait_log b2 'refused certificate .* identifier imp1: issuer is not a registered Device CA' ||
    fail "... because its issuer is not a registered Device CA" "$(tail -5 "${BROKER_LOG[b2]}")"
assert_eq "nothing of imp1 is stored" \
    "$(sql "SELECT count(*) FROM devices WHERE identifier = 'imp1'")" 0
until_secs 15 sys_is b2 ca_signatures/checked 1 || diag "values: $SYS"
assert_eq "b2 checked that signature itself" "$(sys_get ca_signatures/checked)" 1
assert_eq "and took none from TLS" "$(sys_get ca_signatures/from_tls)" 0
done_testing
