//! `mpspy-testpeer misbehave unix:PATH CASE`: a client that misuses libmultiprocess IPC on
//! purpose, one way per CASE, so that each of mpspy's lints can be provoked on a real session
//! with a real node (and with the test peer).
//!
//! It writes the Cap'n Proto RPC messages itself, with capnp-rust's `rpc_capnp` builders, over a
//! blocking socket: an RPC library (capnp-rpc, pycapnp) keeps its peer's tables consistent and
//! will not call an import it released or a method its schema lacks, which is what some cases
//! need. Params are built by `mpspy_schema::encode` against the built-in `master` set. Apart
//! from its one misdeed per case it behaves like a libmultiprocess C++ client: Bootstrap,
//! `Init.construct`, `ThreadMap.makeThread("misbehave")`, calls with a `Context` whose `thread`
//! is that Thread, every question Finished right after its Return (`releaseResultCaps =
//! false`), `destroy` before `Release`, Releases with the exact reference count it holds, and at
//! the end a Release of the objects it made (not Init, the ThreadMap or the Thread).
//!
//! Unlike the C++ client it passes no `ThreadMap` to `construct` and no `callbackThread` in the
//! Context (as pycapnp clients do): it exports nothing, so the node never calls it back and it
//! never has to serve a call.
//!
//! Each answer is one JSON line on stdout (`{"call": "Echo.echo", "outcome": "results", …}`);
//! the exit status is 0 when the case ran as planned, including the error answers it provokes.

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use capnp::any_pointer;
use capnp::message::{Builder, ReaderOptions};
use capnp::private::capability::ClientHook;
use capnp::traits::{Imbue, ImbueMut};
use capnp_rpc::rpc_capnp::{cap_descriptor, exception, message, payload, return_};
use mpspy_schema::decode::{Lookup, Walker};
use mpspy_schema::encode::{self, CapSource};
use mpspy_schema::{SchemaSet, sets, wire};
use serde_json::{Value as Json, json};

/// The cases, each named after the lint it provokes.
pub const CASES: [&str; 7] = [
    "thread-busy",
    "unimplemented-method",
    "unknown-ordinal",
    "released-without-destroy",
    "long-poll-at-disconnect",
    "call-after-release",
    "schema-mismatch",
];

/// Longest wait for one answer: the longest call here waits 300 ms; a node that does not
/// answer in this time is a failed case, not a hung test.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `misbehave unix:PATH CASE`.
pub(crate) fn run(args: &[String]) -> Result<ExitCode> {
    let [address, case] = args else {
        bail!(
            "usage: mpspy-testpeer misbehave unix:PATH CASE (CASE: {})",
            CASES.join(", ")
        );
    };
    let Some(path) = address.strip_prefix("unix:") else {
        bail!("Unrecognized address '{address}' (misbehave speaks unix:PATH only)");
    };
    if !CASES.contains(&case.as_str()) {
        bail!("unknown case '{case}' (cases: {})", CASES.join(", "));
    }
    let stream = UnixStream::connect(path).with_context(|| format!("connecting to {path}"))?;
    let mut c = Client::new(stream)?;
    let h = c.handshake()?;
    match case.as_str() {
        "thread-busy" => thread_busy(&mut c, &h)?,
        "unimplemented-method" => unimplemented_method(&mut c)?,
        "unknown-ordinal" => unknown_ordinal(&mut c, &h)?,
        "released-without-destroy" => released_without_destroy(&mut c, &h)?,
        "long-poll-at-disconnect" => {
            long_poll_at_disconnect(c, &h)?;
            return Ok(ExitCode::SUCCESS);
        }
        "call-after-release" => call_after_release(&mut c, &h)?,
        "schema-mismatch" => schema_mismatch(&mut c, &h)?,
        _ => unreachable!("checked above"),
    }
    c.close(&h)?;
    Ok(ExitCode::SUCCESS)
}

/// Two calls in flight on one server Thread: a `waitTipChanged` that waits 300 ms, and a
/// `getTip` sent while it waits. libmultiprocess v8+ queues the second; both must return,
/// `getTip` after the wait.
fn thread_busy(c: &mut Client, h: &Handshake) -> Result<()> {
    let mining = c.make(h, "makeMining")?;
    let tip = c.get_tip(h, mining)?;
    let wait = c.call(
        mining,
        "Mining",
        "waitTipChanged",
        json!({"context": h.context(), "currentTip": tip, "timeout": 300.0}),
        &[h.thread],
    )?;
    let get = c.call(
        mining,
        "Mining",
        "getTip",
        json!({"context": h.context()}),
        &[h.thread],
    )?;
    for _ in 0..2 {
        let (_, a) = c.wait_first(&[wait, get])?;
        a.results()?;
    }
    Ok(())
}

