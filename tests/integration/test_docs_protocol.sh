#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# docs/protocol.md against the code, so the document a device implementer
# reads cannot drift from what piniond and the reference device do:
#   - the worked manifest is a valid test vector: the document's own OpenSSL
#     recipe verifies its DSSE signature, its keyid is the release key's key
#     id, its firmware uuid follows the documented derivation from meta.conf,
#     its key_id is fw.pub's and meta_conf_sig verifies with fw.pub;
#   - the payload table lists exactly the fields the code's encoder writes
#     (a manifest signed now by pn-manifest-tool, with and without url);
#   - the chunk example's header is consistent with its request.
. "$PINION_SOURCE/tests/harness/lib.sh"

DOC=$PINION_SOURCE/docs/protocol.md
TOOL=$PINION_BUILD/tests/tools/pn-manifest-tool

# Pieces of the document: the BODY line, the keys, the signature, the recipe.
expect_ok "the worked example's pieces are found in the document" -- python3 - "$DOC" <<'EOF'
import re, sys
s = open(sys.argv[1]).read()
body = re.search(r'\n(\{"device".*\})\n', s).group(1)
open('body.json', 'w').write(body)
open('release.pub', 'w').write(re.search(r'`release\.pub` is `([^`]+)`', s).group(1))
open('fw.pub', 'w').write(re.search(r'`fw\.pub`\s+`([^`]+)`', s).group(1))
env = s[s.index('The envelope (payload shortened'):]
open('keyid', 'w').write(re.search(r'"keyid":"([0-9a-f]+)"', env).group(1))
i = s.index('Checking it with nothing but OpenSSL')
open('recipe.sh', 'w').write(s[i:].split('```\n', 2)[1])
EOF

expect_ok "the document's OpenSSL recipe verifies the worked manifest" -- bash recipe.sh
assert_match "OpenSSL says so" "$OUT" "Signature Verified Successfully"

keyid=$(base64 -d release.pub | sha256sum | cut -c1-16)
assert_eq "the envelope's keyid is the release key's key id" "$(cat keyid)" "$keyid"

# The firmware fields of the worked example, checked as a device would.
expect_ok "the example's firmware fields follow the documented rules" -- python3 - <<'EOF'
import base64, hashlib, json, subprocess, sys
p = json.load(open('body.json'))
fw = p['firmware']
meta = base64.b64decode(fw['meta_conf'])
h = bytearray(hashlib.blake2b(bytes.fromhex('2053dffbd51e4310b93b956da89f9f34') + meta,
                              digest_size=32).digest())
h[6] = (h[6] & 0x0f) | 0x50
x = h[:16].hex()
uuid = '-'.join([x[:8], x[8:12], x[12:16], x[16:20], x[20:32]])
if uuid != fw['uuid']:
    sys.exit('uuid %s, derivation gives %s' % (fw['uuid'], uuid))
pk = base64.b64decode(open('fw.pub').read())
if hashlib.sha256(pk).hexdigest()[:16] != fw['key_id']:
    sys.exit('key_id is not fw.pub\'s key id')
open('meta.conf', 'wb').write(meta)
open('meta.sig', 'wb').write(base64.b64decode(fw['meta_conf_sig']))
open('fw.der', 'wb').write(bytes.fromhex('302a300506032b6570032100') + pk)
r = subprocess.run(['openssl', 'pkeyutl', '-verify', '-pubin', '-inkey', 'fw.der',
                    '-keyform', 'DER', '-rawin', '-in', 'meta.conf', '-sigfile', 'meta.sig'],
                   capture_output=True, text=True)
if r.returncode != 0:
    sys.exit('meta_conf_sig does not verify with fw.pub: ' + r.stdout + r.stderr)
if p['expires_at'] <= p['issued_at'] or p['sequence'] < 1:
    sys.exit('times or sequence break the payload rules')
EOF

# The payload table against the encoder of today's code.
expect_ok "pinion release-key create" -- "$PINION" release-key create --out signer
expect_ok "pinion key create" -- "$PINION" key create --out fwk
head -c 5000 /dev/urandom >image.bin
expect_ok "pinion firmware pack" -- "$PINION" firmware pack --key fwk.priv --product thermo \
    --version 1.1.0 --platform rpi4 --architecture arm image.bin -o app.fw
expect_ok "a manifest signed by the code" -- "$TOOL" --key signer.priv --device d1 \
    --sequence 1 --fw app.fw --fw-key fwk.pub --url https://cdn.example/x.fw
echo "$OUT" >with-url.json
expect_ok "a manifest signed by the code, without url" -- "$TOOL" --key signer.priv \
    --device d1 --sequence 2 --fw app.fw --fw-key fwk.pub
echo "$OUT" >without-url.json

expect_ok "the payload table lists exactly the encoder's fields" -- python3 - "$DOC" <<'EOF'
import base64, json, re, sys
s = open(sys.argv[1]).read()
sec = s[s.index('**Payload** (`BODY`)'):s.index('**Device acceptance rule**')]
doc = set()
for cell in re.findall(r'^\| ([^|]+) \|', sec, re.M):
    for name in re.findall(r'`([a-z0-9_.]+)`', cell):
        doc.add(name if '.' in name or name in ('device', 'deployment', 'sequence',
                'issued_at', 'expires_at') else 'firmware.' + name)
def fields(path):
    env = json.load(open(path))
    assert env['payloadType'] == 'application/vnd.pinion.update+json'
    p = json.loads(base64.b64decode(env['payload']))
    out = set(k for k in p if k != 'firmware')
    out |= set('firmware.' + k for k in p['firmware'])
    return out
code = fields('with-url.json')
if doc != code:
    sys.exit('document only: %s; code only: %s' % (sorted(doc - code), sorted(code - doc)))
if code - fields('without-url.json') != {'firmware.url'}:
    sys.exit('only firmware.url should be optional')
EOF

# The chunk example: header fields equal the request's.
expect_ok "the chunk example's header matches its request" -- python3 - "$DOC" <<'EOF'
import json, re, sys
s = open(sys.argv[1]).read()
sec = s[s.index('## Chunk format'):s.index('## Status messages')]
req = json.loads(re.search(r'\n(\{"uuid".*\})\n', sec).group(1))
hexes = re.search(r'```\n((?:[0-9a-f]{2}[ \n]+)+)```', sec).group(1).split()
b = bytes.fromhex(''.join(hexes))
if len(b) != 32 or b[:4] != b'PNC1':
    sys.exit('header is not 32 bytes starting with PNC1')
if b[4:20].hex() != req['uuid'].replace('-', ''):
    sys.exit('header uuid differs from the request')
if int.from_bytes(b[20:28], 'big') != req['offset'] or int.from_bytes(b[28:32], 'big') != min(req['length'], 65536):
    sys.exit('header offset/length differ from the request')
EOF

done_testing
