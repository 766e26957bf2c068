//! The `tidelog serve` configuration file.
//!
//! A TOML file. Relative paths in it (`data_dir`, the `[tls]` files) are
//! resolved against the directory holding the config file, not the working
//! directory, so a service manager can start `tidelog serve` from anywhere.
//! Unknown keys are refused, so a typo never silently becomes a default.
//!
//! ```toml
//! node_name = "cloud"            # required; the DNS name in this node's certificate
//! data_dir = "data"              # required; created if missing
//! engine = "fjall"               # "fjall" (default) or "sled"; fixed when the directory is created
//! durability = "grouped"         # "grouped" (default) or "sync" (fdatasync every commit)
//! flush_interval_ms = 50         # with "grouped": how often commits are flushed together
//! memory_budget_mib = 64         # storage caches and write buffers (at least 4)
//! max_record_bytes = 1048576     # largest record a write may carry
//! max_clock_skew_secs = 60       # remote stamps further ahead than this are refused
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
//! [replication]                  # optional timers; the defaults suit most links
//! heartbeat_ms = 1000
//! idle_timeout_ms = 5000         # a link that moves nothing this long is dropped
//! connect_timeout_ms = 10000
//! backoff_initial_ms = 200       # first redial delay, doubling up to backoff_max_ms
//! backoff_max_ms = 10000
//! worker_threads = 2
//!
//! [retention]                    # optional; how long the transaction log and tombstones stay
//! log_max_mib = 256              # the log is trimmed, oldest first, to stay under this
//! log_max_age_secs = 604800      # entries older than this go even if a peer still needs them
//! log_min_age_secs = 0           # acknowledged entries stay at least this long
//! tombstone_min_age_secs = 3600  # acknowledged tombstones are purged once this old
//! tombstone_max_age_secs = 2592000  # and all tombstones at this age
//!
//! [[tables]]                     # created at start if missing (never altered if present)
//! name = "thresholds"
//! primary_key = "sensor"         # default "id"
//! indexes = ["kind"]             # default none
//! expiration = 86400             # seconds; default never
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
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tidelog::{Durability, EngineKind, OpenOptions, PeerConfig, ReplicationOptions, TableOptions};

use super::CliError;

/// The whole file. Field docs are in the module documentation above.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub engine: Engine,
    #[serde(default)]
    pub durability: DurabilityMode,
    pub flush_interval_ms: Option<u64>,
    pub memory_budget_mib: Option<u64>,
    pub max_record_bytes: Option<usize>,
    pub max_clock_skew_secs: Option<u64>,
    #[serde(default)]
    pub recover_prefix: bool,
    pub listen: Option<String>,
    #[serde(default = "default_status_interval")]
    pub status_interval_secs: u64,
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub replication: Timers,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// The library's own peer type, so the file says exactly what
    /// `Database::add_peer` takes (it refuses unknown keys too).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

fn default_status_interval() -> u64 {
    10
}

/// `[retention]`: see `tidelog::Retention`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub log_max_mib: Option<u64>,
    pub log_max_age_secs: Option<u64>,
    pub log_min_age_secs: Option<u64>,
    pub tombstone_min_age_secs: Option<u64>,
    pub tombstone_max_age_secs: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Fjall,
    Sled,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    #[default]
    Grouped,
    Sync,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timers {
    pub heartbeat_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    #[serde(default = "default_primary_key")]
    pub primary_key: String,
    #[serde(default)]
    pub indexes: Vec<String>,
    pub expiration: Option<u64>,
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
        }
    }
}

