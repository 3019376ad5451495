#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The firmware registry through the CLI (README, "CLI reference"): pinion
# firmware upload | list | show | pack against a real PostgreSQL, with the
# archives fwup 1.16.0 made ($PINION_FIXTURES/fwup, verdicts in EXPECTED.md)
# and hostile archives made here.  Every refusal must leave neither a row
# nor a file in the artifact directory.
. "$PINION_SOURCE/tests/harness/lib.sh"

FX=$PINION_FIXTURES/fwup
command -v python3 >/dev/null || bail_out "python3 is not installed"
command -v openssl >/dev/null || bail_out "openssl is not installed"

ART=$T/artifacts
mkdir -p "$ART"
export PINION_ARTIFACTS=$ART

n_rows() { sql "SELECT count(*) FROM firmware"; }
n_files() { find "$ART" -mindepth 1 | wc -l; }
sha() { sha256sum "$1" | cut -c1-64; }
# fwup's verdict with prod.pub for an archive, from EXPECTED.md.
verdict() {
    python3 - "$FX/EXPECTED.md" "$1" <<'EOF'
import sys
lines = open(sys.argv[1]).read().split("\n")
want = "$ fwup -V -p prod.pub -i " + sys.argv[2]
print(lines[lines.index(want) + 1])
EOF
}

# Refused: one line on stderr matching PATTERN, and nothing stored.
refused() {
    local desc=$1 pattern=$2
    shift 2
    local rows files
    rows=$(n_rows)
    files=$(n_files)
    expect_fail "$desc" "$pattern" "$@"
    assert_eq "$desc: no row added" "$(n_rows)" "$rows"
    assert_eq "$desc: no file left in the artifact directory" "$(n_files)" "$files"
}

# ---- setup

expect_ok "org create acme" -- "$PINION" org create acme
expect_ok "product create acme sensor" -- "$PINION" product create acme sensor
expect_ok "product create acme gateway" -- "$PINION" product create acme gateway
refused "upload before any key is registered" 'no registered firmware keys' -- \
    "$PINION" firmware upload acme sensor "$FX/sensor-1.0.0-prod.fw"
expect_ok "key register acme prod" -- "$PINION" key register acme prod "$FX/prod.pub"

# ---- the fixtures, as fwup judged them with prod.pub

for fw in sensor-1.0.0-prod.fw sensor-1.0.0-unsigned.fw sensor-1.1.0-debug.fw \
    sensor-1.1.0-prod.fw sensor-1.1.0-tampered-data.fw sensor-1.1.0-tampered-meta.fw \
    sensor-1.2.0-big-prod.fw; do
    v=$(verdict "$fw")
    case $v in
        "Valid archive with a good signature")
            expect_ok "$fw accepted, as by fwup" -- "$PINION" firmware upload acme sensor "$FX/$fw" --json
            sum=$(sha "$FX/$fw")
            up=$OUT
            assert_eq "$fw: sha256 recorded" "$(json_get .sha256 "$up")" "$sum"
            assert_eq "$fw: size recorded" "$(json_get .size "$up")" "$(stat -c %s "$FX/$fw")"
            assert_eq "$fw: stored as <sha256>.fw" "$(json_get .artifact "$up")" "$ART/$sum.fw"
            assert_eq "$fw: key" "$(json_get .key "$up")/$(json_get .key_id "$up")" \
                prod/ca051a500a499d2a
            expect_ok "$fw: the stored file is the archive" -- cmp "$FX/$fw" "$ART/$sum.fw"
            ;;
        *"Expecting signed firmware archive"*)
            refused "$fw refused as unsigned" 'unsigned' -- \
                "$PINION" firmware upload acme sensor "$FX/$fw" ;;
        *"fails digital signature verification"*)
            refused "$fw refused: signature" 'does not verify with any registered key' -- \
                "$PINION" firmware upload acme sensor "$FX/$fw" ;;
        *"digest mismatch for "*)
            refused "$fw refused: resource hash" "resource ${v##* }.*BLAKE2b-256" -- \
                "$PINION" firmware upload acme sensor "$FX/$fw" ;;
        *) fail "$fw: unknown fwup verdict '$v'" ;;
    esac
