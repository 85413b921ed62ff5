//! The unix side of the spawn shim protocol: the fds travel by `SCM_RIGHTS`.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use super::{FdArg, MAX_HEADER, invalid, read_reply};

/// Whether `argv` (with argv0) is a spawned child's: `NAME -ipcfd N` or `NAME N`, N decimal.
/// Bitcoin treats a process as spawned only for exactly `argc == 3 && argv[1] == "-ipcfd"`;
/// the examples need exactly `argc == 2`. Anything else is an ordinary start.
#[must_use]
pub fn spawn_fd_arg(argv: &[OsString]) -> Option<(FdArg, RawFd)> {
    let (shape, n) = match argv {
        [_, flag, n] if flag == "-ipcfd" => (FdArg::Ipcfd, n),
        [_, n] => (FdArg::Bare, n),
        _ => return None,
    };
    let digits = n.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<RawFd>()
        .ok()
        .map(|n| (shape, n))
}

/// What the shim tells mpspy about a spawn, sent with the two fds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnHeader {
    /// The spawning process (the Cap'n Proto client on this connection).
    pub parent_pid: u32,
    /// The spawned process: the shim's own pid, which the real program keeps (it is exec'd).
    pub child_pid: u32,
    /// The executable name (file name of the shim entry).
    pub name: String,
    /// The child's argv as the parent gave it (argv0 is the shim entry's path).
    pub argv: Vec<String>,
    /// How the fd was passed.
    pub mode: FdArg,
    /// The fd number in the child.
    pub fd: RawFd,
}

impl SpawnHeader {
    /// Describes the spawn of `argv` by our parent, in this (the shim's) process.
    #[must_use]
    pub fn for_this_process(argv: &[OsString], mode: FdArg, fd: RawFd) -> SpawnHeader {
        let name = argv
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        SpawnHeader {
            parent_pid: std::os::unix::process::parent_id(),
            child_pid: std::process::id(),
            name,
            argv: argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            mode,
            fd,
        }
    }
}

/// A spawn as mpspy receives it.
#[derive(Debug)]
pub struct Spawned {
    /// What the shim said.
    pub header: SpawnHeader,
    /// The parent's end (fd N in the shim): the client side.
    pub parent: UnixStream,
    /// Our end of the pair whose other end the child serves on: the server side.
    pub child: UnixStream,
}

/// Sends the header and the two fds: a 4-byte little-endian length, then the JSON header; the
/// fds ride on the first byte.
///
/// # Errors
/// Socket errors; an unencodable header.
pub fn send_spawn(
    control: &UnixStream,
    header: &SpawnHeader,
    parent: BorrowedFd<'_>,
    child: BorrowedFd<'_>,
) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(|e| invalid(e.to_string()))?;
    let len = u32::try_from(json.len()).map_err(|_| invalid("header too long"))?;
    let mut msg = len.to_le_bytes().to_vec();
    msg.extend_from_slice(&json);
    let fds = [parent, child];
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let sent = loop {
        match sendmsg(
            control,
            &[IoSlice::new(&msg)],
            &mut cmsg,
            SendFlags::empty(),
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    (&*control).write_all(&msg[sent..])
}

/// Receives one [`send_spawn`] message. The fds come out close-on-exec.
///
/// # Errors
/// Socket errors, a connection that closes early, a message without exactly two fds, a bad
/// header.
pub fn recv_spawn(control: &UnixStream) -> io::Result<Spawned> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    let flags = RecvFlags::CMSG_CLOEXEC;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    let flags = RecvFlags::empty();
    let got = loop {
        match recvmsg(control, &mut [IoSliceMut::new(&mut buf)], &mut cmsg, flags) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    for fd in &fds {
        // Already done by MSG_CMSG_CLOEXEC where it exists; harmless where it did.
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
    }
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(invalid("more fds than expected"));
    }
    let mut have = got.bytes;
    if have == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the shim closed the control connection without a message",
        ));
    }
    if have < 4 {
        (&*control).read_exact(&mut buf[have..4])?;
        have = 4;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_HEADER {
        return Err(invalid(format!("header of {len} bytes")));
    }
    if buf.len() < 4 + len {
        buf.resize(4 + len, 0);
    }
    if have < 4 + len {
        (&*control).read_exact(&mut buf[have..4 + len])?;
    }
    let header: SpawnHeader =
        serde_json::from_slice(&buf[4..4 + len]).map_err(|e| invalid(e.to_string()))?;
    let [parent, child]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|v: Vec<OwnedFd>| invalid(format!("{} fds instead of 2", v.len())))?;
    Ok(Spawned {
        header,
        parent: UnixStream::from(parent),
        child: UnixStream::from(child),
    })
}

