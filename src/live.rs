//! `mpspy -- PROGRAM [ARGS]`: run a program with mpspy on every IPC channel it has.
//!
//! Listening sockets: mpspy listens where the program would and starts the program on a private
//! path in a 0700 directory. Connecting sockets: the program connects to mpspy's private socket,
//! mpspy to the real one. Either way each connection is relayed byte for byte.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::thread;

use anyhow::{Context, Result, bail};
use mpspy_recorder::bitcoin::{self, Role};
use mpspy_recorder::relay::{self, ConnIds, ConnInfo, Relays};
use mpspy_recorder::tap::{Clock, Tap};
use mpspy_schema::event::Peer;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::RunArgs;
use crate::live_common;

use crate::live_common::{forward_output, use_tui};
use crate::pipeline::Outputs;
use crate::sink::tui::{UiSender, UiSink};

/// Removes what mpspy created, whatever way the run ends.
struct Cleanup {
    private_dir: Option<PathBuf>,
    sockets: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in &self.sockets {
            // Only remove it if it is still our socket (not something put there since).
            if fs::symlink_metadata(s).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = fs::remove_file(s);
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

/// Prepares a listening path as Bitcoin Core does: parent directories are created, a stale
/// socket is removed, anything else that is not a socket is an error (and left alone).
fn prepare_listen_path(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is in use: something is already listening there (another bitcoin-node?)",
                    path.display()
                );
            }
            fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to remove it (Bitcoin Core would fail to bind too)",
            path.display()
        ),
        Err(_) => Ok(()),
    }
}

/// The process on the other end of a unix socket, from the kernel's peer credentials.
fn peer_of(s: &UnixStream) -> Option<Peer> {
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

/// The command that starts `program`: through the spawn shims ([`crate::shim`]) unless
/// `--no-spawn-shim` or they cannot be set up, so connections to the processes it spawns are
/// relayed too.
fn program_command(
    args: &RunArgs,
    private: &Path,
    program: &str,
    tap: &Tap,
    ids: &ConnIds,
    relays: &Relays,
) -> Command {
    let shims = if args.no_spawn_shim {
        None
    } else {
        crate::shim::setup(private, program, tap, ids, relays, args.quiet)
    };
    match shims {
        Some(s) => s.command(),
        None => Command::new(program),
    }
}

/// Called with the program's pid once it runs and signals are forwarded (the demo drives its
/// client from here).
pub(crate) type AfterStart = Box<dyn FnOnce(u32) + Send>;

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    run_with(args, None)
}

