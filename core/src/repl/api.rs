//! The replication calls of [`Database`]: start the engine, listen, manage
//! peers, read their status, and wait for receipts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::config::{PeerConfig, ReplicationOptions, Security};
use super::peer::PeerState;
use super::runtime::Replicator;
use super::session;
use super::status::PeerStatus;
use crate::error::{Error, Result};
use crate::local::db::Database;

/// Pending connections the kernel queues for the replication listener.
const LISTEN_BACKLOG: u32 = 4096;

impl Database {
    pub(crate) fn replicator(&self) -> Result<Arc<Replicator>> {
        let _store = self.store()?;
        let hook = self.shared.replication.lock().clone();
        hook.and_then(|h| h.as_any().downcast::<Replicator>().ok())
            .ok_or_else(|| {
                Error::Unsupported(
                    "replication is not started: call start_replication first".into(),
                )
            })
    }

    /// Starts the replication engine (its runtime and TLS configuration).
    /// Call once, before `listen` and `add_peer`.
    pub fn start_replication(&self, opts: ReplicationOptions) -> Result<()> {
        let _store = self.store()?;
        opts.validate()?;
        let mut slot = self.shared.replication.lock();
        if slot.is_some() {
            return Err(Error::Unsupported("replication is already started".into()));
        }
        let (client_tls, server_tls) = match &opts.security {
            Security::MutualTls(id) => (Some(id.client_config()?), Some(id.server_config()?)),
            Security::Insecure => (None, None),
        };
        let admitted = super::admit::count_records(self)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads)
            .max_blocking_threads(blocking_threads(self.options().memory_budget))
            .thread_name("tidelog-net")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let r = Arc::new(Replicator {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            opts,
            client_tls,
            server_tls,
            peers: Mutex::new(HashMap::new()),
            db: Arc::downgrade(&self.shared),
            node_name: self.shared.node_name.clone(),
            acceptors: Mutex::new(Vec::new()),
            closing: tokio::sync::watch::Sender::new(false),
            accepting: std::sync::atomic::AtomicUsize::new(0),
            rules: Mutex::new(Vec::new()),
            admitted: std::sync::atomic::AtomicUsize::new(admitted),
            max_admitted: std::sync::atomic::AtomicUsize::new(super::admit::MAX_ADMITTED_PEERS),
            admit_lock: Mutex::new(()),
            accepted_tls_failures: std::sync::atomic::AtomicU64::new(0),
            sunk: Default::default(),
        });
        r.handle.spawn(session::persist_acks(Arc::downgrade(&r)));
        *slot = Some(r);
        Ok(())
    }

    /// Accepts peers dialing in on `addr` (e.g. `127.0.0.1:7000`; port 0
    /// picks a free one). Returns the bound address.
    pub fn listen(&self, addr: &str) -> Result<SocketAddr> {
        let r = self.replicator()?;
        let bind = |e: std::io::Error| Error::Peer(format!("cannot listen on {addr}: {e}"));
        let sockaddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(bind)?
            .next()
            .ok_or_else(|| Error::Peer(format!("cannot listen on {addr}: it names no address")))?;
        let listener = {
            let _enter = r.handle.enter();
            let socket = match sockaddr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(bind)?;
            // As std's listener does, so a restarted hub can bind while
            // its old connections sit in TIME_WAIT.
            socket.set_reuseaddr(true).map_err(bind)?;
            socket.bind(sockaddr).map_err(bind)?;
            // std's default backlog is 128: a fleet redialing at once
            // (a hub restart) overflowed it and its nodes waited out
            // their connect timeout and backoff. The kernel caps it at
            // net.core.somaxconn.
            socket.listen(LISTEN_BACKLOG).map_err(bind)?
        };
        let local = listener.local_addr().map_err(bind)?;
        let task = r.handle.spawn(session::accept_loop(r.clone(), listener));
        r.acceptors.lock().push(task.abort_handle());
        Ok(local)
    }

    /// Adds a peer; takes effect at once, also while it is unreachable.
    /// A peer of that name that a rule admitted becomes this configured
    /// peer (configured peers win over rules): its link restarts with this
    /// configuration, its stored state stays, its admission record goes.
    pub fn add_peer(&self, config: PeerConfig) -> Result<()> {
        let r = self.replicator()?;
        config.validate(&self.shared.node_name)?;
        super::route::record_routed(self, &config.tables);
        let _admitting = r.admit_lock.lock();
        let admitted = {
            let peers = r.peers.lock();
            match peers.get(&config.name) {
                Some(p) if p.contact.rule().is_none() => {
                    return Err(Error::PeerExists(config.name));
                }
                other => other.cloned(),
            }
        };
        if let Some(old) = admitted {
            r.peers.lock().remove(&config.name);
            // Its acknowledgement may be in memory only (they are stored
            // in batches): the configured peer starts from the stored one.
            old.persist_acked(self)?;
            old.remove();
        }
        if self
            .meta_get(&crate::local::keys::admitted_key(&config.name))?
            .is_some()
        {
            self.meta_commit(
                Vec::new(),
                vec![crate::local::keys::admitted_key(&config.name)],
            )?;
            let _ = r.admitted.fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |n| n.checked_sub(1),
            );
        }
        let state = super::admit::load_state(self, config.clone())?;
        let mut peers = r.peers.lock();
        if peers.contains_key(&config.name) {
            return Err(Error::PeerExists(config.name));
        }
        peers.insert(config.name.clone(), state.clone());
        drop(peers);
        if config.address.is_some() {
            session::start_dialer(&r, &state);
        }
        Ok(())
    }

    /// Replaces a peer's configuration; its link says goodbye ("its
    /// settings for this peer changed") and restarts with it.
    pub fn update_peer(&self, config: PeerConfig) -> Result<()> {
        let r = self.replicator()?;
        config.validate(&self.shared.node_name)?;
        super::route::record_routed(self, &config.tables);
        let state = r
            .peer(&config.name)
            .ok_or_else(|| Error::PeerNotFound(config.name.clone()))?;
        if let Some(rule) = state.contact.rule() {
            return Err(Error::invalid(
                "peer",
                format!(
                    "`{}` was admitted by peer rule `{rule}`: change the rule with update_peer_rule, or make it a configured peer with add_peer",
                    config.name
                ),
            ));
        }
        let had_address = state.config().address.is_some();
        state.set_config(config.clone());
        // The link says goodbye and ends; a dialer whose peer lost its
        // address then stops by itself.
        state.restart();
        if config.address.is_some() && !had_address {
            session::start_dialer(&r, &state);
        }
        Ok(())
    }

    /// Removes a peer; its link says goodbye ("it no longer has this node
    /// as a peer") and nothing redials it. Its resume cursor stays, so
    /// adding it again resumes where it left off.
    pub fn remove_peer(&self, name: &str) -> Result<()> {
        let r = self.replicator()?;
        let state = r
            .peers
            .lock()
            .remove(name)
            .ok_or_else(|| Error::PeerNotFound(name.to_string()))?;
        // Stored now, not at the next batch: the batch only walks the
        // peers still configured, and adding it back reads the stored one.
        let stored = state.persist_acked(self);
        state.remove();
        stored
    }

    /// Connections dialed in to this node whose TLS handshake failed, or
    /// whose certificate did not name the node they said they were, since
    /// replication started. Counted for the node, not a peer: none is
    /// proven for such a connection (failed dials of a known peer are in
    /// its [`PeerStatus::tls_failures`]).
    pub fn accepted_tls_failures(&self) -> Result<u64> {
        Ok(self
            .replicator()?
            .accepted_tls_failures
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn peer_status(&self, name: &str) -> Result<PeerStatus> {
        let r = self.replicator()?;
        let state = r
            .peer(name)
            .ok_or_else(|| Error::PeerNotFound(name.to_string()))?;
        state.status(self)
    }

    /// Test hook, not part of the API: how often the link to `peer` read
    /// this node's log, how many log frames (transactions or progress) it
    /// sent, and how many of the peer's it received and acknowledged, over
    /// every link since the peer was added.
    #[doc(hidden)]
    pub fn link_activity_for_tests(&self, peer: &str) -> Result<(u64, u64, u64)> {
        let state = self
            .replicator()?
            .peer(peer)
            .ok_or_else(|| Error::PeerNotFound(peer.to_string()))?;
        let c = state.counters.lock();
        Ok((c.log_reads, c.log_frames, c.log_frames_in))
    }

    /// Status of every peer, by name.
    pub fn replication_status(&self) -> Result<Vec<PeerStatus>> {
        let r = self.replicator()?;
        let mut peers: Vec<Arc<PeerState>> = r.peers.lock().values().cloned().collect();
        peers.sort_by_key(|p| p.name());
        peers.iter().map(|p| p.status(self)).collect()
    }

    /// Waits until every peer this instance publishes to has acknowledged
    /// the log up to `seq` (`None`: everything committed so far). Use it as
    /// a delivery receipt that survives restarts: acknowledgements are
    /// persisted, and a restarted app can wait for "everything up to now".
    ///
    /// Fails with [`Error::NotSubscribed`] if transaction `seq` (for `None`,
    /// the newest one) writes a table this node publishes to a peer that
    /// did not subscribe to it on its last link, with
    /// [`Error::DeliveryUnproven`] if the log no longer holds `seq` and such
    /// a peer skips a published table, with [`Error::Refused`] as soon as a
    /// peer refused it (see [`Database::wait_for_ack`]), and with
    /// [`Error::NotAcknowledged`] (kind `Timeout`, saying what the link
    /// looks like) when time runs out.
    pub fn wait_for_delivery(&self, seq: Option<u64>, timeout: Duration) -> Result<()> {
        let r = self.replicator()?;
        let seq = match seq {
            Some(s) => s,
            None => self.log_bounds()?.last,
        };
        let (tables, stamp) = self.tables_written_by(seq)?;
        let deadline = std::time::Instant::now().checked_add(timeout);
        let peers: Vec<Arc<PeerState>> = r
            .peers
            .lock()
            .values()
            .filter(|p| p.config().tables.iter().any(|t| t.publish))
            .cloned()
            .collect();
        // Every link hears of the receipt at once, not one after another.
        for p in &peers {
            p.want_progress(seq);
        }
        for p in peers {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            p.wait_acked(seq, stamp, tables.as_deref(), left, || self.is_closed())
                .map_err(|mut e| {
                    // The caller's whole timeout, not this peer's share.
                    if let Error::NotAcknowledged { after, .. } = &mut e {
                        *after = timeout;
                    }
                    e
                })?;
        }
        Ok(())
    }

    /// Waits until `peer` has acknowledged this instance's log up to `seq`
    /// (e.g. the `seq` of a [`crate::CommitInfo`]), or `timeout` passes.
    ///
    /// The peer acknowledges positions in this node's log; writes to tables
    /// it does not take from this node are passed over, not delivered. So
    /// if transaction `seq` writes a table this node publishes to `peer`
    /// and `peer`'s hello on the last link did not ask for it, this fails
    /// with [`Error::NotSubscribed`] instead of passing, with the link up or
    /// down and after a restart: this node stores, per peer, which published
    /// tables the last link did not ask for (replaced when a link comes up;
    /// for a peer that now subscribes, such receipts wait until it
    /// acknowledges a write committed after that link came up, which covers
    /// the table's sync or renewed stream). Which tables `seq`
    /// wrote is read from the log; once retention trimmed the entry, it is
    /// unknown, so if `peer` skips any published table the receipt fails
    /// with [`Error::DeliveryUnproven`] rather than pass for a write that
    /// may never have reached it (keep entries longer with
    /// [`crate::Retention::log_min_age`] to check receipts later). Writes to
    /// tables not published to `peer` at all are not part of its receipt.
    ///
    /// A receipt means `peer` applied the transaction. If it refused it, or
    /// part of it (a stamp beyond its `max_clock_skew`, a table it does not
    /// take, a record breaking its rules, a table it no longer has), this
    /// fails at once with [`Error::Refused`] (kind `ClockSkew` for a stamp
    /// too far ahead, `Peer` otherwise), also after a restart, though
    /// `peer` acknowledges positions past it so that later writes flow. A
    /// receipt is for transaction `seq` alone: it passes if `seq` was
    /// applied even when an earlier one of the same table was refused
    /// (those show in [`PeerStatus::refusals`]). When time runs out the
    /// error is [`Error::NotAcknowledged`] (kind `Timeout`), saying what
    /// the link looks like and what to check.
    pub fn wait_for_ack(&self, peer: &str, seq: u64, timeout: Duration) -> Result<()> {
        let r = self.replicator()?;
        let state = r
            .peer(peer)
            .ok_or_else(|| Error::PeerNotFound(peer.to_string()))?;
        let (tables, stamp) = self.tables_written_by(seq)?;
        state.wait_acked(seq, stamp, tables.as_deref(), timeout, || self.is_closed())
    }

    /// The tables transaction `seq` writes and its stamp; no tables (and
    /// no stamp) if the log does not hold it yet, `None` for the tables if
    /// it no longer does (trimmed: which tables it wrote is unknown).
    fn tables_written_by(
        &self,
        seq: u64,
    ) -> Result<(Option<Vec<String>>, Option<crate::local::codec::Stamp>)> {
        let bounds = self.log_bounds()?;
        if seq == 0 || seq > bounds.last {
            return Ok((Some(Vec::new()), None));
        }
        if seq < bounds.first {
            return Ok((None, None));
        }
        // Gone between the bounds and the read: trimmed meanwhile.
        let Some(entry) = self.read_log(seq, 1)?.into_iter().find(|e| e.seq == seq) else {
            return Ok((None, None));
        };
        let mut tables: Vec<String> = entry.writes.into_iter().map(|w| w.table).collect();
        tables.sort_unstable();
        tables.dedup();
        Ok((Some(tables), Some(entry.stamp)))
    }
}

/// Threads of the runtime's blocking pool, where links run their storage
/// calls (apply, cursors, acks, admissions). Storage calls never wait on
/// one another there, so a queue behind the cap is only slower.
///
/// tokio's default of 512 let a hub with thousands of links reconnecting
/// at once grow a thread, its stack and a malloc arena per busy link: a
/// hub gets 64. An edge (a memory budget at or below the edge profile's)
/// has a link or two, and each pool thread it started kept a malloc arena
/// of its own: with two, an edge draining 1,000,000 records from a hub
/// (`edge_memory` bench) peaked at 42.6-44.9 MiB instead of 49.9-52.7
/// (catch-up) and 43.6-46.1 instead of 48.8-55.8 (initial sync), draining
/// as fast (176,000-214,000 records/s either way); four took nothing off.
fn blocking_threads(memory_budget: u64) -> usize {
    if memory_budget <= crate::local::profile::Profile::Edge.memory_budget() {
        2
    } else {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::blocking_threads;
    use crate::local::profile::Profile;

    #[test]
    fn edges_get_a_small_blocking_pool_and_hubs_a_large_one() {
        assert_eq!(blocking_threads(Profile::Edge.memory_budget()), 2);
        assert_eq!(blocking_threads(4 << 20), 2);
        assert_eq!(blocking_threads(Profile::Hub.memory_budget()), 64);
    }
}
