#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Device CA registration with proof of possession (docs/protocol.md,
# "Identities"; README, "CLI reference"):
# pinion ca create | code | verification-cert | register | list | show |
# disable | enable | revoke [--cascade].  Everything a user does goes
# through the CLI; openssl only builds the hostile inputs the CLI refuses to
# make.  Every refusal must be one stderr line, a non-zero exit, and leave
# the database as it was (no CA row, the registration code still unused).
. "$PINION_SOURCE/tests/harness/lib.sh"

command -v openssl >/dev/null || bail_out "openssl is not installed"
command -v faketime >/dev/null || bail_out "faketime is not installed (scripts/deps installs it)"

# Lowercase hex SHA-256 of a certificate's DER, computed by openssl: the
# certificate id (AWS IoT's certificateId).
fingerprint() { # FILE [PEM|DER]
    openssl x509 -in "$1" -inform "${2:-PEM}" -noout -fingerprint -sha256 |
        sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f'
}
# Runs a command with the clock at 2020-01-01 12:00 UTC.  faketime works by
# LD_PRELOAD, which a sanitizer build's runtime objects to unless told not to.
# shellcheck disable=SC2317 # called through expect_ok
in_2020() {
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        TZ=UTC faketime '2020-01-01 12:00:00' "$@"
}
new_code() { "$PINION" ca code "$1" 2>/dev/null; }
n_cas() { sql "SELECT count(*) FROM ca_certificates"; }
# "unused", "used by <ca id>" or "missing" (only the code's SHA-256 is stored).
code_state() {
    local s
    s=$(sql "SELECT CASE WHEN used_at IS NULL AND used_for IS NULL THEN 'unused'
                         ELSE 'used by ' || coalesce(used_for, '?') END
             FROM registration_codes
             WHERE code_sha256 = encode(sha256(convert_to('$1', 'UTF8')), 'hex')")
    echo "${s:-missing}"
}
# A refused registration: one clear line, and nothing written.
refused() { # DESC PATTERN CODE -- CMD...
    local desc=$1 pattern=$2 code=$3 before state
    shift 3
    before=$(n_cas)
    state=$(code_state "$code")
    expect_fail "$desc" "$pattern" "$@"
    assert_eq "$desc: no CA row written" "$(n_cas)" "$before"
    assert_eq "$desc: registration code untouched" "$(code_state "$code")" "$state"
}

# Minimal openssl configuration, independent of the system's openssl.cnf.
cat >ossl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
subjectKeyIdentifier = hash
keyUsage = critical,keyCertSign,cRLSign
[notca_ext]
basicConstraints = critical,CA:FALSE
subjectKeyIdentifier = hash
keyUsage = critical,digitalSignature,keyCertSign
[verif_ext]
basicConstraints = critical,CA:FALSE
authorityKeyIdentifier = keyid:always
EOF
# An openssl-made verification certificate for CODE (as CN), signed by
# CAKEY under CACERT.  EXT "" makes a v1 certificate without extensions
# (no authorityKeyIdentifier), so only the signature ties it to its issuer.
openssl_verification() { # OUT CODE CACERT CAKEY [EXT]
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -subj "/CN=$2" -out "$1.csr" 2>/dev/null &&
        openssl x509 -req -in "$1.csr" -CA "$3" -CAkey "$4" -set_serial "$RANDOM" -days 2 \
            -sha256 ${5:+-extfile ossl.cnf -extensions "$5"} -out "$1" 2>/dev/null
}

expect_ok "org create acme" -- "$PINION" org create acme
expect_ok "org create other" -- "$PINION" org create other
expect_ok "product create acme sensor" -- "$PINION" product create acme sensor

# ---- ca create

expect_ok "ca create" -- "$PINION" ca create --cn "Acme Device CA" --out ca1
assert_eq "ca create: ca.key has mode 0600" "$(stat -c %a ca1/ca.key)" 600
ca1=$(fingerprint ca1/ca.pem)
assert_match "ca create prints the CA's certificate id (openssl fingerprint)" "$OUT" "$ca1"
assert_match "the CA is self-signed with CA:TRUE" \
    "$(openssl x509 -in ca1/ca.pem -noout -ext basicConstraints)" 'CA:TRUE'
assert_match "the CA key is EC P-256" "$(openssl x509 -in ca1/ca.pem -noout -text)" \
    'prime256v1|P-256'
expect_fail "ca create refuses to overwrite a CA directory" 'refusing to overwrite' -- \
    "$PINION" ca create --cn "Again" --out ca1
assert_eq "... and ca1/ca.pem is unchanged" "$(fingerprint ca1/ca.pem)" "$ca1"

# ---- ca code

expect_ok "ca code acme" -- "$PINION" ca code acme
code1=$OUT
assert_match "ca code prints a 64-hex-digit code" "$code1" '^[0-9a-f]{64}$'
assert_match "... and says on stderr until when, in ISO 8601 UTC" "$ERR" \
    "^registration code for 'acme', single use, valid until [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\$"
assert_eq "only the code's SHA-256 is stored, unused, for acme" \
    "$(sql "SELECT o.name || ' ' || (r.used_at IS NULL) || ' ' ||
                   (r.expires_at - r.created_at = interval '1 hour')
            FROM registration_codes r JOIN orgs o ON o.id = r.org_id
            WHERE code_sha256 = encode(sha256(convert_to('$code1', 'UTF8')), 'hex')")" \
    'acme true true'
assert_eq "the code itself is nowhere in the table" \
    "$(sql "SELECT count(*) FROM registration_codes WHERE code_sha256 = '$code1'")" 0
expect_fail "ca code for a missing org" 'nosuch' -- "$PINION" ca code nosuch
expect_ok "ca code acme --json" -- "$PINION" ca code acme --json
assert_match "... expires_at is ISO 8601 UTC" "$(json_get .expires_at "$OUT")" \
    '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'

# ---- AWS style: the code as subject CN only

expect_ok "verification-cert --style cn" -- \
    "$PINION" ca verification-cert --ca ca1 --code "$code1" --style cn --out v1.pem
assert_eq "AWS-style verification cert: CN is the code" \
    "$(openssl x509 -in v1.pem -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p')" \
    "$code1"
assert_no_match "AWS-style verification cert has no SAN URI" \
    "$(openssl x509 -in v1.pem -noout -text)" 'urn:pinion:verify'
expect_ok "openssl verifies the verification cert against the CA" -- \
    openssl verify -CAfile ca1/ca.pem v1.pem
expect_ok "ca register (AWS style) with --jitp and --tags" -- \
    "$PINION" ca register acme ca1/ca.pem --verification-cert v1.pem --jitp sensor --tags a,b
assert_match "ca register prints the certificate id" "$OUT" "$ca1"
assert_eq "one CA row" "$(n_cas)" 1
assert_eq "the stored id is the openssl SHA-256 fingerprint" \
    "$(sql "SELECT id FROM ca_certificates")" "$ca1"
assert_eq "the stored DER is the CA's DER" \
    "$(sql "SELECT encode(sha256(der), 'hex') FROM ca_certificates")" "$ca1"
assert_eq "code 1 is now used by CA 1" "$(code_state "$code1")" "used by $ca1"
assert_eq "JITP product and tags are stored" \
    "$(sql "SELECT p.name || ' ' || array_to_string(c.jitp_tags, ',') || ' ' || o.name
            FROM ca_certificates c JOIN products p ON p.id = c.jitp_product_id
            JOIN orgs o ON o.id = c.org_id")" 'sensor a,b acme'

# ---- NervesHub style: the code as SAN URI only, --json

expect_ok "ca create ca2 --json" -- "$PINION" ca create --cn "Acme Device CA 2" --out ca2 --json
ca2=$(fingerprint ca2/ca.pem)
assert_eq "ca create --json id = openssl fingerprint" "$(json_get .id "$OUT")" "$ca2"
code2=$(new_code acme)
expect_ok "verification-cert --style uri" -- \
    "$PINION" ca verification-cert --ca ca2 --code "$code2" --style uri --out v2.pem
assert_match "NervesHub-style verification cert carries the SAN URI" \
    "$(openssl x509 -in v2.pem -noout -ext subjectAltName)" "URI:urn:pinion:verify:$code2"
assert_no_match "NervesHub-style verification cert does not carry the code as CN" \
    "$(openssl x509 -in v2.pem -noout -subject)" "$code2"
expect_ok "ca register (NervesHub style) --json" -- \
    "$PINION" ca register acme ca2/ca.pem --verification-cert v2.pem --description "second CA" --json
assert_eq "register --json: id" "$(json_get .id "$OUT")" "$ca2"
assert_eq "register --json: status active" "$(json_get .status "$OUT")" active
assert_eq "register --json: org" "$(json_get .org "$OUT")" acme
assert_eq "register --json: no JITP product" "$(json_get .jitp_product "$OUT")" null
assert_eq "register --json: description" "$(json_get .description "$OUT")" "second CA"
assert_eq "register --json: ski is the CA's subjectKeyIdentifier" "$(json_get .ski "$OUT")" \
    "$(openssl x509 -in ca2/ca.pem -noout -ext subjectKeyIdentifier | tail -n1 |
        tr -d ' :' | tr 'A-F' 'a-f')"
