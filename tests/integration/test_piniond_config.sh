#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# piniond's command line and configuration file (README "piniond"): every
# bad setting stops it at start with exit 1 and one line on stderr naming
# the file, the setting and what is wrong, before it connects anywhere.
# Also the reference device's command line.
. "$PINION_SOURCE/tests/harness/lib.sh"

PINIOND=$PINION_BUILD/service/piniond
DEVICE=$PINION_BUILD/examples/device/pinion-device

expect_ok "piniond --help" -- "$PINIOND" --help
assert_match "... prints the usage on stdout" "$OUT" '^usage: piniond -c\|--config CONFIG'
expect_status "piniond without -c: usage error" 2 -- "$PINIOND"
expect_status "piniond with an unknown option: usage error" 2 -- "$PINIOND" --bogus
expect_status "piniond with a stray argument: usage error" 2 -- "$PINIOND" -c x.conf extra

"$PINION" release-key create --out rk >/dev/null || bail_out "release-key create failed"

# conf NAME [LINES...]: a complete configuration plus LINES (later lines win
# in libconfuse, so LINES may override).
conf() {
    local name=$1
    shift
    {
        echo 'database = "host=/nonexistent dbname=none"'
        echo 'mqtt_host = "127.0.0.1"'
        echo 'mqtt_port = 1'
        echo 'ca_file = "ca.pem"'
        echo 'cert_file = "svc.pem"'
        echo 'key_file = "svc.key"'
        echo "release_key = \"$PWD/rk.priv\""
        printf '%s\n' "$@"
    } >"$name.conf"
}

# bad DESC PATTERN CONFIG-LINES...
bad() {
    local desc=$1 pattern=$2
    shift 2
    conf bad "$@"
    expect_fail "$desc" "$pattern" -- "$PINIOND" -c bad.conf
    assert_eq "$desc: exit status 1" "$RC" 1
}

bad "an unknown setting is named with its line" \
    '^piniond: bad\.conf: line 8: no such option .bogus.$' 'bogus = 1'
bad "a string where a number belongs" \
    "^piniond: bad\.conf: line 8: invalid integer value for option 'mqtt_port'$" 'mqtt_port = "x"'
bad "mqtt_port 0" '^piniond: bad\.conf: mqtt_port = 0 is out of range \(1-65535\)$' \
    'mqtt_port = 0'
bad "mqtt_port 65536" 'mqtt_port = 65536 is out of range' 'mqtt_port = 65536'
bad "chunk_max below 1 KiB" 'chunk_max = 100 is out of range \(1024-1048576\)' 'chunk_max = 100'
bad "manifest_ttl below a minute" 'manifest_ttl = 59 is out of range' 'manifest_ttl = 59'
bad "max_attempts 0" 'max_attempts = 0 is out of range' 'max_attempts = 0'
bad "a negative verify_ttl" 'verify_ttl = -1 is out of range' 'verify_ttl = -1'
bad "tick_ms 5" 'tick_ms = 5 is out of range' 'tick_ms = 5'
bad "a chunk request limit of 0" 'device_get_rate = 0 is out of range \(1-1000000\)' \
    'device_get_rate = 0'
bad "a status burst of 0" 'device_status_burst = 0 is out of range' 'device_status_burst = 0'
bad "a limit log period of 0" 'limit_log_period = 0 is out of range \(1-86400\)' 'limit_log_period = 0'
bad "a negative in-flight cache time" 'inflight_cache_ms = -1 is out of range \(0-60000\)' \
    'inflight_cache_ms = -1'
bad "a wildcard in topic_root" "topic_root 'fleet/#' is not" 'topic_root = "fleet/#"'
bad "'+' in topic_root" "topic_root 'a/\+/b' is not" 'topic_root = "a/+/b"'
bad "'\$' in topic_root" "topic_root '\\\$SYS' is not" 'topic_root = "$SYS"'
bad "an empty topic_root level" "topic_root 'a//b' is not" 'topic_root = "a//b"'
bad "a space in client_id" "client_id 'a b' is not" 'client_id = "a b"'
bad "a cdn_url that is not http(s)" "cdn_url 'ftp://cdn/fw' is not an http\(s\):// URL" \
    'cdn_url = "ftp://cdn/fw"'
bad "a cdn_url with a space" "cdn_url 'https://cdn/a b' is not" 'cdn_url = "https://cdn/a b"'
bad "an unterminated string" '^piniond: bad\.conf: line [0-9]+: ' 'client_id = "abc'

for key in database ca_file cert_file key_file release_key; do
    conf full
    grep -v "^$key = " full.conf >missing.conf
    expect_fail "without $key" "^piniond: missing\.conf: '$key' is required$" -- \
        "$PINIOND" -c missing.conf
done

expect_fail "a configuration file that does not exist" \
    '^piniond: nosuch\.conf: cannot read the configuration file$' -- "$PINIOND" -c nosuch.conf
conf nokey 'release_key = "/nonexistent/rk.priv"'
expect_fail "a release key that does not exist" '^piniond: release_key .*/nonexistent/rk\.priv' -- \
    "$PINIOND" -c nokey.conf
head -c 20 /dev/urandom | base64 >junk.priv
conf junkkey "release_key = \"$PWD/junk.priv\""
expect_fail "a release key that is not a key" '^piniond: release_key ' -- "$PINIOND" -c junkkey.conf
conf notls
expect_fail "TLS files that do not exist" \
    '^piniond: cannot use the TLS files \(ca_file, cert_file, key_file\)$' -- "$PINIOND" -c notls.conf

# ---- the reference device
expect_ok "pinion-device --help" -- "$DEVICE" --help
assert_match "... prints the usage on stdout" "$OUT" '^usage: pinion-device --host H'
expect_status "pinion-device without its required options: usage error" 2 -- "$DEVICE" --id x
expect_status "pinion-device with an unknown option: usage error" 2 -- "$DEVICE" --bogus

done_testing
