//! Bitcoin Core `debug.log` lines written with `-debug=ipc`: a parser into typed [`Record`]s and a
//! fold ([`LogStats`]) into per-process, per-method counts and latency phases.
//!
//! Formats understood (protocol notes §7): master and v31 prefixes (`[ipc] `, `[ipc:trace] `,
//! `ipc: `, `[warning] ipc: `, `[error] ipc: `), v30.1+ level tags (`[ipc:info] ` …, also what
//! `-loglevelalways` prints), v30.0 (`[ipc] ` with payloads inline after the type name),
//! `-logtimemicros` or whole-second timestamps (or none), `(mocktime: …)`, `-logthreadnames`
//! (`[thread] `), `-logsourcelocations` (`[file:line] [function] `), the `[*] ` rate-limit
//! marker, and the libmultiprocess example programs' bare `{exe-pid/…} …` lines. Anything else
//! is skipped.
//!
//! Server requests are correlated by their per-process `#N`: `recv` → `post` → `executing` →
//! `send response` gives dispatch (post − recv), queueing (executing − post) and execution
//! (send − executing); total is send − recv. Event-loop methods have only recv and send. Client
//! lines carry no number, so `IPC client send`/`recv` pair up per client thread, innermost first
//! (a thread that is waiting can run a callback that makes calls of its own). Latency needs
//! microsecond timestamps (`-logtimemicros`); with whole seconds or none only counts are kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use hdrhistogram::Histogram;
use mpspy_engine::stats::{LONG_POLL, long_poll_sections};
use serde_json::{Value, json};

/// Which end of a call a line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The process answering the request (`IPC server …`).
    Server,
    /// The process making the call (`IPC client …`).
    Client,
}

impl Side {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}

/// The log level of a line, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `[ipc:trace] `
    Trace,
    /// `[ipc] ` or `[ipc:debug] `
    Debug,
    /// `ipc: ` or `[ipc:info] `
    Info,
    /// `[warning] ipc: ` or `[ipc:warning] `
    Warning,
    /// `[error] ipc: ` or `[ipc:error] `
    Error,
    /// No prefix (the libmultiprocess example programs).
    Unknown,
}

/// How a request was canceled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// `IPC server request #N canceled while executing.`
    WhileExecuting,
    /// `IPC server request #N canceled before it could be executed`
    BeforeExecuting,
    /// `IPC server request #N interrupted (<what>)`
    Interrupted(String),
}

/// What a line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `IPC server recv request  #N X.y$Params`
    Recv,
    /// `IPC server post request  #N {<worker>}`
    Post {
        /// The worker's long thread name.
        worker: String,
    },
    /// `IPC server executing request #N` (on the worker).
    Executing,
    /// `IPC server send response #N X.y$Results`
    Send,
    /// `IPC server error request #N …`: the request ended with an exception.
    Error {
        /// The text after the request number (and type name, when there is one).
        message: String,
    },
    /// `IPC server request #N uncaught exception (…)` (on the worker).
    Uncaught {
        /// The exception text.
        message: String,
    },
    /// `IPC server unhandled exception: …` (event-loop methods; no request number).
    Unhandled {
        /// The exception text.
        message: String,
    },
    /// A cancellation line.
    Canceled(Cancel),
    /// `request data: …` (server, trace)
    RequestData,
    /// `response data: …` (server, trace)
    ResponseData,
    /// `IPC server: socket connected.`
    Connected,
    /// `IPC server: socket disconnected.`
    Disconnected,
    /// `IPC client send X.y$Params`
    ClientSend,
    /// `IPC client recv X.y$Results`
    ClientRecv,
    /// `IPC client exception kj::Exception: …`
    ClientException {
        /// The exception text.
        message: String,
    },
    /// Another IPC line (object lifecycle, destroy, event loop, …).
    Other,
}

/// One IPC line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Microseconds since the Unix epoch (whole seconds unless [`Record::micros`]).
    pub time_us: Option<u64>,
    /// The timestamp had a fractional part (`-logtimemicros`).
    pub micros: bool,
    /// The line had the `[*] ` marker (rate limiting suppressed some lines).
    pub suppressed: bool,
    /// `-logthreadnames`: Bitcoin's internal thread name (`capnp-loop`, `unknown`).
    pub thread_name: Option<String>,
    /// `-logsourcelocations`: `file:line`.
    pub source: Option<String>,
    /// The level, from the prefix.
    pub level: Level,
    /// The long thread name inside `{…}`: `<exe>-<pid>/<name>-<tid>[ (from …)]`.
    pub thread: String,
    /// `<exe>-<pid>`: request numbers count per process.
    pub process: String,
    /// Server or client, for request lines.
    pub side: Option<Side>,
    /// `#N`.
    pub request: Option<u64>,
    /// `Interface.method`, from `Interface.method$Params` / `$Results`.
    pub method: Option<String>,
    /// What the line says.
    pub kind: Kind,
}

