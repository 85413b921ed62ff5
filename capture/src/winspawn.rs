//! The Windows spawn protocol of libmultiprocess PR #231 (protocol README §5.4), both sides.
//!
//! Windows has no fd numbers to inherit, so a spawned child is handed a socket through a named
//! pipe instead:
//!
//! 1. the parent makes a loopback TCP socket pair ([`socket_pair`]) and a named pipe
//!    `\\.\pipe\mp-<parent pid>-<n>` ([`pipe_path`]),
//! 2. starts the child with `CreateProcess`, no handle inheritance, and the pipe path in its
//!    argv (Bitcoin: `NAME -ipcfd \\.\pipe\…`; the examples: `NAME \\.\pipe\…`),
//! 3. waits for the child to open the pipe, racing the child's exit,
//! 4. duplicates the child's end of the pair for the child's pid (`WSADuplicateSocket`), closes
//!    its own copy of that end, writes the `WSAPROTOCOL_INFO` blob into the pipe in one message
//!    and closes the pipe;
//! 5. the child ([`connect_spawned`]) reads the blob and rebuilds the socket from it
//!    (`WSASocket(FROM_PROTOCOL_INFO)`).
//!
//! [`spawn`] is steps 1–4 and [`connect_spawned`] step 5. [`PipeServer`] is steps 3–4 alone,
//! for a relay that already has its socket.
//!
//! Which `WSAPROTOCOL_INFO`: the structure has an ANSI form (372 bytes) and a wide form (628
//! bytes), and a libmultiprocess child reads exactly the size its own build uses (wide only
//! when built with `UNICODE`). We send the ANSI form, what libmultiprocess's own build (no
//! `UNICODE`) sends and reads; as a child we accept either size, so any parent works.
//!
//! Everything here calls Win32 directly: std has no named pipes, no `CreateProcess` without
//! handle inheritance (std's always inherits, for stdio) and no socket duplication. So this is
//! the module with `unsafe`; each block says what it relies on.

use std::ffi::OsStr;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{
    AsRawHandle, AsRawSocket, FromRawHandle, FromRawSocket, OwnedHandle, RawHandle,
};
use std::os::windows::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    DUPLICATE_SAME_ACCESS, DuplicateHandle, ERROR_BROKEN_PIPE, ERROR_IO_PENDING,
    ERROR_PIPE_CONNECTED, FALSE, GENERIC_READ, HANDLE, INVALID_HANDLE_VALUE, TRUE, WAIT_FAILED,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Networking::WinSock::{
    FROM_PROTOCOL_INFO, INVALID_SOCKET, SOCKET, WSA_FLAG_NO_HANDLE_INHERIT, WSA_FLAG_OVERLAPPED,
    WSADATA, WSADuplicateSocketA, WSAGetLastError, WSAPROTOCOL_INFOA, WSAPROTOCOL_INFOW,
    WSASocketA, WSASocketW, WSAStartup,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, FILE_SHARE_NONE,
    OPEN_EXISTING, PIPE_ACCESS_OUTBOUND, ReadFile, WriteFile,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, GetNamedPipeServerProcessId, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_MESSAGE, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{
    CREATE_UNICODE_ENVIRONMENT, CreateEventW, CreateProcessW, GetCurrentProcess,
    GetExitCodeProcess, INFINITE, PROCESS_INFORMATION, STARTF_USESTDHANDLES, STARTUPINFOW,
    TerminateProcess, WaitForMultipleObjects, WaitForSingleObject,
};

use crate::win32::command_line;

/// Size of the ANSI `WSAPROTOCOL_INFOA`, what we send.
pub const PROTOCOL_INFO_ANSI: usize = 372;
/// Size of the wide `WSAPROTOCOL_INFOW`, which a `UNICODE` build sends.
pub const PROTOCOL_INFO_WIDE: usize = 628;
const _: () = assert!(size_of::<WSAPROTOCOL_INFOA>() == PROTOCOL_INFO_ANSI);
const _: () = assert!(size_of::<WSAPROTOCOL_INFOW>() == PROTOCOL_INFO_WIDE);

/// What went wrong in a Windows spawn, named like libmultiprocess's messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// A Win32 or Winsock call failed; `call` names it (`CreateProcess`, `ReadFile(pipe)`, …).
    #[error("windows spawn: {call} failed")]
    Call {
        /// The call, as libmultiprocess names it.
        call: &'static str,
        /// What Windows said.
        #[source]
        source: io::Error,
    },
    /// The child ended before it opened the pipe: not a libmultiprocess child, or it failed
    /// at startup.
    #[error("windows spawn: child process exited before connecting to named pipe ({status})")]
    ExitedBeforeConnecting {
        /// How it ended.
        status: ExitStatus,
    },
    /// The pipe took fewer bytes than the blob.
    #[error("windows spawn: WriteFile(pipe): short write ({written} of {expected} bytes)")]
    ShortWrite {
        /// Bytes written.
        written: usize,
        /// Bytes in the blob.
        expected: usize,
    },
    /// Neither `NAME` nor `NAME.exe` was found where a spawn looks ([`find_program`]).
    #[error("windows spawn: no such program: {name} (nor {name}.exe)")]
    NotFound {
        /// The name as given.
        name: String,
    },
    /// The pipe carried something other than a `WSAPROTOCOL_INFO`.
    #[error(
        "windows spawn: the pipe carried {len} bytes, not a WSAPROTOCOL_INFO \
         ({PROTOCOL_INFO_ANSI} or {PROTOCOL_INFO_WIDE})"
    )]
    BadProtocolInfo {
        /// Bytes read.
        len: usize,
    },
}

