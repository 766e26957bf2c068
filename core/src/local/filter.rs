//! Row filters of table flows: a predicate over a record's attributes,
//! parameterised by the peer's identity, and the column list a flow sends.
//!
//! Grammar (terms joined by `AND`, no `OR`):
//!
//! ```text
//! filter  := term ("AND" term)*
//! term    := attr op operand | attr "IN" "(" operand ("," operand)* ")"
//! op      := "=" | "!=" | "<" | "<=" | ">" | ">="
//! operand := JSON literal (string, number, true, false, null) | "$peer.name" | "$peer.dns"
//! attr    := letter or '_', then letters, digits, '_' or '-'
//! ```
//!
//! Semantics: equality is JSON equality (numbers compare by value, so `1`
//! equals `1.0`); ranges hold only between two numbers or two strings; an
//! attribute the record lacks matches no term, `!=` included. `$peer.name`
//! is the peer's node name; `$peer.dns` is every DNS name of its verified
//! certificate (equal to any of them; `!=` none of them), and no name at
//! all on a link without a certificate, which then matches nothing.
//!
//! A filter is parsed when its peer or rule is added ([`Filter::parse`]),
//! and bound to one peer when a link comes up ([`Filter::bind`]), so a
//! write is tested against a [`Bound`] predicate of plain values.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Longest filter text accepted.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Most operands in one `IN` list.
pub const MAX_IN_ITEMS: usize = 1024;
/// Most terms joined by `AND`.
pub const MAX_TERMS: usize = 64;

/// A parameter, bound per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Name,
    Dns,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Lit(Value),
    Param(Param),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
struct Term {
    attr: String,
    cmp: Cmp,
    /// One operand, or the list of an `IN` (`cmp` is then `Eq`).
    operands: Vec<Operand>,
}

/// A parsed, unbound filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    terms: Vec<Term>,
}

/// Who a filter is bound for.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity {
    pub name: String,
    /// DNS names of the peer's verified certificate.
    pub dns: Vec<String>,
}

/// A JSON scalar as equality sees it: numbers by value, so the routing
/// index and the evaluator agree on what is equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Canon {
    Null,
    Bool(bool),
    /// The f64's bits, with -0 as 0 (NaN cannot occur in JSON).
    Num(u64),
    Str(String),
}