/// Parses one line; `None` for lines that are not IPC lines with a `{thread}` (other categories,
/// client `send data:`/`recv data:` trace lines, blank lines, garbage).
pub fn parse_line(line: &str) -> Option<Record> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    let mut suppressed = false;
    if let Some(r) = rest.strip_prefix("[*] ") {
        suppressed = true;
        rest = r;
    }
    let (mut time_us, mut micros) = (None, false);
    if let Some((ts, r)) = rest.split_once(' ')
        && let Some((t, m)) = parse_timestamp(ts)
    {
        (time_us, micros) = (Some(t), m);
        rest = r;
        if let Some(r) = rest.strip_prefix("(mocktime: ") {
            rest = r.split_once(") ").map_or("", |(_, r)| r);
        }
    }
    let mut level = None;
    let mut ipc = false;
    let mut seen_brackets = false;
    let mut thread_name = None;
    let mut source: Option<String> = None;
    let mut function_next = false;
    while rest.starts_with('[') {
        let Some(end) = rest.find("] ") else { break };
        let b = &rest[1..end];
        rest = &rest[end + 2..];
        if b == "*" {
            suppressed = true;
            continue;
        }
        seen_brackets = true;
        let tagged = match b {
            "ipc" | "ipc:debug" => Some((Level::Debug, true)),
            "ipc:trace" => Some((Level::Trace, true)),
            "ipc:info" => Some((Level::Info, true)),
            "ipc:warning" => Some((Level::Warning, true)),
            "ipc:error" => Some((Level::Error, true)),
            "warning" => Some((Level::Warning, false)),
            "error" => Some((Level::Error, false)),
            _ => None,
        };
        if let Some((l, is_ipc)) = tagged {
            level = Some(l);
            ipc |= is_ipc;
        } else if function_next {
            function_next = false;
        } else if is_source_location(b) {
            source = Some(b.to_string());
            function_next = true;
        } else if thread_name.is_none() && source.is_none() && level.is_none() {
            thread_name = Some(b.to_string());
        } else {
            // Another category (`[net] `, `[validation:debug] `, …).
            return None;
        }
    }
    if let Some(r) = rest.strip_prefix("ipc: ") {
        ipc = true;
        level.get_or_insert(Level::Info);
        rest = r;
    }
    // Bitcoin prefixes every IPC line; only the example programs write bare `{…}` lines.
    if seen_brackets && !ipc {
        return None;
    }
    let body = rest.strip_prefix('{')?;
    let close = body.find('}')?;
    let thread = &body[..close];
    let (process, _) = thread.split_once('/')?;
    if !is_process(process) {
        return None;
    }
    let msg = body[close + 1..]
        .strip_prefix(' ')
        .unwrap_or(&body[close + 1..]);
    let (side, request, method, kind) = classify(msg);
    Some(Record {
        time_us,
        micros,
        suppressed,
        thread_name,
        source,
        level: level.unwrap_or(Level::Unknown),
        thread: thread.to_string(),
        process: process.to_string(),
        side,
        request,
        method,
        kind,
    })
}

type Classified = (Option<Side>, Option<u64>, Option<String>, Kind);

fn classify(msg: &str) -> Classified {
    if let Some(m) = msg.strip_prefix("IPC server ") {
        return classify_server(m).unwrap_or((Some(Side::Server), None, None, Kind::Other));
    }
    if let Some(m) = msg.strip_prefix("IPC client ") {
        let client = |method, kind| (Some(Side::Client), None, method, kind);
        if let Some(r) = m.strip_prefix("send ") {
            return client(type_method(r), Kind::ClientSend);
        }
        if let Some(r) = m.strip_prefix("recv ") {
            return client(type_method(r), Kind::ClientRecv);
        }
        if let Some(r) = m.strip_prefix("exception ") {
            let message = r.to_string();
            return client(None, Kind::ClientException { message });
        }
        return client(None, Kind::Other);
    }
    if msg.starts_with("request data:") {
        return (Some(Side::Server), None, None, Kind::RequestData);
    }
    if msg.starts_with("response data:") {
        return (Some(Side::Server), None, None, Kind::ResponseData);
    }
    (None, None, None, Kind::Other)
}

