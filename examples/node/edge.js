#!/usr/bin/env node
// The edge application of the reference scenario (SPEC §1), in Node.js.
//
// A gateway behind a firewall: simulated sensors write every reading into a
// local `sensor_data` table (never replicated, expiring on its own), the
// alert thresholds come from the cloud's `thresholds` table (read with local
// calls only), and a reading above its threshold raises an alert holding the
// reading plus the preceding window of readings of that sensor, taken from
// `sensor_data`. tidelog publishes `alerts` to the cloud over the one
// connection the edge dials out; the app never touches the network itself.
// For every alert it reports when the cloud confirmed it (waitForAck).
//
//   node examples/node/edge.js            (examples/edge_scenario.sh runs it)
//
// Settings come from the environment (the scenario script sets them):
//   EDGE_DATA       data directory (created if missing)
//   EDGE_PKI        directory made by `tidelog certs` (ca.pem, edge-1.pem, edge-1.key)
//   CLOUD_ADDR      host:port of the cloud (`tidelog serve`)
//   CLOUD_ADDRS     optional, comma-separated: more hubs of the same logical
//                   cloud, tried after CLOUD_ADDR (examples/fleet_postgres.sh)
//   EDGE_LOG        optional file that receives a copy of every line printed
//   WINDOW_SECS     readings before an alert that go into it (default 60)
//   EXPIRE_SECS     age after which readings expire locally (default 120)
//   TICK_MS         one reading per sensor this often (default 200)
// SIGTERM/SIGINT: stop the sensors, wait (up to 15 s) for the cloud to
// confirm the alerts still queued, close the database, exit.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { open } = require('../../bindings/node');

const env = (k, d) => process.env[k] ?? d;
const NODE = env('EDGE_NODE', 'edge-1');
const DATA = env('EDGE_DATA', path.join(__dirname, '..', '.edge-data'));
const PKI = env('EDGE_PKI', path.join(__dirname, '..', 'pki'));
const CLOUD = env('CLOUD_ADDR', '127.0.0.1:7000');
const MORE_HUBS = env('CLOUD_ADDRS', '').split(',').filter((a) => a !== '');
const LOG = process.env.EDGE_LOG;
const WINDOW_MS = Number(env('WINDOW_SECS', 60)) * 1000;
const EXPIRE_SECS = Number(env('EXPIRE_SECS', 120));
const TICK_MS = Number(env('TICK_MS', 200));
const SENSORS = ['s-1', 's-2', 's-3'];

function say(msg) {
  const line = `  edge   | ${msg}`;
  console.log(line);
  if (LOG) fs.appendFileSync(LOG, line + '\n');
}

const db = open(DATA, { nodeName: NODE });
// Readings: key "<sensor>/<ms, 15 digits>" so the window before an alert is
// one primary-key range scan. Local only: no peer flow names this table.
db.ensureTable('sensor_data', { expiration: EXPIRE_SECS });
db.ensureTable('alerts', { indexes: ['sensor'] });
// When the cloud confirmed each alert: local bookkeeping, never replicated.
db.ensureTable('receipts');

db.startReplication({
  tls: {
    cert: path.join(PKI, `${NODE}.pem`),
    key: path.join(PKI, `${NODE}.key`),
    ca: path.join(PKI, 'ca.pem'),
  },
  heartbeatIntervalMs: 500,
  idleTimeoutMs: 3000,
  backoffInitialMs: 100,
  backoffMaxMs: 1000, // redial quickly once the cloud is back
});
// The edge dials out; nothing dials in (no listen()).
db.addPeer({
  name: 'cloud',
  address: CLOUD,
  addresses: MORE_HUBS,
  tables: [
    { table: 'thresholds', subscribe: true },
    { table: 'alerts', publish: true },
  ],
});
const also = MORE_HUBS.length ? ` (or ${MORE_HUBS.join(', ')})` : '';
say(`opened ${DATA} as ${NODE} (node id ${db.nodeId}); dialing the cloud at ${CLOUD}${also}`);

// The thresholds table as the cloud defines it (a subscriber would also
// create it on the first change it receives).
db.ensureTable('thresholds', { primaryKey: 'sensor' });

let linkUp = null;
const linkTimer = setInterval(() => {
  let st;
  try {
    st = db.peerStatus('cloud');
  } catch {
    return;
  }
  if (st.connected === linkUp) return;
  if (st.connected) say('link to the cloud is UP');
  else if (linkUp === null) say('not connected to the cloud yet');
  else say(`link to the cloud is DOWN (${st.lastError || 'closed'}); collecting and queueing locally`);
  linkUp = st.connected;
}, 100);

