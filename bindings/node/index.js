'use strict';
// tidelog for Node.js: plain objects in and out, synchronous local reads and
// writes, Promises for what waits, typed errors. The native half
// (src/lib.rs, built into tidelog.node) takes and returns records as JSON
// text; this file does JSON.stringify / JSON.parse around it, which measured
// faster than building objects field by field through napi. `get` is the
// exception: most records come back laid out and become objects through a
// function generated per record shape (see Database#decoder, src/fast.rs).

const path = require('node:path');

// The npm package ships the addon in a per-platform package (napi-rs's
// layout, made by dist/npm.sh): `tidelog` lists e.g. @tidelog/linux-x64-gnu
// as an optional dependency, and npm installs only the one whose os/cpu/libc
// match. A tidelog.node next to this file (the repo's own build,
// scripts/build.js) comes first.
function platformPackage() {
  let name = `@tidelog/${process.platform}-${process.arch}`;
  if (process.platform === 'linux') {
    // glibcVersionRuntime is only reported by a Node.js linked with glibc.
    const header = process.report && process.report.getReport ? process.report.getReport().header : {};
    name += header && header.glibcVersionRuntime ? '-gnu' : '-musl';
  }
  return name;
}

function loadNative() {
  const file = path.join(__dirname, 'tidelog.node');
  try {
    return require(file);
  } catch (e) {
    if (!e || e.code !== 'MODULE_NOT_FOUND') throw e;
  }
  const pkg = platformPackage();
  try {
    return require(`${pkg}/tidelog.node`);
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND') {
      // In the repo (scripts/build.js beside this file), say how to build it.
      const inRepo = require('node:fs').existsSync(path.join(__dirname, 'scripts', 'build.js'));
      const err = new Error(
        `tidelog: no native addon for ${process.platform}-${process.arch}: the platform package ${pkg} ` +
          `is not installed (an optional dependency of tidelog: install without --omit=optional; ` +
          `there is one for each platform in tidelog's optionalDependencies), and there is no ${file}` +
          (inRepo ? `; build it with \`npm run build\` in ${__dirname} (needs the Rust toolchain)` : ''),
      );
      err.code = 'ERR_TIDELOG_NOT_BUILT';
      err.cause = e;
      throw err;
    }
    throw e;
  }
}

const native = loadNative();

// ---- errors ---------------------------------------------------------------