fn classify_server(m: &str) -> Option<Classified> {
    let server = |n, method, kind| Some((Some(Side::Server), n, method, kind));
    if let Some(r) = m.strip_prefix("recv request") {
        let (n, r) = request_number(r)?;
        return server(Some(n), type_method(r), Kind::Recv);
    }
    if let Some(r) = m.strip_prefix("post request") {
        let (n, r) = request_number(r)?;
        let worker = r.trim().trim_start_matches('{').trim_end_matches('}');
        let worker = worker.to_string();
        return server(Some(n), None, Kind::Post { worker });
    }
    if let Some(r) = m.strip_prefix("executing request") {
        let (n, _) = request_number(r)?;
        return server(Some(n), None, Kind::Executing);
    }
    if let Some(r) = m.strip_prefix("send response") {
        let (n, r) = request_number(r)?;
        return server(Some(n), type_method(r), Kind::Send);
    }
    if let Some(r) = m.strip_prefix("error request") {
        let (n, r) = request_number(r)?;
        let r = r.trim_start_matches(',').trim_start();
        let method = type_method(r);
        let message = match method {
            Some(_) => r.split_once(' ').map_or("", |(_, m)| m),
            None => r,
        };
        let message = message.to_string();
        return server(Some(n), method, Kind::Error { message });
    }
    if let Some(r) = m.strip_prefix("request") {
        let (n, r) = request_number(r)?;
        let r = r.trim_start();
        let kind = if r.starts_with("canceled while executing") {
            Kind::Canceled(Cancel::WhileExecuting)
        } else if r.starts_with("canceled before") {
            Kind::Canceled(Cancel::BeforeExecuting)
        } else if let Some(what) = r.strip_prefix("interrupted") {
            let what = what.trim().trim_start_matches('(').trim_end_matches(')');
            Kind::Canceled(Cancel::Interrupted(what.to_string()))
        } else if let Some(e) = r.strip_prefix("uncaught exception") {
            let message = e.trim().trim_start_matches('(').trim_end_matches(')');
            Kind::Uncaught {
                message: message.to_string(),
            }
        } else {
            Kind::Other
        };
        return server(Some(n), None, kind);
    }
    if let Some(r) = m.strip_prefix("unhandled exception:") {
        let message = r.trim().to_string();
        return server(None, None, Kind::Unhandled { message });
    }
    if m.starts_with(": socket connected") {
        return server(None, None, Kind::Connected);
    }
    if m.starts_with(": socket disconnected") {
        return server(None, None, Kind::Disconnected);
    }
    None
}

/// ` #N…` → (N, the rest after the digits).
fn request_number(r: &str) -> Option<(u64, &str)> {
    let r = r.trim_start().strip_prefix('#')?;
    let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
    Some((r[..end].parse().ok()?, &r[end..]))
}

/// `Interface.method` from the first word, `Interface.method$Params` or `…$Results` (v30.0
/// puts the payload after it; a display name may carry a `file.capnp:` prefix).
fn type_method(r: &str) -> Option<String> {
    let word = r.split_whitespace().next()?;
    let (name, suffix) = word.split_once('$')?;
    if !(suffix.starts_with("Params") || suffix.starts_with("Results")) {
        return None;
    }
    let name = name.rsplit_once(':').map_or(name, |(_, n)| n);
    (!name.is_empty()).then(|| name.to_string())
}

fn is_source_location(b: &str) -> bool {
    b.rsplit_once(':').is_some_and(|(file, line)| {
        !file.is_empty() && !line.is_empty() && line.bytes().all(|c| c.is_ascii_digit())
    })
}

/// `<exe>-<pid>`.
fn is_process(p: &str) -> bool {
    p.rsplit_once('-').is_some_and(|(exe, pid)| {
        !exe.is_empty() && !pid.is_empty() && pid.bytes().all(|c| c.is_ascii_digit())
    })
}

/// `2026-11-23T11:04:22.067585Z` → (µs since the epoch, had a fraction).
fn parse_timestamp(s: &str) -> Option<(u64, bool)> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let num = |t: &str, len: usize| -> Option<i64> {
        (t.len() == len && t.bytes().all(|c| c.is_ascii_digit())).then(|| t.parse().ok())?
    };
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let mut t = hms.split(':');
    let (h, mi, sec) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if d.next().is_some() || t.next().is_some() || !(1..=12).contains(&mo) || day == 0 {
        return None;
    }
    let frac_us = match frac {
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            let digits: String = f.chars().chain(std::iter::repeat('0')).take(6).collect();
            digits.parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    // Days since 1970-01-01 (proleptic Gregorian; H. Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    let us = u64::try_from(secs * 1_000_000 + frac_us).ok()?;
    Some((us, frac.is_some()))
}

/// A latency distribution in microseconds, with the exact minimum, maximum and sum.
#[derive(Debug, Clone)]
pub struct Phase {
    hist: Histogram<u64>,
    min: u64,
    max: u64,
    sum: u64,
}

