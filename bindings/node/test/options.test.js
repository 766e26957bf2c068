'use strict';
// The options schema from Node: the units every binding shares, the older
// `...Ms` names, and unknown or out-of-range options refused with a message
// that names the option as written here and what it accepts.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { open, InvalidInputError } = require('..');
const { tmpdir } = require('./helpers');

function refused(fn, ...patterns) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof InvalidInputError, `${e && e.name}: ${e && e.message}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

test('options take strings with units and integers of ms and bytes', () => {
  const dir = path.join(tmpdir(), 'db');
  const db = open(dir, {
    nodeName: 'n1',
    flushInterval: '20ms',
    memoryBudget: '8MiB',
    maxRecordBytes: 4096,
    maxClockSkew: 30000,
    expiryIntervalMs: 500,
    retention: { logMaxBytes: '32MiB', logMaxAge: '1d', tombstoneMinAge: 60000 },
  });
  try {
    db.createTable('t');
    assert.throws(() => db.insert('t', { id: 1, blob: 'x'.repeat(5000) }), /4096/);
    db.startReplication({ insecure: true, heartbeatInterval: '100ms', idleTimeout: '2s', maxFrameBytes: '1MiB' });
    db.addPeer({ name: 'p1', tables: [{ table: 't', subscribe: true, sinceMs: 0 }] });
  } finally {
    db.close();
  }
});

test('unknown options are named as written', () => {
  const dir = path.join(tmpdir(), 'db');
  refused(() => open(dir, { nodeName: 'n1', memoryBudgit: 1 }), /memoryBudgit/, /memory_budget/);
  refused(() => open(dir, { nodeName: 'n1', retention: { logMax: 1 } }), /retention/, /logMax/);
  const db = open(dir, { nodeName: 'n1' });
  try {
    refused(() => db.startReplication({ insecure: true, heartbeat: 5 }), /heartbeat/, /heartbeat_interval/);
    db.startReplication({ insecure: true });
    refused(() => db.addPeer({ name: 'p1', tables: [{ table: 't', pubish: true }] }), /tables\[0\]/, /pubish/);
    refused(() => db.addPeer({ name: 'p1', adress: 'h:1' }), /adress/);
  } finally {
    db.close();
  }
});

test('out-of-range options say what they accept', () => {
  const dir = path.join(tmpdir(), 'db');
  refused(() => open(dir, { nodeName: 'n1', memoryBudget: '1MiB' }), /memoryBudget/, /between 4MiB and 1TiB/, /got 1MiB/);
  refused(() => open(dir, { nodeName: 'n1', retention: { logMaxAge: '0ms' } }), /retention\.logMaxAge/, /between 1s and/);
  refused(() => open(dir, { nodeName: 'n1', maxClockSkew: 'soon' }), /maxClockSkew/, /duration/);
  refused(() => open(dir, { nodeName: 'n1', maxClockSkewMs: NaN }), /maxClockSkewMs/, /finite/);
  const db = open(dir, { nodeName: 'n1' });
  try {
    refused(() => db.startReplication({ insecure: true, workerThreads: 0 }), /replication\.workerThreads/, /between 1 and 256/);
    refused(() => db.startReplication({ insecure: true, maxFrameBytes: '1KiB' }), /maxFrameBytes/, /between 64KiB/);
  } finally {
    db.close();
  }
});

test('a peer option added in core reaches Node without code (relays)', () => {
  const db = open(path.join(tmpdir(), 'db'), { nodeName: 'n1' });
  try {
    db.startReplication({ insecure: true });
    refused(() => db.addPeer({ name: 'p1', relays: 'yes' }), /relays/);
    db.addPeer({ name: 'p1', relays: true, tables: [{ table: 't', subscribe: true }] });
    db.updatePeer({ name: 'p1', relays: false });
  } finally {
    db.close();
  }
});
