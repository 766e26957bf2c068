//! Records a caller hands over as JSON text (the C ABI, the Node binding):
//! checked and made ready to store without building the whole object.
//!
//! Parsing the text into a `serde_json::Value` only to serialize it again
//! was most of what a binding's upsert cost beyond the Rust API's own
//! (measured from Node). Here the text is read once: each top-level
//! attribute's value is kept as the caller wrote it, and only the primary
//! key and the indexed attributes are parsed into values.
//!
//! What is stored may therefore differ from what [`crate::Database::upsert`]
//! stores for the same object, in ways no JSON reader tells apart:
//! attributes keep the caller's order, and values keep their own spelling
//! (`1e2` stays `1e2`, whitespace inside nested values stays). Anything
//! where the two could mean different things goes the `Value` way instead,
//! so the result is the same record: an attribute name with escapes, a
//! name given twice (a parsed object keeps the last one), an object with
//! a name given twice anywhere inside, and any error (so errors read
//! exactly as they do for a `Value`).

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::local::catalog::TableDef;
use crate::local::codec::Key;
use crate::local::record::{key_of, CREATED_ATTR, UPDATED_ATTR};

/// Above this many top-level attributes, checking names for repeats one
/// by one costs more than it saves: such records go the `Value` way.
const MAX_ATTRS: usize = 64;

/// A record ready to stage.
pub(crate) struct TextRecord {
    pub(crate) key: Key,
    /// The text to store, without the attributes tidelog computes.
    pub(crate) json: String,
    /// The indexed attributes that are present: what index entries are
    /// made from.
    pub(crate) indexed: Map<String, Value>,
}

/// Reads `text` as a record of `def`'s table in one pass; `None` where
/// the `Value` way must decide (the caller parses the text then).
pub(crate) fn read(def: &TableDef, text: &str) -> Option<TextRecord> {
    let mut de = serde_json::Deserializer::from_str(text);
    let scan = Scan {
        def,
        json: String::with_capacity(text.len()),
        indexed: Map::new(),
        key: None,
    };
    let scan = de.deserialize_map(scan).ok().flatten()?;
    de.end().ok()?;
    let key = key_of(&def.name, &def.primary_key, scan.key.as_ref()).ok()?;
    Some(TextRecord {
        key,
        json: scan.json,
        indexed: scan.indexed,
    })
}

struct Scan<'t> {
    def: &'t TableDef,
    json: String,
    indexed: Map<String, Value>,
    key: Option<Value>,
}

impl<'de> Visitor<'de> for Scan<'_> {
    /// `None`: take the `Value` way.
    type Value = Option<Self>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        mut self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut names: [&'de str; MAX_ATTRS] = [""; MAX_ATTRS];
        let mut count = 0;
        let mut direct = true;
        self.json.push('{');
        while let Some(name) = map.next_key::<Name<'de>>()? {
            // Once the `Value` way is decided, the rest only has to be read.
            let name = match name {
                Name::Plain(n) if direct && count < MAX_ATTRS && !names[..count].contains(&n) => n,
                _ => {
                    direct = false;
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            names[count] = name;
            count += 1;
            let raw: &'de RawValue = map.next_value()?;
            // Checked even when dropped below: a parse would refuse it.
            if !parses_as_value(raw.get()) {
                direct = false;
                continue;
            }
            if name == CREATED_ATTR || name == UPDATED_ATTR {
                continue;
            }
            let is_key = name == self.def.primary_key;
            if is_key || self.def.indexes.iter().any(|i| i == name) {
                let Ok(v) = serde_json::from_str::<Value>(raw.get()) else {
                    direct = false;
                    continue;
                };
                if self.def.indexes.iter().any(|i| i == name) {
                    self.indexed.insert(name.to_owned(), v.clone());
                }
                if is_key {
                    self.key = Some(v);
                }
            }
            if self.json.len() > 1 {
                self.json.push(',');
            }
            // A name serde_json could borrow has no escapes, so it is
            // written back exactly as it came.
            self.json.push('"');
            self.json.push_str(name);
            self.json.push_str("\":");
            self.json.push_str(raw.get());
        }
        self.json.push('}');
        // A missing key goes the `Value` way too, which words the error.
        Ok((direct && self.key.is_some()).then_some(self))
    }
}