impl Default for Phase {
    fn default() -> Self {
        Phase {
            // 3 significant digits from 1 µs to a day (exact below 2048 µs).
            hist: Histogram::new_with_bounds(1, 86_400_000_000, 3).expect("valid bounds"),
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

impl Phase {
    fn record(&mut self, us: u64) {
        let _ = self.hist.record(us);
        self.min = self.min.min(us);
        self.max = self.max.max(us);
        self.sum = self.sum.saturating_add(us);
    }

    /// Takes in `other`'s samples.
    pub fn merge(&mut self, other: &Phase) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at quantile `q` (0..=1), in µs.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (!self.is_empty()).then(|| self.hist.value_at_quantile(q).min(self.max))
    }

    /// The exact largest sample, in µs.
    pub fn max(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.max)
    }

    /// The exact smallest sample, in µs.
    pub fn min(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.min)
    }

    fn json(&self) -> Value {
        if self.is_empty() {
            return Value::Null;
        }
        let q = |p| self.quantile(p);
        json!({
            "n": self.len(),
            "min": self.min,
            "p50": q(0.5),
            "p90": q(0.9),
            "p99": q(0.99),
            "p999": q(0.999),
            "max": self.max,
            "mean": self.sum as f64 / self.len() as f64,
        })
    }
}

/// Statistics of one method on one side of one process.
#[derive(Debug, Clone, Default)]
pub struct MethodLog {
    /// Requests that ended: answered, failed or canceled.
    pub count: u64,
    /// Requests that ended with an exception (and were not canceled).
    pub errors: u64,
    /// Requests canceled (`canceled while executing`, `… before it could be executed`,
    /// `interrupted (…)`).
    pub cancels: u64,
    /// Requests seen starting but not ending before the log did.
    pub unanswered: u64,
    /// recv → send response (server) or client send → recv.
    pub total: Phase,
    /// recv → post (server, Context methods).
    pub dispatch: Phase,
    /// post → executing: waiting for the worker thread.
    pub queue: Phase,
    /// executing → send response.
    pub exec: Phase,
}

impl MethodLog {
    /// Takes in `other`'s requests (another process's, for a view over a whole log).
    pub fn merge(&mut self, other: &MethodLog) {
        self.count += other.count;
        self.errors += other.errors;
        self.cancels += other.cancels;
        self.unanswered += other.unanswered;
        self.total.merge(&other.total);
        self.dispatch.merge(&other.dispatch);
        self.queue.merge(&other.queue);
        self.exec.merge(&other.exec);
    }
}

/// Statistics of one process (`<exe>-<pid>`).
#[derive(Debug, Clone, Default)]
pub struct ProcessLog {
    /// Requests this process answered, by `Interface.method`.
    pub server: BTreeMap<String, MethodLog>,
    /// Calls this process made, by `Interface.method`.
    pub client: BTreeMap<String, MethodLog>,
    /// Error lines that could not be tied to a request.
    pub unattributed_errors: u64,
}

/// The finest timestamps in a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// No timestamps (the example programs, `-nologtimestamps`).
    None,
    /// Whole seconds.
    Seconds,
    /// Microseconds (`-logtimemicros`).
    Micros,
}

impl Resolution {
    /// `none`, `seconds` or `micros`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::None => "none",
            Resolution::Seconds => "seconds",
            Resolution::Micros => "micros",
        }
    }
}

/// µs when the line had microseconds.
type Stamp = Option<u64>;

#[derive(Debug, Default)]
struct Req {
    method: Option<String>,
    loop_thread: Option<String>,
    recv: Option<Stamp>,
    post: Option<Stamp>,
    exec: Option<Stamp>,
    end: Option<Stamp>,
    sent: bool,
    error: bool,
    canceled: bool,
}

#[derive(Debug)]
struct Call {
    method: String,
    at: Stamp,
}

/// The fold of a whole log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines read.
    pub lines: u64,
    /// Lines that were IPC lines.
    pub ipc_lines: u64,
    /// IPC lines with microsecond timestamps.
    pub micros_lines: u64,
    /// IPC lines with whole-second timestamps.
    pub seconds_lines: u64,
    /// IPC lines with the `[*] ` rate-limit marker.
    pub suppressed_lines: u64,
    /// By process, in name order.
    pub processes: BTreeMap<String, ProcessLog>,
    /// Open server requests by process, then `#N`.
    open: HashMap<String, HashMap<u64, Req>>,
    /// Open client calls by (process, thread), innermost last.
    calls: HashMap<(String, String), Vec<Call>>,
}

impl LogStats {
    /// An empty fold.
    pub fn new() -> Self {
        LogStats::default()
    }

