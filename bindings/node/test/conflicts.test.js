'use strict';
// Concurrent writes from Node: the `conflict` table option, counters, the
// conflict log and a JavaScript resolver, with two databases in one process
// replicating over mutual TLS on 127.0.0.1. Every conflict is made the same
// way: while their link is down, both nodes write the same key (node a
// first), so the writes are truly concurrent.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const {
  open,
  devCerts,
  setLogCallback,
  InvalidInputError,
  NotFoundError,
  ClosedError,
} = require('..');
const { tmpdir, waitUntil } = require('./helpers');

const FAST = { heartbeatInterval: '100ms', idleTimeout: '1500ms', backoffInitial: '50ms', backoffMax: '500ms' };
const TABLES = ['doc', 'counters', 'res'];

// Records of the `tidelog::resolver` log target, for every test here.
const logged = [];
setLogCallback((r) => {
  if (r.target === 'tidelog::resolver') logged.push(r.message);
}, 'warn');
after(() => setLogCallback(null));
const saying = (text) => logged.filter((m) => m.includes(text));

/**
 * Nodes a and b with `doc`, `counters` and `res` (conflict "resolver"),
 * replicating all three both ways. They meet once (so the first,
 * whole-table sync is behind them), then b drops the link: what each
 * writes until `heal()` arrives through the log, concurrently.
 */
async function pair() {
  const dir = tmpdir('tidelog-conflicts-');
  const certs = devCerts(path.join(dir, 'pki'), ['a', 'b']);
  const a = open(path.join(dir, 'a'), { nodeName: 'a' });
  const b = open(path.join(dir, 'b'), { nodeName: 'b' });
  for (const db of [a, b]) {
    db.createTable('doc');
    db.createTable('counters');
    db.createTable('res', { conflict: 'resolver' });
  }
  const flows = TABLES.map((table) => ({ table, publish: true, subscribe: true }));
  a.startReplication({ tls: certs.nodes.a, ...FAST });
  b.startReplication({ tls: certs.nodes.b, ...FAST });
  a.addPeer({ name: 'b', tables: flows });
  const addr = a.listen('127.0.0.1:0');
  b.addPeer({ name: 'a', address: addr, tables: flows });
  for (const t of TABLES) {
    a.upsert(t, { id: 'from-a' });
    b.upsert(t, { id: 'from-b' });
  }
  for (const t of TABLES) await waitUntil(`the nodes met (${t})`, () => a.get(t, 'from-b') && b.get(t, 'from-a'));
  b.removePeer('a');
  // Removing a peer ends its link asynchronously: frames still in flight
  // would make the writes that follow sequential, not concurrent.
  await waitUntil("a sees b's link end", () => !a.peerStatus('b').connected);
  return {
    a,
    b,
    heal: () => b.addPeer({ name: 'a', address: addr, tables: flows }),
    both: (table, key) => [a.get(table, key), b.get(table, key)],
    close() {
      b.close();
      a.close();
    },
  };
}

const vOf = (r) => (r === null ? null : r.v);

/** Concurrent versions of `keys`: a's first, then b's (the later ones). */
async function writeBoth(p, table, keys) {
  for (const k of keys) p.a.upsert(table, { id: k, v: `a${k}` });
  await new Promise((r) => setTimeout(r, 5));
  for (const k of keys) p.b.upsert(table, { id: k, v: `b${k}` });
}

// ---- the table option ------------------------------------------------------------

test('the conflict option round-trips through createTable, describeTable and listTables', () => {
  const db = open(path.join(tmpdir(), 'db'), { nodeName: 'n' });
  try {
    assert.equal(db.createTable('plain').conflict, 'lww');
    for (const policy of ['lww', 'merge', 'keep_local', 'resolver']) {
      assert.equal(db.createTable(`t_${policy}`, { conflict: policy }).conflict, policy);
      assert.equal(db.describeTable(`t_${policy}`).conflict, policy);
    }
    assert.equal(db.ensureTable('t_new', { conflict: 'merge' }), true);
    const byName = Object.fromEntries(db.listTables().map((t) => [t.name, t.conflict]));
    assert.equal(byName.t_keep_local, 'keep_local');
    assert.equal(byName.t_new, 'merge');
    // Hostile values: refused, naming the option and what it accepts.
    assert.throws(() => db.createTable('bad', { conflict: 'newest' }), (e) => e instanceof InvalidInputError && /conflict.*newest.*lww/.test(e.message));
    assert.throws(() => db.createTable('bad', { conflict: 'LWW' }), InvalidInputError);
    assert.throws(() => db.createTable('bad', { conflict: 1 }), InvalidInputError);
    assert.ok(!db.listTables().some((t) => t.name === 'bad'));
  } finally {
    db.close();
  }
});

// ---- counters ----------------------------------------------------------------------

