//! What a JetStream sink is configured with, and the checks on it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::options::DurationOpt;

/// A JetStream sink, as `tidelog serve` configures it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSinkConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (`tls://` for TLS).
    pub url: String,
    /// The stream the messages go to; created when missing (file storage,
    /// the duplicate window below). Default `tidelog`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// First subject token(s): messages go to `<prefix>.<table>.<key>`.
    /// Default `tidelog`.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// The tidelog tables this sink publishes; rows of other tables in a
    /// batch are left out.
    pub tables: Vec<String>,
    /// This hub's name: resume points are kept per hub and sink. Under
    /// `tidelog serve` it may be left out: serve uses `<node name>#<node
    /// id>` (log positions belong to one data directory).
    #[serde(default)]
    pub hub: String,
    /// This sink's name in status and logs, and with `hub` the key of its
    /// resume point: two JetStream sinks of one hub need different names
    /// (e.g. one per table on the same stream). Default `jetstream:<stream>`.
    #[serde(default)]
    pub name: Option<String>,
    /// How long the server remembers message ids to drop republished
    /// writes (a duration; default 2 minutes). Past it, consumers rely on
    /// the stamp guard.
    #[serde(default = "default_window")]
    pub duplicate_window: DurationOpt,
    /// Messages published and not yet acknowledged, at most (1-4096;
    /// default 256).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long to wait for the server (connecting, an acknowledgement, a
    /// stream or KV request) before the batch fails and is retried
    /// (default 5 s).
    #[serde(default = "default_timeout")]
    pub timeout: DurationOpt,
    /// A NATS `.creds` file (JWT and NKey seed), when the server wants one.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// TLS to the server; when set, TLS is required.
    #[serde(default)]
    pub tls: Option<JetStreamTls>,
}

/// TLS files (PEM) for the NATS connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamTls {
    /// CA certificate(s) to trust for the server, besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate, when the server asks for one (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_stream() -> String {
    "tidelog".into()
}
fn default_prefix() -> String {
    "tidelog".into()
}
fn default_window() -> DurationOpt {
    DurationOpt(Duration::from_secs(120))
}
fn default_in_flight() -> usize {
    256
}
fn default_timeout() -> DurationOpt {
    DurationOpt(Duration::from_secs(5))
}

fn is_subject_char(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
}