// Deterministic simulated sensors: a noisy baseline near 50 with a spike
// to 90..99 every few seconds on one sensor or another.
let seed = 7;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const spikeLeft = Object.fromEntries(SENSORS.map((s) => [s, 0]));
const above = Object.fromEntries(SENSORS.map((s) => [s, false]));
const inEffect = {};
let readings = 0;
let alertNo = db.count('alerts');
const pending = new Set();
let lastReceipt = Promise.resolve();

function readingValue(sensor) {
  if (spikeLeft[sensor] === 0 && rnd() < TICK_MS / 1000 / 8) spikeLeft[sensor] = 3;
  if (spikeLeft[sensor] > 0) {
    spikeLeft[sensor] -= 1;
    return Math.round((90 + rnd() * 9) * 10) / 10;
  }
  return Math.round((45 + rnd() * 10) * 10) / 10;
}

const pad = (ms) => String(ms).padStart(15, '0');

function tick() {
  const now = Date.now();
  for (const sensor of SENSORS) {
    const value = readingValue(sensor);
    const reading = { id: `${sensor}/${pad(now)}`, sensor, ts: now, value };
    db.upsert('sensor_data', reading);
    readings += 1;
    const th = db.get('thresholds', sensor); // a local read, on every reading
    if (!th) continue; // no threshold from the cloud yet
    if (inEffect[sensor] !== th.max) {
      inEffect[sensor] = th.max;
      say(`threshold ${sensor} max=${th.max} now in effect (from the cloud, changed ${new Date(th.__updatedtime__).toISOString()})`);
    }
    const crossing = value > th.max;
    if (crossing && !above[sensor]) raiseAlert(reading, th.max);
    above[sensor] = crossing;
  }
}

function raiseAlert(reading, max) {
  // The preceding window of this sensor's readings, from sensor_data.
  const window = db
    .scan('sensor_data', { gte: `${reading.sensor}/${pad(reading.ts - WINDOW_MS)}`, lt: reading.id })
    .map((r) => ({ ts: r.ts, value: r.value }));
  alertNo += 1;
  const id = `${NODE}-${String(alertNo).padStart(5, '0')}`;
  const offline = linkUp !== true;
  const commit = db.insert('alerts', {
    id,
    n: alertNo,
    sensor: reading.sensor,
    reading: { ts: reading.ts, value: reading.value },
    threshold: max,
    window_secs: WINDOW_MS / 1000,
    window,
    raised_offline: offline,
  });
  const t0 = Date.now();
  say(
    `ALERT ${id}: ${reading.sensor}=${reading.value} > ${max}, with ${window.length} readings of the preceding ` +
      `${WINDOW_MS / 1000} s (log seq ${commit.seq})${offline ? ' -- cloud unreachable, queued' : ''}`,
  );
  // Receipts are reported in alert order: each waits for the one before.
  const before = lastReceipt;
  const p = before.then(() => waitAck(id, commit, t0)).finally(() => pending.delete(p));
  lastReceipt = p.catch(() => {});
  pending.add(p);
}

async function waitAck(id, commit, t0) {
  for (;;) {
    try {
      await db.waitForAck('cloud', commit, 5000);
      break;
    } catch (e) {
      if (e.code !== 'TIMEOUT') throw e;
      if (stopping === 'closed') return;
    }
  }
  const ms = Date.now() - t0;
  db.upsert('receipts', { id, acked_ms: Date.now(), waited_ms: ms });
  say(`cloud confirmed ${id}, ${(ms / 1000).toFixed(1)} s after it was raised`);
}

const sensorsTimer = setInterval(tick, TICK_MS);
const reportTimer = setInterval(() => {
  const [oldest] = db.scan('sensor_data', { gte: 's-1/', limit: 1 });
  const age = oldest ? ` oldest s-1 reading ${((Date.now() - oldest.ts) / 1000).toFixed(0)} s old;` : '';
  say(
    `${readings} readings so far; sensor_data holds ${db.count('sensor_data')} (local only, expiring after ` +
      `${EXPIRE_SECS} s);${age} ${db.count('alerts')} alerts, ${pending.size} awaiting the cloud`,
  );
}, 5000);

let stopping = null;
async function stop(sig) {
  if (stopping) return;
  stopping = sig;
  clearInterval(sensorsTimer);
  clearInterval(reportTimer);
  say(`${sig}: sensors stopped; waiting for the cloud to confirm ${pending.size} queued alert(s)`);
  const all = Promise.allSettled([...pending]);
  const timeout = new Promise((r) => setTimeout(r, 15000, 'timeout'));
  const r = await Promise.race([all, timeout]);
  clearInterval(linkTimer);
  const unconfirmed = db.count('alerts') - db.count('receipts');
  say(`${db.count('alerts')} alerts raised, ${db.count('receipts')} confirmed by the cloud${r === 'timeout' ? ' (gave up waiting)' : ''}`);
  stopping = 'closed';
  db.close();
  process.exit(unconfirmed === 0 ? 0 : 3);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
