//! Spawning the Bitcoin way (protocol digest §5.1–5.2), both ends.
//!
//! Parent: `socketpair(AF_UNIX, SOCK_STREAM)`, run
//! `<dirname(argv0)>/NAME -ipcfd <child's fd>` with the child's end
//! inherited, close our copy of that end, and be the RPC client on ours.
//!
//! Child (`-ipcfd N`): serve `Init` on fd N; exit when the connection closes.
//!
//! `-spawn-bare NAME` spawns `<dirname(argv0)>/NAME N` instead (the libmultiprocess examples'
//! shape, §5.3), and a child started as `NAME N` serves just like `-ipcfd N`.
//!
//! Nested spawns (parent → child → grandchild, each link its own socketpair):
//! the child's argv must stay exactly `NAME -ipcfd N`, so the request travels
//! in the environment instead. A `-ipcfd` child that finds
//! `MPSPY_TESTPEER_SPAWN=NAME[,NAME…]` spawns the first NAME (relative to its
//! own argv0, like any spawn) with the rest of the list in the same variable
//! (or the variable removed when nothing is left, so the chain ends), runs the
//! default client session against it while serving its own parent, and exits
//! once both are done: non-zero if the nested session or the grandchild
//! failed. A `-spawn` parent passes its environment through unchanged, so
//! `MPSPY_TESTPEER_SPAWN=mpspy-testpeer mpspy-testpeer -spawn mpspy-testpeer`
//! gives three processes.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use capnp_rpc::rpc_twoparty_capnp::Side;
use tokio::signal::unix::{SignalKind, signal};

use crate::client::{self, SessionOptions};
use crate::net;
use crate::server::{Peer, new_init};
use crate::{EXE_NAME, FdArg};

/// The environment variable that asks a `-ipcfd` child to spawn further.
pub(crate) const SPAWN_ENV: &str = "MPSPY_TESTPEER_SPAWN";

/// How long a parent waits for its child to exit after closing the
/// connection before killing it: the child should exit as soon as it sees EOF.
const CHILD_EXIT_GRACE: Duration = Duration::from_secs(30);

/// What the spawned child's environment says about spawning further.
enum ChainEnv {
    /// Leave the environment as it is.
    Inherit,
    /// Set [`SPAWN_ENV`] to the rest of the chain.
    Set(String),
    /// Remove [`SPAWN_ENV`]: the chain ends with this child.
    Remove,
}

/// `mpspy-testpeer -spawn NAME [session options]`.
pub(crate) async fn run_parent(
    name: String,
    opts: SessionOptions,
    shape: FdArg,
) -> Result<ExitCode> {
    spawn_and_run(&name, &opts, ChainEnv::Inherit, shape).await?;
    Ok(ExitCode::SUCCESS)
}

/// The child's path as Bitcoin computes it: the parent's argv0 with its file
/// name replaced by `name`. With no directory part it is the bare name, which
/// is then looked up in `PATH` (like `execvp`).
fn child_path(argv0: &OsStr, name: &str) -> PathBuf {
    match Path::new(argv0).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// Spawns `name -ipcfd N` (or `name N`), runs the client session on our end,
/// closes it, waits for the child and reports its exit like Bitcoin's log line.
async fn spawn_and_run(
    name: &str,
    opts: &SessionOptions,
    env: ChainEnv,
    shape: FdArg,
) -> Result<()> {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let path = child_path(&argv0, name);

    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    // std creates both ends close-on-exec; the child's end must survive exec.
    // Our end stays close-on-exec so the child never holds it. This process
    // spawns from one thread only, so no other child can inherit `theirs` in
    // the window before it is closed below.
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .context("clearing FD_CLOEXEC on the child's socket")?;
    let mut cmd = tokio::process::Command::new(&path);
    if shape == FdArg::Ipcfd {
        cmd.arg("-ipcfd");
    }
    cmd.arg(theirs.as_raw_fd().to_string());
    match env {
        ChainEnv::Inherit => {}
        ChainEnv::Set(rest) => {
            cmd.env(SPAWN_ENV, rest);
        }
        ChainEnv::Remove => {
            cmd.env_remove(SPAWN_ENV);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    println!("Process {name} pid {pid} launched");

    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    // The session closes the connection when it ends, successfully or not;
    // the child exits on EOF.
    let session = client::run_over(stream, opts).await;

    let status = match tokio::time::timeout(CHILD_EXIT_GRACE, child.wait()).await {
        Ok(status) => status.context("waiting for the child")?,
        Err(_) => {
            eprintln!("Process {name} pid {pid} did not exit; killing it");
            child.kill().await.ok();
            child.wait().await.context("waiting for the child")?
        }
    };
    // Bitcoin logs the raw waitpid status (exit code << 8 for a normal exit).
    println!(
        "Process {name} pid {pid} exited with status {}",
        status.into_raw()
    );
    session.with_context(|| format!("client session with {name}"))?;
    if !status.success() {
        bail!("{name} (pid {pid}) failed: {status}");
    }
    Ok(())
}

/// `mpspy-testpeer -ipcfd N`: serve Init on inherited fd N until the parent
/// closes the connection.
pub(crate) async fn serve_inherited(arg: &str) -> Result<ExitCode> {
    let fd: RawFd = arg
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| anyhow!("Invalid -ipcfd number '{arg}'"))?;
    let stream = adopt_inherited(fd).with_context(|| format!("Invalid -ipcfd number '{arg}'"))?;
    stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(stream)?;

    // bitcoin-node children ignore Ctrl-C (the terminal signals the whole
    // process group) and wait for their parent to close the connection.
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::task::spawn_local(async move {
        while sigint.recv().await.is_some() {
            eprintln!("[{EXE_NAME}] SIGINT received — waiting for parent to shut down.");
        }
    });

    let nested = nested_spawn().map(|(name, env)| {
        tokio::task::spawn_local(async move {
            spawn_and_run(&name, &SessionOptions::default(), env, FdArg::Ipcfd).await
        })
    });

    let peer = Peer::new();
    let served = net::rpc_system(stream, Side::Server, Some(new_init(peer).client)).await;
    if let Some(task) = nested {
        task.await.context("nested spawn task")??;
    }
    served.context("IPC connection")?;
    Ok(ExitCode::SUCCESS)
}

/// The next link of a nested spawn chain, if [`SPAWN_ENV`] asks for one.
fn nested_spawn() -> Option<(String, ChainEnv)> {
    let chain = std::env::var(SPAWN_ENV).ok()?;
    let (first, rest) = chain.split_once(',').unwrap_or((&chain, ""));
    let first = first.trim();
    if first.is_empty() {
        return None;
    }
    let env = if rest.trim().is_empty() {
        ChainEnv::Remove
    } else {
        ChainEnv::Set(rest.to_string())
    };
    Some((first.to_string(), env))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_path_follows_argv0() {
        assert_eq!(
            child_path(
                OsStr::new("/opt/bitcoin/libexec/bitcoin-node"),
                "bitcoin-wallet"
            ),
            PathBuf::from("/opt/bitcoin/libexec/bitcoin-wallet")
        );
        assert_eq!(
            child_path(OsStr::new("bitcoin-node"), "bitcoin-wallet"),
            PathBuf::from("bitcoin-wallet")
        );
        assert_eq!(
            child_path(OsStr::new("./bitcoin-node"), "x"),
            PathBuf::from("./x")
        );
    }
}
