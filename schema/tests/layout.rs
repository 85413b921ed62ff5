//! Guards mpspy's own Cap'n Proto schemas (`schema/capnp/<set>/**`) and their
//! compiled form (`schema/compiled/<set>.bin`).
//!
//! * `layout_matches_upstream` decodes each checked-in CodeGeneratorRequest and
//!   compares it node by node with `tests/fixtures/expected-layout.json`, the
//!   machine-readable list of what the *upstream* schemas compile to: IDs,
//!   display names, scopes, struct sizes, field slots, types and explicit
//!   defaults, method ordinals and their `$Params`/`$Results` IDs, constants and
//!   annotation types. Anything with a wire effect must be identical, and no
//!   extra node may exist in ours.
//! * `compiled_bins_are_fresh` recompiles every set with `capnp` exactly as
//!   `schema/compile.sh` does and requires byte equality with the checked-in
//!   `.bin`, so the sources and the binaries cannot drift apart. It is skipped
//!   (with a note) when `capnp` is not installed, unless `MPSPY_REQUIRE_CAPNP=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use capnp::Word;
use capnp::message::ReaderOptions;
use capnp::schema_capnp::{code_generator_request, field, node, type_, value};
use serde_json::Value;

/// The schema sets, in the order `schema/compile.sh` builds them.
const SETS: [(&str, &[u8]); 4] = [
    (
        "mpexample",
        include_bytes!("../compiled/mpexample.bin").as_slice(),
    ),
    ("v30", include_bytes!("../compiled/v30.bin").as_slice()),
    ("v31", include_bytes!("../compiled/v31.bin").as_slice()),
    (
        "master",
        include_bytes!("../compiled/master.bin").as_slice(),
    ),
];

const EXPECTED_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/expected-layout.json"
));

// ---------------------------------------------------------------------------
// Reading the compiled requests

/// `include_bytes!` gives no alignment guarantee, and capnp (without its
/// `unaligned` feature) needs 8-byte aligned segments: copy into words.
fn aligned(bytes: &[u8]) -> Vec<Word> {
    assert_eq!(
        bytes.len() % 8,
        0,
        "a capnp message is a whole number of words"
    );
    let mut words = Word::allocate_zeroed_vec(bytes.len() / 8);
    Word::words_to_bytes_mut(&mut words).copy_from_slice(bytes);
    words
}

fn reader_options() -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(64 * 1024 * 1024));
    options
}

/// Decodes `bytes` as exactly one flat message and hands its root to `f`.
fn with_request<R>(
    set: &str,
    bytes: &[u8],
    f: impl FnOnce(code_generator_request::Reader<'_>) -> R,
) -> R {
    let words = aligned(bytes);
    let mut slice = Word::words_to_bytes(&words);
    let message = capnp::serialize::read_message_from_flat_slice(&mut slice, reader_options())
        .unwrap_or_else(|e| panic!("{set}: compiled/{set}.bin is not a capnp message: {e}"));
    assert!(
        slice.is_empty(),
        "{set}: compiled/{set}.bin has {} trailing bytes after the CodeGeneratorRequest",
        slice.len()
    );
    let request = message
        .get_root::<code_generator_request::Reader<'_>>()
        .unwrap_or_else(|e| panic!("{set}: root is not a CodeGeneratorRequest: {e}"));
    f(request)
}

// ---------------------------------------------------------------------------
// Describing our nodes in the JSON's vocabulary

fn hex(id: u64) -> String {
    format!("{id:#x}")
}

fn parse_id(v: &Value, what: &str) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected-layout.json: {what} is not a string: {v}"));
    let digits = s
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("expected-layout.json: {what} {s:?} lacks 0x"));
    u64::from_str_radix(digits, 16)
        .unwrap_or_else(|e| panic!("expected-layout.json: {what} {s:?}: {e}"))
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> String {
    t.expect("readable text")
        .to_str()
        .expect("UTF-8 text")
        .to_owned()
}

