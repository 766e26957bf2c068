//! Transactions driven from index.js, and the tasks that run on the libuv
//! worker pool.

use std::time::Duration;

use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Status, Task};
use napi_derive::napi;
use tidelog::{CommitInfo, Database, Transaction};

use crate::convert::{by_of, err, invalid, key_of, record_value, JsBy, JsKey, OrJs};
use crate::listeners::{owe_events, Slots};
use crate::views::{commit_obj, CommitObj};

// ---- transactions -------------------------------------------------------

/// A transaction being built; index.js drives it from `db.transaction(fn)`.
#[napi]
pub struct NativeTx {
    tx: Option<Transaction>,
    /// Tables written, each once (for the listeners' keep-alive).
    tables: Vec<String>,
    listeners: Slots,
}

impl NativeTx {
    pub(crate) fn new(tx: Transaction, listeners: Slots) -> NativeTx {
        NativeTx {
            tx: Some(tx),
            tables: Vec::new(),
            listeners,
        }
    }
}

fn finished() -> napi::Error {
    invalid("invalid transaction: it was already committed or rolled back; start a new one")
}

#[napi]
impl NativeTx {
    fn open(&mut self, table: &str) -> napi::Result<&mut Transaction> {
        let tx = self.tx.as_mut().ok_or_else(finished)?;
        if !self.tables.iter().any(|t| t == table) {
            self.tables.push(table.to_string());
        }
        Ok(tx)
    }

    #[napi]
    pub fn insert(&mut self, table: String, json: String) -> napi::Result<()> {
        self.open(&table)?
            .insert_json(&table, &json)
            .js()
            .map(|_| ())
    }

    #[napi]
    pub fn upsert(&mut self, table: String, json: String) -> napi::Result<()> {
        self.open(&table)?
            .upsert_json(&table, &json)
            .js()
            .map(|_| ())
    }

    #[napi]
    pub fn update(&mut self, table: String, json: String) -> napi::Result<()> {
        let v = record_value(&json)?;
        self.open(&table)?.update(&table, v).js().map(|_| ())
    }

    #[napi]
    pub fn delete(&mut self, table: String, key: JsKey) -> napi::Result<()> {
        let k = key_of(key)?;
        self.open(&table)?.delete(&table, k).js().map(|_| ())
    }

    #[napi]
    pub fn increment(
        &mut self,
        table: String,
        key: JsKey,
        attr: String,
        by: JsBy,
    ) -> napi::Result<()> {
        let k = key_of(key)?;
        self.open(&table)?
            .increment(&table, k, &attr, by_of(by)?)
            .js()
            .map(|_| ())
    }

    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.tx.as_ref().map_or(0, |t| t.len() as u32)
    }

    #[napi(getter)]
    pub fn finished(&self) -> bool {
        self.tx.is_none()
    }

    #[napi]
    pub fn commit(&mut self, env: Env) -> napi::Result<CommitObj> {
        let tx = self.tx.take().ok_or_else(finished)?;
        let c = tx.commit().js()?;
        if c.seq > 0 {
            owe_events(
                &self.listeners,
                &env,
                self.tables.iter().map(String::as_str),
            );
        }
        Ok(commit_obj(c))
    }

    /// Commits on the libuv worker pool (useful with `durability: "sync"`,
    /// where a commit waits for the disk).
    #[napi(ts_return_type = "Promise<CommitObj>")]
    pub fn commit_async(&mut self) -> napi::Result<AsyncTask<CommitTask>> {
        let tx = self.tx.take().ok_or_else(finished)?;
        Ok(AsyncTask::new(CommitTask {
            tx: Some(tx),
            tables: std::mem::take(&mut self.tables),
            listeners: self.listeners.clone(),
        }))
    }

    /// Discards every staged write.
    #[napi]
    pub fn rollback(&mut self) {
        self.tx = None;
        self.tables.clear();
    }
}

// ---- async tasks --------------------------------------------------------

/// A delivery wait: for one peer (`waitForAck`), or for every peer this
/// node publishes to (`waitForDelivery`, `peer` None; `seq` None there
/// means everything committed so far).
pub struct WaitAck {
    db: Database,
    peer: Option<String>,
    seq: Option<u64>,
    timeout: Duration,
}

impl WaitAck {
    pub(crate) fn new(
        db: Database,
        peer: Option<String>,
        seq: Option<u64>,
        timeout: Duration,
    ) -> WaitAck {
        WaitAck {
            db,
            peer,
            seq,
            timeout,
        }
    }
}

impl Task for WaitAck {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        match &self.peer {
            Some(peer) => self
                .db
                .wait_for_ack(peer, self.seq.unwrap_or(0), self.timeout),
            None => self.db.wait_for_delivery(self.seq, self.timeout),
        }
        .map_err(err)
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> napi::Result<()> {
        Ok(())
    }
}

pub struct CommitTask {
    tx: Option<Transaction>,
    tables: Vec<String>,
    listeners: Slots,
}

impl Task for CommitTask {
    type Output = CommitInfo;
    type JsValue = CommitObj;

    fn compute(&mut self) -> napi::Result<CommitInfo> {
        match self.tx.take() {
            Some(tx) => tx.commit().map_err(err),
            None => Err(napi::Error::new(
                Status::GenericFailure,
                "[TIDELOG:INVALID_INPUT] invalid transaction: already committed",
            )),
        }
    }

    fn resolve(&mut self, env: Env, output: CommitInfo) -> napi::Result<CommitObj> {
        if output.seq > 0 {
            owe_events(
                &self.listeners,
                &env,
                self.tables.iter().map(String::as_str),
            );
        }
        Ok(commit_obj(output))
    }
}