/// `Init @2`: master has it as `makeMiningOld2`, a stub that tells a v30 client to update.
fn unimplemented_method(c: &mut Client) -> Result<()> {
    let q = c.call(c.init, "Init", "makeMiningOld2", json!({}), &[])?;
    let a = c.wait(q)?;
    match &a {
        Outcome::Exception { kind, reason }
            if kind == "unimplemented" || reason.contains("Please update your client") =>
        {
            Ok(())
        }
        _ => bail!("Init @2: expected the 'not supported' stub or unimplemented"),
    }
}

/// `Echo @9`, an ordinal master's Echo does not have (params: a Context, as a newer method
/// would take). The server answers `unimplemented`.
fn unknown_ordinal(c: &mut Client, h: &Handshake) -> Result<()> {
    let echo = c.make(h, "makeEcho")?;
    let set = c.set.clone();
    let (echo_id, _, destroy_params, _) = method(&set, "Echo", "destroy")?;
    if set.method(echo_id, 9).is_some() {
        bail!("the master set has Echo @9: pick another ordinal");
    }
    let q = c.call_raw(
        echo,
        ("Echo.@9", echo_id, 9),
        destroy_params,
        None,
        json!({"context": h.context()}),
        &[h.thread],
    )?;
    let a = c.wait(q)?;
    a.exception("unimplemented")?;
    c.destroy(h, echo, "Echo")
}

/// `Init.makeEcho`, then a Release of the Echo without `destroy`. `Thread.getName` afterwards
/// shows the session goes on (the node does not object to the Release).
fn released_without_destroy(c: &mut Client, h: &Handshake) -> Result<()> {
    let echo = c.make(h, "makeEcho")?;
    c.release(echo)?;
    let q = c.call(h.thread, "Thread", "getName", json!({}), &[])?;
    c.wait(q)?.results()?;
    Ok(())
}

/// `Mining.waitTipChanged` with a 60 s timeout, then the socket closes under it.
fn long_poll_at_disconnect(mut c: Client, h: &Handshake) -> Result<()> {
    let mining = c.make(h, "makeMining")?;
    let tip = c.get_tip(h, mining)?;
    c.call(
        mining,
        "Mining",
        "waitTipChanged",
        json!({"context": h.context(), "currentTip": tip, "timeout": 60_000.0}),
        &[h.thread],
    )?;
    // Long enough for the node to be waiting, far from the 60 s.
    std::thread::sleep(Duration::from_millis(200));
    emit(json!({"call": "Mining.waitTipChanged", "outcome": "pending"}));
    c.stream.shutdown(Shutdown::Both)?;
    emit(json!({"call": "disconnect", "outcome": "closed"}));
    Ok(())
}

/// An Echo used, destroyed and released as it should be, then called once more on its released
/// import id. The server no longer has that export: the node aborts the connection (an
/// exception for the call alone would do as well), and either is the planned end.
fn call_after_release(c: &mut Client, h: &Handshake) -> Result<()> {
    let echo = c.make(h, "makeEcho")?;
    let q = c.call(
        echo,
        "Echo",
        "echo",
        json!({"context": h.context(), "echo": "before release"}),
        &[h.thread],
    )?;
    c.wait(q)?.results()?;
    c.destroy(h, echo, "Echo")?;
    let q = c.call(
        echo,
        "Echo",
        "echo",
        json!({"context": h.context(), "echo": "after release"}),
        &[h.thread],
    )?;
    match c.wait(q)? {
        Outcome::Exception { .. } | Outcome::Abort { .. } => Ok(()),
        _ => bail!("Echo.echo on a released import: expected an exception or an Abort"),
    }
}

