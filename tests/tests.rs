//! One integration binary (linking once keeps the suite fast); modules by area.

// The emulation of Bitcoin's options is checked against the real programs, whose IPC is
// unix-only; the rows are unix paths.
#[cfg(unix)]
mod args;
#[cfg(unix)]
mod attach;
#[cfg(unix)]
mod call;
mod common;
mod decode;
mod diff;
// Wraps the test peer on a unix socket and drives it with `mpspy call` and pycapnp.
#[cfg(unix)]
mod inject;
mod lints;
#[cfg(unix)]
mod live;
// Scrapes end with SIGTERM, and the live half wraps a unix socket.
#[cfg(unix)]
mod metrics;
mod otlp;
#[allow(dead_code)]
mod peers;
#[cfg(unix)]
mod real;
mod replay;
#[cfg(unix)]
mod serve;
#[cfg(unix)]
mod spawn;
mod stats;
mod testpeer;
mod trace;
#[cfg(unix)]
mod tui;
#[cfg(windows)]
mod windows;
