#!/usr/bin/env node
// Single-record upserts and point gets: tidelog from Node vs the same loop in
// Rust (same process, same database, `_rustUpserts` / `_rustGets`) vs
// better-sqlite3 12 (WAL, synchronous=NORMAL, the same secondary index) on
// the same records. Run by hand, on a release build:
//
//   npm run build:bench && node bench/bench.js [records] [rounds]
//
// (build:bench is a release build with the `bench` feature, which adds the
// Rust loops; a plain release addon leaves them out.)
//
// Node vs Rust is measured in pairs. Each round opens a fresh database with
// two tables of `records / 2` each (so it holds as many records as the
// other variants' databases), one written and read from Node, the other by
// the Rust loop. The two take turns in chunks of CHUNK records, so that
// both see the same memtable and the same moments of a shared, noisy
// machine. (Separate databases per variant, compared by their best rounds,
// let the machine's mood decide: the Rust loop alone ranged 780k-1.16M
// gets/s between runs.) Whoever writes when a memtable fills waits for
// it, so who goes first alternates round by round and the target ratio
// is pooled: all of Node's time against all of Rust's, over an even
// number of rounds. Each round's own ratio is printed too.
//
// better-sqlite3 and the napi-objects variant run in their own fresh
// databases of `records`, taking turns with the pair round by round. The
// table shows medians over rounds.
//
// Every loop builds its record inside the timed loop, as the Rust loop
// builds its `serde_json::Value` inside its own: the same loop a program
// writes. A Node get returns a plain object a program can use, so the
// Rust get it is held against turns each record into a
// `serde_json::Value` too (as in the Python bench); the rate of a Rust get
// that leaves the record as stored JSON text is printed alongside.
// Durability: tidelog's default (grouped flush every 50 ms; every commit
// reaches the OS before it returns), SQLite WAL + synchronous=NORMAL (every
// commit reaches the OS, fsync at checkpoints): the same class.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tidelog = require('..');

const N = Number(process.argv[2] || 100_000);
// Even, so that each side goes first equally often.
const ROUNDS = 2 * Math.ceil(Number(process.argv[3] || 8) / 2);
const HALF = Math.floor(N / 2);
const CHUNK = Math.min(5_000, HALF);
const T0 = 1_700_000_000_000;

// Inlined by V8 into each loop: an object literal per upsert.
function record(i) {
  return { id: i, sensor: `s-${i % 100}`, value: i * 0.5, ts: T0 + i };
}

