'use strict';
// Two instances replicating over mutual TLS on 127.0.0.1 (certificates
// generated at run time): thresholds flow down from the cloud, alerts up from
// the edge, sensor readings stay on the edge.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {
  open,
  devCerts,
  InvalidInputError,
  NotFoundError,
  AlreadyExistsError,
  UnsupportedError,
  TimeoutError,
  TlsError,
  PeerError,
} = require('..');
const { tmpdir, waitUntil } = require('./helpers');

/** The field names index.d.ts declares for `interface name`. */
function declared(name) {
  const dts = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');
  const body = dts.split(`export interface ${name} {\n`)[1].split('\n}\n')[0];
  return body
    .split('\n')
    .map((l) => /^  (\w+)\??:/.exec(l))
    .filter(Boolean)
    .map((m) => m[1])
    .sort();
}

const FAST = { heartbeatIntervalMs: 200, idleTimeoutMs: 3000, backoffInitialMs: 50, backoffMaxMs: 500 };

let dir;
let certs;
let cloud;
let edge;
let cloudAddr;
const cloudAlertEvents = [];
const edgeThresholdEvents = [];
const warnings = [];
const onWarning = (w) => warnings.push(w);

before(() => {
  dir = tmpdir('tidelog-repl-');
  certs = devCerts(path.join(dir, 'pki'), ['cloud', 'edge-1']);

  cloud = open(path.join(dir, 'cloud'), { nodeName: 'cloud' });
  cloud.createTable('thresholds', { primaryKey: 'sensor' });
  cloud.upsert('thresholds', { sensor: 's-1', max: 50 });
  // PEM text works as well as paths.
  const pem = (p) => fs.readFileSync(p, 'utf8');
  cloud.startReplication({
    tls: { cert: pem(certs.nodes.cloud.cert), key: pem(certs.nodes.cloud.key), ca: pem(certs.ca) },
    ...FAST,
  });
  cloudAddr = cloud.listen('127.0.0.1:0');
  cloud.addPeer({
    name: 'edge-1',
    tables: [
      { table: 'thresholds', publish: true },
      { table: 'alerts', subscribe: true },
    ],
  });
  cloud.onChange('alerts', (ev) => cloudAlertEvents.push(ev));

  edge = open(path.join(dir, 'edge'), { nodeName: 'edge-1' });
  edge.createTable('sensor_data', { indexes: ['sensor'], expiration: 3600 });
  edge.createTable('alerts');
  process.on('warning', onWarning);
  edge.onChange('thresholds', (ev) => {
    edgeThresholdEvents.push(ev);
    // A buggy app listener: reported, and replication goes on.
    if (ev.changes.some((c) => c.record && c.record.max === 13)) throw new Error('app bug on 13');
  });
  edge.startReplication({ tls: certs.nodes['edge-1'], ...FAST });
  edge.addPeer({
    name: 'cloud',
    address: cloudAddr,
    tables: [
      { table: 'thresholds', subscribe: true },
      { table: 'alerts', publish: true },
    ],
  });
});

after(() => {
  process.off('warning', onWarning);
  if (edge) edge.close();
  if (cloud) cloud.close();
});

test('devCerts wrote a CA and per-node files usable as tls options', () => {
  assert.ok(fs.existsSync(certs.ca));
  for (const n of ['cloud', 'edge-1']) {
    assert.ok(fs.existsSync(certs.nodes[n].cert));
    assert.ok(fs.existsSync(certs.nodes[n].key));
    assert.equal(certs.nodes[n].ca, certs.ca);
  }
  assert.throws(() => devCerts(path.join(dir, 'pki'), ['other']), InvalidInputError, 'never overwrites a PKI');
  assert.throws(() => devCerts(path.join(dir, 'pki2'), ['bad name!']), InvalidInputError);
  assert.throws(() => devCerts(path.join(dir, 'pki3'), ['a', 'a']), InvalidInputError);
  assert.throws(() => devCerts(path.join(dir, 'pki4'), 'a'), InvalidInputError);
});

test('thresholds flow down: initial sync, then live changes, seen by an edge listener', async () => {
  await waitUntil('initial threshold on the edge', () => edge.get('thresholds', 's-1'));
  assert.equal(edge.get('thresholds', 's-1').max, 50);
  assert.equal(edge.describeTable('thresholds').primaryKey, 'sensor', 'created with the publisher\'s key');
  cloud.upsert('thresholds', { sensor: 's-1', max: 60 });
  await waitUntil('updated threshold', () => edge.get('thresholds', 's-1').max === 60);
  await waitUntil('listener saw the remote change', () =>
    edgeThresholdEvents.some((e) => e.changes.some((c) => c.record && c.record.max === 60)),
  );
  const ev = edgeThresholdEvents.find((e) => e.changes.some((c) => c.record && c.record.max === 60));
  assert.equal(ev.local, false);
  assert.equal(ev.origin, cloud.nodeId, 'origin is the cloud');
  assert.equal(ev.stamp.node, cloud.nodeId);
  // Writes to a subscribed-only table stay local: the edge does not publish thresholds.
  const log = edge.readLog(1, 1000).filter((e) => e.writes.some((w) => w.table === 'thresholds'));
  assert.ok(log.every((e) => e.origin === cloud.nodeId), 'the log keeps the origin of applied remote transactions');
});

