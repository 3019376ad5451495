#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Debian packages, as an operator meets them: `cpack -G DEB` builds
# pinion-cli, piniond and pinion-mosquitto-plugin; apt installs them into a
# clean Debian 12 root (debootstrap --variant=minbase), pulling their Depends
# (mosquitto, libpq5, ...) from the archive; Mosquitto with the shipped
# snippet and piniond as its systemd unit's ExecStart and User say run from
# the installed files only (chroot: systemd does not run there, so the unit
# is checked with systemd-analyze verify); a device connects and takes an
# update; remove stops piniond, purge removes the configuration, and nothing
# of the packages is left running.
#
# PostgreSQL is the harness's, outside the root (its socket directory is
# bind-mounted in).  The device is the built reference device, outside too:
# it is not packaged.
#
# Needs root (debootstrap, chroot, mounts): skips otherwise.  The minbase root
# (~200 MB, ~1 min to make) and the downloaded .debs are cached in
# $PINION_DEB_CACHE (default /var/cache/pinion/deb-test), so a later run
# takes about a minute.  Label "package": `ctest -LE package` leaves it out.
. "$PINION_SOURCE/tests/harness/lib.sh"
. "$PINION_SOURCE/tests/harness/broker.sh"
. "$PINION_SOURCE/tests/harness/piniond.sh"

[ "$(id -u)" -eq 0 ] || skip_all "needs root (debootstrap, chroot and mounts)"
for tool in debootstrap chroot cpack systemd-analyze flock; do
    command -v "$tool" >/dev/null || bail_out "$tool is not installed (scripts/deps installs it)"
done

CACHE=${PINION_DEB_CACHE:-/var/cache/pinion/deb-test}
SUITE=bookworm
MIRROR=${PINION_DEB_MIRROR:-http://deb.debian.org/debian}
BASE=$CACHE/$SUITE-minbase.tar
mkdir -p "$CACHE/archives/partial"

# ---------------------------------------------------------------- the root

# R is outside $T, which is bind-mounted into it at the same path (so that
# every file path means the same inside and out).
R=$(mktemp -d /var/tmp/pinion-deb.XXXXXX)
MOUNTS=()
bind() { # bind SOURCE: SOURCE at the same path inside the root
    mkdir -p "$R$1"
    mount --bind "$1" "$R$1" && MOUNTS+=("$R$1")
}
root_pids() { # processes whose root directory is $R
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && echo "${p#/proc/}"
    done
    return 0
}
teardown() {
    local p i
    for p in $(root_pids); do kill -TERM "$p" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do
        [ -z "$(root_pids)" ] && break
        sleep 0.1
    done
    for p in $(root_pids); do kill -KILL "$p" 2>/dev/null; done
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null
    done
    # Never delete through a mount that is still there.
    if grep -q " $R/" /proc/mounts; then
        echo "# left $R in place: still mounted under it" >&2
    else
        rm -rf --one-file-system "$R"
    fi
}
on_exit teardown

# The clean root: made once with debootstrap, then unpacked for every run.
# flock: two runs on one machine share the cache.
(
    flock 9
    if [ ! -s "$BASE" ]; then
        echo "# making the $SUITE minbase root in $CACHE (once)" >&2
        tmp=$(mktemp -d "$CACHE/root.XXXXXX")
        chmod 0755 "$tmp"
        debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 &&
            tar -C "$tmp" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
        rc=$?
        rm -rf --one-file-system "$tmp"
        exit $rc
    fi
) 9>"$CACHE/lock" || bail_out "debootstrap failed: $(tail -5 "$CACHE/debootstrap.log")"
tar -C "$R" -xf "$BASE" || bail_out "cannot unpack $BASE"
# mktemp made it 0700: the root's / must be open to its daemons' users.
chmod 0755 "$R"
pass "a clean Debian $SUITE root"

mount -t proc proc "$R/proc" && MOUNTS+=("$R/proc") || bail_out "cannot mount /proc in the root"
bind "$T"
bind "$PGHOST"
mkdir -p "$R/var/cache/apt/archives"
mount --bind "$CACHE/archives" "$R/var/cache/apt/archives" && MOUNTS+=("$R/var/cache/apt/archives")
# Package scripts start no daemon here (Debian's convention for chroots).
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 0755 "$R/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
# root_install OWNER:GROUP MODE SRC DEST: SRC (a path here) to DEST in the
# root, owned by the root's own users.
root_install() {
    cp "$3" "$R$4" && in_root chown "$1" "$4" && in_root chmod "$2" "$4" ||
        bail_out "cannot install $4 in the root"
}

# ---------------------------------------------------------------- packages

# From this build, unless it is sanitized (packages must not carry ASan) or
# was configured with another prefix than /usr (e.g. a build tree made before
# /usr became the default): then a plain /usr tree is built for them next to it.
PKG_BUILD=$PINION_BUILD
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$PINION_BUILD/CMakeCache.txt")
if [ "${PINION_SANITIZE:-0}" = 1 ] || [ "$prefix" != /usr ]; then
    PKG_BUILD=$PINION_BUILD/deb-plain
    cmake -S "$PINION_SOURCE" -B "$PKG_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_INSTALL_PREFIX=/usr -DPINION_SANITIZE=OFF -DBUILD_TESTING=OFF \
        >"$T/plain.log" 2>&1 &&
        cmake --build "$PKG_BUILD" -j2 --target pinion piniond pinion_plugin >>"$T/plain.log" 2>&1 ||
        bail_out "plain build for the packages failed: $(tail -5 "$T/plain.log")"
fi
expect_ok "cpack -G DEB builds the packages" -- \
    cpack -G DEB --config "$PKG_BUILD/CPackConfig.cmake" -B "$T/pkgs"
mkdir -p "$R/tmp/pkgs"
cp "$T"/pkgs/*.deb "$R/tmp/pkgs/"
VERSION=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$PKG_BUILD/CPackConfig.cmake")
for p in pinion-cli piniond pinion-mosquitto-plugin; do
    assert_eq "$p's package is built" "$(ls "$R/tmp/pkgs/${p}_${VERSION}_"*.deb 2>/dev/null | wc -l)" 1
done
assert_match "piniond's Depends come from its libraries" \
    "$(dpkg-deb -f "$R"/tmp/pkgs/piniond_*.deb Depends)" 'libmosquitto1 .*libpq5 .*libsodium23'
assert_match "the plugin depends on mosquitto" \
    "$(dpkg-deb -f "$R"/tmp/pkgs/pinion-mosquitto-plugin_*.deb Depends)" '^mosquitto \(>= 2\.0\)'

# apt resolves the Depends from the archive (the .debs are cached; a stale
# package list is refreshed once).
apt_install() {
    in_root apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >>"$T/apt.log" 2>&1 ||
        { in_root apt-get update >>"$T/apt.log" 2>&1 &&
            in_root apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >>"$T/apt.log" 2>&1; }
}
DEBS=()
for f in "$R"/tmp/pkgs/*.deb; do DEBS+=("/tmp/pkgs/${f##*/}"); done
if apt_install "${DEBS[@]}"; then
    pass "apt installs the three packages and what they depend on"
