//! Peers admitted by rules: the admission record that keeps one across
//! restarts, admitting a node on its first contact, the rule calls of
//! [`Database`], and forgetting a peer with everything stored about it.
//!
//! Per-edge state (resume cursor, acknowledged position, refusals, quota)
//! is stored by peer name, as for an explicit peer; the admission record
//! (`admitted/<name>`: rule, first and last contact) says which rule the
//! name belongs to, so that re-adding the rule after a restart re-creates
//! its peers with their acknowledged positions (and their hold on the log)
//! before any of them dials in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::config::PeerConfig;
use super::contact::Admitted;
use super::cursor;
use super::link::blocking;
use super::peer::PeerState;
use super::rule::PeerRule;
use super::runtime::Replicator;
use crate::error::{Error, Result};
use crate::local::db::Database;
use crate::local::hlc::wall_millis;
use crate::local::keys::{
    acked_key, admitted_key, cursor_key, not_wanted_key, quota_key, refusals_prefix,
    ADMITTED_PREFIX,
};
use crate::net::wire::Hello;

/// Most admission records kept. Each costs a record of about 40 bytes and
/// the peer's state once it acknowledges anything (a few hundred bytes);
/// an admitted peer whose rule is added costs about 2 KiB of memory while
/// dormant. Past the cap, new first contacts are refused (with a reason
/// naming `forget_peer`) while known peers still connect: a CA that
/// signed a wildcard certificate cannot fill the disk with names.
pub(crate) const MAX_ADMITTED_PEERS: usize = 100_000;

/// Most rules named in a refusal, so that a goodbye stays small.
const RULES_IN_REFUSAL: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AdmissionRecord {
    rule: String,
    first_ms: u64,
    last_ms: u64,
}

fn load_record(db: &Database, name: &str) -> Result<Option<AdmissionRecord>> {
    db.meta_get(&admitted_key(name))?
        .map(|v| {
            postcard::from_bytes(&v)
                .map_err(|_| Error::Corrupt(format!("admission record of `{name}`")))
        })
        .transpose()
}

fn store_record(db: &Database, name: &str, rec: &AdmissionRecord) -> Result<()> {
    let v = postcard::to_stdvec(rec)
        .map_err(|e| Error::Storage(format!("encoding the admission of `{name}`: {e}")))?;
    db.meta_put(&admitted_key(name), &v)
}

/// Every admission record, by peer name.
fn load_records(db: &Database) -> Result<Vec<(String, AdmissionRecord)>> {
    db.meta_prefix(ADMITTED_PREFIX)?
        .into_iter()
        .map(|(k, v)| {
            let name = std::str::from_utf8(&k[ADMITTED_PREFIX.len()..])
                .map_err(|_| Error::Corrupt("admission record key".into()))?
                .to_string();
            let rec = postcard::from_bytes(&v)
                .map_err(|_| Error::Corrupt(format!("admission record of `{name}`")))?;
            Ok((name, rec))
        })
        .collect()
}

/// How many admission records are stored (once, when replication starts).
pub(crate) fn count_records(db: &Database) -> Result<usize> {
    Ok(db.meta_prefix(ADMITTED_PREFIX)?.len())
}

/// A peer's state as stored: acknowledged position, refusals, skipped
/// tables, quota use, and the node id it was last known by.
pub(crate) fn load_state(db: &Database, config: PeerConfig) -> Result<Arc<PeerState>> {
    let name = config.name.clone();
    let acked = cursor::load_acked(db, &name)?;
    let refused = cursor::load_refusals(db, &name)?;
    let skipped = cursor::load_skipped(db, &name)?;
    let quota = cursor::load_quota(db, &name)?;
    let state = PeerState::new(config, acked, refused, skipped, quota);
    // A damaged cursor is reported when the link loads it; here it only
    // means no node id is known for the peer yet.
    let known = cursor::PeerCursor::load(db, &name).map_or(0, |c| c.peer_node_id);
    if known != 0 {
        state.counters.lock().known_node_id = Some(known);
    }
    Ok(state)
}

fn admitted(rule: &PeerRule, first_ms: u64) -> Admitted {
    Admitted {
        rule: rule.name.clone(),
        first_ms,
        max_silence: rule.max_silence,
    }
}

