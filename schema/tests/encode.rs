//! The encoder is the decoder's inverse: params that pycapnp built (every type, defaults,
//! unions, groups, generics, capabilities) decode to JSON, encode back from that JSON, and
//! decode to the same JSON again.

use mpspy_schema::SchemaSet;
use mpspy_schema::decode::{Lookup, Walker};
use mpspy_schema::encode::{CapSource, EncodeError, NoCaps, encode};
use mpspy_schema::rpc::{self, Rpc};
use mpspy_schema::wire::Message;
use serde_json::{Value as Json, json};

const SCHEMA: &[u8] = include_bytes!("../../tests/fixtures/alltypes/alltypes.bin");
const FRAMES: &[u8] = include_bytes!("../../tests/fixtures/alltypes/frames.bin");

/// Capabilities keep their cap-table index from the decoded form.
struct ByIndex;

impl CapSource for ByIndex {
    fn cap(&mut self, _: &str, _: Option<u64>, v: &Json) -> Result<u32, String> {
        v["index"]
            .as_u64()
            .map(|i| i as u32)
            .ok_or_else(|| format!("no index in {v}"))
    }
}

fn decode_root(set: &SchemaSet, id: u64, bytes: &[u8]) -> Json {
    let (m, _) = Message::parse(bytes).unwrap();
    let sets = [set];
    let mut w = Walker::new(Lookup::new(&sets));
    serde_json::to_value(w.decode(id, m.root().unwrap())).unwrap()
}

#[test]
fn every_call_in_the_pycapnp_frames_round_trips() {
    let set = SchemaSet::from_request("alltypes", SCHEMA).unwrap();
    let sets = [&set];
    let lookup = Lookup::new(&sets);
    let mut at = 0;
    let mut calls = 0;
    while at < FRAMES.len() {
        let (m, len) = Message::parse(&FRAMES[at..]).unwrap();
        at += len;
        let Ok(Rpc::Call(c)) = rpc::decode(&m) else {
            continue;
        };
        let Some((_, method)) = lookup.method(c.interface_id, c.method_id) else {
            continue;
        };
        let mut w = Walker::new(lookup);
        let first = serde_json::to_value(w.decode(method.params, c.params.content)).unwrap();
        let bytes = encode(lookup, method.params, &first, &mut ByIndex).unwrap();
        let second = decode_root(&set, method.params, &bytes);
        assert_eq!(first, second, "round trip of {}", method.name);
        calls += 1;
    }
    assert!(calls >= 2, "the fixture has calls with params");
}

#[test]
fn defaults_fill_what_is_not_given_and_bad_json_is_named() {
    let set = mpspy_schema::sets::builtin("master").unwrap();
    let sets = [set.as_ref()];
    let lookup = Lookup::new(&sets);
    // Mining.createNewBlock$Params: nothing given → options null, cooldown = its default (true).
    let (_, m) = lookup.method(0xf9c6_8436_df3a_f39e, 4).unwrap();
    let bytes = encode(lookup, m.params, &json!({}), &mut NoCaps).unwrap();
    let v = decode_root(&set, m.params, &bytes);
    assert_eq!(v["cooldown"], true);
    // Options given partly: the rest keep master's defaults.
    let bytes = encode(
        lookup,
        m.params,
        &json!({"options": {"blockReservedWeight": 4000}, "cooldown": false}),
        &mut NoCaps,
    )
    .unwrap();
    let v = decode_root(&set, m.params, &bytes);
    assert_eq!(
        v["options"],
        json!({"useMempool": true, "blockReservedWeight": 4000, "coinbaseOutputMaxAdditionalSigops": 400})
    );
    assert_eq!(v["cooldown"], false);

    let err = encode(lookup, m.params, &json!({"cooldwn": true}), &mut NoCaps).unwrap_err();
    assert!(
        matches!(&err, EncodeError::NoField { field, known, .. } if field == "cooldwn" && known.contains("cooldown")),
        "{err}"
    );
    let err = encode(
        lookup,
        m.params,
        &json!({"options": {"blockReservedWeight": -1}}),
        &mut NoCaps,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("options.blockReservedWeight")
            && err.to_string().contains("out of range"),
        "{err}"
    );
    // A capability where none can be given.
    let (_, echo) = lookup.method(0xd36b_8964_0dc9_4399, 1).unwrap();
    let err = encode(
        lookup,
        echo.params,
        &json!({"context": {"thread": "t"}, "echo": "hi"}),
        &mut NoCaps,
    )
    .unwrap_err();
    assert!(err.to_string().contains("context.thread"), "{err}");
    let bytes = encode(lookup, echo.params, &json!({"echo": "hi"}), &mut NoCaps).unwrap();
    assert_eq!(decode_root(&set, echo.params, &bytes)["echo"], "hi");
}
