//! Sources that are not live sockets: a pair of one-direction raw streams (the form of
//! `socat`/`strace` dumps and of mpspy's test captures).
//!
//! Raw streams carry no timestamps, so the two directions are interleaved causally: a message
//! is taken only once what it refers to has been seen (a Return after its Call, a call on an
//! import after the export, a reused question id after the old question returned). When both
//! sides are ready the side that was being read continues, which keeps batched writes together.

use std::collections::{HashMap, HashSet};

use mpspy_schema::event::{ConnId, Direction, Peer};
use mpspy_schema::rpc::{self, CapDescriptor, MessageTarget, Outcome, Rpc};
use mpspy_schema::wire::Message;

use crate::framing::{Piece, split_all};
use crate::{BadBytes, Session};

/// What a frame refers to and introduces, for ordering.
#[derive(Debug, Default, Clone)]
struct Deps {
    /// Question this message asks (Call/Bootstrap), by the sender.
    asks: Option<u32>,
    /// Question of the other side this message answers.
    answers: Option<u32>,
    /// Own question this finishes.
    finishes: Option<u32>,
    /// Own questions whose answers this message pipelines on.
    promised: Vec<u32>,
    /// Exports of the other side this message uses.
    imports: Vec<u32>,
    /// Exports of the sender this message introduces (or adds a reference to).
    exports: Vec<u32>,
    /// Exports of the other side this message releases, with counts.
    releases: Vec<(u32, u32)>,
    /// Abort: taken last.
    abort: bool,
}

fn deps(bytes: &[u8]) -> Deps {
    let mut d = Deps::default();
    let Ok((m, _)) = Message::parse(bytes) else {
        return d;
    };
    let Ok(r) = rpc::decode(&m) else {
        return d;
    };
    let table = |t: &[CapDescriptor], d: &mut Deps| {
        for c in t {
            match c {
                CapDescriptor::SenderHosted(i) | CapDescriptor::SenderPromise(i) => {
                    d.exports.push(*i)
                }
                CapDescriptor::ReceiverHosted(i) => d.imports.push(*i),
                CapDescriptor::ReceiverAnswer(pa) => d.promised.push(pa.question),
                _ => {}
            }
        }
    };
    match r {
        Rpc::Bootstrap { question } => d.asks = Some(question),
        Rpc::Call(c) => {
            d.asks = Some(c.question);
            match c.target {
                MessageTarget::ImportedCap(i) => d.imports.push(i),
                MessageTarget::PromisedAnswer(pa) => d.promised.push(pa.question),
                MessageTarget::Unknown(_) => {}
            }
            table(&c.params.cap_table, &mut d);
        }
        Rpc::Return(r) => {
            d.answers = Some(r.answer);
            if let Outcome::Results(p) = &r.outcome {
                table(&p.cap_table, &mut d);
            }
        }
        Rpc::Finish { question, .. } => d.finishes = Some(question),
        Rpc::Release { id, count } => {
            d.imports.push(id);
            d.releases.push((id, count));
        }
        Rpc::Abort(_) => d.abort = true,
        _ => {}
    }
    d
}

/// What one side has done so far, as far as ordering needs to know.
#[derive(Debug, Default)]
struct SideSeen {
    /// Questions asked and not yet answered.
    outstanding: HashSet<u32>,
    /// Questions answered (and not yet reused).
    answered: HashSet<u32>,
    /// Exports introduced and not yet fully released, with reference counts.
    exports: HashMap<u32, u32>,
}

fn ready(d: &Deps, me: &SideSeen, other: &SideSeen, other_left: bool) -> bool {
    if d.abort {
        return !other_left;
    }
    if let Some(q) = d.asks
        && me.outstanding.contains(&q)
    {
        return false;
    }
    if let Some(a) = d.answers
        && !other.outstanding.contains(&a)
    {
        return false;
    }
    if let Some(q) = d.finishes
        && !me.answered.contains(&q)
    {
        return false;
    }
    d.promised
        .iter()
        .all(|q| me.outstanding.contains(q) || me.answered.contains(q))
        && d.imports.iter().all(|i| other.exports.contains_key(i))
}

