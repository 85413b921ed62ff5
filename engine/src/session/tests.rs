//! The state machine, one RPC message kind and one edge case at a time. Frames are built with
//! capnp-rust's generated `rpc_capnp` builders (an encoder we did not write) and params with
//! the schema-driven encoder, against the built-in `master` schemas, and fed to a [`Session`]
//! directly: no sockets, no threads, no clock.

use capnp::message::{Builder, HeapAllocator, ReaderOptions};
use capnp::traits::{Imbue, ImbueMut};
use capnp_rpc::rpc_capnp::{cap_descriptor, message, payload};
use mpspy_schema::encode::{self, CapSource};
use mpspy_schema::event::{CallEvent, ReturnEvent};
use mpspy_schema::sets;
use serde_json::{Value as Json, json};

use super::*;

mod lints;
mod stuck;

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

/// What a cap descriptor in a test frame says.
#[derive(Clone, Copy)]
enum Desc {
    SenderHosted(u32),
    ReceiverHosted(u32),
    ReceiverAnswer(u32, u16),
}

/// What a call is aimed at.
#[derive(Clone, Copy)]
enum To {
    Import(u32),
    /// The answer to a question, at a pointer field of its results.
    Answer(u32, Option<u16>),
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

fn master() -> Arc<SchemaSet> {
    sets::builtin("master").expect("built-in master set")
}

/// (interface id, method ordinal, params struct, results struct) of `Interface.method`.
fn method(iface: &str, name: &str) -> (u64, u16, u64, u64) {
    let set = master();
    let (id, i) = set
        .interfaces()
        .find(|(_, i)| i.name == iface)
        .unwrap_or_else(|| panic!("no interface {iface}"));
    let m = i
        .methods
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no method {iface}.{name}"));
    (id, m.ordinal, m.params, m.results)
}

fn frame(b: &Builder<HeapAllocator>) -> Vec<u8> {
    let mut out = Vec::new();
    capnp::serialize::write_message(&mut out, b).expect("writes to a Vec");
    out
}

/// Fills `content` with struct `id` encoded from `json` by the schema-driven encoder.
fn set_content<'a>(
    p: payload::Builder<'a>,
    hooks: &'a mut capnp::private::layout::CapTable,
    id: u64,
    json: &Json,
) {
    let set = master();
    let sets = [set.as_ref()];
    let bytes = encode::encode(Lookup::new(&sets), id, json, &mut Indexed).expect("encodes");
    let msg = capnp::serialize::read_message(&mut bytes.as_slice(), ReaderOptions::new())
        .expect("encoder output reads back");
    let mut root: capnp::any_pointer::Reader<'_> = msg.get_root().expect("root");
    // Capability pointers copy only between messages with cap tables; the hooks are never
    // serialized, and the copy numbers them in pointer order (tests give indices in that
    // order).
    let table: Vec<_> = (0..8).map(|_| Some(unused_hook())).collect();
    root.imbue(&table);
    let mut content = p.get_content();
    content.imbue_mut(hooks);
    content.set_as(root).expect("copies");
}

fn unused_hook() -> Box<dyn capnp::private::capability::ClientHook> {
    capnp_rpc::new_broken_cap(capnp::Error::failed("unused".into())).hook
}

fn set_caps(p: payload::Builder<'_>, caps: &[Desc]) {
    let mut table = p.init_cap_table(caps.len() as u32);
    for (i, d) in caps.iter().enumerate() {
        let mut t: cap_descriptor::Builder<'_> = table.reborrow().get(i as u32);
        match *d {
            Desc::SenderHosted(id) => t.set_sender_hosted(id),
            Desc::ReceiverHosted(id) => t.set_receiver_hosted(id),
            Desc::ReceiverAnswer(q, field) => {
                let mut pa = t.init_receiver_answer();
                pa.set_question_id(q);
                pa.init_transform(1).get(0).set_get_pointer_field(field);
            }
        }
    }
}

fn bootstrap(question: u32) -> Vec<u8> {
    let mut b = Builder::new_default();
    b.init_root::<message::Builder<'_>>()
        .init_bootstrap()
        .set_question_id(question);
    frame(&b)
}

