'use strict';
// examples/typed.ts is type-checked by `tsc --noEmit` (npm run typecheck);
// here it is also compiled and run, so the example that shows every API
// really works (edge and cloud over mutual TLS on 127.0.0.1).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

test('examples/typed.ts compiles and runs', () => {
  const out = path.join(root, '.typed-out');
  fs.rmSync(out, { recursive: true, force: true });
  const tsc = require.resolve('typescript/bin/tsc');
  const c = spawnSync(
    process.execPath,
    [tsc, '--outDir', out, '--rootDir', 'examples', '--module', 'node16', '--moduleResolution', 'node16',
      '--target', 'ES2022', '--strict', '--types', 'node', 'examples/typed.ts'],
    { cwd: root, encoding: 'utf8' },
  );
  assert.equal(c.status, 0, `tsc failed:\n${c.stdout}${c.stderr}`);
  const r = spawnSync(process.execPath, [path.join(out, 'typed.js')], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  fs.rmSync(out, { recursive: true, force: true });
  assert.equal(r.status, 0, `typed example failed:\n${r.stdout}${r.stderr}`);
});
