//! Laying a record out for index.js (see fast.rs): its shape (attribute
//! names and value types) gets a small id, numbers go into `slots`, and
//! string values (and nested objects and arrays, as JSON text) are
//! concatenated into one text with their (start, end) in `slots`.
//!
//! Consecutive reads nearly always meet the shape they met last, so a
//! record is first checked against that shape's attribute tokens, which
//! costs a comparison per attribute; only a record that differs in any
//! byte of structure (another shape, whitespace) is read in full.

use std::cell::Cell;
use std::collections::HashMap;

/// Numbers per laid-out record: shape id, the record's times, then one per
/// number and two (start, end) per string or nested value.
pub(crate) const SLOTS: usize = 256;
/// Shapes per database; records of further shapes come back as JSON text
/// (each shape costs index.js one generated function).
const MAX_SHAPES: usize = 512;
/// Slots taken by the shape id and the times the core's record view adds
/// (`RecordView::TIME_ATTRS`, in that order; fast.rs fills them from
/// `RecordView::times` and index.js names them from the same list).
pub(crate) const FIRST_VALUE: usize = 1 + tidelog::RecordView::TIME_ATTRS.len();

/// One shape: what a record of it looks like in compact JSON.
struct Shape {
    /// Per attribute, `"name":` as it appears in the text (the name's raw
    /// JSON string token), and its kind.
    attrs: Box<[(Box<[u8]>, u8)]>,
}

impl Shape {
    /// From a signature: each attribute's raw JSON name, a 0 byte, a kind
    /// byte.
    fn new(sig: &[u8]) -> Shape {
        let mut attrs = Vec::new();
        let mut rest = sig;
        while let Some(nul) = rest.iter().position(|&b| b == 0) {
            let Some(&kind) = rest.get(nul + 1) else {
                break;
            };
            let mut token = Vec::with_capacity(nul + 3);
            token.push(b'"');
            token.extend_from_slice(&rest[..nul]);
            token.extend_from_slice(b"\":");
            attrs.push((token.into_boxed_slice(), kind));
            rest = &rest[nul + 2..];
        }
        Shape {
            attrs: attrs.into(),
        }
    }
}

/// The shapes one database has met, and their ids.
#[derive(Default)]
pub(crate) struct Shapes {
    ids: HashMap<Box<[u8]>, u32>,
    list: Vec<Shape>,
    /// The shape laid out last.
    last: Option<u32>,
    sig: Vec<u8>,
}

impl Shapes {
    /// Lays out `body` (a stored record: one JSON object) into
    /// `slots[FIRST_VALUE..]` and `text`; its shape id, or `None` if it
    /// cannot be laid out (more values than slots, too many shapes, a
    /// string with a lone surrogate).
    pub(crate) fn lay_out(
        &mut self,
        body: &str,
        slots: &[Cell<f64>],
        text: &mut String,
    ) -> Option<u32> {
        if let Some(id) = self.last {
            let shape = &self.list[id as usize];
            if lay_out_as(shape, body, &mut Out::new(slots, text)).is_some() {
                return Some(id);
            }
        }
        lay_out(body, &mut self.sig, &mut Out::new(slots, text))?;
        let id = self.id()?;
        self.last = Some(id);
        Some(id)
    }

    /// The id of the signature in `self.sig`, registering it if new.
    fn id(&mut self) -> Option<u32> {
        if let Some(id) = self.ids.get(self.sig.as_slice()) {
            return Some(*id);
        }
        if self.list.len() >= MAX_SHAPES {
            return None;
        }
        let id = self.list.len() as u32;
        self.list.push(Shape::new(&self.sig));
        self.ids.insert(self.sig.as_slice().into(), id);
        Some(id)
    }

    /// `[["name","n"],...]` for index.js to generate the shape's function.
    pub(crate) fn describe(&self, id: u32) -> Option<String> {
        let shape = self.list.get(id as usize)?;
        let mut out = String::from("[");
        for (token, kind) in shape.attrs.iter() {
            // `"name":`: the name's JSON string token and a colon.
            let name = std::str::from_utf8(token.get(..token.len().checked_sub(1)?)?).ok()?;
            if out.len() > 1 {
                out.push(',');
            }
            out.push('[');
            out.push_str(name);
            out.push_str(",\"");
            out.push(char::from(*kind));
            out.push_str("\"]");
        }
        out.push(']');
        Some(out)
    }
}