else
    bail_out "apt install failed: $(tail -15 "$T/apt.log")"
fi
assert_eq "all three installed" \
    "$(in_root dpkg-query -W -f='${db:Status-Status} ' pinion-cli piniond pinion-mosquitto-plugin)" \
    "installed installed installed "
assert_eq "mosquitto came in as a dependency" \
    "$(in_root dpkg-query -W -f='${db:Status-Status}' mosquitto)" installed

assert_eq "pinion --version" "$(in_root pinion --version | cut -d' ' -f1-2)" "pinion $VERSION"
assert_eq "piniond --version" "$(in_root piniond --version | cut -d' ' -f1-2)" "piniond $VERSION"

# What postinst made, and the conffile.
assert_eq "the system user pinion" "$(in_root getent passwd pinion | cut -d: -f1,6,7)" \
    "pinion:/var/lib/pinion:/usr/sbin/nologin"
assert_eq "artifacts: pinion's, group-writable, setgid" \
    "$(in_root stat -c '%U:%G %a' /var/lib/pinion/artifacts)" "pinion:pinion 2775"
assert_eq "trust: written by the broker's user" \
    "$(in_root stat -c '%U:%G %a' /var/lib/pinion/trust)" "mosquitto:mosquitto 755"
assert_eq "piniond.conf is root:pinion 0640" "$(in_root stat -c '%U:%G %a' /etc/pinion/piniond.conf)" \
    "root:pinion 640"
assert_match "piniond.conf is a conffile" \
    "$(in_root dpkg-query -W -f='${Conffiles}' piniond)" '/etc/pinion/piniond.conf [0-9a-f]{32}'

