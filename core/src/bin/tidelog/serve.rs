//! `tidelog serve`: one instance run from a config file until a signal.
//!
//! SIGTERM and SIGINT close the database and stop. SIGHUP (or `tidelog
//! reload` on the admin socket) re-reads the config file and applies what
//! changed (see `reload.rs`). The admin socket (`admin.rs`) answers
//! `tidelog status`, `peers`, `forget` and `reload`; `[metrics] listen`
//! serves `/metrics` (`metrics.rs`). All of them run on this program's own
//! small runtime, with database calls on its blocking pool; replication
//! runs on the library's runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tidelog::cloud::pg_source::{PgSource, PgSourceStatus};
use tidelog::{Database, Error, PeerStatus};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use super::config::{Config, TableConfig};
use super::reload::ReloadReport;
use super::{admin, admin_socket, metrics, CliError};

/// Log lines go to stderr with this prefix, one event per line, so they are
/// easy to grep in a journal.
macro_rules! log {
    ($($t:tt)*) => { eprintln!("tidelog: {}", format_args!($($t)*)) };
}

/// What the signal loop, the admin socket and `/metrics` share.
pub struct Hub {
    pub db: Database,
    /// The config now running; a reload holds it throughout.
    pub cfg: Mutex<Config>,
    pub config_path: PathBuf,
    /// This node's certificate's expiry (seconds since the epoch), read at
    /// start: the running TLS identity is the one loaded then.
    pub cert_not_after: Option<i64>,
    /// `status_interval_secs` as running, for the status ticker.
    status_interval: watch::Sender<u64>,
    /// `[[sinks]]` as started.
    pub sinks: Mutex<super::sinks::Sinks>,
    /// `[[sources]]`, running on this program's runtime.
    pub sources: Mutex<Vec<PgSource>>,
}

impl Hub {
    /// Re-reads the config and applies it (see `reload.rs`), logging each
    /// line after `who` ("SIGHUP", "reload (admin socket)").
    pub fn reload(&self, who: &str) -> ReloadReport {
        let mut cfg = self.cfg.lock();
        log::info!("{who}: reloading {}", self.config_path.display());
        let report = super::reload::reload(&self.db, &mut cfg, &self.config_path);
        report.log(who);
        let secs = cfg.status_interval_secs;
        self.status_interval.send_if_modified(|v| {
            let changed = *v != secs;
            *v = secs;
            changed
        });
        report
    }
}

