//! One Cap'n Proto two-party RPC connection over a byte stream.

use capnp_rpc::RpcSystem;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::twoparty::VatNetwork;
use futures::io::{BufReader, BufWriter};
use tokio::io::{AsyncRead, AsyncWrite};
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
