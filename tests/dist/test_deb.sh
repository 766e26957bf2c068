#!/usr/bin/env bash
# The hub's .deb of target/dist/ (dist/deb.sh), checked and run without
# installing it: dpkg-deb --info/--contents, `dpkg -x` into a throwaway
# root, the unit's lines, then the unit's ExecStart (rewritten into that
# root) runs the hub on 127.0.0.1 with certificates from the unpacked
# `tidelog certs`. A second `tidelog serve` from the same root dials it as
# edge-2 (mutual TLS link both ways); a gateway app built from the C SDK
# tarball (the .deb has no command that writes records) writes an alert as
# edge-1 and the hub acknowledges it; SIGHUP adds a peer and the hub keeps
# running; SIGTERM stops both cleanly; the alert is in the hub's data.
# Nothing is installed into the system; no Rust toolchain on the PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
deb="$repo/target/dist/tidelog_${version}-1_$(dpkg --print-architecture).deb"
sdk_tgz="$repo/target/dist/tidelog-c-sdk-$version-$(uname -m)-linux-gnu.tar.gz"
[ -f "$deb" ] || { echo "test_deb: $deb is missing; run bash dist/build.sh deb" >&2; exit 1; }
[ -f "$sdk_tgz" ] || { echo "test_deb: the gateway app needs the C SDK ($sdk_tgz); run bash dist/build.sh c-sdk" >&2; exit 1; }
for tool in dpkg-deb cc pkg-config readelf timeout; do
    command -v "$tool" >/dev/null || { echo "test_deb: $tool is required" >&2; exit 1; }
done
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "test_deb: a Rust toolchain is still on the PATH ($PATH)" >&2; exit 1
fi