pub fn serve(config_path: &Path) -> Result<(), CliError> {
    super::logger::init()?;
    let cfg = Config::load(config_path)?;
    let open = cfg.open_options();
    // A small runtime of our own waits for signals, ticks the status and
    // serves the admin socket and /metrics; replication runs on the
    // library's runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start the signal runtime: {e}")))?;
    // Handlers go in before the database opens, so a SIGTERM during start-up
    // still means "close cleanly" rather than the default "die now".
    let signals = {
        let _enter = rt.enter();
        let install = |kind, name| {
            signal(kind).map_err(|e| CliError::Runtime(format!("cannot handle {name}: {e}")))
        };
        (
            install(SignalKind::terminate(), "SIGTERM")?,
            install(SignalKind::interrupt(), "SIGINT")?,
            install(SignalKind::hangup(), "SIGHUP")?,
        )
    };
    // Before the database: a second serve of the same config is told that
    // another one runs, rather than that the directory is locked.
    let mut socket = admin_socket::bind(&cfg.admin_socket)?;
    let cert_not_after = cfg.tls.as_ref().and_then(|t| {
        metrics::cert_not_after(&t.cert)
            .inspect_err(|e| log::warn!("certificate expiry unknown (no metric for it): {e}"))
            .ok()
    });
    let db = Database::open(&cfg.data_dir, open).map_err(|e| {
        let msg = format!("cannot open data directory {}: {e}", cfg.data_dir.display());
        match e {
            // Values from the file that the library refused: the config's
            // author must act, not the operator of the machine.
            Error::InvalidArgument { .. }
            | Error::NodeNameMismatch { .. }
            | Error::EngineMismatch { .. } => CliError::Config(msg),
            _ => CliError::Runtime(msg),
        }
    })?;
    log!(
        "opened {} as node `{}` (id {:#x}, engine {})",
        cfg.data_dir.display(),
        db.node_name(),
        db.node_id(),
        db.engine().as_str()
    );
    let hub = Arc::new(Hub {
        db: db.clone(),
        status_interval: watch::Sender::new(cfg.status_interval_secs),
        cfg: Mutex::new(cfg),
        config_path: config_path.to_path_buf(),
        cert_not_after,
        sinks: Mutex::new(super::sinks::Sinks::none()),
        sources: Mutex::new(Vec::new()),
    });
    let started = start(&hub.cfg.lock(), &db);
    // Separate: `start` holds the config's lock while it runs.
    let started = started.and_then(|_| start_sources(&hub, rt.handle()));
    let started = started.and_then(|_| {
        let sinks = super::sinks::Sinks::start(&hub.cfg.lock().sinks, &db)?;
        *hub.sinks.lock() = sinks;
        Ok(())
    });
    let outcome = started.and_then(|_| {
        let tasks = rt.block_on(async { spawn_services(&hub, &mut socket) })?;
        log!("ready");
        let ended = rt.block_on(run(&hub, signals));
        for t in tasks {
            t.abort();
        }
        ended
    });
    // Before the close: a sink reads the database until it stops.
    hub.sinks.lock().stop();
    // Before the close: a source's last batch commits or is not applied.
    let sources = std::mem::take(&mut *hub.sources.lock());
    rt.block_on(async {
        for s in sources {
            s.stop().await;
        }
    });
    // Gone before the close: a client now hears "no serve", not silence.
    drop(socket);
    drop(hub);
    // Close on every path: it flushes what was committed and releases the
    // data directory for the next start.
    let closed = db.close();
    let signal = outcome?;
    closed.map_err(|e| CliError::Runtime(format!("closing the database failed: {e}")))?;
    log!("{signal}: database closed, stopped cleanly");
    Ok(())
}

/// The admin socket's server and, if configured, `/metrics`.
fn spawn_services(
    hub: &Arc<Hub>,
    socket: &mut admin_socket::AdminSocket,
) -> Result<Vec<tokio::task::JoinHandle<()>>, CliError> {
    let mut tasks = Vec::new();
    let path = socket.path().display().to_string();
    let listener = socket
        .take_listener()
        .ok_or_else(|| CliError::Runtime("admin socket already in use".into()))?;
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
        .map_err(|e| CliError::Runtime(format!("admin socket {path}: {e}")))?;
    tasks.push(tokio::spawn(admin::serve_admin(
        listener,
        hub.clone(),
        socket.owner,
    )));
    log!("admin socket {path} (owner only)");
    let metrics_addr = hub.cfg.lock().metrics_listen.clone();
    if let Some(addr) = metrics_addr {
        let std_listener = std::net::TcpListener::bind(&addr)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .map_err(|e| CliError::Runtime(format!("cannot serve /metrics on {addr}: {e}")))?;
        let bound = std_listener
            .local_addr()
            .map_err(|e| CliError::Runtime(format!("cannot serve /metrics on {addr}: {e}")))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| CliError::Runtime(format!("cannot serve /metrics on {addr}: {e}")))?;
        tasks.push(tokio::spawn(metrics::serve_metrics(listener, hub.clone())));
        log!("metrics on http://{bound}/metrics");
    }
    Ok(tasks)
}

