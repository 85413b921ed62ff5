//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mpspy_engine::LintConfig;
use mpspy_schema::sets::Choice;

/// See Bitcoin Core's multiprocess IPC: run a program with mpspy on its IPC sockets, or decode
/// and replay captures.
#[derive(Debug, Parser)]
#[command(
    name = "mpspy",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  mpspy -- bitcoin-node -regtest\n  mpspy --json events.jsonl --record session.pcapng -- bitcoin-node -regtest\n  mpspy -- bitcoin-cli -regtest -ipcconnect=unix getblockcount\n  mpspy attach --datadir ~/.bitcoin --chain regtest   # a node that is already running\n  mpspy proxy --listen unix:/tmp/spy.sock --connect unix:/path/node.sock\n  mpspy replay session.pcapng --json"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// `mpspy [OPTIONS] -- PROGRAM [ARGS]…`
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) session: SessionArgs,
    /// Do not add -ipcbind=unix to bitcoin-node/bitcoin-gui when they have none.
    #[arg(long)]
    pub(crate) no_bind: bool,
    /// Do not interpose on the socketpairs of processes the program spawns (`NAME -ipcfd N`,
    /// and `NAME N` as the libmultiprocess examples do). Without this, mpspy starts the
    /// program with argv0 in a private directory of stand-ins, so each spawn is relayed too.
    #[arg(long)]
    pub(crate) no_spawn_shim: bool,
    /// The program to run and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub(crate) program: Vec<String>,
}

/// The outputs of a live session, the same for `mpspy -- PROGRAM`, `mpspy proxy` and
/// `mpspy attach`.
#[derive(Debug, Args, Clone)]
pub(crate) struct SessionArgs {
    /// Write events as JSON Lines to FILE, or to stdout with `-` (see docs/json-lines.md).
    #[arg(long, value_name = "FILE|-")]
    pub(crate) json: Option<String>,
    /// Record every frame to a pcapng FILE (replay with `mpspy replay FILE`).
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
    /// Write a timeline of the session to FILE as Chrome / Perfetto Trace Event JSON (open it
    /// in ui.perfetto.dev; docs/trace.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) trace_out: Option<PathBuf>,
    /// Send every call as a span to an OpenTelemetry collector over OTLP/HTTP (plain http,
    /// e.g. http://localhost:4318 for Jaeger or Grafana Tempo; docs/otlp.md).
    #[arg(long, value_name = "URL")]
    pub(crate) otlp: Option<String>,
    /// Write nothing of mpspy's into stdout and stderr (under `--`, the program's, which mpspy
    /// shares with it): no event lines, no notices, no summary. Notices still reach --json,
    /// --record, the UI and --log.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// mpspy's own messages (notices, warnings, the exit summary) go to FILE instead of stderr
    /// (appended; with --quiet too).
    #[arg(long, value_name = "FILE")]
    pub(crate) log: Option<PathBuf>,
    /// No terminal UI: event lines on stderr instead (the UI is used only when stdin and
    /// stdout are terminals and `--json -` is not given).
    #[arg(long)]
    pub(crate) no_tui: bool,
    /// Report the session's lints and stuck calls at the end (to stderr, or --log), and exit 1
    /// instead of 0 when one is of --fail-on's severity or worse (a program that failed keeps
    /// its own status): for running a client's integration test under mpspy in CI.
    #[arg(long)]
    pub(crate) check: bool,
    /// With --check: the severity that fails (error, warning or info; stuck calls are
    /// warnings).
    #[arg(long, default_value = "warning", value_name = "SEVERITY", value_parser = severity, requires = "check")]
    pub(crate) fail_on: mpspy_schema::lint::Severity,
    /// Serve Prometheus metrics at http://ADDR/metrics while the session runs (docs/metrics.md).
    /// ADDR: PORT or :PORT (127.0.0.1), or HOST:PORT for any other address; port 0 picks one.
    #[arg(long, value_name = "ADDR", value_parser = crate::sink::metrics::parse_addr)]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Inject a fault, for testing how a client copes (repeatable; docs/inject.md). Off unless
    /// given; then mpspy alters the traffic and every output says so. SPEC:
    /// `Interface.method:delay=5s`, `Interface.method:exception=TYPE[:REASON]` (failed,
    /// overloaded, disconnected, unimplemented), `Interface.method:disconnect`,
    /// `conn:disconnect-after=N` (calls) or `=5s`; `Interface.*` and `*` match more methods;
    /// `,times=N` and `,every=N` pick the matches.
    #[arg(long, value_name = "SPEC", value_parser = inject_rule)]
    pub(crate) inject: Vec<mpspy_capture::inject::Rule>,
    #[command(flatten)]
    pub(crate) schema: SchemaArgs,
}

