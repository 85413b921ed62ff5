//! mpspy: see Bitcoin Core's multiprocess IPC.

#[cfg(unix)]
mod attach;
#[cfg(any(unix, windows))]
mod call;
mod cli;
mod demo;
mod diff;
#[cfg(unix)]
mod live;
#[cfg(any(unix, windows))]
mod live_common;
#[cfg(windows)]
mod live_windows;
mod pipeline;
#[cfg(unix)]
mod proxy;
#[cfg(unix)]
mod serve;
#[cfg(unix)]
mod shim;
#[cfg(windows)]
mod shim_windows;
mod sink;
#[cfg(unix)]
mod standalone;
#[cfg(any(unix, windows))]
mod tee;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use mpspy_engine::raw::decode_pair;
use mpspy_engine::{LintConfig, SchemaConfig, Session};
use mpspy_schema::sets;

use crate::cli::{Cli, Command, DecodeArgs, SchemaArgs};
use crate::sink::Sink;
use crate::sink::json::JsonLines;
use crate::sink::text::TextLines;

// Decoding allocates and frees many small values per frame, and frames are allocated on the
// relay's pump threads and freed on the decoder's: mimalloc takes that 35% faster than glibc's
// allocator (`cargo bench -p mpspy-capture --bench session`). Unix only so far: the Windows
// build is cross-compiled and tested under Wine, where it has not been tried.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // First: a spawned process reached through `mpspy -- PROGRAM`'s shim directory (this does
    // not return unless the real program cannot be executed).
    #[cfg(unix)]
    if shim::invoked_as_shim(&argv) {
        return shim::run(&argv);
    }
    #[cfg(windows)]
    if shim_windows::invoked_as_shim() {
        return shim_windows::run(&argv);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`mpspy … | head`) is a normal way to stop reading.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("mpspy: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Decode(args)) => decode(&args),
        Some(Command::Demo(args)) => demo::demo(&args),
        Some(Command::Replay(args)) => replay(&args),
        #[cfg(any(unix, windows))]
        Some(Command::Call(args)) => call::call(&args),
        #[cfg(any(unix, windows))]
        Some(Command::Bench(args)) => call::bench(&args),
        #[cfg(not(any(unix, windows)))]
        Some(Command::Call(_) | Command::Bench(_)) => {
            anyhow::bail!("call and bench are not supported on this platform yet")
        }
        #[cfg(unix)]
        Some(Command::Proxy(args)) => proxy::run(&args),
        #[cfg(unix)]
        Some(Command::Attach(args)) => attach::run(&args),
        // They relay unix sockets, which mpspy relays only on unix so far.
        #[cfg(not(unix))]
        Some(Command::Proxy(_)) => anyhow::bail!("mpspy proxy is not supported on Windows yet"),
        #[cfg(not(unix))]
        Some(Command::Attach(_)) => anyhow::bail!("mpspy attach is not supported on Windows yet"),
        Some(Command::Stats(args)) => stats(&args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Export(args)) => export(&args),
        Some(Command::Diff(args)) => diff_sessions(&args),
        #[cfg(unix)]
        Some(Command::Serve(args)) => serve::serve(&args),
        #[cfg(not(unix))]
        Some(Command::Serve(_)) => {
            anyhow::bail!(
                "serve listens on unix sockets, and is not supported on this platform yet"
            )
        }
        #[cfg(unix)]
        None => live::run(&cli.run),
        #[cfg(windows)]
        None => live_windows::run(&cli.run),
        #[cfg(not(any(unix, windows)))]
        None => {
            anyhow::bail!("running a program under mpspy is not supported on this platform yet")
        }
    }
}

