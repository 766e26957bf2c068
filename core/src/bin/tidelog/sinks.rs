//! `[[sinks]]` of `tidelog serve`: each sink's driver runs on a small
//! runtime of its own, started once the database and its tables are open
//! and stopped before the database closes. A slow destination shares
//! nothing with the admin socket, `/metrics` or replication.

use serde::Deserialize;
use tidelog::cloud::driver::{self, DriverConfig, SinkHandle, SinkStatus};
use tidelog::cloud::jetstream::{JetStreamSink, JetStreamSinkConfig};
use tidelog::cloud::pg_progress::PostgresResumeHints;
use tidelog::cloud::postgres::PostgresSink;
use tidelog::cloud::sink::{Sink, SinkBatch, SinkError};
use tidelog::Database;

use super::CliError;

/// One `[[sinks]]` entry; `kind` picks the destination.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkConfig {
    Postgres(tidelog::cloud::postgres::PostgresSinkConfig),
    Jetstream(JetStreamSinkConfig),
}

impl SinkConfig {
    /// The sink's name as status and metrics show it.
    pub fn label(&self) -> String {
        match self {
            SinkConfig::Postgres(c) => format!("postgres:{}", c.name),
            SinkConfig::Jetstream(c) => c.sink_name(),
        }
    }

    fn tables(&self) -> Vec<String> {
        match self {
            SinkConfig::Postgres(c) => c.tables.iter().map(|t| t.name.clone()).collect(),
            SinkConfig::Jetstream(c) => c.tables.clone(),
        }
    }
}

