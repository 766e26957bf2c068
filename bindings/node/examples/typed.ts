// Uses every public name of tidelog with its types; `npm run typecheck`
// (tsc --noEmit) checks it against index.d.ts. Also runnable after
// compiling: it does the edge/cloud round trip on 127.0.0.1.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  open,
  Database,
  Transaction,
  devCerts,
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
  type ChangeEvent,
  type CommitInfo,
  type ConflictCase,
  type ConflictEntry,
  type ConflictPolicy,
  type Resolution,
  type DevCerts,
  type LogEntry,
  type PeerStatus,
  type StoredRecord,
  type TableInfo,
  type TransactionResult,
} from 'tidelog';

interface Reading {
  id: number;
  sensor: string;
  value: number;
}

interface Threshold {
  id: string;
  max: number;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidelog-typed-'));
  const certs: DevCerts = devCerts(path.join(dir, 'pki'), ['edge-1', 'cloud'], { caName: 'typed CA' });

  const edge: Database = open(path.join(dir, 'edge'), {
    nodeName: 'edge-1',
    engine: 'fjall',
    durability: 'grouped',
    flushIntervalMs: 50,
    memoryBudget: 16 << 20,
    maxRecordBytes: 1 << 20,
    maxClockSkewMs: 60_000,
    expiryIntervalMs: 1000,
  });
  const cloud = Database.open(path.join(dir, 'cloud'), { nodeName: 'cloud' });
  const also = new Database(path.join(dir, 'third'), { nodeName: 'third', engine: 'sled', durability: 'sync' });
  also.close();

  const info: TableInfo = edge.createTable('sensor_data', { indexes: ['sensor'], expiration: 3600 });
  const created: boolean = edge.ensureTable('alerts', { primaryKey: 'id' });
  edge.ensureTable('thresholds');
  cloud.ensureTable('thresholds');
  cloud.ensureTable('alerts');
  const tables: TableInfo[] = edge.listTables();
  const described: TableInfo = edge.describeTable(info.name);
  const expiration: number | null = described.expiration;
  void created;
  void tables;
  void expiration;

  const c1: CommitInfo = edge.insert('sensor_data', { id: 1, sensor: 's-7', value: 21.5 });
  const c2: CommitInfo = edge.upsert('sensor_data', { id: 2, sensor: 's-7', value: 93 });
  edge.update('sensor_data', { id: 2, value: 94 });
  const existed: boolean = edge.delete('sensor_data', 1);
  const seqs: number[] = [c1.seq, c2.seq];
  const time: bigint = c2.stamp.time;
  void existed;
  void seqs;
  void time;

  const tx: TransactionResult<string> = edge.transaction((t: Transaction) => {
    t.upsert('sensor_data', { id: 3, sensor: 's-8', value: 1 }).insert('alerts', { id: 'a-1', reading: 3 });
    t.update('sensor_data', { id: 2, value: 95 });
    t.delete('sensor_data', 3);
    const n: number = t.length;
    const done: boolean = t.finished;
    return `staged ${n} ${done}`;
  });
  const txAsync: TransactionResult<number> = await edge.transaction(async (t) => {
    t.upsert('sensor_data', { id: 4, sensor: 's-8', value: 2 });
    return 4;
  });
  const committed: TransactionResult<void> = await edge.transactionAsync((t) => {
    t.upsert('sensor_data', { id: 5, sensor: 's-9', value: 3 });
  });
  const a1: CommitInfo = await edge.insertAsync('sensor_data', { id: 6, sensor: 's-9', value: 4 });
  await edge.upsertAsync('sensor_data', { id: 7, sensor: 's-9', value: 5 });
  await edge.updateAsync('sensor_data', { id: 7, value: 6 });
  await edge.deleteAsync('sensor_data', 7);
  void tx.result;
  void txAsync.result;
  void committed.seq;
  void a1;

  const r: StoredRecord<Reading> | null = edge.get<Reading>('sensor_data', 2);
  if (r) {
    const v: number = r.value;
    const t: number = r.__updatedtime__;
    void v;
    void t;
  }
  const many: (StoredRecord<Reading> | null)[] = edge.getMany<Reading>('sensor_data', [2, 4, 99n]);
  const range: StoredRecord<Reading>[] = edge.scan<Reading>('sensor_data', { gte: 2, lt: 10, reverse: true, limit: 5 });
  const hot: StoredRecord<Reading>[] = edge.find<Reading>('sensor_data', 'sensor', { gt: 's-7', lte: 's-9', limit: 10 });
  const eq = edge.findEq<Reading>('sensor_data', 'sensor', 's-8');
  const n: number = edge.count('sensor_data');
  void many;
  void range;
  void hot;
  void eq;
  void n;