impl Default for SessionArgs {
    fn default() -> Self {
        SessionArgs {
            json: None,
            record: None,
            trace_out: None,
            otlp: None,
            quiet: false,
            log: None,
            no_tui: false,
            check: false,
            fail_on: mpspy_schema::lint::Severity::Warning,
            metrics: None,
            inject: Vec::new(),
            schema: SchemaArgs::default(),
        }
    }
}

/// `mpspy proxy --listen unix:PATH --connect unix:PATH`
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Where clients connect: unix:PATH. A stale socket there (nobody listening) is replaced,
    /// as bitcoin-node does; a live one, or a file that is not a socket, is refused.
    #[arg(long, value_name = "unix:PATH")]
    pub(crate) listen: String,
    /// The server each client is relayed to: unix:PATH (e.g. a node's node.sock).
    #[arg(long, value_name = "unix:PATH")]
    pub(crate) connect: String,
    #[command(flatten)]
    pub(crate) session: SessionArgs,
}

/// `mpspy attach [unix:PATH | unix] [--datadir D] [--chain C]`
#[derive(Debug, Args)]
pub(crate) struct AttachArgs {
    /// The running node's socket: unix:PATH, or unix (its default socket,
    /// `<datadir>/<chain dir>/node.sock`, from --datadir, --chain and the node's config file).
    #[arg(value_name = "ADDRESS", default_value = "unix")]
    pub(crate) address: String,
    /// The node's data directory (for the `unix` address; default: Bitcoin's).
    #[arg(long, value_name = "DIR")]
    pub(crate) datadir: Option<PathBuf>,
    /// The node's chain (for the `unix` address): main, test, testnet4, signet or regtest, or
    /// the node's own option (-regtest, -testnet4, -chain=signet, …).
    #[arg(long, value_name = "CHAIN", allow_hyphen_values = true)]
    pub(crate) chain: Option<String>,
    #[command(flatten)]
    pub(crate) session: SessionArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// A standalone recording relay: clients connect to --listen, each is relayed to
    /// --connect, until Ctrl-C or SIGTERM.
    #[command(
        after_help = "Examples:\n  mpspy proxy --listen unix:/tmp/spy.sock --connect unix:$HOME/.bitcoin/regtest/node.sock --json ev.jsonl\n  bitcoin-cli -regtest -ipcconnect=unix:/tmp/spy.sock getblockcount\n  mpspy proxy --listen unix:/tmp/spy.sock --connect unix:/path/node.sock --record s.pcapng --no-tui"
    )]
    Proxy(ProxyArgs),
    /// Attach to a node that is already running: its socket moves aside, mpspy listens at its
    /// path and relays every new connection; on exit the node's socket is put back.
    #[command(
        after_help = "Examples:\n  mpspy attach --datadir ~/.bitcoin --chain regtest\n  mpspy attach unix:/path/to/node.sock --json ev.jsonl --record s.pcapng\n  mpspy attach --chain -testnet4 --check --no-tui   # Ctrl-C ends it; exit 1 on findings\n\nConnections made before attaching go on unrecorded. If mpspy is killed with SIGKILL, put the\nnode's socket back by hand: mv <dir>/.<name>.mpspy-<pid> <dir>/<name> (mpspy attach says so)."
    )]
    Attach(AttachArgs),
    /// Decode a pair of one-direction raw streams (socat/strace dumps, mpspy captures).
    Decode(DecodeArgs),
    /// Watch mpspy wrap the test peer (a bitcoin-node stand-in, built with the workspace) while
    /// a client drives it (no Bitcoin Core needed).
    Demo(DemoArgs),
    /// Replay a recording made with --record through the same decoder.
    Replay(ReplayArgs),
    /// Be a libmultiprocess client: call Interface.method steps, each on the capability the
    /// previous one returned.
    #[command(
        after_help = "Examples:\n  mpspy call unix Init.makeEcho Echo.echo '{\"echo\":\"hi\"}'\n  mpspy call unix:/path/node.sock Init.makeMining Mining.getTip\n  mpspy call spawn:bitcoin-node Init.makeEcho Echo.echo '{\"echo\":\"x\"}'"
    )]
    Call(CallArgs),
    /// Repeat the last step of a call chain and report round-trip percentiles.
    Bench(BenchArgs),
    /// Per-method counts and latency from recordings or `-debug=ipc` debug.log files.
    Stats(StatsArgs),
    /// Write a recording's timeline in another format (Chrome / Perfetto trace JSON).
    #[command(
        after_help = "Example:\n  mpspy export --format chrome-trace session.pcapng -o trace.json   # open in ui.perfetto.dev"
    )]
    Export(ExportArgs),
    /// Compare two sessions: per-method counts and latency with deltas, methods on one side
    /// only, and the first calls whose params or answers differ (aligned by method sequence).
    /// Exits 0 when they did the same (latencies aside), 1 when they differ.
    #[command(
        after_help = "Examples:\n  mpspy diff v30.pcapng master.pcapng\n  mpspy diff before.pcapng after.pcapng --json | jq .calls_differ"
    )]
    Diff(DiffArgs),
    /// Lint recordings and -debug=ipc logs for IPC misuse and stuck calls (docs/lints.md);
    /// exits 1 when a finding of --fail-on's severity or worse is there, so a CI job can fail
    /// on it.
    #[command(
        after_help = "Example:\n  mpspy --json ev.jsonl --record s.pcapng -- sv2-tp … && mpspy check s.pcapng --allow long-poll-at-disconnect"
    )]
    Check(CheckArgs),
    /// Be a stand-in node that answers from a recording: each call gets the recorded answer
    /// of the matching recorded call (docs/serve.md). Unix only so far.
    #[command(
        after_help = "Examples:\n  mpspy serve session.pcapng --listen unix:/tmp/node.sock\n  bitcoin-cli -regtest -ipcconnect=unix:/tmp/node.sock getblockcount"
    )]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The recording to answer from (pcapng from `mpspy --record`).
    #[arg(value_name = "RECORDING")]
    pub(crate) file: PathBuf,
    /// Where to listen: unix:PATH (a stale socket there is replaced; removed on exit).
    #[arg(long, value_name = "unix:PATH")]
    pub(crate) listen: String,
    /// Write the served sessions' events as JSON Lines to FILE, or to stdout with `-` (then
    /// no text lines).
    #[arg(long, value_name = "FILE|-")]
    pub(crate) json: Option<String>,
    /// Record the served sessions to a pcapng FILE (replay with `mpspy replay FILE`).
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
    /// No event lines on stdout.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Answer only calls whose params equal those of an unused recorded call (else the next
    /// unused recorded call of the method answers, and a notice says the params differed).
    #[arg(long)]
    pub(crate) strict: bool,
    /// Answer at once, instead of taking as long as the recorded call took.
    #[arg(long)]
    pub(crate) immediate: bool,
    /// Decode the recording with these schemas instead of the ones named in it.
    #[arg(long, value_name = "SET")]
    pub(crate) schemas: Option<Choice>,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The first session: a recording (pcapng from `mpspy --record`) or a -debug=ipc log.
    #[arg(value_name = "A")]
    pub(crate) a: PathBuf,
    /// The second session.
    #[arg(value_name = "B")]
    pub(crate) b: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// How many differing calls to list in the text (all are in --json).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub(crate) most: usize,
}

