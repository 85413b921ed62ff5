//! Where a connection comes from: a unix socket, or a program spawned the way Bitcoin and the
//! libmultiprocess examples spawn theirs (protocol digest §5.1–5.4).
//!
//! On unix the child gets its end of a socketpair as an inherited fd number (`PROGRAM -ipcfd N`,
//! or `PROGRAM N` in the examples' shape). On Windows there are no fd numbers to inherit: the
//! child gets a named pipe path instead and receives a loopback TCP socket through it
//! (libmultiprocess PR #231), which `mpspy_capture::winspawn` implements for both sides; this
//! module only drives it.
//!
//! The streams here are std's, blocking; [`into_tokio`] registers one with the event loop that
//! runs the connection.

use std::io;
#[cfg(unix)]
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::ClientError;

/// The connection's stream: a unix socket; on Windows, one end of the loopback TCP pair the
/// named pipe protocol hands out.
#[cfg(unix)]
pub type StdStream = std::os::unix::net::UnixStream;
/// The connection's stream: a unix socket; on Windows, one end of the loopback TCP pair the
/// named pipe protocol hands out.
#[cfg(windows)]
pub type StdStream = std::net::TcpStream;

/// [`StdStream`] on the event loop.
#[cfg(unix)]
pub type Stream = tokio::net::UnixStream;
/// [`StdStream`] on the event loop.
#[cfg(windows)]
pub type Stream = tokio::net::TcpStream;

/// Changes to a spawned child's environment: set (`Some`) or remove (`None`).
pub type EnvChanges = [(String, Option<String>)];

/// How far a spawned child waits for its parent to go before it is killed, by default: a
/// libmultiprocess child exits as soon as it sees the connection close.
pub const CHILD_EXIT_GRACE: Duration = Duration::from_secs(30);

/// How a spawned child gets its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdArg {
    /// Bitcoin: `PROGRAM -ipcfd N` (exactly these three arguments, or Bitcoin does not take it
    /// for a spawned process).
    Ipcfd,
    /// The libmultiprocess examples: `PROGRAM N`.
    Bare,
}

/// Registers `stream` with the tokio runtime this is called in.
///
/// # Errors
///
/// Not inside a runtime with I/O enabled, or the stream cannot be made non-blocking.
pub fn into_tokio(stream: StdStream) -> io::Result<Stream> {
    stream.set_nonblocking(true)?;
    Stream::from_std(stream)
}

/// Connects to the unix socket at `path`.
///
/// # Errors
///
/// [`ClientError::Connect`]: no such socket, nobody listening on it (refused), no permission.
#[cfg(unix)]
pub fn unix(path: &Path) -> Result<StdStream, ClientError> {
    StdStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })
}

/// A spawned program and our end of its connection.
#[derive(Debug)]
pub struct Spawned {
    /// Our end, blocking.
    pub stream: StdStream,
    /// The program.
    pub child: Child,
}

/// Spawns `program` with the other end of a fresh connection, as `fd_arg` says, with `env`
/// changed in its environment. A bare name is looked up as the platform's spawns do (unix:
/// `PATH`; Windows: mpspy's own directory, then `PATH`, `.exe` optional). Returns once the
/// child has its end (on Windows that is when it has taken the socket from the pipe).
///
/// On unix the child's end is inheritable for the moment of the spawn: callers that spawn
/// from several threads at once would leak it into each other's children (mpspy and the test
/// peer spawn from one thread).
///
/// # Errors
///
/// [`ClientError::Spawn`]: the program cannot be run, or (Windows) it exited before it took
/// its socket.
pub fn spawn(program: &str, fd_arg: FdArg, env: &EnvChanges) -> Result<Spawned, ClientError> {
    imp::spawn(program, fd_arg, env).map_err(|source| ClientError::Spawn {
        program: program.to_string(),
        source,
    })
}

/// A spawned program, which we wait for or end.
#[derive(Debug)]
pub struct Child(imp::Child);

