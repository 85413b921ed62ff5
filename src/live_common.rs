//! What `mpspy -- PROGRAM` does the same way on every platform: the outputs, the decoder
//! thread, the end of a session (draining the relays) and the summary. How the program is
//! started and how its connections reach the relay is the platform's part (`crate::live` on
//! unix, `crate::live_windows` on Windows).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mpspy_capture::inject::Injector;
use mpspy_capture::relay::Relays;
use mpspy_capture::tap::{Clock, Tap, TapReceiver};
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::event::NoticeLevel;

use crate::cli::SessionArgs;
use mpspy_tui::{Action, App, Feed, Timebase};

use crate::pipeline::Outputs;
use crate::sink::tui::UiSender;

/// The capture side of a run: the tap the relays feed, the decoder's queue on it, and the
/// recording (`--record`), written from a queue of its own so it holds every frame that crossed
/// the relay whether or not decoding keeps up. The file is created now, so a bad path fails
/// before anything starts.
pub(crate) fn capture(
    args: &SessionArgs,
    config: &SchemaConfig,
    clock: Clock,
    injector: Option<&Injector>,
) -> Result<(Tap, TapReceiver, Option<Recording>)> {
    use mpspy_capture::record::{RECORDER, Recorder, record_live};
    use mpspy_capture::tap::DECODER;
    let Some(path) = &args.record else {
        let (tap, rx) = Tap::single(clock, DECODER);
        return Ok((tap, rx, None));
    };
    // A recording of an altered session says so in its header, where capinfos and Wireshark
    // show it, not only in a control record.
    let comments: Vec<String> = injector
        .map(|i| format!("mpspy fault injection: {}", i.describe()))
        .into_iter()
        .collect();
    let recorder = Recorder::create_with_comments(
        path,
        &config.choice.to_string(),
        clock.start_unix_ns,
        &comments,
    )
    .with_context(|| format!("--record {}", path.display()))?;
    let (tap, mut rx) = Tap::new(clock, &[DECODER, RECORDER]);
    let record_rx = rx.pop().expect("two receivers");
    let decode_rx = rx.pop().expect("two receivers");
    let writer = record_live(recorder, record_rx, clock).context("starting the recording")?;
    Ok((
        tap,
        decode_rx,
        Some(Recording {
            path: path.display().to_string(),
            writer,
        }),
    ))
}

/// `--inject`: the rules, checked against every schema set the session may decode with (a
/// method none of them has is an error before anything starts).
pub(crate) fn injector(args: &SessionArgs, config: &SchemaConfig) -> Result<Option<Arc<Injector>>> {
    use mpspy_schema::sets::{BUILTIN, Choice, builtin};
    if args.inject.is_empty() {
        return Ok(None);
    }
    let mut sets = config.user.clone();
    match &config.choice {
        Choice::Fixed(name) => sets.extend(builtin(name)),
        Choice::Auto => sets.extend(BUILTIN.iter().filter_map(|n| builtin(n))),
    }
    let injector =
        Injector::new(args.inject.clone(), &sets).map_err(|e| anyhow::anyhow!("--inject: {e}"))?;
    Ok(Some(Arc::new(injector)))
}

/// Relays for the session: with `--inject` rules, relays that inject them.
pub(crate) fn relays(injector: Option<&Arc<Injector>>) -> Relays {
    injector.map_or_else(Relays::default, |i| Relays::with_injector(i.clone()))
}

/// Says at the start, in every output, that this session's traffic is altered.
pub(crate) fn announce_injection(tap: &Tap, outputs: &mut Outputs, injector: Option<&Injector>) {
    if let Some(i) = injector {
        outputs.injecting = Some(i.describe());
        tap.notice(
            NoticeLevel::Warning,
            format!(
                "fault injection is on: {}; mpspy delays, answers or cuts what these match, and says so in `injected` events",
                i.describe()
            ),
        );
    }
}

/// A live recording being written.
pub(crate) struct Recording {
    path: String,
    writer: JoinHandle<mpspy_capture::record::RecordSummary>,
}

/// The `--json` output of a run, knowing where the recording goes; the caller adds the UI or the
/// text lines.
pub(crate) fn outputs(args: &SessionArgs, recording: Option<&Recording>) -> Result<Outputs> {
    let mut outputs = Outputs::new();
    outputs.recording = recording.map(|r| r.path.clone());
    if let Some(target) = &args.json {
        outputs.json(target)?;
    }
    if let Some(path) = &args.trace_out {
        outputs.trace(&path.to_string_lossy(), "--trace-out")?;
    }
    if let Some(url) = &args.otlp {
        outputs.otlp(url)?;
    }
    if args.check {
        let findings = crate::sink::findings::Findings::default();
        outputs.add(Box::new(crate::sink::findings::FindingsSink(
            findings.clone(),
        )));
        outputs.findings = Some(findings);
    }
    Ok(outputs)
}

