//! The `tidelog serve` configuration file.
//!
//! A TOML file. Relative paths in it (`data_dir`, the `[tls]` files) are
//! resolved against the directory holding the config file, not the working
//! directory, so a service manager can start `tidelog serve` from anywhere.
//! Unknown keys are refused, so a typo never silently becomes a default.
//!
//! The database's options (everything but `data_dir`, `listen`,
//! `status_interval_secs`, `[tls]`, `insecure`, `[[tables]]`, `[[peers]]`
//! and `[[rules]]`) and `[replication]` decode through the library's one
//! options schema (`tidelog::options`), as the bindings' options do: a
//! duration is an integer of milliseconds or a string such as `"250ms"`,
//! `"10s"`, `"7d"`; a size an integer of bytes or `"64MiB"`. The older
//! spellings (`flush_interval_ms`, `memory_budget_mib`,
//! `max_clock_skew_secs`, `heartbeat_ms`, `*_ms`, `log_max_mib`,
//! `*_secs` under `[retention]`) still decode for one release.
//!
//! ```toml
//! node_name = "cloud"            # required; the DNS name in this node's certificate
//! data_dir = "data"              # required; created if missing
//! engine = "fjall"               # "fjall" (default) or "sled"; fixed when the directory is created
//! durability = "grouped"         # "grouped" (default) or "sync" (fdatasync every commit)
//! flush_interval = "50ms"       # with "grouped": how often commits are flushed together
//! memory_budget = "64MiB"       # storage caches and write buffers (4MiB to 1TiB)
//! max_record_bytes = "1MiB"     # largest record a write may carry
//! max_clock_skew = "60s"        # remote stamps further ahead than this are refused
//! recover_prefix = false         # true: open a damaged journal by keeping its valid prefix
//! listen = "0.0.0.0:7000"        # optional: accept peers dialing in here (port 0 = any free port)
//! status_interval_secs = 10      # one status line per peer this often on stderr; 0 = never
//!
//! [tls]                          # required unless `insecure = true`
//! cert = "pki/cloud.pem"         # this node's certificate chain (PEM)
//! key = "pki/cloud.key"          # its private key (PEM)
//! ca = "pki/ca.pem"              # CA bundle that signs every peer (PEM)
//! # insecure = true              # plaintext, no authentication: tests on a trusted loopback only
//!
//! [admin]                        # optional; the local admin socket (`tidelog status`, `peers`, `forget`, `reload`)
//! socket = "data/admin.sock"     # default: admin.sock in data_dir; at most 107 bytes as an absolute path
//!
//! [metrics]                      # optional; off unless given
//! listen = "127.0.0.1:9464"      # OpenMetrics text at GET /metrics on this address
//!
//! [replication]                  # optional timers; the defaults suit most links
//! heartbeat_interval = "1s"
//! idle_timeout = "5s"            # a link that moves nothing this long is dropped
//! connect_timeout = "10s"
//! backoff_initial = "200ms"      # first redial delay, doubling up to backoff_max
//! backoff_max = "10s"
//! worker_threads = 2
//!
//! [retention]                    # optional; how long the transaction log and tombstones stay
//! log_max_bytes = "256MiB"      # the log is trimmed, oldest first, to stay under this
//! log_max_age = "7d"             # entries older than this go even if a peer still needs them
//! log_min_age = 0                # acknowledged entries stay at least this long
//! tombstone_min_age = "1h"       # acknowledged tombstones are purged once this old
//! tombstone_max_age = "30d"      # and all tombstones at this age
//!
//! [[tables]]                     # created at start if missing (never altered if present)
//! name = "thresholds"
//! primary_key = "sensor"         # default "id"
//! indexes = ["kind"]             # default none
//! expiration = 86400             # seconds; default never
//! conflict = "merge"             # "lww" (default), "merge", "keep_local", "resolver"
//!
//! [[peers]]
//! name = "edge-1"                # the peer's node name (its certificate's DNS name)
//! # address = "edge-1.example:7000"  # set to dial the peer; leave out to wait for it to dial in
//! # relays = false               # accept other nodes' writes forwarded by this peer? default: true with an address
//! tables = [
//!   { table = "thresholds", publish = true },       # send our changes to the peer
//!   { table = "alerts", subscribe = true },         # accept the peer's changes
//!   # { table = "x", subscribe = true, since_ms = 1700000000000 }  # initial sync only from then on
//! ]
//!
//! [[rules]]                      # admit nodes the CA signed by name, on first contact; [[peers]] win
//! name = "edges"                 # the rule's id (letters, digits, '-'); rules are tried in file order
//! node_name = "edge-*"           # glob: `*` any run, `?` one character
//! # cert_dns_name = "gateway.fleet.example"  # the certificate must also name this DNS name
//! max_silence = "7d"             # a dormant peer stops holding the log after this; default: until forgotten
//! tables = [
//!   { table = "thresholds", publish = true },
//!   { table = "alerts", subscribe = true },
//! ]
//! # budget, compression, deltas: as for [[peers]]; an admitted peer never relays
//!
//! [[sinks]]                      # optional; the hub's log of some tables into another system
//! kind = "postgres"              # "postgres"; started after the database opens; a reload does not apply changes
//! name = "cloud"                 # default "postgres"; unique per kind; the key of its resume point
//! url = "host=db.internal port=5432 user=tidelog dbname=fleet"  # or postgres://user@host:port/db; no TLS yet
//! # hub = "cloud-1"              # default "<node_name>#<node id>" (positions count per data directory)
//! max_batch_rows = 10000         # log entries per PostgreSQL transaction
//! max_batch_bytes = 8388608      # bytes of log entries per PostgreSQL transaction
//! tables = [
//!   { name = "alerts" },                              # into PostgreSQL table "alerts", created if missing
//!   { name = "events", pg_table = "fleet.events" },  # into another (schema-qualified) table
//! ]
//!
//! [[sources]]                    # a PostgreSQL table edited by SQL feeding a tidelog table
//! kind = "postgres"
//! url = "postgres://tidelog@127.0.0.1:5432/cloud"   # libpq string or URL (no TLS yet)
//! table = "thresholds"           # the tidelog table (under [[tables]] or existing)
//! # pg_table = "cloud.thresholds"  # default: `table`; created with the layout if missing
//! # primary_key = "sensor"       # default: the table's; must equal it
//! # batch_rows = 1000            # changes per applied batch
//! # poll_interval = "1s"         # look for changes this often besides LISTEN/NOTIFY
//! # trim_interval = "10s"        # how often this hub trims the change table
//! # max_age = "7d"               # changes older than this are trimmed even if a hub lacks them
//! # max_rows = 1000000           # and the change table keeps at most this many of the table
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tidelog::options::{self, OpenSettings, ReplicationSettings};
use tidelog::{OpenOptions, PeerConfig, PeerRule, Profile, ReplicationOptions, TableOptions};

