//! mpspy-testpeer: a stand-in for Bitcoin Core master's `bitcoin-node` on the
//! IPC wire, so mpspy can be tested without Bitcoin Core.
//!
//! It speaks Cap'n Proto two-party RPC with the master schemas and follows the
//! libmultiprocess conventions (construct/ThreadMap/makeThread, Context on
//! every worker call, destroy), in five roles:
//!
//! ```text
//! mpspy-testpeer -ipcbind=unix[:PATH]… [-datadir=DIR] [-regtest|-chain=NAME|…]   listen (server)
//! mpspy-testpeer -ipcfd N                                                        serve an inherited socket
//! mpspy-testpeer -ipcfd \\.\pipe\mp-PID-N                                         the same on Windows (PR #231)
//! mpspy-testpeer N                                                               the same, libmultiprocess-examples style
//! mpspy-testpeer -spawn NAME [--echo TEXT]…                                      spawn NAME -ipcfd N, be its client
//! mpspy-testpeer -spawn-bare NAME [--echo TEXT]…                                 spawn NAME N (like mpexample), be its client
//! mpspy-testpeer client unix:PATH [--echo TEXT]… [--count N] [--mining] [--rpc METHOD] [--thread-name]
//! mpspy-testpeer misbehave unix:PATH CASE                                        a client that misuses IPC on purpose (unix)
//! bitcoin-cli [-datadir=DIR] [chain] [-ipcconnect=…] METHOD                       (run under that name) an RPC over IPC
//! sv2-tp [-datadir=DIR] [-conf=…] [chain] -ipcconnect=unix[:PATH]                 (run under that name) a Mining session
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
//!
//! # How close to the real peers
//!
//! The wire was compared with master `bitcoin-node` and `bitcoin-cli`
//! (v31.99.0-69c61f9f2f3d, Cap'n Proto 0.9.2), pycapnp clients and the
//! libmultiprocess examples, recorded through mpspy and through a decoding
//! relay. The tests check each point against the test peer, and against the
//! real programs where `MPSPY_PEERS_DIR` has them (`tests/peer.rs`).
//!
//! The same as the node (server side):
//!
//! - every Context method runs on the server Thread `Context.thread` names,
//!   one call after another per Thread (later ones queued), Threads in
//!   parallel; `makePool(n)` threads `… (pool/i)` take calls without `thread`,
//!   fewest in flight first; the error texts of master for a missing thread,
//!   a Thread that is not the server's and a second pool (`mpspy_client::threads`);
//! - a call canceled by an early `Finish` still runs, keeps its Thread busy,
//!   and is answered `Return{canceled}` when it ends (`mpspy_client::net`);
//! - the per-call `Release` of `Context.callbackThread` follows the call's
//!   `Return`;
//! - message shapes: the bootstrap Return in one segment (96 bytes), no empty
//!   capability tables, no `noFinishNeeded`, so messages have the node's sizes
//!   (bitcoin-cli's `getblockcount` session is byte-for-byte the same size
//!   against both, message by message);
//! - after a client's EOF, `Abort{disconnected, "Peer disconnected."}`, also
//!   when nothing is left in the tables (the node does this too, although the
//!   protocol digest says otherwise for empty tables);
//! - unknown methods and interfaces are refused with the C++ runtime's texts
//!   (`Method not implemented.; interfaceName = capnp/init.capnp:Init; …`);
//! - what `misbehave` provokes is answered as the node answers it (`tests/lints.rs` and
//!   `tests/real.rs` check the same answers against both): a second call on a busy Thread
//!   queued, the `Init @2` stub, `unimplemented` for `Echo @9`, params with extra fields read,
//!   and a call on a released import aborting the connection (`Abort{failed, "Message target
//!   is not a current export ID."}`, capnp-rpc's text and the C++ runtime's);
//! - the master methods the node has are all answered (`submitBlock`,
//!   `getTransactionsBy*`, `submitSolution`, the `@7` stub after its
//!   deserialization errors), with the node's answers for this made-up chain.
//!
//! The same as a libmultiprocess C++ client (`client` and `-spawn`, built on
//! `mpspy-client`, the runtime behind `mpspy call`/`bench`): makeThread pipelined with the first
//! call, one callbackThread export re-sent on every call, every question
//! Finished right after its Return, destroy before Release, and the end of a
//! session: the objects it made are released, Init, the ThreadMap and the
//! Thread are not, and the socket closes without an Abort.
//!
//! Where it still differs, and why:
//!
//! - **The client's bootstrap capability stays a promise.** capnp-rpc 0.27
//!   never resolves the bootstrap capability to the imported `Init`, so calls
//!   on Init target `promisedAnswer(q0)` rather than `importedCap 0`, q0 is
//!   never Finished, the unused import 0 is released right after the bootstrap
//!   Return (bitcoin-cli never releases Init), and question ids count from 1
//!   where the C++ client reuses 0. Fixing it needs changes inside capnp-rpc.
//! - **No OS threads.** A server Thread is a turn queue on the one event loop
//!   (capnp-rust objects are `!Send`), which gives the same order and timing
//!   of Returns; thread names therefore use a counter where libmultiprocess
//!   has a tid (`mpspy-testpeer-PID/N (from …)` against
//!   `bitcoin-node-PID/b-capnp-loop-TID (from …)`).
//! - **Timing of the callbackThread Release.** It goes out right behind the
//!   Return; the node's comes after a hop through its worker thread, often in
//!   the same write, sometimes after the client's next call (mpspy then names
//!   the re-sent export as the same `Thread#N`, where the test peer always
//!   gives it a new name).
//! - **A made-up chain.** Tip height 5, one fixed template, no mempool; waits
//!   are capped at 10 s and never see a new block; `checkBlock`/`submitBlock`
//!   fail proof of work every time (on regtest the node fails it half the time
//!   and the merkle root check otherwise); `executeRpc` knows `getblockcount`
//!   only; `makePool` makes at most 1024 threads.