test('increment: on the database, in a transaction, and hostile amounts', () => {
  const db = open(path.join(tmpdir(), 'db'), { nodeName: 'n' });
  try {
    db.createTable('hits');
    const c = db.increment('hits', 'home', 'n', 5);
    assert.ok(c.seq > 0 && typeof c.stamp.time === 'bigint');
    db.increment('hits', 'home', 'n', -2);
    db.increment('hits', 'home', 'n');
    assert.equal(db.get('hits', 'home').n, 4);
    db.transaction((tx) => tx.increment('hits', 'home', 'n', 10n).increment('hits', 7, 'n'));
    assert.equal(db.get('hits', 'home').n, 14);
    assert.equal(db.get('hits', 7).n, 1);

    db.upsert('hits', { id: 'text', n: 'many' });
    assert.throws(() => db.increment('hits', 'text', 'n', 1), InvalidInputError);
    for (const by of [1.5, NaN, Infinity, '1', null, 2 ** 53, 2n ** 63n]) {
      assert.throws(() => db.increment('hits', 'home', 'n', by), InvalidInputError, String(by));
    }
    assert.throws(() => db.increment('hits', 1.5, 'n', 1), InvalidInputError);
    assert.throws(() => db.increment('hits', 1, 'id', 1), InvalidInputError);
    assert.throws(() => db.increment('nope', 1, 'n', 1), NotFoundError);
    db.increment('hits', 'big', 'n', 2n ** 63n - 1n);
    assert.throws(() => db.increment('hits', 'big', 'n', 1), InvalidInputError);
    assert.equal(db.get('hits', 'text').n, 'many');
  } finally {
    db.close();
  }
});

test('increments from two nodes add up', async () => {
  const p = await pair();
  try {
    p.a.increment('counters', 'c', 'n', 3);
    p.a.increment('counters', 'c', 'n', 3);
    p.b.increment('counters', 'c', 'n', 4);
    p.heal();
    await waitUntil('10 on both', () => p.both('counters', 'c').every((r) => r && r.n === 10));
  } finally {
    p.close();
  }
});

// ---- the conflict log ------------------------------------------------------------------

test('a conflict shows up in both conflict logs and in the _conflicts table', async () => {
  const p = await pair();
  try {
    await writeBoth(p, 'doc', [1]);
    p.heal();
    await waitUntil("b's version on both", () => p.both('doc', 1).every((r) => vOf(r) === 'b1'));
    const onA = () => p.a.conflicts().filter((e) => e.table === 'doc');
    const onB = () => p.b.conflicts().filter((e) => e.table === 'doc');
    await waitUntil('an entry on a', () => onA().length);
    await waitUntil('an entry on b', () => onB().length);
    const [ea] = onA();
    assert.equal(ea.key, 1);
    assert.equal(ea.rule, 'lww');
    assert.equal(ea.lost, 'local');
    assert.equal(ea.winnerOrigin, 'b');
    assert.equal(ea.loserOrigin, 'a');
    assert.equal(ea.loserValues.v, 'a1');
    assert.equal(ea.winner.node, p.b.nodeId);
    assert.equal(ea.loser.node, p.a.nodeId);
    assert.ok(ea.winner.time > ea.loser.time);
    assert.ok(ea.id.startsWith('a:') && ea.atMs > 0);
    assert.equal(onB()[0].lost, 'remote');
    // The same entry as a record of the system table.
    const row = p.a.get('_conflicts', ea.id);
    assert.equal(row.table, 'doc');
    assert.equal(row.lost, 'local');
    assert.equal(p.a.conflictsDropped(), 0);
  } finally {
    p.close();
  }
  assert.throws(() => p.a.conflicts(), ClosedError);
});

// ---- resolvers -----------------------------------------------------------------------

test("the resolver is called and its answer wins on both nodes", async () => {
  const p = await pair();
  const cases = [];
  const resolve = (c) => {
    cases.push(c);
    if (c.key === 1) return { id: 1, v: 'resolved' };
    if (c.key === 2) return 'delete';
    return 'keep_local';
  };
  try {
    await writeBoth(p, 'res', [1, 2, 3]);
    p.a.setConflictResolver('res', resolve);
    p.b.setConflictResolver('res', resolve);
    p.heal();
    await waitUntil("the resolver's record on both", () => p.both('res', 1).every((r) => vOf(r) === 'resolved'));
    await waitUntil('deleted on both', () => p.both('res', 2).every((r) => r === null));
    await waitUntil('3 converged', () => new Set(p.both('res', 3).map(vOf)).size === 1);
    assert.ok(cases.length > 0, 'the resolver was never called');
    const c = cases[0];
    assert.deepEqual(Object.keys(c).sort(), ['key', 'local', 'localStamp', 'remote', 'remoteStamp', 'table']);
    assert.equal(c.table, 'res');
    assert.deepEqual(new Set([c.local.v, c.remote.v]), new Set([`a${c.key}`, `b${c.key}`]));
    assert.equal(typeof c.localStamp.time, 'bigint');
    assert.equal(typeof c.remoteStamp.node, 'bigint');
    assert.ok([...p.a.conflicts(), ...p.b.conflicts()].some((e) => e.rule === 'resolver'));
  } finally {
    p.close();
  }
});

