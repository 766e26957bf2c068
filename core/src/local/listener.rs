//! Change listeners. Committers queue events while they still hold the
//! commit lock (so events keep commit order), and one dispatcher thread calls
//! the listeners with no tidelog lock held, so a listener may read and write
//! the database, even the same table, without deadlock.
//!
//! The queue holds at most `listener_queue_max` events, so a slow listener
//! costs bounded memory and never holds up a commit: an event that finds
//! the queue full is dropped and counted per table, and the next event of
//! that table that is queued carries the count in `missed` (a listener that
//! keeps a copy of the table reads it again when `missed > 0`).
//! [`crate::Database::listener_events_missed`] is the total.
//!
//! [`crate::Database::listener_events_pending`] counts the events queued and
//! not yet handed to every listener, so a binding that forwards events to
//! another thread can tell when nothing more is on its way, even where the
//! last events were dropped and no later event will report them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

use parking_lot::{Mutex, RwLock};

use crate::local::codec::{Key, Stamp};
use crate::local::record::Record;

/// One committed change to one record.
#[derive(Debug, Clone)]
pub struct Change {
    pub key: Key,
    /// The record after the change; `None` if it was deleted.
    pub record: Option<Record>,
}

/// What one transaction changed in one table.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub table: String,
    /// Local log sequence number of the transaction.
    pub seq: u64,
    /// Version stamp of the changes; `stamp.node` is the origin node id.
    pub stamp: Stamp,
    /// True when the transaction was committed on this instance, false when
    /// it was applied from a peer.
    pub local: bool,
    pub changes: Vec<Change>,
    /// Events of this table dropped just before this one because the
    /// listener queue was full (see `listener_queue_max`); 0 normally.
    pub missed: u64,
}

impl ChangeEvent {
    /// Node id of the instance where the change was first committed.
    pub fn origin(&self) -> u64 {
        self.stamp.node
    }
}

/// Identifies a registered listener, for [`crate::Database::remove_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u64);

pub(crate) type ListenerFn = Arc<dyn Fn(&ChangeEvent) + Send + Sync + 'static>;

/// Events the listener queue holds by default.
pub const DEFAULT_LISTENER_QUEUE_MAX: usize = 10_000;

pub(crate) struct Listeners {
    by_table: RwLock<HashMap<String, Vec<(ListenerId, ListenerFn)>>>,
    any: AtomicBool,
    next_id: AtomicU64,
    sender: Mutex<Option<SyncSender<ChangeEvent>>>,
    /// Most events queued at once.
    bound: AtomicUsize,
    /// Events dropped per table since that table's last queued event.
    missed: Mutex<HashMap<String, u64>>,
    any_missed: AtomicBool,
    /// Every event dropped since open.
    pub(crate) missed_total: AtomicU64,
    /// Events queued whose listeners have not all returned yet.
    pub(crate) pending: AtomicUsize,
    thread: Mutex<Option<(ThreadId, JoinHandle<()>)>>,
    /// Listener calls that panicked (reported, then ignored).
    pub(crate) panics: AtomicU64,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            by_table: RwLock::default(),
            any: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            sender: Mutex::new(None),
            bound: AtomicUsize::new(DEFAULT_LISTENER_QUEUE_MAX),
            missed: Mutex::default(),
            any_missed: AtomicBool::new(false),
            missed_total: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            thread: Mutex::new(None),
            panics: AtomicU64::new(0),
        }
    }
}

impl Listeners {
    /// Sets the queue's bound (at least 1); takes effect when the first
    /// listener is added.
    pub(crate) fn set_bound(&self, events: usize) {
        self.bound.store(events.max(1), Ordering::Relaxed);
    }

    pub(crate) fn add(self: &Arc<Self>, table: &str, f: ListenerFn) -> ListenerId {
        let id = ListenerId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        self.ensure_dispatcher();
        self.by_table
            .write()
            .entry(table.to_string())
            .or_default()
            .push((id, f));
        self.any.store(true, Ordering::Release);
        id
    }

    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut map = self.by_table.write();
        let mut found = false;
        map.retain(|_, v| {
            let before = v.len();
            v.retain(|(i, _)| *i != id);
            found |= v.len() != before;
            !v.is_empty()
        });
        self.any.store(!map.is_empty(), Ordering::Release);
        found
    }

    /// Cheap check on the commit path: is anyone listening to `table`?
    pub(crate) fn wants(&self, table: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.by_table.read().contains_key(table)
    }

    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Queues an event; called with the commit lock held, so it must not
    /// block: where the queue is full the event is dropped and counted.
    pub(crate) fn queue(&self, mut event: ChangeEvent) {
        let sender = self.sender.lock();
        let Some(tx) = sender.as_ref() else { return };
        let owed = if self.any_missed.load(Ordering::Acquire) {
            self.missed.lock().remove(&event.table).unwrap_or(0)
        } else {
            0
        };
        event.missed = owed;
        // Counted before the send: the dispatcher may finish the event (and
        // take it off the count) before try_send returns here.
        self.pending.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.missed_total.fetch_add(1, Ordering::Relaxed);
                let mut missed = self.missed.lock();
                *missed.entry(e.table).or_insert(0) += owed + 1;
                self.any_missed.store(true, Ordering::Release);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn ensure_dispatcher(self: &Arc<Self>) {
        let mut sender = self.sender.lock();
        if sender.is_some() {
            return;
        }
        let (tx, rx) = sync_channel::<ChangeEvent>(self.bound.load(Ordering::Relaxed));
        let me = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("tidelog-events".into())
            .spawn(move || {
                while let Ok(event) = rx.recv() {
                    let Some(listeners) = me.upgrade() else { break };
                    let targets: Vec<ListenerFn> = listeners
                        .by_table
                        .read()
                        .get(&event.table)
                        .map(|v| v.iter().map(|(_, f)| f.clone()).collect())
                        .unwrap_or_default();
                    for f in targets {
                        let call = std::panic::AssertUnwindSafe(|| f(&event));
                        if std::panic::catch_unwind(call).is_err() {
                            listeners.panics.fetch_add(1, Ordering::Relaxed);
                            log::error!(
                                target: "tidelog::listener",
                                "a change listener for table `{}` panicked; the panic was contained and the listener stays registered",
                                event.table
                            );
                        }
                    }
                    // Release: whoever reads 0 also sees what the listeners
                    // did with the event (a binding's hand-off count).
                    listeners.pending.fetch_sub(1, Ordering::Release);
                }
            });
        if let Ok(handle) = spawned {
            *self.thread.lock() = Some((handle.thread().id(), handle));
            *sender = Some(tx);
        }
    }

    /// Delivers what is queued, then stops the dispatcher. From inside a
    /// listener (the dispatcher thread itself) it cannot wait for itself, so
    /// it only stops it.
    pub(crate) fn shutdown(&self) {
        drop(self.sender.lock().take());
        let thread = self.thread.lock().take();
        if let Some((id, handle)) = thread {
            if id != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        self.by_table.write().clear();
        self.any.store(false, Ordering::Release);
    }
}