use super::sinks::SinkConfig;
use super::CliError;

/// The keys that are about running the server, not about the database;
/// every other top-level key is a database option.
const SERVE_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "status_interval_secs",
    "tls",
    "insecure",
    "replication",
    "tables",
    "peers",
    "rules",
    "admin",
    "metrics",
    "sinks",
    "sources",
];

/// The most bytes of a Unix socket path: `sun_path` holds 108 on Linux,
/// with the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// The admin socket's file name in the data directory unless `[admin]`
/// names another path.
const DEFAULT_SOCKET: &str = "admin.sock";

/// The whole file. Field docs are in the module documentation above.
#[derive(Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: Option<String>,
    pub status_interval_secs: u64,
    pub tls: Option<TlsFiles>,
    pub insecure: bool,
    pub tables: Vec<TableConfig>,
    /// The library's own peer type, so the file says exactly what
    /// `Database::add_peer` takes (it refuses unknown keys too).
    pub peers: Vec<PeerConfig>,
    /// Peer rules, in file order (the order they are tried in).
    pub rules: Vec<PeerRule>,
    /// The admin socket (absolute).
    pub admin_socket: PathBuf,
    /// `[metrics] listen`: where `/metrics` is served; `None`: off.
    pub metrics_listen: Option<String>,
    /// `[[sinks]]`: where the hub's tables go beyond tidelog.
    pub sinks: Vec<SinkConfig>,
    open: OpenOptions,
    /// The database options as written, so a reload can name the ones
    /// that changed (they need a restart).
    open_raw: toml::Table,
    /// `[replication]` as written; decoded once the TLS paths are known.
    replication: toml::Table,
    /// `[[sources]]`, in file order.
    pub sources: Vec<SourceConfig>,
}

