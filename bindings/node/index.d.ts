// Type definitions for tidelog (Node.js binding). Hand-written for the
// public API of index.js; test/types.test.js checks that every runtime
// export and Database/Transaction member is declared here and nothing more,
// and `tsc --noEmit` checks examples/typed.ts, which uses every API.

/** A JSON object: what a record is. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export interface JsonObject {
  [key: string]: JsonValue | undefined;
}

/** A record as reads return it: its attributes plus the two times tidelog adds. */
export type StoredRecord<T extends object = JsonObject> = T & {
  /** ms since the epoch of the record's first write. */
  __createdtime__: number;
  /** ms since the epoch of the record's latest write. */
  __updatedtime__: number;
};

/** A primary-key value: a string or an integer (bigint for 64-bit keys beyond 2^53). */
export type Key = string | number | bigint;

/**
 * A version stamp, the same on every replica. Both 64-bit, so bigints (as
 * every node id and stamp tidelog hands out; counters, sequences and ms
 * times are numbers).
 */
export interface Stamp {
  /** Hybrid logical clock: ms since the epoch << 16 | a counter. */
  time: bigint;
  /** Node id of the instance that made the write. */
  node: bigint;
}

/** What a committed write or transaction was given (the core's CommitInfoView). */
export interface CommitInfo {
  /** Local log sequence number (0 if the transaction wrote nothing); pass it to waitForAck. */
  seq: number;
  /** Node id of this instance, where it was committed (= stamp.node). */
  origin: bigint;
  /** The transaction's version stamp. */
  stamp: Stamp;
  /** Wall-clock ms of stamp.time (the records' __updatedtime__). */
  stampMs: number;
}

export type TransactionResult<T> = CommitInfo & {
  /** What the transaction callback returned (or its promise resolved to). */
  result: T;
};

/**
 * A duration option, the same in every binding: an integer of milliseconds
 * or a string with a unit ("250ms", "10s", "5m", "1h", "7d").
 */
export type Duration = number | string;

/** A size option: an integer of bytes or a string ("512KiB", "64MiB", "1GiB"). */
export type Size = number | string;

/**
 * Options of open(): core's options schema, shared with C, Python and the
 * serve config (camelCase here). An unknown or out-of-range option throws
 * InvalidInputError naming it and what it accepts.
 */
export interface OpenOptions {
  /** This node's name: unique in the cluster, equal to the DNS name in its TLS certificate. */
  nodeName: string;
  /** Storage engine, fixed when the directory is created. Default "fjall". */
  engine?: 'fjall' | 'sled';
  /** "grouped" (default): flushed together every flushInterval; "sync": every commit waits for the disk. */
  durability?: 'grouped' | 'sync';
  /** Default "50ms"; 1 ms to 1 h. */
  flushInterval?: Duration;
  /** "edge" (default): a 16 MiB memory budget for small gateways; "hub": 64 MiB. */
  profile?: 'edge' | 'hub';
  /** Caches and write buffers; default the profile's ("16MiB" at the edge), 4 MiB to 1 TiB; wins over the profile. */
  memoryBudget?: Size;
  /** Largest record (JSON bytes); default "1MiB", up to 1 GiB. */
  maxRecordBytes?: Size;
  /** Remote stamps further ahead of the local clock are refused; default "60s", 1 ms to 30 d. */
  maxClockSkew?: Duration;
  /** How often expired records are looked for; default "1s", 1 ms to 1 d. */
  expiryInterval?: Duration;
  /** How long the transaction log and tombstones stay. */
  retention?: RetentionOptions;
  /** Bytes the conflict log keeps, oldest dropped first (conflictsDropped counts them); default "4MiB", 0: no conflict log. */
  conflictLogMaxBytes?: Size;
  /** Conflict-log entries older than this are dropped; default "7d". */
  conflictLogMaxAge?: Duration;
  /** Change events queued for listeners before new ones are dropped and reported in ChangeEvent.missed; default 10000. Also bounds, per listener, the events waiting for the JavaScript thread. */
  listenerQueueMax?: number;
  /**
   * Open a directory whose engine journal was damaged by keeping its longest
   * valid prefix (the count dropped goes to the log) instead of throwing
   * CorruptError. Default false.
   */
  recoverPrefix?: boolean;
  /** @deprecated the older name of flushInterval (milliseconds). */
  flushIntervalMs?: number;
  /** @deprecated the older name of maxClockSkew (milliseconds). */
  maxClockSkewMs?: number;
  /** @deprecated the older name of expiryInterval (milliseconds). */
  expiryIntervalMs?: number;
}