done
assert_eq "three sensor archives stored" "$(n_rows)" 3
assert_eq "three files stored" "$(n_files)" 3

# Metadata and the exact meta.conf and signature bytes.
uuid=bce7acb5-1455-5a33-846a-dbffe3c4ca76
assert_eq "sensor 1.1.0: fwup's meta-uuid and metadata" \
    "$(sql "SELECT uuid, version, platform, architecture, author, description, vcs_identifier,
                   misc, key_id, status FROM firmware WHERE version = '1.1.0'")" \
    "$uuid|1.1.0|rpi4|aarch64|fleet fixtures|fixture firmware|0123abcd|channel=stable|ca051a500a499d2a|active"
assert_eq "meta_conf is the archive's meta.conf, byte for byte" \
    "$(sql "SELECT encode(meta_conf, 'hex') FROM firmware WHERE uuid = '$uuid'")" \
    "$(python3 -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read("meta.conf").hex())' "$FX/sensor-1.1.0-prod.fw")"
assert_eq "meta_conf_sig is meta.conf.ed25519" \
    "$(sql "SELECT encode(meta_conf_sig, 'hex') FROM firmware WHERE uuid = '$uuid'")" \
    "$(python3 -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read("meta.conf.ed25519").hex())' "$FX/sensor-1.1.0-prod.fw")"
assert_eq "an audit record per upload" \
    "$(sql "SELECT count(*) FROM audit_log WHERE action = 'firmware.upload'")" 3

# ---- duplicates and products

before=$(sha "$ART/$(sha "$FX/sensor-1.0.0-prod.fw").fw")
refused "the same archive again: duplicate uuid" 'duplicate uuid.*0f39281d-dcb7-5f88-2a05-ba029719c811' -- \
    "$PINION" firmware upload acme sensor "$FX/sensor-1.0.0-prod.fw"
assert_eq "the stored artifact is untouched by the refused duplicate" \
    "$(sha "$ART/$(sha "$FX/sensor-1.0.0-prod.fw").fw")" "$before"
refused "gateway firmware uploaded as sensor: product mismatch" \
    "product mismatch.*'gateway', not 'sensor'" -- \
    "$PINION" firmware upload acme sensor "$FX/gateway-2.0.0-prod.fw"
expect_ok "gateway firmware uploaded as gateway" -- \
    "$PINION" firmware upload acme gateway "$FX/gateway-2.0.0-prod.fw"
refused "upload to a missing product" "no product named 'nosuch'" -- \
    "$PINION" firmware upload acme nosuch "$FX/sensor-1.1.0-prod.fw"
# The debug-signed 1.1.0 has the very meta.conf (so the uuid) of the
# prod-signed one: once its key is trusted, it is a duplicate.
expect_ok "org create other" -- "$PINION" org create other
expect_ok "product create other sensor" -- "$PINION" product create other sensor
expect_ok "key register other debug" -- "$PINION" key register other debug "$FX/debug.pub"
refused "the debug-signed 1.1.0 in another org: duplicate uuid" "duplicate uuid.*$uuid" -- \
    "$PINION" firmware upload other sensor "$FX/sensor-1.1.0-debug.fw"
refused "prod-signed firmware in an org that trusts only debug" 'any registered key' -- \
    "$PINION" firmware upload other sensor "$FX/sensor-1.0.0-prod.fw"

# ---- hostile archives (signed with prod's key through openssl)

(printf '\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20'
    base64 -d "$FX/prod.priv" | head -c 32) | openssl pkey -inform DER -out prod.pem ||
    bail_out "cannot convert prod.priv for openssl"
sign() { openssl pkeyutl -sign -rawin -inkey prod.pem -in "$1" -out "$2"; }

