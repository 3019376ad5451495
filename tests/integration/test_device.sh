#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Device certificates (pinion device cert; docs/protocol.md,
# "Identities"), device records
# (device create | list | show | tag | revoke) and service identities
# (service add).  Certificates are checked with openssl, as a device, a
# broker or AWS IoT would read them.
. "$PINION_SOURCE/tests/harness/lib.sh"

command -v openssl >/dev/null || bail_out "openssl is not installed"

fingerprint() { # FILE [PEM|DER]
    openssl x509 -in "$1" -inform "${2:-PEM}" -noout -fingerprint -sha256 |
        sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f'
}
keyid_hex() { tail -n1 | sed 's/^ *//; s/^keyid://; s/://g' | tr 'A-F' 'a-f'; }
# How many entries of DIR match the glob PATTERN.
n_files() { # DIR PATTERN
    local f n=0
    for f in "$1"/$2; do
        [ -e "$f" ] && n=$((n + 1))
    done
    echo "$n"
}
cn_of() {
    openssl x509 -in "$1" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p'
}

expect_ok "org create acme" -- "$PINION" org create acme
expect_ok "product create acme sensor" -- "$PINION" product create acme sensor
expect_ok "ca create" -- "$PINION" ca create --cn "Acme Device CA" --out ca
ca_ski=$(openssl x509 -in ca/ca.pem -noout -ext subjectKeyIdentifier | keyid_hex)

# ---- device cert: EC P-256 by default

expect_ok "device cert (EC default)" -- "$PINION" device cert --ca ca --id dev-1 --out certs
printed=$OUT
expect_ok "openssl verify -CAfile ca.pem accepts it" -- \
    openssl verify -CAfile ca/ca.pem certs/dev-1.pem
assert_match "... and says OK" "$OUT" 'dev-1.pem: OK'
text=$(openssl x509 -in certs/dev-1.pem -noout -text)
assert_eq "CN = identifier" "$(cn_of certs/dev-1.pem)" dev-1
assert_eq "authorityKeyIdentifier = the CA's subjectKeyIdentifier" \
    "$(openssl x509 -in certs/dev-1.pem -noout -ext authorityKeyIdentifier | keyid_hex)" \
    "$ca_ski"
assert_match "has a subjectKeyIdentifier" "$text" 'Subject Key Identifier'
assert_match "basicConstraints CA:FALSE" "$text" 'CA:FALSE'
assert_no_match "not CA:TRUE" "$text" 'CA:TRUE'
assert_match "extendedKeyUsage TLS Web Client Authentication" \
    "$(openssl x509 -in certs/dev-1.pem -noout -ext extendedKeyUsage)" \
    'TLS Web Client Authentication'
assert_match "EC P-256 key" "$text" 'prime256v1|P-256'
assert_match "ECDSA-SHA256 signature" "$text" 'ecdsa-with-SHA256'
assert_eq "key file mode 0600" "$(stat -c %a certs/dev-1.key)" 600
assert_eq "the key belongs to the certificate" \
    "$(openssl pkey -in certs/dev-1.key -pubout | sha256sum)" \
    "$(openssl x509 -in certs/dev-1.pem -noout -pubkey | sha256sum)"
dev1=$(fingerprint certs/dev-1.pem)
assert_match "printed id = openssl SHA-256 fingerprint" "$printed" "id +$dev1"

expect_ok "device cert --key rsa --json" -- \
    "$PINION" device cert --ca ca --id dev-rsa --out certs --key rsa --json
assert_eq "--json id = openssl fingerprint" "$(json_get .id "$OUT")" \
    "$(fingerprint certs/dev-rsa.pem)"
assert_eq "--json key_type" "$(json_get .key_type "$OUT")" RSA-2048
assert_eq "--json key path" "$(json_get .key "$OUT")" certs/dev-rsa.key
assert_match "RSA 2048-bit key" "$(openssl x509 -in certs/dev-rsa.pem -noout -text)" \
    'Public-Key: \(2048 bit\)'
assert_match "RSA key is rsaEncryption" "$(openssl x509 -in certs/dev-rsa.pem -noout -text)" \
    'rsaEncryption'
assert_eq "RSA key file mode 0600" "$(stat -c %a certs/dev-rsa.key)" 600
expect_ok "openssl verifies the RSA device cert" -- \
    openssl verify -CAfile ca/ca.pem certs/dev-rsa.pem
expect_fail "--key dsa is refused" 'ec or rsa' -- \
    "$PINION" device cert --ca ca --id dev-dsa --out certs --key dsa
