#!/usr/bin/env bash
# Installs each artifact of target/dist/ (made by dist/build.sh) in a fresh
# place, with no Rust toolchain on the PATH, and uses it: a write, a read and
# a replication round trip over mutual TLS on 127.0.0.1. Nothing is installed
# into the machine's own system directories.
#
#   bash tests/dist/run.sh            every artifact
#   bash tests/dist/run.sh wheel      only the named ones
set -euo pipefail
cd "$(dirname "$0")/../.."

ALL=(wheel npm c-sdk deb)
want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${ALL[@]}")
for a in "${want[@]}"; do
    [ -f "tests/dist/test_$a.sh" ] || { echo "tests/dist/run.sh: unknown artifact \`$a\`; the artifacts are: ${ALL[*]}" >&2; exit 2; }
done
for a in "${want[@]}"; do
    echo "== dist test: $a"
    bash "tests/dist/test_$a.sh"
done
echo "dist tests: all passed (${want[*]})"
