//! mpspy's producers: byte sources, framing, per-connection RPC state and recordings.
//!
//! Everything here ends in [`mpspy_schema::Event`]s; nothing here renders them.

pub mod bitcoin;
#[cfg(unix)]
pub mod fd;
pub mod framing;
pub mod record;
#[cfg(unix)]
pub mod relay;
#[cfg(unix)]
pub mod shim;
pub mod source;
pub mod state;
pub mod tap;

pub use state::{SchemaConfig, Session};
