//! What a link's row filters and column lists let through: the sender
//! applies them to the log it streams and to the rows of a sync, so a
//! filtered link never sends a row its filter does not select.
//!
//! Move-in and move-out follow from the record's routed attributes before
//! each write, which the log records for filtered tables (see
//! `LogEntry::prior`): the new version selected goes out (a move-in when
//! the old one was not); the old one selected and the new one not goes out
//! as a delete at the write's stamp (a move-out); neither is skipped. An
//! old version not recorded (logged before the filter existed) counts as
//! selected: a needless delete of a row the peer never had costs a
//! tombstone, a missed one would leave a row the peer must not keep.
//!
//! Column lists cut each record sent down to the listed attributes and the
//! key. Deltas are computed after that, on the projected text: the bases a
//! link keeps are what it sent, so an edit applies to the projection the
//! peer holds.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::config::PeerConfig;
use crate::error::Result;
use crate::local::codec::Key;
use crate::local::filter::{project, Bound, PeerIdentity};
use crate::local::log::{LogEntry, WriteOp};
use crate::net::wire::{SyncRow, WireTxn};

struct TableRoute {
    bound: Option<Arc<Bound>>,
    columns: Option<Vec<String>>,
    key_attr: String,
}

/// The filters and column lists of one link's published tables.
#[derive(Default)]
pub(super) struct Routes {
    tables: HashMap<String, TableRoute>,
}

/// The routed attributes each write's record had before it, by (sequence,
/// table, key); a write not in it has none recorded.
pub(super) type PriorIndex = HashMap<(u64, String, Key), Option<Map<String, Value>>>;

/// What the routes did to a batch, for the link's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Routed {
    pub(super) skipped: u64,
    pub(super) moved_out: u64,
}

