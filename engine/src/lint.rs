//! Lint configuration and the bits of lint state that are not RPC state. The lints themselves
//! are computed by the [`Session`](crate::Session) from its own questions, exports and thread
//! lanes, in the same pass that pairs calls, so there is one pairing and one truth (the ids
//! and what each means: `mpspy_schema::lint` and `docs/lints.md`).

use std::collections::VecDeque;

use mpspy_schema::value::Value;

pub use mpspy_schema::lint::{LintId, Severity};

/// Thresholds and the allow list.
#[derive(Debug, Clone, PartialEq)]
pub struct LintConfig {
    /// Lints not reported.
    pub allow: Vec<LintId>,
    /// `polling-storm`: more calls of one long-poll method than this per second, on one
    /// connection, measured over [`poll_window_ns`](Self::poll_window_ns).
    pub poll_rate: f64,
    /// `polling-storm`: the window the rate is measured over, in nanoseconds.
    pub poll_window_ns: u64,
    /// Stuck calls: a call pending longer than this is reported (`stuck` event). Long polls
    /// with a timeout argument are judged by [`long_poll_margin_ns`](Self::long_poll_margin_ns)
    /// instead.
    pub stuck_after_ns: u64,
    /// Stuck calls: a long poll (`waitTipChanged`, `waitNext`) is stuck when pending longer
    /// than its own timeout argument plus this margin.
    pub long_poll_margin_ns: u64,
}

impl Default for LintConfig {
    fn default() -> Self {
        LintConfig {
            allow: Vec::new(),
            // Long polls return when something happens or after a timeout of seconds; even a
            // regtest burst of blocks rarely wakes one more than a few times a second, while
            // the loop in bitcoin/bitcoin#33463 sent ~96 requests in one second.
            poll_rate: 10.0,
            poll_window_ns: 1_000_000_000,
            // Ordinary calls return in milliseconds; the hangs this is for (createNewBlock in
            // bitcoin/bitcoin#33647) last minutes, so 10 s is far from both.
            stuck_after_ns: 10_000_000_000,
            // A long poll returns at its timeout; the margin covers the node's own work
            // after it (building a template) and a busy machine.
            long_poll_margin_ns: 5_000_000_000,
        }
    }
}

impl LintConfig {
    /// True when `id` is reported.
    pub fn enabled(&self, id: LintId) -> bool {
        !self.allow.contains(&id)
    }

    /// How long a call of `method` (`Interface.method`) with `params` may be pending before it
    /// is stuck; `None` when it may legitimately wait forever.
    pub(crate) fn stuck_limit(&self, method: &str, params: &Value) -> Option<u64> {
        // The long polls with a timeout argument (milliseconds, Float64). createNewBlock is a
        // long poll too but has no timeout: it gets the general threshold, as its hang
        // (bitcoin/bitcoin#33647) is the one to catch.
        let timeout_ms = match method {
            "Mining.waitTipChanged" => params.field("timeout"),
            "BlockTemplate.waitNext" => params.field("options").and_then(|o| o.field("timeout")),
            _ => return Some(self.stuck_after_ns),
        };
        // Missing, NaN, infinite or beyond u64 nanoseconds (the schema default `maxDouble`):
        // the caller asked to wait until something happens, which may be never, so such a
        // call is never stuck. Falling back to the general threshold would report every
        // idle miner waiting for the next block.
        let ms = match timeout_ms? {
            Value::Float(f) => *f,
            _ => return None,
        };
        let ns = ms * 1e6;
        // NaN first: `max` below would turn it into 0.
        if ns.is_nan() || ns >= u64::MAX as f64 {
            return None;
        }
        // In range now; a negative timeout returns at once, like 0. The cast drops the fraction.
        Some((ns.max(0.0) as u64).saturating_add(self.long_poll_margin_ns))
    }

    /// Calls allowed within one window before it is a storm.
    fn poll_limit(&self) -> usize {
        // Truncation is the point: "more than N per window" with a whole N.
        (self.poll_rate * self.poll_window_ns as f64 / 1e9).max(1.0) as usize
    }
}

/// The recent calls of one long-poll method on one connection (or, for `-debug=ipc` logs,
/// which do not tell connections apart, one process): the `polling-storm` rule, in one place.
#[derive(Debug, Default)]
pub struct PollRate {
    /// Times of the calls within the window (at most the limit + 1 are kept).
    times: VecDeque<u64>,
    /// In a storm: already reported, quiet until the rate falls back.
    storming: bool,
}

impl PollRate {
    /// Records a call at `t_ns`; true when this call starts a storm (the one to report).
    pub fn call(&mut self, t_ns: u64, config: &LintConfig) -> bool {
        let limit = config.poll_limit();
        // The window is (t - window, t]: a call exactly one window old has left it.
        if let Some(from) = t_ns.checked_sub(config.poll_window_ns) {
            while self.times.front().is_some_and(|&t| t <= from) {
                self.times.pop_front();
            }
        }
        self.times.push_back(t_ns);
        if self.times.len() > limit + 1 {
            self.times.pop_front();
        }
        if self.storming {
            // Half the limit, not the limit itself, ends a storm: a rate hovering around the
            // threshold is one storm, not one report per crossing.
            if self.times.len() <= limit / 2 {
                self.storming = false;
            }
            false
        } else if self.times.len() > limit {
            self.storming = true;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_reported_once_and_rearms_after_the_rate_falls() {
        let c = LintConfig::default();
        let mut p = PollRate::default();
        // 100 calls 10 ms apart: 1 s of 100/s, one report at the 11th call.
        let fired: Vec<usize> = (0..100)
            .filter(|i| p.call(*i as u64 * 10_000_000, &c))
            .collect();
        assert_eq!(fired, [10]);
        // A pause, then calls once a second: quiet, and the storm is over.
        assert!(!p.call(5_000_000_000, &c));
        assert!(!p.call(6_000_000_000, &c));
        // A second storm is a second report.
        let fired = (0..50)
            .filter(|i| p.call(10_000_000_000 + *i as u64 * 10_000_000, &c))
            .count();
        assert_eq!(fired, 1);
    }

    #[test]
    fn the_configured_rate_is_the_line() {
        let c = LintConfig::default();
        let mut p = PollRate::default();
        // Exactly 10 per second (every 100 ms), for ten seconds: never more than allowed.
        assert!(!(0..100).any(|i| p.call(i * 100_000_000 + 1, &c)));
    }
}
