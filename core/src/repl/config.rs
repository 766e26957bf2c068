//! What a caller configures: how links are secured, the engine's
//! settings, and each peer with the tables that flow to and from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::tls::TlsIdentity;
use crate::net::wire::DEFAULT_MAX_FRAME_BYTES;

/// How replication links are secured.
#[derive(Debug, Clone)]
pub enum Security {
    /// TLS 1.3 with mutual authentication: both sides present a certificate
    /// signed by the CA in the identity, naming their node name.
    MutualTls(TlsIdentity),
    /// Plaintext TCP with no authentication at all. For tests and
    /// measurements on a trusted loopback only.
    Insecure,
}

/// Settings of the replication engine.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    pub security: Security,
    /// An idle connection sends a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A connection that receives nothing (not even a heartbeat) for this
    /// long is dropped and, on the dialing side, redialed.
    pub idle_timeout: Duration,
    /// TCP connect plus TLS handshake plus hello must finish within this.
    pub connect_timeout: Duration,
    /// First redial delay; it doubles per failure up to `backoff_max`, with
    /// jitter of up to half the delay either way.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Largest frame accepted from a peer (and sent to it).
    pub max_frame_bytes: usize,
    /// Most transactions read from the log, sent and applied as one batch
    /// (a batch also stops at half of `max_frame_bytes`). Larger batches
    /// mean fewer commits on the receiver, but each is held whole in the
    /// receiver's memory while it applies (decoded, staged, in the engine's
    /// batch, and in every allocator arena that handled it). Measured with
    /// `benches/edge_memory` (a 1,000,000-record catch-up, edge in its own
    /// process, 2 cores, two runs each): with an 8 MiB edge budget, peak
    /// RSS 62-63 MiB at 4,000 per batch, 51-52 MiB at 2,000, 44 MiB at
    /// 1,000, draining at 106-115k, 120-126k and 104k records/s; with the
    /// 64 MiB default, 137k/s at 2,000 against 147-154k/s at 4,000. At low
    /// rates a batch holds what was committed since the last one, so this
    /// does not add latency.
    pub batch_max_txns: usize,
    /// Most transactions sent and not yet acknowledged.
    pub window_txns: u64,
    /// Rows per frame during an initial sync.
    pub sync_chunk_rows: usize,
    /// Threads of the replication runtime.
    pub worker_threads: usize,
}

impl ReplicationOptions {
    pub fn new(security: Security) -> Self {
        ReplicationOptions {
            security,
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            batch_max_txns: 2000,
            window_txns: 50_000,
            sync_chunk_rows: 1000,
            worker_threads: 2,
        }
    }

    /// Mutual TLS from PEM files: this node's certificate chain, its private
    /// key, and the CA bundle that signs every peer.
    pub fn mutual_tls(
        cert_chain: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
        ca: impl Into<std::path::PathBuf>,
    ) -> Self {
        ReplicationOptions::new(Security::MutualTls(TlsIdentity::from_files(
            cert_chain, key, ca,
        )))
    }

