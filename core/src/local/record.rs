//! Records as readers see them, and the JSON rules writes must follow.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::local::codec::{Key, Stamp};
use crate::local::row::{decode_row, row_json};
use crate::local::storage::Bytes;

/// Attribute names tidelog adds to every record it returns.
pub const CREATED_ATTR: &str = "__createdtime__";
pub const UPDATED_ATTR: &str = "__updatedtime__";

#[derive(Clone)]
enum Body {
    /// A stored row, header included, and where its JSON starts (the
    /// header's length varies).
    Stored(Bytes, usize),
    Owned(Arc<str>),
}

/// One record: its key, version stamp, times, and JSON contents.
#[derive(Clone)]
pub struct Record {
    key: Key,
    stamp: Stamp,
    created: u64,
    body: Body,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("stamp", &self.stamp)
            .field("json", &self.body_json())
            .finish()
    }
}

impl Record {
    /// Wraps a stored live row; `None` for a tombstone.
    pub(crate) fn from_row(key: Key, row: Bytes) -> Result<Option<Record>> {
        let (h, body_at) = decode_row(&row)?;
        if h.tombstone {
            return Ok(None);
        }
        row_json(&row, body_at)?;
        Ok(Some(Record {
            key,
            stamp: h.stamp,
            created: h.created,
            body: Body::Stored(row, body_at),
        }))
    }

    pub(crate) fn from_parts(key: Key, stamp: Stamp, created: u64, json: Arc<str>) -> Record {
        Record {
            key,
            stamp,
            created,
            body: Body::Owned(json),
        }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The version stamp of the write that produced this record.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// `__createdtime__`: milliseconds since the epoch of the first write.
    pub fn created_ms(&self) -> u64 {
        self.created >> crate::local::hlc::LOGICAL_BITS
    }

    /// `__updatedtime__`: milliseconds since the epoch of the latest write.
    pub fn updated_ms(&self) -> u64 {
        self.stamp.millis()
    }

    /// The record's attributes as stored (without the time attributes).
    pub fn body_json(&self) -> &str {
        match &self.body {
            // Checked to be UTF-8 when the record was made.
            Body::Stored(b, at) => std::str::from_utf8(&b[*at..]).unwrap_or("{}"),
            Body::Owned(s) => s,
        }
    }

    /// The record as JSON text, with `__createdtime__` and `__updatedtime__`.
    pub fn to_json_string(&self) -> String {
        // Two times of at most 20 digits each plus their names: 78 bytes.
        let mut out = String::with_capacity(self.body_json().len() + 80);
        self.write_json(&mut out);
        out
    }

    /// Appends [`Record::to_json_string`]'s text to `out`: the read path of
    /// every binding, so it writes the two times without the formatting
    /// machinery (measured as a visible part of a read).
    pub fn write_json(&self, out: &mut String) {
        write_with_times(out, self.body_json(), self.created_ms(), self.updated_ms());
    }

    /// The record as a JSON object, with `__createdtime__` and `__updatedtime__`.
    pub fn to_value(&self) -> Value {
        let mut map = match serde_json::from_str::<Value>(self.body_json()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        map.insert(CREATED_ATTR.into(), Value::from(self.created_ms()));
        map.insert(UPDATED_ATTR.into(), Value::from(self.updated_ms()));
        Value::Object(map)
    }
}

/// Appends a stored record `body` (a JSON object) with `__createdtime__`
/// and `__updatedtime__` put first, as reads return it.
pub fn write_with_times(out: &mut String, body: &str, created_ms: u64, updated_ms: u64) {
    // A peer's record is stored as it arrived, which may start with
    // whitespace; it was checked to be one JSON object.
    let rest = body.trim_start().strip_prefix('{').unwrap_or("}");
    out.reserve(body.len() + 78);
    out.push('{');
    out.push('"');
    out.push_str(CREATED_ATTR);
    out.push_str("\":");
    push_decimal(out, created_ms);
    out.push_str(",\"");
    out.push_str(UPDATED_ATTR);
    out.push_str("\":");
    push_decimal(out, updated_ms);
    if rest.trim_start() != "}" {
        out.push(',');
    }
    out.push_str(rest);
}

/// Parses JSON text into a record object.
pub fn parse_object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::NotAnObject(json_type(&other).into())),
        Err(e) => Err(Error::InvalidJson(e.to_string())),
    }
}

