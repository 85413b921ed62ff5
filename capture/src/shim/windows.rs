//! The Windows side of the spawn shim protocol (protocol README §5.4: "a relay on Windows
//! cannot reuse an fd number; it must create its own pair and play the pipe server towards the
//! real child and the pipe client towards the parent").
//!
//! `mpspy -- PROGRAM` starts the program with argv0 in a private directory of stand-ins
//! (copies or hard links of mpspy.exe named like the programs next to PROGRAM), so a spawn of
//! `<dirname(argv0)>\NAME -ipcfd \\.\pipe\…` runs mpspy. That shim:
//!
//! 1. opens the pipe as the child would and receives the parent's socket A
//!    ([`winspawn::adopt_spawned`]),
//! 2. spawns the real `NAME.exe` with its own pair and pipe, argv0 unchanged (still in the
//!    stand-in directory, so the child's own spawns are interposed too): socket B1 is ours,
//!    B2 the child's,
//! 3. connects to mpspy at [`ENV_CONTROL`] (loopback TCP) and sends one message: a
//!    [`SpawnHeader`] (with [`ENV_TOKEN`]'s token, so no other local process can hand mpspy
//!    sockets) and A and B1 duplicated for mpspy's pid ([`ENV_MAIN_PID`]) as
//!    `WSAPROTOCOL_INFO` blobs ([`send_spawn`]); mpspy rebuilds them ([`recv_spawn`]), relays
//!    A ⇄ B1 and answers `ok` ([`super::send_reply`]),
//! 4. closes its own copies only after that answer (so the sockets never lack an owner), waits
//!    for the real child and exits with its exit code.
//!
//! Why hand the sockets over instead of relaying in the shim and streaming copies to mpspy:
//! one relay, one copy of each byte, and the same relay and tap as every other connection.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use serde::{Deserialize, Serialize};

use super::{FdArg, MAX_HEADER, invalid};
use crate::winspawn;

/// A random token the shims must present; mpspy refuses control connections without it.
pub const ENV_TOKEN: &str = "MPSPY_SHIM_TOKEN";
/// mpspy's pid, for whom the shim duplicates the sockets.
pub const ENV_MAIN_PID: &str = "MPSPY_SHIM_MAIN_PID";