impl Config {
    /// Reads, parses and checks the file; paths come back absolute.
    pub fn load(path: &Path) -> Result<Config, CliError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Config(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "config file {} does not exist: check the --config path",
                    path.display()
                ),
                _ => format!("cannot read config file {}: {e}", path.display()),
            })
        })?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.check()
            .map_err(|why| CliError::Config(format!("{}: {why}", path.display())))?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.data_dir);
        if let Some(t) = &mut self.tls {
            abs(&mut t.cert);
            abs(&mut t.key);
            abs(&mut t.ca);
        }
    }

    /// What serde cannot express: choices that exclude each other, files
    /// that must exist, names listed twice. The library re-checks values
    /// (node names, table names, addresses) with its own messages.
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
        if self.durability == DurabilityMode::Sync && self.flush_interval_ms.is_some() {
            return Err("`flush_interval_ms` only applies to durability = \"grouped\"".into());
        }
        if self.flush_interval_ms == Some(0) {
            return Err("`flush_interval_ms` must be at least 1".into());
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
        Ok(())
    }

    pub fn open_options(&self) -> Result<OpenOptions, CliError> {
        let mut o = OpenOptions::new(self.node_name.clone()).engine(match self.engine {
            Engine::Fjall => EngineKind::Fjall,
            Engine::Sled => EngineKind::Sled,
        });
        o.durability = match self.durability {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Grouped => match self.flush_interval_ms {
                Some(ms) => Durability::Grouped {
                    interval: Duration::from_millis(ms),
                },
                None => Durability::default(),
            },
        };
        if let Some(mib) = self.memory_budget_mib {
            o.memory_budget = mib.checked_mul(1 << 20).ok_or_else(|| {
                CliError::Config(format!("memory_budget_mib = {mib} is too large"))
            })?;
        }
        if let Some(b) = self.max_record_bytes {
            o.max_record_bytes = b;
        }
        if let Some(s) = self.max_clock_skew_secs {
            o.max_clock_skew = Duration::from_secs(s);
        }
        o.recover_prefix = self.recover_prefix;
        let r = &self.retention;
        let secs = Duration::from_secs;
        if let Some(mib) = r.log_max_mib {
            o.retention.log_max_bytes = mib
                .checked_mul(1 << 20)
                .ok_or_else(|| CliError::Config(format!("log_max_mib = {mib} is too large")))?;
        }
        if let Some(s) = r.log_max_age_secs {
            o.retention.log_max_age = Some(secs(s));
        }
        if let Some(s) = r.log_min_age_secs {
            o.retention.log_min_age = secs(s);
        }
        if let Some(s) = r.tombstone_min_age_secs {
            o.retention.tombstone_min_age = secs(s);
        }
        if let Some(s) = r.tombstone_max_age_secs {
            o.retention.tombstone_max_age = secs(s);
        }
        Ok(o)
    }

    pub fn replication_options(&self) -> ReplicationOptions {
        let mut o = match &self.tls {
            Some(t) => ReplicationOptions::mutual_tls(&t.cert, &t.key, &t.ca),
            None => ReplicationOptions::insecure(),
        };
        let t = &self.replication;
        let ms = Duration::from_millis;
        if let Some(v) = t.heartbeat_ms {
            o.heartbeat_interval = ms(v);
        }
        if let Some(v) = t.idle_timeout_ms {
            o.idle_timeout = ms(v);
        }
        if let Some(v) = t.connect_timeout_ms {
            o.connect_timeout = ms(v);
        }
        if let Some(v) = t.backoff_initial_ms {
            o.backoff_initial = ms(v);
        }
        if let Some(v) = t.backoff_max_ms {
            o.backoff_max = ms(v);
        }
        if let Some(v) = t.worker_threads {
            o.worker_threads = v;
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.resolve_paths(Path::new("/etc/tidelog"));
        c.check()?;
        Ok(c)
    }

    #[test]
    fn the_module_doc_example_parses() {
        let example: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!")))
            .collect();
        let mut c: Config = toml::from_str(&example).unwrap();
        c.resolve_paths(Path::new("/etc/tidelog"));
        assert_eq!(c.node_name, "cloud");
        assert_eq!(c.data_dir, Path::new("/etc/tidelog/data"));
        assert_eq!(c.tables[0].options().primary_key, "sensor");
        assert_eq!(c.peers[0].tables.len(), 2);
        assert!(c.peers[0].tables[0].publish && !c.peers[0].tables[0].subscribe);
        assert_eq!(c.replication.idle_timeout_ms, Some(5000));
        // Everything but the example's certificate files checks out.
        let e = c.check().unwrap_err();
        assert!(
            e.contains("/etc/tidelog/pki/cloud.pem does not exist"),
            "{e}"
        );
    }

    #[test]
    fn a_peers_relay_flag_is_read_and_defaults_by_who_dials() {
        let base = "node_name = \"n\"\ndata_dir = \"d\"\ninsecure = true\n";
        let c = parse(&format!(
            "{base}[[peers]]\nname = \"hub\"\naddress = \"h:1\"\n\
             [[peers]]\nname = \"edge\"\n\
             [[peers]]\nname = \"edge-relay\"\nrelays = true\n"
        ))
        .unwrap();
        let accepts: Vec<bool> = c.peers.iter().map(|p| p.accepts_relays()).collect();
        assert_eq!(accepts, [true, false, true]);
        assert_eq!(c.peers[2].relays, Some(true));
    }

    #[test]
    fn examples_cloud_toml_parses() {
        let text = include_str!("../../../../examples/cloud.toml");
        let mut c: Config = toml::from_str(text).unwrap();
        c.resolve_paths(Path::new("/repo/examples"));
        assert_eq!(c.data_dir, Path::new("/repo/examples/cloud-data"));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[1].tables[1].since_ms, Some(1767225600000));
        c.open_options().unwrap();
        // Its certificates are made by the reader, never committed.
        let e = c.check().unwrap_err();
        assert!(e.contains("pki/cloud.pem does not exist"), "{e}");
    }

    #[test]
    fn mistakes_are_refused_with_reasons() {
        let base = "node_name = \"n\"\ndata_dir = \"d\"\n";
        let e = parse(&format!("{base}insecure = true\ndata_dri = \"x\"")).unwrap_err();
        assert!(e.contains("unknown field `data_dri`"), "{e}");
        let e = parse(base).unwrap_err();
        assert!(e.contains("no [tls] section"), "{e}");
        let e = parse(&format!(
            "{base}[tls]\ncert = \"c.pem\"\nkey = \"k\"\nca = \"ca\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("/etc/tidelog/c.pem does not exist"), "{e}");
        let e = parse(&format!("{base}insecure = true\nengine = \"rocks\"")).unwrap_err();
        assert!(e.contains("rocks"), "{e}");
        let e = parse(&format!(
            "{base}insecure = true\n[[peers]]\nname = \"p\"\ntables = [{{ table = \"t\", publsh = true }}]"
        ))
        .unwrap_err();
        assert!(e.contains("publsh"), "{e}");
        let e = parse(&format!(
            "{base}insecure = true\n[[tables]]\nname = \"t\"\n[[tables]]\nname = \"t\""
        ))
        .unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = parse(&format!(
            "{base}insecure = true\ndurability = \"sync\"\nflush_interval_ms = 5"
        ))
        .unwrap_err();
        assert!(e.contains("only applies"), "{e}");
    }
}
