//! The dynamic decoder: walks any struct by schema nodes loaded at run time.
//!
//! capnp's own reflection only covers types compiled into the program; mpspy decodes against
//! schema sets chosen at run time (and user files), so the walk is ours. It never fails as a
//! whole: a part that cannot be read becomes [`Value::Error`] in place and the rest is kept.

use crate::registry::{Brand, FieldKind, Node, SchemaSet, Type};
use crate::value::{CapValue, RawValue, Value, hex};
use crate::wire::{ListRef, StructRef, Target, WireError};

/// Node lookup across several schema sets, searched in order (user sets before the built-in one).
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    sets: &'a [&'a SchemaSet],
}

impl<'a> Lookup<'a> {
    /// A lookup over `sets`, first match wins.
    pub fn new(sets: &'a [&'a SchemaSet]) -> Self {
        Lookup { sets }
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> Option<&'a Node> {
        self.sets.iter().find_map(|s| s.node(id))
    }

    /// The display name of an interface.
    pub fn interface_name(&self, id: u64) -> Option<&'a str> {
        self.sets
            .iter()
            .find_map(|s| s.interface(id))
            .map(|i| i.name.as_str())
    }

    /// True when interface `id` declares a `destroy` method: libmultiprocess clients call it
    /// before releasing such objects, so one left undestroyed at a disconnect was leaked.
    pub fn has_destroy(&self, id: u64) -> bool {
        self.sets
            .iter()
            .find_map(|s| s.interface(id))
            .is_some_and(|i| i.methods.iter().any(|m| m.name == "destroy"))
    }

    /// The method `ordinal` of interface `id` with its interface name.
    pub fn method(&self, id: u64, ordinal: u16) -> Option<(&'a str, &'a crate::registry::Method)> {
        let i = self.sets.iter().find_map(|s| s.interface(id))?;
        Some((i.name.as_str(), i.method(ordinal)?))
    }
}

/// A capability met during a walk: where it sits and what interface the schema says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapUse {
    /// Index into the message's cap table.
    pub index: u32,
    /// Interface id from the field type (`None` for `AnyPointer`).
    pub interface: Option<u64>,
    /// Field path, e.g. `context.thread`.
    pub path: String,
}

/// Walks one struct.
#[derive(Debug)]
pub struct Walker<'a> {
    lookup: Lookup<'a>,
    path: Vec<String>,
    /// Capabilities met so far, in walk order.
    pub caps: Vec<CapUse>,
}

impl<'a> Walker<'a> {
    /// A walker over `lookup`.
    pub fn new(lookup: Lookup<'a>) -> Self {
        Walker {
            lookup,
            path: Vec::new(),
            caps: Vec::new(),
        }
    }

    /// Decodes the struct `struct_id` that `target` points to.
    pub fn decode(&mut self, struct_id: u64, target: Target<'_>) -> Value {
        self.pointer(
            &Type::Struct(struct_id, Brand::default()),
            target,
            None,
            &Brand::default(),
        )
    }

    fn struct_value(&mut self, id: u64, s: StructRef<'_>, brand: &Brand) -> Value {
        let Some(Node::Struct(node)) = self.lookup.node(id) else {
            return raw_struct(s);
        };
        let mut fields = Vec::with_capacity(node.fields.len());
        let union_which = (node.discriminant_count > 0).then(|| s.u16(node.discriminant_offset));
        let mut union_member_found = false;
        for f in &node.fields {
            match f.discriminant {
                Some(d) if Some(d) != union_which => continue,
                Some(_) => union_member_found = true,
                None => {}
            }
            self.path.push(f.name.clone());
            let v = match &f.kind {
                FieldKind::Group(gid) => self.struct_value(*gid, s, brand),
                FieldKind::Slot {
                    offset,
                    ty,
                    default_bits,
                    default_blob,
                } => self.slot(
                    s,
                    *offset,
                    ty,
                    *default_bits,
                    default_blob.as_deref(),
                    brand,
                ),
            };
            self.path.pop();
            fields.push((f.name.clone(), v));
        }
        if let (Some(w), false) = (union_which, union_member_found) {
            // A union member newer than our schema: say so instead of hiding it.
            fields.push((format!("<unknown union member {w}>"), Value::Void));
        }
        Value::Struct(fields)
    }