/** How long the transaction log and tombstones stay (see the README). */
export interface RetentionOptions {
  /** The log is trimmed, oldest first, to stay under this; default "256MiB". */
  logMaxBytes?: Size;
  /** Entries older than this go even if a peer still needs them; default "7d". */
  logMaxAge?: Duration;
  /** Acknowledged entries stay at least this long; default 0. */
  logMinAge?: Duration;
  /** Acknowledged tombstones are purged once this old; default "1h". */
  tombstoneMinAge?: Duration;
  /** All tombstones are purged at this age; default "30d". */
  tombstoneMaxAge?: Duration;
}

export interface TableOptions {
  /** Attribute holding the primary key; default "id". */
  primaryKey?: string;
  /** Attributes with a secondary index (equality and range finds). */
  indexes?: string[];
  /** Records older than this many seconds are evicted locally (never replicated). */
  expiration?: number;
  /** The rule for concurrent writes from different nodes; default "lww". */
  conflict?: ConflictPolicy;
  /** Logical bytes (each live record's stored key plus its JSON text) the table may hold. */
  diskBudgetBytes?: number;
  /** What a write past the budget does; default "refuse". */
  onFull?: OnFull;
}

/**
 * What a write that would take a table past its budget does: fail with a
 * StorageError (code 'STORAGE'), or remove the records written longest ago
 * in the same commit, counted in TableStats.dropped.
 */
export type OnFull = 'refuse' | 'drop_oldest';

export interface TableInfo {
  name: string;
  primaryKey: string;
  indexes: string[];
  expiration: number | null;
  conflict: ConflictPolicy;
  diskBudgetBytes: number | null;
  onFull: OnFull;
}

/** A table's statistics, kept with every commit (read without a scan). */
export interface TableStats {
  /** Live records (what count returns). */
  records: number;
  /** Their logical bytes: what diskBudgetBytes limits. */
  bytes: number;
  /** Records dropped by onFull "drop_oldest". */
  dropped: number;
  diskBudgetBytes: number | null;
}

/**
 * A table's rule for concurrent writes: last writer wins, per-attribute
 * merge, keep the local version, or ask the table's resolver
 * (setConflictResolver).
 */
export type ConflictPolicy = 'lww' | 'merge' | 'keep_local' | 'resolver';

/** One entry of the conflict log: a write that lost to a concurrent one (a `_conflicts` record). */
export interface ConflictEntry {
  /** "<node name>:<n>", unique across nodes; the `_conflicts` key. */
  id: string;
  table: string;
  key: Key;
  /** The rule that decided. */
  rule: ConflictPolicy;
  /** Which write lost: a local one a remote write overwrote, or a remote one. */
  lost: 'local' | 'remote';
  winner: Stamp;
  winnerOrigin: string;
  loser: Stamp;
  loserOrigin: string;
  /** The losing record (under "merge" only the losing attributes); null for a delete. */
  loserValues: JsonObject | null;
  /** When it was logged, ms since the epoch. */
  atMs: number;
}

/** What a conflict resolver is asked: two concurrent versions of a record (null: that side deleted it). */
export interface ConflictCase {
  table: string;
  key: Key;
  local: JsonObject | null;
  localStamp: Stamp;
  remote: JsonObject | null;
  remoteStamp: Stamp;
}

