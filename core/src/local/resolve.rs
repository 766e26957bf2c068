//! What follows a remote apply that met conflicts, once it has committed
//! and with no lock held: the conflict-log entries, and the resolution
//! writes of `keep_local` and of resolvers. A resolution is a new local
//! write (fresh stamp) marked as one, so other nodes apply it by plain
//! last-writer-wins and never resolve it again: that is what lets two
//! `keep_local` nodes converge instead of answering each other forever.

use serde_json::Value;

use crate::error::Result;
use crate::local::codec::{Key, Stamp};
use crate::local::conflict::Resolution;
use crate::local::db::Database;
use crate::local::log::MetaKind;
use crate::local::settle::{FollowUp, Found};

pub(crate) fn after_apply(db: &Database, found: Found) {
    if let Err(e) = crate::local::conflict_log::append(db, found.entries) {
        log::warn!(target: "tidelog::repl", "conflict log: could not append entries: {e}");
    }
    for f in found.follow {
        if let Err(e) = follow_up(db, f) {
            log::warn!(target: "tidelog::repl", "conflict resolution: {e}");
        }
    }
}

fn follow_up(db: &Database, f: FollowUp) -> Result<()> {
    match f {
        FollowUp::KeepLocal {
            table,
            key,
            local,
            local_stamp,
        } => {
            // Only while this node still holds the version it keeps.
            if current_stamp(db, &table, &key)? != Some(local_stamp) {
                return Ok(());
            }
            write_resolution(
                db,
                &table,
                key,
                local.and_then(|j| serde_json::from_str(&j).ok()),
            )
        }
        FollowUp::Ask { case, remote_won } => {
            let Some(resolver) = db
                .shared
                .conflicts
                .resolvers
                .read()
                .get(&case.table)
                .cloned()
            else {
                return Ok(());
            };
            let answer = resolver(&case);
            let lww = if remote_won {
                (case.remote_stamp, case.remote.clone())
            } else {
                (case.local_stamp, case.local.clone())
            };
            // The resolver decides on the state last-writer-wins left: it
            // is written over only while that state is still there.
            if current_stamp(db, &case.table, &case.key)? != Some(lww.0) {
                return Ok(());
            }
            let want = match answer {
                Resolution::TakeRemote => case.remote,
                Resolution::KeepLocal => case.local,
                Resolution::Write(v) => Some(v),
                Resolution::Delete => None,
            };
            if want == lww.1 {
                return Ok(());
            }
            write_resolution(db, &case.table, case.key, want)
        }
    }
}

fn current_stamp(db: &Database, table: &str, key: &Key) -> Result<Option<Stamp>> {
    let store = db.store()?;
    let def = db.table(table)?;
    let rk = crate::local::keys::row_key(def.id, key);
    match store.get(crate::local::storage::Space::Rows, &rk)? {
        Some(v) => Ok(Some(crate::local::row::decode_row_header(&v)?.stamp)),
        None => Ok(None),
    }
}

/// Commits `record` (`None`: a delete of `key`) as a resolution write.
fn write_resolution(db: &Database, table: &str, key: Key, record: Option<Value>) -> Result<()> {
    let mut tx = db.transaction();
    tx.kind = MetaKind::Resolution;
    match record {
        Some(v) => tx.upsert(table, v)?,
        None => tx.delete(table, key)?,
    };
    tx.commit().map(|_| ())
}