    /// Plaintext, unauthenticated links: tests and comparisons only.
    pub fn insecure() -> Self {
        ReplicationOptions::new(Security::Insecure)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let positive = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
        ];
        for (what, d) in positive {
            if d.is_zero() {
                return Err(Error::invalid(what, "must be greater than zero"));
            }
        }
        if self.idle_timeout <= self.heartbeat_interval {
            return Err(Error::invalid(
                "idle_timeout",
                "must be longer than heartbeat_interval, or idle links would be dropped",
            ));
        }
        if self.max_frame_bytes < 64 * 1024 || self.max_frame_bytes > u32::MAX as usize {
            return Err(Error::invalid(
                "max_frame_bytes",
                "must be between 64 KiB and 4 GiB",
            ));
        }
        if self.batch_max_txns == 0 || self.window_txns == 0 || self.sync_chunk_rows == 0 {
            return Err(Error::invalid(
                "batch_max_txns/window_txns/sync_chunk_rows",
                "must be at least 1",
            ));
        }
        if self.worker_threads == 0 {
            return Err(Error::invalid("worker_threads", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which way one table flows between this instance and one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFlow {
    pub table: String,
    /// Send this instance's changes of the table to the peer.
    #[serde(default)]
    pub publish: bool,
    /// Accept the peer's changes of the table.
    #[serde(default)]
    pub subscribe: bool,
    /// With `subscribe`: the initial sync only takes rows changed at or
    /// after this time (ms since the epoch).
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// With `publish`: a backlog of a higher-priority table is sent before
    /// that of a lower one (each table keeps its own order; see the README).
    #[serde(default)]
    pub priority: u8,
    /// With `publish` on a peer with a [`LinkBudget`]: the table is bulk
    /// data and flows only inside the budget's `windows` (always, when the
    /// budget names none).
    #[serde(default)]
    pub bulk: bool,
    /// With `publish`: the table still flows once the link's quota for the
    /// period is spent (alerts), within `max_bytes_per_sec`.
    #[serde(default)]
    pub exempt_from_quota: bool,
    /// With `publish`: writes of a key wait up to this long (ms) before
    /// going out, and only the newest version of the key within that
    /// window is sent; the number passed over shows as `coalesced`.
    /// `None` (the default): every version is sent.
    #[serde(default)]
    pub coalesce_ms: Option<u64>,
    /// With `publish`: only rows this predicate selects go to the peer,
    /// e.g. `site = $peer.name` (grammar: see `local::filter` and the
    /// README). Parsed when the peer or rule is added. A row that stops
    /// matching is deleted at the peer (move-out), one that starts
    /// matching is sent (move-in).
    #[serde(default)]
    pub filter: Option<String>,
    /// With `publish`: only these attributes (and always the key) are sent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

impl TableFlow {
    pub fn publish(table: impl Into<String>) -> Self {
        TableFlow {
            table: table.into(),
            publish: true,
            subscribe: false,
            since_ms: None,
            priority: 0,
            bulk: false,
            exempt_from_quota: false,
            coalesce_ms: None,
            filter: None,
            columns: None,
        }
    }
    pub fn subscribe(table: impl Into<String>) -> Self {
        TableFlow {
            table: table.into(),
            publish: false,
            subscribe: true,
            since_ms: None,
            priority: 0,
            bulk: false,
            exempt_from_quota: false,
            coalesce_ms: None,
            filter: None,
            columns: None,
        }
    }
    /// Sets the priority (higher is sent first).
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }
    /// Sets the initial-sync start time (ms since the epoch).
    pub fn since_ms(mut self, ms: u64) -> Self {
        self.since_ms = Some(ms);
        self
    }
    /// Sets the row filter (see [`TableFlow::filter`]).
    pub fn filter(mut self, predicate: impl Into<String>) -> Self {
        self.filter = Some(predicate.into());
        self
    }
    /// Sets the column list (see [`TableFlow::columns`]).
    pub fn columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }
    /// The parsed filter; the error names the table, the position and
    /// what was expected there.
    pub(crate) fn parsed_filter(&self) -> Result<Option<crate::local::filter::Filter>> {
        let Some(text) = &self.filter else {
            return Ok(None);
        };
        crate::local::filter::Filter::parse(text)
            .map(Some)
            .map_err(|e| in_table(e, &self.table))
    }
    pub fn both(table: impl Into<String>) -> Self {
        TableFlow {
            table: table.into(),
            publish: true,
            subscribe: true,
            since_ms: None,
            priority: 0,
            bulk: false,
            exempt_from_quota: false,
            coalesce_ms: None,
            filter: None,
            columns: None,
        }
    }
}

/// A peer: who it is, whether this instance dials it, and what flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node name (the DNS name in its certificate).
    pub name: String,
    /// `host:port` to dial. Without one, this instance waits for the peer
    /// to dial in (an edge behind a firewall has none configured for it).
    #[serde(default)]
    pub address: Option<String>,
    /// More `host:port`s of the same logical peer (several hubs that all
    /// present a certificate for `name`), tried after `address`, in order,
    /// wrapping. The dialer stays on the address that works and moves on
    /// only when a dial fails or the link drops; the redial backoff grows
    /// once per round of all addresses. Needs `address`; at most
    /// [`MAX_PEER_ADDRESSES`] in all, no duplicates.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub tables: Vec<TableFlow>,
    /// Whether this peer forwards (relays) transactions of other origins
    /// to this instance, i.e. whether this instance accepts from it writes
    /// that another node made. `None` (the default): true for a peer with
    /// an `address` (this instance dials it: a hub), false for one without
    /// (it dials in: an edge). A peer may always send its own writes; no
    /// peer may send writes stamped with this instance's own node id.
    #[serde(default)]
    pub relays: Option<bool>,
    /// What this instance may send to the peer: a rate cap, a quota per
    /// period and the windows when bulk tables flow. `None`: unmetered.
    #[serde(default)]
    pub budget: Option<LinkBudget>,
    /// Frame compression offered to the peer; a link compresses when both
    /// sides offer it. `None`: the default (see [`Compression`]).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// Send an update as the attributes that changed since the version the
    /// peer last had, instead of the whole record. `None`: the default.
    #[serde(default)]
    pub deltas: Option<bool>,
}

/// Frame compression on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Frames go as encoded.
    None,
    /// zstd, at a level chosen for the link's speed.
    Zstd,
}

/// How long a link quota lasts before it is full again (UTC calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Day,
    Month,
}

