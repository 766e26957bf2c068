#!/usr/bin/env bash
# Every test of tidelog, from a fresh clone: formatting, lints, then the Rust
# unit, integration, property and crash tests, each binding, the scenario and
# the README. Installs nothing by hand: cargo, pip and npm fetch what they
# need.
#
#   bash tests/run_all.sh            every step, in the order below
#   bash tests/run_all.sh python c   only the named steps, in the order given
#
# Steps: fmt clippy rust python c scenario readme node dist crosslang
# (node before dist: its `npm ci` brings the TypeScript the npm artifact's
# consumer check compiles with)
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_STEPS=(fmt clippy rust python c scenario readme node dist crosslang)

# A venv in .venv (gitignored) with the pinned build tool and the test tools;
# maturin builds the pyo3 extension (debug) and installs it editable.
build_python() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check maturin==1.16.0 pytest==9.2.0 mypy==2.4.1
    # --features bench: the benchmark's Rust loops are tested too (a release
    # build leaves them out; test_local.py checks both ways).
    .venv/bin/maturin develop --quiet --features bench -m bindings/python/Cargo.toml
}

# The Node addon, debug, in bindings/node/tidelog.node.
build_node() {
    (
      cd bindings/node
      # --ignore-scripts: skips better-sqlite3's native build (a devDependency
      # used only by bench/bench.js) and our own install script, which would
      # make a release build; the tests use a debug build that shares
      # target/debug with the cargo steps above.
      npm ci --ignore-scripts --no-audit --no-fund
      TIDELOG_NODE_PROFILE=debug node scripts/build.js
    )
}

step_fmt() {
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
}

step_clippy() {
    echo "== cargo clippy (all targets, warnings are errors)"
    cargo clippy --workspace --all-targets -- -D warnings
    # The bindings' benchmark hooks are behind the `bench` feature.
    cargo clippy -p tidelog-python -p tidelog-node --features bench --all-targets -- -D warnings
}

# The servers the cloud-side tests start privately (PostgreSQL 15+ as its own
# user, nats-server with JetStream), from Debian's packages where missing.
ensure_servers() {
    local want=()
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql)
    command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || want+=(nats-server)
    [ ${#want[@]} -eq 0 ] && return 0
    echo "== apt-get install ${want[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
}

step_rust() {
    ensure_servers
    echo "== import cycles (core, ffi)"
    python3 tests/import_cycles.py
    echo "== cargo test"
    # --lib --tests: unit and integration tests; the benchmarks are run with
    # `cargo bench`, not here (they measure, they do not assert). The Python
    # binding is excluded: `--lib` would override its `test = false` and link a
    # test binary against the system libpython; maturin builds it below.
    cargo test --workspace --exclude tidelog-python --lib --tests
}

step_python() {
    echo "== Python binding (bindings/python): build, pytest, mypy --strict, stubtest"
    build_python
    .venv/bin/python -m pytest -q bindings/python/tests
    (cd bindings/python && ../../.venv/bin/mypy --strict examples/typed_example.py)
    # The stubs must describe what the module really has.
    .venv/bin/python -m mypy.stubtest tidelog --ignore-missing-stub
}

step_c() {
    echo "== C ABI: header drift, C suite under ASan+UBSan+LSan (shared and static)"
    # The committed include/tidelog.h is compared with a fresh cbindgen run by
    # the `header_is_current` unit test (step rust); this runs the C programs.
    bash ffi/tests/run_c_tests.sh
}

step_scenario() {
    echo "== edge/cloud scenario, short runs (examples/edge_scenario.sh against a tidelog serve cloud): Node, Python and C edge apps"
    SCENARIO_QUICK=1 EDGE_LANG=node bash examples/edge_scenario.sh
    SCENARIO_QUICK=1 EDGE_LANG=python bash examples/edge_scenario.sh
    SCENARIO_QUICK=1 EDGE_LANG=c bash examples/edge_scenario.sh
    echo "== fleet over PostgreSQL, short run (examples/fleet_postgres.sh: two hubs, three Node.js edges, a private PostgreSQL)"
    ensure_servers
    SCENARIO_QUICK=1 bash examples/fleet_postgres.sh
}

step_readme() {
    echo "== README: every fenced code block, run for real (tests/readme/run_readme.py)"
    # Doctests (the Rust quick start), the install and build commands (release
    # builds of the C library, the Python wheel and the Node addon), the Python
    # and Node quick starts (the Node one against a real `tidelog serve` cloud
    # on 127.0.0.1), the config reference, and the step-by-step Python edge
    # story. Before the Node section: the README's own `npm install` builds the
    # addon it uses, and node --test below keeps the closing summary.
    python3 tests/readme/run_readme.py
}

step_dist() {
    echo "== installable artifacts: dist/build.sh (wheel, npm, C SDK, .deb), each installed from the artifact alone and used (tests/dist/run.sh)"
    bash dist/build.sh
    bash tests/dist/run.sh
}

step_crosslang() {
    echo "== one view: the same log entries, change events and commit info through C, Python and Node (tests/cross_language)"
    build_python
    cargo build -p tidelog-ffi --quiet
    build_node
    .venv/bin/python tests/cross_language/same_views.py
}

step_node() {
    echo "== Node.js binding (bindings/node): npm ci, build, tsc --noEmit, node --test"
    build_node
    (
      cd bindings/node
      npx tsc -p tsconfig.json
      # Last in a full run: node's test runner prints the closing summary.
      node --test test/*.test.js
    )
}

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
    steps=("${ALL_STEPS[@]}")
fi
for s in "${steps[@]}"; do
    if ! declare -F "step_$s" >/dev/null; then
        echo "tests/run_all.sh: unknown step \`$s\`; the steps are: ${ALL_STEPS[*]}" >&2
        exit 2
    fi
done
for s in "${steps[@]}"; do
    "step_$s"
done