class TidelogError extends Error {
  constructor(message, code = 'UNKNOWN', options) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

function errorClass(name, code) {
  const C = {
    [name]: class extends TidelogError {
      constructor(message, options) {
        super(message, code, options);
      }
    },
  }[name];
  return C;
}

const InvalidInputError = errorClass('InvalidInputError', 'INVALID_INPUT');
const NotFoundError = errorClass('NotFoundError', 'NOT_FOUND');
const AlreadyExistsError = errorClass('AlreadyExistsError', 'ALREADY_EXISTS');
const ClosedError = errorClass('ClosedError', 'CLOSED');
const LockedError = errorClass('LockedError', 'LOCKED');
const StorageError = errorClass('StorageError', 'STORAGE');
const CorruptError = errorClass('CorruptError', 'CORRUPT');
const ClockSkewError = errorClass('ClockSkewError', 'CLOCK_SKEW');
const TimeoutError = errorClass('TimeoutError', 'TIMEOUT');
const TlsError = errorClass('TlsError', 'TLS');
const PeerError = errorClass('PeerError', 'PEER');
const UnsupportedError = errorClass('UnsupportedError', 'UNSUPPORTED');

const errorClasses = {
  INVALID_INPUT: InvalidInputError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  CLOSED: ClosedError,
  LOCKED: LockedError,
  STORAGE: StorageError,
  CORRUPT: CorruptError,
  CLOCK_SKEW: ClockSkewError,
  TIMEOUT: TimeoutError,
  TLS: TlsError,
  PEER: PeerError,
  UNSUPPORTED: UnsupportedError,
};

const ErrorCode = Object.freeze(
  Object.fromEntries(Object.keys(errorClasses).map((c) => [c, c])),
);

const PREFIX = /^\[TIDELOG:([A-Z_]+)\] /;
// Status codes napi uses when a JS argument has the wrong type.
const NAPI_ARG_CODES = new Set([
  'InvalidArg',
  'ObjectExpected',
  'StringExpected',
  'NameExpected',
  'FunctionExpected',
  'NumberExpected',
  'BooleanExpected',
  'ArrayExpected',
  'BigintExpected',
]);

/** napi's argument-conversion messages, in JavaScript terms. */
function friendly(message) {
  return message
    .replace(/Failed to get Array length/g, 'expected an array')
    .replace(/napi value (\w+)/g, 'JavaScript value `$1`')
    .replace(/rust type `String`/g, 'a string')
    .replace(/rust type `(f64|f32|u64|i64|u32|i32)`/g, 'a number')
    .replace(/rust type `bool`/g, 'a boolean')
    .replace(/rust type `[^`]*`/g, 'the expected type')
    .replace(/ on \w+\.(\w+)/g, ' (field `$1`)')
    .replace(/(an? )?serde_json::Value/g, 'a JSON value');
}

/** Turns whatever the native side threw into a TidelogError subclass. */
function toError(e) {
  if (e instanceof TidelogError) return e;
  const message = e && typeof e.message === 'string' ? e.message : String(e);
  const m = PREFIX.exec(message);
  if (m) {
    const C = errorClasses[m[1]];
    return C ? new C(message.slice(m[0].length)) : new TidelogError(message.slice(m[0].length), m[1]);
  }
  if (e && (NAPI_ARG_CODES.has(e.code) || e instanceof TypeError || e instanceof RangeError)) {
    return new InvalidInputError(`invalid argument: ${friendly(message)}`, { cause: e });
  }
  return e;
}

function invalid(message) {
  return new InvalidInputError(message);
}

// ---- argument checks --------------------------------------------------------

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

function describe(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

/** A primary-key value: a string, a safe integer, or a bigint in i64 range. */
function checkKey(k) {
  switch (typeof k) {
    case 'string':
      if (!k.isWellFormed()) throw invalid('invalid key: the string has a lone surrogate (not valid UTF-8)');
      return k;
    case 'number':
      if (Number.isSafeInteger(k)) return k;
      throw invalid(`invalid key: ${k} is not a safe integer (use a string, or a bigint for 64-bit keys)`);
    case 'bigint':
      if (k >= I64_MIN && k <= I64_MAX) return k;
      throw invalid(`invalid key: ${k} does not fit in a signed 64-bit integer`);
    default:
      throw invalid(`invalid key: primary keys are strings or integers, got ${describe(k)}`);
  }
}

/** Record → JSON text; the core checks that it is an object. */
function recordJson(record) {
  if (record === null || typeof record !== 'object') {
    throw invalid(`a record must be a JSON object, got ${describe(record)}`);
  }
  let json;
  try {
    json = JSON.stringify(record);
  } catch (e) {
    throw new InvalidInputError(`a record must be JSON-serializable: ${e.message}`, { cause: e });
  }
  if (typeof json !== 'string') throw invalid('a record must be a JSON object');
  // JSON.stringify writes NaN and ±Infinity as null, which would store a
  // value the caller never wrote. Only a text with "null" in it can hide
  // one, so the common record pays one substring search, not a replacer.
  if (json.includes('null')) JSON.stringify(record, refuseNonFinite);
  return json;
}

/** A JSON.stringify replacer that throws on the numbers JSON cannot hold. */
function refuseNonFinite(key, value) {
  // Number objects reach the replacer boxed; stringify unboxes them later.
  const n = value instanceof Number ? Number(value) : value;
  if (typeof n === 'number' && !Number.isFinite(n)) {
    const where = Array.isArray(this) ? `list element ${key}` : `attribute ${JSON.stringify(key)}`;
    throw invalid(
      `invalid record: ${where} is ${n}; NaN and infinite numbers are not JSON numbers (store null, or a string)`,
    );
  }
  return value;
}

function checkFunction(f, what) {
  if (typeof f !== 'function') throw invalid(`${what} must be a function, got ${describe(f)}`);
}

function checkOptions(o, what) {
  if (o === undefined) return {};
  if (o === null || typeof o !== 'object' || Array.isArray(o)) {
    throw invalid(`${what} must be an object, got ${describe(o)}`);
  }
  return o;
}

// Option objects go to core's one options schema (the same as C's JSON,
// Python's keywords and the serve config) as JSON with snake_case keys:
// `maxClockSkew` -> `max_clock_skew`, `maxClockSkewMs` -> the older
// `max_clock_skew_ms`. A refusal names the option as the caller spelled it.
function snakeCase(k) {
  return k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function schemaOptions(o, what) {
  const spelled = new Map();
  const walk = (v, path) => {
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}[${i}]`));
    if (v !== null && typeof v === 'object') {
      const out = {};
      for (const [k, x] of Object.entries(v)) {
        if (x === undefined) continue;
        const s = snakeCase(k);
        if (s !== k) spelled.set(s, k);
        // An older `...Ms` name decodes as the option without the suffix,
        // which is what an error then names.
        if (s.endsWith('_ms') && !spelled.has(s.slice(0, -3))) spelled.set(s.slice(0, -3), k);
        out[s] = walk(x, path ? `${path}.${k}` : k);
      }
      return out;
    }
    if (typeof v === 'number' && !Number.isFinite(v)) {
      throw invalid(`invalid ${what}: \`${path}\` must be a finite number, got ${v}`);
    }
    if (typeof v === 'bigint' || typeof v === 'function' || typeof v === 'symbol') {
      throw invalid(`invalid ${what}: \`${path}\` must be a number, string, boolean or object, got ${typeof v}`);
    }
    return v;
  };
  return { json: JSON.stringify(walk(checkOptions(o, what), '')), spelled };
}

