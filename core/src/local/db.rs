//! The database handle: options, open and close, table management,
//! listeners, replication metadata. Reads live in `read.rs`, writes in
//! `write.rs`, background work in `maintenance.rs`, and `open.rs` puts the
//! handle and its background work together.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::error::{Error, Result};
use crate::local::catalog::{Catalog, TableDef, TableInfo, TableOptions};
use crate::local::dir::{load_or_create_identity, validate_node_name, DirLock};
use crate::local::hlc::Hlc;
use crate::local::keys::{cursor_key, seq_from_key};
use crate::local::listener::{ChangeEvent, ListenerId, Listeners};
use crate::local::log::LogEntry;
use crate::local::profile::Profile;
use crate::local::storage::{
    free_bytes, Batch, EngineKind, EngineTuning, Space, Store, WriteFailure, RESUME_FREE_BYTES,
};

/// When a commit is durable on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk (fdatasync) before it returns.
    Sync,
    /// Commits are flushed to disk together every `interval`. With fjall a
    /// process crash loses nothing (each commit has reached the OS); a power
    /// loss or kernel crash loses at most the last `interval` of commits.
    Grouped { interval: Duration },
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Grouped {
            interval: Duration::from_millis(50),
        }
    }
}

/// How to open a data directory.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// This node's name: unique in the cluster, equal to the DNS name in its
    /// TLS certificate. Fixed when the directory is created.
    pub node_name: String,
    /// Storage engine; fixed when the directory is created.
    pub engine: EngineKind,
    pub durability: Durability,
    /// Bytes the storage engine may use for caches and write buffers
    /// (default: the `hub` [`Profile`]'s, 64 MiB).
    pub memory_budget: u64,
    /// Largest record (JSON text bytes) a write may carry.
    pub max_record_bytes: usize,
    /// Remote stamps further ahead of the local wall clock are refused.
    pub max_clock_skew: Duration,
    /// How often expired records are looked for.
    pub expiry_interval: Duration,
    /// How long the transaction log keeps entries.
    pub retention: Retention,
    /// Open a directory whose engine journal was damaged or cut short by
    /// keeping the longest valid prefix of its transactions, instead of
    /// failing with [`Error::Corrupt`]. How many were dropped is in
    /// [`Database::dropped_transactions`] and on stderr.
    pub recover_prefix: bool,
    /// The conflict log (`_conflicts`) keeps at most this many bytes of
    /// entries (JSON text), dropping the oldest; 0 turns the log off.
    pub conflict_log_max_bytes: u64,
    /// Conflict-log entries older than this are dropped.
    pub conflict_log_max_age: Duration,
    /// Change events the listener queue holds before it drops (and
    /// counts) new ones; see [`ChangeEvent::missed`](crate::ChangeEvent).
    pub listener_queue_max: usize,
}

/// How long transaction-log entries and tombstones are kept.
///
/// A log entry is removed once every peer that this instance publishes to
/// has acknowledged it, or earlier when a cap forces it (a peer overtaken by
/// a cap is resynced, and that is reported). Without replication started,
/// only the caps apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The log is trimmed (oldest first) to stay under this many bytes.
    pub log_max_bytes: u64,
    /// Entries older than this are trimmed even if a peer still needs them.
    pub log_max_age: Option<Duration>,
    /// Acknowledged entries stay at least this long, for local readers of
    /// the log (the caps still apply).
    pub log_min_age: Duration,
    /// A tombstone acknowledged by every peer is purged once this old. Until
    /// then a late, older write for its key still loses to it.
    pub tombstone_min_age: Duration,
    /// A tombstone is purged at this age even if a peer never acknowledged
    /// it. A peer that comes back later with an older version of that record
    /// can then bring it back: the price of bounded disk use.
    pub tombstone_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            log_max_bytes: 256 << 20,
            log_max_age: Some(Duration::from_secs(7 * 86_400)),
            log_min_age: Duration::ZERO,
            tombstone_min_age: Duration::from_secs(3600),
            tombstone_max_age: Duration::from_secs(30 * 86_400),
        }
    }
}

