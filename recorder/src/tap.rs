//! The tap: what sources hand to the decoder. Relays, recordings and tests all produce
//! [`Tapped`] items; [`Session::apply`](crate::Session::apply) turns each into events, so every
//! source goes through one decode path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mpspy_schema::event::{ConnId, Direction, NoticeLevel, Peer};

use crate::state::BadBytes;

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
    /// Items were dropped because the decoder fell behind.
    Dropped {
        /// When this was noticed.
        t_ns: u64,
        /// Dropped since the previous notice.
        count: u64,
    },
}

/// Session time: nanoseconds since a start instant, with the wall clock of that start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    /// Unix time of the start, in nanoseconds.
    pub start_unix_ns: u64,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
            start_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }

    /// The instant session time counts from.
    pub fn origin(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// The sending end: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Tap {
    // `None` marks the end of the session: accept threads never exit, so the channel would
    // never disconnect on its own.
    tx: SyncSender<Option<Tapped>>,
    dropped: Arc<AtomicU64>,
    /// The session clock.
    pub clock: Clock,
}

impl Tap {
    /// A tap with room for `capacity` queued items, and its receiving end.
    pub fn new(capacity: usize, clock: Clock) -> (Tap, TapReceiver) {
        let (tx, rx) = sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Tap {
                tx,
                dropped: dropped.clone(),
                clock,
            },
            TapReceiver {
                rx,
                dropped,
                reported: 0,
                pending: None,
            },
        )
    }

    /// Queues an item; if the decoder is behind, drops it and counts the drop. The relay must
    /// never wait for a consumer.
    pub fn send(&self, item: Tapped) {
        match self.tx.try_send(Some(item)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The decoder is gone (shutting down); nothing left to count for.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Queues an item that must not be lost (connection open/close notices): these are rare,
    /// and losing one would leave the state wrong for the rest of the session.
    pub fn send_control(&self, item: Tapped) {
        let _ = self.tx.send(Some(item));
    }

    /// Queues a notice of mpspy's own (never dropped: they are few and say what is missing).
    pub fn notice(&self, level: NoticeLevel, text: impl Into<String>) {
        self.send_control(Tapped::Notice {
            t_ns: self.clock.now_ns(),
            level,
            text: text.into(),
        });
    }

    /// Ends the session: the receiver returns `None` once everything queued before is out.
    pub fn finish(&self) {
        let _ = self.tx.send(None);
    }

    /// Items dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The receiving end, which turns the drop counter into [`Tapped::Dropped`] notices in order.
#[derive(Debug)]
pub struct TapReceiver {
    rx: Receiver<Option<Tapped>>,
    dropped: Arc<AtomicU64>,
    reported: u64,
    pending: Option<Tapped>,
}

impl TapReceiver {
    /// The next item, blocking; `None` after [`Tap::finish`] or once every sender is gone.
    /// A drop notice comes before the item that follows the drops.
    pub fn recv(&mut self, clock: &Clock) -> Option<Tapped> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        let item = self.rx.recv().ok().flatten();
        match self.drop_notice(clock) {
            Some(d) => {
                // Report the drops first; the item is handed out on the next call.
                self.pending = item;
                Some(d)
            }
            None => item,
        }
    }

    fn drop_notice(&mut self, clock: &Clock) -> Option<Tapped> {
        let now = self.dropped.load(Ordering::Relaxed);
        (now > self.reported).then(|| {
            let count = now - self.reported;
            self.reported = now;
            Tapped::Dropped {
                t_ns: clock.now_ns(),
                count,
            }
        })
    }
}
