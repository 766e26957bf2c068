//! Every binding shows the same peer status: the field names (and, where the
//! bindings declare them, the types) of the C header's documented status
//! JSON, the Python TypedDict stubs, the Node `.d.ts` interfaces and the
//! README's status list are compared with what the core really serializes
//! (taken live, through the C ABI). A field added to the core's
//! `PeerStatus`/`TableStatus` fails this test until each of those lists has
//! it.
//!
//! Nested objects are compared where the live sample shows them: a nested
//! status that is `null` or an empty list in the sample is compared by name
//! only against the core, but still field by field between the bindings.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr;

use serde_json::Value;

use crate::*;

/// A field's shape: its type where known, and its own fields if it is an
/// object (or a list of objects).
#[derive(Debug, Clone, PartialEq)]
struct Field {
    /// "string", "int", "bool", "list", "object", or None when not known
    /// (the C header documents names only; a sample value may be null).
    ty: Option<&'static str>,
    nullable: Option<bool>,
    nested: Option<Fields>,
}

type Fields = BTreeMap<String, Field>;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

// ---- the core, live -------------------------------------------------------

fn json_fields(obj: &serde_json::Map<String, Value>) -> Fields {
    obj.iter()
        .map(|(k, v)| {
            let (ty, nested) = match v {
                Value::Null => (None, None),
                Value::Bool(_) => (Some("bool"), None),
                Value::Number(_) => (Some("int"), None),
                Value::String(_) => (Some("string"), None),
                Value::Array(a) => (
                    Some("list"),
                    a.first().and_then(Value::as_object).map(json_fields),
                ),
                Value::Object(o) => (Some("object"), Some(json_fields(o))),
            };
            let nullable = v.is_null().then_some(true);
            (
                k.clone(),
                Field {
                    ty,
                    nullable,
                    nested,
                },
            )
        })
        .collect()
}

