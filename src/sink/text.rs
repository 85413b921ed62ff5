//! One readable line per event, for a terminal or a log file.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;

use mpspy_engine::stats::format_ns;
use mpspy_schema::Event;
use mpspy_schema::event::{CallEvent, EventKind, ReturnEvent, Side, qualified};

use super::Sink;

/// Longest blob shown in text lines (JSON always has the whole value).
const MAX_BLOB: usize = 32;

/// Writes events as text lines.
pub(crate) struct TextLines<W: Write> {
    out: W,
    /// False when the source has no timestamps.
    timed: bool,
    /// Only the events a person follows live: calls, returns, releases, connections, problems.
    brief: bool,
    /// The line being written, reused.
    line: String,
}

impl<W: Write> TextLines<W> {
    pub(crate) fn new(out: W, timed: bool) -> Self {
        TextLines {
            out,
            timed,
            brief: false,
            line: String::new(),
        }
    }

    // Only the live runner uses it, and that is unix-only so far.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn brief(mut self, brief: bool) -> Self {
        self.brief = brief;
        self
    }
}

fn in_brief(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Session { .. }
            | EventKind::Bootstrap { .. }
            | EventKind::Finish { cancel: false, .. }
            | EventKind::CapCreated(_)
            | EventKind::CapReleased { .. }
            | EventKind::Resolve { .. }
            | EventKind::Disembargo { .. }
    )
}

fn call_line(c: &CallEvent, s: &mut String) {
    let _ = write!(
        s,
        "call q{} {} on {}",
        c.question,
        qualified(&c.interface, &c.method),
        c.target
    );
    match (&c.thread, &c.callback_thread) {
        (Some(t), Some(cb)) => {
            let _ = write!(s, " [thread {t}, callback {cb}]");
        }
        (Some(t), None) => {
            let _ = write!(s, " [thread {t}]");
        }
        _ => {}
    }
    let _ = write!(s, " {}", c.params.to_text(MAX_BLOB));
}

fn return_line(r: &ReturnEvent, s: &mut String) {
    let _ = write!(
        s,
        "return q{} {}",
        r.answer,
        qualified(&r.interface, &r.method)
    );
    if let Some(l) = r.latency_ns {
        let _ = write!(s, " {}", format_ns(l));
    }
    match (&r.results, &r.exception) {
        (Some(v), _) => {
            let _ = write!(s, " {}", v.to_text(MAX_BLOB));
        }
        (None, Some(e)) => {
            let _ = write!(s, " EXCEPTION {}: {}", e.kind, e.reason);
        }
        _ => {
            let _ = write!(s, " {}", r.outcome.to_uppercase());
        }
    }
}

/// The text of one event (without time and connection columns).
pub(crate) fn describe(kind: &EventKind) -> String {
    let mut s = String::new();
    describe_into(kind, &mut s);
    s
}