/// Whether a value that serde_json read as JSON without building it also
/// parses into a `Value` to the same thing: numbers in range, no object
/// inside with a name given twice.
fn parses_as_value(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b't' | b'f' | b'n') => true,
        // Reading without building lets a lone surrogate (`"\ud800"`)
        // pass; decoding the escapes does not.
        Some(b'"') if !raw.contains('\\') => true,
        Some(b'{' | b'[' | b'"') => serde_json::from_str::<Checked>(raw).is_ok_and(|c| c.0),
        // A number: in range if it is finite as a double, as serde_json
        // reads one that is too long for 64 bits. Short integers always are.
        _ => {
            raw.len() < 19 && raw.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                || raw.parse::<f64>().is_ok_and(f64::is_finite)
        }
    }
}

/// An attribute name: `Plain` if it is written without escapes.
enum Name<'de> {
    Plain(&'de str),
    Escaped,
}

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Name<'de>, E> {
                Ok(Name::Plain(s))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Name<'de>, E> {
                Ok(Name::Escaped)
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads any JSON value as a parse into `Value` would, numbers included,
/// without building it; `false` if an object inside repeats a name.
struct Checked(bool);

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Checked, E> {
        Ok(Checked(true))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Checked, E> {
        Ok(Checked(true))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Checked, E> {
        Ok(Checked(true))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Checked, E> {
        Ok(Checked(true))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Checked, E> {
        Ok(Checked(true))
    }
    fn visit_unit<E>(self) -> std::result::Result<Checked, E> {
        Ok(Checked(true))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Checked, A::Error> {
        let mut clean = true;
        while let Some(Checked(c)) = seq.next_element()? {
            clean &= c;
        }
        Ok(Checked(clean))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Checked, A::Error> {
        let mut clean = true;
        let mut names: Vec<Cow<'de, str>> = Vec::new();
        while let Some(name) = map.next_key_seed(NameText)? {
            let Checked(c) = map.next_value()?;
            clean &= c && names.len() < MAX_ATTRS && !names.contains(&name);
            if clean {
                names.push(name);
            }
        }
        Ok(Checked(clean))
    }
}

/// An attribute name inside a value, unescaped.
struct NameText;

impl<'de> DeserializeSeed<'de> for NameText {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameText {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an attribute name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::local::record::{extract_key, parse_object, strip_computed};

    fn def() -> TableDef {
        TableDef {
            id: 1,
            name: "t".into(),
            primary_key: "id".into(),
            indexes: vec!["sensor".into(), "tags".into()],
            expiration: None,
            conflict: Default::default(),
            disk_budget_bytes: None,
            on_full: Default::default(),
        }
    }

    /// What `Transaction::upsert` makes of the same text.
    fn value_way(text: &str) -> crate::Result<(Key, Map<String, Value>)> {
        let mut obj = parse_object(text)?;
        strip_computed(&mut obj);
        let key = extract_key("t", "id", &obj)?;
        Ok((key, obj))
    }

    /// Reads `text` in one pass and, where that takes it, checks it agrees
    /// with the `Value` way: the same key, the same object to a JSON
    /// reader and the same indexed values. Returns the stored text, or
    /// `None` where the `Value` way decides.
    fn agree(text: &str) -> Option<String> {
        let d = def();
        let r = read(&d, text)?;
        let (key, obj) = match value_way(text) {
            Ok(v) => v,
            Err(e) => panic!(
                "{text}: read in one pass as {}, but a parse says {e}",
                r.json
            ),
        };
        assert_eq!(r.key, key, "{text}");
        let stored: Map<String, Value> = serde_json::from_str(&r.json).unwrap();
        assert_eq!(stored, obj, "{text} stored as {}", r.json);
        for attr in &d.indexes {
            assert_eq!(r.indexed.get(attr), obj.get(attr), "{text}: {attr}");
        }
        Some(r.json)
    }

    #[test]
    fn plain_records_keep_their_text() {
        let text = r#"{"id":7,"sensor":"s-1","value":0.5,"ts":1700000000000}"#;
        assert_eq!(agree(text).as_deref(), Some(text));
        // Attribute order and a value's spelling are the caller's.
        let text = r#"{"z":1e2,"id":"k","a":[1,{"b":true}]}"#;
        assert_eq!(agree(text).as_deref(), Some(text));
    }

    #[test]
    fn computed_times_and_outer_whitespace_go() {
        let text =
            r#" { "__createdtime__" : 1, "id" : 1 , "__updatedtime__":2, "n" : { "a" : 1 } } "#;
        assert_eq!(agree(text).as_deref(), Some(r#"{"id":1,"n":{ "a" : 1 }}"#));
    }

    #[test]
    fn anything_ambiguous_or_wrong_is_left_to_the_value_way() {
        for text in [
            // A parse keeps the last of a repeated name.
            r#"{"id":1,"id":2}"#,
            r#"{"id":1,"sensor":"a","sensor":"b"}"#,
            r#"{"id":1,"n":{"a":1,"a":2}}"#,
            r#"{"id":1,"n":[{"a":1,"\u0061":2}]}"#,
            r#"{"i\u0064":1}"#,
            // What a parse refuses, even under a name that is dropped.
            r#"{"id":1,"n":1e400}"#,
            r#"{"id":1,"n":[-1e999]}"#,
            r#"{"id":1,"__createdtime__":1e400}"#,
            r#"{"id":1,"s":"\ud800"}"#,
            "{\"id\":\"a\u{1}\"}",
            "",
            "[1]",
            "3",
            "{",
            r#"{"id":1,}"#,
            r#"{"id":1} x"#,
            // Key errors.
            r#"{"n":1}"#,
            r#"{"id":1.5}"#,
            r#"{"id":null}"#,
        ] {
            assert_eq!(agree(text), None, "{text}");
        }
    }

    #[test]
    fn many_attributes_are_left_to_the_value_way() {
        let attrs: Vec<String> = (0..MAX_ATTRS + 1)
            .map(|i| format!(r#""a{i}":{i}"#))
            .collect();
        let text = format!(r#"{{"id":1,{}}}"#, attrs.join(","));
        assert_eq!(agree(&text), None);
        assert!(value_way(&text).is_ok());
    }

    fn value_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            prop::sample::select(vec![
                "0",
                "-0",
                "1E2",
                "1.5e-3",
                "1e400",
                "-1e999",
                "18446744073709551616",
                "123456789012345678901234567890",
                "true",
                "false",
                "null",
                r#""s-1""#,
                r#""a\"b""#,
                r#""\u0041\n""#,
                r#""\ud83d\ude00""#,
                r#""é""#,
                r#""\ud800""#,
            ])
            .prop_map(str::to_string),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((name(), inner), 0..4).prop_map(|v| object(&v, "")),
            ]
        })
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "id",
            "sensor",
            "tags",
            "value",
            "",
            "__createdtime__",
            "__updatedtime__",
            r#"i\u0064"#,
            r#"a\"b"#,
            "é",
        ])
        .prop_map(str::to_string)
    }

    fn object(entries: &[(String, String)], space: &str) -> String {
        let inner: Vec<String> = entries
            .iter()
            .map(|(n, v)| format!(r#"{space}"{n}"{space}:{space}{v}{space}"#))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the text, both ways agree (see `agree`).
        #[test]
        fn the_text_way_agrees_with_the_value_way(
            entries in prop::collection::vec((name(), value_text()), 0..6),
            space in prop::sample::select(vec!["", " ", "\n\t"]),
            key in prop::option::of(prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                Just(r#""k""#.to_string()),
            ]),
        ) {
            let mut entries = entries;
            if let Some(k) = key {
                entries.insert(0, ("id".into(), k));
            }
            agree(&object(&entries, space));
        }
    }
}
