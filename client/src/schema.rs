//! Generated bindings for the master schema set (see `build.rs`).
//!
//! The client itself needs only `proxy.capnp` (Thread, ThreadMap, Context) and `Init.construct`,
//! but `init.capnp` names the other files' interfaces, so the whole set is generated. It is
//! public so that the test peer, whose servers implement the rest, uses these same types.
//!
//! The module names match what the generated code refers to
//! (`crate::schema::<file>_capnp`). Bitcoin's `rpc.capnp` becomes
//! `schema::rpc_capnp`, which does not clash with `capnp_rpc::rpc_capnp`.

// Generated code: lint it neither for style nor for visibility.
#![allow(
    clippy::all,
    clippy::pedantic,
    unreachable_pub,
    unused_qualifications,
    dead_code,
    missing_docs
)]

/// libmultiprocess's `mp/proxy.capnp`: Thread, ThreadMap, Context.
pub mod proxy_capnp {
    include!(concat!(env!("OUT_DIR"), "/mp/proxy_capnp.rs"));
}
/// Bitcoin's `common.capnp`.
pub mod common_capnp {
    include!(concat!(env!("OUT_DIR"), "/common_capnp.rs"));
}
/// Bitcoin's `echo.capnp`: Echo.
pub mod echo_capnp {
    include!(concat!(env!("OUT_DIR"), "/echo_capnp.rs"));
}
/// Bitcoin's `init.capnp`: Init, the bootstrap interface.
pub mod init_capnp {
    include!(concat!(env!("OUT_DIR"), "/init_capnp.rs"));
}
/// Bitcoin's `mining.capnp`: Mining, BlockTemplate.
pub mod mining_capnp {
    include!(concat!(env!("OUT_DIR"), "/mining_capnp.rs"));
}
/// Bitcoin's `rpc.capnp`: Rpc.
pub mod rpc_capnp {
    include!(concat!(env!("OUT_DIR"), "/rpc_capnp.rs"));
}
