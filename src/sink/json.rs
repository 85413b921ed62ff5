//! JSON Lines: one event per line, in a versioned envelope. The format is documented field by
//! field in `docs/json-lines.md`; treat that as a contract.

use std::io::{self, Write};
use std::sync::Arc;

use mpspy_schema::Event;
use mpspy_schema::event::json_line;

use super::Sink;

/// Writes events as JSON Lines.
pub(crate) struct JsonLines<W: Write> {
    out: W,
    /// The line being written, reused.
    line: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub(crate) fn new(out: W) -> Self {
        JsonLines {
            out,
            line: Vec::with_capacity(4096),
        }
    }
}

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        self.line.clear();
        json_line(e, &mut self.line);
        self.out.write_all(&self.line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