assert_eq "code 2 is now used by CA 2" "$(code_state "$code2")" "used by $ca2"

# ---- list and show

expect_ok "ca list acme" -- "$PINION" ca list acme
assert_match "ca list shows CA 1" "$OUT" "$ca1"
assert_match "ca list shows CA 2" "$OUT" "$ca2"
expect_ok "ca list acme --json" -- "$PINION" ca list acme --json
assert_eq "ca list --json: two CAs" "$(json_get . "$OUT" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" 2
assert_eq "ca list --json: CA 1 first" "$(json_get '[0].id' "$OUT")" "$ca1"
assert_eq "ca list --json: CA 1's JITP product" "$(json_get '[0].jitp_product' "$OUT")" sensor
assert_eq "ca list --json: CA 1's JITP tags" "$(json_get '[0].jitp_tags' "$OUT")" '["a","b"]'
assert_eq "ca list --json: CA 2's subject" "$(json_get '[1].subject' "$OUT")" 'CN=Acme Device CA 2'
expect_ok "ca list other (empty)" -- "$PINION" ca list other --json
assert_eq "other org has no CAs" "$OUT" '[]'
expect_ok "ca show by full id" -- "$PINION" ca show "$ca1"
assert_match "ca show prints the id" "$OUT" "$ca1"
assert_match "ca show prints the JITP product" "$OUT" 'sensor'
expect_ok "ca show by an 8-digit prefix --json" -- "$PINION" ca show "${ca2:0:8}" --json
assert_eq "prefix resolves to CA 2" "$(json_get .id "$OUT")" "$ca2"
expect_ok "ca show by an uppercase 12-digit prefix" -- \
    "$PINION" ca show "$(tr 'a-f' 'A-F' <<<"${ca1:0:12}")" --json
