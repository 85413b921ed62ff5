//! The decode loop every source shares: items into the engine, its events out to every sink
//! (each event shared, not copied per sink), and the engine's per-method stats for the summary. (A live recording is written beside it, from the tap: see
//! [`mpspy_capture::record::record_live`].)

use std::fs::File;
use std::io::{self, BufWriter};
use std::sync::Arc;

use anyhow::{Context, Result};
use mpspy_capture::record::RecordSummary;
use mpspy_engine::Session;
use mpspy_engine::SharedStats;
use mpspy_engine::Tapped;
use mpspy_schema::event::NoticeLevel;
use mpspy_schema::{Event, EventKind};

use crate::sink::Sink;
use crate::sink::json::JsonLines;
use crate::sink::text::TextLines;

/// Buffer of each output: a live session writes it out once per batch of frames (see
/// [`Outputs::flush`]), a replay whenever it fills, so one write takes hundreds of lines.
const OUT_BUF: usize = 64 << 10;

/// Where events go.
pub(crate) struct Outputs {
    sinks: Vec<Box<dyn Sink + Send>>,
    /// The live recording's file, when there is one: what to replay for what decoding dropped.
    pub(crate) recording: Option<String>,
    /// How the live recording went, once it is done.
    pub(crate) recorded: Option<RecordSummary>,
    /// The engine's per-method statistics of everything decoded (set by [`Outputs::start`]).
    pub(crate) stats: SharedStats,
    /// Events dropped because the decoder fell behind.
    pub(crate) dropped: u64,
    /// First sink or recording error; the session goes on without that output.
    pub(crate) error: Option<anyhow::Error>,
    /// With `--check`: the session's lints and stuck calls.
    pub(crate) findings: Option<crate::sink::findings::Findings>,
    /// What closed connections left behind (unanswered calls, objects never destroyed), in
    /// plain words, for the end-of-run summary: `#conn label: sentence`.
    pub(crate) left: Vec<String>,
    /// With `--otlp`: where the spans went.
    pub(crate) otlp: Option<Arc<crate::sink::otlp::OtlpStats>>,
    /// With `--inject`: the rules, and the faults injected so far by kind, for the summary.
    pub(crate) injecting: Option<String>,
    pub(crate) injected: std::collections::BTreeMap<&'static str, u64>,
    /// Labels of the open connections, for [`Outputs::left`].
    labels: std::collections::HashMap<mpspy_schema::event::ConnId, String>,
}

impl Outputs {
    pub(crate) fn new() -> Self {
        Outputs {
            sinks: Vec::new(),
            recording: None,
            recorded: None,
            stats: SharedStats::default(),
            dropped: 0,
            error: None,
            findings: None,
            left: Vec::new(),
            otlp: None,
            injecting: None,
            injected: std::collections::BTreeMap::new(),
            labels: Default::default(),
        }
    }

    /// `--json FILE|-` (written out at every [`Outputs::flush`] and at the end).
    pub(crate) fn json(&mut self, target: &str) -> Result<()> {
        let out: Box<dyn io::Write + Send> = if target == "-" {
            Box::new(BufWriter::with_capacity(OUT_BUF, io::stdout()))
        } else {
            let f = File::create(target).with_context(|| format!("--json {target}"))?;
            Box::new(BufWriter::with_capacity(OUT_BUF, f))
        };
        self.sinks.push(Box::new(JsonLines::new(out)));
        Ok(())
    }

    /// `--trace-out FILE` / `mpspy export`: the Chrome / Perfetto timeline (`-`: stdout).
    pub(crate) fn trace(&mut self, target: &str, flag: &str) -> Result<()> {
        let out: Box<dyn io::Write + Send> = if target == "-" {
            Box::new(BufWriter::with_capacity(OUT_BUF, io::stdout()))
        } else {
            let f = File::create(target).with_context(|| format!("{flag} {target}"))?;
            Box::new(BufWriter::with_capacity(OUT_BUF, f))
        };
        self.sinks
            .push(Box::new(crate::sink::trace::ChromeTrace::new(out)));
        Ok(())
    }

