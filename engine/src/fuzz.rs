//! The body of the `session` fuzz target (`engine/fuzz/`), kept here so that a stable test
//! (`tests/fuzz_seeds.rs`) replays the committed seeds and regression inputs on every CI run,
//! without nightly or libFuzzer.
//!
//! One input is a whole session: a small header that says how to drive the engine, then what
//! the client wrote, then what the server wrote. Every byte string is a valid input (a short
//! header reads as zeros), so the fuzzer spends no time on inputs the harness rejects.
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0, bits 0–2 | schemas: `auto`, then [`sets::BUILTIN`] in order (`master`, `v31`, `v30`, `mpexample`); 5–7 read as 0–2 |
//! | 0, bit 3 | also the `alltypes` test schema as a user set (every kind of field) |
//! | 0, bit 4 | raw mode: the two whole streams through [`decode_pair`] (causal interleaving, untimed) |
//! | 0, bit 5 | close the connection once the client's stream ends (later frames arrive after the close) |
//! | 0, bits 6–7 | time between pieces: 1 ns, 1 µs, 1 s, 2⁵⁸ ns (the clock saturates) |
//! | 1 | interleaving: bit *i* (cycled) says which side gives the *i*-th piece (0 client, 1 server) |
//! | 2–5 | read sizes, cycled over both sides' reads; 0 means the rest of the stream |
//! | 6–7 | length of the client's stream (u16, little endian; clamped); the server's is the rest |
//!
//! Besides "no panic", each timed run checks the engine's own promise: the reads' sizes do not
//! change the events. The same pieces in the same order, read whole, must give the same JSON.

use std::sync::{Arc, OnceLock};

use mpspy_schema::event::{Direction, Event, EventKind};
use mpspy_schema::sets::{self, Choice};
use mpspy_schema::{SchemaSet, Value};

use crate::framing::{Piece, Splitter};
use crate::raw::decode_pair;
use crate::{SchemaConfig, Session, Tapped};

/// Header bytes before the two streams.
pub const HEADER: usize = 8;

/// The connection every input talks on.
const CONN: u32 = 1;

/// mpspy's own test schema with every kind of field (generics, groups, unions, defaults, floats,
/// nested lists), which the Bitcoin sets do not all have; offered as a user set so the value
/// decoder meets all of them.
const ALLTYPES: &[u8] = include_bytes!("../../tests/fixtures/alltypes/alltypes.bin");

/// The `alltypes` schema set, loaded once.
pub fn alltypes() -> Arc<SchemaSet> {
    static SET: OnceLock<Arc<SchemaSet>> = OnceLock::new();
    SET.get_or_init(|| {
        // Checked by the schema crate's tests; failing here is a build defect.
        Arc::new(SchemaSet::from_request("alltypes", ALLTYPES).expect("alltypes.bin loads"))
    })
    .clone()
}

/// A decoded fuzz input (see the module docs for the byte layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInput<'a> {
    /// 0 for `auto`, else 1 + the index of a built-in set in [`sets::BUILTIN`].
    pub schemas: u8,
    /// Add the `alltypes` user set.
    pub alltypes: bool,
    /// Drive [`decode_pair`] instead of splitters and reads.
    pub raw: bool,
    /// Close the connection when the client's stream ends.
    pub close_early: bool,
    /// Index into [`TIME_STEPS`].
    pub time_step: u8,
    /// Which side gives each piece, bit by bit.
    pub turns: u8,
    /// Read sizes (0: the rest of the stream).
    pub reads: [u8; 4],
    /// What the client wrote.
    pub c2s: &'a [u8],
    /// What the server wrote.
    pub s2c: &'a [u8],
}

/// `auto` and the built-in sets.
const CHOICES: u8 = sets::BUILTIN.len() as u8 + 1;

/// Nanoseconds between pieces an input picks from.
pub const TIME_STEPS: [u64; 4] = [1, 1_000, 1_000_000_000, 1 << 58];

