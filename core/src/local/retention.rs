//! Log retention. Entries leave the log from the oldest end once every
//! publishing peer acknowledged them, or when the byte or age cap forces it.
//! The newest entry always stays: the next sequence number and the clock's
//! high-water mark are recovered from it at open.
//!
//! Trimming reads without the commit lock (entries below the newest are
//! immutable) and takes the lock only to commit each chunk of deletes, so
//! it never holds up commits for more than one small batch.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::local::codec::take_key;
use crate::local::db::Database;
use crate::local::keys::{expiry_key, row_key, seq_from_key, seq_key, TOMBSTONE_INDEX};
use crate::local::log::LogEntry;
use crate::local::row::decode_row;
use crate::local::storage::{Batch, Space};

/// Per commit of deletes: the most log sequence numbers one trim step
/// covers, and the most tombstone index entries one collection step reads.
const TRIM_CHUNK: usize = 1000;

/// What one trim pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TrimReport {
    /// Sequence numbers the log's start moved past: the entries deleted
    /// and any that were never written between them.
    pub(crate) removed: u64,
    /// The first sequence still in the log afterwards.
    pub(crate) first: u64,
    /// Entries removed by a cap although a peer had not acknowledged them.
    pub(crate) forced: u64,
}

/// Trims the log. `acked_floor` is the lowest sequence every publishing
/// peer acknowledged (`u64::MAX` if there is no such peer, 0 if replication
/// is not running, so that only the caps apply).
pub(crate) fn trim_log(db: &Database, acked_floor: u64, now_ms: u64) -> Result<TrimReport> {
    let retention = db.options().retention;
    let age_cutoff = retention
        .log_max_age
        .map(|a| crate::local::hlc::millis_to_hlc(now_ms.saturating_sub(a.as_millis() as u64)));
    let keep_after = (!retention.log_min_age.is_zero()).then(|| {
        crate::local::hlc::millis_to_hlc(
            now_ms.saturating_sub(retention.log_min_age.as_millis() as u64),
        )
    });
    let mut report = TrimReport::default();
    loop {
        let (first, last, bytes) = {
            let w = db.shared.write.lock();
            (w.first_seq, w.next_seq - 1, w.log_bytes)
        };
        report.first = first;
        if first >= last {
            return Ok(report);
        }
        let store = db.shared.writable_store()?;
        let mut over = bytes.saturating_sub(retention.log_max_bytes);
        let mut batch = Batch::default();
        let (mut freed, mut next_first, mut forced) = (0u64, first, 0u64);
        // A scan bounded by this chunk opens only the log tables that hold
        // it: one up to the newest entry opened every table of the log at
        // once, each with a block loaded (2-3 MiB held at the peak of
        // 3,000,000 single-record commits, under heaptrack).
        let bound = last.min(first.saturating_add(TRIM_CHUNK as u64));
        let iter = store.range(
            Space::Log,
            Bound::Included(seq_key(first).to_vec()),
            Bound::Excluded(seq_key(bound).to_vec()),
            false,
        );
        let mut stopped = false;
        for item in iter {
            let (k, v) = item?;
            let seq = seq_from_key(&k)?;
            let size = (k.len() + v.len()) as u64;
            let local_time = if age_cutoff.is_some() || keep_after.is_some() {
                LogEntry::decode_local_time(&v)?
            } else {
                0
            };
            let acked = seq <= acked_floor && keep_after.is_none_or(|k| local_time < k);
            let too_big = over > 0;
            let too_old = age_cutoff.is_some_and(|cut| local_time < cut);
            if !(acked || too_big || too_old) {
                stopped = true;
                break;
            }
            forced += u64::from(!acked);
            over = over.saturating_sub(size);
            freed += size;
            batch.delete(Space::Log, k.to_vec());
            next_first = seq + 1;
        }
        if !stopped {
            // Every sequence below the bound is deleted by this batch or
            // was never written, so a gap cannot hold trimming back.
            next_first = bound;
        }
        if next_first == first {
            return Ok(report);
        }
        let n = next_first - first;
        {
            let mut w = db.shared.write.lock();
            if !batch.is_empty() {
                db.shared.commit(&store, batch, false, None)?;
            }
            w.first_seq = next_first;
            w.log_bytes = w.log_bytes.saturating_sub(freed);
            w.log_sizes.trimmed(next_first);
        }
        db.shared.dirty.store(true, Ordering::Release);
        report.removed += n;
        report.forced += forced;
        report.first = next_first;
        if stopped || bound == last {
            return Ok(report);
        }
    }
}