impl JetStreamSinkConfig {
    /// The name in status and logs: `name`, else `jetstream:<stream>`.
    pub fn sink_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("jetstream:{}", self.stream),
        }
    }

    /// Checks every field; the message names the field and what it takes.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("url: empty; give the NATS server, e.g. `nats://127.0.0.1:4222`".into());
        }
        if self.stream.is_empty()
            || self.stream.len() > 64
            || !self
                .stream
                .chars()
                .all(|c| is_subject_char(c) && c != '/' && c != '\\')
        {
            return Err(format!(
                "stream: `{}` must be 1-64 characters without spaces, `.`, `*`, `>`, `/` or `\\`",
                self.stream
            ));
        }
        if self.subject_prefix.len() > 256
            || self
                .subject_prefix
                .split('.')
                .any(|t| t.is_empty() || !t.chars().all(is_subject_char))
        {
            return Err(format!(
                "subject_prefix: `{}` must be 1-256 characters of `.`-separated non-empty tokens without spaces, `*` or `>`",
                self.subject_prefix
            ));
        }
        if self.tables.is_empty() {
            return Err("tables: empty; name the tidelog tables this sink publishes".into());
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tables {
            crate::local::catalog::validate_table_name(t).map_err(|e| format!("tables: {e}"))?;
            if !seen.insert(t) {
                return Err(format!("tables: `{t}` is listed twice"));
            }
        }
        if self.hub.is_empty() || self.hub.len() > 128 || self.hub.chars().any(char::is_control) {
            return Err(format!(
                "hub: `{}` must be 1-128 characters without control characters (this hub's name)",
                self.hub.escape_debug()
            ));
        }
        if let Some(n) = &self.name {
            if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) {
                return Err(format!(
                    "name: `{}` must be 1-128 characters without control characters",
                    n.escape_debug()
                ));
            }
        }
        let w = self.duplicate_window.0;
        if w < Duration::from_secs(1) || w > Duration::from_secs(7 * 24 * 3600) {
            return Err(format!("duplicate_window: {w:?} must be between 1s and 7d"));
        }
        if !(1..=4096).contains(&self.max_in_flight) {
            return Err(format!(
                "max_in_flight: {} must be between 1 and 4096",
                self.max_in_flight
            ));
        }
        let t = self.timeout.0;
        if t < Duration::from_millis(100) || t > Duration::from_secs(600) {
            return Err(format!("timeout: {t:?} must be between 100ms and 10m"));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("tls: give both `cert` and `key`, or neither".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(v: serde_json::Value) -> Result<JetStreamSinkConfig, String> {
        let cfg: JetStreamSinkConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
        cfg.validate().map(|()| cfg)
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({"url": "nats://127.0.0.1:4222", "tables": ["alerts"], "hub": "hub-1"})
    }

    fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
        let mut v = minimal();
        v[field] = value;
        v
    }

    #[test]
    fn defaults() {
        let cfg = decode(minimal()).expect("minimal config");
        assert_eq!(cfg.stream, "tidelog");
        assert_eq!(cfg.subject_prefix, "tidelog");
        assert_eq!(cfg.duplicate_window.0, Duration::from_secs(120));
        assert_eq!(cfg.max_in_flight, 256);
        assert_eq!(cfg.timeout.0, Duration::from_secs(5));
        assert_eq!(cfg.sink_name(), "jetstream:tidelog");
        let cfg = decode(with("name", "js-alerts".into())).expect("a name");
        assert_eq!(cfg.sink_name(), "js-alerts");
        let cfg = decode(with("duplicate_window", "10m".into())).expect("a unit");
        assert_eq!(cfg.duplicate_window.0, Duration::from_secs(600));
        decode(with("subject_prefix", "org.fleet_1".into())).expect("a two-token prefix");
    }

    #[test]
    fn hostile_fields_are_refused_by_name() {
        let cases = [
            ("url", serde_json::json!(" ")),
            ("stream", "a.b".into()),
            ("stream", "a b".into()),
            ("stream", "a/b".into()),
            ("stream", "".into()),
            ("stream", "s".repeat(65).into()),
            ("subject_prefix", "a.*".into()),
            ("subject_prefix", "a.>".into()),
            ("subject_prefix", "a..b".into()),
            ("subject_prefix", "a b".into()),
            ("subject_prefix", "".into()),
            ("subject_prefix", "p".repeat(257).into()),
            ("tables", serde_json::json!([])),
            ("tables", serde_json::json!(["a b"])),
            ("tables", serde_json::json!(["__sys"])),
            ("tables", serde_json::json!(["t", "t"])),
            ("hub", "".into()),
            ("hub", "a\nb".into()),
            ("hub", "h".repeat(129).into()),
            ("name", "".into()),
            ("name", "a\tb".into()),
            ("duplicate_window", 0.into()),
            ("duplicate_window", "8d".into()),
            ("max_in_flight", 0.into()),
            ("max_in_flight", 4097.into()),
            ("timeout", "10ms".into()),
            ("tls", serde_json::json!({"cert": "c.pem"})),
        ];
        for (field, value) in cases {
            let err = decode(with(field, value.clone())).expect_err(&format!("{field}={value}"));
            assert!(err.starts_with(field), "{field}={value}: {err}");
        }
        let err = decode(with("urls", "x".into())).expect_err("unknown field");
        assert!(err.contains("unknown field `urls`"), "{err}");
        let err = decode(with("max_in_flight", (-1).into())).expect_err("negative");
        assert!(err.contains("invalid value"), "{err}");
    }
}