/// `--metrics ADDR`: the metrics sink among the outputs, and its endpoint, which answers until
/// the returned server is dropped (the end of the run). Says where it is in mpspy's messages.
pub(crate) fn metrics(
    args: &SessionArgs,
    outputs: &mut Outputs,
    messages: &Messages,
) -> Result<Option<crate::sink::metrics::MetricsServer>> {
    use crate::sink::metrics::{MetricsServer, MetricsSink};
    let Some(addr) = args.metrics else {
        return Ok(None);
    };
    let (sink, registry) = MetricsSink::new();
    let server = MetricsServer::start(addr, registry)?;
    outputs.add(Box::new(sink));
    messages.say(&format!(
        "mpspy: serving metrics on {} while the session runs",
        server.url()
    ));
    Ok(Some(server))
}

/// How often a live decoder with nothing to decode looks for stuck calls (limits are seconds).
const STUCK_TICK: Duration = Duration::from_millis(500);

/// Asks the decoder for a snapshot of every pending call (SIGUSR1): the decoder owns the
/// engine, so the request is a flag it looks at after each item, and a notice through the tap
/// wakes it (and says in the outputs why a snapshot follows).
#[derive(Clone)]
pub(crate) struct SnapshotRequest {
    wanted: Arc<AtomicBool>,
    tap: Tap,
}

impl SnapshotRequest {
    pub(crate) fn new(tap: Tap) -> Self {
        SnapshotRequest {
            wanted: Arc::default(),
            tap,
        }
    }

    // Only unix has SIGUSR1 to ask with.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn request(&self, why: &str) {
        self.wanted.store(true, Ordering::Relaxed);
        self.tap.notice(
            NoticeLevel::Info,
            format!("{why}: a snapshot of the pending calls follows"),
        );
    }
}

/// Starts the decoder: a live session on `rx` into `outputs`, handed back when the tap
/// finishes.
pub(crate) fn start_decoder(
    config: SchemaConfig,
    clock: Clock,
    mut rx: TapReceiver,
    mut outputs: Outputs,
    snapshots: SnapshotRequest,
) -> std::io::Result<JoinHandle<Outputs>> {
    let mut session = Session::new(config);
    outputs.start(&mut session, "live", Some(clock.start_unix_ns));
    thread::Builder::new()
        .name("mpspy-decode".into())
        .spawn(move || {
            loop {
                // A stuck call is one that nothing happens to, so while one may become stuck
                // the decoder also wakes every STUCK_TICK to look; otherwise it sleeps until
                // something comes.
                let next = if rx.is_drained() && session.may_become_stuck() {
                    rx.recv_timeout(&clock, STUCK_TICK)
                } else {
                    Ok(rx.recv(&clock))
                };
                match next {
                    Ok(Some(item)) => {
                        outputs.item(&mut session, &item);
                        // The next item may be a while away (the receiver lingers between
                        // batches).
                        if rx.is_drained() {
                            outputs.flush();
                        }
                    }
                    Ok(None) => break,
                    Err(()) => {
                        outputs.tick(&mut session, clock.now_ns());
                        outputs.flush();
                    }
                }
                if snapshots.wanted.swap(false, Ordering::Relaxed) {
                    outputs.snapshot(&mut session, clock.now_ns());
                    outputs.flush();
                }
            }
            outputs.finish();
            outputs
        })
}

/// Ends the session once the program has exited (`how`): lets bytes in flight reach their
/// peers, closes what is left, and returns the outputs once everything is decoded and recorded.
pub(crate) fn end_session(
    relays: &Relays,
    how: &str,
    tap: &Tap,
    decoder: JoinHandle<Outputs>,
    recording: Option<Recording>,
) -> Result<Outputs> {
    // Connections usually end by themselves once the program is gone (its sockets closed):
    // wait for that, then close what is left so its end is reported as the program's exit.
    if !relays.wait_idle(Duration::from_millis(500)) {
        relays.close_all(how);
        relays.wait_idle(Duration::from_secs(2));
    }
    tap.finish();
    let mut outputs = decoder
        .join()
        .map_err(|_| anyhow::anyhow!("decoder thread panicked"))?;
    if let Some(r) = recording {
        outputs.recorded = Some(
            r.writer
                .join()
                .map_err(|_| anyhow::anyhow!("recording thread panicked"))?,
        );
    }
    Ok(outputs)
}

