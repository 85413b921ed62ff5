//! mpspy's vocabulary: the interface schemas, the Cap'n Proto wire reader, the RPC envelope, the
//! dynamic decoder and the event model.
//!
//! Producers (`mpspy-capture`) and consumers (`mpspy-tui`, the binary's sinks) meet here and
//! nowhere else. Nothing in this crate does I/O except loading user schema files.

pub mod decode;
pub mod encode;
pub mod event;
pub mod lint;
pub mod registry;
pub mod rpc;
pub mod sets;
pub mod value;
pub mod wire;

pub use event::{Direction, Event, EventKind, Side};
pub use registry::{SchemaError, SchemaSet};
pub use value::Value;