impl<'a> SessionInput<'a> {
    /// Reads an input; never fails.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut h = [0u8; HEADER];
        let n = data.len().min(HEADER);
        h[..n].copy_from_slice(&data[..n]);
        let body = &data[n..];
        let c2s_len = usize::from(u16::from_le_bytes([h[6], h[7]])).min(body.len());
        let (c2s, s2c) = body.split_at(c2s_len);
        SessionInput {
            schemas: (h[0] & 7) % CHOICES,
            alltypes: h[0] & 8 != 0,
            raw: h[0] & 16 != 0,
            close_early: h[0] & 32 != 0,
            time_step: h[0] >> 6,
            turns: h[1],
            reads: [h[2], h[3], h[4], h[5]],
            c2s,
            s2c,
        }
    }

    /// The bytes [`parse`](Self::parse) reads back as this input (for making seeds). The
    /// client's stream must fit the u16 length field.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = u16::try_from(self.c2s.len()).expect("client stream under 64 KiB");
        let flags = (self.schemas % CHOICES)
            | u8::from(self.alltypes) << 3
            | u8::from(self.raw) << 4
            | u8::from(self.close_early) << 5
            | (self.time_step & 3) << 6;
        let mut out = vec![flags, self.turns];
        out.extend_from_slice(&self.reads);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.c2s);
        out.extend_from_slice(self.s2c);
        out
    }

    fn config(&self) -> SchemaConfig {
        let choice = match self.schemas.checked_sub(1) {
            Some(i) => Choice::Fixed(sets::BUILTIN[usize::from(i)].to_string()),
            None => Choice::Auto,
        };
        SchemaConfig {
            choice,
            user: if self.alltypes {
                vec![alltypes()]
            } else {
                Vec::new()
            },
            ..SchemaConfig::default()
        }
    }
}

/// The fuzz target: runs one input through the engine. Panics only on a bug (the engine
/// panicked, an event did not serialize, or the reads' sizes changed the events).
pub fn session(data: &[u8]) {
    let input = SessionInput::parse(data);
    if input.raw {
        let mut s = Session::new(input.config());
        s.start("fuzz", None);
        s.set_untimed();
        decode_pair(&mut s, CONN, "fuzz", input.c2s, input.s2c);
        Output::default().take(&mut s);
        summary(&s);
        return;
    }
    let chunked = timed(&input, &input.reads);
    // The same pieces in the same order, each stream read whole.
    let whole = timed(&input, &[0]);
    assert!(
        chunked == whole,
        "reads of {:?} changed the events:\n{}",
        input.reads,
        first_difference(&chunked, &whole)
    );
}

/// Events as the JSON Lines sink writes them (the sink adds only the version field).
#[derive(Debug, Default, PartialEq)]
struct Output {
    lines: Vec<String>,
    next_seq: u64,
}

impl Output {
    /// Drains the session's events, serializes them and checks their numbering.
    fn take(&mut self, s: &mut Session) {
        for e in s.drain() {
            assert_eq!(e.seq, self.next_seq, "events are numbered in order");
            self.next_seq += 1;
            // The text sink's rendering of values, too.
            for v in values(&e) {
                v.to_text(32);
            }
            // As the JSON Lines sink writes it (json_line panics if an event cannot be).
            let mut line = Vec::new();
            mpspy_schema::event::json_line(&e, &mut line);
            self.lines
                .push(String::from_utf8(line).expect("JSON is UTF-8"));
        }
    }
}

fn values(e: &Event) -> impl Iterator<Item = &Value> {
    let (params, results) = match &e.kind {
        EventKind::Call(c) => (Some(&c.params), None),
        EventKind::Return(r) => (None, r.results.as_ref()),
        _ => (None, None),
    };
    params.into_iter().chain(results)
}

fn first_difference(a: &Output, b: &Output) -> String {
    let i = a
        .lines
        .iter()
        .zip(&b.lines)
        .position(|(x, y)| x != y)
        .unwrap_or(a.lines.len().min(b.lines.len()));
    format!(
        "event {i}:\n  chunked: {:?}\n  whole:   {:?}",
        a.lines.get(i),
        b.lines.get(i)
    )
}

