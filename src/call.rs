//! `mpspy call` and `mpspy bench`: mpspy as the client side of a libmultiprocess connection.
//!
//! Steps are `Interface.method` with optional JSON args by field name; each step runs on the
//! capability the previous one returned. The RPC work is the client runtime's
//! (`mpspy-client`): it plans each step with the schema-driven encoder and hands back the last
//! step's results, which print decoded by schema. With `--trace`, every byte of the connection
//! is also fed to the decoder the proxy uses, so the session shows as `mpspy` would show it.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use mpspy_client::ClientError;
use mpspy_client::connect::{self, CHILD_EXIT_GRACE, Child, FdArg, StdStream};
use mpspy_client::runtime::{self, Call, Outcome, Repeat};
use mpspy_client::threads::Names;
use mpspy_engine::framing::{Piece, Splitter};
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::decode::Lookup;
use mpspy_schema::sets::{self, Choice};
use mpspy_schema::{Direction, Event, SchemaSet, Value};
use serde_json::{Value as Json, json};

use crate::cli::{BenchArgs, CallArgs};
use crate::tee::{Tee, TeeTap};

/// Both directions of the connection, decoded as they pass (for `--trace`).
struct Tap {
    /// Only with `--trace`: results come from the RPC response, and `bench`'s measured loop
    /// must not pay for decoding.
    decode: bool,
    session: Session,
    splitters: [Splitter; 2],
    start: Instant,
    events: Vec<Event>,
}

impl Tap {
    fn bytes(&mut self, dir: Direction, data: &[u8]) {
        if !self.decode {
            return;
        }
        let i = usize::from(dir == Direction::ServerToClient);
        let mut pieces = Vec::new();
        self.splitters[i].push(data, &mut pieces);
        let t = self.start.elapsed().as_nanos() as u64;
        for p in pieces {
            if let Piece::Frame { offset, bytes } = p {
                self.session.frame(1, dir, t, offset, &bytes);
            }
        }
        self.events.extend(self.session.drain());
    }
}

/// `mpspy call`'s connection, seen from the client's end: what it reads the server sent.
impl TeeTap for Rc<RefCell<Tap>> {
    fn bytes(&mut self, dir: Direction, data: &[u8]) {
        self.borrow_mut().bytes(dir, data);
    }
}

/// Turns `Interface.method [JSON]…` into planned calls.
fn plan_calls(set: &SchemaSet, steps: &[String]) -> Result<Vec<Call>> {
    let mut calls = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let step = &steps[i];
        let mut args = json!({});
        if let Some(next) = steps.get(i + 1).filter(|s| s.trim_start().starts_with('{')) {
            args = serde_json::from_str(next).with_context(|| format!("JSON args of {step}"))?;
            i += 1;
        }
        calls.push(Call::plan(set, step, &args)?);
        i += 1;
    }
    if calls.is_empty() {
        bail!(
            "no steps given: e.g. `mpspy call unix Init.makeEcho Echo.echo '{{\"echo\":\"hi\"}}'`"
        );
    }
    Ok(calls)
}

/// Our end of the connection, and the program at the other end if we spawned it.
struct Connection {
    stream: StdStream,
    child: Option<Child>,
}

/// `spawn:PROGRAM` through the client runtime: `PROGRAM -ipcfd N` (or `PROGRAM N` with
/// `--argv bare`) over a socketpair on unix; on Windows the named pipe protocol of
/// libmultiprocess PR #231, where PROGRAM gets `-ipcfd \\.\pipe\mp-<our pid>-<n>`.
fn spawn(program: &str, bare: bool) -> Result<Connection> {
    let fd_arg = if bare { FdArg::Bare } else { FdArg::Ipcfd };
    let spawned = connect::spawn(program, fd_arg, &[])?;
    Ok(Connection {
        stream: spawned.stream,
        child: Some(spawned.child),
    })
}