# mkzip OUT ENTRY... with ENTRY = NAME=FILE, NAME=@store:FILE or NAME=zeros:N
cat >mkzip.py <<'EOF'
import sys, zipfile
out, entries = sys.argv[1], sys.argv[2:]
with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    for e in entries:
        name, src = e.split("=", 1)
        info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        if src.startswith("@store:"):
            info.compress_type = zipfile.ZIP_STORED
            src = src[7:]
        with z.open(info, "w", force_zip64=True) as f:
            if src.startswith("zeros:"):
                left, block = int(src[6:]), bytes(1 << 20)
                while left > 0:
                    f.write(block[:min(left, len(block))])
                    left -= len(block)
            else:
                f.write(open(src, "rb").read())
EOF
mkzip() { python3 -W ignore mkzip.py "$@"; }
b2() { python3 -c 'import hashlib, sys; print(hashlib.blake2b(open(sys.argv[1], "rb").read(), digest_size=32).hexdigest())' "$1"; }

printf 'hello, fleet' >payload
conf() { # conf FILE VERSION LENGTH HASH
    printf 'meta-product=sensor\nmeta-version=%s\nmeta-platform=rpi4\nmeta-architecture=aarch64\nfile-resource "image" {\nlength=%s\nblake2b-256=%s\n}\n' \
        "$2" "$3" "$4" >"$1"
    sign "$1" "$1.sig"
}
conf good.conf 3.0.0 12 "$(b2 payload)"
mkzip good.fw meta.conf.ed25519=@store:good.conf.sig meta.conf=good.conf data/image=payload
expect_ok "a hand-made archive is accepted" -- "$PINION" firmware upload acme sensor good.fw
rows=$(n_rows)

# ---- every view of the zip must read the same entries (fwup -i and unzip
# follow the central directory; this verifier and fwup on a stream follow
# the local headers)
printf 'EVIL!, fleet' >evil
conf a.conf 3.0.5 12 "$(b2 payload)"
mkzip a.fw meta.conf.ed25519=@store:a.conf.sig meta.conf=a.conf data/image=payload
printf 'meta-product=sensor\nmeta-version=6.6.6\nmeta-platform=rpi4\nmeta-architecture=aarch64\nfile-resource "image" {\nlength=12\nblake2b-256=%s\n}\n' "$(b2 evil)" >b.conf
head -c 64 /dev/urandom >b.conf.sig
mkzip b.fw meta.conf.ed25519=@store:b.conf.sig meta.conf=b.conf data/image=evil
cat >zipedit.py <<'PY'
import struct, sys
def eocd(z):
    i = z.rindex(b"PK\x05\x06")
    return i, struct.unpack("<I", z[i + 16:i + 20])[0]
def cd_entries(z):
    e, off = eocd(z)
    i = off
    while i < e:
        n, x, c = struct.unpack("<HHH", z[i + 28:i + 34])
        yield i, z[i + 46:i + 46 + n]
        i += 46 + n + x + c
op, src, out = sys.argv[1:4]
z = bytearray(open(src, "rb").read())
if op == "polyglot":      # src's entries, then the archive argv[4] behind them,
    b = open(sys.argv[4], "rb").read()   # whose central directory the end record names
    _, cda = eocd(bytes(z))
    front = bytes(z[:cda]) + b"PK\x01\x02"
    e, cdb = eocd(b)
    cd = bytearray(b[cdb:e])
    for i, _ in list(cd_entries(b)):
        j = i - cdb
        o, = struct.unpack("<I", cd[j + 42:j + 46])
        cd[j + 42:j + 46] = struct.pack("<I", o + len(front))
    end = bytearray(b[e:])
    end[16:20] = struct.pack("<I", cdb + len(front))
    z = front + b[:cdb] + bytes(cd) + bytes(end)
elif op == "cdcrc":       # the central directory's CRC of data/image, one bit off
    for i, name in list(cd_entries(bytes(z))):
        if name == b"data/image":
            z[i + 16] ^= 1