fn kind_name(n: node::Reader<'_>) -> &'static str {
    match n.which().expect("known node kind") {
        node::File(()) => "file",
        node::Struct(_) => "struct",
        node::Enum(_) => "enum",
        node::Interface(_) => "interface",
        node::Const(_) => "const",
        node::Annotation(_) => "annotation",
    }
}

/// Our nodes of one set, by ID.
struct Ours<'a> {
    nodes: BTreeMap<u64, node::Reader<'a>>,
}

impl<'a> Ours<'a> {
    fn new(set: &str, request: code_generator_request::Reader<'a>) -> Self {
        let mut nodes = BTreeMap::new();
        for n in request.get_nodes().expect("nodes") {
            let previous = nodes.insert(n.get_id(), n);
            assert!(
                previous.is_none(),
                "{set}: node {} appears twice",
                hex(n.get_id())
            );
        }
        Ours { nodes }
    }

    fn display_name(&self, id: u64) -> String {
        match self.nodes.get(&id) {
            Some(n) => text(n.get_display_name()),
            None => format!("<no node {}>", hex(id)),
        }
    }

    /// A type in the JSON's encoding: a lowercase primitive name, or an object
    /// `{kind, id, name}` for struct/interface/enum, `{kind: list, element}`.
    fn type_json(&self, t: type_::Reader<'_>) -> Value {
        let named = |kind: &str, id: u64| serde_json::json!({ "kind": kind, "id": hex(id), "name": self.display_name(id) });
        let prim = |s: &str| Value::String(s.to_owned());
        match t.which().expect("known type") {
            type_::Void(()) => prim("void"),
            type_::Bool(()) => prim("bool"),
            type_::Int8(()) => prim("int8"),
            type_::Int16(()) => prim("int16"),
            type_::Int32(()) => prim("int32"),
            type_::Int64(()) => prim("int64"),
            type_::Uint8(()) => prim("uint8"),
            type_::Uint16(()) => prim("uint16"),
            type_::Uint32(()) => prim("uint32"),
            type_::Uint64(()) => prim("uint64"),
            type_::Float32(()) => prim("float32"),
            type_::Float64(()) => prim("float64"),
            type_::Text(()) => prim("text"),
            type_::Data(()) => prim("data"),
            type_::List(l) => serde_json::json!({
                "kind": "list",
                "element": self.type_json(l.get_element_type().expect("element type")),
            }),
            type_::Enum(e) => named("enum", e.get_type_id()),
            type_::Struct(s) => named("struct", s.get_type_id()),
            type_::Interface(i) => named("interface", i.get_type_id()),
            type_::AnyPointer(_) => prim("anyPointer"),
        }
    }
}

/// Compares a schema value (field default or const value) with the JSON's
/// plain scalar. Integers compare exactly, floats bit for bit.
fn value_matches(expected: &Value, ours: value::Reader<'_>) -> Result<(), String> {
    let int = |v: i128| -> Result<(), String> {
        let e = expected
            .as_i64()
            .map(i128::from)
            .or_else(|| expected.as_u64().map(i128::from));
        if e == Some(v) {
            Ok(())
        } else {
            Err(format!("expected {expected}, ours is {v}"))
        }
    };
    let float = |ours_bits: u64, ours_text: String, expected_bits: Option<u64>| {
        if expected_bits == Some(ours_bits) {
            Ok(())
        } else {
            Err(format!(
                "expected {expected} (bits {}), ours is {ours_text} (bits {ours_bits:#018x})",
                expected_bits.map_or_else(|| "none".to_owned(), |b| format!("{b:#018x}"))
            ))
        }
    };
    match ours.which().map_err(|e| format!("unreadable value: {e}"))? {
        value::Void(()) => {
            if expected.is_null() {
                Ok(())
            } else {
                Err(format!("expected {expected}, ours is void"))
            }
        }
        value::Bool(b) => {
            if expected.as_bool() == Some(b) {
                Ok(())
            } else {
                Err(format!("expected {expected}, ours is {b}"))
            }
        }
        value::Int8(v) => int(v.into()),
        value::Int16(v) => int(v.into()),
        value::Int32(v) => int(v.into()),
        value::Int64(v) => int(v.into()),
        value::Uint8(v) => int(v.into()),
        value::Uint16(v) => int(v.into()),
        value::Uint32(v) => int(v.into()),
        value::Uint64(v) => int(v.into()),
        value::Enum(v) => int(v.into()),
        value::Float32(v) => float(
            v.to_bits().into(),
            format!("{v:e}"),
            // The JSON prints an f32 default as a number; narrow it back.
            expected.as_f64().map(|e| u64::from((e as f32).to_bits())),
        ),
        value::Float64(v) => float(
            v.to_bits(),
            format!("{v:e}"),
            expected.as_f64().map(f64::to_bits),
        ),
        value::Text(t) => {
            let t = t
                .map_err(|e| format!("unreadable text: {e}"))?
                .to_str()
                .map_err(|e| format!("non-UTF-8 text: {e}"))?
                .to_owned();
            if expected.as_str() == Some(t.as_str()) {
                Ok(())
            } else {
                Err(format!("expected {expected}, ours is {t:?}"))
            }
        }
        value::Data(_)
        | value::List(_)
        | value::Struct(_)
        | value::Interface(())
        | value::AnyPointer(_) => Err(format!(
            "pointer-typed values are not supported by this test (expected {expected})"
        )),
    }
}

