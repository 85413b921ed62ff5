//! `mpspy -- PROGRAM [ARGS]`: run a program with mpspy on every IPC channel it has, invisibly.
//!
//! - Listening sockets (`-ipcbind`): the program is started with its own arguments and listens
//!   where it would; once its socket file appears, mpspy takes it over
//!   ([`mpspy_capture::takeover`]): the program's socket gets a private second name and
//!   mpspy's listener takes the public path, so clients reach mpspy, which relays them.
//! - Connecting sockets (`-ipcconnect`): mpspy connects to the server first; if that works,
//!   the program is pointed at a private socket of mpspy's instead, and its first connection is
//!   relayed over the one mpspy already made. If it does not, the program is left alone and
//!   meets the same error itself.
//! - Spawned children: [`crate::shim`].
//!
//! Whatever mpspy cannot work out or set up, it says in a notice and runs the program as given:
//! the program reports its own errors with its own exit status. With `--quiet` nothing of
//! mpspy's reaches the program's stdout or stderr, signals sent to mpspy reach the program, and
//! mpspy ends as the program did (with its exit status, or killed by the same signal).

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mpspy_bitcoin::args::{self as bitcoin, BindOrigin, BindSpec, Plan};
use mpspy_capture::relay::{self, ConnIds, ConnInfo, Relays, Serving, Upstream};
use mpspy_capture::takeover::{self, SocketId, Watcher, take_over};
use mpspy_capture::tap::{Clock, Tap};
use mpspy_schema::event::{NoticeLevel, Peer};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;

use crate::cli::RunArgs;
use crate::live_common::{self, Messages, forward_output, use_tui};
use crate::sink::tui::UiSender;

/// Removes what mpspy created, whatever way the run ends. Never the public socket paths: those
/// are left as the program leaves them.
#[derive(Default)]
struct Cleanup {
    private_dir: Option<PathBuf>,
    /// Second names of taken-over sockets that had to go beside the public path.
    sockets: Arc<Mutex<Vec<PathBuf>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in self.sockets.lock().map(|s| s.clone()).unwrap_or_default() {
            if fs::symlink_metadata(&s).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = fs::remove_file(&s);
            }
        }
        if let Some(d) = &self.private_dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

fn private_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let dir = base.join(format!("mpspy-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a private directory in {}", base.display())
}

/// The process on the other end of a unix socket, from the kernel's peer credentials (for a
/// connecting socket: the process that made the listener it reached).
pub(crate) fn peer_of(s: &UnixStream) -> Option<Peer> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let pid = getsockopt(s, PeerCredentials).ok()?.pid();
        Some(crate::shim::process_peer(u32::try_from(pid).ok()?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = s;
        None
    }
}

fn program_name(program: &str) -> String {
    Path::new(program)
        .file_name()
        .map_or_else(|| program.to_string(), |n| n.to_string_lossy().into_owned())
}

/// Called with the program's pid once it runs, signals are forwarded and the sockets it listens
/// on are taken over (the demo drives its client from here).
pub(crate) type AfterStart = Box<dyn FnOnce(u32) + Send>;