elif op in ("dd", "ddcrc"):  # the same entries with data descriptors, as fwup writes
    import io, zipfile      # them (sizes and CRC after the data; 0 in the local header)
    class Stream(io.RawIOBase):
        def __init__(self):
            self.b = bytearray()
        def writable(self):
            return True
        def write(self, d):
            self.b += d
            return len(d)
    w, zin = Stream(), zipfile.ZipFile(src)
    with zipfile.ZipFile(w, "w") as zout:
        for info in zin.infolist():
            ni = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            ni.compress_type = info.compress_type
            with zout.open(ni, "w") as f:
                f.write(zin.read(info))
    z = bytearray(w.b)
    if op == "ddcrc":     # ... and the central directory's CRC of data/image one bit off
        for i, name in list(cd_entries(bytes(z))):
            if name == b"data/image":
                z[i + 16] ^= 1
elif op == "gap":         # 16 bytes between the last entry and the central directory
    e, off = eocd(bytes(z))
    z = z[:off] + bytes(16) + z[off:]
    e += 16
    z[e + 16:e + 20] = struct.pack("<I", off + 16)
elif op == "trailing":    # bytes after the end record
    z += b"trailing bytes"
open(out, "wb").write(z)
PY
python3 zipedit.py polyglot a.fw poly.fw b.fw || bail_out "cannot build poly.fw"
# A central-directory reader (fwup -i, unzip, Python) sees the evil archive.
assert_eq "poly.fw read through its central directory is the other archive" \
    "$(python3 -c 'import zipfile,sys; print(zipfile.ZipFile(sys.argv[1]).read("data/image").decode())' poly.fw)" \
    "EVIL!, fleet"
refused "an archive whose central directory describes another archive (polyglot)" \
    "corrupt zip: the central directory's (meta\.conf\.ed25519|meta\.conf|data/image) is not the entry read at offset" -- \
    "$PINION" firmware upload acme sensor poly.fw
python3 zipedit.py cdcrc good.fw cdcrc.fw || bail_out "cannot build cdcrc.fw"
refused "a central directory CRC that differs from the entry's" \
    'corrupt zip: .*(Inconsistent CRC32|the CRC of data/image differs)' -- \
    "$PINION" firmware upload acme sensor cdcrc.fw
python3 zipedit.py dd good.fw dd.fw || bail_out "cannot build dd.fw"
python3 zipedit.py ddcrc good.fw ddcrc.fw || bail_out "cannot build ddcrc.fw"
assert_eq "dd.fw's entries carry data descriptors (flag bit 3), as fwup writes them" \
    "$(python3 -c 'import zipfile,sys; print(all(i.flag_bits & 8 for i in zipfile.ZipFile(sys.argv[1]).infolist()))' dd.fw)" True
refused "... also when the entry's CRC is in a data descriptor (the CRC fwup -i checks)" \
    'corrupt zip: the CRC of data/image differs between its entry and the central directory' -- \
    "$PINION" firmware upload acme sensor ddcrc.fw
python3 zipedit.py gap good.fw gap.fw || bail_out "cannot build gap.fw"
refused "bytes hidden between the last entry and the central directory" \
    'corrupt zip: 16 bytes between the last entry and the central directory' -- \
    "$PINION" firmware upload acme sensor gap.fw
# Values from signed metadata never make a refusal span lines.
printf 'meta-product="sen\\nsor"\nmeta-version=3.0.7\nmeta-platform=rpi4\nmeta-architecture=aarch64\nfile-resource "image" {\nlength=12\nblake2b-256=%s\n}\n' "$(b2 payload)" >nl.conf
sign nl.conf nl.conf.sig
mkzip nl.fw meta.conf.ed25519=@store:nl.conf.sig meta.conf=nl.conf data/image=payload
refused "a product with a newline in signed metadata: a one-line refusal" 'product' -- \
    "$PINION" firmware upload acme sensor nl.fw
printf 'meta-product=sensor\nmeta-version=3.0.8\nmeta-author="caf\\xff"\nmeta-platform=rpi4\nmeta-architecture=aarch64\nfile-resource "image" {\nlength=12\nblake2b-256=%s\n}\n' "$(b2 payload)" >u8.conf
sign u8.conf u8.conf.sig
mkzip u8.fw meta.conf.ed25519=@store:u8.conf.sig meta.conf=u8.conf data/image=payload
refused "signed metadata that is not UTF-8 is refused, naming the field" \
    'meta.conf field meta-author is not valid UTF-8' -- "$PINION" firmware upload acme sensor u8.fw
