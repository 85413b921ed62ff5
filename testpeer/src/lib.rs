//! mpspy-testpeer: a stand-in for Bitcoin Core master's `bitcoin-node` on the
//! IPC wire, so mpspy can be tested without Bitcoin Core.
//!
//! It speaks Cap'n Proto two-party RPC with the master schemas and follows the
//! libmultiprocess conventions (construct/ThreadMap/makeThread, Context on
//! every worker call, destroy), in four roles:
//!
//! ```text
//! mpspy-testpeer -ipcbind=unix[:PATH]… [-datadir=DIR] [-regtest|-chain=NAME|…]   listen (server)
//! mpspy-testpeer -ipcfd N                                                        serve an inherited socket
//! mpspy-testpeer -ipcfd \\.\pipe\mp-PID-N                                         the same on Windows (PR #231)
//! mpspy-testpeer N                                                               the same, libmultiprocess-examples style
//! mpspy-testpeer -spawn NAME [--echo TEXT]…                                      spawn NAME -ipcfd N, be its client
//! mpspy-testpeer -spawn-bare NAME [--echo TEXT]…                                 spawn NAME N (like mpexample), be its client
//! mpspy-testpeer client unix:PATH [--echo TEXT]… [--count N] [--mining] [--rpc METHOD] [--thread-name]
//! ```
//!
//! Nested spawns: a `-ipcfd` child whose environment has
//! `MPSPY_TESTPEER_SPAWN=NAME[,NAME…]` spawns the first NAME itself (passing
//! the rest on in the same variable) and runs the client session against it
//! while it serves its own parent. See the `spawn` module.
//!
//! The client session echoes `hello from parent` unless told what to do;
//! `client unix:PATH --rpc getblockcount` alone is bitcoin-cli's session
//! (construct, makeThread + makeRpc, executeRpc, Release of the Rpc).

mod blocks;
mod client;
mod dispatch;
#[cfg(unix)]
mod listen;
mod net;
pub mod runtime;
mod schema;
mod server;
mod spawn;
#[cfg(test)]
mod tests;
mod threads;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};

/// The executable name used in thread names and log lines, like Bitcoin's
/// `bitcoin-node`.
pub(crate) const EXE_NAME: &str = "mpspy-testpeer";

const USAGE: &str = "\
usage:
  mpspy-testpeer -ipcbind=unix[:PATH] [-ipcbind=…] [-datadir=DIR] [-regtest|-testnet|-testnet4|-signet|-chain=NAME]
      listen like bitcoin-node; the bootstrap capability is Init
  mpspy-testpeer -ipcfd N
      serve Init on inherited socket fd N; exit when it closes
      (Windows: -ipcfd \\\\.\\pipe\\mp-PID-N, the socket comes through that pipe)
      (with MPSPY_TESTPEER_SPAWN=NAME[,NAME…] also spawn NAME and be its client)
  mpspy-testpeer N
      the same, with the fd as the only argument (like mpprinter/mpcalculator)
  mpspy-testpeer -spawn NAME [--echo TEXT]… [--count N]
      spawn <dir of argv0>/NAME -ipcfd N over a socketpair and be its client
  mpspy-testpeer -spawn-bare NAME [--echo TEXT]… [--count N]
      the same, spawning <dir of argv0>/NAME N (like mpexample)
  mpspy-testpeer client unix:PATH [--echo TEXT]… [--count N] [--mining] [--rpc METHOD] [--thread-name]
      connect like a libmultiprocess C++ client (echo \"hello from parent\" when given nothing
      to do; --rpc METHOD alone is bitcoin-cli's session)";

/// Runs the peer with a full argv (`args[0]` is the program name); what the `mpspy-testpeer`
/// binary and mpspy's built-in demo both call.
pub fn main_with(args: &[OsString]) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[OsString]) -> Result<ExitCode> {
    // Run as `bitcoin-cli` (a symlink), the peer is a small stand-in for bitcoin-cli over IPC.
    if args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "bitcoin-cli")
    {
        let rest: Vec<String> = args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return cli_stand_in(&rest);
    }
    // Bitcoin treats a process as spawned only if argc == 3 and argv[1] is
    // exactly "-ipcfd"; `-ipcfd` anywhere else is a command-line error.
    if args.len() == 3 && args[1] == "-ipcfd" {
        let fd = args[2].to_string_lossy();
        return serve_fd(&fd);
    }
    // The libmultiprocess examples' shape (`mpprinter <fd>`): exactly one argument, all digits
    // (on Windows, a pipe path).
    if args.len() == 2 && is_connect_info(&args[1]) {
        return serve_fd(&args[1].to_string_lossy());
    }
    let rest: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("argument is not valid UTF-8: {a:?}"))
        })
        .collect::<Result<_>>()?;
    match rest.first().map(String::as_str) {
        // Like `bitcoin-node -version`; the peer speaks master's schemas.
        Some("-version") => {
            println!("mpspy-testpeer version v31.99.0-testpeer (Bitcoin Core master schemas)");
            Ok(ExitCode::SUCCESS)
        }
        None | Some("-h" | "-help" | "--help" | "-?") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some("client") => {
            let opts = client::Options::parse(&rest[1..])?;
            block_on(client::run_client(opts))
        }
        Some("-spawn" | "--spawn") => spawn_parent(&rest[1..], FdArg::Ipcfd),
        Some("-spawn-bare" | "--spawn-bare") => spawn_parent(&rest[1..], FdArg::Bare),
        Some(_) => listen_node(&rest),
    }
}

