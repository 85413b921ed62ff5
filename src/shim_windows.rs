//! The spawn shim on Windows: mpspy between a program and the processes it spawns through the
//! named pipe protocol (protocol in [`mpspy_capture::shim::windows`]).
//!
//! [`setup`] fills a private directory with stand-ins (hard links, or copies, of mpspy.exe
//! named like each `.exe` in the program's directory) and the program is started with its
//! argv0 in there (CreateProcessW runs the real file; only the command line's argv0 differs).
//! libmultiprocess and Bitcoin find a child as `<dirname(argv0)>\NAME` (protocol README §5.2;
//! the test peer does the same), so each spawn runs a stand-in, which is mpspy in shim mode
//! ([`invoked_as_shim`], [`run`]): it takes the parent's socket, spawns the real child on a new
//! pair of its own, and hands both sockets to the main mpspy, which relays them.
//!
//! Differences from running without mpspy: the parent's "child" is the shim, so the pid it
//! logs for the spawn is the shim's (the connection records the real child's pid as its
//! server, and the shim's as `shim_pid` in its label); the real child's argv0 is still in the
//! stand-in directory, so its own spawns are interposed too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::Context;
use mpspy_capture::relay::{ConnIds, ConnInfo, Relays, relay};
use mpspy_capture::shim::windows::{
    ENV_MAIN_PID, ENV_TOKEN, SpawnHeader, recv_spawn, send_spawn, spawn_pipe_arg,
};
use mpspy_capture::shim::{ENV_CONTROL, ENV_DIR, ENV_REAL_DIR, FdArg, read_reply, send_reply};
use mpspy_capture::tap::Tap;
use mpspy_capture::win32::same_path;
use mpspy_capture::winspawn::{self, SpawnError};
use mpspy_schema::event::Peer;

/// Whether this process is a shim: mpspy's environment says so and our own executable is a
/// stand-in. Unlike unix, where the exec'd real program keeps the shim's argv0 and pid, the
/// real child here is another file, so the executable's own path tells the two apart (argv0
/// alone would not: the real child keeps the stand-in's argv0).
pub(crate) fn invoked_as_shim() -> bool {
    let (Some(_), Some(dir)) = (std::env::var_os(ENV_CONTROL), std::env::var_os(ENV_DIR)) else {
        return false;
    };
    std::env::current_exe().is_ok_and(|exe| {
        exe.parent()
            .is_some_and(|d| same_path(&d.to_string_lossy(), &dir.to_string_lossy()))
    })
}

/// A program name as the connection labels show it: the file name without `.exe`.
pub(crate) fn display_name(path: &str) -> String {
    let file = path.rsplit(['\\', '/']).next().unwrap_or(path);
    match file.len().checked_sub(4) {
        Some(n) if file.is_char_boundary(n) && file[n..].eq_ignore_ascii_case(".exe") => {
            file[..n].to_string()
        }
        _ => file.to_string(),
    }
}

/// Keeps Ctrl-C from ending this process: it reaches every process on the console, and the
/// one that should act on it is the program (which then ends, and with it the session).
pub(crate) fn survive_ctrl_c() {
    let _ = thread::Builder::new()
        .name("mpspy-ctrl-c".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut ctrl_c) = tokio::signal::windows::ctrl_c() else {
                    return;
                };
                while ctrl_c.recv().await.is_some() {}
            });
        });
}

fn exit_with(code: i32) -> ExitCode {
    // Windows exit codes are 32 bits (e.g. 0xC000013A after Ctrl-C); ExitCode takes a u8.
    match u8::try_from(code) {
        Ok(c) => ExitCode::from(c),
        Err(_) => std::process::exit(code),
    }
}

