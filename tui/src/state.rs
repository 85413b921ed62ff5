//! What the screens show, folded from events. No terminal here: tests fold a `Vec<Event>` and
//! look at the result.
//!
//! Memory stays bounded on long sessions: call rows live in a ring of `history` rows (the
//! oldest fall out and are counted), log lines in a ring of their own, released capabilities
//! are kept per connection up to a cap; per-method aggregates ([`Stats`]) keep everything.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mpspy_engine::SharedStats;
use mpspy_engine::stats::format_ns;
use mpspy_schema::event::{
    CapInfo, ConnId, Direction, FaultKind, Peer, PendingCall, Side, qualified,
};
use mpspy_schema::rpc::{CapDescriptor, ExceptionInfo};
use mpspy_schema::value::Value;
use mpspy_schema::{Event, EventKind};

/// Decoded params and results kept for the list, roughly (frame sizes): a few `getBlock`
/// results of 4 MB each must not pin gigabytes on a long session.
const BYTES_KEPT: usize = 256 << 20;
/// Released capabilities remembered per connection (the live ones are all kept).
const RELEASED_KEPT: usize = 200;
/// Log lines kept (program output and mpspy's notices).
pub(crate) const LOG_KEPT: usize = 5_000;
/// Window over which calls/s is measured.
const RATE_WINDOW_NS: u64 = 5_000_000_000;

/// How a call ended (or has not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// No return yet.
    Pending,
    /// Results came back.
    Ok,
    /// An exception came back.
    Exception,
    /// The caller canceled (Finish before Return) or the return said `canceled`.
    Canceled,
    /// The connection closed before the return.
    Disconnected,
    /// Another return outcome (`takeFromOtherQuestion`, …).
    Other(String),
}

impl Status {
    pub(crate) fn label(&self) -> &str {
        match self {
            Status::Pending => "pending",
            Status::Ok => "ok",
            Status::Exception => "exception",
            Status::Canceled => "canceled",
            Status::Disconnected => "disconnected",
            Status::Other(s) => s,
        }
    }
}

/// The return half of a call row.
#[derive(Debug, Clone)]
pub(crate) struct ReturnPart {
    pub(crate) seq: u64,
    pub(crate) t_ns: u64,
    pub(crate) results: Option<Value>,
    pub(crate) exception: Option<ExceptionInfo>,
    pub(crate) cap_table: Vec<CapDescriptor>,
    pub(crate) bytes: usize,
}

/// A call and its return, as one row.
#[derive(Debug, Clone)]
pub(crate) struct CallRow {
    /// Monotonic row id (survives ring eviction of older rows).
    pub(crate) id: u64,
    pub(crate) seq: u64,
    pub(crate) t_ns: u64,
    pub(crate) conn: ConnId,
    /// Who called: `ClientToServer` means the connection's client called the server.
    pub(crate) dir: Direction,
    pub(crate) question: u32,
    /// `Interface.method`.
    pub(crate) method: String,
    pub(crate) interface: String,
    pub(crate) target: String,
    /// The caller's thread (`Context.callbackThread`).
    pub(crate) client_thread: Option<String>,
    /// The thread that runs it on the callee (`Context.thread`).
    pub(crate) server_thread: Option<String>,
    pub(crate) params: Value,
    pub(crate) cap_table: Vec<CapDescriptor>,
    pub(crate) bytes: usize,
    pub(crate) status: Status,
    /// When the caller canceled, if it did.
    pub(crate) canceled_ns: Option<u64>,
    /// When the connection closed under a pending call.
    pub(crate) ended_ns: Option<u64>,
    pub(crate) ret: Option<ReturnPart>,
    /// The engine reported it stuck (pending past its limit); it may have returned since.
    pub(crate) stuck: bool,
    /// A fault `--inject` put into it: what, and the fault's detail.
    pub(crate) injected: Option<(FaultKind, String)>,
}

impl CallRow {
    /// Latency: call to return, or to `now` while pending, or to the disconnect.
    pub(crate) fn latency_ns(&self, now_ns: u64) -> u64 {
        let end = match (&self.ret, self.ended_ns) {
            (Some(r), _) => r.t_ns,
            (None, Some(t)) => t,
            (None, None) => now_ns,
        };
        end.saturating_sub(self.t_ns)
    }

