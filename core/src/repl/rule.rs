//! Peer rules: which nodes a hub accepts without listing each one, and
//! the settings each such peer gets.
//!
//! A rule matches a dialing node by a glob on its node name (`*` any run
//! of characters, `?` one character) and, optionally, by a second DNS name
//! its certificate must also be valid for (`cert_dns_name`): a CA can then
//! mark a role (e.g. every gateway certificate also names
//! `gateway.fleet.example`), so that a node name alone, which the
//! certificate's owner picked, is not all a rule goes by. The check reuses
//! the webpki name check that already proves the certificate names the
//! node (SubjectAltName DNS; a wildcard SAN such as `*.fleet.example`
//! counts as naming `gateway.fleet.example`).

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::config::{Compression, LinkBudget, PeerConfig, TableFlow};
use crate::error::{Error, Result};

/// Longest node-name glob accepted: a DNS name is at most 253 characters.
const MAX_GLOB_LEN: usize = 253;

/// A rule that admits peers dialing in whose node name matches `node_name`
/// (and whose certificate meets `cert_dns_name`), each with the table flows
/// and link settings given here. Explicit peers ([`PeerConfig`]) win over
/// rules; rules are tried in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRule {
    /// The rule's id: letters, digits and `-`, at most 63.
    pub name: String,
    /// Glob on the dialing node's name: `*` matches any run of characters
    /// (also none), `?` exactly one; everything else itself (case
    /// sensitive, as peer names are).
    pub node_name: String,
    /// A DNS name the peer's certificate must also be valid for, besides
    /// its node name (see the module documentation). `None`: any
    /// certificate the CA signed that names the node.
    #[serde(default)]
    pub cert_dns_name: Option<String>,
    #[serde(default)]
    pub tables: Vec<TableFlow>,
    #[serde(default)]
    pub budget: Option<LinkBudget>,
    #[serde(default)]
    pub compression: Option<Compression>,
    #[serde(default)]
    pub deltas: Option<bool>,
    /// How long an admitted peer that is not connected may hold this
    /// node's log: past it, it no longer counts in the retention floor, so
    /// the log may trim what it has not acknowledged, and when it returns
    /// its tables are resynced. `None`: it holds the log (within the
    /// retention caps) until it returns or is forgotten.
    /// Written as whole milliseconds, which it also reads.
    #[serde(
        default,
        deserialize_with = "crate::options::opt_duration",
        serialize_with = "ms"
    )]
    pub max_silence: Option<Duration>,
}