fn call(question: u32, to: To, iface: &str, name: &str, params: Json, caps: &[Desc]) -> Vec<u8> {
    let (iid, ord, params_id, _) = method(iface, name);
    call_raw(question, to, (iid, ord), params_id, params, caps)
}

/// A call of ordinal `ord` on interface `iid` whose params are struct `params_id` (which need
/// not be the method's: schema mismatches are made this way).
fn call_raw(
    question: u32,
    to: To,
    (iid, ord): (u64, u16),
    params_id: u64,
    params: Json,
    caps: &[Desc],
) -> Vec<u8> {
    let mut hooks = Vec::new();
    let mut b = Builder::new_default();
    {
        let mut c = b.init_root::<message::Builder<'_>>().init_call();
        c.set_question_id(question);
        c.set_interface_id(iid);
        c.set_method_id(ord);
        match to {
            To::Import(id) => c.reborrow().init_target().set_imported_cap(id),
            To::Answer(q, field) => {
                let mut pa = c.reborrow().init_target().init_promised_answer();
                pa.set_question_id(q);
                if let Some(f) = field {
                    pa.init_transform(1).get(0).set_get_pointer_field(f);
                }
            }
        }
        let mut p = c.init_params();
        set_content(p.reborrow(), &mut hooks, params_id, &params);
        set_caps(p, caps);
    }
    frame(&b)
}

/// A return with `iface.name`'s results (`None`: the bootstrap capability, index 0).
fn results(answer: u32, of: Option<(&str, &str)>, json: Json, caps: &[Desc]) -> Vec<u8> {
    let mut hooks = Vec::new();
    let mut b = Builder::new_default();
    {
        let mut r = b.init_root::<message::Builder<'_>>().init_return();
        r.set_answer_id(answer);
        let mut p = r.init_results();
        match of {
            Some((iface, name)) => {
                set_content(p.reborrow(), &mut hooks, method(iface, name).3, &json)
            }
            // The bootstrap answer is a capability pointer (index 0 of the cap table); the
            // hook itself is never serialized.
            None => {
                let mut content = p.reborrow().get_content();
                content.imbue_mut(&mut hooks);
                content.set_as_capability(unused_hook());
            }
        }
        set_caps(p, caps);
    }
    frame(&b)
}

fn exception(answer: u32, reason: &str) -> Vec<u8> {
    let mut b = Builder::new_default();
    {
        let mut r = b.init_root::<message::Builder<'_>>().init_return();
        r.set_answer_id(answer);
        r.init_exception().set_reason(reason);
    }
    frame(&b)
}

fn canceled(answer: u32) -> Vec<u8> {
    let mut b = Builder::new_default();
    {
        let mut r = b.init_root::<message::Builder<'_>>().init_return();
        r.set_answer_id(answer);
        r.set_canceled(());
    }
    frame(&b)
}

fn finish(question: u32) -> Vec<u8> {
    let mut b = Builder::new_default();
    b.init_root::<message::Builder<'_>>()
        .init_finish()
        .set_question_id(question);
    frame(&b)
}

fn release(id: u32, count: u32) -> Vec<u8> {
    let mut b = Builder::new_default();
    {
        let mut r = b.init_root::<message::Builder<'_>>().init_release();
        r.set_id(id);
        r.set_reference_count(count);
    }
    frame(&b)
}

/// A session on connection 1, with a clock that advances 1 µs per frame.
struct Run {
    s: Session,
    t: u64,
}

impl Run {
    fn new() -> Self {
        let mut s = Session::new(SchemaConfig {
            choice: Choice::Fixed("master".into()),
            user: Vec::new(),
            ..SchemaConfig::default()
        });
        s.open(1, 0, "test", None, None);
        s.drain();
        Run { s, t: 0 }
    }

    /// Feeds one frame; returns the events it produced.
    fn feed(&mut self, dir: Direction, bytes: &[u8]) -> Vec<Event> {
        self.t += 1_000;
        self.s.frame(1, dir, self.t, 0, bytes);
        self.s.drain()
    }

