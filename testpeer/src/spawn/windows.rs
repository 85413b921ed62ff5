//! Spawning through a named pipe (protocol digest §5.4, libmultiprocess PR #231): the child
//! gets `\\.\pipe\mp-<pid>-<n>` instead of an fd number, and the socket comes through it.

use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;

use anyhow::{Context, Result};
use mpspy_recorder::winspawn::{self, Child};

use super::{ChainEnv, SPAWN_ENV};
use crate::{EXE_NAME, FdArg};

/// The connection's stream type on this platform: one end of a loopback TCP pair.
pub(super) type Stream = tokio::net::TcpStream;

/// A started child; shared with the blocking thread that waits for it.
pub(super) struct Launched(Arc<Child>);

/// Spawns `path -ipcfd \\.\pipe\…` (or `path \\.\pipe\…`) and hands it its socket.
pub(super) async fn launch(
    path: &Path,
    shape: FdArg,
    env: &ChainEnv,
) -> Result<(Launched, u32, Stream)> {
    let name = path.display().to_string();
    let flag = (shape == FdArg::Ipcfd).then_some("-ipcfd");
    let env: Vec<(String, Option<String>)> = match env {
        ChainEnv::Inherit => Vec::new(),
        ChainEnv::Set(rest) => vec![(SPAWN_ENV.to_string(), Some(rest.clone()))],
        ChainEnv::Remove => vec![(SPAWN_ENV.to_string(), None)],
    };
    // The spawn blocks until the child has opened the pipe; the loop has other work (a nested
    // spawn also serves its own parent meanwhile).
    let spawned = tokio::task::spawn_blocking(move || winspawn::spawn_program(&name, flag, &env))
        .await
        .context("spawn task")?
        .with_context(|| format!("spawning {}", path.display()))?;
    let pid = spawned.child.id();
    spawned.stream.set_nonblocking(true)?;
    Ok((
        Launched(Arc::new(spawned.child)),
        pid,
        Stream::from_std(spawned.stream)?,
    ))
}

impl Launched {
    /// Waits for the child to exit (on a blocking thread: the wait is a handle wait).
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let child = self.0.clone();
        tokio::task::spawn_blocking(move || child.wait()).await?
    }

    /// Ends the child.
    pub(super) async fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }
}

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
