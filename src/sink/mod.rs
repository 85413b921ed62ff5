//! Sinks: where events go. Each is a plain synchronous consumer generic over `io::Write`, so
//! tests write into a `Vec<u8>` (ripgrep's printer pattern).

use std::io;
use std::sync::Arc;

use mpspy_engine::SharedStats;
use mpspy_schema::Event;

pub(crate) mod findings;
pub(crate) mod json;
pub(crate) mod metrics;
pub(crate) mod otlp;
pub(crate) mod text;
pub(crate) mod trace;
pub(crate) mod tui;

/// A consumer of events.
pub(crate) trait Sink {
    /// One event, shared with the other sinks (a sink that keeps it clones the `Arc`).
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()>;
    /// The engine's statistics for this session, given once at its start (for sinks that show
    /// them while it runs).
    fn stats(&mut self, _stats: &SharedStats) {}
    /// Everything queued so far has been handed over: write out what is buffered, so a
    /// reader following the output sees it (live sessions flush once per batch of frames,
    /// not once per event).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The stream ended.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}
