//! Node.js binding of tidelog (napi-rs 3).
//!
//! This crate is the native half; `index.js` is the public JavaScript API
//! and turns what these classes return into plain objects and typed errors.
//! Records cross the boundary as JSON text (`JSON.stringify` / `JSON.parse`
//! in JavaScript, serde_json here): measured faster than building objects
//! property by property through napi (see `bench/bench.js`). The per-record
//! hot paths, `get` and `upsert`, are raw Node-API functions in fast.rs,
//! and a get hands most records over laid out rather than as JSON text.
//!
//! Errors thrown from here carry `code` = one of the tidelog codes
//! (`NOT_FOUND`, `INVALID_INPUT`, ...). Rejections of async tasks carry the
//! code as a `[TIDELOG:<CODE>] ` prefix of the message, because libuv task
//! errors only hold a napi status; `index.js` turns both into `TidelogError`
//! subclasses.
//!
//! Threads: every call here runs on the JavaScript thread except the
//! `AsyncTask`s (libuv worker pool) and the change-listener closures, which
//! run on tidelog's `tidelog-events` thread and only queue events onto a
//! threadsafe function.

#![allow(clippy::new_without_default)]

#[cfg(feature = "bench")]
mod bench;
mod conflicts;
mod convert;
mod fast;
mod layout;
mod listeners;
mod logging;
mod objects;
mod options;
mod transaction;
mod views;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{AsyncTask, BigInt, Function, Unknown};
use napi::Env;
use napi_derive::napi;
use serde_json::Value;

use tidelog::view::records_json;
use tidelog::{Database, EngineKind, Key, ListenerId, ScanOptions};

use conflicts::*;
use convert::*;
use listeners::*;
// Registered with napi by its attribute; re-exported so the test build,
// which has no registration, does not count it as dead.
pub use logging::set_log_callback;
use objects::*;
use transaction::*;
use views::*;

// ---- the database -------------------------------------------------------

/// The native database handle. Use the `Database` class of index.js.
#[napi]
pub struct NativeDb {
    pub(crate) db: Database,
    /// The same database, for the listeners to hold weakly (see
    /// `ListenerSlot::db`).
    listened: Arc<Database>,
    listeners: Slots,
    resolvers: Resolvers,
}