mkfifo fifo.fw
refused "a FIFO is refused, not waited on" 'not a regular file' -- \
    timeout 10 "$PINION" firmware upload acme sensor fifo.fw
python3 zipedit.py trailing good.fw trailing.fw || bail_out "cannot build trailing.fw"
refused "bytes after the end of the zip" 'corrupt zip: no end of central directory' -- \
    "$PINION" firmware upload acme sensor trailing.fw

head -c 10 /dev/zero >ten
conf bomb.conf 3.0.1 10 "$(b2 ten)"
mkzip bomb.fw meta.conf.ed25519=@store:bomb.conf.sig meta.conf=bomb.conf data/image=zeros:$((400 << 20))
diag "bomb.fw: $(stat -c %s bomb.fw) bytes holding 400 MiB of zeros declared as 10 bytes"
start=$(date +%s%N)
refused "decompression bomb: resource larger than declared" 'resource image is larger than declared \(10 bytes\)' -- \
    "$PINION" firmware upload acme sensor bomb.fw
ms=$((($(date +%s%N) - start) / 1000000))
diag "bomb refused in $ms ms"
[ "$ms" -lt 3000 ] && pass "bomb refused quickly (${ms} ms)" || fail "bomb took ${ms} ms"

conf v3.conf 3.0.2 12 "$(b2 payload)"
mkzip trav.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf data/image=payload 'data/../../x=payload'
refused "entry data/../../x" "unsafe entry name 'data/\.\./\.\./x'" -- \
    "$PINION" firmware upload acme sensor trav.fw
mkzip abs.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf /etc/passwd=payload
refused "absolute entry name" "unsafe entry name '/etc/passwd'" -- \
    "$PINION" firmware upload acme sensor abs.fw
mkzip dup.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf data/image=payload data/image=payload
refused "duplicated resource" 'resource image appears twice' -- \
    "$PINION" firmware upload acme sensor dup.fw
mkzip miss.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf
refused "missing resource" 'resource image is missing' -- "$PINION" firmware upload acme sensor miss.fw
mkzip undecl.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf data/image=payload data/other=payload
refused "undeclared resource" "'data/other' is not a resource declared" -- \
    "$PINION" firmware upload acme sensor undecl.fw
printf 'hello, fleeT' >tampered
mkzip hash.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf data/image=tampered
refused "resource hash mismatch" 'resource image does not match its BLAKE2b-256' -- \
    "$PINION" firmware upload acme sensor hash.fw
printf 'hello, fleet!' >longer
mkzip long.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf data/image=longer
refused "resource longer than declared" 'larger than declared' -- "$PINION" firmware upload acme sensor long.fw
printf 'hello' >shorter
mkzip short.fw meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf data/image=shorter
refused "resource length mismatch" 'resource image is 5 bytes, declared 12' -- \
    "$PINION" firmware upload acme sensor short.fw
mkzip late.fw meta.conf=v3.conf meta.conf.ed25519=@store:v3.conf.sig data/image=payload
refused "meta.conf.ed25519 not first" 'entry out of order' -- "$PINION" firmware upload acme sensor late.fw
mkzip first.fw data/image=payload meta.conf.ed25519=@store:v3.conf.sig meta.conf=v3.conf
refused "a resource before meta.conf" 'entry out of order' -- "$PINION" firmware upload acme sensor first.fw
mkzip nosig.fw meta.conf=v3.conf data/image=payload
refused "unsigned archive" 'unsigned' -- "$PINION" firmware upload acme sensor nosig.fw
head -c 64 /dev/urandom >bad.sig
mkzip badsig.fw meta.conf.ed25519=@store:bad.sig meta.conf=v3.conf data/image=payload
refused "signature invalid" 'does not verify' -- "$PINION" firmware upload acme sensor badsig.fw
head -c 63 v3.conf.sig >short.sig
mkzip shortsig.fw meta.conf.ed25519=@store:short.sig meta.conf=v3.conf data/image=payload
refused "signature of the wrong size" 'not an Ed25519 signature' -- \
    "$PINION" firmware upload acme sensor shortsig.fw
