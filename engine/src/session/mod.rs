//! Per-connection RPC state: pairs calls with returns, tracks both sides' export tables so every
//! capability has a stable name (`Mining#4`), resolves `Proxy.Context` threads to names, and
//! picks the schema set that fits the traffic.
//!
//! This is the only place that turns frames into events; live capture, recordings and raw
//! captures all feed it, so they yield the same events.

// Every frame looks up questions and exports by small integer keys: foldhash is several times
// faster than std's SipHash there, and the sessions it keys come from local peers.
use foldhash::{HashMap, HashSet};
use std::collections::VecDeque;
use std::sync::Arc;

use mpspy_schema::SchemaSet;
use mpspy_schema::decode::{CapUse, Lookup, Walker};
use mpspy_schema::event::{
    CallEvent, CapInfo, ConnId, ConnPending, Direction, Event, EventKind, Lint, Peer, PendingCall,
    ReturnEvent, Side, qualified,
};
use mpspy_schema::rpc::{self, CapDescriptor, MessageTarget, Outcome, Payload, Rpc};
use mpspy_schema::sets::{self, Choice, Shape};
use mpspy_schema::value::{RawValue, Value, hex};
use mpspy_schema::wire::{Message, Target};

use crate::framing::HEX_EXCERPT;
use crate::input::{BadBytes, Tapped};
use crate::lint::{LintConfig, LintId, PollRate};
use crate::stats::{LONG_POLL, SharedStats, Stats, format_ns};

/// libmultiprocess's interface whose `makeThread(name)` names server threads, found by name in
/// whatever schema set decodes the call (ids differ between a user's copy of `proxy.capnp` and
/// the built-in one only if the file was edited, names do not).
const THREAD_MAP: (&str, &str) = ("ThreadMap", "makeThread");

/// `ThreadMap.makePool` (libmultiprocess v11+): after it, Context calls without a thread run on
/// the pool, so a null `Context.thread` is no longer a mistake.
const MAKE_POOL: (&str, &str) = ("ThreadMap", "makePool");

/// How often frames look for stuck calls, in session time.
const STUCK_SCAN_NS: u64 = 100_000_000;

/// Which schemas to decode with.
#[derive(Debug, Clone)]
pub struct SchemaConfig {
    /// The built-in set, or `auto`.
    pub choice: Choice,
    /// User sets, searched before the built-in one.
    pub user: Vec<Arc<SchemaSet>>,
    /// Lint thresholds and allow list: part of how traffic is read, so every source that
    /// builds a session from the command line's schema options gets them too.
    pub lints: LintConfig,
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            choice: Choice::Auto,
            user: Vec::new(),
            lints: LintConfig::default(),
        }
    }
}

/// All connections of one session, and the event sequence.
#[derive(Debug)]
pub struct Session {
    config: SchemaConfig,
    builtin: Vec<Arc<SchemaSet>>,
    conns: HashMap<ConnId, Conn>,
    /// Connections that ended: their state is freed, only the id is kept so that a stray
    /// frame after the end is reported rather than taken for a new connection.
    closed: HashSet<ConnId>,
    seq: u64,
    /// Per-method statistics of every event emitted, shared with whoever shows them (the UI
    /// reads them while the session runs, the summary at its end).
    stats: SharedStats,
    out: Vec<Event>,
    /// False for sources without timestamps (raw captures): latencies are then unknown.
    timed: bool,
    dropped_total: u64,
    /// Session time from which a frame looks for stuck calls again.
    next_stuck_scan_ns: u64,
}

#[derive(Debug)]
struct Question {
    /// `seq` of the call's (or bootstrap's) event, which returns and finishes refer to.
    call_seq: u64,
    interface: String,
    method: String,
    interface_id: u64,
    method_id: u16,
    results_struct: Option<u64>,
    sent_ns: u64,
    returned: bool,
    finished: bool,
    /// Server thread the call runs on, by name.
    thread: Option<String>,
    /// For `makeThread(name)`: the name, given to the Thread it returns.
    thread_name: Option<String>,
    /// Interfaces learnt from calls pipelined on this answer, by pointer path.
    pipelined: Vec<(Vec<u16>, u64)>,
    /// Capabilities in the answer, by pointer path (host side, export id).
    answer_caps: Vec<AnswerCap>,
    /// The export called, when known (host side, export id).
    target: Option<(Side, u32)>,
    /// The server thread's identity (its capability's name, or the promise of the
    /// `makeThread` answer), for `thread-busy`: names given to `makeThread` need not be unique.
    thread_key: Option<String>,
    /// The identity of its `Context.callbackThread` (as `thread_key`): a call coming back on
    /// that thread while this one is pending is a callback it caused.
    callback_key: Option<String>,
    /// How long it may be pending before it is stuck (`None`: it may wait forever).
    limit_ns: Option<u64>,
    /// Its `stuck` event was emitted: one per call.
    stuck: bool,
}

/// One call a server thread ran, for what a `stuck` event says the thread last did.
#[derive(Debug, Clone)]
struct Ran {
    call_seq: u64,
    /// `Interface.method`.
    method: String,
    started_ns: u64,
    returned_ns: Option<u64>,
}

/// The last calls sent to one server thread, oldest first. A few are kept so that a stuck call
/// can still name the call sent to its thread just before it while later calls queue behind.
#[derive(Debug, Default)]
struct Lane {
    recent: VecDeque<Ran>,
}

/// Calls kept per lane: a client queues at most a handful on one thread.
const LANE_HISTORY: usize = 8;

impl Lane {
    fn sent(&mut self, ran: Ran) {
        if self.recent.len() == LANE_HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(ran);
    }

    fn returned(&mut self, call_seq: u64, t_ns: u64) {
        if let Some(r) = self.recent.iter_mut().find(|r| r.call_seq == call_seq) {
            r.returned_ns = Some(t_ns);
        }
    }

    /// What the thread last did before call `call_seq`, as of `now_ns`: the call sent to it
    /// just before, which either returned (the thread went idle, so the stuck call itself is
    /// what hangs) or is still running (the stuck call waits behind it). Calls sent after it
    /// are not counted: they queue behind it.
    fn before(&self, call_seq: u64, now_ns: u64) -> Option<String> {
        let r = self.recent.iter().rev().find(|r| r.call_seq < call_seq)?;
        Some(match r.returned_ns {
            Some(t) => format!(
                "{} returned {} ago",
                r.method,
                format_ns(now_ns.saturating_sub(t))
            ),
            None => format!(
                "{} still running after {}",
                r.method,
                format_ns(now_ns.saturating_sub(r.started_ns))
            ),
        })
    }
}

/// A capability inside an answer. The answer keeps the object alive after the importer releases
/// its export entry, and the export id may then be reused for another object, so the answer
/// remembers the capability's name, not just its id.
#[derive(Debug, Clone)]
struct AnswerCap {
    path: Vec<u16>,
    host: Side,
    id: u32,
    name: String,
    thread_name: Option<String>,
}

