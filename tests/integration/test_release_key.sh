#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The service's release key through the CLI (docs/protocol.md,
# "Manifest and DSSE"; README, "CLI reference"):
# pinion release-key create --out PREFIX writes an Ed25519 key pair in fwup's
# format, offline, and prints its key id (the keyid of manifest signatures).
. "$PINION_SOURCE/tests/harness/lib.sh"

command -v python3 >/dev/null || bail_out "python3 is not installed"

# Key id, computed independently: sha256(raw public key)[:16].
key_id_of() {
    python3 -c 'import base64, hashlib, sys
raw = base64.b64decode(open(sys.argv[1]).read(), validate=True)
print(hashlib.sha256(raw).hexdigest()[:16])' "$1"
}

umask 022
# No database is needed: an unreachable one must not matter.
expect_ok "release-key create --out rk (offline)" -- \
    env PINION_DB="host=/nonexistent dbname=none" "$PINION" release-key create --out rk
assert_eq "rk.pub: 44 characters (base64 of 32 bytes)" "$(stat -c %s rk.pub)" 44
assert_eq "rk.priv: 88 characters (base64 of 64 bytes)" "$(stat -c %s rk.priv)" 88
assert_eq "rk.pub mode 0600" "$(stat -c %a rk.pub)" 600
assert_eq "rk.priv mode 0600" "$(stat -c %a rk.priv)" 600
assert_eq "rk.pub decodes to 32 bytes" "$(base64 -d rk.pub | wc -c)" 32
assert_eq "rk.priv = seed || public key (libsodium layout)" \
    "$(base64 -d rk.priv | tail -c 32 | base64 -w0)" "$(cat rk.pub)"
kid=$(key_id_of rk.pub)
assert_match "independent key id is 16 hex digits" "$kid" '^[0-9a-f]{16}$'
assert_match "prints key_id = sha256(pub)[:16]" "$OUT" "key_id +$kid"
assert_match "prints the public key path" "$OUT" 'public +rk\.pub'
assert_match "prints the private key path" "$OUT" 'private +rk\.priv'

sums=$(sha256sum rk.pub rk.priv)
expect_fail "refuses to overwrite" 'rk\.pub: already exists' -- \
    "$PINION" release-key create --out rk
assert_eq "stderr is one line" "$(printf '%s\n' "$ERR" | wc -l)" 1
assert_eq "rk.pub and rk.priv are unchanged" "$(sha256sum rk.pub rk.priv)" "$sums"
echo keep >half.priv
expect_fail "refuses when only PREFIX.priv exists" 'half\.priv: already exists' -- \
    "$PINION" release-key create --out half
assert_eq "half.priv kept" "$(cat half.priv)" keep
assert_eq "no half.pub left behind" "$([ -e half.pub ] && echo exists || echo absent)" absent
expect_status "without --out: usage error" 2 -- "$PINION" release-key create
expect_status "an unknown command in the group: usage error" 2 -- "$PINION" release-key rotate

expect_ok "release-key create --json" -- "$PINION" release-key create --out second --json
assert_eq "--json key_id" "$(json_get .key_id "$OUT")" "$(key_id_of second.pub)"
assert_eq "--json public path" "$(json_get .public "$OUT")" second.pub
assert_eq "--json private path" "$(json_get .private "$OUT")" second.priv
assert_no_match "two keys differ" "$(cat second.pub)" "^$(cat rk.pub)\$"

expect_ok "release-key create --help" -- "$PINION" release-key create --help
assert_match "help: it signs manifests" "$OUT" 'manifest'
assert_match "help: devices embed PREFIX.pub" "$OUT" 'devices embed PREFIX\.pub'
expect_ok "pinion --help lists release-key" -- "$PINION" --help
assert_match "top-level help names the group" "$OUT" 'pinion release-key create --out PREFIX'

done_testing