fn call_failed(call: &'static str) -> SpawnError {
    SpawnError::Call {
        call,
        source: io::Error::last_os_error(),
    }
}

fn wsa_failed(call: &'static str) -> SpawnError {
    // SAFETY: no arguments; reads the calling thread's Winsock error.
    let code = unsafe { WSAGetLastError() };
    SpawnError::Call {
        call,
        source: io::Error::from_raw_os_error(code),
    }
}

/// A NUL-terminated UTF-16 copy of `s`, for `…W` calls.
fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// Takes ownership of `h` if it is a real handle.
fn owned(h: HANDLE, call: &'static str) -> Result<OwnedHandle, SpawnError> {
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return Err(call_failed(call));
    }
    // SAFETY: `h` was just returned to us by the call, is valid and owned by nobody else.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

fn raw(h: &OwnedHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

/// The next pipe path of this process: `\\.\pipe\mp-<pid>-<n>`, `n` counting from 1.
#[must_use]
pub fn pipe_path() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    format!(r"\\.\pipe\mp-{}-{n}", std::process::id())
}

/// A connected loopback TCP pair, as kj's win32 socketpair makes one (AF_UNIX socketpair does
/// not exist on Windows). Both ends have Nagle off: each Cap'n Proto message is one write, and
/// a message must not wait for the previous one's ACK.
pub fn socket_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let ours = TcpStream::connect(listener.local_addr()?)?;
    let our_addr = ours.local_addr()?;
    // Any local process can connect to the port too; take only our own connection.
    let theirs = loop {
        let (stream, from) = listener.accept()?;
        if from == our_addr {
            break stream;
        }
    };
    ours.set_nodelay(true)?;
    theirs.set_nodelay(true)?;
    Ok((ours, theirs))
}

/// A spawned child process, which we wait for or end.
#[derive(Debug)]
pub struct Child {
    process: OwnedHandle,
    pid: u32,
}

