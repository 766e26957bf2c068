'use strict';
// The local API: every call, and every error it can throw, from Node.
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const tidelog = require('..');
const { tmpdir } = require('./helpers');

const {
  open,
  Database,
  TidelogError,
  InvalidInputError,
  NotFoundError,
  AlreadyExistsError,
  ClosedError,
  LockedError,
  UnsupportedError,
} = tidelog;

function throwsCode(fn, Class, code, re) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Class, `expected ${Class.name}, got ${e && e.name}: ${e && e.message}`);
    assert.ok(e instanceof TidelogError);
    assert.ok(e instanceof Error);
    assert.equal(e.code, code);
    assert.equal(e.name, Class.name);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe('open and close', () => {
  test('open, metadata, reopen keeps identity, second open is LOCKED', () => {
    const dir = tmpdir();
    const db = open(dir, { nodeName: 'edge-1' });
    assert.equal(db.nodeName, 'edge-1');
    assert.equal(typeof db.nodeId, 'bigint');
    assert.ok(db.nodeId > 0n && db.nodeId < 1n << 64n);
    assert.equal(db.path, dir);
    assert.equal(db.engine, 'fjall');
    assert.equal(db.closed, false);
    const id = db.nodeId;
    throwsCode(() => open(dir, { nodeName: 'edge-1' }), LockedError, 'LOCKED', /in use/);
    db.close();
    assert.equal(db.closed, true);
    db.close(); // twice is fine
    const again = Database.open(dir, { nodeName: 'edge-1' });
    assert.equal(again.nodeId, id);
    throwsCode(() => again.createTable(''), InvalidInputError, 'INVALID_INPUT');
    again.close();
    // A different node name or engine for the same directory is refused.
    throwsCode(() => open(dir, { nodeName: 'other' }), InvalidInputError, 'INVALID_INPUT', /node/);
    throwsCode(() => open(dir, { nodeName: 'edge-1', engine: 'sled' }), InvalidInputError, 'INVALID_INPUT', /engine/);
  });

  test('constructor, sled engine and every open option', () => {
    const db = new Database(tmpdir(), {
      nodeName: 'n1',
      engine: 'sled',
      durability: 'sync',
      memoryBudget: 8 << 20,
      maxRecordBytes: 1000,
      maxClockSkewMs: 1000,
      expiryIntervalMs: 100,
    });
    assert.equal(db.engine, 'sled');
    db.createTable('t');
    db.upsert('t', { id: 1 });
    assert.equal(db.count('t'), 1);
    db.close();
  });

  test('bad open arguments are INVALID_INPUT', () => {
    const dir = tmpdir();
    throwsCode(() => open(dir), InvalidInputError, 'INVALID_INPUT', /nodeName/);
    throwsCode(() => open(dir, {}), InvalidInputError, 'INVALID_INPUT', /nodeName/);
    throwsCode(() => open(dir, 'x'), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open('', { nodeName: 'a' }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open(5, { nodeName: 'a' }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open(dir, { nodeName: 'bad name!' }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open(dir, { nodeName: 'a', engine: 'leveldb' }), InvalidInputError, 'INVALID_INPUT', /engine/);
    throwsCode(() => open(dir, { nodeName: 'a', durability: 'never' }), InvalidInputError, 'INVALID_INPUT', /durability/);
    throwsCode(() => open(dir, { nodeName: 'a', memoryBudget: 1 }), InvalidInputError, 'INVALID_INPUT', /memoryBudget/);
    // A flush interval means nothing when every commit is flushed.
    throwsCode(
      () => open(dir, { nodeName: 'a', durability: 'sync', flushIntervalMs: 10 }),
      InvalidInputError,
      'INVALID_INPUT',
      /flushIntervalMs.*only applies to durability "grouped"/,
    );
    throwsCode(() => open(dir, { nodeName: 'a', maxRecordBytes: -1 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open(dir, { nodeName: 'a', maxClockSkewMs: 1.5 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open(dir, { nodeName: 'a', expiryIntervalMs: 0 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => open(dir, { nodeName: 'a', flushIntervalMs: 'x' }), InvalidInputError, 'INVALID_INPUT');
  });
});

describe('tables, writes and reads', () => {
  let db;
  before(() => {
    db = open(path.join(tmpdir(), 'db'), { nodeName: 'edge-1', maxRecordBytes: 4096 });
  });
  after(() => db.close());

  test('createTable / ensureTable / listTables / describeTable / dropTable', () => {
    assert.deepEqual(db.createTable('sensor_data', { indexes: ['sensor', 'tags'], expiration: 3600 }), {
      name: 'sensor_data',
      primaryKey: 'id',
      indexes: ['sensor', 'tags'],
      expiration: 3600,
      conflict: 'lww',
      diskBudgetBytes: null,
      onFull: 'refuse',
    });
    assert.deepEqual(db.createTable('thresholds', { primaryKey: 'sensor' }), {
      name: 'thresholds',
      primaryKey: 'sensor',
      indexes: [],
      expiration: null,
      conflict: 'lww',
      diskBudgetBytes: null,
      onFull: 'refuse',
    });
    assert.equal(db.ensureTable('thresholds'), false);
    assert.equal(db.ensureTable('gone'), true);
    assert.deepEqual(
      db.listTables().map((t) => t.name),
      ['gone', 'sensor_data', 'thresholds'],
    );
    assert.equal(db.describeTable('thresholds').primaryKey, 'sensor');
    db.upsert('gone', { id: 1 });
    db.dropTable('gone');
    throwsCode(() => db.describeTable('gone'), NotFoundError, 'NOT_FOUND', /does not exist/);
    throwsCode(() => db.dropTable('gone'), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.createTable('thresholds'), AlreadyExistsError, 'ALREADY_EXISTS');
    throwsCode(() => db.createTable('__x'), InvalidInputError, 'INVALID_INPUT', /table name/);
    throwsCode(() => db.createTable('x', { indexes: ['id'] }), InvalidInputError, 'INVALID_INPUT', /primary key/);
    throwsCode(() => db.createTable('x', { indexes: ['a', 'a'] }), InvalidInputError, 'INVALID_INPUT', /twice/);
    throwsCode(() => db.createTable('x', { expiration: 0 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.createTable('x', { expiration: -5 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.createTable('x', { indexes: 'sensor' }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.createTable('x', []), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.createTable(42), InvalidInputError, 'INVALID_INPUT');
    assert.equal(db.listTables().length, 2, 'failed creates changed nothing');
  });

  test('insert / upsert / update / delete / get / getMany with both key types', () => {
    const c = db.insert('sensor_data', { id: 1, sensor: 's-7', value: 21.5, tags: ['a', 'b'] });
    assert.equal(typeof c.seq, 'number');
    assert.equal(typeof c.stamp.time, 'bigint');
    assert.equal(c.stamp.node, db.nodeId);
    assert.equal(c.origin, db.nodeId);
    assert.equal(c.stampMs, Number(c.stamp.time >> 16n));
    const r = db.get('sensor_data', 1);
    assert.equal(r.sensor, 's-7');
    assert.deepEqual(r.tags, ['a', 'b']);
    assert.equal(typeof r.__createdtime__, 'number');
    assert.ok(Math.abs(r.__updatedtime__ - Date.now()) < 60_000);

    const c2 = db.upsert('sensor_data', { ...r, value: 22 }); // a record read back writes again
    assert.ok(c2.seq > c.seq);
    assert.ok(c2.stamp.time > c.stamp.time);
    const r2 = db.get('sensor_data', 1);
    assert.equal(r2.value, 22);
    assert.equal(r2.__createdtime__, r.__createdtime__);

    db.update('sensor_data', { id: 1, note: 'checked' });
    assert.deepEqual(
      (({ id, sensor, value, note }) => ({ id, sensor, value, note }))(db.get('sensor_data', 1)),
      { id: 1, sensor: 's-7', value: 22, note: 'checked' },
    );

    // Records are stored as JSON.stringify wrote them: in the object's
    // own attribute order (the short path, the general one, a transaction).
    const order = (t, k) => Object.keys(db.get(t, k)).filter((a) => !a.startsWith('__'));
    db.upsert('sensor_data', { value: 1, id: 70, sensor: 's-1' });
    assert.deepEqual(order('sensor_data', 70), ['value', 'id', 'sensor']);
    db.insert('sensor_data', { sensor: 's-1', id: 71, value: 1 });
    assert.deepEqual(order('sensor_data', 71), ['sensor', 'id', 'value']);
    db.transaction((tx) => tx.upsert('sensor_data', { z: 0, id: 72 }));
    assert.deepEqual(order('sensor_data', 72), ['z', 'id']);
    for (const k of [70, 71, 72]) db.delete('sensor_data', k);

    db.upsert('thresholds', { sensor: 's-7', max: 90 });
    assert.equal(db.get('thresholds', 's-7').max, 90);
    assert.equal(db.get('thresholds', 'nope'), null);
    assert.equal(db.get('sensor_data', 999), null);
    db.upsert('sensor_data', { id: 2n ** 60n > 0n ? 9007199254740991 : 0, sensor: 'max' });
    assert.equal(db.get('sensor_data', 9007199254740991n).sensor, 'max', 'bigint keys');
    assert.equal(db.get('sensor_data', 9007199254740991).sensor, 'max');

    const many = db.getMany('sensor_data', [1, 404, 9007199254740991n]);
    assert.equal(many.length, 3);
    assert.equal(many[0].id, 1);
    assert.equal(many[1], null);
    assert.equal(many[2].sensor, 'max');

    assert.equal(db.delete('sensor_data', 9007199254740991), true);
    assert.equal(db.delete('sensor_data', 9007199254740991), false);
    assert.equal(db.get('sensor_data', 9007199254740991), null);
    assert.equal(db.delete('thresholds', 's-7'), true);
  });

  test('write errors are typed and change nothing', () => {
    const before = db.logBounds().last;
    throwsCode(() => db.insert('sensor_data', { id: 1 }), AlreadyExistsError, 'ALREADY_EXISTS', /upsert/);
    throwsCode(() => db.update('sensor_data', { id: 12345, x: 1 }), NotFoundError, 'NOT_FOUND', /no record/);
    throwsCode(() => db.upsert('nope', { id: 1 }), NotFoundError, 'NOT_FOUND', /table `nope`/);
    throwsCode(() => db.upsert('sensor_data', { sensor: 'x' }), InvalidInputError, 'INVALID_INPUT', /missing its primary key/);
    throwsCode(() => db.upsert('sensor_data', { id: 1.5 }), InvalidInputError, 'INVALID_INPUT', /primary key/);
    throwsCode(() => db.upsert('sensor_data', { id: true }), InvalidInputError, 'INVALID_INPUT', /primary key/);
    throwsCode(() => db.upsert('sensor_data', { id: null }), InvalidInputError, 'INVALID_INPUT', /primary key/);
    throwsCode(() => db.upsert('sensor_data', { id: [1] }), InvalidInputError, 'INVALID_INPUT', /primary key/);
    throwsCode(() => db.upsert('sensor_data', [1, 2]), InvalidInputError, 'INVALID_INPUT', /JSON object/);
    throwsCode(() => db.upsert('sensor_data', 'text'), InvalidInputError, 'INVALID_INPUT', /JSON object/);
    throwsCode(() => db.upsert('sensor_data', 5), InvalidInputError, 'INVALID_INPUT', /JSON object/);
    throwsCode(() => db.upsert('sensor_data', null), InvalidInputError, 'INVALID_INPUT', /JSON object/);
    throwsCode(() => db.upsert('sensor_data'), InvalidInputError, 'INVALID_INPUT', /JSON object/);
    const cyclic = { id: 77 };
    cyclic.self = cyclic;
    throwsCode(() => db.upsert('sensor_data', cyclic), InvalidInputError, 'INVALID_INPUT', /serializable/);
    throwsCode(() => db.upsert('sensor_data', { id: 78, big: 1n }), InvalidInputError, 'INVALID_INPUT', /serializable/);
    // Invalid UTF-8: a lone surrogate cannot be encoded as UTF-8.
    throwsCode(() => db.upsert('sensor_data', { id: 79, s: 'a\ud800b' }), InvalidInputError, 'INVALID_INPUT', /surrogate|JSON/);
    throwsCode(() => db.get('sensor_data', 'a\udc00'), InvalidInputError, 'INVALID_INPUT', /surrogate/);
    // Oversized record (maxRecordBytes: 4096).
    throwsCode(() => db.upsert('sensor_data', { id: 80, blob: 'x'.repeat(5000) }), InvalidInputError, 'INVALID_INPUT', /over the limit/);
    throwsCode(() => db.upsert(7, { id: 1 }), InvalidInputError, 'INVALID_INPUT');
    // Bad keys.
    throwsCode(() => db.get('sensor_data', 1.5), InvalidInputError, 'INVALID_INPUT', /safe integer/);
    throwsCode(() => db.get('sensor_data', 2 ** 60), InvalidInputError, 'INVALID_INPUT', /safe integer/);
    throwsCode(() => db.get('sensor_data', 2n ** 64n), InvalidInputError, 'INVALID_INPUT', /64-bit/);
    throwsCode(() => db.get('sensor_data', null), InvalidInputError, 'INVALID_INPUT', /strings or integers/);
    throwsCode(() => db.get('sensor_data', { id: 1 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.delete('sensor_data', undefined), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.getMany('sensor_data', 'x'), InvalidInputError, 'INVALID_INPUT', /array/);
    throwsCode(() => db.getMany('sensor_data', [1, true]), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.get('nope', 1), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.delete('nope', 1), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.getMany('nope', [1]), NotFoundError, 'NOT_FOUND');
    assert.equal(db.logBounds().last, before, 'no failed write reached the log');
    assert.equal(db.get('sensor_data', 77), null);
  });

  test('scan by key range, find by index (equality and range), count', () => {
    db.createTable('r', { indexes: ['v', 'tags'] });
    for (let i = 1; i <= 10; i++) db.upsert('r', { id: i, v: i % 3, tags: i % 2 ? ['odd'] : ['even'] });
    db.upsert('r', { id: 'k-a', v: 'text' });
    const ids = (rs) => rs.map((r) => r.id);
    assert.deepEqual(ids(db.scan('r')), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 'k-a'], 'integers sort before strings');
    assert.deepEqual(ids(db.scan('r', { gte: 3, lt: 6 })), [3, 4, 5]);
    assert.deepEqual(ids(db.scan('r', { gt: 3, lte: 6 })), [4, 5, 6]);
    assert.deepEqual(ids(db.scan('r', { reverse: true, limit: 2 })), ['k-a', 10]);
    assert.deepEqual(ids(db.scan('r', { gte: 'k' })), ['k-a']);
    assert.deepEqual(ids(db.scan('r', { limit: 0 })), []);
    assert.deepEqual(ids(db.findEq('r', 'v', 0)), [3, 6, 9]);
    assert.deepEqual(ids(db.findEq('r', 'tags', 'even')), [2, 4, 6, 8, 10], 'arrays are indexed per element');
    assert.deepEqual(ids(db.find('r', 'v', { gte: 1, lte: 1 })), [1, 4, 7, 10]);
    assert.deepEqual(ids(db.find('r', 'v', { gt: 1 })).sort(), [2, 5, 8, 'k-a'].sort());
    assert.deepEqual(ids(db.find('r', 'v', { lt: 1, limit: 2 })), [3, 6]);
    assert.deepEqual(ids(db.find('r', 'id', { gte: 9, lte: 10 })), [9, 10], 'the primary key is always indexed');
    assert.deepEqual(ids(db.find('r', 'v')), ids(db.find('r', 'v', {})));
    assert.equal(db.count('r'), 11);
    db.delete('r', 'k-a');
    assert.equal(db.count('r'), 10);

    throwsCode(() => db.scan('r', { gt: 1, gte: 1 }), InvalidInputError, 'INVALID_INPUT', /not both/);
    throwsCode(() => db.scan('r', { lt: 1, lte: 1 }), InvalidInputError, 'INVALID_INPUT', /not both/);
    throwsCode(() => db.scan('r', { gte: 1.5 }), InvalidInputError, 'INVALID_INPUT', /strings or integers/);
    throwsCode(() => db.scan('r', { limit: -1 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.scan('r', 'all'), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.find('r', 'unindexed', {}), InvalidInputError, 'INVALID_INPUT', /not indexed/);
    throwsCode(() => db.find('r', 'v', { gte: [1] }), InvalidInputError, 'INVALID_INPUT', /scalar/);
    throwsCode(() => db.find('r', 'v', { reverse: true }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.findEq('r', 'v'), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.findEq('r', 'v', { a: 1 }), InvalidInputError, 'INVALID_INPUT', /scalar/);
    throwsCode(() => db.scan('nope'), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.find('nope', 'v', {}), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.findEq('nope', 'v', 1), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.count('nope'), NotFoundError, 'NOT_FOUND');
  });

  test('transactions: commit on return, roll back on throw, several tables, async callbacks', async () => {
    db.createTable('a');
    db.createTable('b');
    const res = db.transaction((tx) => {
      assert.equal(tx.length, 0);
      tx.upsert('a', { id: 1, n: 1 }).insert('b', { id: 'x', ref: 1 });
      tx.upsert('a', { id: 2 });
      tx.update('a', { id: 2, n: 2 });
      tx.delete('a', 2);
      assert.equal(tx.length, 5);
      assert.equal(tx.finished, false);
      return 'done';
    });
    assert.equal(res.result, 'done');
    assert.equal(typeof res.seq, 'number');
    const entry = db.readLog(res.seq, 1)[0];
    assert.equal(entry.seq, res.seq);
    assert.deepEqual(
      entry.writes.map((w) => [w.table, w.key, w.op]),
      [['a', 1, 'put'], ['b', 'x', 'put'], ['a', 2, 'put'], ['a', 2, 'put'], ['a', 2, 'delete']],
      'one log entry, one stamp for every write',
    );
    assert.equal(db.get('b', 'x').ref, 1);
    assert.equal(db.get('a', 2), null);

    const last = db.logBounds().last;
    let kept;
    assert.throws(
      () =>
        db.transaction((tx) => {
          kept = tx;
          tx.upsert('a', { id: 3 });
          throw new Error('changed my mind');
        }),
      /changed my mind/,
    );
    assert.equal(db.get('a', 3), null, 'rolled back');
    assert.equal(kept.finished, true);
    throwsCode(() => kept.upsert('a', { id: 4 }), InvalidInputError, 'INVALID_INPUT', /already committed or rolled back/);

    // A failing write inside a transaction: the error surfaces at commit
    // (duplicate key) or at staging (unknown table); nothing is written.
    throwsCode(
      () => db.transaction((tx) => void tx.upsert('a', { id: 5 }).insert('b', { id: 'x' })),
      AlreadyExistsError,
      'ALREADY_EXISTS',
    );
    assert.equal(db.get('a', 5), null);
    throwsCode(() => db.transaction((tx) => void tx.upsert('zz', { id: 1 })), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.transaction((tx) => void tx.upsert('a', 'no')), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.transaction((tx) => void tx.update('a', { id: 999 })), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.transaction((tx) => void tx.delete('a', 0.5)), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.transaction('nope'), InvalidInputError, 'INVALID_INPUT', /function/);
    assert.equal(db.logBounds().last, last);

    // Empty transaction: seq 0, nothing logged.
    assert.equal(db.transaction(() => {}).seq, 0);

    // Async callback: commits when the promise resolves, discards when it rejects.
    const ok = await db.transaction(async (tx) => {
      tx.upsert('a', { id: 6 });
      await new Promise((r) => setTimeout(r, 5));
      tx.upsert('a', { id: 7 });
      return 42;
    });
    assert.equal(ok.result, 42);
    assert.ok(db.get('a', 6) && db.get('a', 7));
    await assert.rejects(
      db.transaction(async (tx) => {
        tx.upsert('a', { id: 8 });
        throw new Error('async no');
      }),
      /async no/,
    );
    assert.equal(db.get('a', 8), null);

    // transactionAsync and the *Async writes commit on the worker pool.
    const ta = await db.transactionAsync((tx) => {
      tx.upsert('a', { id: 9 });
      return 'w';
    });
    assert.equal(ta.result, 'w');
    assert.ok(ta.seq > 0);
    const ia = await db.insertAsync('a', { id: 10 });
    assert.equal(typeof ia.stamp.time, 'bigint');
    assert.deepEqual(Object.keys(ia), ['seq', 'origin', 'stamp', 'stampMs']);
    await db.upsertAsync('a', { id: 10, v: 1 });
    await db.updateAsync('a', { id: 10, w: 2 });
    assert.equal(db.get('a', 10).w, 2);
    await db.deleteAsync('a', 10);
    assert.equal(db.get('a', 10), null);
    await assert.rejects(db.insertAsync('a', { id: 9 }), AlreadyExistsError);
    await assert.rejects(db.updateAsync('a', { id: 10 }), NotFoundError);
    await assert.rejects(db.upsertAsync('zz', { id: 1 }), NotFoundError);
    await assert.rejects(db.upsertAsync('a', 5), InvalidInputError);
    await assert.rejects(db.transactionAsync(async () => {}), InvalidInputError);
    await assert.rejects(db.transactionAsync(() => { throw new Error('sync no'); }), /sync no/);
    await assert.rejects(db.transactionAsync(null), InvalidInputError);
  });

  test('transaction log: readLog, readLogSince, logBounds', () => {
    const t0 = Date.now();
    const b0 = db.logBounds();
    assert.ok(b0.first >= 1 && b0.last >= b0.first);
    const c = db.upsert('a', { id: 'log', x: 1 });
    db.delete('a', 'log');
    const b1 = db.logBounds();
    assert.equal(b1.last, c.seq + 1);
    const entries = db.readLog(c.seq);
    assert.equal(entries.length, 2);
    const [put, del] = entries;
    assert.equal(put.seq, c.seq);
    assert.equal(put.stamp.time, c.stamp.time);
    assert.equal(put.stampMs, c.stampMs);
    assert.equal(put.local, true);
    assert.equal(put.stamp.node, db.nodeId);
    assert.equal(put.origin, db.nodeId);
    assert.ok(put.loggedMs >= t0 - 1000);
    assert.deepEqual(put.writes, [
      {
        table: 'a',
        key: 'log',
        op: 'put',
        record: { __createdtime__: put.writes[0].record.__createdtime__, __updatedtime__: put.writes[0].record.__updatedtime__, id: 'log', x: 1 },
      },
    ]);
    assert.deepEqual(del.writes, [{ table: 'a', key: 'log', op: 'delete', record: null }]);
    assert.equal(db.readLog(c.seq, 1).length, 1);
    assert.deepEqual(db.readLog(b1.last + 1), []);
    const since = db.readLogSince(t0 - 5);
    assert.ok(since.some((e) => e.seq === c.seq));
    assert.deepEqual(db.readLogSince(Date.now() + 60_000), []);
    assert.ok(db.readLog().length >= 1, 'defaults: from the start, 1000 entries');
    throwsCode(() => db.readLog(-1), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.readLog(1, 'x'), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.readLogSince(), InvalidInputError, 'INVALID_INPUT');
  });

  test('flush and diskBytes', () => {
    db.flush();
    assert.ok(db.diskBytes() > 0);
  });

  test('replication calls before startReplication are UNSUPPORTED', async () => {
    throwsCode(() => db.listen('127.0.0.1:0'), UnsupportedError, 'UNSUPPORTED', /start_replication|not started/);
    throwsCode(() => db.addPeer({ name: 'cloud' }), UnsupportedError, 'UNSUPPORTED');
    throwsCode(() => db.updatePeer({ name: 'cloud' }), UnsupportedError, 'UNSUPPORTED');
    throwsCode(() => db.removePeer('cloud'), UnsupportedError, 'UNSUPPORTED');
    throwsCode(() => db.peerStatus('cloud'), UnsupportedError, 'UNSUPPORTED');
    throwsCode(() => db.replicationStatus(), UnsupportedError, 'UNSUPPORTED');
    await assert.rejects(db.waitForAck('cloud', 1, 10), UnsupportedError);
  });
});

test('every call on a closed database throws ClosedError', async () => {
  const db = open(tmpdir(), { nodeName: 'closing' });
  db.createTable('t');
  const tx = db.transaction((t) => t); // finished transaction object
  void tx;
  db.close();
  const calls = {
    flush: () => db.flush(),
    diskBytes: () => db.diskBytes(),
    createTable: () => db.createTable('u'),
    ensureTable: () => db.ensureTable('u'),
    dropTable: () => db.dropTable('t'),
    listTables: () => db.listTables(),
    describeTable: () => db.describeTable('t'),
    insert: () => db.insert('t', { id: 1 }),
    upsert: () => db.upsert('t', { id: 1 }),
    update: () => db.update('t', { id: 1 }),
    delete: () => db.delete('t', 1),
    transaction: () => db.transaction((t) => void t.upsert('t', { id: 1 })),
    get: () => db.get('t', 1),
    getMany: () => db.getMany('t', [1]),
    scan: () => db.scan('t'),
    find: () => db.find('t', 'id', {}),
    findEq: () => db.findEq('t', 'id', 1),
    count: () => db.count('t'),
    logBounds: () => db.logBounds(),
    readLog: () => db.readLog(1),
    readLogSince: () => db.readLogSince(0),
    onChange: () => db.onChange('t', () => {}),
    startReplication: () => db.startReplication({ insecure: true }),
    listen: () => db.listen(),
    addPeer: () => db.addPeer({ name: 'p' }),
    updatePeer: () => db.updatePeer({ name: 'p' }),
    removePeer: () => db.removePeer('p'),
    peerStatus: () => db.peerStatus('p'),
    replicationStatus: () => db.replicationStatus(),
  };
  for (const [name, fn] of Object.entries(calls)) {
    assert.throws(fn, (e) => e instanceof ClosedError && e.code === 'CLOSED', `${name} after close`);
  }
  await assert.rejects(db.upsertAsync('t', { id: 1 }), ClosedError);
  await assert.rejects(db.transactionAsync((t) => void t.upsert('t', { id: 1 })), ClosedError);
  await assert.rejects(db.waitForAck('p', 1, 10), ClosedError);
  assert.equal(db.removeListener(1), false);
  assert.equal(db.closed, true);
  assert.equal(db.nodeName, 'closing');
});

test('module surface: CommonJS and ES module give the same objects', async () => {
  const esm = await import('tidelog');
  assert.equal(esm.open, tidelog.open);
  assert.equal(esm.Database, tidelog.Database);
  assert.equal(esm.default, tidelog);
  for (const name of Object.keys(tidelog)) assert.equal(esm[name], tidelog[name], name);
  assert.deepEqual(Object.keys(tidelog.ErrorCode).sort(), [
    'ALREADY_EXISTS', 'CLOCK_SKEW', 'CLOSED', 'CORRUPT', 'INVALID_INPUT', 'LOCKED',
    'NOT_FOUND', 'PEER', 'STORAGE', 'TIMEOUT', 'TLS', 'UNSUPPORTED',
  ]);
  for (const code of Object.keys(tidelog.ErrorCode)) {
    const name = Object.keys(tidelog).find((k) => {
      const C = tidelog[k];
      return typeof C === 'function' && C.prototype instanceof TidelogError && new C('m').code === code;
    });
    assert.ok(name, `an error class for ${code}`);
    const e = new tidelog[name]('m');
    assert.equal(e.name, name);
    assert.ok(e instanceof Error);
  }
  const e = new TidelogError('m', 'X');
  assert.equal(e.code, 'X');
});

// `get` hands most records to index.js laid out (numbers in a shared
// Float64Array, strings in one string, a generated function per shape;
// src/fast.rs) and the rest as JSON text. Whichever way, the object must be
// the one JSON.parse makes of the record's text, which getMany returns.
describe('get builds the same object as JSON.parse of the record', () => {
  let db;
  before(() => {
    db = open(path.join(tmpdir(), 'db'), { nodeName: 'edge-1' });
    db.createTable('t');
    db.createTable('s', { primaryKey: 'k' });
  });
  after(() => db.close());

  function same(table, key) {
    const got = db.get(table, key);
    const want = db.getMany(table, [key])[0];
    assert.deepStrictEqual(got, want);
    assert.deepEqual(Object.keys(got), Object.keys(want));
    assert.equal(Object.getPrototypeOf(got), Object.prototype);
    assert.equal(JSON.stringify(got), JSON.stringify(want));
    return got;
  }

  const records = [
    {},
    { a: 1 },
    { s: 'quote " backslash \\ newline \n tab \t control \u0001 nul \u0000' },
    { u: 'héllo wörld 😀 日本', after: 'x', n: 3 },
    { nested: { a: [1, 2, { b: 'ü' }], c: null }, arr: [], obj: {}, x: 'y' },
    { t: true, f: false, z: null },
    { ['__proto__']: { polluted: true }, normal: 1 },
    { big: 12345678901234567890, small: 1e-300, e: 1.5e300, i: -42, f: 0.1, half: 0.5, neg: -0.25, max: Number.MAX_SAFE_INTEGER },
    { 10: 'a', 2: 'b', b: 'c', a: 'd' },
    { 'wéird "key"': 1, '': 2, 'a\\b': 3, '\u2028': 4, '😀': '😀' },
    { long: 'x'.repeat(3000), after: 'é'.repeat(100) },
    // More values than the shared slots hold: the JSON text path.
    Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`k${i}`, i % 2 ? i : `v${i}`])),
  ];

  test('tricky records, both key types, and every record shape twice', () => {
    records.forEach((r, i) => {
      db.upsert('t', { ...r, id: i });
      db.upsert('s', { ...r, k: `key-${i}` });
    });
    for (let round = 0; round < 2; round++) {
      records.forEach((r, i) => {
        same('t', i);
        same('s', `key-${i}`);
      });
    }
    const proto = db.get('t', 6);
    assert.ok(Object.prototype.hasOwnProperty.call(proto, '__proto__'));
    assert.deepEqual(proto.__proto__, { polluted: true });
    assert.equal({}.polluted, undefined);
    assert.equal(db.get('t', 3).u, 'héllo wörld 😀 日本');
    assert.equal(db.get('t', 999), null);
    assert.equal(db.get('s', 'nope'), null);
    assert.deepStrictEqual(db.get('t', 1n), same('t', 1));
  });

  test('random records', () => {
    let seed = 7;
    const rnd = (n) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const bits = ['a', 'é', '😀', '"', '\\', '\n', ' ', '\u00ff', '\u0100', 'zz'];
    const str = () => Array.from({ length: rnd(6) }, () => bits[rnd(bits.length)]).join('');
    const value = (depth) => {
      switch (rnd(depth > 1 ? 5 : 7)) {
        case 0: return rnd(2000000) - 1000000;
        case 1: return (rnd(2000000) - 1000000) / (1 + rnd(1000));
        case 2: return str();
        case 3: return rnd(2) === 0;
        case 4: return null;
        case 5: return Array.from({ length: rnd(3) }, () => value(depth + 1));
        default: return Object.fromEntries(Array.from({ length: rnd(3) }, () => [str(), value(depth + 1)]));
      }
    };
    for (let i = 0; i < 500; i++) {
      const r = Object.fromEntries(Array.from({ length: rnd(6) }, () => [str(), value(0)]));
      r.id = 1000 + i;
      db.upsert('t', r);
      same('t', 1000 + i);
    }
  });

  test('numbers of every length read back as JSON.parse reads them', () => {
    let seed = 11;
    const rnd = (n) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const digitsOf = (n) => Array.from({ length: n }, (_, k) => (k === 0 ? 1 + rnd(9) : rnd(10))).join('');
    const numbers = [0, -0, 1, -1, 0.5, 1e21, 1e-7, 123456789012345680000, 2 ** 53, -(2 ** 53) - 2, 0.1 + 0.2];
    for (let n = 1; n <= 20; n++) {
      for (let f = 0; f <= 18; f += 3) {
        const text = f ? `${digitsOf(n)}.${digitsOf(f)}` : digitsOf(n);
        numbers.push(Number(text), -Number(text), Number(`0.${'0'.repeat(rnd(4))}${digitsOf(n)}`));
      }
    }
    numbers.forEach((x, i) => {
      db.upsert('t', { id: 20000 + i, x, s: 'after', y: x / 3 });
      const got = same('t', 20000 + i);
      assert.ok(Object.is(got.x, JSON.parse(JSON.stringify(x))), `${x}`);
    });
  });

  test('more table names than get ids still work (the general path)', () => {
    for (let i = 0; i < 1100; i++) {
      throwsCode(() => db.get(`no_such_table_${i}`, 1), NotFoundError, 'NOT_FOUND');
    }
    db.createTable('named_late');
    const c = db.upsert('named_late', { id: 1, v: 'x' });
    assert.equal(typeof c.stamp.time, 'bigint');
    assert.equal(db.get('named_late', 1).v, 'x');
    assert.equal(db.get('named_late', 2), null);
    throwsCode(() => db.get('no_such_table_0', 1), NotFoundError, 'NOT_FOUND');
  });

  test('upsert returns the commit info; bad arguments are still typed errors', () => {
    const c = db.upsert('t', { id: 5000 });
    assert.equal(typeof c.seq, 'number');
    assert.equal(typeof c.stamp.time, 'bigint');
    assert.equal(c.origin, db.nodeId);
    assert.deepEqual(Object.keys(c), ['seq', 'origin', 'stamp', 'stampMs']);
    assert.equal(db.upsert('t', { id: 5000 }).seq, c.seq + 1);
    throwsCode(() => db.get('missing', 1), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.get('missing', 'k'), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.upsert('missing', { id: 1 }), NotFoundError, 'NOT_FOUND');
    throwsCode(() => db.get(42, 1), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.upsert(42, { id: 1 }), InvalidInputError, 'INVALID_INPUT');
    throwsCode(() => db.upsert('t', { id: 1.5 }), InvalidInputError, 'INVALID_INPUT', /primary key/);
  });
});

test('the benchmark hooks exist only in a build with the bench feature', () => {
  const dir = tmpdir();
  const db = open(path.join(dir, 'bench'), { nodeName: 'n1' });
  try {
    db.createTable('rust', { indexes: ['sensor'] });
    let built = true;
    try {
      db._rustUpserts('rust', 0, 20);
    } catch (e) {
      built = false;
      assert.ok(e instanceof UnsupportedError, `${e && e.name}: ${e && e.message}`);
      assert.match(e.message, /_rustUpserts is a benchmark hook.*npm run build:bench/);
    }
    if (built) {
      // A bench build (npm run build:bench): the hooks write and read.
      assert.equal(db.count('rust'), 20);
      assert.ok(db._rustGets('rust', 0, 20, true) >= 0);
    } else {
      // The tests' debug build and every release addon leave them out.
      assert.equal(db.count('rust'), 0);
      for (const hook of [() => db._rustGets('rust', 0, 1, false), () => db._getValue('rust', 1)]) {
        throwsCode(hook, UnsupportedError, 'UNSUPPORTED', /npm run build:bench/);
      }
    }
  } finally {
    db.close();
  }
});