/// What `mpspy export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// Trace Event JSON for ui.perfetto.dev and chrome://tracing (docs/trace.md).
    ChromeTrace,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// A recording (pcapng from `mpspy --record`).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The output format.
    #[arg(long, value_enum, default_value = "chrome-trace")]
    pub(crate) format: ExportFormat,
    /// Where to write it (`-`: stdout).
    #[arg(short, long, value_name = "FILE|-", default_value = "-")]
    pub(crate) output: String,
    /// Decode with these schemas instead of the one named in the recording.
    #[arg(long, value_name = "SET")]
    pub(crate) schemas: Option<Choice>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Recordings (pcapng from `mpspy --record`) or Bitcoin Core debug.log files written with
    /// -debug=ipc (a log shows fewer lints: docs/lints.md); told apart by content.
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// Fail (exit 1) on findings of this severity or worse: error, warning or info. Stuck calls
    /// count as warnings.
    #[arg(long, default_value = "warning", value_name = "SEVERITY", value_parser = severity)]
    pub(crate) fail_on: mpspy_schema::lint::Severity,
    /// A lint not to report (repeatable; ids in docs/lints.md, e.g. thread-busy).
    #[arg(long = "allow", value_name = "ID")]
    pub(crate) allow: Vec<mpspy_schema::lint::LintId>,
    /// Decode with these schemas instead of the ones named in each recording (logs have no
    /// frames to decode).
    #[arg(long, value_name = "SET")]
    pub(crate) schemas: Option<Choice>,
    /// polling-storm: more calls of one long-poll method per second than this is a storm.
    #[arg(long, default_value_t = LintConfig::default().poll_rate, value_name = "N")]
    pub(crate) poll_rate: f64,
    /// A call pending longer than this is reported stuck (long polls: their own timeout plus
    /// 5 s).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = seconds)]
    pub(crate) stuck_after: f64,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Recordings (pcapng from `mpspy --record`) or Bitcoin Core debug.log files; told apart
    /// by content.
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// One JSON object with per-method rows instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// unix (the default socket for --datadir/--chain), unix:PATH, fd:N or spawn:PROGRAM.
    #[arg(value_name = "ADDRESS")]
    pub(crate) address: String,
    /// Steps: Interface.method, each optionally followed by JSON args by field name.
    #[arg(value_name = "STEP", required = true)]
    pub(crate) steps: Vec<String>,
    /// Schema set of the peer: master, v31, v30 or mpexample (auto means master here).
    #[arg(long, default_value = "auto", value_name = "SET")]
    pub(crate) schemas: Choice,
    /// Print results in the decoder's full form (Data as {len, hex}, capabilities with index).
    #[arg(long)]
    pub(crate) raw: bool,
    /// Show every RPC message of the session on stderr.
    #[arg(long)]
    pub(crate) trace: bool,
    /// Data directory for the `unix` address.
    #[arg(long, value_name = "DIR")]
    pub(crate) datadir: Option<PathBuf>,
    /// Chain for the `unix` address (main, test, testnet4, signet, regtest).
    #[arg(long, value_name = "CHAIN")]
    pub(crate) chain: Option<String>,
    /// spawn: argv shape: `ipcfd` (PROGRAM -ipcfd N, Bitcoin) or `bare` (PROGRAM N, the
    /// libmultiprocess examples).
    #[arg(long, value_name = "SHAPE", value_parser = ["ipcfd", "bare"])]
    pub(crate) argv: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// unix:PATH, unix, fd:N or spawn:PROGRAM.
    #[arg(value_name = "ADDRESS")]
    pub(crate) address: String,
    /// Steps as for `call`; the last one is repeated.
    #[arg(value_name = "STEP", required = true)]
    pub(crate) steps: Vec<String>,
    /// Measured calls per stream.
    #[arg(long, default_value_t = 1000)]
    pub(crate) count: u32,
    /// Parallel streams, each on its own server thread.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: u32,
    /// Unmeasured calls first, per stream.
    #[arg(long, default_value_t = 100)]
    pub(crate) warmup: u32,
    /// Print a JSON summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the round trips as an HdrHistogram interval log (ns; max column in ms).
    #[arg(long, value_name = "FILE")]
    pub(crate) hdr_log: Option<PathBuf>,
    /// Schema set of the peer.
    #[arg(long, default_value = "auto", value_name = "SET")]
    pub(crate) schemas: Choice,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The recording (pcapng written by `mpspy --record`).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Write JSON Lines instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the timeline as Chrome / Perfetto Trace Event JSON to FILE (docs/trace.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) trace_out: Option<PathBuf>,
    /// Also send every call as a span to an OpenTelemetry collector (OTLP/HTTP, plain http;
    /// docs/otlp.md), with the recording's timestamps.
    #[arg(long, value_name = "URL")]
    pub(crate) otlp: Option<String>,
    /// Text lines instead of the terminal UI (the UI is used only on a terminal).
    #[arg(long)]
    pub(crate) no_tui: bool,
    /// Decode with these schemas instead of the ones named in the recording.
    #[arg(long, value_name = "SET")]
    pub(crate) schemas: Option<Choice>,
    /// An extra schema: a .capnp file (needs the `capnp` tool) or a compiled request.
    #[arg(long, value_name = "FILE")]
    pub(crate) schema: Vec<PathBuf>,
    /// Import directory for --schema .capnp files.
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub(crate) include: Vec<PathBuf>,
    /// A lint not to report (repeatable; ids in docs/lints.md, e.g. thread-busy).
    #[arg(long, value_name = "ID")]
    pub(crate) allow_lint: Vec<mpspy_schema::lint::LintId>,
    /// polling-storm: more calls of one long-poll method per second than this is a storm.
    #[arg(long, default_value_t = LintConfig::default().poll_rate, value_name = "N")]
    pub(crate) poll_rate: f64,
    /// A call pending longer than this is reported stuck (long polls: their own timeout plus
    /// 5 s).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = seconds)]
    pub(crate) stuck_after: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics while replaying, then the final values
    /// until interrupted (Ctrl-C, SIGTERM). ADDR as for `mpspy --metrics`.
    #[arg(long, value_name = "ADDR", value_parser = crate::sink::metrics::parse_addr)]
    pub(crate) metrics: Option<std::net::SocketAddr>,
}