impl Child {
    /// The child's process id.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits until the child exits.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        self.wait_timeout(None)
            .map(|s| s.expect("an infinite wait ends with an exit"))
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.wait_timeout(Some(Duration::ZERO))
    }

    /// Waits up to `timeout` (`None`: for ever); `None` if the child is still running.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> io::Result<Option<ExitStatus>> {
        let ms = timeout.map_or(INFINITE, |d| {
            u32::try_from(d.as_millis()).unwrap_or(INFINITE - 1)
        });
        // SAFETY: the handle is ours and open for the life of `self`.
        match unsafe { WaitForSingleObject(raw(&self.process), ms) } {
            WAIT_OBJECT_0 => self.exit_status().map(Some),
            WAIT_TIMEOUT => Ok(None),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn exit_status(&self) -> io::Result<ExitStatus> {
        let mut code = 0u32;
        // SAFETY: valid handle; `code` is a live u32 for the call to fill.
        if unsafe { GetExitCodeProcess(raw(&self.process), &mut code) } == FALSE {
            return Err(io::Error::last_os_error());
        }
        Ok(ExitStatus::from_raw(code))
    }

    /// Ends the child (exit code 1), like `std::process::Child::kill`.
    pub fn kill(&self) -> io::Result<()> {
        // SAFETY: valid handle. Ending an already ended process fails harmlessly.
        if unsafe { TerminateProcess(raw(&self.process), 1) } == FALSE && self.try_wait()?.is_none()
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Changes to the child's environment: each name set to a value, or removed (`None`).
pub type EnvChanges = [(String, Option<String>)];

/// Our environment with `changes` applied, as a `CreateProcessW` Unicode environment block:
/// `NAME=VALUE` strings, each NUL-terminated, sorted by name ignoring case (as Windows keeps
/// them), and one more NUL at the end. Names compare case-insensitively, as on Windows.
fn environment_block(changes: &EnvChanges) -> Vec<u16> {
    let upper = |s: &OsStr| s.to_string_lossy().to_uppercase();
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(name, _)| {
            !changes
                .iter()
                .any(|(changed, _)| upper(name) == changed.to_uppercase())
        })
        .collect();
    for (name, value) in changes {
        if let Some(value) = value {
            vars.push((name.into(), value.into()));
        }
    }
    vars.sort_by_cached_key(|(name, _)| upper(name));
    let mut block = Vec::new();
    for (name, value) in vars {
        block.extend(name.encode_wide());
        block.push(u16::from(b'='));
        block.extend(value.encode_wide());
        block.push(0);
    }
    // An empty block still needs its terminating empty string.
    if block.is_empty() {
        block.push(0);
    }
    block.push(0);
    block
}

/// Starts `program` with the command line made from `argv` (argv0 first; see
/// [`command_line`]), no handle inheritance, our working directory, and our environment with
/// `env` applied.
pub fn create_process(
    program: &Path,
    argv: &[String],
    env: &EnvChanges,
) -> Result<Child, SpawnError> {
    create(program, argv, env, None)
}

/// Where a program started with [`create_process_with_stdio`] writes its output.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Our stdout and stderr, as they are.
    Ours,
    /// Both to our stderr (when our stdout carries something else, e.g. `--json -`).
    Stderr,
    /// Into these pipes (their write ends, closed here once the child has its copies) with
    /// stdin from `NUL`: mpspy's terminal UI owns the console's screen and keys.
    Pipes {
        /// Where the child's stdout goes.
        stdout: OwnedHandle,
        /// Where the child's stderr goes.
        stderr: OwnedHandle,
    },
}

/// [`create_process`] for a program that shares our stdin and output (std's `Command` does
/// that, but cannot give argv0 a path other than the file it runs, which mpspy's spawn shim
/// needs). The standard handles are passed as inheritable duplicates; handle inheritance is on
/// for this call, so every other inheritable handle of ours is inherited too. std and Winsock
/// make theirs non-inheritable, so in mpspy these duplicates are the only ones.
pub fn create_process_with_stdio(
    program: &Path,
    argv: &[String],
    env: &EnvChanges,
    output: Output,
) -> Result<Child, SpawnError> {
    let null_input;
    let handles: [RawHandle; 3] = match &output {
        Output::Ours => [
            io::stdin().as_raw_handle(),
            io::stdout().as_raw_handle(),
            io::stderr().as_raw_handle(),
        ],
        Output::Stderr => [
            io::stdin().as_raw_handle(),
            io::stderr().as_raw_handle(),
            io::stderr().as_raw_handle(),
        ],
        Output::Pipes { stdout, stderr } => {
            null_input = std::fs::File::open("NUL").map_err(|source| SpawnError::Call {
                call: "CreateFile(NUL)",
                source,
            })?;
            [
                null_input.as_raw_handle(),
                stdout.as_raw_handle(),
                stderr.as_raw_handle(),
            ]
        }
    };
    let mut dups = Vec::new();
    for h in handles {
        dups.push(inheritable(h as HANDLE)?);
    }
    let raw_of = |d: &Option<OwnedHandle>| d.as_ref().map_or(null_mut(), raw);
    create(
        program,
        argv,
        env,
        Some([raw_of(&dups[0]), raw_of(&dups[1]), raw_of(&dups[2])]),
    )
    // The child has its own copies now; `dups` (and `output`'s pipe ends) close ours, so
    // readers see the end of the pipes when the child exits.
}