    /// Bootstrap, `Init.construct` on it, `ThreadMap.makeThread("worker")` on the result:
    /// the start of every libmultiprocess client. Leaves Init as import 0 and the Thread as
    /// import 2 of the client.
    fn handshake(&mut self) {
        self.feed(C2S, &bootstrap(0));
        self.feed(
            S2C,
            &results(0, None, json!(null), &[Desc::SenderHosted(0)]),
        );
        self.feed(C2S, &finish(0));
        self.feed(
            C2S,
            &call(1, To::Import(0), "Init", "construct", json!({}), &[]),
        );
        self.feed(
            S2C,
            &results(
                1,
                Some(("Init", "construct")),
                json!({"threadMap": {"cap": 0}}),
                &[Desc::SenderHosted(1)],
            ),
        );
        self.feed(C2S, &finish(1));
        self.feed(
            C2S,
            &call(
                2,
                To::Import(1),
                "ThreadMap",
                "makeThread",
                json!({"name": "worker"}),
                &[],
            ),
        );
        self.feed(
            S2C,
            &results(
                2,
                Some(("ThreadMap", "makeThread")),
                json!({"result": {"cap": 0}}),
                &[Desc::SenderHosted(2)],
            ),
        );
        self.feed(C2S, &finish(2));
    }
}

fn only<'e, T>(events: &'e [Event], pick: impl Fn(&'e EventKind) -> Option<T>) -> T {
    let mut found: Vec<T> = events.iter().filter_map(|e| pick(&e.kind)).collect();
    assert_eq!(found.len(), 1, "{events:#?}");
    found.remove(0)
}

fn the_call(events: &[Event]) -> (&Event, &CallEvent) {
    let e = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Call(_)))
        .unwrap_or_else(|| panic!("no call in {events:#?}"));
    let EventKind::Call(c) = &e.kind else {
        unreachable!()
    };
    (e, c)
}

fn the_return(events: &[Event]) -> &ReturnEvent {
    only(events, |k| match k {
        EventKind::Return(r) => Some(r),
        _ => None,
    })
}

#[test]
fn bootstrap_is_a_question_whose_answer_names_the_capability() {
    let mut r = Run::new();
    let ev = r.feed(C2S, &bootstrap(0));
    let seq = ev[0].seq;
    assert!(matches!(
        ev[0].kind,
        EventKind::Bootstrap { question: 0, .. }
    ));
    let ev = r.feed(
        S2C,
        &results(0, None, json!(null), &[Desc::SenderHosted(0)]),
    );
    let ret = the_return(&ev);
    assert_eq!(
        (ret.method.as_str(), ret.call_seq),
        ("bootstrap", Some(seq))
    );
    let created = only(&ev, |k| match k {
        EventKind::CapCreated(c) => Some(c),
        _ => None,
    });
    assert_eq!((created.host, created.export_id), (Side::Server, 0));
    // A call on it learns the interface, and the capability is named after it.
    let ev = r.feed(
        C2S,
        &call(1, To::Import(0), "Init", "construct", json!({}), &[]),
    );
    assert_eq!(the_call(&ev).1.target, "Init#0");
}

#[test]
fn a_call_pairs_with_its_return_by_question_and_reports_latency_and_thread() {
    let mut r = Run::new();
    r.handshake();
    let ev = r.feed(
        C2S,
        &call(
            3,
            To::Import(0),
            "Init",
            "makeEcho",
            json!({"context": {"thread": {"cap": 0}, "callbackThread": {"cap": 1}}}),
            &[Desc::ReceiverHosted(2), Desc::SenderHosted(7)],
        ),
    );
    let (call_event, c) = the_call(&ev);
    assert_eq!(
        (c.interface.as_str(), c.method.as_str()),
        ("Init", "makeEcho")
    );
    // The server thread is the name given to makeThread.
    assert_eq!(c.thread.as_deref(), Some("worker"));
    let ev = r.feed(
        S2C,
        &results(
            3,
            Some(("Init", "makeEcho")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(3)],
        ),
    );
    let ret = the_return(&ev);
    assert_eq!(ret.call_seq, Some(call_event.seq));
    assert_eq!(ret.outcome, "results");
    assert_eq!(ret.latency_ns, Some(1_000));
    assert_eq!(ret.thread.as_deref(), Some("worker"));
    let stats = r.s.stats();
    let m = &stats.lock().methods["Init.makeEcho"];
    assert_eq!((m.count, m.errors, m.cancels), (1, 0, 0));
}

