//! `tidelog serve`: one instance run from a config file until a signal.
//!
//! SIGTERM and SIGINT close the database and stop. SIGHUP re-reads the
//! config file: peers added, removed or changed are applied at run time
//! (`add_peer`, `remove_peer`, `update_peer`), new `[[tables]]` are
//! created and `status_interval_secs` takes effect; settings that only a
//! restart applies (the database options such as `node_name`, `data_dir`,
//! `listen`, the `[tls]` files, `insecure`, `[replication]`) are left as
//! they run, with one warning naming each. A file that does not parse or
//! check out is refused with an error and the running config stays.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tidelog::{Database, Error, PeerStatus};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::config::{Config, TableConfig};
use super::CliError;

/// Log lines go to stderr with this prefix, one event per line, so they are
/// easy to grep in a journal.
macro_rules! log {
    ($($t:tt)*) => { eprintln!("tidelog: {}", format_args!($($t)*)) };
}

pub fn serve(config_path: &Path) -> Result<(), CliError> {
    super::logger::init()?;
    let mut cfg = Config::load(config_path)?;
    let open = cfg.open_options();
    // A small runtime of our own only waits for signals and ticks the
    // status; replication runs on the library's runtime.
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
    let outcome = start(&cfg, &db).and_then(|_| {
        log!("ready");
        rt.block_on(run(&db, &mut cfg, config_path, signals))
    });
    // Close on every path: it flushes what was committed and releases the
    // data directory for the next start.
    let closed = db.close();
    let signal = outcome?;
    closed.map_err(|e| CliError::Runtime(format!("closing the database failed: {e}")))?;
    log!("{signal}: database closed, stopped cleanly");
    Ok(())
}

/// Tables, replication, listener, peers, in that order: a peer's first
/// transaction may already find its tables.
fn start(cfg: &Config, db: &Database) -> Result<Option<SocketAddr>, CliError> {
    for t in &cfg.tables {
        ensure_table(db, t).map_err(CliError::Config)?;
    }
    let replication = cfg.replication_options().map_err(CliError::Config)?;
    db.start_replication(replication)
        .map_err(|e| CliError::Config(format!("cannot start replication: {e}")))?;
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
    for p in &cfg.peers {
        db.add_peer(p.clone())
            .map_err(|e| CliError::Config(format!("peer `{}`: {e}", p.name)))?;
        log!(
            "peer `{}`: {}",
            p.name,
            match &p.address {
                Some(a) => format!("dialing {a}"),
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
    Ok(bound)
}

/// Creates table `t` if missing; an existing one with another definition
/// is kept as it is, with a warning.
fn ensure_table(db: &Database, t: &TableConfig) -> Result<(), String> {
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
    db: &Database,
    cfg: &mut Config,
    config_path: &Path,
    (mut term, mut int, mut hup): (Signal, Signal, Signal),
) -> Result<&'static str, CliError> {
    let mut tick = status_tick(cfg.status_interval_secs);
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
                let secs = cfg.status_interval_secs;
                reload(db, cfg, config_path);
                if cfg.status_interval_secs != secs {
                    tick = status_tick(cfg.status_interval_secs);
                }
            }
            _ = next_tick => log_status(db),
        }
    }
}