/** A resolver's answer: keep one version, delete the record, or the record to write. */
export type Resolution = 'take_remote' | 'keep_local' | 'delete' | JsonObject;

export type ConflictResolver = (conflict: ConflictCase) => Resolution;

export interface ConflictResolverOptions {
  /** How long the library thread waits for the event loop's answer; default 5000, 1 to 600000. */
  timeoutMs?: number;
}

/** A range of primary keys (scan) or indexed values (find). */
export interface Range<V> {
  gt?: V;
  gte?: V;
  lt?: V;
  lte?: V;
  limit?: number;
}

export interface ScanOptions extends Range<Key> {
  reverse?: boolean;
}

export type FindOptions = Range<JsonValue>;

export interface LogBounds {
  /** Oldest sequence still in the log (last + 1 when empty). */
  first: number;
  /** Newest committed sequence (0 before the first commit). */
  last: number;
}

export interface LogWrite {
  table: string;
  key: string | number;
  op: 'put' | 'delete';
  /** The record after the write; null for a delete. */
  record: StoredRecord | null;
}

/**
 * One committed transaction, local or applied from a peer: the same fields
 * as the C ABI's and Python's log entries (the core's LogEntryView).
 */
export interface LogEntry {
  /** This instance's log sequence number of the transaction. */
  seq: number;
  /** Node id where the transaction was first committed (= stamp.node). */
  origin: bigint;
  /** Its version stamp, the same on every replica. */
  stamp: Stamp;
  /** Wall-clock ms of stamp.time (the records' __updatedtime__). */
  stampMs: number;
  /** True if this instance wrote it, false if it was applied from a peer. */
  local: boolean;
  /** When this instance wrote it to its log, ms since the epoch (what readLogSince compares). */
  loggedMs: number;
  writes: LogWrite[];
}

export interface Change {
  key: string | number;
  /** The record after the change; null if it was deleted. */
  record: StoredRecord | null;
}

export interface ChangeEvent {
  table: string;
  /** Local log sequence of the transaction. */
  seq: number;
  /** Node id where the change was first committed (= stamp.node). */
  origin: bigint;
  /** Its version stamp. */
  stamp: Stamp;
  /** Wall-clock ms of stamp.time. */
  stampMs: number;
  /** True if committed on this instance, false if applied from a peer. */
  local: boolean;
  changes: Change[];
  /** Events of this table dropped just before this one because the listener queue, or this listener's events waiting for the JavaScript thread, reached listenerQueueMax; 0 normally. */
  missed: number;
}

export type ChangeListener = (event: ChangeEvent) => void | Promise<void>;

export interface TlsFiles {
  /** Path of this node's PEM certificate chain, or the PEM text. */
  cert: string;
  /** Path of this node's PEM private key, or the PEM text. */
  key: string;
  /** Path of the PEM CA bundle that signs every peer, or the PEM text. */
  ca: string;
}

/** Options of startReplication(): the options schema's replication settings. */
export interface ReplicationOptions {
  /** Mutual TLS 1.3 (the default and only secure mode). */
  tls?: TlsFiles;
  /** Plaintext and unauthenticated: tests on a trusted loopback only. */
  insecure?: boolean;
  /** Default "1s". */
  heartbeatInterval?: Duration;
  /** A link that receives nothing this long is dropped; default "5s", longer than heartbeatInterval. */
  idleTimeout?: Duration;
  /** Default "10s". */
  connectTimeout?: Duration;
  /** First redial delay, doubling up to backoffMax; default "200ms". */
  backoffInitial?: Duration;
  /** Default "10s". */
  backoffMax?: Duration;
  /** Default "16MiB"; 64 KiB to 4 GiB. */
  maxFrameBytes?: Size;
  batchMaxTxns?: number;
  windowTxns?: number;
  syncChunkRows?: number;
  /** 1 to 256; default 2. */
  workerThreads?: number;
  /** @deprecated the older name of heartbeatInterval (milliseconds). */
  heartbeatIntervalMs?: number;
  /** @deprecated the older name of idleTimeout (milliseconds). */
  idleTimeoutMs?: number;
  /** @deprecated the older name of connectTimeout (milliseconds). */
  connectTimeoutMs?: number;
  /** @deprecated the older name of backoffInitial (milliseconds). */
  backoffInitialMs?: number;
  /** @deprecated the older name of backoffMax (milliseconds). */
  backoffMaxMs?: number;
}

