//! The NATS JetStream sink: the hub's log of some tables as messages of a
//! stream, one subject per table and key, for users whose cloud is a
//! stream rather than a database.
//!
//! Each write becomes one message on `<subject_prefix>.<table>.<key>`
//! (tokens encoded as [`subject`] describes) whose payload is the record's
//! JSON text, or empty for a delete, with the headers of [`guard`]
//! (`Tidelog-Table`, `Tidelog-Key`, `Tidelog-Stamp`, `Tidelog-Deleted`) and
//! `Nats-Msg-Id` = origin node, stamp time, table and key. The same write
//! therefore always has the same id, and the server drops a republish
//! within the stream's duplicate window.
//!
//! A batch is published with at most `max_in_flight` messages awaiting
//! their acknowledgement; only when every message of the batch is
//! acknowledged (a "duplicate" acknowledgement counts: the message is in
//! the stream) does the resume point move, and it is kept in JetStream
//! itself (KV bucket [`RESUME_BUCKET`], key `<hub>.<sink name>`), so a
//! restarted hub, or another one taking over the same name, resumes there.
//! Replaying from an older resume point republishes the same ids: within
//! the duplicate window the server drops them; beyond it the consumer's
//! [`guard::StampGuard`] skips them.
//!
//! The resume point only moves forward: a replayed older batch leaves it
//! where it is. It is only as durable as the stream: nats-server acknowledges
//! a message before it is fsynced (its `sync_interval`), so a crash of the
//! server's machine (not of the process) can lose acknowledged messages
//! behind a resume point that moved; replay from an older point (delete the
//! KV key) after such a crash.
//!
//! Consumers of the stream: subscribe to `<subject_prefix>.>` (or one
//! table's `<subject_prefix>.<table token>.>`), read each message's
//! headers with [`WriteMeta::from_headers`], feed them to a [`StampGuard`]
//! and apply only what it answers [`Verdict::Apply`] for (an empty payload
//! with `Tidelog-Deleted: true` deletes the record). Do not take the key
//! from the subject: a long key's token is a digest.
//!
//! Stays within nats-server 2.9's features (no stream options of 2.10+).

mod config;
pub mod guard;
pub mod subject;

use std::collections::{HashMap, VecDeque};

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::stream::{DiscardPolicy, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, Context};
use async_nats::{ConnectErrorKind, ConnectOptions, HeaderMap};

use crate::cloud::sink::{Sink, SinkBatch, SinkError, SinkRow};

pub use config::{JetStreamSinkConfig, JetStreamTls};
pub use guard::{HeaderError, StampGuard, Verdict, WriteMeta};

/// The KV bucket holding every JetStream sink's resume point.
pub const RESUME_BUCKET: &str = "tidelog_sinks";

/// Counters for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JetStreamSinkStats {
    /// Messages acknowledged as new.
    pub published: u64,
    /// Messages the server acknowledged as duplicates (dropped).
    pub duplicates: u64,
    /// Rows of tables this sink does not publish, left out.
    pub skipped_rows: u64,
}

/// The sink; see the module documentation.
pub struct JetStreamSink {
    cfg: JetStreamSinkConfig,
    name: String,
    js: Context,
    /// The bucket's stream (KV layout: `$KV.<bucket>.<key>`, one message
    /// per key).
    bucket: Stream,
    kv_key: String,
    /// Table name -> subject token, for the configured tables only.
    table_tokens: HashMap<String, String>,
    /// The resume point last read or written; `None` until read.
    stored: Option<u64>,
    stats: JetStreamSinkStats,
}

fn sink_error(sink: &str, transient: bool, message: impl Into<String>) -> SinkError {
    SinkError {
        sink: sink.to_string(),
        message: message.into(),
        transient,
    }
}

