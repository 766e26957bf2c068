//! Re-reading the config of a running `tidelog serve` (SIGHUP or `tidelog
//! reload`): what changed is applied at once, what only a restart applies
//! is named, and the outcome comes back as a [`ReloadReport`] that the
//! serve logs and the admin socket returns to `tidelog reload`.
//!
//! Peers added, removed or changed are applied (`add_peer`, `remove_peer`,
//! `update_peer`), and so are `[[rules]]` (`add_peer_rule`,
//! `remove_peer_rule`, `update_peer_rule`); new `[[tables]]` are created and `status_interval_secs`
//! takes effect; settings that only a restart applies (the database
//! options such as `node_name`, `data_dir`, `listen`, the `[tls]` files,
//! `insecure`, `[admin]`, `[metrics]`, `[replication]`) are left as they
//! run. A file that does not parse or check out is refused and the running
//! config stays.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tidelog::{Database, Error};

use super::config::Config;
use super::serve::ensure_table;

/// What one reload did. Each list holds sentences ready to print.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The whole file was refused (it did not parse or check out): why.
    /// Nothing else was looked at; the running config stays.
    pub refused: Option<String>,
    /// Changes now in effect.
    pub applied: Vec<String>,
    /// Changes left as they run: settings only a restart applies, tables
    /// that exist with another definition.
    pub not_applied: Vec<String>,
    /// Changes that failed (the running config keeps the old value).
    pub errors: Vec<String>,
}

impl ReloadReport {
    /// Whether everything in the file now runs.
    pub fn is_clean(&self) -> bool {
        self.refused.is_none() && self.errors.is_empty()
    }

    /// One line per item, as the CLI prints them and the serve logs them.
    pub fn lines(&self) -> Vec<String> {
        if let Some(why) = &self.refused {
            return vec![format!("config refused, the running config stays: {why}")];
        }
        let mut out: Vec<String> = self.not_applied.clone();
        out.extend(self.errors.iter().cloned());
        out.extend(self.applied.iter().cloned());
        out.push(format!(
            "reload done, {} change(s) applied",
            self.applied.len()
        ));
        out
    }

    /// Logs the report, each line after `who` (e.g. "SIGHUP").
    pub fn log(&self, who: &str) {
        if let Some(why) = &self.refused {
            log::error!("{who}: config refused, the running config stays: {why}");
            return;
        }
        for l in &self.not_applied {
            log::warn!("{who}: {l}");
        }
        for l in &self.errors {
            log::error!("{who}: {l}");
        }
        for l in &self.applied {
            log::info!("{who}: {l}");
        }
        log::info!(
            "{who}: reload done, {} change(s) applied",
            self.applied.len()
        );
    }
}

/// Re-reads `path` and applies to the running instance what can change
/// without a restart; `running` becomes what now runs.
pub fn reload(db: &Database, running: &mut Config, path: &Path) -> ReloadReport {
    let mut report = ReloadReport::default();
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            report.refused = Some(e.to_string());
            return report;
        }
    };
    for what in running.restart_only_changes(&new) {
        report.not_applied.push(format!(
            "`{what}` changed in the config but only a restart applies it; still running with the old value"
        ));
    }
    for t in &new.tables {
        if running.tables.iter().any(|r| r.name == t.name) {
            if !running.tables.contains(t) {
                report.not_applied.push(format!(
                    "table `{}` changed in the config; existing tables are never altered (drop the table to recreate it)",
                    t.name
                ));
            }
            continue;
        }
        match ensure_table(db, t) {
            Ok(()) => {
                report.applied.push(format!("added table `{}`", t.name));
                running.tables.push(t.clone());
            }
            Err(e) => report.errors.push(e),
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
                running.peers.retain(|p| p.name != name);
                report.applied.push(format!("removed peer `{name}`"));
            }
            Err(e) => report
                .errors
                .push(format!("cannot remove peer `{name}`: {e}")),
        }
    }
    for p in &new.peers {
        match running.peers.iter().position(|r| r.name == p.name) {
            Some(i) if running.peers[i] == *p => {}
            Some(i) => match db.update_peer(p.clone()) {
                Ok(()) => {
                    running.peers[i] = p.clone();
                    report
                        .applied
                        .push(format!("updated peer `{}` (its link restarts)", p.name));
                }
                Err(e) => report
                    .errors
                    .push(format!("cannot update peer `{}`: {e}", p.name)),
            },
            None => match db.add_peer(p.clone()) {
                Ok(()) => {
                    running.peers.push(p.clone());
                    report.applied.push(format!(
                        "added peer `{}` ({})",
                        p.name,
                        match &p.address {
                            Some(_) => format!("dialing {}", p.dial_addresses().join(" then ")),
                            None => "waiting for it to dial in".into(),
                        }
                    ));
                }
                Err(e) => report
                    .errors
                    .push(format!("cannot add peer `{}`: {e}", p.name)),
            },
        }
    }
    reload_rules(db, running, &new, &mut report);
    if running.status_interval_secs != new.status_interval_secs {
        report.applied.push(format!(
            "status_interval_secs {} -> {}",
            running.status_interval_secs, new.status_interval_secs
        ));
        running.status_interval_secs = new.status_interval_secs;
    }
    report
}

/// The `[[rules]]` part of a reload: removed rules end their admitted
/// peers' links, changed ones restart only theirs, new ones are added
/// (tried after the rules already running).
fn reload_rules(db: &Database, running: &mut Config, new: &Config, report: &mut ReloadReport) {
    let removed: Vec<String> = running
        .rules
        .iter()
        .filter(|r| !new.rules.iter().any(|n| n.name == r.name))
        .map(|r| r.name.clone())
        .collect();
    for name in removed {
        match db.remove_peer_rule(&name) {
            Ok(()) => {
                running.rules.retain(|r| r.name != name);
                report.applied.push(format!("removed rule `{name}` (the peers it admitted are refused from now on; their state stays until forgotten)"));
            }
            Err(e) => report
                .errors
                .push(format!("cannot remove rule `{name}`: {e}")),
        }
    }
    for rule in &new.rules {
        match running.rules.iter().position(|r| r.name == rule.name) {
            Some(i) if running.rules[i] == *rule => {}
            Some(i) => match db.update_peer_rule(rule.clone()) {
                Ok(()) => {
                    running.rules[i] = rule.clone();
                    report.applied.push(format!(
                        "updated rule `{}` (the links of the peers it admitted restart)",
                        rule.name
                    ));
                }
                Err(e) => report
                    .errors
                    .push(format!("cannot update rule `{}`: {e}", rule.name)),
            },
            None => match db.add_peer_rule(rule.clone()) {
                Ok(()) => {
                    running.rules.push(rule.clone());
                    report.applied.push(format!("added rule `{}`", rule.name));
                }
                Err(e) => report
                    .errors
                    .push(format!("cannot add rule `{}`: {e}", rule.name)),
            },
        }
    }
    let order = |rules: &[tidelog::PeerRule]| -> Vec<String> {
        rules.iter().map(|r| r.name.clone()).collect()
    };
    if order(&running.rules) != order(&new.rules) {
        report.not_applied.push(format!(
            "[[rules]] are tried in the order {:?} (rules kept from before first, new ones after); the file's order {:?} applies at the next restart",
            order(&running.rules),
            order(&new.rules)
        ));
    }
}
