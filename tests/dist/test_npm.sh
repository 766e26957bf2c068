#!/usr/bin/env bash
# The npm packages of target/dist/ (dist/npm.sh), installed as a gateway
# would: a fresh npm project in a temp dir, `npm install --offline` of the
# platform package and the main package tarballs (no registry, an empty npm
# cache), no Rust toolchain on the PATH. Then: the package's files
# (index.d.ts, no tidelog.node of its own; the addon from the platform
# package), a write and a read, and a replication round trip over mutual TLS
# on 127.0.0.1, through require('tidelog') and import('tidelog'). If
# bindings/node/node_modules has typescript (after `npm ci` there), a
# TypeScript consumer in the temp project is type-checked against the
# installed declarations as well.
#
#   bash tests/dist/test_npm.sh      (or: bash tests/dist/run.sh npm)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

die() { echo "tests/dist/test_npm.sh: FAILED: $*" >&2; exit 1; }

version=$(awk '/^\[workspace\.package\]/{f=1; next} /^\[/{f=0} f && /^version *=/{gsub(/^[^"]*"|".*$/, ""); print; exit}' Cargo.toml)
[ -n "$version" ] || die "no [workspace.package] version in Cargo.toml"
main_tgz=$repo/target/dist/tidelog-$version.tgz
plat_tgz=$repo/target/dist/tidelog-linux-x64-gnu-$version.tgz
for t in "$main_tgz" "$plat_tgz"; do
    [ -f "$t" ] || die "no $t (run bash dist/build.sh npm)"
done
node_bin=$(command -v node) || die "no node"
echo "npm test: $plat_tgz $main_tgz (node $(node --version) at $node_bin)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tidelog-npm-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
proj=$tmp/app
mkdir -p "$proj"

