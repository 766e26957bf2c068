//! Counters: an attribute changed by `increment`. Locally an increment is a
//! read-modify-write of the record under the commit lock, so concurrent
//! increments on one node never lose a count.

use serde_json::{Map, Value};

use crate::error::{Error, NotInteger, Result};
use crate::local::codec::Key;

/// Adds `by` to integer attribute `attr` of `obj` (absent counts as 0).
pub(crate) fn add(
    obj: &mut Map<String, Value>,
    table: &str,
    key: &Key,
    attr: &str,
    by: i64,
) -> Result<()> {
    let current = match obj.get(attr) {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(other) => {
            return Err(Error::NotACounter {
                table: table.to_string(),
                key: key.to_string(),
                attribute: attr.to_string(),
                found: describe(other),
            })
        }
    };
    let sum = current
        .checked_add(by)
        .ok_or_else(|| Error::CounterOverflow {
            table: table.to_string(),
            key: key.to_string(),
            attribute: attr.to_string(),
            by,
        })?;
    obj.insert(attr.to_string(), Value::from(sum));
    Ok(())
}

fn describe(v: &Value) -> NotInteger {
    match v {
        Value::Number(_) => NotInteger::Number,
        Value::String(_) => NotInteger::String,
        Value::Bool(_) => NotInteger::Boolean,
        Value::Array(_) => NotInteger::Array,
        _ => NotInteger::Object,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test objects are objects"),
        }
    }

    #[test]
    fn adds_and_treats_missing_or_null_as_zero() {
        let k = Key::Int(1);
        let mut m = obj(json!({"id": 1, "n": 5, "z": null}));
        add(&mut m, "t", &k, "n", -7).unwrap();
        add(&mut m, "t", &k, "fresh", 3).unwrap();
        add(&mut m, "t", &k, "z", 2).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"id": 1, "n": -2, "fresh": 3, "z": 2})
        );
    }

    #[test]
    fn non_integers_and_overflow_are_typed_errors_that_change_nothing() {
        let k = Key::Str("a".into());
        for bad in [
            json!("5"),
            json!(1.5),
            json!([1]),
            json!(true),
            json!(u64::MAX),
        ] {
            let mut m = obj(json!({"id": "a", "n": bad.clone()}));
            let e = add(&mut m, "t", &k, "n", 1).unwrap_err();
            assert!(matches!(e, Error::NotACounter { .. }), "{bad}: {e}");
            assert_eq!(m["n"], bad);
        }
        let mut m = obj(json!({"id": "a", "n": i64::MAX}));
        let e = add(&mut m, "t", &k, "n", 1).unwrap_err();
        assert!(matches!(e, Error::CounterOverflow { by: 1, .. }), "{e}");
        assert_eq!(m["n"], json!(i64::MAX));
        let mut m = obj(json!({"id": "a", "n": i64::MIN}));
        assert!(add(&mut m, "t", &k, "n", -1).is_err());
    }
}