    /// Reads a whole log (invalid UTF-8 is replaced) and finishes the fold.
    pub fn read<R: BufRead>(mut input: R) -> io::Result<Self> {
        let mut stats = LogStats::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if input.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            stats.line(&String::from_utf8_lossy(&buf));
        }
        stats.finish();
        Ok(stats)
    }

    /// Reads the log at `path`.
    pub fn read_file(path: &Path) -> io::Result<Self> {
        LogStats::read(BufReader::new(std::fs::File::open(path)?))
    }

    /// Parses and folds one line.
    pub fn line(&mut self, line: &str) {
        self.lines += 1;
        if let Some(r) = parse_line(line) {
            self.fold(&r);
        }
    }

    /// Folds one record in.
    pub fn fold(&mut self, r: &Record) {
        self.ipc_lines += 1;
        match (r.time_us, r.micros) {
            (Some(_), true) => self.micros_lines += 1,
            (Some(_), false) => self.seconds_lines += 1,
            _ => {}
        }
        if r.suppressed {
            self.suppressed_lines += 1;
        }
        let at: Stamp = if r.micros { r.time_us } else { None };
        if r.side == Some(Side::Client) {
            self.fold_client(r, at);
            return;
        }
        let process = r.process.as_str();
        let Some(n) = r.request else {
            if let Kind::Unhandled { .. } = r.kind {
                self.unhandled(r, at);
            }
            return;
        };
        let open = self.open.entry(process.to_string()).or_default();
        if r.kind == Kind::Recv
            && let Some(old) = open.remove(&n)
        {
            // The same number again: another run of a process with the same pid.
            if old.recv.is_some() {
                finish_request(&mut self.processes, process, old);
            } else {
                open.insert(n, old);
            }
        }
        let q = open.entry(n).or_default();
        if q.method.is_none() {
            q.method = r.method.clone();
        }
        match &r.kind {
            Kind::Recv => {
                q.recv = Some(at);
                q.loop_thread = Some(r.thread.clone());
            }
            Kind::Post { .. } => q.post = Some(at),
            Kind::Executing => q.exec = Some(at),
            Kind::Send => {
                q.end = Some(at);
                q.sent = true;
                // The normal end: nothing more is logged for this request.
                if let Some(q) = open.remove(&n) {
                    finish_request(&mut self.processes, process, q);
                }
            }
            Kind::Error { .. } => {
                q.error = true;
                q.end = Some(at);
            }
            Kind::Uncaught { .. } => q.error = true,
            Kind::Canceled(_) => q.canceled = true,
            _ => {}
        }
        // Error and cancel lines come in several per request, in no fixed order; those
        // requests stay open until the end of the log.
    }

    /// `IPC server unhandled exception:` names no request: it belongs to the event-loop method
    /// in flight on that loop thread (received, not posted to a worker, not ended).
    fn unhandled(&mut self, r: &Record, at: Stamp) {
        let open = self.open.entry(r.process.clone()).or_default();
        let victim = open
            .iter_mut()
            .filter(|(_, q)| {
                q.recv.is_some()
                    && q.post.is_none()
                    && q.end.is_none()
                    && q.loop_thread.as_deref() == Some(r.thread.as_str())
            })
            .max_by_key(|(n, _)| **n);
        match victim {
            Some((_, q)) => {
                q.error = true;
                q.end = Some(at);
            }
            None => {
                self.processes
                    .entry(r.process.clone())
                    .or_default()
                    .unattributed_errors += 1
            }
        }
    }

    fn fold_client(&mut self, r: &Record, at: Stamp) {
        let key = (r.process.clone(), r.thread.clone());
        match &r.kind {
            Kind::ClientSend => {
                if let Some(method) = &r.method {
                    let method = method.clone();
                    self.calls.entry(key).or_default().push(Call { method, at });
                }
            }
            Kind::ClientRecv => {
                let Some(method) = &r.method else { return };
                let stack = self.calls.entry(key).or_default();
                let call = stack
                    .iter()
                    .rposition(|c| &c.method == method)
                    .map(|i| stack.remove(i));
                let m = client_entry(&mut self.processes, &r.process, method);
                m.count += 1;
                if let Some(Call { at: Some(a), .. }) = call
                    && let Some(b) = at
                {
                    m.total.record(b.saturating_sub(a));
                }
            }
            Kind::ClientException { .. } => {
                let call = self.calls.get_mut(&key).and_then(Vec::pop);
                match call {
                    Some(c) => {
                        let m = client_entry(&mut self.processes, &r.process, &c.method);
                        m.count += 1;
                        m.errors += 1;
                        if let (Some(a), Some(b)) = (c.at, at) {
                            m.total.record(b.saturating_sub(a));
                        }
                    }
                    None => {
                        self.processes
                            .entry(r.process.clone())
                            .or_default()
                            .unattributed_errors += 1
                    }
                }
            }
            _ => {}
        }
    }

    /// Ends the fold: requests still open are counted by what was seen of them (errors,
    /// cancels, or unanswered). Calling it again does nothing.
    pub fn finish(&mut self) {
        for (process, open) in std::mem::take(&mut self.open) {
            let mut reqs: Vec<(u64, Req)> = open.into_iter().collect();
            reqs.sort_by_key(|(n, _)| *n);
            for (_, q) in reqs {
                finish_request(&mut self.processes, &process, q);
            }
        }
        for ((process, _), calls) in std::mem::take(&mut self.calls) {
            for c in calls {
                client_entry(&mut self.processes, &process, &c.method).unanswered += 1;
            }
        }
    }

    /// The finest timestamps seen on IPC lines.
    pub fn resolution(&self) -> Resolution {
        if self.micros_lines > 0 {
            Resolution::Micros
        } else if self.seconds_lines > 0 {
            Resolution::Seconds
        } else {
            Resolution::None
        }
    }

    /// Whether any request or call was seen.
    pub fn has_requests(&self) -> bool {
        self.processes
            .values()
            .any(|p| !p.server.is_empty() || !p.client.is_empty())
    }

    /// A note for the reader, when the log cannot give everything.
    pub fn note(&self) -> Option<String> {
        if self.ipc_lines == 0 {
            return Some(
                "no IPC lines in this log (start the program with -debug=ipc, and -logtimemicros for latency)"
                    .to_string(),
            );
        }
        if !self.has_requests() {
            return Some(format!(
                "{} IPC line(s) but no requests (request lines need -debug=ipc)",
                self.ipc_lines
            ));
        }
        match self.resolution() {
            Resolution::Micros => None,
            Resolution::Seconds => Some(
                "counts only: timestamps have whole seconds; latency needs -logtimemicros"
                    .to_string(),
            ),
            Resolution::None => Some(
                "counts only: the log has no timestamps; latency needs -logtimemicros".to_string(),
            ),
        }
    }

    /// Text tables: one section per process and side, long-poll methods apart, and for servers
    /// with microsecond timestamps where the time went (dispatch, queue, execution).
    pub fn table(&self) -> String {
        let mut out = String::new();
        if let Some(note) = self.note() {
            let _ = writeln!(out, "note: {note}");
        }
        for (process, p) in &self.processes {
            for (side, methods) in [(Side::Server, &p.server), (Side::Client, &p.client)] {
                if methods.is_empty() {
                    continue;
                }
                let what = match side {
                    Side::Server => "requests it answered",
                    Side::Client => "calls it made",
                };
                let _ = writeln!(out, "\n{process} {} ({what}):", side.as_str());
                method_table(&mut out, methods);
            }
            if p.unattributed_errors > 0 {
                let _ = writeln!(
                    out,
                    "{process}: {} error line(s) not tied to a request",
                    p.unattributed_errors
                );
            }
        }
        out
    }

    /// One row per (process, side, method), for `mpspy stats --json`.
    pub fn rows_json(&self) -> Vec<Value> {
        let mut rows = Vec::new();
        for (process, p) in &self.processes {
            for (side, methods) in [(Side::Server, &p.server), (Side::Client, &p.client)] {
                for (method, m) in methods {
                    rows.push(json!({
                        "process": process,
                        "side": side.as_str(),
                        "method": method,
                        "long_poll": LONG_POLL.contains(&method.as_str()),
                        "count": m.count,
                        "errors": m.errors,
                        "cancels": m.cancels,
                        "unanswered": m.unanswered,
                        "total_us": m.total.json(),
                        "dispatch_us": m.dispatch.json(),
                        "queue_us": m.queue.json(),
                        "exec_us": m.exec.json(),
                    }));
                }
            }
        }
        rows
    }

    /// The whole fold as one JSON object (`kind`, line counts, `timestamps`, `note`, `rows`).
    pub fn to_json(&self) -> Value {
        let unattributed: BTreeMap<&String, u64> = self
            .processes
            .iter()
            .filter(|(_, p)| p.unattributed_errors > 0)
            .map(|(n, p)| (n, p.unattributed_errors))
            .collect();
        json!({
            "kind": "debug.log",
            "lines": self.lines,
            "ipc_lines": self.ipc_lines,
            "suppressed_lines": self.suppressed_lines,
            "timestamps": self.resolution().as_str(),
            "note": self.note(),
            "unattributed_errors": unattributed,
            "rows": self.rows_json(),
        })
    }
}

