//! The fleet simulator: thousands of edges against ONE real hub, on
//! 127.0.0.1, over real mutual TLS with real certificates.
//!
//! - The hub is the crate's own `tidelog serve` binary, started as a
//!   separate process with a generated config ([`hub::hub_config`]: one
//!   peer rule admits every edge on first contact). Its memory and CPU are read
//!   from /proc, so they are the hub's alone.
//! - A fleet CA is made at run time; the hub, the operator and every edge
//!   get a certificate of their own (ECDSA P-256) naming them.
//! - Each edge is a *lean edge* ([`edge`]): one tokio task (plus a
//!   committer task) on the simulator's one runtime. A `Database` per edge
//!   costs storage-engine threads and a runtime each, which 10,000 of on
//!   2 cores would measure the simulator rather than the hub.
//! - Thresholds are written by an operator: a real in-process `Database`,
//!   an explicit peer of the hub that publishes `thresholds` to it; the hub
//!   relays them to every edge.
//!
//! Why the lean edge is faithful: it dials with `tidelog::net::tls::connect`
//! and a client config from the library's `TlsIdentity` (TLS 1.3, ring,
//! ALPN, the hub verifying its certificate against the fleet CA and the
//! name it claims), and speaks only `tidelog::net::wire` frames and
//! messages: the same hello (its own node id, `wants` for `thresholds`
//! with resume points), `TableInfo` and an initial sync of `alerts`,
//! `TxnsUpTo` frames of stamped transactions whose origin is its node id,
//! an `Ack` for every frame of the hub's, heartbeats, redials with jittered
//! backoff. The hub cannot tell it from a `Database` edge: every frame goes
//! through the hub's accept loop, peer lookup, receiver (apply + cursor in
//! one commit, then the acknowledgement) and sender (fan-out of every
//! commit, initial sync, progress), which is the code measured. What it
//! skips is the edge's own storage: its log and its copy of the thresholds
//! live in memory ("applied" on the edge is an in-memory map), and the
//! log is never trimmed, so after a hub restart it can resend whatever
//! the hub's resume point asks for.
//!
//! Measurements: hub start with N peers configured; time until all N are
//! connected (all dialing at once); hub RSS with N idle links and per
//! link (over the RSS with none connected); hub CPU while idle
//! (heartbeats); a threshold written on the operator, time to reach every
//! edge (p50/p99/max), idle and under load; one alert per edge per second:
//! lag edge commit -> hub acknowledgement (the hub acknowledges a frame
//! only after applying it, so this is commit -> applied at the hub plus
//! one loopback hop), hub CPU per transaction (utime + stime over the
//! window / alerts acknowledged in it); two reconnect storms: every edge
//! drops its connection at once, and the hub is killed (SIGKILL) and
//! restarted with alerts still being committed: time until every edge is
//! up again, hub peak RSS meanwhile. After draining, the hub is stopped and
//! its data directory opened: every alert every edge committed must be one
//! row and exactly one log entry (`log_min_age` keeps the log).
//!
//! Usage: `cargo bench -p tidelog --bench fleet` (see `benches/fleet.rs`
//! for its environment variables), and the short form with assertions on
//! correctness only: `cargo test -p tidelog --test fleet_sim`.
#![allow(dead_code)]

pub mod edge;
pub mod hub;
pub mod pki;
pub mod run;
pub mod state;

use std::fmt::Write as _;
use std::time::Duration;

pub use run::run;

/// What to run.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub n: usize,
    /// Length of the window at one alert per edge per second.
    pub steady: Duration,
    pub storms: bool,
    /// The simulator's runtime threads (the hub runs its own).
    pub worker_threads: usize,
    /// Wait after all connected before the idle measurement, and its length.
    pub settle: Duration,
    pub idle_window: Duration,
    pub hub_start_limit: Duration,
    pub connect_limit: Duration,
    pub threshold_limit: Duration,
    pub storm_limit: Duration,
    pub drain_limit: Duration,
}

impl FleetOptions {
    pub fn new(n: usize) -> FleetOptions {
        FleetOptions {
            n,
            steady: Duration::from_secs(20),
            storms: true,
            worker_threads: 2,
            settle: Duration::from_secs(3),
            idle_window: Duration::from_secs(5),
            hub_start_limit: Duration::from_secs(300),
            connect_limit: Duration::from_secs(300),
            threshold_limit: Duration::from_secs(120),
            storm_limit: Duration::from_secs(300),
            drain_limit: Duration::from_secs(300),
        }
    }
}