impl Conn {
    /// The calls sent on this connection and not answered yet, as of `t_ns`, oldest first.
    fn pending_calls(&self, t_ns: u64) -> Vec<PendingCall> {
        let mut pending: Vec<(u64, PendingCall)> = self
            .questions
            .iter()
            .filter(|(_, q)| !q.returned)
            .map(|((dir, id), q)| {
                (
                    q.sent_ns,
                    PendingCall {
                        call_seq: q.call_seq,
                        dir: *dir,
                        question: *id,
                        method: qualified(&q.interface, &q.method),
                        elapsed_ns: t_ns.saturating_sub(q.sent_ns),
                        thread: q.thread.clone(),
                    },
                )
            })
            .collect();
        pending.sort_by_key(|(sent, p)| (*sent, p.call_seq));
        pending.into_iter().map(|(_, p)| p).collect()
    }

    /// The capability at `path` in the answer to `dir`'s question, with its export entry if that
    /// entry still holds the same object.
    fn answer_cap(
        &self,
        dir: Direction,
        question: u32,
        path: &[u16],
    ) -> Option<(&AnswerCap, Option<&Export>)> {
        let q = self.questions.get(&(dir, question))?;
        let a = q.answer_caps.iter().find(|a| a.path == path)?;
        let e = self
            .exports
            .get(&(a.host, a.id))
            .filter(|e| e.name == a.name);
        Some((a, e))
    }
}

#[derive(Debug)]
struct Export {
    name: String,
    interface: Option<u64>,
    refs: u32,
    created_ns: u64,
    destroyed: bool,
    /// A `destroy` call was sent to it (its Return may not have come yet).
    destroy_called: bool,
    thread_name: Option<String>,
}

#[derive(Debug)]
struct Conn {
    questions: HashMap<(Direction, u32), Question>,
    exports: HashMap<(Side, u32), Export>,
    next_cap: u32,
    /// Built-in sets that still fit this connection, most preferred first.
    candidates: Vec<Arc<SchemaSet>>,
    mismatches_reported: Vec<(u64, u16)>,
    /// Directions in which `ThreadMap.makePool` was called (`null-thread` does not apply).
    pooled: Vec<Direction>,
    /// Exports whose last reference was released and whose id was not reused since, with their
    /// names (`call-after-release`).
    released: HashMap<(Side, u32), String>,
    /// Recent calls per long-poll method (`polling-storm`).
    polls: HashMap<&'static str, PollRate>,
    /// Per-method lints already reported on this connection: one report per method, however
    /// often a client repeats the mistake.
    linted: HashSet<(LintId, u64, u16)>,
    /// Recent calls per server thread (by its identity, as `Question::thread_key`).
    lanes: HashMap<String, Lane>,
}

impl Session {
    /// A session decoding with `config`.
    pub fn new(config: SchemaConfig) -> Self {
        let builtin = match &config.choice {
            Choice::Auto => sets::BUILTIN
                .iter()
                .filter_map(|n| sets::builtin(n))
                .collect(),
            Choice::Fixed(n) => sets::builtin(n).into_iter().collect(),
        };
        Session {
            config,
            builtin,
            conns: HashMap::default(),
            closed: HashSet::default(),
            seq: 0,
            stats: SharedStats::default(),
            out: Vec::new(),
            timed: true,
            dropped_total: 0,
            next_stuck_scan_ns: 0,
        }
    }

    /// Reports lints with `config`'s thresholds and allow list instead of those of the
    /// [`SchemaConfig`].
    #[must_use]
    pub fn with_lints(mut self, config: LintConfig) -> Self {
        self.config.lints = config;
        self
    }

    /// Emits `lint` unless it is allowed.
    fn lint(&mut self, conn: ConnId, dir: Option<Direction>, t_ns: u64, lint: Lint) {
        if self.config.lints.enabled(lint.id) {
            self.emit(conn, dir, t_ns, EventKind::Lint(lint));
        }
    }

    /// Marks the source as having no timestamps, so no latency is reported and no call is
    /// ever stuck.
    pub fn set_untimed(&mut self) {
        self.timed = false;
    }

    /// Emits a `snapshot` event: every pending call of every open connection, with its lane,
    /// as of `t_ns` (a live mpspy does this on SIGUSR1).
    pub fn snapshot(&mut self, t_ns: u64) {
        let mut connections: Vec<ConnPending> = self
            .conns
            .iter()
            .map(|(&conn, c)| ConnPending {
                conn,
                pending: c.pending_calls(t_ns),
            })
            .filter(|c| !c.pending.is_empty())
            .collect();
        connections.sort_by_key(|c| c.conn);
        self.emit(0, None, t_ns, EventKind::Snapshot { connections });
    }

    /// Whether some pending call could still become stuck, so a live source should call
    /// [`tick`](Self::tick) while nothing else happens (an idle session needs no timer).
    pub fn may_become_stuck(&self) -> bool {
        self.timed
            && self.conns.values().any(|c| {
                c.questions
                    .values()
                    .any(|q| !q.returned && !q.stuck && q.limit_ns.is_some())
            })
    }

    /// Time has reached `now_ns` (on the session's clock, as frames' `t_ns`): emits a `stuck`
    /// event for every call pending longer than its limit that was not reported yet. The
    /// engine has no clock of its own, so a live source calls this on a timer; frames call it
    /// too, so replays report the stuck calls a live run would have.
    pub fn tick(&mut self, now_ns: u64) {
        if !self.timed {
            return;
        }
        let mut stuck = Vec::new();
        for (&conn, c) in &mut self.conns {
            for (&(dir, question), q) in &mut c.questions {
                let pending_ns = now_ns.saturating_sub(q.sent_ns);
                let Some(limit_ns) = q.limit_ns else { continue };
                if q.returned || q.stuck || pending_ns <= limit_ns {
                    continue;
                }
                q.stuck = true;
                let last_on_thread = q
                    .thread_key
                    .as_ref()
                    .and_then(|k| c.lanes.get(k))
                    .and_then(|lane| lane.before(q.call_seq, now_ns));
                stuck.push((
                    q.call_seq,
                    conn,
                    dir,
                    EventKind::Stuck {
                        call_seq: q.call_seq,
                        interface: q.interface.clone(),
                        method: q.method.clone(),
                        question,
                        thread: q.thread.clone(),
                        pending_ns,
                        limit_ns,
                        last_on_thread,
                    },
                ));
            }
        }
        // Hash maps have no order; calls are reported in the order they were made.
        stuck.sort_by_key(|(call_seq, ..)| *call_seq);
        for (_, conn, dir, kind) in stuck {
            self.emit(conn, Some(dir), now_ns, kind);
        }
    }

