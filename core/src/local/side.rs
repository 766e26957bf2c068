//! What a row keeps for conflict handling: the stamp of the version its
//! current version replaced at its origin (its *base*, so a late older
//! write can be told from a concurrent one), in the row header
//! (`row::RowHeader::base`), and, beside the row in the meta space under
//! `side/<row key>`, the merge state (`merge`) of a record that has
//! per-attribute overrides or counters, written with its base. Rows
//! written while the conflict log is off, and rows older than it, have
//! neither. Older versions kept every base in a side entry; those entries
//! still read (see [`tables_with_sides`]) and go at the row's next write.

use crate::error::{Error, Result};
use crate::local::codec::Stamp;
use crate::local::merge::MergeState;

const PREFIX: &[u8] = b"side/";

/// The side entry of a row.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Side {
    /// The base of the row's current version.
    pub(crate) base: Stamp,
    pub(crate) state: Option<MergeState>,
}

const STATEFUL_PREFIX: &[u8] = b"stateful/";

/// Marks table `id` as having records with a merge state, so writes to its
/// other records look for one (and writes to other tables need not).
pub(crate) fn stateful_key(table: u32) -> Vec<u8> {
    let mut k = STATEFUL_PREFIX.to_vec();
    k.extend_from_slice(&table.to_be_bytes());
    k
}

/// The tables marked by [`stateful_key`].
pub(crate) fn stateful_tables(store: &crate::local::storage::Store) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for item in store.prefix(crate::local::storage::Space::Meta, STATEFUL_PREFIX, false) {
        let (k, _) = item?;
        let id = k
            .get(STATEFUL_PREFIX.len()..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(|| Error::Corrupt("stateful table mark".into()))?;
        out.push(u32::from_be_bytes(id));
    }
    Ok(out)
}

/// The tables with any side entry: those with merge states, and those
/// whose rows still have their base in a side entry (written before bases
/// moved into the row). Their writes look the entry up. One seek per
/// table, not one read per entry.
pub(crate) fn tables_with_sides(store: &crate::local::storage::Store) -> Result<Vec<u32>> {
    use std::ops::Bound;
    let mut out = Vec::new();
    let mut lo = PREFIX.to_vec();
    let hi = crate::local::storage::prefix_successor(PREFIX).map(Bound::Excluded);
    loop {
        let hi = hi.clone().unwrap_or(Bound::Unbounded);
        let first = store
            .range(
                crate::local::storage::Space::Meta,
                Bound::Included(lo),
                hi,
                false,
            )
            .next();
        let Some(item) = first else { break };
        let (k, _) = item?;
        let id = k
            .get(PREFIX.len()..)
            .and_then(crate::local::keys::table_id_of_row)
            .ok_or_else(|| Error::Corrupt("side entry key without a table id".into()))?;
        out.push(id);
        match id.checked_add(1) {
            Some(next) => lo = side_prefix(next),
            None => break,
        }
    }
    Ok(out)
}

pub(crate) fn side_key(row_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + row_key.len());
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(row_key);
    k
}

/// Prefix of every side entry of table `id`'s rows (purged with them).
pub(crate) fn side_prefix(table: u32) -> Vec<u8> {
    side_key(&crate::local::keys::row_prefix(table))
}

impl Side {
    /// 16 bytes of base, then the merge state as JSON if there is one
    /// (JSON: the state holds JSON values, which postcard cannot carry).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.base.time.to_be_bytes());
        v.extend_from_slice(&self.base.node.to_be_bytes());
        if let Some(s) = &self.state {
            // Serializing plain owned data cannot fail.
            v.extend_from_slice(&serde_json::to_vec(s).unwrap_or_default());
        }
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Side> {
        if v.len() < 16 {
            return Err(Error::Corrupt(
                "side entry shorter than its base stamp".into(),
            ));
        }
        let u = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[r]);
            u64::from_be_bytes(b)
        };
        let base = Stamp {
            time: u(0..8),
            node: u(8..16),
        };
        let state = if v.len() > 16 {
            Some(
                serde_json::from_slice(&v[16..])
                    .map_err(|e| Error::Corrupt(format!("merge state: {e}")))?,
            )
        } else {
            None
        };
        Ok(Side { base, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_garbage_is_corrupt_not_panic() {
        let state = MergeState {
            base_stamp: Stamp { time: 5, node: 1 },
            ..Default::default()
        };
        for side in [
            Side::default(),
            Side {
                base: Stamp { time: 9, node: 3 },
                state: Some(state),
            },
        ] {
            assert_eq!(Side::decode(&side.encode()).unwrap(), side);
        }
        for bad in [&b"short"[..], &[0u8; 17][..], &[1u8; 20][..]] {
            assert!(matches!(Side::decode(bad), Err(Error::Corrupt(_))));
        }
    }
}
