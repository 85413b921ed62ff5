//! Sinks: where events go. Each is a plain synchronous consumer generic over `io::Write`, so
//! tests write into a `Vec<u8>` (ripgrep's printer pattern).

use std::io;

use mpspy_schema::Event;

pub(crate) mod json;
pub(crate) mod text;
pub(crate) mod tui;

/// A consumer of events.
pub(crate) trait Sink {
    /// One event.
    fn event(&mut self, e: &Event) -> io::Result<()>;
    /// The stream ended.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}