// ---------------------------------------------------------------------------
// The comparison

struct Check<'a> {
    set: &'a str,
    ours: &'a Ours<'a>,
    errors: Vec<String>,
}

impl Check<'_> {
    fn fail(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("[{}] {at}: {msg}", self.set));
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, at: &str, what: &str, expected: T, ours: T) {
        if expected != ours {
            self.fail(at, format!("{what}: expected {expected:?}, ours {ours:?}"));
        }
    }

    fn num(&mut self, at: &str, exp: &Value, key: &str) -> Option<u64> {
        let v = exp.get(key).and_then(Value::as_u64);
        if v.is_none() {
            self.fail(at, format!("expected-layout.json lacks numeric {key:?}"));
        }
        v
    }

    fn node(&mut self, exp: &Value) {
        let id = parse_id(&exp["id"], "node id");
        let exp_name = exp["name"].as_str().unwrap_or("<unnamed>");
        let at = format!("node {} ({exp_name})", hex(id));
        let Some(&n) = self.ours.nodes.get(&id) else {
            self.fail(&at, "missing from our compiled schema");
            return;
        };
        self.eq(
            &at,
            "display name",
            exp_name.to_owned(),
            text(n.get_display_name()),
        );
        self.eq(
            &at,
            "kind",
            exp["kind"].as_str().unwrap_or("?"),
            kind_name(n),
        );
        self.eq(
            &at,
            "scopeId",
            parse_id(&exp["scopeId"], "scopeId"),
            n.get_scope_id(),
        );
        match n.which().expect("known node kind") {
            node::File(()) => {}
            node::Struct(s) => self.structure(&at, exp, s),
            node::Interface(i) => self.interface(&at, exp, i),
            node::Const(c) => {
                let t = self.ours.type_json(c.get_type().expect("const type"));
                self.eq(&at, "const type", exp["type"].clone(), t);
                if let Err(e) = value_matches(&exp["value"], c.get_value().expect("const value")) {
                    self.fail(&at, format!("const value: {e}"));
                }
            }
            node::Annotation(a) => {
                let t = self.ours.type_json(a.get_type().expect("annotation type"));
                self.eq(&at, "annotation type", exp["type"].clone(), t);
            }
            node::Enum(e) => self.enumeration(&at, exp, e),
        }
    }

    fn structure(&mut self, at: &str, exp: &Value, s: node::struct_::Reader<'_>) {
        if let Some(v) = self.num(at, exp, "dataWords") {
            self.eq(at, "dataWords", v, u64::from(s.get_data_word_count()));
        }
        if let Some(v) = self.num(at, exp, "pointers") {
            self.eq(at, "pointers", v, u64::from(s.get_pointer_count()));
        }
        self.eq(
            at,
            "isGroup",
            exp["isGroup"].as_bool(),
            Some(s.get_is_group()),
        );
        if let Some(v) = self.num(at, exp, "discriminantCount") {
            self.eq(
                at,
                "discriminantCount",
                v,
                u64::from(s.get_discriminant_count()),
            );
        }
        if let Some(v) = self.num(at, exp, "discriminantOffset") {
            self.eq(
                at,
                "discriminantOffset",
                v,
                u64::from(s.get_discriminant_offset()),
            );
        }

        let empty = Vec::new();
        let exp_fields = exp["fields"].as_array().unwrap_or(&empty);
        let ours: BTreeMap<String, field::Reader<'_>> = s
            .get_fields()
            .expect("fields")
            .iter()
            .map(|f| (text(f.get_name()), f))
            .collect();
        let expected_names: BTreeSet<&str> = exp_fields
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        for extra in ours.keys().filter(|k| !expected_names.contains(k.as_str())) {
            self.fail(at, format!("field {extra:?} is ours only"));
        }
        for ef in exp_fields {
            let fname = ef["name"].as_str().unwrap_or("<unnamed>");
            let fat = format!("{at} field {fname:?}");
            let Some(&f) = ours.get(fname) else {
                self.fail(&fat, "missing from ours");
                continue;
            };
            self.field(&fat, ef, f);
        }
    }

    fn field(&mut self, at: &str, ef: &Value, f: field::Reader<'_>) {
        if let Some(v) = self.num(at, ef, "codeOrder") {
            self.eq(at, "codeOrder", v, u64::from(f.get_code_order()));
        }
        let ordinal = match f.get_ordinal().which().expect("ordinal") {
            field::ordinal::Explicit(o) => Some(u64::from(o)),
            field::ordinal::Implicit(()) => None,
        };
        self.eq(at, "ordinal", ef["ordinal"].as_u64(), ordinal);
        // No expected struct has a union; a discriminant would mean one crept in.
        if f.get_discriminant_value() != field::NO_DISCRIMINANT {
            self.fail(
                at,
                format!(
                    "is a union member (discriminant {})",
                    f.get_discriminant_value()
                ),
            );
        }
        let slot = match f.which().expect("field kind") {
            field::Slot(slot) => slot,
            field::Group(g) => {
                self.fail(
                    at,
                    format!("is a group ({}), expected a slot", hex(g.get_type_id())),
                );
                return;
            }
        };
        if let Some(v) = self.num(at, ef, "offset") {
            self.eq(at, "offset", v, u64::from(slot.get_offset()));
        }
        let t = self.ours.type_json(slot.get_type().expect("slot type"));
        self.eq(at, "type", ef["type"].clone(), t);
        match ef.get("default") {
            Some(d) => {
                if !slot.get_had_explicit_default() {
                    self.fail(at, format!("expected explicit default {d}, ours has none"));
                } else if let Err(e) =
                    value_matches(d, slot.get_default_value().expect("default value"))
                {
                    self.fail(at, format!("default: {e}"));
                }
            }
            None => {
                if slot.get_had_explicit_default() {
                    let shown = match slot.get_default_value().expect("default").which() {
                        Ok(value::Bool(b)) => b.to_string(),
                        Ok(value::Float64(x)) => format!("{x:e}"),
                        Ok(value::Int64(x)) => x.to_string(),
                        Ok(value::Uint64(x)) => x.to_string(),
                        Ok(value::Uint32(x)) => x.to_string(),
                        Ok(value::Int32(x)) => x.to_string(),
                        _ => "a value".to_owned(),
                    };
                    self.fail(
                        at,
                        format!("ours has explicit default {shown}, expected none"),
                    );
                }
            }
        }
    }

    fn interface(&mut self, at: &str, exp: &Value, i: node::interface::Reader<'_>) {
        let supers: Vec<Value> = i
            .get_superclasses()
            .expect("superclasses")
            .iter()
            .map(|s| Value::String(hex(s.get_id())))
            .collect();
        let exp_supers: Vec<Value> = exp["superclasses"]
            .as_array()
            .map(|a| a.iter().map(|s| s.get("id").unwrap_or(s).clone()).collect())
            .unwrap_or_default();
        self.eq(at, "superclasses", exp_supers, supers);

        let methods = i.get_methods().expect("methods");
        let empty = Vec::new();
        let exp_methods = exp["methods"].as_array().unwrap_or(&empty);
        // capnp lists methods by ordinal, so the index is the ordinal.
        let ours: BTreeMap<u64, _> = methods
            .iter()
            .enumerate()
            .map(|(k, m)| (k as u64, m))
            .collect();
        let expected_ordinals: BTreeSet<u64> = exp_methods
            .iter()
            .filter_map(|m| m["ordinal"].as_u64())
            .collect();
        for (ordinal, m) in &ours {
            if !expected_ordinals.contains(ordinal) {
                self.fail(
                    at,
                    format!("method @{ordinal} {:?} is ours only", text(m.get_name())),
                );
            }
        }
        for em in exp_methods {
            let Some(ordinal) = em["ordinal"].as_u64() else {
                self.fail(
                    at,
                    format!("expected-layout.json method without ordinal: {em}"),
                );
                continue;
            };
            let mname = em["name"].as_str().unwrap_or("<unnamed>");
            let mat = format!("{at} method @{ordinal} {mname}");
            let Some(&m) = ours.get(&ordinal) else {
                self.fail(&mat, "missing from ours");
                continue;
            };
            self.eq(&mat, "name", mname.to_owned(), text(m.get_name()));
            if let Some(v) = self.num(&mat, em, "codeOrder") {
                self.eq(&mat, "codeOrder", v, u64::from(m.get_code_order()));
            }
            for (key, name_key, id) in [
                ("params", "paramsName", m.get_param_struct_type()),
                ("results", "resultsName", m.get_result_struct_type()),
            ] {
                self.eq(&mat, key, parse_id(&em[key], key), id);
                if let Some(name) = em.get(name_key).and_then(Value::as_str) {
                    self.eq(&mat, name_key, name.to_owned(), self.ours.display_name(id));
                }
            }
        }
    }

    fn enumeration(&mut self, at: &str, exp: &Value, e: node::enum_::Reader<'_>) {
        // Enumerants are numbered by position; their names and code order are
        // what the JSON can pin. Accept plain names or {name, codeOrder} objects.
        let ours: Vec<(String, u16)> = e
            .get_enumerants()
            .expect("enumerants")
            .iter()
            .map(|x| (text(x.get_name()), x.get_code_order()))
            .collect();
        let Some(exp_list) = exp.get("enumerants").and_then(Value::as_array) else {
            self.fail(at, "expected-layout.json enum lacks \"enumerants\"");
            return;
        };
        self.eq(at, "enumerant count", exp_list.len(), ours.len());
        for (k, (ev, (name, code_order))) in exp_list.iter().zip(&ours).enumerate() {
            let exp_name = ev.as_str().or_else(|| ev["name"].as_str()).unwrap_or("?");
            self.eq(at, &format!("enumerant {k} name"), exp_name, name.as_str());
            if let Some(co) = ev.get("codeOrder").and_then(Value::as_u64) {
                self.eq(
                    at,
                    &format!("enumerant {k} codeOrder"),
                    co,
                    u64::from(*code_order),
                );
            }
        }
    }
}

