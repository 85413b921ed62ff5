//! What `mpspy -- PROGRAM` does the same way on every platform: the outputs, the decoder
//! thread, the end of a session (draining the relays) and the summary. How the program is
//! started and how its connections reach the relay is the platform's part ([`crate::live`] on
//! unix, [`crate::live_windows`] on Windows).

use std::process::ExitStatus;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Result;
use mpspy_recorder::relay::Relays;
use mpspy_recorder::tap::{Clock, Tap, TapReceiver};
use mpspy_recorder::{SchemaConfig, Session};

use crate::cli::RunArgs;
use crate::pipeline::Outputs;

/// Frames queued for the decoder before the relay starts dropping copies.
pub(crate) const TAP_CAPACITY: usize = 64 * 1024;

/// The `--record` and `--json` outputs of a run; the caller adds the UI or the text lines.
pub(crate) fn outputs(args: &RunArgs, config: &SchemaConfig, clock: &Clock) -> Result<Outputs> {
    let mut outputs = Outputs::new();
    if let Some(path) = &args.record {
        outputs.record(path, &config.choice.to_string(), clock.start_unix_ns)?;
    }
    if let Some(target) = &args.json {
        outputs.json(target, true)?;
    }
    Ok(outputs)
}

/// Starts the decoder: a live session on `rx` into `outputs`, handed back when the tap
/// finishes.
pub(crate) fn start_decoder(
    config: SchemaConfig,
    clock: Clock,
    mut rx: TapReceiver,
    mut outputs: Outputs,
) -> std::io::Result<JoinHandle<Outputs>> {
    let mut session = Session::new(config);
    session.start("live", Some(clock.start_unix_ns));
    for e in session.drain() {
        outputs.event(&e);
    }
    thread::Builder::new()
        .name("mpspy-decode".into())
        .spawn(move || {
            while let Some(item) = rx.recv(&clock) {
                outputs.item(&mut session, &item);
            }
            outputs.finish();
            outputs
        })
}

/// Ends the session once the program has exited (`how`): lets bytes in flight reach their
/// peers, closes what is left, and returns the outputs once everything is decoded.
pub(crate) fn end_session(
    relays: &Relays,
    how: &str,
    tap: &Tap,
    decoder: JoinHandle<Outputs>,
) -> Result<Outputs> {
    let mut waited = 0;
    while relays.count() > 0 && waited < 20 {
        thread::sleep(Duration::from_millis(25));
        waited += 1;
    }
    relays.close_all(how);
    while relays.count() > 0 && waited < 80 {
        thread::sleep(Duration::from_millis(25));
        waited += 1;
    }
    // Closed notices are queued by the connection threads; give them a moment.
    thread::sleep(Duration::from_millis(50));
    tap.finish();
    decoder
        .join()
        .map_err(|_| anyhow::anyhow!("decoder thread panicked"))
}

/// The per-method summary on stderr (unless `quiet`), and any output error.
pub(crate) fn print_summary(quiet: bool, how: &str, outputs: &Outputs) {
    if !quiet {
        if !outputs.stats.methods.is_empty() {
            eprintln!(
                "\nmpspy: {how}; per-method summary:\n{}",
                outputs.stats.table()
            );
        } else {
            eprintln!("mpspy: {how}; no IPC calls seen");
        }
        if outputs.dropped > 0 {
            eprintln!(
                "mpspy: {} events were dropped because decoding fell behind",
                outputs.dropped
            );
        }
    }
    if let Some(e) = &outputs.error {
        eprintln!("mpspy: warning: {e:#}");
    }
}

/// How the program ended, for the summary and the `conn_closed` reasons.
pub(crate) fn describe_exit(name: &str, status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let (None, Some(s)) = (status.code(), status.signal()) {
            return format!("{name} was killed by signal {s}");
        }
    }
    match status.code() {
        Some(c) => format!("{name} exited with status {c}"),
        None => format!("{name} exited"),
    }
}