fn client_entry<'a>(
    processes: &'a mut BTreeMap<String, ProcessLog>,
    process: &str,
    method: &str,
) -> &'a mut MethodLog {
    processes
        .entry(process.to_string())
        .or_default()
        .client
        .entry(method.to_string())
        .or_default()
}

fn finish_request(processes: &mut BTreeMap<String, ProcessLog>, process: &str, q: Req) {
    // Lines of a request whose `recv` and `send` are both missing (the log starts or ends in
    // the middle) name no method.
    let Some(method) = q.method else { return };
    let m = processes
        .entry(process.to_string())
        .or_default()
        .server
        .entry(method)
        .or_default();
    let ended = q.canceled || q.error || q.sent;
    if q.canceled {
        m.cancels += 1;
    } else if q.error {
        m.errors += 1;
    }
    if ended {
        m.count += 1;
    } else {
        m.unanswered += 1;
    }
    let span = |a: Option<Stamp>, b: Option<Stamp>| match (a, b) {
        (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(a)),
        _ => None,
    };
    if let Some(d) = span(q.recv, q.post) {
        m.dispatch.record(d);
    }
    if let Some(d) = span(q.post, q.exec) {
        m.queue.record(d);
    }
    if ended && !q.canceled {
        if let Some(d) = span(q.exec, q.end) {
            m.exec.record(d);
        }
        if let Some(d) = span(q.recv, q.end) {
            m.total.record(d);
        }
    }
}