export interface TableFlow {
  table: string;
  /** Send this instance's changes of the table to the peer. */
  publish?: boolean;
  /** Accept the peer's changes of the table. */
  subscribe?: boolean;
  /** With subscribe: the initial sync only takes rows changed at or after this time. */
  sinceMs?: number;
  /** With publish: 0-255; a backlog of a higher-priority table is sent first. */
  priority?: number;
  /** With publish on a budgeted link: flows only inside the budget's windows. */
  bulk?: boolean;
  /** With publish: still flows once the link's quota is spent. */
  exemptFromQuota?: boolean;
  /** With publish: only the newest version of a key within this many ms is sent. */
  coalesceMs?: number;
  /** With publish: only rows this predicate selects are sent, e.g. 'site = $peer.name' (see the README's row filters). */
  filter?: string;
  /** With publish: only these attributes (and always the key) are sent. */
  columns?: string[];
}

/** What a link may send: a rate cap, a quota per period, windows for bulk tables. */
export interface LinkBudget {
  maxBytesPerSec?: number;
  quotaBytes?: number;
  /** "day" (default) or "month", UTC. */
  quotaPeriod?: 'day' | 'month';
  /** UTC windows "HH:MM-HH:MM" when bulk tables flow. */
  windows?: string[];
}

export interface PeerConfig {
  /** The peer's node name (the DNS name in its certificate). */
  name: string;
  /** "host:port" to dial; without one, this instance waits for the peer to dial in. */
  address?: string;
  /**
   * More "host:port"s of the same logical peer (several hubs with one node name),
   * tried after `address` in order, wrapping; the dialer stays on the one that works
   * (at most 16 in all, no duplicates; needs `address`).
   */
  addresses?: string[];
  tables?: TableFlow[];
  /**
   * Whether the peer may forward other nodes' writes to this instance
   * (default: true with an address, false without; see the README's origin rules).
   */
  relays?: boolean;
  budget?: LinkBudget;
  /** Frame compression offered to the peer: "zstd" or "none". */
  compression?: 'zstd' | 'none';
  /** Send updates as the attributes that changed. */
  deltas?: boolean;
}

/**
 * Replication state of one table with one peer. The fields of the core's
 * status, camelCased; test/status_fields checks they stay the same.
 */
export interface TableStatus {
  table: string;
  publish: boolean;
  subscribe: boolean;
  /** "idle", "syncing", "streaming" or "refused: <reason>". */
  inbound: string;
  /** As inbound, or "not subscribed by the peer". */
  outbound: string;
  /** Versions not sent because a newer one of the key followed within coalesceMs. */
  coalesced: number;
  /** Why this table's flow stalled (the peer's `stalled`), or null. */
  stalled: string | null;
}

/** Bytes on one link, and what holds back what this node sends. */
export interface TrafficStatus {
  bytesOutRaw: number;
  bytesOutWire: number;
  bytesInRaw: number;
  bytesInWire: number;
  /** "zstd" or "none"; null while not connected. */
  compression: string | null;
  maxBytesPerSec: number | null;
  quotaLeftBytes: number | null;
  quotaPeriodEndMs: number | null;
  /** "rate", "quota" or "window"; null when nothing waits. */
  held: string | null;
  deltasSent: number;
  deltaMisses: number;
  coalesced: number;
}