    /// Takes the events produced so far.
    pub fn drain(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.out)
    }

    /// The per-method statistics of everything emitted so far; the handle stays live.
    pub fn stats(&self) -> SharedStats {
        self.stats.clone()
    }

    /// Emits an event (sources use this for session-wide events such as `dropped`).
    pub fn emit(&mut self, conn: ConnId, dir: Option<Direction>, t_ns: u64, kind: EventKind) {
        if Stats::counts(&kind) {
            self.stats.fold(&kind);
        }
        self.out.push(Event {
            seq: self.seq,
            t_ns,
            conn,
            dir,
            kind,
        });
        self.seq += 1;
    }

    /// The session header event.
    pub fn start(&mut self, source: &str, start_unix_ns: Option<u64>) {
        let schemas = self.config.choice.to_string();
        self.emit(
            0,
            None,
            0,
            EventKind::Session {
                tool: format!("mpspy {}", env!("CARGO_PKG_VERSION")),
                source: source.to_string(),
                schemas,
                start_unix_ns,
            },
        );
    }

    /// A new connection.
    pub fn open(
        &mut self,
        conn: ConnId,
        t_ns: u64,
        label: &str,
        client: Option<Peer>,
        server: Option<Peer>,
    ) {
        self.conns.insert(
            conn,
            Conn {
                questions: HashMap::default(),
                exports: HashMap::default(),
                next_cap: 0,
                candidates: self.builtin.clone(),
                mismatches_reported: Vec::new(),
                pooled: Vec::new(),
                released: HashMap::default(),
                polls: HashMap::default(),
                linted: HashSet::default(),
                lanes: HashMap::default(),
            },
        );
        self.closed.remove(&conn);
        self.emit(
            conn,
            None,
            t_ns,
            EventKind::ConnOpened {
                label: label.to_string(),
                client,
                server,
            },
        );
    }

    /// Bytes of one direction that could not be decoded (they were forwarded anyway).
    pub fn undecodable(&mut self, conn: ConnId, dir: Direction, t_ns: u64, bad: BadBytes) {
        self.emit(
            conn,
            Some(dir),
            t_ns,
            EventKind::Undecodable {
                offset: bad.offset,
                len: bad.len,
                reason: bad.reason,
                hex: bad.hex,
                stopped: bad.stopped,
            },
        );
    }

    /// The connection ended: reports what was still pending or alive.
    pub fn close(&mut self, conn: ConnId, t_ns: u64, reason: &str) {
        let sets = self.sets_for(conn);
        let refs: Vec<&SchemaSet> = sets.iter().map(|s| s.as_ref()).collect();
        let lookup = Lookup::new(&refs);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.closed.insert(conn);
        let mut pending = c.pending_calls(t_ns);
        pending.sort_by_key(|p| (p.dir, p.question));
        let mut live: Vec<CapInfo> = c
            .exports
            .iter()
            .map(|(&(host, id), e)| cap_info(host, id, e, &lookup))
            .collect();
        live.sort_by_key(|a| (a.host, a.export_id));
        // Lints first, so `conn_closed` stays the connection's last event.
        for p in pending
            .iter()
            .filter(|p| LONG_POLL.contains(&p.method.as_str()))
        {
            let mut l = Lint::new(
                LintId::LongPollAtDisconnect,
                format!(
                    "{} (q{}) was still waiting after {} when the connection closed ({reason})",
                    p.method,
                    p.question,
                    crate::stats::format_ns(p.elapsed_ns)
                ),
            );
            l.call_seq = Some(p.call_seq);
            l.method = Some(p.method.clone());
            self.lint(conn, Some(p.dir), t_ns, l);
        }
        // A destroy on its way frees the object: not a leak.
        for cap in live.iter().filter(|a| crate::left::never_destroyed(a)) {
            let mut l = Lint::new(
                LintId::AliveAtDisconnect,
                format!(
                    "{} was never destroyed: alive with {} reference(s) when the connection \
                     closed ({reason})",
                    cap.cap, cap.refs
                ),
            );
            l.cap = Some(cap.cap.clone());
            self.lint(conn, None, t_ns, l);
        }
        self.emit(
            conn,
            None,
            t_ns,
            EventKind::ConnClosed {
                reason: reason.to_string(),
                pending_calls: pending,
                live_caps: live,
            },
        );
    }

    fn lookup_name(&self, conn: ConnId, interface: Option<u64>) -> Option<String> {
        let id = interface?;
        let sets = self.sets_for(conn);
        let refs: Vec<&SchemaSet> = sets.iter().map(|s| s.as_ref()).collect();
        Lookup::new(&refs).interface_name(id).map(str::to_string)
    }

    /// User sets, then the connection's preferred built-in set.
    fn sets_for(&self, conn: ConnId) -> Vec<Arc<SchemaSet>> {
        let mut v = self.config.user.clone();
        if let Some(first) = self.conns.get(&conn).and_then(|c| c.candidates.first()) {
            v.push(first.clone());
        } else if let Some(first) = self.builtin.first() {
            v.push(first.clone());
        }
        v
    }

    /// Applies one item from a source: the single entry point live capture, recordings and
    /// tests share.
    pub fn apply(&mut self, item: &Tapped) {
        match item {
            Tapped::Opened {
                conn,
                t_ns,
                label,
                client,
                server,
            } => self.open(*conn, *t_ns, label, client.clone(), server.clone()),
            Tapped::Frame {
                conn,
                dir,
                t_ns,
                offset,
                bytes,
            } => self.frame(*conn, *dir, *t_ns, *offset, bytes),
            Tapped::Bad {
                conn,
                dir,
                t_ns,
                bad,
            } => self.undecodable(*conn, *dir, *t_ns, bad.clone()),
            Tapped::Closed { conn, t_ns, reason } => self.close(*conn, *t_ns, reason),
            Tapped::Notice { t_ns, level, text } => self.emit(
                0,
                None,
                *t_ns,
                EventKind::Notice {
                    level: *level,
                    text: text.clone(),
                },
            ),
            Tapped::Injected {
                conn,
                dir,
                t_ns,
                fault,
                frame,
            } => self.injected(*conn, *dir, *t_ns, fault, frame.as_deref()),
            Tapped::Dropped { t_ns, count } => {
                self.dropped_total += count;
                let total = self.dropped_total;
                self.emit(
                    0,
                    None,
                    *t_ns,
                    EventKind::Dropped {
                        count: *count,
                        total,
                    },
                );
            }
        }
    }

    /// A fault mpspy injected: the event (naming the call it concerns, still pending), then the
    /// answer mpspy sent in the callee's place, if any, as the caller received it.
    fn injected(
        &mut self,
        conn: ConnId,
        dir: Direction,
        t_ns: u64,
        fault: &mpspy_schema::event::Fault,
        frame: Option<&[u8]>,
    ) {
        let call_seq = fault.question.and_then(|q| {
            self.conns
                .get(&conn)
                .and_then(|c| c.questions.get(&(dir, q)))
                .map(|q| q.call_seq)
        });
        self.emit(
            conn,
            Some(dir),
            t_ns,
            EventKind::Injected {
                fault: fault.clone(),
                call_seq,
            },
        );
        if let Some(bytes) = frame {
            // Its stream offset is unknown (it was not read from a socket); offsets only place
            // undecodable bytes, and this frame is mpspy's own.
            self.frame(conn, dir.reverse(), t_ns, 0, bytes);
        }
    }

    /// One complete frame in direction `dir`.
    pub fn frame(&mut self, conn: ConnId, dir: Direction, t_ns: u64, offset: u64, bytes: &[u8]) {
        // Before the frame: a return arriving now ends a call that was stuck until now. Pending
        // calls are looked at most every STUCK_SCAN_NS of session time, not on every frame
        // (limits are seconds; the scan walks every pending question).
        if t_ns >= self.next_stuck_scan_ns {
            self.next_stuck_scan_ns = t_ns.saturating_add(STUCK_SCAN_NS);
            self.tick(t_ns);
        }
        if self.closed.contains(&conn) {
            let bad = BadBytes {
                offset,
                len: bytes.len(),
                reason: "frame after the connection closed".into(),
                hex: hex(&bytes[..bytes.len().min(HEX_EXCERPT)]),
                stopped: false,
            };
            self.undecodable(conn, dir, t_ns, bad);
            return;
        }
        if !self.conns.contains_key(&conn) {
            self.open(conn, t_ns, &format!("connection {conn}"), None, None);
        }
        let bad = |e: mpspy_schema::wire::WireError| BadBytes {
            offset,
            len: bytes.len(),
            reason: e.to_string(),
            hex: hex(&bytes[..bytes.len().min(HEX_EXCERPT)]),
            stopped: false,
        };
        let msg = match Message::parse(bytes) {
            Ok((m, _)) => m,
            Err(e) => {
                self.undecodable(conn, dir, t_ns, bad(e));
                return;
            }
        };
        let rpc = match rpc::decode(&msg) {
            Ok(r) => r,
            Err(e) => {
                self.undecodable(conn, dir, t_ns, bad(e));
                return;
            }
        };
        self.message(conn, dir, t_ns, bytes.len(), rpc);
    }

    fn message(&mut self, conn: ConnId, dir: Direction, t_ns: u64, bytes: usize, rpc: Rpc<'_>) {
        let ev = Some(dir);
        match rpc {
            Rpc::Bootstrap { question } => {
                let c = self.conns.get_mut(&conn).expect("conn exists");
                c.questions.insert(
                    (dir, question),
                    Question {
                        // The bootstrap event is the next one emitted.
                        call_seq: self.seq,
                        interface: String::new(),
                        method: "bootstrap".into(),
                        interface_id: 0,
                        method_id: 0,
                        results_struct: None,
                        sent_ns: t_ns,
                        returned: false,
                        finished: false,
                        thread: None,
                        thread_name: None,
                        pipelined: Vec::new(),
                        answer_caps: Vec::new(),
                        target: None,
                        thread_key: None,
                        callback_key: None,
                        limit_ns: Some(self.config.lints.stuck_after_ns),
                        stuck: false,
                    },
                );
                self.emit(conn, ev, t_ns, EventKind::Bootstrap { question, bytes });
            }
            Rpc::Call(call) => self.call(conn, dir, t_ns, bytes, call),
            Rpc::Return(ret) => self.ret(conn, dir, t_ns, bytes, ret),
            Rpc::Finish {
                question,
                release_result_caps,
            } => {
                let c = self.conns.get_mut(&conn).expect("conn exists");
                let (call_seq, method, cancel) = match c.questions.get_mut(&(dir, question)) {
                    Some(q) => {
                        q.finished = true;
                        let m = qualified(&q.interface, &q.method);
                        let cancel = !q.returned;
                        let call_seq = q.call_seq;
                        if q.returned {
                            c.questions.remove(&(dir, question));
                        }
                        (Some(call_seq), Some(m), cancel)
                    }
                    None => (None, None, false),
                };
                self.emit(
                    conn,
                    ev,
                    t_ns,
                    EventKind::Finish {
                        question,
                        call_seq,
                        method,
                        release_result_caps,
                        cancel,
                    },
                );
            }
            Rpc::Release { id, count } => {
                // The sender drops references to an export of the receiver.
                let host = dir.reverse().sender();
                let c = self.conns.get_mut(&conn).expect("conn exists");
                let (name, remaining, gone) = match c.exports.get_mut(&(host, id)) {
                    Some(e) => {
                        e.refs = e.refs.saturating_sub(count);
                        (e.name.clone(), e.refs, e.refs == 0)
                    }
                    None => (format!("export {id} of {host:?}").to_lowercase(), 0, false),
                };
                self.emit(
                    conn,
                    ev,
                    t_ns,
                    EventKind::Release {
                        id,
                        count,
                        cap: name,
                        remaining,
                    },
                );
                if gone {
                    let sets = self.sets_for(conn);
                    let c = self.conns.get_mut(&conn).expect("conn exists");
                    if let Some(e) = c.exports.remove(&(host, id)) {
                        c.released.insert((host, id), e.name.clone());
                        let refs: Vec<&SchemaSet> = sets.iter().map(|s| s.as_ref()).collect();
                        let info = cap_info(host, id, &e, &Lookup::new(&refs));
                        let lifetime_ns = t_ns.saturating_sub(e.created_ns);
                        let leak = info.destroyable && !e.destroyed && !e.destroy_called;
                        let name = info.cap.clone();
                        self.emit(
                            conn,
                            ev,
                            t_ns,
                            EventKind::CapReleased {
                                cap: info,
                                lifetime_ns,
                            },
                        );
                        if leak {
                            let mut l = Lint::new(
                                LintId::ReleasedWithoutDestroy,
                                format!(
                                    "{name} was released without a destroy call (libmultiprocess \
                                     clients call destroy, wait for its return, then release)"
                                ),
                            );
                            l.cap = Some(name);
                            self.lint(conn, ev, t_ns, l);
                        }
                    }
                }
            }
            Rpc::Resolve {
                promise,
                resolution,
            } => self.emit(
                conn,
                ev,
                t_ns,
                EventKind::Resolve {
                    promise,
                    resolution,
                },
            ),
            Rpc::Disembargo { target, context } => {
                self.emit(conn, ev, t_ns, EventKind::Disembargo { target, context })
            }
            Rpc::Abort(exception) => self.emit(conn, ev, t_ns, EventKind::Abort { exception }),
            Rpc::Unimplemented(echoed) => self.emit(
                conn,
                ev,
                t_ns,
                EventKind::Unimplemented {
                    which: echoed.which.to_string(),
                    question: echoed.question,
                },
            ),
            Rpc::Other { which, name } => self.emit(
                conn,
                ev,
                t_ns,
                EventKind::OtherMessage {
                    which,
                    name: name.to_string(),
                },
            ),
            _ => {}
        }
    }

    /// Narrows the candidate sets with one observation; emits `schema_chosen` or
    /// `schema_mismatch` when that changes what we know.
    fn observe_shape(
        &mut self,
        conn: ConnId,
        t_ns: u64,
        interface: u64,
        method: u16,
        results: bool,
        shape: Shape,
    ) {
        let c = self.conns.get_mut(&conn).expect("conn exists");
        if self
            .config
            .user
            .iter()
            .any(|u| u.interface(interface).is_some())
        {
            return; // A user schema owns this interface; built-in sets have no say.
        }
        // Usually every candidate still fits (the set was settled long ago): nothing to do.
        if !c.candidates.is_empty()
            && c.candidates
                .iter()
                .all(|s| sets::fits(s, interface, method, results, shape))
        {
            return;
        }
        let fitting: Vec<Arc<SchemaSet>> = c
            .candidates
            .iter()
            .filter(|s| sets::fits(s, interface, method, results, shape))
            .cloned()
            .collect();
        if !fitting.is_empty() {
            let before = c.candidates.first().map(|s| s.name.clone());
            let narrowed = fitting.len() < c.candidates.len();
            c.candidates = fitting;
            let after = c.candidates[0].name.clone();
            if narrowed
                && matches!(self.config.choice, Choice::Auto)
                && before != Some(after.clone())
            {
                let names: Vec<&str> = c.candidates.iter().map(|s| s.name.as_str()).collect();
                let reason = format!(
                    "interface {interface:#x} method @{method} {} fit {}",
                    if results { "results" } else { "params" },
                    names.join(", ")
                );
                self.emit(
                    conn,
                    None,
                    t_ns,
                    EventKind::SchemaChosen {
                        schemas: after,
                        reason,
                    },
                );
            }
            return;
        }
        if c.mismatches_reported.contains(&(interface, method)) {
            return;
        }
        c.mismatches_reported.push((interface, method));
        let chosen = c
            .candidates
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        // A method the set lacks altogether is `unknown-ordinal`'s (reported with the call).
        let ordinal_missing = c
            .candidates
            .first()
            .and_then(|s| s.interface(interface))
            .is_some_and(|i| i.method(method).is_none());
        let method_name = c
            .candidates
            .first()
            .and_then(|s| s.method(interface, method))
            .map_or_else(|| format!("@{method}"), |(_, m)| m.name.clone());
        let likely: Vec<String> = sets::BUILTIN
            .iter()
            .filter_map(|n| sets::builtin(n))
            .filter(|s| sets::fits(s, interface, method, results, shape))
            .map(|s| s.name.clone())
            .collect();
        let what = if results { "results" } else { "params" };
        let interface_known = c
            .candidates
            .first()
            .is_some_and(|s| s.interface(interface).is_some());
        // A missing interface or method is the reason whatever the shape: there is no size to
        // expect.
        let reason = match shape {
            _ if !interface_known => format!("{chosen} has no interface {interface:#018x}"),
            _ if ordinal_missing => format!("{chosen} has no method @{method} on this interface"),
            Shape::Struct(d, p) => {
                format!("{what} of @{method} arrived as {d}w/{p}p, which {chosen} does not expect")
            }
            _ => format!("{what} of @{method} arrived as a pointer that is not a struct"),
        };
        let reason = if likely.is_empty() {
            format!("{reason}; no built-in set fits (pass --schema FILE.capnp)")
        } else {
            reason
        };
        let interface_name = self
            .lookup_name(conn, Some(interface))
            .or_else(|| {
                sets::BUILTIN
                    .iter()
                    .filter_map(|n| sets::builtin(n))
                    .find_map(|s| s.interface(interface).map(|i| i.name.clone()))
            })
            .unwrap_or_else(|| format!("{interface:#018x}"));
        let lint = (!ordinal_missing).then(|| {
            let mut l = Lint::new(
                LintId::SchemaMismatch,
                format!("{interface_name} @{method} under {chosen}: {reason}"),
            );
            l.method = Some(format!("{interface_name}.{method_name}"));
            l
        });
        self.emit(
            conn,
            None,
            t_ns,
            EventKind::SchemaMismatch {
                interface: interface_name,
                method_id: method,
                schemas: chosen,
                likely,
                reason,
            },
        );
        if let Some(l) = lint {
            self.lint(conn, None, t_ns, l);
        }
    }

    fn call(&mut self, conn: ConnId, dir: Direction, t_ns: u64, bytes: usize, call: rpc::Call<'_>) {
        self.observe_shape(
            conn,
            t_ns,
            call.interface_id,
            call.method_id,
            false,
            shape(&call.params.content),
        );
        let sets = self.sets_for(conn);
        let refs: Vec<&SchemaSet> = sets.iter().map(|s| s.as_ref()).collect();
        let lookup = Lookup::new(&refs);
        let (interface, method, params_id, results_id) =
            match lookup.method(call.interface_id, call.method_id) {
                Some((i, m)) => (
                    i.to_string(),
                    m.name.clone(),
                    Some(m.params),
                    Some(m.results),
                ),
                None => (
                    lookup
                        .interface_name(call.interface_id)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{:#018x}", call.interface_id)),
                    format!("@{}", call.method_id),
                    None,
                    None,
                ),
            };
        let mut walker = Walker::new(lookup);
        let mut params = match params_id {
            Some(id) => walker.decode(id, call.params.content),
            None => raw(&call.params.content),
        };
        let sender = dir.sender();
        let qualified_name = qualified(&interface, &method);
        // Lints about this call, emitted after it (they name its `seq`).
        let mut lints: Vec<Lint> = Vec::new();
        let c = self.conns.get_mut(&conn).expect("conn exists");

        // What the call is aimed at; calling a capability teaches us its interface.
        let mut target_key = None;
        let target = match &call.target {
            MessageTarget::ImportedCap(id) => {
                let host = sender.other();
                match c.exports.get_mut(&(host, *id)) {
                    Some(e) => {
                        learn_interface(e, call.interface_id, &interface);
                        target_key = Some((host, *id));
                        if e.destroyed && method != "destroy" {
                            let mut l = Lint::new(
                                LintId::CallAfterRelease,
                                format!("{qualified_name} called on {} after its destroy", e.name),
                            );
                            l.cap = Some(e.name.clone());
                            lints.push(l);
                        }
                        if method == "destroy" {
                            e.destroy_called = true;
                        }
                        e.name.clone()
                    }
                    None => {
                        if let Some(name) = c.released.get(&(host, *id)) {
                            let mut l = Lint::new(
                                LintId::CallAfterRelease,
                                // Seen on master bitcoin-node (and capnp-rust): the
                                // whole connection is aborted, not just this call failed.
                                format!(
                                    "{qualified_name} called on import {id}, released as \
                                     {name}: the peer no longer exports it and aborts the \
                                     connection ('Message target is not a current export ID.')"
                                ),
                            );
                            l.cap = Some(name.clone());
                            lints.push(l);
                        }
                        format!("import {id}")
                    }
                }
            }
            MessageTarget::PromisedAnswer(pa) => {
                match c
                    .answer_cap(dir, pa.question, &pa.path)
                    .map(|(a, e)| (a.name.clone(), e.map(|_| (a.host, a.id))))
                {
                    Some((name, live)) => {
                        if let Some(key) = live {
                            if let Some(e) = c.exports.get_mut(&key) {
                                learn_interface(e, call.interface_id, &interface);
                            }
                            target_key = Some(key);
                        }
                        name
                    }
                    None => {
                        if let Some(q) = c.questions.get_mut(&(dir, pa.question)) {
                            q.pipelined.push((pa.path.clone(), call.interface_id));
                        }
                        promise_label(pa.question, &pa.path)
                    }
                }
            }
            MessageTarget::Unknown(w) => format!("unknown target {w}"),
        };

        let created = bind_caps(
            &lookup,
            c,
            dir,
            t_ns,
            &call.params.cap_table,
            &walker.caps,
            &mut params,
        );
        // Proxy.Context: the thread lane of this call.
        let (thread, callback_thread, thread_key, callback_key) =
            context_threads(c, dir, &call.params.cap_table, &walker.caps);
        // A callback: a call in the other direction on the thread a pending call gave as its
        // callbackThread (the innermost, when callbacks nest).
        let parent_seq = thread_key.as_ref().and_then(|key| {
            c.questions
                .iter()
                .filter(|((d, _), q)| {
                    *d == dir.reverse() && !q.returned && q.callback_key.as_ref() == Some(key)
                })
                .map(|(_, q)| q.call_seq)
                .max()
        });
        if (interface.as_str(), method.as_str()) == MAKE_POOL && !c.pooled.contains(&dir) {
            c.pooled.push(dir);
        }
        if params_id.is_some() && context_without_thread(&params) && !c.pooled.contains(&dir) {
            let mut l = Lint::new(
                LintId::NullThread,
                format!(
                    "{qualified_name} sent a Context without a thread and no pool was made on \
                     this connection (the server answers 'no thread specified')"
                ),
            );
            l.method = Some(qualified_name.clone());
            lints.push(l);
        }
        if let Some(key) = &thread_key
            && let Some(busy) = busy_with(c, dir, key)
        {
            let on = thread.as_deref().unwrap_or(key);
            let mut l = Lint::new(
                LintId::ThreadBusy,
                format!(
                    "{qualified_name} sent on thread {on} while {} (call #{}) still runs there",
                    qualified(&busy.interface, &busy.method),
                    busy.call_seq
                ),
            );
            l.thread = thread.clone();
            lints.push(l);
        }
        if params_id.is_none()
            && lookup.interface_name(call.interface_id).is_some()
            && c.linted
                .insert((LintId::UnknownOrdinal, call.interface_id, call.method_id))
        {
            lints.push(Lint::new(
                LintId::UnknownOrdinal,
                format!(
                    "{interface} has no method @{} in the schema set in use",
                    call.method_id
                ),
            ));
        }
        if self.timed
            && let Some(&long_poll) = LONG_POLL.iter().find(|m| **m == qualified_name)
            && c.polls
                .entry(long_poll)
                .or_default()
                .call(t_ns, &self.config.lints)
        {
            lints.push(Lint::new(
                LintId::PollingStorm,
                format!(
                    "{long_poll} called more than {} times a second: a long poll is meant to \
                     wait, not to be polled",
                    self.config.lints.poll_rate
                ),
            ));
        }
        let limit_ns = self.config.lints.stuck_limit(&qualified_name, &params);
        let thread_name = (interface == THREAD_MAP.0 && method == THREAD_MAP.1)
            .then(|| {
                params
                    .field("name")
                    .and_then(Value::as_text)
                    .map(str::to_string)
            })
            .flatten();
        c.questions.insert(
            (dir, call.question),
            Question {
                // Set once the call event has its number (after the capabilities it creates).
                call_seq: 0,
                interface: interface.clone(),
                method: method.clone(),
                interface_id: call.interface_id,
                method_id: call.method_id,
                results_struct: results_id,
                sent_ns: t_ns,
                returned: false,
                finished: false,
                thread: thread.clone(),
                thread_name,
                pipelined: Vec::new(),
                answer_caps: Vec::new(),
                target: target_key,
                thread_key: thread_key.clone(),
                callback_key,
                limit_ns,
                stuck: false,
            },
        );
        let ev = Some(dir);
        for info in created {
            self.emit(conn, ev, t_ns, EventKind::CapCreated(info));
        }
        self.emit(
            conn,
            ev,
            t_ns,
            EventKind::Call(CallEvent {
                question: call.question,
                interface,
                method,
                interface_id: call.interface_id,
                method_id: call.method_id,
                target,
                thread,
                callback_thread,
                parent_seq,
                params,
                cap_table: call.params.cap_table.clone(),
                bytes,
            }),
        );
        let call_seq = self.seq - 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Some(q) = c.questions.get_mut(&(dir, call.question)) {
                q.call_seq = call_seq;
            }
            if let Some(key) = thread_key {
                c.lanes.entry(key).or_default().sent(Ran {
                    call_seq,
                    method: qualified_name.clone(),
                    started_ns: t_ns,
                    returned_ns: None,
                });
            }
        }
        for mut l in lints {
            l.call_seq = Some(call_seq);
            l.method.get_or_insert_with(|| qualified_name.clone());
            self.lint(conn, ev, t_ns, l);
        }
    }

    fn ret(&mut self, conn: ConnId, dir: Direction, t_ns: u64, bytes: usize, ret: rpc::Return<'_>) {
        let key = (dir.reverse(), ret.answer);
        let (interface_id, method_id, results_struct) = {
            let c = self.conns.get(&conn).expect("conn exists");
            match c.questions.get(&key) {
                Some(q) => (q.interface_id, q.method_id, q.results_struct),
                None => (0, 0, None),
            }
        };
        if let (Outcome::Results(p), Some(_)) = (&ret.outcome, results_struct) {
            self.observe_shape(conn, t_ns, interface_id, method_id, true, shape(&p.content));
        }
        let sets = self.sets_for(conn);
        let refs: Vec<&SchemaSet> = sets.iter().map(|s| s.as_ref()).collect();
        let lookup = Lookup::new(&refs);
        // Re-resolve the results struct with the set chosen now (auto may have narrowed).
        let results_struct = lookup
            .method(interface_id, method_id)
            .map(|(_, m)| m.results)
            .or(results_struct);
        let mut walker = Walker::new(lookup);
        let c = self.conns.get_mut(&conn).expect("conn exists");
        let q = c.questions.get_mut(&key);
        let (call_seq, interface, method, latency_ns, thread, is_bootstrap) = match &q {
            Some(q) => (
                Some(q.call_seq),
                q.interface.clone(),
                q.method.clone(),
                self.timed.then(|| t_ns.saturating_sub(q.sent_ns)),
                q.thread.clone(),
                q.interface.is_empty(),
            ),
            None => (
                None,
                "?".to_string(),
                format!("answer {}", ret.answer),
                None,
                None,
                false,
            ),
        };
        let mut created = Vec::new();
        let mut cap_table = Vec::new();
        let (outcome, results, exception) = match &ret.outcome {
            Outcome::Results(p) => {
                cap_table = p.cap_table.clone();
                let mut v = match (results_struct, is_bootstrap) {
                    (Some(id), false) => walker.decode(id, p.content),
                    _ => match p.content {
                        // The bootstrap answer is the capability itself.
                        Target::Capability(i) => Value::Cap(mpspy_schema::value::CapValue {
                            index: i,
                            ..Default::default()
                        }),
                        t => raw(&t),
                    },
                };
                let by_path = answer_cap_indices(p);
                if let Some(q) = c.questions.get(&key) {
                    // Interfaces learnt from calls pipelined on this answer fill in what the
                    // schema cannot say (the bootstrap capability is an AnyPointer).
                    for (path, index) in &by_path {
                        let Some((_, iface)) = q.pipelined.iter().find(|(p, _)| p == path) else {
                            continue;
                        };
                        match walker.caps.iter_mut().find(|u| u.index == *index) {
                            Some(u) => {
                                u.interface.get_or_insert(*iface);
                            }
                            None => walker.caps.push(CapUse {
                                index: *index,
                                interface: Some(*iface),
                                path: String::new(),
                            }),
                        }
                    }
                }
                created = bind_caps(&lookup, c, dir, t_ns, &p.cap_table, &walker.caps, &mut v);
                let host = dir.sender();
                let thread_name = c.questions.get(&key).and_then(|q| q.thread_name.clone());
                let answer_caps: Vec<AnswerCap> = by_path
                    .into_iter()
                    .filter_map(|(path, index)| match p.cap_table.get(index as usize) {
                        Some(
                            CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id),
                        ) => {
                            let e = c.exports.get_mut(&(host, *id))?;
                            if let Some(n) = &thread_name {
                                e.thread_name.get_or_insert_with(|| n.clone());
                            }
                            Some(AnswerCap {
                                path,
                                host,
                                id: *id,
                                name: e.name.clone(),
                                thread_name: e.thread_name.clone(),
                            })
                        }
                        _ => None,
                    })
                    .collect();
                if let Some(q) = c.questions.get_mut(&key) {
                    // A successful destroy() frees the object; its Release may come later.
                    if q.method == "destroy"
                        && let Some(e) = q.target.and_then(|t| c.exports.get_mut(&t))
                    {
                        e.destroyed = true;
                    }
                    q.answer_caps = answer_caps;
                }
                ("results", Some(v), None)
            }
            Outcome::Exception(e) => ("exception", None, Some(e.clone())),
            Outcome::Canceled => ("canceled", None, None),
            Outcome::ResultsSentElsewhere => ("results_sent_elsewhere", None, None),
            Outcome::TakeFromOtherQuestion(_) => ("take_from_other_question", None, None),
            Outcome::AcceptFromThirdParty => ("accept_from_third_party", None, None),
            Outcome::Unknown(_) => ("unknown", None, None),
        };
        if let Some(q) = c.questions.get_mut(&key) {
            q.returned = true;
            if let Some(lane) = q.thread_key.as_ref().and_then(|k| c.lanes.get_mut(k)) {
                lane.returned(q.call_seq, t_ns);
            }
            if q.finished {
                c.questions.remove(&key);
            }
        }
        let unimplemented = exception
            .as_ref()
            .is_some_and(|e| e.kind == "unimplemented");
        // Bitcoin Core answers methods it retired with a `failed` stub ("Old mining interface
        // (@2) not supported. Please update your client!", bitcoin/bitcoin#34568): for the
        // client that is the same mistake as an unimplemented method.
        let stub = exception.as_ref().is_some_and(|e| {
            e.reason
                .contains("not supported. Please update your client")
        });
        let unimplemented_lint = (unimplemented || stub)
            && call_seq.is_some()
            && c.linted
                .insert((LintId::UnimplementedMethod, interface_id, method_id));
        let reason = exception.as_ref().map(|e| e.reason.clone());
        let ev = Some(dir);
        for info in created {
            self.emit(conn, ev, t_ns, EventKind::CapCreated(info));
        }
        self.emit(
            conn,
            ev,
            t_ns,
            EventKind::Return(ReturnEvent {
                answer: ret.answer,
                call_seq,
                interface: interface.clone(),
                method: method.clone(),
                outcome: outcome.to_string(),
                latency_ns,
                results,
                exception,
                thread,
                cap_table,
                bytes,
            }),
        );
        if unimplemented_lint {
            let name = qualified(&interface, &method);
            // A method the schema does not have is already named by its ordinal.
            let ordinal = if method.starts_with('@') {
                String::new()
            } else {
                format!(" (@{method_id})")
            };
            let mut l = Lint::new(
                LintId::UnimplementedMethod,
                format!(
                    "{name}{ordinal} is not implemented by the peer: {}",
                    reason.unwrap_or_default()
                ),
            );
            l.call_seq = call_seq;
            l.method = Some(name);
            self.lint(conn, ev, t_ns, l);
        }
        if unimplemented {
            self.unimplemented_return(conn, t_ns, interface_id, method_id, &interface);
        }
    }

    fn unimplemented_return(
        &mut self,
        conn: ConnId,
        t_ns: u64,
        interface_id: u64,
        method_id: u16,
        interface: &str,
    ) {
        let chosen = self
            .conns
            .get(&conn)
            .and_then(|c| c.candidates.first())
            .map(|s| s.name.clone())
            .unwrap_or_default();
        // The peer lacks this method: the sets where the interface exists without it fit.
        let likely: Vec<String> = sets::BUILTIN
            .iter()
            .filter_map(|n| sets::builtin(n))
            .filter(|s| {
                s.interface(interface_id)
                    .is_some_and(|i| i.method(method_id).is_none())
            })
            .map(|s| s.name.clone())
            .collect();
        let reason = format!(
            "the peer answered {interface} @{method_id} with 'unimplemented': it was built with \
             other schemas than the caller"
        );
        self.emit(
            conn,
            None,
            t_ns,
            EventKind::SchemaMismatch {
                interface: interface.to_string(),
                method_id,
                schemas: chosen,
                likely,
                reason,
            },
        );
    }
}