impl OpenOptions {
    pub fn new(node_name: impl Into<String>) -> Self {
        OpenOptions {
            node_name: node_name.into(),
            engine: EngineKind::default(),
            durability: Durability::default(),
            memory_budget: Profile::default().memory_budget(),
            max_record_bytes: 1 << 20,
            max_clock_skew: Duration::from_secs(60),
            expiry_interval: Duration::from_secs(1),
            retention: Retention::default(),
            recover_prefix: false,
            conflict_log_max_bytes: 4 << 20,
            conflict_log_max_age: Duration::from_secs(7 * 86_400),
            listener_queue_max: crate::local::listener::DEFAULT_LISTENER_QUEUE_MAX,
        }
    }
    pub fn engine(mut self, engine: EngineKind) -> Self {
        self.engine = engine;
        self
    }
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Sets the memory budget of a [`Profile`] (`edge` or `hub`).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.memory_budget = profile.memory_budget();
        self
    }
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }
    pub fn expiry_interval(mut self, every: Duration) -> Self {
        self.expiry_interval = every;
        self
    }
    pub fn retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }
    pub fn recover_prefix(mut self, recover: bool) -> Self {
        self.recover_prefix = recover;
        self
    }
    pub fn conflict_log_max_bytes(mut self, bytes: u64) -> Self {
        self.conflict_log_max_bytes = bytes;
        self
    }
    pub fn conflict_log_max_age(mut self, age: Duration) -> Self {
        self.conflict_log_max_age = age;
        self
    }
    pub fn listener_queue_max(mut self, events: usize) -> Self {
        self.listener_queue_max = events;
        self
    }
}

pub(crate) struct WriteState {
    pub(crate) next_seq: u64,
    /// Oldest sequence still present in the log.
    pub(crate) first_seq: u64,
    /// Sum of the log's key and value sizes, for the byte cap.
    pub(crate) log_bytes: u64,
    /// Where in the log those bytes lie, for peers' backlogs.
    pub(crate) log_sizes: crate::local::log::LogSizes,
}

/// What the database needs from the replication engine it carries. The
/// engine (`repl`) is built on the database; the database only holds it
/// through this trait, so it never names (or imports) the engine's type,
/// and the import graph stays one way: repl -> local.
pub(crate) trait ReplicationHook: Send + Sync {
    /// Lowest log sequence every publishing peer has acknowledged.
    fn acked_floor(&self) -> u64;
    /// Retention removed log entries below `first` that a peer still needed.
    fn note_trimmed(&self, first: u64);
    /// Stops links and the runtime; called first when the database closes.
    fn shutdown(&self);
    /// Meta entries the engine keeps in memory and stores in batches (the
    /// peers' acknowledgements), stored by `close` after `shutdown`.
    fn unsaved_meta(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// Lets the engine get its own type back from the slot.
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) node_name: String,
    pub(crate) node_id: u64,
    pub(crate) opts: OpenOptions,
    pub(crate) store: RwLock<Option<Store>>,
    pub(crate) write: Mutex<WriteState>,
    pub(crate) catalog: RwLock<Catalog>,
    pub(crate) hlc: Hlc,
    pub(crate) listeners: Arc<Listeners>,
    pub(crate) dirty: AtomicBool,
    pub(crate) closed: AtomicBool,
    /// Last committed log sequence.
    pub(crate) committed: tokio::sync::watch::Sender<u64>,
    /// Wakes the outbound links a commit wrote tables of (see `fanout`);
    /// told before `committed` moves.
    pub(crate) feed: crate::local::fanout::CommitFeed,
    /// Bumped whenever a table is created, for links waiting on one.
    pub(crate) tables_changed: tokio::sync::watch::Sender<u64>,
    pub(crate) replication: Mutex<Option<Arc<dyn ReplicationHook>>>,
    /// Stops background maintenance; set by `Database::open` (open.rs), so
    /// this module needs nothing of the maintenance module that builds on it.
    pub(crate) stop_maintenance: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    lock: Mutex<Option<DirLock>>,
    /// Set when the engine refused a write; the engine is reopened before
    /// the next write (see [`Shared::writable_store`]).
    fault: Mutex<Option<Fault>>,
    /// The highest log sequence recorded as durable in [`MARK_FILE`].
    mark: Mutex<u64>,
    /// Transactions lost at open to a damaged journal (with
    /// `recover_prefix`), or when the engine was reopened after a failure.
    dropped: AtomicU64,
    /// The conflict log's counters and the tables' resolvers.
    pub(crate) conflicts: crate::local::conflict_state::ConflictState,
    /// Log positions the cloud sinks still need (see `retention`).
    pub(crate) log_holds: crate::local::log_hold::LogHolds,
    /// Each table's statistics as of the last commit (see `table_stats`).
    pub(crate) table_stats: crate::local::table_stats::StatsCache,
}

/// Why writes are refused until the engine is reopened.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    cause: String,
    disk_full: bool,
    /// Log sequences (first, last) of commits whose outcome was reported
    /// unknown; looked up once the engine is back.
    unknown: Vec<(u64, u64)>,
    /// Batches that restore what failed commits wrote to the state before
    /// them, with the log sequences those carried: applied, newest first,
    /// right after the engine reopens, so that a commit that returned an
    /// error is never kept even where the engine wrote it out whole.
    undo: Vec<(Option<(u64, u64)>, Batch)>,
}