assert_eq "uppercase prefix resolves to CA 1" "$(json_get .id "$OUT")" "$ca1"
expect_fail "ca show with a 7-digit prefix is refused" 'not a certificate id' -- \
    "$PINION" ca show "${ca1:0:7}"
expect_fail "ca show of an unknown id" 'no CA certificate' -- \
    "$PINION" ca show 0000000000000000000000000000000000000000000000000000000000000000

# ---- refusals: the code

expect_ok "ca create ca3" -- "$PINION" ca create --cn "Acme Device CA 3" --out ca3
ca3=$(fingerprint ca3/ca.pem)

other_code=$(new_code other)
"$PINION" ca verification-cert --ca ca3 --code "$other_code" --out v3-other.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "a code issued to another org is refused" 'another organi[sz]ation' "$other_code" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-other.pem

old_code=$(new_code acme)
sql "UPDATE registration_codes SET expires_at = now() - interval '1 minute'
     WHERE code_sha256 = encode(sha256(convert_to('$old_code', 'UTF8')), 'hex')" ||
    bail_out "cannot age the code"
"$PINION" ca verification-cert --ca ca3 --code "$old_code" --out v3-old.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "an expired code is refused, naming when (ISO 8601 UTC)" \
    'expired at [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z;' "$old_code" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-old.pem

