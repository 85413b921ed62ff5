//! One integration binary (linking once keeps the suite fast); modules by area.

mod common;
mod decode;
#[cfg(unix)]
mod live;
mod replay;
#[cfg(unix)]
mod spawn;
mod stats;