/// One direction's stream, read on demand.
struct Side<'a> {
    dir: Direction,
    bytes: &'a [u8],
    at: usize,
    splitter: Splitter,
    ready: std::collections::VecDeque<Piece>,
    done: bool,
}

impl<'a> Side<'a> {
    fn new(dir: Direction, bytes: &'a [u8]) -> Self {
        Side {
            dir,
            bytes,
            at: 0,
            splitter: Splitter::new(),
            ready: Default::default(),
            done: false,
        }
    }

    /// The next piece, reading more of the stream as needed; reads take their sizes from
    /// `reads` in turn (shared by both sides, as one relay's reads would be).
    fn next(&mut self, reads: &[u8], read_no: &mut usize) -> Option<Piece> {
        let mut out = Vec::new();
        while self.ready.is_empty() && !self.done {
            if self.at == self.bytes.len() {
                self.ready.extend(self.splitter.finish());
                self.done = true;
                break;
            }
            let n = match reads[*read_no % reads.len()] {
                0 => self.bytes.len(),
                n => usize::from(n),
            };
            *read_no += 1;
            let end = self.at + n.min(self.bytes.len() - self.at);
            self.splitter.push(&self.bytes[self.at..end], &mut out);
            self.ready.extend(out.drain(..));
            self.at = end;
        }
        self.ready.pop_front()
    }
}

/// A timed session (as a live relay or a recording feeds it): pieces are taken in the order
/// the input's turns give, each at the next tick of the input's clock, whatever `reads` are.
fn timed(input: &SessionInput<'_>, reads: &[u8]) -> Output {
    let mut s = Session::new(input.config());
    let mut out = Output::default();
    s.start("fuzz", None);
    s.apply(&Tapped::Opened {
        conn: CONN,
        t_ns: 0,
        label: "fuzz".into(),
        client: None,
        server: None,
    });
    let mut sides = [
        Side::new(Direction::ClientToServer, input.c2s),
        Side::new(Direction::ServerToClient, input.s2c),
    ];
    let step = TIME_STEPS[usize::from(input.time_step)];
    let (mut t, mut read_no, mut turn) = (0u64, 0usize, 0u32);
    let mut closed = false;
    loop {
        let first = usize::from(input.turns >> (turn % 8) & 1);
        turn = turn.wrapping_add(1);
        let mut got = None;
        for i in [first, 1 - first] {
            if let Some(p) = sides[i].next(reads, &mut read_no) {
                got = Some((i, p));
                break;
            }
        }
        t = t.saturating_add(step);
        if input.close_early && !closed && sides[0].done && sides[0].ready.is_empty() {
            s.apply(&Tapped::Closed {
                conn: CONN,
                t_ns: t,
                reason: "client stream ended".into(),
            });
            closed = true;
        }
        let Some((i, p)) = got else { break };
        s.apply(&p.tapped(CONN, sides[i].dir, t));
        out.take(&mut s);
    }
    if !closed {
        s.close(CONN, t, "end of input");
    }
    out.take(&mut s);
    summary(&s);
    out
}

/// The exit summary: the stats table reads the histograms the session folded.
fn summary(s: &Session) {
    s.stats().lock().table();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip_through_bytes() {
        let input = SessionInput {
            schemas: 4,
            alltypes: true,
            raw: false,
            close_early: true,
            time_step: 3,
            turns: 0b1010_0110,
            reads: [0, 1, 7, 255],
            c2s: b"client",
            s2c: b"server bytes",
        };
        assert_eq!(SessionInput::parse(&input.to_bytes()), input);
    }

    #[test]
    fn short_and_odd_headers_are_inputs_too() {
        for data in [&[][..], &[0xff], &[0xff; 7], &[0xff; 9]] {
            session(data);
        }
        // A client length past the end takes the whole body.
        let i = SessionInput::parse(&[0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3]);
        assert_eq!((i.c2s, i.s2c), (&[1u8, 2, 3][..], &[][..]));
        assert_eq!(SessionInput::parse(&[7]).schemas, 2);
    }
}