/// Where mpspy's own messages go (notices, warnings, the summary): stderr, which it shares with
/// the program; `--log FILE`; or, with `--quiet` and no `--log`, nowhere (they still reach the
/// event outputs). Shared by the notice sink on the decoder thread and the end of the run.
#[derive(Clone)]
pub(crate) struct Messages(Arc<Mutex<Target>>);

enum Target {
    Stderr,
    File(std::fs::File),
    Nowhere,
}

impl Messages {
    pub(crate) fn new(args: &SessionArgs) -> Result<Messages> {
        let target = match &args.log {
            Some(path) => Target::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("--log {}", path.display()))?,
            ),
            None if args.quiet => Target::Nowhere,
            None => Target::Stderr,
        };
        Ok(Messages(Arc::new(Mutex::new(target))))
    }

    /// Whether messages go to stderr (where the text event lines, which include notices, go
    /// too).
    pub(crate) fn is_stderr(&self) -> bool {
        self.0.lock().is_ok_and(|t| matches!(*t, Target::Stderr))
    }

    /// One message (a line, or several).
    pub(crate) fn say(&self, text: &str) {
        let Ok(mut t) = self.0.lock() else { return };
        match &mut *t {
            Target::Stderr => eprintln!("{text}"),
            // A log that cannot be written must not stop the session (nor reach stderr).
            Target::File(f) => {
                let _ = writeln!(f, "{text}");
            }
            Target::Nowhere => {}
        }
    }
}

/// Notices to [`Messages`], for when the text event lines (which show them) do not go there.
pub(crate) struct NoticeSink(pub(crate) Messages);

impl crate::sink::Sink for NoticeSink {
    fn event(&mut self, e: &Arc<mpspy_schema::Event>) -> std::io::Result<()> {
        if let mpspy_schema::EventKind::Notice { level, text } = &e.kind {
            match level {
                NoticeLevel::Info => self.0.say(&format!("mpspy: {text}")),
                NoticeLevel::Warning => self.0.say(&format!("mpspy: warning: {text}")),
            }
        }
        Ok(())
    }
}

/// The event outputs every run has besides `--json`/`--record`: the UI, or the text lines on
/// stderr (unless `--quiet`, or `--json -` owns the terminal's attention), and mpspy's notices
/// where [`Messages`] go when the text lines do not show them there.
pub(crate) fn add_screen_outputs(
    args: &SessionArgs,
    outputs: &mut Outputs,
    ui: Option<&UiSender>,
    messages: &Messages,
) {
    let text_lines = ui.is_none() && args.json.as_deref() != Some("-") && !args.quiet;
    if let Some(sender) = ui {
        outputs.add(Box::new(crate::sink::tui::UiSink(sender.clone())));
    } else if text_lines {
        outputs.text_stderr(true);
    }
    // On stderr the UI or the text lines show notices already.
    if !messages.is_stderr() || !(text_lines || ui.is_some()) {
        outputs.add(Box::new(NoticeSink(messages.clone())));
    }
}

/// The per-method summary and any output error, to [`Messages`].
/// With `--check`: says what was found, and whether the check fails (the run then exits 1
/// where the program exited 0).
/// `what`: what was checked (the program, "the proxy's session").
pub(crate) fn check_fails(
    args: &SessionArgs,
    messages: &Messages,
    outputs: &Outputs,
    what: &str,
) -> bool {
    let Some(findings) = &outputs.findings else {
        return false;
    };
    messages.say(
        findings
            .report(&format!("mpspy check of {what}"))
            .trim_end(),
    );
    let (total, failing) = findings.counts(args.fail_on);
    if failing > 0 {
        messages.say(&crate::sink::findings::failed_line(
            failing,
            total,
            args.fail_on,
            "--allow-lint",
        ));
    }
    failing > 0
}