fn promise_label(question: u32, path: &[u16]) -> String {
    let mut s = format!("answer(q{question})");
    for p in path {
        s.push_str(&format!(".ptr{p}"));
    }
    s
}

fn learn_interface(e: &mut Export, interface_id: u64, interface_name: &str) {
    if e.interface.is_none() {
        e.interface = Some(interface_id);
        // Rename `cap#N` once the interface is known, keeping the number.
        if let Some(n) = e.name.strip_prefix("cap#")
            && !interface_name.starts_with("0x")
        {
            e.name = format!("{interface_name}#{n}");
        }
    }
}

fn shape(t: &Target<'_>) -> Shape {
    match t {
        Target::Struct(s) => Shape::Struct(s.data_words(), s.pointer_count()),
        Target::Null => Shape::Null,
        _ => Shape::NotStruct,
    }
}

fn raw(t: &Target<'_>) -> Value {
    match t {
        Target::Null => Value::Null,
        Target::Struct(s) => Value::Raw(RawValue {
            kind: "struct".into(),
            shape: format!("{}w/{}p", s.data_words(), s.pointer_count()),
            hex: hex(s.data()),
        }),
        Target::List(l) => Value::Raw(RawValue {
            kind: "list".into(),
            shape: format!("{} elements", l.len()),
            hex: l.bytes().map(hex).unwrap_or_default(),
        }),
        Target::Capability(i) => Value::Cap(mpspy_schema::value::CapValue {
            index: *i,
            ..Default::default()
        }),
        Target::Other(w) => Value::Error(format!("reserved pointer {w:#018x}")),
    }
}

