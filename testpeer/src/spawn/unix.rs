//! The child side of a spawn over an inherited socketpair end (protocol digest §5.1); the parent
//! side is `mpspy_client::connect::spawn`.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use anyhow::{Context, Result, anyhow, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::EXE_NAME;

/// The connection's stream type on this platform.
pub(super) type Stream = tokio::net::UnixStream;

/// The status as Bitcoin logs it: the raw waitpid status (exit code << 8 for a normal exit).
pub(super) fn raw_status(status: ExitStatus) -> i64 {
    status.into_raw().into()
}

/// Takes the inherited socket named by the `-ipcfd` argument.
pub(super) fn adopt(arg: &str) -> Result<Stream> {
    let fd: RawFd = arg
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| anyhow!("Invalid -ipcfd number '{arg}'"))?;
    let stream = adopt_inherited(fd).with_context(|| format!("Invalid -ipcfd number '{arg}'"))?;
    stream.set_nonblocking(true)?;
    Ok(Stream::from_std(stream)?)
}

/// bitcoin-node children ignore Ctrl-C (the terminal signals the whole process group) and
/// wait for their parent to close the connection.
pub(super) fn keep_serving_on_interrupt() -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::task::spawn_local(async move {
        while sigint.recv().await.is_some() {
            eprintln!("[{EXE_NAME}] SIGINT received — waiting for parent to shut down.");
        }
    });
    Ok(())
}

/// Takes fd `fd`, inherited from the parent, as a socket.
///
/// Without `unsafe` there is no way to claim a raw fd number, so this asks
/// the kernel for a duplicate through our own pidfd (`pidfd_getfd`, Linux
/// 5.6+; always permitted on oneself). The duplicate is close-on-exec. The
/// original number stays open (and inheritable) for the life of the process,
/// which keeps the connection up until we exit; we exit once the peer closes
/// it, and a nested grandchild that inherits the number is waited for before
/// that.
#[cfg(target_os = "linux")]
fn adopt_inherited(fd: RawFd) -> Result<UnixStream> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).context("pidfd_open")?;
    let owned: OwnedFd = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty())
        .map_err(std::io::Error::from)
        .with_context(|| format!("fd {fd} is not open"))?;
    let file = std::fs::File::from(owned);
    if !file.metadata()?.file_type().is_socket() {
        bail!("fd {fd} is not a socket");
    }
    Ok(UnixStream::from(OwnedFd::from(file)))
}

#[cfg(not(target_os = "linux"))]
fn adopt_inherited(_fd: RawFd) -> Result<UnixStream> {
    bail!("-ipcfd needs Linux (pidfd_getfd) in this build")
}
