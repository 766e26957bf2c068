//! Python objects <-> JSON. Records go in as dicts (walked straight into a
//! `serde_json::Value`) or as JSON text, and come out as dicts built straight
//! from the stored JSON text by a serde visitor, with no intermediate
//! `Value` tree.

use std::fmt;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use tidelog::record::{CREATED_ATTR, UPDATED_ATTR};
use tidelog::{Key, Record, RecordView};

use crate::error::invalid;

/// Nesting limit for records, the same as serde_json's parser uses, so
/// anything accepted here can be read back (and a self-containing dict is
/// refused instead of overflowing the stack).
const MAX_DEPTH: u32 = 128;

extern "C" {
    // In every CPython 3 (exported, though only part of the limited API
    // from 3.10). pyo3 hides it under abi3-py39, where its fallback copies
    // every string through a temporary bytes object. The UTF-8 form is
    // cached inside the str object, so repeated table names cost nothing.
    fn PyUnicode_AsUTF8AndSize(o: *mut ffi::PyObject, size: *mut ffi::Py_ssize_t) -> *const u8;
}

/// The UTF-8 text of a Python str, borrowed from the object. A str holding
/// lone surrogates (not encodable as UTF-8) is an `InvalidInputError`.
pub fn py_str<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str; the returned buffer lives as long as it.
    let p = unsafe { PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut len) };
    if p.is_null() {
        let err = PyErr::take(s.py());
        drop(err);
        return Err(invalid(
            "text is not valid UTF-8 (it holds lone surrogates)",
        ));
    }
    // SAFETY: CPython guarantees valid UTF-8 of `len` bytes.
    Ok(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(p, len as usize)) })
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A primary-key value: a str or an int that fits in 64 bits (not a bool).
pub fn py_to_key(obj: &Bound<'_, PyAny>) -> PyResult<Key> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Key::Str(py_str(s)?.to_owned()));
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        return obj
            .extract::<i64>()
            .map(Key::Int)
            .map_err(|_| invalid("an integer key must fit in a signed 64-bit integer"));
    }
    Err(invalid(format!(
        "a key must be a str or an int, got {}",
        type_name(obj)
    )))
}

pub fn key_to_py<'py>(py: Python<'py>, key: &Key) -> PyResult<Bound<'py, PyAny>> {
    Ok(match key {
        Key::Int(i) => i.into_pyobject(py)?.into_any(),
        Key::Str(s) => PyString::new(py, s).into_any(),
    })
}

/// A record to insert or upsert, as the core takes it.
pub enum RecordArg<'a> {
    /// From a dict.
    Value(Value),
    /// JSON text, stored as written (see `Database::upsert_json`).
    Text(&'a str),
}

impl RecordArg<'_> {
    pub fn insert(self, tx: &mut tidelog::Transaction, table: &str) -> tidelog::Result<()> {
        match self {
            RecordArg::Value(v) => tx.insert(table, v).map(|_| ()),
            RecordArg::Text(t) => tx.insert_json(table, t).map(|_| ()),
        }
    }

    pub fn upsert(self, tx: &mut tidelog::Transaction, table: &str) -> tidelog::Result<()> {
        match self {
            RecordArg::Value(v) => tx.upsert(table, v).map(|_| ()),
            RecordArg::Text(t) => tx.upsert_json(table, t).map(|_| ()),
        }
    }
}

/// A record argument for an insert or upsert: a dict, or JSON object text
/// as `str` / `bytes`, left as text.
pub fn py_to_record_arg<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<RecordArg<'a>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(RecordArg::Text(py_str(s)?));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return match std::str::from_utf8(b.as_bytes()) {
            Ok(text) => Ok(RecordArg::Text(text)),
            // Worded by the core, as for a patch.
            Err(_) => tidelog::record::parse_object_bytes(b.as_bytes())
                .map(|m| RecordArg::Value(Value::Object(m)))
                .map_err(crate::error::to_py),
        };
    }
    py_to_record(obj).map(RecordArg::Value)
}

/// A record argument: a dict (any `dict` subclass) or JSON object text as
/// `str` / `bytes`.
pub fn py_to_record(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(d) = obj.cast::<PyDict>() {
        return dict_to_value(d, 0);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return tidelog::record::parse_object(py_str(s)?)
            .map(Value::Object)
            .map_err(crate::error::to_py);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return tidelog::record::parse_object_bytes(b.as_bytes())
            .map(Value::Object)
            .map_err(crate::error::to_py);
    }
    Err(invalid(format!(
        "a record must be a dict (or JSON object text), got {}",
        type_name(obj)
    )))
}

fn dict_to_value(d: &Bound<'_, PyDict>, depth: u32) -> PyResult<Value> {
    if depth >= MAX_DEPTH {
        return Err(invalid(format!(
            "the record nests deeper than {MAX_DEPTH} levels (or contains itself)"
        )));
    }
    let mut map = Map::new();
    for (k, v) in d.iter() {
        let key = match k.cast::<PyString>() {
            Ok(s) => py_str(s)?.to_owned(),
            Err(_) => {
                return Err(invalid(format!(
                    "record attribute names must be str, got {}",
                    type_name(&k)
                )))
            }
        };
        let value = py_to_value(&v, depth + 1)?;
        map.insert(key, value);
    }
    Ok(Value::Object(map))
}