fn cap_info(host: Side, id: u32, e: &Export, lookup: &Lookup<'_>) -> CapInfo {
    CapInfo {
        cap: e.name.clone(),
        interface: e
            .interface
            .and_then(|i| lookup.interface_name(i))
            .map(str::to_string),
        host,
        export_id: id,
        refs: e.refs,
        destroyed: e.destroyed,
        destroyable: e.interface.is_some_and(|i| lookup.has_destroy(i)),
        destroy_pending: e.destroy_called && !e.destroyed,
    }
}

/// Applies a cap table sent in direction `dir`: counts references, creates exports, and writes
/// each capability's name into the decoded value. Returns the capabilities created.
fn bind_caps(
    lookup: &Lookup<'_>,
    c: &mut Conn,
    dir: Direction,
    t_ns: u64,
    table: &[CapDescriptor],
    uses: &[CapUse],
    value: &mut Value,
) -> Vec<CapInfo> {
    let sender = dir.sender();
    let mut created = Vec::new();
    let mut names: Vec<Option<String>> = Vec::with_capacity(table.len());
    for (i, d) in table.iter().enumerate() {
        let interface = uses
            .iter()
            .find(|u| u.index as usize == i)
            .and_then(|u| u.interface);
        let name = match d {
            CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) => {
                let e = c.exports.entry((sender, *id)).or_insert_with(|| {
                    // The id is reused: calls on it are calls on the new object.
                    c.released.remove(&(sender, *id));
                    let n = c.next_cap;
                    c.next_cap += 1;
                    let name = format!("cap#{n}");
                    Export {
                        name,
                        interface: None,
                        refs: 0,
                        created_ns: t_ns,
                        destroyed: false,
                        destroy_called: false,
                        thread_name: None,
                    }
                });
                e.refs += 1;
                if e.refs == 1 {
                    if let Some(iface) = interface {
                        let n = e.name.trim_start_matches("cap#").to_string();
                        e.interface = Some(iface);
                        if let Some(iname) = lookup.interface_name(iface) {
                            e.name = format!("{iname}#{n}");
                        }
                    }
                    created.push((sender, *id));
                }
                Some(e.name.clone())
            }
            CapDescriptor::ReceiverHosted(id) => c
                .exports
                .get(&(sender.other(), *id))
                .map(|e| e.name.clone()),
            CapDescriptor::ReceiverAnswer(pa) => Some(
                c.answer_cap(dir, pa.question, &pa.path)
                    .map(|(a, _)| a.name.clone())
                    .unwrap_or_else(|| promise_label(pa.question, &pa.path)),
            ),
            CapDescriptor::None => None,
            _ => None,
        };
        names.push(name);
    }
    value.caps_mut(&mut |cap| {
        if let Some(Some(n)) = names.get(cap.index as usize) {
            cap.name = Some(n.clone());
            // The schema may not say (AnyPointer, bootstrap); the connection may know.
            if cap.interface.is_none() {
                cap.interface = n
                    .split_once('#')
                    .map(|(i, _)| i)
                    .filter(|i| *i != "cap")
                    .map(str::to_string);
            }
        }
    });
    created
        .into_iter()
        .map(|(host, id)| {
            let e = &c.exports[&(host, id)];
            cap_info(host, id, e, lookup)
        })
        .collect()
}