test('alerts flow up with the preceding window of readings; waitForAck resolves once applied', async () => {
  await waitUntil('threshold', () => edge.get('thresholds', 's-1'));
  const t0 = Date.now();
  let alertCommit;
  let ticks = 0;
  const ticker = setInterval(() => (ticks += 1), 5);
  for (let i = 0; i < 30; i++) {
    const reading = { id: i, sensor: 's-1', value: 40 + i, ts: t0 + i * 1000 };
    edge.upsert('sensor_data', reading);
    const max = edge.get('thresholds', reading.sensor).max;
    if (reading.value > max && !alertCommit) {
      const window = edge
        .findEq('sensor_data', 'sensor', reading.sensor)
        .filter((r) => r.ts >= reading.ts - 60_000 && r.ts < reading.ts)
        .map(({ id, value, ts }) => ({ id, value, ts }));
      alertCommit = edge.insert('alerts', { id: `a-${i}`, reading, window });
    }
  }
  assert.ok(alertCommit, 'a reading crossed the threshold');
  await edge.waitForAck('cloud', alertCommit, 20_000);
  clearInterval(ticker);
  const alertId = `a-${20 + 1}`; // 40 + 21 = 61 > 60
  const onCloud = cloud.get('alerts', alertId);
  assert.ok(onCloud, 'acknowledged means applied on the cloud');
  assert.equal(onCloud.reading.value, 61);
  assert.equal(onCloud.window.length, 21);
  assert.equal(onCloud.window[20].value, 60);
  await waitUntil('cloud listener saw the alert', () => cloudAlertEvents.length > 0);
  const ev = cloudAlertEvents.find((e) => e.changes.some((c) => c.key === alertId));
  assert.equal(ev.origin, edge.nodeId);
  assert.equal(ev.local, false);
  // sensor_data never left the edge.
  assert.ok(!cloud.listTables().some((t) => t.name === 'sensor_data'));
  // waitForAck by number, for an already acknowledged sequence, resolves at once.
  await edge.waitForAck('cloud', alertCommit.seq, 1000);
  await edge.waitForAck('cloud', 0);
  assert.ok(ticks >= 0, 'the event loop kept running while waiting');
});

test('a throwing listener is reported and does not break replication', async () => {
  cloud.upsert('thresholds', { sensor: 's-2', max: 13 });
  cloud.upsert('thresholds', { sensor: 's-3', max: 14 });
  await waitUntil('both thresholds on the edge', () => edge.get('thresholds', 's-3'));
  assert.equal(edge.get('thresholds', 's-2').max, 13);
  await waitUntil('the warning', () => warnings.some((w) => /app bug on 13/.test(w.message)));
  assert.ok(edge.listenerErrors >= 1);
  await waitUntil('listener still called after throwing', () =>
    edgeThresholdEvents.some((e) => e.changes.some((c) => c.record && c.record.max === 14)),
  );
  const c = edge.insert('alerts', { id: 'after-bug' });
  await edge.waitForAck('cloud', c, 20_000);
  assert.ok(cloud.get('alerts', 'after-bug'));
});

test('peerStatus and replicationStatus report the link', async () => {
  await waitUntil('connected', () => edge.peerStatus('cloud').connected);
  const s = edge.peerStatus('cloud');
  assert.equal(s.name, 'cloud');
  assert.equal(s.address, cloudAddr);
  assert.equal(s.connected, true);
  assert.equal(typeof s.sinceMs, 'number');
  assert.equal(s.nodeId, cloud.nodeId);
  assert.ok(s.connects >= 1);
  assert.ok(s.ackedSeq >= 1);
  assert.ok(s.receivedSeq >= 1);
  for (const k of ['sentSeq', 'backlogTxns', 'backlogBytes', 'lagMs', 'refusedWrites', 'syncsReceived']) {
    assert.equal(typeof s[k], 'number', k);
  }
  assert.deepEqual(
    s.tables.map((t) => [t.table, t.publish, t.subscribe]).sort(),
    [['alerts', true, false], ['thresholds', false, true]],
  );
  assert.equal(typeof s.tables[0].inbound, 'string');
  // Exactly the fields index.d.ts declares (which a Rust test holds to the core's).
  assert.deepEqual(Object.keys(s).sort(), declared('PeerStatus'));
  for (const t of s.tables) assert.deepEqual(Object.keys(t).sort(), declared('TableStatus'));
  for (const k of ['duplicatesReceived', 'resyncsSent']) assert.equal(typeof s[k], 'number', k);
  assert.equal(s.lastResyncReason, null);
  const all = cloud.replicationStatus();
  assert.deepEqual(all.map((p) => p.name), ['edge-1']);
  assert.equal(all[0].address, null, 'the cloud does not dial the edge');
  assert.equal(all[0].nodeId, edge.nodeId);
  assert.deepEqual(Object.keys(all[0]).sort(), declared('PeerStatus'));
});

