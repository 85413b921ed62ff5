//! Chrome / Perfetto Trace Event JSON: a timeline of the session that ui.perfetto.dev and
//! chrome://tracing open (`mpspy export --format chrome-trace`, `--trace-out FILE`).
//!
//! The mapping (docs/trace.md):
//! - a trace *process* per side of each connection (`pid` = 2·conn + 1 for the client, + 2 for
//!   the server), named after the program and its real pid, so two clients of one node are two
//!   pairs of processes;
//! - a *track* (`tid`) per thread lane of the side that runs the call: the server `Thread` named
//!   in `Context.thread` for client calls, the client's callback `Thread` for callbacks, and
//!   "event loop" for calls without a thread (`construct`, `makeThread`, bootstrap);
//! - each call a slice (`X`) on its lane from call to return (`args`: question, target,
//!   outcome, bytes); a call that does not nest with the slices already on its lane (two calls
//!   in flight on one thread, the second queued) is an async slice (`b`/`e`) instead, so every
//!   lane's `X` slices nest properly; calls still pending when their connection closes end
//!   there, marked `unanswered`;
//! - a flow arrow (`s` → `f`) from a call to each callback it causes (a call in the other
//!   direction on the thread the call named as its `callbackThread`, while it is pending);
//! - instant events (`i`) for releases (on the host's event loop), aborts, disconnects, stuck
//!   calls and lints.
//!
//! Written as a stream in the JSON array form (`[` event, event, …), closed with `]` at the end;
//! the viewers also open a file whose writer was killed before the `]`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use mpspy_schema::event::{CallEvent, ConnId, Peer};
use mpspy_schema::{Direction, Event, EventKind};
use serde_json::{Value as Json, json};

use super::Sink;

/// The lane of calls that name no thread.
const EVENT_LOOP: &str = "event loop";

/// A call waiting for its return.
struct Open {
    /// The call event's `seq`: the id of its async slice, if it gets one.
    seq: u64,
    pid: u64,
    tid: u64,
    name: String,
    t_ns: u64,
    args: Json,
    conn: ConnId,
}

/// The trace writer.
pub(crate) struct ChromeTrace<W: Write> {
    out: W,
    first: bool,
    /// Program names and pids of each connection's (client, server).
    peers: HashMap<ConnId, (Option<Peer>, Option<Peer>)>,
    /// Track ids by (pid, lane name).
    tids: HashMap<(u64, String), u64>,
    /// Processes already named.
    named: std::collections::HashSet<u64>,
    /// Pending calls by call `seq`.
    open: HashMap<u64, Open>,
    /// Per (pid, tid): the `X` slices written that a later return could overlap, as
    /// (start, end) in ns.
    drawn: HashMap<(u64, u64), Vec<(u64, u64)>>,
    flow_id: u64,
    last_ns: u64,
}

impl<W: Write> ChromeTrace<W> {
    pub(crate) fn new(out: W) -> Self {
        ChromeTrace {
            out,
            first: true,
            peers: HashMap::new(),
            tids: HashMap::new(),
            named: Default::default(),
            open: HashMap::new(),
            drawn: HashMap::new(),
            flow_id: 0,
            last_ns: 0,
        }
    }

    fn write(&mut self, v: &Json) -> io::Result<()> {
        self.out
            .write_all(if self.first { b"[\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::other)
    }

    /// The trace process of a connection's side (`server`: the server's).
    fn pid(&mut self, conn: ConnId, server: bool) -> io::Result<u64> {
        let pid = 2 * u64::from(conn) + 1 + u64::from(server);
        if self.named.insert(pid) {
            let peer = self
                .peers
                .get(&conn)
                .and_then(|(c, s)| if server { s.clone() } else { c.clone() });
            let side = if server { "server" } else { "client" };
            let name = match peer {
                Some(Peer {
                    name, pid: Some(p), ..
                }) => format!("{name} ({p}) #{conn} {side}"),
                Some(Peer { name, .. }) => format!("{name} #{conn} {side}"),
                None => format!("#{conn} {side}"),
            };
            self.write(
                &json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": {"name": name}}),
            )?;
            // Client above server, connections in order.
            self.write(
                &json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                "args": {"sort_index": pid}}),
            )?;
        }
        Ok(pid)
    }

