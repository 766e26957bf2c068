//! fjall alone answering the footprint phase's point gets: the same rows
//! (tidelog's row bytes under tidelog's keys; no index, no log) in one
//! keyspace with tidelog's record settings (2 KiB lz4 blocks, partitioned
//! block index, tables cut at a quarter of the budget), its write buffer
//! flushed before reading, with the whole memory budget as its block cache
//! (tidelog's cache gets a quarter of it). What separates a tidelog get
//! from this one is tidelog's own work and its smaller cache; what
//! separates this one from SQLite's is the engine.
//! Other shapes measured, each compacted into one sorted run first
//! (1,000,000 records, 16 MiB, this 2-core machine, SQLite 221,000-250,000
//! gets/s in the same minutes): uncompressed blocks with one index block
//! per table 210,000-215,000 gets/s, uncompressed and partitioned
//! 182,000-209,000, lz4 and partitioned 171,000-192,000; a 1 GiB cache
//! that held every uncompressed block 312,000-380,000 (1.3-1.9x SQLite, at
//! 250 MiB of RSS: what fjall's get costs when nothing is read).

use std::ops::Range;
use std::path::Path;

use fjall::config::{BlockSizePolicy, CompressionPolicy, PartitioningPolicy};
use fjall::{Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::contenders::{budget, Clock, Contender, Res};
use crate::workload::{row_key, row_value, Workload, ROW_HEADER};

pub struct FjallAlone {
    db: fjall::Database,
    rows: Keyspace,
    wl: Workload,
    text: String,
    clock: Clock,
}

impl FjallAlone {
    pub fn open(dir: &Path, wl: Workload) -> Res<FjallAlone> {
        let db = fjall::Database::builder(dir).cache_size(budget()).open()?;
        // As `keyspace_options` in core/src/local/storage.rs sets up the
        // record space.
        let rows = db.keyspace("rows", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(budget() / 4)
                .compaction_strategy(std::sync::Arc::new(
                    fjall::compaction::Leveled::default()
                        .with_table_target_size((budget() / 4).clamp(4 << 20, 64 << 20)),
                ))
                .data_block_size_policy(BlockSizePolicy::all(2 << 10))
                .index_block_partitioning_policy(PartitioningPolicy::all(true))
                .data_block_compression_policy(CompressionPolicy::all(fjall::CompressionType::Lz4))
        })?;
        Ok(FjallAlone {
            db,
            rows,
            wl,
            text: String::with_capacity(128),
            clock: Clock::new(),
        })
    }
}

impl Contender for FjallAlone {
    fn write_one(&mut self, i: u64) -> Res<()> {
        self.wl.text(i, &mut self.text);
        let stamp = self.clock.next_stamp();
        self.rows.insert(row_key(i), row_value(stamp, &self.text))?;
        Ok(())
    }

    fn write_many(&mut self, ids: Range<u64>) -> Res<()> {
        let stamp = self.clock.next_stamp();
        let mut b = self.db.batch();
        for i in ids {
            self.wl.text(i, &mut self.text);
            b.insert(&self.rows, row_key(i), row_value(stamp, &self.text));
        }
        b.commit()?;
        Ok(())
    }

    /// Every record in a table file: gets read the engine's tables only.
    fn before_reads(&mut self) -> Res<()> {
        self.db.persist(PersistMode::SyncData)?;
        self.rows.rotate_memtable_and_wait()?;
        Ok(())
    }

    /// A store that missed records would be fast for the wrong reason.
    fn get(&mut self, i: u64) -> Res<usize> {
        match self.rows.get(row_key(i))? {
            Some(v) => Ok(v.len() - ROW_HEADER),
            None => Err(format!("fjall-alone: record {i} is missing").into()),
        }
    }

    /// Holds no index: this contender is for point gets.
    fn find(&mut self, _s: u64) -> Res<usize> {
        Ok(0)
    }

    fn close(self: Box<Self>) -> Res<()> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }
}