/// `unix`, `unix:PATH`, `fd:N`, `spawn:PROGRAM`.
#[cfg(unix)]
fn connect(
    address: &str,
    datadir: Option<&PathBuf>,
    chain: Option<&str>,
    bare: bool,
) -> Result<Connection> {
    if let Some(program) = address.strip_prefix("spawn:") {
        return spawn(program, bare);
    }
    if let Some(fd) = address.strip_prefix("fd:") {
        let n: i32 = fd
            .parse()
            .with_context(|| format!("'{address}': fd:N needs a number"))?;
        let owned =
            mpspy_capture::fd::take_inherited_fd(n).with_context(|| format!("'{address}'"))?;
        return Ok(Connection {
            stream: StdStream::from(owned),
            child: None,
        });
    }
    let path = match address {
        "unix" => {
            // Where bitcoin-cli -ipcconnect=unix would connect.
            let env = mpspy_bitcoin::args::Env::from_process()?;
            let mut args = vec!["-ipcconnect=unix".to_string()];
            if let Some(d) = datadir {
                args.push(format!("-datadir={}", d.display()));
            }
            if let Some(c) = chain {
                args.push(format!("-chain={c}"));
            }
            mpspy_bitcoin::args::plan("bitcoin-cli", &args, &env, false)?
                .connect
                .context("no IPC socket for these options")?
        }
        a => match a.strip_prefix("unix:") {
            Some(p) => PathBuf::from(p),
            None => {
                bail!("unrecognized address '{a}' (use unix, unix:PATH, fd:N or spawn:PROGRAM)")
            }
        },
    };
    Ok(Connection {
        stream: connect::unix(&path)?,
        child: None,
    })
}

/// On Windows so far only `spawn:PROGRAM`.
#[cfg(windows)]
fn connect(
    address: &str,
    _datadir: Option<&PathBuf>,
    _chain: Option<&str>,
    bare: bool,
) -> Result<Connection> {
    let Some(program) = address.strip_prefix("spawn:") else {
        bail!("unrecognized address '{address}' (on Windows so far only spawn:PROGRAM)");
    };
    spawn(program, bare)
}

/// How a session went.
struct Ran {
    /// The planned steps.
    calls: Vec<Call>,
    /// What the runtime gave back: the last step's results and round trips, or why not.
    result: Result<Outcome, ClientError>,
    /// The session as the decoder saw it (with `trace` only).
    events: Vec<Event>,
    /// The spawned child, once it has exited.
    child: Option<ChildEnd>,
}

/// How a spawned child ended.
struct ChildEnd {
    program: String,
    status: ExitStatus,
    /// It did not exit within [`CHILD_EXIT_GRACE`] of our closing the connection.
    killed: bool,
}

impl ChildEnd {
    /// A note to add to an error: a child that has exited is the likely cause.
    fn note(&self) -> String {
        format!(" ({} exited: {})", self.program, self.status)
    }
}

/// Plans the steps, connects, runs the chain and waits for a spawned child. Errors before the
/// session starts (bad steps, nothing to connect to, a program that cannot be spawned) are
/// returned; what happens during the session is in [`Ran::result`].
/// Where the other side is, as the command line says.
struct Target<'a> {
    address: &'a str,
    schemas: &'a Choice,
    datadir: Option<&'a PathBuf>,
    chain: Option<&'a str>,
    /// `--argv bare`: spawn `PROGRAM N`.
    bare: bool,
}

