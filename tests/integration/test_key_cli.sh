#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Firmware keys through the CLI (docs/protocol.md, "Identities"): pinion key create |
# register | list, with fwup's key files ($PINION_FIXTURES/fwup, made by
# fwup 1.16.0 itself).
. "$PINION_SOURCE/tests/harness/lib.sh"

FX=$PINION_FIXTURES/fwup
command -v openssl >/dev/null || bail_out "openssl is not installed"

# Key id, computed independently: sha256(raw public key)[:16].
key_id_of() { base64 -d "$1" | sha256sum | cut -c1-16; }
n_keys() { sql "SELECT count(*) FROM firmware_keys"; }

# ---- key create

umask 022
expect_ok "key create --out fw" -- "$PINION" key create --out fw
assert_eq "fw.pub: 44 characters (base64 of 32 bytes)" "$(stat -c %s fw.pub)" 44
assert_eq "fw.priv: 88 characters (base64 of 64 bytes)" "$(stat -c %s fw.priv)" 88
assert_eq "fw.pub mode 0600" "$(stat -c %a fw.pub)" 600
assert_eq "fw.priv mode 0600" "$(stat -c %a fw.priv)" 600
assert_eq "fw.pub decodes to 32 bytes" "$(base64 -d fw.pub | wc -c)" 32
assert_eq "fw.priv decodes to 64 bytes" "$(base64 -d fw.priv | wc -c)" 64
assert_eq "fw.priv = seed || public key (libsodium layout)" \
    "$(base64 -d fw.priv | tail -c 32 | base64 -w0)" "$(cat fw.pub)"
# The seed must really derive the public key: let OpenSSL do it (PKCS#8
# wrapping of an Ed25519 seed, then the last 32 bytes of the SPKI).
derived=$( (printf '\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20'
    base64 -d fw.priv | head -c 32) | openssl pkey -inform DER -pubout -outform DER |
    tail -c 32 | base64 -w0)
assert_eq "OpenSSL derives fw.pub from fw.priv's seed" "$derived" "$(cat fw.pub)"
assert_match "key create prints the key id" "$OUT" "$(key_id_of fw.pub)"

pub_sum=$(sha256sum fw.pub fw.priv)
expect_fail "key create refuses to overwrite" 'already exists' -- "$PINION" key create --out fw
assert_eq "fw.pub and fw.priv are unchanged" "$(sha256sum fw.pub fw.priv)" "$pub_sum"
echo keep >half.priv
expect_fail "key create refuses when only PREFIX.priv exists" 'half\.priv.*already exists' -- \
    "$PINION" key create --out half
assert_eq "half.priv kept" "$(cat half.priv)" keep
assert_eq "no half.pub left behind" "$([ -e half.pub ] && echo exists || echo absent)" absent
expect_status "key create without --out is a usage error" 2 -- "$PINION" key create
expect_ok "key create --json" -- "$PINION" key create --out second --json
assert_eq "--json key_id = sha256(pub)[:16]" "$(json_get .key_id "$OUT")" "$(key_id_of second.pub)"
assert_eq "--json public path" "$(json_get .public "$OUT")" second.pub
assert_eq "--json private path" "$(json_get .private "$OUT")" second.priv
assert_no_match "two keys differ" "$(cat second.pub)" "^$(cat fw.pub)\$"

# ---- key register

expect_ok "org create acme" -- "$PINION" org create acme
expect_ok "org create other" -- "$PINION" org create other
expect_ok "key register the fwup fixture prod.pub" -- "$PINION" key register acme prod "$FX/prod.pub"
assert_match "prints key id ca051a500a499d2a" "$OUT" 'ca051a500a499d2a'
assert_eq "the fixture's key id, computed independently" "$(key_id_of "$FX/prod.pub")" \
    ca051a500a499d2a
assert_eq "stored: name, key id and the raw 32-byte key" \
    "$(sql "SELECT name || ' ' || key_id || ' ' || encode(public_key, 'base64')
            FROM firmware_keys")" "prod ca051a500a499d2a $(cat "$FX/prod.pub")"

expect_fail "registering a .priv is refused" 'private key' -- \
    "$PINION" key register acme leaked "$FX/prod.priv"
expect_fail "registering our own .priv is refused" 'private key' -- \
    "$PINION" key register acme leaked2 fw.priv
assert_eq "nothing stored for the .priv files" "$(n_keys)" 1
assert_eq "no key named leaked" "$(sql "SELECT count(*) FROM firmware_keys WHERE name LIKE 'leaked%'")" 0
printf 'not a key\n' >garbage.pub
expect_fail "a garbage .pub is refused" 'garbage\.pub' -- "$PINION" key register acme junk garbage.pub
expect_fail "a missing .pub is refused" 'no such file' -- "$PINION" key register acme junk nosuch.pub
expect_fail "an invalid key name is refused" 'invalid key name' -- \
    "$PINION" key register acme 'a b' fw.pub
expect_fail "a missing org is refused" 'nosuch' -- "$PINION" key register nosuch k fw.pub
expect_fail "the same key under another name is refused" 'already registered' -- \
    "$PINION" key register acme prod-again "$FX/prod.pub"
expect_fail "another key under an existing name is refused" 'already has a key' -- \
    "$PINION" key register acme prod fw.pub
assert_eq "still one key" "$(n_keys)" 1
expect_ok "the same key in another org is fine" -- "$PINION" key register other prod "$FX/prod.pub"
expect_ok "key register our own key --json" -- "$PINION" key register acme mine fw.pub --json
assert_eq "--json key_id" "$(json_get .key_id "$OUT")" "$(key_id_of fw.pub)"
assert_eq "--json org" "$(json_get .org "$OUT")" acme
expect_ok "key register debug.pub" -- "$PINION" key register acme debug "$FX/debug.pub"
assert_match "debug key id" "$OUT" '832a3ea851983269'

# ---- key list

expect_ok "key list acme --json" -- "$PINION" key list acme --json
assert_eq "list: debug first (by name)" "$(json_get '[0].name' "$OUT")" debug
assert_eq "list: debug's key id" "$(json_get '[0].key_id' "$OUT")" 832a3ea851983269
assert_eq "list: mine second" "$(json_get '[1].key_id' "$OUT")" "$(key_id_of fw.pub)"
assert_eq "list: prod third" "$(json_get '[2].key_id' "$OUT")" ca051a500a499d2a
assert_eq "list: prod's public key is the .pub's base64" "$(json_get '[2].public_key' "$OUT")" \
    "$(cat "$FX/prod.pub")"
assert_eq "list: only three" "$(json_get '[3]' "$OUT" || echo absent)" absent
expect_ok "key list other --json" -- "$PINION" key list other --json
assert_eq "other org: prod" "$(json_get '[0].name' "$OUT")" prod
assert_eq "other org: nothing else" "$(json_get '[1]' "$OUT" || echo absent)" absent
expect_ok "key list acme (table)" -- "$PINION" key list acme
assert_match "table shows the prod key id" "$OUT" 'ca051a500a499d2a'
expect_fail "key list of a missing org" 'nosuch' -- "$PINION" key list nosuch

done_testing