/// Runs as the shim for `argv` (argv0 as the parent gave it, in the stand-in directory).
pub(crate) fn run(argv: &[OsString]) -> ExitCode {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let exe = std::env::current_exe().ok();
    let (Some(file), Some(real_dir)) = (
        exe.as_deref().and_then(Path::file_name),
        std::env::var_os(ENV_REAL_DIR),
    ) else {
        eprintln!("mpspy: spawn shim: no real program directory ({ENV_REAL_DIR})");
        return ExitCode::from(127);
    };
    let real = Path::new(&real_dir).join(file);
    let name = display_name(&file.to_string_lossy());
    survive_ctrl_c();
    let Some((mode, pipe)) = spawn_pipe_arg(argv) else {
        // Not a spawn (someone ran the stand-in's path by hand): just the real program.
        return run_directly(&real, &args);
    };
    let adopted = match winspawn::adopt_spawned(&pipe) {
        Ok(a) => a,
        // Not our pipe to take: the real program reports it as it would without mpspy.
        Err(_) => return run_directly(&real, &args),
    };
    let spawned = winspawn::spawn(&real, &[], |our_pipe| {
        let mut child = vec![args[0].clone()];
        if mode == FdArg::Ipcfd {
            child.push("-ipcfd".into());
        }
        child.push(our_pipe.into());
        child
    });
    let spawned = match spawned {
        Ok(s) => s,
        // The parent sees its connection close, as it would had the child failed itself.
        Err(SpawnError::ExitedBeforeConnecting { status }) => {
            return exit_with(status.code().unwrap_or(1));
        }
        Err(e) => {
            eprintln!("mpspy: spawn shim: {}: {e}", real.display());
            return ExitCode::from(127);
        }
    };
    let header = SpawnHeader {
        token: std::env::var(ENV_TOKEN).unwrap_or_default(),
        parent_pid: adopted.parent_pid,
        shim_pid: std::process::id(),
        child_pid: spawned.child.id(),
        name: name.clone(),
        argv: args,
        mode,
    };
    let unrecorded = match hand_to_mpspy(&header, &adopted.stream, &spawned.stream) {
        // mpspy relays from here on; our copies must go so that either side's close reaches
        // the other.
        Ok(()) => None,
        Err(e) => {
            eprintln!("mpspy: {name}: not recording its IPC connection ({e}); relaying it as is");
            Some(pump_unrecorded(adopted.stream, spawned.stream))
        }
    };
    let status = spawned.child.wait();
    if let Some(back) = unrecorded {
        // The child is gone: let its last bytes reach the parent.
        let _ = back.join();
    }
    match status {
        Ok(s) => exit_with(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("mpspy: spawn shim: waiting for {name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `real` with `args` (argv0 unchanged) and our stdio, and exits as it does.
fn run_directly(real: &Path, args: &[String]) -> ExitCode {
    match winspawn::create_process_with_stdio(real, args, &[], winspawn::Output::Ours)
        .map_err(io::Error::other)
        .and_then(|c| c.wait())
    {
        Ok(s) => exit_with(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("mpspy: spawn shim: running {}: {e}", real.display());
            ExitCode::from(127)
        }
    }
}

/// Sends the two sockets to the main mpspy and waits for its answer.
fn hand_to_mpspy(header: &SpawnHeader, parent: &TcpStream, child: &TcpStream) -> io::Result<()> {
    let control = std::env::var(ENV_CONTROL).unwrap_or_default();
    let main_pid: u32 = std::env::var(ENV_MAIN_PID)
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{ENV_MAIN_PID} is not set")))?;
    let conn = TcpStream::connect(&control)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot reach mpspy at {control}: {e}")))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    send_spawn(&conn, header, parent, child, main_pid)?;
    read_reply(&conn)
}

/// Copies bytes both ways without mpspy (it could not take the connection); returns the
/// child-to-parent pump, which ends when the child's side closes.
fn pump_unrecorded(parent: TcpStream, child: TcpStream) -> thread::JoinHandle<()> {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    match (parent.try_clone(), child.try_clone()) {
        (Ok(p), Ok(c)) => {
            copy(p, c);
            copy(child, parent)
        }
        _ => thread::spawn(|| {}),
    }
}

/// What [`setup`] prepared: how the program is started so its spawns reach the stand-ins.
#[derive(Debug)]
pub(crate) struct Shims {
    /// The program's stand-in: its argv0.
    pub(crate) argv0: PathBuf,
    /// The shims' environment.
    pub(crate) env: Vec<(String, Option<String>)>,
    /// The processes seen so far, by pid, to name the parent of each spawn.
    pub(crate) peers: Arc<Mutex<HashMap<u32, Peer>>>,
}

/// Prepares the stand-ins in `private` for the program `real` and starts the control thread
/// that relays each spawned connection.
pub(crate) fn setup(
    private: &Path,
    real: &Path,
    tap: &Tap,
    ids: &ConnIds,
    relays: &Relays,
) -> anyhow::Result<Shims> {
    let real_dir = real.parent().context("the program has no directory")?;
    let own = std::env::current_exe().context("finding mpspy's own executable")?;
    // The stand-ins are links to a private copy, not to our own file: Windows will not delete
    // any name of an executable that is running, and we run until the end.
    let exe = private.join("mpspy-shim.exe");
    fs::copy(&own, &exe).with_context(|| format!("copying mpspy to {}", exe.display()))?;
    let dir = private.join("shim");
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    populate(&dir, real_dir, &exe)
        .with_context(|| format!("mirroring {} in {}", real_dir.display(), dir.display()))?;
    let file = real.file_name().context("the program has no file name")?;
    let argv0 = dir.join(file);
    if !argv0.exists() {
        stand_in(&exe, &argv0).with_context(|| format!("creating {}", argv0.display()))?;
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("control socket")?;
    let control = listener.local_addr()?.to_string();
    let token = random_token();
    let peers = Arc::new(Mutex::new(HashMap::new()));
    serve_control(
        listener,
        token.clone(),
        peers.clone(),
        tap.clone(),
        ids.clone(),
        relays.clone(),
    )
    .context("starting the control thread")?;
    let set = |k: &str, v: String| (k.to_string(), Some(v));
    Ok(Shims {
        argv0,
        env: vec![
            set(ENV_CONTROL, control),
            set(ENV_TOKEN, token),
            set(ENV_MAIN_PID, std::process::id().to_string()),
            set(ENV_DIR, dir.display().to_string()),
            set(ENV_REAL_DIR, real_dir.display().to_string()),
        ],
        peers,
    })
}

/// A 128-bit random token in hex. std's `RandomState` is seeded from the OS's random source
/// per instance; two of them give 128 bits without another dependency.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// One stand-in per `.exe` in `real_dir`. Other files are not mirrored: Windows finds a
/// program's DLLs by its real path, not its argv0, and spawns only look for executables.
fn populate(dir: &Path, real_dir: &Path, exe: &Path) -> io::Result<()> {
    for entry in fs::read_dir(real_dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let is_exe = Path::new(&file)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("exe"));
        if is_exe && entry.path().is_file() {
            stand_in(exe, &dir.join(&file))?;
        }
    }
    Ok(())
}

/// mpspy.exe under another name: a hard link where the file system allows (cheap), a copy
/// where not (another volume).
fn stand_in(exe: &Path, at: &Path) -> io::Result<()> {
    fs::hard_link(exe, at).or_else(|_| fs::copy(exe, at).map(|_| ()))
}

/// Accepts shim connections; each brings one spawned connection to relay.
fn serve_control(
    listener: TcpListener,
    token: String,
    peers: Arc<Mutex<HashMap<u32, Peer>>>,
    tap: Tap,
    ids: ConnIds,
    relays: Relays,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("mpspy-shim-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (token, peers) = (token.clone(), peers.clone());
                let (tap, ids, relays) = (tap.clone(), ids.clone(), relays.clone());
                let _ = thread::Builder::new()
                    .name("mpspy-shim-conn".into())
                    .spawn(move || relay_spawn(conn, &token, &peers, tap, &ids, &relays));
            }
        })
}

/// Receives one spawn from a shim and relays it: the parent (which bootstraps) is the client,
/// the real child the server.
fn relay_spawn(
    mut conn: TcpStream,
    token: &str,
    peers: &Mutex<HashMap<u32, Peer>>,
    tap: Tap,
    ids: &ConnIds,
    relays: &Relays,
) {
    // A shim sends at once; one that does not is not worth a thread forever.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let spawned = match recv_spawn(&conn, token) {
        Ok(s) => s,
        Err(e) => {
            let _ = send_reply(&mut conn, Err(&e.to_string()));
            return;
        }
    };
    let h = &spawned.header;
    let child = Peer {
        name: h.name.clone(),
        pid: Some(h.child_pid),
        argv: h.argv.clone(),
    };
    let parent = {
        let mut known = peers.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(h.child_pid, child.clone());
        h.parent_pid.map(|pid| {
            known.get(&pid).cloned().unwrap_or_else(|| Peer {
                name: format!("pid {pid}"),
                pid: Some(pid),
                argv: Vec::new(),
            })
        })
    };
    let label = format!(
        "{} ({}) → {} ({}) via shim {} [{}]",
        parent.as_ref().map_or("parent", |p| p.name.as_str()),
        h.parent_pid.map_or("?".to_string(), |p| p.to_string()),
        h.name,
        h.child_pid,
        h.shim_pid,
        h.mode.describe()
    );
    let info = ConnInfo {
        label,
        client: parent,
        server: Some(child),
    };
    let _ = match relay(ids.next(), spawned.parent, spawned.child, tap, info, relays) {
        Ok(_) => send_reply(&mut conn, Ok(())),
        Err(e) => send_reply(&mut conn, Err(&format!("relaying: {e}"))),
    };
    let _ = conn.flush();
    // Wait for the shim to close, so the answer is read before our end goes away.
    let _ = conn.read(&mut [0u8; 1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_drop_the_exe_extension_in_any_case() {
        assert_eq!(display_name(r"C:\x\bitcoin-node.exe"), "bitcoin-node");
        assert_eq!(display_name(r"C:\x\mpspy-testpeer.EXE"), "mpspy-testpeer");
        assert_eq!(display_name("mpprinter"), "mpprinter");
        assert_eq!(display_name("a/b.txt"), "b.txt");
    }

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