/// The server's own part of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeKeys {
    data_dir: PathBuf,
    listen: Option<String>,
    #[serde(default = "default_status_interval")]
    status_interval_secs: u64,
    tls: Option<TlsFiles>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    replication: toml::Table,
    #[serde(default)]
    tables: Vec<TableConfig>,
    #[serde(default)]
    peers: Vec<PeerConfig>,
    #[serde(default)]
    rules: Vec<PeerRule>,
    #[serde(default)]
    admin: AdminKeys,
    metrics: Option<MetricsKeys>,
    #[serde(default)]
    sinks: Vec<SinkConfig>,
    #[serde(default)]
    sources: Vec<SourceConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminKeys {
    socket: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsKeys {
    listen: String,
}

fn default_status_interval() -> u64 {
    10
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    #[serde(default = "default_primary_key")]
    pub primary_key: String,
    #[serde(default)]
    pub indexes: Vec<String>,
    pub expiration: Option<u64>,
    /// `"lww"` (default), `"merge"`, `"keep_local"` or `"resolver"`.
    #[serde(default)]
    pub conflict: tidelog::ConflictPolicy,
    /// See `TableOptions::disk_budget_bytes`.
    #[serde(default)]
    pub disk_budget_bytes: Option<u64>,
    /// `"refuse"` (default) or `"drop_oldest"`.
    #[serde(default)]
    pub on_full: tidelog::OnFull,
}

fn default_primary_key() -> String {
    "id".into()
}

impl TableConfig {
    pub fn options(&self) -> TableOptions {
        TableOptions {
            primary_key: self.primary_key.clone(),
            indexes: self.indexes.clone(),
            expiration: self.expiration,
            conflict: self.conflict,
            disk_budget_bytes: self.disk_budget_bytes,
            on_full: self.on_full,
        }
    }
}

/// The config file's text and the directory its relative paths start
/// from; a missing file's error ends with `missing_hint`.
fn read_file<'a>(path: &'a Path, missing_hint: &str) -> Result<(String, &'a Path), CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Config(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "config file {} does not exist: {missing_hint}",
                path.display()
            ),
            _ => format!("cannot read config file {}: {e}", path.display()),
        })
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((text, base))
}

impl Config {
    /// Reads, parses and checks the file; paths come back absolute.
    pub fn load(path: &Path) -> Result<Config, CliError> {
        let (text, base) = read_file(path, "check the --config path")?;
        Config::parse(&text, base)
            .map_err(|why| CliError::Config(format!("{}: {why}", path.display())))
    }

