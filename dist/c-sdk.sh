#!/usr/bin/env bash
# The C SDK: target/dist/tidelog-c-sdk-<version>-<arch>-linux-gnu.tar.gz with
#   lib/libtidelog.so.<major>  (SONAME libtidelog.so.<major>, stripped)
#   lib/libtidelog.so -> libtidelog.so.<major>
#   lib/libtidelog.a           (debug info stripped, symbols kept)
#   lib/pkgconfig/tidelog.pc   (prefix=${pcfiledir}/../..: relocatable)
#   include/tidelog.h, LICENSE-MIT, LICENSE-APACHE, README.md
# Release build. tests/dist/test_c-sdk.sh uses it without a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "c-sdk: no version in Cargo.toml" >&2; exit 1; }
major=${version%%.*}
arch=$(uname -m)
name="tidelog-c-sdk-$version-$arch-linux-gnu"
out="$root/target/dist"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
sdk="$stage/$name"

# The SONAME goes on this build only (a link-arg of `cargo rustc`), so the
# build tree's libtidelog.so that the repository's own tests link keeps
# working without a libtidelog.so.<major> beside it.
echo "-- c-sdk: cargo rustc --release -p tidelog-ffi (SONAME libtidelog.so.$major)"
cargo rustc --release --quiet -p tidelog-ffi --lib -- \
    -C "link-arg=-Wl,-soname,libtidelog.so.$major"
rel="$CARGO_TARGET_DIR/release"

echo "-- c-sdk: the header in include/ is current"
cmp -s include/tidelog.h "$(ls -t "$CARGO_TARGET_DIR"/release/build/tidelog-ffi-*/out/tidelog.h | head -n1)" || {
    echo "c-sdk: include/tidelog.h differs from the generated header; run TIDELOG_UPDATE_HEADER=1 cargo build -p tidelog-ffi" >&2
    exit 1
}
grep -q "^#define TIDELOG_VERSION \"$version\"$" include/tidelog.h || {
    echo "c-sdk: include/tidelog.h does not say TIDELOG_VERSION \"$version\"" >&2
    exit 1
}

echo "-- c-sdk: staging $name"
mkdir -p "$sdk/lib/pkgconfig" "$sdk/include"
cp "$rel/libtidelog.so" "$sdk/lib/libtidelog.so.$major"
strip --strip-unneeded "$sdk/lib/libtidelog.so.$major"
ln -s "libtidelog.so.$major" "$sdk/lib/libtidelog.so"
cp "$rel/libtidelog.a" "$sdk/lib/libtidelog.a"
strip --strip-debug "$sdk/lib/libtidelog.a"
soname=$(readelf -d "$sdk/lib/libtidelog.so.$major" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libtidelog.so.$major" ] || { echo "c-sdk: SONAME is '$soname', expected libtidelog.so.$major" >&2; exit 1; }
cp include/tidelog.h "$sdk/include/"
# Relocatable: pkg-config sets ${pcfiledir} to the .pc file's directory.
# shellcheck disable=SC2016
ffi/gen-pc.sh '${pcfiledir}/../..' '${prefix}/lib' '${prefix}/include' "$sdk/lib/pkgconfig/tidelog.pc"
cp LICENSE-MIT LICENSE-APACHE "$sdk/"
sed -e "s/@VERSION@/$version/g" -e "s/@MAJOR@/$major/g" -e "s/@ARCH@/$arch/g" \
    dist/c-sdk/README.md > "$sdk/README.md"

mkdir -p "$out"
tarball="$out/$name.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"
echo "-- c-sdk: $tarball"
tar -tvzf "$tarball"
echo "   sizes: libtidelog.so.$major $(stat -c %s "$sdk/lib/libtidelog.so.$major") bytes (stripped)," \
     "libtidelog.a $(stat -c %s "$sdk/lib/libtidelog.a") bytes (debug info stripped)," \
     "tarball $(stat -c %s "$tarball") bytes"
