//! What sources hand to the engine: connections opening and closing, frames, bytes that could
//! not be framed, and mpspy's own notices. Live relays, recordings and tests all produce these,
//! so every source goes through [`Session::apply`](crate::Session::apply).

use mpspy_schema::event::{ConnId, Direction, Fault, NoticeLevel, Peer};

/// One thing a source saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Tapped {
    /// A connection appeared.
    Opened {
        /// Connection number.
        conn: ConnId,
        /// Time since the session start.
        t_ns: u64,
        /// Human label.
        label: String,
        /// The client process, when known.
        client: Option<Peer>,
        /// The server process, when known.
        server: Option<Peer>,
    },
    /// One complete frame.
    Frame {
        /// Connection number.
        conn: ConnId,
        /// Direction.
        dir: Direction,
        /// When its last byte arrived, since the session start.
        t_ns: u64,
        /// Stream offset of its first byte.
        offset: u64,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// Bytes that could not be framed.
    Bad {
        /// Connection number.
        conn: ConnId,
        /// Direction.
        dir: Direction,
        /// When they arrived.
        t_ns: u64,
        /// What was wrong.
        bad: BadBytes,
    },
    /// A connection ended.
    Closed {
        /// Connection number.
        conn: ConnId,
        /// When.
        t_ns: u64,
        /// Why.
        reason: String,
    },
    /// A notice of mpspy's own (see [`EventKind::Notice`](mpspy_schema::EventKind::Notice)).
    Notice {
        /// When.
        t_ns: u64,
        /// How much it matters.
        level: NoticeLevel,
        /// The notice.
        text: String,
    },
    /// A fault mpspy injected into a connection (`--inject`). When mpspy answered a call itself,
    /// `frame` is the message it sent the caller in its place (a `Return` carrying the
    /// exception): it is decoded as a frame in the direction opposite to `dir`, right after
    /// the fault, so the call pairs with the answer the caller really received.
    Injected {
        /// Connection number.
        conn: ConnId,
        /// The direction of the call it concerns (the caller's), or client→server for a
        /// connection-wide fault.
        dir: Direction,
        /// When.
        t_ns: u64,
        /// What was done.
        fault: Fault,
        /// The frame mpspy sent the caller, when it answered in the callee's place.
        frame: Option<Vec<u8>>,
    },
    /// Items were dropped because the decoder fell behind.
    Dropped {
        /// When this was noticed.
        t_ns: u64,
        /// Dropped since the previous notice.
        count: u64,
    },
}

impl Tapped {
    /// When it happened, on the session's clock.
    pub fn t_ns(&self) -> u64 {
        match self {
            Tapped::Opened { t_ns, .. }
            | Tapped::Frame { t_ns, .. }
            | Tapped::Bad { t_ns, .. }
            | Tapped::Closed { t_ns, .. }
            | Tapped::Notice { t_ns, .. }
            | Tapped::Injected { t_ns, .. }
            | Tapped::Dropped { t_ns, .. } => *t_ns,
        }
    }

    /// Its time, to be changed.
    pub fn t_ns_mut(&mut self) -> &mut u64 {
        match self {
            Tapped::Opened { t_ns, .. }
            | Tapped::Frame { t_ns, .. }
            | Tapped::Bad { t_ns, .. }
            | Tapped::Closed { t_ns, .. }
            | Tapped::Notice { t_ns, .. }
            | Tapped::Injected { t_ns, .. }
            | Tapped::Dropped { t_ns, .. } => t_ns,
        }
    }
}

/// Bytes that could not be decoded, as the source saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBytes {
    /// Stream offset of the first bad byte.
    pub offset: u64,
    /// How many bytes.
    pub len: usize,
    /// Why.
    pub reason: String,
    /// An excerpt in hex.
    pub hex: String,
    /// True when the direction is no longer decoded.
    pub stopped: bool,
}
