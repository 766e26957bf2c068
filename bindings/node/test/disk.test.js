'use strict';
// A full disk through the Node write path, and table disk budgets.
//
// The full-disk test mounts a small tmpfs (root, as in CI) and fails, not
// skips, where that is not permitted: the database fills it, the failing
// write throws StorageError (code 'STORAGE') saying the disk is full and
// what to do, every acknowledged write stays readable, writes resume once
// the filler is deleted (without a reopen), and a reopen keeps everything.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const tidelog = require('..');
const { tmpdir } = require('./helpers');

function mountTmpfs() {
  // Not helpers' tmpdir: its removal at exit would run before the unmount.
  const d = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'tidelog-disk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', d], { stdio: 'pipe' });
  } catch (e) {
    throw new Error(
      `this test needs to mount a 24 MiB tmpfs (run it as root, as CI does): mount said ${String(e.stderr || e.message).trim()}`,
    );
  }
  process.once('exit', () => {
    try {
      execFileSync('umount', ['-l', d]);
      fs.rmSync(d, { recursive: true, force: true });
    } catch {
      // already gone
    }
  });
  return d;
}

/** Takes the free space with a file, then gives `leave` bytes back. */
function fill(file, leave) {
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(64 << 10, 7);
  let written = 0;
  try {
    for (;;) {
      fs.writeSync(fd, chunk);
      written += chunk.length;
    }
  } catch {
    // ENOSPC: full
  }
  fs.ftruncateSync(fd, Math.max(0, written - leave));
  fs.closeSync(fd);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a full disk is a typed error, nothing acknowledged is lost, writes resume', async () => {
  const mnt = mountTmpfs();
  const dir = path.join(mnt, 'db');
  const filler = path.join(mnt, 'filler');
  const opts = { nodeName: 'full', durability: 'sync', memoryBudget: '8MiB' };
  const acked = [];
  const refused = [];
  const unknown = [];
  let db = tidelog.open(dir, opts);
  db.createTable('t', { indexes: ['n'] });
  fill(filler, 3 << 20);
  const pad = 'x'.repeat(4000);
  let first;
  let key = 0;
  while (refused.length + unknown.length < 5) {
    key++;
    assert.ok(key < 100_000, 'the disk never filled');
    try {
      db.insert('t', { id: key, n: key, pad });
      assert.equal(refused.length + unknown.length, 0, 'a write succeeded while the disk was full');
      acked.push(key);
    } catch (e) {
      assert.ok(e instanceof tidelog.StorageError, `${e}`);
      assert.equal(e.code, 'STORAGE');
      if (e.message.includes('may or may not be committed')) {
        unknown.push(key);
      } else {
        assert.match(e.message, /no space left/);
        assert.match(e.message, /resume/);
        first = first || e;
        refused.push(key);
      }
    }
  }
  assert.ok(first, 'no disk-full refusal');
  assert.ok(acked.length > 0, 'no write fitted');
  for (const k of acked) assert.ok(db.get('t', k), `acknowledged ${k} readable while full`);

  fs.unlinkSync(filler);
  const resumed = ++key;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      db.insert('t', { id: resumed, n: resumed });
      break;
    } catch (e) {
      assert.ok(Date.now() < deadline, `writes did not resume after space was freed: ${e.message}`);
      await sleep(50);
    }
  }
  acked.push(resumed);
  db.close();

  db = tidelog.open(dir, opts);
  const missing = acked.filter((k) => !db.get('t', k));
  assert.deepEqual(missing, [], 'acknowledged writes lost');
  for (const k of refused) assert.equal(db.get('t', k), null, `refused ${k} present`);
  const unknownPresent = unknown.filter((k) => db.get('t', k)).length;
  assert.equal(db.count('t'), acked.length + unknownPresent);
  assert.equal(db.tableStats('t').records, db.count('t'));
  db.close();
});

// 28 bytes of JSON and a 13-byte stored key: 41 counted bytes.
const rec = (i) => ({ id: i, v: 'x'.repeat(10) });
const REC = 41;

test('table budgets: refuse, drop_oldest with exact counts, hostile values', () => {
  const db = tidelog.open(tmpdir(), { nodeName: 'n1' });
  db.createTable('sensor_data', { diskBudgetBytes: 2 * REC });
  db.createTable('alerts');
  db.insert('sensor_data', rec(1000));
  db.insert('sensor_data', rec(1001));
  assert.throws(() => db.insert('sensor_data', rec(1002)), (e) => {
    assert.ok(e instanceof tidelog.StorageError);
    assert.equal(e.code, 'STORAGE');
    assert.match(e.message, /sensor_data/);
    assert.match(e.message, /disk_budget_bytes/);
    return true;
  });
  db.insert('alerts', rec(1000));
  assert.deepEqual(db.describeTable('sensor_data').diskBudgetBytes, 2 * REC);
  assert.equal(db.describeTable('sensor_data').onFull, 'refuse');

  db.setTableBudget('sensor_data', REC, 'drop_oldest');
  for (let i = 1002; i < 1005; i++) db.insert('sensor_data', rec(i));
  assert.deepEqual(db.tableStats('sensor_data'), {
    records: 1,
    bytes: REC,
    dropped: 4,
    diskBudgetBytes: REC,
  });
  db.setTableBudget('sensor_data', null);
  assert.equal(db.tableStats('sensor_data').diskBudgetBytes, null);

  for (const [bytes, onFull] of [[0, undefined], [-1, undefined], [1.5, undefined], [10, 'explode']]) {
    assert.throws(() => db.createTable('z', { diskBudgetBytes: bytes, onFull }), { code: 'INVALID_INPUT' });
    assert.throws(() => db.setTableBudget('sensor_data', bytes, onFull), { code: 'INVALID_INPUT' });
  }
  db.close();
});
