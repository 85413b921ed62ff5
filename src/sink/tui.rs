//! The terminal UI as a sink: events go over a bounded channel to the UI thread, which folds
//! them and draws on its own tick.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use mpspy_engine::SharedStats;
use mpspy_schema::Event;
use mpspy_tui::Feed;

use super::Sink;

/// A person at a terminal: keys come from stdin and the screen is stdout.
pub(crate) fn on_terminal() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// Events queued for the UI before the sender drops (live) or waits (replay).
const CAPACITY: usize = 16 * 1024;

/// The sending side, shared by the event sink and the program-output readers.
#[derive(Clone)]
pub(crate) struct UiSender {
    tx: SyncSender<Feed>,
    /// Live sessions never wait for the UI (the decoder feeds the recording too); a replay
    /// has no relay to protect and waits instead.
    blocking: bool,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl UiSender {
    /// A channel to the UI.
    pub(crate) fn new(blocking: bool) -> (UiSender, Receiver<Feed>) {
        let (tx, rx) = sync_channel(CAPACITY);
        let sender = UiSender {
            tx,
            blocking,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sender, rx)
    }

    /// Sends `f` even to a full channel (waiting for room): for the few items the UI cannot do
    /// without, sent before the stream starts.
    pub(crate) fn send_always(&self, f: Feed) -> Result<(), Feed> {
        self.tx.send(f).map_err(|e| e.0)
    }

    /// Sends `f`; gives it back when the UI is gone.
    pub(crate) fn send(&self, f: Feed) -> Result<(), Feed> {
        if self.blocking {
            return self.tx.send(f).map_err(|e| e.0);
        }
        match self.tx.try_send(f) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Disconnected(f)) => Err(f),
        }
    }
}

/// Events to the UI.
pub(crate) struct UiSink(pub(crate) UiSender);

impl Sink for UiSink {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        // The UI closing early is the user's choice, not an output error.
        let _ = self.0.send(Feed::Event(e.clone()));
        Ok(())
    }

    fn stats(&mut self, stats: &SharedStats) {
        // Once, before any event: the Methods screen reads the engine's own numbers.
        let _ = self.0.send_always(Feed::Stats(stats.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_live_channel_counts_drops_and_never_waits() {
        let (ui, rx) = UiSender::new(false);
        let line = |n: usize| Feed::Output {
            t_ns: 0,
            stderr: false,
            line: n.to_string(),
        };
        for n in 0..CAPACITY + 10 {
            assert!(ui.send(line(n)).is_ok());
        }
        assert_eq!(ui.dropped.load(Ordering::Relaxed), 10);
        assert_eq!(rx.try_iter().count(), CAPACITY);
        // Once the UI is gone the item comes back, so output can go to stderr instead.
        drop(rx);
        assert!(matches!(ui.send(line(0)), Err(Feed::Output { .. })));
        assert_eq!(ui.dropped.load(Ordering::Relaxed), 10);
    }
}