/** Refused writes of one table in one direction, with the latest one. */
export interface RefusalStatus {
  table: string;
  /** "inbound": this node refused the peer's writes; "outbound": the peer refused this node's. */
  direction: string;
  count: number;
  /** Why the latest was refused: "clock_skew", "not_subscribed", "invalid_record" or "missing_table". */
  kind: string;
  reason: string;
  /** When the latest refusal happened (was learned of, outbound), ms since the epoch. */
  atMs: number;
  /** The refused transaction's stamp. */
  stamp: Stamp;
  /** Its sequence in the sender's log (0: a row of an initial sync). */
  seq: number;
}

/**
 * Everything about one peer's link: the core's status fields (README,
 * "Status"), camelCased. Counters, sequences and times are numbers (exact:
 * they stay below 2^53), node ids and stamp times bigints, and a field with nothing
 * to say yet is null.
 */
export interface PeerStatus {
  name: string;
  address: string | null;
  /** The peer rule that admitted this peer on first contact; null for a peer configured by name (admitted and not connected: dormant). */
  rule: string | null;
  /** When a link to the peer last went up or down, ms since the epoch (kept across restarts for an admitted peer); null: none known. */
  lastContactMs: number | null;
  connected: boolean;
  /** When the link last went up (connected) or down (not), ms since the epoch. */
  sinceMs: number | null;
  lastError: string | null;
  /** The peer's node id once it said hello. */
  nodeId: bigint | null;
  tables: TableStatus[];
  /** Highest local log sequence sent to the peer. */
  sentSeq: number;
  /** Highest local log sequence the peer acknowledged as applied. */
  ackedSeq: number;
  /** Highest peer log sequence this instance applied. */
  receivedSeq: number;
  /** Transactions still in this node's log after ackedSeq (trimmed ones are not counted). */
  backlogTxns: number;
  /** Their bytes (keys and values, as the log byte cap counts them); exact. */
  backlogBytes: number;
  /** Age of the oldest of them, in ms. */
  lagMs: number;
  /** The log no longer holds what follows ackedSeq: the peer's tables are synced from their rows instead. */
  resyncNeeded: boolean;
  /** Writes from the peer that were refused (not subscribed, clock skew). */
  refusedWrites: number;
  /** Frames refused for an origin the peer may not send (link closed). */
  originViolations: number;
  /** Writes from the peer this node already had (equal or newer stamp). */
  duplicatesReceived: number;
  /** Initial syncs and resyncs received from the peer. */
  syncsReceived: number;
  /** Resyncs sent to the peer because the log no longer held its resume point. */
  resyncsSent: number;
  /** Why the last resync (either way) happened. */
  lastResyncReason: string | null;
  /** Successful connections so far. */
  connects: number;
  /** Dials of this peer that failed in TLS (handshake or certificate refused). */
  tlsFailures: number;
  /**
   * Why the link stalled, until a later link moves: "no_ack_progress: ...",
   * "write_blocked: ..." (half-open) or "apply_stuck: ..."; null if not.
   */
  stalled: string | null;
  /** Stalls found since this instance opened; each tore its link down. */
  stalls: number;
  /** Bytes in and out, compression, budget and quota, deltas. */
  traffic: TrafficStatus;
  /** Refusals per table and direction; kept across link events. */
  refusals: RefusalStatus[];
}

export interface DevCertsOptions {
  caName?: string;
}

export interface DevCerts {
  /** Path of the CA certificate (ca.pem). */
  ca: string;
  /** Per node name: paths usable as `startReplication({ tls: nodes[name] })`. */
  nodes: Record<string, TlsFiles>;
}

/** Writes within `db.transaction(fn)`, committed together or not at all. */
export declare class Transaction {
  private constructor();
  insert(table: string, record: object): this;
  upsert(table: string, record: object): this;
  update(table: string, patch: object): this;
  delete(table: string, key: Key): this;
  /** Stages an increment of the integer attribute `attr` (default by 1). */
  increment(table: string, key: Key, attr: string, by?: number | bigint): this;
  /** Number of staged writes. */
  readonly length: number;
  /** True once committed or rolled back. */
  readonly finished: boolean;
}