/** `e` as a TidelogError whose message names options as the caller wrote them. */
function respelled(e, spelled) {
  const err = toError(e);
  for (const [snake, theirs] of spelled) {
    err.message = err.message.replace(new RegExp(`\\b${snake}\\b`, 'g'), theirs);
  }
  return err;
}

function optNumber(v, what, dflt) {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalid(`invalid ${what}: must be a non-negative integer, got ${describe(v)}`);
  }
  return v;
}

// ---- conversions of what comes back ----------------------------------------

function orNull(v) {
  return v === undefined ? null : v;
}

function tableInfo(t) {
  return {
    name: t.name,
    primaryKey: t.primaryKey,
    indexes: t.indexes,
    expiration: orNull(t.expiration),
    conflict: t.conflict,
    diskBudgetBytes: orNull(t.diskBudgetBytes),
    onFull: t.onFull,
  };
}

/** An increment amount: a safe integer, or a bigint in i64 range. */
function checkBy(by) {
  if (typeof by === 'number' && Number.isSafeInteger(by)) return by;
  if (typeof by === 'bigint' && by >= I64_MIN && by <= I64_MAX) return by;
  throw invalid(`invalid increment: \`by\` must be a safe integer or a bigint in 64-bit range, got ${describe(by)}`);
}

const ANSWERS = ['take_remote', 'keep_local', 'delete'];
const ANSWER_TEXT = "'take_remote', 'keep_local', 'delete', or an object (the record to write)";

/**
 * Runs the caller's resolver on the event loop and turns whatever it does
 * into one answer the native side takes: `{ answer }`, `{ write: json }`,
 * or `{ error }` (a throw or an answer that is none of the above; the
 * native side logs it and takes the remote version).
 */
function answerOf(resolver, c) {
  let r;
  try {
    r = resolver(c);
  } catch (e) {
    return { error: `it threw: ${e && e.stack ? e.stack : String(e)}` };
  }
  if (typeof r === 'string') {
    return ANSWERS.includes(r) ? { answer: r } : { error: `it returned ${JSON.stringify(r)}; expected ${ANSWER_TEXT}` };
  }
  if (r !== null && typeof r === 'object' && !Array.isArray(r)) {
    if (typeof r.then === 'function') {
      // Not awaited: the library thread waits for a synchronous answer.
      Promise.resolve(r).catch(() => {});
      return { error: 'it returned a promise; a resolver answers synchronously' };
    }
    try {
      return { write: recordJson(r) };
    } catch (e) {
      return { error: `the record it returned cannot be written: ${e.message}` };
    }
  }
  const what = r === undefined ? 'undefined (no answer)' : describe(r);
  return { error: `it returned ${what}; expected ${ANSWER_TEXT}` };
}

/**
 * Peer status from the core's own serialization (src/convert.rs,
 * status_json): camelCased names, null for "nothing yet", 64-bit node ids
 * and stamp times (decimal text there) as bigints, as in every other object
 * tidelog hands out (src/views.rs).
 */
function parseStatus(json) {
  return JSON.parse(json, (key, value) =>
    typeof value === 'string' && (key === 'time' || key === 'node' || key === 'nodeId' || key.endsWith('NodeId'))
      ? BigInt(value)
      : value,
  );
}

function reportListenerError(db, table, err) {
  db.listenerErrors += 1;
  const detail = err && err.stack ? err.stack : String(err);
  try {
    process.emitWarning(`a change listener for table "${table}" threw: ${err && err.message ? err.message : String(err)}`, {
      type: 'TidelogListenerWarning',
      code: 'TIDELOG_LISTENER_ERROR',
      detail,
    });
  } catch {
    // Reporting must never throw back into the event dispatch.
  }
}

// ---- transactions -------------------------------------------------------------

/** Writes staged inside `db.transaction(fn)`; committed together or not at all. */
class Transaction {
  #n;
  constructor(n) {
    this.#n = n;
  }

  /** Stages an insert (fails at commit if the key exists). */
  insert(table, record) {
    const json = recordJson(record);
    try {
      this.#n.insert(table, json);
    } catch (e) {
      throw toError(e);
    }
    return this;
  }

  upsert(table, record) {
    const json = recordJson(record);
    try {
      this.#n.upsert(table, json);
    } catch (e) {
      throw toError(e);
    }
    return this;
  }

  update(table, patch) {
    const json = recordJson(patch);
    try {
      this.#n.update(table, json);
    } catch (e) {
      throw toError(e);
    }
    return this;
  }

  delete(table, key) {
    try {
      this.#n.delete(table, checkKey(key));
    } catch (e) {
      throw toError(e);
    }
    return this;
  }

