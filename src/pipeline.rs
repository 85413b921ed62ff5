//! The decode loop every source shares: items in, events out to every sink, raw frames to the
//! recording, and the per-method stats folded on the way.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use anyhow::{Context, Result};
use mpspy_recorder::Session;
use mpspy_recorder::record::Recorder;
use mpspy_recorder::tap::Tapped;
use mpspy_schema::stats::Stats;
use mpspy_schema::{Event, EventKind};

use crate::sink::Sink;
use crate::sink::json::JsonLines;
use crate::sink::text::TextLines;

/// Where events go.
pub(crate) struct Outputs {
    sinks: Vec<Box<dyn Sink + Send>>,
    recorder: Option<Recorder<File>>,
    /// Per-method statistics of everything seen.
    pub(crate) stats: Stats,
    /// Events dropped because the decoder fell behind.
    pub(crate) dropped: u64,
    /// First sink or recording error; the session goes on without that output.
    pub(crate) error: Option<anyhow::Error>,
}

impl Outputs {
    pub(crate) fn new() -> Self {
        Outputs {
            sinks: Vec::new(),
            recorder: None,
            stats: Stats::default(),
            dropped: 0,
            error: None,
        }
    }

    /// `--json FILE|-`; `live` flushes every line.
    pub(crate) fn json(&mut self, target: &str, live: bool) -> Result<()> {
        let out: Box<dyn io::Write + Send> = if target == "-" {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            let f = File::create(target).with_context(|| format!("--json {target}"))?;
            Box::new(BufWriter::new(f))
        };
        let sink = JsonLines::new(out);
        self.sinks
            .push(Box::new(if live { sink.line_flushed() } else { sink }));
        Ok(())
    }

    /// Any other sink.
    pub(crate) fn add(&mut self, sink: Box<dyn Sink + Send>) {
        self.sinks.push(sink);
    }

    /// Readable lines on stderr (`brief`: only calls, returns, releases, connections, problems).
    pub(crate) fn text_stderr(&mut self, brief: bool) {
        self.sinks
            .push(Box::new(TextLines::new(io::stderr(), true).brief(brief)));
    }

    /// Readable lines on stdout (replay without --json).
    pub(crate) fn text_stdout(&mut self) {
        self.sinks
            .push(Box::new(TextLines::new(BufWriter::new(io::stdout()), true)));
    }

    /// `--record FILE`: created now, so a bad path fails before anything starts.
    pub(crate) fn record(&mut self, path: &Path, schemas: &str, start_unix_ns: u64) -> Result<()> {
        let r = Recorder::create(path, schemas, start_unix_ns)
            .with_context(|| format!("--record {}", path.display()))?;
        self.recorder = Some(r);
        Ok(())
    }

    /// Records `item` (if recording), decodes it, and sends the events to every sink.
    pub(crate) fn item(&mut self, session: &mut Session, item: &Tapped) {
        if let Some(r) = &mut self.recorder
            && let Err(e) = r.write(item)
        {
            self.error
                .get_or_insert(anyhow::Error::new(e).context("recording"));
            self.recorder = None;
        }
        session.apply(item);
        for e in session.drain() {
            self.event(&e);
        }
    }

    /// Sends one event to every sink.
    pub(crate) fn event(&mut self, e: &Event) {
        if let EventKind::Dropped { count, .. } = e.kind {
            self.dropped += count;
        }
        self.stats.fold(e);
        let mut failed = None;
        for (i, s) in self.sinks.iter_mut().enumerate() {
            if let Err(err) = s.event(e) {
                failed = Some((i, err));
                break;
            }
        }
        if let Some((i, err)) = failed {
            self.sinks.remove(i);
            if err.kind() != io::ErrorKind::BrokenPipe {
                self.error
                    .get_or_insert(anyhow::Error::new(err).context("writing events"));
            }
        }
    }

    /// Flushes every sink.
    pub(crate) fn finish(&mut self) {
        for s in &mut self.sinks {
            let _ = s.finish();
        }
    }
}