fn expected_sets() -> Value {
    serde_json::from_str(EXPECTED_JSON).expect("tests/fixtures/expected-layout.json parses")
}

fn check_set(
    set: &str,
    expected: &Value,
    request: code_generator_request::Reader<'_>,
) -> Vec<String> {
    let ours = Ours::new(set, request);
    let mut check = Check {
        set,
        ours: &ours,
        errors: Vec::new(),
    };
    let exp_nodes = expected[set]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("expected-layout.json has no nodes for set {set:?}"));
    let mut expected_ids = BTreeSet::new();
    for exp in exp_nodes {
        expected_ids.insert(parse_id(&exp["id"], "node id"));
        check.node(exp);
    }
    // Strict on extras: every node we compile (files included) must be one
    // the upstream set has, or we carry a declaration the peer lacks.
    for (&id, &n) in &ours.nodes {
        if !expected_ids.contains(&id) {
            check.fail(
                &format!("node {} ({})", hex(id), text(n.get_display_name())),
                format!("{} node is ours only", kind_name(n)),
            );
        }
    }
    // Every expected file must be a requested file of the set (not merely imported).
    let requested: BTreeSet<String> = request
        .get_requested_files()
        .expect("requested files")
        .iter()
        .map(|f| text(f.get_filename()))
        .collect();
    let expected_files: BTreeSet<String> = exp_nodes
        .iter()
        .filter(|n| n["kind"] == "file")
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    check.eq("requested files", "names", expected_files, requested);
    check.errors
}

