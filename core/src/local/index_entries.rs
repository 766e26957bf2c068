//! The secondary index keys of a record, shared by the write path and by
//! what removes records outside it (budgets dropping the oldest).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::local::catalog::TableDef;
use crate::local::codec::{put_index_value, put_key, Key};

/// Every index key a record has: one per indexed scalar attribute, one per
/// distinct scalar element of an indexed array. Each maps to whether the
/// entry carries a copy of the record's row (see [`CarriesRow`]).
pub(crate) fn index_entries(
    def: &TableDef,
    key: &Key,
    obj: &Map<String, Value>,
) -> BTreeMap<Vec<u8>, CarriesRow> {
    let mut out = BTreeMap::new();
    for (i, attr) in def.indexes.iter().enumerate() {
        let Some(v) = obj.get(attr) else { continue };
        let prefix = def.index_prefix(i as u16 + 1);
        let mut add = |v: &Value, carries: CarriesRow| {
            let mut k = prefix.to_vec();
            if put_index_value(&mut k, v) {
                put_key(&mut k, key);
                out.insert(k, carries);
            }
        };
        match v {
            Value::Array(items) => items.iter().for_each(|v| add(v, CarriesRow(false))),
            other => add(other, CarriesRow(true)),
        }
    }
    out
}

/// Whether an index entry's value is a copy of its record's row (the bytes
/// the rows space holds for it), so that a find answers from the index
/// without a point read per record.
///
/// Entries of scalar attributes carry it; elements of an indexed array do
/// not (a record with ten tags would be stored eleven times), and neither
/// do entries written before entries carried rows: their value is empty,
/// and a find reads the record instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CarriesRow(pub(crate) bool);

#[cfg(test)]
#[path = "index_entries_tests.rs"]
mod tests;
