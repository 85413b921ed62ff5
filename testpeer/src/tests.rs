//! In-process sessions with the test peer's server: over an in-memory pipe with a tap that
//! decodes every message crossing it, so the tests check what the wire shows against what the
//! real peers do (the observations are in the module docs of `net`, `threads` and `client`).
//!
//! Timing checks compare orders and lower bounds only (a wait is never shorter than asked
//! for), so a loaded machine makes them slower, not flaky.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use capnp::capability::RemotePromise;
use capnp_rpc::rpc_capnp::{cap_descriptor, message, return_};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use crate::EXE_NAME;
use crate::client::{self, SessionOptions};
use crate::server::new_init;
use mpspy_client::net::{self, KeepUntilClose};
use mpspy_client::schema::init_capnp::init;
use mpspy_client::schema::mining_capnp::mining;
use mpspy_client::schema::proxy_capnp::{context, thread, thread_map};
use mpspy_client::threads;
use mpspy_client::threads::Names;

const MINING: u64 = 0xf9c6_8436_df3a_f39e;

/// A capability descriptor in a capTable, as far as the tests care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cap {
    SenderHosted(u32),
    ReceiverHosted(u32),
    ReceiverAnswer(u32),
    Other,
}

/// How a Return ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Results,
    Exception(String),
    Canceled,
    Other,
}

/// One message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    Bootstrap(u32),
    Call {
        question: u32,
        interface: u64,
        method: u16,
        caps: Vec<Cap>,
        /// `Payload.capTable` is a null pointer (the C++ runtime's way to say "no caps").
        no_cap_table: bool,
    },
    Return {
        answer: u32,
        outcome: Outcome,
        caps: Vec<Cap>,
        no_cap_table: bool,
        no_finish_needed: bool,
    },
    Finish(u32),
    Release {
        id: u32,
        count: u32,
    },
    Abort(String),
    Other,
    /// The sender closed its side.
    Eof,
}

/// A message as the tap saw it.
#[derive(Clone, Debug)]
struct Seen {
    from_client: bool,
    segments: usize,
    bytes: usize,
    msg: Msg,
}

type Log = Rc<RefCell<Vec<Seen>>>;

/// The length of the first whole frame in `buf`, from its segment table.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let word = |i: usize| {
        buf.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let segments = word(0)? + 1;
    let header = (4 + 4 * segments).next_multiple_of(8);
    let mut len = header;
    for i in 0..segments {
        len += 8 * word(1 + i)?;
    }
    (buf.len() >= len).then_some(len)
}

fn caps(table: capnp::struct_list::Reader<'_, cap_descriptor::Owned>) -> Vec<Cap> {
    table
        .iter()
        .map(|d| match d.which() {
            Ok(cap_descriptor::SenderHosted(id)) => Cap::SenderHosted(id),
            Ok(cap_descriptor::ReceiverHosted(id)) => Cap::ReceiverHosted(id),
            Ok(cap_descriptor::ReceiverAnswer(Ok(a))) => Cap::ReceiverAnswer(a.get_question_id()),
            _ => Cap::Other,
        })
        .collect()
}

fn decode(frame: &[u8]) -> (usize, Msg) {
    let segments = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize + 1;
    let reader = capnp::serialize::read_message_from_flat_slice(
        &mut &frame[..],
        capnp::message::ReaderOptions::new(),
    )
    .expect("a frame");
    let m: message::Reader<'_> = reader.get_root().unwrap();
    let msg = match m.which().unwrap() {
        message::Bootstrap(b) => Msg::Bootstrap(b.unwrap().get_question_id()),
        message::Call(c) => {
            let c = c.unwrap();
            let params = c.get_params().unwrap();
            Msg::Call {
                question: c.get_question_id(),
                interface: c.get_interface_id(),
                method: c.get_method_id(),
                caps: caps(params.get_cap_table().unwrap()),
                no_cap_table: !params.has_cap_table(),
            }
        }
        message::Return(r) => {
            let r = r.unwrap();
            let (outcome, caps, no_cap_table) = match r.which().unwrap() {
                return_::Results(p) => {
                    let p = p.unwrap();
                    (
                        Outcome::Results,
                        caps(p.get_cap_table().unwrap()),
                        !p.has_cap_table(),
                    )
                }
                return_::Exception(e) => (
                    Outcome::Exception(e.unwrap().get_reason().unwrap().to_string().unwrap()),
                    Vec::new(),
                    true,
                ),
                return_::Canceled(()) => (Outcome::Canceled, Vec::new(), true),
                _ => (Outcome::Other, Vec::new(), true),
            };
            Msg::Return {
                answer: r.get_answer_id(),
                outcome,
                caps,
                no_cap_table,
                no_finish_needed: r.get_no_finish_needed(),
            }
        }
        message::Finish(f) => Msg::Finish(f.unwrap().get_question_id()),
        message::Release(r) => {
            let r = r.unwrap();
            Msg::Release {
                id: r.get_id(),
                count: r.get_reference_count(),
            }
        }
        message::Abort(e) => Msg::Abort(e.unwrap().get_reason().unwrap().to_string().unwrap()),
        _ => Msg::Other,
    };
    (segments, msg)
}

