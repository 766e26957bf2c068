//! One schema for every option a host gives: the C ABI's JSON, Python's
//! keyword arguments, Node's option objects and `tidelog serve`'s TOML all
//! decode through these types, so an option added here works in all four.
//!
//! The unit rule, the same everywhere: a **duration** is an integer of
//! milliseconds or a string with a unit (`"250ms"`, `"10s"`, `"5m"`, `"1h"`,
//! `"7d"`; decimals are fine: `"1.5s"`); a **size** is an integer of bytes
//! or a string with a binary unit (`"512KiB"`, `"64MiB"`, `"1GiB"`, `"100B"`).
//! Unknown keys are refused, and every refusal names the option by its full
//! path (`replication.max_frame_bytes`, `peers[2].relays`) and says what it
//! accepts. Ranges are checked in one place ([`RANGES`]).
//!
//! Older spellings still decode for one release: `*_ms` keys (integer
//! milliseconds, which is what an integer means now anyway), and the TOML
//! file's `memory_budget_mib`, `max_clock_skew_secs`, `log_max_mib` and
//! `*_secs` keys. The README lists them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::{
    Durability, EngineKind, OpenOptions, PeerConfig, PemSource, Profile, ReplicationOptions,
    Retention, Security, TlsIdentity,
};

/// Decodes `T` from any serde format, naming the failing option by its
/// path under `root` (e.g. `open options: retention.log_max_age`).
pub fn decode<'de, D, T>(root: &str, input: D) -> Result<T>
where
    D: Deserializer<'de>,
    D::Error: fmt::Display,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let what = if path == "." {
            root.to_string()
        } else {
            format!("{root}: {path}")
        };
        Error::invalid(what, e.into_inner().to_string())
    })
}

/// [`decode`] from a JSON value (what C, Python and Node hand over).
pub fn from_json<T: de::DeserializeOwned>(root: &str, v: serde_json::Value) -> Result<T> {
    decode(root, v)
}

// ---- units ------------------------------------------------------------------

/// A duration option: integer milliseconds or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOpt(pub Duration);

/// A size option: integer bytes or a string with a binary unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeOpt(pub u64);

const DURATION_SHAPE: &str =
    "a duration: an integer of milliseconds or a string such as \"250ms\", \"10s\", \"5m\", \"1h\", \"7d\"";
const SIZE_SHAPE: &str =
    "a size: an integer of bytes or a string such as \"512KiB\", \"64MiB\", \"1GiB\"";

/// Splits `"1.5s"` into `(1.5, "s")`.
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let n: f64 = num.parse().ok()?;
    n.is_finite().then_some((n, unit.trim()))
}

/// Parses a duration string (`"250ms"`, `"1.5s"`, `"5m"`, `"1h"`, `"7d"`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("`{s}` is not {DURATION_SHAPE}");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let secs_per = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(n * secs_per).map_err(|_| bad())
}

/// Parses a size string (`"100B"`, `"512KiB"`, `"64MiB"`, `"1GiB"`).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("`{s}` is not {SIZE_SHAPE}");
    let (n, unit) = number_and_unit(s).ok_or_else(bad)?;
    let per: f64 = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * per;
    if bytes.fract() != 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Integer-or-string visitor shared by both units.
struct UnitVisitor {
    shape: &'static str,
    parse: fn(&str) -> std::result::Result<u64, String>,
}

impl<'de> Visitor<'de> for UnitVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.shape)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative; expected {}", self.shape)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<u64, E> {
        // JSON from JavaScript has only doubles: whole ones are integers.
        if v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format!("{v} is not {}", self.shape)))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<u64, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

fn duration_ms(s: &str) -> std::result::Result<u64, String> {
    parse_duration(s).map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

impl<'de> Deserialize<'de> for DurationOpt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Strings may carry sub-millisecond parts; keep them.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(DURATION_SHAPE)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Duration, E> {
                Ok(Duration::from_millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Duration, E> {
                UnitVisitor {
                    shape: DURATION_SHAPE,
                    parse: duration_ms,
                }
                .visit_i64(v)
                .map(Duration::from_millis)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Duration, E> {
                UnitVisitor {
                    shape: DURATION_SHAPE,
                    parse: duration_ms,
                }
                .visit_f64(v)
                .map(Duration::from_millis)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V).map(DurationOpt)
    }
}

/// An optional duration field (`#[serde(deserialize_with)]`), in the
/// units of [`DurationOpt`].
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    Option::<DurationOpt>::deserialize(d).map(|o| o.map(|x| x.0))
}

impl<'de> Deserialize<'de> for SizeOpt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            shape: SIZE_SHAPE,
            parse: parse_size,
        })
        .map(SizeOpt)
    }
}

