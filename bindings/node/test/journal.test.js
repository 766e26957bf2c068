'use strict';
// A damaged journal: opening it is a CorruptError unless recoverPrefix
// keeps its longest valid prefix, which droppedTransactions then counts.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const tidelog = require('..');
const { tmpdir } = require('./helpers');

const ROWS = 2000;

// The child writes ROWS one-row transactions, flushes, and is killed, so
// the rows live only in fjall's journal.
const CHILD = `
const tidelog = require(${JSON.stringify(path.resolve(__dirname, '..'))});
const db = tidelog.open(process.argv[1], { nodeName: 'jnl' });
db.createTable('t');
for (let i = 0; i < ${ROWS}; i++) db.insert('t', { id: i, v: 'y'.repeat(40) });
db.flush();
process.kill(process.pid, 'SIGKILL');
`;

function journal(dir) {
  const found = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.jnl')) found.push(p);
    }
  };
  walk(path.join(dir, 'data'));
  // fjall preallocates: the written part ends at the last nonzero byte.
  const used = (p) => {
    const b = fs.readFileSync(p);
    let i = b.length - 1;
    while (i >= 0 && b[i] === 0) i--;
    return i + 1;
  };
  return found.map((p) => [p, used(p)]).sort((a, b) => b[1] - a[1])[0];
}

test('a journal cut to a third is CORRUPT unless recoverPrefix, which counts the loss', () => {
  const dir = tmpdir();
  const child = spawnSync(process.execPath, ['-e', CHILD, dir], { stdio: 'inherit' });
  assert.equal(child.signal, 'SIGKILL', 'the child flushed and was killed');
  const [file, used] = journal(dir);
  fs.truncateSync(file, Math.floor(used / 3));

  for (let i = 0; i < 2; i++) {
    assert.throws(
      () => tidelog.open(dir, { nodeName: 'jnl' }),
      (e) => e instanceof tidelog.CorruptError && e.code === 'CORRUPT' && /recover_prefix/.test(e.message),
    );
  }
  const db = tidelog.open(dir, { nodeName: 'jnl', recoverPrefix: true });
  const rows = db.count('t');
  assert.ok(rows < ROWS, `kept ${rows}`);
  assert.equal(rows + db.droppedTransactions, ROWS);
  db.close();
  const again = tidelog.open(dir, { nodeName: 'jnl' });
  assert.equal(again.droppedTransactions, 0);
  assert.equal(again.count('t'), rows);
  again.close();
});
