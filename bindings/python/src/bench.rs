//! The Rust loops the Python benchmark (`bench/bench.py`) pairs with its
//! own, on the same database: the same records, built inside the loop as
//! Python builds its dicts.

use std::time::Instant;

use serde_json::{json, Value};
use tidelog::{Database, Error, Result};

/// The benchmark's record `i`, as `bench.py`'s `record(i)` builds it.
fn record(i: i64) -> Value {
    json!({
        "id": i,
        "sensor": format!("s-{}", i % 100),
        "value": i as f64 * 0.5,
        "unit": "C",
        "ok": true,
    })
}

/// Upserts records `start..stop` into `table`; returns seconds.
pub(crate) fn upserts(db: &Database, table: &str, start: i64, stop: i64) -> Result<f64> {
    let t = Instant::now();
    for i in start..stop {
        db.upsert(table, record(i))?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Point gets of keys `start..stop` from `table`: with `parse`, each
/// record becomes a `serde_json::Value` (what Python's get does when it
/// builds a dict); without, it stays the stored JSON text. Returns
/// seconds; fails if a record is missing.
pub(crate) fn gets(db: &Database, table: &str, start: i64, stop: i64, parse: bool) -> Result<f64> {
    let t = Instant::now();
    let mut sum = 0.0;
    for i in start..stop {
        let Some(r) = db.get(table, i)? else {
            return Err(Error::InvalidArgument {
                what: "benchmark".into(),
                why: format!("no record {i} in {table}"),
            });
        };
        sum += if parse {
            r.to_value()["value"].as_f64().unwrap_or(0.0)
        } else {
            r.body_json().len() as f64
        };
    }
    std::hint::black_box(sum);
    Ok(t.elapsed().as_secs_f64())
}
