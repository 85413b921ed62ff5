//! mpspy's engine: the one place that knows RPC semantics.
//!
//! Sources (live relays, recordings, raw captures, `mpspy call`'s own connection) hand
//! [`Tapped`] items to a [`Session`]; it splits nothing and reads no clock or socket, it only
//! turns items into [`Event`](mpspy_schema::Event)s: questions and answers per connection, both
//! sides' export tables (so every capability has a stable name), call/return pairing, thread
//! lanes, schema detection, per-method [`Stats`] and lints ([`LintConfig`]). Sinks (JSON, text,
//! the TUI, recordings' replays, the exit summary) all read that one stream and those stats.
//!
//! Everything here is synchronous and deterministic, so it is tested and fuzzed without
//! processes: the same items give the same events, however the bytes were chunked on the way
//! ([`framing::Splitter`] turns a byte stream into frames).

pub mod framing;
// Public for the fuzz target and the test that replays its seeds, not an API.
#[doc(hidden)]
pub mod fuzz;
pub mod input;
pub mod left;
pub mod lint;
pub mod raw;
pub mod session;
pub mod stats;

pub use input::{BadBytes, Tapped};
pub use lint::LintConfig;
pub use session::{SchemaConfig, Session};
pub use stats::{SharedStats, Stats};
