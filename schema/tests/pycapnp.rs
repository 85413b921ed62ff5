//! Decodes Cap'n Proto RPC messages built by an independent implementation (pycapnp, i.e. the
//! C++ runtime) and checks that mpspy's wire reader, envelope decoder and dynamic decoder give
//! back exactly the values that were put in.
//!
//! The fixtures live in `tests/fixtures/alltypes/`:
//! * `alltypes.capnp` — a test schema with every kind of field (all primitives with and without
//!   defaults, blobs, lists of every element kind, unions, groups, enums, a capability, generics);
//!   `alltypes.bin` is its compiled `CodeGeneratorRequest`.
//! * `gen.py` — builds rpc.capnp messages (call, return, finish, release, bootstrap, …) with
//!   pycapnp and writes `frames.bin` and `expected.json` (the values put in, in mpspy's JSON
//!   form of a decoded `Value`; floats also as exact IEEE bits).
//!
//! Tests:
//! * `checked_in_frames_decode_to_the_values_put_in` always runs on the checked-in frames.
//! * `fresh_pycapnp_frames_decode_the_same` re-runs `gen.py` (so a pycapnp upgrade that changes
//!   the encoding is caught). Skipped with a note when pycapnp is missing, unless
//!   `MPSPY_REQUIRE_PYCAPNP=1`.
//! * `alltypes_bin_is_fresh` recompiles `alltypes.capnp` and requires byte equality with
//!   `alltypes.bin`. Skipped with a note when `capnp` is missing or a different version, unless
//!   `MPSPY_REQUIRE_CAPNP=1`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use mpspy_schema::decode::{Lookup, Walker};
use mpspy_schema::rpc::{self, Outcome, Payload, Rpc};
use mpspy_schema::wire::{Message, Target};
use mpspy_schema::{SchemaSet, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json, json};

const SCHEMA: &[u8] = include_bytes!("../../tests/fixtures/alltypes/alltypes.bin");
const FRAMES: &[u8] = include_bytes!("../../tests/fixtures/alltypes/frames.bin");
const EXPECTED: &str = include_str!("../../tests/fixtures/alltypes/expected.json");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/alltypes")
}

fn schema() -> SchemaSet {
    SchemaSet::from_request("alltypes.capnp", SCHEMA).expect("alltypes.bin loads")
}

// ---------------------------------------------------------------------------
// Decoding: every frame to the JSON form expected.json uses

/// One decoded frame: its JSON form, the decoded params/results (for the field order check) and
/// how many segments it had.
struct Decoded {
    json: Json,
    values: Vec<(&'static str, Value)>,
    segments: usize,
}

fn decode_frames(set: &SchemaSet, mut bytes: &[u8]) -> Vec<Decoded> {
    let sets = [set];
    let lookup = Lookup::new(&sets);
    // Question id -> (interface, method), to decode the results of a return.
    let mut questions: HashMap<u32, (u64, u16)> = HashMap::new();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let i = out.len();
        let (msg, len) = Message::parse(bytes).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        let segments = msg.segment_words().len();
        let envelope = rpc::decode(&msg).unwrap_or_else(|e| panic!("frame {i}: envelope: {e}"));
        let mut values = Vec::new();
        let json = match envelope {
            Rpc::Bootstrap { question } => json!({"variant": "bootstrap", "question": question}),
            Rpc::Call(c) => {
                questions.insert(c.question, (c.interface_id, c.method_id));
                let (method, value, caps) =
                    payload(lookup, c.interface_id, c.method_id, false, &c.params);
                let j = json!({
                    "variant": "call",
                    "question": c.question,
                    "interface_id": c.interface_id,
                    "method_id": c.method_id,
                    "send_results_to": c.send_results_to,
                    "target": c.target,
                    "cap_table": c.params.cap_table,
                    "method": method,
                    "params": value,
                    "caps": caps,
                });
                values.push(("params", value));
                j
            }
            Rpc::Return(r) => {
                let mut j = json!({
                    "variant": "return",
                    "answer": r.answer,
                    "release_param_caps": r.release_param_caps,
                });
                match &r.outcome {
                    Outcome::Results(p) => {
                        j["outcome"] = json!("results");
                        j["cap_table"] = json!(p.cap_table);
                        match questions.get(&r.answer) {
                            Some(&(interface, method)) => {
                                let (method, value, caps) =
                                    payload(lookup, interface, method, true, p);
                                j["method"] = json!(method);
                                j["results"] = json!(value);
                                j["caps"] = caps;
                                values.push(("results", value));
                            }
                            // Not the answer to a call (e.g. to a bootstrap): show the pointer.
                            None => j["content"] = content(p.content),
                        }
                    }
                    Outcome::Exception(e) => {
                        j["outcome"] = json!("exception");
                        j["exception"] = json!(e);
                    }
                    Outcome::Canceled => j["outcome"] = json!("canceled"),
                    other => j["outcome"] = json!(format!("{other:?}")),
                }
                j
            }
            Rpc::Finish {
                question,
                release_result_caps,
            } => json!({
                "variant": "finish",
                "question": question,
                "release_result_caps": release_result_caps,
            }),
            Rpc::Release { id, count } => json!({"variant": "release", "id": id, "count": count}),
            Rpc::Resolve {
                promise,
                resolution,
            } => json!({"variant": "resolve", "promise": promise, "resolution": resolution}),
            Rpc::Disembargo { target, context } => {
                json!({"variant": "disembargo", "target": target, "context": context})
            }
            Rpc::Unimplemented(echoed) => json!({"variant": "unimplemented", "echoed": echoed}),
            Rpc::Abort(e) => json!({"variant": "abort", "exception": e}),
            other => json!({"variant": format!("{other:?}")}),
        };
        out.push(Decoded {
            json,
            values,
            segments,
        });
        bytes = &bytes[len..];
    }
    out
}

