#!/usr/bin/env node
// The operator's console of the reference scenario: how thresholds get into
// the cloud. `tidelog serve` has no write API of its own; an operator tool is
// one more tidelog node ("operator") that dials the cloud and publishes the
// `thresholds` table to it. The cloud subscribes to `thresholds` from the
// operator and publishes it to every gateway, so a change made here is
// relayed by the cloud (multi-hop) to the edges.
//
//   node examples/node/operator.js s-1=80 s-2=80 s-3=85
//
// Environment: OPERATOR_DATA (data directory), OPERATOR_PKI (made by
// `tidelog certs`, holding operator.pem/.key and ca.pem), CLOUD_ADDR.
// Exits 0 once the cloud has confirmed the write (delivery receipt).
'use strict';
const path = require('node:path');
const { open } = require('../../bindings/node');

const DATA = process.env.OPERATOR_DATA || path.join(__dirname, '..', '.operator-data');
const PKI = process.env.OPERATOR_PKI || path.join(__dirname, '..', 'pki');
const CLOUD = process.env.CLOUD_ADDR || '127.0.0.1:7000';

const say = (m) => console.log(`  oper   | ${m}`);
const sets = process.argv.slice(2).map((a) => {
  const m = /^([\w-]+)=(\d+(?:\.\d+)?)$/.exec(a);
  if (!m) {
    console.error(`usage: operator.js SENSOR=MAX...  (got ${JSON.stringify(a)})`);
    process.exit(2);
  }
  return { sensor: m[1], max: Number(m[2]) };
});

async function main() {
  const db = open(DATA, { nodeName: 'operator' });
  try {
    db.ensureTable('thresholds', { primaryKey: 'sensor' });
    db.startReplication({
      tls: { cert: path.join(PKI, 'operator.pem'), key: path.join(PKI, 'operator.key'), ca: path.join(PKI, 'ca.pem') },
      backoffInitialMs: 100,
      backoffMaxMs: 1000,
    });
    db.addPeer({ name: 'cloud', address: CLOUD, tables: [{ table: 'thresholds', publish: true }] });
    const commit = db.transaction((tx) => {
      for (const s of sets) tx.upsert('thresholds', s);
    });
    say(`set ${sets.map((s) => `${s.sensor} max=${s.max}`).join(', ')} (log seq ${commit.seq}); waiting for the cloud's receipt`);
    await db.waitForAck('cloud', commit, 30000);
    say('the cloud confirmed the thresholds');
  } finally {
    db.close();
  }
}
main().catch((e) => {
  console.error(`operator: ${e.message}`);
  process.exit(1);
});
