'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** A fresh temporary directory, removed when the test process exits. */
function tmpdir(prefix = 'tidelog-test-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.once('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/**
 * Polls `fn` until it returns a truthy value or `ms` pass. A throw counts as
 * "not yet" (e.g. a table that replication has not created yet) and is
 * reported if time runs out.
 */
async function waitUntil(what, fn, ms = 20_000, every = 20) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

module.exports = { tmpdir, waitUntil };
