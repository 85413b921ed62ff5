//! Lint configuration and the bits of lint state that are not RPC state. The lints themselves
//! are computed by the [`Session`](crate::Session) from its own questions, exports and thread
//! lanes, in the same pass that pairs calls, so there is one pairing and one truth (the ids
//! and what each means: `mpspy_schema::lint` and `docs/lints.md`).

use std::collections::VecDeque;

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
        }
    }
}

impl LintConfig {
    /// True when `id` is reported.
    pub fn enabled(&self, id: LintId) -> bool {
        !self.allow.contains(&id)
    }

    /// Calls allowed within one window before it is a storm.
    fn poll_limit(&self) -> usize {
        // Truncation is the point: "more than N per window" with a whole N.
        (self.poll_rate * self.poll_window_ns as f64 / 1e9).max(1.0) as usize
    }
}

/// The recent calls of one long-poll method on one connection.
#[derive(Debug, Default)]
pub(crate) struct PollRate {
    /// Times of the calls within the window (at most the limit + 1 are kept).
    times: VecDeque<u64>,
    /// In a storm: already reported, quiet until the rate falls back.
    storming: bool,
}

impl PollRate {
    /// Records a call at `t_ns`; true when this call starts a storm (the one to report).
    pub(crate) fn call(&mut self, t_ns: u64, config: &LintConfig) -> bool {
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