// ---- ranges -------------------------------------------------------------------

/// What a numeric option accepts.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    Duration { min: Duration, max: Duration },
    Size { min: u64, max: u64 },
    Count { min: u64, max: u64 },
}

const MS: Duration = Duration::from_millis(1);
const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const DAY: u64 = 86_400;
const MIB: u64 = 1 << 20;

/// Every numeric option and what it accepts: the one place ranges live.
pub const RANGES: &[(&str, Range)] = &[
    (
        "flush_interval",
        Range::Duration {
            min: MS,
            max: secs(3600),
        },
    ),
    (
        "memory_budget",
        Range::Size {
            min: 4 * MIB,
            max: 1 << 40,
        },
    ),
    (
        "max_record_bytes",
        Range::Size {
            min: 1,
            max: 1 << 30,
        },
    ),
    (
        "max_clock_skew",
        Range::Duration {
            min: MS,
            max: secs(30 * DAY),
        },
    ),
    (
        "expiry_interval",
        Range::Duration {
            min: MS,
            max: secs(DAY),
        },
    ),
    (
        "conflict_log_max_bytes",
        Range::Size {
            min: 0,
            max: 1 << 40,
        },
    ),
    (
        "conflict_log_max_age",
        Range::Duration {
            min: MS,
            max: secs(3650 * DAY),
        },
    ),
    (
        "listener_queue_max",
        Range::Count {
            min: 1,
            max: 1 << 24,
        },
    ),
    (
        "retention.log_max_bytes",
        Range::Size {
            min: MIB,
            max: 1 << 50,
        },
    ),
    (
        "retention.log_max_age",
        Range::Duration {
            min: secs(1),
            max: secs(3650 * DAY),
        },
    ),
    (
        "retention.log_min_age",
        Range::Duration {
            min: Duration::ZERO,
            max: secs(3650 * DAY),
        },
    ),
    (
        "retention.tombstone_min_age",
        Range::Duration {
            min: Duration::ZERO,
            max: secs(3650 * DAY),
        },
    ),
    (
        "retention.tombstone_max_age",
        Range::Duration {
            min: secs(1),
            max: secs(3650 * DAY),
        },
    ),
    (
        "replication.heartbeat_interval",
        Range::Duration {
            min: MS,
            max: secs(3600),
        },
    ),
    (
        "replication.idle_timeout",
        Range::Duration {
            min: MS,
            max: secs(DAY),
        },
    ),
    (
        "replication.connect_timeout",
        Range::Duration {
            min: MS,
            max: secs(3600),
        },
    ),
    (
        "replication.backoff_initial",
        Range::Duration {
            min: MS,
            max: secs(3600),
        },
    ),
    (
        "replication.backoff_max",
        Range::Duration {
            min: MS,
            max: secs(DAY),
        },
    ),
    (
        "replication.max_frame_bytes",
        Range::Size {
            min: 64 << 10,
            max: u32::MAX as u64,
        },
    ),
    (
        "replication.batch_max_txns",
        Range::Count {
            min: 1,
            max: 1_000_000,
        },
    ),
    (
        "replication.window_txns",
        Range::Count {
            min: 1,
            max: 100_000_000,
        },
    ),
    (
        "replication.sync_chunk_rows",
        Range::Count {
            min: 1,
            max: 1_000_000,
        },
    ),
    (
        "replication.worker_threads",
        Range::Count { min: 1, max: 256 },
    ),
];

fn range_of(name: &str) -> Range {
    RANGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .unwrap_or(Range::Count {
            min: 0,
            max: u64::MAX,
        })
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".into(),
        m if m % (DAY as u128 * 1000) == 0 => format!("{}d", m / (DAY as u128 * 1000)),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

fn fmt_size(b: u64) -> String {
    for (unit, per) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if b >= per && b.is_multiple_of(per) {
            return format!("{}{unit}", b / per);
        }
    }
    format!("{b}B")
}