  const bounds = edge.logBounds();
  const log: LogEntry[] = edge.readLog(bounds.first, 100);
  const recent: LogEntry[] = edge.readLogSince(Date.now() - 60_000);
  for (const e of log) {
    for (const w of e.writes) {
      const op: 'put' | 'delete' = w.op;
      void op;
      void w.record?.__createdtime__;
    }
    void e.stamp.time;
    void e.origin;
    void e.loggedMs;
  }
  void recent;

  // Concurrent writes: a counter, a resolver, the conflict log.
  const policy: ConflictPolicy = edge.createTable('counts', { conflict: 'merge' }).conflict;
  edge.createTable('settled', { conflict: 'resolver', primaryKey: 'name' });
  const bumped: CommitInfo = edge.increment('counts', 'visits', 'n', 2);
  edge.transaction((t) => void t.increment('counts', 'visits', 'n').increment('counts', 'visits', 'n', 3n));
  edge.setConflictResolver(
    'settled',
    (c: ConflictCase): Resolution => {
      const newer = c.remoteStamp.time > c.localStamp.time ? c.remote : c.local;
      return newer === null ? 'delete' : { ...newer, settled: true };
    },
    { timeoutMs: 2000 },
  );
  const cleared: boolean = edge.clearConflictResolver('settled');
  const entries: ConflictEntry[] = edge.conflicts();
  for (const e of entries) {
    const lost: 'local' | 'remote' = e.lost;
    void [lost, e.winner.time, e.loserValues, e.atMs, e.rule];
  }
  const dropped: number = edge.conflictsDropped();
  void [policy, bumped, cleared, dropped];

  const events: ChangeEvent[] = [];
  const id: number = edge.onChange('thresholds', (ev: ChangeEvent) => {
    events.push(ev);
    for (const c of ev.changes) void c.record;
  });
  const asyncId = edge.onChange('alerts', async () => {});
  const removed: boolean = edge.removeListener(asyncId);
  void removed;

  cloud.startReplication({ tls: certs.nodes['cloud'], heartbeatIntervalMs: 200, idleTimeoutMs: 2000 });
  const addr: string = cloud.listen('127.0.0.1:0');
  cloud.addPeer({ name: 'edge-1', tables: [{ table: 'thresholds', publish: true }, { table: 'alerts', subscribe: true }] });
  edge.startReplication({
    tls: { cert: certs.nodes['edge-1'].cert, key: certs.nodes['edge-1'].key, ca: certs.ca },
    connectTimeoutMs: 5000,
    backoffInitialMs: 100,
    backoffMaxMs: 1000,
    maxFrameBytes: 1 << 20,
    batchMaxTxns: 100,
    windowTxns: 1000,
    syncChunkRows: 100,
    workerThreads: 1,
  });
  edge.addPeer({
    name: 'cloud',
    address: addr,
    tables: [{ table: 'thresholds', subscribe: true, sinceMs: 0 }, { table: 'alerts', publish: true }],
  });
  edge.updatePeer({ name: 'cloud', address: addr, tables: [{ table: 'thresholds', subscribe: true }, { table: 'alerts', publish: true }] });
  cloud.upsert('thresholds', { id: 's-7', max: 90 } satisfies Threshold);
  const alert = edge.insert('alerts', { id: 'a-2', reading: 2 });
  await edge.waitForAck('cloud', alert, 10_000);
  await edge.waitForAck('cloud', alert.seq);
  await edge.waitForDelivery(alert, 10_000);
  await edge.waitForDelivery();
  const status: PeerStatus = edge.peerStatus('cloud');
  const all: PeerStatus[] = cloud.replicationStatus();
  void status.connected;
  const reason: string | null = status.lastResyncReason;
  void reason;
  void all;
  edge.removeListener(id);
  edge.removePeer('cloud');

  try {
    edge.insert('alerts', { id: 'a-2' });
  } catch (e) {
    if (e instanceof AlreadyExistsError) {
      const code: 'ALREADY_EXISTS' = e.code;
      void code;
    } else if (e instanceof TidelogError) {
      void e.code;
    }
  }
  const classes = [
    InvalidInputError,
    NotFoundError,
    ClosedError,
    LockedError,
    StorageError,
    CorruptError,
    ClockSkewError,
    TimeoutError,
    TlsError,
    PeerError,
    UnsupportedError,
  ];
  void classes;
  const codes: string[] = Object.values(ErrorCode);
  void codes;

  edge.flush();
  const bytes: number = edge.diskBytes();
  const meta = [edge.nodeName, edge.nodeId, edge.path, edge.engine, edge.closed, edge.listenerErrors, bytes];
  void meta;
  edge.dropTable('sensor_data');
  edge.close();
  cloud.close();
}

void main();
