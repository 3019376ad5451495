#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Plugin configuration (README, "Deploying the plugin"): a bad or missing option makes the
# plugin refuse to load, so Mosquitto exits, with a message naming the
# option; valid non-default options load.  A database that cannot be
# reached at startup does not stop the broker, but devices are refused.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"

command -v openssl >/dev/null || bail_out "openssl is not installed"

certid() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

# shellcheck disable=SC2004,SC2034 # broker.sh's associative arrays

# refuses_to_load DESC NAME ERE SED_SCRIPT [plugin opts]: with the config
# edited by SED_SCRIPT, Mosquitto must exit at startup and its log/stdout
# must have a pinion line matching ERE.
refuses_to_load() {
    local desc=$1 name=$2 re=$3 script=$4
    shift 4
    prepare_broker "$name" "$@"
    [ -z "$script" ] || sed -i -e "$script" "${BROKER_CONF[$name]}"
    if launch_broker "$name"; then
        fail "$desc: the plugin refuses to load" "the broker started" \
            "config: $(grep plugin_opt "${BROKER_CONF[$name]}")"
        stop_broker "$name"
    elif grep -Eq "pinion: .*($re)" <<<"$OUT"; then
        pass "$desc: the plugin refuses to load, naming the option"
    else
        fail "$desc: the plugin refuses to load, naming the option" "no line matching /$re/" \
            "output: $OUT"
    fi
}

refuses_to_load "no plugin_opt_database" nodb 'plugin_opt_database' '/^plugin_opt_database /d'
refuses_to_load "no plugin_opt_trust_dir" notrust 'plugin_opt_trust_dir' \
    '/^plugin_opt_trust_dir /d'
refuses_to_load "trust_dir does not exist" badtrust "plugin_opt_trust_dir $T/no-such-dir" \
    "s|^plugin_opt_trust_dir .*|plugin_opt_trust_dir $T/no-such-dir|"
: >"$T/a-file"
refuses_to_load "trust_dir is a file" filetrust "plugin_opt_trust_dir $T/a-file: .*not a .*directory" \
    "s|^plugin_opt_trust_dir .*|plugin_opt_trust_dir $T/a-file|"
refuses_to_load "identity foo" ident 'plugin_opt_identity.*foo' '' identity=foo
refuses_to_load "rotation foo" rot 'plugin_opt_rotation.*foo' '' rotation=foo
refuses_to_load "allow_expired_pinned maybe" aep 'plugin_opt_allow_expired_pinned.*maybe' '' \
    allow_expired_pinned=maybe
refuses_to_load "topic_root a/+" troot 'plugin_opt_topic_root.*a/\+' '' 'topic_root=a/+'
refuses_to_load "topic_root with a #" troot2 'plugin_opt_topic_root' '' 'topic_root=fleet/#'
# shellcheck disable=SC2016 # '$SYS' is meant literally
refuses_to_load "topic_root starting with \$" troot3 'plugin_opt_topic_root' '' 'topic_root=$SYS'
refuses_to_load "resync_interval 1" resync 'plugin_opt_resync_interval' '' resync_interval=1
refuses_to_load "deny_log_interval -1" denylog 'plugin_opt_deny_log_interval.*-1' '' \
    deny_log_interval=-1
refuses_to_load "unknown option plugin_opt_bogus" bogus 'plugin_opt_bogus' '' bogus=1

# ---------------------------------------------------- valid options load

"$PINION" org create acme >/dev/null || bail_out "org create failed"
"$PINION" product create acme sensor >/dev/null || bail_out "product create failed"
"$PINION" ca create --cn "Acme CA" --out ca >/dev/null || bail_out "ca create failed"
code=$("$PINION" ca code acme 2>/dev/null) || bail_out "ca code failed"
"$PINION" ca verification-cert --ca ca --code "$code" --out v.pem >/dev/null ||
    bail_out "verification-cert failed"
"$PINION" ca register acme ca/ca.pem --verification-cert v.pem --jitp sensor >/dev/null ||
    bail_out "ca register failed"
"$PINION" device cert --ca ca --id dev-1 --out devs >/dev/null || bail_out "device cert failed"
"$PINION" device cert --ca ca --id dev-2 --out devs >/dev/null || bail_out "device cert failed"

if start_broker good topic_root=site.1/fleet identity=cn rotation=none \
    allow_expired_pinned=yes resync_interval=5; then
    pass "valid non-default options: the broker starts"
    probe good devs/dev-1 dev-1 --sub 'site.1/fleet/dev-1/down/#' --sub 'fleet/dev-1/down/#'
    assert_eq "... a device connects, its tree under topic_root site.1/fleet" "$OUT" \
        "$(printf '%s\n' 'connack 0' 'suback site.1/fleet/dev-1/down/# 0' \
            'suback fleet/dev-1/down/# 128' 'done')"
    stop_broker good
else
    fail "valid non-default options: the broker starts" "$OUT"
fi

# ------------------------------- a database that is not there at startup

baddb="host=$PGHOST port=$PGPORT user=postgres dbname=${PINION_TEST_DB}_missing connect_timeout=2"
prepare_broker nodbyet
sed -i "s|^plugin_opt_database .*|plugin_opt_database $baddb|" "${BROKER_CONF[nodbyet]}"
if launch_broker nodbyet; then
    pass "database missing at startup: the broker still starts"
else
    fail "database missing at startup: the broker still starts" "$OUT"
fi
# Mosquitto 2.1 lets devices wait for the first load instead (README,
# "Mosquitto versions"; test_plugin_outage.sh follows one through).
case $BROKER_VERSION in
2.0.*) cold='refusing devices' ;;
*) cold='devices wait \(up to 20 s\)' ;;
esac
assert_match "... and logs that it cannot load from the database" \
    "$(cat "${BROKER_LOG[nodbyet]}")" "pinion: cannot load from the database.*$cold"
# Put the registered CA into this broker's trust directory, so that the
# TLS layer accepts dev-2 and the plugin has to decide.
hash=$(openssl x509 -in ca/ca.pem -noout -subject_hash)
cp ca/ca.pem "${BROKER_TRUST[nodbyet]}/$hash.0"
chmod 0644 "${BROKER_TRUST[nodbyet]}/$hash.0"
probe nodbyet devs/dev-2 dev-2
case $BROKER_VERSION in
2.0.*)
    assert_eq "... a device of a registered CA is refused (connack 5)" \
        "$RC $(head -n1 <<<"$OUT")" "5 connack 5"
    assert_match "... with a refusal line in the log" "$(cat "${BROKER_LOG[nodbyet]}")" \
        "pinion: refused certificate $(certid devs/dev-2.pem) identifier dev-2: "
    ;;
*)
    assert_eq "... a device of a registered CA waits (no CONNACK in pn-probe's 10 s)" \
        "$RC $(grep -c '^connack' <<<"$OUT")" "3 0"
    ;;
esac
assert_eq "... and it is not pinned" \
    "$(sql "SELECT count(*) FROM device_certificates WHERE id = '$(certid devs/dev-2.pem)'")" 0
stop_broker nodbyet

done_testing