/// `39µs`, `1.23ms`, `4.50s`.
fn format_us(us: u64) -> String {
    match us {
        n if n < 10_000 => format!("{n}µs"),
        n if n < 10_000_000 => format!("{:.2}ms", n as f64 / 1e3),
        n => format!("{:.2}s", n as f64 / 1e6),
    }
}

fn method_table(out: &mut String, methods: &BTreeMap<String, MethodLog>) {
    let timed = methods.values().any(|m| !m.total.is_empty());
    let phases = methods
        .values()
        .any(|m| !(m.dispatch.is_empty() && m.queue.is_empty() && m.exec.is_empty()));
    for (long_poll, rows) in long_poll_sections(methods) {
        if long_poll {
            out.push_str("long-poll methods (latency is mostly waiting):\n");
        }
        let _ = write!(
            out,
            "{:<40} {:>7} {:>6} {:>6}",
            "method", "count", "errors", "cancel"
        );
        if timed {
            for h in ["p50", "p90", "p99", "p99.9", "max"] {
                let _ = write!(out, " {h:>9}");
            }
        }
        out.push('\n');
        for (name, m) in &rows {
            let mut cancel = m.cancels.to_string();
            if m.unanswered > 0 {
                cancel = format!("{cancel}+{}?", m.unanswered);
            }
            let _ = write!(
                out,
                "{:<40} {:>7} {:>6} {:>6}",
                name, m.count, m.errors, cancel
            );
            if timed {
                for q in [0.5, 0.9, 0.99, 0.999] {
                    let _ = write!(out, " {:>9}", cell(m.total.quantile(q)));
                }
                let _ = write!(out, " {:>9}", cell(m.total.max()));
            }
            out.push('\n');
        }
        if phases {
            out.push_str(
                "  where the time went (p50 / max): dispatch = post − recv, queue = executing − post, exec = send − executing\n",
            );
            let _ = writeln!(
                out,
                "  {:<38} {:>19} {:>19} {:>19}",
                "method", "dispatch", "queue", "exec"
            );
            for (name, m) in &rows {
                let pair = |p: &Phase| match (p.quantile(0.5), p.max()) {
                    (Some(a), Some(b)) => format!("{} / {}", format_us(a), format_us(b)),
                    _ => "-".to_string(),
                };
                let _ = writeln!(
                    out,
                    "  {:<38} {:>19} {:>19} {:>19}",
                    name,
                    pair(&m.dispatch),
                    pair(&m.queue),
                    pair(&m.exec)
                );
            }
        }
    }
}

fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), format_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_prefix_style() {
        let r = parse_line("2026-11-23T11:04:22.068274Z [capnp-loop] [ipc/capnp/protocol.cpp:50] [IpcLogFn] [ipc] {bitcoin-node-6437/b-capnp-loop-6439} IPC server recv request  #2 Init.makeEcho$Params").unwrap();
        assert_eq!(r.kind, Kind::Recv);
        assert_eq!(r.request, Some(2));
        assert_eq!(r.method.as_deref(), Some("Init.makeEcho"));
        assert_eq!(r.process, "bitcoin-node-6437");
        assert_eq!(r.thread_name.as_deref(), Some("capnp-loop"));
        assert_eq!(r.source.as_deref(), Some("ipc/capnp/protocol.cpp:50"));
        assert!(r.micros);
        assert_eq!(r.time_us.unwrap() % 1_000_000, 68_274);
        // 2026-11-23T11:04:22Z
        assert_eq!(r.time_us.unwrap() / 1_000_000, 1_795_431_862);

        let r = parse_line("2026-11-23T11:05:14Z [error] ipc: {bitcoin-node-4515/b-capnp-loop-4519} IPC server error request #65 Mining.checkBlock$Results kj::Exception: std::exception: boom").unwrap();
        assert_eq!(r.level, Level::Error);
        assert!(!r.micros);
        assert_eq!(r.method.as_deref(), Some("Mining.checkBlock"));
        assert_eq!(
            r.kind,
            Kind::Error {
                message: "kj::Exception: std::exception: boom".into()
            }
        );

        let r = parse_line("[*] 2026-11-23T11:05:14Z [ipc:info] {sv2-tp-5352/b-sv2-5356} IPC client first request from current thread, constructing waiter").unwrap();
        assert!(r.suppressed);
        assert_eq!(r.level, Level::Info);
        assert_eq!(r.side, Some(Side::Client));

        // v30.0: payload inline after the type.
        let r = parse_line("2025-10-01T00:00:00Z [ipc] {bitcoin-node-1/b-capnp-loop-2} IPC server send response #7 Echo.echo$Results (result = \"hi\")").unwrap();
        assert_eq!(r.kind, Kind::Send);
        assert_eq!(r.method.as_deref(), Some("Echo.echo"));

        let r = parse_line("{mpprinter-21912/mpprinter-21912} IPC server post request  #2 {mpprinter-21912/mpprinter-21917 (from mpexample-21908/mpexample-21908)}").unwrap();
        assert_eq!(r.level, Level::Unknown);
        assert_eq!(
            r.kind,
            Kind::Post {
                worker: "mpprinter-21912/mpprinter-21917 (from mpexample-21908/mpexample-21908)"
                    .into()
            }
        );
        let r = parse_line("2026-01-01T00:00:00Z ipc: {bitcoin-node-6437/b-capnp-loop-6452 (from pythread)} IPC server request #15 interrupted (canceled)").unwrap();
        assert_eq!(
            r.kind,
            Kind::Canceled(Cancel::Interrupted("canceled".into()))
        );

        assert!(
            parse_line("2026-11-23T11:02:20Z Command-line arg: loglevel=\"ipc:trace\"").is_none()
        );
        assert!(
            parse_line("2026-11-23T11:02:20Z [net] {x-1/y} IPC server recv request  #1 A.b$Params")
                .is_none()
        );
        assert!(parse_line("send data: (threadMap = <external capability>)").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn phases_from_one_request() {
        let log = "\
2026-11-23T11:04:22.068274Z [ipc] {n-1/loop-1} IPC server recv request  #2 Init.makeEcho$Params
2026-11-23T11:04:22.068313Z [ipc] {n-1/loop-1} IPC server post request  #2 {n-1/w-9 (from py)}
2026-11-23T11:04:22.068436Z [ipc] {n-1/w-9 (from py)} IPC server executing request #2
2026-11-23T11:04:22.068865Z [ipc] {n-1/loop-1} IPC server send response #2 Init.makeEcho$Results
2026-11-23T11:04:22.077933Z [ipc] {n-1/loop-1} IPC server recv request  #3 Init.makeMiningOld2$Params
2026-11-23T11:04:22.078003Z [error] ipc: {n-1/loop-1} IPC server unhandled exception: Old
2026-11-23T11:04:22.078004Z [ipc] {n-1/loop-1} IPC server recv request  #4 Echo.echo$Params
";
        let s = LogStats::read(log.as_bytes()).unwrap();
        let m = &s.processes["n-1"].server["Init.makeEcho"];
        assert_eq!((m.count, m.errors), (1, 0));
        assert_eq!(m.dispatch.max(), Some(39));
        assert_eq!(m.queue.max(), Some(123));
        assert_eq!(m.exec.max(), Some(429));
        assert_eq!(m.total.max(), Some(591));
        let old = &s.processes["n-1"].server["Init.makeMiningOld2"];
        assert_eq!((old.count, old.errors, old.total.max()), (1, 1, Some(70)));
        let echo = &s.processes["n-1"].server["Echo.echo"];
        assert_eq!((echo.count, echo.unanswered), (0, 1));
        assert_eq!(s.resolution(), Resolution::Micros);
    }

    #[test]
    fn client_calls_pair_innermost_first() {
        let log = "\
{a-1/a-1} IPC client send Calc.solve$Params
{a-1/a-1} IPC client send Printer.print$Params
{a-1/a-1} IPC client recv Printer.print$Results
{a-1/a-1} IPC client recv Calc.solve$Results
{a-1/a-1} IPC client send Calc.solve$Params
{a-1/a-1} IPC client exception kj::Exception: nope
{a-1/a-1} IPC client send Calc.solve$Params
";
        let s = LogStats::read(log.as_bytes()).unwrap();
        let c = &s.processes["a-1"].client;
        assert_eq!(c["Printer.print"].count, 1);
        let solve = &c["Calc.solve"];
        assert_eq!((solve.count, solve.errors, solve.unanswered), (2, 1, 1));
        assert_eq!(s.resolution(), Resolution::None);
        assert!(s.note().unwrap().contains("-logtimemicros"));
    }
}
