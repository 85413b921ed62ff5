//! mpspy's producers: byte sources, framing, per-connection RPC state, recordings, Bitcoin
//! Core's argument rules and the spawn shim; also the `-debug=ipc` log reader behind
//! `mpspy stats`.
//!
//! Live sockets, recordings and raw captures all end in [`mpspy_schema::Event`]s through
//! [`Session`]; rendering events is the binary's and the TUI's job (the log reader's tables are
//! its own, since logs carry no events).

pub mod bitcoin;
pub mod debuglog;
#[cfg(unix)]
pub mod fd;
pub mod framing;
pub mod record;
pub mod relay;
pub mod shim;
pub mod source;
pub mod state;
#[cfg(unix)]
pub mod takeover;
pub mod tap;
pub mod win32;
// Named pipes, CreateProcess without inheritance and socket duplication have no safe
// wrappers in std; every Win32 call of the spawn protocol is in this one audited module.
#[cfg(windows)]
#[allow(unsafe_code)]
pub mod winspawn;

pub use state::{SchemaConfig, Session};
