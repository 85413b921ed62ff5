//! Schema nodes loaded at run time from a compiled `CodeGeneratorRequest`.
//!
//! The built-in sets are compiled once by `schema/compile.sh` and embedded, so building mpspy
//! never needs the `capnp` tool; user schemas go through the same loader.

// Every decoded struct, field and capability looks its node up by id: foldhash is several times
// faster than std's SipHash for these u64 keys.
use foldhash::HashMap;
use std::sync::Arc;

use capnp::schema_capnp::{brand, node, type_, value};

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The bytes are not a readable `CodeGeneratorRequest`.
    #[error("schema error: not a compiled CodeGeneratorRequest: {0}")]
    Capnp(#[from] capnp::Error),
    /// A schema node uses a union member this build of capnp does not know.
    #[error("schema error: unknown schema union member {0}")]
    NotInSchema(u16),
    /// Compiling a `.capnp` file failed.
    #[error("schema error: {0}")]
    Compile(String),
    /// Reading a file failed.
    #[error("schema error: {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl From<capnp::NotInSchema> for SchemaError {
    fn from(e: capnp::NotInSchema) -> Self {
        SchemaError::NotInSchema(e.0)
    }
}

/// A field or element type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Type {
    /// `Void`.
    Void,
    /// `Bool`.
    Bool,
    /// `Int8`.
    Int8,
    /// `Int16`.
    Int16,
    /// `Int32`.
    Int32,
    /// `Int64`.
    Int64,
    /// `UInt8`.
    UInt8,
    /// `UInt16`.
    UInt16,
    /// `UInt32`.
    UInt32,
    /// `UInt64`.
    UInt64,
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `Text`.
    Text,
    /// `Data`.
    Data,
    /// `List(T)`.
    List(Box<Type>),
    /// An enum, by node id.
    Enum(u64),
    /// A struct, by node id, with its generic bindings (empty when not generic).
    Struct(u64, Brand),
    /// An interface, by node id.
    Interface(u64),
    /// `AnyPointer` (unconstrained, or a capability/struct/list of unknown type).
    AnyPointer,
    /// A generic parameter: the scope that declares it and its index.
    Param(u64, u16),
}

/// Generic bindings: for each scope id, the types bound to its parameters (`None` = unbound).
pub type Brand = Arc<Vec<(u64, Vec<Option<Type>>)>>;

impl Type {
    /// Data bits of this type in a struct's data section, or `None` for pointer types.
    pub fn data_bits(&self) -> Option<u32> {
        Some(match self {
            Type::Void => 0,
            Type::Bool => 1,
            Type::Int8 | Type::UInt8 => 8,
            Type::Int16 | Type::UInt16 | Type::Enum(_) => 16,
            Type::Int32 | Type::UInt32 | Type::Float32 => 32,
            Type::Int64 | Type::UInt64 | Type::Float64 => 64,
            _ => return None,
        })
    }
}

/// A struct field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Position in the declaration.
    pub code_order: u16,
    /// Union discriminant value, or `None` when not in a union.
    pub discriminant: Option<u16>,
    /// Slot or group.
    pub kind: FieldKind,
}

/// Where a field's value lives.
#[derive(Debug, Clone)]
pub enum FieldKind {
    /// A slot: `offset` in units of the type's size (data) or the pointer index.
    Slot {
        /// Offset as stored in the schema.
        offset: u32,
        /// The field's type.
        ty: Type,
        /// The default, as the raw bits the wire value is XORed with (data fields only).
        default_bits: u64,
        /// A default for pointer fields (Text/Data), shown when the pointer is null.
        default_blob: Option<Vec<u8>>,
    },
    /// A group: a nested struct node that shares the parent's sections.
    Group(u64),
}

/// A struct node.
#[derive(Debug, Clone)]
pub struct StructNode {
    /// Short display name, e.g. `Mining.createNewBlock$Params`.
    pub name: String,
    /// Data words in the schema's own layout.
    pub data_words: u16,
    /// Pointers in the schema's own layout.
    pub pointers: u16,
    /// Number of union members (0 when no unnamed union).
    pub discriminant_count: u16,
    /// Offset of the union discriminant in units of 16 bits.
    pub discriminant_offset: u32,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
}

/// An interface method.
#[derive(Debug, Clone)]
pub struct Method {
    /// Method name.
    pub name: String,
    /// Method ordinal (the `methodId` on the wire).
    pub ordinal: u16,
    /// Params struct id.
    pub params: u64,
    /// Results struct id.
    pub results: u64,
}

/// An interface node.
#[derive(Debug, Clone)]
pub struct InterfaceNode {
    /// Short display name, e.g. `Mining`.
    pub name: String,
    /// Methods by ordinal.
    pub methods: Vec<Method>,
    /// Superclass interface ids.
    pub superclasses: Vec<u64>,
}

