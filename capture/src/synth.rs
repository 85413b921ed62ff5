//! Long sessions for benchmarks and soak runs, made of a real one.
//!
//! The shipped demo recording (`samples/demo.pcapng`: the test peer, which matches bitcoin-node
//! message for message, and a libmultiprocess-style client) makes three `Echo.echo` calls in a
//! row. A libmultiprocess client reuses its question id and its callback `Thread` export id
//! from one call to the next, so the frames of one call (the Call, the server's Release of the
//! callback Thread, the Return) repeat byte for byte. [`echo_session`] plays the
//! recording with that one call repeated as often as asked: the wire is the real one, only
//! longer, and it decodes to that many paired calls.

use std::sync::Arc;

use mpspy_schema::event::Direction;

use crate::record;
use crate::tap::Tapped;

/// The demo recording the session is made of.
const DEMO: &[u8] = include_bytes!("../../samples/demo.pcapng");

/// The payload of the demo's echo calls: a frame holding it starts one call.
const MARK: &[u8] = b"hello from the demo";

/// The recording's first connection split around its first `Echo.echo` call.
struct Parts {
    /// Up to the first echo call (the connection opening, bootstrap, construct, makeEcho).
    head: Vec<Tapped>,
    /// The frames of one echo call, from its Call to the next call's.
    call: Vec<Tapped>,
    /// From the second echo call to the end (two more echoes, Mining, Rpc, the close).
    tail: Vec<Tapped>,
    /// Time from one call to the next.
    span_ns: u64,
}

fn parts() -> Parts {
    let mut items = Vec::new();
    record::read(DEMO, |t| items.push(t)).expect("the shipped demo recording reads");
    let first_conn = items
        .iter()
        .find_map(|t| match t {
            Tapped::Opened { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("the demo recording has a connection");
    items.retain(|t| match t {
        Tapped::Opened { conn, .. }
        | Tapped::Frame { conn, .. }
        | Tapped::Bad { conn, .. }
        | Tapped::Closed { conn, .. } => *conn == first_conn,
        _ => false,
    });
    let starts: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            matches!(t, Tapped::Frame { dir: Direction::ClientToServer, bytes, .. }
                if bytes.windows(MARK.len()).any(|w| w == MARK))
        })
        .map(|(i, _)| i)
        .collect();
    let (a, b) = (starts[0], starts[1]);
    let span_ns = items[b].t_ns() - items[a].t_ns();
    let tail = items.split_off(b);
    let call = items.split_off(a);
    Parts {
        head: items,
        call,
        tail,
        span_ns,
    }
}

/// Frames of one repeated call (for sizing a session).
pub fn frames_per_call() -> usize {
    parts().call.len()
}

/// The demo session's first connection with its first `Echo.echo` call made `calls` times
/// (at least once), followed by the rest of the session: `calls + 2` echo calls in all, every
/// one paired with its return. Times advance by the recorded time between calls, and stream
/// offsets stay contiguous per direction, as a relay would have seen them.
pub fn echo_session(calls: usize) -> impl Iterator<Item = Tapped> {
    let Parts {
        head,
        call,
        tail,
        span_ns,
    } = parts();
    let head_len = head.len();
    let call = Arc::new(call);
    let repeated = (0..calls.max(1)).flat_map(move |i| {
        let call = call.clone();
        (0..call.len()).map(move |j| shifted(&call[j], i as u64 * span_ns))
    });
    let tail_shift = (calls.max(1) as u64 - 1) * span_ns;
    let mut offsets = [0u64; 2];
    head.into_iter()
        .chain(repeated)
        .chain(tail.into_iter().map(move |t| shifted(&t, tail_shift)))
        .enumerate()
        .map(move |(i, mut t)| {
            if let Tapped::Frame {
                dir, offset, bytes, ..
            } = &mut t
            {
                let d = usize::from(*dir == Direction::ServerToClient);
                // The head keeps its recorded offsets; from there on they are running sums.
                if i >= head_len {
                    *offset = offsets[d];
                }
                offsets[d] = *offset + bytes.len() as u64;
            }
            t
        })
}

fn shifted(t: &Tapped, by: u64) -> Tapped {
    let mut t = t.clone();
    *t.t_ns_mut() += by;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpspy_engine::{SchemaConfig, Session};
    use mpspy_schema::EventKind;

    /// The long session decodes cleanly to as many paired echo calls as asked (plus the two
    /// the demo makes after the first), in time order.
    #[test]
    fn a_long_echo_session_decodes_to_that_many_paired_calls() {
        assert_eq!(
            frames_per_call(),
            3,
            "Call, the Release of its callback Thread, Return"
        );
        let mut session = Session::new(SchemaConfig::default());
        let mut last_t = 0;
        let (mut calls, mut returns) = (0, 0);
        for item in echo_session(1000) {
            assert!(item.t_ns() >= last_t, "time goes forward");
            last_t = item.t_ns();
            session.apply(&item);
            for e in session.drain() {
                match &e.kind {
                    EventKind::Call(c) if c.method == "echo" => calls += 1,
                    EventKind::Return(r) if r.method == "echo" => {
                        assert!(r.call_seq.is_some(), "paired");
                        returns += 1;
                    }
                    EventKind::Undecodable { .. } | EventKind::SchemaMismatch { .. } => {
                        panic!("{e:?}")
                    }
                    _ => {}
                }
            }
        }
        assert_eq!((calls, returns), (1002, 1002));
    }
}