pub(crate) fn run_with(args: &RunArgs, after_start: Option<AfterStart>) -> Result<ExitCode> {
    let (program, pargs) = args
        .program
        .split_first()
        .context("no program given after --")?;
    let env = bitcoin::Env::from_process().context("reading the environment")?;
    // The `bitcoin` wrapper only execs the real program; mpspy does that lookup itself (libexec/,
    // next to the wrapper, PATH) and runs the target, so the target is what gets interposed.
    let wrapped;
    let (program, pargs): (&String, &[String]) = if program_name(program) == "bitcoin" {
        let path = std::env::var_os("PATH");
        match bitcoin::wrapper_target_with_env(pargs, Path::new(program), path.as_deref(), &env) {
            Some((target, target_args)) => {
                eprintln!(
                    "mpspy: `bitcoin` would run {}; running it directly so its IPC is visible",
                    target.display()
                );
                wrapped = (target.display().to_string(), target_args);
                (&wrapped.0, &wrapped.1[..])
            }
            None => (program, pargs),
        }
    } else {
        (program, pargs)
    };
    let name = program_name(program);
    let program_name = name.clone();
    let role = bitcoin::role(program);
    let add_bind = !args.no_bind
        && role == Role::Node
        && matches!(name.as_str(), "bitcoin-node" | "bitcoin-gui");
    let plan = bitcoin::plan(program, pargs, &env, add_bind)
        .with_context(|| format!("working out the IPC sockets of {name}"))?;

    let config = crate::schema_config(&args.schema)?;
    let clock = Clock::start();
    let mut outputs = live_common::outputs(args, &config, &clock)?;
    let ui = use_tui(args).then(|| UiSender::new(false));
    if let Some((sender, _)) = &ui {
        outputs.add(Box::new(UiSink(sender.clone())));
    } else if args.json.as_deref() != Some("-") && !args.quiet {
        outputs.text_stderr(true);
    }

    let mut cleanup = Cleanup {
        private_dir: None,
        sockets: Vec::new(),
    };
    let private = private_dir()?;
    cleanup.private_dir = Some(private.clone());

    let (tap, rx) = Tap::new(live_common::TAP_CAPACITY, clock);
    let ids = ConnIds::default();
    let relays = Relays::default();
    let mut private_binds = Vec::new();
    let server_peer = Arc::new(std::sync::Mutex::new(Peer {
        name: name.clone(),
        pid: None,
        argv: args.program.clone(),
    }));
    for (i, bind) in plan.binds.iter().enumerate() {
        prepare_listen_path(&bind.path)?;
        let listener = UnixListener::bind(&bind.path)
            .with_context(|| format!("listening on {}", bind.path.display()))?;
        cleanup.sockets.push(bind.path.clone());
        let _ = fs::set_permissions(&bind.path, fs::Permissions::from_mode(0o700));
        let upstream = private.join(format!("bind{i}.sock"));
        private_binds.push(upstream.clone());
        let public = bind.path.display().to_string();
        let server = server_peer.clone();
        let server_name = name.clone();
        relay::serve(
            listener,
            upstream,
            tap.clone(),
            ids.clone(),
            relays.clone(),
            Arc::new(move |client, _| {
                let client = peer_of(client);
                let who = client.as_ref().map_or("client".to_string(), |p| {
                    format!("{} ({})", p.name, p.pid.unwrap_or(0))
                });
                ConnInfo {
                    label: format!("{who} → {server_name} (unix:{public})"),
                    client,
                    server: server.lock().ok().map(|s| s.clone()),
                }
            }),
        )?;
    }
    if plan
        .binds
        .iter()
        .any(|b| b.origin == bitcoin::BindOrigin::Added)
    {
        eprintln!(
            "mpspy: {name} was given no -ipcbind; adding -ipcbind=unix (listening on {}); --no-bind turns this off",
            plan.binds
                .first()
                .map_or(String::new(), |b| b.path.display().to_string())
        );
    }
    let mut private_connect = None;
    if let Some(target) = &plan.connect {
        let path = private.join("connect.sock");
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        private_connect = Some(path);
        let client = server_peer.clone();
        let target_text = target.display().to_string();
        relay::serve(
            listener,
            target.clone(),
            tap.clone(),
            ids.clone(),
            relays.clone(),
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
        )?;
    }
    // Bitcoin binds config-file -ipcbind values in addition to command-line ones, so the only
    // way to keep the program off the public paths is a copy of its config without them.
    let new_args = match bitcoin::filtered_config(&plan)? {
        Some(text) => {
            let conf = private.join("bitcoin.conf");
            fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
            bitcoin::rewrite_with_config(
                pargs,
                &plan,
                &private_binds,
                private_connect.as_deref(),
                Some(&conf),
            )
        }
        None => bitcoin::rewrite(pargs, &plan, &private_binds, private_connect.as_deref()),
    };

    let decoder = live_common::start_decoder(config, clock, rx, outputs)?;

    let origin = clock.origin();
    let mut command = program_command(args, &private, program, &tap, &ids, &relays);
    command.args(&new_args);
    if ui.is_some() {
        // The UI owns the screen and the keyboard: the program's output goes to its log pane,
        // and it reads no keys meant for the UI.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    } else if args.json.as_deref() == Some("-") {
        // JSON Lines own stdout; the program's output must not corrupt them.
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr")?;
        command.stdout(std::process::Stdio::from(stderr));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pid = child.id();
    if let Some((sender, _)) = &ui {
        if let Some(out) = child.stdout.take() {
            forward_output(out, false, sender.clone(), origin);
        }
        if let Some(err) = child.stderr.take() {
            forward_output(err, true, sender.clone(), origin);
        }
    }
    if let Ok(mut p) = server_peer.lock() {
        p.pid = Some(pid);
    }
    // Signals meant for the program go to the program; mpspy ends when it does.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    let handle = signals.handle();
    let forwarder = thread::spawn(move || {
        for sig in signals.forever() {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = kill(Pid::from_raw(pid as i32), s);
            }
        }
    });
    if let Some(hook) = after_start {
        hook(pid);
    }
    let finish = move || -> Result<(std::process::ExitStatus, String, Outputs)> {
        let status = child.wait().context("waiting for the program")?;
        let how = live_common::describe_exit(&name, status);
        let outputs = live_common::end_session(&relays, &how, &tap, decoder)?;
        Ok((status, how, outputs))
    };
    let interrupt = move || {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
    };
    let (status, how, outputs) = live_common::run_session(
        ui,
        finish,
        &format!("{program_name} {} (pid {pid})", pargs.join(" ")),
        origin,
        interrupt,
    )?;
    handle.close();
    let _ = forwarder.join();
    drop(cleanup);

    live_common::print_summary(args.quiet, &how, &outputs);
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(s)) => ExitCode::from(128u8.wrapping_add(s as u8)),
        _ => ExitCode::FAILURE,
    })
}