"$PINION" ca verification-cert --ca ca3 --code "$code1" --out v3-used.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "a code already used (by CA 1) is refused" 'already (been )?used' "$code1" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-used.pem
assert_eq "... code 1 still belongs to CA 1" "$(code_state "$code1")" "used by $ca1"

unknown_code=$(printf '%064d' 0 | tr 0 a)
"$PINION" ca verification-cert --ca ca3 --code "$unknown_code" --out v3-unknown.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "a code never issued is refused" 'unknown' "$unknown_code" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-unknown.pem
assert_eq "... and was not invented" "$(code_state "$unknown_code")" missing

# ---- refusals: the proof of possession

code3=$(new_code acme)
# Another CA with the very same subject name, but its own key.
expect_ok "ca create an impostor CA with CA 3's subject" -- \
    "$PINION" ca create --cn "Acme Device CA 3" --out impostor
assert_eq "the impostor has the same subject as CA 3" \
    "$(openssl x509 -in impostor/ca.pem -noout -subject)" \
    "$(openssl x509 -in ca3/ca.pem -noout -subject)"
"$PINION" ca verification-cert --ca impostor --code "$code3" --out v3-impostor.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "a verification cert signed by another key (same subject) is refused" \
    'not signed by this CA' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-impostor.pem
# Without an authorityKeyIdentifier only the signature itself can tell.
openssl_verification v3-noaki.pem "$code3" impostor/ca.pem impostor/ca.key ||
    bail_out "openssl could not make v3-noaki.pem"
refused "a verification cert without AKI signed by another key is refused" \
    'not signed by this CA' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-noaki.pem
"$PINION" ca verification-cert --ca ca3 --code "$code3" --out v3-self.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "the CA certificate itself is no proof of possession of a code" 'registration code' \
    "$code3" -- "$PINION" ca register acme ca3/ca.pem --verification-cert ca3/ca.pem
expect_ok "faketime 2020: a verification cert for code 3, valid in 2020 only" -- \
    in_2020 "$PINION" ca verification-cert --ca ca3 --code "$code3" \
    --out v3-2020.pem
refused "an expired verification certificate is refused" 'verification.*expired' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-2020.pem
refused "a missing verification certificate file" 'no such file' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert nonexistent.pem
refused "register without --verification-cert" 'verification-cert' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem

# ---- refusals: the CA certificate

# Not a CA (CA:FALSE), with a verification cert its key really signed.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout notca.key \
    -out notca.pem -subj "/CN=Not A CA" -days 30 -config ossl.cnf -extensions notca_ext \
    2>/dev/null || bail_out "openssl could not make notca.pem"
openssl_verification v-notca.pem "$code3" notca.pem notca.key ||
    bail_out "openssl could not make v-notca.pem"
refused "a certificate without CA:TRUE is refused" 'not a CA' "$code3" -- \
    "$PINION" ca register acme notca.pem --verification-cert v-notca.pem

# An RSA-1024 CA (CA:TRUE, SKI), with its own verification cert.
openssl req -x509 -newkey rsa:1024 -nodes -keyout weak.key -out weak.pem \
    -subj "/CN=Weak CA" -days 30 -config ossl.cnf -extensions ca_ext 2>/dev/null ||
    bail_out "openssl could not make weak.pem"
assert_match "the weak CA has CA:TRUE" "$(openssl x509 -in weak.pem -noout -text)" 'CA:TRUE'
openssl_verification v-weak.pem "$code3" weak.pem weak.key verif_ext ||
    bail_out "openssl could not make v-weak.pem"
refused "an RSA-1024 CA is refused" 'RSA-1024.*weak' "$code3" -- \
    "$PINION" ca register acme weak.pem --verification-cert v-weak.pem

# An expired CA: made by pinion itself, in 2020, valid for 30 days.
expect_ok "faketime 2020: ca create --days 30" -- \
    in_2020 "$PINION" ca create --cn "Old CA" --out old --days 30