    /// True until a return came or the connection closed.
    pub(crate) fn is_open(&self) -> bool {
        self.ret.is_none() && self.ended_ns.is_none()
    }

    /// Its status for the list: an injected fault says so (the status itself stays what the
    /// caller saw, so `status:error` still finds an injected exception).
    pub(crate) fn status_text(&self) -> String {
        match &self.injected {
            None => self.status.label().to_string(),
            Some((FaultKind::Exception, _)) => "injected".to_string(),
            Some((FaultKind::Disconnect, _)) => "injected cut".to_string(),
            Some((FaultKind::Delay, _)) => format!("{} +delay", self.status.label()),
        }
    }
}

/// A capability as the caps screen shows it.
#[derive(Debug, Clone)]
pub(crate) struct CapRow {
    pub(crate) info: CapInfo,
    pub(crate) created_ns: u64,
    pub(crate) destroyed_ns: Option<u64>,
    pub(crate) released_ns: Option<u64>,
}

impl CapRow {
    /// Left open at a disconnect without the `destroy` its interface has.
    pub(crate) fn is_leak(&self) -> bool {
        mpspy_engine::left::never_destroyed(&self.info)
    }
}

/// One connection.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) label: String,
    pub(crate) client: Option<Peer>,
    pub(crate) server: Option<Peer>,
    pub(crate) closed: Option<(u64, String)>,
    /// Live capabilities by name.
    pub(crate) live: BTreeMap<String, CapRow>,
    /// The most recently released ones, newest last.
    pub(crate) released: VecDeque<CapRow>,
    pub(crate) released_total: u64,
    /// Still referenced when the connection closed.
    pub(crate) left_open: Vec<CapRow>,
    /// Calls without a return when it closed.
    pub(crate) pending_at_close: Vec<PendingCall>,
    pub(crate) calls: u64,
}

impl Conn {
    /// The process holding references to a capability hosted by `host`.
    pub(crate) fn holder(&self, host: Side) -> String {
        let peer = match host {
            Side::Server => &self.client,
            Side::Client => &self.server,
        };
        match peer {
            Some(p) => match p.pid {
                Some(pid) => format!("{} ({pid})", p.name),
                None => p.name.clone(),
            },
            None => match host {
                Side::Server => "client".into(),
                Side::Client => "server".into(),
            },
        }
    }
}

/// A thread lane: the calls one thread of the callee ran on one connection (from
/// `Proxy.Context.thread`), so a thread stuck in a long poll or serialising callers shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lane {
    pub(crate) calls: u64,
    /// Time spent in calls that returned.
    pub(crate) busy_ns: u64,
    /// The callers' threads (`Context.callbackThread`), first few.
    pub(crate) callers: Vec<String>,
    /// The newest call: method and time.
    pub(crate) last: (String, u64),
}

/// Callers remembered per lane.
const CALLERS_KEPT: usize = 4;

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogSource {
    Stdout,
    Stderr,
    /// mpspy's own notices: connections, undecodable bytes, schema problems, aborts.
    Mpspy,
}

/// A line in the log pane.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub(crate) t_ns: u64,
    pub(crate) source: LogSource,
    pub(crate) text: String,
    /// A problem (shown highlighted).
    pub(crate) problem: bool,
}

/// Everything folded so far.
#[derive(Debug)]
pub(crate) struct State {
    history: usize,
    /// Call rows, oldest first.
    pub(crate) calls: VecDeque<CallRow>,
    next_id: u64,
    /// Rows that fell out of the ring.
    pub(crate) evicted: u64,
    /// Frame bytes of the rows in the ring.
    bytes_held: usize,
    /// Rows still waiting for their return, by the `seq` of their call event: returns,
    /// finishes and disconnects name the call they belong to (the engine pairs them), so the
    /// UI never matches question ids itself.
    open: HashMap<u64, u64>,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    /// Thread lanes by (connection, callee thread).
    pub(crate) lanes: BTreeMap<(ConnId, String), Lane>,
    /// The engine's per-method statistics (the same numbers the exit summary prints).
    pub(crate) stats: SharedStats,
    pub(crate) log: VecDeque<LogLine>,
    pub(crate) log_total: u64,
    pub(crate) problems: u64,
    /// Dropped before decoding (the relay's tap), from `dropped` events.
    pub(crate) dropped_tap: u64,
    pub(crate) calls_total: u64,
    /// Call times in the rate window.
    recent: VecDeque<u64>,
    pub(crate) start_unix_ns: Option<u64>,
    pub(crate) source: String,
    pub(crate) schemas: String,
    /// The newest event time seen.
    pub(crate) last_ns: u64,
}

