//! The spawn shim: mpspy on the socketpairs of processes the program spawns.
//!
//! libmultiprocess finds a child as `<dirname(argv0)>/NAME` and passes it its socket as `-ipcfd
//! N` (Bitcoin) or `N` (the libmultiprocess examples). [`setup`] makes a private directory of
//! symlinks to mpspy, one per program in the real program's directory, and the program is
//! started with its argv0 in there. So every spawn runs mpspy first ([`invoked_as_shim`],
//! [`run`]); the shim hands the parent's socket and one end of a new pair to this mpspy over
//! the control socket (protocol in [`mpspy_capture::shim`]), then execs the real program in
//! its own process with the fd number now naming the new pair's other end. The real child thus
//! has the pid, argv and environment the parent gave it; its argv0 is still in the shim
//! directory, so its own spawns are interposed too.
//!
//! Known differences from running without mpspy (all by construction of a shim that execs):
//! the real child's argv0 is the shim path (so `realpath(argv0)` names mpspy; the `bitcoin`
//! wrapper resolves symlinks that way and is therefore started without shims), and SIGPIPE is
//! ignored in the real child (Rust's runtime ignores it in the shim and exec keeps that;
//! libmultiprocess parents ignore it too, so their children inherit the same).

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::Duration;

use mpspy_capture::fd::take_inherited_fd;
use mpspy_capture::relay::{ConnIds, ConnInfo, Relays, relay};
use mpspy_capture::shim::{
    ENV_CONTROL, ENV_DIR, ENV_EXECED, ENV_QUIET, ENV_REAL_DIR, SpawnHeader, hand_off,
    is_after_commit, recv_spawn, send_reply, spawn_fd_arg,
};
use mpspy_capture::tap::Tap;
use mpspy_schema::event::{NoticeLevel, Peer};

/// Whether this process is a shim: mpspy's environment says so, and argv0 is in the shim
/// directory (a spawn through a shim entry), and we are not the real program that a shim
/// just exec'd (which may be mpspy itself, e.g. the test peer's name).
pub(crate) fn invoked_as_shim(argv: &[OsString]) -> bool {
    use std::env::var_os;
    is_shim(
        argv.first().map(OsString::as_os_str),
        var_os(ENV_CONTROL).is_some(),
        var_os(ENV_DIR).as_deref(),
        var_os(ENV_EXECED).as_deref(),
        std::process::id(),
    )
}

fn is_shim(
    argv0: Option<&OsStr>,
    has_control: bool,
    dir: Option<&OsStr>,
    execed: Option<&OsStr>,
    pid: u32,
) -> bool {
    let (true, Some(dir), Some(argv0)) = (has_control, dir, argv0) else {
        return false;
    };
    if execed.is_some_and(|p| *p == *pid.to_string()) {
        return false;
    }
    Path::new(argv0)
        .parent()
        .is_some_and(|d| d == Path::new(dir))
}

/// Runs as the shim for `argv` (argv0 is the shim entry). Returns only if the real program
/// could not be executed.
pub(crate) fn run(argv: &[OsString]) -> ExitCode {
    let entry = Path::new(&argv[0]);
    let Some(name) = entry.file_name() else {
        eprintln!("mpspy: spawn shim: no program name in {}", entry.display());
        return ExitCode::from(127);
    };
    let Some(real_dir) = std::env::var_os(ENV_REAL_DIR) else {
        eprintln!("mpspy: spawn shim: {ENV_REAL_DIR} is not set");
        return ExitCode::from(127);
    };
    let real = Path::new(&real_dir).join(name);
    if let Some((mode, n)) = spawn_fd_arg(argv) {
        // A fd we cannot take (not open) is left for the real program to report.
        if let Ok(mut fd) = take_inherited_fd(n) {
            let header = SpawnHeader::for_this_process(argv, mode, n);
            let control = std::env::var_os(ENV_CONTROL).unwrap_or_default();
            match hand_off(Path::new(&control), &mut fd, &header) {
                Ok(()) => {}
                Err(e) if is_after_commit(&e) => {
                    eprintln!("mpspy: spawn shim: {}: {e}", name.to_string_lossy());
                    return ExitCode::from(126);
                }
                // Not a socket: not a libmultiprocess spawn; nothing to say.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
                // The program runs unrecorded; say so unless mpspy was told to be invisible.
                Err(e) if std::env::var_os(ENV_QUIET).is_none() => eprintln!(
                    "mpspy: {}: not recording its IPC connection ({e}); running it directly",
                    name.to_string_lossy()
                ),
                Err(_) => {}
            }
            // Fd N (relayed or not) stays open and inheritable for the real program.
            let _ = fd.into_raw_fd();
        }
    }
    let err = exec(&real, argv);
    eprintln!(
        "mpspy: spawn shim: execvp failed to execute '{}': {err}",
        real.display()
    );
    ExitCode::from(127)
}