    fn slot(
        &mut self,
        s: StructRef<'_>,
        offset: u32,
        ty: &Type,
        def: u64,
        default_blob: Option<&[u8]>,
        brand: &Brand,
    ) -> Value {
        // Data fields are stored XOR their default, so the schema's default is part of decoding.
        match ty {
            Type::Void => Value::Void,
            Type::Bool => Value::Bool(s.bit(offset) ^ (def & 1 == 1)),
            Type::Int8 => Value::Int(i64::from((s.u8(offset) ^ def as u8) as i8)),
            Type::Int16 => Value::Int(i64::from((s.u16(offset) ^ def as u16) as i16)),
            Type::Int32 => Value::Int(i64::from((s.u32(offset) ^ def as u32) as i32)),
            Type::Int64 => Value::Int((s.u64(offset) ^ def) as i64),
            Type::UInt8 => Value::UInt(u64::from(s.u8(offset) ^ def as u8)),
            Type::UInt16 => Value::UInt(u64::from(s.u16(offset) ^ def as u16)),
            Type::UInt32 => Value::UInt(u64::from(s.u32(offset) ^ def as u32)),
            Type::UInt64 => Value::UInt(s.u64(offset) ^ def),
            Type::Float32 => Value::Float(f64::from(f32::from_bits(s.u32(offset) ^ def as u32))),
            Type::Float64 => Value::Float(f64::from_bits(s.u64(offset) ^ def)),
            Type::Enum(id) => self.enum_value(*id, s.u16(offset) ^ def as u16),
            _ => match s.pointer(offset as u16) {
                Ok(t) => self.pointer(ty, t, default_blob, brand),
                Err(e) => Value::Error(e.to_string()),
            },
        }
    }

    fn enum_value(&self, id: u64, v: u16) -> Value {
        let name = match self.lookup.node(id) {
            Some(Node::Enum(e)) => e.enumerants.get(usize::from(v)).cloned(),
            _ => None,
        };
        Value::Enum(v, name)
    }

    fn pointer(
        &mut self,
        ty: &Type,
        t: Target<'_>,
        default_blob: Option<&[u8]>,
        brand: &Brand,
    ) -> Value {
        if let Type::Param(scope, index) = ty {
            let bound = brand
                .iter()
                .find(|(s, _)| s == scope)
                .and_then(|(_, b)| b.get(usize::from(*index)).cloned().flatten());
            return match bound {
                Some(bound) => self.pointer(&bound, t, default_blob, &Brand::default()),
                None => self.pointer(&Type::AnyPointer, t, default_blob, brand),
            };
        }
        match (ty, t) {
            (_, Target::Null) => match (ty, default_blob) {
                (Type::Text, Some(b)) => text_value(b),
                (Type::Data, Some(b)) => Value::Data(b.to_vec()),
                _ => Value::Null,
            },
            (Type::Interface(id), Target::Capability(index)) => self.cap(index, Some(*id)),
            (Type::AnyPointer, Target::Capability(index)) => self.cap(index, None),
            (Type::AnyPointer, Target::Struct(s)) => raw_struct(s),
            (Type::AnyPointer, Target::List(l)) => raw_list(l),
            (Type::Text, Target::List(l)) => match l.bytes() {
                Some(b) => text_value(b.strip_suffix(&[0]).unwrap_or(b)),
                None => wrong("Text", &t),
            },
            (Type::Data, Target::List(l)) => match l.bytes() {
                Some(b) => Value::Data(b.to_vec()),
                None => wrong("Data", &t),
            },
            (Type::List(elem), Target::List(l)) => self.list(elem, l, brand),
            (Type::Struct(id, b), Target::Struct(s)) => self.struct_value(*id, s, b),
            (_, Target::Other(w)) => Value::Error(format!("reserved pointer {w:#018x}")),
            (ty, t) => wrong(type_word(ty), &t),
        }
    }

    fn cap(&mut self, index: u32, interface: Option<u64>) -> Value {
        self.caps.push(CapUse {
            index,
            interface,
            path: self.path.join("."),
        });
        Value::Cap(CapValue {
            index,
            interface: interface
                .and_then(|i| self.lookup.interface_name(i))
                .map(str::to_string),
            name: None,
        })
    }

