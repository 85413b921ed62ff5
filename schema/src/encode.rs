//! The dynamic encoder: builds a struct from JSON by field name against schema nodes loaded at
//! run time (what `mpspy call Interface.method '{"echo":"hi"}'` sends). The inverse of
//! [`crate::decode`]: fields not given keep their schema defaults, primitives are stored XOR
//! their defaults, and capabilities are cap-table indices the caller fills in.
//!
//! Output is one single-segment message in stream framing, whose root is the struct.

use serde_json::Value as Json;

use crate::decode::Lookup;
use crate::registry::{Brand, FieldKind, Node, StructNode, Type};

/// Why JSON could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The schema has no such struct.
    #[error("encode error: no schema for struct {0:#018x}")]
    NoStruct(u64),
    /// A JSON key that is not a field.
    #[error("encode error: {path}: no field '{field}' (fields: {known})")]
    NoField {
        /// Where.
        path: String,
        /// The unknown key.
        field: String,
        /// The fields there are.
        known: String,
    },
    /// A value of the wrong JSON type or out of range.
    #[error("encode error: {path}: {why}")]
    Bad {
        /// Where.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// Where capabilities in the params come from: the encoder asks for an index per capability
/// field the JSON names, and the caller maps indices to real capabilities.
pub trait CapSource {
    /// A cap-table index for the JSON value `v` given for an interface field at `path`
    /// (e.g. `"thread"` for `Proxy.Context.thread`), or an error message.
    fn cap(&mut self, path: &str, interface: Option<u64>, v: &Json) -> Result<u32, String>;
}

/// A [`CapSource`] that refuses every capability.
#[derive(Debug, Default)]
pub struct NoCaps;

impl CapSource for NoCaps {
    fn cap(&mut self, path: &str, _: Option<u64>, _: &Json) -> Result<u32, String> {
        Err(format!("{path}: capabilities cannot be given here"))
    }
}

struct Writer<'a, 'c> {
    lookup: Lookup<'a>,
    words: Vec<u64>,
    caps: &'c mut dyn CapSource,
}

/// Encodes `json` (an object by field name) as the struct `struct_id`.
pub fn encode(
    lookup: Lookup<'_>,
    struct_id: u64,
    json: &Json,
    caps: &mut dyn CapSource,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer {
        lookup,
        words: vec![0],
        caps,
    };
    w.write_struct_at(0, struct_id, json, "", &Brand::default())?;
    let mut out = Vec::with_capacity(8 + w.words.len() * 8);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(w.words.len() as u32).to_le_bytes());
    for word in &w.words {
        out.extend_from_slice(&word.to_le_bytes());
    }
    Ok(out)
}