fn out_of_range(name: &str, accepted: String, got: String) -> Error {
    Error::invalid(name, format!("must be {accepted}, got {got}"))
}

/// `v` if it lies within `bounds` (none: unchecked), else an error that
/// says the range and the value in the option's own unit.
fn within<T: PartialOrd + Copy>(
    name: &str,
    v: Option<T>,
    bounds: Option<(T, T)>,
    show: fn(T) -> String,
) -> Result<Option<T>> {
    match (v, bounds) {
        (Some(x), Some((min, max))) if x < min || x > max => Err(out_of_range(
            name,
            format!("between {} and {}", show(min), show(max)),
            show(x),
        )),
        _ => Ok(v),
    }
}

fn checked_duration(name: &str, v: Option<DurationOpt>) -> Result<Option<Duration>> {
    let Range::Duration { min, max } = range_of(name) else {
        return Ok(v.map(|d| d.0));
    };
    within(name, v.map(|d| d.0), Some((min, max)), fmt_duration)
}

fn checked_size(name: &str, v: Option<SizeOpt>) -> Result<Option<u64>> {
    let bounds = match range_of(name) {
        Range::Size { min, max } => Some((min, max)),
        _ => None,
    };
    within(name, v.map(|s| s.0), bounds, fmt_size)
}

fn checked_count(name: &str, v: Option<u64>) -> Result<Option<u64>> {
    let bounds = match range_of(name) {
        Range::Count { min, max } => Some((min, max)),
        _ => None,
    };
    within(name, v, bounds, |n| n.to_string())
}

/// The newer spelling, or the deprecated one converted, not both.
fn one_of<T>(name: &str, new: Option<T>, old_name: &str, old: Option<T>) -> Result<Option<T>> {
    match (new, old) {
        (Some(_), Some(_)) => Err(Error::invalid(
            name,
            format!("given both as `{name}` and as the older `{old_name}`: keep `{name}`"),
        )),
        (n, o) => Ok(n.or(o)),
    }
}

fn mib(name: &str, v: Option<u64>) -> Result<Option<SizeOpt>> {
    v.map(|m| {
        m.checked_mul(MIB)
            .map(SizeOpt)
            .ok_or_else(|| Error::invalid(name, format!("{m} MiB is too large")))
    })
    .transpose()
}

fn secs_opt(v: Option<u64>) -> Option<DurationOpt> {
    v.map(|s| DurationOpt(Duration::from_secs(s)))
}

// ---- open options -------------------------------------------------------------

/// `durability`: `"grouped"` (the default: commits flushed together every
/// `flush_interval`) or `"sync"` (each commit on disk before it returns).
/// The C ABI's older `{"grouped_ms": n}` still decodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurabilitySetting {
    Mode(String),
    Legacy(LegacyGrouped),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyGrouped {
    grouped_ms: DurationOpt,
}

/// How to open a data directory (see [`OpenOptions`] for each field).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSettings {
    pub node_name: Option<String>,
    pub engine: Option<String>,
    pub durability: Option<DurabilitySetting>,
    #[serde(alias = "flush_interval_ms")]
    pub flush_interval: Option<DurationOpt>,
    /// `"edge"` (default, 16 MiB; `tidelog serve`: `"hub"`) or `"hub"`
    /// (64 MiB): the memory budget unless `memory_budget` is given too.
    pub profile: Option<String>,
    pub memory_budget: Option<SizeOpt>,
    pub max_record_bytes: Option<SizeOpt>,
    #[serde(alias = "max_clock_skew_ms")]
    pub max_clock_skew: Option<DurationOpt>,
    #[serde(alias = "expiry_interval_ms")]
    pub expiry_interval: Option<DurationOpt>,
    pub recover_prefix: Option<bool>,
    pub retention: Option<RetentionSettings>,
    /// Bytes the conflict log keeps (0: no conflict log).
    pub conflict_log_max_bytes: Option<SizeOpt>,
    /// Age past which conflict-log entries are dropped.
    pub conflict_log_max_age: Option<DurationOpt>,
    /// Change events queued for listeners before new ones are dropped and
    /// counted (see `ChangeEvent::missed`).
    pub listener_queue_max: Option<u64>,
    /// Deprecated (TOML): `memory_budget` in MiB.
    memory_budget_mib: Option<u64>,
    /// Deprecated (TOML): `max_clock_skew` in seconds.
    max_clock_skew_secs: Option<u64>,
}