/// Decodes a params or results payload: (method name, value, capabilities met).
fn payload(
    lookup: Lookup<'_>,
    interface: u64,
    method: u16,
    results: bool,
    p: &Payload<'_>,
) -> (Json, Value, Json) {
    let Some((interface_name, m)) = lookup.method(interface, method) else {
        return (Json::Null, Value::Error("unknown method".into()), json!([]));
    };
    let mut walker = Walker::new(lookup);
    let value = walker.decode(if results { m.results } else { m.params }, p.content);
    let caps = walker
        .caps
        .iter()
        .map(|c| json!({"index": c.index, "interface": c.interface, "path": c.path}))
        .collect();
    (json!(format!("{interface_name}.{}", m.name)), value, caps)
}

fn content(t: Target<'_>) -> Json {
    match t {
        Target::Capability(i) => json!({"capability": i}),
        Target::Null => Json::Null,
        t => json!({"kind": t.kind()}),
    }
}

// ---------------------------------------------------------------------------
// Comparing

/// Compares `actual` with `expected` structurally. Floats are compared by their exact bits,
/// taken from `float_bits` (JSON pointer -> hex), so no JSON float parser is trusted.
fn compare(
    actual: &Json,
    expected: &Json,
    path: &str,
    float_bits: &Map<String, Json>,
    used_bits: &mut BTreeSet<String>,
    report: &mut Report,
) {
    let errs = &mut report.errs;
    match (actual, expected) {
        (Json::Object(a), Json::Object(e)) => {
            for k in e.keys().filter(|k| !a.contains_key(*k)) {
                errs.push(format!("{path}/{k}: missing (expected {})", e[k]));
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                errs.push(format!("{path}/{k}: unexpected, decoded {}", a[k]));
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    compare(
                        av,
                        ev,
                        &format!("{path}/{k}"),
                        float_bits,
                        used_bits,
                        report,
                    );
                }
            }
        }
        (Json::Array(a), Json::Array(e)) => {
            if a.len() != e.len() {
                errs.push(format!(
                    "{path}: {} elements decoded, {} expected",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                compare(
                    av,
                    ev,
                    &format!("{path}/{i}"),
                    float_bits,
                    used_bits,
                    report,
                );
            }
        }
        (Json::Number(a), Json::Number(e)) if e.is_f64() => {
            let Some(want) = float_bits
                .get(path)
                .and_then(Json::as_str)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                errs.push(format!("{path}: float {e} has no float_bits entry"));
                return;
            };
            used_bits.insert(path.to_string());
            match a.as_f64().filter(|_| a.is_f64()) {
                Some(have) if have.to_bits() == want => {}
                _ => errs.push(format!(
                    "{path}: expected {:?} (bits {want:016x}), decoded {a}{}",
                    f64::from_bits(want),
                    a.as_f64()
                        .map(|f| format!(" (bits {:016x})", f.to_bits()))
                        .unwrap_or_default()
                )),
            }
        }
        (a, e) if a == e => {}
        (a, e) => errs.push(format!("{path}: expected {e}, decoded {a}")),
    }
}

