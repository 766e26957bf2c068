//! The merge state of a local write: what a record's row stands for when
//! it has no state yet, and the merge operations of an increment. Below
//! both the write path (`write`) and the settling of remote writes
//! (`settle`), which build on it.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::local::catalog::TableDef;
use crate::local::codec::{Key, Stamp};
use crate::local::log::MetaKind;
use crate::local::merge::{contribute, MergeOp, MergeState};
use crate::local::row::OldRow;
use crate::local::side::Side;

/// The merge state a record without one stands for: its row as the base.
pub(crate) fn state_from_row(old: Option<&OldRow>) -> Result<MergeState> {
    let mut s = MergeState::default();
    if let Some(o) = old {
        s.base_stamp = o.header.stamp;
        if !o.header.tombstone {
            s.base = Some(o.json.to_string());
            s.created = o.header.created;
        }
    }
    Ok(s)
}

/// What a local write does to a record with (or gaining) a merge state.
pub(crate) struct LocalMerge {
    pub(crate) ops: Vec<MergeOp>,
    pub(crate) kind: MetaKind,
    /// The after-image the log carries for a whole write (`None`: a
    /// delete, or a patch or count, which log the visible record): the
    /// record's text as written.
    pub(crate) logged: Option<String>,
}

/// The merge operations of a local increment, checked: `NotACounter` and
/// `CounterOverflow` refuse it before anything is staged.
pub(crate) fn local_increment(
    state: &MergeState,
    def: &TableDef,
    key: &Key,
    attr: &str,
    by: i64,
    stamp: Stamp,
) -> Result<LocalMerge> {
    let visible = state.visible();
    let init = visible.is_none();
    let mut check = visible.unwrap_or_default();
    // Refuses a non-integer attribute and a sum beyond i64.
    crate::local::counter::add(&mut check, &def.name, key, attr, by)?;
    let had = state
        .counters
        .get(attr)
        .and_then(|o| o.get(&stamp.node))
        .copied()
        .unwrap_or_default();
    let totals = contribute(had, by, stamp).ok_or_else(|| Error::CounterOverflow {
        table: def.name.clone(),
        key: key.to_string(),
        attribute: attr.to_string(),
        by,
    })?;
    let mut ops = Vec::with_capacity(2);
    if init {
        ops.push(init_op(def, key, stamp));
    }
    ops.push(MergeOp::Count {
        attr: attr.to_string(),
        origin: stamp.node,
        totals,
    });
    Ok(LocalMerge {
        ops,
        kind: MetaKind::Count {
            attr: attr.to_string(),
            added: totals.added,
            taken: totals.taken,
            init,
        },
        logged: None,
    })
}

/// The record an increment creates where there was none: its key alone.
pub(crate) fn init_op(def: &TableDef, key: &Key, stamp: Stamp) -> MergeOp {
    let mut record = Map::new();
    record.insert(def.primary_key.clone(), key.to_json());
    MergeOp::Upsert {
        stamp,
        record: Value::Object(record).to_string(),
        created: stamp.time,
    }
}

/// The side entry a row keeps after a write with base `base` left `state`.
pub(crate) fn side_after(base: Stamp, state: MergeState) -> Side {
    Side {
        base,
        state: state.has_extras().then_some(state),
    }
}