    fn list(&mut self, elem: &Type, l: ListRef<'_>, brand: &Brand) -> Value {
        if !matches!(elem, Type::Bool)
            && let Err(e) = l.wider_than_bits()
        {
            return Value::Error(e.to_string());
        }
        let mut items = Vec::with_capacity(l.len().min(4096) as usize);
        for i in 0..l.len() {
            self.path.push(i.to_string());
            let v = match elem {
                Type::Bool => Value::Bool(l.bit_at(i)),
                ty if ty.data_bits().is_some() => match l.struct_at(i) {
                    Some(s) => self.slot(s, 0, ty, 0, None, brand),
                    None => Value::Error("element missing".into()),
                },
                Type::Struct(id, b) => match l.struct_at(i) {
                    Some(s) => self.struct_value(*id, s, b),
                    None => Value::Error("element missing".into()),
                },
                ty => match l.pointer_at(i) {
                    Ok(t) => self.pointer(ty, t, None, brand),
                    Err(e) => Value::Error(e.to_string()),
                },
            };
            self.path.pop();
            items.push(v);
        }
        Value::List(items)
    }
}

fn text_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Text(s.to_string()),
        Err(_) => Value::BadText(b.to_vec()),
    }
}

fn wrong(expected: &'static str, t: &Target<'_>) -> Value {
    Value::Error(
        WireError::WrongKind {
            expected,
            found: t.kind(),
        }
        .to_string(),
    )
}

fn type_word(ty: &Type) -> &'static str {
    match ty {
        Type::Text => "Text",
        Type::Data => "Data",
        Type::List(_) => "list",
        Type::Struct(..) => "struct",
        Type::Interface(_) => "capability",
        _ => "pointer",
    }
}

fn raw_struct(s: StructRef<'_>) -> Value {
    Value::Raw(RawValue {
        kind: "struct".into(),
        shape: format!("{}w/{}p", s.data_words(), s.pointer_count()),
        hex: hex(s.data()),
    })
}

fn raw_list(l: ListRef<'_>) -> Value {
    Value::Raw(RawValue {
        kind: "list".into(),
        shape: format!("{} × {:?}", l.len(), l.element_size()),
        hex: l.bytes().map(hex).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    const ALLTYPES: &[u8] = include_bytes!("../../tests/fixtures/alltypes/alltypes.bin");

    /// `Kitchen.everything`'s params with `many :List(AllTypes)` as the list pointer `list`
    /// (content right after it), decoded.
    fn many(list: u64, content: u64) -> Value {
        let set = SchemaSet::from_request("alltypes", ALLTYPES).unwrap();
        let (kitchen, _) = set.interfaces().find(|(_, i)| i.name == "Kitchen").unwrap();
        let params = set.method(kitchen, 0).unwrap().1.params;
        // Root: 1 data word (n), 3 pointers (p, q, many).
        let words = [(1u64 << 32) | (3 << 48), 0, 0, 0, list, content];
        let mut f = vec![0, 0, 0, 0];
        f.extend_from_slice(&(words.len() as u32).to_le_bytes());
        for w in words {
            f.extend_from_slice(&w.to_le_bytes());
        }
        let (m, _) = Message::parse(&f).unwrap();
        let sets = [&set];
        let v = Walker::new(Lookup::new(&sets)).decode(params, m.root().unwrap());
        v.field("many").unwrap().clone()
    }

    #[test]
    fn a_struct_list_may_be_a_byte_list_but_not_a_bit_list() {
        // Three one-byte elements: capnp reads each as a struct whose first byte is that byte.
        let Value::List(items) = many(1 | (2 << 32) | (3 << 35), 0x01_00_01) else {
            panic!("a list")
        };
        let bools: Vec<_> = items.iter().map(|s| s.field("bool").cloned()).collect();
        assert_eq!(
            bools,
            [true, false, true].map(|b| Some(Value::Bool(b))).to_vec()
        );
        // 64 bits would have been 64 whole structs; a peer refuses them, and so does mpspy.
        assert_eq!(
            many(1 | (1 << 32) | (64 << 35), u64::MAX),
            Value::Error("expected list of structs or of wider elements, found bit list".into())
        );
    }
}
