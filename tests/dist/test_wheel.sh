#!/usr/bin/env bash
# The Python wheel of target/dist/ (dist/wheel.sh), installed as a gateway
# would: a fresh venv in a temp dir, `pip install --no-index <wheel>` (no
# network, no sdist fallback), no Rust toolchain on the PATH, run from
# outside the repo. Then: the typing files are installed, __version__ is the
# workspace version, a write and a read, and a replication round trip over
# mutual TLS on 127.0.0.1 (two databases in one process).
#
#   bash tests/dist/test_wheel.sh      (or: bash tests/dist/run.sh wheel)
#
# TIDELOG_TEST_PYTHON picks the interpreter for the venv (default: the
# system's /usr/bin/python3, else python3 on the PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

die() { echo "tests/dist/test_wheel.sh: FAILED: $*" >&2; exit 1; }

version=$(awk '/^\[workspace\.package\]/{f=1; next} /^\[/{f=0} f && /^version *=/{gsub(/^[^"]*"|".*$/, ""); print; exit}' Cargo.toml)
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
shopt -s nullglob
wheels=(target/dist/tidelog-"$version"-cp39-abi3-*.whl)
[ ${#wheels[@]} -eq 1 ] || die "expected one target/dist/tidelog-$version-cp39-abi3-*.whl (run bash dist/build.sh wheel), found: ${wheels[*]:-none}"
whl=$repo/${wheels[0]}
echo "wheel test: $whl"

py=${TIDELOG_TEST_PYTHON:-}
if [ -z "$py" ]; then
    if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py=$(command -v python3) || die "no python3"; fi
fi
# The interpreter itself, not a shim (pyenv's needs its PATH).
py=$("$py" -c 'import sys; print(sys.executable)')
echo "wheel test: interpreter $py ($("$py" --version 2>&1))"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tidelog-wheel-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
venv=$tmp/venv
"$py" -m venv "$venv"

# Everything below runs with a bare environment: PATH has the venv and the
# system's directories only (no ~/.cargo/bin), HOME is the temp dir.
clean=(env -i "PATH=$venv/bin:/usr/bin:/bin" "HOME=$tmp" "TMPDIR=$tmp" LANG=C.UTF-8)
for tool in cargo rustc; do
    if "${clean[@]}" sh -c "command -v $tool" >/dev/null; then
        die "$tool is on the test's PATH ($("${clean[@]}" sh -c "command -v $tool"))"
    fi
done
echo "wheel test: no cargo or rustc on the PATH ($venv/bin:/usr/bin:/bin)"

echo "wheel test: pip install --no-index $(basename "$whl")"
(cd "$tmp" && "${clean[@]}" "$venv/bin/pip" install --no-index --disable-pip-version-check "$whl")

cat >"$tmp/use_tidelog.py" <<'EOF'
import importlib.metadata
import importlib.resources
import pathlib
import sys
import tempfile

import tidelog

version, venv = sys.argv[1], pathlib.Path(sys.argv[2]).resolve()

where = pathlib.Path(tidelog.__file__).resolve()
assert venv in where.parents, f"tidelog imported from {where}, not from the venv {venv}"
print(f"  imported from {where.parent}")

pkg = importlib.resources.files("tidelog")
for f in ["py.typed", "__init__.pyi", "_types.py", "_errors.py"]:
    assert pkg.joinpath(f).is_file(), f"{f} is not installed"
print("  py.typed, __init__.pyi, _types.py, _errors.py installed")

assert tidelog.__version__ == version, f"tidelog.__version__ {tidelog.__version__!r} != workspace {version!r}"
meta = importlib.metadata.version("tidelog")
assert meta == version, f"installed metadata version {meta!r} != workspace {version!r}"
print(f"  tidelog.__version__ == metadata version == workspace version == {version}")

with tempfile.TemporaryDirectory() as d:
    d = pathlib.Path(d)

    # A write and a read.
    with tidelog.open(d / "local", "gw-1") as db:
        db.create_table("readings")
        db.upsert("readings", {"id": 1, "sensor": "s1", "value": 20.5})
        got = db.get("readings", 1)
        assert got is not None and got["sensor"] == "s1" and got["value"] == 20.5, got
    print("  local write and read: ok")

    # Replication over mutual TLS on 127.0.0.1: alerts flow up from the edge.
    pki = tidelog.dev_certs(d / "pki", ["cloud", "edge-1"])
    fast = dict(heartbeat_interval="100ms", idle_timeout="1500ms", backoff_initial="50ms",
                backoff_max="500ms", connect_timeout="5s")

    def tls(node):
        f = pki["nodes"][node]
        return dict(cert=f["cert"], key=f["key"], ca=pki["ca"], **fast)

    cloud = tidelog.open(d / "cloud", "cloud")
    edge = tidelog.open(d / "edge", "edge-1")
    try:
        cloud.start_replication(**tls("cloud"))
        addr = cloud.listen("127.0.0.1:0")
        assert addr.startswith("127.0.0.1:"), addr
        cloud.add_peer("edge-1", tables=[{"table": "alerts", "subscribe": True}])

        edge.create_table("alerts")
        edge.start_replication(**tls("edge-1"))
        edge.add_peer("cloud", address=addr, tables=[{"table": "alerts", "publish": True}])
        info = edge.upsert("alerts", {"id": "a-1", "sensor": "s1", "reading": 41})
        seq = info.seq
        edge.wait_for_ack("cloud", seq, timeout=30)
        alert = cloud.get("alerts", "a-1")
        assert alert is not None and alert["reading"] == 41, alert
        print(f"  replication over mutual TLS (cloud on {addr}): edge upsert seq {seq} acked, read on the cloud: ok")
    finally:
        edge.close()
        cloud.close()
print("wheel test: passed")
EOF

echo "wheel test: python use_tidelog.py (from $tmp)"
(cd "$tmp" && "${clean[@]}" "$venv/bin/python" use_tidelog.py "$version" "$venv")
