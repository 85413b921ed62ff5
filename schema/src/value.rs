//! Decoded params and results: a value tree that keeps field order and every byte.

use std::fmt::{self, Write as _};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// One decoded value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `Void`.
    Void,
    /// `Bool`.
    Bool(bool),
    /// A signed integer of any width.
    Int(i64),
    /// An unsigned integer of any width.
    UInt(u64),
    /// `Float32` or `Float64`.
    Float(f64),
    /// An enum value and, when the schema knows it, its name.
    Enum(u16, Option<String>),
    /// `Text` that is valid UTF-8.
    Text(String),
    /// `Text` whose bytes are not UTF-8 (kept whole).
    BadText(Vec<u8>),
    /// `Data`, kept whole.
    Data(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A struct (or group), fields in declaration order.
    Struct(Vec<(String, Value)>),
    /// A capability pointer.
    Cap(CapValue),
    /// A null pointer.
    Null,
    /// A pointer whose type the schema does not give (`AnyPointer`, unknown struct).
    Raw(RawValue),
    /// This part could not be decoded; the rest of the value still was.
    Error(String),
}

/// A capability inside params or results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CapValue {
    /// Index into the message's cap table.
    pub index: u32,
    /// Interface the schema expects here, if known.
    pub interface: Option<String>,
    /// The capability's stable name (e.g. `Mining#4`), filled in by connection state.
    pub name: Option<String>,
}

/// An opaque pointer shown as raw words.
#[derive(Debug, Clone, PartialEq)]
pub struct RawValue {
    /// `struct`, `list`, … as in [`crate::wire::Target::kind`].
    pub kind: String,
    /// Data and pointer section sizes (struct) or element count (list).
    pub shape: String,
    /// The data section (struct) or the bytes (byte list) in hex.
    pub hex: String,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Value {
    /// The field `name` of a struct value.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a `Text` value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Visits every capability in the tree, mutably (used to attach names).
    pub fn caps_mut(&mut self, f: &mut dyn FnMut(&mut CapValue)) {
        match self {
            Value::Cap(c) => f(c),
            Value::List(items) => items.iter_mut().for_each(|v| v.caps_mut(f)),
            Value::Struct(fields) => fields.iter_mut().for_each(|(_, v)| v.caps_mut(f)),
            _ => {}
        }
    }

    /// Renders the value in Cap'n Proto's text style, abbreviating long blobs to `max_blob`
    /// bytes (the JSON form never abbreviates).
    pub fn to_text(&self, max_blob: usize) -> String {
        let mut s = String::new();
        self.write_text(&mut s, max_blob);
        s
    }

    fn write_text(&self, out: &mut String, max_blob: usize) {
        match self {
            Value::Void => out.push_str("void"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Value::Enum(v, name) => match name {
                Some(n) => out.push_str(n),
                None => {
                    let _ = write!(out, "{v}");
                }
            },
            Value::Text(t) => {
                let _ = write!(out, "{t:?}");
            }
            Value::BadText(b) => {
                let _ = write!(
                    out,
                    "<{} bytes, not UTF-8: {}>",
                    b.len(),
                    abbrev(b, max_blob)
                );
            }
            Value::Data(b) => {
                let _ = write!(out, "<{} bytes {}>", b.len(), abbrev(b, max_blob));
            }
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write_text(out, max_blob);
                }
                out.push(']');
            }
            Value::Struct(fields) => {
                out.push('(');
                for (i, (n, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(n);
                    out.push_str(" = ");
                    v.write_text(out, max_blob);
                }
                out.push(')');
            }
            Value::Cap(c) => out.push_str(&c.to_string()),
            Value::Null => out.push_str("null"),
            Value::Raw(r) => {
                let _ = write!(out, "<{} {} {}>", r.kind, r.shape, r.hex);
            }
            Value::Error(e) => {
                let _ = write!(out, "<undecodable: {e}>");
            }
        }
    }
}

fn abbrev(b: &[u8], max: usize) -> String {
    if b.len() <= max {
        hex(b)
    } else {
        format!("{}…", hex(&b[..max]))
    }
}

impl fmt::Display for CapValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.interface) {
            (Some(n), _) => f.write_str(n),
            (None, Some(i)) => write!(f, "{i}@cap[{}]", self.index),
            (None, None) => write!(f, "cap[{}]", self.index),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Void | Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            // JSON has no NaN or infinity; say it in words.
            Value::Float(f) => s.serialize_str(&f.to_string()),
            Value::Enum(v, Some(name)) => {
                let _ = v;
                s.serialize_str(name)
            }
            Value::Enum(v, None) => s.serialize_u16(*v),
            Value::Text(t) => s.serialize_str(t),
            Value::BadText(b) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("len", &b.len())?;
                m.serialize_entry("text_hex", &hex(b))?;
                m.end()
            }
            Value::Data(b) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("len", &b.len())?;
                m.serialize_entry("hex", &hex(b))?;
                m.end()
            }
            Value::List(items) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    q.serialize_element(v)?;
                }
                q.end()
            }
            Value::Struct(fields) => {
                let mut m = s.serialize_map(Some(fields.len()))?;
                for (n, v) in fields {
                    m.serialize_entry(n, v)?;
                }
                m.end()
            }
            Value::Cap(c) => {
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("cap", &c.to_string())?;
                m.serialize_entry("index", &c.index)?;
                if let Some(i) = &c.interface {
                    m.serialize_entry("interface", i)?;
                }
                m.end()
            }
            Value::Raw(r) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("raw", &r.kind)?;
                m.serialize_entry("shape", &r.shape)?;
                m.serialize_entry("hex", &r.hex)?;
                m.end()
            }
            Value::Error(e) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("undecodable", e)?;
                m.end()
            }
        }
    }
}
