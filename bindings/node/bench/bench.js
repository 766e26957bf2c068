#!/usr/bin/env node
// Single-record upserts and point gets: tidelog from Node vs the same loop in
// Rust (same process, same database engine, `_rustBaseline`) vs
// better-sqlite3 12 (WAL, synchronous=NORMAL, the same secondary index) on
// the same records. Run by hand, on a release build:
//
//   npm run build && node bench/bench.js [records] [rounds]
//
// Each variant runs `rounds` times on a fresh database, the variants taking
// turns round by round (so that each sees the machine in the same states),
// and the best round is reported (the machine is shared: the best round is
// the one least disturbed by other work). Durability: tidelog's default
// (grouped flush every 50 ms; every commit reaches the OS before it
// returns), SQLite WAL + synchronous=NORMAL (every commit reaches the OS,
// fsync at checkpoints): the same class.
//
// Every loop builds its record inside the timed loop, as the Rust loop
// (`_rustBaseline`) builds its `serde_json::Value` inside its own: the same
// loop a program writes. (Reading records from a prebuilt array instead
// charged the JavaScript loops for walking 100k cold objects the Rust loop
// never touches.) Point gets return the stored record: a plain object in
// JavaScript, a `Record` (its JSON text, not parsed) in Rust.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tidelog = require('..');

const N = Number(process.argv[2] || 100_000);
const ROUNDS = Number(process.argv[3] || 5);
const T0 = 1_700_000_000_000;

// Inlined by V8 into each loop: an object literal per upsert.
function record(i) {
  return { id: i, sensor: `s-${i % 100}`, value: i * 0.5, ts: T0 + i };
}

function tmp(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tidelog-bench-${name}-`));
}

function rate(n, fn) {
  const t = process.hrtime.bigint();
  fn();
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  return n / s;
}

function best(xs) {
  return Math.max(...xs);
}

function openTidelog() {
  const dir = tmp('tl');
  const db = tidelog.open(dir, { nodeName: 'bench' });
  db.createTable('r', { indexes: ['sensor'] });
  return { db, dir };
}

function benchTidelogNode() {
  const { db, dir } = openTidelog();
  const up = rate(N, () => {
    for (let i = 0; i < N; i++) db.upsert('r', record(i));
  });
  let sink = 0;
  const get = rate(N, () => {
    for (let i = 0; i < N; i++) sink += db.get('r', i).value;
  });
  if (sink !== ((N - 1) * N) / 4) throw new Error('bad read-back');
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { up, get };
}

// The same, but records cross napi as objects built field by field (napi's
// serde-json conversion) instead of index.js's paths (JSON text in,
// laid-out records out; see src/fast.rs): kept to justify the choice.
function benchTidelogNodeObjects() {
  const { db, dir } = openTidelog();
  const up = rate(N, () => {
    for (let i = 0; i < N; i++) db._upsertValue('r', record(i));
  });
  let sink = 0;
  const get = rate(N, () => {
    for (let i = 0; i < N; i++) sink += db._getValue('r', i).value;
  });
  if (!sink) throw new Error('bad read-back');
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { up, get };
}

function benchRust() {
  const { db, dir } = openTidelog();
  const r = db._rustBaseline('r', N);
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { up: r.upsertsPerSec, get: r.getsPerSec, getValue: r.getValuesPerSec };
}

function benchSqlite() {
  let Sqlite;
  try {
    Sqlite = require('better-sqlite3');
  } catch (e) {
    return null;
  }
  const dir = tmp('sqlite');
  const db = new Sqlite(path.join(dir, 'db.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE r (id INTEGER PRIMARY KEY, sensor TEXT, value REAL, ts INTEGER)');
  db.exec('CREATE INDEX r_sensor ON r (sensor)');
  const upsert = db.prepare(
    'INSERT INTO r (id, sensor, value, ts) VALUES (@id, @sensor, @value, @ts) ' +
      'ON CONFLICT(id) DO UPDATE SET sensor = excluded.sensor, value = excluded.value, ts = excluded.ts',
  );
  const select = db.prepare('SELECT * FROM r WHERE id = ?');
  const up = rate(N, () => {
    for (let i = 0; i < N; i++) upsert.run(record(i));
  });
  let sink = 0;
  const get = rate(N, () => {
    for (let i = 0; i < N; i++) sink += select.get(i).value;
  });
  if (!sink) throw new Error('bad read-back');
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { up, get, version: require('better-sqlite3/package.json').version };
}

/** Runs the variants in turns, `ROUNDS` times; the best round of each. */
function runAll(variants) {
  const rounds = variants.map(() => []);
  for (let k = 0; k < ROUNDS; k++) {
    variants.forEach(([, fn], j) => rounds[j].push(fn()));
  }
  return variants.map(([name], j) => {
    const rs = rounds[j];
    if (rs[0] === null) return null;
    const out = { name };
    for (const key of Object.keys(rs[0])) {
      out[key] = typeof rs[0][key] === 'number' ? best(rs.map((r) => r[key])) : rs[0][key];
    }
    return out;
  });
}

function fmt(x) {
  return `${Math.round(x).toLocaleString('en-US')}/s`;
}

function main() {
  console.log(`tidelog bench: ${N.toLocaleString('en-US')} records, best of ${ROUNDS} rounds, node ${process.version}, ${os.cpus().length} cpus`);
  const [node, objects, rust, sqlite] = runAll([
    ['tidelog from Node', benchTidelogNode],
    ['tidelog from Node (napi objects)', benchTidelogNodeObjects],
    ['tidelog Rust API (same loop)', benchRust],
    ['better-sqlite3', benchSqlite],
  ]);

  const rows = [node, objects, rust, sqlite].filter(Boolean);
  const w = Math.max(...rows.map((r) => r.name.length)) + 2;
  console.log(`${'what'.padEnd(w)}${'upserts'.padStart(14)}${'point gets'.padStart(14)}`);
  for (const r of rows) {
    console.log(`${r.name.padEnd(w)}${fmt(r.up).padStart(14)}${fmt(r.get).padStart(14)}`);
  }
  console.log(`${'  (Rust get + record to serde Value)'.padEnd(w)}${''.padStart(14)}${fmt(rust.getValue).padStart(14)}`);
  console.log('');
  const pct = (a, b) => `${((100 * a) / b).toFixed(0)}%`;
  console.log(`Node vs Rust API:  upserts ${pct(node.up, rust.up)}, gets ${pct(node.get, rust.get)} (target >= 70%)`);
  console.log(`                   gets vs Rust get + to_value: ${pct(node.get, rust.getValue)}`);
  console.log(`Node API vs napi objects: upserts ${(node.up / objects.up).toFixed(2)}x, gets ${(node.get / objects.get).toFixed(2)}x`);
  if (sqlite) {
    console.log(
      `Node vs better-sqlite3 ${sqlite.version}: upserts ${(node.up / sqlite.up).toFixed(2)}x (target >= 2x), gets ${(node.get / sqlite.get).toFixed(2)}x (target >= 1.0x)`,
    );
  } else {
    console.log('better-sqlite3 is not installed (npm install in bindings/node): no SQLite comparison');
  }
}

main();