impl InterfaceNode {
    /// The method with this ordinal, if this interface declares it.
    pub fn method(&self, ordinal: u16) -> Option<&Method> {
        self.methods.iter().find(|m| m.ordinal == ordinal)
    }
}

/// An enum node.
#[derive(Debug, Clone)]
pub struct EnumNode {
    /// Short display name.
    pub name: String,
    /// Enumerant names by value.
    pub enumerants: Vec<String>,
}

/// A schema node kind mpspy decodes with.
#[derive(Debug, Clone)]
pub enum Node {
    /// A struct or group.
    Struct(StructNode),
    /// An interface.
    Interface(InterfaceNode),
    /// An enum.
    Enum(EnumNode),
}

/// One set of schemas (e.g. Bitcoin master), indexed by node id.
#[derive(Debug, Clone)]
pub struct SchemaSet {
    /// Set name (`master`, `v31`, `v30`, `mpexample`, or a user file name).
    pub name: String,
    nodes: HashMap<u64, Node>,
}

impl SchemaSet {
    /// Loads a set from a serialized `CodeGeneratorRequest` (the output of `capnp compile -o-`).
    pub fn from_request(name: &str, bytes: &[u8]) -> Result<SchemaSet, SchemaError> {
        let mut options = capnp::message::ReaderOptions::new();
        options.traversal_limit_in_words(Some(64 * 1024 * 1024));
        // capnp reads words in place, so the bytes must be 8-byte aligned; embedded and
        // file-read bytes are not guaranteed to be.
        let mut words = capnp::Word::allocate_zeroed_vec(bytes.len().div_ceil(8));
        capnp::Word::words_to_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let aligned = capnp::Word::words_to_bytes(&words);
        let reader = capnp::serialize::read_message_from_flat_slice(&mut &aligned[..], options)?;
        let request: capnp::schema_capnp::code_generator_request::Reader<'_> = reader.get_root()?;
        let mut nodes = HashMap::default();
        for n in request.get_nodes()? {
            let display = n.get_display_name()?.to_str().unwrap_or("?");
            // Drop the file part: `mining.capnp:Mining.getTip$Params` -> `Mining.getTip$Params`.
            let short = display
                .split_once(':')
                .map_or(display, |(_, s)| s)
                .to_string();
            let node = match n.which()? {
                node::Struct(s) => {
                    let mut fields = Vec::new();
                    for f in s.get_fields()? {
                        fields.push(load_field(f)?);
                    }
                    // Shown in declaration order, as capnp's text format does.
                    fields.sort_by_key(|f| f.code_order);
                    Node::Struct(StructNode {
                        name: short,
                        data_words: s.get_data_word_count(),
                        pointers: s.get_pointer_count(),
                        discriminant_count: s.get_discriminant_count(),
                        discriminant_offset: s.get_discriminant_offset(),
                        fields,
                    })
                }
                node::Interface(i) => {
                    let mut methods = Vec::new();
                    for m in i.get_methods()? {
                        methods.push(Method {
                            name: m.get_name()?.to_str().unwrap_or("?").to_string(),
                            ordinal: 0,
                            params: m.get_param_struct_type(),
                            results: m.get_result_struct_type(),
                        });
                    }
                    // Ordinals are positions in the method list; declaration order is code_order.
                    for (i, m) in methods.iter_mut().enumerate() {
                        m.ordinal = i as u16;
                    }
                    let superclasses = i.get_superclasses()?.iter().map(|s| s.get_id()).collect();
                    Node::Interface(InterfaceNode {
                        name: short,
                        methods,
                        superclasses,
                    })
                }
                node::Enum(e) => Node::Enum(EnumNode {
                    name: short,
                    enumerants: e
                        .get_enumerants()?
                        .iter()
                        .map(|e| {
                            e.get_name()
                                .ok()
                                .and_then(|n| n.to_str().ok())
                                .unwrap_or("?")
                                .to_string()
                        })
                        .collect(),
                }),
                _ => continue,
            };
            nodes.insert(n.get_id(), node);
        }
        Ok(SchemaSet {
            name: name.to_string(),
            nodes,
        })
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The struct node with this id.
    pub fn struct_node(&self, id: u64) -> Option<&StructNode> {
        match self.nodes.get(&id) {
            Some(Node::Struct(s)) => Some(s),
            _ => None,
        }
    }

    /// The interface node with this id.
    pub fn interface(&self, id: u64) -> Option<&InterfaceNode> {
        match self.nodes.get(&id) {
            Some(Node::Interface(i)) => Some(i),
            _ => None,
        }
    }

    /// A method of an interface, following superclasses (method ids are per declaring interface,
    /// so a call names the declaring interface; superclasses matter only for naming lookups).
    pub fn method(&self, interface: u64, ordinal: u16) -> Option<(&InterfaceNode, &Method)> {
        let i = self.interface(interface)?;
        Some((i, i.method(ordinal)?))
    }

    /// All interfaces in this set, as (id, node).
    pub fn interfaces(&self) -> impl Iterator<Item = (u64, &InterfaceNode)> {
        self.nodes.iter().filter_map(|(id, n)| match n {
            Node::Interface(i) => Some((*id, i)),
            _ => None,
        })
    }
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> capnp::Result<String> {
    Ok(t?.to_str().unwrap_or("?").to_string())
}

fn load_field(f: capnp::schema_capnp::field::Reader<'_>) -> Result<Field, SchemaError> {
    use capnp::schema_capnp::field;
    let disc = f.get_discriminant_value();
    let kind = match f.which()? {
        field::Slot(s) => {
            let ty = load_type(s.get_type()?)?;
            let (default_bits, mut default_blob) = default_of(s.get_default_value()?)?;
            // The compiler fills in an empty default for every Text/Data field; only a declared
            // one should replace a null pointer (otherwise null would read as "").
            if !s.get_had_explicit_default() {
                default_blob = None;
            }
            FieldKind::Slot {
                offset: s.get_offset(),
                ty,
                default_bits,
                default_blob,
            }
        }
        field::Group(g) => FieldKind::Group(g.get_type_id()),
    };
    Ok(Field {
        name: text(f.get_name())?,
        code_order: f.get_code_order(),
        // 0xffff is the schema's "not in a union".
        discriminant: (disc != 0xffff).then_some(disc),
        kind,
    })
}

fn default_of(v: value::Reader<'_>) -> Result<(u64, Option<Vec<u8>>), SchemaError> {
    Ok(match v.which()? {
        value::Void(()) => (0, None),
        value::Bool(b) => (u64::from(b), None),
        value::Int8(x) => (x as u8 as u64, None),
        value::Int16(x) => (x as u16 as u64, None),
        value::Int32(x) => (x as u32 as u64, None),
        value::Int64(x) => (x as u64, None),
        value::Uint8(x) => (u64::from(x), None),
        value::Uint16(x) => (u64::from(x), None),
        value::Uint32(x) => (u64::from(x), None),
        value::Uint64(x) => (x, None),
        value::Float32(x) => (u64::from(x.to_bits()), None),
        value::Float64(x) => (x.to_bits(), None),
        value::Enum(x) => (u64::from(x), None),
        value::Text(t) => (0, Some(t?.as_bytes().to_vec())),
        value::Data(d) => (0, Some(d?.to_vec())),
        // Struct/list/pointer defaults only matter when the pointer is null; we show null then.
        _ => (0, None),
    })
}

fn load_type(t: type_::Reader<'_>) -> Result<Type, SchemaError> {
    Ok(match t.which()? {
        type_::Void(()) => Type::Void,
        type_::Bool(()) => Type::Bool,
        type_::Int8(()) => Type::Int8,
        type_::Int16(()) => Type::Int16,
        type_::Int32(()) => Type::Int32,
        type_::Int64(()) => Type::Int64,
        type_::Uint8(()) => Type::UInt8,
        type_::Uint16(()) => Type::UInt16,
        type_::Uint32(()) => Type::UInt32,
        type_::Uint64(()) => Type::UInt64,
        type_::Float32(()) => Type::Float32,
        type_::Float64(()) => Type::Float64,
        type_::Text(()) => Type::Text,
        type_::Data(()) => Type::Data,
        type_::List(l) => Type::List(Box::new(load_type(l.get_element_type()?)?)),
        type_::Enum(e) => Type::Enum(e.get_type_id()),
        type_::Struct(s) => Type::Struct(s.get_type_id(), load_brand(s.get_brand()?)?),
        type_::Interface(i) => Type::Interface(i.get_type_id()),
        type_::AnyPointer(a) => {
            use capnp::schema_capnp::type_::any_pointer;
            match a.which()? {
                any_pointer::Parameter(p) => Type::Param(p.get_scope_id(), p.get_parameter_index()),
                _ => Type::AnyPointer,
            }
        }
    })
}

fn load_brand(b: brand::Reader<'_>) -> Result<Brand, SchemaError> {
    let mut scopes = Vec::new();
    for s in b.get_scopes()? {
        if let brand::scope::Bind(bindings) = s.which()? {
            let mut bound = Vec::new();
            for binding in bindings? {
                bound.push(match binding.which()? {
                    brand::binding::Type(t) => Some(load_type(t?)?),
                    brand::binding::Unbound(()) => None,
                });
            }
            scopes.push((s.get_scope_id(), bound));
        }
    }
    Ok(Arc::new(scopes))
}