test('waitForDelivery resolves once every peer it publishes to applied the write', async () => {
  const c = edge.insert('alerts', { id: 'delivered' });
  await edge.waitForDelivery(c, 20_000);
  assert.ok(cloud.get('alerts', 'delivered'), 'applied on the cloud when the receipt passes');
  // By number, and "everything committed so far".
  const d = edge.insert('alerts', { id: 'delivered-2' });
  await edge.waitForDelivery();
  assert.ok(cloud.get('alerts', 'delivered-2'));
  await edge.waitForDelivery(d.seq, 1000);
  await edge.waitForDelivery(null, 1000);
  await assert.rejects(edge.waitForDelivery(-1, 10), InvalidInputError);
  await assert.rejects(edge.waitForDelivery(1, 'soon'), InvalidInputError);
});

test('peer management errors and updatePeer / removePeer', async () => {
  assert.throws(() => edge.addPeer({ name: 'cloud', address: cloudAddr }), AlreadyExistsError);
  assert.throws(() => edge.addPeer({ name: 'edge-1' }), InvalidInputError, 'a node cannot be its own peer');
  assert.throws(() => edge.addPeer({ name: 'x', address: 'no-port' }), InvalidInputError);
  assert.throws(() => edge.addPeer({ name: 'x', tables: [{ table: 'a' }, { table: 'a' }] }), InvalidInputError);
  assert.throws(() => edge.addPeer({ name: 'x', tables: 'alerts' }), InvalidInputError);
  assert.throws(() => edge.addPeer('x'), InvalidInputError);
  assert.throws(() => edge.addPeer({}), InvalidInputError);
  assert.throws(() => edge.updatePeer({ name: 'nobody' }), NotFoundError);
  assert.throws(() => edge.removePeer('nobody'), NotFoundError);
  assert.throws(() => edge.peerStatus('nobody'), NotFoundError);
  await assert.rejects(edge.waitForAck('nobody', 1, 10), NotFoundError);
  await assert.rejects(edge.waitForAck('cloud', -1, 10), InvalidInputError);
  await assert.rejects(edge.waitForAck('cloud', 1, 'soon'), InvalidInputError);
  assert.throws(() => edge.startReplication({ insecure: true }), UnsupportedError, 'already started');
  assert.throws(() => edge.listen('256.0.0.1:99999'), PeerError);

  // A peer that never connects: waiting for it times out, without blocking the loop.
  edge.addPeer({ name: 'offline', tables: [{ table: 'alerts', publish: true }] });
  const c = edge.insert('alerts', { id: 'for-offline' });
  let ticks = 0;
  const ticker = setInterval(() => (ticks += 1), 10);
  const t = Date.now();
  await assert.rejects(
    edge.waitForAck('offline', c, 300),
    (e) => e instanceof TimeoutError && e.code === 'TIMEOUT' && /the link is down.*`offline` dials this node/.test(e.message),
  );
  clearInterval(ticker);
  assert.ok(Date.now() - t >= 250);
  assert.ok(ticks >= 5, `the event loop ran while waiting (${ticks} ticks)`);
  // Delivery waits for every peer the edge publishes to: the offline one too.
  await assert.rejects(
    edge.waitForDelivery(c, 300),
    (e) => e instanceof TimeoutError && e.code === 'TIMEOUT' && /`offline`/.test(e.message),
  );
  assert.equal(edge.peerStatus('offline').connected, false);
  edge.updatePeer({ name: 'offline', address: '127.0.0.1:9', tables: [] });
  assert.equal(edge.peerStatus('offline').address, '127.0.0.1:9');
  edge.removePeer('offline');
  assert.throws(() => edge.peerStatus('offline'), NotFoundError);
});