cp v3.conf big.conf
python3 -c 'import sys; open(sys.argv[1], "a").write("#" * (50000 - 1 - len(open(sys.argv[1]).read())) + "\n")' big.conf
sign big.conf big.conf.sig
assert_eq "big.conf is 50,000 bytes" "$(stat -c %s big.conf)" 50000
mkzip big.fw meta.conf.ed25519=@store:big.conf.sig meta.conf=big.conf data/image=payload
refused "meta.conf of 50,000 bytes" 'meta.conf is too large' -- "$PINION" firmware upload acme sensor big.fw
conf nonsemver.conf 1.0 12 "$(b2 payload)"
mkzip nonsemver.fw meta.conf.ed25519=@store:nonsemver.conf.sig meta.conf=nonsemver.conf data/image=payload
refused "non-SemVer meta-version" "meta-version '1.0' is not a SemVer version" -- \
    "$PINION" firmware upload acme sensor nonsemver.fw
head -c 2000 "$FX/sensor-1.1.0-prod.fw" >trunc.fw
refused "truncated archive" 'truncated' -- "$PINION" firmware upload acme sensor trunc.fw
size=$(stat -c %s "$FX/sensor-1.2.0-big-prod.fw")
head -c $((size - 30)) "$FX/sensor-1.2.0-big-prod.fw" >trunc-cd.fw
refused "archive cut inside its central directory" 'truncated|corrupt' -- \
    "$PINION" firmware upload acme sensor trunc-cd.fw
printf 'definitely not a zip\n' >text.fw
refused "not a zip" 'not a zip archive' -- "$PINION" firmware upload acme sensor text.fw
refused "a missing file" 'No such file' -- "$PINION" firmware upload acme sensor nosuch.fw
# A new host without the directory: the one line says what to do about it.
refused "a missing artifact directory" \
    "^pinion: artifact directory $T/nosuch does not exist: create it .*install -d .* or choose another with --artifacts DIR or \\\$PINION_ARTIFACTS\$" -- \
    "$PINION" firmware upload acme sensor good.fw --artifacts "$T/nosuch"
refused "a missing artifact directory from \$PINION_ARTIFACTS" \
    "artifact directory $T/nosuch2 does not exist: create it \(the piniond package makes /var/lib/pinion/artifacts" -- \
    env PINION_ARTIFACTS="$T/nosuch2" "$PINION" firmware upload acme sensor good.fw
assert_eq "no temporary file survives" "$(find "$ART" -name '.upload-*' | wc -l)" 0

# ---- a failure after the file is in place leaves neither row nor file

conf late1.conf 3.1.0 12 "$(b2 payload)"
mkzip late1.fw meta.conf.ed25519=@store:late1.conf.sig meta.conf=late1.conf data/image=payload
sql "CREATE FUNCTION pn_test_fail() RETURNS trigger LANGUAGE plpgsql AS
     \$\$ BEGIN RAISE EXCEPTION 'injected failure at commit'; END \$\$;
     CREATE CONSTRAINT TRIGGER pn_test_fail AFTER INSERT ON firmware
     DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pn_test_fail();"
refused "COMMIT fails after the artifact was renamed into place" 'injected failure at commit' -- \
    "$PINION" firmware upload acme sensor late1.fw
assert_eq "no <sha256>.fw of it" "$([ -e "$ART/$(sha late1.fw).fw" ] && echo present || echo absent)" absent
sql "DROP TRIGGER pn_test_fail ON firmware"
sql "CREATE TRIGGER pn_test_fail BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION pn_test_fail()"
refused "the audit record fails after the row was inserted" 'injected failure' -- \
    "$PINION" firmware upload acme sensor late1.fw
sql "DROP TRIGGER pn_test_fail ON audit_log; DROP FUNCTION pn_test_fail()"
expect_ok "the same archive uploads once the database is healthy" -- \
    "$PINION" firmware upload acme sensor late1.fw
expect_ok "the artifact is there" -- cmp late1.fw "$ART/$(sha late1.fw).fw"

# ---- list and show