/// `execve(real, argv, environ + ENV_EXECED=<our pid>)`. Unlike std's `Command::exec` this
/// keeps the signal mask and dispositions as they are (see the module docs).
fn exec(real: &Path, argv: &[OsString]) -> io::Error {
    let cstr = |s: &OsStr| CString::new(s.as_bytes()).map_err(io::Error::from);
    let run = || -> io::Result<std::convert::Infallible> {
        let path = cstr(real.as_os_str())?;
        let args = argv
            .iter()
            .map(|a| cstr(a))
            .collect::<io::Result<Vec<_>>>()?;
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k != ENV_EXECED {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                env.push(cstr(&kv)?);
            }
        }
        env.push(cstr(OsStr::new(&format!(
            "{ENV_EXECED}={}",
            std::process::id()
        )))?);
        Ok(nix::unistd::execve(&path, &args, &env)?)
    };
    match run() {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// What [`setup`] prepared: how to start the program so its spawns reach the shims.
#[derive(Debug)]
pub(crate) struct Shims {
    /// The real program (absolute).
    program: PathBuf,
    /// Its argv0: its entry in the shim directory.
    argv0: PathBuf,
    /// The shims' environment.
    env: Vec<(&'static str, OsString)>,
}

impl Shims {
    /// A command for the program, with the shim argv0 and environment.
    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.arg0(&self.argv0);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

/// The file name of the `bitcoin` wrapper (README §5.5). It finds its targets through
/// `realpath(argv0)`, which would name mpspy, so it is never given a shim argv0.
const WRAPPER_NAME: &str = "bitcoin";

/// Prepares the shims in `private` (mpspy's 0700 directory) for `program` and starts the control
/// thread that relays each spawned connection. `None` (after a notice) when that is not
/// possible; the program then runs as it would have without them.
pub(crate) fn setup(
    private: &Path,
    program: &str,
    tap: &Tap,
    ids: &ConnIds,
    relays: &Relays,
    quiet: bool,
) -> Option<Shims> {
    let real = locate(program)?;
    let name = real.file_name()?.to_os_string();
    if name == WRAPPER_NAME {
        tap.notice(
            NoticeLevel::Info,
            "the bitcoin wrapper resolves its own path, so processes spawned under it are not interposed on; run bitcoin-node (or bitcoin-gui) directly to see them",
        );
        return None;
    }
    match try_setup(private, &real, &name, tap, ids, relays) {
        Ok(mut s) => {
            if quiet {
                s.env.push((ENV_QUIET, "1".into()));
            }
            Some(s)
        }
        Err(e) => {
            tap.notice(
                NoticeLevel::Warning,
                format!(
                    "not interposing on spawned processes ({e:#}); --no-spawn-shim silences this"
                ),
            );
            None
        }
    }
}

fn try_setup(
    private: &Path,
    real: &Path,
    name: &OsStr,
    tap: &Tap,
    ids: &ConnIds,
    relays: &Relays,
) -> anyhow::Result<Shims> {
    use anyhow::Context;
    let real_dir = real.parent().context("the program has no directory")?;
    let exe = std::env::current_exe().context("finding mpspy's own executable")?;
    let dir = private.join("shim");
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    populate(&dir, real_dir, &exe)
        .with_context(|| format!("mirroring {} in {}", real_dir.display(), dir.display()))?;
    let own = dir.join(name);
    if fs::symlink_metadata(&own).is_err() {
        std::os::unix::fs::symlink(&exe, &own)
            .with_context(|| format!("linking {}", own.display()))?;
    }
    let control = private.join("control.sock");
    let listener = UnixListener::bind(&control)
        .with_context(|| format!("listening on {}", control.display()))?;
    serve_control(listener, tap.clone(), ids.clone(), relays.clone())
        .context("starting the control thread")?;
    Ok(Shims {
        program: real.to_path_buf(),
        argv0: own,
        env: vec![
            (ENV_CONTROL, control.into_os_string()),
            (ENV_DIR, dir.into_os_string()),
            (ENV_REAL_DIR, real_dir.as_os_str().to_os_string()),
        ],
    })
}

/// The program's path as it will be executed: a path with a `/` as given (made absolute, but
/// symlinks are *not* resolved: Bitcoin derives child paths from argv0 textually, so the real
/// directory is the one the program was named in), a bare name looked up in `$PATH` like
/// `execvp`. `None` if there is no such executable (starting it will report that).
fn locate(program: &str) -> Option<PathBuf> {
    let candidate = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|c| is_executable(c))?
    };
    is_executable(&candidate)
        .then(|| std::path::absolute(&candidate).ok())
        .flatten()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fills the shim directory: each executable in `real_dir` becomes a symlink to mpspy; other
/// files and directories become symlinks to the real ones, so paths relative to argv0 that are
/// not programs still resolve.
fn populate(dir: &Path, real_dir: &Path, exe: &Path) -> io::Result<()> {
    for entry in fs::read_dir(real_dir)? {
        let entry = entry?;
        let target = entry.path();
        let link = dir.join(entry.file_name());
        // Following symlinks: what matters is what exec would run.
        let Ok(meta) = fs::metadata(&target) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            std::os::unix::fs::symlink(exe, &link)?;
        } else if meta.is_file() || meta.is_dir() {
            std::os::unix::fs::symlink(&target, &link)?;
        }
    }
    Ok(())
}

/// Accepts shim connections on `listener`; each brings one spawned connection to relay.
fn serve_control(
    listener: UnixListener,
    tap: Tap,
    ids: ConnIds,
    relays: Relays,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("mpspy-shim-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (tap, ids, relays) = (tap.clone(), ids.clone(), relays.clone());
                let _ = thread::Builder::new()
                    .name("mpspy-shim-conn".into())
                    .spawn(move || relay_spawn(&conn, tap, &ids, &relays));
            }
        })
}

