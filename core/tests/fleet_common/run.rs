//! One fleet run: certificates, the hub, the operator, N lean edges, then
//! the phases (connect, idle, a threshold change, steady load with a
//! threshold change, two reconnect storms, drain) and the check of the
//! hub's data afterwards.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tidelog::{Database, OpenOptions, PeerConfig, ReplicationOptions, TableFlow, TableOptions};
use tokio::sync::watch;

use super::edge::{run_edge, Control, EdgeId, EdgeReport, Fleet, Timers, ALERTS, HUB, THRESHOLDS};
use super::hub::{
    cpu_time, fd_count, hub_config, nofile_of, pin_listen, raise_nofile, rss_kib, Hub, HubSetup,
    OPERATOR,
};
use super::pki::FleetPki;
use super::{Check, FleetOptions, Report, Spread};

/// Polls `f` every 20 ms until it holds or `limit` passes; the time it
/// took, or `None`. `each` runs on every poll (sampling memory).
fn wait(limit: Duration, mut f: impl FnMut() -> bool, mut each: impl FnMut()) -> Option<Duration> {
    let t = Instant::now();
    loop {
        each();
        if f() {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn timers() -> Timers {
    // The library's defaults, which a `Database` edge would run with.
    let d = ReplicationOptions::insecure();
    Timers {
        heartbeat: d.heartbeat_interval,
        idle_timeout: d.idle_timeout,
        connect_timeout: d.connect_timeout,
        backoff_initial: d.backoff_initial,
        backoff_max: d.backoff_max,
    }
}

/// Writes threshold `key` on the operator and waits until every edge has
/// it: the spread of arrival times after the write.
fn threshold_change(op: &Database, fleet: &Fleet, key: &str, n: usize, limit: Duration) -> Spread {
    let t0 = Instant::now();
    op.upsert(THRESHOLDS, json!({"id": key, "max": 42}))
        .expect("operator write");
    let arrived = || fleet.arrivals.lock().get(key).map_or(0, Vec::len);
    wait(limit, || arrived() >= n, || {});
    let times: Vec<Duration> = fleet
        .arrivals
        .lock()
        .get(key)
        .map(|v| v.iter().map(|t| t.saturating_duration_since(t0)).collect())
        .unwrap_or_default();
    Spread::of(times, n)
}

/// A line on stderr per phase, so a long run shows where it is.
fn phase(n: usize, what: std::fmt::Arguments) {
    eprintln!("fleet N={n}: {what}");
}

/// Runs the fleet; panics only on set-up failures (certificates, the hub
/// not starting, the operator's database), reports everything else.
pub fn run(opts: &FleetOptions) -> Report {
    let n = opts.n;
    let mut r = Report::new(n);
    (r.nofile_soft, r.nofile_hard) = raise_nofile();
    let dir = tempfile::tempdir().expect("scratch dir");
    let d = dir.path();

    let t = Instant::now();
    let pki = FleetPki::new("tidelog fleet CA");
    let ca = pki.write_ca(d);
    let hub_files = pki.write_node(d, HUB);
    let op_files = pki.write_node(d, OPERATOR);
    let names: Vec<String> = (0..n).map(|i| format!("edge-{i:05}")).collect();
    // Distinct per edge and per run: a node id the hub has seen under
    // another name would be refused (one node posing as another).
    let base = std::collections::hash_map::RandomState::new();
    let ids: Vec<EdgeId> = names
        .iter()
        .enumerate()
        .map(|(index, name)| EdgeId {
            index,
            name: name.clone(),
            node_id: std::hash::BuildHasher::hash_one(&base, name) | 1,
            tls: pki.edge_client(name),
        })
        .collect();
    r.cert_gen = t.elapsed();
    phase(n, format_args!("{n} certificates in {:?}", r.cert_gen));

    let config = d.join("hub.toml");
    let data = d.join("hub-data");
    let setup = HubSetup {
        listen: "127.0.0.1:0",
        data_dir: &data,
        cert: &hub_files.cert,
        key: &hub_files.key,
        ca: &ca,
        edges: &names,
    };
    std::fs::write(&config, hub_config(&setup)).expect("write hub config");
    let t = Instant::now();
    let mut hub = Hub::start(&config);
    let addr = hub.ready(opts.hub_start_limit);
    r.hub_start = t.elapsed();
    pin_listen(&config, &addr);
    r.hub_nofile = nofile_of(hub.pid());
    r.rss_ready_kib = rss_kib(hub.pid()).unwrap_or(0);
    phase(n, format_args!("hub ready at {addr} in {:?}", r.hub_start));

    let op = Database::open(d.join("operator"), OpenOptions::new(OPERATOR)).expect("operator");
    op.create_table(THRESHOLDS, TableOptions::default())
        .expect("operator table");
    op.start_replication(ReplicationOptions::mutual_tls(
        &op_files.cert,
        &op_files.key,
        &ca,
    ))
    .expect("operator replication");
    op.add_peer(
        PeerConfig::new(HUB)
            .address(&addr)
            .table(TableFlow::publish(THRESHOLDS)),
    )
    .expect("operator peer");
    op.upsert(THRESHOLDS, json!({"id": "base", "max": 50}))
        .expect("operator write");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.worker_threads)
        .enable_all()
        .build()
        .expect("runtime");
    let (ctl, ctl_rx) = watch::channel(Control::default());
    let fleet = Arc::new(Fleet::new(n));
    let sim_cpu0 = cpu_time(std::process::id());
    let t = Instant::now();
    let handles: Vec<_> = ids
        .into_iter()
        .map(|id| {
            rt.spawn(run_edge(
                id,
                addr.clone(),
                timers(),
                fleet.clone(),
                ctl_rx.clone(),
            ))
        })
        .collect();
    let pid = hub.pid();
    let rss_max = std::cell::Cell::new(0);
    let sample = |pid: u32| rss_max.set(rss_max.get().max(rss_kib(pid).unwrap_or(0)));
    r.all_connected = wait(
        opts.connect_limit,
        || fleet.up.load(Ordering::Acquire) == n,
        || sample(pid),
    );
    r.connected = fleet.up.load(Ordering::Acquire);
    phase(
        n,
        format_args!("{} of {n} connected: {:?}", r.connected, r.all_connected),
    );
    r.sim_connect_cpu = cpu_time(std::process::id())
        .zip(sim_cpu0)
        .map(|(a, b)| a.saturating_sub(b));
    r.base_threshold = wait(
        opts.connect_limit,
        || fleet.arrivals.lock().get("base").map_or(0, Vec::len) >= n,
        || {},
    )
    .map(|_| t.elapsed());

    // Idle: every link up, heartbeats only.
    std::thread::sleep(opts.settle);
    let cpu0 = cpu_time(pid);
    std::thread::sleep(opts.idle_window);
    r.idle_cpu_pct = pct(cpu0, cpu_time(pid), opts.idle_window);
    r.rss_idle_kib = rss_kib(pid).unwrap_or(0);
    r.fds_idle = fd_count(pid);
    r.thr_idle = threshold_change(&op, &fleet, "change-idle", n, opts.threshold_limit);
    phase(
        n,
        format_args!(
            "idle measured; threshold reached {} edges",
            r.thr_idle.count
        ),
    );

    // Steady: one alert per edge per second (skipped when the window is 0).
    r.steady_ran = !opts.steady.is_zero();
    if r.steady_ran {
        ctl.send_modify(|c| c.alert_every = Some(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_secs(2));
        fleet.lags_us.lock().clear();
        fleet.recording.store(true, Ordering::Release);
        let (c0, a0, cpu0, t0) = (
            fleet.committed.load(Ordering::Acquire),
            fleet.acked.load(Ordering::Acquire),
            cpu_time(pid),
            Instant::now(),
        );
        std::thread::sleep(opts.steady / 2);
        r.thr_load = threshold_change(&op, &fleet, "change-load", n, opts.threshold_limit);
        let rest = opts.steady.saturating_sub(t0.elapsed());
        std::thread::sleep(rest);
        fleet.recording.store(false, Ordering::Release);
        let window = t0.elapsed();
        let (c1, a1, cpu1) = (
            fleet.committed.load(Ordering::Acquire),
            fleet.acked.load(Ordering::Acquire),
            cpu_time(pid),
        );
        r.steady_window = window;
        r.steady_committed = c1 - c0;
        r.steady_acked = a1 - a0;
        r.steady_cpu_pct = pct(cpu0, cpu1, window);
        r.cpu_per_txn = cpu0
            .zip(cpu1)
            .filter(|_| a1 > a0)
            .map(|(a, b)| b.saturating_sub(a) / (a1 - a0) as u32);
        // Sampled alerts still on their way count once acknowledged.
        wait(
            opts.drain_limit,
            || fleet.lags_us.lock().len() as u64 >= c1 - c0,
            || {},
        );
        let lags: Vec<Duration> = fleet
            .lags_us
            .lock()
            .iter()
            .map(|us| Duration::from_micros(*us))
            .collect();
        r.lag = Spread::of(lags, (c1 - c0) as usize);
        phase(
            n,
            format_args!(
                "steady window done: {} committed, {} acked",
                c1 - c0,
                a1 - a0
            ),
        );
    }
    if opts.storms {
        // Storm 1: every edge drops its connection at once.
        let epoch = fleet.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        ctl.send_modify(|c| c.drop_epoch += 1);
        rss_max.set(0);
        r.storm_drop = wait(
            opts.storm_limit,
            || fleet.up_since(epoch) == n,
            || sample(pid),
        );
        r.storm_drop_rss_max_kib = rss_max.get();
        phase(
            n,
            format_args!("storm 1 (edges drop): all up after {:?}", r.storm_drop),
        );
        // Storm 2: the hub is killed and restarted.
        let epoch = fleet.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        hub.kill();
        let t = Instant::now();
        hub = Hub::start(&config);
        let _ = hub.ready(opts.hub_start_limit);
        r.storm_kill_hub_ready = Some(t.elapsed());
        let pid = hub.pid();
        rss_max.set(0);
        r.storm_kill = wait(
            opts.storm_limit,
            || fleet.up_since(epoch) == n,
            || sample(pid),
        )
        .map(|_| t.elapsed());
        r.storm_kill_rss_max_kib = rss_max.get();
        phase(
            n,
            format_args!("storm 2 (hub killed): all up after {:?}", r.storm_kill),
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // Drain: no new alerts; everything committed must be acknowledged.
    ctl.send_modify(|c| c.alert_every = None);
    std::thread::sleep(Duration::from_millis(100));
    r.drained = wait(
        opts.drain_limit,
        || fleet.acked.load(Ordering::Acquire) >= fleet.committed.load(Ordering::Acquire),
        || {},
    );
    r.committed = fleet.committed.load(Ordering::Acquire);
    phase(n, format_args!("drained: {:?}", r.drained));
    r.acked = fleet.acked.load(Ordering::Acquire);
    r.links_made = fleet.links_made.load(Ordering::Relaxed);
    r.link_errors = fleet.link_errors.load(Ordering::Relaxed);
    r.errors = fleet.errors.lock().clone();
    r.refused = fleet.refused.load(Ordering::Relaxed);
    r.hub_refused_lines = hub.refused_lines.load(Ordering::Relaxed);

    ctl.send_modify(|c| c.stop = true);
    let reports: Vec<EdgeReport> = rt.block_on(async {
        // One deadline for all: an edge that does not end is missing from
        // the check, which then fails, rather than holding the run.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut out = Vec::with_capacity(n);
        for h in handles {
            let abort = h.abort_handle();
            match tokio::time::timeout_at(deadline, h).await {
                Ok(Ok(rep)) => out.push(rep),
                _ => abort.abort(),
            }
        }
        out
    });
    drop(rt);
    let _ = op.close();
    r.hub_tail = hub.tail(15);
    let clean = hub.terminate(Duration::from_secs(120));
    r.check = check(&data, &reports, clean, r.steady_ran);
    r
}

fn pct(a: Option<Duration>, b: Option<Duration>, over: Duration) -> Option<f64> {
    let (a, b) = (a?, b?);
    Some(b.saturating_sub(a).as_secs_f64() * 100.0 / over.as_secs_f64())
}

/// Opens the hub's data directory once it stopped and checks every alert
/// every edge committed is there once: one row, one log entry.
fn check(data: &std::path::Path, reports: &[EdgeReport], clean_stop: bool, loaded: bool) -> Check {
    let mut c = Check {
        edges_reported: reports.len(),
        hub_stopped_cleanly: clean_stop,
        ..Check::default()
    };
    let want: &[&str] = if loaded {
        &["base", "change-idle", "change-load"]
    } else {
        &["base", "change-idle"]
    };
    c.edges_with_all_thresholds = reports
        .iter()
        .filter(|r| want.iter().all(|w| r.thresholds.iter().any(|t| t == w)))
        .count();
    c.threshold_repeats = reports.iter().map(|r| r.threshold_repeats).sum();
    c.expected = reports.iter().map(|r| r.committed).sum();
    let db = match Database::open(data, OpenOptions::new(HUB)) {
        Ok(db) => db,
        Err(e) => {
            c.error = Some(format!("cannot open the hub's data: {e}"));
            return c;
        }
    };
    c.rows = db.count(ALERTS).unwrap_or(0);
    let mut per_key: HashMap<String, u32> = HashMap::new();
    let bounds = db.log_bounds().expect("log bounds");
    c.log_first = bounds.first;
    let mut from = bounds.first;
    loop {
        let page = db.read_log(from, 20_000).expect("read log");
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for e in &page {
            for w in e.writes.iter().filter(|w| w.table == ALERTS) {
                if let tidelog::Key::Str(k) = &w.key {
                    *per_key.entry(k.clone()).or_default() += 1;
                }
            }
        }
    }
    c.twice = per_key.values().filter(|n| **n > 1).count() as u64;
    for r in reports {
        for seq in 1..=r.committed {
            if !per_key.contains_key(&format!("{}/{seq}", r.name)) {
                c.missing += 1;
            }
        }
    }
    let _ = db.close();
    c
}
