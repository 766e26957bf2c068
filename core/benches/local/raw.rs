//! The raw engine floors: the same atomic unit tidelog commits (the record
//! with tidelog's row header, one index entry, one log entry holding the
//! full after-image), written straight to the engine with tidelog's engine
//! settings and nothing else: no JSON handling, no read of the old row, no
//! locks of its own.

use std::hint::black_box;
use std::ops::Range;
use std::path::Path;

use fjall::{Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::contenders::{budget, Clock, Contender, Flusher, Res};
use crate::workload::{
    id_from_index_key, index_key, index_prefix, log_push, log_start, row_key, row_value,
    sensor_name, Workload, ROW_HEADER,
};

pub struct RawFjall {
    // Field order: the flusher stops before the database drops.
    flusher: Flusher,
    db: fjall::Database,
    rows: Keyspace,
    index: Keyspace,
    log: Keyspace,
    wl: Workload,
    text: String,
    clock: Clock,
    seq: u64,
}

impl RawFjall {
    /// Mirrors `Store::open` in core/src/local/storage.rs: the same cache and
    /// per-keyspace memtable sizes, journal cap 64 MiB, four keyspaces (meta
    /// stays idle here, as it does in tidelog's write path).
    /// `db.batch()` hands each commit to the OS (`PersistMode::Buffer`), as
    /// tidelog's do; `Flusher` adds the grouped fsync.
    pub fn open(dir: &Path, wl: Workload) -> Res<RawFjall> {
        // The same split as tidelog's `FjallSizes::for_budget`: a quarter
        // (less the metadata memtable) for the cache, the write buffers
        // mostly for records and log.
        let sixteenth = budget() / 16;
        let db = fjall::Database::builder(dir)
            .cache_size(4 * sixteenth - (1 << 20))
            .max_journaling_size(64 << 20)
            .open()?;
        let ks = |name: &str, memtable: u64| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let (_meta, rows, index, log) = (
            ks("meta", 1 << 20)?,
            ks("rows", 5 * sixteenth)?,
            ks("index", 2 * sixteenth)?,
            ks("log", 5 * sixteenth)?,
        );
        let flush_db = db.clone();
        let flusher = Flusher::start(move || {
            let _ = flush_db.persist(PersistMode::SyncData);
        });
        Ok(RawFjall {
            flusher,
            db,
            rows,
            index,
            log,
            wl,
            text: String::with_capacity(128),
            clock: Clock::new(),
            seq: 1,
        })
    }
}

impl Contender for RawFjall {
    fn write_one(&mut self, i: u64) -> Res<()> {
        self.wl.text(i, &mut self.text);
        let stamp = self.clock.next_stamp();
        let mut b = self.db.batch();
        b.insert(&self.rows, row_key(i), row_value(stamp, &self.text));
        let sensor = sensor_name(self.wl.sensor(i));
        b.insert(&self.index, index_key(&sensor, i), Vec::new());
        let mut entry = log_start(stamp, 1);
        log_push(&mut entry, i, stamp, &self.text);
        b.insert(&self.log, self.seq.to_be_bytes().to_vec(), entry);
        self.seq += 1;
        b.commit()?;
        self.flusher.mark();
        Ok(())
    }

    fn write_many(&mut self, ids: Range<u64>) -> Res<()> {
        let stamp = self.clock.next_stamp();
        let mut b = self.db.batch();
        let mut entry = log_start(stamp, ids.clone().count());
        for i in ids {
            self.wl.text(i, &mut self.text);
            b.insert(&self.rows, row_key(i), row_value(stamp, &self.text));
            let sensor = sensor_name(self.wl.sensor(i));
            b.insert(&self.index, index_key(&sensor, i), Vec::new());
            log_push(&mut entry, i, stamp, &self.text);
        }
        b.insert(&self.log, self.seq.to_be_bytes().to_vec(), entry);
        self.seq += 1;
        b.commit()?;
        self.flusher.mark();
        Ok(())
    }

    fn get(&mut self, i: u64) -> Res<usize> {
        Ok(self
            .rows
            .get(row_key(i))?
            .map_or(0, |v| v.len() - ROW_HEADER))
    }

    fn find(&mut self, s: u64) -> Res<usize> {
        let mut n = 0;
        for guard in self.index.prefix(index_prefix(&sensor_name(s))) {
            let k = guard.key()?;
            if let Some(v) = self.rows.get(row_key(id_from_index_key(&k)))? {
                black_box(&v);
                n += 1;
            }
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Res<()> {
        let RawFjall { flusher, db, .. } = *self;
        drop(flusher);
        db.persist(PersistMode::SyncData)?;
        Ok(())
    }
}

/// sled: one tree, keys behind a keyspace byte, one `apply_batch` per unit,
/// as `Store` does.
pub struct RawSled {
    flusher: Flusher,
    db: sled::Db,
    wl: Workload,
    text: String,
    clock: Clock,
    seq: u64,
}

const ROWS: u8 = 1;
const INDEX: u8 = 2;
const LOG: u8 = 3;

fn sk(space: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space);
    k.extend_from_slice(key);
    k
}

impl RawSled {
    pub fn open(dir: &Path, wl: Workload) -> Res<RawSled> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(budget())
            .flush_every_ms(None)
            .open()?;
        let flush_db = db.clone();
        let flusher = Flusher::start(move || {
            let _ = flush_db.flush();
        });
        Ok(RawSled {
            flusher,
            db,
            wl,
            text: String::with_capacity(128),
            clock: Clock::new(),
            seq: 1,
        })
    }

    fn stage(&mut self, b: &mut sled::Batch, i: u64, stamp: u64) {
        self.wl.text(i, &mut self.text);
        b.insert(sk(ROWS, &row_key(i)), row_value(stamp, &self.text));
        let sensor = sensor_name(self.wl.sensor(i));
        b.insert(sk(INDEX, &index_key(&sensor, i)), Vec::new());
    }
}

impl Contender for RawSled {
    fn write_one(&mut self, i: u64) -> Res<()> {
        let stamp = self.clock.next_stamp();
        let mut b = sled::Batch::default();
        self.stage(&mut b, i, stamp);
        let mut entry = log_start(stamp, 1);
        log_push(&mut entry, i, stamp, &self.text);
        b.insert(sk(LOG, &self.seq.to_be_bytes()), entry);
        self.seq += 1;
        self.db.apply_batch(b)?;
        self.flusher.mark();
        Ok(())
    }

    fn write_many(&mut self, ids: Range<u64>) -> Res<()> {
        let stamp = self.clock.next_stamp();
        let mut b = sled::Batch::default();
        let mut entry = log_start(stamp, ids.clone().count());
        for i in ids {
            self.stage(&mut b, i, stamp);
            log_push(&mut entry, i, stamp, &self.text);
        }
        b.insert(sk(LOG, &self.seq.to_be_bytes()), entry);
        self.seq += 1;
        self.db.apply_batch(b)?;
        self.flusher.mark();
        Ok(())
    }

    fn get(&mut self, i: u64) -> Res<usize> {
        Ok(self
            .db
            .get(sk(ROWS, &row_key(i)))?
            .map_or(0, |v| v.len() - ROW_HEADER))
    }

    fn find(&mut self, s: u64) -> Res<usize> {
        let mut n = 0;
        for item in self
            .db
            .scan_prefix(sk(INDEX, &index_prefix(&sensor_name(s))))
        {
            let (k, _) = item?;
            if let Some(v) = self.db.get(sk(ROWS, &row_key(id_from_index_key(&k))))? {
                black_box(&v);
                n += 1;
            }
        }
        Ok(n)
    }

    fn close(self: Box<Self>) -> Res<()> {
        let RawSled { flusher, db, .. } = *self;
        drop(flusher);
        db.flush()?;
        Ok(())
    }
}