function tmp(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tidelog-bench-${name}-`));
}

function seconds(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function openTidelog(tables) {
  const dir = tmp('tl');
  const db = tidelog.open(dir, { nodeName: 'bench' });
  for (const t of tables) db.createTable(t, { indexes: ['sensor'] });
  return {
    db,
    done() {
      db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One round of Node vs Rust, interleaved chunk by chunk; rates per second. */
function pairRound(nodeFirst) {
  const { db, done } = openTidelog(['node', 'rust']);
  const t = { nodeUp: 0, rustUp: 0, nodeGet: 0, rustGet: 0, rustGetValue: 0 };
  const turns = (nodeStep, rustStep) => {
    for (let from = 0; from < HALF; from += CHUNK) {
      const to = Math.min(HALF, from + CHUNK);
      if (nodeFirst) {
        nodeStep(from, to);
        rustStep(from, to);
      } else {
        rustStep(from, to);
        nodeStep(from, to);
      }
    }
  };
  turns(
    (from, to) => {
      t.nodeUp += seconds(() => {
        for (let i = from; i < to; i++) db.upsert('node', record(i));
      });
    },
    (from, to) => {
      t.rustUp += db._rustUpserts('rust', from, to);
    },
  );
  let sink = 0;
  turns(
    (from, to) => {
      t.nodeGet += seconds(() => {
        for (let i = from; i < to; i++) sink += db.get('node', i).value;
      });
    },
    (from, to) => {
      t.rustGet += db._rustGets('rust', from, to, false);
      t.rustGetValue += db._rustGets('rust', from, to, true);
    },
  );
  if (sink !== ((HALF - 1) * HALF) / 4) throw new Error('bad read-back');
  done();
  return t;
}

// Records cross napi as objects built field by field (napi's serde-json
// conversion) instead of index.js's paths (JSON text in, laid-out records
// out; see src/fast.rs): kept to justify the choice.
function napiObjectsRound() {
  const { db, done } = openTidelog(['r']);
  const up = N / seconds(() => {
    for (let i = 0; i < N; i++) db._upsertValue('r', record(i));
  });
  let sink = 0;
  const get = N / seconds(() => {
    for (let i = 0; i < N; i++) sink += db._getValue('r', i).value;
  });
  if (sink !== ((N - 1) * N) / 4) throw new Error('bad read-back');
  done();
  return { up, get };
}

function loadSqlite() {
  try {
    return require('better-sqlite3');
  } catch (e) {
    return null;
  }
}

function sqliteRound(Sqlite) {
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
  const up = N / seconds(() => {
    for (let i = 0; i < N; i++) upsert.run(record(i));
  });
  let sink = 0;
  const get = N / seconds(() => {
    for (let i = 0; i < N; i++) sink += select.get(i).value;
  });
  if (sink !== ((N - 1) * N) / 4) throw new Error('bad read-back');
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { up, get };
}

function fmt(x) {
  return `${Math.round(x).toLocaleString('en-US')}/s`;
}

function pct(x) {
  return `${(100 * x).toFixed(0)}%`;
}

function main() {
  const Sqlite = loadSqlite();
  console.log(
    `tidelog bench: ${N.toLocaleString('en-US')} records per database, ${ROUNDS} rounds, ` +
      `node ${process.version}, ${os.cpus().length} cpus`,
  );
  const pairs = [];
  const objects = [];
  const sqlite = [];
  for (let k = 0; k < ROUNDS; k++) {
    // The variants take turns; the pair's inner order alternates too.
    const steps = [
      () => pairs.push(pairRound(k % 2 === 0)),
      () => objects.push(napiObjectsRound()),
      () => Sqlite && sqlite.push(sqliteRound(Sqlite)),
    ];
    for (let j = 0; j < steps.length; j++) steps[(j + k) % steps.length]();
  }

  const med = (rows, pick) => median(rows.map(pick));
  const rate = (key) => med(pairs, (t) => HALF / t[key]);
  const node = { up: rate('nodeUp'), get: rate('nodeGet') };
  const rust = { up: rate('rustUp'), get: rate('rustGet'), getValue: rate('rustGetValue') };
  const rows = [
    ['tidelog from Node', node],
    ['tidelog from Node (napi objects)', { up: med(objects, (o) => o.up), get: med(objects, (o) => o.get) }],
    ['tidelog Rust API (same loop)', rust],
  ];
  if (Sqlite) rows.push(['better-sqlite3', { up: med(sqlite, (s) => s.up), get: med(sqlite, (s) => s.get) }]);
  const w = Math.max(...rows.map(([name]) => name.length)) + 2;
  console.log(`${'what'.padEnd(w)}${'upserts'.padStart(14)}${'point gets'.padStart(14)}`);
  for (const [name, r] of rows) {
    console.log(`${name.padEnd(w)}${fmt(r.up).padStart(14)}${fmt(r.get).padStart(14)}`);
  }
  console.log(`${'  (Rust get + record to serde Value)'.padEnd(w)}${''.padStart(14)}${fmt(rust.getValue).padStart(14)}`);
  console.log('');

  // Node's rate over Rust's: Rust's time over Node's for the same work.
  const total = (key) => pairs.reduce((sum, t) => sum + t[key], 0);
  const pooled = (n, r) => total(r) / total(n);
  const rounds = (n, r) => pairs.map((t) => pct(t[r] / t[n])).join(' ');
  const ok = (x, target) => (x >= target ? 'ok' : 'MISSED');
  const up = pooled('nodeUp', 'rustUp');
  const get = pooled('nodeGet', 'rustGetValue');
  console.log('Node vs Rust API, paired, pooled over rounds (target >= 70%):');
  console.log(`  upserts ${pct(up)} ${ok(up, 0.7)} (rounds: ${rounds('nodeUp', 'rustUp')})`);
  console.log(
    `  gets    ${pct(get)} ${ok(get, 0.7)} against a Rust get that builds a Value ` +
      `(rounds: ${rounds('nodeGet', 'rustGetValue')})`,
  );
  console.log(
    `  gets    ${pct(pooled('nodeGet', 'rustGet'))} against a Rust get that leaves the record as text ` +
      `(rounds: ${rounds('nodeGet', 'rustGet')})`,
  );
  const obj = rows[1][1];
  console.log(`Node API vs napi objects: upserts ${(node.up / obj.up).toFixed(2)}x, gets ${(node.get / obj.get).toFixed(2)}x`);
  if (Sqlite) {
    const s = rows[3][1];
    const version = require('better-sqlite3/package.json').version;
    const [upX, getX] = [node.up / s.up, node.get / s.get];
    console.log(
      `Node vs better-sqlite3 ${version}: upserts ${upX.toFixed(2)}x (target >= 2x: ${ok(upX, 2)}), ` +
        `gets ${getX.toFixed(2)}x (target >= 1.0x: ${ok(getX, 1)})`,
    );
  } else {
    console.log('better-sqlite3 is not installed (npm install in bindings/node): no SQLite comparison');
  }
}

main();
