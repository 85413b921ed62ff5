//! The child side of a spawn through a named pipe (protocol digest §5.4, libmultiprocess PR
//! #231): the child gets `\\.\pipe\mp-<pid>-<n>` instead of an fd number, and the socket comes
//! through it. The parent side is `mpspy_client::connect::spawn`.

use std::process::ExitStatus;

use anyhow::{Context, Result};
use mpspy_capture::winspawn;

use crate::EXE_NAME;

/// The connection's stream type on this platform: one end of a loopback TCP pair.
pub(super) type Stream = tokio::net::TcpStream;

/// The status as libmultiprocess's `WaitProcess` reports it: the exit code.
pub(super) fn raw_status(status: ExitStatus) -> i64 {
    status.code().unwrap_or(-1).into()
}

/// Opens the pipe named by the `-ipcfd` argument and rebuilds the socket sent through it.
pub(super) fn adopt(arg: &str) -> Result<Stream> {
    let stream =
        winspawn::connect_spawned(arg).with_context(|| format!("Invalid -ipcfd pipe '{arg}'"))?;
    stream.set_nonblocking(true)?;
    Ok(Stream::from_std(stream)?)
}

/// Like bitcoin-node children on unix with SIGINT: Ctrl-C reaches every process on the
/// console, and a child waits for its parent to close the connection instead.
pub(super) fn keep_serving_on_interrupt() -> Result<()> {
    let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
    tokio::task::spawn_local(async move {
        while ctrl_c.recv().await.is_some() {
            eprintln!("[{EXE_NAME}] Ctrl-C received — waiting for parent to shut down.");
        }
    });
    Ok(())
}