assert_eq "no file for dev-dsa" "$(n_files certs "dev-dsa*")" 0

# ---- refuses to overwrite

sums=$(sha256sum certs/dev-1.pem certs/dev-1.key)
expect_fail "device cert refuses to overwrite existing files" 'refusing to overwrite' -- \
    "$PINION" device cert --ca ca --id dev-1 --out certs
assert_eq "dev-1's certificate and key are unchanged" \
    "$(sha256sum certs/dev-1.pem certs/dev-1.key)" "$sums"
echo "keep" >certs/only-key.key
expect_fail "an existing key file alone also blocks" 'refusing to overwrite' -- \
    "$PINION" device cert --ca ca --id only-key --out certs
assert_eq "... it is kept" "$(cat certs/only-key.key)" keep
assert_eq "... and no certificate was written" "$(n_files certs only-key.pem)" 0

# ---- --csr: the CLI never sees the private key

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout secret.key \
    -subj "/CN=whatever-the-device-says" -out dev.csr 2>/dev/null ||
    bail_out "openssl req (EC CSR) failed"
expect_ok "device cert --csr" -- \
    "$PINION" device cert --ca ca --id dev-csr --out csrcerts --csr dev.csr --json
assert_eq "--csr --json: key is null" "$(json_get .key "$OUT")" null
assert_eq "--csr --json: id = fingerprint" "$(json_get .id "$OUT")" \
    "$(fingerprint csrcerts/dev-csr.pem)"
assert_eq "the certificate's public key is the CSR's" \
    "$(openssl x509 -in csrcerts/dev-csr.pem -noout -pubkey)" \
    "$(openssl req -in dev.csr -noout -pubkey)"
assert_eq "CN is the --id, not the CSR's subject" "$(cn_of csrcerts/dev-csr.pem)" dev-csr
assert_eq "no key file written" "$(ls csrcerts)" dev-csr.pem
expect_ok "openssl verifies the CSR-based cert" -- \
    openssl verify -CAfile ca/ca.pem csrcerts/dev-csr.pem
openssl req -in dev.csr -outform DER -out dev.csr.der || bail_out "openssl req -outform DER"
expect_ok "a DER CSR is accepted too" -- \
    "$PINION" device cert --ca ca --id dev-csr-der --out csrcerts --csr dev.csr.der
assert_eq "... same public key" \
    "$(openssl x509 -in csrcerts/dev-csr-der.pem -noout -pubkey)" \
    "$(openssl req -in dev.csr -noout -pubkey)"

# Flip one bit of the last byte of the DER: inside the signature value.
cp dev.csr.der broken.csr.der
size=$(stat -c %s broken.csr.der)
last=$(od -An -tu1 -j $((size - 1)) -N1 broken.csr.der | tr -d ' ')
printf '%b' "\\$(printf '%03o' $((last ^ 1)))" |
    dd of=broken.csr.der bs=1 seek=$((size - 1)) conv=notrunc status=none
assert_eq "the broken CSR still parses (only its signature is wrong)" \
    "$(openssl req -in broken.csr.der -inform DER -noout -pubkey)" \
    "$(openssl req -in dev.csr -noout -pubkey)"
expect_fail "a CSR with a broken signature is refused" 'signature' -- \
    "$PINION" device cert --ca ca --id dev-broken --out csrcerts --csr broken.csr.der
assert_eq "no certificate for the broken CSR" "$(n_files csrcerts "dev-broken*")" 0

openssl req -new -newkey rsa:1024 -nodes -keyout weak.key -subj "/CN=weak" -out weak.csr \
    2>/dev/null || bail_out "openssl req (RSA-1024 CSR) failed"
expect_fail "an RSA-1024 CSR is refused" 'RSA-1024.*weak' -- \
    "$PINION" device cert --ca ca --id dev-weak --out csrcerts --csr weak.csr
assert_eq "no certificate for the weak CSR" "$(n_files csrcerts "dev-weak*")" 0
printf 'not a csr\n' >garbage.csr
expect_fail "a garbage CSR is refused" 'garbage\.csr' -- \
    "$PINION" device cert --ca ca --id dev-garbage --out csrcerts --csr garbage.csr

# ---- identifiers (docs/protocol.md, "Identities": ^[A-Za-z0-9._:-]{1,128}$)