/// The first rule that admits `node` with certificate `cert`, or why none
/// does (for the goodbye: which rules exist and what each asks for).
pub(crate) fn match_rule(
    r: &Replicator,
    node: &str,
    cert: Option<&CertificateDer<'_>>,
) -> std::result::Result<PeerRule, String> {
    let rules = r.rules.lock();
    if let Some(rule) = rules
        .iter()
        .find(|rule| rule.matches_name(node) && rule.cert_ok(cert))
    {
        return Ok(rule.clone());
    }
    if rules.is_empty() {
        return Err(format!(
            "`{node}` is not a configured peer of `{}`",
            r.node_name
        ));
    }
    let why: Vec<String> = rules
        .iter()
        .take(RULES_IN_REFUSAL)
        .map(|rule| {
            let miss = if !rule.matches_name(node) {
                "name does not match"
            } else {
                "certificate does not name the required DNS name"
            };
            format!("{}: {miss}", rule.describe())
        })
        .collect();
    let more = rules.len().saturating_sub(RULES_IN_REFUSAL);
    Err(format!(
        "`{node}` is not a configured peer of `{}` and matches none of its {} peer rule(s): {}{}",
        r.node_name,
        rules.len(),
        why.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    ))
}

/// Why an admitted peer may no longer connect (its rule went away or its
/// certificate no longer meets it), if so.
pub(crate) fn still_admitted(
    r: &Replicator,
    peer: &PeerState,
    cert: Option<&CertificateDer<'_>>,
) -> Option<String> {
    let a = peer.contact.admission()?;
    let rules = r.rules.lock();
    match rules.iter().find(|rule| rule.name == a.rule) {
        None => Some(format!(
            "peer rule `{}` that admitted `{}` was removed from `{}`",
            a.rule,
            peer.name(),
            r.node_name
        )),
        Some(rule) if !rule.cert_ok(cert) => Some(format!(
            "`{}`'s certificate does not meet peer rule {} of `{}`",
            peer.name(),
            rule.describe(),
            r.node_name
        )),
        Some(_) => None,
    }
}

/// Admits `name` by `rule` (first contact, or a known name whose rule was
/// re-added or changed): stores the admission record and adds the peer
/// with its stored state. Blocking: call off the runtime.
pub(crate) fn admit(
    r: &Replicator,
    db: &Database,
    name: &str,
    rule: &PeerRule,
) -> Result<Arc<PeerState>> {
    let _admitting = r.admit_lock.lock();
    if let Some(p) = r.peer(name).filter(|p| !p.is_removed()) {
        return Ok(p);
    }
    // Removed or changed since it matched: refuse rather than admit by a
    // rule that no longer says so.
    let current = r.rules.lock().iter().find(|x| x.name == rule.name).cloned();
    let Some(rule) = current.filter(|x| x.matches_name(name)) else {
        return Err(Error::Peer(format!(
            "peer rule `{}` changed while `{name}` was connecting: dial again",
            rule.name
        )));
    };
    let now = wall_millis();
    let existing = load_record(db, name)?;
    let cap = r.max_admitted.load(Ordering::Relaxed);
    if existing.is_none() && r.admitted.load(Ordering::Acquire) >= cap {
        return Err(Error::Peer(format!(
            "`{}` holds {cap} admitted peers, its most: `{name}` is refused until dormant ones are forgotten (forget_peer / `tidelog forget`)",
            r.node_name
        )));
    }
    let rec = AdmissionRecord {
        rule: rule.name.clone(),
        first_ms: existing.as_ref().map_or(now, |e| e.first_ms),
        last_ms: now,
    };
    store_record(db, name, &rec)?;
    if existing.is_none() {
        r.admitted.fetch_add(1, Ordering::AcqRel);
    }
    let state = load_state(db, rule.peer_config(name))?;
    state
        .contact
        .set_admission(admitted(&rule, rec.first_ms), now);
    r.peers.lock().insert(name.to_string(), state.clone());
    log::info!(
        target: "tidelog::repl",
        "admitted `{name}` by peer rule `{}`{}",
        rule.name,
        if existing.is_none() { " (first contact)" } else { "" }
    );
    Ok(state)
}

/// Stores the peer's last contact in its admission record (on connect and
/// disconnect, not per frame). Blocking.
pub(crate) fn store_last_contact(db: &Database, peer: &PeerState) -> Result<()> {
    if peer.contact.is_forgotten() {
        return Ok(());
    }
    let (Some(a), Some(last_ms)) = (peer.contact.admission(), peer.contact.last_contact_ms())
    else {
        return Ok(());
    };
    let rec = AdmissionRecord {
        rule: a.rule,
        first_ms: a.first_ms,
        last_ms,
    };
    store_record(db, &peer.name(), &rec)
}

/// Takes the peers admitted by rule `rule` out of service (links end with
/// a goodbye); their stored state stays.
fn retire(r: &Replicator, db: &Database, rule: &str, keep: impl Fn(&str) -> bool) -> usize {
    let gone: Vec<Arc<PeerState>> = {
        let mut peers = r.peers.lock();
        let names: Vec<String> = peers
            .iter()
            .filter(|(n, p)| p.contact.rule().as_deref() == Some(rule) && !keep(n))
            .map(|(n, _)| n.clone())
            .collect();
        names.iter().filter_map(|n| peers.remove(n)).collect()
    };
    for p in &gone {
        // Acknowledgements are stored in batches over the peers in the
        // table: one held only in memory is stored before it leaves, so
        // re-adding the rule brings the peer back where it was.
        if let Err(e) = p.persist_acked(db) {
            log::warn!(target: "tidelog::repl", "storing `{}`'s acknowledgement: {e}", p.name());
        }
        p.remove();
    }
    gone.len()
}