#[test]
fn an_exception_return_is_counted_as_an_error() {
    let mut r = Run::new();
    r.handshake();
    r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeEcho", json!({}), &[]),
    );
    let ev = r.feed(S2C, &exception(3, "remote exception: boom"));
    let ret = the_return(&ev);
    assert_eq!(ret.outcome, "exception");
    assert_eq!(
        ret.exception.as_ref().map(|e| e.reason.as_str()),
        Some("remote exception: boom")
    );
    assert_eq!(r.s.stats().lock().methods["Init.makeEcho"].errors, 1);
}

#[test]
fn finish_before_return_is_a_cancel_and_the_late_return_still_pairs() {
    let mut r = Run::new();
    r.handshake();
    let ev = r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeEcho", json!({}), &[]),
    );
    let seq = the_call(&ev).0.seq;
    let ev = r.feed(C2S, &finish(3));
    let (call_seq, cancel) = only(&ev, |k| match k {
        EventKind::Finish {
            call_seq, cancel, ..
        } => Some((*call_seq, *cancel)),
        _ => None,
    });
    assert_eq!((call_seq, cancel), (Some(seq), true));
    let ev = r.feed(S2C, &canceled(3));
    let ret = the_return(&ev);
    assert_eq!(
        (ret.outcome.as_str(), ret.call_seq),
        ("canceled", Some(seq))
    );
    // One call canceled: counted at its Finish, and its canceled return is the same cancel.
    assert_eq!(r.s.stats().lock().methods["Init.makeEcho"].cancels, 1);
    // Return + Finish: the question id is free; reusing it pairs with the new call.
    let ev = r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeMining", json!({}), &[]),
    );
    let seq2 = the_call(&ev).0.seq;
    let ev = r.feed(S2C, &exception(3, "no"));
    let ret = the_return(&ev);
    assert_eq!(
        (ret.method.as_str(), ret.call_seq),
        ("makeMining", Some(seq2))
    );
}

#[test]
fn a_call_pipelined_on_an_answer_is_named_by_the_promise_then_by_the_capability() {
    let mut r = Run::new();
    r.handshake();
    r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeEcho", json!({}), &[]),
    );
    // Echo.echo on the not-yet-returned answer of question 3, pointer field 0.
    let ev = r.feed(
        C2S,
        &call(
            4,
            To::Answer(3, Some(0)),
            "Echo",
            "echo",
            json!({"echo": "hi"}),
            &[],
        ),
    );
    let (_, c) = the_call(&ev);
    assert_eq!(c.target, "answer(q3).ptr0");
    assert_eq!(c.params.field("echo").and_then(Value::as_text), Some("hi"));
    let ev = r.feed(
        S2C,
        &results(
            3,
            Some(("Init", "makeEcho")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(3)],
        ),
    );
    let created = only(&ev, |k| match k {
        EventKind::CapCreated(c) => Some(c),
        _ => None,
    });
    // The interface the pipelined call used names the capability.
    assert_eq!(created.cap, "Echo#3");
    // Another call on the same answer now names the capability.
    let ev = r.feed(
        C2S,
        &call(5, To::Answer(3, Some(0)), "Echo", "echo", json!({}), &[]),
    );
    assert_eq!(the_call(&ev).1.target, "Echo#3");
}