mod blocks;
mod client;
#[cfg(unix)]
mod listen;
#[cfg(unix)]
pub mod misbehave;
mod server;
mod spawn;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use mpspy_client::connect::FdArg;

/// The executable's name (without `.exe`), also used in thread names and log lines, like
/// Bitcoin's `bitcoin-node`.
pub const EXE_NAME: &str = "mpspy-testpeer";

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
      to do; --rpc METHOD alone is bitcoin-cli's session)
  mpspy-testpeer misbehave unix:PATH CASE
      a client that misuses IPC on purpose, one JSON line per answer; CASE is one of thread-busy,
      unimplemented-method, unknown-ordinal, released-without-destroy, long-poll-at-disconnect,
      call-after-release, schema-mismatch (unix only)";

/// Runs the peer with a full argv (`args[0]` is the program name): the `mpspy-testpeer`
/// binary.
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
    // Run as `bitcoin-cli` or `sv2-tp` (a symlink), the peer is a small stand-in for that
    // client over IPC, taking its options in Bitcoin's style.
    let stand_in = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .filter(|n| matches!(*n, "bitcoin-cli" | "sv2-tp"))
        .map(str::to_string);
    if let Some(name) = stand_in {
        let rest: Vec<String> = args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return client_stand_in(&name, &rest);
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
        Some("misbehave") => misbehave(&rest[1..]),
        Some("-spawn" | "--spawn") => spawn_parent(&rest[1..], FdArg::Ipcfd),
        Some("-spawn-bare" | "--spawn-bare") => spawn_parent(&rest[1..], FdArg::Bare),
        Some(_) => listen_node(&rest),
    }
}

/// Runs `fut` on the client runtime's event loop (one thread, as libmultiprocess has).
fn block_on<T, F: Future<Output = Result<T>>>(fut: F) -> Result<T> {
    mpspy_client::block_on(fut)?
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
            .is_some_and(|p| mpspy_capture::win32::same_path(p, r"\\.\pipe\"))
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
fn misbehave(args: &[String]) -> Result<ExitCode> {
    misbehave::run(args)
}

#[cfg(not(unix))]
fn misbehave(_args: &[String]) -> Result<ExitCode> {
    bail!("misbehave is only supported on unix")
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
/// through `Init.makeRpc` / `Rpc.executeRpc` and prints the reply.
///
/// `sv2-tp [-datadir=DIR] [-conf=…] [chain] -ipcconnect=unix[:PATH]`: a template provider's
/// session instead (Mining, BlockTemplate); `-conf` is accepted and, as sv2-tp reads `-conf=0`
/// as "no config file", never read. Only what tests need.
fn client_stand_in(name: &str, args: &[String]) -> Result<ExitCode> {
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
    let session = if name == "sv2-tp" {
        client::SessionOptions {
            echo: Vec::new(),
            mining: true,
            ..client::SessionOptions::default()
        }
    } else {
        client::SessionOptions {
            echo: Vec::new(),
            rpc: vec![method.ok_or_else(|| anyhow!("too few parameters"))?],
            ..client::SessionOptions::default()
        }
    };
    block_on(client::run_client(client::Options::new(
        format!("unix:{}", path.display()),
        session,
    )))
}