/// The peer a hello names: a configured (or already admitted) one, or one
/// the first matching peer rule admits now. `Err`: why it is refused.
pub(crate) async fn find_or_admit(
    r: &Arc<Replicator>,
    db: &Database,
    hello: &Hello,
    cert: Option<&CertificateDer<'static>>,
) -> std::result::Result<Arc<PeerState>, String> {
    let name = &hello.node_name;
    // The name becomes part of storage keys: only DNS names get that far.
    if crate::local::dir::validate_node_name(name).is_err() {
        return Err(format!(
            "`{}` is not a node name (letters, digits, '-' and '.' only)",
            name.escape_default()
        ));
    }
    if let Some(p) = r.peer(name).filter(|p| !p.is_removed()) {
        if let Some(why) = still_admitted(r, &p, cert) {
            return Err(why);
        }
        return Ok(p);
    }
    if *name == r.node_name {
        return Err(format!("`{name}` is this node's own name"));
    }
    let rule = match_rule(r, name, cert)?;
    // Checked before anything is stored: a node posing as another costs
    // no admission record.
    if let Some(why) = node_id_taken(r, db, name, hello.node_id) {
        return Err(why);
    }
    let (r2, db2, name2) = (r.clone(), db.clone(), name.clone());
    blocking(move || admit(&r2, &db2, &name2, &rule))
        .await
        .map_err(|e| e.to_string())
}

/// Stores an admitted peer's last contact (best effort: a closing
/// database may refuse it; status still has it in memory).
pub(crate) async fn note_contact(db: Database, peer: Arc<PeerState>) {
    if peer.contact.rule().is_some() {
        let _ = blocking(move || store_last_contact(&db, &peer)).await;
    }
}

/// Why `name` may not use `node_id`, if it may not: it is this node's
/// own, or one another peer is known by (see `session::check_node_id`).
pub(crate) fn node_id_taken(
    r: &Replicator,
    db: &Database,
    name: &str,
    node_id: u64,
) -> Option<String> {
    if node_id == db.node_id() {
        return Some(format!(
            "`{name}` says its node id is {node_id:#x}, which is `{}`'s own: each node needs a data directory of its own (was one copied?)",
            db.node_name()
        ));
    }
    // Every accepted link runs this over every peer, so it stays cheap
    // (one lock each, no copies): a reconnect storm of 10,000 edges
    // makes 10,000 x 10,000 of these checks.
    let holder = r
        .peers
        .lock()
        .iter()
        .find(|(n, p)| {
            n.as_str() != name
                && p.counters.lock().known_node_id == Some(node_id)
                && !p.is_removed()
        })
        .map(|(n, _)| n.clone());
    holder.map(|other| {
        format!(
            "`{name}` says its node id is {node_id:#x}, which is the node id of peer `{other}`: one node cannot pose as another (if `{other}`'s data directory now runs as `{name}`, remove peer `{other}` first)"
        )
    })
}

impl Database {
    /// Adds a peer rule: nodes dialing in whose name matches it (and that
    /// are not configured peers, which win) are admitted with its table
    /// flows (see [`PeerRule`]). Rules are tried in the order they were
    /// added. Peers this rule admitted in an earlier run are re-created
    /// at once, dormant, with their stored state, so their acknowledged
    /// positions hold the log as before.
    pub fn add_peer_rule(&self, rule: PeerRule) -> Result<()> {
        let r = self.replicator()?;
        rule.validate(self.node_name())?;
        super::route::record_routed(self, &rule.tables);
        let _admitting = r.admit_lock.lock();
        {
            let mut rules = r.rules.lock();
            if rules.iter().any(|x| x.name == rule.name) {
                return Err(Error::invalid(
                    "peer rule",
                    format!(
                        "a rule named `{}` exists: use update_peer_rule to change it",
                        rule.name
                    ),
                ));
            }
            rules.push(rule.clone());
        }
        let mut restored = 0usize;
        for (name, rec) in load_records(self)? {
            if rec.rule != rule.name || !rule.matches_name(&name) || r.peer(&name).is_some() {
                continue;
            }
            let state = load_state(self, rule.peer_config(&name))?;
            state
                .contact
                .set_admission(admitted(&rule, rec.first_ms), rec.last_ms);
            r.peers.lock().insert(name, state);
            restored += 1;
        }
        if restored > 0 {
            log::info!(
                target: "tidelog::repl",
                "peer rule `{}`: {restored} peer(s) admitted earlier are back, dormant until they dial in",
                rule.name
            );
        }
        Ok(())
    }