/// Parses JSON bytes, reporting invalid UTF-8 as such.
pub fn parse_object_bytes(bytes: &[u8]) -> Result<Map<String, Value>> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| Error::InvalidUtf8(format!("record: {e}")))?;
    parse_object(text)
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the primary key from a record object.
pub(crate) fn extract_key(table: &str, pk_attr: &str, obj: &Map<String, Value>) -> Result<Key> {
    key_of(table, pk_attr, obj.get(pk_attr))
}

/// Checks that `text` is one JSON object, exactly as [`parse_object`]
/// would, and returns its primary key, without building the object. A
/// record from a peer needs no more than that when its table has no
/// indexes; building and dropping the whole map was a large share of
/// applying it.
pub(crate) fn object_key(table: &str, pk_attr: &str, text: &str) -> Result<Key> {
    let mut de = serde_json::Deserializer::from_str(text);
    let found = serde::de::DeserializeSeed::deserialize(KeyOfObject(pk_attr), &mut de)
        .and_then(|found| de.end().map(|()| found));
    match found {
        Ok(v) => key_of(table, pk_attr, v.as_ref()),
        // Not an object, or not JSON: the full parse words the error the
        // same way a local write would see it.
        Err(e) => match parse_object(text) {
            Err(full) => Err(full),
            Ok(_) => Err(Error::InvalidJson(e.to_string())),
        },
    }
}