/// Tables, replication, peers, rules, listener, in that order: a peer's
/// first transaction may already find its tables, and a node dialing in the
/// moment the listener opens (a fleet redialing after a restart) finds its
/// peer entry or rule instead of "not a configured peer" and a backoff.
fn start(cfg: &Config, db: &Database) -> Result<Option<SocketAddr>, CliError> {
    for t in &cfg.tables {
        ensure_table(db, t).map_err(CliError::Config)?;
    }
    let replication = cfg.replication_options().map_err(CliError::Config)?;
    db.start_replication(replication)
        .map_err(|e| CliError::Config(format!("cannot start replication: {e}")))?;
    // Before any peer can link: no acknowledgement of a sunk table goes
    // out before its sink committed it.
    super::sinks::gate(&cfg.sinks, db)?;
    for p in &cfg.peers {
        db.add_peer(p.clone())
            .map_err(|e| CliError::Config(format!("peer `{}`: {e}", p.name)))?;
        log!(
            "peer `{}`: {}",
            p.name,
            match &p.address {
                Some(_) => format!("dialing {}", p.dial_addresses().join(" then ")),
                None => "waiting for it to dial in".into(),
            }
        );
    }
    for rule in &cfg.rules {
        db.add_peer_rule(rule.clone())
            .map_err(|e| CliError::Config(format!("rule `{}`: {e}", rule.name)))?;
        log!(
            "rule `{}`: admitting nodes named `{}`{}",
            rule.name,
            rule.node_name,
            match &rule.cert_dns_name {
                Some(c) => format!(" whose certificate also names `{c}`"),
                None => String::new(),
            }
        );
    }
    let bound = match &cfg.listen {
        Some(addr) => {
            let bound = db
                .listen(addr)
                .map_err(|e| CliError::Runtime(e.to_string()))?;
            log!(
                "listening on {bound} ({})",
                if cfg.insecure {
                    "INSECURE plaintext"
                } else {
                    "mutual TLS"
                }
            );
            Some(bound)
        }
        None => None,
    };
    Ok(bound)
}

/// `[[sources]]`, after the tables exist; each reads as this node.
fn start_sources(hub: &Hub, rt: &tokio::runtime::Handle) -> Result<(), CliError> {
    let configs = hub.cfg.lock().sources.clone();
    for s in configs {
        let cfg = s.pg_config(hub.db.node_name());
        let name = cfg.name();
        let pg_table = cfg.pg_table.clone();
        let source = PgSource::spawn(rt, hub.db.clone(), cfg)
            .map_err(|e| CliError::Config(format!("[[sources]] {e}")))?;
        log!("source `{name}`: reading PostgreSQL table {pg_table}");
        hub.sources.lock().push(source);
    }
    Ok(())
}

/// One line per source: link, resume id, backlog, lag, counts, last error.
pub fn source_line(s: &PgSourceStatus) -> String {
    format!(
        "source `{}` from {} {} | resume id {} backlog {} | lag {} ms | applied {} superseded {} refused {} | reloads {}{} | trimmed {} | reconnects {} | last error: {}",
        s.name,
        if s.pg_table.is_empty() { "-" } else { &s.pg_table },
        if s.connected { "connected" } else { "disconnected" },
        s.resume_id,
        s.backlog,
        s.lag_ms,
        s.applied,
        s.superseded,
        s.refused,
        s.reloads,
        s.last_reload.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        s.trimmed,
        s.reconnects,
        s.last_error.as_deref().unwrap_or("-"),
    )
}

/// Creates table `t` if missing; an existing one with another definition
/// is kept as it is, with a warning.
pub fn ensure_table(db: &Database, t: &TableConfig) -> Result<(), String> {
    let opts = t.options();
    let created = db
        .ensure_table(&t.name, opts.clone())
        .map_err(|e| format!("table `{}`: {e}", t.name))?;
    if created {
        log!("created table `{}`", t.name);
        return Ok(());
    }
    // Definitions are never altered in place (that would rewrite every
    // record); say so rather than silently running with the old one.
    if let Ok(info) = db.describe_table(&t.name) {
        if info.primary_key != opts.primary_key
            || info.indexes != opts.indexes
            || info.expiration != opts.expiration
        {
            log!(
                "warning: table `{}` exists as primary_key = {:?}, indexes = {:?}, expiration = {:?}; the config differs and is ignored for it (drop the table to recreate it)",
                t.name, info.primary_key, info.indexes, info.expiration
            );
        }
    }
    Ok(())
}

fn status_tick(secs: u64) -> Option<tokio::time::Interval> {
    (secs > 0).then(|| tokio::time::interval(Duration::from_secs(secs)))
}

