//! Concurrent writes for Node: the conflict log as objects, and a
//! JavaScript function as a table's conflict resolver.
//!
//! The core asks a resolver on one of its library threads; JavaScript can
//! only run on the JavaScript thread. So the library thread queues the case
//! onto a threadsafe function and waits for the answer, for a bounded time:
//! the JavaScript thread may be busy (a long synchronous loop, or a
//! synchronous call into this very database), and replication must not
//! hang on it. On timeout, or when the database closes meanwhile, the
//! remote version is taken and the log says so (target
//! `tidelog::resolver`). The threadsafe function is weak: a registered
//! resolver never keeps the process alive.
//!
//! index.js wraps the caller's function: it catches a throw and checks the
//! answer, so what comes back here is already one of the forms below, with
//! a readable reason when the caller's function misbehaved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use serde_json::Value;
use tidelog::{ConflictCase, ConflictEntry, ConflictPolicy, ConflictResolver, Resolution};

use crate::convert::{invalid, OrJs};
use crate::listeners::lock;
use crate::views::{key_js, stamp_obj, KeyJs, StampObj};

/// A table option's policy from its options-schema name.
pub(crate) fn policy(name: &str) -> napi::Result<ConflictPolicy> {
    ConflictPolicy::from_name(name).js()
}

// ---- the conflict log -------------------------------------------------------

/// `ConflictEntry`, camelCased, with 64-bit stamps as bigints.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct ConflictEntryObj {
    pub id: String,
    pub table: String,
    pub key: KeyJs,
    pub rule: String,
    pub lost: String,
    pub winner: StampObj,
    pub winner_origin: String,
    pub loser: StampObj,
    pub loser_origin: String,
    pub loser_values: Option<Value>,
    pub at_ms: f64,
}

pub(crate) fn entry_objs(entries: &[ConflictEntry]) -> Vec<ConflictEntryObj> {
    entries
        .iter()
        .map(|e| ConflictEntryObj {
            id: e.id.clone(),
            table: e.table.clone(),
            key: key_js(&e.key),
            rule: e.rule.name().to_string(),
            lost: e.lost.name().to_string(),
            winner: stamp_obj(&e.winner),
            winner_origin: e.winner_origin.clone(),
            loser: stamp_obj(&e.loser),
            loser_origin: e.loser_origin.clone(),
            loser_values: e.loser_values.clone(),
            at_ms: e.at_ms as f64,
        })
        .collect()
}

// ---- resolvers ----------------------------------------------------------------

/// What a resolver is asked (`ConflictCase`), camelCased; `null` for a side
/// that is a delete.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct ConflictCaseObj {
    pub table: String,
    pub key: KeyJs,
    pub local: Option<Value>,
    pub local_stamp: StampObj,
    pub remote: Option<Value>,
    pub remote_stamp: StampObj,
}

fn case_obj(c: &ConflictCase) -> ConflictCaseObj {
    ConflictCaseObj {
        table: c.table.clone(),
        key: key_js(&c.key),
        local: c.local.clone(),
        local_stamp: stamp_obj(&c.local_stamp),
        remote: c.remote.clone(),
        remote_stamp: stamp_obj(&c.remote_stamp),
    }
}

/// The answer as index.js's wrapper hands it back: exactly one field set.
#[napi(object, object_to_js = false)]
pub struct AnswerObj {
    /// "take_remote", "keep_local" or "delete".
    pub answer: Option<String>,
    /// The record to write, as JSON text.
    pub write: Option<String>,
    /// Why the caller's function gave no valid answer.
    pub error: Option<String>,
}

type ResolverFn =
    ThreadsafeFunction<ConflictCaseObj, AnswerObj, ConflictCaseObj, Status, false, true, 0>;

/// One installed resolver; closed when replaced, cleared, or its database
/// closes, which ends any wait for its answer.
pub(crate) struct ResolverSlot {
    table: String,
    tsfn: Mutex<Option<ResolverFn>>,
    closed: AtomicBool,
    timeout: Duration,
}

pub(crate) type Resolvers = Arc<Mutex<HashMap<String, Arc<ResolverSlot>>>>;