impl State {
    pub(crate) fn new(history: usize) -> Self {
        State {
            history: history.max(1),
            calls: VecDeque::new(),
            next_id: 0,
            evicted: 0,
            bytes_held: 0,
            open: HashMap::new(),
            conns: BTreeMap::new(),
            lanes: BTreeMap::new(),
            stats: SharedStats::default(),
            log: VecDeque::new(),
            log_total: 0,
            problems: 0,
            dropped_tap: 0,
            calls_total: 0,
            recent: VecDeque::new(),
            start_unix_ns: None,
            source: String::new(),
            schemas: String::new(),
            last_ns: 0,
        }
    }

    /// The row with this id, if it is still in the ring.
    pub(crate) fn row(&self, id: u64) -> Option<&CallRow> {
        let first = self.calls.front()?.id;
        self.calls
            .get(usize::try_from(id.checked_sub(first)?).ok()?)
    }

    fn row_mut(&mut self, id: u64) -> Option<&mut CallRow> {
        let first = self.calls.front()?.id;
        self.calls
            .get_mut(usize::try_from(id.checked_sub(first)?).ok()?)
    }

    /// Pending calls (not returned, connection open).
    pub(crate) fn pending(&self) -> usize {
        self.open.len()
    }

    /// Pending calls the engine reported stuck.
    pub(crate) fn stuck(&self) -> usize {
        self.open_rows().filter(|r| r.stuck).count()
    }

    /// The pending calls' rows (still in the history), from the open-question table rather
    /// than a walk over the whole history.
    pub(crate) fn open_rows(&self) -> impl Iterator<Item = &CallRow> {
        self.open.values().filter_map(|&id| self.row(id))
    }

    /// Calls per second over the last few seconds before `now_ns`.
    pub(crate) fn rate(&self, now_ns: u64) -> f64 {
        let from = now_ns.saturating_sub(RATE_WINDOW_NS);
        let n = self.recent.iter().filter(|&&t| t >= from).count();
        let window = now_ns.clamp(1_000_000_000, RATE_WINDOW_NS);
        n as f64 * 1e9 / window as f64
    }