tmp=$(mktemp -d)
hub_pid="" edge_pid=""
stop() { # pid: SIGKILL a process of ours that is still running
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null && { kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
    return 0
}
cleanup() {
    local rc=$?
    stop "$edge_pid"
    stop "$hub_pid"
    if [ $rc -ne 0 ]; then
        for log in "$tmp"/hub.log "$tmp"/edge.log; do
            [ -f "$log" ] && { echo "---- $log" >&2; tail -n 40 "$log" >&2; }
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_deb: FAILED: $*" >&2; exit 1; }
# wait_log <file> <grep -E pattern> <what>: up to 30 s
wait_log() {
    for _ in $(seq 300); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "no '$3' in $1 within 30 s"
}

echo "-- dpkg-deb --info $(basename "$deb")"
info=$(dpkg-deb --info "$deb")
echo "$info" | sed 's/^/   /'
for want in "Package: tidelog" "Version: $version-1" "Depends: .*adduser" "conffiles" " postinst " " postrm " " prerm "; do
    echo "$info" | grep -qE "$want" || fail "dpkg-deb --info lacks '$want'"
done
ctl="$tmp/control"
dpkg-deb --control "$deb" "$ctl"
grep -qx /etc/tidelog/cloud.toml "$ctl/conffiles" || fail "/etc/tidelog/cloud.toml is not a conffile"
grep -q "adduser --system --group" "$ctl/postinst" || fail "the postinst does not create the system user"
grep -q "deb-systemd-helper" "$ctl/postinst" || fail "the postinst does not register the unit"
for s in postinst postrm prerm; do sh -n "$ctl/$s" || fail "$s is not valid sh"; done

echo "-- dpkg-deb --contents"
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/tidelog ./etc/tidelog/cloud.toml ./usr/lib/systemd/system/tidelog.service \
         ./usr/share/doc/tidelog/copyright ./usr/share/doc/tidelog/LICENSE-MIT \
         ./usr/share/doc/tidelog/LICENSE-APACHE ./usr/share/doc/tidelog/README.Debian; do
    echo "$contents" | grep -q " $f\$" || fail "$f is not in the package"
done

R="$tmp/root"
echo "-- dpkg -x into $R (not installed)"
dpkg -x "$deb" "$R"
bin="$R/usr/bin/tidelog"
unit="$R/usr/lib/systemd/system/tidelog.service"
if readelf -S "$bin" | grep -qE '\.debug_info|\.symtab'; then fail "/usr/bin/tidelog is not stripped"; fi
echo "   /usr/bin/tidelog: $(stat -c %s "$bin") bytes (stripped); $("$bin" --version)"

echo "-- the unit"
for line in "ExecStart=/usr/bin/tidelog serve --config /etc/tidelog/cloud.toml" \
            'ExecReload=/bin/kill -HUP $MAINPID' "User=tidelog" "Group=tidelog" \
            "Restart=on-failure" "NoNewPrivileges=yes" "ProtectSystem=strict" \
            "ReadWritePaths=/var/lib/tidelog" "StateDirectory=tidelog" "WantedBy=multi-user.target"; do
    grep -qxF "$line" "$unit" || fail "tidelog.service lacks '$line'"
done

echo "-- certificates with the unpacked tidelog certs"
"$bin" certs --out "$R/etc/tidelog/tls" --ca-name "deb test CA" cloud edge-1 edge-2 edge-3

echo "-- the hub: the shipped config with its paths moved into $R"
cfg="$R/etc/tidelog/cloud.toml"
sed -i -e "s|\"/var/lib/tidelog|\"$R/var/lib/tidelog|" -e "s|\"/etc/tidelog|\"$R/etc/tidelog|" \
    -e 's|^listen = .*|listen = "127.0.0.1:0"|' -e 's|^status_interval_secs = .*|status_interval_secs = 1|' "$cfg"
grep -q "^data_dir = \"$R/var/lib/tidelog/data\"" "$cfg" || fail "data_dir was not moved into the root"
mkdir -p "$R/var/lib/tidelog"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
read -r -a cmd <<<"${exec_start//\/usr\/bin\/tidelog/$bin}"
cmd=("${cmd[@]//\/etc\/tidelog/$R/etc/tidelog}")
echo "   ${cmd[*]}"
"${cmd[@]}" >"$tmp/hub.log" 2>&1 &
hub_pid=$!
wait_log "$tmp/hub.log" '^tidelog: ready$' "ready"
addr=$(sed -n 's/^tidelog: listening on \(127\.0\.0\.1:[0-9]*\) (mutual TLS)$/\1/p' "$tmp/hub.log")
[ -n "$addr" ] || fail "the hub does not say where it listens"
echo "   hub pid $hub_pid listening on $addr"

echo "-- edge-2: a second tidelog serve from the unpacked root dials the hub"
cat >"$tmp/edge.toml" <<EDGE
node_name = "edge-2"
data_dir = "$tmp/edge-2-data"
status_interval_secs = 1
[tls]
cert = "$R/etc/tidelog/tls/edge-2.pem"
key = "$R/etc/tidelog/tls/edge-2.key"
ca = "$R/etc/tidelog/tls/ca.pem"
[[tables]]
name = "alerts"
[[peers]]
name = "cloud"
address = "$addr"
tables = [{ table = "thresholds", subscribe = true }, { table = "alerts", publish = true }]
EDGE
"$bin" serve --config "$tmp/edge.toml" >"$tmp/edge.log" 2>&1 &
edge_pid=$!
wait_log "$tmp/edge.log" 'peer `cloud` connected' "edge-2: peer cloud connected"
wait_log "$tmp/hub.log" 'peer `edge-2` connected' "hub: peer edge-2 connected"

echo "-- edge-1: a gateway app (C SDK) writes an alert; the hub acknowledges it"
sdk="$tmp/sdk"
mkdir -p "$sdk"
tar -xzf "$sdk_tgz" -C "$sdk" --strip-components=1
export PKG_CONFIG_PATH="$sdk/lib/pkgconfig"
static_libs=$(pkg-config --static --libs tidelog)
# shellcheck disable=SC2046,SC2086
cc -std=c99 -Wall -Wextra -Werror -O1 "$repo/tests/dist/deb/edge_client.c" \
    $(pkg-config --cflags tidelog) ${static_libs//-ltidelog/-l:libtidelog.a} -o "$tmp/edge_client"
timeout 60 "$tmp/edge_client" write "$tmp/edge-1-data" "$R/etc/tidelog/tls" edge-1 "$addr" a-1
wait_log "$tmp/hub.log" 'peer `edge-1` (connected|disconnected).* received [1-9]' "hub: received from edge-1"

echo "-- SIGHUP: the hub re-reads its config (one more peer) and keeps running"
printf '\n[[peers]]\nname = "edge-3"\ntables = [{ table = "alerts", subscribe = true }]\n' >>"$cfg"
kill -HUP "$hub_pid"
wait_log "$tmp/hub.log" 'SIGHUP: added peer `edge-3`' "SIGHUP: added peer edge-3"
wait_log "$tmp/hub.log" 'SIGHUP: reload done, 1 change\(s\) applied' "SIGHUP: reload done"
echo 'listen = "127.0.0.1:1"' >>"$cfg" # lands in the [[peers]] entry: an unknown key, refused
kill -HUP "$hub_pid"
wait_log "$tmp/hub.log" 'SIGHUP: config refused' "SIGHUP: config refused"
sleep 1
kill -0 "$hub_pid" 2>/dev/null || fail "the hub died after SIGHUP"
wait_log "$tmp/hub.log" 'peer `edge-3` never connected' "a status line for edge-3"

echo "-- SIGTERM: both stop cleanly"
kill -TERM "$edge_pid" "$hub_pid"
hub_rc=0 edge_rc=0
wait "$hub_pid" || hub_rc=$?
wait "$edge_pid" || edge_rc=$?
hub_pid="" edge_pid=""
[ "$hub_rc" = 0 ] || fail "the hub exited with status $hub_rc"
[ "$edge_rc" = 0 ] || fail "edge-2 exited with status $edge_rc"
grep -q "SIGTERM: database closed, stopped cleanly" "$tmp/hub.log" || fail "the hub did not stop cleanly"
grep -q "SIGTERM: database closed, stopped cleanly" "$tmp/edge.log" || fail "edge-2 did not stop cleanly"

echo "-- the alert is in the hub's data directory"
got=$("$tmp/edge_client" read "$R/var/lib/tidelog/data" cloud a-1)
echo "   $got"
echo "$got" | grep -q '"sensor":"s-7"' || fail "alert a-1 is not the one written"
echo "test_deb: ok ($(basename "$deb") $(stat -c %s "$deb") bytes, /usr/bin/tidelog $(stat -c %s "$bin") bytes)"
