//! One Cap'n Proto two-party RPC connection over a byte stream.

use capnp_rpc::RpcSystem;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::twoparty::VatNetwork;
use futures::io::{BufReader, BufWriter};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::schema::init_capnp::init;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// Builds the RPC system for one connection. `side` is `Server` for the
/// listening/spawned end, which hosts `bootstrap` (our `Init`), and `Client`
/// for the connecting/spawning end, which passes `None`: libmultiprocess
/// clients never offer a bootstrap capability.
pub(crate) fn rpc_system<S>(
    stream: S,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> RpcSystem<Side>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let (read, write) = tokio::io::split(stream);
    // The write queue flushes after every message; buffering turns each
    // message (segment table + segments) into one write instead of several.
    let network = VatNetwork::new(
        BufReader::new(read.compat()),
        BufWriter::new(write.compat_write()),
        side,
        capnp::message::ReaderOptions::default(),
    );
    RpcSystem::new(Box::new(network), bootstrap)
}

/// Runs `session` on the server's `Init` over `stream` as the two-party client, then closes the
/// connection. Returns the session's result and what went wrong while closing, if anything.
/// capnp-rust's disconnector also sends an Abort ("client requested disconnect"); a C++ client
/// just closes.
pub(crate) async fn as_client<S, F, Fut, T>(stream: S, session: F) -> (T, Vec<String>)
where
    S: AsyncRead + AsyncWrite + 'static,
    F: FnOnce(init::Client) -> Fut,
    Fut: Future<Output = T>,
{
    let mut rpc = rpc_system(stream, Side::Client, None);
    let init: init::Client = rpc.bootstrap(Side::Server);
    let disconnector = rpc.get_disconnector();
    let driver = tokio::task::spawn_local(rpc);
    let result = session(init).await;
    let mut problems = Vec::new();
    if let Err(e) = disconnector.await {
        problems.push(format!("closing the connection: {e}"));
    }
    match driver.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("connection: {e}")),
        Err(e) => problems.push(format!("connection task: {e}")),
    }
    (result, problems)
}
