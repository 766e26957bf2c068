//! What a data directory takes on disk, split by what it holds, so that an
//! operator (and the local benchmark) can tell records and indexes from the
//! transaction log and the engine's journal.

use crate::error::Result;
use crate::local::db::Database;
use crate::local::storage::Space;

/// Bytes on disk by what they hold. The split is known for fjall only;
/// sled keeps everything in one tree, so there only `total` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Everything under the data directory's engine files.
    pub total: u64,
    /// Table files of records and tombstones.
    pub records: Option<u64>,
    /// Table files of secondary index and expiry entries.
    pub indexes: Option<u64>,
    /// Table files of the transaction log.
    pub log: Option<u64>,
    /// The engine's journal: recent writes of every kind not yet in table
    /// files (see [`Database::checkpoint`]).
    pub journal: Option<u64>,
}

impl Database {
    /// Bytes on disk, split by records, indexes, log and journal.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        // Asked before the split, not while holding the store: a second
        // read lock behind a waiting writer would deadlock.
        let total = self.disk_bytes()?;
        let store = self.store()?;
        Ok(DiskUsage {
            total,
            records: store.space_disk_bytes(Space::Rows),
            indexes: store.space_disk_bytes(Space::Index),
            log: store.space_disk_bytes(Space::Log),
            journal: store.journal_bytes()?,
        })
    }

    /// Writes the engine's in-memory write buffers out to its table files
    /// and waits, so the table files hold every commit (the journal then
    /// only repeats them until the engine drops it). Commits are durable
    /// without this; it is for measuring disk use or before copying files.
    pub fn checkpoint(&self) -> Result<()> {
        self.flush()?;
        self.store()?.write_out_buffers()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{Database, EngineKind, OpenOptions, TableOptions};

    fn fill(db: &Database) {
        db.create_table("t", TableOptions::default().index("s"))
            .unwrap();
        for i in 0..3000 {
            let rec = json!({"id": i, "s": format!("s-{}", i % 30), "site": "plant-7/line-3"});
            db.upsert("t", rec).unwrap();
        }
    }

    #[test]
    fn checkpoint_moves_writes_into_table_files_and_usage_splits_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), OpenOptions::new("n1")).unwrap();
        fill(&db);
        let before = db.disk_usage().unwrap();
        db.checkpoint().unwrap();
        let after = db.disk_usage().unwrap();
        let (records, indexes, log) = (
            after.records.unwrap(),
            after.indexes.unwrap(),
            after.log.unwrap(),
        );
        assert!(
            records > before.records.unwrap(),
            "the records left the write buffer: {before:?} -> {after:?}"
        );
        assert!(indexes > 0 && log > 0, "{after:?}");
        assert!(
            after.total >= records + indexes + log,
            "the total holds the parts: {after:?}"
        );
        assert_eq!(db.count("t").unwrap(), 3000, "nothing lost");
    }

    #[test]
    fn sled_reports_only_a_total() {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions::new("n1").engine(EngineKind::Sled);
        let db = Database::open(dir.path(), opts).unwrap();
        fill(&db);
        db.checkpoint().unwrap();
        let u = db.disk_usage().unwrap();
        assert!(u.total > 0, "{u:?}");
        assert_eq!(
            (u.records, u.indexes, u.log, u.journal),
            (None, None, None, None)
        );
    }
}