# Everything below runs with a bare environment: PATH has node's directory
# and the system's only (no ~/.cargo/bin), HOME (and so npm's cache) is the
# temp dir.
path_dirs="$(dirname "$node_bin"):/usr/bin:/bin"
# The registry is an address nothing listens on: any fetch fails loudly.
clean=(env -i "PATH=$path_dirs" "HOME=$tmp" "TMPDIR=$tmp" LANG=C.UTF-8
       npm_config_registry=http://127.0.0.1:9/ npm_config_update_notifier=false)
for tool in cargo rustc; do
    if "${clean[@]}" sh -c "command -v $tool" >/dev/null; then
        die "$tool is on the test's PATH ($("${clean[@]}" sh -c "command -v $tool"))"
    fi
done
echo "npm test: no cargo or rustc on the PATH ($path_dirs)"

cd "$proj"
cat >package.json <<'EOF'
{ "name": "tidelog-dist-test", "version": "1.0.0", "private": true }
EOF
echo "npm test: npm install --offline $(basename "$plat_tgz") $(basename "$main_tgz")"
"${clean[@]}" npm install --offline --no-audit --no-fund "$plat_tgz" "$main_tgz"

installed=$proj/node_modules/tidelog
platdir=$proj/node_modules/@tidelog/linux-x64-gnu
for f in index.js index.mjs index.d.ts index.d.mts package.json README.md; do
    [ -f "$installed/$f" ] || die "node_modules/tidelog/$f is not installed"
done
[ -e "$installed/tidelog.node" ] && die "node_modules/tidelog has its own tidelog.node (it belongs in the platform package)"
[ -f "$platdir/tidelog.node" ] || die "node_modules/@tidelog/linux-x64-gnu/tidelog.node is not installed"
echo "npm test: installed: tidelog (index.js, index.mjs, index.d.ts, index.d.mts), @tidelog/linux-x64-gnu (tidelog.node)"

# Without the platform package (the main tarball alone; the optional
# dependency cannot be fetched), require('tidelog') names what is missing.
echo "npm test: the main package alone: require('tidelog') fails with ERR_TIDELOG_NOT_BUILT naming @tidelog/linux-x64-gnu"
mkdir -p "$tmp/bare"
(
  cd "$tmp/bare"
  echo '{ "name": "bare", "version": "1.0.0", "private": true }' >package.json
  "${clean[@]}" npm install --offline --no-audit --no-fund "$main_tgz" >npm.log 2>&1 || { cat npm.log; exit 1; }
  [ ! -e node_modules/@tidelog/linux-x64-gnu ] || { echo "the platform package came from somewhere" >&2; exit 1; }
  "${clean[@]}" node -e '
    try { require("tidelog"); console.error("require(tidelog) worked without the addon"); process.exit(1); }
    catch (e) {
      if (e.code !== "ERR_TIDELOG_NOT_BUILT" || !e.message.includes("@tidelog/linux-x64-gnu")) { console.error(e); process.exit(1); }
      console.log("  " + e.message);
    }'
) || die "the main package alone did not fail as it should"

cat >use_tidelog.js <<'EOF'
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const version = process.argv[2];
const tidelog = require('tidelog');
const main = require.resolve('tidelog');
assert.ok(main.startsWith(path.join(__dirname, 'node_modules', 'tidelog') + path.sep), `tidelog resolved to ${main}`);
const pkg = require('tidelog/package.json');
assert.equal(pkg.version, version, `tidelog's package.json version ${pkg.version} != workspace ${version}`);
assert.equal(pkg.scripts, undefined, 'the packed package.json has scripts');
assert.equal(require('@tidelog/linux-x64-gnu/package.json').version, version);
console.log(`  require('tidelog') -> ${main}, version ${pkg.version}`);

async function main_() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidelog-npm-'));
  try {
    // A write and a read.
    const db = tidelog.open(path.join(dir, 'local'), { nodeName: 'gw-1' });
    db.createTable('readings');
    db.upsert('readings', { id: 1, sensor: 's1', value: 20.5 });
    const got = db.get('readings', 1);
    assert.equal(got.sensor, 's1');
    assert.equal(got.value, 20.5);
    db.close();
    console.log('  local write and read: ok');

    // Replication over mutual TLS on 127.0.0.1: alerts flow up from the edge.
    const certs = tidelog.devCerts(path.join(dir, 'pki'), ['cloud', 'edge-1']);
    const FAST = { heartbeatIntervalMs: 200, idleTimeoutMs: 3000, backoffInitialMs: 50, backoffMaxMs: 500 };
    const cloud = tidelog.open(path.join(dir, 'cloud'), { nodeName: 'cloud' });
    const edge = tidelog.open(path.join(dir, 'edge'), { nodeName: 'edge-1' });
    try {
      cloud.startReplication({ tls: certs.nodes.cloud, ...FAST });
      const addr = cloud.listen('127.0.0.1:0');
      assert.match(addr, /^127\.0\.0\.1:\d+$/);
      cloud.addPeer({ name: 'edge-1', tables: [{ table: 'alerts', subscribe: true }] });

      edge.createTable('alerts');
      edge.startReplication({ tls: certs.nodes['edge-1'], ...FAST });
      edge.addPeer({ name: 'cloud', address: addr, tables: [{ table: 'alerts', publish: true }] });
      const info = edge.upsert('alerts', { id: 'a-1', sensor: 's1', reading: 41 });
      await edge.waitForAck('cloud', info.seq, 30000);
      const alert = cloud.get('alerts', 'a-1');
      assert.ok(alert, 'the alert is not on the cloud');
      assert.equal(alert.reading, 41);
      console.log(`  replication over mutual TLS (cloud on ${addr}): edge upsert seq ${info.seq} acked, read on the cloud: ok`);
    } finally {
      edge.close();
      cloud.close();
    }

    // The ES module entry: the same objects.
    const esm = await import('tidelog');
    assert.equal(esm.open, tidelog.open);
    assert.equal(esm.default, tidelog);
    console.log("  import('tidelog'): same objects as require: ok");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
main_().then(
  () => console.log('npm test: node script passed'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
EOF
echo "npm test: node use_tidelog.js (from $proj)"
"${clean[@]}" node use_tidelog.js "$version"

tsc=$repo/bindings/node/node_modules/typescript/bin/tsc
types_node=$repo/bindings/node/node_modules/@types
if [ -f "$tsc" ] && [ -d "$types_node/node" ]; then
    echo "npm test: TypeScript consumer, tsc --noEmit against node_modules/tidelog's declarations (tsc from bindings/node/node_modules)"
    cat >consumer.ts <<'EOF'
import { open, devCerts, TidelogError, type CommitInfo, type Database } from 'tidelog';
const db: Database = open('./data', { nodeName: 'gw-1' });
const info: CommitInfo = db.upsert('readings', { id: 1 });
const seq: number = info.seq;
const certs = devCerts('./pki', ['a']);
const cert: string = certs.nodes.a.cert;
// @ts-expect-error: open's options are checked
open('./data', { nodeName: 1 });
export { seq, cert, TidelogError };
EOF
    cat >consumer.mts <<'EOF'
import tidelog, { open } from 'tidelog';
const same: typeof open = tidelog.open;
export { same };
EOF
    cat >tsconfig.json <<EOF
{
  "compilerOptions": {
    "target": "ES2022", "module": "node16", "moduleResolution": "node16",
    "strict": true, "noEmit": true, "skipLibCheck": false,
    "typeRoots": ["$types_node"], "types": ["node"]
  },
  "files": ["consumer.ts", "consumer.mts"]
}
EOF
    "${clean[@]}" node "$tsc" -p tsconfig.json
    echo "npm test: TypeScript consumer type-checks (CommonJS and ESM)"
else
    echo "npm test: (skipped the TypeScript consumer: no typescript and @types/node in bindings/node/node_modules; run npm ci there)"
fi
echo "npm test: passed"
