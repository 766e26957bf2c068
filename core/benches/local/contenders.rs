//! What every contender does, and which contenders there are.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::workload::Workload;
use crate::{alone, raw, sqlite, tide};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Grouped durability: tidelog's default interval, used by the raw floors too.
pub const GROUP_INTERVAL: Duration = Duration::from_millis(50);

pub trait Contender {
    /// Writes record `i` as one atomic unit (record, index entry, log entry).
    fn write_one(&mut self, i: u64) -> Res<()>;
    /// Writes records `ids` as one atomic unit.
    fn write_many(&mut self, ids: Range<u64>) -> Res<()>;
    /// Point-reads record `i`; returns its JSON length (0 if missing).
    fn get(&mut self, i: u64) -> Res<usize>;
    /// Reads every record whose indexed attribute is sensor `s`; returns how many.
    fn find(&mut self, s: u64) -> Res<usize>;
    /// Runs after the writes of the footprint phase, before its reads.
    fn before_reads(&mut self) -> Res<()> {
        Ok(())
    }
    /// Bytes of records and indexes alone (without a log or journal), after
    /// writing out what is buffered; `None` where the store has no log of
    /// its own (SQLite: its files are records and indexes).
    fn table_bytes(&mut self) -> Res<Option<u64>> {
        Ok(None)
    }
    /// Flushes and closes, so the directory holds everything.
    fn close(self: Box<Self>) -> Res<()>;
}

/// The memory budget every contender gets: `TIDELOG_BENCH_BUDGET_MIB`, or
/// tidelog's default (its `edge` profile); SQLite's page cache gets the same.
pub fn budget() -> u64 {
    std::env::var("TIDELOG_BENCH_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or_else(|| tidelog::OpenOptions::new("b").memory_budget, |m| m << 20)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RawFjall,
    RawSled,
    Sqlite,
    TidelogFjall,
    TidelogSled,
    /// fjall alone answering the same point gets (footprint phase only).
    FjallAlone,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::RawFjall,
        Kind::RawSled,
        Kind::Sqlite,
        Kind::TidelogFjall,
        Kind::TidelogSled,
    ];

    /// `ALL` and the footprint-only `FjallAlone`: every name `parse` knows.
    pub fn every() -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().chain([Kind::FjallAlone])
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::RawFjall => "raw-fjall",
            Kind::RawSled => "raw-sled",
            Kind::Sqlite => "sqlite",
            Kind::TidelogFjall => "tidelog-fjall",
            Kind::TidelogSled => "tidelog-sled",
            Kind::FjallAlone => "fjall-alone",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::every().find(|k| k.name() == s)
    }

    /// The raw floor the contender is compared with (tidelog only).
    pub fn floor(self) -> Option<Kind> {
        match self {
            Kind::TidelogFjall => Some(Kind::RawFjall),
            Kind::TidelogSled => Some(Kind::RawSled),
            _ => None,
        }
    }

    pub fn open(self, dir: &Path, wl: Workload) -> Res<Box<dyn Contender>> {
        Ok(match self {
            Kind::RawFjall => Box::new(raw::RawFjall::open(dir, wl)?),
            Kind::RawSled => Box::new(raw::RawSled::open(dir, wl)?),
            Kind::Sqlite => Box::new(sqlite::Sqlite::open(dir, wl)?),
            Kind::TidelogFjall => {
                Box::new(tide::Tidelog::open(dir, wl, tidelog::EngineKind::Fjall)?)
            }
            Kind::TidelogSled => Box::new(tide::Tidelog::open(dir, wl, tidelog::EngineKind::Sled)?),
            Kind::FjallAlone => Box::new(alone::FjallAlone::open(dir, wl)?),
        })
    }
}

/// The raw floors' version of tidelog's grouped-durability flusher: every
/// `GROUP_INTERVAL`, if anything was committed, make it durable.
pub struct Flusher {
    stop: Arc<AtomicBool>,
    dirty: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start(flush: impl Fn() + Send + 'static) -> Flusher {
        let stop = Arc::new(AtomicBool::new(false));
        let dirty = Arc::new(AtomicBool::new(false));
        let (stop2, dirty2) = (stop.clone(), dirty.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                std::thread::sleep(GROUP_INTERVAL);
                if dirty2.swap(false, Ordering::AcqRel) {
                    flush();
                }
            }
        });
        Flusher {
            stop,
            dirty,
            thread: Some(thread),
        }
    }

    /// Something was committed since the last flush.
    pub fn mark(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Version stamps for the raw floors: HLC-shaped (ms << 16), increasing.
pub struct Clock(u64);

impl Clock {
    pub fn new() -> Clock {
        Clock(tidelog::hlc::wall_millis() << 16)
    }
    pub fn next_stamp(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}