/// An inheritable duplicate of `h`; `None` for a missing handle (no console, detached).
fn inheritable(h: HANDLE) -> Result<Option<OwnedHandle>, SpawnError> {
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return Ok(None);
    }
    let mut dup: HANDLE = null_mut();
    // SAFETY: `h` is one of our standard handles, open while std's stdio is; the duplicate is
    // written into `dup`, a live HANDLE, and owned by us from here on.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            h,
            GetCurrentProcess(),
            &mut dup,
            0,
            TRUE,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == FALSE {
        return Err(call_failed("DuplicateHandle"));
    }
    owned(dup, "DuplicateHandle").map(Some)
}

fn create(
    program: &Path,
    argv: &[String],
    env: &EnvChanges,
    stdio: Option<[HANDLE; 3]>,
) -> Result<Child, SpawnError> {
    let app = wide(program.as_os_str());
    let mut line: Vec<u16> = command_line(argv).encode_utf16().chain(Some(0)).collect();
    // No changes: the parent's environment as it is, like libmultiprocess.
    let block = (!env.is_empty()).then(|| environment_block(env));
    let mut startup = STARTUPINFOW {
        cb: size_of::<STARTUPINFOW>() as u32,
        ..Default::default()
    };
    if let Some([input, output, error]) = stdio {
        startup.dwFlags |= STARTF_USESTDHANDLES;
        startup.hStdInput = input;
        startup.hStdOutput = output;
        startup.hStdError = error;
    }
    let mut info = PROCESS_INFORMATION::default();
    // SAFETY: `app` and `line` are NUL-terminated and live across the call (CreateProcessW may
    // write into `line`, which is why it is a mutable buffer of our own); `block` is a
    // well-formed Unicode environment block (flagged as such) or null; the other pointers are
    // null (defaults) or point at live structures of the right type.
    let ok = unsafe {
        CreateProcessW(
            app.as_ptr(),
            line.as_mut_ptr(),
            null(),
            null(),
            if stdio.is_some() { TRUE } else { FALSE },
            if block.is_some() {
                CREATE_UNICODE_ENVIRONMENT
            } else {
                0
            },
            block.as_ref().map_or(null(), |b| b.as_ptr().cast()),
            null(),
            &startup,
            &mut info,
        )
    };
    if ok == FALSE {
        return Err(call_failed("CreateProcess"));
    }
    // Nothing here needs the thread handle; close it at once as libmultiprocess does.
    drop(owned(info.hThread, "CreateProcess")?);
    Ok(Child {
        process: owned(info.hProcess, "CreateProcess")?,
        pid: info.dwProcessId,
    })
}

/// A manual-reset event for one overlapped operation.
fn event() -> Result<OwnedHandle, SpawnError> {
    // SAFETY: all-default arguments: no security attributes, no name.
    owned(
        unsafe { CreateEventW(null(), TRUE, FALSE, null()) },
        "CreateEvent",
    )
}

/// The server end of a spawn pipe: created before the child starts, then handed one socket.
#[derive(Debug)]
pub struct PipeServer {
    pipe: OwnedHandle,
    path: String,
}

impl PipeServer {
    /// Creates the pipe at `path` as libmultiprocess does: outbound only, overlapped, message
    /// type, one instance, default buffer sizes. Two additions that change nothing for a
    /// well-behaved child: `FIRST_PIPE_INSTANCE` (fail rather than share a name someone else
    /// made first) and `REJECT_REMOTE_CLIENTS` (the blob is for a local process only).
    pub fn create(path: &str) -> Result<PipeServer, SpawnError> {
        let name = wide(OsStr::new(path));
        // SAFETY: `name` is NUL-terminated and outlives the call; no security attributes.
        let h = unsafe {
            CreateNamedPipeW(
                name.as_ptr(),
                PIPE_ACCESS_OUTBOUND | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
                PIPE_TYPE_MESSAGE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                1,
                0,
                0,
                0,
                null(),
            )
        };
        Ok(PipeServer {
            pipe: owned(h, "CreateNamedPipe")?,
            path: path.to_string(),
        })
    }

