//! What the lean edges share with the run and what outlives one link:
//! the fleet's control channel and counters, an edge's identity, its log
//! of alerts (committed on their own schedule, link or not), the guard
//! that counts a link as up, and the redial jitter.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tidelog::hlc::wall_millis;
use tidelog::net::wire::WireTxn;
use tidelog::{Key, LogWrite, Stamp, WriteOp};
use tokio::sync::watch;

use super::edge::ALERTS;

/// What the whole fleet is told to do: one watch channel for all edges.
#[derive(Clone, Debug, Default)]
pub struct Control {
    /// Each edge commits one alert per this period; `None`: idle.
    pub alert_every: Option<Duration>,
    /// Bumped to make every edge drop its connection at once, without a
    /// goodbye, and redial.
    pub drop_epoch: u64,
    /// Every edge says goodbye and ends.
    pub stop: bool,
}

/// Timers, from the library's `ReplicationOptions` defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Fleet-wide counters and samples that every edge writes to.
pub struct Fleet {
    /// Links up now.
    pub up: AtomicUsize,
    /// Per edge: the epoch its current link came up in; 0 while down.
    pub up_epoch: Vec<AtomicU64>,
    /// Set before each storm, so "up again" means up since then.
    pub epoch: AtomicU64,
    pub links_made: AtomicU64,
    pub committed: AtomicU64,
    /// Alerts the hub acknowledged (each counted once, however often
    /// acknowledged).
    pub acked: AtomicU64,
    /// Whether alerts committed now are sampled for lag.
    pub recording: AtomicBool,
    /// Commit to hub acknowledgement, microseconds.
    pub lags_us: Mutex<Vec<u64>>,
    /// Threshold key -> when each edge first had it.
    pub arrivals: Mutex<HashMap<String, Vec<Instant>>>,
    /// Alerts (or parts) the hub refused: must stay 0.
    pub refused: AtomicU64,
    pub link_errors: AtomicU64,
    /// The last distinct link errors, for the report.
    pub errors: Mutex<Vec<String>>,
}

