//! The narrow storage interface tidelog needs from a key-value engine:
//! a few fixed keyspaces, point gets, ordered range scans both ways, one
//! atomic write batch across keyspaces, and flush. Everything above this
//! module is engine-agnostic; both engines run the same test suite.
//!
//! An enum rather than a trait object: there are exactly two engines, the
//! hot paths (get, commit) stay statically dispatched, and values come back
//! as the engines' own reference-counted buffers without a copy.

use std::ops::{Bound, Deref};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The engine is reopened after a full disk only once this much is free,
/// so that what it still holds in memory can be written out when it closes.
pub(crate) const RESUME_FREE_BYTES: u64 = 4 << 20;

/// Which storage engine a data directory uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// LSM-tree engine; the default: faster commits and a smaller disk footprint.
    #[default]
    Fjall,
    /// B-tree-ish engine, selectable for compatibility with the first prototype.
    Sled,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Fjall => "fjall",
            EngineKind::Sled => "sled",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fjall" => Ok(EngineKind::Fjall),
            "sled" => Ok(EngineKind::Sled),
            other => Err(Error::invalid(
                "engine",
                format!("`{other}` is not an engine; use `fjall` or `sled`"),
            )),
        }
    }
}

/// The fixed keyspaces. Tables live inside them under a table-id prefix, so
/// creating a table never opens another LSM tree (each costs memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// Table definitions, node identity, resume cursors, counters.
    Meta = 0,
    /// Records and tombstones.
    Rows = 1,
    /// Secondary index entries and the expiry index.
    Index = 2,
    /// The transaction log, keyed by sequence number.
    Log = 3,
}

const SPACES: [Space; 4] = [Space::Meta, Space::Rows, Space::Index, Space::Log];

impl Space {
    fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Rows => "rows",
            Space::Index => "index",
            Space::Log => "log",
        }
    }
}

/// A value or key handed back by an engine, without copying.
#[derive(Clone)]
pub(crate) enum Bytes {
    Fjall(fjall::Slice),
    Sled(sled::IVec),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Fjall(s) => s,
            Bytes::Sled(v) => v,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &**self)
    }
}

/// A set of writes that commit atomically or not at all.
#[derive(Default, Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) ops: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub(crate) fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((space, key, Some(value)));
    }
    pub(crate) fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.ops.push((space, key, None));
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub(crate) type KvIter<'a> = Box<dyn Iterator<Item = Result<(Bytes, Bytes)>> + 'a>;

/// Tuning handed to the engine at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineTuning {
    /// Total bytes the engine may use for caches and write buffers.
    pub(crate) memory_budget: u64,
}

/// How a memory budget is spread over fjall's block cache and the
/// keyspaces' write buffers (memtables).
///
/// Every write puts its record and its log entry into memory first; the
/// larger those two memtables, the fewer and larger the flushes and the
/// less compaction per record. Measured on the replication benchmark
/// (200,000 records, 2 cores), memtables of 4 MiB replicated 1000-record
/// transactions at about 0.6x the rate of 32 MiB ones. So the record and
/// log spaces get most of the write buffers, the index space less, and the
/// metadata space (cursors, acknowledgements) the minimum; the block cache
/// keeps a quarter, since reads of recent data hit the memtables anyway.
/// Index entries of scalar attributes carry a copy of their row (see
/// `index_entries::CarriesRow`), and their keys arrive in no order, so
/// every flush of the index space is merged further down: with 2/16 of
/// the budget for it (rows 5, log 5) 1,000,000 single-record commits took
/// 1.2x as long as without the copies, with 3/16 (log 4) 1.06-1.13x
/// (footprint child, 16 MiB, alternating runs).
///
/// A memtable costs about twice what fjall counts for it (its skiplist
/// nodes and key and value buffers): under heaptrack, 1,000,000
/// single-record commits at 16 MiB allocated 27.6 MiB of memtables when
/// fjall's count peaked at 14-15 MiB. So memtables are given half their
/// share, and the budget holds for what they really take.
/// Measured with the local benchmark's footprint child at 16 MiB (with
/// the index and log spaces' filters gone, see [`keyspace_options`]):
/// peak RSS 41 MiB -> 29-33 MiB, writes 1.2-1.35x as long.
///
/// The committing thread seals buffers at this open's sizes
/// ([`seal_full_buffers`]), so a different budget at a later open takes
/// effect for write buffers too (fjall's own stored size is a ceiling far
/// above them, set when a keyspace is created; directories made before
/// that keep their stored size, which then caps a larger budget's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FjallSizes {
    pub(crate) cache: u64,
    pub(crate) rows: u64,
    pub(crate) index: u64,
    pub(crate) log: u64,
    pub(crate) meta: u64,
    /// The size compactions cut tables at, in every space (fixed when a
    /// keyspace is created; see [`keyspace_options`]).
    pub(crate) table: u64,
}