impl JetStreamSink {
    /// Connects, checks the server has JetStream, creates or checks the
    /// stream and the resume-point bucket.
    pub async fn connect(cfg: JetStreamSinkConfig) -> Result<JetStreamSink, SinkError> {
        let name = cfg.sink_name();
        cfg.validate()
            .map_err(|m| sink_error(&name, false, format!("config: {m}")))?;
        let timeout = cfg.timeout.0;
        let mut opts = ConnectOptions::new()
            .name(format!("tidelog hub {} ({name})", cfg.hub))
            .connection_timeout(timeout);
        if let Some(path) = &cfg.credentials {
            opts = opts.credentials_file(path).await.map_err(|e| {
                sink_error(
                    &name,
                    false,
                    format!(
                        "credentials: cannot read `{}`: {e}; give a NATS .creds file",
                        path.display()
                    ),
                )
            })?;
        }
        if let Some(tls) = &cfg.tls {
            if let Some(ca) = &tls.ca {
                opts = opts.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                opts = opts.add_client_certificate(cert.clone(), key.clone());
            }
            opts = opts.require_tls(true);
        }
        let client = opts.connect(cfg.url.as_str()).await.map_err(|e| {
            let (transient, what) = match e.kind() {
                ConnectErrorKind::ServerParse => {
                    (false, "check `url` (e.g. `nats://127.0.0.1:4222`)")
                }
                ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                    (false, "check `credentials` and the server's authorization")
                }
                ConnectErrorKind::Tls => (
                    false,
                    "check `tls` (CA, certificate and key) and the server's TLS",
                ),
                _ => (true, "is nats-server running there? retrying"),
            };
            sink_error(
                &name,
                transient,
                format!("cannot connect to {}: {e}; {what}", cfg.url),
            )
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client);
        check_jetstream(&js, &name, &cfg.url).await?;
        let table_tokens: HashMap<String, String> = cfg
            .tables
            .iter()
            .map(|t| (t.clone(), subject::string_token(t)))
            .collect();
        ensure_stream(&js, &name, &cfg, &table_tokens).await?;
        let bucket = ensure_bucket(&js, &name).await?;
        let kv_key = format!("{}.{}", subject::kv_part(&cfg.hub), subject::kv_part(&name));
        Ok(JetStreamSink {
            cfg,
            name,
            js,
            bucket,
            kv_key,
            table_tokens,
            stored: None,
            stats: JetStreamSinkStats::default(),
        })
    }

    pub fn stats(&self) -> JetStreamSinkStats {
        self.stats
    }

    fn kv_subject(&self) -> String {
        format!("$KV.{RESUME_BUCKET}.{}", self.kv_key)
    }

    /// The KV key of this sink's resume point in [`RESUME_BUCKET`].
    pub fn resume_key(&self) -> &str {
        &self.kv_key
    }

    /// The subject a row goes to; `None` for a table this sink does not
    /// publish.
    pub fn subject_of(&self, table: &str, key: &crate::Key) -> Option<String> {
        let t = self.table_tokens.get(table)?;
        Some(format!(
            "{}.{t}.{}",
            self.cfg.subject_prefix,
            subject::key_token(key)
        ))
    }

    fn message(&self, row: &SinkRow, table_token: &str) -> (String, PublishMessage) {
        let key_token = subject::key_token(&row.key);
        let subject = format!("{}.{table_token}.{key_token}", self.cfg.subject_prefix);
        let mut headers = HeaderMap::new();
        // None of these can hold CR or LF (validated table names, JSON
        // text, digits), which is all a header value may not hold.
        headers.insert(guard::HEADER_TABLE, row.table.as_str());
        headers.insert(guard::HEADER_KEY, row.key.to_json().to_string().as_str());
        headers.insert(
            guard::HEADER_STAMP,
            guard::stamp_header(&row.stamp).as_str(),
        );
        headers.insert(
            guard::HEADER_DELETED,
            if row.record.is_none() {
                "true"
            } else {
                "false"
            },
        );
        let payload = row
            .record
            .as_ref()
            .map(|r| bytes_of(r.as_bytes()))
            .unwrap_or_default();
        let id = subject::msg_id(row.stamp.node, row.stamp.time, table_token, &key_token);
        let msg = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(id);
        (subject, msg)
    }

    fn publish_error(
        &self,
        e: async_nats::jetstream::context::PublishError,
        row: &SinkRow,
    ) -> SinkError {
        let timeout = self.cfg.timeout.0;
        let (transient, what) = match e.kind() {
            PublishErrorKind::TimedOut => (
                true,
                format!("no acknowledgement within {timeout:?}: the server is down, restarting or overloaded; the batch is retried"),
            ),
            PublishErrorKind::MaxPayloadExceeded => (
                false,
                "the message is larger than the server's max_payload: raise `max_payload` in nats-server's config".to_string(),
            ),
            PublishErrorKind::StreamNotFound => (
                true,
                format!(
                    "no stream took the subject: the server is still starting JetStream, or stream `{}` was deleted (then restart the sink to create it again)",
                    self.cfg.stream
                ),
            ),
            _ => (true, "the connection failed; the batch is retried".to_string()),
        };
        sink_error(
            &self.name,
            transient,
            format!(
                "publishing {}/{}: {e}; {what}",
                row.table,
                row.key.to_json()
            ),
        )
    }

