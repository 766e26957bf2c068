#!/usr/bin/env bash
# Builds tidelog's installable artifacts into target/dist/ (release builds):
#
#   bash dist/build.sh            every artifact
#   bash dist/build.sh wheel deb  only the named ones
#
# Artifacts: wheel (Python abi3 wheel), npm (the npm package and its
# per-platform addon package), c-sdk (libtidelog.so/.a, the header, a
# pkg-config file, the licenses), deb (the tidelog hub with a systemd unit).
# Each has its own script, dist/<name>.sh; tests/dist/run.sh installs each
# artifact in a fresh place, from the artifact alone, and uses it.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(wheel npm c-sdk deb)
want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${ALL[@]}")
for a in "${want[@]}"; do
    [ -f "dist/$a.sh" ] || { echo "dist/build.sh: unknown artifact \`$a\`; the artifacts are: ${ALL[*]}" >&2; exit 2; }
done
mkdir -p target/dist
for a in "${want[@]}"; do
    echo "== dist: $a"
    bash "dist/$a.sh"
done
echo "== dist: built into target/dist/"
ls -l target/dist/