    /// `--otlp URL`: every call as a span to an OpenTelemetry collector.
    pub(crate) fn otlp(&mut self, url: &str) -> Result<()> {
        let (sink, stats) =
            crate::sink::otlp::OtlpSink::start(url).map_err(|e| anyhow::anyhow!("--otlp: {e}"))?;
        self.sinks.push(Box::new(sink));
        self.otlp = Some(stats);
        Ok(())
    }

    /// Any other sink.
    pub(crate) fn add(&mut self, sink: Box<dyn Sink + Send>) {
        self.sinks.push(sink);
    }

    /// Readable lines on stderr (`brief`: only calls, returns, releases, connections, problems),
    /// written out at every [`Outputs::flush`]: one write per batch, not per line.
    pub(crate) fn text_stderr(&mut self, brief: bool) {
        self.sinks.push(Box::new(
            TextLines::new(BufWriter::with_capacity(OUT_BUF, io::stderr()), true).brief(brief),
        ));
    }

    /// Readable lines on stdout (replay without --json).
    pub(crate) fn text_stdout(&mut self) {
        self.sinks.push(Box::new(TextLines::new(
            BufWriter::with_capacity(OUT_BUF, io::stdout()),
            true,
        )));
    }

    /// Starts `session` (its header event) and takes its statistics; every sink that shows
    /// them gets the same handle.
    pub(crate) fn start(
        &mut self,
        session: &mut Session,
        source: &str,
        start_unix_ns: Option<u64>,
    ) {
        self.stats = session.stats();
        for s in &mut self.sinks {
            s.stats(&self.stats);
        }
        session.start(source, start_unix_ns);
        self.take(session);
    }

    /// Decodes `item` and sends the events to every sink.
    pub(crate) fn item(&mut self, session: &mut Session, item: &Tapped) {
        let first_drop = matches!(item, Tapped::Dropped { .. }) && self.dropped == 0;
        session.apply(item);
        self.take(session);
        // Said once, where it first happens (the UI shows it in its log): the recording, which
        // is written from the capture side, has what decoding missed.
        if first_drop && let Some(file) = &self.recording {
            session.apply(&Tapped::Notice {
                t_ns: item.t_ns(),
                level: NoticeLevel::Warning,
                text: format!(
                    "decoding fell behind and dropped events; the recording has every frame: mpspy replay {file}"
                ),
            });
            self.take(session);
        }
    }

    /// Lets the engine look at the clock (`now_ns`, session time) for stuck calls when no frame
    /// has come for a while.
    pub(crate) fn tick(&mut self, session: &mut Session, now_ns: u64) {
        session.tick(now_ns);
        self.take(session);
    }

    /// Has the engine write a snapshot of every pending call (SIGUSR1).
    pub(crate) fn snapshot(&mut self, session: &mut Session, now_ns: u64) {
        session.snapshot(now_ns);
        self.take(session);
    }

    /// Sends what the engine has emitted to every sink.
    fn take(&mut self, session: &mut Session) {
        for e in session.drain() {
            self.event(e);
        }
    }

    /// Sends one event to every sink.
    pub(crate) fn event(&mut self, e: Event) {
        match &e.kind {
            EventKind::Dropped { count, .. } => self.dropped += count,
            EventKind::Injected { fault, .. } => {
                *self.injected.entry(fault.kind.as_str()).or_default() += 1;
            }
            EventKind::ConnOpened { label, .. } => {
                self.labels.insert(e.conn, label.clone());
            }
            EventKind::ConnClosed {
                reason,
                pending_calls,
                live_caps,
            } => {
                let label = self.labels.remove(&e.conn).unwrap_or_default();
                if let Some(left) =
                    mpspy_engine::left::left_behind(reason, pending_calls, live_caps)
                {
                    self.left.push(format!("#{} {label}: {left}", e.conn));
                }
            }
            _ => {}
        }
        let e = Arc::new(e);
        let mut failed = None;
        for (i, s) in self.sinks.iter_mut().enumerate() {
            if let Err(err) = s.event(&e) {
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

    /// Writes out what the sinks buffered: the decoder calls it whenever it has handled
    /// everything it took from its queue, so a live reader is never more than a batch behind.
    pub(crate) fn flush(&mut self) {
        for s in &mut self.sinks {
            let _ = s.flush();
        }
    }

    /// Flushes every sink.
    pub(crate) fn finish(&mut self) {
        for s in &mut self.sinks {
            let _ = s.finish();
        }
    }
}
