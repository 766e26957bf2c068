#!/usr/bin/env bash
# The hub's .deb: target/dist/tidelog_<version>-1_<arch>.deb, built by
# cargo-deb from [package.metadata.deb] in core/Cargo.toml (release build,
# stripped): /usr/bin/tidelog, /etc/tidelog/cloud.toml (conffile), the
# systemd unit tidelog.service (user `tidelog`, made by the postinst), docs.
# cargo-deb is installed on first use into target/dist-tools (a private
# root: nothing is installed into ~/.cargo or the system).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
CARGO_DEB_VERSION=3.8.0
tools="$root/target/dist-tools"
cargo_deb="$tools/bin/cargo-deb"

if [ ! -x "$cargo_deb" ] || ! "$cargo_deb" --version | grep -q " $CARGO_DEB_VERSION\$"; then
    echo "-- deb: installing cargo-deb $CARGO_DEB_VERSION into $tools"
    cargo install cargo-deb --version "=$CARGO_DEB_VERSION" --locked --root "$tools"
fi
echo "-- deb: $("$cargo_deb" --version)"

for f in dist/deb/tidelog.service dist/deb/cloud.toml dist/deb/maintainer/postinst LICENSE-MIT; do
    [ -f "$f" ] || { echo "deb: $f is missing" >&2; exit 1; }
done
mkdir -p target/dist
echo "-- deb: cargo deb -p tidelog (release build, stripped)"
# cargo-deb runs `cargo build --release -p tidelog` itself, then strips.
# Its output goes to a file, then to our stderr: `tee /dev/stderr` would
# reopen (and truncate) a log file that stderr points to.
cargo_deb_log=$(mktemp)
trap 'rm -f "$cargo_deb_log"' EXIT
"$cargo_deb" -p tidelog --output target/dist/ --strip >"$cargo_deb_log" 2>&1 || { cat "$cargo_deb_log" >&2; exit 1; }
cat "$cargo_deb_log" >&2
deb=$(sed -n '$p' "$cargo_deb_log")
[ -f "$deb" ] || { echo "deb: cargo-deb did not report a .deb (last line: $deb)" >&2; exit 1; }
echo "-- deb: $deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"
bin_size=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/tidelog | wc -c)
echo "   sizes: $(basename "$deb") $(stat -c %s "$deb") bytes, /usr/bin/tidelog $bin_size bytes (stripped)"
