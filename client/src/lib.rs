//! mpspy-client: the libmultiprocess client runtime behind `mpspy call` and `mpspy bench`.
//!
//! It does what a libmultiprocess C++ client does (protocol digest §4.1), untyped, so that any
//! method of any schema set can be called:
//!
//! 1. get a connection: a unix socket (`connect::unix`), or a program spawned the Bitcoin way
//!    ([`connect::spawn`]: `PROGRAM -ipcfd N` over a socketpair on unix, the named pipe protocol
//!    of libmultiprocess PR #231 on Windows);
//! 2. bootstrap `Init` and `construct` it with a ThreadMap of our own, so the other side can
//!    make threads here and call back ([`threads`]);
//! 3. `makeThread` for the calling thread, pipelined with the first real call;
//! 4. run a chain of calls ([`runtime::run_chain`]), each on the capability the previous one
//!    returned, with params built by the schema encoder ([`runtime::Call::plan`]) and
//!    `Proxy.Context` filled on every call;
//! 5. `destroy` what has a `destroy` method before releasing it, and close like bitcoin-cli.
//!
//! The last call's results come back as the Return's content ([`runtime::Results`]), to be
//! decoded by schema; every failure on the way (refused connection, a child that exits, a
//! peer that goes away mid-call, an exception) is a [`ClientError`].
//!
//! The server-side pieces a client needs live here too, and the test peer builds on them: the
//! two-party connection with the C++ runtime's message shapes ([`net`]), dispatch that refuses
//! unknown methods in the C++ runtime's words ([`dispatch`]), and Threads with their turn
//! queues ([`threads`]). The generated bindings for the master schemas are in [`schema`].
//!
//! Everything runs on one thread: capnp-rpc's objects are `!Send`, and libmultiprocess too has
//! one event loop thread for its I/O ([`block_on`]).

pub mod connect;
pub mod dispatch;
pub mod net;
pub mod runtime;
pub mod schema;
pub mod serve;
pub mod threads;

use std::io;
use std::path::PathBuf;

/// Why a connection or a call chain failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be connected to (missing, refused, not a socket).
    #[error("client error: connecting to {}", path.display())]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The program could not be started, or did not take its end of the connection.
    #[error("client error: spawning {program}")]
    Spawn {
        /// The program as given.
        program: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Setting up the connection's stream or event loop failed.
    #[error("client error: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The other side answered a call with an exception (or aborted the connection with one:
    /// capnp-rpc reports both alike).
    #[error("client error: {method} failed: {kind}: {reason}")]
    Exception {
        /// `Interface.method` of the call.
        method: String,
        /// The exception type as on the wire: `failed`, `overloaded`, `disconnected`,
        /// `unimplemented`.
        kind: String,
        /// The exception's reason, as the other side sent it.
        reason: String,
    },
    /// The connection failed while a call was in flight: the peer closed it (or exited), or
    /// reading or writing it failed.
    #[error("client error: {method}: the connection failed: {reason}")]
    Connection {
        /// `Interface.method` of the call.
        method: String,
        /// capnp-rpc's words for it.
        reason: String,
    },
    /// A message could not be built or read (encoded params that are not a message, results
    /// without the capability the next step runs on).
    #[error("client error: {method}: {reason}")]
    Message {
        /// `Interface.method` of the call.
        method: String,
        /// What is wrong.
        reason: String,
    },
    /// Every call succeeded, but closing the connection did not go cleanly.
    #[error("client error: closing the connection: {problems}")]
    Closing {
        /// What went wrong, `; `-separated.
        problems: String,
    },
}

impl ClientError {
    /// Classifies capnp-rpc's error for a call to `method`: an exception the other side sent
    /// (capnp-rpc prefixes those `remote exception: `), the connection going away, or a local
    /// problem with a message.
    pub fn from_call(method: &str, e: capnp::Error) -> ClientError {
        let method = method.to_string();
        if let Some(reason) = e.extra.strip_prefix("remote exception: ") {
            return ClientError::Exception {
                method,
                kind: kind_name(e.kind),
                reason: reason.to_string(),
            };
        }
        match e.kind {
            capnp::ErrorKind::Disconnected => ClientError::Connection {
                method,
                reason: e.extra,
            },
            _ => ClientError::Message {
                method,
                reason: e.to_string(),
            },
        }
    }
}

/// The exception type as rpc.capnp spells it.
fn kind_name(kind: capnp::ErrorKind) -> String {
    match kind {
        capnp::ErrorKind::Failed => "failed".into(),
        capnp::ErrorKind::Overloaded => "overloaded".into(),
        capnp::ErrorKind::Disconnected => "disconnected".into(),
        capnp::ErrorKind::Unimplemented => "unimplemented".into(),
        other => other.to_string(),
    }
}

/// Runs `fut` on a current-thread runtime inside a `LocalSet`: capnp-rpc's objects are `!Send`,
/// and a single loop thread is what libmultiprocess uses for its I/O too.
///
/// # Errors
///
/// The runtime could not be built (the OS refused its timer or I/O driver).
pub fn block_on<F: Future>(fut: F) -> Result<F::Output, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ClientError::Io {
            what: "starting the event loop",
            source,
        })?;
    Ok(tokio::task::LocalSet::new().block_on(&rt, fut))
}

#[cfg(test)]
mod tests;