expect_ok "firmware list acme --json" -- "$PINION" firmware list acme --json
assert_eq "list: six archives (gateway first)" \
    "$(printf '%s' "$OUT" | python3 -c 'import json, sys; print(" ".join(r["product"] + ":" + r["version"] for r in json.load(sys.stdin)))')" \
    "gateway:2.0.0 sensor:1.0.0 sensor:1.1.0 sensor:1.2.0 sensor:3.0.0 sensor:3.1.0"
assert_eq "list: key name" "$(json_get '[0].key' "$OUT")" prod
expect_ok "firmware list acme gateway --json" -- "$PINION" firmware list acme gateway --json
assert_eq "list by product: the gateway archive" "$(json_get '[0].uuid' "$OUT")" \
    f2463e95-6144-5748-50b7-af449e5b29af
assert_eq "list by product: only it" "$(json_get '[1]' "$OUT" || echo absent)" absent
expect_ok "firmware list other (table)" -- "$PINION" firmware list other
assert_eq "list of an org without firmware" "$OUT" "(none)"
expect_ok "firmware list acme (table)" -- "$PINION" firmware list acme
assert_match "table: header" "$OUT" 'uuid +product +version'
assert_match "table: a row" "$OUT" "$uuid +sensor +1\.1\.0"
expect_fail "list of a missing org" 'nosuch' -- "$PINION" firmware list nosuch
expect_fail "list of a missing product" "no product named 'nosuch'" -- "$PINION" firmware list acme nosuch

expect_ok "firmware show --json" -- "$PINION" firmware show "$uuid" --json
assert_eq "show: uuid" "$(json_get .uuid "$OUT")" "$uuid"
assert_eq "show: org/product/version" \
    "$(json_get .org "$OUT")/$(json_get .product "$OUT")/$(json_get .version "$OUT")" acme/sensor/1.1.0
assert_eq "show: sha256" "$(json_get .sha256 "$OUT")" "$(sha "$FX/sensor-1.1.0-prod.fw")"
assert_eq "show: the signature, base64" "$(json_get .meta_conf_sig "$OUT")" \
    "$(python3 -c 'import base64, sys, zipfile; print(base64.b64encode(zipfile.ZipFile(sys.argv[1]).read("meta.conf.ed25519")).decode())' "$FX/sensor-1.1.0-prod.fw")"
expect_ok "firmware show (table), uuid in capitals" -- "$PINION" firmware show "${uuid^^}"
assert_match "table: misc" "$OUT" 'misc +channel=stable'
expect_fail "show of an unknown uuid" 'no firmware with uuid' -- \
    "$PINION" firmware show 00000000-0000-5000-0000-000000000000

# ---- pack: what Pinion writes, Pinion accepts, in fwup's form

head -c $((3 << 20)) /dev/urandom >image.bin
expect_ok "firmware pack" -- "$PINION" firmware pack --key "$FX/prod.priv" --product sensor \
    --version 4.0.0-rc.1 --platform rpi4 --architecture aarch64 --author 'fleet fixtures' \
    --description 'packed by "pinion"' --vcs-identifier 0123abcd --misc 'channel=beta' \
    image.bin -o packed.fw --json
packed_uuid=$(json_get .uuid "$OUT")
assert_match "pack prints fwup's uuid form" "$packed_uuid" '^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$'
assert_eq "pack prints the file's sha256" "$(json_get .sha256 "$OUT")" "$(sha packed.fw)"
expect_ok "the packed archive uploads" -- "$PINION" firmware upload acme sensor packed.fw --json
assert_eq "upload reports pack's uuid" "$(json_get .uuid "$OUT")" "$packed_uuid"
assert_eq "description round-trips" "$(json_get .description "$OUT")" 'packed by "pinion"'