/// How often a waiting library thread looks whether the slot was closed.
const POLL: Duration = Duration::from_millis(20);

fn took_remote(table: &str, why: &str) -> Resolution {
    log::warn!(target: "tidelog::resolver", "conflict resolver for table {table}: {why}; took the remote version");
    Resolution::TakeRemote
}

impl ResolverSlot {
    /// JavaScript thread: a resolver calling `callback(case)`.
    pub(crate) fn new(
        table: &str,
        callback: Function<ConflictCaseObj, AnswerObj>,
        timeout: Duration,
    ) -> napi::Result<Arc<Self>> {
        let tsfn: ResolverFn = callback
            .build_threadsafe_function::<ConflictCaseObj>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(|ctx| Ok(ctx.value))
            .map_err(|e| invalid(e.reason.clone()))?;
        Ok(Arc::new(ResolverSlot {
            table: table.to_string(),
            tsfn: Mutex::new(Some(tsfn)),
            closed: AtomicBool::new(false),
            timeout,
        }))
    }

    /// Any thread: no more calls, and waits in progress end now.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(lock(&self.tsfn).take());
    }

    /// The core's resolver for this slot.
    pub(crate) fn resolver(self: &Arc<Self>) -> ConflictResolver {
        let slot = self.clone();
        Arc::new(move |case: &ConflictCase| slot.ask(case))
    }

    /// Library thread: queues the case for JavaScript and waits for the
    /// answer, at most `timeout`.
    fn ask(&self, case: &ConflictCase) -> Resolution {
        let (tx, rx) = sync_channel::<napi::Result<AnswerObj>>(1);
        let status = {
            let guard = lock(&self.tsfn);
            let Some(tsfn) = guard.as_ref() else {
                return took_remote(&self.table, "the resolver was removed");
            };
            tsfn.call_with_return_value(
                case_obj(case),
                ThreadsafeFunctionCallMode::NonBlocking,
                move |answer, _env| {
                    // The waiter may have given up already; then nobody listens.
                    let _ = tx.try_send(answer);
                    Ok(())
                },
            )
        };
        if status != Status::Ok {
            return took_remote(
                &self.table,
                &format!("the JavaScript thread cannot be reached ({status})"),
            );
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return took_remote(
                    &self.table,
                    "the database closed before the resolver answered",
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return took_remote(
                    &self.table,
                    &format!(
                        "no answer within {} ms (the JavaScript thread was busy, or the resolver blocked)",
                        self.timeout.as_millis()
                    ),
                );
            }
            match rx.recv_timeout(left.min(POLL)) {
                Ok(Ok(a)) => return self.answer(a),
                Ok(Err(e)) => {
                    return took_remote(&self.table, &format!("it threw: {}", e.reason));
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return took_remote(
                        &self.table,
                        "the call was dropped (the JavaScript environment is shutting down)",
                    );
                }
            }
        }
    }

    fn answer(&self, a: AnswerObj) -> Resolution {
        if let Some(why) = a.error {
            return took_remote(&self.table, &why);
        }
        if let Some(text) = a.write {
            return match serde_json::from_str::<Value>(&text) {
                Ok(v @ Value::Object(_)) => Resolution::Write(v),
                _ => took_remote(&self.table, "the record to write is not a JSON object"),
            };
        }
        match a.answer.as_deref() {
            Some("take_remote") => Resolution::TakeRemote,
            Some("keep_local") => Resolution::KeepLocal,
            Some("delete") => Resolution::Delete,
            other => took_remote(&self.table, &format!("unknown answer {other:?}")),
        }
    }
}

/// The wait bound for `setConflictResolver`'s `timeoutMs`.
pub(crate) fn timeout_of(ms: Option<f64>) -> napi::Result<Duration> {
    const DEFAULT_MS: f64 = 5_000.0;
    let ms = ms.unwrap_or(DEFAULT_MS);
    if !ms.is_finite() || !(1.0..=600_000.0).contains(&ms) {
        return Err(invalid(format!(
            "invalid resolver options: timeoutMs must be 1 to 600000 ms, got {ms}"
        )));
    }
    Ok(Duration::from_millis(ms as u64))
}
