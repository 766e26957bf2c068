#!/usr/bin/env bash
# Every test of tidelog, from a fresh clone: formatting, lints, then the Rust
# unit, integration, property and crash tests. Installs nothing by hand:
# cargo fetches the crates it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
# --lib --tests: unit and integration tests; the benchmarks are run with
# `cargo bench`, not here (they measure, they do not assert).
cargo test --workspace --lib --tests

echo "== C ABI: header drift, C suite under ASan+UBSan+LSan (shared and static)"
# The committed include/tidelog.h is compared with a fresh cbindgen run by
# the `header_is_current` unit test above; this runs the C programs.
bash ffi/tests/run_c_tests.sh

echo "== edge/cloud scenario, short runs (examples/edge_scenario.sh against a tidelog serve cloud): Node and C edge apps"
SCENARIO_QUICK=1 EDGE_LANG=node bash examples/edge_scenario.sh
SCENARIO_QUICK=1 EDGE_LANG=c bash examples/edge_scenario.sh

echo "== Node.js binding (bindings/node): npm ci, build, tsc --noEmit, node --test"
(
  cd bindings/node
  # --ignore-scripts: skips better-sqlite3's native build (a devDependency
  # used only by bench/bench.js) and our own install script, which would
  # make a release build; the tests use a debug build that shares
  # target/debug with the cargo steps above.
  npm ci --ignore-scripts --no-audit --no-fund
  TIDELOG_NODE_PROFILE=debug node scripts/build.js
  npx tsc -p tsconfig.json
  # Last: node's test runner prints the closing summary.
  node --test test/*.test.js
)
