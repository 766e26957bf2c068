#!/usr/bin/env bash
# Writes tidelog.pc from ffi/tidelog.pc.in.
# Usage: gen-pc.sh <prefix> <libdir> <includedir> <output file>
# e.g. for an install: gen-pc.sh /usr/local /usr/local/lib /usr/local/include \
#          /usr/local/lib/pkgconfig/tidelog.pc
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 4 ] || { echo "usage: $0 <prefix> <libdir> <includedir> <output file>" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -n1)
[ -n "$version" ] || { echo "gen-pc.sh: no version in Cargo.toml" >&2; exit 1; }
mkdir -p "$(dirname "$4")"
sed -e "s|@PREFIX@|$1|g" -e "s|@LIBDIR@|$2|g" -e "s|@INCLUDEDIR@|$3|g" \
    -e "s|@VERSION@|$version|g" "$here/tidelog.pc.in" > "$4"