long128=$(printf 'x%.0s' $(seq 128))
long129=$(printf 'y%.0s' $(seq 129))
# shellcheck disable=SC2016 # '$sys' is meant literally
for bad in 'a/b' 'a+b' 'a#b' '$sys' '' "$long129" 'a b' $'caf\xc3' $'\xff' 'café' 'a*b'; do
    shown=$(printf '%q' "$bad")
    expect_fail "device cert refuses identifier ${shown:0:40}" 'invalid device identifier' -- \
        "$PINION" device cert --ca ca --id "$bad" --out badcerts
    expect_fail "device create refuses identifier ${shown:0:40}" 'invalid device identifier' -- \
        "$PINION" device create acme sensor "$bad"
done
assert_eq "no files for refused identifiers" "$(n_files badcerts "*")" 0
assert_eq "no device rows for refused identifiers" "$(sql "SELECT count(*) FROM devices")" 0
expect_ok "a 128-character identifier is accepted" -- \
    "$PINION" device cert --ca ca --id "$long128" --out certs
assert_eq "... and is the certificate's CN" "$(cn_of "certs/$long128.pem")" "$long128"
expect_ok "... which openssl verifies" -- openssl verify -CAfile ca/ca.pem "certs/$long128.pem"
expect_ok "identifier with every allowed punctuation (._:-)" -- \
    "$PINION" device cert --ca ca --id 'A.z_0:9-x' --out certs
assert_eq "... is the CN" "$(cn_of certs/A.z_0:9-x.pem)" 'A.z_0:9-x'

# ---- CA directory problems

expect_fail "device cert with a missing CA dir" 'nosuchca' -- \
    "$PINION" device cert --ca nosuchca --id dev-x --out certs
mkdir wrongkey || bail_out "mkdir wrongkey"
cp ca/ca.pem wrongkey/ || bail_out "cp ca.pem"
openssl ecparam -name prime256v1 -genkey -noout -out wrongkey/ca.key 2>/dev/null ||
    bail_out "cannot make wrongkey/ca.key"
expect_fail "device cert with a CA key that does not match ca.pem" 'does not belong' -- \
    "$PINION" device cert --ca wrongkey --id dev-x --out certs
assert_eq "no certificate for dev-x" "$(n_files certs "dev-x*")" 0

# ---- device records

expect_ok "device create with tags" -- "$PINION" device create acme sensor dev-1 --tags a,b
assert_match "device create prints the device" "$OUT" 'dev-1'
assert_eq "device row stored with tags a,b" \
    "$(sql "SELECT array_to_string(tags, ',') || ' ' || status FROM devices
            WHERE identifier = 'dev-1'")" 'a,b active'
expect_fail "duplicate device is refused" 'already exists' -- \
    "$PINION" device create acme sensor dev-1
assert_eq "still one dev-1" "$(sql "SELECT count(*) FROM devices WHERE identifier = 'dev-1'")" 1
expect_fail "device create in a missing product" 'no product' -- \
    "$PINION" device create acme nosuch dev-9
expect_fail "device create with an invalid tag" 'invalid tag' -- \
    "$PINION" device create acme sensor dev-9 --tags 'ok,not ok'
assert_eq "dev-9 was not created" "$(sql "SELECT count(*) FROM devices WHERE identifier = 'dev-9'")" 0
expect_ok "device create --json" -- "$PINION" device create acme sensor dev-2 --json
assert_eq "--json identifier" "$(json_get .identifier "$OUT")" dev-2
assert_eq "--json product" "$(json_get .product "$OUT")" sensor
assert_eq "--json tags empty" "$(json_get .tags "$OUT")" '[]'
assert_eq "--json status" "$(json_get .status "$OUT")" active

expect_ok "device tag dev-1 +c -a" -- "$PINION" device tag dev-1 +c -a --json
assert_eq "tags are now b,c" "$(json_get .tags "$OUT")" '["b","c"]'
assert_eq "stored tags are b,c" \
    "$(sql "SELECT array_to_string(tags, ',') FROM devices WHERE identifier = 'dev-1'")" b,c
expect_ok "adding an existing tag does not duplicate it" -- "$PINION" device tag dev-1 +b --json
assert_eq "tags still b,c" "$(json_get .tags "$OUT")" '["b","c"]'
expect_fail "device tag on an unknown device" 'no device' -- "$PINION" device tag nosuch +a
expect_fail "device tag with an invalid tag" 'invalid tag' -- "$PINION" device tag dev-1 '+a/b'