impl Child {
    /// The child's process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The exit status if the child has exited, without waiting.
    ///
    /// # Errors
    ///
    /// The OS could not say.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }

    /// Waits for the child to exit. Blocks.
    ///
    /// # Errors
    ///
    /// The OS could not say.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.0.wait()
    }

    /// Ends the child.
    ///
    /// # Errors
    ///
    /// The OS refused (ending one that has already exited is not an error).
    pub fn kill(&mut self) -> io::Result<()> {
        self.0.kill()
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running. Blocks.
    ///
    /// # Errors
    ///
    /// The OS could not say.
    pub fn wait_timeout(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`Child::wait_timeout`] for an event loop: waits without blocking it.
    ///
    /// # Errors
    ///
    /// The OS could not say.
    pub async fn wait_timeout_async(&mut self, limit: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `limit` for the child to exit, then kills it and waits for that. The status,
    /// and whether it had to be killed.
    ///
    /// # Errors
    ///
    /// The OS could not say, or refused to end the child.
    pub fn wait_or_kill(&mut self, limit: Duration) -> io::Result<(ExitStatus, bool)> {
        if let Some(status) = self.wait_timeout(limit)? {
            return Ok((status, false));
        }
        self.kill()?;
        Ok((self.wait()?, true))
    }
}

/// How often a wait looks at the child: polling keeps waits portable (std has no timed wait on
/// unix) and costs a child that exits at once at most this much.
const POLL: Duration = Duration::from_millis(5);

#[cfg(unix)]
mod imp {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::process::Command;

    use super::{EnvChanges, FdArg, Spawned, StdStream};

    pub(super) type Child = std::process::Child;

    /// `socketpair(AF_UNIX, SOCK_STREAM)`, then `program -ipcfd <child's fd>` (or `program
    /// <fd>`) with the child's end inherited; our copy of that end is closed once it runs.
    pub(super) fn spawn(program: &str, fd_arg: FdArg, env: &EnvChanges) -> io::Result<Spawned> {
        let (ours, theirs) = StdStream::pair()?;
        // std creates both ends close-on-exec; the child's end must survive exec. Ours stays
        // close-on-exec so the child never holds it (it would then never see us close).
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
        let mut cmd = Command::new(program);
        if fd_arg == FdArg::Ipcfd {
            cmd.arg("-ipcfd");
        }
        cmd.arg(theirs.as_raw_fd().to_string());
        for (key, value) in env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let child = cmd.spawn()?;
        drop(theirs);
        Ok(Spawned {
            stream: ours,
            child: super::Child(child),
        })
    }
}

#[cfg(windows)]
mod imp {
    use std::io;
    use std::process::ExitStatus;

    use mpspy_capture::winspawn;

    use super::{EnvChanges, FdArg, Spawned};

    /// winspawn's child, with std's `&mut self` methods.
    #[derive(Debug)]
    pub(super) struct Child(winspawn::Child);

    impl Child {
        pub(super) fn id(&self) -> u32 {
            self.0.id()
        }

        pub(super) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
            self.0.try_wait()
        }

        pub(super) fn wait(&mut self) -> io::Result<ExitStatus> {
            self.0.wait()
        }

        pub(super) fn kill(&mut self) -> io::Result<()> {
            self.0.kill()
        }
    }

    /// `program -ipcfd \\.\pipe\mp-<our pid>-<n>` (or the path alone), and the socket handed
    /// over through that pipe.
    pub(super) fn spawn(program: &str, fd_arg: FdArg, env: &EnvChanges) -> io::Result<Spawned> {
        let flag = (fd_arg == FdArg::Ipcfd).then_some("-ipcfd");
        let spawned = winspawn::spawn_program(program, flag, env).map_err(io::Error::other)?;
        Ok(Spawned {
            stream: spawned.stream,
            child: super::Child(Child(spawned.child)),
        })
    }
}
