//! One integration binary (linking once keeps the suite fast); modules by area.

#[cfg(unix)]
mod call;
mod common;
mod decode;
#[cfg(unix)]
mod live;
#[allow(dead_code)]
mod peers;
#[cfg(unix)]
mod real;
mod replay;
#[cfg(unix)]
mod spawn;
mod stats;
#[cfg(unix)]
mod tui;
#[cfg(windows)]
mod windows;
