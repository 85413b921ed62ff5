//! Per-method latency statistics folded from events: a pure function of the event stream, so
//! the exit summary, `mpspy stats` and the TUI agree.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;

use mpspy_schema::Event;
use mpspy_schema::event::EventKind;

/// Methods that block until something happens; their latency is waiting, not work, so they are
/// reported apart.
pub const LONG_POLL: [&str; 3] = [
    "Mining.waitTipChanged",
    "BlockTemplate.waitNext",
    "Mining.createNewBlock",
];

/// Rows by method name, in the sections the tables print: ordinary methods, then long-poll
/// methods; empty sections are left out. `true` marks the long-poll section.
pub fn long_poll_sections<V>(methods: &BTreeMap<String, V>) -> Vec<(bool, Vec<(&String, &V)>)> {
    [false, true]
        .into_iter()
        .map(|long_poll| {
            let rows = methods
                .iter()
                .filter(|(name, _)| LONG_POLL.contains(&name.as_str()) == long_poll)
                .collect::<Vec<_>>();
            (long_poll, rows)
        })
        .filter(|(_, rows)| !rows.is_empty())
        .collect()
}

/// Statistics of one method.
#[derive(Debug, Clone)]
pub struct MethodStats {
    /// Calls seen (call messages, and bootstrap requests for `bootstrap`).
    pub calls: u64,
    /// Returns seen (any outcome).
    pub count: u64,
    /// Returns with an exception.
    pub errors: u64,
    /// Calls canceled: a Finish before the Return, or a `canceled` return whose Finish was not
    /// seen (once per call).
    pub cancels: u64,
    /// Calls without a return when their connection closed.
    pub unanswered: u64,
    /// Latencies in nanoseconds (of returns that carried one).
    pub latency: Histogram<u64>,
    /// The exact sum of those latencies, in nanoseconds (the histogram keeps 3 digits).
    pub latency_sum_ns: u64,
}

/// Longest latency recorded: an hour, beyond any IPC round trip or long poll.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

impl Default for MethodStats {
    fn default() -> Self {
        // 3 significant digits from 1 ns up to MAX_LATENCY_NS. The counts grow with the
        // longest latency recorded rather than being allocated for an hour up front: that was
        // 264 KB zeroed per method row, which is where fuzzed sessions with many distinct
        // (unknown) methods spent most of their time; now a row whose slowest call took a
        // millisecond holds 88 KB, one without latencies 16 KB. Buckets, and so quantiles, are
        // the same either way.
        let mut latency = Histogram::new_with_bounds(1, 2, 3).expect("valid bounds");
        latency.auto(true);
        MethodStats {
            calls: 0,
            count: 0,
            errors: 0,
            cancels: 0,
            unanswered: 0,
            latency,
            latency_sum_ns: 0,
        }
    }
}

impl MethodStats {
    /// Calls waiting for their return now: seen, not answered, not unanswered at a disconnect
    /// (returns of calls not seen, as after dropped events, are not taken off).
    pub fn pending(&self) -> u64 {
        self.calls.saturating_sub(self.count + self.unanswered)
    }

    /// The latency at quantile `q` (0..=1) in nanoseconds, if any return carried one.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q))
    }
}

/// Statistics by `Interface.method`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// By method name.
    pub methods: BTreeMap<String, MethodStats>,
    /// A buffer for building `Interface.method` keys.
    scratch: String,
    /// Calls (by their call event's `seq`) counted canceled at their Finish whose Return has
    /// not come: its `canceled` outcome is the same cancel, not another.
    canceled: std::collections::HashSet<u64>,
}

impl Stats {
    /// True for the kinds of event that change statistics (so others need not take a lock).
    pub fn counts(kind: &EventKind) -> bool {
        matches!(
            kind,
            EventKind::Call(_)
                | EventKind::Bootstrap { .. }
                | EventKind::Return(_)
                | EventKind::Finish { cancel: true, .. }
                | EventKind::ConnClosed { .. }
        )
    }

    /// Folds one event in.
    pub fn fold(&mut self, e: &Event) {
        self.fold_kind(&e.kind);
    }

    /// The row of `interface.method` (`method` alone when `interface` is empty), looked up
    /// without allocating its name (only its first event inserts it).
    fn row(&mut self, interface: &str, method: &str) -> &mut MethodStats {
        let mut key = std::mem::take(&mut self.scratch);
        key.clear();
        if !interface.is_empty() {
            key.push_str(interface);
            key.push('.');
        }
        key.push_str(method);
        if !self.methods.contains_key(key.as_str()) {
            self.methods.insert(key.clone(), MethodStats::default());
        }
        self.scratch = key;
        self.methods
            .get_mut(self.scratch.as_str())
            .expect("just inserted")
    }

    /// Folds one event in, by its kind.
    pub fn fold_kind(&mut self, kind: &EventKind) {
        match kind {
            EventKind::Call(c) => self.row(&c.interface, &c.method).calls += 1,
            EventKind::Bootstrap { .. } => self.row("", "bootstrap").calls += 1,
            EventKind::Return(r) => {
                let once = r.call_seq.is_some_and(|seq| self.canceled.remove(&seq));
                let m = self.row(&r.interface, &r.method);
                m.count += 1;
                match r.outcome.as_str() {
                    "exception" => m.errors += 1,
                    // Counted at its Finish already when that was seen.
                    "canceled" if !once => m.cancels += 1,
                    _ => {}
                }
                if let Some(l) = r.latency_ns.filter(|l| *l <= MAX_LATENCY_NS) {
                    // Cannot fail: the histogram grows to fit.
                    let _ = m.latency.record(l.max(1));
                    m.latency_sum_ns = m.latency_sum_ns.saturating_add(l);
                }
            }
            EventKind::Finish {
                cancel: true,
                method: Some(method),
                call_seq,
                ..
            } => {
                self.methods.entry(method.clone()).or_default().cancels += 1;
                if let Some(seq) = call_seq {
                    self.canceled.insert(*seq);
                }
            }
            EventKind::ConnClosed { pending_calls, .. } => {
                for p in pending_calls {
                    self.canceled.remove(&p.call_seq);
                    self.methods.entry(p.method.clone()).or_default().unanswered += 1;
                }
            }
            _ => {}
        }
    }