impl PeerRule {
    pub fn new(name: impl Into<String>, node_name: impl Into<String>) -> Self {
        PeerRule {
            name: name.into(),
            node_name: node_name.into(),
            cert_dns_name: None,
            tables: Vec::new(),
            budget: None,
            compression: None,
            deltas: None,
            max_silence: None,
        }
    }
    pub fn table(mut self, flow: TableFlow) -> Self {
        self.tables.push(flow);
        self
    }
    /// Requires the certificate to also be valid for DNS name `name`.
    pub fn cert_dns_name(mut self, name: impl Into<String>) -> Self {
        self.cert_dns_name = Some(name.into());
        self
    }
    pub fn budget(mut self, b: LinkBudget) -> Self {
        self.budget = Some(b);
        self
    }
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = Some(c);
        self
    }
    pub fn deltas(mut self, on: bool) -> Self {
        self.deltas = Some(on);
        self
    }
    pub fn max_silence(mut self, d: Duration) -> Self {
        self.max_silence = Some(d);
        self
    }

    /// The configuration a peer admitted by this rule runs with: no
    /// address (it dials in) and no relaying (an edge sends only its own
    /// writes).
    pub fn peer_config(&self, node_name: &str) -> PeerConfig {
        PeerConfig {
            name: node_name.to_string(),
            address: None,
            addresses: Vec::new(),
            tables: self.tables.clone(),
            relays: Some(false),
            budget: self.budget.clone(),
            compression: self.compression,
            deltas: self.deltas,
        }
    }

    /// Whether `node` matches the name glob (the certificate is checked
    /// apart, see `cert_ok`).
    pub fn matches_name(&self, node: &str) -> bool {
        glob_matches(&self.node_name, node)
    }

    /// Whether the certificate `der` meets `cert_dns_name` (always true
    /// without one). `None`: no certificate (plaintext links), which meets
    /// no condition.
    pub(crate) fn cert_ok(&self, der: Option<&rustls::pki_types::CertificateDer<'_>>) -> bool {
        match (&self.cert_dns_name, der) {
            (None, _) => true,
            (Some(n), Some(der)) => crate::net::tls::cert_names_node(der, n),
            (Some(_), None) => false,
        }
    }

    /// One line for a refusal: what the rule asks of a node.
    pub(crate) fn describe(&self) -> String {
        match &self.cert_dns_name {
            None => format!("`{}` (node_name `{}`)", self.name, self.node_name),
            Some(c) => format!(
                "`{}` (node_name `{}`, certificate also naming `{c}`)",
                self.name, self.node_name
            ),
        }
    }

    /// Checks the rule as `add_peer_rule` does on node `own_name`; the
    /// error names the field and the fix.
    pub fn validate(&self, own_name: &str) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 63
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::invalid(
                "peer rule name",
                format!("`{n}` must be 1 to 63 letters, digits or '-'"),
            ));
        }
        validate_glob(&self.node_name)
            .map_err(|why| Error::invalid(format!("peer rule `{n}` node_name"), why))?;
        if glob_matches(&self.node_name, own_name) {
            log::warn!(
                target: "tidelog::repl",
                "peer rule `{n}` (node_name `{}`) matches this node's own name `{own_name}`; a node never admits itself",
                self.node_name
            );
        }
        if let Some(c) = &self.cert_dns_name {
            crate::local::dir::validate_node_name(c).map_err(|_| {
                Error::invalid(
                    format!("peer rule `{n}` cert_dns_name"),
                    format!("`{c}` is not a DNS name (letters, digits, '-' and '.')"),
                )
            })?;
        }
        if self.max_silence.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid(
                format!("peer rule `{n}` max_silence"),
                "0 would release every admitted peer's hold on the log the moment it disconnects: give a duration such as \"7d\", or leave it out to hold until forgotten",
            ));
        }
        // The flows, budget are checked as a peer's are; the rule's name stands
        // in for the peer's in the messages.
        self.peer_config(n).validate("")
    }
}

fn ms<S: Serializer>(d: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    d.map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .serialize(s)
}

/// Checks a node-name glob: DNS name characters plus `*` and `?`.
fn validate_glob(g: &str) -> std::result::Result<(), String> {
    if g.is_empty() {
        return Err("is empty and would match no node: write e.g. \"edge-*\", or \"*\" for every node the CA signed".into());
    }
    if g.len() > MAX_GLOB_LEN {
        return Err(format!(
            "is {} characters long; a node name has at most {MAX_GLOB_LEN}",
            g.len()
        ));
    }
    if let Some(c) = g
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '?')))
    {
        return Err(format!(
            "`{g}` holds {c:?}: a glob has letters, digits, '-', '.', '*' (any run) and '?' (one character)"
        ));
    }
    Ok(())
}