/// Runs `fut` on a current-thread runtime inside a `LocalSet`: capnp-rpc's
/// objects are `!Send`, and a single loop thread is what libmultiprocess uses
/// for its I/O too.
pub fn block_on<T, F: Future<Output = Result<T>>>(fut: F) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, fut)
}

/// How a spawned child gets its fd number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdArg {
    /// Bitcoin: `NAME -ipcfd N`.
    Ipcfd,
    /// libmultiprocess examples: `NAME N`.
    Bare,
}

#[cfg(unix)]
fn is_connect_info(arg: &OsString) -> bool {
    arg.to_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// A local named pipe path, `\\.\pipe\…` (either separator, any case, as Windows takes it).
#[cfg(windows)]
fn is_connect_info(arg: &OsString) -> bool {
    arg.to_str().is_some_and(|s| {
        s.get(..9)
            .is_some_and(|p| mpspy_recorder::win32::same_path(p, r"\\.\pipe\"))
            && s.len() > 9
    })
}

fn serve_fd(fd: &str) -> Result<ExitCode> {
    block_on(spawn::serve_inherited(fd))
}

fn spawn_parent(args: &[String], shape: FdArg) -> Result<ExitCode> {
    let Some((name, rest)) = args.split_first() else {
        bail!("-spawn needs an executable name\n{USAGE}");
    };
    let opts = client::SessionOptions::parse(rest)?;
    block_on(spawn::run_parent(name.clone(), opts, shape))
}

#[cfg(unix)]
fn listen_node(args: &[String]) -> Result<ExitCode> {
    let opts = listen::NodeOptions::parse(args)?;
    block_on(listen::run(opts))
}

#[cfg(not(unix))]
fn listen_node(_args: &[String]) -> Result<ExitCode> {
    bail!("-ipcbind is only supported on unix")
}

/// `bitcoin-cli [-datadir=DIR] [-regtest|-testnet|-testnet4|-signet] [-ipcconnect=unix[:PATH]] METHOD`:
/// connects over IPC like bitcoin-cli (default socket `<datadir>/<chain>/node.sock`), runs METHOD
/// through `Init.makeRpc` / `Rpc.executeRpc` and prints the reply. Only what tests need.
fn cli_stand_in(args: &[String]) -> Result<ExitCode> {
    let mut datadir = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".bitcoin"))
        .unwrap_or_default();
    let mut chain_dir = "";
    let mut connect = "unix".to_string();
    let mut method = None;
    for a in args {
        match a.trim_start_matches('-') {
            _ if !a.starts_with('-') => {
                method.get_or_insert_with(|| a.clone());
            }
            "regtest" => chain_dir = "regtest",
            "testnet" => chain_dir = "testnet3",
            "testnet4" => chain_dir = "testnet4",
            "signet" => chain_dir = "signet",
            o => {
                if let Some(d) = o.strip_prefix("datadir=") {
                    datadir = d.into();
                } else if let Some(c) = o.strip_prefix("ipcconnect=") {
                    connect = c.to_string();
                }
            }
        }
    }
    let netdir = datadir.join(chain_dir);
    let path = match connect.as_str() {
        "unix" | "auto" => netdir.join("node.sock"),
        c => match c.strip_prefix("unix:") {
            Some(p) => netdir.join(p),
            None => bail!("Unrecognized address '{c}'"),
        },
    };
    let session = client::SessionOptions {
        echo: Vec::new(),
        rpc: vec![method.ok_or_else(|| anyhow!("too few parameters"))?],
        ..client::SessionOptions::default()
    };
    block_on(client::run_client(client::Options::new(
        format!("unix:{}", path.display()),
        session,
    )))
}