impl Fleet {
    pub fn new(n: usize) -> Fleet {
        Fleet {
            up: AtomicUsize::new(0),
            up_epoch: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(1),
            links_made: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            recording: AtomicBool::new(false),
            lags_us: Mutex::new(Vec::new()),
            arrivals: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            link_errors: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Edges whose link came up at or after `epoch` and is still up.
    pub fn up_since(&self, epoch: u64) -> usize {
        self.up_epoch
            .iter()
            .filter(|e| e.load(Ordering::Relaxed) >= epoch)
            .count()
    }

    pub fn note_error(&self, e: String) {
        self.link_errors.fetch_add(1, Ordering::Relaxed);
        // One entry per kind: numbers (ports, edge names, sequences) vary.
        let gist: String = e
            .chars()
            .take(100)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        let mut errs = self.errors.lock();
        if errs.len() < 12 && !errs.iter().any(|x| x == &gist) {
            errs.push(gist);
        }
    }
}

/// Who an edge is.
pub struct EdgeId {
    pub index: usize,
    pub name: String,
    pub node_id: u64,
    pub tls: Arc<rustls::ClientConfig>,
}

/// One committed alert, with when it was committed.
pub struct Entry {
    pub txn: WireTxn,
    pub at: Instant,
    pub sampled: bool,
}

/// The edge's log of its own alerts. Never trimmed: the hub's resume
/// point can go back after it is killed (what it acknowledged in its last
/// flush interval may be gone), and the edge must then send it again.
pub struct EdgeLog {
    name: String,
    node_id: u64,
    pub entries: Mutex<Vec<Entry>>,
    hlc: AtomicU64,
    pub committed: watch::Sender<u64>,
}

impl EdgeLog {
    pub fn new(name: &str, node_id: u64) -> EdgeLog {
        EdgeLog {
            name: name.to_string(),
            node_id,
            entries: Mutex::new(Vec::new()),
            hlc: AtomicU64::new(0),
            committed: watch::Sender::new(0),
        }
    }

    /// A hybrid-logical-clock stamp: wall milliseconds in the high 48
    /// bits, never going back.
    fn stamp(&self) -> Stamp {
        // Called under the entries lock: one writer at a time.
        let wall = wall_millis() << 16;
        let time = wall.max(self.hlc.load(Ordering::Acquire) + 1);
        self.hlc.store(time, Ordering::Release);
        Stamp {
            time,
            node: self.node_id,
        }
    }

    /// Commits one alert: `{"id": "<edge>/<seq>", ...}` in `alerts`.
    pub fn commit(&self, fleet: &Fleet) -> u64 {
        let mut entries = self.entries.lock();
        let seq = entries.len() as u64 + 1;
        let stamp = self.stamp();
        let id = format!("{}/{seq}", self.name);
        let json = format!(
            r#"{{"id":"{id}","edge":"{}","n":{seq},"level":{}}}"#,
            self.name,
            seq % 5
        );
        entries.push(Entry {
            txn: WireTxn {
                seq,
                stamp,
                writes: vec![LogWrite {
                    table: ALERTS.into(),
                    key: Key::Str(id),
                    op: WriteOp::Put {
                        json,
                        created: stamp.time,
                    },
                }],
            },
            at: Instant::now(),
            sampled: fleet.recording.load(Ordering::Relaxed),
        });
        drop(entries);
        self.committed.send_replace(seq);
        fleet.committed.fetch_add(1, Ordering::Relaxed);
        seq
    }

    pub fn last(&self) -> u64 {
        self.entries.lock().len() as u64
    }

    pub fn txns(&self, after: u64, upto: u64) -> Vec<WireTxn> {
        let e = self.entries.lock();
        e[after as usize..upto as usize]
            .iter()
            .map(|e| e.txn.clone())
            .collect()
    }
}

/// What an edge ends with, for the checks after a run.
pub struct EdgeReport {
    pub name: String,
    pub committed: u64,
    pub acked: u64,
    /// Threshold keys it holds.
    pub thresholds: Vec<String>,
    /// Threshold writes received again with a stamp it already had.
    pub threshold_repeats: u64,
}

/// One alert per period at a random phase, so a fleet's commits spread
/// over the second instead of arriving together.
pub async fn commit_loop(log: Arc<EdgeLog>, fleet: Arc<Fleet>, mut ctl: watch::Receiver<Control>) {
    let mut rng = Jitter(
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1,
    );
    loop {
        let every = ctl.borrow_and_update().alert_every;
        let Some(every) = every else {
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        };
        let phase = Duration::from_micros(rng.next() % every.as_micros().max(1) as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, every);
        // A loaded machine delays ticks; it must not then burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => { log.commit(&fleet); }
                changed = ctl.changed() => {
                    if changed.is_err() { return; }
                    if ctl.borrow().alert_every != Some(every) { break; }
                }
            }
        }
    }
}

/// Counts a link as up while it lives.
pub struct Up {
    fleet: Arc<Fleet>,
    index: usize,
}

impl Up {
    pub fn new(fleet: Arc<Fleet>, index: usize) -> Up {
        fleet.up.fetch_add(1, Ordering::AcqRel);
        fleet.links_made.fetch_add(1, Ordering::Relaxed);
        let epoch = fleet.epoch.load(Ordering::Acquire);
        fleet.up_epoch[index].store(epoch, Ordering::Release);
        Up { fleet, index }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.fleet.up_epoch[self.index].store(0, Ordering::Release);
        self.fleet.up.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Redial jitter, seeded per edge from the OS's random hash keys, so a
/// fleet started in one millisecond does not redial in lockstep.
pub struct Jitter(pub u64);

impl Jitter {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [d/2, 3d/2), as the library spreads its redials.
    pub fn spread(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis().max(1) as u64;
        Duration::from_millis(ms / 2 + self.next() % ms)
    }
}