    /// The track of `lane` in process `pid`.
    fn tid(&mut self, pid: u64, lane: &str) -> io::Result<u64> {
        if let Some(&t) = self.tids.get(&(pid, lane.to_string())) {
            return Ok(t);
        }
        let tid = self.tids.keys().filter(|(p, _)| *p == pid).count() as u64 + 1;
        self.tids.insert((pid, lane.to_string()), tid);
        self.write(
            &json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
            "args": {"name": lane}}),
        )?;
        Ok(tid)
    }

    fn call(&mut self, e: &Event, c: &CallEvent) -> io::Result<()> {
        let dir = e.dir.unwrap_or(Direction::ClientToServer);
        // The callee runs it: the server for client calls, the client for callbacks.
        let pid = self.pid(e.conn, dir == Direction::ClientToServer)?;
        let lane = c.thread.clone().unwrap_or_else(|| EVENT_LOOP.to_string());
        let tid = self.tid(pid, &lane)?;
        // A callback (the engine names the call that caused it): an arrow from that call.
        let parent = c
            .parent_seq
            .and_then(|p| self.open.get(&p))
            .map(|o| (o.pid, o.tid));
        if let Some((ppid, ptid)) = parent {
            self.flow_id += 1;
            let id = self.flow_id;
            let ts = us(e.t_ns);
            self.write(
                &json!({"ph": "s", "name": "callback", "cat": "callback", "id": id,
                "pid": ppid, "tid": ptid, "ts": ts}),
            )?;
            self.write(
                &json!({"ph": "f", "bp": "e", "name": "callback", "cat": "callback",
                "id": id, "pid": pid, "tid": tid, "ts": ts}),
            )?;
        }
        let args = json!({"conn": e.conn, "question": c.question, "target": c.target,
            "bytes": c.bytes});
        self.begin(e, pid, tid, format!("{}.{}", c.interface, c.method), args);
        Ok(())
    }

    /// A call (or bootstrap) is open on track (`pid`, `tid`) until its return.
    fn begin(&mut self, e: &Event, pid: u64, tid: u64, name: String, args: Json) {
        let open = Open {
            seq: e.seq,
            pid,
            tid,
            name,
            t_ns: e.t_ns,
            args,
            conn: e.conn,
        };
        self.open.insert(e.seq, open);
    }

    /// Draws a finished call: an `X` slice when it nests with its lane's slices, else async.
    fn slice(&mut self, o: Open, end_ns: u64, outcome: &str, extra: Json) -> io::Result<()> {
        let mut args = o.args;
        args["outcome"] = outcome.into();
        if let (Some(a), Json::Object(x)) = (args.as_object_mut(), extra) {
            a.extend(x);
        }
        let (s, e) = (o.t_ns, end_ns.max(o.t_ns));
        // Slices are written as they end, so an earlier one on the lane ends no later than
        // this: it nests only if it lies inside this one.
        let lane = self.drawn.entry((o.pid, o.tid)).or_default();
        let nests = lane.iter().all(|&(a, b)| b <= s || a >= s);
        if nests {
            lane.push((s, e));
            self.write(
                &json!({"ph": "X", "name": o.name, "cat": "call", "pid": o.pid,
                "tid": o.tid, "ts": us(s), "dur": us(e - s), "args": args}),
            )?;
        } else {
            let id = format!("call-{}", o.seq);
            self.write(&json!({"ph": "b", "name": o.name, "cat": "call", "id": id,
                "pid": o.pid, "tid": o.tid, "ts": us(s), "args": args}))?;
            self.write(&json!({"ph": "e", "name": o.name, "cat": "call", "id": id,
                "pid": o.pid, "tid": o.tid, "ts": us(e)}))?;
        }
        // What no later return can overlap any more: slices that ended before the oldest
        // call still open on this lane began.
        let oldest = self
            .open
            .values()
            .filter(|x| x.pid == o.pid && x.tid == o.tid)
            .map(|x| x.t_ns)
            .min();
        let lane = self.drawn.entry((o.pid, o.tid)).or_default();
        match oldest {
            Some(t) => lane.retain(|&(_, b)| b > t),
            None => lane.clear(),
        }
        Ok(())
    }

    fn instant(&mut self, pid: u64, tid: u64, name: &str, t_ns: u64, args: Json) -> io::Result<()> {
        self.write(
            &json!({"ph": "i", "s": "t", "name": name, "cat": "event", "pid": pid,
            "tid": tid, "ts": us(t_ns), "args": args}),
        )
    }

    /// An instant on a connection's side, on its event loop.
    fn on_loop(
        &mut self,
        conn: ConnId,
        server: bool,
        name: &str,
        t_ns: u64,
        args: Json,
    ) -> io::Result<()> {
        let pid = self.pid(conn, server)?;
        let tid = self.tid(pid, EVENT_LOOP)?;
        self.instant(pid, tid, name, t_ns, args)
    }
}

