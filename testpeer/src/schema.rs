//! Generated bindings for the master schema set (see `build.rs`).
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

pub(crate) mod proxy_capnp {
    include!(concat!(env!("OUT_DIR"), "/mp/proxy_capnp.rs"));
}
pub(crate) mod common_capnp {
    include!(concat!(env!("OUT_DIR"), "/common_capnp.rs"));
}
pub(crate) mod echo_capnp {
    include!(concat!(env!("OUT_DIR"), "/echo_capnp.rs"));
}
pub(crate) mod init_capnp {
    include!(concat!(env!("OUT_DIR"), "/init_capnp.rs"));
}
pub(crate) mod mining_capnp {
    include!(concat!(env!("OUT_DIR"), "/mining_capnp.rs"));
}
pub(crate) mod rpc_capnp {
    include!(concat!(env!("OUT_DIR"), "/rpc_capnp.rs"));
}