    /// Parses and checks `text`, resolving relative paths against `base`.
    fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let cfg = Config::decode(text, base)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Parses `text` without the checks that look at files.
    fn decode(text: &str, base: &Path) -> Result<Config, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let (serve, open): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(k, _)| SERVE_KEYS.contains(&k.as_str()));
        let open_raw = open.clone();
        let open: OpenSettings =
            options::decode("option", toml::Value::Table(open)).map_err(|e| e.to_string())?;
        // A hub serves catch-up and fan-out for many edges: the library's
        // small default budget would slow exactly that.
        let open = open
            .to_open_options_with(Profile::Hub)
            .map_err(|e| e.to_string())?;
        let serve: ServeKeys = toml::Value::Table(serve)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        let mut cfg = Config {
            data_dir: serve.data_dir.clone(),
            listen: serve.listen,
            status_interval_secs: serve.status_interval_secs,
            tls: serve.tls,
            insecure: serve.insecure,
            tables: serve.tables,
            peers: serve.peers,
            rules: serve.rules,
            admin_socket: match serve.admin.socket {
                Some(p) => p,
                None => serve.data_dir.join(DEFAULT_SOCKET),
            },
            metrics_listen: serve.metrics.map(|m| m.listen),
            sinks: serve.sinks,
            open,
            open_raw,
            replication: serve.replication,
            sources: serve.sources,
        };
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.data_dir);
        abs(&mut self.admin_socket);
        if let Some(t) = &mut self.tls {
            abs(&mut t.cert);
            abs(&mut t.key);
            abs(&mut t.ca);
        }
    }

    /// What the schema cannot express: choices that exclude each other,
    /// files that must exist, names listed twice. The library re-checks
    /// values (node names, table names, addresses) with its own messages.
    fn check(&self) -> Result<(), String> {
        match (&self.tls, self.insecure) {
            (Some(_), true) => {
                return Err(
                    "both [tls] and `insecure = true` are set: remove one (insecure turns TLS off)"
                        .into(),
                )
            }
            (None, false) => {
                return Err("no [tls] section: add one with cert, key and ca (make development files with `tidelog certs`), or set `insecure = true` for plaintext tests".into())
            }
            (Some(t), false) => {
                for (what, p) in [("cert", &t.cert), ("key", &t.key), ("ca", &t.ca)] {
                    if !p.is_file() {
                        return Err(format!(
                            "[tls] {what} file {} does not exist (relative paths are relative to the config file)",
                            p.display()
                        ));
                    }
                }
            }
            (None, true) => {}
        }
        let mut tables = HashSet::new();
        for t in &self.tables {
            if !tables.insert(t.name.as_str()) {
                return Err(format!("table `{}` is listed twice in [[tables]]", t.name));
            }
        }
        let mut peers = HashSet::new();
        for p in &self.peers {
            if !peers.insert(p.name.as_str()) {
                return Err(format!("peer `{}` is listed twice in [[peers]]", p.name));
            }
        }
        let mut rules = HashSet::new();
        for r in &self.rules {
            if !rules.insert(r.name.as_str()) {
                return Err(format!("rule `{}` is listed twice in [[rules]]", r.name));
            }
            r.validate(&self.open.node_name)
                .map_err(|e| format!("[[rules]] `{}`: {e}", r.name))?;
        }
        super::sinks::check(&self.sinks)?;
        self.replication_options()?;
        check_sources(&self.sources)?;
        let len = self.admin_socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(format!(
                "[admin] socket path {} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}: set a shorter `socket` under [admin] (the default is {DEFAULT_SOCKET} in data_dir)",
                self.admin_socket.display()
            ));
        }
        if let Some(addr) = &self.metrics_listen {
            addr.parse::<std::net::SocketAddr>().map_err(|e| {
                format!("[metrics] listen = {addr:?} is not an address and port such as \"127.0.0.1:9464\": {e}")
            })?;
        }
        Ok(())
    }

    /// The admin socket named by the config file at `path`, for the
    /// commands that talk to a running serve: the file is parsed but not
    /// checked (its certificate files may be readable by the service only).
    pub fn admin_socket_of(path: &Path) -> Result<PathBuf, CliError> {
        let (text, base) = read_file(
            path,
            "check the --config path (or give the socket with --socket PATH)",
        )?;
        Config::decode(&text, base)
            .map(|c| c.admin_socket)
            .map_err(|why| CliError::Config(format!("{}: {why}", path.display())))
    }

    /// The settings of `new` that differ from this (running) config and
    /// that only a restart applies: the database's options (`node_name`,
    /// `engine`, `[retention]`, ...), `data_dir`, `listen`, the `[tls]`
    /// files, `insecure`, `[admin]`, `[metrics]`, `[[sinks]]` and `[replication]`'s timers. One name per
    /// setting, sorted within each section. Peers, tables and `status_interval_secs`
    /// are applied by a reload and are not listed.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        changed_keys("", &self.open_raw, &new.open_raw, &mut changed);
        if self.data_dir != new.data_dir {
            changed.push("data_dir".into());
        }
        if self.listen != new.listen {
            changed.push("listen".into());
        }
        match (&self.tls, &new.tls) {
            (Some(a), Some(b)) => {
                for (what, x, y) in [
                    ("cert", &a.cert, &b.cert),
                    ("key", &a.key, &b.key),
                    ("ca", &a.ca, &b.ca),
                ] {
                    if x != y {
                        changed.push(format!("tls.{what}"));
                    }
                }
            }
            (None, None) => {}
            _ => changed.push("tls".into()),
        }
        if self.insecure != new.insecure {
            changed.push("insecure".into());
        }
        if self.admin_socket != new.admin_socket {
            changed.push("admin.socket".into());
        }
        if self.metrics_listen != new.metrics_listen {
            changed.push("metrics.listen".into());
        }
        // Not reloadable yet: a sink keeps its resume point in its
        // destination, so a restart picks a changed one up where it was.
        if self.sinks != new.sinks {
            changed.push("sinks".into());
        }
        changed_keys(
            "replication.",
            &self.replication,
            &new.replication,
            &mut changed,
        );
        if self.sources != new.sources {
            changed.push("sources".into());
        }
        changed
    }

    pub fn open_options(&self) -> OpenOptions {
        self.open.clone()
    }

    /// `[replication]` with the security of `[tls]` / `insecure`, through
    /// the options schema.
    pub fn replication_options(&self) -> Result<ReplicationOptions, String> {
        let mut r = self.replication.clone();
        for key in ["tls", "insecure"] {
            if r.contains_key(key) {
                return Err(format!(
                    "`{key}` does not belong in [replication]: give it at the top level"
                ));
            }
        }
        match &self.tls {
            Some(t) => {
                let path = |p: &PathBuf| {
                    p.to_str()
                        .map(|s| toml::Value::String(s.into()))
                        .ok_or_else(|| format!("[tls] path {} is not UTF-8", p.display()))
                };
                let mut tls = toml::Table::new();
                tls.insert("cert".into(), path(&t.cert)?);
                tls.insert("key".into(), path(&t.key)?);
                tls.insert("ca".into(), path(&t.ca)?);
                r.insert("tls".into(), toml::Value::Table(tls));
            }
            None => {
                r.insert("insecure".into(), toml::Value::Boolean(self.insecure));
            }
        }
        let settings: ReplicationSettings =
            options::decode("[replication]", toml::Value::Table(r)).map_err(|e| e.to_string())?;
        settings.to_replication_options().map_err(|e| e.to_string())
    }
}

