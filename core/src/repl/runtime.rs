//! The running replication engine of one database: its tokio runtime, TLS
//! configurations and peers, and its shutdown.
//!
//! Links (`session`, `sender`, `receiver`) hold an `Arc<Replicator>` for the
//! engine's settings and peer table; the engine itself never names them.
//! Dialers and acceptors are spawned by the public API (`api.rs`) through
//! `session`, not by the engine or a peer's state, so the imports run one
//! way: api -> session -> sender/receiver -> runtime -> peer -> config.
//! A trait object in place of the struct would give the same order but
//! hide which settings a link reads; the struct keeps them visible.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::config::ReplicationOptions;
use super::peer::PeerState;
use super::rule::PeerRule;
use crate::error::{Error, Result};
use crate::local::db::{Database, ReplicationHook, Shared};

/// The running replication engine of one database.
pub(crate) struct Replicator {
    pub(super) runtime: Mutex<Option<tokio::runtime::Runtime>>,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) opts: ReplicationOptions,
    pub(crate) client_tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) peers: Mutex<HashMap<String, Arc<PeerState>>>,
    pub(crate) db: Weak<Shared>,
    pub(crate) node_name: String,
    pub(super) acceptors: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set when the database closes: each session then says goodbye and
    /// ends its TLS stream with close_notify (see `session::write_loop`).
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// Accepted connections not yet done (handshake, hello, and the link
    /// they become): `shutdown` waits for them as for registered links,
    /// since the peer may already count such a link as up.
    pub(crate) accepting: std::sync::atomic::AtomicUsize,
    /// Peer rules, tried in the order they were added.
    pub(crate) rules: Mutex<Vec<PeerRule>>,
    /// Admission records stored (see `admit`), for the cap.
    pub(crate) admitted: std::sync::atomic::AtomicUsize,
    /// The cap on `admitted` (`admit::MAX_ADMITTED_PEERS`; tests lower it).
    pub(crate) max_admitted: std::sync::atomic::AtomicUsize,
    /// Serializes admissions and rule changes, so a peer admitted by a
    /// rule being removed is either swept with it or refused.
    pub(crate) admit_lock: Mutex<()>,
    /// Accepted connections whose TLS handshake failed, or whose
    /// certificate did not name the node they said they were: no peer is
    /// proven for them, so they count for the node
    /// (`Database::accepted_tls_failures`).
    pub(crate) accepted_tls_failures: std::sync::atomic::AtomicU64,
    /// The sinks' acknowledgement gates and resume hints (see `sunk`).
    pub(crate) sunk: Arc<super::sunk::Sunk>,
}

impl Replicator {
    pub(crate) fn db(&self) -> Result<Database> {
        match self.db.upgrade() {
            Some(shared) => Ok(Database { shared }),
            None => Err(Error::Closed),
        }
    }

    pub(crate) fn peer(&self, name: &str) -> Option<Arc<PeerState>> {
        self.peers.lock().get(name).cloned()
    }

    /// The lowest local sequence every publishing peer acknowledged, as
    /// stored: trimming past an acknowledgement held only in memory would,
    /// after a crash, leave a stored position the log no longer holds, and
    /// the peer would be resynced in full; `u64::MAX` when no peer
    /// receives anything from this node. An admitted peer silent past its
    /// rule's `max_silence` does not count: the log may trim past it, and
    /// it is resynced when it returns.
    pub(crate) fn acked_floor(&self) -> u64 {
        let now = crate::local::hlc::wall_millis();
        let mut released = Vec::new();
        let floor = self
            .peers
            .lock()
            .values()
            .filter(|p| p.config().tables.iter().any(|t| t.publish))
            .filter(|p| {
                let holds = p.contact.holds_log(now, || p.counters.lock().connected);
                if !holds && p.contact.first_release() {
                    released.push(p.name());
                }
                holds
            })
            .map(|p| p.stored_acked())
            .min()
            .unwrap_or(u64::MAX);
        // Logged outside the lock, as in `note_trimmed`.
        for name in released {
            log::info!(
                target: "tidelog::repl",
                "`{name}` has been away longer than its rule's max_silence: it no longer holds the log, and is resynced if it returns after the entries it lacks were trimmed"
            );
        }
        floor
    }