/// The thread names of a call's `Proxy.Context` (thread, callback thread), and the identities
/// of both (a capability's name, or the promise of a `makeThread` answer not seen yet).
fn context_threads(
    c: &Conn,
    dir: Direction,
    table: &[CapDescriptor],
    uses: &[CapUse],
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    let name_of = |path: &str| -> Option<(String, String)> {
        let u = uses.iter().find(|u| u.path == path)?;
        let d = table.get(u.index as usize)?;
        let sender = dir.sender();
        let export = match d {
            CapDescriptor::ReceiverHosted(id) => c.exports.get(&(sender.other(), *id)),
            CapDescriptor::SenderHosted(id) => c.exports.get(&(sender, *id)),
            CapDescriptor::ReceiverAnswer(pa) => {
                let q = c.questions.get(&(dir, pa.question))?;
                let answer = c.answer_cap(dir, pa.question, &pa.path).map(|(a, _)| a);
                let key = answer
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| promise_label(pa.question, &pa.path));
                // makeThread not answered yet (sent in the same write): its name is known.
                if let Some(n) = &q.thread_name {
                    return Some((n.clone(), key));
                }
                let a = answer?;
                return Some((a.thread_name.clone().unwrap_or_else(|| a.name.clone()), key));
            }
            _ => None,
        }?;
        Some((
            export
                .thread_name
                .clone()
                .unwrap_or_else(|| export.name.clone()),
            export.name.clone(),
        ))
    };
    let (thread, key) = name_of("context.thread").unzip();
    let (callback, callback_key) = name_of("context.callbackThread").unzip();
    (thread, callback, key, callback_key)
}

