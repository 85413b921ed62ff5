//! Random and mutated bytes never panic the splitter, the envelope decoder or the walker, and
//! however a stream is cut into reads, the engine gives the same events as for the whole
//! stream. (`fuzz/` drives the same entry points coverage-guided.)

use mpspy_engine::framing::{Piece, Splitter, split_all};
use mpspy_engine::raw::decode_pair;
use mpspy_engine::{SchemaConfig, Session, Tapped};
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

/// Events of a two-direction session whose frames are taken in the order `turns` gives
/// (true: client to server), each direction cut into reads of the sizes in `reads` (cycled),
/// or taken whole when `reads` is empty. A piece gets the time of its place in that order, so
/// only the cutting differs between runs.
fn chunked_events(c2s: &[u8], s2c: &[u8], turns: &[bool], reads: &[usize]) -> String {
    struct Side<'a> {
        dir: Direction,
        bytes: &'a [u8],
        at: usize,
        splitter: Splitter,
        ready: std::collections::VecDeque<Piece>,
        done: bool,
    }
    impl Side<'_> {
        /// The next piece, reading more of the stream as needed.
        fn next(&mut self, reads: &[usize], read_no: &mut usize) -> Option<Piece> {
            while self.ready.is_empty() && !self.done {
                if self.at == self.bytes.len() {
                    self.ready.extend(self.splitter.finish());
                    self.done = true;
                    break;
                }
                let n = if reads.is_empty() {
                    self.bytes.len()
                } else {
                    reads[*read_no % reads.len()].max(1)
                };
                *read_no += 1;
                let end = (self.at + n).min(self.bytes.len());
                let mut out = Vec::new();
                self.splitter.push(&self.bytes[self.at..end], &mut out);
                self.ready.extend(out);
                self.at = end;
            }
            self.ready.pop_front()
        }
    }
    let side = |dir, bytes| Side {
        dir,
        bytes,
        at: 0,
        splitter: Splitter::new(),
        ready: Default::default(),
        done: false,
    };
    let mut sides = [
        side(Direction::ClientToServer, c2s),
        side(Direction::ServerToClient, s2c),
    ];
    let mut session = Session::new(SchemaConfig::default());
    session.apply(&Tapped::Opened {
        conn: 1,
        t_ns: 0,
        label: "chunks".into(),
        client: None,
        server: None,
    });
    let (mut read_no, mut t) = (0, 0u64);
    let mut turn = turns.iter().cycle();
    loop {
        let first = usize::from(!*turn.next().unwrap_or(&true));
        let mut got = None;
        for i in [first, 1 - first] {
            if let Some(p) = sides[i].next(reads, &mut read_no) {
                got = Some((i, p));
                break;
            }
        }
        let Some((i, p)) = got else { break };
        t += 1;
        session.apply(&p.tapped(1, sides[i].dir, t));
    }
    session.close(1, t + 1, "end");
    format!("{:?}", session.drain())
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

    /// Reads of any size, in any interleaving of the directions, give the events of the
    /// whole streams (real captures, and mutated ones with undecodable stretches).
    #[test]
    fn chunked_sessions_give_the_events_of_whole_ones(
        reads in prop::collection::vec(1usize..400, 1..16),
        turns in prop::collection::vec(any::<bool>(), 1..8),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
    ) {
        for (c, d) in [(PY_C2S, PY_S2C), (CALC_C2S, CALC_S2C)] {
            let c = mutate(c, &flips);
            prop_assert_eq!(
                chunked_events(&c, d, &turns, &reads),
                chunked_events(&c, d, &turns, &[])
            );
        }
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