fn replay(args: &cli::ReplayArgs) -> Result<ExitCode> {
    use mpspy_capture::record::{self, End};
    // The header names the schema selection used when recording; --schemas overrides it. The
    // file is then read as a stream: memory stays flat however long the recording is.
    let header = record::read_header(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let choice = match &args.schemas {
        Some(c) => c.clone(),
        None => header.schemas.parse().unwrap_or(sets::Choice::Auto),
    };
    let config = schema_config(&SchemaArgs {
        schemas: choice,
        schema: args.schema.clone(),
        include: args.include.clone(),
        allow_lint: args.allow_lint.clone(),
        poll_rate: args.poll_rate,
        stuck_after: args.stuck_after,
    })?;
    let mut outputs = pipeline::Outputs::new();
    if let Some(path) = &args.trace_out {
        outputs.trace(&path.to_string_lossy(), "--trace-out")?;
    }
    if let Some(url) = &args.otlp {
        outputs.otlp(url)?;
    }
    let use_tui = !args.json && !args.no_tui && sink::tui::on_terminal();
    let metrics = match args.metrics {
        Some(addr) => {
            let (sink, registry) = sink::metrics::MetricsSink::new();
            let server = sink::metrics::MetricsServer::start(addr, registry)?;
            outputs.add(Box::new(sink));
            // The UI owns the screen; it is said when the UI is done.
            if !use_tui {
                eprintln!("mpspy: serving the replay's metrics on {}", server.url());
            }
            Some(server)
        }
        None => None,
    };
    let source = format!("replay {}", args.file.display());
    let file = args.file.clone();
    // The outputs, and why the recording ended early if it did.
    let decode_all = move |mut outputs: pipeline::Outputs| {
        let mut session = Session::new(config);
        outputs.start(&mut session, &source, Some(header.start_unix_ns));
        let read = record::read_file_streaming(&file, |_, item| outputs.item(&mut session, &item));
        outputs.finish();
        let torn = match read {
            Ok((_, End::Torn(why))) => Some(format!(
                "{}: the recording ends inside a block ({why}); everything before it was replayed",
                file.display()
            )),
            Ok(_) => None,
            Err(e) => Some(format!("{}: {e}", file.display())),
        };
        (outputs, torn)
    };
    if use_tui {
        use mpspy_tui::{App, Feed, Options, Timebase};
        // A replay has no relay to protect: the decoder waits for the UI instead of dropping.
        let (sender, rx) = sink::tui::UiSender::new(true);
        outputs.add(Box::new(sink::tui::UiSink(sender.clone())));
        let worker = std::thread::spawn(move || {
            let (outputs, torn) = decode_all(outputs);
            let ended = torn.unwrap_or_else(|| "end of recording".to_string());
            let _ = sender.send(Feed::Ended(ended));
            outputs
        });
        let app = App::new(Options {
            title: format!("replay {}", args.file.display()),
            live: false,
            ..Default::default()
        });
        let dropped = Arc::default();
        let shown = mpspy_tui::run(app, &rx, Timebase::Replay, &dropped, |_| {});
        drop(rx);
        let outputs = worker
            .join()
            .map_err(|_| anyhow::anyhow!("decoder thread panicked"))?;
        shown.context("terminal UI")?;
        if let Some(otlp) = &outputs.otlp {
            eprintln!("mpspy: {}", otlp.summary());
        }
        if let Some(e) = outputs.error {
            return Err(e);
        }
        if let Some(server) = metrics {
            serve_until_interrupted(server);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        outputs.json("-")?;
    } else {
        outputs.text_stdout();
    }
    let (outputs, torn) = decode_all(outputs);
    if let Some(t) = torn {
        eprintln!("mpspy: {t}");
    }
    if let Some(otlp) = &outputs.otlp {
        eprintln!("mpspy: {}", otlp.summary());
    }
    if let Some(e) = outputs.error {
        return Err(e);
    }
    if let Some(server) = metrics {
        serve_until_interrupted(server);
    }
    Ok(ExitCode::SUCCESS)
}

/// `mpspy diff A B`.
fn diff_sessions(args: &cli::DiffArgs) -> Result<ExitCode> {
    use std::io::Write;
    let read = |path: &std::path::Path| match check_kind(path)? {
        CheckKind::Recording => diff::recording(path),
        CheckKind::Log => diff::log(path),
    };
    let (a, b) = (read(&args.a)?, read(&args.b)?);
    let d = diff::compare(&a, &b);
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &diff::json(&a, &b, &d))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", diff::text(&a, &b, &d, args.most))?;
    }
    Ok(if d.same() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A recording's header, and the schemas to decode it with: `--schemas` when given, else the
/// selection it was recorded with. `command` names who could not read it.
fn open_recording(
    file: &std::path::Path,
    command: &str,
    schemas: Option<&sets::Choice>,
) -> Result<(mpspy_capture::record::Header, sets::Choice)> {
    let header = mpspy_capture::record::read_header(file).with_context(|| {
        format!(
            "{}: not a recording mpspy can read ({command} takes pcapng files from --record)",
            file.display()
        )
    })?;
    let choice = match schemas {
        Some(c) => c.clone(),
        None => header.schemas.parse().unwrap_or(sets::Choice::Auto),
    };
    Ok((header, choice))
}

/// Runs the recording at `file` through a session decoding with `config`, handing every event
/// to `f`: the one pass that `check`, `diff` and `serve` read recordings with. Returns the
/// session (for its statistics) and why the recording ended early, if it did.
pub(crate) fn decode_recording(
    file: &std::path::Path,
    config: SchemaConfig,
    start_unix_ns: u64,
    source: &str,
    mut f: impl FnMut(&mpspy_schema::Event),
) -> Result<(Session, Option<String>)> {
    let mut session = Session::new(config);
    session.start(source, Some(start_unix_ns));
    for e in session.drain() {
        f(&e);
    }
    let (_, end) = mpspy_capture::record::read_file_streaming(file, |_, item| {
        session.apply(&item);
        for e in session.drain() {
            f(&e);
        }
    })
    .with_context(|| format!("reading {}", file.display()))?;
    let torn = match end {
        mpspy_capture::record::End::Torn(why) => Some(why.to_string()),
        _ => None,
    };
    Ok((session, torn))
}

/// `mpspy export FILE --format F -o OUT`: the recording through the engine into one sink.
fn export(args: &cli::ExportArgs) -> Result<ExitCode> {
    use mpspy_capture::record::{self, End};
    let (header, choice) = open_recording(&args.file, "export", args.schemas.as_ref())?;
    let config = schema_config(&SchemaArgs {
        schemas: choice,
        schema: Vec::new(),
        include: Vec::new(),
        allow_lint: Vec::new(),
        poll_rate: mpspy_engine::LintConfig::default().poll_rate,
        stuck_after: 10.0,
    })?;
    let mut outputs = pipeline::Outputs::new();
    match args.format {
        cli::ExportFormat::ChromeTrace => outputs.trace(&args.output, "--output")?,
    }
    let mut session = Session::new(config);
    outputs.start(
        &mut session,
        &format!("export {}", args.file.display()),
        Some(header.start_unix_ns),
    );
    let read = record::read_file_streaming(&args.file, |_, item| outputs.item(&mut session, &item));
    outputs.finish();
    match read {
        Ok((_, End::Torn(why))) => eprintln!(
            "mpspy: {}: the recording ends inside a block ({why}); everything before it was exported",
            args.file.display()
        ),
        Ok(_) => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.file.display())),
    }
    if let Some(e) = outputs.error {
        return Err(e);
    }
    Ok(ExitCode::SUCCESS)
}