/// `[[sources]]`: where a tidelog table's changes come from besides its
/// peers (issue 19). One block so the sinks' can sit beside it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub url: String,
    pub table: String,
    pub pg_table: Option<String>,
    pub primary_key: Option<String>,
    pub batch_rows: Option<u32>,
    pub poll_interval: Option<options::DurationOpt>,
    pub trim_interval: Option<options::DurationOpt>,
    pub max_age: Option<options::DurationOpt>,
    pub max_rows: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
}

impl SourceConfig {
    /// The library's config for this source, read by the hub `hub`.
    pub fn pg_config(&self, hub: &str) -> tidelog::cloud::pg_source::PgSourceConfig {
        let mut c = tidelog::cloud::pg_source::PgSourceConfig::new(&self.url, &self.table, hub);
        if let Some(t) = &self.pg_table {
            c.pg_table = t.clone();
        }
        c.primary_key = self.primary_key.clone();
        c.batch_rows = self.batch_rows.unwrap_or(c.batch_rows);
        c.poll_interval = self.poll_interval.map_or(c.poll_interval, |d| d.0);
        c.trim_interval = self.trim_interval.map_or(c.trim_interval, |d| d.0);
        c.max_age = self.max_age.map_or(c.max_age, |d| d.0);
        c.max_rows = self.max_rows.unwrap_or(c.max_rows);
        c
    }
}

fn check_sources(sources: &[SourceConfig]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (i, s) in sources.iter().enumerate() {
        let c = s.pg_config("check");
        c.validate().map_err(|e| {
            format!(
                "[[sources]] #{} (table `{}`): {}",
                i + 1,
                s.table,
                e.message
            )
        })?;
        if !seen.insert((c.table.clone(), c.pg_table.clone())) {
            return Err(format!(
                "[[sources]]: table `{}` from `{}` is listed twice",
                c.table, c.pg_table
            ));
        }
    }
    Ok(())
}

/// Appends `prefix` + each key whose value differs between `old` and `new`
/// (added and removed keys included), sorted by name.
fn changed_keys(prefix: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if old.get(k) != new.get(k) {
            out.push(format!("{prefix}{k}"));
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