fn apply(d: &Deps, me: &mut SideSeen, other: &mut SideSeen) {
    if let Some(q) = d.asks {
        me.answered.remove(&q);
        me.outstanding.insert(q);
    }
    if let Some(a) = d.answers {
        other.outstanding.remove(&a);
        other.answered.insert(a);
    }
    for e in &d.exports {
        *me.exports.entry(*e).or_default() += 1;
    }
    for (id, count) in &d.releases {
        if let Some(refs) = other.exports.get_mut(id) {
            *refs = refs.saturating_sub(*count);
            if *refs == 0 {
                other.exports.remove(id);
            }
        }
    }
}

/// Decodes a pair of one-direction streams into `session` as connection `conn`: `c2s` is what
/// the client (the side that sends Bootstrap) wrote, `s2c` what the server wrote.
pub fn decode_pair(session: &mut Session, conn: ConnId, label: &str, c2s: &[u8], s2c: &[u8]) {
    session.open(conn, 0, label, None::<Peer>, None::<Peer>);
    let sides = [split_all(c2s), split_all(s2c)];
    let dirs = [Direction::ClientToServer, Direction::ServerToClient];
    let deps: [Vec<Deps>; 2] = [
        sides[0].iter().map(piece_deps).collect(),
        sides[1].iter().map(piece_deps).collect(),
    ];
    let mut next = [0usize, 0usize];
    let mut seen = [SideSeen::default(), SideSeen::default()];
    let mut current = 0usize;
    while next[0] < sides[0].len() || next[1] < sides[1].len() {
        let is_ready = |s: usize, seen: &[SideSeen; 2]| {
            next[s] < sides[s].len()
                && ready(
                    &deps[s][next[s]],
                    &seen[s],
                    &seen[1 - s],
                    next[1 - s] < sides[1 - s].len(),
                )
        };
        let answers = |s: usize| next[s] < sides[s].len() && deps[s][next[s]].answers.is_some();
        // A message pipelined on a question still unanswered was written before that answer
        // arrived (why else pipeline), so it goes first.
        let pipelined = |s: usize, seen: &[SideSeen; 2]| {
            next[s] < sides[s].len()
                && deps[s][next[s]]
                    .promised
                    .iter()
                    .any(|q| seen[s].outstanding.contains(q))
        };
        // Otherwise a Return goes out as soon as the call is done, so a ready Return is taken
        // before more calls of the other side, and failing that the side being read continues.
        let pick = if is_ready(1 - current, &seen)
            && answers(1 - current)
            && !answers(current)
            && !pipelined(current, &seen)
        {
            1 - current
        } else if is_ready(current, &seen) {
            current
        } else if is_ready(1 - current, &seen) {
            1 - current
        } else if next[current] < sides[current].len() {
            // Nothing is causally ready (a capture that starts mid-session, or a peer that
            // broke the protocol): keep reading in order rather than stall.
            current
        } else {
            1 - current
        };
        let d = &deps[pick][next[pick]];
        let (a, b) = seen.split_at_mut(1);
        if pick == 0 {
            apply(d, &mut a[0], &mut b[0]);
        } else {
            apply(d, &mut b[0], &mut a[0]);
        }
        feed(session, conn, dirs[pick], &sides[pick][next[pick]]);
        next[pick] += 1;
        current = pick;
    }
    session.close(conn, 0, "end of capture");
}

fn piece_deps(p: &Piece) -> Deps {
    match p {
        Piece::Frame { bytes, .. } => deps(bytes),
        Piece::Bad { .. } => Deps::default(),
    }
}

fn feed(session: &mut Session, conn: ConnId, dir: Direction, p: &Piece) {
    match p {
        Piece::Frame { offset, bytes } => session.frame(conn, dir, 0, *offset, bytes),
        Piece::Bad {
            offset,
            len,
            reason,
            hex,
            stopped,
        } => session.undecodable(
            conn,
            dir,
            0,
            BadBytes {
                offset: *offset,
                len: *len,
                reason: reason.clone(),
                hex: hex.clone(),
                stopped: *stopped,
            },
        ),
    }
}