#[napi]
impl NativeDb {
    #[napi(factory)]
    pub fn open(dir: String, options_json: String) -> napi::Result<NativeDb> {
        // From the first database on, warnings reach stderr even without a
        // log callback.
        logging::install();
        let db = Database::open(dir, options::open_options(&options_json)?).js()?;
        Ok(NativeDb {
            listened: Arc::new(db.clone()),
            db,
            listeners: Arc::new(Mutex::new(HashMap::new())),
            resolvers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn get_key(&self, table: &str, key: Key) -> napi::Result<Option<String>> {
        Ok(self.db.get(table, key).js()?.map(|r| r.to_json_string()))
    }

    /// JavaScript thread, after a local commit to `tables` (each once):
    /// hold the loop open until their listeners got its events.
    fn owe_events<'a>(&self, env: &Env, tables: impl IntoIterator<Item = &'a str>) {
        owe_events(&self.listeners, env, tables);
    }

    /// Closes the database, then releases every listener's threadsafe
    /// function. Events committed before the close are still delivered
    /// (the function is referenced while its queue drains), after which
    /// nothing of this database keeps the process alive.
    #[napi]
    pub fn close(&self, env: Env) -> napi::Result<()> {
        // First: a library thread waiting for a resolver's answer stops
        // waiting, so closing (on this thread, which that answer would need)
        // does not wait out its timeout.
        for (_, r) in lock(&self.resolvers).drain() {
            r.close();
        }
        let result = self.db.close();
        let slots: Vec<Arc<ListenerSlot>> = lock(&self.listeners).drain().map(|(_, s)| s).collect();
        for s in slots {
            if let Some(mut tsfn) = s.take() {
                // Hold the loop open just until the queued events ran; the
                // release below lets the function finish after that.
                #[allow(deprecated)]
                let _ = tsfn.refer(&env);
                drop(tsfn);
            }
        }
        result.js()
    }

    #[napi(getter)]
    pub fn node_name(&self) -> String {
        self.db.node_name().to_string()
    }

    #[napi(getter)]
    pub fn node_id(&self) -> BigInt {
        BigInt::from(self.db.node_id())
    }

    #[napi(getter)]
    pub fn path(&self) -> String {
        self.db.path().display().to_string()
    }

    #[napi(getter)]
    pub fn dropped_transactions(&self) -> f64 {
        self.db.dropped_transactions() as f64
    }

    #[napi(getter)]
    pub fn engine(&self) -> String {
        match self.db.engine() {
            EngineKind::Sled => "sled".into(),
            _ => "fjall".into(),
        }
    }

    #[napi(getter)]
    pub fn is_closed(&self) -> bool {
        self.db.is_closed()
    }

    #[napi]
    pub fn flush(&self) -> napi::Result<()> {
        self.db.flush().js()
    }

    #[napi]
    pub fn disk_bytes(&self) -> napi::Result<f64> {
        self.db.disk_bytes().js().map(|b| b as f64)
    }

    // ---- tables

    #[napi]
    pub fn create_table(
        &self,
        name: String,
        opts: Option<TableOpts>,
    ) -> napi::Result<TableInfoObj> {
        self.db
            .create_table(&name, table_options(opts)?)
            .js()
            .map(Into::into)
    }

    #[napi]
    pub fn ensure_table(&self, name: String, opts: Option<TableOpts>) -> napi::Result<bool> {
        self.db.ensure_table(&name, table_options(opts)?).js()
    }

    #[napi]
    pub fn drop_table(&self, name: String) -> napi::Result<()> {
        self.db.drop_table(&name).js()
    }

    #[napi]
    pub fn list_tables(&self) -> napi::Result<Vec<TableInfoObj>> {
        Ok(self
            .db
            .list_tables()
            .js()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    #[napi]
    pub fn describe_table(&self, name: String) -> napi::Result<TableInfoObj> {
        self.db.describe_table(&name).js().map(Into::into)
    }

    // ---- writes (record = JSON text)

    #[napi]
    pub fn insert(&self, env: Env, table: String, json: String) -> napi::Result<CommitObj> {
        let c = self.db.insert_json(&table, &json).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn upsert(&self, env: Env, table: String, json: String) -> napi::Result<CommitObj> {
        let c = self.db.upsert_json(&table, &json).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn update(&self, env: Env, table: String, json: String) -> napi::Result<CommitObj> {
        let v = record_value(&json)?;
        let c = self.db.update(&table, v).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn delete(&self, env: Env, table: String, key: JsKey) -> napi::Result<bool> {
        let existed = self.db.delete(&table, key_of(key)?).js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(existed)
    }

    #[napi]
    pub fn increment(
        &self,
        env: Env,
        table: String,
        key: JsKey,
        attr: String,
        by: JsBy,
    ) -> napi::Result<CommitObj> {
        let c = self
            .db
            .increment(&table, key_of(key)?, &attr, by_of(by)?)
            .js()?;
        self.owe_events(&env, [table.as_str()]);
        Ok(commit_obj(c))
    }

    #[napi]
    pub fn transaction(&self) -> NativeTx {
        NativeTx::new(self.db.transaction(), self.listeners.clone())
    }

    // ---- reads (records = JSON text)

    /// Any key type; index.js calls it for what fast.rs's `getInt` /
    /// `getStr` do not take (bigints, arguments of the wrong type, which
    /// napi-rs reports in its usual terms).
    #[napi]
    pub fn get(&self, table: String, key: JsKey) -> napi::Result<Option<String>> {
        self.get_key(&table, key_of(key)?)
    }

    #[napi]
    pub fn get_many(&self, table: String, keys: Vec<JsKey>) -> napi::Result<String> {
        let keys = keys.into_iter().map(key_of).collect::<R<Vec<Key>>>()?;
        let found = self.db.get_many(&table, &keys).js()?;
        Ok(records_json(found.iter().map(Option::as_ref)))
    }

    #[napi]
    pub fn scan(&self, table: String, opts: RangeOpts) -> napi::Result<String> {
        let (lo, hi) = bounds(&opts)?;
        let scan = ScanOptions {
            start: key_bound(lo, "scan bound")?,
            end: key_bound(hi, "scan bound")?,
            reverse: opts.reverse.unwrap_or(false),
            limit: limit_of(opts.limit)?,
        };
        Ok(records_json(
            self.db.scan(&table, &scan).js()?.iter().map(Some),
        ))
    }

    #[napi]
    pub fn find(&self, table: String, attribute: String, opts: RangeOpts) -> napi::Result<String> {
        if opts.reverse.is_some() {
            return Err(invalid("invalid find options: `reverse` is only for scan"));
        }
        let (lo, hi) = bounds(&opts)?;
        let found = self
            .db
            .find(&table, &attribute, lo, hi, limit_of(opts.limit)?)
            .js()?;
        Ok(records_json(found.iter().map(Some)))
    }

    #[napi]
    pub fn find_eq(&self, table: String, attribute: String, value: Value) -> napi::Result<String> {
        let found = self.db.find_eq(&table, &attribute, &value).js()?;
        Ok(records_json(found.iter().map(Some)))
    }

    #[napi]
    pub fn count(&self, table: String) -> napi::Result<f64> {
        self.db.count(&table).js().map(|n| n as f64)
    }

    #[napi]
    pub fn table_stats(&self, table: String) -> napi::Result<crate::objects::TableStatsObj> {
        self.db.table_stats(&table).js().map(Into::into)
    }

    #[napi]
    pub fn set_table_budget(
        &self,
        table: String,
        bytes: Option<f64>,
        on_full: Option<String>,
    ) -> napi::Result<()> {
        let (bytes, on_full) = crate::objects::disk_budget(bytes, on_full)?;
        self.db
            .set_table_budget(&table, bytes.map(|b| (b, on_full)))
            .js()
    }

    // ---- log

    #[napi]
    pub fn log_bounds(&self) -> napi::Result<LogBoundsObj> {
        let b = self.db.log_bounds().js()?;
        Ok(LogBoundsObj {
            first: b.first as f64,
            last: b.last as f64,
        })
    }

    #[napi]
    pub fn read_log(&self, from_seq: f64, limit: f64) -> napi::Result<Vec<LogEntryObj>> {
        let from = uint("fromSeq", from_seq)?;
        let limit = uint("limit", limit)? as usize;
        Ok(log_objs(
            &self.db.read_log(from, limit).js()?,
            self.db.node_id(),
        ))
    }

    #[napi]
    pub fn read_log_since(&self, since_ms: f64, limit: f64) -> napi::Result<Vec<LogEntryObj>> {
        let since = uint("sinceMs", since_ms)?;
        let limit = uint("limit", limit)? as usize;
        Ok(log_objs(
            &self.db.read_log_since(since, limit).js()?,
            self.db.node_id(),
        ))
    }

    // ---- conflicts

    #[napi]
    pub fn conflicts(&self) -> napi::Result<Vec<ConflictEntryObj>> {
        Ok(entry_objs(&self.db.conflicts().js()?))
    }

    #[napi]
    pub fn conflicts_dropped(&self) -> f64 {
        self.db.conflicts_dropped() as f64
    }

    /// `callback` is index.js's wrapper around the caller's resolver.
    #[napi]
    pub fn set_conflict_resolver(
        &self,
        table: String,
        callback: Function<ConflictCaseObj, AnswerObj>,
        timeout_ms: Option<f64>,
    ) -> napi::Result<()> {
        if self.db.is_closed() {
            return Err(err(tidelog::Error::Closed));
        }
        let slot = ResolverSlot::new(&table, callback, timeout_of(timeout_ms)?)?;
        if let Err(e) = self.db.set_conflict_resolver(&table, slot.resolver()) {
            slot.close();
            return Err(err(e));
        }
        if let Some(old) = lock(&self.resolvers).insert(table, slot) {
            old.close();
        }
        Ok(())
    }

    #[napi]
    pub fn clear_conflict_resolver(&self, table: String) -> bool {
        let was = self.db.clear_conflict_resolver(&table);
        if let Some(slot) = lock(&self.resolvers).remove(&table) {
            slot.close();
        }
        was
    }

    // ---- listeners

    /// Registers `callback(event)` for changes to `table`. The
    /// threadsafe function is weak: it never keeps the process alive (apart
    /// from delivering the events of this script's own commits, see `Keep`).
    #[napi]
    pub fn on_change(
        &self,
        table: String,
        callback: Function<ChangeEventObj, ()>,
    ) -> napi::Result<f64> {
        let max = self.db.options().listener_queue_max;
        let slot = ListenerSlot::new(&table, max, Arc::downgrade(&self.listened), callback)?;
        let target = slot.clone();
        let id = self.db.on_change(&table, move |ev| target.send(ev));
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                drop(slot.take());
                return Err(err(e));
            }
        };
        lock(&self.listeners).insert(id.0, slot);
        Ok(id.0 as f64)
    }

    /// Events of listener `id` waiting for the JavaScript thread (at most
    /// `listener_queue_max`; 0 for an unknown id).
    #[napi]
    pub fn listener_queued(&self, id: f64) -> napi::Result<f64> {
        let id = uint("listener id", id)?;
        Ok(lock(&self.listeners).get(&id).map_or(0, |s| s.queued()) as f64)
    }

    #[napi]
    pub fn remove_listener(&self, id: f64) -> napi::Result<bool> {
        let id = uint("listener id", id)?;
        let slot = lock(&self.listeners).remove(&id);
        let found = self.db.remove_listener(ListenerId(id));
        if let Some(s) = slot {
            drop(s.take());
        }
        Ok(found)
    }

    // ---- replication

    #[napi]
    pub fn start_replication(&self, options_json: String) -> napi::Result<()> {
        let o = options::replication_options(&options_json)?;
        self.db.start_replication(o).js()
    }

    #[napi]
    pub fn listen(&self, addr: String) -> napi::Result<String> {
        self.db.listen(&addr).js().map(|a| a.to_string())
    }

    #[napi]
    pub fn add_peer(&self, peer_json: String) -> napi::Result<()> {
        self.db.add_peer(options::peer_config(&peer_json)?).js()
    }

    #[napi]
    pub fn update_peer(&self, peer_json: String) -> napi::Result<()> {
        self.db.update_peer(options::peer_config(&peer_json)?).js()
    }

    #[napi]
    pub fn remove_peer(&self, name: String) -> napi::Result<()> {
        self.db.remove_peer(&name).js()
    }

    /// The peer's status as JSON text (see `status_json`); index.js parses it.
    #[napi]
    pub fn peer_status(&self, name: String) -> napi::Result<String> {
        status_json(serde_json::to_value(self.db.peer_status(&name).js()?))
    }

    #[napi]
    pub fn replication_status(&self) -> napi::Result<String> {
        status_json(serde_json::to_value(self.db.replication_status().js()?))
    }

    /// Resolves once `peer` acknowledged this instance's log up to `seq`.
    /// The wait runs on the libuv worker pool, never on the event loop.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait_for_ack(
        &self,
        peer: String,
        seq: f64,
        timeout_ms: f64,
    ) -> napi::Result<AsyncTask<WaitAck>> {
        Ok(AsyncTask::new(WaitAck::new(
            self.db.clone(),
            Some(peer),
            Some(uint("seq", seq)?),
            millis("timeoutMs", timeout_ms)?,
        )))
    }

    /// Resolves once every peer this node publishes to acknowledged its log
    /// up to `seq` (None: everything committed when the call starts).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait_for_delivery(
        &self,
        seq: Option<f64>,
        timeout_ms: f64,
    ) -> napi::Result<AsyncTask<WaitAck>> {
        let seq = match seq {
            Some(s) => uint("seq", s)?,
            // Fixed here, on the caller's thread: what "so far" means when
            // the call is made, not when a worker gets to it.
            None => self.db.log_bounds().js()?.last,
        };
        Ok(AsyncTask::new(WaitAck::new(
            self.db.clone(),
            None,
            Some(seq),
            millis("timeoutMs", timeout_ms)?,
        )))
    }

    /// `{ getInt, getStr, upsert, shape, slots }`: raw Node-API functions
    /// bound to this database for index.js's hot paths (see fast.rs).
    #[napi(js_name = "_fast", ts_return_type = "unknown")]
    pub fn fast(&self, env: Env) -> napi::Result<Unknown<'_>> {
        // SAFETY: `env` is this call's env.
        let v = unsafe { fast::functions(env.raw(), self.db.clone(), self.listeners.clone())? };
        // SAFETY: `v` is a live value of this call's scope.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), v) })
    }
}

// ---- development certificates -------------------------------------------

/// Writes a development CA (`ca.pem`, `ca.key`) and a certificate and key
/// per node name into `out_dir` (which must not hold them yet).
#[napi]
pub fn dev_certs(
    out_dir: String,
    nodes: Vec<String>,
    ca_name: Option<String>,
) -> napi::Result<DevCertsObj> {
    let dir = PathBuf::from(&out_dir);
    let files = tidelog::net::certs::generate_dev_pki(
        &dir,
        ca_name.as_deref().unwrap_or("tidelog development CA"),
        &nodes,
    )
    .js()?;
    let (ca, _) = tidelog::net::certs::ca_paths(&dir);
    Ok(DevCertsObj {
        ca: ca.display().to_string(),
        nodes: nodes
            .into_iter()
            .zip(files)
            .map(|(name, f)| NodeCertObj {
                name,
                cert: f.cert_chain.display().to_string(),
                key: f.key.display().to_string(),
            })
            .collect(),
    })
}
