//! Byte budgets on a link, measured where a carrier would: at a TCP proxy
//! on 127.0.0.1 between an edge and a cloud over mutual TLS, counting the
//! bytes the edge sends.
//!
//! `TIDELOG_BUDGET_SECS=<n>` sets how long the capped flow is measured
//! (default 75 s: at least one full 60 s window; 600 for the long form).

mod repl_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use repl_common::*;
use serde_json::json;
use tidelog::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Moving the budget clock is process-wide: tests that do take turns.
static CLOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Forwards 127.0.0.1 connections to `upstream`, counting the bytes that
/// go upstream (edge to cloud), TLS records and all.
struct CountingProxy {
    addr: std::net::SocketAddr,
    up_bytes: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: std::net::SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up_bytes = Arc::new(AtomicU64::new(0));
        let counted = up_bytes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = (down.set_nodelay(true), up.set_nodelay(true));
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let upward = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match dr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            counted.fetch_add(n as u64, Ordering::Relaxed);
                            if uw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let downward = async move {
                        let _ = tokio::io::copy(&mut ur, &mut dw).await;
                    };
                    tokio::select! {
                        () = upward => {}
                        () = downward => {}
                    }
                });
            }
        });
        CountingProxy { addr, up_bytes }
    }
}

struct Pair {
    _rt: tokio::runtime::Runtime,
    _pki: Pki,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    edge_dir: std::path::PathBuf,
    edge: Database,
    cloud: Database,
    proxy: CountingProxy,
}

fn flow(table: &str, priority: u8, bulk: bool, exempt: bool) -> TableFlow {
    TableFlow {
        bulk,
        exempt_from_quota: exempt,
        ..TableFlow::publish(table).priority(priority)
    }
}

fn edge_peer(addr: &str, budget: Option<LinkBudget>, flows: &[TableFlow]) -> PeerConfig {
    let mut p = PeerConfig::new("cloud").address(addr);
    p.budget = budget;
    for f in flows {
        p = p.table(f.clone());
    }
    p
}

/// An edge publishing `flows` to a cloud through a counting proxy.
fn pair(budget: Option<LinkBudget>, flows: &[TableFlow]) -> Pair {
    pair_with(budget, flows, |o| o)
}

fn pair_with(
    budget: Option<LinkBudget>,
    flows: &[TableFlow],
    edge_opts: impl Fn(ReplicationOptions) -> ReplicationOptions,
) -> Pair {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new(&["cloud", "edge-1"]);
    let (dc, de) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cloud = open_node(dc.path(), "cloud");
    let edge = open_node(de.path(), "edge-1");
    for f in flows {
        cloud
            .create_table(&f.table, TableOptions::default())
            .unwrap();
        edge.create_table(&f.table, TableOptions::default())
            .unwrap();
    }
    cloud.start_replication(pki.options("cloud")).unwrap();
    edge.start_replication(edge_opts(pki.options("edge-1")))
        .unwrap();
    let cloud_addr = cloud.listen("127.0.0.1:0").unwrap();
    let proxy = rt.block_on(CountingProxy::start(cloud_addr));
    let mut cp = PeerConfig::new("edge-1");
    for f in flows {
        cp = cp.table(TableFlow::subscribe(&f.table));
    }
    cloud.add_peer(cp).unwrap();
    edge.add_peer(edge_peer(&proxy.addr.to_string(), budget, flows))
        .unwrap();
    // Initial syncs (of empty tables) done: what follows streams. A sync
    // the quota interrupts starts over on the next link.
    wait_until(
        "the link is up and streaming",
        Duration::from_secs(20),
        || {
            let s = edge.peer_status("cloud").unwrap();
            // (A bulk table may wait for its window.)
            let held = |t: &str| flows.iter().any(|f| f.table == t && f.bulk);
            s.connected
                && s.tables
                    .iter()
                    .all(|t| t.outbound == "streaming" || held(&t.table))
        },
    );
    Pair {
        _rt: rt,
        _pki: pki,
        edge_dir: de.path().to_path_buf(),
        _dirs: (dc, de),
        edge,
        cloud,
        proxy,
    }
}

