//! Spawning the Bitcoin way (protocol digest §5.1–5.4), both ends.
//!
//! Parent: run `<dirname(argv0)>/NAME -ipcfd <connect info>` with a fresh connection's other
//! end, and be the RPC client on ours. On unix the connect info is the number of an inherited
//! socketpair end ([`unix`]); on Windows it is a named pipe through which the child receives a
//! loopback TCP socket ([`windows`], libmultiprocess PR #231).
//!
//! Child (`-ipcfd INFO`): serve `Init` on that connection; exit when it closes.
//!
//! `-spawn-bare NAME` spawns `<dirname(argv0)>/NAME INFO` instead (the libmultiprocess examples'
//! shape, §5.3), and a child started as `NAME INFO` serves just like `-ipcfd INFO`.
//!
//! Nested spawns (parent → child → grandchild, each link its own connection):
//! the child's argv must stay exactly `NAME -ipcfd INFO`, so the request travels
//! in the environment instead. A `-ipcfd` child that finds
//! `MPSPY_TESTPEER_SPAWN=NAME[,NAME…]` spawns the first NAME (relative to its
//! own argv0, like any spawn) with the rest of the list in the same variable
//! (or the variable removed when nothing is left, so the chain ends), runs the
//! default client session against it while serving its own parent, and exits
//! once both are done: non-zero if the nested session or the grandchild
//! failed. A `-spawn` parent passes its environment through unchanged, so
//! `MPSPY_TESTPEER_SPAWN=mpspy-testpeer mpspy-testpeer -spawn mpspy-testpeer`
//! gives three processes.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mpspy_client::connect::{self, CHILD_EXIT_GRACE, FdArg};
use mpspy_client::net;
use mpspy_client::threads::Names;

use crate::EXE_NAME;
use crate::client::{self, SessionOptions};
use crate::server::new_init;

/// The environment variable that asks a `-ipcfd` child to spawn further.
pub(crate) const SPAWN_ENV: &str = "MPSPY_TESTPEER_SPAWN";

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

/// Spawns `name -ipcfd INFO` (or `name INFO`), runs the client session on our end,
/// closes it, waits for the child and reports its exit like Bitcoin's log line.
async fn spawn_and_run(
    name: &str,
    opts: &SessionOptions,
    env: ChainEnv,
    shape: FdArg,
) -> Result<()> {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let path = child_path(&argv0, name).display().to_string();
    let env: Vec<(String, Option<String>)> = match env {
        ChainEnv::Inherit => Vec::new(),
        ChainEnv::Set(rest) => vec![(SPAWN_ENV.to_string(), Some(rest))],
        ChainEnv::Remove => vec![(SPAWN_ENV.to_string(), None)],
    };
    // On Windows the spawn waits until the child has opened its pipe; the loop has other work
    // meanwhile (a nested spawn also serves its own parent).
    let spawned = tokio::task::spawn_blocking(move || connect::spawn(&path, shape, &env))
        .await
        .context("spawn task")??;
    let mut child = spawned.child;
    let pid = child.id();
    println!("Process {name} pid {pid} launched");

    // The session closes the connection when it ends, successfully or not;
    // the child exits on EOF.
    let session = match connect::into_tokio(spawned.stream) {
        Ok(stream) => client::run_over(stream, opts).await,
        Err(e) => Err(e.into()),
    };

    let status = match child.wait_timeout_async(CHILD_EXIT_GRACE).await {
        Ok(Some(status)) => status,
        Ok(None) => {
            eprintln!("Process {name} pid {pid} did not exit; killing it");
            child.kill().ok();
            child.wait().context("waiting for the child")?
        }
        Err(e) => return Err(e).context("waiting for the child"),
    };
    println!(
        "Process {name} pid {pid} exited with status {}",
        sys::raw_status(status)
    );
    session.with_context(|| format!("client session with {name}"))?;
    if !status.success() {
        bail!("{name} (pid {pid}) failed: {status}");
    }
    Ok(())
}

/// `mpspy-testpeer -ipcfd INFO`: serve Init on the connection the parent handed us until it
/// closes it.
pub(crate) async fn serve_inherited(arg: &str) -> Result<ExitCode> {
    let stream = sys::adopt(arg)?;
    sys::keep_serving_on_interrupt()?;

    let nested = nested_spawn().map(|(name, env)| {
        tokio::task::spawn_local(async move {
            spawn_and_run(&name, &SessionOptions::default(), env, FdArg::Ipcfd).await
        })
    });

    let peer = Names::new(EXE_NAME);
    let served = net::rpc_system(stream, new_init(peer).client).await;
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