  /** Stages an increment of the integer attribute `attr` (see Database#increment). */
  increment(table, key, attr, by = 1) {
    try {
      this.#n.increment(table, checkKey(key), attr, checkBy(by));
    } catch (e) {
      throw toError(e);
    }
    return this;
  }

  /** Number of staged writes. */
  get length() {
    return this.#n.length;
  }

  /** True once committed or rolled back. */
  get finished() {
    return this.#n.finished;
  }
}

function commitTx(n) {
  try {
    return n.commit();
  } catch (e) {
    throw toError(e);
  }
}

// ---- the database ---------------------------------------------------------------

class Database {
  #n;
  #listeners = new Map();
  // Raw Node-API functions for the per-record hot paths (src/fast.rs).
  #tableId;
  #getInt;
  #getStr;
  #upsert;
  #shape;
  #slots;
  // Names of the times the core adds to every record, in the slots after
  // the shape id (src/fast.rs, recordTimes).
  #recordTimes;
  #decoders = [];
  // Table names → the small ids the raw functions take (see #tableIdOf).
  #tableIds = new Map();
  #lastTable;
  #lastTableId = -1;
  #nodeId;

  /**
   * Opens (creating if needed) the data directory `dir`.
   * `options.nodeName` is required: this node's name, equal to the DNS
   * name in its TLS certificate.
   */
  constructor(dir, options) {
    if (typeof dir !== 'string' || dir.length === 0) {
      throw invalid(`the data directory must be a non-empty string, got ${describe(dir)}`);
    }
    const o = checkOptions(options, 'open options');
    if (typeof o.nodeName !== 'string') {
      throw invalid('open options need `nodeName` (a string): this node\'s name, equal to the DNS name in its certificate');
    }
    const { json, spelled } = schemaOptions(o, 'open options');
    try {
      this.#n = native.NativeDb.open(dir, json);
      const fast = this.#n._fast();
      this.#tableId = fast.tableId;
      this.#getInt = fast.getInt;
      this.#getStr = fast.getStr;
      this.#upsert = fast.upsert;
      this.#shape = fast.shape;
      this.#slots = fast.slots;
      this.#recordTimes = fast.recordTimes;
      this.#nodeId = this.#n.nodeId;
    } catch (e) {
      throw respelled(e, spelled);
    }
    /** Change-listener calls that threw (each one is also emitted as a process warning). */
    this.listenerErrors = 0;
  }

  static open(dir, options) {
    return new Database(dir, options);
  }

  /**
   * Closes the database: flushes, stops replication and listeners, and
   * releases the directory. Events committed before the close are still
   * delivered; after that nothing of this database keeps the process alive.
   * Every later call throws ClosedError. Closing twice is fine.
   */
  close() {
    // Listeners stay active: events committed before the close are still
    // delivered (the native side holds the loop open until they ran).
    this.#listeners.clear();
    try {
      this.#n.close();
    } catch (e) {
      throw toError(e);
    }
  }

  get nodeName() {
    return this.#n.nodeName;
  }

  /** This instance's stable node id, a bigint (the `origin` of its changes). */
  get nodeId() {
    return this.#n.nodeId;
  }

  get path() {
    return this.#n.path;
  }

  /**
   * Transactions this handle lost: at open to a damaged journal (with
   * `recoverPrefix: true`), or to a failed write the engine could not keep
   * (sled, grouped durability).
   */
  get droppedTransactions() {
    return this.#n.droppedTransactions;
  }

  get engine() {
    return this.#n.engine;
  }

  get closed() {
    return this.#n.isClosed;
  }

  flush() {
    try {
      this.#n.flush();
    } catch (e) {
      throw toError(e);
    }
  }

  diskBytes() {
    try {
      return this.#n.diskBytes();
    } catch (e) {
      throw toError(e);
    }
  }

  // ---- tables