/// Forwards frames from `from` to `to`, logging each before passing it on (so a message sent
/// into a closed pipe is still seen, as a relay sees the node's last Abort).
async fn pump(
    mut from: ReadHalf<DuplexStream>,
    mut to: WriteHalf<DuplexStream>,
    from_client: bool,
    log: Log,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = from.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            log.borrow_mut().push(Seen {
                from_client,
                segments: 0,
                bytes: 0,
                msg: Msg::Eof,
            });
            let _ = to.shutdown().await;
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = frame_len(&buf) {
            let frame: Vec<u8> = buf.drain(..len).collect();
            let (segments, msg) = decode(&frame);
            log.borrow_mut().push(Seen {
                from_client,
                segments,
                bytes: len,
                msg,
            });
            let _ = to.write_all(&frame).await;
        }
    }
}

/// A fresh test peer server on one end of a tapped pipe; returns the client's end.
fn serve_tapped(log: &Log) -> DuplexStream {
    let (client, tap_client) = tokio::io::duplex(1 << 20);
    let (tap_server, server) = tokio::io::duplex(1 << 20);
    let (cr, cw) = tokio::io::split(tap_client);
    let (sr, sw) = tokio::io::split(tap_server);
    tokio::task::spawn_local(pump(cr, sw, true, log.clone()));
    tokio::task::spawn_local(pump(sr, cw, false, log.clone()));
    tokio::task::spawn_local(net::rpc_system(
        server,
        new_init(Names::new(EXE_NAME)).client,
    ));
    client
}