/// Trace timestamps are microseconds; nanoseconds survive as the fraction.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl<W: Write> Sink for ChromeTrace<W> {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        self.last_ns = self.last_ns.max(e.t_ns);
        let from_server = e.dir == Some(Direction::ServerToClient);
        match &e.kind {
            EventKind::ConnOpened { client, server, .. } => {
                self.peers.insert(e.conn, (client.clone(), server.clone()));
                self.pid(e.conn, false)?;
                self.pid(e.conn, true)?;
            }
            EventKind::Call(c) => self.call(e, c)?,
            EventKind::Bootstrap { question, bytes } => {
                // The first call of a connection, answered on the callee's event loop.
                let server = e.dir != Some(Direction::ServerToClient);
                let pid = self.pid(e.conn, server)?;
                let tid = self.tid(pid, EVENT_LOOP)?;
                let args = json!({"conn": e.conn, "question": question, "bytes": bytes});
                self.begin(e, pid, tid, "bootstrap".into(), args);
            }
            EventKind::Return(r) => {
                if let Some(o) = r.call_seq.and_then(|s| self.open.remove(&s)) {
                    let extra = match &r.exception {
                        Some(x) => json!({"exception": x.reason}),
                        None => json!({}),
                    };
                    self.slice(o, e.t_ns, &r.outcome, extra)?;
                }
            }
            EventKind::Release { cap, count, .. } => {
                // The host of the capability receives the release.
                let args = json!({"cap": cap, "count": count});
                self.on_loop(
                    e.conn,
                    !from_server,
                    &format!("release {cap}"),
                    e.t_ns,
                    args,
                )?;
            }
            EventKind::Abort { exception } => {
                let args = json!({"reason": exception.reason});
                self.on_loop(e.conn, from_server, "abort", e.t_ns, args)?;
            }
            EventKind::Stuck {
                interface, method, ..
            } => {
                let args = json!({"method": format!("{interface}.{method}")});
                self.on_loop(e.conn, true, "stuck", e.t_ns, args)?;
            }
            EventKind::Lint(l) => {
                let args = json!({"severity": l.severity.as_str(), "message": l.message});
                self.on_loop(e.conn, true, &format!("lint {}", l.id), e.t_ns, args)?;
            }
            EventKind::ConnClosed { reason, .. } => {
                let ended: Vec<u64> = self
                    .open
                    .iter()
                    .filter(|(_, o)| o.conn == e.conn)
                    .map(|(s, _)| *s)
                    .collect();
                for seq in ended {
                    if let Some(o) = self.open.remove(&seq) {
                        self.slice(o, e.t_ns, "unanswered", json!({"unanswered": true}))?;
                    }
                }
                for server in [false, true] {
                    let args = json!({"reason": reason});
                    self.on_loop(e.conn, server, "disconnect", e.t_ns, args)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        // Calls still open when the source ended (a recording cut short) end with it.
        let mut left: Vec<u64> = self.open.keys().copied().collect();
        left.sort_unstable();
        for seq in left {
            if let Some(o) = self.open.remove(&seq) {
                self.slice(o, self.last_ns, "unanswered", json!({"unanswered": true}))?;
            }
        }
        if self.first {
            self.out.write_all(b"[")?;
        }
        self.out.write_all(b"\n]\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use mpspy_schema::event::ReturnEvent;
    use mpspy_schema::value::Value;

    use super::*;

    const C2S: Direction = Direction::ClientToServer;
    const S2C: Direction = Direction::ServerToClient;

    fn ev(seq: u64, t_us: u64, dir: Direction, kind: EventKind) -> Arc<Event> {
        Arc::new(Event {
            seq,
            t_ns: t_us * 1000,
            conn: 1,
            dir: Some(dir),
            kind,
        })
    }

    fn call(q: u32, method: &str, thread: &str, parent: Option<u64>) -> EventKind {
        let (interface, method) = method.split_once('.').unwrap();
        EventKind::Call(CallEvent {
            question: q,
            interface: interface.into(),
            method: method.into(),
            interface_id: 1,
            method_id: 0,
            target: "X#1".into(),
            thread: Some(thread.into()),
            callback_thread: None,
            parent_seq: parent,
            params: Value::Void,
            cap_table: Vec::new(),
            bytes: 100,
        })
    }

    fn ret(q: u32, call_seq: u64) -> EventKind {
        EventKind::Return(ReturnEvent {
            answer: q,
            call_seq: Some(call_seq),
            interface: String::new(),
            method: String::new(),
            outcome: "results".into(),
            latency_ns: None,
            results: None,
            exception: None,
            thread: None,
            cap_table: Vec::new(),
            bytes: 50,
        })
    }

    fn run(events: &[Arc<Event>]) -> Vec<Json> {
        let mut out = Vec::new();
        let mut t = ChromeTrace::new(&mut out);
        for e in events {
            t.event(e).unwrap();
        }
        t.finish().unwrap();
        drop(t);
        serde_json::from_slice(&out).expect("a JSON array")
    }

    fn phases(trace: &[Json], name: &str) -> Vec<String> {
        trace
            .iter()
            .filter(|e| e["name"] == name)
            .map(|e| e["ph"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_call_queued_behind_another_on_its_thread_is_an_async_slice() {
        // waitTipChanged runs 0..100 µs on T; getTip is sent at 10 µs on the same thread
        // (queued) and answered at 150 µs: it cannot nest, so it is drawn apart.
        let trace = run(&[
            ev(1, 0, C2S, call(1, "Mining.waitTipChanged", "T", None)),
            ev(2, 10, C2S, call(2, "Mining.getTip", "T", None)),
            ev(3, 100, S2C, ret(1, 1)),
            ev(4, 150, S2C, ret(2, 2)),
        ]);
        assert_eq!(phases(&trace, "Mining.waitTipChanged"), ["X"]);
        assert_eq!(phases(&trace, "Mining.getTip"), ["b", "e"]);
        let x = trace.iter().find(|e| e["ph"] == "X").unwrap();
        assert_eq!(
            (x["ts"].as_f64(), x["dur"].as_f64()),
            (Some(0.0), Some(100.0))
        );
    }

    #[test]
    fn a_callback_nests_and_gets_a_flow_arrow_from_its_call() {
        // solve (on the server's thread S) calls print back on the client's thread C: the
        // engine names solve as its parent.
        let trace = run(&[
            ev(1, 0, C2S, call(1, "Calc.solve", "S", None)),
            ev(2, 20, S2C, call(1, "Printer.print", "C", Some(1))),
            ev(3, 30, C2S, ret(1, 2)),
            ev(4, 50, S2C, ret(1, 1)),
        ]);
        assert_eq!(phases(&trace, "Calc.solve"), ["X"]);
        assert_eq!(phases(&trace, "Printer.print"), ["X"]);
        let flow: Vec<&Json> = trace.iter().filter(|e| e["cat"] == "callback").collect();
        assert_eq!(flow.len(), 2);
        let solve = trace.iter().find(|e| e["name"] == "Calc.solve").unwrap();
        let print = trace.iter().find(|e| e["name"] == "Printer.print").unwrap();
        // From the solve slice's track to the print slice's, in the other process.
        assert_eq!(
            (flow[0]["pid"].clone(), flow[0]["tid"].clone()),
            (solve["pid"].clone(), solve["tid"].clone())
        );
        assert_eq!(
            (flow[1]["pid"].clone(), flow[1]["tid"].clone()),
            (print["pid"].clone(), print["tid"].clone())
        );
        assert_ne!(solve["pid"], print["pid"]);
    }

    #[test]
    fn calls_never_answered_end_with_the_source_and_the_array_is_closed() {
        let trace = run(&[
            ev(1, 0, C2S, call(1, "Mining.createNewBlock", "T", None)),
            ev(2, 5000, C2S, call(2, "Echo.echo", "U", None)),
        ]);
        let slice = trace
            .iter()
            .find(|e| e["name"] == "Mining.createNewBlock")
            .unwrap();
        assert_eq!(slice["args"]["outcome"], "unanswered");
        assert_eq!(slice["dur"].as_f64(), Some(5000.0));
        // An empty stream is still a valid (empty) trace.
        assert_eq!(run(&[]), Vec::<Json>::new());
    }
}
