//! What the JetStream sink tests share: configs, logs cut into batches, a
//! consumer reading a whole stream, the reference state, and a loop that
//! drives a sink the way the sink driver does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;
use serde_json::json;
use tidelog::cloud::jetstream::{
    JetStreamSink, JetStreamSinkConfig, StampGuard, Verdict, WriteMeta,
};
use tidelog::cloud::sink::{Sink, SinkBatch, SinkRow};
use tidelog::{Key, Stamp};

pub fn config(url: &str, stream: &str, tables: &[&str]) -> JetStreamSinkConfig {
    serde_json::from_value(json!({
        "url": url,
        "stream": stream,
        "subject_prefix": format!("{stream}_p"),
        "tables": tables,
        "hub": "hub-1",
        "timeout": "1s",
        "max_in_flight": 16,
    }))
    .expect("config")
}

pub fn row(table: &str, key: Key, time: u64, node: u64, record: Option<&str>) -> SinkRow {
    SinkRow {
        table: table.into(),
        key,
        record: record.map(str::to_string),
        stamp: Stamp { time, node },
    }
}

/// Splits a log into batches of `size` rows, seq = row index + 1.
pub fn batches(log: &[SinkRow], size: usize) -> Vec<SinkBatch> {
    log.chunks(size)
        .enumerate()
        .map(|(i, rows)| SinkBatch {
            after_seq: (i * size) as u64,
            through_seq: (i * size + rows.len()) as u64,
            rows: rows.to_vec(),
        })
        .collect()
}

/// What a consumer receives.
#[derive(Debug, Clone)]
pub struct Got {
    pub subject: String,
    pub meta: WriteMeta,
    pub payload: Vec<u8>,
    pub msg_id: String,
}

/// Every message of the stream, in stream order, through an ordered
/// consumer (what a user of the stream would run).
pub async fn read_all(url: &str, stream: &str) -> Vec<Got> {
    let client = async_nats::connect(url).await.expect("consumer connect");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream");
    let n = s.info().await.expect("stream info").state.messages;
    if n == 0 {
        return Vec::new();
    }
    let consumer = s
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message within 10 s")
            .expect("stream open")
            .expect("message");
        let headers = msg.headers.clone().expect("headers");
        out.push(Got {
            subject: msg.subject.to_string(),
            meta: WriteMeta::from_headers(&headers).expect("tidelog headers"),
            payload: msg.payload.to_vec(),
            msg_id: headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string())
                .expect("Nats-Msg-Id"),
        });
    }
    out
}

/// Per (table, key): the record's JSON (None: deleted) and its stamp.
pub type State = BTreeMap<(String, Key), (Option<Vec<u8>>, Stamp)>;

/// Final state per (table, key) as a consumer applying through a
/// StampGuard sees it: the record (None: deleted) and its stamp.
pub fn guarded_state(got: &[Got]) -> State {
    let mut guard = StampGuard::new();
    let mut state = BTreeMap::new();
    for g in got {
        if guard.check(&g.meta) == Verdict::Apply {
            let value = (!g.meta.deleted).then(|| g.payload.clone());
            state.insert(
                (g.meta.table.clone(), g.meta.key.clone()),
                (value, g.meta.stamp),
            );
        }
    }
    state
}

/// Last writer per (table, key) of a log, the reference.
pub fn reference(log: &[SinkRow]) -> State {
    let mut state = State::new();
    for r in log {
        let k = (r.table.clone(), r.key.clone());
        if state.get(&k).is_none_or(|(_, s)| *s < r.stamp) {
            state.insert(k, (r.record.clone().map(String::into_bytes), r.stamp));
        }
    }
    state
}

pub fn duplicates(got: &[Got]) -> usize {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *ids.entry(g.msg_id.as_str()).or_default() += 1;
    }
    ids.values().map(|n| n - 1).sum()
}

pub async fn connect_retrying(cfg: &JetStreamSinkConfig) -> JetStreamSink {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match JetStreamSink::connect(cfg.clone()).await {
            Ok(s) => return s,
            Err(e) if e.transient && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// What the sink driver does: from the resume point on, apply each batch;
/// on a transient error back off and start again from the resume point.
pub async fn drive(sink: &mut JetStreamSink, batches: &[SinkBatch], applied: &AtomicU64) -> usize {
    drive_pausing(sink, batches, applied, None).await
}

/// [`drive`], waiting after `pause.0` applied batches until `pause.1` is set.
pub async fn drive_pausing(
    sink: &mut JetStreamSink,
    batches: &[SinkBatch],
    applied: &AtomicU64,
    pause: Option<(u64, &AtomicBool)>,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut transient_errors = 0;
    'outer: loop {
        assert!(Instant::now() < deadline, "batches not applied within 40 s");
        let from = match sink.resume_point().await {
            Ok(p) => p,
            Err(e) if e.transient => {
                transient_errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("resume point: {e}"),
        };
        for b in batches.iter().filter(|b| b.through_seq > from) {
            match sink.apply(b).await {
                Ok(()) => {
                    let n = applied.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Some((at, go)) = pause {
                        while n == at && !go.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                Err(e) if e.transient => {
                    transient_errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
                Err(e) => panic!("apply: {e}"),
            }
        }
        return transient_errors;
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The resume point, retried while the server comes back.
pub async fn resume_point_retrying(sink: &mut JetStreamSink) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sink.resume_point().await {
            Ok(p) => return p,
            Err(e) if e.transient && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("resume point after restart: {e}"),
        }
    }
}
