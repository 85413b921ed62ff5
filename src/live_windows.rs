//! `mpspy -- PROGRAM` on Windows: the program runs with mpspy on the connections of the
//! processes it spawns (libmultiprocess PR #231's named pipe protocol; [`crate::shim_windows`]).
//!
//! Listening and connecting sockets (`-ipcbind`, `-ipcconnect`) would be AF_UNIX on Windows
//! too, which mpspy does not relay there yet: a program that asks for them runs as given, and a
//! warning notice says those sockets are not recorded. On a console the terminal UI works as on unix; Ctrl-C in it
//! is passed to the program's console group.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use mpspy_bitcoin::args as bitcoin;
use mpspy_capture::relay::ConnIds;
use mpspy_capture::tap::Clock;
use mpspy_capture::winspawn::{self, Output};
use mpspy_schema::event::{NoticeLevel, Peer};

use crate::cli::RunArgs;
use crate::live_common;
use crate::shim_windows::{self, display_name};
use crate::sink::tui::UiSender;

/// Removes mpspy's private directory, whatever way the run ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A stand-in cannot be deleted while a shim runs from it, and a process's image stays
        // in use a moment after it has exited; give them a little time.
        for _ in 0..40 {
            if fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn private_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let dir = base.join(format!("mpspy-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a private directory in {}", base.display())
}

/// The program's file as CreateProcess would run it: a path (with `.exe` added where it has no
/// extension), or a bare name looked up in `PATH`. Made absolute, so the stand-ins' real
/// directory is known.
fn locate(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found =
        mpspy_capture::win32::resolve_program(program, std::env::split_paths(&path), Path::is_file)
            .with_context(|| format!("no such program: {program}"))?;
    std::path::absolute(&found).with_context(|| format!("resolving {}", found.display()))
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    let (program, pargs) = args
        .program
        .split_first()
        .context("no program given after --")?;
    let name = display_name(program);
    let messages = live_common::Messages::new(&args.session)?;
    let env = bitcoin::Env::from_process().context("reading the environment")?;
    // No default -ipcbind here: that would be a unix socket.
    let unix_sockets: Vec<String> = match bitcoin::plan(program, pargs, &env, false) {
        Ok(plan) => plan
            .binds
            .iter()
            .map(|b| format!("-ipcbind unix:{}", b.path.display()))
            .chain(
                plan.connect
                    .iter()
                    .map(|c| format!("-ipcconnect unix:{}", c.display())),
            )
            .collect(),
        Err(_) => Vec::new(),
    };
    let real = locate(program)?;

    let config = crate::schema_config(&args.session.schema)?;
    let injector = live_common::injector(&args.session, &config)?;
    let clock = Clock::start();
    let (tap, rx, recording) =
        live_common::capture(&args.session, &config, clock, injector.as_deref())?;
    let mut outputs = live_common::outputs(&args.session, recording.as_ref())?;
    live_common::announce_injection(&tap, &mut outputs, injector.as_deref());
    let metrics = live_common::metrics(&args.session, &mut outputs, &messages)?;
    let ui = live_common::use_tui(&args.session).then(|| UiSender::new(false));
    live_common::add_screen_outputs(
        &args.session,
        &mut outputs,
        ui.as_ref().map(|u| &u.0),
        &messages,
    );
    let private = private_dir()?;
    let cleanup = Cleanup(private.clone());
    if !unix_sockets.is_empty() {
        tap.notice(
            NoticeLevel::Warning,
            format!(
                "{name} uses unix sockets ({}), which mpspy does not relay on Windows yet: they are not recorded",
                unix_sockets.join(", ")
            ),
        );
    }
    let ids = ConnIds::default();
    let relays = live_common::relays(injector.as_ref());
    let shims = if args.no_spawn_shim {
        None
    } else {
        match shim_windows::setup(&private, &real, &tap, &ids, &relays) {
            Ok(s) => Some(s),
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
    };
    // No SIGUSR1 to ask with on Windows yet.
    let snapshots = live_common::SnapshotRequest::new(tap.clone());
    let decoder = live_common::start_decoder(config, clock, rx, outputs, snapshots)?;

    // argv0 is the stand-in (so the program's spawns find the other stand-ins next to it);
    // the file run is the real program.
    let argv0 = shims
        .as_ref()
        .map_or_else(|| program.clone(), |s| s.argv0.display().to_string());
    let argv: Vec<String> = std::iter::once(argv0)
        .chain(pargs.iter().cloned())
        .collect();
    let env = shims.as_ref().map_or(&[][..], |s| &s.env[..]);
    // The UI owns the console: the program's output goes to its log pane. Otherwise JSON
    // Lines on stdout must not be mixed with the program's output.
    let origin = clock.origin();
    let mut readers = None;
    let output = if let Some((sender, _)) = &ui {
        let (out_r, out_w) = std::io::pipe().context("creating a pipe for the program's stdout")?;
        let (err_r, err_w) = std::io::pipe().context("creating a pipe for the program's stderr")?;
        readers = Some((out_r, err_r, sender.clone()));
        Output::Pipes {
            stdout: out_w.into(),
            stderr: err_w.into(),
        }
    } else if args.session.json.as_deref() == Some("-") {
        Output::Stderr
    } else {
        Output::Ours
    };
    shim_windows::survive_ctrl_c();
    let child = winspawn::create_process_with_stdio(&real, &argv, env, output)
        .with_context(|| format!("starting {}", real.display()))?;
    if let Some((out_r, err_r, sender)) = readers {
        live_common::forward_output(out_r, false, sender.clone(), origin);
        live_common::forward_output(err_r, true, sender, origin);
    }
    let pid = child.id();
    if let Some(s) = &shims {
        s.peers.lock().unwrap_or_else(|e| e.into_inner()).insert(
            child.id(),
            Peer {
                name: name.clone(),
                pid: Some(child.id()),
                argv: args.program.clone(),
            },
        );
    }
    let title = format!("{name} {} (pid {pid})", pargs.join(" "));
    let finish = move || -> Result<live_common::Finished> {
        let status = child.wait().context("waiting for the program")?;
        let how = live_common::describe_exit(&name, status);
        let outputs = live_common::end_session(&relays, &how, &tap, decoder, recording)?;
        Ok((status, how, outputs))
    };
    let interrupt = || {
        let _ = winspawn::interrupt_console();
    };
    let (status, how, outputs) = live_common::run_session(ui, finish, &title, origin, interrupt)?;
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
    let code = status.code().unwrap_or(1);
    Ok(match u8::try_from(code) {
        Ok(c) => ExitCode::from(c),
        // Windows exit codes are 32 bits; ExitCode takes a u8.
        Err(_) => std::process::exit(code),
    })
}