/// How long the log and tombstones stay (see [`Retention`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    pub log_max_bytes: Option<SizeOpt>,
    pub log_max_age: Option<DurationOpt>,
    pub log_min_age: Option<DurationOpt>,
    pub tombstone_min_age: Option<DurationOpt>,
    pub tombstone_max_age: Option<DurationOpt>,
    // Deprecated (TOML) spellings.
    log_max_mib: Option<u64>,
    log_max_age_secs: Option<u64>,
    log_min_age_secs: Option<u64>,
    tombstone_min_age_secs: Option<u64>,
    tombstone_max_age_secs: Option<u64>,
}

impl RetentionSettings {
    pub fn to_retention(self) -> Result<Retention> {
        let mut r = Retention::default();
        let max = one_of(
            "retention.log_max_bytes",
            self.log_max_bytes,
            "log_max_mib",
            mib("retention.log_max_mib", self.log_max_mib)?,
        )?;
        if let Some(b) = checked_size("retention.log_max_bytes", max)? {
            r.log_max_bytes = b;
        }
        let pairs = [
            (
                "retention.log_max_age",
                self.log_max_age,
                "log_max_age_secs",
                self.log_max_age_secs,
            ),
            (
                "retention.log_min_age",
                self.log_min_age,
                "log_min_age_secs",
                self.log_min_age_secs,
            ),
            (
                "retention.tombstone_min_age",
                self.tombstone_min_age,
                "tombstone_min_age_secs",
                self.tombstone_min_age_secs,
            ),
            (
                "retention.tombstone_max_age",
                self.tombstone_max_age,
                "tombstone_max_age_secs",
                self.tombstone_max_age_secs,
            ),
        ];
        for (name, new, old_name, old) in pairs {
            let Some(d) = checked_duration(name, one_of(name, new, old_name, secs_opt(old))?)?
            else {
                continue;
            };
            match name {
                "retention.log_max_age" => r.log_max_age = Some(d),
                "retention.log_min_age" => r.log_min_age = d,
                "retention.tombstone_min_age" => r.tombstone_min_age = d,
                _ => r.tombstone_max_age = d,
            }
        }
        Ok(r)
    }
}

impl OpenSettings {
    /// The runtime options; `node_name` must be set.
    pub fn to_open_options(self) -> Result<OpenOptions> {
        self.to_open_options_with(Profile::default())
    }

    /// The runtime options, with `profile`'s budget where the settings name
    /// neither a profile nor a budget (`tidelog serve` keeps `hub`).
    pub fn to_open_options_with(self, profile: Profile) -> Result<OpenOptions> {
        let name = self.node_name.ok_or_else(|| {
            Error::invalid(
                "node_name",
                "is required: this node's name (its certificate's DNS name)",
            )
        })?;
        let mut o = OpenOptions::new(name).profile(profile);
        if let Some(e) = self.engine {
            o.engine = e.parse::<EngineKind>()?;
        }
        let flush = checked_duration("flush_interval", self.flush_interval)?;
        o.durability = match self.durability {
            None => Durability::Grouped {
                interval: flush.unwrap_or(Duration::from_millis(50)),
            },
            Some(DurabilitySetting::Mode(m)) => match (m.as_str(), flush) {
                ("grouped", f) => Durability::Grouped {
                    interval: f.unwrap_or(Duration::from_millis(50)),
                },
                ("sync", None) => Durability::Sync,
                ("sync", Some(_)) => {
                    return Err(Error::invalid(
                        "flush_interval",
                        "only applies to durability \"grouped\"; remove it or use \"grouped\"",
                    ))
                }
                (other, _) => {
                    return Err(Error::invalid(
                        "durability",
                        format!("`{other}` must be \"grouped\" or \"sync\""),
                    ))
                }
            },
            Some(DurabilitySetting::Legacy(l)) => Durability::Grouped {
                interval: checked_duration(
                    "flush_interval",
                    one_of(
                        "flush_interval",
                        flush.map(DurationOpt),
                        "grouped_ms",
                        Some(l.grouped_ms),
                    )?,
                )?
                .unwrap_or(Duration::from_millis(50)),
            },
        };
        if let Some(p) = self.profile {
            o = o.profile(p.parse::<Profile>()?);
        }
        let budget = one_of(
            "memory_budget",
            self.memory_budget,
            "memory_budget_mib",
            mib("memory_budget_mib", self.memory_budget_mib)?,
        )?;
        if let Some(b) = checked_size("memory_budget", budget)? {
            o.memory_budget = b;
        }
        if let Some(b) = checked_size("max_record_bytes", self.max_record_bytes)? {
            o.max_record_bytes = usize::try_from(b)
                .map_err(|_| Error::invalid("max_record_bytes", "is too large for this machine"))?;
        }
        let skew = one_of(
            "max_clock_skew",
            self.max_clock_skew,
            "max_clock_skew_secs",
            secs_opt(self.max_clock_skew_secs),
        )?;
        if let Some(d) = checked_duration("max_clock_skew", skew)? {
            o.max_clock_skew = d;
        }
        if let Some(d) = checked_duration("expiry_interval", self.expiry_interval)? {
            o.expiry_interval = d;
        }
        if let Some(r) = self.recover_prefix {
            o.recover_prefix = r;
        }
        if let Some(b) = checked_size("conflict_log_max_bytes", self.conflict_log_max_bytes)? {
            o.conflict_log_max_bytes = b;
        }
        if let Some(d) = checked_duration("conflict_log_max_age", self.conflict_log_max_age)? {
            o.conflict_log_max_age = d;
        }
        if let Some(r) = self.retention {
            o.retention = r.to_retention()?;
        }
        if let Some(n) = checked_count("listener_queue_max", self.listener_queue_max)? {
            o.listener_queue_max = usize::try_from(n).map_err(|_| {
                Error::invalid("listener_queue_max", "is too large for this machine")
            })?;
        }
        Ok(o)
    }
}