/// Where a record's values go.
struct Out<'a> {
    slots: &'a [Cell<f64>],
    text: &'a mut String,
    next: usize,
    /// Offsets into the JavaScript string are UTF-16 units.
    units: usize,
}

impl<'a> Out<'a> {
    fn new(slots: &'a [Cell<f64>], text: &'a mut String) -> Out<'a> {
        text.clear();
        Out {
            slots,
            text,
            next: FIRST_VALUE,
            units: 0,
        }
    }

    fn number(&mut self, v: f64) -> Option<()> {
        self.slots.get(self.next)?.set(v);
        self.next += 1;
        Some(())
    }

    fn text(&mut self, t: &str) -> Option<()> {
        let (start, end) = (self.slots.get(self.next)?, self.slots.get(self.next + 1)?);
        let len = if t.is_ascii() {
            t.len()
        } else {
            t.encode_utf16().count()
        };
        start.set(self.units as f64);
        end.set((self.units + len) as f64);
        self.units += len;
        self.next += 2;
        self.text.push_str(t);
        Some(())
    }

    /// Lays out the value starting at `body[i]`: its kind byte and the
    /// index just past it.
    fn value(&mut self, body: &str, i: usize) -> Option<(u8, usize)> {
        let b = body.as_bytes();
        Some(match *b.get(i)? {
            b'"' => {
                let (end, escaped) = string_end(b, i)?;
                if escaped {
                    // Fails on a lone surrogate (not a Rust string).
                    let s: String = serde_json::from_str(body.get(i..end)?).ok()?;
                    self.text(&s)?;
                } else {
                    self.text(body.get(i + 1..end - 1)?)?;
                }
                (b's', end)
            }
            b'-' | b'0'..=b'9' => {
                let (v, end) = number(b, i)?;
                self.number(v)?;
                (b'n', end)
            }
            b't' if b[i..].starts_with(b"true") => (b't', i + 4),
            b'f' if b[i..].starts_with(b"false") => (b'f', i + 5),
            b'n' if b[i..].starts_with(b"null") => (b'z', i + 4),
            b'{' | b'[' => {
                let end = nested_end(b, i)?;
                self.text(body.get(i..end)?)?;
                (b'j', end)
            }
            _ => return None,
        })
    }
}

/// Lays out `body` if it is `shape` in compact JSON (no whitespace), as
/// [`lay_out`] would; `None` if it is not.
fn lay_out_as(shape: &Shape, body: &str, out: &mut Out) -> Option<()> {
    let b = body.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    for (k, (token, kind)) in shape.attrs.iter().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
        if !b[i..].starts_with(token) {
            return None;
        }
        let (found, end) = out.value(body, i + token.len())?;
        if found != *kind {
            return None;
        }
        i = end;
    }
    (b.get(i) == Some(&b'}') && i + 1 == b.len()).then_some(())
}

/// Lays out any record body: its signature into `sig`. `None` if it
/// cannot.
fn lay_out(body: &str, sig: &mut Vec<u8>, out: &mut Out) -> Option<()> {
    let b = body.as_bytes();
    sig.clear();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (end, _) = string_end(b, i)?;
            sig.extend_from_slice(&b[i + 1..end - 1]);
            sig.push(0);
            i = skip_ws(b, end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let (kind, end) = out.value(body, skip_ws(b, i + 1))?;
            sig.push(kind);
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(())
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Index just past the JSON string starting at `b[i] == b'"'`, and
/// whether it has escapes.
fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    while j < b.len() {
        match b[j] {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                j += 2;
            }
            _ => j += 1,
        }
    }
    None
}