/// Deserializes a JSON object, keeping only the value of one attribute
/// (the last one, if the attribute repeats, as a parsed map would).
struct KeyOfObject<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyOfObject<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyOfObject<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_key) = map.next_key_seed(IsAttr(self.0))? {
            if is_key {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// An object's attribute name, compared with one name as it is read.
struct IsAttr<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for IsAttr<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for IsAttr<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an attribute name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> std::result::Result<bool, E> {
        Ok(name == self.0)
    }
}

pub(crate) fn key_of(table: &str, pk_attr: &str, v: Option<&Value>) -> Result<Key> {
    let v = v.ok_or_else(|| Error::MissingPrimaryKey {
        table: table.into(),
        attribute: pk_attr.into(),
    })?;
    Key::from_json(v).ok_or_else(|| Error::InvalidPrimaryKey {
        table: table.into(),
        attribute: pk_attr.into(),
        found: match v {
            Value::Number(_) => "a number that is not a 64-bit integer".into(),
            other => json_type(other).into(),
        },
    })
}

/// Drops the attributes tidelog computes, so a record read back can be
/// written again unchanged.
pub(crate) fn strip_computed(obj: &mut Map<String, Value>) {
    obj.remove(CREATED_ATTR);
    obj.remove(UPDATED_ATTR);
}

/// Order of JSON scalars as indexes see it; `None` for arrays and objects.
pub(crate) fn cmp_scalar(a: &Value, b: &Value) -> Option<Ordering> {
    fn rank(v: &Value) -> Option<u8> {
        Some(match v {
            Value::Null => 0,
            Value::Bool(false) => 1,
            Value::Bool(true) => 2,
            Value::Number(_) => 3,
            Value::String(_) => 4,
            _ => return None,
        })
    }
    let (ra, rb) = (rank(a)?, rank(b)?);
    if ra != rb {
        return Some(ra.cmp(&rb));
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => Some(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_splices_times_into_any_object() {
        let r = Record::from_parts(
            Key::Int(1),
            Stamp {
                time: 5 << 16,
                node: 1,
            },
            3 << 16,
            "{\"id\":1}".into(),
        );
        let v: Value = serde_json::from_str(&r.to_json_string()).unwrap();
        assert_eq!(v, json!({"id":1, CREATED_ATTR: 3, UPDATED_ATTR: 5}));
        assert_eq!(v, r.to_value());
        let empty = Record::from_parts(Key::Int(1), Stamp::default(), 0, "{}".into());
        let v: Value = serde_json::from_str(&empty.to_json_string()).unwrap();
        assert_eq!(v, json!({CREATED_ATTR: 0, UPDATED_ATTR: 0}));
        let late = Record::from_parts(
            Key::Int(1),
            Stamp {
                time: u64::MAX,
                node: 1,
            },
            u64::MAX - (1 << 16),
            " {\"a\":[1,{\"b\":\"\\u0000x\"}],\"é\":null} ".into(),
        );
        let mut text = String::from("prefix:");
        late.write_json(&mut text);
        assert_eq!(
            text.strip_prefix("prefix:"),
            Some(late.to_json_string().as_str())
        );
        let v: Value = serde_json::from_str(&late.to_json_string()).unwrap();
        assert_eq!(
            v,
            json!({"a": [1, {"b": "\u{0}x"}], "é": null,
                   CREATED_ATTR: (u64::MAX >> 16) - 1, UPDATED_ATTR: u64::MAX >> 16})
        );
        assert_eq!(v, late.to_value());
    }

    #[test]
    fn parse_errors_are_typed() {
        assert!(matches!(parse_object("[1]"), Err(Error::NotAnObject(_))));
        assert!(matches!(parse_object("{"), Err(Error::InvalidJson(_))));
        assert!(matches!(
            parse_object_bytes(b"{\"a\":\"\xff\"}"),
            Err(Error::InvalidUtf8(_))
        ));
        let obj = parse_object("{\"id\":1.5}").unwrap();
        assert!(matches!(
            extract_key("t", "id", &obj),
            Err(Error::InvalidPrimaryKey { .. })
        ));
        assert!(matches!(
            extract_key("t", "pk", &obj),
            Err(Error::MissingPrimaryKey { .. })
        ));
    }

    #[test]
    fn object_key_agrees_with_the_full_parse() {
        let cases = [
            r#"{"id":1,"v":"x"}"#,
            r#"{"v":{"id":2,"deep":[1,{"id":3}]},"id":"k"}"#,
            r#"{"id":1,"id":2}"#,
            r#"{"i\u0064":7}"#,
            r#" {"id":-9223372036854775808} "#,
            r#"{"id":9223372036854775808}"#,
            r#"{"id":1.5}"#,
            r#"{"id":null}"#,
            r#"{"id":[1]}"#,
            r#"{"other":1}"#,
            r#"{}"#,
            r#"{"id":1} x"#,
            r#"{"id":1,}"#,
            r#"{"id":1"#,
            r#"[{"id":1}]"#,
            r#""id""#,
            r#"12"#,
            r#"{"id":"\ud800"}"#,
            "",
        ];
        for text in cases {
            let full = parse_object(text).and_then(|o| extract_key("t", "id", &o));
            let light = object_key("t", "id", text);
            match (&full, &light) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(a), Err(b)) => assert_eq!(
                    std::mem::discriminant(a),
                    std::mem::discriminant(b),
                    "{text}: {a} vs {b}"
                ),
                _ => panic!("{text}: full parse {full:?}, key only {light:?}"),
            }
        }
    }

    #[test]
    fn scalar_order() {
        assert_eq!(cmp_scalar(&json!(2), &json!(10)), Some(Ordering::Less));
        assert_eq!(cmp_scalar(&json!(2.5), &json!(2)), Some(Ordering::Greater));
        assert_eq!(cmp_scalar(&json!("b"), &json!(99)), Some(Ordering::Greater));
        assert_eq!(cmp_scalar(&json!([1]), &json!(1)), None);
    }
}