/// Interposes mpspy on the spawned connection `parent` (the fd the shim inherited): sends it
/// with one end of a new socketpair to mpspy at `control`, and once mpspy relays them makes
/// `parent`'s fd number refer to the other end (inheritable), which is what the real program
/// will serve on.
///
/// On error `parent` is unchanged (the same socket, same flags): the caller runs the real
/// program on it directly. The caller must keep `parent`'s number open across `exec` either
/// way (e.g. `into_raw_fd`).
///
/// # Errors
/// `parent` is not a socket ([`io::ErrorKind::InvalidInput`]), mpspy is unreachable or
/// refused; socket errors. In the practically impossible case that `dup2` fails after mpspy
/// accepted, [`is_after_commit`] is true and `parent` must not be used.
pub fn hand_off(control: &Path, parent: &mut OwnedFd, header: &SpawnHeader) -> io::Result<()> {
    let stat = rustix::fs::fstat(&*parent)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {} is not a socket", header.fd),
        ));
    }
    let conn = UnixStream::connect(control).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach mpspy at {}: {e}", control.display()),
        )
    })?;
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    send_spawn(&conn, header, parent.as_fd(), ours.as_fd())?;
    read_reply(&conn)?;
    // Committed: mpspy relays the parent's socket from here on. The fd number the child was
    // given now names the new pair's other end. dup2 clears FD_CLOEXEC on the new descriptor;
    // clear it explicitly too, in case the platform's dup2 differs.
    let committed = |e: rustix::io::Errno| io::Error::other(AfterCommit(e.into()));
    loop {
        match rustix::io::dup2(&theirs, parent) {
            Ok(()) => break,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::BUSY) => continue,
            Err(e) => return Err(committed(e)),
        }
    }
    rustix::io::fcntl_setfd(&*parent, rustix::io::FdFlags::empty()).map_err(committed)?;
    Ok(())
}

/// A [`hand_off`] failure after mpspy had taken over the parent's socket: the fd can no longer
/// be given to the real program (mpspy reads it too). The shim exits instead (status 126, like
/// libmultiprocess when its child cannot set up the fd); the parent sees the connection close.
#[derive(Debug)]
struct AfterCommit(io::Error);

impl std::fmt::Display for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "setting up the relayed fd: {}", self.0)
    }
}

impl std::error::Error for AfterCommit {}