/// How long a reopen waits for readers to let go of the engine.
const RECOVER_WAIT: Duration = Duration::from_secs(2);

/// The highest log sequence known to be durable, written after each
/// successful flush. The engines recover a damaged or cut journal silently
/// (the longest valid prefix); a log ending below this mark is how such a
/// loss is noticed.
const MARK_FILE: &str = "tidelog.durable";

fn read_mark(dir: &Path) -> Result<u64> {
    let path = dir.join(MARK_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            Error::Corrupt(format!(
                "{} does not hold a log sequence number",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Replaces the mark so that a crash leaves the old or the new one; the
/// old one is only ever lower, which is safe (less is checked).
fn write_mark(dir: &Path, seq: u64) -> Result<()> {
    use std::io::Write;
    let path = dir.join(MARK_FILE);
    let tmp = dir.join("tidelog.durable.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(format!("{seq}\n").as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// What the log holds: (first seq, next seq, bytes, newest entry's time).
fn log_state(store: &Store) -> Result<(u64, u64, u64, Option<u64>, crate::local::log::LogSizes)> {
    let (mut bytes, mut sizes) = (0u64, crate::local::log::LogSizes::default());
    for item in store.range(Space::Log, Bound::Unbounded, Bound::Unbounded, false) {
        let (k, v) = item?;
        let size = (k.len() + v.len()) as u64;
        bytes += size;
        sizes.appended(seq_from_key(&k)?, size);
    }
    let first = store
        .range(Space::Log, Bound::Unbounded, Bound::Unbounded, false)
        .next();
    let last = store
        .range(Space::Log, Bound::Unbounded, Bound::Unbounded, true)
        .next();
    match (first, last) {
        (Some(first), Some(last)) => {
            let (fk, _) = first?;
            let (lk, lv) = last?;
            let tail = LogEntry::decode(&lv)?;
            Ok((
                seq_from_key(&fk)?,
                seq_from_key(&lk)? + 1,
                bytes,
                Some(tail.local_time.max(tail.stamp.time)),
                sizes,
            ))
        }
        _ => Ok((1, 1, bytes, None, sizes)),
    }
}

/// An open tidelog database. Cheap to clone; every clone is the same
/// database, usable from any thread.
#[derive(Clone)]
pub struct Database {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("dir", &self.shared.dir)
            .field("node_name", &self.shared.node_name)
            .finish()
    }
}

pub(crate) type StoreGuard<'a> = parking_lot::MappedRwLockReadGuard<'a, Store>;

impl Database {
    /// Opens the engine and state of `dir` without background work; the
    /// public `Database::open` (open.rs) starts that on top.
    pub(crate) fn open_engine(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Database> {
        let dir = dir.as_ref().to_path_buf();
        validate_node_name(&opts.node_name)?;
        if opts.memory_budget < (4 << 20) {
            return Err(Error::invalid("memory_budget", "must be at least 4 MiB"));
        }
        if opts.max_record_bytes == 0 {
            return Err(Error::invalid("max_record_bytes", "must be at least 1"));
        }
        if opts.listener_queue_max == 0 {
            return Err(Error::invalid(
                "listener_queue_max",
                "must be at least 1 event; raise it for bursty listeners",
            ));
        }
        let listener_queue_max = opts.listener_queue_max;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let identity = load_or_create_identity(&dir, &opts.node_name, opts.engine)?;
        let store = Store::open(
            opts.engine,
            &dir.join("data"),
            EngineTuning {
                memory_budget: opts.memory_budget,
            },
        )?;
        let catalog = Catalog::load(&store)?;
        let hlc = Hlc::new(opts.max_clock_skew);
        let (first_seq, next_seq, log_bytes, tail_time, log_sizes) = log_state(&store)?;
        if let Some(t) = tail_time {
            // Stamps must never go backwards across a restart, even if the
            // wall clock did.
            hlc.observe(t);
        }
        let last = next_seq - 1;
        let mark = read_mark(&dir)?;
        let mut dropped = 0;
        if mark > last {
            dropped = mark - last;
            if !opts.recover_prefix {
                return Err(Error::Corrupt(format!(
                    "the transaction log ends at seq {last}, but seq {mark} was on disk at the last flush or close: {dropped} transactions are missing, so the storage engine's journal under {} was damaged or cut short (the engine may already have cut it at the damage); to keep the {last} transactions before the damage instead, open with recover_prefix",
                    dir.join("data").display()
                )));
            }
            log::warn!(
                target: "tidelog::storage",
                "{}: the storage engine's journal was damaged or cut short; kept the transactions up to seq {last} and dropped {dropped} (seq {} to {mark}), as recover_prefix asked",
                dir.display(),
                last + 1
            );
            write_mark(&dir, last)?;
        }
        let shared = Arc::new(Shared {
            dir,
            node_name: identity.node_name,
            node_id: identity.node_id,
            opts,
            store: RwLock::new(Some(store)),
            write: Mutex::new(WriteState {
                next_seq,
                first_seq,
                log_bytes,
                log_sizes,
            }),
            catalog: RwLock::new(catalog),
            hlc,
            listeners: {
                let l = Listeners::default();
                l.set_bound(listener_queue_max);
                Arc::new(l)
            },
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            committed: tokio::sync::watch::Sender::new(next_seq - 1),
            feed: Default::default(),
            tables_changed: tokio::sync::watch::Sender::new(0),
            replication: Mutex::new(None),
            stop_maintenance: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
            fault: Mutex::new(None),
            mark: Mutex::new(mark.min(last)),
            dropped: AtomicU64::new(dropped),
            conflicts: Default::default(),
            log_holds: Default::default(),
            table_stats: Default::default(),
        });
        Ok(Database { shared })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.node_name
    }

    /// Test hook, not part of the API: from now on this instance's clock
    /// reads `offset_ms` off the wall clock (stamps of new writes, and the
    /// `max_clock_skew` check of incoming ones), and it is set to that time
    /// even if that is earlier than stamps it already issued, which a real
    /// clock never is. Lets a test run a node with a wrong clock, then fix
    /// it, without sleeping. Not read from the environment or from files.
    #[doc(hidden)]
    pub fn skew_clock_for_tests(&self, offset_ms: i64) {
        self.shared.hlc.set_offset_for_tests(offset_ms);
    }

    /// This instance's stable node id (the origin in its version stamps).
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    pub fn engine(&self) -> EngineKind {
        self.shared.opts.engine
    }

    pub fn options(&self) -> &OpenOptions {
        &self.shared.opts
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How many transactions this handle has lost: at open, those a damaged
    /// or cut journal dropped (only with
    /// [`OpenOptions::recover_prefix`]; without it such an open fails), and
    /// any committed but not yet flushed that an engine could not keep
    /// when it was reopened after a failed write (sled with grouped
    /// durability). Each loss is also reported on stderr.
    pub fn dropped_transactions(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Flushes, stops background work and listeners, and releases the data
    /// directory. Every later call on any clone fails with [`Error::Closed`].
    /// Closing twice is fine.
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }

    pub(crate) fn store(&self) -> Result<StoreGuard<'_>> {
        self.shared.store()
    }

    /// Makes every commit so far durable on disk.
    pub fn flush(&self) -> Result<()> {
        let durable = self.shared.flush()?;
        self.shared.note_durable(durable);
        Ok(())
    }

    /// Bytes the data directory occupies on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        let store = self.store()?;
        store.disk_bytes(&self.shared.dir.join("data"))
    }

    // ---- tables -------------------------------------------------------

    pub fn create_table(&self, name: &str, opts: TableOptions) -> Result<TableInfo> {
        self.create_table_as(name, opts, false)
    }

    /// `system`: tidelog's own table (the conflict log), whose name a user
    /// may not take.
    pub(crate) fn create_table_as(
        &self,
        name: &str,
        opts: TableOptions,
        system: bool,
    ) -> Result<TableInfo> {
        let store = self.shared.writable_store()?;
        let _w = self.shared.write.lock();
        let mut batch = Batch::default();
        let def = self
            .shared
            .catalog
            .read()
            .prepare_create(name, &opts, system, &mut batch)?;
        self.shared
            .commit(&store, batch, self.sync_commits(), None)?;
        let info = def.info();
        self.shared.catalog.write().insert(def);
        self.shared.tables_changed.send_modify(|v| *v += 1);
        Ok(info)
    }

    /// Creates the table unless it exists; returns whether it created it.
    pub fn ensure_table(&self, name: &str, opts: TableOptions) -> Result<bool> {
        match self.create_table(name, opts) {
            Ok(_) => Ok(true),
            Err(Error::TableExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops a table and all its records locally. Not replicated.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        if name == crate::local::catalog::CONFLICTS_TABLE {
            return Err(crate::local::catalog::reserved(name));
        }
        let store = self.shared.writable_store()?;
        let def = {
            let _w = self.shared.write.lock();
            let def = self.shared.catalog.read().get(name)?.clone();
            let mut batch = Batch::default();
            batch.delete(Space::Meta, crate::local::keys::table_key(name));
            batch.delete(Space::Meta, crate::local::table_stats::stats_key(def.id));
            self.shared
                .commit(&store, batch, self.sync_commits(), None)?;
            self.shared.catalog.write().remove(name);
            self.shared.table_stats.forget(def.id);
            def
        };
        // Table ids are never reused, so leftover rows are unreachable; purge
        // them in chunks so writers are not blocked for long.
        let side = crate::local::side::side_prefix(def.id);
        for (space, prefix) in [
            (Space::Rows, &def.row_prefix()[..]),
            (Space::Index, &def.row_prefix()[..]),
            (Space::Meta, &side[..]),
        ] {
            loop {
                let _w = self.shared.write.lock();
                let mut batch = Batch::default();
                for item in store.prefix(space, prefix, false).take(10_000) {
                    batch.delete(space, item?.0.to_vec());
                }
                if batch.is_empty() {
                    break;
                }
                self.shared.commit(&store, batch, false, None)?;
            }
        }
        Ok(())
    }

    pub fn list_tables(&self) -> Result<Vec<TableInfo>> {
        let _store = self.store()?;
        let mut v: Vec<TableInfo> = self
            .shared
            .catalog
            .read()
            .tables
            .values()
            // The conflict log is tidelog's, not the application's: read it
            // with `conflicts()` or by name.
            .filter(|d| d.name != crate::local::catalog::CONFLICTS_TABLE)
            .map(|d| d.info())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub fn describe_table(&self, name: &str) -> Result<TableInfo> {
        let _store = self.store()?;
        Ok(self.shared.catalog.read().get(name)?.info())
    }

    pub(crate) fn table(&self, name: &str) -> Result<Arc<TableDef>> {
        Ok(self.shared.catalog.read().get(name)?.clone())
    }
    // ---- listeners ----------------------------------------------------

    /// Calls `f` after every committed change to `table`, local or from a
    /// peer, in commit order, on the `tidelog-events` thread, with no tidelog
    /// lock held: `f` may read and write the database. A panic in `f` is
    /// contained and reported on stderr. Keep `f` quick: events queue behind
    /// it in memory.
    pub fn on_change(
        &self,
        table: &str,
        f: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Result<ListenerId> {
        let _store = self.store()?;
        crate::local::catalog::validate_table_name(table)?;
        Ok(self.shared.listeners.add(table, Arc::new(f)))
    }

    /// Unregisters a listener; returns whether it was registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.shared.listeners.remove(id)
    }

    /// How many listener calls panicked so far.
    pub fn listener_panics(&self) -> u64 {
        self.shared.listeners.panics.load(Ordering::Relaxed)
    }

    /// Change events dropped since open because the listener queue was
    /// full (see [`OpenOptions::listener_queue_max`]).
    pub fn listener_events_missed(&self) -> u64 {
        self.shared.listeners.missed_total.load(Ordering::Relaxed)
    }

    /// Change events queued for the listeners whose listeners have not all
    /// returned yet (dropped events are not counted). At 0, every event of
    /// a commit that has returned was handed to its listeners or dropped;
    /// everything a listener did with it (e.g. passing it to another
    /// thread) happened before this read.
    pub fn listener_events_pending(&self) -> usize {
        self.shared.listeners.pending.load(Ordering::Acquire)
    }

    // ---- metadata for replication -------------------------------------

    /// The resume cursor stored for `name` by [`Database::apply_remote`].
    pub fn cursor(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let store = self.store()?;
        Ok(store
            .get(Space::Meta, &cursor_key(name))?
            .map(|v| v.to_vec()))
    }

    pub(crate) fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let store = self.store()?;
        Ok(store.get(Space::Meta, key)?.map(|v| v.to_vec()))
    }

    pub(crate) fn meta_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let store = self.shared.writable_store()?;
        let mut batch = Batch::default();
        batch.put(Space::Meta, key.to_vec(), value.to_vec());
        self.shared.commit(&store, batch, false, None)?;
        self.shared.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Puts and deletes in the meta space, as one commit.
    pub(crate) fn meta_commit(
        &self,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
    ) -> Result<()> {
        let mut batch = Batch::default();
        for (k, v) in puts {
            batch.put(Space::Meta, k, v);
        }
        for k in deletes {
            batch.delete(Space::Meta, k);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.shared.writable_store()?;
        self.shared.commit(&store, batch, false, None)?;
        self.shared.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Every meta entry whose key starts with `prefix`, in key order.
    pub(crate) fn meta_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let store = self.store()?;
        store
            .prefix(Space::Meta, prefix, false)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect()
    }

    pub(crate) fn sync_commits(&self) -> bool {
        self.shared.opts.durability == Durability::Sync
    }
}

impl Shared {
    pub(crate) fn store(&self) -> Result<StoreGuard<'_>> {
        match RwLockReadGuard::try_map(self.store.read(), |s| s.as_ref()) {
            Ok(guard) if !guard.refuses_writes() => return Ok(guard),
            Ok(guard) => {
                drop(guard);
                self.reopen_for_reads();
            }
            Err(guard) => {
                drop(guard);
                if self.closed.load(Ordering::Acquire) {
                    return Err(Error::Closed);
                }
                // A reopen after a failure failed: try again (once there
                // is room), or say why not.
                self.recover(false)?;
            }
        }
        RwLockReadGuard::try_map(self.store.read(), |s| s.as_ref()).map_err(|_| self.no_store())
    }

    /// sled, once a write failed, fails reads that need its log as well,
    /// and can no longer write out anything it holds: reopening it at once
    /// loses nothing more and serves reads again. Writes stay refused (the
    /// fault stands) until [`Shared::recover`] finds room on the disk.
    fn reopen_for_reads(&self) {
        // Timed: a thread that already holds a read guard must not wait on
        // itself; the next read tries again.
        let Some(mut slot) = self.store.try_write_for(RECOVER_WAIT) else {
            return;
        };
        if self.closed.load(Ordering::Acquire) || !slot.as_ref().is_some_and(|s| s.refuses_writes())
        {
            return;
        }
        let disk_full = free_bytes(&self.dir.join("data")).is_some_and(|b| b < RESUME_FREE_BYTES);
        self.fault.lock().get_or_insert_with(|| Fault {
            cause: "the storage engine failed a read with an I/O error".into(),
            disk_full,
            unknown: Vec::new(),
            undo: Vec::new(),
        });
        drop(slot.take());
        if let Ok(store) = Store::open(
            self.opts.engine,
            &self.dir.join("data"),
            EngineTuning {
                memory_budget: self.opts.memory_budget,
            },
        ) {
            *slot = Some(store);
        }
    }

    /// Why there is no engine: closed, or a reopen after a failure failed.
    fn no_store(&self) -> Error {
        if self.closed.load(Ordering::Acquire) {
            return Error::Closed;
        }
        match &*self.fault.lock() {
            Some(f) => self.refusal(f),
            None => Error::Closed,
        }
    }

    /// The error a write gets while a fault stands.
    fn refusal(&self, f: &Fault) -> Error {
        if f.disk_full {
            Error::DiskFull {
                path: self.dir.clone(),
                what: format!("writes are refused since a write failed ({})", f.cause),
                need: RESUME_FREE_BYTES,
            }
        } else {
            Error::Storage(format!(
                "writes are refused since a write failed ({}), until the storage engine reopens; it is tried again on the next write",
                f.cause
            ))
        }
    }

    /// The engine, for a write. After a failed write the engine takes no
    /// more (fjall poisons itself, sled keeps its error), so it is first
    /// reopened here, once there is room on the disk again.
    pub(crate) fn writable_store(&self) -> Result<StoreGuard<'_>> {
        if self.fault.lock().is_none() {
            // store() also notes an engine that refuses writes as a fault.
            let store = self.store()?;
            if self.fault.lock().is_none() {
                return Ok(store);
            }
        }
        self.recover(false)?;
        self.store()
    }

    /// Commits through the engine; a failure stops writes until the engine
    /// is reopened, and says whether the commit is certainly not applied.
    /// `seqs`: the log sequences (first, last) the batch carries, if any.
    pub(crate) fn commit(
        &self,
        store: &Store,
        batch: Batch,
        sync: bool,
        seqs: Option<(u64, u64)>,
    ) -> Result<()> {
        store.commit(batch, sync).map_err(|mut f| {
            // Cached statistics may be ahead of what storage will hold.
            self.table_stats.clear();
            // Reads still show the state before the batch: remember it, to
            // put back after the reopen.
            let undo = f.batch.take().and_then(|b| undo_batch(store, &b).ok());
            if undo.is_some() {
                f.applied = false;
            }
            self.failed(f, seqs, undo, "the write was not committed")
        })
    }

    /// Records a fault and says what became of the write.
    fn failed(
        &self,
        f: WriteFailure,
        seqs: Option<(u64, u64)>,
        undo: Option<Batch>,
        not_applied: &str,
    ) -> Error {
        let disk_full = f.disk_full
            || free_bytes(&self.dir.join("data")).is_some_and(|b| b < RESUME_FREE_BYTES);
        let cause = f.error.to_string();
        let mut fault = self.fault.lock();
        let fault = fault.get_or_insert_with(|| Fault {
            cause: cause.clone(),
            disk_full,
            unknown: Vec::new(),
            undo: Vec::new(),
        });
        if let Some(undo) = undo {
            fault.undo.push((seqs, undo));
        }
        match seqs {
            Some((seq, last)) if f.applied => {
                fault.unknown.push((seq, last));
                Error::OutcomeUnknown {
                    seq,
                    more: if last > seq {
                        format!(" to {last}")
                    } else {
                        String::new()
                    },
                    why: format!(
                        "the storage engine took it but could not write it to disk ({cause}); the engine is reopened once {RESUME_FREE_BYTES} bytes are free, and the outcome is reported on stderr then"
                    ),
                }
            }
            _ if f.applied => Error::Storage(format!(
                "{cause}: the write reached the storage engine but may not be on disk; check for it once writes resume"
            )),
            _ if disk_full => Error::DiskFull {
                path: self.dir.clone(),
                what: format!("{not_applied} ({cause})"),
                need: RESUME_FREE_BYTES,
            },
            _ => Error::Storage(format!(
                "{cause}: {not_applied}; the storage engine is reopened before the next write"
            )),
        }
    }

    /// Makes every commit so far durable; returns the log sequence that is
    /// durable now, for [`Shared::note_durable`].
    pub(crate) fn flush(&self) -> Result<u64> {
        let store = self.writable_store()?;
        let durable = *self.committed.borrow();
        self.dirty.store(false, Ordering::Release);
        store.flush().map_err(|f| {
            self.dirty.store(true, Ordering::Release);
            self.failed(f, None, None, "recent commits are not yet on disk")
        })?;
        Ok(durable)
    }

    /// Records that the log is durable up to `seq`. Best effort: a mark
    /// that stays lower only checks less at the next open.
    pub(crate) fn note_durable(&self, seq: u64) {
        let mut mark = self.mark.lock();
        if seq > *mark && write_mark(&self.dir, seq).is_ok() {
            *mark = seq;
        }
    }

    pub(crate) fn has_fault(&self) -> bool {
        self.fault.lock().is_some()
    }

    pub(crate) fn durable_mark(&self) -> u64 {
        *self.mark.lock()
    }

    /// Drops the refusing engine and opens it again, once the disk has
    /// room. Dropping it writes out what it still buffers; what it could
    /// not keep, the reopened engine's recovery cuts cleanly.
    fn recover(&self, closing: bool) -> Result<()> {
        let Some(mut slot) = self.store.try_write_for(RECOVER_WAIT) else {
            // Readers held on (or this thread holds one): next write.
            return match self.fault.lock().as_ref() {
                Some(f) => Err(self.refusal(f)),
                None => Ok(()),
            };
        };
        let Some(mut w) = self.write.try_lock_for(RECOVER_WAIT) else {
            return match self.fault.lock().as_ref() {
                Some(f) => Err(self.refusal(f)),
                None => Ok(()),
            };
        };
        let Some(fault) = self.fault.lock().clone() else {
            return Ok(()); // another writer got here first
        };
        if !closing && self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let data = self.dir.join("data");
        if free_bytes(&data).is_some_and(|b| b < RESUME_FREE_BYTES) {
            return Err(self.refusal(&fault));
        }
        drop(slot.take());
        let store = Store::open(
            self.opts.engine,
            &data,
            EngineTuning {
                memory_budget: self.opts.memory_budget,
            },
        )
        .map_err(|e| {
            Error::Storage(format!(
                "reopening the storage engine after a failed write ({}) failed: {e}; it is tried again on the next write",
                fault.cause
            ))
        })?;
        for (seqs, undo) in fault.undo.iter().rev() {
            let reached = match seqs {
                Some((seq, _)) => store
                    .get(Space::Log, &crate::local::keys::seq_key(*seq))?
                    .is_some(),
                None => false,
            };
            store.commit(undo.clone(), true).map_err(|f| {
                Error::Storage(format!(
                    "undoing a write that failed ({}) after reopening the storage engine failed: {}; it is tried again on the next write",
                    fault.cause, f.error
                ))
            })?;
            if let (true, Some((seq, _))) = (reached, seqs) {
                log::warn!(
                    target: "tidelog::storage",
                    "{}: transaction {seq}, which returned an error, had reached the engine's journal whole; it is undone",
                    self.dir.display()
                );
            }
        }
        let (first_seq, next_seq, log_bytes, _, log_sizes) = log_state(&store)?;
        let catalog = Catalog::load(&store)?;
        // Read while the failed write was still visible: read them again.
        self.table_stats.clear();
        let last = next_seq - 1;
        for (seq, end) in &fault.unknown {
            let kept = store
                .get(Space::Log, &crate::local::keys::seq_key(*seq))?
                .is_some();
            log::warn!(
                target: "tidelog::storage",
                "{}: transaction {seq}{} whose outcome was unknown after a failed write is {}",
                self.dir.display(),
                if end > seq { format!(" to {end}") } else { String::new() },
                if kept { "committed" } else { "not committed" }
            );
        }
        let committed = *self.committed.borrow();
        if committed > last {
            // Committed, not yet flushed, and not kept by the engine.
            let lost = committed - last;
            self.dropped.fetch_add(lost, Ordering::AcqRel);
            log::error!(
                target: "tidelog::storage",
                "{}: the storage engine lost {lost} committed transactions (seq {} to {committed}) that were not yet flushed when a write failed",
                self.dir.display(),
                last + 1
            );
        } else if last > committed {
            self.feed.unknown_upto(last);
            self.committed.send_replace(last);
        }
        // Sequences already handed out are never reused: a peer may have
        // them.
        w.next_seq = next_seq.max(committed + 1);
        w.first_seq = first_seq;
        w.log_bytes = log_bytes;
        w.log_sizes = log_sizes;
        *self.catalog.write() = catalog;
        self.dirty.store(false, Ordering::Release);
        *slot = Some(store);
        *self.fault.lock() = None;
        Ok(())
    }

    /// Best effort, like any write while closing: a refused write leaves
    /// the older stored position, which only means the peer is sent a
    /// little again.
    fn store_unsaved_meta(&self, puts: Vec<(Vec<u8>, Vec<u8>)>) {
        if puts.is_empty() {
            return;
        }
        let mut batch = Batch::default();
        for (k, v) in puts {
            batch.put(Space::Meta, k, v);
        }
        let stored = self
            .writable_store()
            .and_then(|store| self.commit(&store, batch, false, None));
        if let Err(e) = stored {
            log::warn!(target: "tidelog::repl", "storing peers' acknowledgements at close: {e}");
        }
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Replication first: it reads and writes through this handle.
        let replicator = self.replication.lock().take();
        if let Some(r) = replicator {
            r.shutdown();
            self.store_unsaved_meta(r.unsaved_meta());
        }
        let stop_maintenance = self.stop_maintenance.lock().take();
        if let Some(stop) = stop_maintenance {
            stop();
        }
        self.listeners.shutdown();
        // After a failed write, reopen the engine (and undo what failed)
        // if there is room, so that the next open finds a clean state.
        let recovered = if self.fault.lock().is_some() {
            self.recover(true)
        } else {
            Ok(())
        };
        let _w = self.write.lock();
        let store = self.store.write().take();
        let fault = self.fault.lock().clone();
        let durable = *self.committed.borrow();
        let result = match (&store, fault) {
            (Some(s), None) => s.flush().map_err(|f| {
                self.failed(
                    f,
                    None,
                    None,
                    "the last commits could not be written to disk",
                )
            }),
            // The refusing engine is only dropped, which writes out what it
            // still buffers where it can; what it cannot keep whole, the
            // engine's recovery at the next open cuts.
            (_, Some(f)) => {
                let first = f
                    .undo
                    .iter()
                    .filter_map(|u| u.0)
                    .chain(f.unknown.iter().copied())
                    .min();
                Err(match first {
                    Some((seq, _)) => Error::OutcomeUnknown {
                        seq,
                        more: String::new(),
                        why: format!(
                            "it returned an error ({}), and the database was closed before the storage engine could be reopened to undo it ({}), so it may be present when the directory is opened again",
                            f.cause,
                            recovered.err().map_or_else(|| "no engine".to_string(), |e| e.to_string())
                        ),
                    },
                    None => recovered.err().unwrap_or_else(|| self.refusal(&f)),
                })
            }
            (None, None) => Ok(()),
        };
        let clean = result.is_ok() && self.fault.lock().is_none();
        drop(store);
        if clean {
            self.note_durable(durable);
        }
        drop(self.lock.lock().take());
        result
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// A batch that puts back what `batch` overwrites, read from `store`.
fn undo_batch(store: &Store, batch: &Batch) -> Result<Batch> {
    let mut undo = Batch::default();
    let mut seen = std::collections::HashSet::new();
    for (space, key, _) in &batch.ops {
        if !seen.insert((*space as u8, key.as_slice())) {
            continue;
        }
        match store.get(*space, key)? {
            Some(old) => undo.put(*space, key.clone(), old.to_vec()),
            None => undo.delete(*space, key.clone()),
        }
    }
    Ok(undo)
}