/// A call of `dir` still running on the server thread `key`, unless the thread is waiting for
/// a callback: libmultiprocess runs a call that arrives while its thread waits for a callback
/// it made (the callback's own calls back in), so only a call without a callback pending since
/// it started makes the thread busy.
fn busy_with<'c>(c: &'c Conn, dir: Direction, key: &str) -> Option<&'c Question> {
    c.questions
        .iter()
        .filter(|((d, _), q)| *d == dir && !q.returned && q.thread_key.as_deref() == Some(key))
        .map(|(_, q)| q)
        .filter(|q| {
            !c.questions
                .iter()
                .any(|((d, _), cb)| *d == dir.reverse() && !cb.returned && cb.call_seq > q.call_seq)
        })
        // The table's order is random (a seeded hash): name the oldest, so the same traffic
        // always gives the same message.
        .min_by_key(|q| q.call_seq)
}

/// True when the params have a `Proxy.Context` (a `context` field) without a thread: the
/// server then has nowhere to run the call unless the connection has a pool.
fn context_without_thread(params: &Value) -> bool {
    match params.field("context") {
        Some(Value::Null) => true,
        Some(ctx) => matches!(ctx.field("thread"), Some(Value::Null)),
        None => false,
    }
}

/// Capabilities in an answer by pointer path (root, and one or two pointer levels deep) with
/// their cap-table index, so pipelined calls and `receiverAnswer` descriptors can name them.
fn answer_cap_indices(p: &Payload<'_>) -> Vec<(Vec<u16>, u32)> {
    let mut out = Vec::new();
    if let Target::Capability(i) = p.content {
        out.push((Vec::new(), i));
    }
    if let Target::Struct(s) = p.content {
        for i in 0..s.pointer_count() {
            match s.pointer(i) {
                Ok(Target::Capability(c)) => out.push((vec![i], c)),
                Ok(Target::Struct(inner)) => {
                    for j in 0..inner.pointer_count() {
                        if let Ok(Target::Capability(c)) = inner.pointer(j) {
                            out.push((vec![i, j], c));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