/// Whether a [`hand_off`] error came after mpspy took over the socket (so the program must
/// not be run on it).
#[must_use]
pub fn is_after_commit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<AfterCommit>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::send_reply;
    use std::os::unix::net::UnixListener;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn recognises_exactly_the_two_spawn_shapes() {
        assert_eq!(
            spawn_fd_arg(&os(&["/x/bitcoin-wallet", "-ipcfd", "8"])),
            Some((FdArg::Ipcfd, 8))
        );
        assert_eq!(
            spawn_fd_arg(&os(&["/x/mpprinter", "12"])),
            Some((FdArg::Bare, 12))
        );
        for no in [
            &["/x/bitcoin-node"][..],
            &["/x/bitcoin-node", "-ipcfd"],
            &["/x/bitcoin-node", "-ipcfd", "8", "-regtest"],
            &["/x/bitcoin-node", "-ipcfd=8"],
            &["/x/bitcoin-node", "--ipcfd", "8"],
            &["/x/bitcoin-node", "-ipcfd", "-1"],
            &["/x/bitcoin-node", "-ipcfd", "8x"],
            &["/x/bitcoin-node", "-ipcfd", ""],
            &["/x/mpprinter", "+3"],
            &["/x/mpprinter", "-regtest"],
            &["/x/mpprinter", "99999999999999999999"],
        ] {
            assert_eq!(spawn_fd_arg(&os(no)), None, "{no:?}");
        }
    }

    fn header(fd: RawFd) -> SpawnHeader {
        SpawnHeader {
            parent_pid: 10,
            child_pid: 11,
            name: "bitcoin-wallet".into(),
            argv: vec!["/s/bitcoin-wallet".into(), "-ipcfd".into(), fd.to_string()],
            mode: FdArg::Ipcfd,
            fd,
        }
    }

    #[test]
    fn header_and_fds_round_trip_and_the_fds_work() {
        let (shim, mpspy) = UnixStream::pair().unwrap();
        let (mut parent_far, parent_near) = UnixStream::pair().unwrap();
        let (child_near, mut child_far) = UnixStream::pair().unwrap();
        let mut h = header(8);
        // Long enough to need more than one read on the receiving side.
        h.argv.push("x".repeat(200_000));
        let sender = {
            let h = h.clone();
            std::thread::spawn(move || {
                send_spawn(&shim, &h, parent_near.as_fd(), child_near.as_fd()).unwrap();
                read_reply(&shim)
            })
        };
        let got = recv_spawn(&mpspy).unwrap();
        assert_eq!(got.header, h);
        send_reply(&mpspy, Ok(())).unwrap();
        sender.join().unwrap().unwrap();
        let flags = rustix::io::fcntl_getfd(&got.parent).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));

        let mut b = [0u8; 5];
        parent_far.write_all(b"hello").unwrap();
        (&got.parent).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        (&got.child).write_all(b"world").unwrap();
        child_far.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"world");
    }

    #[test]
    fn a_refusal_carries_its_reason_and_a_silent_close_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        send_reply(&b, Err("no relay\nfor you")).unwrap();
        let e = read_reply(&a).unwrap_err();
        assert_eq!(e.to_string(), "no relay for you");
        drop(b);
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert_eq!(
            read_reply(&a).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert_eq!(
            recv_spawn(&a).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    /// A control server that relays one spawn by hand (copying bytes both ways), as mpspy does.
    fn fake_mpspy(listener: UnixListener, accept: bool) -> std::thread::JoinHandle<SpawnHeader> {
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let s = recv_spawn(&conn).unwrap();
            if !accept {
                drop(s.parent);
                drop(s.child);
                send_reply(&conn, Err("not today")).unwrap();
                return s.header;
            }
            send_reply(&conn, Ok(())).unwrap();
            let pump = |mut from: UnixStream, mut to: UnixStream| {
                std::thread::spawn(move || {
                    let _ = io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                })
            };
            pump(s.parent.try_clone().unwrap(), s.child.try_clone().unwrap());
            pump(s.child, s.parent);
            s.header
        })
    }

    fn control_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mpspy-shim-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn hand_off_puts_mpspy_between_parent_and_child_on_the_same_fd_number() {
        let dir = control_dir("ok");
        let path = dir.join("control.sock");
        let server = fake_mpspy(UnixListener::bind(&path).unwrap(), true);

        // The spawn: the parent keeps `parent_end`; the child inherited `inherited`.
        let (mut parent_end, inherited) = UnixStream::pair().unwrap();
        let mut fd = OwnedFd::from(inherited);
        let number = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let ino_before = rustix::fs::fstat(&fd).unwrap().st_ino;
        hand_off(&path, &mut fd, &header(number)).unwrap();
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&fd), number);
        assert_ne!(rustix::fs::fstat(&fd).unwrap().st_ino, ino_before);
        assert!(
            rustix::io::fcntl_getfd(&fd).unwrap().is_empty(),
            "inheritable"
        );
        assert_eq!(server.join().unwrap().fd, number);

        // Bytes flow parent → (mpspy) → child and back, and EOF propagates.
        let mut child = UnixStream::from(fd);
        parent_end.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        child.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        child.write_all(b"pong").unwrap();
        parent_end.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        drop(parent_end);
        assert_eq!(child.read(&mut b).unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hand_off_leaves_the_fd_alone_when_mpspy_refuses_or_is_gone() {
        let dir = control_dir("no");
        let path = dir.join("control.sock");
        let (mut parent_end, inherited) = UnixStream::pair().unwrap();
        let mut fd = OwnedFd::from(inherited);
        let ino = rustix::fs::fstat(&fd).unwrap().st_ino;
        let h = header(std::os::fd::AsRawFd::as_raw_fd(&fd));

        let e = hand_off(&path, &mut fd, &h).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");

        let server = fake_mpspy(UnixListener::bind(&path).unwrap(), false);
        let e = hand_off(&path, &mut fd, &h).unwrap_err();
        assert_eq!(e.to_string(), "not today");
        server.join().unwrap();
        assert_eq!(rustix::fs::fstat(&fd).unwrap().st_ino, ino);

        // Still the parent's socket, directly.
        let mut child = UnixStream::from(fd);
        parent_end.write_all(b"direct").unwrap();
        let mut b = [0u8; 6];
        child.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"direct");

        if let Ok(mut not_socket) = std::fs::File::open("/dev/null").map(OwnedFd::from) {
            let e = hand_off(&path, &mut not_socket, &h).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
