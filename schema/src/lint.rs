//! The lint vocabulary: stable ids, severities and one-line explanations of the IPC misuses the
//! engine reports as [`EventKind::Lint`](crate::event::EventKind::Lint) events. The engine
//! decides when one fires; this module only names them, so sinks, the TUI and the CLI share
//! one spelling (`docs/lints.md` documents each, with its rationale and threshold).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How much a lint matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The peer fails the call, crashes, or keeps resources until it restarts.
    Error,
    /// Works, but wastes resources or behaves differently across versions.
    Warning,
    /// Worth knowing; often deliberate.
    Info,
}

impl Severity {
    /// `error`, `warning` or `info`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lint's stable id. The JSON and CLI spelling is kebab-case (`thread-busy`); ids are never
/// renamed, so allow lists and scripts keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LintId {
    /// Two calls in flight on the same `Context.thread`.
    ThreadBusy,
    /// A call that needs a `Context` sent without a thread, on a connection without a pool.
    NullThread,
    /// A call answered `unimplemented` (or with a "not supported" stub).
    UnimplementedMethod,
    /// A call with a method ordinal the schema set does not have.
    UnknownOrdinal,
    /// A capability with a `destroy` method released without calling it.
    ReleasedWithoutDestroy,
    /// A capability with a `destroy` method still alive, not destroyed, at disconnect.
    AliveAtDisconnect,
    /// A long-poll method called faster than the configured rate.
    PollingStorm,
    /// A long-poll call still pending when its connection closed.
    LongPollAtDisconnect,
    /// A call on a capability after it was released or destroyed.
    CallAfterRelease,
    /// Params or results that do not fit the schema set in use.
    SchemaMismatch,
}

impl LintId {
    /// Every lint, in the order of the documentation table.
    pub const ALL: [LintId; 10] = [
        LintId::ThreadBusy,
        LintId::NullThread,
        LintId::UnimplementedMethod,
        LintId::UnknownOrdinal,
        LintId::ReleasedWithoutDestroy,
        LintId::AliveAtDisconnect,
        LintId::PollingStorm,
        LintId::LongPollAtDisconnect,
        LintId::CallAfterRelease,
        LintId::SchemaMismatch,
    ];

    /// The kebab-case id.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LintId::ThreadBusy => "thread-busy",
            LintId::NullThread => "null-thread",
            LintId::UnimplementedMethod => "unimplemented-method",
            LintId::UnknownOrdinal => "unknown-ordinal",
            LintId::ReleasedWithoutDestroy => "released-without-destroy",
            LintId::AliveAtDisconnect => "alive-at-disconnect",
            LintId::PollingStorm => "polling-storm",
            LintId::LongPollAtDisconnect => "long-poll-at-disconnect",
            LintId::CallAfterRelease => "call-after-release",
            LintId::SchemaMismatch => "schema-mismatch",
        }
    }

    /// The severity the engine reports it with.
    #[must_use]
    pub fn severity(self) -> Severity {
        match self {
            // The peer fails the call (null thread) or aborts the whole connection (a released
            // import); before libmultiprocess v8 a null thread crashed it.
            LintId::NullThread | LintId::CallAfterRelease => Severity::Error,
            // Queued since libmultiprocess v8, but `thread busy` in v7 and a crash in v30.0.
            LintId::ThreadBusy
            | LintId::UnimplementedMethod
            | LintId::UnknownOrdinal
            | LintId::ReleasedWithoutDestroy
            | LintId::AliveAtDisconnect
            | LintId::PollingStorm
            | LintId::SchemaMismatch => Severity::Warning,
            // Often just a client that exited while waiting; worth seeing, rarely a bug.
            LintId::LongPollAtDisconnect => Severity::Info,
        }
    }

    /// One line saying what it means.
    #[must_use]
    pub fn summary(self) -> &'static str {
        match self {
            LintId::ThreadBusy => "two calls in flight on the same Context.thread",
            LintId::NullThread => {
                "a call that needs a Context sent with a null thread on a connection without a pool"
            }
            LintId::UnimplementedMethod => {
                "a call answered 'unimplemented' or with a 'not supported' stub"
            }
            LintId::UnknownOrdinal => "a call with a method ordinal the schema set does not have",
            LintId::ReleasedWithoutDestroy => {
                "a capability with a destroy method released without calling destroy"
            }
            LintId::AliveAtDisconnect => {
                "a capability with a destroy method still alive and not destroyed at disconnect"
            }
            LintId::PollingStorm => "a long-poll method called faster than the configured rate",
            LintId::LongPollAtDisconnect => "a long-poll call still pending at disconnect",
            LintId::CallAfterRelease => "a call on a capability after its release or destroy",
            LintId::SchemaMismatch => "params or results that do not fit the schema set in use",
        }
    }
}

impl fmt::Display for LintId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An id that names no lint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lint error: unknown lint id '{0}' (see docs/lints.md)")]
pub struct UnknownLint(pub String);

impl FromStr for LintId {
    type Err = UnknownLint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LintId::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLint(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_match_their_json_spelling() {
        for id in LintId::ALL {
            assert_eq!(id.as_str().parse::<LintId>(), Ok(id));
            assert_eq!(
                serde_json::to_value(id).unwrap(),
                serde_json::json!(id.as_str())
            );
        }
        assert!("thread_busy".parse::<LintId>().is_err());
    }

    #[test]
    fn the_documentation_table_has_every_lint_with_its_severity() {
        let doc = include_str!("../../docs/lints.md");
        for id in LintId::ALL {
            let row = format!("| `{id}` | {} |", id.severity());
            assert!(doc.contains(&row), "docs/lints.md lacks the row {row}");
        }
    }
}