    /// The pipe's path, for the child's argv.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Waits until a client opens the pipe, or fails if `child` exits first.
    pub fn wait_connected(&self, child: &Child) -> Result<(), SpawnError> {
        let event = event()?;
        let mut ov = OVERLAPPED {
            hEvent: raw(&event),
            ..Default::default()
        };
        // SAFETY: `ov` and its event stay alive and in place until the operation is no longer
        // pending: every path below either sees it complete or cancels it and waits for that.
        if unsafe { ConnectNamedPipe(raw(&self.pipe), &mut ov) } != FALSE {
            return Ok(());
        }
        match io::Error::last_os_error().raw_os_error().map(|c| c as u32) {
            Some(ERROR_PIPE_CONNECTED) => return Ok(()),
            Some(ERROR_IO_PENDING) => {}
            _ => return Err(call_failed("ConnectNamedPipe")),
        }
        let handles = [raw(&event), raw(&child.process)];
        // SAFETY: two valid handles of ours. On equal readiness the lowest index wins, so a
        // child that connected and then exited still counts as connected.
        let woke = unsafe { WaitForMultipleObjects(2, handles.as_ptr(), FALSE, INFINITE) };
        let waited = io::Error::last_os_error();
        let mut n = 0u32;
        if woke == WAIT_OBJECT_0 {
            // SAFETY: the operation has completed (its event is set); `ov` is still in place.
            if unsafe { GetOverlappedResult(raw(&self.pipe), &ov, &mut n, FALSE) } == FALSE {
                return Err(call_failed("ConnectNamedPipe"));
            }
            return Ok(());
        }
        // The child exited, or the wait failed: the connect is still pending and must be over
        // before `ov` goes away.
        // SAFETY: cancels only our operation on our handle, then waits for it to finish
        // (completed or aborted, either is fine) while `ov` is still in place.
        unsafe {
            CancelIoEx(raw(&self.pipe), &ov);
            GetOverlappedResult(raw(&self.pipe), &ov, &mut n, TRUE);
        }
        if woke == WAIT_OBJECT_0 + 1 {
            return Err(SpawnError::ExitedBeforeConnecting {
                status: child.exit_status().map_err(|source| SpawnError::Call {
                    call: "GetExitCodeProcess",
                    source,
                })?,
            });
        }
        debug_assert_eq!(woke, WAIT_FAILED);
        Err(SpawnError::Call {
            call: "WaitForMultipleObjects",
            source: waited,
        })
    }

    /// Duplicates `socket` for process `pid`, closes our copy of it, writes the
    /// `WSAPROTOCOL_INFOA` blob in one message and closes the pipe.
    pub fn send_socket(self, socket: TcpStream, pid: u32) -> Result<(), SpawnError> {
        let blob = duplicate_socket(&socket, pid)?;
        // The child's copy lives on in the blob; ours must go, or the parent would keep the
        // connection open after the child exits.
        drop(socket);
        let event = event()?;
        let mut ov = OVERLAPPED {
            hEvent: raw(&event),
            ..Default::default()
        };
        let mut written = 0u32;
        // SAFETY: `blob` and `ov` stay in place until GetOverlappedResult below has waited for
        // the write to finish.
        unsafe {
            if WriteFile(
                raw(&self.pipe),
                blob.as_ptr(),
                blob.len() as u32,
                null_mut(),
                &mut ov,
            ) == FALSE
                && io::Error::last_os_error().raw_os_error() != Some(ERROR_IO_PENDING as i32)
            {
                return Err(call_failed("WriteFile(pipe)"));
            }
            if GetOverlappedResult(raw(&self.pipe), &ov, &mut written, TRUE) == FALSE {
                return Err(call_failed("WriteFile(pipe)"));
            }
        }
        if written as usize != blob.len() {
            return Err(SpawnError::ShortWrite {
                written: written as usize,
                expected: blob.len(),
            });
        }
        // Closing our end keeps the message readable; the child then sees the end of the pipe.
        drop(self);
        Ok(())
    }
}

