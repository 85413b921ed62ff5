//! Findings: the lints and stuck calls of a session, for `mpspy check FILE…` and
//! `mpspy --check -- PROGRAM` (one report format, one rule for what fails).

use std::io;
use std::sync::{Arc, Mutex};

use mpspy_engine::stats::format_ns;
use mpspy_schema::event::qualified;
use mpspy_schema::lint::Severity;
use mpspy_schema::{Event, EventKind};

use super::Sink;

/// One finding: how much it matters and its report line.
struct Finding {
    severity: Severity,
    line: String,
}

/// The findings so far, shared between the sink on the decoder thread and whoever reports them.
#[derive(Clone, Default)]
pub(crate) struct Findings(Arc<Mutex<Vec<Finding>>>);

impl Findings {
    /// Takes `e` if it is a finding (a lint, or a stuck call, which counts as a warning).
    pub(crate) fn add(&self, e: &Event) {
        let (severity, what) = match &e.kind {
            EventKind::Lint(l) => (
                l.severity,
                format!(
                    "{:<8} {:<26} {}",
                    l.severity.as_str(),
                    l.id.to_string(),
                    l.message
                ),
            ),
            EventKind::Stuck {
                interface,
                method,
                question,
                thread,
                pending_ns,
                limit_ns,
                ..
            } => (
                Severity::Warning,
                format!(
                    "{:<8} {:<26} {} (q{question}) pending {} (limit {}){}",
                    "warning",
                    "stuck",
                    qualified(interface, method),
                    format_ns(*pending_ns),
                    format_ns(*limit_ns),
                    thread
                        .as_ref()
                        .map(|t| format!(" on thread {t}"))
                        .unwrap_or_default()
                ),
            ),
            _ => return,
        };
        let line = format!("  {:>12.6} #{:<3} {what}", e.t_ns as f64 / 1e9, e.conn);
        if let Ok(mut f) = self.0.lock() {
            f.push(Finding { severity, line });
        }
    }

    /// A finding from another source than events (a `-debug=ipc` log), its report line made.
    pub(crate) fn push(&self, severity: Severity, line: String) {
        if let Ok(mut f) = self.0.lock() {
            f.push(Finding { severity, line });
        }
    }

    /// How many findings, and how many of them are of `fail_on`'s severity or worse.
    pub(crate) fn counts(&self, fail_on: Severity) -> (usize, usize) {
        let f = self
            .0
            .lock()
            .map(|f| (f.len(), f.iter().filter(|x| x.severity <= fail_on).count()));
        f.unwrap_or_default()
    }

    /// The report on `what` (a file, a program): a summary line, then a line per finding.
    pub(crate) fn report(&self, what: &str) -> String {
        let Ok(f) = self.0.lock() else {
            return String::new();
        };
        if f.is_empty() {
            return format!("{what}: no findings\n");
        }
        let count = |s: Severity| f.iter().filter(|x| x.severity == s).count();
        let mut out = format!(
            "{what}: {} finding(s): {} error, {} warning, {} info\n",
            f.len(),
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Info)
        );
        for x in f.iter() {
            out.push_str(&x.line);
            out.push('\n');
        }
        out
    }
}

/// The line that ends a failing check; `allow` is the flag that silences a lint.
pub(crate) fn failed_line(failing: usize, total: usize, fail_on: Severity, allow: &str) -> String {
    format!(
        "mpspy check: FAILED: {failing} of {total} finding(s) at {fail_on} or worse (--fail-on; {allow} ID silences a lint)"
    )
}

/// Collects a live session's findings.
pub(crate) struct FindingsSink(pub(crate) Findings);

impl Sink for FindingsSink {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        self.0.add(e);
        Ok(())
    }
}