    async fn read_resume_point(&mut self) -> Result<u64, SinkError> {
        let entry = match self
            .bucket
            .get_last_raw_message_by_subject(&self.kv_subject())
            .await
        {
            Ok(m) => Some(m.payload),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => {
                return Err(sink_error(
                    &self.name,
                    true,
                    format!(
                        "reading the resume point ({RESUME_BUCKET}/{}): {e}; retrying",
                        self.kv_key
                    ),
                ))
            }
        };
        let point = match entry {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    sink_error(
                        &self.name,
                        false,
                        format!(
                            "the resume point in KV {RESUME_BUCKET}/{} is not a number ({:?}); someone else wrote it: delete the key (`nats kv del {RESUME_BUCKET} {}`) to republish from the start (consumers' stamp guards skip what they have)",
                            self.kv_key,
                            String::from_utf8_lossy(&bytes),
                            self.kv_key
                        ),
                    )
                })?,
        };
        self.stored = Some(point);
        Ok(point)
    }

    async fn apply_batch(&mut self, batch: &SinkBatch) -> Result<(), SinkError> {
        let cap = self.cfg.max_in_flight;
        let mut pending = VecDeque::with_capacity(cap.min(batch.rows.len()));
        for row in &batch.rows {
            let Some(table_token) = self.table_tokens.get(&row.table) else {
                self.stats.skipped_rows += 1;
                continue;
            };
            let (subject, msg) = self.message(row, table_token);
            let ack = self
                .js
                .send_publish(subject, msg)
                .await
                .map_err(|e| self.publish_error(e, row))?;
            pending.push_back((ack, row));
            if pending.len() >= cap {
                if let Some((ack, row)) = pending.pop_front() {
                    self.await_ack(ack, row).await?;
                }
            }
        }
        while let Some((ack, row)) = pending.pop_front() {
            self.await_ack(ack, row).await?;
        }
        self.store_resume_point(batch.through_seq).await
    }

    async fn await_ack(
        &mut self,
        ack: async_nats::jetstream::context::PublishAckFuture,
        row: &SinkRow,
    ) -> Result<(), SinkError> {
        let ack = ack.await.map_err(|e| self.publish_error(e, row))?;
        if ack.duplicate {
            self.stats.duplicates += 1;
        } else {
            self.stats.published += 1;
        }
        Ok(())
    }

    /// Moves the resume point forward only: a replayed older batch leaves
    /// it where it is (its messages were acknowledged, nothing is lost).
    async fn store_resume_point(&mut self, through: u64) -> Result<(), SinkError> {
        let current = match self.stored {
            Some(p) => p,
            None => self.read_resume_point().await?,
        };
        if through <= current {
            return Ok(());
        }
        let subject = self.kv_subject();
        let put = async {
            self.js
                .publish(subject, bytes_of(through.to_string().as_bytes()))
                .await?
                .await
        };
        put.await.map_err(|e| {
                sink_error(
                    &self.name,
                    true,
                    format!(
                        "storing the resume point {through} ({RESUME_BUCKET}/{}): {e}; the batch's messages are in the stream and are republished as duplicates on retry",
                        self.kv_key
                    ),
                )
            })?;
        self.stored = Some(through);
        Ok(())
    }
}

fn bytes_of(b: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(b)
}

impl Sink for JetStreamSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn resume_point(&mut self) -> impl std::future::Future<Output = Result<u64, SinkError>> + Send {
        self.read_resume_point()
    }

    fn apply(
        &mut self,
        batch: &SinkBatch,
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.apply_batch(batch)
    }
}

const NO_JETSTREAM: &str = "start nats-server with JetStream (`nats-server -js -sd DIR`, or a `jetstream {}` block in its config) and enable it for this account";