assert_match "the old CA expired in 2020" "$(openssl x509 -in old/ca.pem -noout -enddate)" \
    'Jan 31 .* 2020'
"$PINION" ca verification-cert --ca old --code "$code3" --out v-old.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "an expired CA is refused" 'expired' "$code3" -- \
    "$PINION" ca register acme old/ca.pem --verification-cert v-old.pem

# Broken files where CA.pem is expected.
printf 'this is not a certificate\n' >garbage.pem
refused "a garbage CA file is refused" 'garbage\.pem.*not a certificate' "$code3" -- \
    "$PINION" ca register acme garbage.pem --verification-cert v3-self.pem
head -c "$(($(stat -c %s ca3/ca.pem) / 2))" ca3/ca.pem >truncated.pem
refused "a truncated PEM CA is refused" 'truncated\.pem.*(truncated|corrupt)' "$code3" -- \
    "$PINION" ca register acme truncated.pem --verification-cert v3-self.pem
: >empty.pem
refused "an empty CA file is refused" 'empty\.pem.*empty' "$code3" -- \
    "$PINION" ca register acme empty.pem --verification-cert v3-self.pem
refused "a missing CA file is refused" 'missing\.pem.*no such file' "$code3" -- \
    "$PINION" ca register acme missing.pem --verification-cert v3-self.pem
refused "a directory as CA file is refused" 'ca3' "$code3" -- \
    "$PINION" ca register acme ca3 --verification-cert v3-self.pem
refused "register in a missing org" 'nosuch' "$code3" -- \
    "$PINION" ca register nosuch ca3/ca.pem --verification-cert v3-self.pem
refused "register with a missing JITP product" 'no product' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-self.pem --jitp nosuch
refused "register with an invalid tag" 'invalid tag' "$code3" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-self.pem --jitp sensor \
    --tags 'a,b c'

# ---- DER where PEM is expected: accepted, same certificate id

openssl x509 -in ca3/ca.pem -outform DER -out ca3.der || bail_out "openssl x509 -outform DER"
assert_eq "the DER file's fingerprint is CA 3's id" "$(fingerprint ca3.der DER)" "$ca3"
expect_ok "a DER-encoded CA is accepted" -- \
    "$PINION" ca register acme ca3.der --verification-cert v3-self.pem --json
assert_eq "DER register: id is the certificate id" "$(json_get .id "$OUT")" "$ca3"
assert_eq "code 3 is now used by CA 3" "$(code_state "$code3")" "used by $ca3"
assert_eq "three CAs stored" "$(n_cas)" 3

# The same CA again, as PEM, with a fresh valid code.
code4=$(new_code acme)
"$PINION" ca verification-cert --ca ca3 --code "$code4" --out v3-again.pem >/dev/null ||
    bail_out "verification-cert failed"
refused "registering the same CA twice is refused" 'already registered' "$code4" -- \
    "$PINION" ca register acme ca3/ca.pem --verification-cert v3-again.pem
expect_fail "... also by another org" 'already registered' -- \
    sh -c "c=\$('$PINION' ca code other 2>/dev/null) &&
           '$PINION' ca verification-cert --ca ca3 --code \$c --out v3-other2.pem >/dev/null &&
           '$PINION' ca register other ca3/ca.pem --verification-cert v3-other2.pem"
assert_eq "still three CAs" "$(n_cas)" 3

# ---- disable / enable / revoke [--cascade]

