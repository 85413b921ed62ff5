//! Random and mutated bytes never panic the splitter, the envelope decoder or the walker.
//! (A property test now; coverage-guided fuzzing can reuse the same entry points later.)

use mpspy_engine::framing::{Piece, Splitter, split_all};
use mpspy_engine::raw::decode_pair;
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::Direction;
use proptest::prelude::*;
use proptest::sample::Index;

const PY_C2S: &[u8] =
    include_bytes!("../../tests/fixtures/captures/bitcoin-node-master/pyclient.c2s.bin");
const PY_S2C: &[u8] =
    include_bytes!("../../tests/fixtures/captures/bitcoin-node-master/pyclient.s2c.bin");
const CALC_C2S: &[u8] =
    include_bytes!("../../tests/fixtures/captures/mpexample/mpcalculator.mpexample-to-child.bin");
const CALC_S2C: &[u8] =
    include_bytes!("../../tests/fixtures/captures/mpexample/mpcalculator.child-to-mpexample.bin");

fn run_pair(c2s: &[u8], s2c: &[u8]) -> usize {
    let mut s = Session::new(SchemaConfig::default());
    decode_pair(&mut s, 1, "fuzz", c2s, s2c);
    let events = s.drain();
    // Every event still serializes (the JSON sink must never fail on odd values).
    for e in &events {
        serde_json::to_string(e).expect("event serializes");
    }
    events.len()
}

/// A frame with a valid one-segment header around arbitrary words: gets past framing, so the
/// pointer reader and the walker see the randomness.
fn framed(words: &[u64]) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0];
    b.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        b.extend_from_slice(&w.to_le_bytes());
    }
    b
}

fn mutate(base: &[u8], flips: &[(Index, u8)]) -> Vec<u8> {
    let mut b = base.to_vec();
    for (i, x) in flips {
        let at = i.index(b.len());
        b[at] ^= x;
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(a in prop::collection::vec(any::<u8>(), 0..2048), b in prop::collection::vec(any::<u8>(), 0..2048)) {
        run_pair(&a, &b);
    }

    #[test]
    fn random_words_in_valid_frames(words in prop::collection::vec(any::<u64>(), 1..64), words2 in prop::collection::vec(any::<u64>(), 1..64)) {
        run_pair(&framed(&words), &framed(&words2));
    }

    #[test]
    fn rpc_shaped_random_frames(which in 0u16..16, body in prop::collection::vec(any::<u64>(), 0..48)) {
        // Root: Message struct (1 data word, 1 pointer) at offset 0; body pointer to the next word.
        let mut words = vec![(1u64 << 32) | (1u64 << 48), u64::from(which)];
        words.push((3u64 << 32) | (3u64 << 48)); // a Call-sized struct right after
        words.extend(body);
        run_pair(&framed(&words), &[]);
    }

    #[test]
    fn mutated_real_captures(flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..12), cut in any::<Index>()) {
        let a = mutate(PY_C2S, &flips);
        let b = mutate(PY_S2C, &flips);
        run_pair(&a, &b);
        let c = mutate(CALC_C2S, &flips);
        let d = mutate(CALC_S2C, &flips);
        let cut = cut.index(d.len());
        run_pair(&c, &d[..cut]);
    }

    #[test]
    fn chunking_never_changes_frames(chunk in 1usize..300) {
        let whole = split_all(PY_C2S);
        let mut s = Splitter::new();
        let mut out = Vec::new();
        for c in PY_C2S.chunks(chunk) {
            s.push(c, &mut out);
        }
        out.extend(s.finish());
        prop_assert_eq!(whole, out);
    }
}

#[test]
fn real_captures_decode_to_the_same_events_each_time() {
    assert_eq!(run_pair(PY_C2S, PY_S2C), run_pair(PY_C2S, PY_S2C));
    let frames = split_all(PY_C2S)
        .into_iter()
        .filter(|p| matches!(p, Piece::Frame { .. }))
        .count();
    assert_eq!(frames, 35);
    // A frame fed on its own into a fresh session decodes without context.
    let mut s = Session::new(SchemaConfig::default());
    for p in split_all(PY_S2C) {
        if let Piece::Frame { offset, bytes } = p {
            s.frame(1, Direction::ServerToClient, 0, offset, &bytes);
        }
    }
    assert!(s.drain().iter().all(|e| e.kind.name() != "undecodable"));
}