/// Purges tombstones that no longer protect anything, oldest first:
/// older than `tombstone_min_age` and acknowledged by every publishing peer
/// (their log sequence is at or below `acked_floor`), or older than
/// `tombstone_max_age` regardless. Returns how many it purged.
///
/// The trade-off: once purged, a write older than the delete that arrives
/// later (from a peer that was away longer than the grace period, or that
/// only sends to this node) applies again and brings the record back.
pub(crate) fn collect_tombstones(db: &Database, acked_floor: u64, now_ms: u64) -> Result<u64> {
    let retention = db.options().retention;
    let min_cut = now_ms.saturating_sub(retention.tombstone_min_age.as_millis() as u64);
    let max_cut = now_ms.saturating_sub(retention.tombstone_max_age.as_millis() as u64);
    let tables: Vec<_> = db.shared.catalog.read().tables.values().cloned().collect();
    let mut purged = 0;
    for def in tables {
        let prefix = def.index_prefix(TOMBSTONE_INDEX);
        let mut hi = prefix.to_vec();
        hi.extend_from_slice(&min_cut.to_be_bytes());
        loop {
            let store = db.shared.writable_store()?;
            let _w = db.shared.write.lock();
            if !db.shared.catalog.read().tables.contains_key(&def.name) {
                break;
            }
            let mut batch = Batch::default();
            let mut looked = 0;
            let iter = store.range(
                Space::Index,
                Bound::Included(prefix.to_vec()),
                Bound::Excluded(hi.clone()),
                false,
            );
            for item in iter.take(TRIM_CHUNK) {
                looked += 1;
                let (ik, _) = item?;
                let millis = u64::from_be_bytes(
                    ik[prefix.len()..prefix.len() + 8]
                        .try_into()
                        .map_err(|_| crate::Error::Corrupt("tombstone index key".into()))?,
                );
                let (key, _) = take_key(&ik[prefix.len() + 8..])?;
                let rk = row_key(def.id, &key);
                let Some(row) = store.get(Space::Rows, &rk)? else {
                    batch.delete(Space::Index, ik.to_vec());
                    continue;
                };
                let (h, body_at) = decode_row(&row)?;
                if !h.tombstone || h.stamp.millis() != millis {
                    // Stale entry; the write path normally removes these.
                    batch.delete(Space::Index, ik.to_vec());
                    continue;
                }
                let seq = row
                    .get(body_at..body_at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                if seq <= acked_floor || millis < max_cut {
                    batch.delete(Space::Index, ik.to_vec());
                    batch.delete(Space::Rows, rk);
                    if def.keeps_age_index() {
                        batch.delete(Space::Index, expiry_key(def.id, millis, &key));
                    }
                    purged += 1;
                }
            }
            if !batch.is_empty() {
                db.shared.commit(&store, batch, false, None)?;
                db.shared.dirty.store(true, Ordering::Release);
            }
            if looked < TRIM_CHUNK {
                break;
            }
        }
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OpenOptions, TableOptions};
    use serde_json::json;

    fn db_with(retention: crate::local::db::Retention) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1").retention(retention)).unwrap();
        db.create_table("t", TableOptions::default()).unwrap();
        (dir, db)
    }

    #[test]
    fn acknowledged_entries_go_and_the_newest_always_stays() {
        let (_d, db) = db_with(Default::default());
        for i in 0..2500 {
            db.upsert("t", json!({"id": i})).unwrap();
        }
        let r = trim_log(&db, 1200, crate::local::hlc::wall_millis()).unwrap();
        assert_eq!((r.removed, r.first, r.forced), (1200, 1201, 0));
        assert_eq!(db.read_log(1, 10).unwrap()[0].seq, 1201);
        let r = trim_log(&db, u64::MAX, crate::local::hlc::wall_millis()).unwrap();
        assert_eq!(r.first, 2500, "the newest entry stays");
        assert_eq!(db.log_bounds().unwrap().first, 2500);
        // Sequence numbers and data are unaffected.
        assert_eq!(db.upsert("t", json!({"id": 1})).unwrap().seq, 2501);
        assert_eq!(db.count("t").unwrap(), 2500);
    }

    /// The scan reads one chunk of sequence numbers at a time; a stretch
    /// with no entries at all (longer than a chunk) must not stop trimming
    /// short of what is acknowledged.
    #[test]
    fn a_gap_in_the_log_longer_than_a_chunk_does_not_stall_trimming() {
        let (_d, db) = db_with(Default::default());
        for i in 0..3000 {
            db.upsert("t", json!({"id": i})).unwrap();
        }
        let store = db.shared.writable_store().unwrap();
        let mut gap = Batch::default();
        for seq in 1..=2 * TRIM_CHUNK as u64 + 10 {
            gap.delete(Space::Log, seq_key(seq).to_vec());
        }
        db.shared.commit(&store, gap, false, None).unwrap();
        drop(store);
        let r = trim_log(&db, 2600, crate::local::hlc::wall_millis()).unwrap();
        assert_eq!(r.first, 2601, "{r:?}");
        assert_eq!(db.log_bounds().unwrap().first, 2601);
        assert_eq!(db.read_log(1, 10).unwrap()[0].seq, 2601);
        let r = trim_log(&db, u64::MAX, crate::local::hlc::wall_millis()).unwrap();
        assert_eq!(r.first, 3000, "the newest entry stays");
    }

    #[test]
    fn the_byte_cap_trims_unacknowledged_entries_and_says_so() {
        let (_d, db) = db_with(crate::local::db::Retention {
            log_max_bytes: 20_000,
            ..Default::default()
        });
        for i in 0..1000 {
            db.upsert("t", json!({"id": i, "pad": "x".repeat(50)}))
                .unwrap();
        }
        let before = db.log_bounds().unwrap().bytes;
        assert!(before > 20_000);
        let r = trim_log(&db, 0, crate::local::hlc::wall_millis()).unwrap();
        let after = db.log_bounds().unwrap();
        assert!(after.bytes <= 20_000, "{after:?}");
        assert_eq!(r.forced, r.removed);
        assert!(r.removed > 0);
        // Reopen recomputes the same size from disk.
        let dir = db.path().to_path_buf();
        db.close().unwrap();
        let db = Database::open(&dir, OpenOptions::new("n1")).unwrap();
        assert_eq!(db.log_bounds().unwrap().first, after.first);
        assert_eq!(db.log_bounds().unwrap().bytes, after.bytes);
    }

    #[test]
    fn the_age_cap_trims_old_entries() {
        let (_d, db) = db_with(crate::local::db::Retention {
            log_max_age: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        });
        for i in 0..10 {
            db.upsert("t", json!({"id": i})).unwrap();
        }
        let now = crate::local::hlc::wall_millis();
        assert_eq!(trim_log(&db, 0, now).unwrap().removed, 0);
        let r = trim_log(&db, 0, now + 120_000).unwrap();
        assert_eq!((r.removed, r.forced), (9, 9));
    }

    #[test]
    fn tombstones_are_collected_once_acknowledged_and_old_enough() {
        use crate::{Key, LogWrite, RemoteTxn, Stamp, WriteOp};
        let (_d, db) = db_with(Default::default());
        db.upsert("t", json!({"id": 1})).unwrap();
        db.delete("t", 1).unwrap();
        let del_seq = db.log_bounds().unwrap().last;
        let older = |db: &Database| {
            let t = RemoteTxn {
                stamp: Stamp {
                    time: 1 << 16,
                    node: 7,
                },
                writes: vec![LogWrite {
                    table: "t".into(),
                    key: Key::Int(1),
                    op: WriteOp::Put {
                        json: "{\"id\":1}".into(),
                        created: 1 << 16,
                    },
                }],
            };
            db.apply_remote(&[t], None).unwrap();
        };
        let now = crate::local::hlc::wall_millis();
        // Young, or not acknowledged: the tombstone stays and wins.
        assert_eq!(collect_tombstones(&db, u64::MAX, now).unwrap(), 0);
        assert_eq!(
            collect_tombstones(&db, del_seq - 1, now + 2 * 3_600_000).unwrap(),
            0
        );
        older(&db);
        assert!(
            db.get("t", 1).unwrap().is_none(),
            "tombstone beats the older write"
        );
        // Acknowledged and past the grace period: collected.
        assert_eq!(
            collect_tombstones(&db, del_seq, now + 2 * 3_600_000).unwrap(),
            1
        );
        // The documented trade-off: an older write now brings it back.
        older(&db);
        assert!(db.get("t", 1).unwrap().is_some());
        // The age cap collects without any acknowledgement.
        db.delete("t", 1).unwrap();
        assert_eq!(
            collect_tombstones(&db, 0, now + 31 * 86_400_000).unwrap(),
            1
        );
    }

    #[test]
    fn a_minimum_age_keeps_acknowledged_entries_for_local_readers() {
        let (_d, db) = db_with(crate::local::db::Retention {
            log_min_age: std::time::Duration::from_secs(600),
            ..Default::default()
        });
        for i in 0..10 {
            db.upsert("t", json!({"id": i})).unwrap();
        }
        let now = crate::local::hlc::wall_millis();
        assert_eq!(trim_log(&db, u64::MAX, now).unwrap().removed, 0);
        assert_eq!(trim_log(&db, u64::MAX, now + 700_000).unwrap().removed, 9);
    }

    /// The log's bytes from `from` on, by reading every entry.
    fn scanned(db: &Database, from: u64) -> (u64, u64) {
        let store = db.store().unwrap();
        let (mut n, mut bytes) = (0, 0);
        for item in store.range(Space::Log, Bound::Unbounded, Bound::Unbounded, false) {
            let (k, v) = item.unwrap();
            if seq_from_key(&k).unwrap() >= from {
                n += 1;
                bytes += (k.len() + v.len()) as u64;
            }
        }
        (n, bytes)
    }

    fn assert_backlogs_exact(db: &Database) {
        let b = db.log_bounds().unwrap();
        let mut froms: Vec<u64> = (0..=b.last + 2).step_by(97).collect();
        froms.extend([0, 1, b.first - 1, b.first, b.first + 1, b.last, b.last + 1]);
        for m in (0..=b.last / 1024).map(|k| k * 1024) {
            froms.extend([m.saturating_sub(1), m, m + 1, m + 2]);
        }
        for from in froms {
            let got = db.log_backlog(from).unwrap();
            let (n, bytes) = scanned(db, from);
            assert_eq!((got.txns, got.bytes), (n, bytes), "from {from}, log {b:?}");
            assert_eq!(got.oldest_local_time.is_some(), n > 0, "from {from}");
        }
        assert_eq!(db.log_backlog(0).unwrap().bytes, b.bytes);
    }

    #[test]
    fn backlogs_count_only_what_the_log_still_holds_exactly() {
        use crate::{Key, LogWrite, RemoteTxn, Stamp, WriteOp};
        let (_d, db) = db_with(Default::default());
        // Entries of different sizes, local and applied from a peer in
        // batches, across several size marks.
        for i in 0..2500 {
            db.upsert("t", json!({"id": i, "pad": "x".repeat(i % 40)}))
                .unwrap();
        }
        let remote: Vec<RemoteTxn> = (0..1500)
            .map(|i| RemoteTxn {
                stamp: Stamp {
                    time: (crate::local::hlc::wall_millis() << 16) + i,
                    node: 7,
                },
                writes: vec![LogWrite {
                    table: "t".into(),
                    key: Key::Int(10_000 + i as i64),
                    op: WriteOp::Put {
                        json: format!("{{\"id\":{}}}", 10_000 + i),
                        created: 1 << 16,
                    },
                }],
            })
            .collect();
        db.apply_remote(&remote, None).unwrap();
        assert_eq!(db.log_bounds().unwrap().last, 4000);
        assert_backlogs_exact(&db);
        // Trimmed by acknowledgement, then by the byte cap.
        trim_log(&db, 1500, crate::local::hlc::wall_millis()).unwrap();
        assert_eq!(db.log_bounds().unwrap().first, 1501);
        assert_backlogs_exact(&db);
        // Reopen finds the same sizes on disk; a small cap makes the
        // background trim cut into them.
        let dir = db.path().to_path_buf();
        db.close().unwrap();
        let cap = crate::local::db::Retention {
            log_max_bytes: 60_000,
            ..Default::default()
        };
        let db = Database::open(&dir, OpenOptions::new("n1").retention(cap)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while db.log_bounds().unwrap().bytes > 60_000 {
            assert!(std::time::Instant::now() < deadline, "never trimmed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(db.log_bounds().unwrap().first > 1501);
        assert_backlogs_exact(&db);
        db.close().unwrap();
        let db = Database::open(&dir, OpenOptions::new("n1")).unwrap();
        for i in 0..1100 {
            db.upsert("t", json!({"id": i})).unwrap();
        }
        assert_backlogs_exact(&db);
    }
}
