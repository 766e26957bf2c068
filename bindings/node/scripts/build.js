#!/usr/bin/env node
// Builds the native addon with the machine's Rust toolchain and copies it
// next to index.js as tidelog.node.
//
// Plain `cargo build` (not `napi build`): napi's CLI always passes
// `--target <host triple>`, which compiles the whole dependency graph a
// second time under target/<triple>/. Plain cargo shares the workspace's
// target directory with every other cargo command.
//
//   node scripts/build.js            release build (what `npm install` runs)
//   node scripts/build.js --debug    debug build (faster to compile; tests)
//   node scripts/build.js --bench    with the benchmark's Rust loops (bench/bench.js)
//   TIDELOG_NODE_PROFILE=debug       same as --debug, for `npm install`/`npm ci`
//   TIDELOG_NODE_SKIP_BUILD=1        do nothing (e.g. a prebuilt tidelog.node)
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = path.resolve(__dirname, '..');
const root = path.resolve(here, '..', '..');

if (process.env.TIDELOG_NODE_SKIP_BUILD === '1') {
  console.log('tidelog: TIDELOG_NODE_SKIP_BUILD=1, not building the native addon');
  process.exit(0);
}

const debug =
  process.argv.includes('--debug') || process.env.TIDELOG_NODE_PROFILE === 'debug';
const profile = debug ? 'debug' : 'release';
const args = ['build', '-p', 'tidelog-node', '--manifest-path', path.join(root, 'Cargo.toml')];
if (!debug) args.push('--release');
if (process.argv.includes('--bench')) args.push('--features', 'bench');

const cargo = process.env.CARGO || 'cargo';
console.log(`tidelog: ${cargo} ${args.join(' ')}`);
const r = spawnSync(cargo, args, { stdio: 'inherit', cwd: root });
if (r.error) {
  console.error(`tidelog: cannot run cargo (${r.error.message}); install Rust from https://rustup.rs`);
  process.exit(1);
}
if (r.status !== 0) process.exit(r.status || 1);

const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(root, process.env.CARGO_TARGET_DIR)
  : path.join(root, 'target');
const libName = {
  linux: 'libtidelog_node.so',
  darwin: 'libtidelog_node.dylib',
  win32: 'tidelog_node.dll',
}[process.platform] || 'libtidelog_node.so';
const src = path.join(targetDir, profile, libName);
const dst = path.join(here, 'tidelog.node');
// Copy to a temporary name and rename: a process that has the old addon
// loaded keeps its mapping, and nobody ever sees a half-written file.
const tmp = `${dst}.${process.pid}.tmp`;
fs.copyFileSync(src, tmp);
fs.renameSync(tmp, dst);
console.log(`tidelog: ${path.relative(root, src)} -> ${path.relative(root, dst)} (${profile})`);