/// `Echo.echo` whose params struct has two more pointers than any built-in schema set gives it
/// (0w/4p, built as `Rpc.executeRpc`'s params, where master's is 0w/2p): a client built from
/// another schema. Cap'n Proto readers ignore the extra fields, so the node echoes `request`
/// (pointer 1, where `echo` is).
fn schema_mismatch(c: &mut Client, h: &Handshake) -> Result<()> {
    let echo = c.make(h, "makeEcho")?;
    let set = c.set.clone();
    let (echo_id, ord, _, results) = method(&set, "Echo", "echo")?;
    let (_, _, rpc_params, _) = method(&set, "Rpc", "executeRpc")?;
    let text = "schema mismatch";
    let q = c.call_raw(
        echo,
        ("Echo.echo", echo_id, ord),
        rpc_params,
        Some(results),
        json!({"context": h.context(), "request": text, "uri": "/", "user": "misbehave"}),
        &[h.thread],
    )?;
    let (value, _) = c.wait(q)?.results()?;
    if value["result"] != text {
        bail!("Echo.echo answered {value}, expected {text:?}");
    }
    c.destroy(h, echo, "Echo")
}

fn emit(line: Json) {
    let mut out = std::io::stdout().lock();
    // Nothing to do about a closed stdout; the exit status still tells.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// (interface id, ordinal, params struct, results struct) of `iface.name` in `set`.
fn method(set: &SchemaSet, iface: &str, name: &str) -> Result<(u64, u16, u64, u64)> {
    let (id, i) = set
        .interfaces()
        .find(|(_, i)| i.name == iface)
        .ok_or_else(|| anyhow!("the {} set has no interface {iface}", set.name))?;
    let m = i
        .methods
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| anyhow!("the {} set has no method {iface}.{name}", set.name))?;
    Ok((id, m.ordinal, m.params, m.results))
}

/// The node's capabilities every call needs, as import ids.
struct Handshake {
    thread_map: u32,
    thread: u32,
}

impl Handshake {
    /// A `Proxy.Context` on the worker Thread (cap-table index 0 of the call).
    fn context(&self) -> Json {
        json!({"thread": {"cap": 0}})
    }
}

/// What a question got.
#[derive(Debug, Clone)]
enum Outcome {
    Results {
        value: Json,
        /// Import ids of the capabilities in the results, in cap-table order.
        caps: Vec<u32>,
    },
    Exception {
        kind: String,
        reason: String,
    },
    Other(String),
    /// The peer aborted the connection before answering.
    Abort {
        kind: String,
        reason: String,
    },
    /// The connection closed before an answer.
    Closed,
}

impl Outcome {
    fn results(&self) -> Result<(Json, Vec<u32>)> {
        match self {
            Outcome::Results { value, caps } => Ok((value.clone(), caps.clone())),
            o => bail!("expected results, got {o:?}"),
        }
    }

    fn exception(&self, want: &str) -> Result<()> {
        match self {
            Outcome::Exception { kind, .. } if kind == want => Ok(()),
            o => bail!("expected an exception of type {want}, got {o:?}"),
        }
    }
}

/// A question in flight.
struct Asked {
    question: u32,
    step: String,
    results: Option<u64>,
    sent: Instant,
}

/// One connection, its question ids and imports.
struct Client {
    stream: UnixStream,
    set: Arc<SchemaSet>,
    /// Bootstrap capability (Init) import id.
    init: u32,
    asked: Vec<Asked>,
    /// Answers read while waiting for another, in the order they came.
    answered: Vec<(u32, Outcome)>,
    /// Import id → references held (one per appearance in a cap table we received).
    imports: HashMap<u32, u32>,
    /// Set once the peer aborted or closed: every later wait gets it.
    ended: Option<Outcome>,
}