/// A peer's status as tidelog_peer_status() returns it: a database with
/// replication started and one peer with one table, so that the status has
/// a table entry to show its fields.
fn live_status() -> Value {
    let dir = std::env::temp_dir().join(format!("tidelog-status-fields-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut db = ptr::null_mut();
    let d = c(dir.to_str().unwrap());
    let mut out = ptr::null_mut();
    // SAFETY: valid C strings and out pointers; `db` is freed last.
    let text = unsafe {
        let ok = tidelog_status::TIDELOG_OK;
        assert_eq!(
            tidelog_open(d.as_ptr(), c(r#"{"node_name": "n1"}"#).as_ptr(), &mut db),
            ok
        );
        assert_eq!(
            tidelog_start_replication(db, c(r#"{"insecure": true}"#).as_ptr()),
            ok
        );
        let peer = r#"{"name": "n2", "address": "127.0.0.1:9",
                       "tables": [{"table": "t", "publish": true, "subscribe": true}]}"#;
        assert_eq!(tidelog_add_peer(db, c(peer).as_ptr()), ok);
        assert_eq!(tidelog_peer_status(db, c("n2").as_ptr(), &mut out), ok);
        let text = CStr::from_ptr(tidelog_string_data(out))
            .to_str()
            .unwrap()
            .to_owned();
        tidelog_string_free(out);
        assert_eq!(tidelog_close(db), ok);
        tidelog_db_free(db);
        text
    };
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&text).unwrap()
}

// ---- the bindings' declarations -------------------------------------------

/// The body lines of `start` (a `class ...:` or `interface ... {` line) up
/// to the end of its block.
fn block<'a>(text: &'a str, start: &str, end: impl Fn(&str) -> bool) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != start);
    assert!(lines.next().is_some(), "`{start}` not found");
    lines.take_while(|l| !end(l)).collect()
}

/// Python: the TypedDict classes of `_types.py` (what the stubs export).
fn python_fields(text: &str, class: &str) -> Fields {
    let start = format!("class {class}(TypedDict):");
    let mut fields = Fields::new();
    let mut in_doc = false;
    for line in block(text, &start, |l| !l.is_empty() && !l.starts_with(' ')) {
        let t = line.trim();
        // Docstrings: a line with an odd number of quotes opens or closes one.
        let quotes = t.matches("\"\"\"").count();
        if in_doc || quotes > 0 {
            in_doc ^= quotes % 2 == 1;
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (name, ty) = t
            .split_once(':')
            .unwrap_or_else(|| panic!("{class}: cannot read `{t}`"));
        let mut ty = ty.trim();
        let nullable = ty.starts_with("Optional[");
        if nullable {
            ty = &ty["Optional[".len()..ty.len() - 1];
        }
        let (kind, nested) = match ty {
            "str" => ("string", None),
            "int" => ("int", None),
            "bool" => ("bool", None),
            t if t.starts_with("List[") => {
                let inner = &t["List[".len()..t.len() - 1];
                (
                    "list",
                    typed_dict(text, inner).then(|| python_fields(text, inner)),
                )
            }
            t if typed_dict(text, t) => ("object", Some(python_fields(text, t))),
            t if t.starts_with("Dict[") => ("object", None),
            t => panic!("{class}.{name}: unexpected type `{t}`"),
        };
        fields.insert(
            name.trim().to_owned(),
            Field {
                ty: Some(kind),
                nullable: Some(nullable),
                nested,
            },
        );
    }
    fields
}

fn typed_dict(text: &str, name: &str) -> bool {
    text.contains(&format!("class {name}(TypedDict):"))
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for ch in camel.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Node: the interfaces of index.d.ts, names turned back to snake_case.
/// Node ids are hex text there, as everywhere in the Node API.
fn node_fields(text: &str, iface: &str) -> Fields {
    let start = format!("export interface {iface} {{");
    let mut fields = Fields::new();
    for line in block(text, &start, |l| l.starts_with('}')) {
        let t = line.trim();
        if t.is_empty() || t.starts_with("/*") || t.starts_with('*') || t.starts_with("//") {
            continue;
        }
        let (name, ty) = t
            .split_once(':')
            .unwrap_or_else(|| panic!("{iface}: cannot read `{t}`"));
        let name = snake_case(name.trim_end_matches('?'));
        let mut ty = ty.trim().trim_end_matches(';').trim();
        let nullable = ty.ends_with(" | null");
        if nullable {
            ty = ty.trim_end_matches(" | null");
        }
        let is_id = name == "node" || name.ends_with("node_id");
        let (kind, nested) = match ty {
            "string" if is_id => ("int", None),
            "string" => ("string", None),
            "number" | "bigint" => ("int", None),
            "boolean" => ("bool", None),
            t if t.ends_with("[]") => {
                let inner = t.trim_end_matches("[]");
                let known = text.contains(&format!("export interface {inner} {{"));
                ("list", known.then(|| node_fields(text, inner)))
            }
            t if text.contains(&format!("export interface {t} {{")) => {
                ("object", Some(node_fields(text, t)))
            }
            t if t.starts_with("Record<") => ("object", None),
            t => panic!("{iface}.{name}: unexpected type `{t}`"),
        };
        fields.insert(
            name,
            Field {
                ty: Some(kind),
                nullable: Some(nullable),
                nested,
            },
        );
    }
    fields
}

/// A documented JSON shape `{"a", "b": [{"c"}], "d": {"e"}}`: names only.
fn shape_fields(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Fields {
    let mut fields = Fields::new();
    while let Some(ch) = chars.next() {
        match ch {
            '}' => return fields,
            '"' => {
                let name: String = chars.by_ref().take_while(|&c| c != '"').collect();
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let mut field = Field {
                    ty: None,
                    nullable: None,
                    nested: None,
                };
                if chars.peek() == Some(&':') {
                    chars.next();
                    let mut list = false;
                    for c in chars.by_ref() {
                        match c {
                            '[' => list = true,
                            '{' => break,
                            _ => {}
                        }
                    }
                    field.nested = Some(shape_fields(chars));
                    if list {
                        chars.find(|&c| c == ']');
                    }
                }
                fields.insert(name, field);
            }
            _ => {}
        }
    }
    panic!("unterminated documented JSON object");
}

/// C: the status JSON documented on tidelog_peer_status() in the header.
fn c_fields(header: &str) -> Fields {
    let at = header
        .find("tidelog_status tidelog_peer_status(")
        .expect("tidelog_peer_status in the header");
    let doc_start = header[..at].rfind("/**").expect("its doc comment");
    let doc: String = header[doc_start..at]
        .lines()
        .map(|l| l.trim().trim_start_matches("/**").trim_start_matches('*'))
        .collect::<Vec<_>>()
        .join(" ");
    let open = doc.find("`{").expect("the status JSON in backticks") + 2;
    shape_fields(&mut doc[open..].chars().peekable())
}

/// README: the backticked names of the "Status." list; a name followed by a
/// parenthesis that holds backticked names has those as its fields.
fn readme_fields(readme: &str) -> Fields {
    let start = readme
        .find("- **Status.**")
        .expect("the README's Status item");
    let rest = &readme[start + 2..];
    let end = rest
        .find("\n- ")
        .into_iter()
        .chain(rest.find("\n\n"))
        .min()
        .unwrap_or(rest.len());
    let item = &rest[..end];
    let mut top = Fields::new();
    let mut depth = 0;
    let mut last_top: Option<String> = None;
    let mut outside = true;
    for part in item.split('`') {
        if outside {
            for ch in part.chars() {
                match ch {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
            }
        } else if part.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !part.is_empty() {
            let leaf = Field {
                ty: None,
                nullable: None,
                nested: None,
            };
            if depth == 0 {
                top.insert(part.to_owned(), leaf);
                last_top = Some(part.to_owned());
            } else if let Some(parent) = &last_top {
                let p = top.get_mut(parent).unwrap();
                p.nested
                    .get_or_insert_with(Fields::new)
                    .insert(part.to_owned(), leaf);
            }
        }
        outside = !outside;
    }
    top
}

// ---- comparison -----------------------------------------------------------

/// Differences between `want` (the reference) and `got`, by path.
fn diff(path: &str, want: &Fields, got: &Fields, types: bool, out: &mut Vec<String>) {
    for name in want.keys().filter(|k| !got.contains_key(*k)) {
        out.push(format!("missing `{path}{name}`"));
    }
    for name in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!(
            "`{path}{name}` is not a field of the core's status"
        ));
    }
    for (name, w) in want {
        let Some(g) = got.get(name) else { continue };
        if types {
            if let (Some(a), Some(b)) = (w.ty, g.ty) {
                if a != b {
                    out.push(format!("`{path}{name}`: {b}, the reference says {a}"));
                }
            }
            // The live sample only says "can be null" (Some(true)) or
            // nothing; declarations say both.
            if let (Some(a), Some(b)) = (w.nullable, g.nullable) {
                if a != b {
                    out.push(format!(
                        "`{path}{name}`: nullable {b}, the reference says {a}"
                    ));
                }
            }
        }
        if let (Some(a), Some(b)) = (&w.nested, &g.nested) {
            diff(&format!("{path}{name}."), a, b, types, out);
        }
    }
}

#[test]
fn every_binding_declares_the_core_status_fields() {
    let live = live_status();
    let core = json_fields(live.as_object().expect("status is an object"));
    assert!(
        core.get("tables").and_then(|t| t.nested.as_ref()).is_some(),
        "the sample status must show a table: {live}"
    );
    let py_text = read("bindings/python/python/tidelog/_types.py");
    let node_text = read("bindings/node/index.d.ts");
    let bindings = [
        (
            "Python (bindings/python/python/tidelog/_types.py)",
            python_fields(&py_text, "PeerStatus"),
            true,
        ),
        (
            "Node (bindings/node/index.d.ts)",
            node_fields(&node_text, "PeerStatus"),
            true,
        ),
        (
            "C (tidelog_peer_status in include/tidelog.h)",
            c_fields(&read("include/tidelog.h")),
            false,
        ),
        (
            "README.md (the Status item)",
            readme_fields(&read("README.md")),
            false,
        ),
    ];
    let mut problems = Vec::new();
    for (who, fields, types) in &bindings {
        let mut out = Vec::new();
        diff("", &core, fields, *types, &mut out);
        // Nested statuses the sample leaves null or empty: the declarations
        // must still agree with each other (Python is the reference).
        diff("", &bindings[0].1, fields, *types, &mut out);
        out.sort();
        out.dedup();
        problems.extend(out.into_iter().map(|p| format!("{who}: {p}")));
    }
    assert!(
        problems.is_empty(),
        "the bindings do not show the core's status ({live}):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_parsers_see_what_is_declared() {
    // Guards the test above against a parser that reads nothing.
    let py = python_fields(
        &read("bindings/python/python/tidelog/_types.py"),
        "PeerStatus",
    );
    assert_eq!(py["since_ms"].nullable, Some(true));
    assert_eq!(
        py["tables"]
            .nested
            .as_ref()
            .map(|t| t.contains_key("outbound")),
        Some(true)
    );
    let doc =
        "class A(TypedDict):\n    \"\"\"One\n    a: int\n    \"\"\"\n\n    b: Optional[str]\n";
    assert_eq!(python_fields(doc, "A").keys().collect::<Vec<_>>(), ["b"]);
    let node = node_fields(&read("bindings/node/index.d.ts"), "PeerStatus");
    assert_eq!(node["node_id"].ty, Some("int"));
    assert_eq!(
        node["tables"]
            .nested
            .as_ref()
            .map(|t| t.contains_key("inbound")),
        Some(true)
    );
    let shape = "{\"a\", \"b\": [{\"c\", \"d\"}], \"e\": {\"f\"}, \"g\"}";
    let f = shape_fields(&mut shape[1..].chars().peekable());
    assert_eq!(f.keys().collect::<Vec<_>>(), ["a", "b", "e", "g"]);
    assert_eq!(f["b"].nested.as_ref().unwrap().len(), 2);
    let readme =
        "- **Status.** x: `name`, `tables` (per table: `table`, `inbound`), `lag_ms` (ms).\n";
    let r = readme_fields(readme);
    assert_eq!(r.keys().collect::<Vec<_>>(), ["lag_ms", "name", "tables"]);
    assert_eq!(r["tables"].nested.as_ref().unwrap().len(), 2);
}