export declare class Database {
  constructor(dir: string, options: OpenOptions);
  static open(dir: string, options: OpenOptions): Database;
  /** Change-listener calls that threw (each also emitted as a process warning). */
  listenerErrors: number;

  close(): void;
  readonly nodeName: string;
  /** This instance's node id (the origin of its changes). */
  readonly nodeId: bigint;
  /**
   * Transactions this handle lost: at open to a damaged journal (with
   * `recoverPrefix: true`), or to a failed write the engine could not keep
   * (sled, grouped durability).
   */
  readonly droppedTransactions: number;
  readonly path: string;
  readonly engine: 'fjall' | 'sled';
  readonly closed: boolean;
  flush(): void;
  diskBytes(): number;

  createTable(name: string, options?: TableOptions): TableInfo;
  ensureTable(name: string, options?: TableOptions): boolean;
  dropTable(name: string): void;
  listTables(): TableInfo[];
  describeTable(name: string): TableInfo;

  insert(table: string, record: object): CommitInfo;
  upsert(table: string, record: object): CommitInfo;
  update(table: string, patch: object): CommitInfo;
  delete(table: string, key: Key): boolean;
  /** Adds `by` (default 1) to the integer attribute `attr`, creating the record if absent; increments from different nodes add up. */
  increment(table: string, key: Key, attr: string, by?: number | bigint): CommitInfo;
  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<TransactionResult<T>>;
  transaction<T>(fn: (tx: Transaction) => T): TransactionResult<T>;
  transactionAsync<T>(fn: (tx: Transaction) => T): Promise<TransactionResult<T>>;
  insertAsync(table: string, record: object): Promise<CommitInfo>;
  upsertAsync(table: string, record: object): Promise<CommitInfo>;
  updateAsync(table: string, patch: object): Promise<CommitInfo>;
  deleteAsync(table: string, key: Key): Promise<CommitInfo>;

  get<T extends object = JsonObject>(table: string, key: Key): StoredRecord<T> | null;
  getMany<T extends object = JsonObject>(table: string, keys: Key[]): (StoredRecord<T> | null)[];
  scan<T extends object = JsonObject>(table: string, range?: ScanOptions): StoredRecord<T>[];
  find<T extends object = JsonObject>(table: string, attribute: string, range?: FindOptions): StoredRecord<T>[];
  findEq<T extends object = JsonObject>(table: string, attribute: string, value: JsonValue): StoredRecord<T>[];
  count(table: string): number;
  /** A table's live records, their logical bytes and what its budget dropped, without a scan. */
  tableStats(table: string): TableStats;
  /** Sets (null: removes) a table's disk budget while running. */
  setTableBudget(table: string, diskBudgetBytes: number | null, onFull?: OnFull): void;

  logBounds(): LogBounds;
  readLog(fromSeq?: number, limit?: number): LogEntry[];
  readLogSince(sinceMs: number, limit?: number): LogEntry[];

  /** The conflict log, oldest first (also the system table `_conflicts`). */
  conflicts(): ConflictEntry[];
  /** Entries the conflict log dropped to stay within its bounds. */
  conflictsDropped(): number;
  /** Makes `resolver` decide the conflicts of `table` (created with conflict "resolver"). */
  setConflictResolver(table: string, resolver: ConflictResolver, options?: ConflictResolverOptions): void;
  /** Removes the resolver of `table`; returns whether one was set. */
  clearConflictResolver(table: string): boolean;
  onChange(table: string, listener: ChangeListener): number;
  removeListener(id: number): boolean;
  /** Events of listener `id` waiting for the JavaScript thread (at most `listenerQueueMax`; the rest are dropped and counted in the next event's `missed`). */
  listenerQueued(id: number): number;