fn run(
    target: &Target<'_>,
    steps: &[String],
    repeat: Repeat,
    trace: bool,
) -> Result<(Arc<SchemaSet>, Ran)> {
    let Target {
        address,
        schemas,
        datadir,
        chain,
        bare,
    } = *target;
    let set_name = match schemas {
        Choice::Fixed(s) => s.clone(),
        Choice::Auto => address
            .strip_prefix("spawn:")
            .and_then(version_set)
            .unwrap_or("master")
            .to_string(),
    };
    let set = sets::builtin(&set_name).context("schema set")?;
    let calls = plan_calls(&set, steps)?;
    let Connection { stream, mut child } = connect(address, datadir, chain, bare)?;
    let tap = Rc::new(RefCell::new(Tap {
        decode: trace,
        session: mpspy_engine::Session::new(SchemaConfig {
            choice: Choice::Fixed(set_name),
            user: Vec::new(),
            ..SchemaConfig::default()
        }),
        splitters: [Splitter::new(), Splitter::new()],
        start: Instant::now(),
        events: Vec::new(),
    }));
    tap.borrow_mut().session.open(1, 0, address, None, None);
    let result = mpspy_client::block_on(async {
        let inner = connect::into_tokio(stream).map_err(|source| ClientError::Io {
            what: "registering the connection with the event loop",
            source,
        })?;
        let tee = Tee {
            inner,
            tap: tap.clone(),
            read: Direction::ServerToClient,
        };
        runtime::run_chain(tee, Names::new("mpspy"), &calls, repeat).await
    })
    .and_then(|r| r);
    // The connection is closed now; a libmultiprocess child exits when it sees that.
    let child = match child.as_mut() {
        Some(c) => {
            let (status, killed) = c
                .wait_or_kill(CHILD_EXIT_GRACE)
                .context("waiting for the spawned program")?;
            Some(ChildEnd {
                program: address.trim_start_matches("spawn:").to_string(),
                status,
                killed,
            })
        }
        None => None,
    };
    let events = std::mem::take(&mut tap.borrow_mut().events);
    Ok((
        set,
        Ran {
            calls,
            result,
            events,
            child,
        },
    ))
}