#[test]
fn layout_matches_upstream() {
    let expected = expected_sets();
    let listed: BTreeSet<&str> = expected
        .as_object()
        .expect("top-level object")
        .keys()
        .map(String::as_str)
        .collect();
    let ours: BTreeSet<&str> = SETS.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        listed, ours,
        "schema sets in expected-layout.json vs schema/compiled"
    );

    let mut errors = Vec::new();
    for (set, bytes) in SETS {
        assert_eq!(
            expected[set]["set"], set,
            "expected-layout.json: set name of {set:?}"
        );
        errors.extend(with_request(set, bytes, |request| {
            check_set(set, &expected, request)
        }));
    }
    assert!(
        errors.is_empty(),
        "{} layout mismatch(es) against tests/fixtures/expected-layout.json \
         (fix schema/capnp/<set>/*.capnp, then run `bash schema/compile.sh`):\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
}

/// Guards the comparison itself: it must notice a changed default, a moved
/// slot and a missing node. Uses a tampered copy of the expected JSON.
#[test]
fn layout_check_detects_tampering() {
    let (set, bytes) = SETS[3];
    let pristine = expected_sets();
    let run = |mutate: &dyn Fn(&mut Value)| {
        let mut tampered = pristine.clone();
        mutate(&mut tampered);
        with_request(set, bytes, |request| check_set(set, &tampered, request))
    };
    let field_of = |v: &mut Value, node: &str, field: &str, key: &str, new: Value| {
        let nodes = v[set]["nodes"].as_array_mut().expect("nodes");
        let n = nodes.iter_mut().find(|n| n["name"] == node).expect("node");
        let fields = n["fields"].as_array_mut().expect("fields");
        let f = fields
            .iter_mut()
            .find(|f| f["name"] == field)
            .expect("field");
        f[key] = new;
    };

    let errs = run(&|_| {});
    assert!(errs.is_empty(), "the pristine JSON must pass: {errs:?}");

    let errs = run(&|v| {
        field_of(
            v,
            "mining.capnp:BlockWaitOptions",
            "timeout",
            "default",
            serde_json::json!(1.7976931348623155e308),
        );
    });
    assert!(
        errs.iter()
            .any(|e| e.contains("BlockWaitOptions") && e.contains("default")),
        "a 1-ulp change of a float default must be caught: {errs:?}"
    );

    let errs = run(&|v| {
        let nodes = v[set]["nodes"].as_array_mut().expect("nodes");
        let n = nodes
            .iter_mut()
            .find(|n| n["name"] == "mining.capnp:BlockCreateOptions")
            .expect("node");
        let fields = n["fields"].as_array_mut().expect("fields");
        let f = fields
            .iter_mut()
            .find(|f| f["name"] == "useMempool")
            .expect("field");
        f.as_object_mut().expect("field object").remove("default");
    });
    assert!(
        errs.iter()
            .any(|e| e.contains("useMempool") && e.contains("explicit default")),
        "a default present only in ours must be caught: {errs:?}"
    );

    let errs = run(&|v| {
        field_of(
            v,
            "mining.capnp:CoinbaseTx",
            "lockTime",
            "offset",
            serde_json::json!(5),
        );
    });
    assert!(
        errs.iter()
            .any(|e| e.contains("lockTime") && e.contains("offset")),
        "a moved slot must be caught: {errs:?}"
    );

    let errs = run(&|v| {
        field_of(
            v,
            "mining.capnp:Mining.getTransactionsByTxID$Params",
            "txids",
            "type",
            serde_json::json!({"kind": "list", "element": "text"}),
        );
    });
    assert!(
        errs.iter()
            .any(|e| e.contains("txids") && e.contains("type")),
        "a changed list element type must be caught: {errs:?}"
    );

    let errs = run(&|v| {
        let nodes = v[set]["nodes"].as_array_mut().expect("nodes");
        let n = nodes
            .iter_mut()
            .find(|n| n["name"] == "init.capnp:Init")
            .expect("node");
        let methods = n["methods"].as_array_mut().expect("methods");
        let m = methods
            .iter_mut()
            .find(|m| m["name"] == "makeMining")
            .expect("method");
        m["codeOrder"] = serde_json::json!(4);
        m["params"] = serde_json::json!("0xecc9a12bacbb6a49");
    });
    assert!(
        errs.iter()
            .any(|e| e.contains("makeMining") && e.contains("codeOrder"))
            && errs
                .iter()
                .any(|e| e.contains("makeMining") && e.contains("params")),
        "a changed method codeOrder and params ID must be caught: {errs:?}"
    );

    let errs = run(&|v| {
        let nodes = v[set]["nodes"].as_array_mut().expect("nodes");
        nodes.retain(|n| n["name"] != "rpc.capnp:Rpc");
    });
    assert!(
        errs.iter()
            .any(|e| e.contains("rpc.capnp:Rpc") && e.contains("ours only")),
        "an extra node in ours must be caught: {errs:?}"
    );
}