    /// Replaces the rule named `rule.name`, in place (its order stays).
    /// Only the links of peers it admitted restart, with the new settings;
    /// those whose name it no longer matches are ended as by
    /// [`Database::remove_peer_rule`].
    pub fn update_peer_rule(&self, rule: PeerRule) -> Result<()> {
        let r = self.replicator()?;
        rule.validate(self.node_name())?;
        super::route::record_routed(self, &rule.tables);
        let _admitting = r.admit_lock.lock();
        {
            let mut rules = r.rules.lock();
            let slot = rules
                .iter_mut()
                .find(|x| x.name == rule.name)
                .ok_or_else(|| no_rule(&rule.name))?;
            *slot = rule.clone();
        }
        retire(&r, self, &rule.name, |n| rule.matches_name(n));
        let peers: Vec<Arc<PeerState>> = r
            .peers
            .lock()
            .values()
            .filter(|p| p.contact.rule().as_deref() == Some(rule.name.as_str()))
            .cloned()
            .collect();
        for p in peers {
            let first_ms = p.contact.admission().map_or(0, |a| a.first_ms);
            p.contact.set_admission(admitted(&rule, first_ms), 0);
            p.set_config(rule.peer_config(&p.name()));
            p.restart();
        }
        Ok(())
    }

    /// Removes a peer rule: the links of the peers it admitted end (with a
    /// goodbye) and those nodes are refused from then on, unless another
    /// rule admits them. What is stored about them stays (re-adding the
    /// rule brings them back) until [`Database::forget_peer`].
    pub fn remove_peer_rule(&self, name: &str) -> Result<()> {
        let r = self.replicator()?;
        let _admitting = r.admit_lock.lock();
        {
            let mut rules = r.rules.lock();
            let before = rules.len();
            rules.retain(|x| x.name != name);
            if rules.len() == before {
                return Err(no_rule(name));
            }
        }
        retire(&r, self, name, |_| false);
        Ok(())
    }

    /// Test only: lowers the cap on admitted peers (see
    /// `MAX_ADMITTED_PEERS`) so a test reaches it.
    #[doc(hidden)]
    pub fn set_max_admitted_peers(&self, n: usize) -> Result<()> {
        self.replicator()?.max_admitted.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// The peer rules, in the order they are tried.
    pub fn peer_rules(&self) -> Result<Vec<PeerRule>> {
        Ok(self.replicator()?.rules.lock().clone())
    }

    /// Removes peer `name` (configured or admitted by a rule) and deletes
    /// everything stored about it: resume cursor, acknowledged position,
    /// refusals, skipped tables, quota use and admission record. It no
    /// longer holds the log; if a rule admits it again, that is a first
    /// contact (its tables sync afresh). Fails with
    /// [`Error::PeerNotFound`] if nothing is known about `name`.
    pub fn forget_peer(&self, name: &str) -> Result<()> {
        crate::local::dir::validate_node_name(name)?;
        let r = self.replicator().ok();
        let state = r.as_ref().and_then(|r| {
            let _admitting = r.admit_lock.lock();
            r.peers.lock().remove(name)
        });
        if let Some(s) = &state {
            s.contact.forget();
            s.remove();
            // Its link says goodbye, and its last acknowledgement is
            // stored, before the records go (a store after the delete
            // would bring a record back).
            if tokio::runtime::Handle::try_current().is_err() {
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                while s.has_live_tasks() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            s.stop();
        }
        let mut keys = vec![
            cursor_key(name),
            acked_key(name),
            not_wanted_key(name),
            quota_key(name),
        ];
        keys.extend(
            self.meta_prefix(&refusals_prefix(name))?
                .into_iter()
                .map(|(k, _)| k),
        );
        let had_admission = self.meta_get(&admitted_key(name))?.is_some();
        let mut known = state.is_some() || had_admission;
        for k in &keys {
            known = known || self.meta_get(k)?.is_some();
        }
        if !known {
            return Err(Error::PeerNotFound(name.to_string()));
        }
        keys.push(admitted_key(name));
        self.meta_commit(Vec::new(), keys)?;
        if let (Some(r), true) = (&r, had_admission) {
            let _ = r
                .admitted
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        log::info!(target: "tidelog::repl", "forgot peer `{name}` and everything stored about it");
        Ok(())
    }
}

fn no_rule(name: &str) -> Error {
    Error::invalid(
        "peer rule",
        format!("no rule named `{name}`: add it with add_peer_rule"),
    )
}
