//! The benchmark's Rust loops (bench/bench.js pairs Node's loops with
//! them on the same database). Only in a build with the `bench` feature
//! (`node scripts/build.js --bench`); release addons leave them out.

use std::time::Instant;

use napi_derive::napi;
use serde_json::Value;

use crate::convert::*;
use crate::views::{commit_obj, CommitObj};
use crate::NativeDb;

#[napi]
impl NativeDb {
    /// The benchmark's upsert loop in Rust on this same database: records
    /// `from..to` of the benchmark's shape into `table`, each built inside
    /// the loop as a JavaScript loop builds its object. Returns seconds.
    #[napi(js_name = "_rustUpserts")]
    pub fn rust_upserts(&self, table: String, from: u32, to: u32) -> napi::Result<f64> {
        let t0 = Instant::now();
        for i in i64::from(from)..i64::from(to) {
            let rec = serde_json::json!({
                "id": i,
                "sensor": format!("s-{}", i % 100),
                "value": i as f64 * 0.5,
                "ts": 1_700_000_000_000i64 + i,
            });
            self.db.upsert(&table, rec).js()?;
        }
        Ok(t0.elapsed().as_secs_f64())
    }

    /// The benchmark's point-get loop in Rust: keys `from..to` of `table`,
    /// each record as the Rust API returns it (its JSON text, unparsed),
    /// or, with `parse`, also turned into a `serde_json::Value`. Returns
    /// seconds; fails if a record is missing.
    #[napi(js_name = "_rustGets")]
    pub fn rust_gets(&self, table: String, from: u32, to: u32, parse: bool) -> napi::Result<f64> {
        let t0 = Instant::now();
        let mut sum = 0.0;
        for i in i64::from(from)..i64::from(to) {
            let Some(r) = self.db.get(&table, i).js()? else {
                return Err(napi::Error::from_reason(format!(
                    "no record {i} in {table}"
                )));
            };
            sum += if parse {
                r.to_value()["value"].as_f64().unwrap_or(0.0)
            } else {
                r.body_json().len() as f64
            };
        }
        std::hint::black_box(sum);
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Upsert taking a JS object converted field by field (napi serde-json),
    /// to compare with the JSON-text path.
    #[napi(js_name = "_upsertValue")]
    pub fn upsert_value(&self, table: String, record: Value) -> napi::Result<CommitObj> {
        self.db.upsert(&table, record).js().map(commit_obj)
    }

    /// Get returning a JS object built field by field (napi serde-json).
    #[napi(js_name = "_getValue")]
    pub fn get_value(&self, table: String, key: JsKey) -> napi::Result<Option<Value>> {
        Ok(self
            .db
            .get(&table, key_of(key)?)
            .js()?
            .map(|r| r.to_value()))
    }
}
