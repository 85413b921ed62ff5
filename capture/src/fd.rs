//! Claiming a file descriptor that was inherited by number.
//!
//! libmultiprocess (and Bitcoin Core) hand a spawned process its end of a socketpair as a decimal
//! fd number on the command line (protocol README §5.1–5.3). Turning that number into an owned
//! handle is the only thing in mpspy that needs `unsafe`, and it happens in exactly one audited
//! function, [`take_inherited_fd`]. Everything else goes through safe `OwnedFd`s (`rustix`).

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first successful [`take_inherited_fd`]: a process inherits its IPC fd once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of fd `n`, inherited from the parent process by the libmultiprocess spawn
/// convention (`NAME -ipcfd N`, or `NAME N` for the libmultiprocess examples).
///
/// Call it early in `main`, before the process opens files of its own, and at most once per
/// process: a second call fails with [`io::ErrorKind::AlreadyExists`]. Fds 0–2 (stdio) are never
/// taken ([`io::ErrorKind::InvalidInput`]), and an fd that is not open fails with `EBADF`.
///
/// # Errors
/// As above; `n` is left untouched (still open if it was) whenever this fails.
#[allow(unsafe_code)]
pub fn take_inherited_fd(n: RawFd) -> io::Result<OwnedFd> {
    if n < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {n} is not an inherited IPC socket (0-2 are stdio)"),
        ));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "an inherited fd was already taken in this process",
        ));
    }
    // SAFETY: `n` is non-negative. The borrow lives only for the `F_GETFD` probe below, which
    // reads the descriptor flags and has no effect on the descriptor; if `n` is not open the
    // kernel answers EBADF and nothing else happens.
    let probe = unsafe { BorrowedFd::borrow_raw(n) };
    if let Err(e) = rustix::io::fcntl_getfd(probe) {
        TAKEN.store(false, Ordering::SeqCst);
        return Err(io::Error::from(e));
    }
    // SAFETY: `n` is open (checked just above) and was inherited from our parent, which passed
    // its number to us by the libmultiprocess convention: nothing in this process opened it,
    // so no other owner (`File`, `OwnedFd`, std's stdio) exists. It is taken at most once per
    // process (`TAKEN`), so this is the only `OwnedFd` for it, and it is closed only when that
    // value is dropped.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;

    // One test only: the fd can be taken once per process (the test binary is one process).
    #[test]
    fn takes_an_open_fd_once_and_refuses_stdio_and_closed_fds() {
        assert_eq!(
            take_inherited_fd(1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // A number far above anything open in the test process.
        assert_eq!(
            take_inherited_fd(1_000_000).unwrap_err().raw_os_error(),
            Some(rustix::io::Errno::BADF.raw_os_error())
        );

        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let n = theirs.into_raw_fd();
        let mut taken = UnixStream::from(take_inherited_fd(n).unwrap());
        ours.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        taken.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");

        let (_a, b) = UnixStream::pair().unwrap();
        let m = b.into_raw_fd();
        assert_eq!(
            take_inherited_fd(m).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        // Still ours to close: the refused call must not have claimed it.
        drop(take_back(m));
    }

    fn take_back(m: RawFd) -> OwnedFd {
        TAKEN.store(false, Ordering::SeqCst);
        take_inherited_fd(m).unwrap()
    }
}