/// Set once every planned listening socket is taken over (or given up on).
#[derive(Clone, Default)]
struct Ready(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Ready {
    fn set(&self) {
        let (m, c) = &*self.0;
        if let Ok(mut r) = m.lock() {
            *r = true;
        }
        c.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let (m, c) = &*self.0;
        if let Ok(r) = m.lock() {
            let _ = c.wait_timeout_while(r, timeout, |r| !*r);
        }
    }
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    run_with(args, None)
}

/// Notices made before the session's tap exists; queued first once it does.
type Early = Vec<(NoticeLevel, String)>;

/// The program to run: `bitcoin` (the wrapper) only execs the real program, so mpspy does that
/// lookup itself (libexec/, next to the wrapper, PATH) and runs the target, so the target is
/// what gets interposed. The process is the same one either way (the wrapper execs).
fn resolve_wrapper(program: &str, pargs: &[String], early: &mut Early) -> (String, Vec<String>) {
    if program_name(program) == "bitcoin"
        && let Ok(env) = bitcoin::Env::from_process()
    {
        let path = std::env::var_os("PATH");
        if let Some((target, target_args)) =
            bitcoin::wrapper_target_with_env(pargs, Path::new(program), path.as_deref(), &env)
        {
            early.push((
                NoticeLevel::Info,
                format!(
                    "`bitcoin` would run {}; mpspy runs it directly so its IPC is visible",
                    target.display()
                ),
            ));
            return (target.display().to_string(), target_args);
        }
    }
    (program.to_string(), pargs.to_vec())
}

/// Works out what `program` would listen on and connect to; `None` (with a notice) when that
/// cannot be worked out, and the program runs as given.
fn plan(args: &RunArgs, program: &str, pargs: &[String], early: &mut Early) -> Option<Plan> {
    let name = program_name(program);
    let add_bind = !args.no_bind
        && bitcoin::role(program) == bitcoin::Role::Node
        && matches!(name.as_str(), "bitcoin-node" | "bitcoin-gui");
    let planned = bitcoin::Env::from_process()
        .map_err(|e| format!("reading the environment: {e}"))
        .and_then(|env| bitcoin::plan(program, pargs, &env, add_bind).map_err(|e| e.to_string()));
    match planned {
        Ok(p) => {
            for n in &p.notes {
                early.push((NoticeLevel::Warning, format!("{name}: {n}")));
            }
            Some(p)
        }
        Err(e) => {
            early.push((
                NoticeLevel::Warning,
                format!(
                    "could not work out the IPC sockets of {name} ({e}); running it as given, with no IPC socket interposed (it will report the problem itself)"
                ),
            ));
            None
        }
    }
}

/// One listening path of the program's, waiting to be taken over.
struct PendingBind {
    spec: BindSpec,
    /// The socket that was there before the program started (a stale one it will replace).
    before: Option<SocketId>,
    /// Where its second name should go.
    moved: PathBuf,
}

/// What mpspy set up around the program.
struct Interposed {
    args: Vec<String>,
    binds: Option<JoinHandle<Vec<Serving>>>,
    connect: Option<Serving>,
}

/// Everything the listen and connect relays share.
#[derive(Clone)]
struct Relaying {
    tap: Tap,
    ids: ConnIds,
    relays: Relays,
    /// The program as a peer (its pid is filled in once it runs).
    program: Arc<Mutex<Peer>>,
    cleanup: Arc<Mutex<Vec<PathBuf>>>,
}

/// The client side of a program's `-ipcconnect`: connects to the server now, and points the
/// program at a private socket whose first client gets this connection.
fn interpose_connect(
    r: &Relaying,
    private: &Path,
    target: &Path,
    name: &str,
) -> Result<(Serving, PathBuf), String> {
    // Connecting first tells whether the server is there; if it is not (no file, or a stale
    // socket that refuses), the program must meet that itself (bitcoin-cli's
    // -ipcconnect=auto then falls back to HTTP, as without mpspy).
    let first = UnixStream::connect(target).map_err(|e| {
        format!(
            "{name} would connect to {} ({e}); left alone, it meets that itself",
            target.display()
        )
    })?;
    let path = private.join("connect.sock");
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    let client = r.program.clone();
    let target_text = target.display().to_string();
    let serving = relay::serve(
        listener,
        Upstream::Server {
            path: target.to_path_buf(),
            first: Some(first),
        },
        r.tap.clone(),
        r.ids.clone(),
        r.relays.clone(),
        Arc::new(move |_, server| {
            let server = peer_of(server);
            let who = server
                .as_ref()
                .map_or("server".to_string(), |p| p.name.clone());
            let client = client.lock().ok().map(|c| c.clone());
            ConnInfo {
                label: format!(
                    "{} → {who} (unix:{target_text})",
                    client.as_ref().map_or("client", |c| c.name.as_str())
                ),
                client,
                server,
            }
        }),
    )
    .map_err(|e| format!("relaying {}: {e}", target.display()))?;
    Ok((serving, path))
}

/// Takes over `b` once the program has bound it; `Ok(None)` while it has not.
fn try_take_over(r: &Relaying, b: &PendingBind, name: &str) -> Result<Option<Serving>, String> {
    let public = &b.spec.path;
    match SocketId::of(public) {
        Some(id) if Some(id) != b.before => {}
        _ => return Ok(None),
    }
    let taken = match take_over(public, &b.moved) {
        Ok(t) => t,
        // Replaced while we looked: look again at the next change.
        Err(e) if e.kind() == std::io::ErrorKind::Other => return Ok(None),
        Err(e) => return Err(format!("could not take over {} ({e})", public.display())),
    };
    if taken.moved != b.moved
        && let Ok(mut c) = r.cleanup.lock()
    {
        c.push(taken.moved.clone());
    }
    // Counted before mpspy relays anything: those are connections it will never see.
    if let Some(n) = takeover::direct_connections(public).filter(|n| *n > 0) {
        r.tap.notice(
            NoticeLevel::Warning,
            format!(
                "{n} connection(s) reached {name} at {} before mpspy took the socket over; they are not recorded",
                public.display()
            ),
        );
    }
    let server = r.program.clone();
    let label_tail = format!("{name} (unix:{})", public.display());
    let serving = relay::serve(
        taken.listener,
        Upstream::Program(taken.moved),
        r.tap.clone(),
        r.ids.clone(),
        r.relays.clone(),
        Arc::new(move |client, _| {
            let client = peer_of(client);
            let who = client.as_ref().map_or("client".to_string(), |p| {
                format!("{} ({})", p.name, p.pid.unwrap_or(0))
            });
            ConnInfo {
                label: format!("{who} → {label_tail}"),
                client,
                server: server.lock().ok().map(|s| s.clone()),
            }
        }),
    )
    .map_err(|e| format!("relaying {}: {e}", public.display()))?;
    r.tap.notice(
        NoticeLevel::Info,
        format!(
            "{name} listens on {}; mpspy relays every connection to it",
            public.display()
        ),
    );
    Ok(Some(serving))
}

/// Watches for the program's listening sockets and takes each over as it appears, until all
/// are taken or the program has exited; returns the relays serving them.
fn watch_binds(
    r: Relaying,
    mut pending: Vec<PendingBind>,
    mut watcher: Watcher,
    exited: Arc<AtomicBool>,
    name: String,
    ready: Ready,
) -> std::io::Result<JoinHandle<Vec<Serving>>> {
    thread::Builder::new()
        .name("mpspy-binds".into())
        .spawn(move || {
            let mut serving = Vec::new();
            loop {
                pending.retain(|b| match try_take_over(&r, b, &name) {
                    Ok(Some(s)) => {
                        serving.push(s);
                        false
                    }
                    Ok(None) => true,
                    Err(e) => {
                        r.tap.notice(
                            NoticeLevel::Warning,
                            format!("{e}; connections to it are not recorded"),
                        );
                        false
                    }
                });
                // A last look after the exit: the program may have bound just before it.
                if pending.is_empty() || exited.load(Ordering::Relaxed) {
                    break;
                }
                watcher.wait(Duration::from_millis(100));
                let paths: Vec<PathBuf> = pending.iter().map(|b| b.spec.path.clone()).collect();
                watcher.arm(&paths);
            }
            ready.set();
            for b in pending {
                r.tap.notice(
                    NoticeLevel::Info,
                    format!(
                        "{name} never listened on {} while mpspy ran",
                        b.spec.path.display()
                    ),
                );
            }
            serving
        })
}

/// Sets up the relays of `plan` and returns the program's arguments (as given, plus what mpspy
/// adds). The watcher is armed before this returns, so the program cannot bind unseen.
fn interpose(
    r: &Relaying,
    plan: &Plan,
    pargs: &[String],
    private: &Path,
    name: &str,
    exited: &Arc<AtomicBool>,
    ready: &Ready,
) -> Result<Interposed, String> {
    let mut connect = None;
    let mut private_connect = None;
    if let Some(target) = &plan.connect {
        match interpose_connect(r, private, target, name) {
            Ok((s, path)) => {
                connect = Some(s);
                private_connect = Some(path);
            }
            Err(e) => r.tap.notice(NoticeLevel::Warning, e),
        }
    }
    let pending: Vec<PendingBind> = plan
        .binds
        .iter()
        .enumerate()
        .map(|(i, spec)| PendingBind {
            spec: spec.clone(),
            before: SocketId::of(&spec.path),
            moved: private.join(format!("bind{i}.sock")),
        })
        .collect();
    if let Some(b) = plan.binds.iter().find(|b| b.origin == BindOrigin::Added) {
        r.tap.notice(
            NoticeLevel::Info,
            format!(
                "{name} was given no -ipcbind; mpspy adds -ipcbind=unix (it will listen on {}); --no-bind turns this off",
                b.path.display()
            ),
        );
    }
    let binds = if pending.is_empty() {
        ready.set();
        None
    } else {
        let mut watcher = Watcher::new();
        let paths: Vec<PathBuf> = pending.iter().map(|b| b.spec.path.clone()).collect();
        watcher.arm(&paths);
        Some(
            watch_binds(
                r.clone(),
                pending,
                watcher,
                exited.clone(),
                name.to_string(),
                ready.clone(),
            )
            .map_err(|e| format!("starting the socket watcher: {e}"))?,
        )
    };
    Ok(Interposed {
        args: bitcoin::rewrite(pargs, plan, private_connect.as_deref()),
        binds,
        connect,
    })
}

/// The command that starts `program`: through the spawn shims ([`crate::shim`]) unless
/// `--no-spawn-shim` or they cannot be set up, so connections to the processes it spawns are
/// relayed too.
fn program_command(args: &RunArgs, private: Option<&Path>, program: &str, r: &Relaying) -> Command {
    let shims = match private {
        Some(private) if !args.no_spawn_shim => crate::shim::setup(
            private,
            program,
            &r.tap,
            &r.ids,
            &r.relays,
            args.session.quiet,
        ),
        _ => None,
    };
    match shims {
        Some(s) => s.command(),
        None => Command::new(program),
    }
}

pub(crate) fn run_with(args: &RunArgs, after_start: Option<AfterStart>) -> Result<ExitCode> {
    let (program, pargs) = args
        .program
        .split_first()
        .context("no program given after --")?;
    let messages = Messages::new(&args.session)?;
    let mut early = Early::new();
    let (program, pargs) = resolve_wrapper(program, pargs, &mut early);
    let name = program_name(&program);
    let plan = plan(args, &program, &pargs, &mut early);

    let config = crate::schema_config(&args.session.schema)?;
    let injector = live_common::injector(&args.session, &config)?;
    let clock = Clock::start();
    let (tap, rx, recording) =
        live_common::capture(&args.session, &config, clock, injector.as_deref())?;
    let mut outputs = live_common::outputs(&args.session, recording.as_ref())?;
    live_common::announce_injection(&tap, &mut outputs, injector.as_deref());
    let metrics = live_common::metrics(&args.session, &mut outputs, &messages)?;
    let ui = use_tui(&args.session).then(|| UiSender::new(false));
    live_common::add_screen_outputs(
        &args.session,
        &mut outputs,
        ui.as_ref().map(|u| &u.0),
        &messages,
    );

    for (level, text) in early {
        tap.notice(level, text);
    }
    let mut cleanup = Cleanup::default();
    let r = Relaying {
        tap: tap.clone(),
        ids: ConnIds::default(),
        relays: live_common::relays(injector.as_ref()),
        program: Arc::new(Mutex::new(Peer {
            name: name.clone(),
            pid: None,
            argv: args.program.clone(),
        })),
        cleanup: cleanup.sockets.clone(),
    };
    let private = match private_dir() {
        Ok(p) => Some(p),
        Err(e) => {
            tap.notice(
                NoticeLevel::Warning,
                format!("{e:#}; running {name} as given, with nothing interposed"),
            );
            None
        }
    };
    cleanup.private_dir = private.clone();
    let exited = Arc::new(AtomicBool::new(false));
    let ready = Ready::default();
    let interposed = match (&plan, &private) {
        (Some(plan), Some(private)) => {
            match interpose(&r, plan, &pargs, private, &name, &exited, &ready) {
                Ok(i) => i,
                Err(e) => {
                    tap.notice(
                        NoticeLevel::Warning,
                        format!("{e}; running {name} as given, with no IPC socket interposed"),
                    );
                    Interposed {
                        args: pargs.clone(),
                        binds: None,
                        connect: None,
                    }
                }
            }
        }
        _ => Interposed {
            args: pargs.clone(),
            binds: None,
            connect: None,
        },
    };

    let snapshots = live_common::SnapshotRequest::new(tap.clone());
    let decoder = live_common::start_decoder(config, clock, rx, outputs, snapshots.clone())?;

    let origin = clock.origin();
    let mut command = program_command(args, private.as_deref(), &program, &r);
    command.args(&interposed.args);
    if ui.is_some() {
        // The UI owns the screen and the keyboard: the program's output goes to its log pane,
        // and it reads no keys meant for the UI.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    } else if args.session.json.as_deref() == Some("-") {
        // JSON Lines own stdout; the program's output must not corrupt them.
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr")?;
        command.stdout(std::process::Stdio::from(stderr));
    }
    // Signals are caught before the program starts, so none meant for it is missed.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .context("installing signal handlers")?;
    // SIGUSR1 is mpspy's own (left alone it would end mpspy): a snapshot of the pending calls.
    let mut usr1 =
        signal_hook::iterator::Signals::new([SIGUSR1]).context("installing the SIGUSR1 handler")?;
    let usr1_handle = usr1.handle();
    thread::spawn(move || {
        for _ in usr1.forever() {
            snapshots.request("SIGUSR1");
        }
    });
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            exited.store(true, Ordering::Relaxed);
            return Err(e).with_context(|| format!("starting {program}"));
        }
    };
    let pid = child.id();
    if let Some((sender, _)) = &ui {
        if let Some(out) = child.stdout.take() {
            forward_output(out, false, sender.clone(), origin);
        }
        if let Some(err) = child.stderr.take() {
            forward_output(err, true, sender.clone(), origin);
        }
    }
    if let Ok(mut p) = r.program.lock() {
        p.pid = Some(pid);
    }
    let handle = signals.handle();
    let forwarder = thread::spawn(move || {
        for info in signals.forever() {
            // A signal from the terminal (Ctrl-C, Ctrl-\, a hangup) went to the program too, as
            // it is in mpspy's process group: passing it on would deliver it twice. Only
            // signals some process sent to mpspy are passed on.
            let from_a_process = info.process.is_some_and(|p| p.pid != 0);
            if from_a_process && let Ok(s) = Signal::try_from(info.signal) {
                let _ = kill(Pid::from_raw(pid as i32), s);
            }
        }
    });
    if let Some(hook) = after_start {
        // Unplanned or not interposed: nothing to wait for.
        if interposed.binds.is_none() {
            ready.set();
        }
        let ready = ready.clone();
        thread::spawn(move || {
            ready.wait(Duration::from_secs(30));
            hook(pid);
        });
    }
    let relays = r.relays.clone();
    let (binds, connect) = (interposed.binds, interposed.connect);
    let finish = move || -> Result<live_common::Finished> {
        let status = child.wait().context("waiting for the program")?;
        // No new connections from now on: the program is gone, so clients must be refused as
        // they would be.
        exited.store(true, Ordering::Relaxed);
        let serving = binds.map(|b| b.join().unwrap_or_default());
        drop(serving);
        drop(connect);
        let how = live_common::describe_exit(&name, status);
        let outputs = live_common::end_session(&relays, &how, &tap, decoder, recording)?;
        Ok((status, how, outputs))
    };
    let interrupt = move || {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
    };
    let (status, how, outputs) = live_common::run_session(
        ui,
        finish,
        &format!("{} {} (pid {pid})", program_name(&program), pargs.join(" ")),
        origin,
        interrupt,
    )?;
    handle.close();
    usr1_handle.close();
    let _ = forwarder.join();
    drop(cleanup);

    live_common::print_summary(&messages, &how, &outputs);
    // The endpoint stops with the session.
    drop(metrics);
    if live_common::check_fails(
        &args.session,
        &messages,
        &outputs,
        args.program.first().map_or("the program", String::as_str),
    ) && status.success()
    {
        return Ok(ExitCode::from(1));
    }
    Ok(exit_like(status))
}

/// mpspy's own end, as the program's: its exit status, or death by the same signal (so a shell
/// or supervisor sees exactly what it would have seen).
fn exit_like(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(s)) => {
            // Nothing is left to write: die of the same signal, with its default action. The
            // program's core file (if any) is the program's; mpspy leaves none of its own.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            let _ = signal_hook::low_level::emulate_default_handler(s);
            ExitCode::from(128u8.wrapping_add(s as u8))
        }
        _ => ExitCode::FAILURE,
    }
}
