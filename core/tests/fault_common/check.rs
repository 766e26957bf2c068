//! What the fault run compares: per key a digest of key, record and
//! stamp; the expected state (the union of the edges' tables and their
//! deletes); and how a destination's final rows differ from it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde_json::Value;
use tidelog::*;

use super::Edge;

/// A record's JSON with every object's attributes in sorted order, so two
/// texts of the same record (tidelog's, PostgreSQL's jsonb) compare equal.
pub fn canonical(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    walk(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    walk(v, &mut s);
    s
}

/// One row's final state as a digest of key, record (None: a tombstone)
/// and stamp; equal digests, equal rows.
pub fn row_digest(key: &str, record: Option<&Value>, stamp: Stamp) -> u64 {
    // DefaultHasher::new() has fixed keys: the same digest in every run.
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    record.map(canonical).hash(&mut h);
    stamp.time.hash(&mut h);
    stamp.node.hash(&mut h);
    h.finish()
}

/// What should be in the destination per key: the digest, the stamp, and
/// whether it is a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub digest: u64,
    pub stamp: Stamp,
    pub deleted: bool,
}

/// The union of the edges' tables: live rows from each edge's own scan
/// (checked against what its writer did), tombstones from its deletes.
pub fn expected(edges: &[Edge]) -> HashMap<String, Want> {
    let mut want = HashMap::new();
    for e in edges {
        let book = e.book.lock().unwrap();
        let mut live = 0usize;
        for r in e.db.scan("alerts", &ScanOptions::default()).unwrap() {
            let Key::Str(key) = r.key() else {
                panic!("{}: a key that is not a string: {:?}", e.name, r.key())
            };
            let rec: Value = serde_json::from_str(r.body_json()).unwrap();
            let (stamp, deleted) = book.last.get(key).copied().unwrap_or_else(|| {
                panic!(
                    "{}: key {key} in its table that its writer never wrote",
                    e.name
                )
            });
            assert!(!deleted, "{}: deleted key {key} is live", e.name);
            assert_eq!(stamp, r.stamp(), "{}: key {key}'s stamp", e.name);
            let w = Want {
                digest: row_digest(key, Some(&rec), stamp),
                stamp,
                deleted: false,
            };
            assert!(want.insert(key.clone(), w).is_none(), "key {key} twice");
            live += 1;
        }
        for (key, &(stamp, deleted)) in &book.last {
            if deleted {
                let w = Want {
                    digest: row_digest(key, None, stamp),
                    stamp,
                    deleted: true,
                };
                assert!(want.insert(key.clone(), w).is_none(), "key {key} twice");
            }
        }
        assert_eq!(
            live as u64 + book.deletes,
            e.share,
            "{}: live rows plus deletes is its share",
            e.name
        );
    }
    want
}

/// How the destination's final rows differ from `want`; empty when equal.
pub fn compare(want: &HashMap<String, Want>, got: &HashMap<String, Want>) -> Vec<String> {
    let mut missing = Vec::new();
    let mut older = Vec::new();
    let mut newer = Vec::new();
    let mut differ = Vec::new();
    let mut extra = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => missing.push(k),
            Some(g) if g.stamp < w.stamp => older.push(k),
            Some(g) if g.stamp > w.stamp => newer.push(k),
            Some(g) if g != w => differ.push(k),
            Some(_) => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            extra.push(k);
        }
    }
    let mut out = Vec::new();
    for (what, keys) in [
        ("missing", missing),
        ("at an older stamp than the edge's", older),
        ("at a newer stamp than the edge's", newer),
        (
            "at the edge's stamp with another record or deleted flag",
            differ,
        ),
        ("that no edge has", extra),
    ] {
        if !keys.is_empty() {
            let mut keys: Vec<&String> = keys;
            keys.sort();
            out.push(format!(
                "{} rows {what}, e.g. {:?}",
                keys.len(),
                &keys[..keys.len().min(5)]
            ));
        }
    }
    out
}
