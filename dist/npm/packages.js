#!/usr/bin/env node
// Writes the package.json files of the two npm packages that dist/npm.sh
// packs, from bindings/node/package.json (the dev tree's):
//
//   node dist/npm/packages.js <version> <platform-package> <os> <cpu> <libc|-> <main-dir> <platform-dir>
//
// The main package `tidelog`: the dev package.json without its scripts (the
// `install` script builds the addon with cargo; the package needs no
// compiler), without devDependencies, without tidelog.node in `files`, and
// with the platform package as an optional dependency at the same version.
// The platform package (e.g. @tidelog/linux-x64-gnu): tidelog.node alone,
// with os/cpu/libc so that npm installs only the one matching the machine.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const [version, platformPkg, os, cpu, libc, mainDir, platformDir] = process.argv.slice(2);
if (!platformDir) {
  console.error('usage: packages.js <version> <platform-package> <os> <cpu> <libc|-> <main-dir> <platform-dir>');
  process.exit(2);
}
const root = path.resolve(__dirname, '..', '..');
const dev = JSON.parse(fs.readFileSync(path.join(root, 'bindings', 'node', 'package.json'), 'utf8'));
if (dev.version !== version) {
  console.error(
    `dist/npm: bindings/node/package.json has version ${dev.version}, the workspace (Cargo.toml [workspace.package]) ${version}; make them equal`,
  );
  process.exit(1);
}

const main = {
  name: dev.name,
  version,
  description: dev.description,
  license: dev.license,
  main: dev.main,
  types: dev.types,
  exports: dev.exports,
  files: dev.files.filter((f) => f !== 'tidelog.node'),
  engines: dev.engines,
  optionalDependencies: { [platformPkg]: version },
};
if (dev.repository) main.repository = dev.repository;

const platform = {
  name: platformPkg,
  version,
  description: `The native addon of tidelog for ${os}-${cpu}${libc === '-' ? '' : ` (${libc})`}; installed by the tidelog package`,
  license: dev.license,
  main: 'tidelog.node',
  files: ['tidelog.node'],
  os: [os],
  cpu: [cpu],
  engines: dev.engines,
};
if (libc !== '-') platform.libc = [libc];

fs.writeFileSync(path.join(mainDir, 'package.json'), JSON.stringify(main, null, 2) + '\n');
fs.writeFileSync(path.join(platformDir, 'package.json'), JSON.stringify(platform, null, 2) + '\n');
console.log(`dist/npm: ${path.join(mainDir, 'package.json')}:\n${JSON.stringify(main, null, 2)}`);
console.log(`dist/npm: ${path.join(platformDir, 'package.json')}:\n${JSON.stringify(platform, null, 2)}`);