/// Pseudo-random text that zstd cannot shrink much, so frame sizes on
/// the wire stay close to the records' sizes.
struct Noise(Rng);
impl Noise {
    fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'!' + (self.0.next() % 90) as u8))
            .filter(|c| *c != '"' && *c != '\\')
            .collect()
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_capped_link_stays_within_the_cap_over_every_minute_and_alerts_go_first() {
    let secs = std::env::var("TIDELOG_BUDGET_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(75u64);
    let cap: u64 = 32 * 1024;
    let budget = LinkBudget {
        max_bytes_per_sec: Some(cap),
        ..LinkBudget::default()
    };
    let p = pair(
        Some(budget),
        &[
            flow("readings", 0, false, false),
            flow("alerts", 9, false, false),
        ],
    );
    // Delivery time of each alert, measured on the cloud as it is applied
    // (one process, one clock).
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let l = latencies.clone();
    p.cloud
        .on_change("alerts", move |e: &ChangeEvent| {
            let now = tidelog::hlc::wall_millis();
            for c in &e.changes {
                if let Some(at) = c
                    .record
                    .as_ref()
                    .and_then(|r| r.to_value().get("at").and_then(|v| v.as_u64()))
                {
                    l.lock().unwrap().push(now.saturating_sub(at));
                }
            }
        })
        .unwrap();

    // Readings at about 60 KB/s (twice the cap): the link stays saturated.
    let writing = Arc::new(AtomicBool::new(true));
    // Incompressible padding: the cap counts bytes on the wire, after
    // zstd, and repeated text would shrink to nothing.
    let mut noise = Noise(Rng(0x5EED_0023_CAFE_0001));
    let (w, e) = (writing.clone(), p.edge.clone());
    let readings = std::thread::spawn(move || {
        let mut n = 0u64;
        while w.load(Ordering::Relaxed) {
            let mut tx = e.transaction();
            for _ in 0..10 {
                tx.insert("readings", json!({"id": n, "pad": noise.text(560)}))
                    .unwrap();
                n += 1;
            }
            tx.commit().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    });
    let (w, e) = (writing.clone(), p.edge.clone());
    let alerts = std::thread::spawn(move || {
        let mut n = 0u64;
        while w.load(Ordering::Relaxed) {
            e.insert(
                "alerts",
                json!({"id": n, "at": tidelog::hlc::wall_millis(), "level": "high"}),
            )
            .unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        n
    });

    // Bytes upstream, sampled every 100 ms.
    let start = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        samples.push((start.elapsed(), p.proxy.up_bytes.load(Ordering::Relaxed)));
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = p.edge.peer_status("cloud").unwrap();
    writing.store(false, Ordering::Relaxed);
    let (n_readings, n_alerts) = (readings.join().unwrap(), alerts.join().unwrap());

    // Every 60 s window (sliding by 100 ms) against the cap plus 5 %.
    let window = Duration::from_secs(60);
    let limit = cap * 60 * 105 / 100;
    let mut worst = 0u64;
    let mut windows = 0;
    for (i, (t0, b0)) in samples.iter().enumerate() {
        let Some((_, b1)) = samples[i..].iter().rev().find(|(t, _)| *t - *t0 <= window) else {
            continue;
        };
        if samples.last().unwrap().0 - *t0 < window {
            break;
        }
        windows += 1;
        worst = worst.max(b1 - b0);
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    eprintln!(
        "cap {cap} B/s over {secs} s: {windows} windows of 60 s, the fullest {worst} B = {:.1} % of cap*60; {} B upstream in all; alerts delivered {} of {n_alerts}: p50 {} ms, p99 {} ms, max {} ms; status {:?}",
        worst as f64 * 100.0 / (cap * 60) as f64,
        samples.last().unwrap().1,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        status.traffic,
    );
    assert!(windows > 0, "no full 60 s window was measured");
    assert!(
        worst <= limit,
        "{worst} bytes in 60 s exceed the cap of {cap} B/s plus 5 % ({limit})"
    );
    // The link must actually have been used near the cap, or the check
    // above proves nothing.
    assert!(
        worst > cap * 60 * 80 / 100,
        "the link was not saturated: {worst}"
    );
    assert_eq!(status.traffic.max_bytes_per_sec, Some(cap));
    // Not a timing assertion: a starvation bound. Alerts ahead of the
    // backlog wait about one quarter-second frame; 10 s only fails if the
    // priority does not hold under the cap (the backlog here is minutes).
    assert!(
        lat.len() as u64 >= n_alerts.saturating_sub(5),
        "alerts starved behind the backlog"
    );
    assert!(percentile(&lat, 0.99) < 10_000, "alerts starved: {lat:?}");

    // A receipt for the newest reading waits behind the backlog, and its
    // timeout says the cap holds it.
    let newest = p.edge.log_bounds().unwrap().last;
    let e = p
        .edge
        .wait_for_ack("cloud", newest, Duration::from_millis(300))
        .unwrap_err();
    assert!(e.to_string().contains("cap of 32768 bytes/s"), "{e}");

    // Lift the cap: the backlog drains and both sides agree.
    p.edge
        .update_peer(edge_peer(
            &p.proxy.addr.to_string(),
            None,
            &[
                flow("readings", 0, false, false),
                flow("alerts", 9, false, false),
            ],
        ))
        .unwrap();
    wait_until(
        "converged once the cap is lifted",
        Duration::from_secs(60),
        || {
            p.cloud.count("readings").unwrap() == n_readings
                && p.cloud.count("alerts").unwrap() == n_alerts
        },
    );
    assert_eq!(
        table_state(&p.edge, "readings"),
        table_state(&p.cloud, "readings")
    );
    p.edge.close().unwrap();
    p.cloud.close().unwrap();
}

fn held(db: &Database) -> Option<String> {
    db.peer_status("cloud").unwrap().traffic.held
}

#[test]
fn a_spent_quota_holds_bulk_lets_exempt_alerts_through_and_the_next_period_delivers_all() {
    let _clock = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_budget_clock_offset_ms(0);
    let quota = 40_000;
    let budget = LinkBudget {
        quota_bytes: Some(quota),
        quota_period: Some(QuotaPeriod::Day),
        ..LinkBudget::default()
    };
    let flows = [
        flow("bulk", 0, false, false),
        flow("alerts", 9, false, true),
    ];
    // A window of 8 transactions: alerts flowing past held bulk writes
    // must not fill it (the peer cannot acknowledge past those).
    let small_window = |mut o: ReplicationOptions| {
        o.window_txns = 8;
        o
    };
    let p = pair_with(Some(budget.clone()), &flows, small_window);
    let dups = DupWatch::default();
    dups.watch(&p.cloud, &["bulk", "alerts"]);
    let mut noise = Noise(Rng(0x5EED_0023_0000_0002));
    let mut last = None;
    // 60 KB: more than a period's quota, less than two.
    for i in 0..60 {
        last = Some(
            p.edge
                .insert("bulk", json!({"id": i, "pad": noise.text(1000)}))
                .unwrap(),
        );
    }
    let t0 = Instant::now();
    while held(&p.edge).as_deref() != Some("quota") {
        let s = p.edge.peer_status("cloud").unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the quota is not spent: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = p.edge.peer_status("cloud").unwrap();
    assert_eq!(s.traffic.quota_left_bytes, Some(0));
    assert!(s.traffic.quota_period_end_ms.is_some());
    // The frame that spent the quota may still be on its way.
    std::thread::sleep(Duration::from_millis(300));
    let got = p.cloud.count("bulk").unwrap();
    eprintln!("held with {got} rows of 60 delivered: {s:?}");
    assert!(got < 60, "the quota of {quota} B let all 60 KB through");

    // Exempt alerts still flow (their receipts wait: the acknowledged
    // position does not pass the bulk writes held before them).
    for i in 0..30 {
        p.edge.insert("alerts", json!({"id": i})).unwrap();
    }
    wait_until("exempt alerts arrive", Duration::from_secs(10), || {
        p.cloud.count("alerts").unwrap() == 30
    });
    // A receipt for bulk times out and says the quota holds it.
    let seq = last.unwrap().seq;
    let e = p
        .edge
        .wait_for_ack("cloud", seq, Duration::from_millis(800))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let msg = e.to_string();
    assert!(
        msg.contains("quota") && msg.contains("`bulk`") && msg.contains("T00:00Z"),
        "{msg}"
    );
    assert_eq!(p.cloud.count("bulk").unwrap(), got, "held, not sent");

    // A restart does not refill it: the use is stored (at most a second
    // behind).
    std::thread::sleep(Duration::from_millis(1500));
    let addr = p.proxy.addr.to_string();
    p.edge.close().unwrap();
    let edge = open_node(&p.edge_dir, "edge-1");
    edge.start_replication(small_window(p._pki.options("edge-1")))
        .unwrap();
    edge.add_peer(edge_peer(&addr, Some(budget), &flows))
        .unwrap();
    wait_until("the link is up again", Duration::from_secs(20), || {
        edge.peer_status("cloud").unwrap().connected
    });
    assert_eq!(held(&edge).as_deref(), Some("quota"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        p.cloud.count("bulk").unwrap(),
        got,
        "still held after a restart"
    );

    // The next day: everything goes out, once.
    set_budget_clock_offset_ms(86_400_000);
    let t0 = Instant::now();
    while p.cloud.count("bulk").unwrap() != 60 {
        let s = edge.peer_status("cloud").unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "bulk did not resume in the next period: {} of 60 arrived; {s:?}",
            p.cloud.count("bulk").unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    edge.wait_for_ack("cloud", seq, Duration::from_secs(10))
        .unwrap();
    assert_eq!(table_state(&edge, "bulk"), table_state(&p.cloud, "bulk"));
    assert!(dups.duplicates().is_empty(), "{:?}", dups.duplicates());
    assert_eq!(held(&edge), None);
    set_budget_clock_offset_ms(0);
    edge.close().unwrap();
    p.cloud.close().unwrap();
}

#[test]
fn a_bulk_table_waits_for_its_window_and_flows_inside_it() {
    let _clock = CLOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_budget_clock_offset_ms(0);
    let minute = (tidelog::hlc::wall_millis() / 60_000 % 1440) as u32;
    let start = (minute + 120) % 1440;
    let end = (start + 60) % 1440;
    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    let budget = LinkBudget {
        windows: vec![format!("{}-{}", hhmm(start), hhmm(end))],
        ..LinkBudget::default()
    };
    let p = pair(
        Some(budget),
        &[
            flow("bulk", 0, true, false),
            flow("alerts", 9, false, false),
        ],
    );
    let b = p.edge.insert("bulk", json!({"id": 1})).unwrap();
    let a = p.edge.insert("alerts", json!({"id": 1})).unwrap();
    wait_until("the alert arrives", Duration::from_secs(10), || {
        p.cloud.count("alerts").unwrap() == 1
    });
    assert_eq!(held(&p.edge).as_deref(), Some("window"));
    let e = p
        .edge
        .wait_for_ack("cloud", b.seq, Duration::from_millis(500))
        .unwrap_err();
    assert!(e.to_string().contains("outside its windows"), "{e}");
    assert_eq!(p.cloud.count("bulk").unwrap(), 0);
    // The alert arrived, but its receipt waits: the acknowledged position
    // does not pass the bulk write held before it, and the error says so.
    let e = p
        .edge
        .wait_for_ack("cloud", a.seq, Duration::from_millis(300))
        .unwrap_err();
    assert!(e.to_string().contains("`bulk`"), "{e}");

    // Into the window.
    set_budget_clock_offset_ms(121 * 60_000);
    p.edge
        .wait_for_ack("cloud", a.seq, Duration::from_secs(20))
        .unwrap();
    assert_eq!(p.cloud.count("bulk").unwrap(), 1);
    assert_eq!(held(&p.edge), None);
    set_budget_clock_offset_ms(0);
    p.edge.close().unwrap();
    p.cloud.close().unwrap();
}

#[test]
fn budgets_that_cannot_work_are_refused_with_what_to_do() {
    let pki = Pki::new(&["edge-1"]);
    let d = tempfile::tempdir().unwrap();
    let edge = open_node(d.path(), "edge-1");
    edge.start_replication(pki.options("edge-1")).unwrap();
    let with = |b: LinkBudget| edge_peer("127.0.0.1:9", Some(b), &[flow("t", 0, true, false)]);
    let e = edge
        .add_peer(with(LinkBudget {
            max_bytes_per_sec: Some(100),
            ..LinkBudget::default()
        }))
        .unwrap_err();
    assert!(e.to_string().contains("minimum of 1024"), "{e}");
    for w in ["25:00-01:00", "10:00", "10:00-10:00", "9:00-10:00"] {
        let e = edge
            .add_peer(with(LinkBudget {
                windows: vec![w.into()],
                ..LinkBudget::default()
            }))
            .unwrap_err();
        assert!(e.to_string().contains("HH:MM-HH:MM"), "{w}: {e}");
    }
    assert!(
        matches!(edge.peer_status("cloud"), Err(Error::PeerNotFound(_))),
        "a refused peer was added"
    );
    // The spellings a config file uses.
    let b: LinkBudget = serde_json::from_str(
        r#"{"max_bytes_per_sec": 32768, "quota_bytes": 50000000, "quota_period": "month", "windows": ["22:00-06:00"]}"#,
    )
    .unwrap();
    assert_eq!(b.quota_period, Some(QuotaPeriod::Month));
    edge.add_peer(with(b)).unwrap();
    edge.close().unwrap();
}

/// Before budgets, a higher lane that passed over a window's worth of a
/// lower lane's entries waited for an acknowledgement that nothing in
/// flight could bring: the link stopped. It must not, metered or not.
#[test]
fn a_small_window_does_not_stall_lanes_that_pass_over_each_other() {
    let p = pair_with(
        None,
        &[
            flow("readings", 0, false, false),
            flow("alerts", 9, false, false),
        ],
        |mut o| {
            o.window_txns = 8;
            o
        },
    );
    for i in 0..60 {
        p.edge.insert("readings", json!({"id": i})).unwrap();
    }
    let a = p.edge.insert("alerts", json!({"id": 1})).unwrap();
    p.edge
        .wait_for_ack("cloud", a.seq, Duration::from_secs(20))
        .unwrap();
    assert_eq!(p.cloud.count("readings").unwrap(), 60);
    p.edge.close().unwrap();
    p.cloud.close().unwrap();
}