    /// A table: one row per method, long-poll methods in a section of their own.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let header = format!(
            "{:<40} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "method", "count", "errors", "cancel", "p50", "p90", "p99", "p99.9", "max"
        );
        for (long_poll, rows) in long_poll_sections(&self.methods) {
            if long_poll {
                out.push_str("long-poll methods (latency is mostly waiting):\n");
            }
            out.push_str(&header);
            for (name, m) in rows {
                let q = |p: f64| {
                    if m.latency.is_empty() {
                        "-".to_string()
                    } else {
                        format_ns(m.latency.value_at_quantile(p))
                    }
                };
                let max = if m.latency.is_empty() {
                    "-".to_string()
                } else {
                    format_ns(m.latency.max())
                };
                let mut cancel = m.cancels.to_string();
                if m.unanswered > 0 {
                    cancel = format!("{cancel}+{}?", m.unanswered);
                }
                out.push_str(&format!(
                    "{:<40} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                    name,
                    m.count,
                    m.errors,
                    cancel,
                    q(0.5),
                    q(0.9),
                    q(0.99),
                    q(0.999),
                    max
                ));
            }
        }
        out
    }
}

/// The engine's statistics, shared: the session folds into it as it emits events, and readers
/// (the UI while the session runs, the summary at its end) look at the same numbers, so no
/// screen can disagree with another after a drop.
#[derive(Debug, Clone, Default)]
pub struct SharedStats(Arc<Mutex<Stats>>);

impl SharedStats {
    /// Folds one event in (the session does this; readers only look).
    pub(crate) fn fold(&self, kind: &EventKind) {
        self.lock().fold_kind(kind);
    }

    /// The statistics, locked for reading; hold the guard briefly, the session waits for it.
    pub fn lock(&self) -> MutexGuard<'_, Stats> {
        // A reader that panicked holding the guard leaves whole numbers behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Statistics folded from `events` (tests and tools with events in hand).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let shared = SharedStats::default();
        {
            let mut s = shared.lock();
            for e in events {
                s.fold(e);
            }
        }
        shared
    }
}

/// A duration in the unit that keeps 3–4 significant digits.
pub fn format_ns(ns: u64) -> String {
    match ns {
        n if n < 10_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{:.1}µs", n as f64 / 1e3),
        n if n < 1_000_000_000 => format!("{:.2}ms", n as f64 / 1e6),
        n => format!("{:.2}s", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpspy_schema::event::ReturnEvent;

    fn ret(method: &str, latency_ns: Option<u64>) -> EventKind {
        EventKind::Return(ReturnEvent {
            answer: 0,
            call_seq: None,
            interface: "Echo".into(),
            method: method.into(),
            outcome: "results".into(),
            latency_ns,
            results: None,
            exception: None,
            thread: None,
            cap_table: Vec::new(),
            bytes: 0,
        })
    }

    #[test]
    fn calls_pending_and_the_exact_latency_sum() {
        let mut s = Stats::default();
        let call = EventKind::Call(mpspy_schema::event::CallEvent {
            question: 0,
            interface: "Echo".into(),
            method: "echo".into(),
            interface_id: 1,
            method_id: 1,
            target: "Echo#1".into(),
            thread: None,
            callback_thread: None,
            parent_seq: None,
            params: mpspy_schema::Value::Void,
            cap_table: Vec::new(),
            bytes: 0,
        });
        for _ in 0..3 {
            s.fold_kind(&call);
        }
        s.fold_kind(&ret("echo", Some(1_234_567)));
        s.fold_kind(&ret("echo", Some(7)));
        let m = &s.methods["Echo.echo"];
        assert_eq!((m.calls, m.count, m.pending()), (3, 2, 1));
        assert_eq!(m.latency_sum_ns, 1_234_574);
    }

    #[test]
    fn histograms_grow_with_what_they_record() {
        let mut s = Stats::default();
        s.fold_kind(&ret("none", None));
        let latencies = [
            1,
            850,
            12_000,
            4_000_000,
            MAX_LATENCY_NS,
            MAX_LATENCY_NS + 1,
        ];
        for l in latencies {
            s.fold_kind(&ret("echo", Some(l)));
        }
        let bytes = |m: &str| s.methods[&format!("Echo.{m}")].latency.distinct_values() * 8;
        assert_eq!(bytes("none"), 16 * 1024);
        let h = &s.methods["Echo.echo"].latency;
        assert_eq!(h.len(), 5, "above an hour is not recorded");
        assert!(bytes("echo") <= 270 * 1024);

        // The same buckets as a histogram sized for an hour up front.
        let mut fixed = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3).unwrap();
        for l in &latencies[..5] {
            fixed.record(*l).unwrap();
        }
        for q in [0.0, 0.25, 0.5, 0.9, 1.0] {
            assert_eq!(h.value_at_quantile(q), fixed.value_at_quantile(q), "q {q}");
        }
    }
}