/// Mismatches found by [`compare`].
#[derive(Default)]
struct Report {
    errs: Vec<String>,
}

/// The shape of a JSON document with object keys in document order (serde_json's own `Value`
/// sorts them), to check that struct fields come out in declaration order.
enum Shape {
    Leaf,
    Seq(Vec<Shape>),
    Map(Vec<(String, Shape)>),
}

impl Shape {
    fn get(&self, key: &str) -> Option<&Shape> {
        match self {
            Shape::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, s)| s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Leaf)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Shape, A::Error> {
        let mut items = Vec::new();
        while let Some(s) = a.next_element()? {
            items.push(s);
        }
        Ok(Shape::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Shape, A::Error> {
        let mut entries = Vec::new();
        while let Some(e) = a.next_entry()? {
            entries.push(e);
        }
        Ok(Shape::Map(entries))
    }
}

/// Checks that every decoded struct lists its fields in the order the expectation does.
fn check_order(v: &Value, s: &Shape, path: &str, errs: &mut Vec<String>) {
    match (v, s) {
        (Value::Struct(fields), Shape::Map(entries)) => {
            let have: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
            if have != want {
                errs.push(format!(
                    "{path}: fields decoded in order {have:?}, expected {want:?}"
                ));
                return;
            }
            for ((n, v), (_, s)) in fields.iter().zip(entries) {
                check_order(v, s, &format!("{path}/{n}"), errs);
            }
        }
        (Value::List(items), Shape::Seq(shapes)) => {
            for (i, (v, s)) in items.iter().zip(shapes).enumerate() {
                check_order(v, s, &format!("{path}/{i}"), errs);
            }
        }
        _ => {}
    }
}

/// Decodes `frames` and checks each one against `expected_text`; panics listing every mismatch.
fn check(label: &str, frames: &[u8], expected_text: &str) {
    let set = schema();
    let expected: Json = serde_json::from_str(expected_text).expect("expected.json parses");
    let shape: Shape = serde_json::from_str(expected_text).expect("expected.json parses");
    let want = expected["frames"]
        .as_array()
        .expect("expected.json: frames");
    let Some(Shape::Seq(want_shapes)) = shape.get("frames") else {
        panic!("expected.json: frames is not an array");
    };
    let decoded = decode_frames(&set, frames);
    let mut errs = Vec::new();
    if decoded.len() != want.len() {
        errs.push(format!(
            "{} frames decoded, {} expected",
            decoded.len(),
            want.len()
        ));
    }
    for (i, ((d, e), s)) in decoded.iter().zip(want).zip(want_shapes).enumerate() {
        let mut e = e.clone();
        let obj = e.as_object_mut().expect("each frame is an object");
        let bits = match obj.remove("float_bits") {
            Some(Json::Object(m)) => m,
            _ => Map::new(),
        };
        let multi_segment = obj.remove("built_multi_segment") == Some(Json::Bool(true));
        let mut report = Report::default();
        let mut used = BTreeSet::new();
        compare(&d.json, &e, "", &bits, &mut used, &mut report);
        let mut frame_errs = report.errs;
        for unused in bits.keys().filter(|k| !used.contains(*k)) {
            frame_errs.push(format!("{unused}: float_bits entry matches no float"));
        }
        if multi_segment && d.segments < 2 {
            frame_errs.push(format!(
                "built with many segments, but the frame has {}",
                d.segments
            ));
        }
        for (key, value) in &d.values {
            match s.get(key) {
                Some(s) => check_order(value, s, &format!("/{key}"), &mut frame_errs),
                None => frame_errs.push(format!("/{key}: not in expected.json")),
            }
        }
        let variant = e["variant"].as_str().unwrap_or("?");
        errs.extend(
            frame_errs
                .into_iter()
                .map(|m| format!("frame {i} ({variant}): {m}")),
        );
    }
    assert!(
        errs.is_empty(),
        "{label}: {} mismatch(es) between mpspy's decoding and the values pycapnp put in:\n  {}",
        errs.len(),
        errs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn checked_in_frames_decode_to_the_values_put_in() {
    check("tests/fixtures/alltypes/frames.bin", FRAMES, EXPECTED);
}

#[test]
fn fresh_pycapnp_frames_decode_the_same() {
    let require = std::env::var("MPSPY_REQUIRE_PYCAPNP").is_ok_and(|v| v == "1");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let skip = |why: String| {
        assert!(!require, "MPSPY_REQUIRE_PYCAPNP=1 but {why}");
        eprintln!("note: skipping the fresh pycapnp round trip: {why}");
    };
    match Command::new(&python)
        .args(["-c", "import capnp; print(capnp.__version__)"])
        .output()
    {
        Ok(out) if out.status.success() => eprintln!(
            "pycapnp {}",
            String::from_utf8_lossy(&out.stdout).trim_end()
        ),
        Ok(out) => {
            return skip(format!(
                "`{python} -c 'import capnp'` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
        Err(e) => return skip(format!("`{python}` is not runnable ({e})")),
    }

    let dir = std::env::temp_dir().join(format!("mpspy-pycapnp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(&python)
        .arg(fixtures().join("gen.py"))
        .arg(&dir)
        .output()
        .expect("run gen.py");
    assert!(
        out.status.success(),
        "gen.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = std::fs::read(dir.join("frames.bin")).expect("gen.py wrote frames.bin");
    let expected =
        std::fs::read_to_string(dir.join("expected.json")).expect("gen.py wrote expected.json");
    let _ = std::fs::remove_dir_all(&dir);

    let fresh: Json = serde_json::from_str(&expected).expect("fresh expected.json parses");
    let checked_in: Json = serde_json::from_str(EXPECTED).expect("expected.json parses");
    assert!(
        fresh == checked_in,
        "gen.py now puts in other values than the checked-in expected.json records; \
         regenerate: python3 tests/fixtures/alltypes/gen.py"
    );
    if frames != FRAMES {
        eprintln!(
            "note: this pycapnp encodes the frames differently from the checked-in frames.bin \
             ({} vs {} bytes); checking that they decode the same",
            frames.len(),
            FRAMES.len()
        );
    }
    check("freshly generated frames", &frames, &expected);
}

#[test]
fn alltypes_bin_is_fresh() {
    let require = std::env::var("MPSPY_REQUIRE_CAPNP").is_ok_and(|v| v == "1");
    let capnp = std::env::var("CAPNP").unwrap_or_else(|_| "capnp".to_owned());
    let skip = |why: String| {
        assert!(!require, "MPSPY_REQUIRE_CAPNP=1 but {why}");
        eprintln!("note: skipping the alltypes.bin drift check: {why}");
    };
    let version = match Command::new(&capnp).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => return skip(format!("`{capnp} --version` failed: {}", out.status)),
        Err(e) => return skip(format!("`{capnp}` is not runnable ({e})")),
    };
    // Different compiler versions emit different bytes (at least capnpVersion).
    let made_by = {
        let mut words = capnp::Word::allocate_zeroed_vec(SCHEMA.len() / 8);
        capnp::Word::words_to_bytes_mut(&mut words).copy_from_slice(SCHEMA);
        let reader = capnp::serialize::read_message_from_flat_slice(
            &mut capnp::Word::words_to_bytes(&words),
            capnp::message::ReaderOptions::new(),
        )
        .expect("alltypes.bin is a capnp message");
        let request: capnp::schema_capnp::code_generator_request::Reader<'_> =
            reader.get_root().expect("a CodeGeneratorRequest");
        let v = request.get_capnp_version().expect("capnpVersion");
        format!("{}.{}.{}", v.get_major(), v.get_minor(), v.get_micro())
    };
    if !version.ends_with(&format!(" {made_by}")) {
        return skip(format!(
            "local compiler is {version:?}, alltypes.bin was made by {made_by}"
        ));
    }
    let out = Command::new(&capnp)
        .current_dir(fixtures())
        .args(["compile", "-o-", "alltypes.capnp"])
        .output()
        .expect("run capnp");
    assert!(
        out.status.success(),
        "capnp compile alltypes.capnp failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == SCHEMA,
        "tests/fixtures/alltypes/alltypes.bin is stale; regenerate: cd tests/fixtures/alltypes && \
         capnp compile -o- alltypes.capnp > alltypes.bin (then python3 gen.py)"
    );
}