impl FjallSizes {
    /// fjall's smallest sensible memtable.
    const MIN_MEMTABLE: u64 = 1 << 20;
    /// What a memtable really takes, per byte fjall counts (see above).
    pub(crate) const MEMTABLE_OVERHEAD: u64 = 2;
    /// Table sizes: 4 MiB at the edge profile, 16 MiB at the hub's, and
    /// fjall's own 64 MiB from a 256 MiB budget on.
    const MIN_TABLE: u64 = 4 << 20;
    const MAX_TABLE: u64 = 64 << 20;

    pub(crate) fn for_budget(budget: u64) -> FjallSizes {
        let sixteenth = budget / 16;
        let memtable = |sixteenths: u64| {
            (sixteenths * sixteenth / Self::MEMTABLE_OVERHEAD).max(Self::MIN_MEMTABLE)
        };
        FjallSizes {
            cache: (4 * sixteenth)
                .saturating_sub(Self::MIN_MEMTABLE)
                .max(Self::MIN_MEMTABLE / 2),
            rows: memtable(5),
            log: memtable(4),
            index: memtable(3),
            // Cursors and statistics: small entries, read back by key.
            meta: Self::MIN_MEMTABLE / 2,
            table: (budget / 4).clamp(Self::MIN_TABLE, Self::MAX_TABLE),
        }
    }

    fn memtable(&self, space: Space) -> u64 {
        match space {
            Space::Meta => self.meta,
            Space::Rows => self.rows,
            Space::Index => self.index,
            Space::Log => self.log,
        }
    }
}

pub(crate) enum Store {
    Fjall {
        db: fjall::Database,
        spaces: [fjall::Keyspace; 4],
        /// This open's budget split; the committing thread seals a write
        /// buffer past its size (see [`seal_full_buffers`]).
        sizes: FjallSizes,
    },
    Sled {
        db: sled::Db,
        /// sled keeps a failed write's error and returns it from later
        /// reads too; set when a read got one, so that the next write
        /// reopens the engine.
        failed: std::sync::atomic::AtomicBool,
        /// The data directory (for errors).
        dir: PathBuf,
    },
}

