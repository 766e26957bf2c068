'use strict';
// The shared list of bad values (tests/bad_values.txt), which the Python and
// C tests read too: each is refused with INVALID_INPUT through every kind of
// write, and leaves the table as it was. JSON.stringify writes NaN and
// ±Infinity as null, so without a check they would be stored as null.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { open, InvalidInputError } = require('..');
const { tmpdir } = require('./helpers');

const CASES = fs
  .readFileSync(path.join(__dirname, '..', '..', '..', 'tests', 'bad_values.txt'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '' && !l.startsWith('#'));

const NATIVE = { '<nan>': NaN, '<inf>': Infinity, '<-inf>': -Infinity };

/** The line as a JavaScript program holds it: placeholders become its own numbers. */
function record(line) {
  return JSON.parse(line, (k, v) => (typeof v === 'string' && v in NATIVE ? NATIVE[v] : v));
}

const WRITES = {
  insert: (db, r) => db.insert('t', r),
  upsert: (db, r) => db.upsert('t', r),
  update: (db, r) => db.update('t', r),
  transaction: (db, r) => db.transaction((tx) => void tx.upsert('t', r)),
  transactionAsync: (db, r) => db.transactionAsync((tx) => void tx.insert('t', r)),
  upsertAsync: (db, r) => db.upsertAsync('t', r),
};

test('the shared list is there', () => {
  assert.ok(CASES.length >= 10, `${CASES.length} cases`);
});

test('every bad value is refused with INVALID_INPUT and changes nothing', async () => {
  const db = open(tmpdir(), { nodeName: 'n1' });
  try {
    db.createTable('t');
    db.upsert('t', { id: 1, v: 0 });
    const before = db.get('t', 1);
    const last = db.logBounds().last;
    for (const line of CASES) {
      for (const [name, write] of Object.entries(WRITES)) {
        const what = `${name} ${line}`;
        const check = (e) => {
          assert.ok(e instanceof InvalidInputError, `${what}: got ${e && e.name}: ${e && e.message}`);
          assert.equal(e.code, 'INVALID_INPUT', what);
          return true;
        };
        let out;
        try {
          out = write(db, record(line));
        } catch (e) {
          check(e);
          out = undefined;
        }
        if (out !== undefined) {
          assert.ok(out instanceof Promise, `${what}: accepted (${JSON.stringify(out)})`);
          await assert.rejects(out, check, what);
        }
        assert.equal(db.count('t'), 1, what);
        assert.deepEqual(db.get('t', 1), before, what);
        assert.equal(db.logBounds().last, last, what);
      }
    }
  } finally {
    db.close();
  }
});

test('null itself, and records that only mention it, are still written', () => {
  const db = open(tmpdir(), { nodeName: 'n1' });
  try {
    db.createTable('t');
    db.upsert('t', { id: 1, v: null, s: 'null', a: [null, 1.5] });
    db.update('t', { id: 1, w: { x: null } });
    db.transaction((tx) => void tx.insert('t', { id: 2, v: null, n: new Number(3) }));
    assert.deepEqual(
      Object.fromEntries(Object.entries(db.get('t', 1)).filter(([k]) => !k.startsWith('__'))),
      { id: 1, v: null, s: 'null', a: [null, 1.5], w: { x: null } },
    );
    assert.equal(db.get('t', 2).n, 3);
    assert.throws(() => db.upsert('t', { id: 3, v: null, n: new Number(NaN) }), InvalidInputError);
    assert.throws(() => db.upsert('t', { id: 3, v: null, d: { toJSON: () => Infinity } }), InvalidInputError);
    assert.equal(db.count('t'), 2);
  } finally {
    db.close();
  }
});
