//! Fleet benchmark: one `tidelog serve` hub (the crate's own binary, a
//! separate process) holding N mutual-TLS edges on 127.0.0.1, each edge a
//! lean edge of the simulator in `tests/fleet_common` (read its module
//! docs for what it does, why it is faithful and what it skips).
//!
//! Run: `cargo bench -p tidelog --bench fleet`. Environment:
//! `TIDELOG_FLEET_N` (comma-separated fleet sizes, default `100,1000`;
//! `10000` for the full size), `TIDELOG_FLEET_SECS` (the window at
//! one alert per edge per second, default 20; `0` skips it, so the storms
//! find idle links and no alert is committed), `TIDELOG_FLEET_STORMS`
//! (`0` skips the two reconnect storms), `TIDELOG_FLEET_THREADS` (the
//! simulator's runtime threads, default 2), `TIDELOG_FLEET_LIMIT_SECS`
//! (how long any one phase may take before it is reported as not
//! reached, default 300: a hub that cannot keep up never drains). Prints one table, a column per
//! N, with the targets beside; asserts nothing about timing, and
//! lists any correctness problem (an alert missing or applied twice at
//! the hub, an edge never connected) under the table.
//!
//! The simulator raises its open-file limit to the hard limit and the hub
//! inherits it (the table shows what the hub got): N edges need N sockets
//! on each side. The simulator shares the machine with the hub: on a
//! 2-core machine its own TLS and framing take about as much CPU as the
//! hub's, so the hub's numbers are those of a hub with about one core.

#[path = "../tests/fleet_common/mod.rs"]
mod fleet_common;

use std::time::Duration;

use fleet_common::{run, table, FleetOptions};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects nothing here.
    let sizes: Vec<usize> = env("TIDELOG_FLEET_N")
        .unwrap_or_else(|| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    let secs: u64 = env("TIDELOG_FLEET_SECS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let storms = env("TIDELOG_FLEET_STORMS").as_deref() != Some("0");
    let threads: usize = env("TIDELOG_FLEET_THREADS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let limit = env("TIDELOG_FLEET_LIMIT_SECS")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let mut reports = Vec::new();
    for n in sizes {
        let mut o = FleetOptions::new(n);
        o.steady = Duration::from_secs(secs);
        o.storms = storms;
        o.worker_threads = threads;
        if let Some(l) = limit {
            o.connect_limit = l;
            o.threshold_limit = l;
            o.storm_limit = l;
            o.drain_limit = l;
        }
        eprintln!("fleet: N = {n}, {secs} s at one alert per edge per second ...");
        let r = run(&o);
        eprintln!("fleet: N = {n} done");
        println!("{}", table(std::slice::from_ref(&r)));
        let problems = r.problems();
        if !problems.is_empty() {
            println!("N = {n}: problems:");
            for p in &problems {
                println!("  - {p}");
            }
        }
        if r.link_errors > 0 {
            println!("N = {n}: link errors seen (first of each kind):");
            for e in &r.errors {
                println!("  - {e}");
            }
        }
        reports.push(r);
    }
    println!(
        "open files: this process soft/hard {} / {}",
        reports.first().map_or(0, |r| r.nofile_soft),
        reports.first().map_or(0, |r| r.nofile_hard)
    );
    println!("{}", table(&reports));
}