/// Index just past the object or array starting at `b[i]`.
fn nested_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i)?.0;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The JSON number starting at `b[start]` and the index just past it,
/// correctly rounded as JSON.parse rounds it.
fn number(b: &[u8], start: usize) -> Option<(f64, usize)> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let neg = b.get(start) == Some(&b'-');
    let mut i = start + usize::from(neg);
    let mut m = 0u64;
    let int_start = i;
    while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
        m = m.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    let mut digits = i - int_start;
    let mut fraction = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let fraction_start = i;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        fraction = i - fraction_start;
        digits += fraction;
    }
    // Up to 15 digits fit an f64 exactly, and so does 10^fraction: one
    // division of exact operands is correctly rounded (the usual fast
    // path of decimal conversion). Exponents and longer numbers take the
    // general conversion.
    if digits > 0 && digits <= 15 && !matches!(b.get(i), Some(b'e' | b'E')) {
        // m < 10^15 < 2^63: the signed conversion is one instruction.
        let mut v = m as i64 as f64;
        if fraction > 0 {
            v /= POW10[fraction];
        }
        return Some((if neg { -v } else { v }, i));
    }
    while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
        i += 1;
    }
    let text = std::str::from_utf8(b.get(start..i)?).ok()?;
    Some((text.parse::<f64>().ok()?, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    fn slots() -> Vec<Cell<f64>> {
        (0..SLOTS).map(|_| Cell::new(f64::NAN)).collect()
    }

    /// The object index.js builds from a laid-out record (its decoder),
    /// without the two times.
    fn decode(shapes: &Shapes, id: u32, slots: &[Cell<f64>], text: &str) -> Value {
        let spec: Vec<(String, String)> =
            serde_json::from_str(&shapes.describe(id).expect("described")).expect("spec");
        let units: Vec<u16> = text.encode_utf16().collect();
        let slice = |n: usize| {
            let (a, b) = (slots[n].get() as usize, slots[n + 1].get() as usize);
            String::from_utf16(&units[a..b]).expect("UTF-16")
        };
        let mut n = FIRST_VALUE;
        let mut obj = Map::new();
        for (name, kind) in spec {
            let v = match kind.as_str() {
                "n" => {
                    n += 1;
                    // Compared bit for bit by the caller.
                    json!(slots[n - 1].get().to_bits())
                }
                "s" => {
                    n += 2;
                    Value::String(slice(n - 2))
                }
                "j" => {
                    n += 2;
                    serde_json::from_str(&slice(n - 2)).expect("nested JSON")
                }
                "t" => Value::Bool(true),
                "f" => Value::Bool(false),
                "z" => Value::Null,
                other => panic!("unknown kind {other}"),
            };
            obj.insert(name, v);
        }
        Value::Object(obj)
    }

    /// `v` with each top-level number as its double's bits, as `decode`
    /// returns them (JSON.parse reads every number as a double).
    fn expected(v: &Value) -> Value {
        let Value::Object(m) = v else {
            panic!("not an object")
        };
        let mut out = Map::new();
        for (k, v) in m {
            let v = match v {
                Value::Number(n) => {
                    let text = n.to_string();
                    json!(text.parse::<f64>().expect("number").to_bits())
                }
                other => other.clone(),
            };
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }

    fn lay_out_record(shapes: &mut Shapes, body: &str) -> Option<Value> {
        let slots = slots();
        let mut text = String::new();
        let id = shapes.lay_out(body, &slots, &mut text)?;
        Some(decode(shapes, id, &slots, &text))
    }

    #[test]
    fn compact_records_of_the_last_shape_take_the_short_path() {
        let mut shapes = Shapes::default();
        let first = r#"{"id":1,"sensor":"s-1","ts":1700000000001,"value":0.5}"#;
        let second = r#"{"id":22,"sensor":"s-22","ts":1700000000022,"value":11}"#;
        assert!(lay_out_record(&mut shapes, first).is_some());
        let shape = &shapes.list[shapes.last.expect("a last shape") as usize];
        let slots = slots();
        let mut text = String::new();
        assert!(lay_out_as(shape, second, &mut Out::new(&slots, &mut text)).is_some());
        assert_eq!(text, "s-22");
        let values: Vec<f64> = slots[3..8].iter().map(Cell::get).collect();
        assert_eq!(values, [22.0, 0.0, 4.0, 1_700_000_000_022.0, 11.0]);
        // Whitespace, another order or another kind: the full reading.
        for other in [
            r#"{ "id":1,"sensor":"s-1","ts":1,"value":0.5}"#,
            r#"{"sensor":"s-1","id":1,"ts":1,"value":0.5}"#,
            r#"{"id":"1","sensor":"s-1","ts":1,"value":0.5}"#,
            r#"{"id":1,"sensor":"s-1","ts":1}"#,
            r#"{"id":1,"sensor":"s-1","ts":1,"value":0.5,"x":1}"#,
            r#"{"id":1,"sensor":"s-1","ts":1,"value":0.5} "#,
        ] {
            let mut text = String::new();
            let fits = lay_out_as(shape, other, &mut Out::new(&slots, &mut text));
            assert!(fits.is_none(), "{other}");
        }
    }

    #[test]
    fn numbers_read_as_json_parse_reads_them() {
        let mut shapes = Shapes::default();
        for text in [
            "0",
            "-0",
            "-0.0",
            "5e-324",
            "1.7976931348623157e308",
            "123456789012345",
            "1234567890123456",
            "12345678901234567890",
            "123456789012345680000",
            "0.1",
            "0.30000000000000004",
            "5717737266.2379442",
            "39382.277801338157",
            "-12.5",
            "1e21",
            "1E-7",
            "9007199254740993",
        ] {
            let body = format!(r#"{{"n":{text}}}"#);
            let got = lay_out_record(&mut shapes, &body).expect("laid out");
            let want = text.parse::<f64>().expect("a number").to_bits();
            assert_eq!(got, json!({ "n": want }), "{text}");
        }
    }

    #[test]
    fn strings_keep_their_characters_and_offsets_count_utf16_units() {
        let mut shapes = Shapes::default();
        let body = r#"{"a":"é😀x","b":"tab\tquote\"","c":"\ud83d\ude00","d":[1,{"e":"}"}]}"#;
        let got = lay_out_record(&mut shapes, body).expect("laid out");
        let parsed: Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(got, expected(&parsed));
    }

    #[test]
    fn what_cannot_be_laid_out_is_refused() {
        let mut shapes = Shapes::default();
        // A lone surrogate is no Rust string; index.js gets the JSON text.
        assert!(lay_out_record(&mut shapes, r#"{"a":"\ud800"}"#).is_none());
        let many: Vec<String> = (0..SLOTS).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!("{{{}}}", many.join(","));
        assert!(lay_out_record(&mut shapes, &body).is_none());
        for broken in [
            "",
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":tru}"#,
        ] {
            assert!(lay_out_record(&mut shapes, broken).is_none(), "{broken}");
        }
    }

    #[test]
    fn shapes_past_the_limit_are_refused_and_known_ones_still_laid_out() {
        let mut shapes = Shapes::default();
        for i in 0..MAX_SHAPES {
            let body = format!(r#"{{"k{i}":1}}"#);
            assert!(lay_out_record(&mut shapes, &body).is_some(), "{body}");
        }
        assert!(lay_out_record(&mut shapes, r#"{"new":1}"#).is_none());
        assert_eq!(
            lay_out_record(&mut shapes, r#"{"k0":2}"#),
            Some(json!({ "k0": 2.0f64.to_bits() }))
        );
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6..1e6f64).prop_map(|f| json!(f)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[a-z\"\\\\/\t\n\u{e9}\u{1F600}]{0,6}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ];
        scalar.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-c}\"]{1,2}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_record() -> impl Strategy<Value = Value> {
        let names = prop::sample::select(vec![
            "id",
            "sensor",
            "value",
            "ts",
            "é",
            "a\"b",
            "__proto__",
        ]);
        prop::collection::btree_map(names, any_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Record after record through one database's shapes (so the short
        /// path meets both its own shape and others), compact or not: each
        /// comes out as JSON.parse would read it.
        #[test]
        fn laid_out_records_read_as_json_parse_reads_them(
            records in prop::collection::vec((any_record(), any::<bool>()), 1..12),
        ) {
            let mut shapes = Shapes::default();
            for (record, pretty) in &records {
                let body = if *pretty {
                    serde_json::to_string_pretty(record).expect("JSON")
                } else {
                    serde_json::to_string(record).expect("JSON")
                };
                let got = lay_out_record(&mut shapes, &body);
                prop_assert_eq!(got, Some(expected(record)), "{}", body);
            }
        }
    }
}