/// Schema selection, shared by every command that decodes.
#[derive(Debug, Args, Clone)]
pub(crate) struct SchemaArgs {
    /// Schema set: master, v31, v30, mpexample, or auto (inferred per connection).
    #[arg(long, default_value = "auto", value_name = "SET")]
    pub(crate) schemas: Choice,
    /// An extra schema: a .capnp file (needs the `capnp` tool) or a compiled request.
    #[arg(long, value_name = "FILE")]
    pub(crate) schema: Vec<PathBuf>,
    /// Import directory for --schema .capnp files (our mp/proxy.capnp is always available).
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub(crate) include: Vec<PathBuf>,
    /// A lint not to report (repeatable; ids in docs/lints.md, e.g. thread-busy).
    #[arg(long, value_name = "ID")]
    pub(crate) allow_lint: Vec<mpspy_schema::lint::LintId>,
    /// polling-storm: more calls of one long-poll method per second than this is a storm.
    #[arg(long, default_value_t = LintConfig::default().poll_rate, value_name = "N")]
    pub(crate) poll_rate: f64,
    /// A call pending longer than this is reported stuck (long polls: their own timeout plus
    /// 5 s).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = seconds)]
    pub(crate) stuck_after: f64,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// Bytes the client (the side that sends Bootstrap) wrote.
    #[arg(value_name = "A_TO_B")]
    pub(crate) a_to_b: PathBuf,
    /// Bytes the server wrote.
    #[arg(value_name = "B_TO_A")]
    pub(crate) b_to_a: PathBuf,
    /// Write JSON Lines (see docs/json-lines.md) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) schema: SchemaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Write JSON Lines to stdout instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Text lines on stderr instead of the terminal UI.
    #[arg(long)]
    pub(crate) no_tui: bool,
    /// Also record the session to a pcapng FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) record: Option<PathBuf>,
}

impl Default for SchemaArgs {
    fn default() -> Self {
        SchemaArgs {
            schemas: Choice::Auto,
            schema: Vec::new(),
            include: Vec::new(),
            allow_lint: Vec::new(),
            poll_rate: LintConfig::default().poll_rate,
            stuck_after: 10.0,
        }
    }
}

/// A positive number of seconds (`--stuck-after`).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// `error`, `warning` or `info` (`--fail-on`).
fn severity(s: &str) -> Result<mpspy_schema::lint::Severity, String> {
    use mpspy_schema::lint::Severity;
    match s {
        "error" => Ok(Severity::Error),
        "warning" => Ok(Severity::Warning),
        "info" => Ok(Severity::Info),
        _ => Err(format!("'{s}' is not a severity: error, warning or info")),
    }
}

/// One `--inject` rule (its methods are checked against the schemas once those are known).
fn inject_rule(s: &str) -> Result<mpspy_capture::inject::Rule, String> {
    s.parse()
        .map_err(|e: mpspy_capture::inject::SpecError| e.to_string())
}