// ---- table options ------------------------------------------------------------

/// How to create a table: `primary_key`, `indexes`, `expiration` (seconds)
/// and `conflict` (`"lww"`, `"merge"`, `"keep_local"`, `"resolver"`), each
/// optional. The same schema as [`crate::TableOptions`]' serde form, with
/// the option path in every refusal.
pub fn table_options(v: serde_json::Value) -> Result<crate::TableOptions> {
    from_json("table options", v)
}

// ---- replication options ------------------------------------------------------

/// `tls`: this node's certificate chain, its key, and the CA bundle, each a
/// PEM file path or PEM text (`cert`/`key`/`ca`; text starting with
/// `-----BEGIN` is taken as PEM), or as text under `cert_pem`/`key_pem`/
/// `ca_pem`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    pub ca_pem: Option<String>,
}

fn pem_source(what: &str, file: Option<String>, pem: Option<String>) -> Result<PemSource> {
    match (file, pem) {
        (Some(f), None) if f.trim_start().starts_with("-----BEGIN") => {
            Ok(PemSource::Pem(f.into_bytes()))
        }
        (Some(f), None) => Ok(PemSource::File(f.into())),
        (None, Some(p)) => Ok(PemSource::Pem(p.into_bytes())),
        _ => Err(Error::invalid(
            format!("replication.tls.{what}"),
            format!("give exactly one of `{what}` (a PEM file path or PEM text) and `{what}_pem` (PEM text)"),
        )),
    }
}

/// The replication engine's settings (see [`ReplicationOptions`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSettings {
    pub tls: Option<TlsSettings>,
    pub insecure: bool,
    #[serde(alias = "heartbeat_ms", alias = "heartbeat_interval_ms")]
    pub heartbeat_interval: Option<DurationOpt>,
    #[serde(alias = "idle_timeout_ms")]
    pub idle_timeout: Option<DurationOpt>,
    #[serde(alias = "connect_timeout_ms")]
    pub connect_timeout: Option<DurationOpt>,
    #[serde(alias = "backoff_initial_ms")]
    pub backoff_initial: Option<DurationOpt>,
    #[serde(alias = "backoff_max_ms")]
    pub backoff_max: Option<DurationOpt>,
    pub max_frame_bytes: Option<SizeOpt>,
    pub batch_max_txns: Option<u64>,
    pub window_txns: Option<u64>,
    pub sync_chunk_rows: Option<u64>,
    pub worker_threads: Option<u64>,
}