/// Any JSON-compatible Python value: None, bool, int (64-bit), float
/// (finite), str, list, tuple, dict with str keys.
pub fn py_to_value(obj: &Bound<'_, PyAny>, depth: u32) -> PyResult<Value> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(py_str(s)?.to_owned()));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::Number(u.into()));
        }
        return Err(invalid(
            "integers must fit in 64 bits (use a float or a str for bigger numbers)",
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| invalid("NaN and infinite floats are not JSON numbers"));
    }
    if depth >= MAX_DEPTH {
        return Err(invalid(format!(
            "the record nests deeper than {MAX_DEPTH} levels (or contains itself)"
        )));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return dict_to_value(d, depth);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        let mut v = Vec::with_capacity(l.len());
        for item in l.iter() {
            v.push(py_to_value(&item, depth + 1)?);
        }
        return Ok(Value::Array(v));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let mut v = Vec::with_capacity(t.len());
        for item in t.iter() {
            v.push(py_to_value(&item, depth + 1)?);
        }
        return Ok(Value::Array(v));
    }
    Err(invalid(format!(
        "a {} is not a JSON value (use None, bool, int, float, str, list, tuple or dict)",
        type_name(obj)
    )))
}

/// A `serde_json::Value` as Python objects.
pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for i in items {
                list.append(value_to_py(py, i)?)?;
            }
            list.into_any()
        }
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, v) in m {
                d.set_item(PyString::new(py, k), value_to_py(py, v)?)?;
            }
            d.into_any()
        }
    })
}

/// JSON text straight to Python objects.
pub fn json_to_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let mut de = serde_json::Deserializer::from_str(text);
    PySeed(py)
        .deserialize(&mut de)
        .map_err(|e| crate::error::corrupt(format!("stored record is not valid JSON: {e}")))
}

/// A record as a dict: the core's `RecordView` (its attributes, then the
/// two times).
pub fn record_view_to_py<'py>(py: Python<'py>, r: &RecordView<'_>) -> PyResult<Bound<'py, PyAny>> {
    let obj = json_to_py(py, r.body)?;
    let d = obj
        .cast::<PyDict>()
        .map_err(|_| crate::error::corrupt("stored record is not a JSON object".to_string()))?;
    d.set_item(pyo3::intern!(py, CREATED_ATTR), r.created_ms)?;
    d.set_item(pyo3::intern!(py, UPDATED_ATTR), r.updated_ms)?;
    Ok(obj)
}

pub fn opt_record_view_to_py<'py>(
    py: Python<'py>,
    r: Option<&RecordView<'_>>,
) -> PyResult<Bound<'py, PyAny>> {
    match r {
        Some(r) => record_view_to_py(py, r),
        None => Ok(py.None().into_bound(py)),
    }
}

pub fn opt_record_to_py<'py>(py: Python<'py>, r: Option<&Record>) -> PyResult<Bound<'py, PyAny>> {
    opt_record_view_to_py(py, r.map(RecordView::of).as_ref())
}

pub fn records_to_py<'py>(py: Python<'py>, rs: &[Record]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for r in rs {
        list.append(record_view_to_py(py, &RecordView::of(r))?)?;
    }
    Ok(list)
}

struct PySeed<'py>(Python<'py>);

impl<'de, 'py> DeserializeSeed<'de> for PySeed<'py> {
    type Value = Bound<'py, PyAny>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(PyVisitor(self.0))
    }
}

struct PyVisitor<'py>(Python<'py>);

fn de_err<E: serde::de::Error>(e: PyErr) -> E {
    E::custom(e.to_string())
}

impl<'de, 'py> Visitor<'de> for PyVisitor<'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0, v).to_owned().into_any())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let Ok(o) = v.into_pyobject(self.0);
        Ok(o.into_any())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let Ok(o) = v.into_pyobject(self.0);
        Ok(o.into_any())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.0, v).into_any())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0, v).into_any())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0);
        while let Some(v) = seq.next_element_seed(PySeed(self.0))? {
            list.append(v).map_err(de_err)?;
        }
        Ok(list.into_any())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0);
        while let Some(k) = map.next_key_seed(KeySeed(self.0))? {
            let v = map.next_value_seed(PySeed(self.0))?;
            dict.set_item(k, v).map_err(de_err)?;
        }
        Ok(dict.into_any())
    }
}

struct KeySeed<'py>(Python<'py>);

impl<'de, 'py> DeserializeSeed<'de> for KeySeed<'py> {
    type Value = Bound<'py, PyString>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for KeySeed<'py> {
    type Value = Bound<'py, PyString>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(attribute_name(self.0, v))
    }
}

const KEY_CACHE_SLOTS: usize = 512;
const KEY_CACHE_MAX_LEN: usize = 48;

type KeySlot = Option<(Box<str>, Py<PyString>)>;

thread_local! {
    /// Recently seen attribute names as Python strings, direct-mapped by a
    /// hash of the name. Records of a table share their attribute names, so
    /// reads reuse one str object per name (its hash is computed once)
    /// instead of allocating and hashing a new one per record and name.
    static KEY_CACHE: std::cell::RefCell<Vec<KeySlot>> =
        std::cell::RefCell::new((0..KEY_CACHE_SLOTS).map(|_| None).collect());
}

fn attribute_name<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    if name.len() > KEY_CACHE_MAX_LEN {
        return PyString::new(py, name);
    }
    // FNV-1a: names are short, this is a handful of cycles.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let slot = (h as usize) % KEY_CACHE_SLOTS;
    KEY_CACHE
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            match &cache[slot] {
                Some((k, v)) if &**k == name => v.bind(py).clone(),
                _ => {
                    let s = PyString::new(py, name);
                    cache[slot] = Some((name.into(), s.clone().unbind()));
                    s
                }
            }
        })
        .unwrap_or_else(|_| PyString::new(py, name))
}