expect_ok "device list acme" -- "$PINION" device list acme
assert_match "list shows dev-1" "$OUT" 'dev-1'
assert_match "list shows dev-2" "$OUT" 'dev-2'
expect_ok "device list acme --json" -- "$PINION" device list acme --json
assert_eq "list --json: first is dev-1" "$(json_get '[0].identifier' "$OUT")" dev-1
assert_eq "list --json: dev-1's tags" "$(json_get '[0].tags' "$OUT")" '["b","c"]'
assert_eq "list --json: second is dev-2" "$(json_get '[1].identifier' "$OUT")" dev-2
assert_eq "list --json: no third" "$(json_get '[2]' "$OUT" || echo absent)" absent
expect_ok "device show dev-1" -- "$PINION" device show dev-1
assert_match "show prints the product" "$OUT" 'sensor'
expect_fail "device show of an unknown device" 'no device' -- "$PINION" device show nosuch

# Pinned certificates, as the plugin would insert them.
pin() { # IDENTIFIER CERT.pem
    local id der
    id=$(fingerprint "$2")
    der=$(openssl x509 -in "$2" -outform DER | base64 -w0)
    sql "INSERT INTO device_certificates (id, device_id, serial, spki_sha256, not_before,
                                          not_after, der)
         SELECT '$id', d.id, '01', repeat('0', 64), now(), now() + interval '1 day',
                decode('$der', 'base64')
         FROM devices d WHERE d.identifier = '$1'" >/dev/null || return 1
    echo "$id"
}
c1=$(pin dev-1 certs/dev-1.pem) || bail_out "cannot pin dev-1"
c2=$(pin dev-1 certs/dev-rsa.pem) || bail_out "cannot pin dev-1's second certificate"
c3=$(pin dev-2 csrcerts/dev-csr.pem) || bail_out "cannot pin dev-2"
cert_status() { sql "SELECT status FROM device_certificates WHERE id = '$1'"; }
dev_status() { sql "SELECT status FROM devices WHERE identifier = '$1'"; }

expect_ok "device show --json lists pinned certificates" -- "$PINION" device show dev-1 --json
assert_eq "show --json: two certificates" \
    "$(json_get .certificates "$OUT" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" 2
assert_eq "show --json: first certificate id" "$(json_get '.certificates[0].id' "$OUT")" "$c1"

expect_ok "device revoke dev-1 --cert (by prefix)" -- \
    "$PINION" device revoke dev-1 --cert "${c2:0:12}" --json
assert_eq "--cert --json: one certificate revoked" \
    "$(json_get .revoked_certificates "$OUT")" 1
assert_eq "that certificate is revoked" "$(cert_status "$c2")" revoked
assert_eq "dev-1's other certificate stays active" "$(cert_status "$c1")" active
assert_eq "dev-1 itself stays active" "$(dev_status dev-1)" active
expect_fail "revoking another device's certificate through dev-1 is refused" \
    'does not belong' -- "$PINION" device revoke dev-1 --cert "$c3"
assert_eq "dev-2's certificate stays active" "$(cert_status "$c3")" active
expect_fail "revoking an unknown certificate is refused" 'no device certificate' -- \
    "$PINION" device revoke dev-1 --cert 0123456789abcdef

expect_ok "device revoke dev-1" -- "$PINION" device revoke dev-1 --json
assert_eq "revoke --json: what" "$(json_get .revoked "$OUT")" device
assert_eq "dev-1 is revoked" "$(dev_status dev-1)" revoked
assert_eq "dev-1's remaining certificate is revoked with it" "$(cert_status "$c1")" revoked
assert_eq "dev-2 is untouched" "$(dev_status dev-2)" active
assert_eq "dev-2's certificate is untouched" "$(cert_status "$c3")" active
expect_ok "device show reports revoked" -- "$PINION" device show dev-1 --json
assert_eq "show --json: status revoked" "$(json_get .status "$OUT")" revoked
expect_fail "device revoke of an unknown device" 'no device' -- "$PINION" device revoke nosuch
expect_fail "device revoke --cert of an unknown device" 'no device' -- \
    "$PINION" device revoke nosuch --cert "$c3"
assert_eq "dev-2's certificate still active" "$(cert_status "$c3")" active

# ---- service identities

cat >server.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = piniond.example
[server_ext]
basicConstraints = critical,CA:FALSE
subjectKeyIdentifier = hash
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:piniond.example
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
    -out server.pem -days 30 -config server.cnf -extensions server_ext 2>/dev/null ||
    bail_out "openssl could not make server.pem"