/// The end of `mpspy replay --metrics`: the replay is done, and its final values stay up for
/// scraping until the user interrupts (Ctrl-C or SIGTERM, which end the run normally: exit 0).
fn serve_until_interrupted(server: sink::metrics::MetricsServer) {
    // Taken over before saying so: a scraper that reads the line and then stops mpspy must
    // find the handler in place.
    #[cfg(unix)]
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    eprintln!(
        "mpspy: replay done; serving its final metrics on {} until Ctrl-C",
        server.url()
    );
    #[cfg(unix)]
    if let Ok(mut signals) = signals {
        signals.forever().next();
        drop(server);
        return;
    }
    // Without a handler (Windows: Ctrl-C ends the process), wait to be ended.
    loop {
        std::thread::park();
    }
}

/// `mpspy check FILE…`: every recording through the engine, its lints and stuck calls as a
/// compact report; exit 1 when one is of `--fail-on`'s severity or worse.
fn check(args: &cli::CheckArgs) -> Result<ExitCode> {
    use std::io::Write;
    // Written with `?`: a closed pipe (`mpspy check … | head`) ends the report quietly.
    let mut out = io::stdout().lock();
    let (mut failing, mut total) = (0, 0);
    for file in &args.files {
        let findings = match check_kind(file)? {
            CheckKind::Recording => check_recording(args, file)?,
            CheckKind::Log => check_log(args, file)?,
        };
        let (n, fail) = findings.counts(args.fail_on);
        total += n;
        failing += fail;
        write!(out, "{}", findings.report(&file.display().to_string()))?;
    }
    if failing > 0 {
        writeln!(
            out,
            "{}",
            sink::findings::failed_line(failing, total, args.fail_on, "--allow")
        )?;
        Ok(ExitCode::from(1))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

enum CheckKind {
    Recording,
    Log,
}

/// A recording by its magic number, a `-debug=ipc` log by being text; anything else is named.
fn check_kind(file: &std::path::Path) -> Result<CheckKind> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .with_context(|| format!("reading {}", file.display()))?;
    if head.starts_with(&mpspy_capture::record::PCAPNG_MAGIC) {
        Ok(CheckKind::Recording)
    } else if head.contains(&0) {
        anyhow::bail!(
            "{}: neither a recording (pcapng from --record) nor a -debug=ipc log (text)",
            file.display()
        )
    } else {
        Ok(CheckKind::Log)
    }
}

/// The findings of a recording, from the engine's events.
fn check_recording(
    args: &cli::CheckArgs,
    file: &std::path::Path,
) -> Result<sink::findings::Findings> {
    let (header, choice) = open_recording(file, "check", args.schemas.as_ref())?;
    let config = schema_config(&SchemaArgs {
        schemas: choice,
        schema: Vec::new(),
        include: Vec::new(),
        allow_lint: args.allow.clone(),
        poll_rate: args.poll_rate,
        stuck_after: args.stuck_after,
    })?;
    let findings = sink::findings::Findings::default();
    let source = format!("check {}", file.display());
    let (_, torn) = decode_recording(file, config, header.start_unix_ns, &source, |e| {
        findings.add(e)
    })?;
    if let Some(why) = torn {
        eprintln!(
            "mpspy: {}: the recording ends inside a block ({why}); checked up to there",
            file.display()
        );
    }
    Ok(findings)
}

/// The findings of a `-debug=ipc` log: what its lines show by themselves
/// ([`mpspy_bitcoin::loglint`]), with the same thresholds and allow list.
fn check_log(args: &cli::CheckArgs, file: &std::path::Path) -> Result<sink::findings::Findings> {
    use std::io::BufRead;
    let config = schema_config(&SchemaArgs {
        schemas: sets::Choice::Auto,
        schema: Vec::new(),
        include: Vec::new(),
        allow_lint: args.allow.clone(),
        poll_rate: args.poll_rate,
        stuck_after: args.stuck_after,
    })?
    .lints;
    let mut lints = mpspy_bitcoin::loglint::LogLints::new(config);
    let mut input = io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?,
    );
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", file.display()))?
            == 0
        {
            break;
        }
        lints.line(&String::from_utf8_lossy(&buf));
    }
    if lints.ipc_lines() == 0 {
        anyhow::bail!(
            "{}: no IPC lines: not a recording, and a text file without -debug=ipc log lines \
             (run the node with -debug=ipc)",
            file.display()
        );
    }
    let findings = sink::findings::Findings::default();
    for f in lints.finish() {
        let id = match &f.what {
            mpspy_bitcoin::loglint::What::Lint(id) => id.to_string(),
            mpspy_bitcoin::loglint::What::Stuck => "stuck".into(),
        };
        findings.push(
            f.severity,
            format!(
                "  line {:<7} {:<20} {:<8} {:<26} {}",
                f.line,
                f.process,
                f.severity.as_str(),
                id,
                f.message
            ),
        );
    }
    Ok(findings)
}

