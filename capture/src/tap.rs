//! The tap: what sources hand to their consumers. Relays, recordings and tests all produce
//! [`Tapped`] items; [`Session::apply`](mpspy_engine::Session::apply) turns each into events, so every
//! source goes through one decode path.
//!
//! A live tap has several consumers (the recording writer and the decoder), each with a queue
//! of its own bounded by bytes, not by items: a burst of small frames fits, and a consumer that
//! falls behind loses frames only once its budget is full, without slowing the relay or the
//! other consumers. Items are shared ([`Arc`]), never copied per consumer. A relay hands over
//! everything one read produced in one [`Tap::send_batch`]: one lock per consumer.
//!
//! Wake-ups are what a busy relay pays for most (a futex call in the pump and two context
//! switches per frame, more than decoding the frame costs), so a consumer may *linger*
//! ([`Consumer::linger`]): while traffic flows it sleeps that long between looks at its queue
//! and takes everything queued in one go, and the pumps wake it only when it is idle (the
//! first frame after a quiet spell) or when its queue passes a size that should not wait.
//! Frames carry the time the pump saw them, so lingering delays their decoding, never their
//! timestamps.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mpspy_schema::event::{ConnId, NoticeLevel};

pub use mpspy_engine::Tapped;

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

/// What one queued item costs against a consumer's budget: its bytes, plus bookkeeping.
fn cost(item: &Tapped) -> usize {
    const OVERHEAD: usize = 64;
    match item {
        Tapped::Frame { bytes, .. } => bytes.len() + OVERHEAD,
        _ => OVERHEAD,
    }
}

/// How one consumer takes its items.
#[derive(Debug, Clone, Copy)]
pub struct Consumer {
    /// Bytes of frames its queue may hold before frames are dropped for it.
    pub budget: usize,
    /// How long it may sleep between looks at its queue while traffic flows (zero: woken for
    /// every batch).
    pub linger: Duration,
}

impl Consumer {
    /// Woken for every batch (tests and tools).
    pub fn eager(budget: usize) -> Self {
        Consumer {
            budget,
            linger: Duration::ZERO,
        }
    }
}

/// The live decoder: 2 ms is far below what a person sees on the UI (drawn ten times a
/// second) or in a followed JSON log, and turns a wake-up per frame into one per 2 ms.
pub const DECODER: Consumer = Consumer {
    budget: DECODE_BUDGET,
    linger: Duration::from_millis(2),
};

/// A lingering consumer is woken early once this many bytes wait for it, so a burst is taken
/// while it is still cheap to hold.
const WAKE_BYTES: usize = 1 << 20;

/// One consumer's queue.
#[derive(Debug)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Bytes of frames it may hold.
    budget: usize,
    linger: Duration,
}

/// A queued item, or a run of drops at that place in the stream.
#[derive(Debug)]
enum Entry {
    Item(Arc<Tapped>),
    Dropped(u64),
}

/// What the consumer is doing, as far as the pumps need to know.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// Working, or already woken: no wake-up needed.
    #[default]
    Busy,
    /// Asleep for at most its linger time: wake it only for a large queue.
    Lingering,
    /// Asleep until something comes.
    Idle,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Entry>,
    bytes: usize,
    waiter: Waiter,
    /// Times a pump woke the consumer (what lingering saves).
    wakeups: u64,
    finished: bool,
    /// Frames dropped for this consumer, in all and per connection.
    dropped: u64,
    dropped_per_conn: HashMap<ConnId, u64>,
}

impl Queue {
    fn push(&self, items: &[Arc<Tapped>]) {
        let Ok(mut q) = self.state.lock() else { return };
        if q.finished {
            return;
        }
        for item in items {
            let c = cost(item);
            // Frames and bad bytes can be dropped; control items (connections opening and
            // closing, notices) are few and the state would be wrong without them.
            let droppable = matches!(**item, Tapped::Frame { .. } | Tapped::Bad { .. });
            if droppable && q.bytes + c > self.budget {
                q.dropped += 1;
                if let Tapped::Frame { conn, .. } | Tapped::Bad { conn, .. } = **item {
                    *q.dropped_per_conn.entry(conn).or_default() += 1;
                }
                // One marker per run of drops, where they happened (so at most one per kept
                // item: bounded by the budget too).
                match q.items.back_mut() {
                    Some(Entry::Dropped(n)) => *n += 1,
                    _ => q.items.push_back(Entry::Dropped(1)),
                }
                continue;
            }
            q.bytes += c;
            q.items.push_back(Entry::Item(item.clone()));
        }
        let wake = match q.waiter {
            Waiter::Busy => false,
            Waiter::Lingering => q.bytes >= WAKE_BYTES.min(self.budget / 2),
            Waiter::Idle => true,
        };
        if wake {
            q.waiter = Waiter::Busy;
            q.wakeups += 1;
            self.ready.notify_one();
        }
    }