fn bad(path: &str, why: impl Into<String>) -> EncodeError {
    EncodeError::Bad {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.to_string()
        },
        why: why.into(),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl Writer<'_, '_> {
    fn alloc(&mut self, words: usize) -> usize {
        let at = self.words.len();
        self.words.resize(at + words, 0);
        at
    }

    /// Writes a pointer word at `at` to content at `target`.
    fn point(&mut self, at: usize, target: usize, tag: u64) {
        let offset = target as i64 - at as i64 - 1;
        self.words[at] = ((offset as u64) << 2 & 0xffff_fffc) | tag;
    }

    fn struct_node(&self, id: u64) -> Result<StructNode, EncodeError> {
        match self.lookup.node(id) {
            Some(Node::Struct(s)) => Ok(s.clone()),
            _ => Err(EncodeError::NoStruct(id)),
        }
    }

    /// Allocates the struct and points the pointer at `ptr` to it.
    fn write_struct_at(
        &mut self,
        ptr: usize,
        id: u64,
        json: &Json,
        path: &str,
        brand: &Brand,
    ) -> Result<(), EncodeError> {
        let node = self.struct_node(id)?;
        let (d, p) = (usize::from(node.data_words), usize::from(node.pointers));
        let start = self.alloc(d + p);
        self.point(
            ptr,
            start,
            u64::from(node.data_words) << 32 | u64::from(node.pointers) << 48,
        );
        if d + p == 0 {
            // A zero-sized struct still needs a non-null pointer: offset -1 points at itself.
            self.words[ptr] = 0xffff_fffc;
        }
        self.fill_struct(start, d, id, json, path, brand)
    }

    /// Fills the struct whose data section starts at word `data` (pointers after `dwords`).
    fn fill_struct(
        &mut self,
        data: usize,
        dwords: usize,
        id: u64,
        json: &Json,
        path: &str,
        brand: &Brand,
    ) -> Result<(), EncodeError> {
        let node = self.struct_node(id)?;
        let obj = match json {
            Json::Object(o) => o.clone(),
            Json::Null => serde_json::Map::new(),
            other => {
                return Err(bad(
                    path,
                    format!("expected an object of fields, got {other}"),
                ));
            }
        };
        for key in obj.keys() {
            if !node.fields.iter().any(|f| &f.name == key) {
                return Err(EncodeError::NoField {
                    path: if path.is_empty() {
                        "(root)".into()
                    } else {
                        path.to_string()
                    },
                    field: key.clone(),
                    known: node
                        .fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        // Fields stored XOR their default read back as the default when left 0, so only given
        // fields are written (plus the discriminant of a given union member).
        let given_union: Vec<_> = node
            .fields
            .iter()
            .filter(|f| f.discriminant.is_some() && obj.contains_key(&f.name))
            .collect();
        if given_union.len() > 1 {
            return Err(bad(path, "give at most one member of a union"));
        }
        if let Some(f) = given_union.first() {
            let off = node.discriminant_offset as usize;
            self.set_bits(data, off * 16, 16, u64::from(f.discriminant.unwrap_or(0)));
        }
        for f in &node.fields {
            let Some(v) = obj.get(&f.name) else { continue };
            let fpath = join(path, &f.name);
            match &f.kind {
                FieldKind::Group(gid) => self.fill_struct(data, dwords, *gid, v, &fpath, brand)?,
                FieldKind::Slot {
                    offset,
                    ty,
                    default_bits,
                    ..
                } => self.write_slot(data, dwords, *offset, ty, *default_bits, v, &fpath, brand)?,
            }
        }
        Ok(())
    }

    fn set_bits(&mut self, data: usize, bit: usize, width: usize, value: u64) {
        let word = data + bit / 64;
        let shift = bit % 64;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        self.words[word] = (self.words[word] & !(mask << shift)) | ((value & mask) << shift);
    }

    #[allow(clippy::too_many_arguments)]
    fn write_slot(
        &mut self,
        data: usize,
        dwords: usize,
        offset: u32,
        ty: &Type,
        default_bits: u64,
        v: &Json,
        path: &str,
        brand: &Brand,
    ) -> Result<(), EncodeError> {
        if let Some(bits) = ty.data_bits() {
            if bits == 0 {
                return Ok(());
            }
            let raw = self.primitive(ty, v, path)?;
            self.set_bits(
                data,
                offset as usize * bits as usize,
                bits as usize,
                raw ^ default_bits,
            );
            return Ok(());
        }
        let ptr = data + dwords + offset as usize;
        self.write_pointer(ptr, ty, v, path, brand)
    }

    fn primitive(&self, ty: &Type, v: &Json, path: &str) -> Result<u64, EncodeError> {
        let int = |lo: i128, hi: i128| -> Result<u64, EncodeError> {
            let n = v
                .as_i64()
                .map(i128::from)
                .or_else(|| v.as_u64().map(i128::from))
                .ok_or_else(|| bad(path, format!("expected an integer, got {v}")))?;
            if n < lo || n > hi {
                return Err(bad(path, format!("{n} is out of range {lo}..={hi}")));
            }
            Ok(n as u64)
        };
        Ok(match ty {
            Type::Bool => u64::from(
                v.as_bool()
                    .ok_or_else(|| bad(path, format!("expected true or false, got {v}")))?,
            ),
            Type::Int8 => int(i8::MIN.into(), i8::MAX.into())? & 0xff,
            Type::Int16 => int(i16::MIN.into(), i16::MAX.into())? & 0xffff,
            Type::Int32 => int(i32::MIN.into(), i32::MAX.into())? & 0xffff_ffff,
            Type::Int64 => int(i64::MIN.into(), i64::MAX.into())?,
            Type::UInt8 => int(0, u8::MAX.into())?,
            Type::UInt16 => int(0, u16::MAX.into())?,
            Type::UInt32 => int(0, u32::MAX.into())?,
            Type::UInt64 => int(0, u64::MAX.into())?,
            Type::Float32 => u64::from((float(v, path)? as f32).to_bits()),
            Type::Float64 => float(v, path)?.to_bits(),
            Type::Enum(id) => match (v, self.lookup.node(*id)) {
                (Json::String(s), Some(Node::Enum(e))) => {
                    e.enumerants.iter().position(|n| n == s).ok_or_else(|| {
                        bad(
                            path,
                            format!("no enumerant '{s}' (have: {})", e.enumerants.join(", ")),
                        )
                    })? as u64
                }
                _ => int(0, u16::MAX.into())?,
            },
            _ => 0,
        })
    }

    fn write_pointer(
        &mut self,
        ptr: usize,
        ty: &Type,
        v: &Json,
        path: &str,
        brand: &Brand,
    ) -> Result<(), EncodeError> {
        if v.is_null() {
            self.words[ptr] = 0;
            return Ok(());
        }
        if let Type::Param(scope, index) = ty {
            let bound = brand
                .iter()
                .find(|(s, _)| s == scope)
                .and_then(|(_, b)| b.get(usize::from(*index)).cloned().flatten())
                .ok_or_else(|| bad(path, "an unbound generic parameter cannot be encoded"))?;
            return self.write_pointer(ptr, &bound, v, path, &Brand::default());
        }
        match ty {
            Type::Text => {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad(path, format!("expected a string, got {v}")))?;
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                self.write_bytes(ptr, &b);
            }
            Type::Data => {
                let b = data_bytes(v, path)?;
                self.write_bytes(ptr, &b);
            }
            Type::Struct(id, b) => self.write_struct_at(ptr, *id, v, path, b)?,
            Type::Interface(id) => {
                let index = self
                    .caps
                    .cap(path, Some(*id), v)
                    .map_err(|e| bad(path, e))?;
                self.words[ptr] = 3 | u64::from(index) << 32;
            }
            Type::AnyPointer => match v.get("raw").and_then(Json::as_str) {
                // The decoder's raw form: a byte list, or a struct by its data section.
                Some("list") => self.write_bytes(ptr, &data_bytes(v, path)?),
                Some("struct") => {
                    let shape = v["shape"].as_str().unwrap_or("");
                    let (d, p) = shape
                        .split_once("w/")
                        .and_then(|(d, p)| {
                            Some((
                                d.parse::<u16>().ok()?,
                                p.trim_end_matches('p').parse::<u16>().ok()?,
                            ))
                        })
                        .ok_or_else(|| {
                            bad(
                                path,
                                format!("raw struct shape {shape:?} is not like \"1w/2p\""),
                            )
                        })?;
                    let data = data_bytes(v, path)?;
                    let start = self.alloc(usize::from(d) + usize::from(p));
                    for (i, chunk) in data.chunks(8).take(usize::from(d)).enumerate() {
                        let mut w = [0u8; 8];
                        w[..chunk.len()].copy_from_slice(chunk);
                        self.words[start + i] = u64::from_le_bytes(w);
                    }
                    self.point(ptr, start, u64::from(d) << 32 | u64::from(p) << 48);
                }
                Some(other) => return Err(bad(path, format!("cannot encode a raw {other}"))),
                None => {
                    let index = self.caps.cap(path, None, v).map_err(|e| bad(path, e))?;
                    self.words[ptr] = 3 | u64::from(index) << 32;
                }
            },
            Type::List(elem) => {
                let items = v
                    .as_array()
                    .ok_or_else(|| bad(path, format!("expected a list, got {v}")))?;
                self.write_list(ptr, elem, items, path, brand)?;
            }
            _ => return Err(bad(path, "not a pointer type")),
        }
        Ok(())
    }

    fn write_bytes(&mut self, ptr: usize, b: &[u8]) {
        let start = self.alloc(b.len().div_ceil(8));
        for (i, chunk) in b.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words[start + i] = u64::from_le_bytes(w);
        }
        self.point(ptr, start, 1 | 2 << 32 | (b.len() as u64) << 35);
    }

    fn write_list(
        &mut self,
        ptr: usize,
        elem: &Type,
        items: &[Json],
        path: &str,
        brand: &Brand,
    ) -> Result<(), EncodeError> {
        let n = items.len();
        if let Some(bits) = elem.data_bits() {
            let code = match bits {
                0 => 0,
                1 => 1,
                8 => 2,
                16 => 3,
                32 => 4,
                _ => 5,
            };
            let start = self.alloc((n * bits as usize).div_ceil(64));
            for (i, item) in items.iter().enumerate() {
                let raw = if bits == 0 {
                    0
                } else {
                    self.primitive(elem, item, &format!("{path}[{i}]"))?
                };
                if bits > 0 {
                    self.set_bits(start, i * bits as usize, bits as usize, raw);
                }
            }
            self.point(ptr, start, 1 | code << 32 | (n as u64) << 35);
            return Ok(());
        }
        if let Type::Struct(id, b) = elem {
            let node = self.struct_node(*id)?;
            let (d, p) = (usize::from(node.data_words), usize::from(node.pointers));
            let tag_at = self.alloc(1 + n * (d + p));
            self.words[tag_at] =
                (n as u64) << 2 | u64::from(node.data_words) << 32 | u64::from(node.pointers) << 48;
            for (i, item) in items.iter().enumerate() {
                let at = tag_at + 1 + i * (d + p);
                self.fill_struct(at, d, *id, item, &format!("{path}[{i}]"), b)?;
            }
            self.point(ptr, tag_at, 1 | 7 << 32 | ((n * (d + p)) as u64) << 35);
            return Ok(());
        }
        let start = self.alloc(n);
        for (i, item) in items.iter().enumerate() {
            self.write_pointer(start + i, elem, item, &format!("{path}[{i}]"), brand)?;
        }
        self.point(ptr, start, 1 | 6 << 32 | (n as u64) << 35);
        Ok(())
    }
}

fn float(v: &Json, path: &str) -> Result<f64, EncodeError> {
    match v {
        Json::Number(n) => n.as_f64().ok_or_else(|| bad(path, "not a number")),
        Json::String(s) => match s.as_str() {
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => Err(bad(path, format!("expected a number, got {s:?}"))),
        },
        other => Err(bad(path, format!("expected a number, got {other}"))),
    }
}

/// `Data` from JSON: `{"hex": "…"}` (the decoder's own form), or a plain string of hex digits.
fn data_bytes(v: &Json, path: &str) -> Result<Vec<u8>, EncodeError> {
    let hex = match v {
        Json::String(s) => s.as_str(),
        Json::Object(o) => o
            .get("hex")
            .and_then(Json::as_str)
            .ok_or_else(|| bad(path, "Data needs {\"hex\": \"…\"} or a hex string"))?,
        other => return Err(bad(path, format!("Data needs hex, got {other}"))),
    };
    if hex.len() % 2 != 0 {
        return Err(bad(path, "odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| bad(path, format!("not hex: {hex:?}")))
        })
        .collect()
}
