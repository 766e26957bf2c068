'use strict';
// index.d.ts is hand-written: check that it declares exactly what index.js
// exports, member by member. (`npm run typecheck` then checks
// examples/typed.ts, which uses every API, against it.)
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');
const tidelog = require('..');

function declarations() {
  const file = path.join(__dirname, '..', 'index.d.ts');
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const values = new Set();
  const classes = {};
  const exported = (n) => (ts.getCombinedModifierFlags(n) & ts.ModifierFlags.Export) !== 0;
  for (const st of src.statements) {
    if (ts.isClassDeclaration(st) && exported(st)) {
      values.add(st.name.text);
      const members = { instance: new Set(), static: new Set() };
      for (const m of st.members) {
        if (!m.name || ts.isConstructorDeclaration(m)) continue;
        const mods = ts.getCombinedModifierFlags(m);
        if (mods & ts.ModifierFlags.Private) continue;
        (mods & ts.ModifierFlags.Static ? members.static : members.instance).add(m.name.getText(src));
      }
      classes[st.name.text] = members;
    } else if (ts.isFunctionDeclaration(st) && exported(st)) {
      values.add(st.name.text);
    } else if (ts.isVariableStatement(st) && exported(st)) {
      for (const d of st.declarationList.declarations) values.add(d.name.getText(src));
    }
  }
  return { values, classes };
}

function runtimeMembers(C, sample) {
  const instance = new Set();
  for (let p = C.prototype; p && p !== Object.prototype && p !== Error.prototype; p = Object.getPrototypeOf(p)) {
    for (const k of Object.getOwnPropertyNames(p)) if (k !== 'constructor' && !k.startsWith('_')) instance.add(k);
  }
  if (sample) for (const k of Object.keys(sample)) if (!k.startsWith('_')) instance.add(k);
  const statics = new Set(
    Object.getOwnPropertyNames(C).filter((k) => !['length', 'name', 'prototype'].includes(k)),
  );
  return { instance, static: statics };
}

const sorted = (s) => [...s].sort();

test('index.d.ts declares every runtime export and nothing else', () => {
  const { values } = declarations();
  assert.deepEqual(sorted(values), sorted(Object.keys(tidelog)));
});

test('Database and Transaction members match their declarations', () => {
  const { classes } = declarations();
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'tidelog-types-'));
  const db = tidelog.open(dir, { nodeName: 'types' });
  try {
    const dbRt = runtimeMembers(tidelog.Database, db);
    assert.deepEqual(sorted(classes.Database.instance), sorted(dbRt.instance), 'Database instance members');
    assert.deepEqual(sorted(classes.Database.static), sorted(dbRt.static), 'Database static members');
    const txRt = runtimeMembers(tidelog.Transaction);
    assert.deepEqual(sorted(classes.Transaction.instance), sorted(txRt.instance), 'Transaction members');
  } finally {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('every error class is declared with its code', () => {
  const { classes } = declarations();
  for (const [name, C] of Object.entries(tidelog)) {
    if (typeof C === 'function' && (C === tidelog.TidelogError || C.prototype instanceof tidelog.TidelogError)) {
      assert.ok(classes[name], `${name} declared`);
      assert.ok(classes[name].instance.has('code'), `${name}.code declared`);
    }
  }
});