impl Client {
    fn new(stream: UnixStream) -> Result<Self> {
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Client {
            stream,
            set: sets::builtin("master").ok_or_else(|| anyhow!("no built-in master set"))?,
            init: 0,
            asked: Vec::new(),
            answered: Vec::new(),
            imports: Default::default(),
            ended: None,
        })
    }

    /// Bootstrap, `Init.construct`, `ThreadMap.makeThread("misbehave")`.
    fn handshake(&mut self) -> Result<Handshake> {
        let q = self.question();
        let mut b = Builder::new_default();
        b.init_root::<message::Builder<'_>>()
            .init_bootstrap()
            .set_question_id(q);
        self.send(&b)?;
        self.asked.push(Asked {
            question: q,
            step: "bootstrap".into(),
            results: None,
            sent: Instant::now(),
        });
        self.init = only_cap(self.wait(q)?)?;
        // No ThreadMap of ours (see the module doc): params `(threadMap = null)`.
        let q = self.call(self.init, "Init", "construct", json!({}), &[])?;
        let thread_map = only_cap(self.wait(q)?)?;
        let q = self.call(
            thread_map,
            "ThreadMap",
            "makeThread",
            json!({"name": "misbehave"}),
            &[],
        )?;
        let thread = only_cap(self.wait(q)?)?;
        Ok(Handshake { thread_map, thread })
    }

    /// `Init.<method>(context)`, returning the capability made.
    fn make(&mut self, h: &Handshake, method: &str) -> Result<u32> {
        let q = self.call(
            self.init,
            "Init",
            method,
            json!({"context": h.context()}),
            &[h.thread],
        )?;
        only_cap(self.wait(q)?)
    }

    /// `Mining.getTip`: the tip's hash, as the encoder takes it back.
    fn get_tip(&mut self, h: &Handshake, mining: u32) -> Result<Json> {
        let q = self.call(
            mining,
            "Mining",
            "getTip",
            json!({"context": h.context()}),
            &[h.thread],
        )?;
        let (v, _) = self.wait(q)?.results()?;
        Ok(v["result"]["hash"].clone())
    }

    /// `destroy`, then a Release of every reference held: how a C++ client lets go.
    fn destroy(&mut self, h: &Handshake, cap: u32, iface: &str) -> Result<()> {
        let q = self.call(
            cap,
            iface,
            "destroy",
            json!({"context": h.context()}),
            &[h.thread],
        )?;
        self.wait(q)?.results()?;
        self.release(cap)
    }

    /// The lowest question id not in flight (the C++ client reuses ids the same way).
    fn question(&self) -> u32 {
        (0..)
            .find(|q| !self.asked.iter().any(|a| a.question == *q))
            .expect("fewer than 2^32 questions in flight")
    }

    fn send(&mut self, b: &Builder<capnp::message::HeapAllocator>) -> Result<()> {
        // One write per message, like a frame of the C++ client's.
        let mut out = Vec::new();
        capnp::serialize::write_message(&mut out, b)?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Calls `iface.name` of the master set on import `target`; `caps` are the node's
    /// capabilities the params name as `{"cap": N}` (index N), sent as `receiverHosted`.
    fn call(
        &mut self,
        target: u32,
        iface: &str,
        name: &str,
        params: Json,
        caps: &[u32],
    ) -> Result<u32> {
        let set = self.set.clone();
        let (iid, ord, params_id, results) = method(&set, iface, name)?;
        self.call_raw(
            target,
            (&format!("{iface}.{name}"), iid, ord),
            params_id,
            Some(results),
            params,
            caps,
        )
    }

    /// A call of ordinal `ord` on interface `iid` with params encoded as struct `params_id`
    /// (which need not be the method's); `results` decodes the answer.
    fn call_raw(
        &mut self,
        target: u32,
        (step, iid, ord): (&str, u64, u16),
        params_id: u64,
        results: Option<u64>,
        params: Json,
        caps: &[u32],
    ) -> Result<u32> {
        let q = self.question();
        let set = self.set.clone();
        let sets = [set.as_ref()];
        let bytes = encode::encode(Lookup::new(&sets), params_id, &params, &mut Indexed)
            .with_context(|| format!("{step}: encoding {params}"))?;
        let encoded = capnp::serialize::read_message(&mut bytes.as_slice(), ReaderOptions::new())?;
        let mut root: any_pointer::Reader<'_> = encoded.get_root()?;
        // Capability pointers copy only between messages with cap tables. The hooks are never
        // serialized; the copy numbers capabilities in pointer order, which is the order of
        // the indices given (every call here names at most one).
        let table: Vec<_> = (0..caps.len()).map(|_| Some(unused_hook())).collect();
        root.imbue(&table);
        let mut hooks = Vec::new();
        let mut b = Builder::new_default();
        {
            let mut c = b.init_root::<message::Builder<'_>>().init_call();
            c.set_question_id(q);
            c.set_interface_id(iid);
            c.set_method_id(ord);
            c.reborrow().init_target().set_imported_cap(target);
            let mut p: payload::Builder<'_> = c.init_params();
            let mut content = p.reborrow().get_content();
            content.imbue_mut(&mut hooks);
            content.set_as(root)?;
            let mut t = p.init_cap_table(caps.len() as u32);
            for (i, id) in caps.iter().enumerate() {
                let mut d: cap_descriptor::Builder<'_> = t.reborrow().get(i as u32);
                d.set_receiver_hosted(*id);
            }
        }
        self.send(&b)?;
        self.asked.push(Asked {
            question: q,
            step: step.to_string(),
            results,
            sent: Instant::now(),
        });
        Ok(q)
    }

    /// Drops every reference held on import `id`, in one Release.
    fn release(&mut self, id: u32) -> Result<()> {
        let count = self
            .imports
            .remove(&id)
            .ok_or_else(|| anyhow!("import {id} is not held"))?;
        let mut b = Builder::new_default();
        {
            let mut r = b.init_root::<message::Builder<'_>>().init_release();
            r.set_id(id);
            r.set_reference_count(count);
        }
        self.send(&b)?;
        emit(json!({"call": "release", "import": id, "count": count}));
        Ok(())
    }

    fn wait(&mut self, q: u32) -> Result<Outcome> {
        Ok(self.wait_first(&[q])?.1)
    }

    /// Reads until one of `questions` is answered; returns the first answered (buffered answers
    /// first, in the order they came), after printing it.
    fn wait_first(&mut self, questions: &[u32]) -> Result<(u32, Outcome)> {
        loop {
            if let Some(i) = self
                .answered
                .iter()
                .position(|(q, _)| questions.contains(q))
            {
                return Ok(self.answered.remove(i));
            }
            if let Some(end) = &self.ended {
                let q = questions[0];
                let end = end.clone();
                if let Some(i) = self.asked.iter().position(|a| a.question == q) {
                    let a = self.asked.remove(i);
                    self.print(&a, &end);
                }
                return Ok((q, end));
            }
            self.read_one()?;
        }
    }

    fn print(&self, a: &Asked, o: &Outcome) {
        let mut line = json!({"call": a.step, "question": a.question});
        match o {
            Outcome::Results { value, caps } => {
                line["outcome"] = "results".into();
                line["results"] = value.clone();
                if !caps.is_empty() {
                    line["imports"] = json!(caps);
                }
            }
            Outcome::Exception { kind, reason } | Outcome::Abort { kind, reason } => {
                line["outcome"] = if matches!(o, Outcome::Abort { .. }) {
                    "abort".into()
                } else {
                    "exception".into()
                };
                line["type"] = kind.as_str().into();
                line["reason"] = reason.as_str().into();
            }
            Outcome::Other(what) => line["outcome"] = what.as_str().into(),
            Outcome::Closed => line["outcome"] = "closed".into(),
        }
        line["ms"] = json!(a.sent.elapsed().as_millis() as u64);
        emit(line);
    }

    /// Reads one message and applies it.
    fn read_one(&mut self) -> Result<()> {
        let msg = match capnp::serialize::try_read_message(&mut self.stream, ReaderOptions::new()) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.ended = Some(Outcome::Closed);
                return Ok(());
            }
            Err(e) => return Err(e).context("reading from the node"),
        };
        let root: message::Reader<'_> = msg.get_root()?;
        match root.which()? {
            message::Return(r) => {
                let r = r?;
                let q = r.get_answer_id();
                let i = self
                    .asked
                    .iter()
                    .position(|a| a.question == q)
                    .ok_or_else(|| anyhow!("a Return for question {q}, which was not asked"))?;
                let asked = self.asked.remove(i);
                let outcome = self.outcome(r, asked.results)?;
                // Finished right away, keeping the capabilities of the results (C++ client).
                let mut b = Builder::new_default();
                {
                    let mut f = b.init_root::<message::Builder<'_>>().init_finish();
                    f.set_question_id(q);
                    f.set_release_result_caps(false);
                }
                self.send(&b)?;
                self.print(&asked, &outcome);
                self.answered.push((q, outcome));
            }
            message::Abort(e) => {
                let (kind, reason) = exception_of(e?)?;
                emit(json!({"call": "abort", "type": kind, "reason": reason}));
                self.ended = Some(Outcome::Abort { kind, reason });
            }
            // It drops a capability of ours: we export none (see the module doc).
            message::Release(_) => {}
            message::Unimplemented(_) => bail!("the node did not understand a message of ours"),
            message::Call(_) => bail!("the node called us, but we export nothing"),
            // Resolve and Disembargo concern promises and callbacks, which this client never
            // makes; anything else is not two-party RPC.
            _ => bail!("an unexpected message from the node (not a Return, Abort or Release)"),
        }
        Ok(())
    }

    fn outcome(&mut self, r: return_::Reader<'_>, results: Option<u64>) -> Result<Outcome> {
        Ok(match r.which()? {
            return_::Results(p) => {
                let p = p?;
                let mut caps = Vec::new();
                for d in p.get_cap_table()? {
                    match d.which()? {
                        cap_descriptor::SenderHosted(id) | cap_descriptor::SenderPromise(id) => {
                            *self.imports.entry(id).or_default() += 1;
                            caps.push(id);
                        }
                        _ => bail!("a result capability that is not the node's own"),
                    }
                }
                let value = match results {
                    Some(id) => self.decode(id, p)?,
                    None => Json::Null,
                };
                Outcome::Results { value, caps }
            }
            return_::Exception(e) => {
                let (kind, reason) = exception_of(e?)?;
                Outcome::Exception { kind, reason }
            }
            return_::Canceled(()) => Outcome::Other("canceled".into()),
            _ => Outcome::Other("unexpected return".into()),
        })
    }

    /// The results struct `id` in `p` as mpspy decodes it.
    fn decode(&self, id: u64, p: payload::Reader<'_>) -> Result<Json> {
        let mut content = p.get_content();
        let n = p.get_cap_table()?.len();
        let table: Vec<_> = (0..n).map(|_| Some(unused_hook())).collect();
        content.imbue(&table);
        let mut hooks = Vec::new();
        let mut b = Builder::new_default();
        {
            let mut root: any_pointer::Builder<'_> = b.init_root();
            root.imbue_mut(&mut hooks);
            root.set_as(content)?;
        }
        let mut bytes = Vec::new();
        capnp::serialize::write_message(&mut bytes, &b)?;
        let (m, _) = wire::Message::parse(&bytes)?;
        let sets = [self.set.as_ref()];
        let v = Walker::new(Lookup::new(&sets)).decode(id, m.root()?);
        Ok(serde_json::to_value(&v)?)
    }

    /// The end of a session of a C++ client: the objects it made are released (Init, the
    /// ThreadMap and the Thread are not), the socket is shut for writing, and the node's
    /// answer to that (an Abort "Peer disconnected.") is read to the end.
    fn close(mut self, h: &Handshake) -> Result<()> {
        if self.ended.is_none() {
            let mut made: Vec<u32> = self
                .imports
                .keys()
                .copied()
                .filter(|id| ![self.init, h.thread_map, h.thread].contains(id))
                .collect();
            made.sort_unstable();
            for id in made {
                self.release(id)?;
            }
            self.stream.shutdown(Shutdown::Write)?;
            while self.ended.is_none() {
                self.read_one()?;
            }
        }
        if matches!(self.ended, Some(Outcome::Closed)) {
            emit(json!({"call": "disconnect", "outcome": "closed"}));
        }
        Ok(())
    }
}