/// `mpspy stats FILE…`: per-method tables (or one JSON object) from recordings and debug.logs.
fn stats(args: &cli::StatsArgs) -> Result<ExitCode> {
    use std::io::{Read, Write};

    use mpspy_bitcoin::debuglog::LogStats;
    use mpspy_capture::record::{self, End};
    use mpspy_engine::stats::LONG_POLL;

    let mut text = String::new();
    let mut files = Vec::new();
    for path in &args.files {
        let shown = path.display();
        let mut head = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(4096).read_to_end(&mut head))
            .with_context(|| format!("reading {shown}"))?;
        if head.starts_with(&record::PCAPNG_MAGIC) {
            // As a stream: the session is set up by the header, then folds item by item.
            let header = record::read_header(path).with_context(|| format!("reading {shown}"))?;
            let mut session = Session::new(SchemaConfig {
                choice: header.schemas.parse().unwrap_or(sets::Choice::Auto),
                user: Vec::new(),
                ..SchemaConfig::default()
            });
            let (header, end) = record::read_file_streaming(path, |_, item| {
                session.apply(&item);
                // The engine folds the statistics; the events themselves are not needed.
                session.drain();
            })
            .with_context(|| format!("reading {shown}"))?;
            let stats = session.stats();
            let stats = stats.lock();
            let mut notes = Vec::new();
            if stats.methods.is_empty() {
                notes.push("no IPC calls in this recording".to_string());
            }
            if let End::Torn(why) = end {
                notes.push(format!("the recording ends inside a block ({why})"));
            }
            text.push_str(&format!("== {shown} (mpspy recording)\n"));
            for n in &notes {
                text.push_str(&format!("note: {n}\n"));
            }
            text.push_str(&stats.table());
            let rows: Vec<serde_json::Value> = stats
                .methods
                .iter()
                .map(|(name, m)| {
                    let q = |p| m.quantile_ns(p);
                    let latency = (!m.latency.is_empty()).then(|| {
                        serde_json::json!({"n": m.latency.len(), "p50": q(0.5), "p90": q(0.9),
                            "p99": q(0.99), "p999": q(0.999), "max": m.latency.max()})
                    });
                    serde_json::json!({
                        "method": name, "long_poll": LONG_POLL.contains(&name.as_str()),
                        "count": m.count, "errors": m.errors, "cancels": m.cancels,
                        "unanswered": m.unanswered, "latency_ns": latency,
                    })
                })
                .collect();
            files.push(serde_json::json!({
                "file": shown.to_string(), "kind": "recording", "schemas": header.schemas,
                "notes": notes, "rows": rows,
            }));
        } else if head.contains(&0) {
            anyhow::bail!("{shown}: neither an mpspy recording (pcapng) nor a text debug.log");
        } else {
            let log = LogStats::read_file(path).with_context(|| format!("reading {shown}"))?;
            text.push_str(&format!(
                "== {shown} (debug.log: {} IPC lines of {}, timestamps: {})\n",
                log.ipc_lines,
                log.lines,
                log.resolution().as_str()
            ));
            text.push_str(&log.table());
            let mut v = log.to_json();
            v["file"] = shown.to_string().into();
            files.push(v);
        }
        text.push('\n');
    }
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &serde_json::json!({ "files": files }))?;
        writeln!(out)?;
    } else {
        out.write_all(text.trim_end().as_bytes())?;
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn schema_config(args: &SchemaArgs) -> Result<SchemaConfig> {
    let mut user = Vec::new();
    for path in &args.schema {
        let set = sets::load_user_schema(path, &args.include)
            .with_context(|| format!("--schema {}", path.display()))?;
        user.push(Arc::new(set));
    }
    Ok(SchemaConfig {
        choice: args.schemas.clone(),
        user,
        lints: LintConfig {
            allow: args.allow_lint.clone(),
            poll_rate: args.poll_rate,
            stuck_after_ns: (args.stuck_after * 1e9) as u64,
            ..LintConfig::default()
        },
    })
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn output_sink(json: bool, timed: bool) -> Box<dyn Sink> {
    let out = io::BufWriter::new(io::stdout().lock());
    if json {
        Box::new(JsonLines::new(out))
    } else {
        Box::new(TextLines::new(out, timed))
    }
}

fn decode(args: &DecodeArgs) -> Result<ExitCode> {
    let config = schema_config(&args.schema)?;
    let c2s = read(&args.a_to_b)?;
    let s2c = read(&args.b_to_a)?;
    let source = format!("decode {} {}", args.a_to_b.display(), args.b_to_a.display());
    let label = format!("{} ⇄ {}", args.a_to_b.display(), args.b_to_a.display());
    let mut session = Session::new(config);
    session.set_untimed();
    session.start(&source, None);
    decode_pair(&mut session, 1, &label, &c2s, &s2c);
    let mut sink = output_sink(args.json, false);
    for e in session.drain() {
        sink.event(&Arc::new(e))?;
    }
    sink.finish()?;
    Ok(ExitCode::SUCCESS)
}