impl Canon {
    /// `None` for arrays and objects, which equal no literal.
    pub fn of(v: &Value) -> Option<Canon> {
        Some(match v {
            Value::Null => Canon::Null,
            Value::Bool(b) => Canon::Bool(*b),
            Value::Number(n) => {
                let f = n.as_f64()?;
                Canon::Num(if f == 0.0 { 0 } else { f.to_bits() })
            }
            Value::String(s) => Canon::Str(s.clone()),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Test {
    /// Equal to any of these (`=`, `IN`).
    AnyOf(Vec<Canon>),
    /// Equal to none of these (`!=`).
    NoneOf(Vec<Canon>),
    Range(Cmp, Value),
}

/// A filter bound to one peer: what a write is tested against.
#[derive(Debug, Clone)]
pub struct Bound {
    terms: Vec<(String, Test)>,
}

fn err(text: &str, pos: usize, expected: &str) -> Error {
    let found = text[pos..]
        .chars()
        .take(16)
        .collect::<String>()
        .trim()
        .to_string();
    let found = if found.is_empty() {
        "the end".to_string()
    } else {
        format!("`{found}`")
    };
    Error::invalid(
        "filter",
        format!(
            "at byte {pos} of `{}`: expected {expected}, found {found}",
            text.chars().take(80).collect::<String>()
        ),
    )
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// A keyword, not followed by a name character.
    fn keyword(&mut self, k: &str) -> bool {
        self.skip_ws();
        let r = self.rest();
        let matches = r.len() >= k.len()
            && r[..k.len()].eq_ignore_ascii_case(k)
            && !r[k.len()..].starts_with(|c: char| is_name_char(c));
        if matches {
            self.pos += k.len();
        }
        matches
    }

    fn name(&mut self) -> Result<String> {
        self.skip_ws();
        let r = self.rest();
        if !r.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Err(err(self.text, self.pos, "an attribute name"));
        }
        let len = r.find(|c: char| !is_name_char(c)).unwrap_or(r.len());
        self.pos += len;
        Ok(r[..len].to_string())
    }

    fn cmp(&mut self) -> Result<Cmp> {
        for (s, c) in [
            ("!=", Cmp::Ne),
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("=", Cmp::Eq),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ] {
            if self.eat(s) {
                return Ok(c);
            }
        }
        Err(err(
            self.text,
            self.pos,
            "one of = != < <= > >= IN after the attribute",
        ))
    }

    fn operand(&mut self) -> Result<Operand> {
        self.skip_ws();
        let start = self.pos;
        let r = self.rest();
        if let Some(p) = r.strip_prefix('$') {
            let len = p
                .find(|c: char| !(is_name_char(c) || c == '.'))
                .unwrap_or(p.len());
            let param = match &p[..len] {
                "peer.name" => Param::Name,
                "peer.dns" => Param::Dns,
                _ => {
                    return Err(err(
                        self.text,
                        start,
                        "a known parameter ($peer.name or $peer.dns)",
                    ))
                }
            };
            self.pos += 1 + len;
            return Ok(Operand::Param(param));
        }
        let len = if let Some(body) = r.strip_prefix('"') {
            // The closing quote: the first one not escaped.
            let mut escaped = false;
            let end = body.char_indices().find_map(|(i, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close.then_some(i + 2)
            });
            end.ok_or_else(|| err(self.text, start, "a closing `\"`"))?
        } else {
            r.find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
                .unwrap_or(r.len())
        };
        let lit: Value = serde_json::from_str(&r[..len]).map_err(|_| {
            err(
                self.text,
                start,
                "a JSON literal (\"text\", a number, true, false, null) or $peer.name",
            )
        })?;
        if lit.is_array() || lit.is_object() {
            return Err(err(self.text, start, "a JSON scalar literal"));
        }
        self.pos += len;
        Ok(Operand::Lit(lit))
    }

    fn term(&mut self) -> Result<Term> {
        let attr = self.name()?;
        if self.keyword("IN") {
            if !self.eat("(") {
                return Err(err(self.text, self.pos, "`(` after IN"));
            }
            let mut operands = vec![self.operand()?];
            while self.eat(",") {
                if operands.len() >= MAX_IN_ITEMS {
                    return Err(Error::invalid(
                        "filter",
                        format!(
                            "the IN list of `{attr}` has more than {MAX_IN_ITEMS} values: split the rule, or filter on an attribute that groups the rows"
                        ),
                    ));
                }
                operands.push(self.operand()?);
            }
            if !self.eat(")") {
                return Err(err(self.text, self.pos, "`,` or `)` in the IN list"));
            }
            return Ok(Term {
                attr,
                cmp: Cmp::Eq,
                operands,
            });
        }
        let cmp = self.cmp()?;
        let start = self.pos;
        let operand = self.operand()?;
        let ranged = !matches!(cmp, Cmp::Eq | Cmp::Ne);
        match &operand {
            Operand::Lit(v) if ranged && !(v.is_number() || v.is_string()) => {
                return Err(err(
                    self.text,
                    start,
                    "a number or a string to compare by range",
                ))
            }
            Operand::Param(Param::Dns) if ranged => {
                return Err(err(
                    self.text,
                    start,
                    "a single value: $peer.dns is a list of names, usable with = and != only",
                ))
            }
            _ => {}
        }
        Ok(Term {
            attr,
            cmp,
            operands: vec![operand],
        })
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Filter {
    /// Parses a filter; the error names the byte position and what was
    /// expected there.
    pub fn parse(text: &str) -> Result<Filter> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(Error::invalid(
                "filter",
                format!(
                    "is {} bytes long; at most {MAX_FILTER_BYTES} are accepted",
                    text.len()
                ),
            ));
        }
        let mut p = Parser { text, pos: 0 };
        let mut terms = vec![p.term()?];
        while p.keyword("AND") {
            if terms.len() >= MAX_TERMS {
                return Err(Error::invalid(
                    "filter",
                    format!("has more than {MAX_TERMS} terms joined by AND"),
                ));
            }
            terms.push(p.term()?);
        }
        p.skip_ws();
        if p.pos != text.len() {
            return Err(err(text, p.pos, "AND or the end of the filter"));
        }
        Ok(Filter { terms })
    }

    /// The attributes the filter tests, each once.
    pub fn attributes(&self) -> BTreeSet<String> {
        self.terms.iter().map(|t| t.attr.clone()).collect()
    }

    /// The predicate for one peer.
    pub fn bind(&self, peer: &PeerIdentity) -> Bound {
        let terms = self
            .terms
            .iter()
            .map(|t| {
                let mut values = Vec::new();
                for o in &t.operands {
                    match o {
                        Operand::Lit(v) => values.push(v.clone()),
                        Operand::Param(Param::Name) => {
                            values.push(Value::String(peer.name.clone()))
                        }
                        Operand::Param(Param::Dns) => {
                            values.extend(peer.dns.iter().map(|d| Value::String(d.clone())))
                        }
                    }
                }
                let canon = || values.iter().filter_map(Canon::of).collect();
                let test = match t.cmp {
                    Cmp::Eq => Test::AnyOf(canon()),
                    Cmp::Ne => Test::NoneOf(canon()),
                    c => match values.into_iter().next() {
                        Some(v) => Test::Range(c, v),
                        // Unreachable by the parser; matches nothing.
                        None => Test::AnyOf(Vec::new()),
                    },
                };
                (t.attr.clone(), test)
            })
            .collect();
        Bound { terms }
    }
}

impl Bound {
    pub fn matches(&self, obj: &Map<String, Value>) -> bool {
        self.terms.iter().all(|(attr, test)| {
            let Some(v) = obj.get(attr) else {
                return false;
            };
            match test {
                Test::AnyOf(set) => Canon::of(v).is_some_and(|c| set.contains(&c)),
                Test::NoneOf(set) => Canon::of(v).is_none_or(|c| !set.contains(&c)),
                Test::Range(cmp, bound) => range(v, *cmp, bound),
            }
        })
    }

    /// An attribute this predicate tests for equality with a small set of
    /// values, with them: what the routing index files the link under.
    pub fn equality_key(&self) -> Option<(&str, &[Canon])> {
        self.terms.iter().find_map(|(a, t)| match t {
            Test::AnyOf(set) => Some((a.as_str(), set.as_slice())),
            _ => None,
        })
    }
}

fn range(v: &Value, cmp: Cmp, bound: &Value) -> bool {
    let ord = match (v, bound) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    };
    let Some(o) = ord else {
        return false;
    };
    match cmp {
        Cmp::Lt => o.is_lt(),
        Cmp::Le => o.is_le(),
        Cmp::Gt => o.is_gt(),
        Cmp::Ge => o.is_ge(),
        Cmp::Eq | Cmp::Ne => false,
    }
}

/// Checks a flow's column list: names as attributes are, none twice.
pub fn validate_columns(columns: &[String]) -> Result<()> {
    for (i, c) in columns.iter().enumerate() {
        let ok = c.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
            && c.chars().all(is_name_char);
        if !ok {
            return Err(Error::invalid(
                "columns",
                format!("`{c}` is not an attribute name (a letter or '_', then letters, digits, '_' or '-')"),
            ));
        }
        if columns[..i].contains(c) {
            return Err(Error::invalid("columns", format!("`{c}` is listed twice")));
        }
    }
    Ok(())
}

/// The record cut down to `columns` and the key attribute `key_attr`.
pub fn project(obj: &Map<String, Value>, columns: &[String], key_attr: &str) -> Map<String, Value> {
    obj.iter()
        .filter(|(k, _)| *k == key_attr || columns.iter().any(|c| c == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The attributes of `obj` named in `attrs`, as the log records them
/// before a write to a filtered table (see `LogEntry::prior`).
pub fn routed_values(obj: &Map<String, Value>, attrs: &[String]) -> String {
    let picked: Map<String, Value> = attrs
        .iter()
        .filter_map(|a| Some((a.clone(), obj.get(a)?.clone())))
        .collect();
    Value::Object(picked).to_string()
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