test('waitForAck rejects with PeerError for a table the peer does not subscribe to', async () => {
  const tables = [
    { table: 'thresholds', subscribe: true },
    { table: 'alerts', publish: true },
  ];
  // The edge starts publishing its readings; the cloud never subscribed.
  edge.updatePeer({ name: 'cloud', address: cloudAddr, tables: [...tables, { table: 'sensor_data', publish: true }] });
  try {
    const c = edge.upsert('sensor_data', { id: 'r-not-taken', sensor: 's-1', value: 1 });
    await assert.rejects(
      edge.waitForAck('cloud', c, 20_000),
      (e) => e instanceof PeerError && e.code === 'PEER' && /`cloud` does not subscribe to/.test(e.message),
    );
    await assert.rejects(
      edge.waitForDelivery(c, 20_000),
      (e) => e instanceof PeerError && e.code === 'PEER' && /`cloud` does not subscribe to/.test(e.message),
    );
    const out = Object.fromEntries(edge.peerStatus('cloud').tables.map((t) => [t.table, t.outbound]));
    assert.equal(out.sensor_data, 'not subscribed by the peer');
    // What the cloud takes still gets its receipt.
    const a = edge.upsert('alerts', { id: 'taken' });
    await edge.waitForAck('cloud', a, 20_000);
    await edge.waitForDelivery(a, 20_000);
    assert.ok(cloud.get('alerts', 'taken'));
  } finally {
    edge.updatePeer({ name: 'cloud', address: cloudAddr, tables });
  }
});

test('TLS: bad certificate settings are TlsError; a certificate from another CA never connects', async () => {
  const other = devCerts(path.join(dir, 'pki-other'), ['edge-2']);
  const db = open(path.join(dir, 'intruder'), { nodeName: 'edge-2' });
  try {
    assert.throws(() => db.startReplication({}), InvalidInputError, 'TLS unless explicitly insecure');
    assert.throws(() => db.startReplication({ tls: other.nodes['edge-2'], insecure: true }), InvalidInputError);
    assert.throws(
      () => db.startReplication({ tls: { cert: path.join(dir, 'missing.pem'), key: other.nodes['edge-2'].key, ca: other.ca } }),
      (e) => e instanceof TlsError && e.code === 'TLS' && /does not exist/.test(e.message),
    );
    assert.throws(() => db.startReplication({ tls: { cert: '-----BEGIN nonsense', key: 'x', ca: 'y' } }), TlsError);
    assert.throws(() => db.startReplication({ insecure: true, heartbeatIntervalMs: 0 }), InvalidInputError);
    assert.throws(() => db.startReplication({ insecure: true, workerThreads: -1 }), InvalidInputError);
    db.startReplication({ tls: other.nodes['edge-2'], ...FAST });
    cloud.addPeer({ name: 'edge-2', tables: [{ table: 'alerts', subscribe: true }] });
    db.createTable('alerts');
    db.addPeer({ name: 'cloud', address: cloudAddr, tables: [{ table: 'alerts', publish: true }] });
    db.insert('alerts', { id: 'intruder' });
    await waitUntil('a failed handshake', () => db.peerStatus('cloud').lastError, 10_000);
    assert.equal(db.peerStatus('cloud').connected, false);
    assert.equal(cloud.get('alerts', 'intruder'), null);
  } finally {
    db.close();
    cloud.removePeer('edge-2');
  }
});

test('metered link settings reach the link and its status', async () => {
  edge.updatePeer({
    name: 'cloud',
    address: cloudAddr,
    tables: [
      { table: 'thresholds', subscribe: true },
      { table: 'alerts', publish: true, priority: 9, exemptFromQuota: true },
      { table: 'sensor_data', publish: true, bulk: true, coalesceMs: 50 },
    ],
    budget: { maxBytesPerSec: 65536, quotaBytes: 10000000, quotaPeriod: 'month', windows: ['22:00-06:00'] },
    compression: 'zstd',
    deltas: true,
  });
  await waitUntil('the link back up', () => edge.peerStatus('cloud').connected);
  const c = edge.insert('alerts', { id: 'metered', msg: 'x'.repeat(600) });
  await edge.waitForAck('cloud', c, 20000);
  const t = edge.peerStatus('cloud').traffic;
  assert.equal(t.maxBytesPerSec, 65536);
  assert.equal(t.compression, 'zstd');
  assert.ok(t.quotaLeftBytes !== null && t.quotaLeftBytes < 10000000, JSON.stringify(t));
  assert.ok(t.quotaPeriodEndMs !== null);
  assert.ok(t.bytesOutWire > 0 && t.bytesOutRaw >= t.bytesOutWire, JSON.stringify(t));
  assert.deepEqual(Object.keys(t).sort(), declared('TrafficStatus'));
  for (const bad of [
    { budget: { maxBytesPerSec: 10 } },
    { budget: { windows: ['25:00-26:00'] } },
    { budget: { quotaPeriod: 'week' } },
    { compression: 'gzip' },
  ]) {
    assert.throws(() => edge.updatePeer({ name: 'cloud', address: cloudAddr, ...bad }), InvalidInputError);
  }
});