/// [`describe`], appended to `s`.
fn describe_into(kind: &EventKind, s: &mut String) {
    match kind {
        EventKind::Session {
            tool,
            source,
            schemas,
            ..
        } => {
            let _ = write!(s, "{tool}: {source} (schemas {schemas})");
        }
        EventKind::ConnOpened { label, .. } => {
            let _ = write!(s, "connected: {label}");
        }
        EventKind::ConnClosed {
            reason,
            pending_calls,
            live_caps,
        } => {
            // What was left behind, in plain words; then the other capabilities still
            // referenced (a Thread, Init: released with the connection, nothing lost).
            match mpspy_engine::left::left_behind(reason, pending_calls, live_caps) {
                Some(left) => {
                    let _ = write!(s, "closed: {left}");
                }
                None => {
                    let _ = write!(s, "closed ({reason})");
                }
            }
            let rest: Vec<String> = live_caps
                .iter()
                .filter(|c| !mpspy_engine::left::never_destroyed(c))
                .map(|c| {
                    if c.destroyed {
                        format!("{} (destroyed, not released)", c.cap)
                    } else {
                        c.cap.clone()
                    }
                })
                .collect();
            if !rest.is_empty() {
                let _ = write!(s, "; still referenced: {}", rest.join(", "));
            }
        }
        EventKind::Bootstrap { question, .. } => {
            let _ = write!(s, "bootstrap q{question}");
        }
        EventKind::Call(c) => call_line(c, s),
        EventKind::Return(r) => return_line(r, s),
        EventKind::Finish {
            question,
            method,
            cancel,
            ..
        } => {
            let _ = write!(s, "finish q{question}");
            if let Some(m) = method {
                let _ = write!(s, " {m}");
            }
            if *cancel {
                s.push_str(" (CANCEL: before the return)");
            }
        }
        EventKind::Resolve {
            promise,
            resolution,
        } => {
            let _ = write!(s, "resolve promise {promise} → {resolution:?}");
        }
        EventKind::Release {
            cap,
            count,
            remaining,
            ..
        } => {
            let _ = write!(s, "release {cap} ×{count} ({remaining} left)");
        }
        EventKind::Disembargo { target, context } => {
            let _ = write!(s, "disembargo {target:?} {context}");
        }
        EventKind::Abort { exception } => {
            let _ = write!(s, "abort {}: {}", exception.kind, exception.reason);
        }
        EventKind::Unimplemented { which, question } => {
            let _ = write!(s, "unimplemented (peer did not understand our {which}");
            if let Some(q) = question {
                let _ = write!(s, " q{q}");
            }
            s.push(')');
        }
        EventKind::OtherMessage { which, name } => {
            let _ = write!(s, "message {name} ({which})");
        }
        EventKind::CapCreated(c) => {
            let host = match c.host {
                Side::Client => "client",
                Side::Server => "server",
            };
            let _ = write!(s, "+ {} (export {} of the {host})", c.cap, c.export_id);
        }
        EventKind::CapReleased { cap, lifetime_ns } => {
            let _ = write!(s, "- {} released", cap.cap);
            if *lifetime_ns > 0 {
                let _ = write!(s, " after {}", format_ns(*lifetime_ns));
            }
        }
        EventKind::Undecodable {
            offset,
            len,
            reason,
            hex,
            ..
        } => {
            let _ = write!(
                s,
                "UNDECODABLE at byte {offset} ({len} bytes): {reason} [{hex}]"
            );
        }
        EventKind::SchemaMismatch {
            interface,
            method_id,
            schemas,
            likely,
            reason,
        } => {
            let _ = write!(
                s,
                "SCHEMA MISMATCH {interface} @{method_id} with {schemas}: {reason}"
            );
            if !likely.is_empty() {
                let _ = write!(s, " (likely: {})", likely.join(", "));
            }
        }
        EventKind::SchemaChosen { schemas, reason } => {
            let _ = write!(s, "schemas: {schemas} ({reason})");
        }
        EventKind::Notice { level, text } => match level {
            mpspy_schema::event::NoticeLevel::Info => {
                let _ = write!(s, "mpspy: {text}");
            }
            mpspy_schema::event::NoticeLevel::Warning => {
                let _ = write!(s, "mpspy: warning: {text}");
            }
        },
        EventKind::Lint(l) => {
            let _ = write!(s, "LINT {} {}: {}", l.severity, l.id, l.message);
        }
        EventKind::Snapshot { connections } => {
            let calls: usize = connections.iter().map(|c| c.pending.len()).sum();
            let _ = write!(
                s,
                "SNAPSHOT {calls} pending call(s) on {} connection(s)",
                connections.len()
            );
            for c in connections {
                for p in &c.pending {
                    let _ = write!(
                        s,
                        "; #{} q{} {} {}",
                        c.conn,
                        p.question,
                        p.method,
                        format_ns(p.elapsed_ns)
                    );
                    if let Some(t) = &p.thread {
                        let _ = write!(s, " on {t}");
                    }
                }
            }
        }
        EventKind::Stuck {
            call_seq,
            interface,
            method,
            question,
            thread,
            pending_ns,
            limit_ns,
            last_on_thread,
        } => {
            let _ = write!(
                s,
                "STUCK {} (q{question}, call #{call_seq}) pending {} (limit {})",
                qualified(interface, method),
                format_ns(*pending_ns),
                format_ns(*limit_ns)
            );
            if let Some(t) = thread {
                let _ = write!(s, " on thread {t}");
            }
            if let Some(last) = last_on_thread {
                let _ = write!(s, "; thread last: {last}");
            }
        }
        EventKind::Injected { fault, call_seq } => {
            let _ = write!(s, "INJECTED {}", fault.kind.as_str());
            if let Some(m) = &fault.method {
                let _ = write!(s, " {m}");
            }
            match (fault.question, call_seq) {
                (Some(q), Some(c)) => {
                    let _ = write!(s, " (q{q}, call #{c})");
                }
                (Some(q), None) => {
                    let _ = write!(s, " (q{q})");
                }
                _ => {}
            }
            let _ = write!(s, ": {}", fault.detail);
        }
        EventKind::Dropped { count, total } => {
            let _ = write!(
                s,
                "DROPPED {count} events ({total} in total): a consumer was too slow"
            );
        }
        _ => {
            let _ = write!(s, "{}", kind.name());
        }
    }
}

impl<W: Write> Sink for TextLines<W> {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        if self.brief && !in_brief(&e.kind) {
            return Ok(());
        }
        // The line is built in memory and written at once (formatting straight into the
        // writer makes a write call per piece).
        let dir = e.dir.map_or(" ", |d| d.arrow());
        self.line.clear();
        if self.timed {
            let _ = write!(self.line, "{:>12.6} ", e.t_ns as f64 / 1e9);
        }
        let _ = write!(self.line, "#{} {dir} ", e.conn);
        describe_into(&e.kind, &mut self.line);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