/// Waits for SIGTERM or SIGINT, logging status meanwhile and reloading the
/// config on SIGHUP; returns which signal ended it.
async fn run(
    hub: &Arc<Hub>,
    (mut term, mut int, mut hup): (Signal, Signal, Signal),
) -> Result<&'static str, CliError> {
    let mut interval = hub.status_interval.subscribe();
    let mut tick = status_tick(*interval.borrow_and_update());
    loop {
        let next_tick = async {
            match &mut tick {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => {
                let hub = hub.clone();
                // Its report is logged; nobody else waits for it.
                let _ = tokio::task::spawn_blocking(move || hub.reload("SIGHUP")).await;
            }
            // A reload (either way) changed status_interval_secs.
            Ok(()) = interval.changed() => {
                tick = status_tick(*interval.borrow_and_update());
            }
            _ = next_tick => {
                let hub = hub.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    log_status(&hub.db);
                    for s in hub.sinks.lock().statuses() {
                        log!("{}", super::sinks::status_line(&s));
                    }
                })
                .await;
            }
        }
    }
}

fn log_status(db: &Database) {
    match db.replication_status() {
        Ok(peers) if peers.is_empty() => log!("status: no peers configured"),
        Ok(peers) => {
            let now = now_ms();
            for p in &peers {
                log!("{}", status_line(p, now));
            }
        }
        Err(Error::Closed) => {}
        Err(e) => log!("status unavailable: {e}"),
    }
}

/// One line per peer: link state, sequences, backlog, lag, refusals, table
/// directions, last error.
pub fn status_line(p: &PeerStatus, now_ms: u64) -> String {
    let age = |since: u64| format!("{:.1}s", now_ms.saturating_sub(since) as f64 / 1000.0);
    let link = match (p.connected, p.since_ms) {
        (true, Some(s)) => format!("connected for {}", age(s)),
        (true, None) => "connected".into(),
        (false, Some(s)) => format!("disconnected for {}", age(s)),
        (false, None) => "never connected".into(),
    };
    let tables: Vec<String> = p
        .tables
        .iter()
        .map(|t| {
            let mut dirs = Vec::new();
            // Directions not configured either way are noise, unless the
            // peer tried them and got refused.
            if t.publish || t.outbound.starts_with("refused") {
                dirs.push(format!("out={}", t.outbound));
            }
            if t.subscribe || t.inbound.starts_with("refused") {
                dirs.push(format!("in={}", t.inbound));
            }
            format!("{}[{}]", t.table, dirs.join(","))
        })
        .collect();
    // Refusals either way, by table: `last error` only holds the latest
    // link event.
    let refusals: String = p
        .refusals
        .iter()
        .map(|r| {
            format!(
                " [{} {} x{} {} seq {}]",
                r.table, r.direction, r.count, r.kind, r.seq
            )
        })
        .collect();
    // Bytes on the wire and as encoded: what a metered link costs, and
    // what compression saves.
    let t = &p.traffic;
    let traffic = format!(
        "bytes out {} ({} encoded) in {} ({} encoded), compression {}{}",
        t.bytes_out_wire,
        t.bytes_out_raw,
        t.bytes_in_wire,
        t.bytes_in_raw,
        t.compression.as_deref().unwrap_or("-"),
        t.held
            .as_deref()
            .map(|h| format!(", held by {h}"))
            .unwrap_or_default(),
    );
    format!(
        "peer `{}`{} {link} | sent {} acked {} received {} | backlog {} txns {} bytes{} | lag {} ms | refused {}{refusals} | syncs {} | {traffic} | tables {} | last error: {}",
        p.name,
        p.rule
            .as_deref()
            .map(|r| format!(" (rule `{r}`)"))
            .unwrap_or_default(),
        p.sent_seq,
        p.acked_seq,
        p.received_seq,
        p.backlog_txns,
        p.backlog_bytes,
        if p.resync_needed {
            ", resync needed"
        } else {
            ""
        },
        p.lag_ms,
        p.refused_writes,
        p.syncs_received,
        if tables.is_empty() { "-".into() } else { tables.join(" ") },
        p.last_error.as_deref().unwrap_or("-"),
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
