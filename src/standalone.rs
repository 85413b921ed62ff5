//! What `mpspy proxy` and `mpspy attach` share: a live session with no program of mpspy's own.
//! mpspy serves one listening socket and relays each client to a server, with every output of
//! `mpspy -- PROGRAM` ([`crate::live_common`]), until it is told to stop: SIGINT, SIGTERM,
//! SIGHUP or SIGQUIT, Ctrl-C or `q` in the UI, or (attach) the server going away. Then the
//! command's own `on_stop` runs first (attach puts the node's socket back), the listener closes,
//! the connections still open are closed, the outputs are flushed and the summary is written.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mpspy_capture::relay::{ConnIds, Relays, Serving};
use mpspy_capture::tap::{Clock, Tap};
use mpspy_schema::event::NoticeLevel;
use mpspy_tui::Feed;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::cli::SessionArgs;
use crate::live_common::{self, Messages, Recording, SnapshotRequest};
use crate::pipeline::Outputs;
use crate::sink::metrics::MetricsServer;
use crate::sink::tui::UiSender;

/// How often the session looks whether its server is still there (`watch`).
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// A standalone session being set up: outputs, decoder and signal handlers are in place (so
/// nothing that crosses the relay is missed and a signal that comes during the setup still
/// ends the session cleanly); the command adds its listener and then [`Session::run`]s.
pub(crate) struct Session {
    args: SessionArgs,
    pub(crate) messages: Messages,
    pub(crate) tap: Tap,
    pub(crate) ids: ConnIds,
    pub(crate) relays: Relays,
    decoder: JoinHandle<Outputs>,
    recording: Option<Recording>,
    metrics: Option<MetricsServer>,
    ui: Option<(UiSender, Receiver<Feed>)>,
    origin: Instant,
    stop: Sender<String>,
    stopped: Receiver<String>,
    signals: signal_hook::iterator::Handle,
    signal_thread: JoinHandle<()>,
}

/// Looks whether the session's server is gone: the reason to end, if so.
pub(crate) type Watch = Box<dyn FnMut(&Serving) -> Option<String> + Send>;

/// What the command asks of the end of its session.
pub(crate) struct Ending {
    /// Looked at every [`WATCH_EVERY`]: a reason to end the session (the server is gone).
    pub(crate) watch: Watch,
    /// Runs once the session is told to stop, before the listener closes (while clients still
    /// reach mpspy): attach puts the node's socket back here. Returns whether it went well.
    pub(crate) on_stop: Box<dyn FnOnce(&Tap) -> bool + Send>,
}

impl Session {
    /// Starts the outputs, the decoder and the signal handlers.
    pub(crate) fn start(args: &SessionArgs, messages: Messages) -> Result<Session> {
        let config = crate::schema_config(&args.schema)?;
        let injector = live_common::injector(args, &config)?;
        let clock = Clock::start();
        let (tap, rx, recording) = live_common::capture(args, &config, clock, injector.as_deref())?;
        let mut outputs = live_common::outputs(args, recording.as_ref())?;
        live_common::announce_injection(&tap, &mut outputs, injector.as_deref());
        let metrics = live_common::metrics(args, &mut outputs, &messages)?;
        let ui = live_common::use_tui(args).then(|| UiSender::new(false));
        live_common::add_screen_outputs(args, &mut outputs, ui.as_ref().map(|u| &u.0), &messages);
        let snapshots = SnapshotRequest::new(tap.clone());
        let decoder = live_common::start_decoder(config, clock, rx, outputs, snapshots.clone())?;
        let (stop, stopped) = channel();
        // Every signal that would end mpspy by default (short of SIGKILL and the faults) ends
        // the session instead, so that what it changed is put back; SIGUSR1 asks for a
        // snapshot of the pending calls, as under `mpspy --`.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1])
            .context("installing signal handlers")?;
        let handle = signals.handle();
        let to_stop = stop.clone();
        let signal_thread =
            thread::Builder::new()
                .name("mpspy-signals".into())
                .spawn(move || {
                    for s in signals.forever() {
                        if s == SIGUSR1 {
                            snapshots.request("SIGUSR1");
                            continue;
                        }
                        let name = signal_hook::low_level::signal_name(s).unwrap_or("a signal");
                        let _ = to_stop.send(format!("stopped by {name}"));
                    }
                })?;
        Ok(Session {
            args: args.clone(),
            messages,
            tap,
            ids: ConnIds::default(),
            relays: live_common::relays(injector.as_ref()),
            decoder,
            recording,
            metrics,
            ui,
            origin: clock.origin(),
            stop,
            stopped,
            signals: handle,
            signal_thread,
        })
    }

    /// Relays through `serving` until told to stop, then ends the session: `ending.on_stop`,
    /// the listener closed, the connections closed, the outputs flushed, the summary. Exit 0,
    /// or 1 when `--check` finds what fails, or 2 when `on_stop` did not go well.
    pub(crate) fn run(
        self,
        serving: Serving,
        mut ending: Ending,
        title: &str,
        what: &str,
    ) -> Result<ExitCode> {
        let Session {
            args,
            messages,
            tap,
            ids: _,
            relays,
            decoder,
            recording,
            metrics,
            ui,
            origin,
            stop,
            stopped,
            signals,
            signal_thread,
        } = self;
        let finish = move || -> Result<(bool, String, Outputs)> {
            let how = loop {
                match stopped.recv_timeout(WATCH_EVERY) {
                    Ok(why) => break why,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(why) = (ending.watch)(&serving) {
                            break why;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break "stopped".to_string(),
                }
            };
            tap.notice(NoticeLevel::Info, format!("{how}; ending the session"));
            let ok = (ending.on_stop)(&tap);
            // No new clients from here on; those being relayed are closed by end_session.
            serving.stop();
            let outputs = live_common::end_session(&relays, &how, &tap, decoder, recording)?;
            Ok((ok, how, outputs))
        };
        let interrupt = {
            let stop = Mutex::new(stop);
            move || {
                if let Ok(s) = stop.lock() {
                    let _ = s.send("stopped from the UI".to_string());
                }
            }
        };
        let (ok, how, outputs) = live_common::run_session(ui, finish, title, origin, interrupt)?;
        signals.close();
        let _ = signal_thread.join();
        live_common::print_summary(&messages, &how, &outputs);
        // The endpoint stops with the session.
        drop(metrics);
        if !ok {
            return Ok(ExitCode::from(2));
        }
        if live_common::check_fails(&args, &messages, &outputs, what) {
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `unix:PATH` as a path.
pub(crate) fn unix_path(address: &str, option: &str) -> Result<std::path::PathBuf> {
    match address.strip_prefix("unix:") {
        Some(p) if !p.is_empty() => Ok(p.into()),
        _ => anyhow::bail!("{option} '{address}': expected unix:PATH"),
    }
}