  createTable(name, options) {
    try {
      return tableInfo(this.#n.createTable(name, checkOptions(options, 'table options')));
    } catch (e) {
      throw toError(e);
    }
  }

  /** Creates the table unless it exists; returns whether it created it. */
  ensureTable(name, options) {
    try {
      return this.#n.ensureTable(name, checkOptions(options, 'table options'));
    } catch (e) {
      throw toError(e);
    }
  }

  dropTable(name) {
    try {
      this.#n.dropTable(name);
    } catch (e) {
      throw toError(e);
    }
  }

  listTables() {
    try {
      return this.#n.listTables().map(tableInfo);
    } catch (e) {
      throw toError(e);
    }
  }

  describeTable(name) {
    try {
      return tableInfo(this.#n.describeTable(name));
    } catch (e) {
      throw toError(e);
    }
  }

  // ---- writes

  insert(table, record) {
    const json = recordJson(record);
    try {
      return this.#n.insert(table, json);
    } catch (e) {
      throw toError(e);
    }
  }

  upsert(table, record) {
    const json = recordJson(record);
    let c;
    try {
      const t = typeof table === 'string' ? this.#tableIdOf(table) : -1;
      c = t >= 0 ? this.#upsert(t, json) : this.#n.upsert(table, json);
    } catch (e) {
      throw toError(e);
    }
    // The fast path returns the stamp's time, with seq and stampMs in the
    // slots (src/fast.rs, commit_result); other paths a finished object.
    if (typeof c === 'bigint') {
      const id = this.#nodeId;
      return { seq: this.#slots[0], origin: id, stamp: { time: c, node: id }, stampMs: this.#slots[1] };
    }
    return c;
  }

  update(table, patch) {
    const json = recordJson(patch);
    try {
      return this.#n.update(table, json);
    } catch (e) {
      throw toError(e);
    }
  }

  /** Deletes a record (leaving a tombstone that replicates); returns whether one was there. */
  delete(table, key) {
    try {
      return this.#n.delete(table, checkKey(key));
    } catch (e) {
      throw toError(e);
    }
  }

  /**
   * Adds `by` (default 1) to the integer attribute `attr` of the record
   * with `key`, creating `{ [primaryKey]: key, [attr]: by }` if there is
   * none. Increments made on different nodes add up when they meet.
   */
  increment(table, key, attr, by = 1) {
    try {
      return this.#n.increment(table, checkKey(key), attr, checkBy(by));
    } catch (e) {
      throw toError(e);
    }
  }

  /**
   * Runs `fn(tx)` and commits its writes atomically when it returns (or,
   * if it returns a promise, when that resolves); throws or rejects →
   * nothing is written. Returns the commit info with `result`, fn's value.
   */
  transaction(fn) {
    checkFunction(fn, 'the transaction callback');
    let n;
    try {
      n = this.#n.transaction();
    } catch (e) {
      throw toError(e);
    }
    let result;
    try {
      result = fn(new Transaction(n));
    } catch (e) {
      n.rollback();
      throw e;
    }
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      return Promise.resolve(result).then(
        (value) => ({ ...commitTx(n), result: value }),
        (e) => {
          n.rollback();
          throw e;
        },
      );
    }
    return { ...commitTx(n), result };
  }

  /**
   * Like `transaction`, but the commit runs on the libuv worker pool, so a
   * commit that waits for the disk (`durability: "sync"`) does not block the
   * event loop. `fn` stages writes synchronously.
   */
  transactionAsync(fn) {
    try {
      checkFunction(fn, 'the transaction callback');
      const n = this.#n.transaction();
      let result;
      try {
        result = fn(new Transaction(n));
      } catch (e) {
        n.rollback();
        throw e;
      }
      if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
        n.rollback();
        throw invalid('transactionAsync callbacks stage writes synchronously; use transaction() for an async callback');
      }
      return n.commitAsync().then(
        (info) => ({ ...info, result }),
        (e) => {
          throw toError(e);
        },
      );
    } catch (e) {
      return Promise.reject(toError(e));
    }
  }

  insertAsync(table, record) {
    return this.transactionAsync((tx) => void tx.insert(table, record)).then(stripResult);
  }

  upsertAsync(table, record) {
    return this.transactionAsync((tx) => void tx.upsert(table, record)).then(stripResult);
  }

  updateAsync(table, patch) {
    return this.transactionAsync((tx) => void tx.update(table, patch)).then(stripResult);
  }

  deleteAsync(table, key) {
    return this.transactionAsync((tx) => void tx.delete(table, key)).then(stripResult);
  }

  // ---- reads

  /** The record with this primary key (with __createdtime__/__updatedtime__), or null. */
  get(table, key) {
    let s;
    try {
      // Raw entry points for the common key types (src/fast.rs); the
      // rest (bigints, bad arguments) through the napi-rs method.
      const t = typeof table === 'string' ? this.#tableIdOf(table) : -1;
      if (t >= 0) {
        if (typeof key === 'number' && Number.isSafeInteger(key)) s = this.#getInt(t, key);
        else if (typeof key === 'string' && key.isWellFormed()) s = this.#getStr(t, key);
      }
      if (s === undefined) {
        s = this.#n.get(table, checkKey(key));
        return s == null ? null : JSON.parse(s);
      }
    } catch (e) {
      throw toError(e);
    }
    if (s === null) return null;
    const slots = this.#slots;
    const shape = slots[0];
    if (shape < 0) return JSON.parse(s);
    return (this.#decoders[shape] || this.#decoder(shape))(slots, s);
  }

  /**
   * The id the raw functions know the table `name` by (src/fast.rs), or -1
   * once the database has given ids to its limit of names (1024): calls
   * then take the general path. Reading a small number is much cheaper for
   * the native side than reading a name; a program nearly always names the
   * same table many times in a row, hence the one-entry cache in front
   * (about 3 ns instead of a Map lookup's 12-15 ns, measured on Node 20).
   */
  #tableIdOf(name) {
    if (name === this.#lastTable) return this.#lastTableId;
    let id = this.#tableIds.get(name);
    if (id === undefined) {
      id = this.#tableId(name);
      if (id >= 0) this.#tableIds.set(name, id);
    }
    this.#lastTable = name;
    this.#lastTableId = id;
    return id;
  }

  /**
   * The function that builds a record of this shape (attribute names and
   * value types) from a laid-out get (see src/fast.rs): an object literal
   * reading numbers from the slots and string values (and nested values,
   * as JSON text) from the string. Same object as JSON.parse of the
   * record's text, without parsing.
   */
  #decoder(id) {
    let spec;
    try {
      spec = JSON.parse(this.#shape(id));
    } catch (e) {
      throw toError(e);
    }
    const props = this.#recordTimes.map((name, i) => `${JSON.stringify(name)}:F[${i + 1}]`);
    let n = 1 + props.length;
    for (const [name, kind] of spec) {
      // A literal `"__proto__": v` would set the prototype; JSON.parse
      // makes an own property, as a computed key does.
      const key = name === '__proto__' ? `[${JSON.stringify(name)}]` : JSON.stringify(name);
      let v;
      if (kind === 'n') v = `F[${n++}]`;
      else if (kind === 's') v = `S.slice(F[${n++}],F[${n++}])`;
      else if (kind === 'j') v = `JSON.parse(S.slice(F[${n++}],F[${n++}]))`;
      else if (kind === 't') v = 'true';
      else if (kind === 'f') v = 'false';
      else v = 'null';
      props.push(`${key}:${v}`);
    }
    // eslint-disable-next-line no-new-func -- names come from JSON.stringify
    const f = new Function('F', 'S', `return {${props.join(',')}};`);
    this.#decoders[id] = f;
    return f;
  }

  /** Records for these keys, in order; null where there is none. */
  getMany(table, keys) {
    if (!Array.isArray(keys)) throw invalid(`keys must be an array, got ${describe(keys)}`);
    try {
      return JSON.parse(this.#n.getMany(table, keys.map(checkKey)));
    } catch (e) {
      throw toError(e);
    }
  }

  /** Records in primary-key order within { gt | gte, lt | lte }, optionally reversed and limited. */
  scan(table, range) {
    try {
      return JSON.parse(this.#n.scan(table, checkOptions(range, 'scan range')));
    } catch (e) {
      throw toError(e);
    }
  }

  /** Records whose indexed `attribute` is within { gt | gte, lt | lte }, in index order. */
  find(table, attribute, range) {
    try {
      return JSON.parse(this.#n.find(table, attribute, checkOptions(range, 'find range')));
    } catch (e) {
      throw toError(e);
    }
  }

  /** Records whose indexed `attribute` equals `value` (arrays match per element). */
  findEq(table, attribute, value) {
    if (value === undefined) throw invalid('findEq needs a value');
    try {
      return JSON.parse(this.#n.findEq(table, attribute, value));
    } catch (e) {
      throw toError(e);
    }
  }

  count(table) {
    try {
      return this.#n.count(table);
    } catch (e) {
      throw toError(e);
    }
  }

  tableStats(table) {
    try {
      const s = this.#n.tableStats(table);
      return {
        records: s.records,
        bytes: s.bytes,
        dropped: s.dropped,
        diskBudgetBytes: orNull(s.diskBudgetBytes),
      };
    } catch (e) {
      throw toError(e);
    }
  }

  setTableBudget(table, diskBudgetBytes, onFull) {
    try {
      this.#n.setTableBudget(table, diskBudgetBytes ?? undefined, onFull ?? undefined);
    } catch (e) {
      throw toError(e);
    }
  }

  // ---- log

  logBounds() {
    try {
      return this.#n.logBounds();
    } catch (e) {
      throw toError(e);
    }
  }

  /** Log entries from sequence `fromSeq` on, oldest first, at most `limit`. */
  readLog(fromSeq = 1, limit = 1000) {
    try {
      return this.#n.readLog(optNumber(fromSeq, 'fromSeq'), optNumber(limit, 'limit'));
    } catch (e) {
      throw toError(e);
    }
  }

  /** Log entries committed at or after `sinceMs` (ms since the epoch). */
  readLogSince(sinceMs, limit = 1000) {
    try {
      return this.#n.readLogSince(optNumber(sinceMs, 'sinceMs'), optNumber(limit, 'limit'));
    } catch (e) {
      throw toError(e);
    }
  }

  // ---- listeners

  // ---- conflicts

  /**
   * The conflict log, oldest first: one entry per write that lost to a
   * concurrent one. The same entries are the records of the system table
   * `_conflicts`.
   */
  conflicts() {
    try {
      return this.#n.conflicts();
    } catch (e) {
      throw toError(e);
    }
  }

  /** Entries the conflict log dropped to stay within its size and age bounds. */
  conflictsDropped() {
    return this.#n.conflictsDropped();
  }

  /**
   * Makes `resolver(conflictCase)` decide the conflicts of `table` (created
   * with `conflict: 'resolver'`), replacing an earlier one. It runs on the
   * event loop and answers synchronously: 'take_remote', 'keep_local',
   * 'delete', or an object (the record to write). The library thread that
   * asks waits at most `options.timeoutMs` (default 5000) for the event
   * loop; a timeout, a throw or any other answer takes the remote version
   * and is logged (target "tidelog::resolver", see setLogCallback). A
   * resolver never keeps the process alive.
   */
  setConflictResolver(table, resolver, options) {
    checkFunction(resolver, 'the conflict resolver');
    const o = checkOptions(options, 'resolver options');
    if (o.timeoutMs !== undefined && (typeof o.timeoutMs !== 'number' || !Number.isFinite(o.timeoutMs))) {
      throw invalid(`invalid resolver options: timeoutMs must be a number of milliseconds, got ${describe(o.timeoutMs)}`);
    }
    try {
      this.#n.setConflictResolver(table, (c) => answerOf(resolver, c), o.timeoutMs);
    } catch (e) {
      throw toError(e);
    }
  }

  /** Removes the resolver of `table`; returns whether one was set. */
  clearConflictResolver(table) {
    try {
      return this.#n.clearConflictResolver(table);
    } catch (e) {
      throw toError(e);
    }
  }

  // ---- listeners

  /**
   * Calls `listener(event)` after every committed change to `table`, local
   * or replicated, in commit order, on the event loop. A listener that
   * throws (or rejects) is reported as a process warning
   * ('TidelogListenerWarning') and counted in `listenerErrors`; it stays
   * registered and nothing else is affected. Listeners never keep the
   * process alive. Returns an id for `removeListener`.
   */
  onChange(table, listener) {
    checkFunction(listener, 'the listener');
    let active = true;
    const dispatch = (ev) => {
      // null: no event, a call that only let the addon check its keep-alive.
      if (!active || ev === null) return;
      try {
        const r = listener(ev);
        if (r !== null && typeof r === 'object' && typeof r.then === 'function') {
          Promise.resolve(r).catch((err) => reportListenerError(this, table, err));
        }
      } catch (err) {
        reportListenerError(this, table, err);
      }
    };
    let id;
    try {
      id = this.#n.onChange(table, dispatch);
    } catch (e) {
      throw toError(e);
    }
    this.#listeners.set(id, () => {
      active = false;
    });
    return id;
  }

  /** Unregisters a listener; returns whether it was registered. */
  removeListener(id) {
    const mark = this.#listeners.get(id);
    if (mark) {
      mark();
      this.#listeners.delete(id);
    }
    try {
      return this.#n.removeListener(optNumber(id, 'listener id'));
    } catch (e) {
      throw toError(e);
    }
  }

  /**
   * Events of listener `id` waiting for the JavaScript thread; never more
   * than `listenerQueueMax` (past it they are dropped and counted in the
   * next delivered event's `missed`).
   */
  listenerQueued(id) {
    try {
      return this.#n.listenerQueued(optNumber(id, 'listener id'));
    } catch (e) {
      throw toError(e);
    }
  }

  // ---- replication

  /** Starts the replication engine: `{ tls: { cert, key, ca } }` (paths or PEM text) or `{ insecure: true }`. */
  startReplication(options) {
    const { json, spelled } = schemaOptions(options, 'replication options');
    try {
      this.#n.startReplication(json);
    } catch (e) {
      throw respelled(e, spelled);
    }
  }

  /** Accepts peers dialing in on `addr` (port 0 picks one); returns the bound "host:port". */
  listen(addr = '127.0.0.1:0') {
    try {
      return this.#n.listen(addr);
    } catch (e) {
      throw toError(e);
    }
  }

  addPeer(peer) {
    const { json, spelled } = schemaOptions(peer, 'peer');
    try {
      this.#n.addPeer(json);
    } catch (e) {
      throw respelled(e, spelled);
    }
  }

  updatePeer(peer) {
    const { json, spelled } = schemaOptions(peer, 'peer');
    try {
      this.#n.updatePeer(json);
    } catch (e) {
      throw respelled(e, spelled);
    }
  }

  removePeer(name) {
    try {
      this.#n.removePeer(name);
    } catch (e) {
      throw toError(e);
    }
  }

  peerStatus(name) {
    try {
      return parseStatus(this.#n.peerStatus(name));
    } catch (e) {
      throw toError(e);
    }
  }

  replicationStatus() {
    try {
      return parseStatus(this.#n.replicationStatus());
    } catch (e) {
      throw toError(e);
    }
  }

  /**
   * Resolves once `peer` has acknowledged this instance's log up to `seq`
   * (a number or a CommitInfo); rejects with TimeoutError after
   * `timeoutMs` (default 30 s), its message saying what the link looks
   * like, and with PeerError if the transaction writes a table this node
   * publishes to `peer` but `peer` does not subscribe to (it would never
   * be acknowledged). Waits on the libuv worker pool.
   */
  waitForAck(peer, seq, timeoutMs = 30_000) {
    try {
      const s = seq !== null && typeof seq === 'object' ? seq.seq : seq;
      return this.#n
        .waitForAck(peer, optNumber(s, 'seq'), optNumber(timeoutMs, 'timeoutMs'))
        .catch((e) => {
          throw toError(e);
        });
    } catch (e) {
      return Promise.reject(toError(e));
    }
  }

  /**
   * Resolves once every peer this instance publishes to has acknowledged
   * its log up to `seq` (a number or a CommitInfo; omitted or null:
   * everything committed so far); rejects as waitForAck does. Waits on the
   * libuv worker pool.
   */
  waitForDelivery(seq = null, timeoutMs = 30_000) {
    try {
      const s = seq !== null && typeof seq === 'object' ? seq.seq : seq;
      return this.#n
        .waitForDelivery(s === null || s === undefined ? null : optNumber(s, 'seq'), optNumber(timeoutMs, 'timeoutMs'))
        .catch((e) => {
          throw toError(e);
        });
    } catch (e) {
      return Promise.reject(toError(e));
    }
  }

  // ---- measurement hooks for bench/bench.js (not public API)

  _rustUpserts(table, from, to) {
    return benchHook(this.#n, '_rustUpserts')(table, from, to);
  }

  _rustGets(table, from, to, parse) {
    return benchHook(this.#n, '_rustGets')(table, from, to, parse);
  }

  _upsertValue(table, record) {
    return benchHook(this.#n, '_upsertValue')(table, record);
  }

  _getValue(table, key) {
    return benchHook(this.#n, '_getValue')(table, key);
  }
}

function stripResult(r) {
  return { seq: r.seq, origin: r.origin, stamp: r.stamp, stampMs: r.stampMs };
}

/** Opens (creating if needed) a data directory; see `Database`. */
// The benchmark's Rust loops exist only in an addon built with the `bench`
// feature (`npm run build:bench`); release addons leave them out.
function benchHook(native, name) {
  if (typeof native[name] !== 'function') {
    throw new UnsupportedError(
      `${name} is a benchmark hook, not in this build: build the addon with \`npm run build:bench\``,
    );
  }
  return native[name].bind(native);
}

function open(dir, options) {
  return new Database(dir, options);
}

/**
 * Writes a development CA and a certificate and key per node name into
 * `outDir` (refuses to overwrite). Returns paths; `nodes[name]` can be
 * passed as `startReplication({ tls: nodes[name] })`. For tests and trials;
 * production clusters use their own PKI.
 */
function devCerts(outDir, nodes, options) {
  const o = checkOptions(options, 'devCerts options');
  if (!Array.isArray(nodes)) throw invalid(`nodes must be an array of node names, got ${describe(nodes)}`);
  let r;
  try {
    r = native.devCerts(outDir, nodes, o.caName);
  } catch (e) {
    throw toError(e);
  }
  const byName = {};
  for (const n of r.nodes) byName[n.name] = { cert: n.cert, key: n.key, ca: r.ca };
  return { ca: r.ca, nodes: byName };
}

const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace'];

/**
 * Routes tidelog's log records (refused replication links, resyncs, failed
 * background work) to `callback({ level, target, message })` on this
 * thread, from `minLevel` up (default 'info'). `null` restores the default:
 * warnings and errors to stderr. The callback never keeps the process alive.
 */
function setLogCallback(callback, minLevel) {
  if (callback !== null && typeof callback !== 'function') {
    throw invalid(`setLogCallback: callback must be a function or null, got ${describe(callback)}`);
  }
  if (minLevel !== undefined && !LOG_LEVELS.includes(minLevel)) {
    throw invalid(`setLogCallback: minLevel must be one of ${LOG_LEVELS.map((l) => `'${l}'`).join(', ')}, got ${describe(minLevel)}`);
  }
  try {
    native.setLogCallback(callback ?? undefined, minLevel);
  } catch (e) {
    throw toError(e);
  }
}

module.exports = {
  open,
  Database,
  Transaction,
  devCerts,
  setLogCallback,
  ErrorCode,
  TidelogError,
  InvalidInputError,
  NotFoundError,
  AlreadyExistsError,
  ClosedError,
  LockedError,
  StorageError,
  CorruptError,
  ClockSkewError,
  TimeoutError,
  TlsError,
  PeerError,
  UnsupportedError,
};