/// Duplicates `socket` for process `pid` (`WSADuplicateSocket`): the `WSAPROTOCOL_INFOA` blob
/// (ANSI form, [`PROTOCOL_INFO_ANSI`] bytes) from which that process rebuilds the socket with
/// [`socket_from_protocol_info`]. Our own handle stays open and usable.
pub fn duplicate_socket(socket: &TcpStream, pid: u32) -> Result<Vec<u8>, SpawnError> {
    let mut info = WSAPROTOCOL_INFOA::default();
    // SAFETY: a valid socket of ours, and `info` is a live structure for the call to fill.
    if unsafe { WSADuplicateSocketA(socket.as_raw_socket() as SOCKET, pid, &mut info) } != 0 {
        return Err(wsa_failed("WSADuplicateSocket"));
    }
    // SAFETY: WSAPROTOCOL_INFOA is plain old data without padding (all fields 4-byte aligned,
    // size asserted above); viewing it as bytes reads only initialised memory.
    let blob =
        unsafe { std::slice::from_raw_parts((&raw const info).cast::<u8>(), PROTOCOL_INFO_ANSI) };
    Ok(blob.to_vec())
}

/// Rebuilds a socket from a `WSAPROTOCOL_INFO` blob made for this process (either form, told
/// apart by size). The socket is overlapped and not inheritable, like std's own.
pub fn socket_from_protocol_info(blob: &[u8]) -> Result<TcpStream, SpawnError> {
    let mut data = WSADATA::default();
    // SAFETY: `data` is a live structure for the call to fill. Winsock counts startups, so
    // this is harmless next to std's own.
    if unsafe { WSAStartup(0x0202, &mut data) } != 0 {
        return Err(wsa_failed("WSAStartup()"));
    }
    let flags = WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT;
    let any = FROM_PROTOCOL_INFO;
    // SAFETY (both arms): the blob is exactly the structure's size, and both structures are
    // plain old data, so any bytes make a value; read_unaligned copies it out of the buffer.
    let socket = match blob.len() {
        PROTOCOL_INFO_ANSI => unsafe {
            let info = blob.as_ptr().cast::<WSAPROTOCOL_INFOA>().read_unaligned();
            WSASocketA(any, any, any, &info, 0, flags)
        },
        PROTOCOL_INFO_WIDE => unsafe {
            let info = blob.as_ptr().cast::<WSAPROTOCOL_INFOW>().read_unaligned();
            WSASocketW(any, any, any, &info, 0, flags)
        },
        len => return Err(SpawnError::BadProtocolInfo { len }),
    };
    if socket == INVALID_SOCKET {
        return Err(wsa_failed("WSASocket(FROM_PROTOCOL_INFO)"));
    }
    // SAFETY: a new socket that nothing else owns.
    Ok(unsafe { TcpStream::from_raw_socket(socket as _) })
}

/// The file a spawn of `name` runs: [`resolve_program`](crate::win32::resolve_program), `.exe`
/// appended where there is no extension. A bare name is looked for in our own executable's
/// directory and then in `PATH`, as `CreateProcess` and std's `Command` do (neither of them
/// the current directory first: std leaves it out, and so do we).
#[must_use]
pub fn find_program(name: &str) -> Option<PathBuf> {
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let search = own_dir.into_iter().chain(std::env::split_paths(&path));
    crate::win32::resolve_program(name, search, Path::is_file)
}

/// A spawned child and our end of its connection.
#[derive(Debug)]
pub struct Spawned {
    /// The child process.
    pub child: Child,
    /// Our end of the loopback pair (blocking, as std makes it).
    pub stream: TcpStream,
}