impl ReplicationSettings {
    pub fn to_replication_options(self) -> Result<ReplicationOptions> {
        let security = match (self.tls, self.insecure) {
            (Some(t), false) => Security::MutualTls(TlsIdentity {
                cert_chain: pem_source("cert", t.cert, t.cert_pem)?,
                key: pem_source("key", t.key, t.key_pem)?,
                ca: pem_source("ca", t.ca, t.ca_pem)?,
            }),
            (None, true) => Security::Insecure,
            (Some(_), true) => {
                return Err(Error::invalid(
                    "replication.tls",
                    "given with `insecure: true`: keep one (insecure turns TLS off)",
                ))
            }
            (None, false) => {
                return Err(Error::invalid(
                    "replication.tls",
                    "is required: `tls` with cert, key and ca for mutual TLS, or `insecure: true` for plaintext tests",
                ))
            }
        };
        let mut o = ReplicationOptions::new(security);
        let durations = [
            (
                "replication.heartbeat_interval",
                self.heartbeat_interval,
                &mut o.heartbeat_interval,
            ),
            (
                "replication.idle_timeout",
                self.idle_timeout,
                &mut o.idle_timeout,
            ),
            (
                "replication.connect_timeout",
                self.connect_timeout,
                &mut o.connect_timeout,
            ),
            (
                "replication.backoff_initial",
                self.backoff_initial,
                &mut o.backoff_initial,
            ),
            (
                "replication.backoff_max",
                self.backoff_max,
                &mut o.backoff_max,
            ),
        ];
        for (name, v, slot) in durations {
            if let Some(d) = checked_duration(name, v)? {
                *slot = d;
            }
        }
        if let Some(b) = checked_size("replication.max_frame_bytes", self.max_frame_bytes)? {
            o.max_frame_bytes = b as usize;
        }
        let counts = [
            ("replication.batch_max_txns", self.batch_max_txns),
            ("replication.window_txns", self.window_txns),
            ("replication.sync_chunk_rows", self.sync_chunk_rows),
            ("replication.worker_threads", self.worker_threads),
        ];
        for (name, v) in counts {
            let Some(n) = checked_count(name, v)? else {
                continue;
            };
            match name {
                "replication.batch_max_txns" => o.batch_max_txns = n as usize,
                "replication.window_txns" => o.window_txns = n,
                "replication.sync_chunk_rows" => o.sync_chunk_rows = n as usize,
                _ => o.worker_threads = n as usize,
            }
        }
        Ok(o)
    }
}

/// Open options from a host's JSON object (C, Python and Node hand
/// theirs over this way).
pub fn open_from_json(v: serde_json::Value) -> Result<OpenOptions> {
    from_json::<OpenSettings>("open options", v)?.to_open_options()
}

/// Replication options from a host's JSON object.
pub fn replication_from_json(v: serde_json::Value) -> Result<ReplicationOptions> {
    from_json::<ReplicationSettings>("replication options", v)?.to_replication_options()
}

