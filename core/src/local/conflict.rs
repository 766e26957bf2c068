//! What the conflict API speaks in: the per-table policy, a conflict-log
//! entry, and what a resolver callback sees and answers. The rules
//! themselves live in `conflict_log` (detection and the `_conflicts` table)
//! and `merge` (per-attribute merge and counters).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};

/// Per-table rule for concurrent writes. Options-schema / JSON / TOML
/// names: `"lww"` (default), `"merge"`, `"keep_local"`, `"resolver"`.
///
/// A table's policy is local, like the rest of its definition: give the
/// same policy to a table on every node that replicates it, or the nodes
/// may settle concurrent writes differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ConflictPolicy {
    /// The write with the greater stamp wins the whole record.
    #[default]
    #[serde(rename = "lww")]
    LastWriterWins,
    /// Patches (`update`) merge per attribute; whole-record upserts and
    /// deletes keep the last-writer-wins rule.
    #[serde(rename = "merge")]
    MergeAttributes,
    /// A remote write that would replace a version written on this node
    /// does not apply; this node re-asserts its version.
    #[serde(rename = "keep_local")]
    KeepLocal,
    /// Last writer wins, then the table's resolver decides and its answer
    /// is committed as a new write.
    #[serde(rename = "resolver")]
    Resolver,
}

impl ConflictPolicy {
    /// The options-schema name.
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::LastWriterWins => "lww",
            ConflictPolicy::MergeAttributes => "merge",
            ConflictPolicy::KeepLocal => "keep_local",
            ConflictPolicy::Resolver => "resolver",
        }
    }

    /// Reads an options-schema name.
    pub fn from_name(name: &str) -> Result<ConflictPolicy> {
        Ok(match name {
            "lww" => ConflictPolicy::LastWriterWins,
            "merge" => ConflictPolicy::MergeAttributes,
            "keep_local" => ConflictPolicy::KeepLocal,
            "resolver" => ConflictPolicy::Resolver,
            other => {
                return Err(Error::invalid(
                    "conflict",
                    format!("`{other}` is not a policy: use \"lww\", \"merge\", \"keep_local\" or \"resolver\""),
                ))
            }
        })
    }
}

/// Which write of a conflict lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConflictSide {
    /// A write made on this node that a remote write overwrote.
    #[serde(rename = "local")]
    Local,
    /// A remote write that lost to the version this node holds.
    #[serde(rename = "remote")]
    Remote,
}

impl ConflictSide {
    pub fn name(self) -> &'static str {
        match self {
            ConflictSide::Local => "local",
            ConflictSide::Remote => "remote",
        }
    }
}

/// One conflict-log entry; [`ConflictEntry::to_json`] gives the
/// `_conflicts` record's JSON, which is what the bindings return.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictEntry {
    /// Unique across nodes: `"<node name>:<n>"`; the `_conflicts` key.
    pub id: String,
    pub table: String,
    pub key: Key,
    /// The rule applied.
    pub rule: ConflictPolicy,
    /// Which write lost.
    pub lost: ConflictSide,
    pub winner: Stamp,
    /// Origin node name (or its id as text if unknown here).
    pub winner_origin: String,
    pub loser: Stamp,
    pub loser_origin: String,
    /// The losing record (under merge, the losing attributes); `None` for
    /// a delete.
    pub loser_values: Option<Value>,
    /// Wall-clock milliseconds when the entry was logged.
    pub at_ms: u64,
}

/// The attribute of a `_conflicts` record that holds its key.
pub(crate) const ID_ATTR: &str = "id";

fn stamp_json(s: Stamp) -> Value {
    json!({"time": s.time, "node": s.node})
}

fn stamp_from(v: Option<&Value>) -> Option<Stamp> {
    let v = v?;
    Some(Stamp {
        time: v.get("time")?.as_u64()?,
        node: v.get("node")?.as_u64()?,
    })
}

impl ConflictEntry {
    /// The `_conflicts` record: the struct's field names, `rule` and `lost`
    /// by their option names, stamps as `{"time", "node"}`.
    pub fn to_json(&self) -> Value {
        json!({
            ID_ATTR: self.id,
            "table": self.table,
            "key": self.key.to_json(),
            "rule": self.rule.name(),
            "lost": self.lost.name(),
            "winner": stamp_json(self.winner),
            "winner_origin": self.winner_origin,
            "loser": stamp_json(self.loser),
            "loser_origin": self.loser_origin,
            "loser_values": self.loser_values.clone().unwrap_or(Value::Null),
            "at_ms": self.at_ms,
        })
    }