    fn finish(&self) {
        if let Ok(mut q) = self.state.lock() {
            q.finished = true;
        }
        self.ready.notify_all();
    }
}

/// The sending end: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Tap {
    queues: Arc<[Arc<Queue>]>,
    /// Held while one batch goes into every queue, so that all consumers see the pumps'
    /// batches in one order (the recording and the live decoder must agree on it). It is held
    /// only for pushing pointers, never while a consumer works.
    order: Arc<Mutex<()>>,
    /// The session clock.
    pub clock: Clock,
}

/// The decoder's budget in live sessions: bursts of this many bytes of frames are absorbed
/// before anything is dropped from decoding (the recording has its own).
pub const DECODE_BUDGET: usize = 256 << 20;

impl Tap {
    /// A tap with one queue per consumer, and their receiving ends in the same order.
    pub fn new(clock: Clock, consumers: &[Consumer]) -> (Tap, Vec<TapReceiver>) {
        let queues: Vec<Arc<Queue>> = consumers
            .iter()
            .map(|c| {
                Arc::new(Queue {
                    state: Mutex::default(),
                    ready: Condvar::new(),
                    budget: c.budget,
                    linger: c.linger,
                })
            })
            .collect();
        let receivers = queues
            .iter()
            .map(|q| TapReceiver {
                queue: q.clone(),
                taken: VecDeque::new(),
            })
            .collect();
        (
            Tap {
                queues: queues.into(),
                order: Arc::default(),
                clock,
            },
            receivers,
        )
    }

    /// A tap with one consumer (tests, tools).
    pub fn single(clock: Clock, consumer: Consumer) -> (Tap, TapReceiver) {
        let (tap, mut rx) = Tap::new(clock, &[consumer]);
        (tap, rx.remove(0))
    }

    /// Queues one item for every consumer (see [`Tap::send_batch`]).
    pub fn send(&self, item: Tapped) {
        self.send_batch(&[Arc::new(item)]);
    }

    /// Queues items for every consumer, in order. A consumer whose budget is full drops the
    /// frames that do not fit and counts them; the relay never waits for a consumer.
    pub fn send_batch(&self, items: &[Arc<Tapped>]) {
        // A poisoned lock only means another pump panicked mid-push; order still holds.
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        for q in self.queues.iter() {
            q.push(items);
        }
    }

    /// Queues an item that must not be lost (connection open/close notices): these are never
    /// dropped, whatever the budget.
    pub fn send_control(&self, item: Tapped) {
        self.send(item);
    }

    /// Queues a notice of mpspy's own (never dropped: they are few and say what is missing).
    pub fn notice(&self, level: NoticeLevel, text: impl Into<String>) {
        self.send_control(Tapped::Notice {
            t_ns: self.clock.now_ns(),
            level,
            text: text.into(),
        });
    }

    /// Ends the session: each receiver returns `None` once everything queued before is out.
    pub fn finish(&self) {
        for q in self.queues.iter() {
            q.finish();
        }
    }

    /// Frames dropped so far, per consumer.
    pub fn dropped(&self) -> Vec<u64> {
        self.queues
            .iter()
            .map(|q| q.state.lock().map_or(0, |s| s.dropped))
            .collect()
    }
}

/// One consumer's receiving end, which turns its drops into [`Tapped::Dropped`] notices where
/// they happened in the stream.
#[derive(Debug)]
pub struct TapReceiver {
    queue: Arc<Queue>,
    /// Entries taken from the queue in one go, not yet handed out.
    taken: VecDeque<Entry>,
}

impl TapReceiver {
    /// The next item, blocking; `None` after [`Tap::finish`] once everything is out. Drops
    /// come as a [`Tapped::Dropped`] where they happened.
    pub fn recv(&mut self, clock: &Clock) -> Option<Arc<Tapped>> {
        self.recv_until(clock, None).unwrap_or(None)
    }

    /// Like [`recv`](Self::recv), but gives up after `timeout`: `Err(())` when nothing came.
    #[allow(clippy::result_unit_err)]
    pub fn recv_timeout(
        &mut self,
        clock: &Clock,
        timeout: Duration,
    ) -> Result<Option<Arc<Tapped>>, ()> {
        self.recv_until(clock, Some(Instant::now() + timeout))
    }

    /// Whether everything taken so far has been handed out: the next call looks at the queue
    /// (and may sleep), so this is the moment to flush what the consumer wrote.
    pub fn is_drained(&self) -> bool {
        self.taken.is_empty()
    }