/// What the schema cannot say: names given twice, values the sink refuses.
pub fn check(sinks: &[SinkConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for s in sinks {
        if !seen.insert(s.label()) {
            return Err(format!(
                "sink `{}` is listed twice in [[sinks]]: give each a different `name`",
                s.label()
            ));
        }
        match s {
            SinkConfig::Postgres(c) => c.validate().map_err(|e| format!("[[sinks]] {e}"))?,
            SinkConfig::Jetstream(c) => {
                // Serve names the hub when the config leaves it out.
                let mut c = c.clone();
                if c.hub.is_empty() {
                    c.hub = "hub".into();
                }
                c.validate()
                    .map_err(|e| format!("[[sinks]] kind = \"jetstream\": {e}"))?
            }
        }
    }
    Ok(())
}

/// Registers each sink's acknowledgement gate with replication (edges'
/// transactions of its tables are acknowledged once the sink committed
/// them), and each PostgreSQL sink's edge positions as resume hints (an
/// edge moved from another hub resumes where PostgreSQL has it).
pub fn gate(configs: &[SinkConfig], db: &Database) -> Result<(), CliError> {
    for c in configs {
        db.sink_gate(&c.label(), c.tables())
            .map_err(|e| CliError::Runtime(format!("sink `{}`: {e}", c.label())))?;
        if let SinkConfig::Postgres(pc) = c {
            let hints = PostgresResumeHints::new(pc.url.clone(), c.tables());
            db.add_resume_hints(std::sync::Arc::new(hints))
                .map_err(|e| CliError::Runtime(format!("sink `{}`: {e}", c.label())))?;
        }
    }
    Ok(())
}

/// A sink whose connection is made by the driver's first call, so a
/// destination that is down when serve starts is retried like one that
/// goes down later, instead of keeping the hub from starting.
enum Connecting {
    JetStream(JetStreamSinkConfig, Option<JetStreamSink>),
}

impl Connecting {
    async fn sink(&mut self) -> Result<&mut JetStreamSink, SinkError> {
        let Connecting::JetStream(cfg, sink) = self;
        if sink.is_none() {
            *sink = Some(JetStreamSink::connect(cfg.clone()).await?);
        }
        sink.as_mut().ok_or_else(|| SinkError {
            sink: cfg.sink_name(),
            message: "not connected".into(),
            transient: true,
        })
    }

    /// A connection that failed mid-call is made anew on the next one.
    fn reset_on<T>(&mut self, r: Result<T, SinkError>) -> Result<T, SinkError> {
        if matches!(&r, Err(e) if e.transient) {
            let Connecting::JetStream(_, sink) = self;
            *sink = None;
        }
        r
    }
}

impl Sink for Connecting {
    fn name(&self) -> String {
        let Connecting::JetStream(cfg, _) = self;
        cfg.sink_name()
    }

    async fn resume_point(&mut self) -> Result<u64, SinkError> {
        let r = match self.sink().await {
            Ok(s) => s.resume_point().await,
            Err(e) => Err(e),
        };
        self.reset_on(r)
    }

    async fn apply(&mut self, batch: &SinkBatch) -> Result<(), SinkError> {
        let r = match self.sink().await {
            Ok(s) => s.apply(batch).await,
            Err(e) => Err(e),
        };
        self.reset_on(r)
    }
}

/// The running sinks and the runtime they run on.
pub struct Sinks {
    runtime: Option<tokio::runtime::Runtime>,
    handles: Vec<SinkHandle>,
}

impl Sinks {
    pub fn none() -> Sinks {
        Sinks {
            runtime: None,
            handles: Vec::new(),
        }
    }

    /// Starts every configured sink; none are running if one is refused.
    pub fn start(configs: &[SinkConfig], db: &Database) -> Result<Sinks, CliError> {
        if configs.is_empty() {
            return Ok(Sinks::none());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tidelog-sink")
            .enable_all()
            .build()
            .map_err(|e| CliError::Runtime(format!("cannot start the sinks' runtime: {e}")))?;
        let mut handles = Vec::new();
        // Log positions belong to one data directory: its node id (random at
        // creation) keeps a replaced directory from inheriting the old one's
        // resume point.
        let hub = format!("{}#{:016x}", db.node_name(), db.node_id());
        for c in configs {
            let handle = match c {
                SinkConfig::Postgres(pc) => {
                    let sink = PostgresSink::new(pc.clone(), &hub)
                        .map_err(|e| CliError::Config(format!("[[sinks]] {e}")))?;
                    let mut dc =
                        DriverConfig::new(pc.tables.iter().map(|t| t.name.clone()).collect());
                    dc.max_batch_rows = pc.max_batch_rows;
                    dc.max_batch_bytes = pc.max_batch_bytes;
                    dc.gate = db.sink_gate(&c.label(), c.tables()).ok();
                    let _enter = runtime.enter();
                    driver::spawn(db.clone(), sink, dc)
                }
                SinkConfig::Jetstream(jc) => {
                    let mut jc = jc.clone();
                    if jc.hub.is_empty() {
                        jc.hub = hub.clone();
                    }
                    let _enter = runtime.enter();
                    let mut dc = DriverConfig::new(jc.tables.clone());
                    dc.gate = db.sink_gate(&c.label(), c.tables()).ok();
                    driver::spawn(db.clone(), Connecting::JetStream(jc.clone(), None), dc)
                }
            };
            log::info!(
                "sink `{}`: sending {}",
                c.label(),
                c.tables()
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            handles.push(handle);
        }
        Ok(Sinks {
            runtime: Some(runtime),
            handles,
        })
    }

    pub fn statuses(&self) -> Vec<SinkStatus> {
        self.handles.iter().map(SinkHandle::status).collect()
    }

    /// Stops every sink (a batch in flight is rolled back by its
    /// destination and sent again at the next start).
    pub fn stop(&mut self) {
        let handles = std::mem::take(&mut self.handles);
        if let Some(rt) = self.runtime.take() {
            rt.block_on(async {
                for h in handles {
                    h.stop().await;
                }
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(3));
        }
    }
}

/// One line of `tidelog status` for a sink.
pub fn status_line(s: &SinkStatus) -> String {
    let mut line = format!(
        "sink {}: {}, applied through {} of {}, backlog {}, lag {:.1}s, {} batches, {} rows, {} retries, {} overruns",
        s.name,
        if s.connected { "connected" } else { "not connected" },
        s.resume_point,
        s.log_head,
        s.backlog,
        s.lag_seconds,
        s.batches,
        s.rows,
        s.retries,
        s.overruns
    );
    if let Some(e) = &s.last_error {
        line.push_str(&format!(", last error: {e}"));
    }
    line
}