    /// Stores every peer's acknowledgement that moved since its last
    /// store, in one commit (see `session::persist_acks`).
    pub(crate) fn persist_acks(&self, db: &Database) -> Result<()> {
        // Held until the commit: `forget_peer` takes the peer out of the
        // table under this lock and deletes its records afterwards, so a
        // batch gathered before that cannot write a forgotten peer's
        // acknowledgement back after the delete.
        let _forgetting = self.admit_lock.lock();
        let moved: Vec<(Arc<PeerState>, u64)> = self
            .peers
            .lock()
            .values()
            .filter(|p| !p.is_removed())
            .filter_map(|p| Some((p.clone(), p.unsaved_acked()?)))
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        let puts = moved
            .iter()
            .map(|(p, seq)| {
                (
                    crate::local::keys::acked_key(&p.name()),
                    seq.to_be_bytes().to_vec(),
                )
            })
            .collect();
        db.meta_commit(puts, Vec::new())?;
        for (p, seq) in moved {
            p.note_stored_acked(seq);
        }
        Ok(())
    }

    /// Tells peers whose acknowledged position the log no longer holds that
    /// they will be resynced.
    pub(crate) fn note_trimmed(&self, first: u64) {
        for p in self.peers.lock().values() {
            let acked = *p.acked.borrow();
            if acked + 1 < first && p.config().tables.iter().any(|t| t.publish) {
                let msg = format!(
                    "the log cap trimmed entries {}..{} before `{}` acknowledged them; its tables will be resynced",
                    acked + 1,
                    first - 1,
                    p.name()
                );
                let first = {
                    let mut c = p.counters.lock();
                    let first = !c.overtaken;
                    c.overtaken = true;
                    c.last_error = Some(msg.clone());
                    first
                };
                // Logged outside the lock: a host's logger may be slow or
                // call back into status, which takes it.
                if first {
                    log::warn!(target: "tidelog::repl", "{msg}");
                }
            }
        }
    }

    /// Stops every task. Live sessions first get up to `GOODBYE_WAIT` to
    /// tell their peers why and close TLS cleanly, so a peer sees "closed
    /// the link: its database is closing" rather than a broken connection.
    /// From a thread of our own runtime (a last handle dropped inside a
    /// task) it cannot wait, so it lets the runtime go.
    pub(crate) fn shutdown(&self) {
        const GOODBYE_WAIT: Duration = Duration::from_millis(500);
        for a in self.acceptors.lock().drain(..) {
            a.abort();
        }
        // Dialers stop dialing, links say goodbye (see `session::dial_loop`).
        self.closing.send_replace(true);
        let peers: Vec<Arc<PeerState>> = self.peers.lock().values().cloned().collect();
        if tokio::runtime::Handle::try_current().is_err() {
            let deadline = std::time::Instant::now() + GOODBYE_WAIT;
            let busy = || {
                self.accepting.load(std::sync::atomic::Ordering::Acquire) > 0
                    || peers.iter().any(|p| p.has_live_tasks())
            };
            while busy() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        for p in &peers {
            p.stop();
        }
        if let Some(rt) = self.runtime.lock().take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(3));
            }
        }
    }
}

impl ReplicationHook for Replicator {
    fn acked_floor(&self) -> u64 {
        Replicator::acked_floor(self)
    }

    fn note_trimmed(&self, first: u64) {
        Replicator::note_trimmed(self, first)
    }

    fn shutdown(&self) {
        Replicator::shutdown(self)
    }

    fn unsaved_meta(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.peers
            .lock()
            .values()
            .filter_map(|p| {
                let seq = p.unsaved_acked()?;
                p.note_stored_acked(seq);
                Some((
                    crate::local::keys::acked_key(&p.name()),
                    seq.to_be_bytes().to_vec(),
                ))
            })
            .collect()
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}
