'use strict';
// tidelog's log records reach setLogCallback: a hub refusing a node it does
// not list as a peer (mutual TLS on 127.0.0.1) is a 'warn' record on
// 'tidelog::repl'. Then the callback must not keep the process alive.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { open, devCerts, setLogCallback, InvalidInputError } = require('..');
const { tmpdir, waitUntil } = require('./helpers');

const FAST = { backoffInitialMs: 50, backoffMaxMs: 500 };

test('a refused link reaches the log callback', async () => {
  const dir = tmpdir();
  const certs = devCerts(path.join(dir, 'pki'), ['hub', 'stranger']);
  const records = [];
  setLogCallback((r) => records.push(r));
  const hub = open(path.join(dir, 'hub'), { nodeName: 'hub' });
  const stranger = open(path.join(dir, 'stranger'), { nodeName: 'stranger' });
  try {
    hub.startReplication({ tls: certs.nodes.hub, ...FAST });
    const addr = hub.listen('127.0.0.1:0');
    stranger.createTable('t');
    stranger.startReplication({ tls: certs.nodes.stranger, ...FAST });
    stranger.addPeer({ name: 'hub', address: addr, tables: [{ table: 't', publish: true }] });
    const refused = () => records.find((r) => r.message.includes('refused replication link'));
    await waitUntil('a refused-link record', refused, 60000);
    const r = refused();
    assert.equal(r.level, 'warn');
    assert.equal(r.target, 'tidelog::repl');
    assert.match(r.message, /`stranger` is not a configured peer of `hub`/);
  } finally {
    stranger.close();
    hub.close();
    setLogCallback(null);
  }
});

test('setLogCallback refuses what is not a function or a level', () => {
  assert.throws(() => setLogCallback(42), InvalidInputError);
  assert.throws(() => setLogCallback(() => {}, 'loud'), /minLevel must be one of/);
});

test('a log callback does not keep the process alive', async () => {
  const script = `const t = require(${JSON.stringify(path.join(__dirname, '..'))});
t.setLogCallback(() => {});
const db = t.open(${JSON.stringify(path.join(tmpdir(), 'db'))}, { nodeName: 'a' });
db.createTable('t');
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
