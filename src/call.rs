//! `mpspy call` and `mpspy bench`: mpspy as the client side of a libmultiprocess connection.
//!
//! Steps are `Interface.method` with optional JSON args by field name; each step runs on the
//! capability the previous one returned. Params are built by the schema-driven encoder, the
//! RPC work is capnp-rpc's, and every byte of the connection is also fed to the same decoder
//! the proxy uses, so results print exactly as `mpspy --json` would show them.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use mpspy_engine::framing::{Piece, Splitter};
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::decode::Lookup;
use mpspy_schema::encode::{self, CapSource};
use mpspy_schema::event::{EventKind, ReturnEvent};
use mpspy_schema::registry::{FieldKind, Node, Type};
use mpspy_schema::sets::{self, Choice};
use mpspy_schema::{Direction, Event, SchemaSet, Value};
use mpspy_testpeer::runtime::{self, Call, Repeat};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::cli::{BenchArgs, CallArgs};

/// `mp/proxy.capnp:Context`, which the runtime fills on every call.
const CONTEXT_ID: u64 = 0x9c44_e664_5d0b_22c6;

/// Both directions of the connection, decoded as they pass.
struct Tap {
    /// Off for `bench`: the measured loop must not pay for decoding.
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

/// A stream that shows every byte to the tap.
struct Tee<S> {
    inner: S,
    tap: Rc<RefCell<Tap>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tee<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            self.tap.borrow_mut().bytes(Direction::ServerToClient, new);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tee<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.tap
                .borrow_mut()
                .bytes(Direction::ClientToServer, &buf[..n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `Context.thread` and `Context.callbackThread` are the runtime's capabilities 0 and 1.
struct ContextCaps;

impl CapSource for ContextCaps {
    fn cap(&mut self, path: &str, _: Option<u64>, _: &Json) -> Result<u32, String> {
        match path.rsplit('.').next() {
            Some("thread") if path.ends_with("context.thread") => Ok(0),
            Some("callbackThread") => Ok(1),
            _ => Err(
                "capability arguments are not supported (mpspy fills Proxy.Context itself)".into(),
            ),
        }
    }
}

/// Turns `Interface.method [JSON]…` into encoded calls.
fn plan_calls(set: &SchemaSet, steps: &[String]) -> Result<(Vec<Call>, Vec<String>)> {
    let sets = [set];
    let lookup = Lookup::new(&sets);
    let mut calls = Vec::new();
    let mut names = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let step = &steps[i];
        let (iface, method) = step
            .split_once('.')
            .with_context(|| format!("'{step}': a step is Interface.method, e.g. Echo.echo"))?;
        let (iid, inode) = set
            .interfaces()
            .find(|(_, n)| n.name == iface)
            .with_context(|| {
                let mut known: Vec<&str> = set.interfaces().map(|(_, n)| n.name.as_str()).collect();
                known.sort_unstable();
                format!(
                    "'{step}': no interface {iface} in the {} schemas (have: {})",
                    set.name,
                    known.join(", ")
                )
            })?;
        let m = inode
            .methods
            .iter()
            .find(|m| m.name == method)
            .with_context(|| {
                let known: Vec<&str> = inode.methods.iter().map(|m| m.name.as_str()).collect();
                format!(
                    "'{step}': {iface} has no method {method} (have: {})",
                    known.join(", ")
                )
            })?;
        let mut args = json!({});
        if let Some(next) = steps.get(i + 1).filter(|s| s.trim_start().starts_with('{')) {
            args = serde_json::from_str(next).with_context(|| format!("JSON args of {step}"))?;
            i += 1;
        }
        // Proxy.Context is filled by the runtime, as libmultiprocess clients do.
        if let (Some(Node::Struct(p)), Json::Object(obj)) = (lookup.node(m.params), &mut args) {
            let has_context = p.fields.iter().any(|f| {
                f.name == "context"
                    && matches!(&f.kind, FieldKind::Slot { ty: Type::Struct(id, _), .. } if *id == CONTEXT_ID)
            });
            if has_context && !obj.contains_key("context") {
                obj.insert(
                    "context".into(),
                    json!({"thread": "thread", "callbackThread": "callbackThread"}),
                );
            }
        }
        let params = encode::encode(lookup, m.params, &args, &mut ContextCaps)
            .with_context(|| format!("args of {step}"))?;
        let returned = match lookup.node(m.results) {
            Some(Node::Struct(r)) => r.fields.iter().find_map(|f| match &f.kind {
                FieldKind::Slot {
                    ty: Type::Interface(id),
                    offset,
                    ..
                } => Some((*offset as u16, *id)),
                _ => None,
            }),
            _ => None,
        };
        let next = returned.map(|(offset, _)| offset);
        // Objects with `destroy` are destroyed before they are released (libmultiprocess).
        let destroy_method = returned.and_then(|(_, id)| {
            let d = set
                .interface(id)?
                .methods
                .iter()
                .find(|m| m.name == "destroy")?;
            Some((id, d.ordinal, d.params))
        });
        let destroy = match destroy_method {
            Some((id, ordinal, params_id)) => {
                let context =
                    json!({"context": {"thread": "thread", "callbackThread": "callbackThread"}});
                let params = encode::encode(lookup, params_id, &context, &mut ContextCaps)
                    .context("destroy params")?;
                Some((id, ordinal, params))
            }
            None => None,
        };
        calls.push(Call {
            interface_id: iid,
            method_id: m.ordinal,
            params,
            next,
            destroy,
        });
        names.push(format!("{iface}.{method}"));
        i += 1;
    }
    if calls.is_empty() {
        bail!(
            "no steps given: e.g. `mpspy call unix Init.makeEcho Echo.echo '{{\"echo\":\"hi\"}}'`"
        );
    }
    Ok((calls, names))
}

/// The connection's stream: a unix socket; on Windows, one end of the loopback TCP pair the
/// named pipe protocol hands out.
#[cfg(unix)]
type StdStream = std::os::unix::net::UnixStream;
#[cfg(unix)]
type Stream = tokio::net::UnixStream;
#[cfg(windows)]
type StdStream = std::net::TcpStream;
#[cfg(windows)]
type Stream = tokio::net::TcpStream;

/// A spawned child, waited for at the end.
#[cfg(unix)]
type SpawnedChild = std::process::Child;
#[cfg(windows)]
type SpawnedChild = mpspy_recorder::winspawn::Child;

struct Connection {
    /// Non-blocking, to be registered with tokio inside its runtime.
    stream: StdStream,
    child: Option<SpawnedChild>,
}

/// `unix`, `unix:PATH`, `fd:N`, `spawn:PROGRAM`.
#[cfg(unix)]
fn connect(
    address: &str,
    datadir: Option<&PathBuf>,
    chain: Option<&str>,
    bare: bool,
) -> Result<Connection> {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    let connection = |stream: UnixStream, child| -> Result<Connection> {
        stream.set_nonblocking(true)?;
        Ok(Connection { stream, child })
    };
    if let Some(program) = address.strip_prefix("spawn:") {
        let (ours, theirs) = UnixStream::pair().context("socketpair")?;
        // The child's end must survive exec; ours stays close-on-exec.
        nix::fcntl::fcntl(
            &theirs,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .context("clearing FD_CLOEXEC on the child's socket")?;
        let mut cmd = std::process::Command::new(program);
        if !bare {
            cmd.arg("-ipcfd");
        }
        cmd.arg(theirs.as_raw_fd().to_string());
        let child = cmd.spawn().with_context(|| format!("spawning {program}"))?;
        drop(theirs);
        return connection(ours, Some(child));
    }
    if let Some(fd) = address.strip_prefix("fd:") {
        let n: i32 = fd
            .parse()
            .with_context(|| format!("'{address}': fd:N needs a number"))?;
        let owned =
            mpspy_recorder::fd::take_inherited_fd(n).with_context(|| format!("'{address}'"))?;
        return connection(UnixStream::from(owned), None);
    }
    let path = match address {
        "unix" => {
            // Where bitcoin-cli -ipcconnect=unix would connect.
            let env = mpspy_recorder::bitcoin::Env::from_process()?;
            let mut args = vec!["-ipcconnect=unix".to_string()];
            if let Some(d) = datadir {
                args.push(format!("-datadir={}", d.display()));
            }
            if let Some(c) = chain {
                args.push(format!("-chain={c}"));
            }
            mpspy_recorder::bitcoin::plan("bitcoin-cli", &args, &env, false)?
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
    let s =
        UnixStream::connect(&path).with_context(|| format!("connecting to {}", path.display()))?;
    connection(s, None)
}

/// `spawn:PROGRAM`, through the named pipe protocol of libmultiprocess PR #231: PROGRAM gets
/// `-ipcfd \\.\pipe\mp-<our pid>-<n>` (or the path alone with `--argv bare`).
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
    let flag = (!bare).then_some("-ipcfd");
    let spawned = mpspy_recorder::winspawn::spawn_program(program, flag, &[])
        .with_context(|| format!("spawning {program}"))?;
    spawned.stream.set_nonblocking(true)?;
    Ok(Connection {
        stream: spawned.stream,
        child: Some(spawned.child),
    })
}

struct Outcome {
    events: Vec<Event>,
    timings: runtime::Timings,
    error: Option<anyhow::Error>,
    /// How the spawned child exited.
    child: Option<std::process::ExitStatus>,
}

fn run(
    address: &str,
    schemas: &Choice,
    steps: &[String],
    datadir: Option<&PathBuf>,
    chain: Option<&str>,
    bare: bool,
    repeat: Repeat,
) -> Result<(Vec<String>, Outcome)> {
    let set_name = match schemas {
        Choice::Fixed(s) => s.clone(),
        Choice::Auto => address
            .strip_prefix("spawn:")
            .and_then(version_set)
            .unwrap_or("master")
            .to_string(),
    };
    let set = sets::builtin(&set_name).context("schema set")?;
    let (calls, names) = plan_calls(&set, steps)?;
    let conn = connect(address, datadir, chain, bare)?;
    let tap = Rc::new(RefCell::new(Tap {
        decode: repeat.count <= 1 && repeat.concurrency <= 1,
        session: Session::new(SchemaConfig {
            choice: Choice::Fixed(set_name),
            user: Vec::new(),
        }),
        splitters: [Splitter::new(), Splitter::new()],
        start: Instant::now(),
        events: Vec::new(),
    }));
    tap.borrow_mut().session.open(1, 0, address, None, None);
    let thread_name = format!("mpspy-{}/main", std::process::id());
    let Connection { stream, mut child } = conn;
    let result = mpspy_testpeer::block_on(async {
        let tee = Tee {
            inner: Stream::from_std(stream)?,
            tap: tap.clone(),
        };
        runtime::run_chain(tee, &thread_name, &calls, repeat).await
    });
    let child = child.as_mut().map(|c| c.wait()).transpose()?;
    let (timings, error) = match result {
        Ok(t) => (t, None),
        Err(e) => (runtime::Timings::default(), Some(e)),
    };
    let events = std::mem::take(&mut tap.borrow_mut().events);
    Ok((
        names,
        Outcome {
            events,
            timings,
            error,
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

fn our_returns(events: &[Event]) -> Vec<&ReturnEvent> {
    events
        .iter()
        .filter(|e| e.dir == Some(Direction::ServerToClient))
        .filter_map(|e| match &e.kind {
            EventKind::Return(r) if !r.interface.is_empty() => Some(r),
            _ => None,
        })
        .collect()
}

pub(crate) fn call(args: &CallArgs) -> Result<ExitCode> {
    let (names, out) = run(
        &args.address,
        &args.schemas,
        &args.steps,
        args.datadir.as_ref(),
        args.chain.as_deref(),
        args.argv.as_deref() == Some("bare"),
        Repeat::default(),
    )?;
    if args.trace {
        for e in &out.events {
            eprintln!("{}", crate::sink::text::describe(&e.kind));
        }
    }
    let last = names.last().cloned().unwrap_or_default();
    let ret = our_returns(&out.events)
        .into_iter()
        .rev()
        .find(|r| format!("{}.{}", r.interface, r.method) == last);
    if let Some(status) = &out.child {
        eprintln!("mpspy: child exited: {status}");
    }
    match (ret, out.error) {
        (Some(r), None) => {
            let v = r.results.as_ref().map_or(Json::Null, |v| {
                if args.raw {
                    serde_json::to_value(v).unwrap_or(Json::Null)
                } else {
                    plain(v)
                }
            });
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        (Some(r), Some(e)) if r.exception.is_some() => {
            let x = r
                .exception
                .as_ref()
                .map(|x| format!("{}: {}", x.kind, x.reason))
                .unwrap_or_default();
            eprintln!("mpspy: {last} failed: {x}");
            let _ = e;
            Ok(ExitCode::from(1))
        }
        (_, Some(e)) => {
            eprintln!("mpspy: call failed: {e:#}");
            Ok(ExitCode::from(1))
        }
        (None, None) => bail!("{last} returned nothing the decoder saw"),
    }
}

pub(crate) fn bench(args: &BenchArgs) -> Result<ExitCode> {
    let repeat = Repeat {
        count: args.count,
        warmup: args.warmup,
        concurrency: args.concurrency,
    };
    let started = Instant::now();
    let (names, out) = run(
        &args.address,
        &args.schemas,
        &args.steps,
        None,
        None,
        false,
        repeat,
    )?;
    let elapsed = started.elapsed();
    if let Some(e) = out.error {
        eprintln!("mpspy: bench failed: {e:#}");
        return Ok(ExitCode::from(1));
    }
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    for t in &out.timings.round_trips_ns {
        h.record((*t).max(1))?;
    }
    if let Some(path) = &args.hdr_log {
        write_hdr_log(
            path,
            &h,
            elapsed,
            &names.last().cloned().unwrap_or_default(),
        )
        .with_context(|| format!("--hdr-log {}", path.display()))?;
    }
    let n = h.len();
    let rate = n as f64 / elapsed.as_secs_f64();
    let q = |p: f64| h.value_at_quantile(p);
    let last = names.last().cloned().unwrap_or_default();
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