  startReplication(options: ReplicationOptions): void;
  listen(addr?: string): string;
  addPeer(peer: PeerConfig): void;
  updatePeer(peer: PeerConfig): void;
  removePeer(name: string): void;
  peerStatus(name: string): PeerStatus;
  replicationStatus(): PeerStatus[];
  /**
   * Resolves once `peer` has acknowledged this instance's log up to `seq`.
   * Rejects with TimeoutError (saying what the link looks like) after
   * `timeoutMs` (default 30 s); with PeerError if the transaction writes
   * a table this node publishes to `peer` but `peer` does not subscribe to,
   * if `peer` refused it (the message names the table and why), or if its
   * log entry was trimmed while `peer` skips a published table (delivery
   * cannot be proven); with ClockSkewError if `peer` refused its stamp.
   */
  waitForAck(peer: string, seq: number | CommitInfo, timeoutMs?: number): Promise<void>;
  /**
   * Resolves once every peer this instance publishes to has acknowledged its
   * log up to `seq` (omitted or null: everything committed so far). Rejects
   * as waitForAck does.
   */
  waitForDelivery(seq?: number | CommitInfo | null, timeoutMs?: number): Promise<void>;
}

export declare function open(dir: string, options: OpenOptions): Database;
export declare function devCerts(outDir: string, nodes: string[], options?: DevCertsOptions): DevCerts;

export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** One of tidelog's log records. */
export interface LogRecord {
  level: LogLevel;
  /** Where it comes from: 'tidelog::repl', 'tidelog::storage', 'tidelog::maintenance', 'tidelog::listener'. */
  target: string;
  message: string;
}

/**
 * Routes tidelog's log records (refused replication links, resyncs, failed
 * background work) to `callback` on this thread, from `minLevel` up
 * (default 'info'). `null` restores the default: warnings and errors to
 * stderr. The callback never keeps the process alive.
 */
export declare function setLogCallback(callback: ((record: LogRecord) => void) | null, minLevel?: LogLevel): void;

export type ErrorCodeName =
  | 'INVALID_INPUT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'CLOSED'
  | 'LOCKED'
  | 'STORAGE'
  | 'CORRUPT'
  | 'CLOCK_SKEW'
  | 'TIMEOUT'
  | 'TLS'
  | 'PEER'
  | 'UNSUPPORTED';

export declare const ErrorCode: { readonly [K in ErrorCodeName]: K };

/** Every error tidelog throws; `code` says which kind. */
export declare class TidelogError extends Error {
  constructor(message: string, code?: string, options?: { cause?: unknown });
  code: ErrorCodeName | string;
}
/** Malformed input: bad JSON, not an object, bad key, bad name or option. Nothing changed. */
export declare class InvalidInputError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'INVALID_INPUT';
}
/** Unknown table, record (update) or peer. */
export declare class NotFoundError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'NOT_FOUND';
}
/** Insert of an existing key, existing table or peer. */
export declare class AlreadyExistsError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'ALREADY_EXISTS';
}
/** The database was closed. */
export declare class ClosedError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'CLOSED';
}
/** The data directory is open in another handle or process. */
export declare class LockedError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'LOCKED';
}
export declare class StorageError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'STORAGE';
}
export declare class CorruptError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'CORRUPT';
}
export declare class ClockSkewError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'CLOCK_SKEW';
}
/** A wait (waitForAck) ran out of time. */
export declare class TimeoutError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'TIMEOUT';
}
/** TLS configuration or handshake problem (bad certificate paths, ...). */
export declare class TlsError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'TLS';
}
/** Listening failed, or a peer misbehaved. */
export declare class PeerError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'PEER';
}
/** Not allowed in the current configuration (e.g. replication not started). */
export declare class UnsupportedError extends TidelogError {
  constructor(message: string, options?: { cause?: unknown });
  code: 'UNSUPPORTED';
}