    /// Reads a `_conflicts` record back; `None` if it is not one (a record
    /// some other writer put there).
    pub fn from_json(v: &Value) -> Option<ConflictEntry> {
        let rule = ConflictPolicy::from_name(v.get("rule")?.as_str()?).ok()?;
        let lost = match v.get("lost")?.as_str()? {
            "local" => ConflictSide::Local,
            "remote" => ConflictSide::Remote,
            _ => return None,
        };
        Some(ConflictEntry {
            id: v.get(ID_ATTR)?.as_str()?.to_string(),
            table: v.get("table")?.as_str()?.to_string(),
            key: Key::from_json(v.get("key")?)?,
            rule,
            lost,
            winner: stamp_from(v.get("winner"))?,
            winner_origin: v.get("winner_origin")?.as_str()?.to_string(),
            loser: stamp_from(v.get("loser"))?,
            loser_origin: v.get("loser_origin")?.as_str()?.to_string(),
            loser_values: v.get("loser_values").filter(|x| !x.is_null()).cloned(),
            at_ms: v.get("at_ms")?.as_u64()?,
        })
    }
}

/// What a resolver sees. Called on a library thread with no database lock
/// held; it may block and may read the database, and should not write the
/// same record itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictCase {
    pub table: String,
    pub key: Key,
    /// The version this node held; `None`: a tombstone.
    pub local: Option<Value>,
    pub local_stamp: Stamp,
    /// The remote version that arrived; `None`: a tombstone.
    pub remote: Option<Value>,
    pub remote_stamp: Stamp,
}

impl ConflictCase {
    /// The case as the bindings hand it to a resolver written in C or
    /// Python: the struct's field names, stamps as `{"time", "node"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "table": self.table,
            "key": self.key.to_json(),
            "local": self.local,
            "local_stamp": self.local_stamp,
            "remote": self.remote,
            "remote_stamp": self.remote_stamp,
        })
    }
}

/// A resolver's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    TakeRemote,
    KeepLocal,
    Write(Value),
    Delete,
}

/// The callback a `Resolver`-policy table settles its conflicts with.
pub type ConflictResolver = Arc<dyn Fn(&ConflictCase) -> Resolution + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip_and_unknown_is_refused() {
        for p in [
            ConflictPolicy::LastWriterWins,
            ConflictPolicy::MergeAttributes,
            ConflictPolicy::KeepLocal,
            ConflictPolicy::Resolver,
        ] {
            assert_eq!(ConflictPolicy::from_name(p.name()).unwrap(), p);
            let v = serde_json::to_value(p).unwrap();
            assert_eq!(v, Value::from(p.name()));
        }
        let e = ConflictPolicy::from_name("newest").unwrap_err().to_string();
        assert!(e.contains("newest") && e.contains("keep_local"), "{e}");
        assert!(serde_json::from_value::<ConflictPolicy>(json!("LWW")).is_err());
    }

    #[test]
    fn entry_json_round_trips_and_foreign_records_are_not_entries() {
        let e = ConflictEntry {
            id: "edge-1:7".into(),
            table: "thresholds".into(),
            key: Key::Str("t1".into()),
            rule: ConflictPolicy::MergeAttributes,
            lost: ConflictSide::Local,
            winner: Stamp { time: 9, node: 2 },
            winner_origin: "cloud".into(),
            loser: Stamp { time: 8, node: 1 },
            loser_origin: "edge-1".into(),
            loser_values: Some(json!({"limit": 3})),
            at_ms: 1234,
        };
        let v = e.to_json();
        assert_eq!(v["lost"], "local");
        assert_eq!(v["rule"], "merge");
        assert_eq!(ConflictEntry::from_json(&v).unwrap(), e);
        let mut bad = v.clone();
        bad["lost"] = json!("both");
        assert!(ConflictEntry::from_json(&bad).is_none());
        assert!(ConflictEntry::from_json(&json!({"id": "x"})).is_none());
    }
}
