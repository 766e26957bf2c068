//! The secondary index keys of a record, shared by the write path and by
//! what removes records outside it (budgets dropping the oldest).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::local::catalog::TableDef;
use crate::local::codec::{put_index_value, put_key, Key};

/// Every index key a record has: one per indexed scalar attribute, one per
/// distinct scalar element of an indexed array.
pub(crate) fn index_entries(
    def: &TableDef,
    key: &Key,
    obj: &Map<String, Value>,
) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for (i, attr) in def.indexes.iter().enumerate() {
        let Some(v) = obj.get(attr) else { continue };
        let prefix = def.index_prefix(i as u16 + 1);
        let mut add = |v: &Value| {
            let mut k = prefix.to_vec();
            if put_index_value(&mut k, v) {
                put_key(&mut k, key);
                out.insert(k);
            }
        };
        match v {
            Value::Array(items) => items.iter().for_each(&mut add),
            other => add(other),
        }
    }
    out
}