/// A peer from JSON: [`PeerConfig`] is itself the schema (serde, unknown
/// keys refused); this only names the failing field's path.
pub fn peer_from_json(v: serde_json::Value) -> Result<PeerConfig> {
    from_json("peer", v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open(v: serde_json::Value) -> Result<OpenOptions> {
        from_json::<OpenSettings>("open options", v)?.to_open_options()
    }

    fn repl(v: serde_json::Value) -> Result<ReplicationOptions> {
        from_json::<ReplicationSettings>("replication options", v)?.to_replication_options()
    }

    fn message(r: Result<impl fmt::Debug>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    #[test]
    fn durations_are_integer_ms_or_strings_with_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * DAY)));
        for bad in ["", "5", "5 parsecs", "-1s", "1e3s", "s", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let o = open(json!({"node_name": "n", "max_clock_skew": 1500, "expiry_interval": "2s"}))
            .unwrap();
        assert_eq!(o.max_clock_skew, Duration::from_millis(1500));
        assert_eq!(o.expiry_interval, Duration::from_secs(2));
    }

    #[test]
    fn sizes_are_integer_bytes_or_strings_with_a_binary_unit() {
        assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in ["64MB", "64", "1.3B", "-1KiB", "KiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let o = open(json!({"node_name": "n", "memory_budget": "8MiB"})).unwrap();
        assert_eq!(o.memory_budget, 8 * MIB);
    }

    #[test]
    fn a_profile_sets_the_budget_and_an_explicit_budget_wins() {
        let default = open(json!({"node_name": "n"})).unwrap();
        assert_eq!(default.memory_budget, 16 * MIB, "edge is the default");
        // `tidelog serve` defaults to hub; what the settings say still wins.
        let serve =
            |v| from_json::<OpenSettings>("open options", v)?.to_open_options_with(Profile::Hub);
        assert_eq!(
            serve(json!({"node_name": "n"})).unwrap().memory_budget,
            64 * MIB
        );
        let edge = serve(json!({"node_name": "n", "profile": "edge"})).unwrap();
        assert_eq!(edge.memory_budget, 16 * MIB);
        let own = serve(json!({"node_name": "n", "memory_budget": "8MiB"})).unwrap();
        assert_eq!(own.memory_budget, 8 * MIB);
        let edge = open(json!({"node_name": "n", "profile": "edge"})).unwrap();
        assert_eq!(edge.memory_budget, 16 * MIB);
        let hub = open(json!({"node_name": "n", "profile": "hub"})).unwrap();
        assert_eq!(hub.memory_budget, 64 * MIB);
        let both = open(json!({"node_name": "n", "profile": "hub", "memory_budget": "8MiB"}));
        assert_eq!(both.unwrap().memory_budget, 8 * MIB);
        for bad in [json!("server"), json!(""), json!(1)] {
            let m = message(open(json!({"node_name": "n", "profile": bad})));
            assert!(m.contains("profile"), "names the option: {m}");
        }
        let m = message(open(json!({"node_name": "n", "profile": "Edge"})));
        assert!(
            m.contains("\"edge\"") && m.contains("\"hub\""),
            "says what it accepts: {m}"
        );
    }

    #[test]
    fn unknown_options_are_named_with_their_path() {
        let m = message(open(json!({"node_name": "n", "memory_budgit": 1})));
        assert!(
            m.contains("open options") && m.contains("memory_budgit"),
            "{m}"
        );
        assert!(m.contains("memory_budget"), "lists the accepted keys: {m}");
        let m = message(open(json!({"node_name": "n", "retention": {"log_max": 1}})));
        assert!(m.contains("retention") && m.contains("log_max"), "{m}");
        let m = message(repl(
            json!({"insecure": true, "heartbeat_interval": "fast"}),
        ));
        assert!(
            m.contains("heartbeat_interval") && m.contains("\"250ms\""),
            "{m}"
        );
        let m = message(peer_from_json(
            json!({"name": "p", "tables": [{"table": "t", "pubish": true}]}),
        ));
        assert!(m.contains("tables[0]") && m.contains("pubish"), "{m}");
    }

    #[test]
    fn out_of_range_options_say_what_they_accept() {
        let m = message(open(json!({"node_name": "n", "memory_budget": "1MiB"})));
        assert!(
            m.contains("memory_budget")
                && m.contains("between 4MiB and 1TiB")
                && m.contains("got 1MiB"),
            "{m}"
        );
        let m = message(open(
            json!({"node_name": "n", "retention": {"log_max_age": "0ms"}}),
        ));
        assert!(
            m.contains("retention.log_max_age") && m.contains("between 1s and"),
            "{m}"
        );
        let m = message(repl(json!({"insecure": true, "worker_threads": 0})));
        assert!(
            m.contains("replication.worker_threads") && m.contains("between 1 and 256"),
            "{m}"
        );
        let m = message(repl(json!({"insecure": true, "max_frame_bytes": "1KiB"})));
        assert!(
            m.contains("max_frame_bytes") && m.contains("between 64KiB"),
            "{m}"
        );
        let m = message(open(json!({"node_name": "n", "max_clock_skew": -5})));
        assert!(
            m.contains("max_clock_skew") && m.contains("negative"),
            "{m}"
        );
    }

    #[test]
    fn table_conflict_policy_decodes_by_name_and_bad_ones_name_the_option() {
        let t = table_options(json!({"primary_key": "k", "conflict": "merge"})).unwrap();
        assert_eq!(t.conflict, crate::ConflictPolicy::MergeAttributes);
        assert_eq!(
            table_options(json!({})).unwrap().conflict,
            crate::ConflictPolicy::LastWriterWins
        );
        let m = message(table_options(json!({"conflict": "newest"})));
        assert!(m.contains("conflict") && m.contains("keep_local"), "{m}");
        let o = from_json::<OpenSettings>(
            "o",
            json!({"node_name": "n", "conflict_log_max_bytes": "1MiB", "conflict_log_max_age": "1d"}),
        )
        .unwrap()
        .to_open_options()
        .unwrap();
        assert_eq!(o.conflict_log_max_bytes, 1 << 20);
        assert_eq!(o.conflict_log_max_age, Duration::from_secs(86_400));
    }

    #[test]
    fn every_ranged_option_is_a_real_option() {
        // A typo in RANGES would leave an option unchecked.
        let open_keys = [
            "flush_interval",
            "memory_budget",
            "max_record_bytes",
            "max_clock_skew",
            "expiry_interval",
            "conflict_log_max_bytes",
            "conflict_log_max_age",
            "listener_queue_max",
        ];
        for (name, _) in RANGES {
            let leaf = name.rsplit('.').next().unwrap_or(name);
            let ok = if let Some(rest) = name.strip_prefix("retention.") {
                from_json::<RetentionSettings>("r", json!({ rest: "1s" })).is_ok()
                    || from_json::<RetentionSettings>("r", json!({ rest: 1 })).is_ok()
            } else if name.starts_with("replication.") {
                from_json::<ReplicationSettings>("r", json!({ leaf: 1 })).is_ok()
            } else {
                open_keys.contains(name)
                    && from_json::<OpenSettings>("o", json!({ leaf: 1 })).is_ok()
            };
            assert!(ok, "{name} is in RANGES but not in the schema");
        }
    }

    #[test]
    fn older_spellings_still_decode_in_their_units() {
        let o = open(json!({
            "node_name": "n",
            "max_clock_skew_ms": 2000,
            "expiry_interval_ms": 10,
            "memory_budget_mib": 16,
            "durability": {"grouped_ms": 20},
            "retention": {"log_max_mib": 2, "tombstone_min_age_secs": 5}
        }))
        .unwrap();
        assert_eq!(o.max_clock_skew, Duration::from_secs(2));
        assert_eq!(o.expiry_interval, Duration::from_millis(10));
        assert_eq!(o.memory_budget, 16 * MIB);
        assert_eq!(
            o.durability,
            Durability::Grouped {
                interval: Duration::from_millis(20)
            }
        );
        assert_eq!(o.retention.log_max_bytes, 2 * MIB);
        assert_eq!(o.retention.tombstone_min_age, Duration::from_secs(5));
        let o = open(json!({"node_name": "n", "max_clock_skew_secs": 3})).unwrap();
        assert_eq!(o.max_clock_skew, Duration::from_secs(3));
        let m = message(open(
            json!({"node_name": "n", "memory_budget": "8MiB", "memory_budget_mib": 8}),
        ));
        assert!(m.contains("keep `memory_budget`"), "{m}");
        let r =
            repl(json!({"insecure": true, "heartbeat_ms": 100, "idle_timeout_ms": 900})).unwrap();
        assert_eq!(r.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(r.idle_timeout, Duration::from_millis(900));
    }

    #[test]
    fn durability_and_security_choices() {
        let o = open(json!({"node_name": "n", "durability": "sync"})).unwrap();
        assert_eq!(o.durability, Durability::Sync);
        let m = message(open(
            json!({"node_name": "n", "durability": "sync", "flush_interval": 5}),
        ));
        assert!(m.contains("flush_interval"), "{m}");
        let m = message(open(json!({"node_name": "n", "durability": "eventually"})));
        assert!(m.contains("durability") && m.contains("\"sync\""), "{m}");
        let m = message(open(json!({})));
        assert!(m.contains("node_name"), "{m}");
        let m = message(repl(json!({})));
        assert!(m.contains("insecure"), "{m}");
        let m = message(repl(
            json!({"insecure": true, "tls": {"cert": "a", "key": "b", "ca": "c"}}),
        ));
        assert!(m.contains("keep one"), "{m}");
        let r = repl(json!({"tls": {"cert": "-----BEGIN CERTIFICATE-----\n", "key": "k.pem", "ca_pem": "x"}}))
            .unwrap();
        let Security::MutualTls(id) = r.security else {
            panic!("tls expected")
        };
        assert!(matches!(id.cert_chain, PemSource::Pem(_)));
        assert!(matches!(id.key, PemSource::File(_)));
        assert!(matches!(id.ca, PemSource::Pem(_)));
    }
}