test('a resolver that throws or answers garbage takes the remote version, logged', async () => {
  const p = await pair();
  const resolve = (c) => {
    switch (c.key) {
      case 1:
        throw new Error('resolver bug');
      case 2:
        return 42;
      case 3:
        return 'bogus';
      case 4:
        return undefined;
      case 5:
        return Promise.resolve('keep_local');
      default:
        return { id: 6, v: NaN };
    }
  };
  const keys = [1, 2, 3, 4, 5, 6];
  try {
    await writeBoth(p, 'res', keys);
    p.a.setConflictResolver('res', resolve);
    p.b.setConflictResolver('res', resolve);
    p.heal();
    for (const k of keys) {
      await waitUntil(`key ${k} converged`, () => new Set(p.both('res', k).map(vOf)).size === 1);
      assert.ok([`a${k}`, `b${k}`].includes(vOf(p.a.get('res', k))));
    }
    await waitUntil('the throw logged with its stack', () => saying('it threw: Error: resolver bug').length);
    assert.match(saying('resolver bug')[0], /conflicts\.test\.js/);
    await waitUntil('42 logged', () => saying('it returned number 42').length);
    await waitUntil('an unknown answer logged', () => saying('it returned "bogus"').length);
    await waitUntil('undefined logged', () => saying('undefined (no answer)').length);
    await waitUntil('a promise logged', () => saying('returned a promise').length);
    await waitUntil('NaN logged', () => saying('cannot be written').length);
    assert.ok(logged.every((m) => m.includes('took the remote version')));
  } finally {
    p.close();
  }
});

test('a resolver that does not answer in time: the remote version, and the log says so', async () => {
  const p = await pair();
  let calls = 0;
  const stuck = () => {
    calls += 1;
    // Holds the event loop far past the wait bound below.
    const end = Date.now() + 1500;
    while (Date.now() < end);
    return { id: 1, v: 'too late' };
  };
  try {
    await writeBoth(p, 'res', [1]);
    p.a.setConflictResolver('res', stuck, { timeoutMs: 100 });
    p.b.setConflictResolver('res', stuck, { timeoutMs: 100 });
    p.heal();
    await waitUntil('the timeout logged', () => saying('no answer within 100 ms').length);
    await waitUntil('1 converged', () => new Set(p.both('res', 1).map(vOf)).size === 1);
    assert.notEqual(vOf(p.a.get('res', 1)), 'too late');
    assert.ok(calls > 0);
  } finally {
    p.close();
  }
});

test('resolver arguments and replacing, clearing, closing', () => {
  const db = open(path.join(tmpdir(), 'db'), { nodeName: 'n' });
  db.createTable('res', { conflict: 'resolver' });
  db.createTable('plain');
  assert.throws(() => db.setConflictResolver('res', 42), InvalidInputError);
  assert.throws(() => db.setConflictResolver('res', () => 'keep_local', { timeoutMs: 0 }), InvalidInputError);
  assert.throws(() => db.setConflictResolver('res', () => 'keep_local', { timeoutMs: 'soon' }), InvalidInputError);
  assert.throws(() => db.setConflictResolver('nope', () => 'keep_local'), NotFoundError);
  assert.throws(() => db.setConflictResolver('plain', () => 'keep_local'), /conflict "resolver"/);
  assert.equal(db.clearConflictResolver('res'), false);
  db.setConflictResolver('res', () => 'take_remote');
  db.setConflictResolver('res', () => 'keep_local', { timeoutMs: 50 });
  assert.equal(db.clearConflictResolver('res'), true);
  assert.equal(db.clearConflictResolver('res'), false);
  db.setConflictResolver('res', () => 'keep_local');
  db.close();
  assert.throws(() => db.setConflictResolver('res', () => 'keep_local'), ClosedError);
});

test('closing while a library thread waits for the event loop does not wait out the resolver timeout', async () => {
  const p = await pair();
  await writeBoth(p, 'res', [1]);
  // An hour: if close waited for the answer, this test would time out.
  p.a.setConflictResolver('res', () => 'keep_local', { timeoutMs: 600000 });
  p.b.setConflictResolver('res', () => 'keep_local', { timeoutMs: 600000 });
  p.heal();
  // Keep the event loop busy until the link is up and a conflict has
  // arrived, so a library thread is waiting for an answer; then close.
  const end = Date.now() + 60000;
  while (Date.now() < end && !p.b.peerStatus('a').connected);
  const settle = Date.now() + 1000;
  while (Date.now() < settle);
  p.close();
  await waitUntil('the abandoned wait logged', () => saying('the database closed before the resolver answered').length);
});

test('a registered resolver does not keep the process alive', async () => {
  const script = `const t = require(${JSON.stringify(path.join(__dirname, '..'))});
const db = t.open(${JSON.stringify(path.join(tmpdir(), 'db'))}, { nodeName: 'a' });
db.createTable('res', { conflict: 'resolver' });
db.setConflictResolver('res', () => 'keep_local');
console.log('done');`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const code = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('child did not exit by itself within 30 s')), 30000);
    child.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  assert.equal(code, 0);
  assert.match(out, /done/);
});