impl Store {
    /// Opens (or creates) the engine's files under `dir`.
    pub(crate) fn open(kind: EngineKind, dir: &Path, tuning: EngineTuning) -> Result<Store> {
        match kind {
            EngineKind::Fjall => Self::open_fjall(dir, tuning, None),
            EngineKind::Sled => {
                // One tree with a keyspace prefix byte: sled batches are only
                // atomic within one tree, and multi-tree transactions are slow.
                let config = sled::Config::new()
                    .path(dir)
                    .cache_capacity(tuning.memory_budget)
                    .flush_every_ms(None);
                // sled's background threads can hold its file lock for a
                // moment after the previous handle was dropped (our own
                // directory lock already proved no live handle remains), so
                // a reopen right after a close waits for it briefly.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                loop {
                    // sled 0.34 panics on some damaged files (a zeroed block
                    // in its log: "tried to serialize Uninitialized") where
                    // it should fail; that is a corrupt directory, not a
                    // reason to take the process down.
                    let opened =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                            .map_err(|panic| {
                                let why = panic
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_else(|| "no message".into());
                                Error::Corrupt(format!(
                                    "sled failed while reading its files under {}: {why}",
                                    dir.display()
                                ))
                            })?;
                    match opened {
                        Ok(db) => {
                            return Ok(Store::Sled {
                                db,
                                failed: Default::default(),
                                dir: dir.parent().unwrap_or(dir).to_path_buf(),
                            })
                        }
                        Err(sled::Error::Io(e))
                            if e.to_string().contains("could not acquire lock")
                                && std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Opens fjall with its default worker count, or `workers` (tests).
    pub(crate) fn open_fjall(
        dir: &Path,
        tuning: EngineTuning,
        workers: Option<usize>,
    ) -> Result<Store> {
        let sizes = FjallSizes::for_budget(tuning.memory_budget);
        // Like sled's, fjall's file lock can outlive a dropped handle
        // for a moment (its workers hold it); our directory lock
        // already proved no live handle remains, so wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let mut builder = fjall::Database::builder(dir)
                .cache_size(sizes.cache)
                .max_journaling_size(64 << 20);
            if let Some(n) = workers {
                builder = builder.worker_threads(n);
            }
            match builder.open() {
                Err(fjall::Error::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let mut opened = Vec::with_capacity(SPACES.len());
        for space in SPACES {
            let ks = db.keyspace(space.name(), || keyspace_options(space, &sizes))?;
            opened.push(ks);
        }
        let spaces: [fjall::Keyspace; 4] = opened
            .try_into()
            .map_err(|_| Error::Storage("fjall keyspace count mismatch".into()))?;
        Ok(Store::Fjall { db, spaces, sizes })
    }

    pub(crate) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>> {
        match self {
            Store::Fjall { spaces, .. } => Ok(spaces[space as usize].get(key)?.map(Bytes::Fjall)),
            Store::Sled { db, failed, dir } => Ok(db
                .get(sled_key(space, key))
                .map_err(|e| sled_read_error(failed, dir, e))?
                .map(Bytes::Sled)),
        }
    }

    /// Scans keys in `[lo, hi]` by the given bounds, ascending or descending.
    pub(crate) fn range(
        &self,
        space: Space,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        reverse: bool,
    ) -> KvIter<'_> {
        match self {
            Store::Fjall { spaces, .. } => {
                let iter = spaces[space as usize].range::<Vec<u8>, _>((lo, hi));
                let map = |g: fjall::Guard| {
                    g.into_inner()
                        .map(|(k, v)| (Bytes::Fjall(k), Bytes::Fjall(v)))
                        .map_err(Error::from)
                };
                if reverse {
                    Box::new(iter.rev().map(map))
                } else {
                    Box::new(iter.map(map))
                }
            }
            Store::Sled { db, failed, dir } => {
                let lo = match lo {
                    Bound::Included(k) => Bound::Included(sled_key(space, &k)),
                    Bound::Excluded(k) => Bound::Excluded(sled_key(space, &k)),
                    Bound::Unbounded => Bound::Included(vec![space as u8]),
                };
                let hi = match hi {
                    Bound::Included(k) => Bound::Included(sled_key(space, &k)),
                    Bound::Excluded(k) => Bound::Excluded(sled_key(space, &k)),
                    Bound::Unbounded => Bound::Excluded(vec![space as u8 + 1]),
                };
                let iter = db.range::<Vec<u8>, _>((lo, hi));
                let map = move |r: sled::Result<(sled::IVec, sled::IVec)>| {
                    r.map(|(k, v)| (Bytes::Sled(k.subslice(1, k.len() - 1)), Bytes::Sled(v)))
                        .map_err(|e| sled_read_error(failed, dir, e))
                };
                if reverse {
                    Box::new(iter.rev().map(map))
                } else {
                    Box::new(iter.map(map))
                }
            }
        }
    }

    /// Scans every key that starts with `prefix`.
    pub(crate) fn prefix(&self, space: Space, prefix: &[u8], reverse: bool) -> KvIter<'_> {
        let hi = match prefix_successor(prefix) {
            Some(next) => Bound::Excluded(next),
            None => Bound::Unbounded,
        };
        self.range(space, Bound::Included(prefix.to_vec()), hi, reverse)
    }

    /// Applies every write of `batch` atomically; with `sync` it is durable
    /// on disk before this returns. A failure says whether the batch may
    /// have reached the engine (see [`WriteFailure::applied`]).
    pub(crate) fn commit(&self, batch: Batch, sync: bool) -> Result<(), WriteFailure> {
        match self {
            Store::Fjall { db, spaces, sizes } => {
                let mut touched = [false; 4];
                let mut b = db.batch();
                // fjall copies keys and values into its own buffers either
                // way; borrowing them keeps the batch for a failure.
                for (space, key, value) in &batch.ops {
                    touched[*space as usize] = true;
                    let ks = &spaces[*space as usize];
                    match value {
                        Some(v) => b.insert(ks, key.as_slice(), v.as_slice()),
                        None => b.remove(ks, key.as_slice()),
                    }
                }
                // fjall writes a batch to its journal before it touches a
                // memtable, so after a failed commit reads still see the
                // state before it; but what of the batch reached the
                // journal's buffer may still be written out whole, so it
                // can turn up when the engine reopens. The batch comes back
                // with the failure for the caller to undo it then.
                // Persisting is a separate step so that its failure (the
                // batch is then in the memtables) can be told apart.
                if let Err(e) = b.commit() {
                    let mut f = WriteFailure::fjall(e, true);
                    f.batch = Some(batch);
                    return Err(f);
                }
                seal_full_buffers(spaces, sizes, touched)
                    .map_err(|e| WriteFailure::fjall(e, true))?;
                if sync {
                    db.persist(fjall::PersistMode::SyncData)
                        .map_err(|e| WriteFailure::fjall(e, true))?;
                }
                Ok(())
            }
            Store::Sled { db, .. } => {
                let mut b = sled::Batch::default();
                for (space, key, value) in batch.ops {
                    let k = sled_key(space, &key);
                    match value {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                // sled can fail part way through applying a batch in
                // memory, so any failure may have left some of it there.
                db.apply_batch(b).map_err(|e| WriteFailure::sled(e, true))?;
                if sync {
                    db.flush().map_err(|e| WriteFailure::sled(e, true))?;
                }
                Ok(())
            }
        }
    }

    /// Makes every commit so far durable on disk.
    pub(crate) fn flush(&self) -> Result<(), WriteFailure> {
        match self {
            Store::Fjall { db, .. } => db
                .persist(fjall::PersistMode::SyncData)
                .map_err(|e| WriteFailure::fjall(e, false))?,
            Store::Sled { db, .. } => {
                db.flush().map_err(|e| WriteFailure::sled(e, false))?;
            }
        }
        Ok(())
    }

    /// Bytes of `space`'s table files (fjall); `None` where the engine
    /// keeps every space in one tree (sled).
    pub(crate) fn space_disk_bytes(&self, space: Space) -> Option<u64> {
        match self {
            Store::Fjall { spaces, .. } => Some(spaces[space as usize].disk_space()),
            Store::Sled { .. } => None,
        }
    }

    /// Bytes of the engine's journal (fjall): recent writes of every space
    /// that are not yet in table files.
    pub(crate) fn journal_bytes(&self) -> Result<Option<u64>> {
        match self {
            Store::Fjall { db, .. } => Ok(Some(db.journal_disk_space()?)),
            Store::Sled { .. } => Ok(None),
        }
    }

    /// Writes every space's write buffer out to table files and waits, so
    /// that the table files hold everything committed.
    pub(crate) fn write_out_buffers(&self) -> Result<()> {
        match self {
            Store::Fjall { spaces, .. } => {
                for ks in spaces {
                    ks.rotate_memtable_and_wait()?;
                }
                Ok(())
            }
            Store::Sled { db, .. } => {
                db.flush()?;
                Ok(())
            }
        }
    }

    /// Whether the engine reported, on a read, that it stopped taking
    /// writes (sled after a failed write); fjall says so on writes only.
    pub(crate) fn refuses_writes(&self) -> bool {
        match self {
            Store::Fjall { .. } => false,
            Store::Sled { failed, .. } => failed.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Bytes the engine occupies on disk.
    pub(crate) fn disk_bytes(&self, dir: &Path) -> Result<u64> {
        match self {
            Store::Fjall { db, .. } => Ok(db.disk_space()?),
            Store::Sled { .. } => dir_size(dir),
        }
    }
}

/// Seals each touched space's write buffer that has outgrown its size, on
/// the committing thread, instead of leaving that to fjall's workers.
///
/// fjall 3.1.13 asks its workers to seal a full buffer by `try_send` on
/// their bounded (1,000) channel, once per commit for as long as the buffer
/// stays full; a worker that seals one then `send`s (blocking) a flush
/// request on that same channel. When every worker was busy flushing or
/// compacting while a small buffer filled, the commits filled the channel
/// with seal requests, and each worker that took one blocked for good
/// sending its flush: nothing was flushed again, the buffers grew without
/// bound (148-853 MiB at an 8-16 MiB budget), and the next explicit seal
/// (`write_out_buffers`) blocked the caller too. gdb showed every fjall
/// worker and that caller in `flume::Sender::send` from
/// `inner_rotate_memtable` (`keyspace/mod.rs:755`); upstream
/// fjall-rs/fjall#323 (open) is the same bug.
///
/// Keyspaces are created with a far larger size in fjall's settings
/// ([`keyspace_options`]), so fjall's own requests never start. A
/// directory created before that, under a smaller budget than this open's,
/// keeps fjall's smaller stored size: there fjall's request comes from the
/// commit that first overfills a buffer, this seals it right after, and
/// the worker finds it done and sends nothing, so at most one request per
/// buffer reaches the channel.
fn seal_full_buffers(
    spaces: &[fjall::Keyspace; 4],
    sizes: &FjallSizes,
    touched: [bool; 4],
) -> std::result::Result<(), fjall::Error> {
    use fjall::AbstractTree;
    for ((ks, space), touched) in spaces.iter().zip(SPACES).zip(touched) {
        if touched && ks.tree.active_memtable().size() > sizes.memtable(space) {
            ks.rotate_memtable()?;
        }
    }
    Ok(())
}

/// A write or flush the engine refused. Both engines stop taking writes
/// after one (fjall poisons itself, sled keeps the error), so the database
/// reopens the engine before the next write.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub(crate) error: Error,
    /// The batch may turn up after the engine is reopened (unless it is
    /// undone then, see `batch`). `false` means it is certainly not
    /// committed.
    pub(crate) applied: bool,
    /// The file system said it has no space (ENOSPC) or the quota is spent.
    pub(crate) disk_full: bool,
    /// The batch, where reads still show the state before it (fjall): it
    /// can then be undone after the engine reopens.
    pub(crate) batch: Option<Batch>,
}

impl WriteFailure {
    fn fjall(e: fjall::Error, applied: bool) -> WriteFailure {
        let disk_full = matches!(&e, fjall::Error::Io(io) if is_disk_full(io));
        WriteFailure {
            error: e.into(),
            applied,
            disk_full,
            batch: None,
        }
    }

    fn sled(e: sled::Error, applied: bool) -> WriteFailure {
        let disk_full = matches!(&e, sled::Error::Io(io) if is_disk_full(io));
        WriteFailure {
            error: e.into(),
            applied,
            disk_full,
            batch: None,
        }
    }
}

fn sled_read_error(failed: &std::sync::atomic::AtomicBool, dir: &Path, e: sled::Error) -> Error {
    if let sled::Error::Io(io) = &e {
        failed.store(true, std::sync::atomic::Ordering::Release);
        if is_disk_full(io) {
            return Error::DiskFull {
                path: dir.to_path_buf(),
                what: format!("sled stopped after a write failed ({io}) and fails reads that need its log too, until it is reopened"),
                need: RESUME_FREE_BYTES,
            };
        }
    }
    e.into()
}

pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

/// Bytes free for an unprivileged writer on the file system holding `path`
/// (`None` if it cannot be asked).
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn sled_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space as u8);
    k.extend_from_slice(key);
    k
}

/// The smallest byte string greater than every string starting with `prefix`.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xFF {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

pub(crate) fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// The least write buffer size fjall is told (see `keyspace_options`):
/// eight times the hub profile's largest (10 MiB).
const FJALL_MEMTABLE_CEILING: u64 = 80 << 20;

/// The create options of one keyspace: its write buffer, and lz4 on the
/// data blocks of every level for records, index and log.
///
/// fjall compresses only its last levels by default, so most of a young
/// table (and all of a log that is trimmed before it sinks) stayed raw.
/// Records repeat their attribute names and much of their values, so lz4
/// over a data block does most of what a per-table name dictionary
/// would, without a new record format. Measured with the local
/// benchmark's footprint phase (1,000,000 single-record writes, 16 MiB
/// budget): records and index 176 -> 64 bytes/record, everything with log
/// and journal 427 -> 200, bytes written towards the device 929 -> 658 per
/// record. The price is on reads that miss the small cache, which now
/// decompress their block. Settings are fixed when a keyspace is
/// created: directories made before keep theirs and stay readable.
pub(crate) fn keyspace_options(space: Space, sizes: &FjallSizes) -> fjall::KeyspaceCreateOptions {
    use fjall::config::CompressionPolicy;
    // fjall is told a far larger size than tidelog seals at, so that its
    // own seal requests (see `seal_full_buffers`) never fire for a new
    // keyspace, even when a later open's budget is larger than this one's
    // (an `edge` directory opened as `hub`). It uses the size for nothing
    // else.
    let ceiling = sizes
        .memtable(space)
        .saturating_mul(4)
        .max(FJALL_MEMTABLE_CEILING);
    let o = fjall::KeyspaceCreateOptions::default().max_memtable_size(ceiling);
    // fjall's leveled compaction keeps level 1 at four tables' worth and,
    // by default, cuts tables at 64 MiB: a level 1 of up to 256 MiB. Each
    // flushed table whose keys spread over that range (index entries by
    // value; log tables, whose trimming deletes the oldest entries while
    // new ones arrive) is merged with all of it, so every compaction
    // rewrote more as the database grew, and small write buffers flush
    // often. With tables cut at a quarter of the budget (4 MiB at the edge
    // profile, a level 1 of 16 MiB) a compaction rewrites a bounded part.
    // Growth benchmark to 10,000,000 records at the edge profile, write
    // rate at 10M against 1M (last chunk / every chunk since 8M): fjall's
    // size 0.28x / 0.40x, index only 0.55x / 0.51x, index and log 0.58x /
    // 0.79x, every space 0.72x / 0.71x (the whole run 203 s -> 140 s),
    // for 150 bytes per record on disk at 10M instead of 99 (trimmed log
    // entries' tombstones sink more slowly). Compaction also holds fewer
    // blocks: lsm-tree keeps each table's index keys as views into the
    // blocks it read, which stay allocated until the table is written
    // (heaptrack: 7.3 MiB of 22 MiB at the peak of 1,000,000 commits).
    let o = o.compaction_strategy(std::sync::Arc::new(
        fjall::compaction::Leveled::default().with_table_target_size(sizes.table),
    ));
    // fjall keeps the whole block index of each level-0 and level-1 table
    // in memory, and a table moved down whole (records and log entries
    // arrive in key order, so most tables are moved rather than merged)
    // keeps it there for good: resident memory grew with the data. With
    // the index partitioned at every level only each table's small top
    // level stays resident and the partitions go through the block cache.
    // Footprint child (single-record commits, 16 MiB), peak RSS fjall's
    // way -> partitioned: 1,000,000 records 31-34 -> 30-31 MiB (gets
    // unchanged), 3,000,000 64-65 -> 54-56 MiB (gets 0.86-0.91x),
    // 10,000,000 99 -> 73 MiB (gets 0.85x).
    let o = o.index_block_partitioning_policy(fjall::config::PartitioningPolicy::all(true));
    let o = match space {
        Space::Rows | Space::Index | Space::Log => {
            o.data_block_compression_policy(CompressionPolicy::all(fjall::CompressionType::Lz4))
        }
        Space::Meta => o,
    };
    match space {
        // Index entries are only ever scanned by prefix, and log entries
        // read in order or by a key that exists: a bloom filter answers
        // neither, yet fjall keeps its upper levels' filters resident and
        // builds them at every flush. Without them, 1,000,000 single-record
        // commits at 16 MiB peaked at 41 MiB of RSS instead of 55.
        Space::Index | Space::Log => o.filter_policy(fjall::config::FilterPolicy::disabled()),
        // A point get that misses the block cache reads and decompresses
        // one whole data block: 2 KiB blocks instead of fjall's 4 KiB
        // took point gets from 204-209k to 232-255k/s and index finds
        // from 154-161k to 161-180k records/s (footprint child, 1,000,000
        // records, 16 MiB, pairs on a quiet machine), for 72 bytes of
        // records and index per record instead of 64 and the same peak
        // RSS (30.5-31.0 MiB against 29.5-33.1). 1 KiB blocks read faster
        // still (257-275k/s) but took 84 bytes and 33-37 MiB.
        Space::Rows => o.data_block_size_policy(fjall::config::BlockSizePolicy::all(2 << 10)),
        Space::Meta => o,
    }
}

/// A sensor reading's JSON text, as tests store it for record `i`: the
/// attribute names repeat and the values vary, as in real records.
#[cfg(test)]
pub(crate) fn sample_reading(i: u64) -> String {
    format!(
        r#"{{"id":{i},"kind":"temp","sensor":"s-{:06}","site":"plant-7/line-3","ts":{}}}"#,
        i % 1000,
        1_790_000_000_000 + i * 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fjall_sizes_stay_within_the_budget_and_favour_rows_and_log() {
        for mib in [16u64, 32, 64, 256] {
            let s = FjallSizes::for_budget(mib << 20);
            let memtables = s.rows + s.index + s.log + s.meta;
            assert!(
                s.cache + FjallSizes::MEMTABLE_OVERHEAD * memtables <= mib << 20,
                "{mib} MiB: {s:?}"
            );
            assert!(
                s.rows > s.index && s.log > s.index && s.index >= s.meta,
                "{s:?}"
            );
        }
        let s = FjallSizes::for_budget(4 << 20);
        assert!(
            s.cache > 0 && s.rows >= 1 << 20 && s.meta == 1 << 19,
            "{s:?}"
        );
    }

    /// Tables are cut at a quarter of the budget (level 1 then holds about
    /// one budget's worth), never below 4 MiB or above fjall's own 64 MiB.
    #[test]
    fn tables_are_cut_in_proportion_to_the_budget() {
        let table = |mib: u64| FjallSizes::for_budget(mib << 20).table >> 20;
        assert_eq!(
            [4, 16, 64, 256, 1024].map(table),
            [4, 4, 16, 64, 64],
            "table sizes in MiB for budgets of 4, 16, 64, 256 and 1024 MiB"
        );
    }

    /// Every keyspace is created with the creating open's table size, and
    /// keeps it when a later open has another budget (fjall stores it).
    #[test]
    fn a_directory_keeps_the_table_size_of_the_open_that_created_it() {
        let dir = tempfile::tempdir().unwrap();
        let at = |mib: u64| EngineTuning {
            memory_budget: mib << 20,
        };
        drop(Store::open(EngineKind::Fjall, dir.path(), at(16)).unwrap());
        let store = Store::open(EngineKind::Fjall, dir.path(), at(64)).unwrap();
        let Store::Fjall { spaces, sizes, .. } = &store else {
            unreachable!("opened as fjall")
        };
        assert_eq!(sizes.table, 16 << 20, "this open's own size");
        for (ks, space) in spaces.iter().zip(SPACES) {
            let config = ks.config.compaction_strategy.get_config();
            let target = config
                .iter()
                .find(|(k, _)| &k[..] == b"leveled_target_size")
                .map(|(_, v)| u64::from_le_bytes(v[..8].try_into().unwrap()));
            assert_eq!(target, Some(4 << 20), "{}", space.name());
        }
    }

    /// Tables moved down whole keep what they had resident: with fjall's
    /// full block index, every level-0 table's index stayed in memory for
    /// good. Records written in key order (so that tables are moved, not
    /// merged) must leave only the partitioned indexes' small top levels
    /// resident.
    #[test]
    fn resident_block_indexes_stay_small_as_tables_pile_up() {
        use fjall::AbstractTree;
        let dir = tempfile::tempdir().unwrap();
        let tuning = EngineTuning {
            memory_budget: 4 << 20,
        };
        let store = Store::open(EngineKind::Fjall, dir.path(), tuning).unwrap();
        let records = 200_000u64;
        for chunk in 0..records / 1000 {
            let mut b = Batch::default();
            for i in chunk * 1000..(chunk + 1) * 1000 {
                let v = sample_reading(i);
                b.put(Space::Rows, i.to_be_bytes().to_vec(), v.into_bytes());
            }
            store.commit(b, false).unwrap();
        }
        store.write_out_buffers().unwrap();
        let Store::Fjall { spaces, .. } = &store else {
            unreachable!("opened as fjall")
        };
        let tree = &spaces[Space::Rows as usize].tree;
        let tables = tree.table_count();
        let resident = tree.pinned_block_index_size();
        assert!(tables >= 4, "{tables} tables");
        assert!(
            (resident as u64) < records / 20,
            "{resident} bytes of block index resident for {records} records in {tables} tables"
        );
    }

    /// A write buffer never stays past this open's size after a commit,
    /// even in a directory made with a larger budget (whose fjall settings
    /// keep the larger size): the committing thread seals it.
    #[test]
    fn commits_leave_no_write_buffer_past_this_opens_size() {
        use fjall::AbstractTree;
        let dir = tempfile::tempdir().unwrap();
        let at = |mib: u64| EngineTuning {
            memory_budget: mib << 20,
        };
        drop(Store::open(EngineKind::Fjall, dir.path(), at(64)).unwrap());
        let store = Store::open(EngineKind::Fjall, dir.path(), at(4)).unwrap();
        let Store::Fjall { spaces, sizes, .. } = &store else {
            unreachable!("opened as fjall")
        };
        let limit = sizes.memtable(Space::Rows);
        assert!(limit < FjallSizes::for_budget(64 << 20).rows);
        let mut largest = 0;
        for i in 0..40_000u64 {
            let mut b = Batch::default();
            b.put(Space::Rows, i.to_be_bytes().to_vec(), vec![7; 100]);
            store.commit(b, false).unwrap();
            let now = spaces[Space::Rows as usize].tree.active_memtable().size();
            assert!(now <= limit, "commit {i}: write buffer {now} > {limit}");
            largest = largest.max(now);
        }
        // 40,000 x ~170 counted bytes went through buffers of `limit`.
        assert!(largest > limit / 2, "{largest} of {limit}");
    }

    fn engines() -> Vec<(EngineKind, tempfile::TempDir)> {
        [EngineKind::Fjall, EngineKind::Sled]
            .into_iter()
            .map(|k| (k, tempfile::tempdir().expect("tempdir")))
            .collect()
    }

    fn tuning() -> EngineTuning {
        EngineTuning {
            memory_budget: 8 << 20,
        }
    }

    fn keys(it: KvIter<'_>) -> Vec<Vec<u8>> {
        it.map(|r| r.expect("scan").0.to_vec()).collect()
    }

    #[test]
    fn both_engines_get_put_delete_and_isolate_spaces() {
        for (kind, dir) in engines() {
            let store = Store::open(kind, dir.path(), tuning()).expect("open");
            let mut b = Batch::default();
            b.put(Space::Rows, b"a".to_vec(), b"1".to_vec());
            b.put(Space::Index, b"a".to_vec(), b"idx".to_vec());
            b.put(Space::Log, b"a".to_vec(), b"log".to_vec());
            store.commit(b, false).expect("commit");
            assert_eq!(&*store.get(Space::Rows, b"a").unwrap().unwrap(), b"1");
            assert_eq!(&*store.get(Space::Index, b"a").unwrap().unwrap(), b"idx");
            assert!(store.get(Space::Meta, b"a").unwrap().is_none(), "{kind:?}");
            let mut b = Batch::default();
            b.delete(Space::Rows, b"a".to_vec());
            store.commit(b, true).expect("commit");
            assert!(store.get(Space::Rows, b"a").unwrap().is_none());
            assert!(store.get(Space::Log, b"a").unwrap().is_some());
        }
    }

    #[test]
    fn both_engines_scan_ranges_in_order_both_ways() {
        for (kind, dir) in engines() {
            let store = Store::open(kind, dir.path(), tuning()).expect("open");
            let mut b = Batch::default();
            for k in [b"b".as_ref(), b"a", b"d", b"c", b"\xff\xff"] {
                b.put(Space::Rows, k.to_vec(), vec![]);
            }
            b.put(Space::Index, b"b".to_vec(), vec![]);
            store.commit(b, false).unwrap();
            let all = keys(store.range(Space::Rows, Bound::Unbounded, Bound::Unbounded, false));
            assert_eq!(
                all,
                vec![
                    b"a".to_vec(),
                    b"b".to_vec(),
                    b"c".to_vec(),
                    b"d".to_vec(),
                    b"\xff\xff".to_vec()
                ],
                "{kind:?}"
            );
            let mid = keys(store.range(
                Space::Rows,
                Bound::Excluded(b"a".to_vec()),
                Bound::Included(b"c".to_vec()),
                true,
            ));
            assert_eq!(mid, vec![b"c".to_vec(), b"b".to_vec()], "{kind:?}");
            let pre = keys(store.prefix(Space::Rows, b"\xff", false));
            assert_eq!(pre, vec![b"\xff\xff".to_vec()]);
        }
    }

    #[test]
    fn both_engines_persist_across_reopen() {
        for (kind, dir) in engines() {
            {
                let store = Store::open(kind, dir.path(), tuning()).expect("open");
                let mut b = Batch::default();
                b.put(Space::Meta, b"k".to_vec(), b"v".to_vec());
                store.commit(b, false).unwrap();
                store.flush().unwrap();
                assert!(store.disk_bytes(dir.path()).unwrap() > 0);
            }
            let store = Store::open(kind, dir.path(), tuning()).expect("reopen");
            assert_eq!(
                &*store.get(Space::Meta, b"k").unwrap().unwrap(),
                b"v",
                "{kind:?}"
            );
        }
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }
}