UNIT=$R/usr/lib/systemd/system/piniond.service
[ -f "$UNIT" ] || bail_out "no piniond.service installed"
# The root has no systemd (minbase): verified by the host's systemd, with
# the unit's paths pointed into the root.
mkdir -p "$T/unit"
sed "s|^ExecStart=/|ExecStart=$R/|" "$UNIT" >"$T/unit/piniond.service"
if systemd-analyze verify --man=no "$T/unit/piniond.service" >"$T/verify.log" 2>&1; then
    pass "systemd-analyze verify accepts piniond.service"
else
    fail "systemd-analyze verify accepts piniond.service" "$(cat "$T/verify.log")"
fi
for want in User=pinion ProtectSystem=strict NoNewPrivileges=yes Restart=on-failure \
    WantedBy=multi-user.target; do
    if grep -qx "$want" "$UNIT"; then pass "piniond.service: $want"; else fail "piniond.service: $want"; fi
done
assert_no_match "piniond.service claims no reload (piniond has no SIGHUP handling)" \
    "$(grep -v '^#' "$UNIT")" 'ExecReload'

# ---------------------------------------------------------------- it works

# The fleet, with the installed CLI (inside the root, same paths).
printf '#!/bin/sh\nexec chroot %q /usr/bin/env PINION_DB="$PINION_DB" /usr/bin/pinion "$@"\n' "$R" \
    >"$T/pinion-installed"
chmod 0755 "$T/pinion-installed"
PINION=$T/pinion-installed
make_fleet

# Firmware 1.2.0 uploaded to the package's artifact store: no --artifacts.
head -c 200000 /dev/urandom >"$T/image-1.2.0.bin"
expect_ok "firmware pack" -- "$PINION" firmware pack --key "$T/fw.priv" --product sensor \
    --version 1.2.0 --platform rpi4 --architecture aarch64 "$T/image-1.2.0.bin" -o "$T/fw-1.2.0.fw"
expect_ok "firmware upload into /var/lib/pinion/artifacts by default" -- \
    "$PINION" firmware upload acme sensor "$T/fw-1.2.0.fw" --json
FW2=$(json_get .uuid "$OUT")
assert_match "stored in the package's directory" "$(json_get .artifact "$OUT")" \
    '^/var/lib/pinion/artifacts/[0-9a-f]{64}\.fw$'

# Mosquitto: Debian's mosquitto.conf, plus the shipped snippet in conf.d with
# this test's database, port and server certificate.
broker_server_cert
PORT=$(free_port)
BROKER_PORT[b1]=$PORT
root_install root:mosquitto 0640 "$T/broker-tls/server.key" /etc/pinion/server.key
root_install root:root 0644 "$T/broker-tls/server.pem" /etc/pinion/server.pem
sed -e "s|^plugin_opt_database .*|plugin_opt_database $PINION_DB|" \
    -e "s|^listener 8883$|listener $PORT 127.0.0.1|" \
    -e "s|^plugin_opt_service_address .*|plugin_opt_service_address 127.0.0.1:$PORT|" \
    "$R/usr/share/pinion/mosquitto-pinion.conf" >"$R/etc/mosquitto/conf.d/pinion.conf"
MQLOG=$R/var/log/mosquitto/mosquitto.log
# As Debian's mosquitto.service does before ExecStart.
in_root install -d -o mosquitto -g mosquitto /run/mosquitto /var/log/mosquitto
# (chroot itself, not in_root: $! must be the broker's PID.)
chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin /usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf \
    >"$T/mosquitto.out" 2>&1 &
MQPID=$!
if wait_until 15 grep -q "pinion: loaded" "$MQLOG"; then
    pass "the installed mosquitto loads the installed plugin"
else
    bail_out "mosquitto with the plugin did not start: $(tail -n 5 "$MQLOG" "$T/mosquitto.out" 2>&1)"
fi
assert_match "the plugin's start-up line gives its version" "$(cat "$MQLOG")" \
    "pinion: plugin version $VERSION"
# The root's users, by number (the host may name them otherwise).
uid_of() { awk '/^Uid:/ {print $3}' "/proc/$1/status" 2>/dev/null; }
assert_eq "the broker runs as mosquitto" "$(uid_of "$MQPID")" "$(in_root id -u mosquitto)"
trust_written() { [ -n "$(ls "$R/var/lib/pinion/trust")" ]; }
wait_until 5 trust_written ||
    fail "the plugin wrote the trust directory" "$(ls -la "$R/var/lib/pinion/trust")"