/// Receives one spawn from a shim and relays it: the parent (which bootstraps) is the client,
/// the child the server.
fn relay_spawn(conn: &UnixStream, tap: Tap, ids: &ConnIds, relays: &Relays) {
    // A shim sends at once; one that does not is not worth a thread forever.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let spawned = match recv_spawn(conn) {
        Ok(s) => s,
        Err(e) => {
            let _ = send_reply(conn, Err(&e.to_string()));
            return;
        }
    };
    let h = &spawned.header;
    let parent = process_peer(h.parent_pid);
    let label = format!(
        "{} ({}) → {} ({}) [{}]",
        parent.name,
        h.parent_pid,
        h.name,
        h.child_pid,
        h.mode.describe()
    );
    let child = Peer {
        name: h.name.clone(),
        pid: Some(h.child_pid),
        argv: h.argv.clone(),
    };
    let info = ConnInfo {
        label,
        client: Some(parent),
        server: Some(child),
    };
    // On failure `relay` has dropped (closed) both fds before the shim hears about it.
    let _ = match relay(ids.next(), spawned.parent, spawned.child, tap, info, relays) {
        Ok(_) => send_reply(conn, Ok(())),
        Err(e) => send_reply(conn, Err(&format!("relaying: {e}"))),
    };
}

/// A process by pid: its name and command line where the platform tells (Linux `/proc`).
pub(crate) fn process_peer(pid: u32) -> Peer {
    let name = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| format!("pid {pid}"));
    let argv = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Peer {
        name,
        pid: Some(pid),
        argv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpspy-shimtest-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn locate_keeps_the_named_directory_and_searches_path_for_bare_names() {
        let d = scratch("locate");
        let real = d.join("real");
        fs::create_dir_all(&real).unwrap();
        let prog = real.join("bitcoin-node");
        fs::write(&prog, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
        // Named through a symlinked directory: the symlink's directory is the real dir, as
        // Bitcoin would derive its children from it.
        let links = d.join("links");
        std::os::unix::fs::symlink(&real, &links).unwrap();
        let via = links.join("bitcoin-node");
        assert_eq!(locate(via.to_str().unwrap()), Some(via.clone()));
        assert_eq!(locate(d.join("nope").to_str().unwrap()), None);
        // Bare names: `sh` is on every PATH.
        let sh = locate("sh").expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn populate_links_programs_to_mpspy_and_the_rest_to_the_real_files() {
        let d = scratch("populate");
        let real = d.join("real");
        let shim = d.join("shim");
        fs::create_dir_all(real.join("sub")).unwrap();
        fs::create_dir_all(&shim).unwrap();
        for (n, mode) in [
            ("bitcoin-node", 0o755),
            ("bitcoin-wallet", 0o700),
            ("README", 0o644),
        ] {
            fs::write(real.join(n), n).unwrap();
            fs::set_permissions(real.join(n), fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::net::UnixListener::bind(real.join("node.sock")).unwrap();
        let exe = d.join("mpspy");
        fs::write(&exe, "").unwrap();
        populate(&shim, &real, &exe).unwrap();
        let link = |n: &str| fs::read_link(shim.join(n)).ok();
        assert_eq!(link("bitcoin-node"), Some(exe.clone()));
        assert_eq!(link("bitcoin-wallet"), Some(exe.clone()));
        assert_eq!(link("README"), Some(real.join("README")));
        assert_eq!(link("sub"), Some(real.join("sub")));
        assert_eq!(link("node.sock"), None, "sockets are not mirrored");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn only_an_argv0_in_the_shim_dir_makes_a_shim_and_never_the_exec_that_follows() {
        let dir = OsStr::new("/tmp/mpspy-1-0/shim");
        let entry = OsStr::new("/tmp/mpspy-1-0/shim/bitcoin-wallet");
        assert!(is_shim(Some(entry), true, Some(dir), None, 42));
        // Path comparison, not text: a doubled slash is the same directory.
        let doubled = OsStr::new("/tmp/mpspy-1-0//shim/bitcoin-wallet");
        assert!(is_shim(Some(doubled), true, Some(dir), None, 42));
        // Another shim's exec (another pid) does not count for us.
        assert!(is_shim(
            Some(entry),
            true,
            Some(dir),
            Some(OsStr::new("41")),
            42
        ));
        // The real program the shim exec'd (same pid) is not a shim, even if it is mpspy.
        assert!(!is_shim(
            Some(entry),
            true,
            Some(dir),
            Some(OsStr::new("42")),
            42
        ));
        let elsewhere = OsStr::new("/opt/bitcoin/bin/bitcoin-wallet");
        assert!(!is_shim(Some(elsewhere), true, Some(dir), None, 42));
        assert!(!is_shim(Some(entry), false, Some(dir), None, 42));
        assert!(!is_shim(Some(entry), true, None, None, 42));
        assert!(!is_shim(None, true, Some(dir), None, 42));
    }
}