#[test]
fn releases_count_references_down_and_the_last_one_frees_the_capability() {
    let mut r = Run::new();
    r.handshake();
    r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeEcho", json!({}), &[]),
    );
    r.feed(
        S2C,
        &results(
            3,
            Some(("Init", "makeEcho")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(5)],
        ),
    );
    // Sent again in another answer: two references.
    r.feed(
        C2S,
        &call(4, To::Import(0), "Init", "makeEcho", json!({}), &[]),
    );
    r.feed(
        S2C,
        &results(
            4,
            Some(("Init", "makeEcho")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(5)],
        ),
    );
    let ev = r.feed(C2S, &release(5, 1));
    let remaining = only(&ev, |k| match k {
        EventKind::Release { remaining, cap, .. } => Some((*remaining, cap.clone())),
        _ => None,
    });
    // Names count capabilities in the order they appeared (Init, ThreadMap, Thread, Echo).
    assert_eq!(remaining, (1, "Echo#3".to_string()));
    assert!(
        !ev.iter()
            .any(|e| matches!(e.kind, EventKind::CapReleased { .. }))
    );
    let ev = r.feed(C2S, &release(5, 1));
    let freed = only(&ev, |k| match k {
        EventKind::CapReleased { cap, .. } => Some(cap.cap.clone()),
        _ => None,
    });
    assert_eq!(freed, "Echo#3");
}

#[test]
fn a_reused_export_id_is_a_new_capability_with_a_new_name() {
    let mut r = Run::new();
    r.handshake();
    let make = |r: &mut Run, q: u32, (iface, on): (&str, &str), name: &str| {
        r.feed(C2S, &call(q, To::Import(0), "Init", name, json!({}), &[]));
        r.feed(
            S2C,
            &results(
                q,
                Some(("Init", name)),
                json!({"result": {"cap": 0}}),
                &[Desc::SenderHosted(6)],
            ),
        );
        r.feed(C2S, &finish(q));
        r.feed(C2S, &call(q + 1, To::Import(6), iface, on, json!({}), &[]))
    };
    let ev = make(&mut r, 3, ("Echo", "destroy"), "makeEcho");
    assert_eq!(the_call(&ev).1.target, "Echo#3");
    r.feed(C2S, &release(6, 1));
    let ev = make(&mut r, 10, ("Mining", "isTestChain"), "makeMining");
    let target = &the_call(&ev).1.target;
    assert!(target.starts_with("Mining#"), "{target}");
    assert_ne!(target, "Echo#3");
}

#[test]
fn a_return_whose_call_was_never_seen_still_shows() {
    let mut r = Run::new();
    let ev = r.feed(S2C, &exception(42, "late"));
    let ret = the_return(&ev);
    assert_eq!(
        (ret.interface.as_str(), ret.method.as_str(), ret.call_seq),
        ("?", "answer 42", None)
    );
    assert_eq!(ret.latency_ns, None);
}

#[test]
fn resolve_and_disembargo_are_reported() {
    let mut r = Run::new();
    let mut b = Builder::new_default();
    {
        let mut res = b.init_root::<message::Builder<'_>>().init_resolve();
        res.set_promise_id(9);
        res.init_cap().set_sender_hosted(10);
    }
    let ev = r.feed(S2C, &frame(&b));
    let promise = only(&ev, |k| match k {
        EventKind::Resolve { promise, .. } => Some(*promise),
        _ => None,
    });
    assert_eq!(promise, 9);
    let mut b = Builder::new_default();
    {
        let mut d = b.init_root::<message::Builder<'_>>().init_disembargo();
        d.reborrow().init_target().set_imported_cap(10);
        d.init_context().set_sender_loopback(1);
    }
    let ev = r.feed(C2S, &frame(&b));
    let target = only(&ev, |k| match k {
        EventKind::Disembargo { target, .. } => Some(target.clone()),
        _ => None,
    });
    assert_eq!(target, MessageTarget::ImportedCap(10));
}

#[test]
fn abort_and_unimplemented_are_reported() {
    let mut r = Run::new();
    let mut b = Builder::new_default();
    b.init_root::<message::Builder<'_>>()
        .init_abort()
        .set_reason("Peer disconnected.");
    let ev = r.feed(S2C, &frame(&b));
    let reason = only(&ev, |k| match k {
        EventKind::Abort { exception } => Some(exception.reason.clone()),
        _ => None,
    });
    assert_eq!(reason, "Peer disconnected.");
    let mut b = Builder::new_default();
    b.init_root::<message::Builder<'_>>()
        .init_unimplemented()
        .init_bootstrap()
        .set_question_id(0);
    let ev = r.feed(C2S, &frame(&b));
    assert!(matches!(
        ev[0].kind,
        EventKind::Unimplemented {
            question: Some(0),
            ..
        }
    ));
}