/// Results as a person reads them: Data as hex, capabilities by name.
fn plain(v: &Value) -> Json {
    match v {
        Value::Data(b) => Json::String(mpspy_schema::value::hex(b)),
        Value::Cap(c) => Json::String(c.to_string()),
        Value::List(items) => Json::Array(items.iter().map(plain).collect()),
        Value::Struct(fields) => {
            Json::Object(fields.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
        }
        other => serde_json::to_value(other).unwrap_or(Json::Null),
    }
}

/// Says how a spawned child ended; a failed exit is an error even after a good session.
fn report_child(child: Option<&ChildEnd>) -> bool {
    let Some(c) = child else {
        return true;
    };
    if c.killed {
        eprintln!(
            "mpspy: {} did not exit within {} s of the connection closing; killed it",
            c.program,
            CHILD_EXIT_GRACE.as_secs()
        );
    }
    eprintln!("mpspy: child exited: {}", c.status);
    c.status.success() && !c.killed
}

/// What a failed session prints: an exception as the other side sent it, anything else as
/// the connection failing (with the spawned child's exit, the likely cause).
fn report_failure(what: &str, e: &ClientError, child: Option<&ChildEnd>) {
    let note = child.map(ChildEnd::note).unwrap_or_default();
    match e {
        ClientError::Exception {
            method,
            kind,
            reason,
        } => eprintln!("mpspy: {method} failed: {kind}: {reason}"),
        e => eprintln!("mpspy: {what} failed: {e}{note}"),
    }
}

pub(crate) fn call(args: &CallArgs) -> Result<ExitCode> {
    let target = Target {
        address: &args.address,
        schemas: &args.schemas,
        datadir: args.datadir.as_ref(),
        chain: args.chain.as_deref(),
        bare: args.argv.as_deref() == Some("bare"),
    };
    let (set, ran) = run(&target, &args.steps, Repeat::default(), args.trace)?;
    if args.trace {
        for e in &ran.events {
            eprintln!("{}", crate::sink::text::describe(&e.kind));
        }
    }
    let child_ok = report_child(ran.child.as_ref());
    let outcome = match ran.result {
        Ok(o) => o,
        Err(e) => {
            report_failure("call", &e, ran.child.as_ref());
            return Ok(ExitCode::from(1));
        }
    };
    // The results as they came back in the Return, decoded by the schema of the call's
    // results struct (the planned steps say which).
    let sets = [&*set];
    let value = outcome.results.decode(Lookup::new(&sets));
    let v = if args.raw {
        serde_json::to_value(&value).unwrap_or(Json::Null)
    } else {
        plain(&value)
    };
    println!("{v}");
    if !child_ok {
        let last = ran
            .calls
            .last()
            .map(|c| c.name.as_str())
            .unwrap_or_default();
        eprintln!("mpspy: {last} returned, but the spawned program did not end cleanly");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn bench(args: &BenchArgs) -> Result<ExitCode> {
    let repeat = Repeat {
        count: args.count,
        warmup: args.warmup,
        concurrency: args.concurrency,
    };
    let started = Instant::now();
    let target = Target {
        address: &args.address,
        schemas: &args.schemas,
        datadir: None,
        chain: None,
        bare: false,
    };
    let (_, ran) = run(&target, &args.steps, repeat, false)?;
    let elapsed = started.elapsed();
    let child_ok = report_child(ran.child.as_ref());
    let outcome = match ran.result {
        Ok(o) => o,
        Err(e) => {
            report_failure("bench", &e, ran.child.as_ref());
            return Ok(ExitCode::from(1));
        }
    };
    let last = ran.calls.last().map(|c| c.name.clone()).unwrap_or_default();
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    for t in &outcome.round_trips_ns {
        h.record((*t).max(1))?;
    }
    if let Some(path) = &args.hdr_log {
        write_hdr_log(path, &h, elapsed, &last)
            .with_context(|| format!("--hdr-log {}", path.display()))?;
    }
    let n = h.len();
    let rate = n as f64 / elapsed.as_secs_f64();
    let q = |p: f64| h.value_at_quantile(p);
    if args.json {
        println!(
            "{}",
            json!({"method": last, "count": n, "concurrency": args.concurrency, "rate_per_s": rate,
                   "p50_ns": q(0.5), "p90_ns": q(0.9), "p99_ns": q(0.99), "p999_ns": q(0.999), "max_ns": h.max()})
        );
    } else {
        use mpspy_engine::stats::format_ns;
        println!(
            "{last}: {n} calls, concurrency {}, {rate:.0}/s",
            args.concurrency
        );
        println!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            format_ns(q(0.5)),
            format_ns(q(0.9)),
            format_ns(q(0.99)),
            format_ns(q(0.999)),
            format_ns(h.max())
        );
    }
    if !child_ok {
        eprintln!("mpspy: the spawned program did not end cleanly");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One interval covering the whole run, tagged with the method, in the HdrHistogram interval
/// log format that HdrHistogram's own tools (HistogramLogAnalyzer, hdr-plot) read.
fn write_hdr_log(
    path: &std::path::Path,
    h: &hdrhistogram::Histogram<u64>,
    elapsed: std::time::Duration,
    method: &str,
) -> Result<()> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let start = std::time::SystemTime::now() - elapsed;
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!("mpspy bench {method} (round trips in ns)"))
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1_000_000.0)
        .begin_log_with(&mut file, &mut serializer)?;
    log.write_histogram(h, std::time::Duration::ZERO, elapsed, Tag::new(method))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    drop(log);
    std::io::Write::flush(&mut file)?;
    Ok(())
}

/// The schema set for a program, from the first line of `PROGRAM -version` (given 5 s; a
/// program that does not understand the flag just gives no answer).
fn version_set(program: &str) -> Option<&'static str> {
    let mut child = std::process::Command::new(program)
        .arg("-version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let set = sets::for_version(out.lines().next()?)?;
    eprintln!(
        "mpspy: {program} reports {}: using the {set} schemas",
        out.lines().next()?.trim()
    );
    Some(set)
}