/// Whether `argv` (with argv0) is a spawned child's on Windows: `NAME -ipcfd PIPE` (Bitcoin's
/// rule: exactly argc == 3 and argv\[1\] == `-ipcfd`) or `NAME PIPE` (the examples), where a bare
/// PIPE must look like `\\.\pipe\…` (a lone argument that is not one is an ordinary start).
/// Returns the shape and the pipe path.
#[must_use]
pub fn spawn_pipe_arg(argv: &[OsString]) -> Option<(FdArg, String)> {
    match argv {
        [_, flag, p] if flag == "-ipcfd" => {
            let p = p.to_str()?;
            (!p.is_empty()).then(|| (FdArg::Ipcfd, p.to_string()))
        }
        [_, p] => {
            let p = p.to_str()?;
            let prefix = p.get(..9)?;
            (crate::win32::same_path(prefix, r"\\.\pipe\") && p.len() > 9)
                .then(|| (FdArg::Bare, p.to_string()))
        }
        _ => None,
    }
}

/// What the shim tells mpspy about a spawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnHeader {
    /// [`ENV_TOKEN`]'s value.
    pub token: String,
    /// The spawning process (the Cap'n Proto client), from the pipe's server, where known.
    pub parent_pid: Option<u32>,
    /// The shim's own pid (what the parent knows as its child's pid).
    pub shim_pid: u32,
    /// The real child, serving on the other end of the relayed connection.
    pub child_pid: u32,
    /// The executable name (the stand-in's file name without `.exe`).
    pub name: String,
    /// The argv the parent gave (argv0 is the stand-in's path); the real child gets the same,
    /// with our pipe's path for the parent's.
    pub argv: Vec<String>,
    /// How the pipe path was passed.
    pub mode: FdArg,
}

/// The message on the wire: the header and the two sockets' blobs.
#[derive(Serialize, Deserialize)]
struct Message {
    header: SpawnHeader,
    /// The parent's socket (A), duplicated for mpspy.
    parent: Vec<u8>,
    /// Our end (B1) of the pair whose other end the real child serves on.
    child: Vec<u8>,
}

/// A spawn as mpspy receives it.
#[derive(Debug)]
pub struct Spawned {
    /// What the shim said.
    pub header: SpawnHeader,
    /// The parent's socket: the client side.
    pub parent: TcpStream,
    /// The socket towards the real child: the server side.
    pub child: TcpStream,
}

fn spawn_error(e: winspawn::SpawnError) -> io::Error {
    io::Error::other(e)
}

/// Sends the header and the two sockets, duplicated for process `to_pid`: a 4-byte
/// little-endian length, then JSON. Our handles stay open; close them only after mpspy's
/// answer.
///
/// # Errors
/// Socket errors; a socket that cannot be duplicated.
pub fn send_spawn(
    mut control: &TcpStream,
    header: &SpawnHeader,
    parent: &TcpStream,
    child: &TcpStream,
    to_pid: u32,
) -> io::Result<()> {
    let msg = Message {
        header: header.clone(),
        parent: winspawn::duplicate_socket(parent, to_pid).map_err(spawn_error)?,
        child: winspawn::duplicate_socket(child, to_pid).map_err(spawn_error)?,
    };
    let json = serde_json::to_vec(&msg).map_err(|e| invalid(e.to_string()))?;
    let len = u32::try_from(json.len()).map_err(|_| invalid("header too long"))?;
    let mut bytes = len.to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    control.write_all(&bytes)
}

/// Receives one [`send_spawn`] message, refuses it unless it carries `token`, and rebuilds the
/// two sockets (which must have been duplicated for this process).
///
/// # Errors
/// Socket errors, a connection that closes early, a bad header or token, sockets that cannot
/// be rebuilt.
pub fn recv_spawn(mut control: &TcpStream, token: &str) -> io::Result<Spawned> {
    let mut len = [0u8; 4];
    control.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(invalid(format!("header of {len} bytes")));
    }
    let mut json = vec![0u8; len];
    control.read_exact(&mut json)?;
    let msg: Message = serde_json::from_slice(&json).map_err(|e| invalid(e.to_string()))?;
    // Not constant-time: the token guards against confused or stray local processes, and a
    // local attacker able to time this could as well read our environment.
    if msg.header.token != token {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "wrong or missing shim token",
        ));
    }
    Ok(Spawned {
        parent: winspawn::socket_from_protocol_info(&msg.parent).map_err(spawn_error)?,
        child: winspawn::socket_from_protocol_info(&msg.child).map_err(spawn_error)?,
        header: msg.header,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;
    use crate::shim::{read_reply, send_reply};

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn recognises_the_two_spawn_shapes_with_pipes() {
        assert_eq!(
            spawn_pipe_arg(&os(&["x", "-ipcfd", r"\\.\pipe\mp-1-1"])),
            Some((FdArg::Ipcfd, r"\\.\pipe\mp-1-1".into()))
        );
        assert_eq!(
            spawn_pipe_arg(&os(&["x", r"\\.\PIPE\mp-1-2"])),
            Some((FdArg::Bare, r"\\.\PIPE\mp-1-2".into()))
        );
        for no in [
            &["x"][..],
            &["x", "-ipcfd"],
            &["x", "-regtest"],
            &["x", r"\\.\pipe\"],
            &["x", "-ipcfd", ""],
            &["x", "-ipcfd", "p", "-regtest"],
        ] {
            assert_eq!(spawn_pipe_arg(&os(no)), None, "{no:?}");
        }
    }

    fn header(token: &str) -> SpawnHeader {
        SpawnHeader {
            token: token.into(),
            parent_pid: Some(10),
            shim_pid: 11,
            child_pid: 12,
            name: "bitcoin-wallet".into(),
            argv: vec![
                r"C:\s\bitcoin-wallet".into(),
                "-ipcfd".into(),
                r"\\.\pipe\mp-10-1".into(),
            ],
            mode: FdArg::Ipcfd,
        }
    }

    /// Both sides in one process (the sockets are duplicated for our own pid): the header
    /// arrives, the rebuilt sockets are the same connections, and a wrong token is refused.
    #[test]
    fn the_header_and_both_sockets_cross_the_control_connection() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut parent_far, parent_near) = winspawn::socket_pair().unwrap();
        let (child_near, mut child_far) = winspawn::socket_pair().unwrap();
        let shim = std::thread::spawn(move || {
            let conn = TcpStream::connect(addr).unwrap();
            let pid = std::process::id();
            send_spawn(&conn, &header("secret"), &parent_near, &child_near, pid).unwrap();
            read_reply(&conn).unwrap();
            let conn = TcpStream::connect(addr).unwrap();
            send_spawn(&conn, &header("guess"), &parent_near, &child_near, pid).unwrap();
            read_reply(&conn).unwrap_err()
        });
        let (conn, _) = listener.accept().unwrap();
        let got = recv_spawn(&conn, "secret").unwrap();
        send_reply(&conn, Ok(())).unwrap();
        assert_eq!(got.header, header("secret"));
        let (conn, _) = listener.accept().unwrap();
        let refused = recv_spawn(&conn, "secret").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        send_reply(&conn, Err(&refused.to_string())).unwrap();
        assert!(shim.join().unwrap().to_string().contains("token"));

        let mut b = [0u8; 5];
        parent_far.write_all(b"hello").unwrap();
        (&got.parent).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        (&got.child).write_all(b"world").unwrap();
        child_far.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"world");
    }
}