/// Glob match of `name` against `pattern` (`*`: any run, `?`: one byte;
/// both are ASCII here). Iterative, with one backtrack point (the last
/// `*`), so hostile patterns such as `*a*a*a*b` cost at most
/// O(pattern × name), never exponential time or deep recursion.
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and retry.
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        for (p, n) in [
            ("edge-*", "edge-1"),
            ("edge-*", "edge-"),
            ("*", "anything.example"),
            ("edge-?", "edge-7"),
            ("*-gw-*.fleet", "eu-gw-12.fleet"),
            ("e*e", "ee"),
            ("**", "x"),
            ("a**b", "ab"),
            ("exact", "exact"),
            ("*a*a*b", "aaaaab"),
        ] {
            assert!(glob_matches(p, n), "{p} should match {n}");
        }
        for (p, n) in [
            ("edge-*", "edge"),
            ("edge-*", "xedge-1"),
            ("edge-?", "edge-12"),
            ("edge-?", "edge-"),
            ("exact", "exact2"),
            ("exact", "Exact"),
            ("*.fleet", "gw.fleet.evil"),
            ("", "x"),
            ("*a*a*b", "aaaaaa"),
        ] {
            assert!(!glob_matches(p, n), "{p} should not match {n}");
        }
        // An empty pattern matches only an empty name, which no node has;
        // validation refuses it anyway.
        assert!(glob_matches("", ""));
    }

    #[test]
    fn hostile_globs_and_names_stay_cheap_and_correct() {
        // Many stars against a long near-miss: quadratic at worst, and
        // this finishes at once (an exponential matcher would not).
        let pattern = "*a".repeat(60) + "b";
        let name = "a".repeat(253);
        assert!(!glob_matches(&pattern, &name));
        let name_b = "a".repeat(252) + "b";
        assert!(glob_matches(&pattern, &name_b));
        assert!(glob_matches("**********", &name));
        assert!(glob_matches(&"?".repeat(253), &name));
        assert!(!glob_matches(&"?".repeat(252), &name));
        // Names with bytes a node name never has still only match by the
        // rules above (they are refused before matching anyway).
        assert!(glob_matches("*", "é/../\0"));
        assert!(!glob_matches("edge-?", "edge-é"));
    }

    #[test]
    fn rules_are_validated_with_reasons() {
        let ok = PeerRule::new("edges", "edge-*").table(TableFlow::publish("t"));
        ok.validate("hub").unwrap();
        let msg = |r: PeerRule| r.validate("hub").unwrap_err().to_string();
        assert!(msg(PeerRule::new("edges", "")).contains("is empty"));
        assert!(msg(PeerRule::new("edges", "edge_*")).contains("'_'"));
        assert!(msg(PeerRule::new("edges", "x".repeat(300))).contains("300 characters"));
        assert!(msg(PeerRule::new("", "e*")).contains("rule name"));
        assert!(msg(PeerRule::new("a b", "e*")).contains("rule name"));
        assert!(msg(PeerRule::new("e", "e*").cert_dns_name("not a name")).contains("cert_dns_name"));
        assert!(msg(PeerRule::new("e", "e*").max_silence(Duration::ZERO)).contains("max_silence"));
        let twice = PeerRule::new("e", "e*")
            .table(TableFlow::publish("t"))
            .table(TableFlow::subscribe("t"));
        assert!(msg(twice).contains("listed twice"));
    }

    #[test]
    fn an_admitted_peer_gets_the_rules_template() {
        let r = PeerRule::new("edges", "edge-*")
            .table(TableFlow::publish("thresholds"))
            .compression(Compression::None)
            .deltas(false);
        let p = r.peer_config("edge-9");
        assert_eq!(p.name, "edge-9");
        assert_eq!(p.address, None);
        assert!(!p.accepts_relays());
        assert_eq!(p.tables, r.tables);
        assert_eq!(p.compression, Some(Compression::None));
        assert_eq!(p.deltas, Some(false));
        assert!(r.matches_name("edge-9") && !r.matches_name("hub"));
    }

    #[test]
    fn a_rule_decodes_with_a_duration_string() {
        let r: PeerRule = serde_json::from_value(serde_json::json!({
            "name": "edges", "node_name": "edge-*", "max_silence": "7d",
            "tables": [{"table": "t", "publish": true}]
        }))
        .unwrap();
        assert_eq!(r.max_silence, Some(Duration::from_secs(7 * 86_400)));
        let e = serde_json::from_value::<PeerRule>(serde_json::json!({
            "name": "edges", "node_name": "edge-*", "max_silnce": "7d"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("max_silnce"), "{e}");
        // Written out (e.g. for an admin listing) and read back the same.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["max_silence"], serde_json::json!(7 * 86_400_000u64));
        assert_eq!(serde_json::from_value::<PeerRule>(v).unwrap(), r);
    }
}
