//! The spawn shim's protocol: how a spawned child's socket reaches mpspy.
//!
//! libmultiprocess spawns a child as `<dirname(argv0)>/NAME -ipcfd N` (Bitcoin) or
//! `<dirname(argv0)>/NAME N` (the libmultiprocess examples), with fd N its end of a socketpair
//! (protocol README §5.1–5.3). `mpspy -- PROGRAM` starts the program with an argv0 inside a
//! private shim directory whose entries are symlinks to mpspy, so every such spawn runs mpspy
//! first. That shim:
//!
//! 1. takes fd N (the parent's socket; [`crate::fd::take_inherited_fd`]),
//! 2. creates a new socketpair (a, b),
//! 3. connects to mpspy's control socket ([`ENV_CONTROL`]) and sends one message: a
//!    [`SpawnHeader`] plus the two fds N (parent side) and a (child side) by `SCM_RIGHTS`
//!    ([`send_spawn`]), and waits for mpspy's answer ([`read_reply`]): mpspy relays N ⇄ a,
//! 4. makes fd number N refer to b (`dup2`), so the child's argv stays byte for byte what the
//!    parent asked for, and
//! 5. execs the real program (`<real dir>/NAME`) in its own process: same pid, same argv (argv0
//!    still in the shim directory, so the child's own spawns are interposed too), same
//!    environment plus [`ENV_EXECED`].
//!
//! Steps 1–4 are [`hand_off`]. If anything before mpspy's "ok" fails, fd N is left exactly as
//! it was and the real program runs on it directly: no interposition, but nothing breaks.
//!
//! Windows has no fd numbers to keep and no exec; its shim is a process of its own between
//! the two (`windows`, Windows only).

use std::io::{self, BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
pub mod windows;

/// Where mpspy's control socket is (unix: a path; Windows: a loopback `127.0.0.1:PORT`); its
/// presence (with [`ENV_DIR`]) makes mpspy a shim.
pub const ENV_CONTROL: &str = "MPSPY_SHIM_CONTROL";
/// The shim directory: mpspy runs as a shim when its argv0 (unix) or its own executable
/// (Windows) is in it.
pub const ENV_DIR: &str = "MPSPY_SHIM_DIR";
/// The directory holding the real programs the shim entries stand for.
pub const ENV_REAL_DIR: &str = "MPSPY_SHIM_REAL_DIR";
/// Set (to `1`) when mpspy runs with `--quiet`: a shim then writes nothing on the program's
/// stderr unless it cannot run the program at all.
pub const ENV_QUIET: &str = "MPSPY_SHIM_QUIET";
/// Set by the shim to its own pid just before it execs the real program. If the real program
/// is mpspy itself (a symlink, like the demo's `mpspy-testpeer`), this stops it from taking
/// itself for a shim again; other pids (its children) are unaffected.
pub const ENV_EXECED: &str = "MPSPY_SHIM_EXECED";

/// Longest header accepted.
const MAX_HEADER: usize = 1 << 20;

/// How a spawned child is given its fd number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdArg {
    /// Bitcoin: `NAME -ipcfd N` (argc == 3).
    Ipcfd,
    /// libmultiprocess examples (`mpprinter`, `mpcalculator`): `NAME N` (argc == 2).
    Bare,
}

impl FdArg {
    /// How the connection label names it.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            FdArg::Ipcfd => "spawned -ipcfd",
            FdArg::Bare => "spawned fd",
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// mpspy's answer: `ok` once it relays the connection, otherwise why not. One line.
///
/// # Errors
/// Socket errors.
pub fn send_reply(mut control: impl Write, result: Result<(), &str>) -> io::Result<()> {
    let line = match result {
        Ok(()) => "ok\n".to_string(),
        Err(why) => format!("error: {}\n", why.replace('\n', " ")),
    };
    control.write_all(line.as_bytes())
}

/// Reads [`send_reply`]'s answer.
///
/// # Errors
/// mpspy's refusal ([`io::ErrorKind::Other`] with its reason), or a connection that closed
/// without an answer.
pub fn read_reply(control: impl Read) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(control).read_line(&mut line)?;
    match line.trim_end() {
        "ok" => Ok(()),
        "" => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "mpspy closed the control connection without an answer",
        )),
        other => Err(io::Error::other(
            other.strip_prefix("error: ").unwrap_or(other).to_string(),
        )),
    }
}
