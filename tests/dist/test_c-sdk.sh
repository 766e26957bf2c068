#!/usr/bin/env bash
# The C SDK tarball of target/dist/ (dist/c-sdk.sh), used as a C developer
# without a Rust toolchain would: unpack it into a temp dir, build
# tests/dist/c-sdk/roundtrip.c with pkg-config against the shared library
# (rpath to the unpacked lib/) and against the static one, and run both:
# open, create a table, upsert, get, then a replication round trip over
# mutual TLS on 127.0.0.1 with certificates made by openssl here.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
major=${version%%.*}
tarball="$root/target/dist/tidelog-c-sdk-$version-$(uname -m)-linux-gnu.tar.gz"
[ -f "$tarball" ] || { echo "test_c-sdk: $tarball is missing; run bash dist/build.sh c-sdk" >&2; exit 1; }
for tool in cc pkg-config openssl readelf; do
    command -v "$tool" >/dev/null || { echo "test_c-sdk: $tool is required" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "-- unpack $(basename "$tarball") into $tmp"
tar -xzf "$tarball" -C "$tmp"
sdk="$tmp/tidelog-c-sdk-$version-$(uname -m)-linux-gnu"
for f in include/tidelog.h lib/libtidelog.so lib/libtidelog.so.$major lib/libtidelog.a \
         lib/pkgconfig/tidelog.pc LICENSE-MIT LICENSE-APACHE README.md; do
    [ -e "$sdk/$f" ] || { echo "test_c-sdk: $f is missing from the tarball" >&2; exit 1; }
done
[ "$(readlink "$sdk/lib/libtidelog.so")" = libtidelog.so.$major ]
readelf -d "$sdk/lib/libtidelog.so.$major" | grep -q "SONAME.*\[libtidelog.so.$major\]"
if readelf -S "$sdk/lib/libtidelog.so.$major" | grep -qE '\.debug_info|\.symtab'; then
    echo "test_c-sdk: libtidelog.so.$major is not stripped" >&2; exit 1
fi

# No cargo or rustc: only system directories on the PATH.
export PATH=/usr/local/bin:/usr/bin:/bin
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "test_c-sdk: a Rust toolchain is still on the PATH ($PATH)" >&2; exit 1
fi
export PKG_CONFIG_PATH="$sdk/lib/pkgconfig"
unset PKG_CONFIG_LIBDIR
echo "-- pkg-config: tidelog $(pkg-config --modversion tidelog)"
[ "$(pkg-config --modversion tidelog)" = "$version" ]
cflags=$(pkg-config --cflags tidelog)
libs=$(pkg-config --libs tidelog)
static_libs=$(pkg-config --static --libs tidelog)
echo "   --cflags: $cflags"
echo "   --libs: $libs"
echo "   --static --libs: $static_libs"
# The prefix resolves into the unpacked tree, wherever that is.
[ "$(cd "$(pkg-config --variable=includedir tidelog)" && pwd)" = "$(cd "$sdk/include" && pwd)" ]

src="$root/tests/dist/c-sdk/roundtrip.c"
echo "-- build against the shared library"
# shellcheck disable=SC2086
cc -std=c99 -Wall -Wextra -Werror -O1 "$src" $cflags $libs -Wl,-rpath,"$sdk/lib" -o "$tmp/roundtrip-shared"
readelf -d "$tmp/roundtrip-shared" | grep -q "NEEDED.*\[libtidelog.so.$major\]" \
    || { echo "test_c-sdk: the program does not record libtidelog.so.$major" >&2; exit 1; }
echo "-- build against the static library (pkg-config --static)"
# With libtidelog.so beside it, -ltidelog would pick the shared library:
# name the archive (-l:libtidelog.a), as the SDK's README says.
# shellcheck disable=SC2086
cc -std=c99 -Wall -Wextra -Werror -O1 "$src" $cflags ${static_libs//-ltidelog/-l:libtidelog.a} -o "$tmp/roundtrip-static"
if readelf -d "$tmp/roundtrip-static" | grep -q 'NEEDED.*libtidelog'; then
    echo "test_c-sdk: the static program still needs libtidelog.so" >&2; exit 1
fi

echo "-- certificates (openssl)"
bash "$root/ffi/tests/c/make_certs.sh" "$tmp/certs" hub edge

for variant in shared static; do
    echo "-- run roundtrip-$variant"
    mkdir -p "$tmp/run-$variant"
    timeout 120 "$tmp/roundtrip-$variant" "$tmp/run-$variant" "$tmp/certs"
done
echo "test_c-sdk: ok (tidelog $version, shared $(stat -c %s "$sdk/lib/libtidelog.so.$major") bytes, static $(stat -c %s "$sdk/lib/libtidelog.a") bytes)"
