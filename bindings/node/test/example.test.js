'use strict';
// examples/typed.ts is type-checked by `tsc --noEmit` (npm run typecheck,
// and tests/run_all.sh); here its types are stripped (transpileModule, no
// second type-check) and it is run, so the example that shows every API
// really works: edge and cloud over mutual TLS on 127.0.0.1.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const root = path.join(__dirname, '..');

test('examples/typed.ts runs', () => {
  const src = fs.readFileSync(path.join(root, 'examples', 'typed.ts'), 'utf8');
  const { outputText } = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
  });
  // Inside the package, so that require('tidelog') resolves to it.
  const out = path.join(root, `.typed-out-${process.pid}.js`);
  fs.writeFileSync(out, outputText);
  try {
    const r = spawnSync(process.execPath, [out], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `typed example failed:\n${r.stdout}${r.stderr}`);
  } finally {
    fs.rmSync(out, { force: true });
  }
});