/// SIGHUP: re-reads `path` and applies to the running instance what can
/// change without a restart; `running` becomes what now runs.
fn reload(db: &Database, running: &mut Config, path: &Path) {
    log::info!("SIGHUP: reloading {}", path.display());
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            log::error!("SIGHUP: config refused, the running config stays: {e}");
            return;
        }
    };
    let mut applied = 0usize;
    for what in running.restart_only_changes(&new) {
        log::warn!(
            "SIGHUP: `{what}` changed in the config but only a restart applies it; still running with the old value"
        );
    }
    for t in &new.tables {
        if running.tables.iter().any(|r| r.name == t.name) {
            if !running.tables.contains(t) {
                log::warn!(
                    "SIGHUP: table `{}` changed in the config; existing tables are never altered (drop the table to recreate it)",
                    t.name
                );
            }
            continue;
        }
        match ensure_table(db, t) {
            Ok(()) => {
                applied += 1;
                running.tables.push(t.clone());
            }
            Err(e) => log::error!("SIGHUP: {e}"),
        }
    }
    // Removed first, so a peer renamed in the file never runs twice.
    let removed: Vec<String> = running
        .peers
        .iter()
        .filter(|p| !new.peers.iter().any(|n| n.name == p.name))
        .map(|p| p.name.clone())
        .collect();
    for name in removed {
        match db.remove_peer(&name) {
            Ok(()) | Err(Error::PeerNotFound(_)) => {
                applied += 1;
                running.peers.retain(|p| p.name != name);
                log::info!("SIGHUP: removed peer `{name}`");
            }
            Err(e) => log::error!("SIGHUP: cannot remove peer `{name}`: {e}"),
        }
    }
    for p in &new.peers {
        match running.peers.iter().position(|r| r.name == p.name) {
            Some(i) if running.peers[i] == *p => {}
            Some(i) => match db.update_peer(p.clone()) {
                Ok(()) => {
                    applied += 1;
                    running.peers[i] = p.clone();
                    log::info!("SIGHUP: updated peer `{}` (its link restarts)", p.name);
                }
                Err(e) => log::error!("SIGHUP: cannot update peer `{}`: {e}", p.name),
            },
            None => match db.add_peer(p.clone()) {
                Ok(()) => {
                    applied += 1;
                    running.peers.push(p.clone());
                    log::info!(
                        "SIGHUP: added peer `{}` ({})",
                        p.name,
                        match &p.address {
                            Some(a) => format!("dialing {a}"),
                            None => "waiting for it to dial in".into(),
                        }
                    );
                }
                Err(e) => log::error!("SIGHUP: cannot add peer `{}`: {e}", p.name),
            },
        }
    }
    applied += reload_rules(db, running, &new);
    if running.status_interval_secs != new.status_interval_secs {
        applied += 1;
        log::info!(
            "SIGHUP: status_interval_secs {} -> {}",
            running.status_interval_secs,
            new.status_interval_secs
        );
        running.status_interval_secs = new.status_interval_secs;
    }
    log::info!("SIGHUP: reload done, {applied} change(s) applied");
}

/// The `[[rules]]` part of a reload: removed rules end their admitted
/// peers' links, changed ones restart only theirs, new ones are added
/// (tried after the rules already running). Returns the changes applied.
fn reload_rules(db: &Database, running: &mut Config, new: &Config) -> usize {
    let mut applied = 0;
    let removed: Vec<String> = running
        .rules
        .iter()
        .filter(|r| !new.rules.iter().any(|n| n.name == r.name))
        .map(|r| r.name.clone())
        .collect();
    for name in removed {
        match db.remove_peer_rule(&name) {
            Ok(()) => {
                applied += 1;
                running.rules.retain(|r| r.name != name);
                log::info!("SIGHUP: removed rule `{name}` (the peers it admitted are refused from now on; their state stays until forgotten)");
            }
            Err(e) => log::error!("SIGHUP: cannot remove rule `{name}`: {e}"),
        }
    }
    for rule in &new.rules {
        match running.rules.iter().position(|r| r.name == rule.name) {
            Some(i) if running.rules[i] == *rule => {}
            Some(i) => match db.update_peer_rule(rule.clone()) {
                Ok(()) => {
                    applied += 1;
                    running.rules[i] = rule.clone();
                    log::info!(
                        "SIGHUP: updated rule `{}` (the links of the peers it admitted restart)",
                        rule.name
                    );
                }
                Err(e) => log::error!("SIGHUP: cannot update rule `{}`: {e}", rule.name),
            },
            None => match db.add_peer_rule(rule.clone()) {
                Ok(()) => {
                    applied += 1;
                    running.rules.push(rule.clone());
                    log::info!("SIGHUP: added rule `{}`", rule.name);
                }
                Err(e) => log::error!("SIGHUP: cannot add rule `{}`: {e}", rule.name),
            },
        }
    }
    let order = |rules: &[tidelog::PeerRule]| -> Vec<String> {
        rules.iter().map(|r| r.name.clone()).collect()
    };
    if order(&running.rules) != order(&new.rules) {
        log::warn!(
            "SIGHUP: [[rules]] are tried in the order {:?} (rules kept from before first, new ones after); the file's order {:?} applies at the next restart",
            order(&running.rules),
            order(&new.rules)
        );
    }
    applied
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
