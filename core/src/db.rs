//! The database handle: options, open and close, table management,
//! listeners, replication metadata. Reads live in `read.rs`, writes in
//! `write.rs`, background work in `maintenance.rs`.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::catalog::{Catalog, TableDef, TableInfo, TableOptions};
use crate::codec::{put_key, Key};
use crate::dir::{load_or_create_identity, validate_node_name, DirLock};
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::listener::{ChangeEvent, ListenerId, Listeners};
use crate::log::{seq_from_key, LogEntry};
use crate::maintenance::Maintenance;
use crate::storage::{Batch, EngineKind, EngineTuning, Space, Store};

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
    /// Bytes the storage engine may use for caches and write buffers.
    pub memory_budget: u64,
    /// Largest record (JSON text bytes) a write may carry.
    pub max_record_bytes: usize,
    /// Remote stamps further ahead of the local wall clock are refused.
    pub max_clock_skew: Duration,
    /// How often expired records are looked for.
    pub expiry_interval: Duration,
    /// How long the transaction log keeps entries.
    pub retention: Retention,
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
            memory_budget: 64 << 20,
            max_record_bytes: 1 << 20,
            max_clock_skew: Duration::from_secs(60),
            expiry_interval: Duration::from_secs(1),
            retention: Retention::default(),
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
}

pub(crate) struct WriteState {
    pub(crate) next_seq: u64,
    /// Oldest sequence still present in the log.
    pub(crate) first_seq: u64,
    /// Sum of the log's key and value sizes, for the byte cap.
    pub(crate) log_bytes: u64,
    /// Where in the log those bytes lie, for peers' backlogs.
    pub(crate) log_sizes: crate::log::LogSizes,
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
    /// Last committed log sequence; replication senders wait on it.
    pub(crate) committed: tokio::sync::watch::Sender<u64>,
    /// Bumped whenever a table is created, for links waiting on one.
    pub(crate) tables_changed: tokio::sync::watch::Sender<u64>,
    pub(crate) replication: Mutex<Option<Arc<crate::repl::Replicator>>>,
    maintenance: Mutex<Option<Maintenance>>,
    lock: Mutex<Option<DirLock>>,
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
    /// Opens (creating if needed) the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Database> {
        let dir = dir.as_ref().to_path_buf();
        validate_node_name(&opts.node_name)?;
        if opts.memory_budget < (4 << 20) {
            return Err(Error::invalid("memory_budget", "must be at least 4 MiB"));
        }
        if opts.max_record_bytes == 0 {
            return Err(Error::invalid("max_record_bytes", "must be at least 1"));
        }
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
        let (log_bytes, log_sizes) = {
            let (mut n, mut sizes) = (0u64, crate::log::LogSizes::default());
            for item in store.range(Space::Log, Bound::Unbounded, Bound::Unbounded, false) {
                let (k, v) = item?;
                let size = (k.len() + v.len()) as u64;
                n += size;
                sizes.appended(seq_from_key(&k)?, size);
            }
            (n, sizes)
        };
        let (first_seq, next_seq) = {
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
                    // Stamps must never go backwards across a restart, even if
                    // the wall clock did.
                    let tail = LogEntry::decode(&lv)?;
                    hlc.observe(tail.local_time.max(tail.stamp.time));
                    (seq_from_key(&fk)?, seq_from_key(&lk)? + 1)
                }
                _ => (1, 1),
            }
        };
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
            listeners: Arc::new(Listeners::default()),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            committed: tokio::sync::watch::Sender::new(next_seq - 1),
            tables_changed: tokio::sync::watch::Sender::new(0),
            replication: Mutex::new(None),
            maintenance: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
        });
        *shared.maintenance.lock() = Some(Maintenance::start(&shared));
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
        let store = self.store()?;
        self.shared.dirty.store(false, Ordering::Release);
        store.flush()
    }

    /// Bytes the data directory occupies on disk.
    pub fn disk_bytes(&self) -> Result<u64> {
        let store = self.store()?;
        store.disk_bytes(&self.shared.dir.join("data"))
    }

    // ---- tables -------------------------------------------------------

    pub fn create_table(&self, name: &str, opts: TableOptions) -> Result<TableInfo> {
        let store = self.store()?;
        let _w = self.shared.write.lock();
        let mut batch = Batch::default();
        let def = self
            .shared
            .catalog
            .read()
            .prepare_create(name, &opts, &mut batch)?;
        store.commit(batch, self.sync_commits())?;
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
        let store = self.store()?;
        let def = {
            let _w = self.shared.write.lock();
            let def = self.shared.catalog.read().get(name)?.clone();
            let mut batch = Batch::default();
            batch.delete(Space::Meta, crate::catalog::table_key(name));
            store.commit(batch, self.sync_commits())?;
            self.shared.catalog.write().remove(name);
            def
        };
        // Table ids are never reused, so leftover rows are unreachable; purge
        // them in chunks so writers are not blocked for long.
        for space in [Space::Rows, Space::Index] {
            loop {
                let _w = self.shared.write.lock();
                let mut batch = Batch::default();
                for item in store.prefix(space, &def.row_prefix(), false).take(10_000) {
                    batch.delete(space, item?.0.to_vec());
                }
                if batch.is_empty() {
                    break;
                }
                store.commit(batch, false)?;
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
        crate::catalog::validate_table_name(table)?;
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
        let store = self.store()?;
        let mut batch = Batch::default();
        batch.put(Space::Meta, key.to_vec(), value.to_vec());
        store.commit(batch, false)?;
        self.shared.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Puts and deletes in the meta space, as one commit.
    pub(crate) fn meta_commit(
        &self,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
    ) -> Result<()> {
        let store = self.store()?;
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
        store.commit(batch, false)?;
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
        let guard = self.store.read();
        RwLockReadGuard::try_map(guard, |s| s.as_ref()).map_err(|_| Error::Closed)
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Replication first: it reads and writes through this handle.
        let replicator = self.replication.lock().take();
        if let Some(r) = replicator {
            r.shutdown();
        }
        if let Some(m) = self.maintenance.lock().take() {
            m.stop();
        }
        self.listeners.shutdown();
        let _w = self.write.lock();
        let store = self.store.write().take();
        let result = match &store {
            Some(s) => s.flush(),
            None => Ok(()),
        };
        drop(store);
        drop(self.lock.lock().take());
        result
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

pub(crate) fn cursor_key(name: &str) -> Vec<u8> {
    let mut k = b"cursor/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn row_key(def: &TableDef, key: &Key) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&def.row_prefix());
    put_key(&mut k, key);
    k
}