fn only_cap(a: Outcome) -> Result<u32> {
    match a.results()?.1.as_slice() {
        [id] => Ok(*id),
        caps => bail!("expected one capability, got {caps:?}"),
    }
}

fn exception_of(e: exception::Reader<'_>) -> Result<(String, String)> {
    let kind = match e.get_type()? {
        exception::Type::Failed => "failed",
        exception::Type::Overloaded => "overloaded",
        exception::Type::Disconnected => "disconnected",
        exception::Type::Unimplemented => "unimplemented",
    };
    let reason = e.get_reason()?.to_string()?;
    Ok((kind.into(), reason))
}

fn unused_hook() -> Box<dyn ClientHook> {
    capnp_rpc::new_broken_cap(capnp::Error::failed("never called".into())).hook
}

/// Capabilities named in params JSON as `{"cap": N}` are cap-table index N.
struct Indexed;

impl CapSource for Indexed {
    fn cap(&mut self, path: &str, _: Option<u64>, v: &Json) -> Result<u32, String> {
        v.get("cap")
            .and_then(Json::as_u64)
            .map(|i| i as u32)
            .ok_or_else(|| format!("{path}: give {{\"cap\": N}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_is_a_lint_id() {
        for case in CASES {
            assert!(
                mpspy_schema::lint::LintId::ALL
                    .iter()
                    .any(|id| id.as_str() == case),
                "{case}"
            );
        }
    }
}