// ---------------------------------------------------------------------------
// Drift between schema/capnp and schema/compiled

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("schema/ has a parent")
        .to_path_buf()
}

/// The set's `.capnp` files relative to its directory, sorted byte-wise, like
/// `find . -type f -name '*.capnp' | sed 's|^\./||' | LC_ALL=C sort`.
fn set_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, rel: &str, out: &mut Vec<String>) {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        for entry in std::fs::read_dir(&here).unwrap_or_else(|e| panic!("{}: {e}", here.display()))
        {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().into_string().expect("UTF-8 file name");
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                walk(base, &path, out);
            } else if ft.is_file() && name.ends_with(".capnp") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

#[test]
fn compiled_bins_are_fresh() {
    let require = std::env::var("MPSPY_REQUIRE_CAPNP").is_ok_and(|v| v == "1");
    let capnp = std::env::var("CAPNP").unwrap_or_else(|_| "capnp".to_owned());
    let skip = |why: String| {
        assert!(!require, "MPSPY_REQUIRE_CAPNP=1 but {why}");
        eprintln!("note: skipping the schema drift check: {why}");
    };

    let version = match Command::new(&capnp).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => return skip(format!("`{capnp} --version` failed: {}", out.status)),
        Err(e) => return skip(format!("`{capnp}` is not runnable ({e})")),
    };
    // Different compiler versions emit different bytes (at least capnpVersion);
    // the checked-in files record which one made them.
    let made_by = with_request("master", SETS[3].1, |r| {
        let v = r.get_capnp_version().expect("capnpVersion");
        format!("{}.{}.{}", v.get_major(), v.get_minor(), v.get_micro())
    });
    if !version.ends_with(&format!(" {made_by}")) {
        return skip(format!(
            "local compiler is {version:?}, the checked-in schema/compiled/*.bin were made by {made_by}"
        ));
    }

    let root = repo_root();
    let mut stale = Vec::new();
    for (set, checked_in) in SETS {
        let dir = format!("schema/capnp/{set}");
        let files = set_files(&root.join(&dir));
        assert!(!files.is_empty(), "{set}: no .capnp files in {dir}");
        let out = Command::new(&capnp)
            .current_dir(&root)
            .args(["compile", "-I", &dir, &format!("--src-prefix={dir}"), "-o-"])
            .args(files.iter().map(|f| format!("{dir}/{f}")))
            .output()
            .unwrap_or_else(|e| panic!("{set}: running {capnp}: {e}"));
        assert!(
            out.status.success(),
            "{set}: `capnp compile` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout != checked_in {
            let first = out
                .stdout
                .iter()
                .zip(checked_in)
                .position(|(a, b)| a != b)
                .unwrap_or(out.stdout.len().min(checked_in.len()));
            stale.push(format!(
                "{set}: fresh compile is {} bytes, schema/compiled/{set}.bin is {} bytes, first difference at byte {first} (files: {})",
                out.stdout.len(),
                checked_in.len(),
                files.join(" ")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "schema/compiled is stale; run `bash schema/compile.sh` and commit the result:\n  {}",
        stale.join("\n  ")
    );
}