# piniond: the conffile edited as an operator would, then the unit's
# ExecStart as the unit's User.
root_install root:pinion 0640 "$T/svc.key" /etc/pinion/piniond.key
root_install root:root 0644 "$T/svc.pem" /etc/pinion/piniond.pem
root_install root:pinion 0640 "$T/rk.priv" /etc/pinion/release.priv
sed -i -e "s|^database = .*|database = \"$PINION_DB\"|" \
    -e 's|^#tick_ms = 500|tick_ms = 200|' "$R/etc/pinion/piniond.conf"
EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
USER_=$(sed -n 's/^User=//p' "$UNIT")
GROUP_=$(sed -n 's/^Group=//p' "$UNIT")
# $EXEC unquoted: ExecStart's words (no quoting in this unit).
# shellcheck disable=SC2086
chroot --userspec="$USER_:$GROUP_" "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin HOME=/var/lib/pinion \
    $EXEC >"$T/piniond.log" 2>&1 &
PDPID=$!
if wait_until 15 grep -q "piniond: connected to" "$T/piniond.log"; then
    pass "the installed piniond starts as its unit says and connects"
else
    bail_out "piniond did not connect: $(tail -5 "$T/piniond.log")"
fi
assert_eq "piniond runs as pinion" "$(uid_of "$PDPID")" "$(in_root id -u pinion)"

start_device dev-1 --run-for 120
wait_sql 30 "SELECT firmware_version FROM devices WHERE identifier = 'dev-1'" 1.0.0 ||
    bail_out "the device did not connect and report 1.0.0: $(tail -5 "$T/dev-dev-1.log")"
pass "a device connects through the installed broker and plugin"
expect_ok "deployment created" -- \
    "$PINION" deployment create acme sensor d1 --firmware "$FW2" --version "< 1.2.0"
expect_ok "deployment started" -- "$PINION" deployment start acme d1
if wait_sql 60 "SELECT firmware_version FROM devices WHERE identifier = 'dev-1'" 1.2.0; then
    pass "the device took the update from the installed piniond"
else
    fail "the device took the update from the installed piniond" \
        "$(tail -5 "$T/dev-dev-1.log")" "$(tail -5 "$T/piniond.log")"
fi
assert_eq "it installed 1.2.0 once" "$(grep -c '^installed sensor 1.2.0$' "$T/dev-dev-1.log")" 1
stop_device dev-1

# ---------------------------------------------------------------- removal

# The broker is Debian's mosquitto, not ours: stopped as its own unit would.
kill -TERM "$MQPID" 2>/dev/null
wait "$MQPID" 2>/dev/null
if in_root apt-get remove -y -o Dpkg::Use-Pty=0 piniond pinion-mosquitto-plugin pinion-cli \
    >"$T/remove.log" 2>&1; then
    pass "apt removes the three packages"
else
    fail "apt removes the three packages" "$(tail -10 "$T/remove.log")"
fi
wait_until 5 sh -c "! kill -0 $PDPID 2>/dev/null"
if kill -0 "$PDPID" 2>/dev/null; then
    fail "removing piniond stopped the running piniond" "$(ps -o pid,user,args -p "$PDPID")"
    kill -KILL "$PDPID" 2>/dev/null
else
    pass "removing piniond stopped the running piniond"
fi
wait "$PDPID" 2>/dev/null
assert_match "piniond logged a clean stop" "$(tail -2 "$T/piniond.log")" 'piniond: stopping'
assert_eq "the conffile stays after remove" "$(test -f "$R/etc/pinion/piniond.conf" && echo kept)" kept

expect_ok "dpkg --purge" -- in_root dpkg --purge piniond pinion-mosquitto-plugin pinion-cli
assert_eq "purged: no trace in dpkg" \
    "$(in_root dpkg-query -W -f='${db:Status-Status}' piniond 2>/dev/null)" ""
assert_eq "purge removed piniond.conf" "$(test -e "$R/etc/pinion/piniond.conf" && echo there)" ""
assert_eq "purge removed the trust directory" "$(test -e "$R/var/lib/pinion/trust" && echo there)" ""
assert_eq "purge keeps uploaded firmware" "$(ls "$R/var/lib/pinion/artifacts" | wc -l)" 1
assert_eq "nothing runs in the root any more" "$(root_pids | wc -l)" 0

done_testing
