use proptest::prelude::*;
use serde_json::json;

use super::*;

fn who(name: &str) -> PeerIdentity {
    PeerIdentity {
        name: name.into(),
        dns: vec![name.into(), "sites.example".into()],
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn msg(text: &str) -> String {
    Filter::parse(text).unwrap_err().to_string()
}

#[test]
fn the_grammar_and_its_semantics() {
    let f = Filter::parse(
        r#"site = $peer.name AND level >= 2 AND kind IN ("a", "b", 3) AND x != null"#,
    )
    .unwrap();
    assert_eq!(
        f.attributes().into_iter().collect::<Vec<_>>(),
        ["kind", "level", "site", "x"]
    );
    let b = f.bind(&who("e1"));
    assert!(b.matches(&obj(json!({"site": "e1", "level": 2, "kind": "a", "x": 1}))));
    assert!(b.matches(&obj(
        json!({"site": "e1", "level": 2.5, "kind": 3.0, "x": "y"})
    )));
    // Each term fails alone.
    assert!(!b.matches(&obj(json!({"site": "e2", "level": 2, "kind": "a", "x": 1}))));
    assert!(!b.matches(&obj(json!({"site": "e1", "level": 1, "kind": "a", "x": 1}))));
    assert!(!b.matches(&obj(
        json!({"site": "e1", "level": "9", "kind": "a", "x": 1})
    )));
    assert!(!b.matches(&obj(json!({"site": "e1", "level": 2, "kind": "c", "x": 1}))));
    assert!(!b.matches(&obj(
        json!({"site": "e1", "level": 2, "kind": "a", "x": null})
    )));
    // A missing attribute matches nothing, `!=` included.
    assert!(!b.matches(&obj(json!({"site": "e1", "level": 2, "kind": "a"}))));
    // Keywords are case-insensitive; strings compare as strings.
    let s = Filter::parse(r#"name < "m" and name > "b""#)
        .unwrap()
        .bind(&who("e"));
    assert!(s.matches(&obj(json!({"name": "k"}))));
    assert!(!s.matches(&obj(json!({"name": "z"}))));
    assert!(!s.matches(&obj(json!({"name": 5}))));
    // $peer.dns: any of the certificate's names; none without one.
    let d = Filter::parse("zone = $peer.dns").unwrap();
    assert!(d
        .bind(&who("e"))
        .matches(&obj(json!({"zone": "sites.example"}))));
    assert!(!d
        .bind(&PeerIdentity {
            name: "e".into(),
            dns: vec![]
        })
        .matches(&obj(json!({"zone": "sites.example"}))));
    // Escaped quotes inside a string literal.
    let q = Filter::parse(r#"t = "a\"b""#).unwrap().bind(&who("e"));
    assert!(q.matches(&obj(json!({"t": "a\"b"}))));
}

#[test]
fn malformed_filters_say_where_and_what_was_expected() {
    assert!(msg("").contains("at byte 0") && msg("").contains("attribute name"));
    assert!(msg("site").contains("one of = != < <= > >= IN"));
    assert!(msg("site = ").contains("JSON literal"));
    assert!(msg("site = $peer.site").contains("known parameter"));
    assert!(msg("site = $peer.site").contains("at byte 7"));
    assert!(msg("site = 'x'").contains("JSON literal"));
    assert!(msg(r#"site = "open"#).contains("closing"));
    assert!(msg("site = 1 OR site = 2").contains("AND or the end"));
    assert!(msg("site IN (1, 2").contains("`,` or `)`"));
    assert!(msg("site IN 1").contains("`(` after IN"));
    assert!(msg("n < true").contains("number or a string"));
    assert!(msg("n < $peer.dns").contains("$peer.dns is a list"));
    assert!(msg("site = [1]").contains("JSON"));
    let huge = format!(
        "site IN ({})",
        (0..=MAX_IN_ITEMS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(msg(&huge).contains("more than 1024 values"));
    let long = format!("site = \"{}\"", "x".repeat(MAX_FILTER_BYTES));
    assert!(msg(&long).contains("at most"));
    let many = vec!["a = 1"; MAX_TERMS + 1].join(" AND ");
    assert!(msg(&many).contains("terms"));
    // Not a panic on odd input: multibyte text at the error position.
    assert!(msg("sité = 1").contains("expected"));
    assert!(msg("é").contains("expected"));
}

#[test]
fn columns_are_checked_and_projection_keeps_the_key() {
    assert!(validate_columns(&["a".into(), "b_2".into()]).is_ok());
    assert!(validate_columns(&["a".into(), "a".into()]).is_err());
    assert!(validate_columns(&["1a".into()]).is_err());
    assert!(validate_columns(&["a b".into()]).is_err());
    let p = project(
        &obj(json!({"id": 1, "a": 2, "b": 3})),
        &["a".into(), "missing".into()],
        "id",
    );
    assert_eq!(Value::Object(p), json!({"id": 1, "a": 2}));
}

/// The reference: the semantics written out plainly, term by term.
#[derive(Debug, Clone)]
enum RefTerm {
    Eq(&'static str, Value),
    Ne(&'static str, Value),
    In(&'static str, Vec<Value>),
    Lt(&'static str, Value),
    Ge(&'static str, Value),
}

fn num_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn ref_ord(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn ref_matches(terms: &[RefTerm], o: &Map<String, Value>) -> bool {
    terms.iter().all(|t| match t {
        RefTerm::Eq(a, v) => o.get(*a).is_some_and(|x| num_eq(x, v)),
        RefTerm::Ne(a, v) => o.get(*a).is_some_and(|x| !num_eq(x, v)),
        RefTerm::In(a, vs) => o.get(*a).is_some_and(|x| vs.iter().any(|v| num_eq(x, v))),
        RefTerm::Lt(a, v) => o
            .get(*a)
            .is_some_and(|x| ref_ord(x, v) == Some(std::cmp::Ordering::Less)),
        RefTerm::Ge(a, v) => o
            .get(*a)
            .is_some_and(|x| ref_ord(x, v).is_some_and(|c| c.is_ge())),
    })
}

fn text(terms: &[RefTerm]) -> String {
    terms
        .iter()
        .map(|t| match t {
            RefTerm::Eq(a, v) => format!("{a} = {v}"),
            RefTerm::Ne(a, v) => format!("{a} != {v}"),
            RefTerm::In(a, vs) => format!(
                "{a} IN ({})",
                vs.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            RefTerm::Lt(a, v) => format!("{a} < {v}"),
            RefTerm::Ge(a, v) => format!("{a} >= {v}"),
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

const ATTRS: [&str; 3] = ["site", "level", "kind"];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..4).prop_map(|n| json!(n)),
        (0i64..4).prop_map(|n| json!(n as f64 + 0.5)),
        (0i64..4).prop_map(|n| json!(n as f64)),
        prop::sample::select(vec!["a", "b", "c", "aa"]).prop_map(|s| json!(s)),
        Just(Value::Null),
        any::<bool>().prop_map(|b| json!(b)),
        Just(json!([1])),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    value().prop_filter("scalar", |v| !v.is_array())
}

fn ranged() -> impl Strategy<Value = Value> {
    scalar().prop_filter("number or string", |v| v.is_number() || v.is_string())
}

fn term() -> impl Strategy<Value = RefTerm> {
    let attr = prop::sample::select(ATTRS.to_vec());
    prop_oneof![
        (attr.clone(), scalar()).prop_map(|(a, v)| RefTerm::Eq(a, v)),
        (attr.clone(), scalar()).prop_map(|(a, v)| RefTerm::Ne(a, v)),
        (attr.clone(), prop::collection::vec(scalar(), 1..4)).prop_map(|(a, v)| RefTerm::In(a, v)),
        (attr.clone(), ranged()).prop_map(|(a, v)| RefTerm::Lt(a, v)),
        (attr, ranged()).prop_map(|(a, v)| RefTerm::Ge(a, v)),
    ]
}

fn record() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(ATTRS.to_vec()), value()), 0..4)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

proptest! {
    /// The compiled predicate agrees with the reference on any record, and
    /// the routing index's equality key never leaves out a selected record.
    #[test]
    fn the_evaluator_agrees_with_the_reference(
        terms in prop::collection::vec(term(), 1..4),
        records in prop::collection::vec(record(), 1..16),
    ) {
        let f = Filter::parse(&text(&terms)).unwrap();
        let b = f.bind(&who("e"));
        for r in &records {
            let want = ref_matches(&terms, r);
            prop_assert_eq!(b.matches(r), want, "{} on {:?}", text(&terms), r);
            if let (true, Some((attr, values))) = (want, b.equality_key()) {
                let c = r.get(attr).and_then(Canon::of);
                prop_assert!(c.is_some_and(|c| values.contains(&c)));
            }
        }
    }
}