/// The peer's certificate DNS names, for `$peer.dns`.
pub(super) fn cert_dns_names(der: Option<&rustls::pki_types::CertificateDer<'_>>) -> Vec<String> {
    let Some(der) = der else {
        return Vec::new();
    };
    webpki::EndEntityCert::try_from(der)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Routes {
    /// The routes of `config`'s published flows for the peer `who`, with
    /// each table's key attribute from `key_of` (tables it does not know
    /// are not streamed, so need none).
    pub(super) fn new(
        config: &PeerConfig,
        who: &PeerIdentity,
        key_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Routes> {
        let mut tables = HashMap::new();
        for f in config.tables.iter().filter(|f| f.publish) {
            if f.filter.is_none() && f.columns.is_none() {
                continue;
            }
            let Some(key_attr) = key_of(&f.table) else {
                continue;
            };
            let bound = f.parsed_filter()?.map(|p| Arc::new(p.bind(who)));
            tables.insert(
                f.table.clone(),
                TableRoute {
                    bound,
                    columns: f.columns.clone(),
                    key_attr,
                },
            );
        }
        Ok(Routes { tables })
    }

    /// The bound filters, for the commit feed's routing index.
    pub(super) fn bounds(&self) -> HashMap<String, Arc<Bound>> {
        self.tables
            .iter()
            .filter_map(|(t, r)| Some((t.clone(), r.bound.clone()?)))
            .collect()
    }

    /// The routed attributes recorded with `entries`, for [`Routes::apply`].
    pub(super) fn prior_index(&self, entries: &[LogEntry]) -> PriorIndex {
        let mut index = PriorIndex::new();
        if self.tables.is_empty() {
            return index;
        }
        for e in entries.iter().filter(|e| !e.prior.is_empty()) {
            for p in &e.prior {
                let Some(w) = e.writes.get(p.write as usize) else {
                    continue;
                };
                if !self.tables.contains_key(&w.table) {
                    continue;
                }
                let old = p.old.as_deref().and_then(object);
                // The first write of a key in an entry has the stored
                // version before it; later ones follow the earlier writes.
                index
                    .entry((e.seq, w.table.clone(), w.key.clone()))
                    .or_insert(old);
            }
        }
        index
    }

    /// Filters and projects the writes of `txns` (before deltas are made):
    /// drops what the peer must not get, turns a move-out into a delete.
    pub(super) fn apply(&self, prior: &PriorIndex, txns: &mut Vec<WireTxn>) -> Routed {
        let mut done = Routed::default();
        if self.tables.is_empty() {
            return done;
        }
        for t in txns.iter_mut() {
            // A key written twice in one transaction: the second write's
            // old version is the first's new one.
            let mut within: HashMap<(String, Key), Option<Map<String, Value>>> = HashMap::new();
            t.writes.retain_mut(|w| {
                let Some(route) = self.tables.get(&w.table) else {
                    return true;
                };
                let id = (w.table.clone(), w.key.clone());
                // Conflict metadata (`WriteOp::Meta`) wraps the visible
                // record: routing looks at what the row holds.
                let new = match w.op.inner() {
                    WriteOp::Put { json, .. } => object(json),
                    _ => None,
                };
                let old_selected = match within.get(&id) {
                    Some(old) => selected(route, old.as_ref()),
                    None => match prior.get(&(t.seq, w.table.clone(), w.key.clone())) {
                        Some(old) => selected(route, old.as_ref()),
                        None => route.bound.is_some(),
                    },
                };
                let is_put = matches!(w.op.inner(), WriteOp::Put { .. });
                let new_selected = is_put && selected(route, new.as_ref());
                within.insert(id, new.clone());
                if new_selected {
                    if let (Some(cols), Some(obj), WriteOp::Put { created, .. }) =
                        (&route.columns, &new, w.op.inner())
                    {
                        // A projected record goes as a plain write: its
                        // merge metadata (patched attributes, counters)
                        // could name columns the peer must not see, and a
                        // peer holding some columns merges nothing.
                        let projected = WriteOp::Put {
                            json: Value::Object(project(obj, cols, &route.key_attr)).to_string(),
                            created: *created,
                        };
                        w.op = projected;
                    }
                    return true;
                }
                if old_selected || (!is_put && route.bound.is_none()) {
                    if is_put {
                        done.moved_out += 1;
                    }
                    w.op = WriteOp::Delete;
                    return true;
                }
                done.skipped += 1;
                false
            });
        }
        txns.retain(|t| !t.writes.is_empty());
        done
    }

    /// A row of a sync as the peer may get it; `resync`: the peer may hold
    /// rows from before, so a row its filter does not select goes as a
    /// tombstone at the row's stamp (a move-out) instead of not at all.
    pub(super) fn sync_row(&self, table: &str, mut row: SyncRow, resync: bool) -> Option<SyncRow> {
        let Some(route) = self.tables.get(table) else {
            return Some(row);
        };
        let Some(json) = &row.json else {
            // A tombstone says nothing of the filter: the peer may hold
            // the row, and deleting one it lacks costs a tombstone.
            return Some(row);
        };
        let obj = object(json);
        if !selected(route, obj.as_ref()) {
            return resync.then(|| {
                row.json = None;
                row.merge = None;
                row
            });
        }
        if let (Some(cols), Some(obj)) = (&route.columns, &obj) {
            row.json = Some(Value::Object(project(obj, cols, &route.key_attr)).to_string());
            // As on the live log: a projected row goes without its merge
            // state, which may name columns the peer must not see.
            row.merge = None;
        }
        Some(row)
    }
}

/// Whether the record `obj` (`None`: no live record) goes to the peer.
fn selected(route: &TableRoute, obj: Option<&Map<String, Value>>) -> bool {
    match (obj, &route.bound) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(o), Some(b)) => b.matches(o),
    }
}

fn object(json: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// From now on the write path records, with each write to a table these
/// flows filter, the attributes they test: so a link that comes up later
/// (an edge that was offline) knows which writes moved rows out of its
/// filter. Called when a peer or rule is added or changed; flows must be
/// validated.
pub(super) fn record_routed(db: &crate::local::db::Database, flows: &[super::config::TableFlow]) {
    for f in flows.iter().filter(|f| f.publish) {
        if let Ok(Some(p)) = f.parsed_filter() {
            db.shared.feed.route_attributes(&f.table, p.attributes());
        }
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