/// The bytes a link may send (on the wire: after compression, with
/// framing) and when.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBudget {
    /// Most bytes per second sent to the peer; `None`: no cap.
    #[serde(default)]
    pub max_bytes_per_sec: Option<u64>,
    /// Bytes the link may send per `quota_period`; once spent, only
    /// tables with `exempt_from_quota` flow until the next period.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Default: a day.
    #[serde(default)]
    pub quota_period: Option<QuotaPeriod>,
    /// UTC windows `"HH:MM-HH:MM"` (may wrap midnight) when `bulk` tables
    /// flow.
    #[serde(default)]
    pub windows: Vec<String>,
}

impl PeerConfig {
    pub fn new(name: impl Into<String>) -> Self {
        PeerConfig {
            name: name.into(),
            address: None,
            addresses: Vec::new(),
            tables: Vec::new(),
            relays: None,
            budget: None,
            compression: None,
            deltas: None,
        }
    }
    /// Sets whether the peer may relay other origins' writes to this
    /// instance (see [`PeerConfig::relays`]).
    pub fn relays(mut self, relays: bool) -> Self {
        self.relays = Some(relays);
        self
    }
    /// Whether this instance accepts other origins' writes from the peer,
    /// with the default applied.
    pub fn accepts_relays(&self) -> bool {
        self.relays.unwrap_or(self.address.is_some())
    }
    /// Whether updates go to the peer as attribute deltas, with the
    /// default applied: on (a delta costs the write path nothing; see
    /// `repl::deltas`).
    pub fn deltas_on(&self) -> bool {
        self.deltas.unwrap_or(true)
    }
    /// Sets whether updates go to the peer as attribute deltas.
    pub fn deltas(mut self, on: bool) -> Self {
        self.deltas = Some(on);
        self
    }
    /// Sets the frame compression offered to the peer.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = Some(c);
        self
    }
    pub fn address(mut self, addr: impl Into<String>) -> Self {
        self.address = Some(addr.into());
        self
    }
    /// Adds an address of the same logical peer, dialed after `address`
    /// (see [`PeerConfig::addresses`]).
    pub fn also_at(mut self, addr: impl Into<String>) -> Self {
        self.addresses.push(addr.into());
        self
    }
    /// Every address to dial, in dialing order: `address`, then
    /// `addresses`. Empty for a peer that dials in.
    pub fn dial_addresses(&self) -> Vec<String> {
        self.address
            .iter()
            .chain(self.addresses.iter())
            .cloned()
            .collect()
    }
    pub fn table(mut self, flow: TableFlow) -> Self {
        self.tables.push(flow);
        self
    }

    pub(crate) fn validate(&self, own_name: &str) -> Result<()> {
        crate::local::dir::validate_node_name(&self.name)?;
        if self.name == own_name {
            return Err(Error::invalid("peer name", "a node cannot be its own peer"));
        }
        self.validate_addresses()?;
        let wants = self.tables.iter().filter(|t| t.subscribe).count();
        if wants > crate::net::wire::MAX_HELLO_WANTS {
            return Err(Error::invalid(
                "peer tables",
                format!(
                    "{wants} tables subscribed from peer `{}`: at most {} fit in a hello",
                    self.name,
                    crate::net::wire::MAX_HELLO_WANTS
                ),
            ));
        }
        if let Some(b) = &self.budget {
            validate_budget(b)?;
        }
        for (i, t) in self.tables.iter().enumerate() {
            crate::local::catalog::validate_table_name(&t.table)?;
            t.parsed_filter()?;
            if let Some(c) = &t.columns {
                crate::local::filter::validate_columns(c).map_err(|e| in_table(e, &t.table))?;
            }
            if self.tables[..i].iter().any(|o| o.table == t.table) {
                return Err(Error::invalid(
                    "peer tables",
                    format!(
                        "table `{}` is listed twice for peer `{}`",
                        t.table, self.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Most addresses one logical peer may have: enough for any hub cluster,
/// few enough that a round of failed dials stays short.
pub const MAX_PEER_ADDRESSES: usize = 16;

impl PeerConfig {
    fn validate_addresses(&self) -> Result<()> {
        if self.address.is_none() && !self.addresses.is_empty() {
            return Err(Error::invalid(
                "peer addresses",
                format!(
                    "peer `{}` has `addresses` but no `address`: put the first hub in `address`",
                    self.name
                ),
            ));
        }
        let all = self.dial_addresses();
        if all.len() > MAX_PEER_ADDRESSES {
            return Err(Error::invalid(
                "peer addresses",
                format!(
                    "peer `{}` has {} addresses: at most {MAX_PEER_ADDRESSES} (address plus addresses)",
                    self.name,
                    all.len()
                ),
            ));
        }
        for (i, a) in all.iter().enumerate() {
            let field = if i == 0 {
                "peer address"
            } else {
                "peer addresses"
            };
            let ok = a
                .rsplit_once(':')
                .filter(|(host, _)| !host.trim().is_empty())
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_some();
            if !ok {
                return Err(Error::invalid(
                    field,
                    format!("`{a}` must be host:port, e.g. `hub-1.example:7000`"),
                ));
            }
            if all[..i].contains(a) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "`{a}` is listed twice for peer `{}`: list each hub once",
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Names the flow an error of its filter or columns is about.
fn in_table(e: Error, table: &str) -> Error {
    match e {
        Error::InvalidArgument { what, why } if !what.contains('`') => {
            Error::invalid(format!("{what} of table `{table}`"), why)
        }
        e => e,
    }
}

/// Slowest cap accepted: below it a single frame takes many seconds, and
/// heartbeats alone would spend most of it.
pub(crate) const MIN_BYTES_PER_SEC: u64 = 1024;

/// One window, in minutes of the UTC day: `[start, end)`, wrapping midnight
/// when `end <= start`... except `start == end`, which is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    start: u32,
    end: u32,
}

impl Window {
    pub(crate) fn parse(s: &str) -> Result<Window> {
        let bad = |why: &str| {
            Error::invalid(
                "budget window",
                format!("`{s}` {why}: write \"HH:MM-HH:MM\" in UTC, e.g. \"22:00-06:00\""),
            )
        };
        let (a, b) = s.trim().split_once('-').ok_or_else(|| bad("has no `-`"))?;
        let minute = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            // 24:00 is accepted as the end of the day.
            ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
        };
        let start = minute(a).ok_or_else(|| bad("has a start that is not HH:MM"))?;
        let end = minute(b).ok_or_else(|| bad("has an end that is not HH:MM"))?;
        if start == 1440 {
            return Err(bad("starts at 24:00"));
        }
        if start == end % 1440 {
            return Err(bad("is empty (start equals end)"));
        }
        Ok(Window { start, end })
    }

    pub(crate) fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Checks what a budget says; the error names the field and the fix.
pub(crate) fn validate_budget(b: &LinkBudget) -> Result<()> {
    if let Some(r) = b.max_bytes_per_sec {
        if r < MIN_BYTES_PER_SEC {
            return Err(Error::invalid(
                "budget max_bytes_per_sec",
                format!(
                    "{r} bytes/s is below the minimum of {MIN_BYTES_PER_SEC} (1 KiB/s): raise it, or leave it out for no cap"
                ),
            ));
        }
    }
    if b.quota_bytes == Some(0) {
        return Err(Error::invalid(
            "budget quota_bytes",
            "0 would hold every table that is not exempt_from_quota forever: give a positive number of bytes, or leave it out for no quota",
        ));
    }
    for w in &b.windows {
        Window::parse(w)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