/// Runs `f` on a current-thread runtime in a LocalSet, as the binary does.
fn local<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Waits (up to 10 s) until the log has a message `want` in it.
async fn until_seen(log: &Log, want: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.borrow().iter().any(&want) {
        assert!(Instant::now() < deadline, "not seen: {:#?}", log.borrow());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A hand-driven client session (capnp-rust calls, the test peer's connection handling) over a
/// tapped pipe; returns what `session` returned and the log, once the server has answered the
/// client's EOF.
fn tapped_session<T, F, Fut>(session: F) -> (T, Vec<Seen>)
where
    F: FnOnce(init::Client, KeepUntilClose) -> Fut,
    Fut: Future<Output = T>,
{
    local(async {
        let log = Log::default();
        let stream = serve_tapped(&log);
        let (result, problems) = net::as_client(stream, session).await;
        assert!(problems.is_empty(), "{problems:?}");
        until_seen(&log, |s| !s.from_client && s.msg == Msg::Eof).await;
        let seen = log.borrow().clone();
        (result, seen)
    })
}

fn fill(mut ctx: context::Builder<'_>, thread: Option<&thread::Client>) {
    if let Some(t) = thread {
        ctx.set_thread(t.clone());
    }
}

async fn construct(init: &init::Client) -> thread_map::Client {
    init.construct_request()
        .send()
        .promise
        .await
        .unwrap()
        .get()
        .unwrap()
        .get_thread_map()
        .unwrap()
}

async fn make_thread(thread_map: &thread_map::Client, name: &str) -> thread::Client {
    let mut req = thread_map.make_thread_request();
    req.get().set_name(name);
    req.send()
        .promise
        .await
        .unwrap()
        .get()
        .unwrap()
        .get_result()
        .unwrap()
}

async fn make_mining(init: &init::Client, thread: &thread::Client) -> mining::Client {
    let mut req = init.make_mining_request();
    fill(req.get().init_context(), Some(thread));
    req.send()
        .promise
        .await
        .unwrap()
        .get()
        .unwrap()
        .get_result()
        .unwrap()
}

/// Sends `waitTipChanged(timeout)` on `thread` (or on none) right away.
fn wait_tip(
    mining: &mining::Client,
    thread: Option<&thread::Client>,
    timeout_ms: f64,
) -> RemotePromise<mining::wait_tip_changed_results::Owned> {
    let mut req = mining.wait_tip_changed_request();
    fill(req.get().init_context(), thread);
    req.get().set_current_tip(&crate::blocks::TIP_HASH);
    req.get().set_timeout(timeout_ms);
    req.send()
}

/// Awaits each of `calls` (already sent) and returns their names in the order they returned,
/// with the time each took from `start`.
async fn finishing_order(
    start: Instant,
    calls: Vec<(
        &'static str,
        RemotePromise<mining::wait_tip_changed_results::Owned>,
    )>,
) -> Vec<(&'static str, Duration)> {
    let order = Rc::new(RefCell::new(Vec::new()));
    let waits = calls.into_iter().map(|(name, sent)| {
        let order = order.clone();
        async move {
            sent.promise.await.unwrap();
            order.borrow_mut().push((name, start.elapsed()));
        }
    });
    futures::future::join_all(waits).await;
    order.take()
}

fn names(order: &[(&'static str, Duration)]) -> Vec<&'static str> {
    order.iter().map(|(n, _)| *n).collect()
}

fn took(order: &[(&'static str, Duration)], name: &str) -> Duration {
    order.iter().find(|(n, _)| *n == name).unwrap().1
}

fn exception_text(e: capnp::Error) -> String {
    e.extra
        .strip_prefix("remote exception: ")
        .unwrap_or(&e.extra)
        .to_string()
}

#[test]
fn calls_on_one_server_thread_run_one_after_another() {
    let (order, _) = tapped_session(|init, _keep| async move {
        let thread_map = construct(&init).await;
        let t1 = make_thread(&thread_map, "t1").await;
        let mining = make_mining(&init, &t1).await;
        let start = Instant::now();
        // The short one was sent second: it waits for the long one to return.
        let calls = vec![
            ("long", wait_tip(&mining, Some(&t1), 300.0)),
            ("short", wait_tip(&mining, Some(&t1), 20.0)),
        ];
        finishing_order(start, calls).await
    });
    assert_eq!(names(&order), ["long", "short"], "{order:?}");
    assert!(
        took(&order, "short") >= Duration::from_millis(320),
        "{order:?}"
    );
}

#[test]
fn calls_on_different_server_threads_do_not_wait_for_each_other() {
    let (order, _) = tapped_session(|init, _keep| async move {
        let thread_map = construct(&init).await;
        let t1 = make_thread(&thread_map, "t1").await;
        let t2 = make_thread(&thread_map, "t2").await;
        let mining = make_mining(&init, &t1).await;
        let start = Instant::now();
        let calls = vec![
            ("long", wait_tip(&mining, Some(&t1), 600.0)),
            ("short", wait_tip(&mining, Some(&t2), 20.0)),
        ];
        finishing_order(start, calls).await
    });
    assert_eq!(names(&order), ["short", "long"], "{order:?}");
}

#[test]
fn a_canceled_call_still_runs_and_is_answered_canceled() {
    let (order, seen) = tapped_session(|init, _keep| async move {
        let thread_map = construct(&init).await;
        let t1 = make_thread(&thread_map, "t1").await;
        let mining = make_mining(&init, &t1).await;
        let start = Instant::now();
        let first = wait_tip(&mining, Some(&t1), 200.0);
        let canceled = wait_tip(&mining, Some(&t1), 300.0);
        // Dropping the call sends its Finish before its Return.
        drop(canceled);
        let last = wait_tip(&mining, Some(&t1), 20.0);
        finishing_order(start, vec![("first", first), ("last", last)]).await
    });
    // The canceled call kept the Thread for its whole wait, as on master.
    assert_eq!(names(&order), ["first", "last"], "{order:?}");
    assert!(
        took(&order, "last") >= Duration::from_millis(520),
        "{order:?}"
    );
    // On the wire: its Finish came early, its Return came late, and it says canceled.
    let first_wait = seen
        .iter()
        .position(|s| {
            matches!(
                s.msg,
                Msg::Call {
                    interface: MINING,
                    method: 3,
                    ..
                }
            )
        })
        .unwrap();
    let seen = &seen[first_wait..];
    let waits: Vec<u32> = seen
        .iter()
        .filter_map(|s| match s.msg {
            Msg::Call {
                question,
                interface: MINING,
                method: 3,
                ..
            } if s.from_client => Some(question),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 3, "{seen:#?}");
    let returns: Vec<(u32, Outcome)> = seen
        .iter()
        .filter_map(|s| match &s.msg {
            Msg::Return {
                answer, outcome, ..
            } if !s.from_client && waits.contains(answer) => Some((*answer, outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        returns,
        [
            (waits[0], Outcome::Results),
            (waits[1], Outcome::Canceled),
            (waits[2], Outcome::Results)
        ],
        "{seen:#?}"
    );
}

#[test]
fn a_pool_takes_calls_without_thread_on_its_least_busy_thread() {
    let (order, _) = tapped_session(|init, _keep| async move {
        let thread_map = construct(&init).await;
        let t1 = make_thread(&thread_map, "t1").await;
        let mining = make_mining(&init, &t1).await;
        let mut req = thread_map.make_pool_request();
        req.get().set_count(2);
        req.send().promise.await.unwrap();
        let start = Instant::now();
        // pool/0: a then c (a tie goes to the lower index); pool/1: b then d (pool/0 has two).
        let calls = vec![
            ("a", wait_tip(&mining, None, 400.0)),
            ("b", wait_tip(&mining, None, 50.0)),
            ("c", wait_tip(&mining, None, 50.0)),
            ("d", wait_tip(&mining, None, 50.0)),
        ];
        finishing_order(start, calls).await
    });
    // What master answers to the same four calls (observed: 204, 405, 608, 805 ms).
    assert_eq!(names(&order), ["b", "d", "a", "c"], "{order:?}");
    assert!(took(&order, "c") >= Duration::from_millis(450), "{order:?}");
    assert!(took(&order, "d") >= Duration::from_millis(100), "{order:?}");
}

#[test]
fn thread_and_pool_errors_say_what_master_says() {
    let (texts, _) = tapped_session(|init, _keep| async move {
        let mut texts = Vec::new();
        let thread_map = construct(&init).await;
        let t1 = make_thread(&thread_map, "t1").await;
        let mining = make_mining(&init, &t1).await;
        let fails = |sent: RemotePromise<mining::wait_tip_changed_results::Owned>| async move {
            exception_text(sent.promise.await.err().expect("an exception"))
        };
        texts.push(fails(wait_tip(&mining, None, 1.0)).await);
        // A Thread the client hosts is not one of the server's.
        let foreign = threads::callback_thread("mine".to_string());
        texts.push(fails(wait_tip(&mining, Some(&foreign), 1.0)).await);
        // makePool(0) makes no pool (a later makePool still works) ...
        let pool = |count: u32| {
            let mut req = thread_map.make_pool_request();
            req.get().set_count(count);
            req.send().promise
        };
        pool(0).await.unwrap();
        texts.push(fails(wait_tip(&mining, None, 1.0)).await);
        pool(1).await.unwrap();
        wait_tip(&mining, None, 1.0).promise.await.unwrap();
        // ... but a second one fails, also through another ThreadMap of the connection.
        texts.push(exception_text(pool(1).await.err().unwrap()));
        let other = construct(&init).await;
        let mut req = other.make_pool_request();
        req.get().set_count(1);
        texts.push(exception_text(req.send().promise.await.err().unwrap()));
        texts
    });
    assert_eq!(
        texts,
        [
            "std::exception: no thread specified and no pool configured",
            "std::exception: invalid thread handle",
            "std::exception: no thread specified and no pool configured",
            "std::exception: makePool called on connection with existing pool",
            "std::exception: makePool called on connection with existing pool",
        ]
    );
}

#[test]
fn unknown_methods_are_refused_in_the_cpp_runtimes_words() {
    let (texts, _) = tapped_session(|init, _keep| async move {
        let call = |interface: u64, method: u16| {
            init.client
                .new_call::<capnp::any_pointer::Owned, capnp::any_pointer::Owned>(
                    interface, method, None,
                )
                .send()
                .promise
        };
        let init_id = 0x8838_c700_ba5c_ba65;
        let echo_id = 0xd36b_8964_0dc9_4399;
        let mut texts = Vec::new();
        for (interface, method) in [(init_id, 5), (echo_id, 1)] {
            let e = call(interface, method).await.err().unwrap();
            assert_eq!(e.kind, capnp::ErrorKind::Unimplemented);
            texts.push(exception_text(e));
        }
        // The last ordinal is still dispatched (it fails for want of a Context instead).
        texts.push(exception_text(call(init_id, 4).await.err().unwrap()));
        texts
    });
    assert_eq!(
        texts,
        [
            "Method not implemented.; interfaceName = capnp/init.capnp:Init; typeId = 9815814193794562661; methodId = 5",
            "Requested interface not implemented.; actualInterfaceName = capnp/init.capnp:Init; requestedTypeId = 15234421227331863449",
            "std::exception: no thread specified and no pool configured",
        ]
    );
}

/// The test peer's own client, `--rpc getblockcount` (bitcoin-cli's session), `--echo` twice
/// and `--mining` before it so there are several Context calls.
fn client_session(opts: SessionOptions) -> Vec<Seen> {
    local(async {
        let log = Log::default();
        let stream = serve_tapped(&log);
        client::run_over(stream, &opts).await.unwrap();
        until_seen(&log, |s| !s.from_client && s.msg == Msg::Eof).await;
        log.borrow().clone()
    })
}

fn full_session() -> Vec<Seen> {
    client_session(SessionOptions {
        echo: vec!["a".into(), "b".into()],
        mining: true,
        rpc: vec!["getblockcount".into()],
        ..SessionOptions::default()
    })
}

fn from_client(seen: &[Seen]) -> Vec<&Msg> {
    seen.iter()
        .filter(|s| s.from_client)
        .map(|s| &s.msg)
        .collect()
}

fn from_server(seen: &[Seen]) -> Vec<&Msg> {
    seen.iter()
        .filter(|s| !s.from_client)
        .map(|s| &s.msg)
        .collect()
}

/// The Context calls that carry a callbackThread (a second capTable entry).
fn context_calls(seen: &[Seen]) -> Vec<(u32, Cap)> {
    from_client(seen)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Call { question, caps, .. } if caps.len() == 2 => Some((*question, caps[1])),
            _ => None,
        })
        .collect()
}

#[test]
fn the_client_sends_one_callback_thread_export_on_every_call() {
    let seen = full_session();
    let calls = context_calls(&seen);
    assert!(calls.len() > 10, "{seen:#?}");
    // Export 0 is the client's ThreadMap (in construct), 1 its one callbackThread.
    assert!(
        calls.iter().all(|(_, cb)| *cb == Cap::SenderHosted(1)),
        "{calls:?}"
    );
    let exported: std::collections::BTreeSet<u32> = from_client(&seen)
        .iter()
        .filter_map(|m| match m {
            Msg::Call { caps, .. } => Some(caps.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|c| match c {
            Cap::SenderHosted(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(exported, [0, 1].into(), "{seen:#?}");
}

#[test]
fn the_server_releases_each_callback_thread_after_the_return() {
    let seen = full_session();
    let calls: Vec<u32> = context_calls(&seen).into_iter().map(|(q, _)| q).collect();
    // The client makes one call at a time, so the k-th Return of such a call goes with the
    // k-th Release of export 1.
    let server = from_server(&seen);
    let mut pending = calls.iter();
    let mut returned = Vec::new();
    let mut released = Vec::new();
    for (i, m) in server.iter().enumerate() {
        match m {
            Msg::Return { answer, .. } if pending.clone().next() == Some(answer) => {
                pending.next();
                returned.push(i);
            }
            Msg::Release { id: 1, count: 1 } => released.push(i),
            _ => {}
        }
    }
    assert_eq!(returned.len(), calls.len(), "{server:#?}");
    assert_eq!(released.len(), calls.len(), "{server:#?}");
    for (ret, rel) in returned.iter().zip(&released) {
        assert!(rel > ret, "Release before its Return: {server:#?}");
    }
}

#[test]
fn the_client_finishes_every_answer_and_closes_like_bitcoin_cli() {
    let seen = client_session(SessionOptions {
        echo: Vec::new(),
        rpc: vec!["getblockcount".into()],
        ..SessionOptions::default()
    });
    let client = from_client(&seen);
    let server = from_server(&seen);
    // bitcoin-cli's calls: construct, makeThread + makeRpc, executeRpc.
    let methods: Vec<(u64, u16)> = client
        .iter()
        .filter_map(|m| match m {
            Msg::Call {
                interface, method, ..
            } => Some((*interface, *method)),
            _ => None,
        })
        .collect();
    let init = 0x8838_c700_ba5c_ba65;
    assert_eq!(
        methods,
        [
            (init, 0),
            (0xee5e_3717_9ad9_dc9d, 0),
            (init, 4),
            (0xacb1_d37f_0a71_3129, 0)
        ]
    );
    // Every question but the bootstrap one is Finished after its Return (the bootstrap stays
    // pipelined: see the `client` module docs).
    let bootstrap = client
        .iter()
        .find_map(|m| match m {
            Msg::Bootstrap(q) => Some(*q),
            _ => None,
        })
        .unwrap();
    let questions: Vec<u32> = client
        .iter()
        .filter_map(|m| match m {
            Msg::Call { question, .. } => Some(*question),
            _ => None,
        })
        .collect();
    let finishes = client
        .iter()
        .filter(|m| matches!(m, Msg::Finish(q) if *q != bootstrap))
        .count();
    assert_eq!(finishes, questions.len(), "{client:#?}");
    // The end: Release of the Rpc (the executeRpc target), then EOF; no Abort, and no
    // Release of the server's ThreadMap (import 1) or Thread.
    let rpc_import = server
        .iter()
        .rev()
        .find_map(|m| match m {
            Msg::Return { caps, .. } => caps.first().copied(),
            _ => None,
        })
        .unwrap();
    let Cap::SenderHosted(rpc_import) = rpc_import else {
        panic!("{server:#?}")
    };
    assert_eq!(
        &client[client.len() - 2..],
        [
            &Msg::Release {
                id: rpc_import,
                count: 1
            },
            &Msg::Eof
        ],
        "{client:#?}"
    );
    assert!(!client.iter().any(|m| matches!(m, Msg::Abort(_))));
    let released: Vec<u32> = client
        .iter()
        .filter_map(|m| match m {
            Msg::Release { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    // Import 0 (Init) is released right after the bootstrap Return: the documented capnp-rust
    // difference. Nothing else but the Rpc.
    assert_eq!(released, [0, rpc_import], "{client:#?}");
    // The server's answer to the client's EOF.
    let eof = seen
        .iter()
        .position(|s| s.from_client && s.msg == Msg::Eof)
        .unwrap();
    assert!(
        seen[eof..]
            .iter()
            .any(|s| !s.from_client && s.msg == Msg::Abort("Peer disconnected.".into())),
        "{seen:#?}"
    );
}

#[test]
fn messages_have_the_cpp_runtimes_shape() {
    let seen = full_session();
    for s in &seen {
        match &s.msg {
            Msg::Return {
                no_finish_needed,
                caps,
                no_cap_table,
                ..
            } => {
                assert!(!no_finish_needed, "{s:?}");
                assert_eq!(*no_cap_table, caps.is_empty(), "{s:?}");
            }
            Msg::Call {
                caps, no_cap_table, ..
            } => assert_eq!(*no_cap_table, caps.is_empty(), "{s:?}"),
            _ => {}
        }
    }
    // The bootstrap Return: one segment, 96 bytes, as from bitcoin-node.
    let bootstrap = seen
        .iter()
        .find(|s| !s.from_client && matches!(s.msg, Msg::Return { answer: 0, .. }))
        .unwrap();
    assert_eq!(
        (bootstrap.segments, bootstrap.bytes),
        (1, 96),
        "{bootstrap:?}"
    );
}

#[test]
fn frames_are_measured_from_their_segment_table() {
    // Two segments (2 and 1 words): 4 + 2×4 bytes of table, padded to 16, plus 24.
    let mut frame = vec![1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    frame.extend_from_slice(&[0; 24]);
    assert_eq!(frame_len(&frame), Some(40));
    assert_eq!(frame_len(&frame[..39]), None);
    assert_eq!(frame_len(&frame[..3]), None);
}