status_of() { sql "SELECT status FROM ca_certificates WHERE id = '$1'"; }
expect_ok "ca disable CA 2" -- "$PINION" ca disable "$ca2"
assert_eq "CA 2 is disabled" "$(status_of "$ca2")" disabled
expect_ok "ca show --json after disable" -- "$PINION" ca show "$ca2" --json
assert_eq "ca show reports disabled" "$(json_get .status "$OUT")" disabled
expect_ok "ca enable CA 2 (by prefix)" -- "$PINION" ca enable "${ca2:0:16}"
assert_eq "CA 2 is active again" "$(status_of "$ca2")" active
expect_ok "ca revoke CA 2" -- "$PINION" ca revoke "$ca2" --json
assert_eq "ca revoke --json: status" "$(json_get .status "$OUT")" revoked
assert_eq "ca revoke --json: previous status" "$(json_get .previous_status "$OUT")" active
assert_eq "CA 2 is revoked" "$(status_of "$ca2")" revoked
expect_fail "enable after revoke is refused" 'revoked|final' -- "$PINION" ca enable "$ca2"
assert_eq "CA 2 stays revoked" "$(status_of "$ca2")" revoked
expect_fail "disable after revoke is refused" 'revoked|final' -- "$PINION" ca disable "$ca2"
assert_eq "CA 2 stays revoked after disable" "$(status_of "$ca2")" revoked
expect_fail "revoke of an unknown CA" 'no CA certificate' -- \
    "$PINION" ca revoke ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff

# Pinned device certificates under CA 1 and CA 3 (as the plugin would pin them).
expect_ok "device create" -- "$PINION" device create acme sensor dev-1
expect_ok "device create" -- "$PINION" device create acme sensor dev-2
pin() { # DEVICE CADIR CAID
    "$PINION" device cert --ca "$2" --id "$1" --out "pins-$2" >/dev/null || return 1
    openssl x509 -in "pins-$2/$1.pem" -outform DER -out "pins-$2/$1.der" || return 1
    local id
    id=$(fingerprint "pins-$2/$1.der" DER)
    sql "INSERT INTO device_certificates (id, device_id, ca_id, serial, spki_sha256, not_before,
                                          not_after, der)
         SELECT '$id', d.id, '$3', '01', repeat('0', 64), now(), now() + interval '1 day',
                decode('$(base64 -w0 "pins-$2/$1.der")', 'base64')
         FROM devices d WHERE d.identifier = '$1'" || return 1
    echo "$id"
}
p11=$(pin dev-1 ca1 "$ca1") || bail_out "cannot pin dev-1 under CA 1"
p21=$(pin dev-2 ca1 "$ca1") || bail_out "cannot pin dev-2 under CA 1"
p23=$(pin dev-2 ca3 "$ca3") || bail_out "cannot pin dev-2 under CA 3"
cert_status() { sql "SELECT status FROM device_certificates WHERE id = '$1'"; }
expect_ok "ca show counts pinned certificates" -- "$PINION" ca show "$ca1" --json
assert_eq "CA 1 has two pinned certificates" "$(json_get .pinned_certificates "$OUT")" 2

expect_ok "ca revoke CA 3 without --cascade" -- "$PINION" ca revoke "$ca3" --json
assert_eq "no device certificate revoked" "$(json_get .revoked_device_certificates "$OUT")" 0
assert_eq "CA 3's pin stays active" "$(cert_status "$p23")" active

expect_ok "ca revoke CA 1 --cascade" -- "$PINION" ca revoke "$ca1" --cascade --json
assert_eq "--cascade reports two revoked certificates" \
    "$(json_get .revoked_device_certificates "$OUT")" 2
assert_eq "CA 1 is revoked" "$(status_of "$ca1")" revoked
assert_eq "dev-1's pin under CA 1 is revoked" "$(cert_status "$p11")" revoked
assert_eq "dev-2's pin under CA 1 is revoked" "$(cert_status "$p21")" revoked
assert_eq "dev-2's pin under CA 3 is untouched" "$(cert_status "$p23")" active
assert_eq "the devices themselves stay active" \
    "$(sql "SELECT string_agg(status, ',') FROM devices")" active,active
expect_ok "revoking CA 1 --cascade again is harmless" -- \
    "$PINION" ca revoke "$ca1" --cascade --json
assert_eq "nothing more to revoke" "$(json_get .revoked_device_certificates "$OUT")" 0

assert_match "registration and status changes are audited" \
    "$(sql "SELECT string_agg(DISTINCT action, ',' ORDER BY action) FROM audit_log
            WHERE action LIKE 'ca.%'")" \
    'ca\.code,ca\.disable,ca\.enable,ca\.register,ca\.revoke'

done_testing
