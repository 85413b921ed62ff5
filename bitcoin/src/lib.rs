//! mpspy's Bitcoin Core knowledge that is not the wire: how Bitcoin's programs read their command
//! lines and config files (where a node listens, where `bitcoin-cli` connects, what the `bitcoin`
//! wrapper runs), the `-debug=ipc` log reader behind `mpspy stats` and `mpspy check`, and Bitcoin readings of
//! `Data` values (hashes, headers, transactions) for the TUI.
//!
//! Kept apart from the capture side so the relay and recording code stays Bitcoin-agnostic, and
//! from the schema so the vocabulary holds only what the wire says.

pub mod args;
pub mod data;
pub mod debuglog;
pub mod loglint;
