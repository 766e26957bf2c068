// The Node.js side of same_views.py: opens the directory it is given, and
// prints what Node hands out (see same_views.py for the protocol). Bigints
// are written as {"$bigint": "digits"}, so the reader can tell them from
// numbers.
'use strict';
const path = require('node:path');
const tidelog = require(path.join(__dirname, '..', '..', 'bindings', 'node'));

function print(value) {
  process.stdout.write(
    JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? { $bigint: v.toString() } : v)) + '\n',
  );
}

async function main() {
  const [mode, dir, table] = process.argv.slice(2);
  const db = tidelog.open(dir, { nodeName: 'cloud' });
  try {
    const out = { nodeId: db.nodeId };
    if (mode === 'write') {
      let seen;
      const got = new Promise((resolve) => {
        seen = resolve;
      });
      db.onChange(table, (ev) => seen(ev));
      out.commit = db.transaction((tx) => {
        tx.upsert(table, { id: 'node-1', lang: 'node', n: 1.5, tags: ['x', 'é'], nested: { a: null } });
        tx.upsert(table, { id: 'node-tmp' });
        tx.delete(table, 'node-tmp');
      });
      delete out.commit.result;
      out.event = await Promise.race([
        got,
        new Promise((_, reject) => setTimeout(() => reject(new Error('no change event in 10 s')), 10_000)),
      ]);
    }
    out.log = db.readLog(1, 1000);
    print(out);
  } finally {
    db.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