cat >structure.py <<'EOF'
import hashlib, re, sys, zipfile
def shape(path):
    z = zipfile.ZipFile(path)
    entries = z.infolist()
    conf = z.read("meta.conf").decode()
    keys = sorted(set(re.findall(r"^(meta-[a-z-]+)=", conf, re.M)))
    res = {n: (l, h) for n, l, h in re.findall(r'file-resource "([^"]+)" \{\nlength=(\d+)\nblake2b-256=([0-9a-f]{64})\n\}', conf)}
    # per resource: declared length and hash equal the data entry's
    checks = []
    for e in entries:
        if e.filename.startswith("data/"):
            data = z.read(e)
            ln, h = re.search(r'file-resource "%s" \{\nlength=(\d+)\nblake2b-256=([0-9a-f]{64})' % re.escape(e.filename[5:]), conf).groups()
            checks.append(int(ln) == len(data) and h == hashlib.blake2b(data, digest_size=32).hexdigest())
    order = ["sig" if e.filename == "meta.conf.ed25519" else "meta" if e.filename == "meta.conf" else "data" for e in entries]
    forms = sorted(set((o, e.compress_type, e.flag_bits & 8, e.external_attr >> 16, e.create_system) for o, e in zip(order, entries)))
    tasks = re.findall(r'^funlist=\{2,raw_write,\d+\}$', conf, re.M)
    return order, forms, keys, all(checks) and len(checks) == len(res), len(tasks) > 0
a, b = shape(sys.argv[1]), shape(sys.argv[2])
names = ["entry order", "compression/flags/mode of each kind of entry", "meta.conf keys",
         "length and BLAKE2b-256 of every resource", "funlist task form"]
for n, x, y in zip(names, a, b):
    if n == "entry order":
        # fwup: sig, meta, then one data entry per resource
        x, y = [k for i, k in enumerate(x) if i < 2 or k != x[i - 1]], [k for i, k in enumerate(y) if i < 2 or k != y[i - 1]]
    print("%s: %s" % (n, "same" if x == y else "DIFFERENT %r vs %r" % (x, y)))
EOF
expect_ok "structure compared with python zipfile" -- python3 structure.py packed.fw "$FX/sensor-1.1.0-prod.fw"
diag "$OUT"
assert_no_match "packed.fw has sensor-1.1.0-prod.fw's structure" "$OUT" 'DIFFERENT'
assert_eq "five aspects compared" "$(grep -c ': same' <<<"$OUT")" 5

expect_fail "pack refuses to overwrite" 'already exists' -- "$PINION" firmware pack --key "$FX/prod.priv" \
    --product sensor --version 4.0.1 --platform rpi4 --architecture aarch64 image.bin -o packed.fw
expect_fail "pack refuses a non-SemVer version" 'not a SemVer version' -- "$PINION" firmware pack \
    --key "$FX/prod.priv" --product sensor --version 4.1 --platform rpi4 --architecture aarch64 \
    image.bin -o other.fw
assert_eq "no file written for a refused pack" "$([ -e other.fw ] && echo present || echo absent)" absent
expect_fail "pack refuses a product name upload could never accept" "product name" -- \
    "$PINION" firmware pack --key "$FX/prod.priv" --product 'sen"sor' --version 4.1.0 \
    --platform rpi4 --architecture aarch64 image.bin -o other.fw
assert_eq "... and writes no file" "$([ -e other.fw ] && echo present || echo absent)" absent
expect_status "pack without --platform is a usage error" 2 -- "$PINION" firmware pack \
    --key "$FX/prod.priv" --product sensor --version 4.1.0 --architecture aarch64 image.bin -o other.fw
expect_ok "pinion key create (an unregistered key)" -- "$PINION" key create --out rogue
expect_ok "pack with it" -- "$PINION" firmware pack --key rogue.priv --product sensor \
    --version 4.2.0 --platform rpi4 --architecture aarch64 image.bin -o rogue.fw
refused "an archive signed by an unregistered key" 'does not verify with any registered key' -- \
    "$PINION" firmware upload acme sensor rogue.fw
expect_ok "pack for the gateway product" -- "$PINION" firmware pack --key "$FX/prod.priv" \
    --product gateway --version 5.0.0 --platform rpi4 --architecture aarch64 image.bin -o gw.fw
refused "a packed gateway archive uploaded as sensor" 'product mismatch' -- \
    "$PINION" firmware upload acme sensor gw.fw

done_testing