    fn recv_until(
        &mut self,
        clock: &Clock,
        deadline: Option<Instant>,
    ) -> Result<Option<Arc<Tapped>>, ()> {
        if self.taken.is_empty() {
            self.take(deadline)?;
        }
        Ok(self.taken.pop_front().map(|entry| match entry {
            Entry::Item(item) => item,
            Entry::Dropped(count) => Arc::new(Tapped::Dropped {
                t_ns: clock.now_ns(),
                count,
            }),
        }))
    }

    /// Takes everything queued, waiting for something first if need be. Leaves `taken` empty
    /// only when the tap has finished (or on a poisoned lock).
    fn take(&mut self, deadline: Option<Instant>) -> Result<(), ()> {
        let Ok(mut q) = self.queue.state.lock() else {
            return Ok(());
        };
        // After a look that found work, linger before the next (traffic is flowing); after an
        // empty look, sleep until woken.
        let mut lingered = false;
        loop {
            if !q.items.is_empty() {
                std::mem::swap(&mut q.items, &mut self.taken);
                q.bytes = 0;
                q.waiter = Waiter::Busy;
                return Ok(());
            }
            if q.finished {
                return Ok(());
            }
            let linger = !self.queue.linger.is_zero() && !lingered;
            let wait = match (linger, deadline) {
                (true, Some(d)) => Some(
                    self.queue
                        .linger
                        .min(d.saturating_duration_since(Instant::now())),
                ),
                (true, None) => Some(self.queue.linger),
                (false, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                (false, None) => None,
            };
            if !linger && wait.is_some_and(|w| w.is_zero()) {
                q.waiter = Waiter::Busy;
                return Err(());
            }
            q.waiter = if linger {
                Waiter::Lingering
            } else {
                Waiter::Idle
            };
            q = match wait {
                None => self.queue.ready.wait(q).map_err(|_| ())?,
                Some(w) => self.queue.ready.wait_timeout(q, w).map_err(|_| ())?.0,
            };
            lingered |= linger;
        }
    }

    /// Frames this consumer lost, per connection (for the recording's interface statistics).
    pub fn dropped_per_conn(&self) -> HashMap<ConnId, u64> {
        self.queue
            .state
            .lock()
            .map(|q| q.dropped_per_conn.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpspy_schema::event::Direction;

    fn frame(conn: ConnId, len: usize) -> Tapped {
        Tapped::Frame {
            conn,
            dir: Direction::ClientToServer,
            t_ns: 0,
            offset: 0,
            bytes: vec![0; len],
        }
    }

    /// Each consumer has its own budget: a full one drops and counts, the other keeps all;
    /// control items are never dropped; drops are reported before the next item.
    #[test]
    fn budgets_are_per_consumer_and_in_bytes() {
        let clock = Clock::start();
        let (tap, mut rx) = Tap::new(clock, &[Consumer::eager(1000), Consumer::eager(1 << 20)]);
        let (mut small, mut big) = (rx.remove(0), rx.remove(0));
        for _ in 0..10 {
            tap.send(frame(3, 400));
        }
        tap.notice(NoticeLevel::Info, "kept");
        tap.finish();
        assert_eq!(tap.dropped(), vec![8, 0]);
        assert_eq!(small.dropped_per_conn(), HashMap::from([(3, 8)]));

        let mut got = Vec::new();
        while let Some(i) = small.recv(&clock) {
            got.push(i);
        }
        assert!(matches!(*got[0], Tapped::Frame { .. }));
        assert!(matches!(*got[1], Tapped::Frame { .. }));
        assert!(
            matches!(*got[2], Tapped::Dropped { count: 8, .. }),
            "{got:?}"
        );
        assert!(matches!(*got[3], Tapped::Notice { .. }));
        assert_eq!(got.len(), 4);

        let mut n = 0;
        while big.recv(&clock).is_some() {
            n += 1;
        }
        assert_eq!(n, 11);
    }

    /// Consumers share the items (no copy per consumer).
    #[test]
    fn consumers_share_items() {
        let clock = Clock::start();
        let (tap, mut rx) = Tap::new(clock, &[Consumer::eager(1 << 20), Consumer::eager(1 << 20)]);
        tap.send(frame(1, 10));
        let a = rx[0].recv(&clock).unwrap();
        let b = rx[1].recv(&clock).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    /// Pumps send from several threads at once; every consumer sees one and the same order
    /// (the recording replays to exactly the live events).
    #[test]
    fn consumers_see_concurrent_senders_in_one_order() {
        let clock = Clock::start();
        let (tap, mut rx) = Tap::new(
            clock,
            &[
                Consumer::eager(1 << 30),
                Consumer::eager(1 << 30),
                Consumer::eager(1 << 30),
            ],
        );
        let senders: Vec<_> = (0..4)
            .map(|conn| {
                let tap = tap.clone();
                std::thread::spawn(move || {
                    for len in 0..20_000 {
                        tap.send(frame(conn, len));
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        tap.finish();
        let mut orders = rx.iter_mut().map(|r| {
            let mut order = Vec::new();
            while let Some(item) = r.recv(&clock) {
                order.push(Arc::as_ptr(&item));
            }
            order
        });
        let first = orders.next().unwrap();
        assert_eq!(first.len(), 80_000);
        for other in orders {
            assert!(other == first, "consumers disagree on the order");
        }
    }

    fn state(rx: &TapReceiver) -> (Waiter, u64) {
        let q = rx.queue.state.lock().unwrap();
        (q.waiter, q.wakeups)
    }

    /// A lingering consumer is woken by the first frame after a quiet spell, then takes what
    /// came meanwhile in one go: one wake-up for a burst, not one per batch; nothing lost or
    /// reordered.
    #[test]
    fn a_lingering_consumer_is_woken_once_per_burst() {
        let clock = Clock::start();
        let lingering = Consumer {
            budget: 1 << 20,
            linger: Duration::from_millis(500),
        };
        let (tap, rx) = Tap::single(clock, lingering);
        let consumer = std::thread::spawn(move || {
            let mut rx = rx;
            let mut lens = Vec::new();
            while let Some(item) = rx.recv(&clock) {
                if let Tapped::Frame { bytes, .. } = &*item {
                    lens.push(bytes.len());
                }
            }
            (lens, rx)
        });
        // The consumer finds its queue empty, lingers once, then sleeps until woken.
        wait_until_idle(&tap);
        for len in 0..1000 {
            tap.send(frame(1, len));
        }
        tap.finish();
        let (lens, rx) = consumer.join().unwrap();
        assert_eq!(lens, (0..1000).collect::<Vec<_>>());
        let (_, wakeups) = state(&rx);
        assert!(
            (1..=3).contains(&wakeups),
            "{wakeups} wake-ups for 1000 sends"
        );
    }

    /// A queue that grows large wakes a lingering consumer before its time is up.
    #[test]
    fn a_large_queue_wakes_a_lingering_consumer() {
        let clock = Clock::start();
        let (tap, mut rx) = Tap::single(
            clock,
            Consumer {
                budget: 64 << 20,
                linger: Duration::from_secs(3600),
            },
        );
        tap.send(frame(1, 1));
        assert!(rx.recv(&clock).is_some());
        // Now it lingers: a small frame does not wake it, a megabyte does.
        let waiting = std::thread::spawn(move || {
            let got = rx.recv(&clock).map(|i| matches!(*i, Tapped::Frame { .. }));
            (got, rx)
        });
        std::thread::sleep(Duration::from_millis(50));
        tap.send(frame(1, 10));
        tap.send(frame(1, WAKE_BYTES));
        let (got, rx) = waiting.join().unwrap();
        assert_eq!(got, Some(true));
        assert_eq!(state(&rx).1, 1);
    }

    /// An eager consumer is woken for each batch it sleeps through.
    #[test]
    fn an_eager_consumer_is_woken_for_every_batch() {
        let clock = Clock::start();
        let (tap, mut rx) = Tap::single(clock, Consumer::eager(1 << 20));
        for len in 0..3 {
            let item = std::thread::scope(|s| {
                let got = s.spawn(|| rx.recv(&clock));
                wait_until_idle(&tap);
                tap.send(frame(1, len));
                got.join().unwrap()
            });
            assert!(item.is_some());
        }
        assert_eq!(state(&rx).1, 3);
    }

    fn wait_until_idle(tap: &Tap) {
        let start = Instant::now();
        while tap.queues[0].state.lock().unwrap().waiter != Waiter::Idle {
            assert!(start.elapsed() < Duration::from_secs(10), "never idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn recv_timeout_returns_when_nothing_comes_and_wakes_for_an_item() {
        let clock = Clock::start();
        let (tap, mut rx) = Tap::single(clock, Consumer::eager(1 << 20));
        assert!(rx.recv_timeout(&clock, Duration::from_millis(10)).is_err());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tap.send(frame(1, 1));
            tap
        });
        let got = rx.recv_timeout(&clock, Duration::from_secs(10));
        assert!(matches!(got, Ok(Some(_))));
        let tap = t.join().unwrap();
        tap.finish();
        assert!(matches!(
            rx.recv_timeout(&clock, Duration::from_secs(1)),
            Ok(None)
        ));
    }
}