    /// A line of program output (or any text) for the log pane.
    pub(crate) fn log_line(&mut self, t_ns: u64, source: LogSource, text: String, problem: bool) {
        if self.log.len() == LOG_KEPT {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            t_ns,
            source,
            text,
            problem,
        });
        self.log_total += 1;
        if problem {
            self.problems += 1;
        }
    }

    fn note(&mut self, e: &Event, text: String, problem: bool) {
        let text = if e.conn == 0 {
            text
        } else {
            format!("#{} {text}", e.conn)
        };
        self.log_line(e.t_ns, LogSource::Mpspy, text, problem);
    }

    fn push_row(&mut self, mut row: CallRow) {
        row.id = self.next_id;
        self.next_id += 1;
        self.open.insert(row.seq, row.id);
        self.bytes_held += row.bytes;
        self.calls.push_back(row);
        self.calls_total += 1;
        self.evict();
    }

    /// Drops the oldest rows beyond the row and byte budgets (the newest always stays).
    fn evict(&mut self) {
        while self.calls.len() > 1
            && (self.calls.len() > self.history || self.bytes_held > BYTES_KEPT)
        {
            let Some(old) = self.calls.pop_front() else {
                break;
            };
            self.evicted += 1;
            self.bytes_held -= old.bytes + old.ret.as_ref().map_or(0, |r| r.bytes);
            if old.is_open() {
                self.open.retain(|_, id| *id != old.id);
            }
        }
    }

    /// Folds one event in.
    pub(crate) fn apply(&mut self, e: &Event) {
        self.last_ns = self.last_ns.max(e.t_ns);
        let dir = e.dir.unwrap_or(Direction::ClientToServer);
        match &e.kind {
            EventKind::Session {
                source,
                schemas,
                start_unix_ns,
                ..
            } => {
                self.source = source.clone();
                self.schemas = schemas.clone();
                self.start_unix_ns = *start_unix_ns;
            }
            EventKind::ConnOpened {
                label,
                client,
                server,
            } => {
                let conn = self.conn(e.conn);
                conn.label = label.clone();
                conn.client = client.clone();
                conn.server = server.clone();
                self.note(e, format!("connection opened: {label}"), false);
            }
            EventKind::ConnClosed {
                reason,
                pending_calls,
                live_caps,
            } => {
                let ids: Vec<u64> = pending_calls
                    .iter()
                    .filter_map(|p| self.open.remove(&p.call_seq))
                    .collect();
                for id in ids {
                    if let Some(r) = self.row_mut(id) {
                        r.ended_ns = Some(e.t_ns);
                        if r.status == Status::Pending {
                            r.status = Status::Disconnected;
                        }
                    }
                }
                let conn = self.conn(e.conn);
                conn.closed = Some((e.t_ns, reason.clone()));
                conn.pending_at_close = pending_calls.clone();
                conn.left_open = live_caps
                    .iter()
                    .map(|c| {
                        let known = conn.live.remove(&c.cap);
                        CapRow {
                            info: c.clone(),
                            created_ns: known.as_ref().map_or(e.t_ns, |k| k.created_ns),
                            destroyed_ns: known.and_then(|k| k.destroyed_ns),
                            released_ns: None,
                        }
                    })
                    .collect();
                conn.live.clear();
                let leaks = conn.left_open.iter().filter(|c| c.is_leak()).count();
                let text = match mpspy_engine::left::left_behind(reason, pending_calls, live_caps) {
                    Some(left) => format!("connection closed: {left}"),
                    None => format!("connection closed: {reason}"),
                };
                let problem = !pending_calls.is_empty() || leaks > 0;
                self.note(e, text, problem);
            }
            EventKind::Bootstrap { question, bytes } => {
                self.conn(e.conn).calls += 1;
                self.push_row(CallRow {
                    id: 0,
                    seq: e.seq,
                    t_ns: e.t_ns,
                    conn: e.conn,
                    dir,
                    question: *question,
                    method: "bootstrap".into(),
                    interface: String::new(),
                    target: "bootstrap".into(),
                    client_thread: None,
                    server_thread: None,
                    params: Value::Void,
                    cap_table: Vec::new(),
                    bytes: *bytes,
                    status: Status::Pending,
                    canceled_ns: None,
                    stuck: false,
                    injected: None,
                    ended_ns: None,
                    ret: None,
                });
            }
            EventKind::Call(c) => {
                self.conn(e.conn).calls += 1;
                self.recent.push_back(e.t_ns);
                while self
                    .recent
                    .front()
                    .is_some_and(|&t| t + RATE_WINDOW_NS < e.t_ns)
                {
                    self.recent.pop_front();
                }
                if let Some(thread) = &c.thread {
                    let lane = self.lanes.entry((e.conn, thread.clone())).or_default();
                    lane.calls += 1;
                    lane.last = (qualified(&c.interface, &c.method), e.t_ns);
                    if let Some(caller) = &c.callback_thread
                        && lane.callers.len() < CALLERS_KEPT
                        && !lane.callers.contains(caller)
                    {
                        lane.callers.push(caller.clone());
                    }
                }
                if c.method == "destroy"
                    && let Some(cap) = self.conn(e.conn).live.get_mut(&c.target)
                {
                    cap.info.destroyed = true;
                    cap.destroyed_ns.get_or_insert(e.t_ns);
                }
                self.push_row(CallRow {
                    id: 0,
                    seq: e.seq,
                    t_ns: e.t_ns,
                    conn: e.conn,
                    dir,
                    question: c.question,
                    method: qualified(&c.interface, &c.method),
                    interface: c.interface.clone(),
                    target: c.target.clone(),
                    client_thread: c.callback_thread.clone(),
                    server_thread: c.thread.clone(),
                    params: c.params.clone(),
                    cap_table: c.cap_table.clone(),
                    bytes: c.bytes,
                    status: Status::Pending,
                    canceled_ns: None,
                    stuck: false,
                    injected: None,
                    ended_ns: None,
                    ret: None,
                });
            }
            EventKind::Return(r) => {
                if let Some(id) = r.call_seq.and_then(|call| self.open.remove(&call))
                    && let Some(row) = self.row_mut(id)
                {
                    row.status = match r.outcome.as_str() {
                        "results" => Status::Ok,
                        "exception" => Status::Exception,
                        "canceled" => Status::Canceled,
                        other => {
                            if row.canceled_ns.is_some() {
                                Status::Canceled
                            } else {
                                Status::Other(other.to_string())
                            }
                        }
                    };
                    if row.server_thread.is_none() {
                        row.server_thread = r.thread.clone();
                    }
                    let bytes = r.bytes;
                    let lane = row.server_thread.clone().map(|t| (e.conn, t));
                    let busy = e.t_ns.saturating_sub(row.t_ns);
                    row.ret = Some(ReturnPart {
                        seq: e.seq,
                        t_ns: e.t_ns,
                        results: r.results.clone(),
                        exception: r.exception.clone(),
                        cap_table: r.cap_table.clone(),
                        bytes: r.bytes,
                    });
                    if let Some(lane) = lane.and_then(|k| self.lanes.get_mut(&k)) {
                        lane.busy_ns += busy;
                    }
                    self.bytes_held += bytes;
                    self.evict();
                }
            }
            EventKind::Finish {
                call_seq: Some(call),
                cancel: true,
                ..
            } => {
                if let Some(&id) = self.open.get(call)
                    && let Some(row) = self.row_mut(id)
                {
                    row.canceled_ns = Some(e.t_ns);
                    row.status = Status::Canceled;
                }
            }
            EventKind::CapCreated(c) => {
                self.conn(e.conn).live.insert(
                    c.cap.clone(),
                    CapRow {
                        info: c.clone(),
                        created_ns: e.t_ns,
                        destroyed_ns: None,
                        released_ns: None,
                    },
                );
            }
            EventKind::CapReleased { cap, .. } => {
                let conn = self.conn(e.conn);
                let mut row = conn.live.remove(&cap.cap).unwrap_or(CapRow {
                    info: cap.clone(),
                    created_ns: e.t_ns,
                    destroyed_ns: None,
                    released_ns: None,
                });
                row.info.destroyed |= cap.destroyed;
                row.released_ns = Some(e.t_ns);
                if conn.released.len() == RELEASED_KEPT {
                    conn.released.pop_front();
                }
                conn.released.push_back(row);
                conn.released_total += 1;
            }
            EventKind::Release { cap, remaining, .. } => {
                if let Some(c) = self.conn(e.conn).live.get_mut(cap) {
                    c.info.refs = *remaining;
                }
            }
            EventKind::Abort { exception } => {
                let who = match dir.sender() {
                    Side::Client => "client",
                    Side::Server => "server",
                };
                // Closing with `disconnected` is how some peers (capnp-rust) say goodbye.
                let problem = exception.kind != "disconnected";
                self.note(
                    e,
                    format!("{who} aborted: {} {}", exception.kind, exception.reason),
                    problem,
                );
            }
            EventKind::Undecodable {
                offset,
                len,
                reason,
                stopped,
                ..
            } => {
                let tail = if *stopped {
                    " (decoding of this direction stopped; bytes still flow)"
                } else {
                    ""
                };
                self.note(
                    e,
                    format!(
                        "undecodable {} bytes at offset {offset} {}: {reason}{tail}",
                        len,
                        dir.arrow()
                    ),
                    true,
                );
            }
            EventKind::SchemaMismatch {
                interface,
                method_id,
                schemas,
                likely,
                reason,
            } => {
                self.note(
                    e,
                    format!(
                        "schema mismatch: {interface} @{method_id} under {schemas}: {reason}; fits {}",
                        if likely.is_empty() {
                            "none".to_string()
                        } else {
                            likely.join(", ")
                        }
                    ),
                    true,
                );
            }
            EventKind::SchemaChosen { schemas, reason } => {
                self.note(e, format!("schemas: {schemas} ({reason})"), false);
            }
            EventKind::Unimplemented { which, .. } => {
                self.note(e, format!("peer did not understand a {which}"), true);
            }
            EventKind::Dropped { total, .. } => {
                self.dropped_tap = *total;
            }
            EventKind::Notice { level, text } => {
                let problem = *level == mpspy_schema::event::NoticeLevel::Warning;
                self.note(e, format!("mpspy: {text}"), problem);
            }
            EventKind::Snapshot { connections } => {
                let calls: usize = connections.iter().map(|c| c.pending.len()).sum();
                self.note(
                    e,
                    format!(
                        "snapshot: {calls} pending call(s) on {} connection(s)",
                        connections.len()
                    ),
                    false,
                );
                for c in connections {
                    for p in &c.pending {
                        let lane = p.thread.as_deref().unwrap_or("·");
                        let text = format!(
                            "  #{} q{} {} pending {} on {lane}",
                            c.conn,
                            p.question,
                            p.method,
                            format_ns(p.elapsed_ns)
                        );
                        self.note(e, text, false);
                    }
                }
            }
            EventKind::Stuck {
                call_seq,
                interface,
                method,
                question,
                thread,
                pending_ns,
                limit_ns,
                last_on_thread,
                ..
            } => {
                let mut text = format!(
                    "stuck {} (q{question}) pending {} (limit {})",
                    qualified(interface, method),
                    format_ns(*pending_ns),
                    format_ns(*limit_ns)
                );
                if let Some(t) = thread {
                    text.push_str(&format!(" on thread {t}"));
                }
                if let Some(last) = last_on_thread {
                    text.push_str(&format!("; thread last: {last}"));
                }
                self.note(e, text, true);
                if let Some(id) = self.open.get(call_seq).copied()
                    && let Some(row) = self.row_mut(id)
                {
                    row.stuck = true;
                }
            }
            EventKind::Injected { fault, call_seq } => {
                let what = match (&fault.method, fault.question) {
                    (Some(m), Some(q)) => format!(" {m} (q{q})"),
                    _ => String::new(),
                };
                self.note(
                    e,
                    format!("INJECTED {}{what}: {}", fault.kind.as_str(), fault.detail),
                    true,
                );
                if let Some(id) = call_seq.and_then(|s| self.open.get(&s).copied())
                    && let Some(row) = self.row_mut(id)
                {
                    row.injected = Some((fault.kind, fault.detail.clone()));
                }
            }
            EventKind::Lint(l) => {
                // Info lints (a long poll cut by a disconnect) are often deliberate: shown,
                // not counted as problems.
                let problem = l.severity != mpspy_schema::lint::Severity::Info;
                self.note(
                    e,
                    format!("lint {} {}: {}", l.severity, l.id, l.message),
                    problem,
                );
            }
            _ => {}
        }
    }

    fn conn(&mut self, id: ConnId) -> &mut Conn {
        self.conns.entry(id).or_insert_with(|| Conn {
            id,
            label: format!("connection {id}"),
            client: None,
            server: None,
            closed: None,
            live: BTreeMap::new(),
            released: VecDeque::new(),
            released_total: 0,
            left_open: Vec::new(),
            pending_at_close: Vec::new(),
            calls: 0,
        })
    }

    /// Program names seen on connections (for the header).
    pub(crate) fn programs(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in self.conns.values() {
            for p in [&c.client, &c.server].into_iter().flatten() {
                if !names.contains(&p.name) {
                    names.push(p.name.clone());
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    /// An injected fault marks its call's status and writes a Log line; `status:injected`
    /// finds the call.
    #[test]
    fn an_injected_fault_marks_its_call_and_the_log() {
        let events = fixture::session();
        let call = events
            .iter()
            .find(|e| matches!(&e.kind, EventKind::Call(c) if c.method == "echo"))
            .unwrap();
        let ret = events
            .iter()
            .position(|e| matches!(&e.kind, EventKind::Return(r) if r.call_seq == Some(call.seq)))
            .unwrap();
        let mut s = State::new(100);
        for e in &events[..ret] {
            s.apply(e);
        }
        s.apply(&Event {
            seq: 10_000,
            t_ns: call.t_ns,
            conn: call.conn,
            dir: call.dir,
            kind: EventKind::Injected {
                fault: mpspy_schema::event::Fault {
                    kind: FaultKind::Delay,
                    method: Some("Echo.echo".into()),
                    question: Some(0),
                    detail: "held 5s before forwarding".into(),
                },
                call_seq: Some(call.seq),
            },
        });
        for e in &events[ret..] {
            s.apply(e);
        }
        let row = s.calls.iter().find(|r| r.seq == call.seq).unwrap();
        assert_eq!(row.status_text(), "ok +delay");
        assert!(
            s.log
                .iter()
                .any(|l| l.problem && l.text.contains("INJECTED delay Echo.echo (q0)")),
            "{:?}",
            s.log
        );
        let f = crate::filter::Filter::parse("status:injected").unwrap();
        let shown: Vec<_> = s.calls.iter().filter(|r| f.matches(r, 0)).collect();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].seq, call.seq);
    }

    /// A stuck report marks its call: counted while it is pending, found by `status:stuck`
    /// after it returned too.
    #[test]
    fn a_stuck_call_is_counted_while_pending_and_found_by_its_filter() {
        let events = fixture::session();
        let call = events
            .iter()
            .find(|e| matches!(&e.kind, EventKind::Call(c) if c.method == "echo"))
            .unwrap();
        let ret = events
            .iter()
            .position(|e| matches!(&e.kind, EventKind::Return(r) if r.call_seq == Some(call.seq)))
            .unwrap();
        let mut s = State::new(100);
        for e in &events[..ret] {
            s.apply(e);
        }
        assert_eq!(s.stuck(), 0);
        s.apply(&Event {
            seq: 10_000,
            t_ns: call.t_ns + 11_000_000_000,
            conn: call.conn,
            dir: call.dir,
            kind: EventKind::Stuck {
                call_seq: call.seq,
                interface: "Echo".into(),
                method: "echo".into(),
                question: 0,
                thread: None,
                pending_ns: 11_000_000_000,
                limit_ns: 10_000_000_000,
                last_on_thread: None,
            },
        });
        assert_eq!(s.stuck(), 1);
        s.apply(&events[ret]);
        assert_eq!(s.stuck(), 0, "returned: no longer pending");
        let f = crate::filter::Filter::parse("status:stuck").unwrap();
        let shown: Vec<_> = s.calls.iter().filter(|r| f.matches(r, 0)).collect();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].seq, call.seq);
    }

    #[test]
    fn call_and_return_fold_into_one_row() {
        let mut s = State::new(100);
        for e in fixture::session() {
            s.apply(&e);
        }
        let echo: Vec<&CallRow> = s.calls.iter().filter(|r| r.method == "Echo.echo").collect();
        assert_eq!(echo.len(), 3);
        assert!(echo.iter().all(|r| r.status == Status::Ok));
        assert_eq!(echo[0].latency_ns(0), 120_000);
        assert_eq!(echo[0].client_thread.as_deref(), Some("pyclient-main"));
        // The pending waitTipChanged was cut by the disconnect.
        let wait = s
            .calls
            .iter()
            .find(|r| r.method == "Mining.waitTipChanged")
            .unwrap();
        assert_eq!(wait.status, Status::Disconnected);
        assert_eq!(s.pending(), 0);
        let conn = &s.conns[&2];
        assert_eq!(conn.left_open.len(), 2);
        assert!(conn.left_open.iter().all(|c| !c.info.destroyed));
        // Only BlockTemplate has `destroy`: Mining is released by the disconnect, not leaked.
        let leaks: Vec<&str> = conn
            .left_open
            .iter()
            .filter(|c| c.is_leak())
            .map(|c| c.info.cap.as_str())
            .collect();
        assert_eq!(leaks, ["BlockTemplate#3"]);
        assert!(conn.live.is_empty());
        // Echo#1 was destroyed, then released.
        assert!(
            conn.released
                .iter()
                .any(|c| c.info.cap == "Echo#1" && c.info.destroyed)
        );
    }

    #[test]
    fn a_stuck_call_is_a_problem_line_in_the_log() {
        let mut s = State::new(100);
        s.apply(&Event {
            seq: 7,
            t_ns: 12_000_000_000,
            conn: 2,
            dir: Some(Direction::ClientToServer),
            kind: EventKind::Stuck {
                call_seq: 5,
                interface: "Mining".into(),
                method: "createNewBlock".into(),
                question: 4,
                thread: Some("worker".into()),
                pending_ns: 11_000_000_000,
                limit_ns: 10_000_000_000,
                last_on_thread: Some("Mining.getTip returned 11.50s ago".into()),
            },
        });
        let line = s.log.back().unwrap();
        assert!(line.problem);
        assert_eq!(
            line.text,
            "#2 stuck Mining.createNewBlock (q4) pending 11.00s (limit 10.00s) on thread worker; \
             thread last: Mining.getTip returned 11.50s ago"
        );
        assert_eq!(s.problems, 1);
    }

    #[test]
    fn lanes_count_calls_busy_time_and_callers_per_callee_thread() {
        let mut s = State::new(100);
        for e in fixture::session() {
            s.apply(&e);
        }
        let lane = &s.lanes[&(2, "b-capnp-loop".to_string())];
        // makeEcho, 3 echoes, destroy, makeMining, getTip, createNewBlock, getBlockHeader,
        // checkBlock, waitTipChanged.
        assert_eq!(lane.calls, 11);
        assert_eq!(lane.callers, ["pyclient-main"]);
        assert_eq!(lane.last.0, "Mining.waitTipChanged");
        // Returned calls only: 200+120+150+180+90+150+410 µs, 13 ms, 250 µs, 700 µs.
        assert_eq!(lane.busy_ns, 15_250_000);
        assert_eq!(s.lanes[&(1, "b-capnp-loop".to_string())].calls, 2);
    }

    #[test]
    fn ring_keeps_history_rows_and_counts_the_rest() {
        let mut s = State::new(4);
        for e in fixture::session() {
            s.apply(&e);
        }
        assert_eq!(s.calls.len(), 4);
        assert_eq!(s.evicted, s.calls_total - 4);
        // A row id from before the ring start is gone, not aliased.
        assert!(s.row(0).is_none());
        let last = s.calls.back().unwrap().id;
        assert_eq!(s.row(last).unwrap().id, last);
    }

    /// The per-method numbers are the engine's: the UI folds none of its own, so what it
    /// shows cannot drift from the exit summary when events are dropped on the way to it.
    #[test]
    fn method_statistics_are_the_engines_not_folded_from_the_events_shown() {
        let events = fixture::session();
        let mut s = State::new(100);
        for e in &events {
            s.apply(e);
        }
        assert!(s.stats.lock().methods.is_empty());
        // Only half the events reach the UI; the engine saw them all.
        let engine = SharedStats::from_events(&events);
        let mut s = State::new(100);
        s.stats = engine.clone();
        for e in &events[..events.len() / 2] {
            s.apply(e);
        }
        assert_eq!(s.stats.lock().methods["Echo.echo"].count, 3);
        assert_eq!(
            s.stats.lock().methods["Mining.waitTipChanged"].unanswered,
            1
        );
    }

    #[test]
    fn ring_is_bounded_by_bytes_too() {
        let mut s = State::new(1_000_000);
        let big = fixture::session()
            .into_iter()
            .find(|e| matches!(e.kind, EventKind::Call(_)))
            .unwrap();
        for i in 0..40u32 {
            let mut e = big.clone();
            e.seq = u64::from(i);
            if let EventKind::Call(c) = &mut e.kind {
                c.question = i;
                c.bytes = 16 << 20;
            }
            s.apply(&e);
        }
        assert_eq!(s.calls.len(), BYTES_KEPT / (16 << 20));
        assert_eq!(s.evicted, 40 - s.calls.len() as u64);
        // Evicted pending calls are forgotten, not leaked in the open table.
        assert_eq!(s.pending(), s.calls.len());
    }

    #[test]
    fn rate_counts_calls_in_the_window() {
        let mut s = State::new(100);
        for e in fixture::session() {
            s.apply(&e);
        }
        let now = s.last_ns;
        assert!(s.rate(now) > 0.0);
        assert_eq!(s.rate(now + 60_000_000_000), 0.0);
    }
}
