//! JSON Lines: one event per line, in a versioned envelope. The format is documented field by
//! field in `docs/json-lines.md`; treat that as a contract.

use std::io::{self, Write};
use std::sync::Arc;

use mpspy_schema::Event;
use mpspy_schema::event::JSON_VERSION;
use serde::Serialize;

use super::Sink;

/// Writes events as JSON Lines.
pub(crate) struct JsonLines<W: Write> {
    out: W,
    /// Flush after every line (live sessions: `tail -f` works and a crash loses nothing).
    line_flush: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    #[serde(flatten)]
    event: &'a Event,
}

impl<W: Write> JsonLines<W> {
    pub(crate) fn new(out: W) -> Self {
        JsonLines {
            out,
            line_flush: false,
        }
    }

    pub(crate) fn line_flushed(mut self) -> Self {
        self.line_flush = true;
        self
    }
}

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        serde_json::to_writer(
            &mut self.out,
            &Line {
                v: JSON_VERSION,
                event: e,
            },
        )?;
        self.out.write_all(b"\n")?;
        if self.line_flush {
            self.out.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