/// Spawns `program` the libmultiprocess way: `make_argv` gets the pipe path and returns the
/// child's argv (argv0 first), e.g. `[path, "-ipcfd", pipe]`. Returns once the child holds its
/// socket. `program` is the file to run (see [`crate::win32::resolve_program`]); `env` changes
/// the child's environment (usually empty).
pub fn spawn(
    program: &Path,
    env: &EnvChanges,
    make_argv: impl FnOnce(&str) -> Vec<String>,
) -> Result<Spawned, SpawnError> {
    let (ours, theirs) = socket_pair().map_err(|source| SpawnError::Call {
        call: "socketpair",
        source,
    })?;
    let pipe = PipeServer::create(&pipe_path())?;
    let child = create_process(program, &make_argv(pipe.path()), env)?;
    let handed = pipe
        .wait_connected(&child)
        .and_then(|()| pipe.send_socket(theirs, child.id()));
    if let Err(e) = handed {
        // A child that is still running waits for a socket it will never get.
        let _ = child.kill();
        return Err(e);
    }
    Ok(Spawned {
        child,
        stream: ours,
    })
}

/// Spawns program `name` as libmultiprocess spawns `<dir>\NAME`: the file is
/// [`find_program`]'s, and the argv is `name` as given, then `flag` if any (Bitcoin's
/// `-ipcfd`; none in the examples' shape), then the pipe path.
pub fn spawn_program(
    name: &str,
    flag: Option<&str>,
    env: &EnvChanges,
) -> Result<Spawned, SpawnError> {
    let file = find_program(name).ok_or_else(|| SpawnError::NotFound { name: name.into() })?;
    spawn(&file, env, |pipe| {
        let mut argv = vec![name.to_string()];
        argv.extend(flag.map(String::from));
        argv.push(pipe.into());
        argv
    })
}

/// The child side: opens the pipe at `path` (the argument after `-ipcfd`), reads the
/// `WSAPROTOCOL_INFO` blob (either size) and rebuilds the socket from it. The socket is
/// overlapped and not inheritable, like std's own.
pub fn connect_spawned(path: &str) -> Result<TcpStream, SpawnError> {
    adopt_spawned(path).map(|a| a.stream)
}

/// What the child side of a spawn received.
#[derive(Debug)]
pub struct Adopted {
    /// The socket the parent sent.
    pub stream: TcpStream,
    /// The process that served the pipe (the spawning parent), where Windows tells.
    pub parent_pid: Option<u32>,
}

/// [`connect_spawned`], also telling who served the pipe (`GetNamedPipeServerProcessId`): a
/// relay names the parent by it.
pub fn adopt_spawned(path: &str) -> Result<Adopted, SpawnError> {
    let name = wide(OsStr::new(path));
    // SAFETY: `name` is NUL-terminated and outlives the call; no security attributes, no
    // template.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ,
            FILE_SHARE_NONE,
            null(),
            OPEN_EXISTING,
            0,
            null_mut(),
        )
    };
    let pipe = owned(h, "CreateFile(pipe)")?;
    let mut server = 0u32;
    // SAFETY: a valid pipe handle of ours; `server` is a live u32 for the call to fill.
    let parent_pid = (unsafe { GetNamedPipeServerProcessId(raw(&pipe), &mut server) } != FALSE)
        .then_some(server);
    // Read until the parent closes its end: the blob's size tells which form it is. One byte
    // more than the largest form catches a blob that is too long.
    let mut buf = [0u8; PROTOCOL_INFO_WIDE + 1];
    let mut len = 0;
    while len < buf.len() {
        let mut n = 0u32;
        let rest = &mut buf[len..];
        // SAFETY: synchronous read into `rest`, which is live and at least `rest.len()` bytes.
        let ok = unsafe {
            ReadFile(
                raw(&pipe),
                rest.as_mut_ptr(),
                rest.len() as u32,
                &mut n,
                null_mut(),
            )
        };
        if ok == FALSE {
            if io::Error::last_os_error().raw_os_error() == Some(ERROR_BROKEN_PIPE as i32) {
                break;
            }
            return Err(call_failed("ReadFile(pipe)"));
        }
        if n == 0 {
            break;
        }
        len += n as usize;
    }
    drop(pipe);
    Ok(Adopted {
        stream: socket_from_protocol_info(&buf[..len])?,
        parent_pid,
    })
}

