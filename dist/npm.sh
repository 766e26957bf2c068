#!/usr/bin/env bash
# The npm packages, napi-rs's per-platform layout, packed into target/dist/:
#
#   tidelog-<version>.tgz                  the package `tidelog`: index.js,
#       index.mjs, index.d.ts, index.d.mts, README.md, package.json; its
#       optionalDependencies name the platform package below. No install
#       script: it installs without a compiler.
#   tidelog-<platform>-<version>.tgz       e.g. @tidelog/linux-x64-gnu:
#       tidelog.node (release build, stripped) and package.json with
#       os/cpu/libc, so npm installs only the matching one.
#
#   bash dist/npm.sh            (or: bash dist/build.sh npm)
#
# Only the machine's own platform is built (linux-x64-gnu here); another
# platform's package is built on that platform, and the main package's
# optionalDependencies then list each (see dist/npm/packages.js).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/dist
die() { echo "dist/npm.sh: FAILED: $*" >&2; exit 1; }

version=$(awk '/^\[workspace\.package\]/{f=1; next} /^\[/{f=0} f && /^version *=/{gsub(/^[^"]*"|".*$/, ""); print; exit}' Cargo.toml)
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
pkg_version=$(node -p "require('./bindings/node/package.json').version")
echo "npm: workspace version $version, bindings/node/package.json version $pkg_version"
[ "$pkg_version" = "$version" ] || die "bindings/node/package.json has version $pkg_version, Cargo.toml [workspace.package] $version; make them equal"

os=$(node -p process.platform)
cpu=$(node -p process.arch)
[ "$os" = linux ] || die "this script packs Linux addons only (this is $os)"
if glibc_version=$(getconf GNU_LIBC_VERSION 2>/dev/null); then
    libc=glibc abi=gnu
    echo "npm: building on $glibc_version"
else
    die "this script packs glibc addons only (getconf GNU_LIBC_VERSION reports none)"
fi
platform_pkg="@tidelog/$os-$cpu-$abi"
echo "npm: platform package $platform_pkg (os $os, cpu $cpu, libc $libc)"

echo "npm: cargo build --release -p tidelog-node (no bench feature)"
cargo build --release -p tidelog-node
lib=target/release/libtidelog_node.so
[ -f "$lib" ] || die "no $lib after the build"
if grep -aq -e _rustUpserts -e _rustGets "$lib"; then
    die "$lib has the bench feature's _rustUpserts/_rustGets (built with --features bench?)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tidelog-npm.XXXXXX")
trap 'rm -rf "$work"' EXIT
main_dir=$work/tidelog
plat_dir=$work/platform
mkdir -p "$main_dir" "$plat_dir"

echo "npm: the platform package: $lib, stripped, as tidelog.node"
cp "$lib" "$plat_dir/tidelog.node"
strip "$plat_dir/tidelog.node"
chmod 0755 "$plat_dir/tidelog.node"

echo "npm: the addon's glibc symbol versions (readelf --dyn-syms --wide):"
readelf --dyn-syms --wide "$plat_dir/tidelog.node" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | sed 's/^/  /'
need_glibc=$(readelf --dyn-syms --wide "$plat_dir/tidelog.node" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
echo "npm: the addon needs glibc >= $need_glibc; NEEDED: $(readelf -d "$plat_dir/tidelog.node" | awk '/NEEDED/ {printf "%s ", $NF}')"

echo "npm: the main package: index.js index.mjs index.d.ts index.d.mts README.md"
for f in index.js index.mjs index.d.ts index.d.mts; do
    cp "bindings/node/$f" "$main_dir/$f"
done
cp dist/npm/README.md "$main_dir/README.md"
node dist/npm/packages.js "$version" "$platform_pkg" "$os" "$cpu" "$libc" "$main_dir" "$plat_dir"

mkdir -p "$OUT"
rm -f "$OUT/tidelog-$version.tgz" "$OUT/tidelog-$os-$cpu-$abi-$version.tgz"
echo "npm: npm pack (platform package, then the main package) into $OUT"
(cd "$plat_dir" && npm pack --pack-destination "$OLDPWD/$OUT" --ignore-scripts)
(cd "$main_dir" && npm pack --pack-destination "$OLDPWD/$OUT" --ignore-scripts)

main_tgz=$OUT/tidelog-$version.tgz
plat_tgz=$OUT/tidelog-$os-$cpu-$abi-$version.tgz
[ -f "$main_tgz" ] || die "npm pack made no $main_tgz"
[ -f "$plat_tgz" ] || die "npm pack made no $plat_tgz"
for t in "$plat_tgz" "$main_tgz"; do
    echo "npm: files in $t:"
    tar tzvf "$t" | awk '{print "  " $3 "  " $6}'
done
main_files=$(tar tzf "$main_tgz")
main_json=$(tar xzf "$main_tgz" -O package/package.json)
case "$main_files" in *package/tidelog.node*) die "$main_tgz carries tidelog.node (it belongs in $platform_pkg)" ;; esac
case "$main_json" in *'"scripts"'*) die "$main_tgz's package.json has scripts (the install script would need cargo)" ;; esac

echo "npm: sizes: $(basename "$main_tgz") $(stat -c %s "$main_tgz") bytes;" \
    "$(basename "$plat_tgz") $(stat -c %s "$plat_tgz") bytes;" \
    "tidelog.node stripped $(stat -c %s "$plat_dir/tidelog.node") bytes (unstripped $lib $(stat -c %s "$lib") bytes)"
echo "npm: done: $main_tgz $plat_tgz"