server_id=$(fingerprint server.pem)
expect_ok "service add piniond server.pem" -- "$PINION" service add piniond server.pem --json
assert_eq "service add --json: id = openssl fingerprint" "$(json_get .id "$OUT")" "$server_id"
assert_eq "service add --json: name" "$(json_get .name "$OUT")" piniond
assert_eq "stored with the right id and DER" \
    "$(sql "SELECT name || ' ' || (encode(sha256(der), 'hex') = id) FROM service_identities
            WHERE id = '$server_id'")" 'piniond true'
expect_fail "the same name again is refused" 'already registered' -- \
    "$PINION" service add piniond csrcerts/dev-csr.pem
expect_fail "the same certificate under another name is refused" 'already registered' -- \
    "$PINION" service add piniond2 server.pem
printf 'garbage\n' >garbage.pem
expect_fail "a garbage certificate is refused" 'garbage\.pem' -- \
    "$PINION" service add other garbage.pem
expect_fail "a missing certificate file is refused" 'no such file' -- \
    "$PINION" service add other nosuch.pem
"$PINION" ca create --cn "Intermediate" --out inter --parent ca >/dev/null ||
    bail_out "cannot make an intermediate CA"
expect_fail "a (non-self-signed) CA certificate is refused as a service" 'CA certificate' -- \
    "$PINION" service add other-ca inter/ca.pem
assert_eq "one service identity stored" "$(sql "SELECT count(*) FROM service_identities")" 1

# Service piniond connects as piniond or piniond-...: devices cannot have
# those identifiers, and a service name devices already use is refused.
# 'events' is reserved (a level of the topic root).
expect_fail "device create in the service's namespace is refused" \
    "in service 'piniond''s client id namespace" -- "$PINION" device create acme sensor piniond-7
expect_fail "device create 'events' is refused" "'events' is reserved" -- \
    "$PINION" device create acme sensor events
expect_fail "device cert --id events is refused" "'events' is reserved" -- \
    "$PINION" device cert --ca ca --id events --out evdir
assert_eq "... and writes nothing" "$([ -e evdir ] && echo present || echo absent)" absent
expect_ok "device create acme sensor gw-1" -- "$PINION" device create acme sensor gw-1
expect_fail "a service name a device already uses is refused" \
    "device 'gw-1' already uses the client ids service 'gw' would connect as" -- \
    "$PINION" service add gw csrcerts/dev-csr.pem
expect_ok "a name in nobody's way is fine (gwx)" -- "$PINION" service add gwx csrcerts/dev-csr.pem
assert_eq "no device piniond-7 or events was stored" \
    "$(sql "SELECT count(*) FROM devices WHERE identifier IN ('piniond-7', 'events')")" 0


# ---- the CA as two named files (AWS IoT's recipe: rootCA.pem, rootCA.key)
mkdir -p aws
cp ca/ca.pem aws/rootCA.pem
cp ca/ca.key aws/rootCA.key
expect_ok "device cert --ca-cert rootCA.pem --ca-key rootCA.key" -- \
    "$PINION" device cert --ca-cert aws/rootCA.pem --ca-key aws/rootCA.key --id aws-1 --out awscerts
expect_ok "... signed by that CA (openssl verify)" -- \
    openssl verify -CAfile aws/rootCA.pem awscerts/aws-1.pem
AWS_CODE=$("$PINION" ca code acme) || bail_out "ca code failed"
expect_ok "ca verification-cert --ca-cert/--ca-key" -- \
    "$PINION" ca verification-cert --ca-cert aws/rootCA.pem --ca-key aws/rootCA.key \
    --code "$AWS_CODE" --out aws/verify.pem
expect_ok "... signed by that CA (openssl verify -partial_chain)" -- \
    openssl verify -partial_chain -CAfile aws/rootCA.pem aws/verify.pem
expect_fail "--ca and --ca-cert together are refused" 'either --ca DIR or --ca-cert FILE' -- \
    "$PINION" device cert --ca ca --ca-cert aws/rootCA.pem --ca-key aws/rootCA.key --id aws-2 \
    --out awscerts
expect_fail "--ca-cert without --ca-key is refused" '--ca-cert FILE and --ca-key FILE' -- \
    "$PINION" device cert --ca-cert aws/rootCA.pem --id aws-2 --out awscerts
"$PINION" ca create --cn "Other CA" --out otherca >/dev/null || bail_out "cannot make another CA"
expect_fail "a key of another CA is refused" 'otherca/ca\.key: key does not belong to aws/rootCA\.pem' -- \
    "$PINION" device cert --ca-cert aws/rootCA.pem --ca-key otherca/ca.key --id aws-2 --out awscerts
assert_eq "... and nothing was written for aws-2" "$(n_files awscerts 'aws-2*')" 0

done_testing