/// Splits `line` with the real `CommandLineToArgvW`, for checking our quoting against it.
#[cfg(test)]
pub(crate) fn split_command_line(line: &str) -> Vec<String> {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::UI::Shell::CommandLineToArgvW;
    let line: Vec<u16> = line.encode_utf16().chain(Some(0)).collect();
    let mut argc = 0i32;
    // SAFETY: `line` is NUL-terminated; the result is an array of `argc` NUL-terminated
    // strings in one LocalAlloc block, read here and then freed once.
    unsafe {
        let argv = CommandLineToArgvW(line.as_ptr(), &mut argc);
        assert!(!argv.is_null(), "CommandLineToArgvW failed");
        let args = (0..argc as usize)
            .map(|i| {
                let p = *argv.add(i);
                let len = (0..).take_while(|&j| *p.add(j) != 0).count();
                String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
            })
            .collect();
        LocalFree(argv.cast());
        args
    }
}

/// Sends Ctrl-C to every process on our console: the program and its children (mpspy itself
/// ignores it). The nearest thing Windows has to passing SIGINT to a console program.
pub fn interrupt_console() -> io::Result<()> {
    // SAFETY: plain values, no pointers; group 0 means every process sharing our console.
    let ok = unsafe {
        windows_sys::Win32::System::Console::GenerateConsoleCtrlEvent(
            windows_sys::Win32::System::Console::CTRL_C_EVENT,
            0,
        )
    };
    if ok == FALSE {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn pipe_paths_count_per_process() {
        let a = pipe_path();
        let b = pipe_path();
        let prefix = format!(r"\\.\pipe\mp-{}-", std::process::id());
        let n = |p: &str| p.strip_prefix(&prefix).unwrap().parse::<u32>().unwrap();
        assert_eq!(n(&b), n(&a) + 1);
    }

    #[test]
    fn socket_pair_is_connected_both_ways() {
        let (mut a, mut b) = socket_pair().unwrap();
        a.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").unwrap();
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    /// Both sides in one process: the socket is duplicated for our own pid, and the "child"
    /// is a thread. The process handle we race is a child that never exits before we do.
    #[test]
    fn a_socket_crosses_the_pipe() {
        let (mut ours, theirs) = socket_pair().unwrap();
        let pipe = PipeServer::create(&pipe_path()).unwrap();
        let path = pipe.path().to_string();
        let child = std::thread::spawn(move || {
            let mut s = connect_spawned(&path).unwrap();
            s.write_all(b"hello from the child").unwrap();
            let mut buf = [0; 5];
            s.read_exact(&mut buf).unwrap();
            buf
        });
        let sleeper = sleeping_child();
        pipe.wait_connected(&sleeper).unwrap();
        pipe.send_socket(theirs, std::process::id()).unwrap();
        let mut buf = [0; 20];
        ours.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello from the child");
        ours.write_all(b"reply").unwrap();
        assert_eq!(&child.join().unwrap(), b"reply");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }

    /// A long-running process to race against: `ping` is in every Windows (and Wine).
    fn sleeping_child() -> Child {
        let ping = std::env::var("SystemRoot").unwrap() + r"\system32\ping.exe";
        create_process(
            Path::new(&ping),
            &["ping".into(), "-n".into(), "600".into(), "127.0.0.1".into()],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn a_child_that_exits_without_connecting_is_an_error() {
        let pipe = PipeServer::create(&pipe_path()).unwrap();
        let cmd = std::env::var("SystemRoot").unwrap() + r"\system32\cmd.exe";
        let child = create_process(
            Path::new(&cmd),
            &["cmd".into(), "/c".into(), "exit 3".into()],
            &[],
        )
        .unwrap();
        let err = pipe.wait_connected(&child).unwrap_err();
        assert!(
            matches!(err, SpawnError::ExitedBeforeConnecting { status } if status.code() == Some(3)),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("child process exited before connecting to named pipe")
        );
    }

    #[test]
    fn a_second_pipe_of_the_same_name_is_refused() {
        let path = pipe_path();
        let _first = PipeServer::create(&path).unwrap();
        assert!(PipeServer::create(&path).is_err());
    }

    #[test]
    fn a_missing_pipe_is_a_create_file_error() {
        let err = connect_spawned(r"\\.\pipe\mpspy-no-such-pipe").unwrap_err();
        assert!(err.to_string().contains("CreateFile(pipe)"), "{err}");
    }
}