async fn check_jetstream(js: &Context, name: &str, url: &str) -> Result<(), SinkError> {
    use async_nats::jetstream::context::RequestErrorKind;
    // The raw account info, not `query_account`: its typed reply wants
    // fields nats-server 2.9 does not send. Only the error matters here.
    match js.request::<_, (), serde_json::Value>("INFO", &()).await {
        Ok(reply) => match reply.get("error") {
            None => Ok(()),
            Some(err) => {
                let code = err.get("err_code").and_then(serde_json::Value::as_u64);
                let off = [
                    ErrorCode::JETSTREAM_NOT_ENABLED.0,
                    ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT.0,
                ];
                Err(sink_error(
                    name,
                    false,
                    if code.is_some_and(|c| off.contains(&c)) {
                        format!("the server at {url} has JetStream off ({err}): {NO_JETSTREAM}")
                    } else {
                        format!("the server at {url} refused the JetStream account info: {err}; check this account's JetStream permissions")
                    },
                ))
            }
        },
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Err(sink_error(
            name,
            false,
            format!("the server at {url} has no JetStream: {NO_JETSTREAM}"),
        )),
        Err(e) => Err(sink_error(
            name,
            true,
            format!("asking {url} for its JetStream account: {e}; retrying"),
        )),
    }
}

fn conflict(name: &str, cfg: &JetStreamSinkConfig, what: String) -> SinkError {
    sink_error(
        name,
        false,
        format!(
            "stream `{}` exists with another configuration: {what}; change the stream (`nats stream edit {}`) or this sink's `stream`/`subject_prefix`/`duplicate_window`",
            cfg.stream, cfg.stream
        ),
    )
}

async fn ensure_stream(
    js: &Context,
    name: &str,
    cfg: &JetStreamSinkConfig,
    table_tokens: &HashMap<String, String>,
) -> Result<(), SinkError> {
    let mut wanted: Vec<String> = table_tokens
        .values()
        .map(|t| format!("{}.{t}.>", cfg.subject_prefix))
        .collect();
    wanted.sort();
    let window = cfg.duplicate_window.0;
    match js.get_stream(cfg.stream.as_str()).await {
        Ok(stream) => {
            let have = &stream.cached_info().config;
            if have.storage != StorageType::File {
                return Err(conflict(
                    name,
                    cfg,
                    format!("storage {:?}, not file", have.storage),
                ));
            }
            if have.duplicate_window != window {
                return Err(conflict(
                    name,
                    cfg,
                    format!(
                        "duplicate window {:?}, this sink wants {window:?}",
                        have.duplicate_window
                    ),
                ));
            }
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|s| !have.subjects.contains(s))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            // A table added to the sink: add its subject, keep the rest.
            let mut update = have.clone();
            update.subjects.extend(missing.into_iter().cloned());
            js.update_stream(update).await.map(|_| ()).map_err(|e| {
                conflict(
                    name,
                    cfg,
                    format!("adding this sink's subjects failed: {e}"),
                )
            })
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                let config = StreamConfig {
                    name: cfg.stream.clone(),
                    subjects: wanted,
                    storage: StorageType::File,
                    duplicate_window: window,
                    description: Some("tidelog sink: one subject per table and key".into()),
                    ..Default::default()
                };
                js.create_stream(config)
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.kind() {
                        CreateStreamErrorKind::TimedOut => sink_error(
                            name,
                            true,
                            format!("creating stream `{}`: {e}; retrying", cfg.stream),
                        ),
                        _ => conflict(name, cfg, format!("creating it failed: {e}")),
                    })
            }
            _ => Err(sink_error(
                name,
                true,
                format!("reading stream `{}`: {e}; retrying", cfg.stream),
            )),
        },
    }
}

/// The resume points' bucket, made as a plain stream in the KV layout
/// (what `nats kv` reads) rather than through the client's KV API, whose
/// replies want fields nats-server 2.9 does not send.
async fn ensure_bucket(js: &Context, name: &str) -> Result<Stream, SinkError> {
    let stream = format!("KV_{RESUME_BUCKET}");
    if let Ok(s) = js.get_stream(stream.as_str()).await {
        return Ok(s);
    }
    let created = js
        .create_stream(StreamConfig {
            name: stream.clone(),
            description: Some("tidelog sinks' resume points, per hub and sink".into()),
            subjects: vec![format!("$KV.{RESUME_BUCKET}.>")],
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            ..Default::default()
        })
        .await;
    match created {
        Ok(s) => Ok(s),
        // Another hub made it in between.
        Err(create) => js.get_stream(stream.as_str()).await.map_err(|_| {
            sink_error(
                name,
                true,
                format!(
                    "creating KV bucket `{RESUME_BUCKET}` for resume points: {create}; retrying"
                ),
            )
        }),
    }
}