/// p50 / p99 / max of a sample, and how many of `want` arrived.
#[derive(Clone, Debug, Default)]
pub struct Spread {
    pub count: usize,
    pub want: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(mut v: Vec<Duration>, want: usize) -> Spread {
        v.sort();
        let at = |p: f64| {
            if v.is_empty() {
                Duration::ZERO
            } else {
                v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        Spread {
            count: v.len(),
            want,
            p50: at(0.50),
            p99: at(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }

    pub fn complete(&self) -> bool {
        self.count >= self.want
    }

    fn show(&self) -> String {
        let s = format!("{} / {} / {}", ms(self.p50), ms(self.p99), ms(self.max));
        if self.complete() {
            s
        } else {
            format!("{s} ({} of {})", self.count, self.want)
        }
    }
}

/// The hub's data after the run.
#[derive(Clone, Debug, Default)]
pub struct Check {
    pub edges_reported: usize,
    pub edges_with_all_thresholds: usize,
    pub threshold_repeats: u64,
    pub hub_stopped_cleanly: bool,
    /// Alerts the edges committed.
    pub expected: u64,
    /// Rows in the hub's `alerts`.
    pub rows: u64,
    /// Committed alerts with no log entry at the hub.
    pub missing: u64,
    /// Alerts with more than one log entry at the hub.
    pub twice: u64,
    pub log_first: u64,
    pub error: Option<String>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub n: usize,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub hub_nofile: Option<u64>,
    pub cert_gen: Duration,
    pub hub_start: Duration,
    pub rss_ready_kib: u64,
    pub all_connected: Option<Duration>,
    pub connected: usize,
    pub sim_connect_cpu: Option<Duration>,
    pub base_threshold: Option<Duration>,
    pub idle_cpu_pct: Option<f64>,
    pub rss_idle_kib: u64,
    pub fds_idle: Option<usize>,
    pub thr_idle: Spread,
    pub thr_load: Spread,
    /// Whether the load phase ran (a 0 s window skips it).
    pub steady_ran: bool,
    pub steady_window: Duration,
    pub steady_committed: u64,
    pub steady_acked: u64,
    pub steady_cpu_pct: Option<f64>,
    pub cpu_per_txn: Option<Duration>,
    pub lag: Spread,
    pub storm_drop: Option<Duration>,
    pub storm_drop_rss_max_kib: u64,
    pub storm_kill_hub_ready: Option<Duration>,
    pub storm_kill: Option<Duration>,
    pub storm_kill_rss_max_kib: u64,
    pub drained: Option<Duration>,
    pub committed: u64,
    pub acked: u64,
    pub links_made: u64,
    pub link_errors: u64,
    pub errors: Vec<String>,
    pub refused: u64,
    pub hub_refused_lines: u64,
    pub hub_tail: String,
    pub check: Check,
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), ms)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Report {
    pub fn new(n: usize) -> Report {
        Report {
            n,
            ..Report::default()
        }
    }

    /// KiB of hub memory per idle link, over the hub with none connected.
    pub fn kib_per_link(&self) -> f64 {
        self.rss_idle_kib.saturating_sub(self.rss_ready_kib) as f64 / self.n.max(1) as f64
    }

    /// What the short form asserts: correctness, never timings.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let c = &self.check;
        let n = self.n;
        if self.all_connected.is_none() {
            p.push(format!("only {} of {n} edges connected", self.connected));
        }
        for (what, s) in [
            ("idle threshold", &self.thr_idle),
            ("threshold under load", &self.thr_load),
        ] {
            if !s.complete() && (self.steady_ran || what == "idle threshold") {
                p.push(format!("{what} reached {} of {n} edges", s.count));
            }
        }
        if self.drained.is_none() {
            p.push(format!(
                "hub acknowledged {} of {} alerts",
                self.acked, self.committed
            ));
        }
        if self.refused > 0 {
            p.push(format!("hub refused {} alerts", self.refused));
        }
        if c.edges_reported != n || c.edges_with_all_thresholds != n {
            p.push(format!(
                "{} of {n} edges reported, {} hold every threshold",
                c.edges_reported, c.edges_with_all_thresholds
            ));
        }
        if let Some(e) = &c.error {
            p.push(e.clone());
        }
        if (self.steady_ran && c.expected == 0)
            || c.rows != c.expected
            || c.missing > 0
            || c.twice > 0
        {
            p.push(format!(
                "alerts: {} committed, {} rows at the hub, {} without a log entry, {} logged twice",
                c.expected, c.rows, c.missing, c.twice
            ));
        }
        if c.log_first != 1 {
            p.push(format!(
                "the hub's log was trimmed (starts at {}): the count is incomplete",
                c.log_first
            ));
        }
        p
    }
}

/// The reports as one table: a row per measure, a column per N.
pub fn table(reports: &[Report]) -> String {
    type Row = (&'static str, &'static str, fn(&Report) -> String);
    let rows: &[Row] = &[
        ("certificates made (N edges)", "", |r| ms(r.cert_gen)),
        ("hub start, N peers configured", "", |r| ms(r.hub_start)),
        ("all N connected", "", |r| opt_ms(r.all_connected)),
        ("  simulator CPU meanwhile", "", |r| {
            opt_ms(r.sim_connect_cpu)
        }),
        ("base threshold on all N (initial sync)", "", |r| {
            opt_ms(r.base_threshold)
        }),
        ("hub RSS, N peers, none connected", "", |r| {
            mib(r.rss_ready_kib)
        }),
        ("hub RSS, N idle links", "", |r| mib(r.rss_idle_kib)),
        ("hub RSS per idle link", "< 150 KB", |r| {
            format!("{:.1} KiB", r.kib_per_link())
        }),
        ("hub fds / its RLIMIT_NOFILE", "", |r| {
            format!(
                "{} / {}",
                r.fds_idle.map_or("?".into(), |f| f.to_string()),
                r.hub_nofile.map_or("?".into(), |f| f.to_string())
            )
        }),
        ("hub CPU idle (heartbeats)", "", |r| {
            r.idle_cpu_pct.map_or("?".into(), |p| format!("{p:.0} %"))
        }),
        ("threshold to all N, idle p50/p99/max", "", |r| {
            r.thr_idle.show()
        }),
        ("alerts/s committed (target N)", "", |r| {
            format!(
                "{:.0}",
                r.steady_committed as f64 / r.steady_window.as_secs_f64().max(0.001)
            )
        }),
        ("alerts/s acked by hub", "", |r| {
            format!(
                "{:.0}",
                r.steady_acked as f64 / r.steady_window.as_secs_f64().max(0.001)
            )
        }),
        ("lag commit->hub apply p50/p99/max", "p99 < 1 s", |r| {
            r.lag.show()
        }),
        ("hub CPU under load", "", |r| {
            r.steady_cpu_pct.map_or("?".into(), |p| format!("{p:.0} %"))
        }),
        ("hub CPU per transaction", "flat within 2x", |r| {
            r.cpu_per_txn
                .map_or("?".into(), |d| format!("{:.0} us", d.as_secs_f64() * 1e6))
        }),
        ("threshold to all N, loaded p50/p99/max", "", |r| {
            r.thr_load.show()
        }),
        ("storm: all edges drop -> all up", "< 60 s", |r| {
            opt_ms(r.storm_drop)
        }),
        (
            "  hub peak RSS",
            "no OOM",
            |r| mib(r.storm_drop_rss_max_kib),
        ),
        ("storm: hub SIGKILL+restart -> ready", "", |r| {
            opt_ms(r.storm_kill_hub_ready)
        }),
        ("  -> all N up again", "< 60 s", |r| opt_ms(r.storm_kill)),
        (
            "  hub peak RSS",
            "no OOM",
            |r| mib(r.storm_kill_rss_max_kib),
        ),
        ("drain after storms", "", |r| opt_ms(r.drained)),
        ("alerts committed / rows at hub", "equal", |r| {
            format!("{} / {}", r.check.expected, r.check.rows)
        }),
        ("alerts missing / logged twice", "0 / 0", |r| {
            format!("{} / {}", r.check.missing, r.check.twice)
        }),
        ("edges holding every threshold", "N", |r| {
            r.check.edges_with_all_thresholds.to_string()
        }),
        ("links made / link errors", "", |r| {
            format!("{} / {}", r.links_made, r.link_errors)
        }),
    ];
    let mut out = String::new();
    let _ = write!(out, "| {:<42} | {:<14} |", "N edges", "target");
    for r in reports {
        let _ = write!(out, " {:>26} |", r.n);
    }
    out.push('\n');
    let _ = write!(out, "|{}|{}|", "-".repeat(44), "-".repeat(16));
    for _ in reports {
        let _ = write!(out, "{}|", "-".repeat(28));
    }
    out.push('\n');
    for (name, target, f) in rows {
        let _ = write!(out, "| {name:<42} | {target:<14} |");
        for r in reports {
            let _ = write!(out, " {:>26} |", f(r));
        }
        out.push('\n');
    }
    out
}