#[test]
fn closing_reports_pending_calls_and_live_capabilities_then_frees_the_connection() {
    let mut r = Run::new();
    r.handshake();
    let ev = r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeMining", json!({}), &[]),
    );
    let seq = the_call(&ev).0.seq;
    r.s.close(1, r.t + 5_000, "eof from client");
    let ev = r.s.drain();
    let (pending, live) = only(&ev, |k| match k {
        EventKind::ConnClosed {
            pending_calls,
            live_caps,
            ..
        } => Some((pending_calls.clone(), live_caps.clone())),
        _ => None,
    });
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].call_seq,
            pending[0].method.as_str(),
            pending[0].elapsed_ns
        ),
        (seq, "Init.makeMining", 5_000)
    );
    // Init, ThreadMap and the Thread are still referenced.
    assert_eq!(live.len(), 3);
    assert_eq!(r.s.stats().lock().methods["Init.makeMining"].unanswered, 1);
    assert!(r.s.conns.is_empty(), "a closed connection's state is freed");
    // A stray frame afterwards is reported, not taken for a new connection.
    let ev = r.feed(S2C, &exception(3, "late"));
    assert!(
        matches!(
            ev[..],
            [Event {
                kind: EventKind::Undecodable { .. },
                ..
            }]
        ),
        "{ev:#?}"
    );
    // Closing twice reports once.
    r.s.close(1, r.t, "again");
    assert!(r.s.drain().is_empty());
}

#[test]
fn a_malformed_frame_is_undecodable_and_the_next_one_decodes() {
    let mut r = Run::new();
    let ev = r.feed(C2S, &[0, 0, 0, 0, 9, 0, 0, 0, 1, 2, 3]);
    assert!(
        matches!(
            ev[..],
            [Event {
                kind: EventKind::Undecodable { .. },
                ..
            }]
        ),
        "{ev:#?}"
    );
    let ev = r.feed(C2S, &bootstrap(0));
    assert!(matches!(ev[0].kind, EventKind::Bootstrap { .. }));
}

#[test]
fn the_same_items_give_the_same_events_whichever_entry_point() {
    // apply(Tapped) and the direct calls are one path.
    let frames = [
        bootstrap(0),
        results(0, None, json!(null), &[Desc::SenderHosted(0)]),
    ];
    let mut a = Run::new();
    let direct: Vec<Event> = [C2S, S2C]
        .into_iter()
        .zip(&frames)
        .flat_map(|(d, f)| a.feed(d, f))
        .collect();
    let mut b = Session::new(SchemaConfig {
        choice: Choice::Fixed("master".into()),
        user: Vec::new(),
        ..SchemaConfig::default()
    });
    b.apply(&Tapped::Opened {
        conn: 1,
        t_ns: 0,
        label: "test".into(),
        client: None,
        server: None,
    });
    b.drain();
    for (i, (d, f)) in [C2S, S2C].into_iter().zip(&frames).enumerate() {
        b.apply(&Tapped::Frame {
            conn: 1,
            dir: d,
            t_ns: (i as u64 + 1) * 1_000,
            offset: 0,
            bytes: f.clone(),
        });
    }
    assert_eq!(format!("{:?}", b.drain()), format!("{direct:?}"));
}

#[test]
fn a_thread_from_a_pipelined_make_thread_names_the_lane_before_its_answer_arrives() {
    let mut r = Run::new();
    r.handshake();
    // libmultiprocess clients send makeThread and the call using its answer in one write.
    r.feed(
        C2S,
        &call(
            3,
            To::Import(1),
            "ThreadMap",
            "makeThread",
            json!({"name": "pipelined"}),
            &[],
        ),
    );
    let ev = r.feed(
        C2S,
        &call(
            4,
            To::Import(0),
            "Init",
            "makeEcho",
            json!({"context": {"thread": {"cap": 0}}}),
            &[Desc::ReceiverAnswer(3, 0)],
        ),
    );
    assert_eq!(the_call(&ev).1.thread.as_deref(), Some("pipelined"));
}