pub(crate) fn print_summary(messages: &Messages, how: &str, outputs: &Outputs) {
    let stats = outputs.stats.lock();
    if !stats.methods.is_empty() {
        messages.say(&format!(
            "\nmpspy: {how}; per-method summary:\n{}",
            stats.table()
        ));
    } else {
        messages.say(&format!("mpspy: {how}; no IPC calls seen"));
    }
    // At most a screenful: the first ones say what kind of leak it is, the count how big.
    const SHOWN: usize = 10;
    if !outputs.left.is_empty() {
        let mut text = format!(
            "mpspy: {} connection(s) closed with calls unanswered or objects never destroyed:",
            outputs.left.len()
        );
        for l in outputs.left.iter().take(SHOWN) {
            text.push_str("\n  ");
            text.push_str(l);
        }
        if outputs.left.len() > SHOWN {
            text.push_str(&format!("\n  … and {} more", outputs.left.len() - SHOWN));
        }
        messages.say(&text);
    }
    if let Some(rules) = &outputs.injecting {
        let total: u64 = outputs.injected.values().sum();
        let kinds: Vec<String> = outputs
            .injected
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        messages.say(&format!(
            "mpspy: fault injection was on ({rules}): {total} fault(s) injected{}",
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        ));
    }
    if let Some(otlp) = &outputs.otlp {
        messages.say(&format!("mpspy: {}", otlp.summary()));
    }
    let recorded = outputs.recorded.as_ref();
    let complete = recorded.is_some_and(|r| r.dropped == 0 && r.error.is_none());
    if outputs.dropped > 0 {
        match (&outputs.recording, complete) {
            (Some(file), true) => messages.say(&format!(
                "mpspy: {} frames were not decoded live because decoding fell behind; the recording has them all: mpspy replay {file}",
                outputs.dropped
            )),
            _ => messages.say(&format!(
                "mpspy: {} frames were not decoded live because decoding fell behind",
                outputs.dropped
            )),
        }
    }
    if let Some(r) = recorded {
        if r.dropped > 0 {
            messages.say(&format!(
                "mpspy: warning: the recording lost {} of {} frames because writing fell behind (counted in the file: isb_ifdrop)",
                r.dropped,
                r.frames + r.dropped
            ));
        }
        if let Some(e) = &r.error {
            messages.say(&format!("mpspy: warning: the recording stopped: {e}"));
        }
    }
    if let Some(e) = &outputs.error {
        messages.say(&format!("mpspy: warning: {e:#}"));
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

/// The terminal UI is for a person at a terminal: stdin (keys) and stdout (screen) must both
/// be terminals, and `--json -` owns stdout. `--quiet` leaves the terminal to the program.
pub(crate) fn use_tui(args: &SessionArgs) -> bool {
    !args.no_tui
        && !args.quiet
        && args.json.as_deref() != Some("-")
        && crate::sink::tui::on_terminal()
}

/// What a finished program leaves: its status, how it ended, and the outputs.
pub(crate) type Finished = (ExitStatus, String, Outputs);

/// Runs `finish` (wait for the program, end the session) and, with a UI, the UI beside it: the
/// UI shows the end of the session (the disconnects) and stays until the user quits. Ctrl-C in
/// the UI calls `interrupt`; quitting while the program runs calls it too and waits. `T` says
/// how the session ended to the caller (the program's exit status; for `mpspy attach`, whether
/// the node's socket was put back).
pub(crate) fn run_session<T: Send + 'static>(
    ui: Option<(UiSender, Receiver<Feed>)>,
    finish: impl FnOnce() -> Result<(T, String, Outputs)> + Send + 'static,
    title: &str,
    origin: Instant,
    interrupt: impl Fn(),
) -> Result<(T, String, Outputs)> {
    let Some((sender, rx)) = ui else {
        return finish();
    };
    let ended = sender.clone();
    let lifecycle = thread::Builder::new()
        .name("mpspy-wait".into())
        .spawn(move || {
            let done = finish();
            if let Ok((_, how, _)) = &done {
                let _ = ended.send(Feed::Ended(how.clone()));
            }
            done
        })?;
    let app = App::new(mpspy_tui::Options {
        title: title.to_string(),
        live: true,
        ..Default::default()
    });
    let shown = mpspy_tui::run(app, &rx, Timebase::Live(origin), &sender.dropped, |a| {
        if a == Action::Interrupt {
            interrupt();
        }
    });
    // Later output and events have nowhere to go on screen; output goes to stderr.
    drop(rx);
    if !lifecycle.is_finished() {
        eprintln!("mpspy: stopping (interrupt) and waiting for the session to end");
        interrupt();
    }
    let done = lifecycle
        .join()
        .map_err(|_| anyhow::anyhow!("waiting thread panicked"))?;
    shown.context("terminal UI")?;
    done
}

/// Reads the program's output line by line into the UI's log pane; once the UI is gone, to
/// mpspy's stderr so nothing is lost.
pub(crate) fn forward_output(
    stream: impl Read + Send + 'static,
    stderr: bool,
    ui: UiSender,
    origin: Instant,
) {
    let _ = thread::Builder::new()
        .name("mpspy-output".into())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            let mut gone = false;
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                buf.clear();
                if !gone {
                    let f = Feed::Output {
                        t_ns: origin.elapsed().as_nanos() as u64,
                        stderr,
                        line,
                    };
                    match ui.send(f) {
                        Ok(()) => continue,
                        Err(Feed::Output { line, .. }) => {
                            gone = true;
                            eprintln!("{line}");
                        }
                        Err(_) => gone = true,
                    }
                } else {
                    eprintln!("{line}");
                }
            }
        });
}
