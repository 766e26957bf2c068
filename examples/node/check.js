#!/usr/bin/env node
// The final check of the reference scenario, run after the cloud and the
// edge have stopped: it opens both data directories (read-only use) and
// compares them. Exit 0 only if every check holds.
//
//   node examples/node/check.js CLOUD_DATA EDGE_DATA [--min-offline N] [--expire-secs S] [--expect SENSOR=MAX...]
'use strict';
const { open } = require('../../bindings/node');

const args = process.argv.slice(2);
const [cloudDir, edgeDir] = args;
let minOffline = 1;
let expireSecs = null;
const expect = [];
for (let i = 2; i < args.length; i++) {
  if (args[i] === '--min-offline') minOffline = Number(args[++i]);
  else if (args[i] === '--expire-secs') expireSecs = Number(args[++i]);
  else if (args[i] === '--expect') {
    const [sensor, max] = args[++i].split('=');
    expect.push({ sensor, max: Number(max) });
  } else throw new Error(`unknown argument ${args[i]}`);
}
if (!cloudDir || !edgeDir) {
  console.error('usage: check.js CLOUD_DATA EDGE_DATA [--min-offline N] [--expire-secs S] [--expect SENSOR=MAX...]');
  process.exit(2);
}

let failed = 0;
function check(ok, what) {
  console.log(`  check  | ${ok ? 'OK  ' : 'FAIL'} ${what}`);
  if (!ok) failed += 1;
}

const cloud = open(cloudDir, { nodeName: 'cloud' });
const edge = open(edgeDir, { nodeName: 'edge-1' });
try {
  const strip = ({ __createdtime__, __updatedtime__, ...r }) => r; // eslint-disable-line no-unused-vars
  const edgeAlerts = edge.scan('alerts');
  const cloudAlerts = cloud.scan('alerts');
  const edgeIds = edgeAlerts.map((a) => a.id);
  check(edgeAlerts.length > 0, `the edge raised alerts (${edgeAlerts.length})`);

  // No raw readings ever left the edge.
  const cloudTables = cloud.listTables().map((t) => t.name);
  check(!cloudTables.includes('sensor_data'), `the cloud has no sensor_data table (its tables: ${cloudTables.join(', ')})`);
  const edgeReadings = edge.count('sensor_data');
  check(edgeReadings > 0, `the edge still holds its own readings locally (${edgeReadings} in sensor_data)`);
  if (expireSecs !== null) {
    // Expiry: nothing older than the configured age (plus the sweep interval
    // and some slack) before the newest reading is left on the edge.
    const all = edge.scan('sensor_data');
    const newest = Math.max(...all.map((r) => r.ts));
    const oldest = Math.min(...all.map((r) => r.ts));
    const span = (newest - oldest) / 1000;
    check(span <= expireSecs + 3, `the edge's readings expire: they span ${span.toFixed(1)} s, the expiry is ${expireSecs} s`);
  }

  // Every alert exactly once, identical, with its window.
  const cloudById = new Map(cloudAlerts.map((a) => [a.id, a]));
  const missing = edgeIds.filter((id) => !cloudById.has(id));
  const extra = cloudAlerts.filter((a) => !edgeIds.includes(a.id)).map((a) => a.id);
  check(missing.length === 0, `every edge alert is on the cloud${missing.length ? ` (missing: ${missing.join(', ')})` : ''}`);
  check(extra.length === 0, `the cloud has no alert the edge did not raise${extra.length ? ` (extra: ${extra.join(', ')})` : ''}`);
  const differ = edgeAlerts.filter((a) => cloudById.has(a.id) && JSON.stringify(cloudById.get(a.id)) !== JSON.stringify(a));
  check(differ.length === 0, `each cloud alert is identical to the edge's, reading, window and times included${differ.length ? ` (differ: ${differ.map((a) => a.id).join(', ')})` : ''}`);
  const badWindow = edgeAlerts.filter(
    (a) =>
      a.window.length === 0 ||
      a.window.some((w) => w.ts >= a.reading.ts || w.ts < a.reading.ts - a.window_secs * 1000),
  );
  check(badWindow.length === 0, `every alert carries its preceding ${edgeAlerts[0]?.window_secs} s window of readings (${edgeAlerts.map((a) => a.window.length).join('/')} readings)`);

  // Order and exactly-once as applied: the cloud's transaction log.
  const bounds = cloud.logBounds();
  check(bounds.first === 1, `the cloud's transaction log is complete (seq ${bounds.first}..${bounds.last})`);
  const applied = [];
  for (let seq = bounds.first; seq <= bounds.last; ) {
    const page = cloud.readLog(seq, 1000);
    if (page.length === 0) break;
    for (const e of page) {
      for (const w of e.writes) if (w.table === 'alerts') applied.push({ id: w.key, origin: e.origin });
    }
    seq = page[page.length - 1].seq + 1;
  }
  const appliedIds = applied.map((a) => a.id);
  const dupes = appliedIds.filter((id, i) => appliedIds.indexOf(id) !== i);
  check(dupes.length === 0, `the cloud applied each alert once (${appliedIds.length} alert writes in its log)${dupes.length ? ` (twice: ${dupes.join(', ')})` : ''}`);
  check(
    JSON.stringify(appliedIds) === JSON.stringify(edgeIds),
    `the cloud applied the alerts in the edge's order${JSON.stringify(appliedIds) === JSON.stringify(edgeIds) ? '' : ` (cloud: ${appliedIds.join(',')}; edge: ${edgeIds.join(',')})`}`,
  );
  check(applied.every((a) => a.origin === edge.nodeId), 'every alert in the cloud\'s log has the edge as its origin');

  // The outage: alerts raised while the cloud was down, delivered later.
  const offline = edgeAlerts.filter((a) => a.raised_offline);
  check(offline.length >= minOffline, `${offline.length} alert(s) were raised while the cloud was down (need ${minOffline}), and reached it`);
  const receipts = new Set(edge.scan('receipts').map((r) => r.id));
  const unconfirmed = edgeIds.filter((id) => !receipts.has(id));
  check(unconfirmed.length === 0, `the edge got the cloud's receipt for every alert${unconfirmed.length ? ` (not: ${unconfirmed.join(', ')})` : ''}`);

  // Thresholds: the edge holds exactly the cloud's, including the change.
  const th = (db) => JSON.stringify(db.scan('thresholds').map(strip));
  check(th(edge) === th(cloud), `the edge's thresholds equal the cloud's: ${cloud.scan('thresholds').map((t) => `${t.sensor}=${t.max}`).join(', ')}`);
  for (const e of expect) {
    const got = edge.get('thresholds', e.sensor);
    check(got && got.max === e.max, `the changed threshold ${e.sensor} max=${e.max} reached the edge (edge has ${got ? got.max : 'none'})`);
  }
} finally {
  edge.close();
  cloud.close();
}
if (failed) {
  console.log(`  check  | ${failed} check(s) FAILED`);
  process.exit(1);
}
console.log('  check  | all checks passed');
