//! Matching without processes, and a served table driven by the client runtime over an
//! in-process pipe.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use mpspy_schema::decode::Lookup;
use mpspy_schema::value::CapValue;
use mpspy_schema::{SchemaSet, Value};
use serde_json::{Value as Json, json};

use super::*;
use crate::ClientError;
use crate::runtime::{self, Call, Repeat};

fn master() -> Arc<SchemaSet> {
    mpspy_schema::sets::builtin("master").unwrap()
}

/// `(interface id, ordinal)` of `Interface.method` in master.
fn id(set: &SchemaSet, step: &str) -> (u64, u16) {
    let (iface, method) = step.split_once('.').unwrap();
    let (iid, node) = set.interfaces().find(|(_, i)| i.name == iface).unwrap();
    (
        iid,
        node.methods
            .iter()
            .find(|m| m.name == method)
            .unwrap()
            .ordinal,
    )
}

fn recorded(seq: u64, params: Json, answer: Answer) -> Recorded {
    Recorded {
        seq,
        params,
        answer,
        latency: Duration::ZERO,
    }
}

fn results(v: Json) -> Answer {
    Answer::Results(v)
}

fn cap(interface: &str) -> Value {
    Value::Cap(CapValue {
        index: 0,
        interface: Some(interface.into()),
        name: None,
    })
}

#[test]
fn capabilities_and_the_context_are_left_out_of_params() {
    let set = master();
    let sets = [&*set];
    let lookup = Lookup::new(&sets);
    let (iid, ord) = id(&set, "Echo.echo");
    let params = set.method(iid, ord).unwrap().1.params;
    let both = Value::Struct(vec![
        (
            "context".into(),
            Value::Struct(vec![
                ("thread".into(), cap("Thread")),
                ("callbackThread".into(), cap("Thread")),
            ]),
        ),
        ("echo".into(), Value::Text("hi".into())),
    ]);
    // pycapnp sets only `thread`: the same params.
    let thread_only = Value::Struct(vec![
        (
            "context".into(),
            Value::Struct(vec![
                ("thread".into(), cap("Thread")),
                ("callbackThread".into(), Value::Null),
            ]),
        ),
        ("echo".into(), Value::Text("hi".into())),
    ]);
    assert_eq!(matchable(lookup, params, &both), json!({"echo": "hi"}));
    assert_eq!(
        matchable(lookup, params, &thread_only),
        json!({"echo": "hi"})
    );
    // Data and nested structs stay.
    let (iid, ord) = id(&set, "Mining.checkBlock");
    let params = set.method(iid, ord).unwrap().1.params;
    let v = Value::Struct(vec![
        (
            "context".into(),
            Value::Struct(vec![("thread".into(), cap("Thread"))]),
        ),
        ("block".into(), Value::Data(vec![0; 2])),
        (
            "options".into(),
            Value::Struct(vec![("checkPow".into(), Value::Bool(true))]),
        ),
    ]);
    assert_eq!(
        matchable(lookup, params, &v),
        json!({"block": {"len": 2, "hex": "0000"}, "options": {"checkPow": true}})
    );
}

/// Three recorded echoes: "a", "b", "a".
fn echo_table() -> (Rc<Table>, u64, u16) {
    let set = master();
    let (iid, ord) = id(&set, "Echo.echo");
    let table = Table::from_calls(
        set,
        [
            (
                iid,
                ord,
                recorded(10, json!({"echo": "a"}), results(json!({"result": "a1"}))),
            ),
            (
                iid,
                ord,
                recorded(20, json!({"echo": "b"}), results(json!({"result": "b"}))),
            ),
            (
                iid,
                ord,
                recorded(30, json!({"echo": "a"}), results(json!({"result": "a2"}))),
            ),
        ],
    );
    (Rc::new(table), iid, ord)
}

#[test]
fn equal_params_first_then_the_next_unused_call_then_a_clear_exception() {
    let (table, iid, ord) = echo_table();
    let mut r = Replies::new(table.clone());
    let take = |r: &mut Replies, echo: &str| r.take(iid, ord, &json!({"echo": echo}), false);
    // The oldest unused call with equal params, even when an older one has other params.
    let p = take(&mut r, "b").unwrap();
    assert_eq!((p.recorded.seq, p.same_params), (20, true));
    let p = take(&mut r, "a").unwrap();
    assert_eq!((p.recorded.seq, p.same_params), (10, true));
    // No equal params left: the next unused call, said to differ.
    let p = take(&mut r, "b").unwrap();
    assert_eq!((p.recorded.seq, p.same_params), (30, false));
    assert_eq!(
        take(&mut r, "a").unwrap_err(),
        "mpspy serve: no recorded Echo.echo call left to answer (recorded 3, all used)"
    );
    // Another connection starts with every answer unused.
    let mut fresh = Replies::new(table);
    assert_eq!(take(&mut fresh, "a").unwrap().recorded.seq, 10);
}

#[test]
fn strict_matching_wants_equal_params() {
    let (table, iid, ord) = echo_table();
    let mut r = Replies::new(table);
    assert_eq!(
        r.take(iid, ord, &json!({"echo": "c"}), true).unwrap_err(),
        "mpspy serve: no recorded Echo.echo call left to answer, none with these params (recorded 3, 3 unused with other params)"
    );
    assert_eq!(
        r.take(iid, ord, &json!({"echo": "a"}), true)
            .unwrap()
            .recorded
            .seq,
        10
    );
}

#[test]
fn methods_the_recording_lacks_or_used_up_are_named() {
    let set = master();
    let (tip, tip_ord) = id(&set, "Mining.getTip");
    let (iid, ord) = id(&set, "Mining.isTestChain");
    let table = Rc::new(Table::from_calls(
        set,
        [
            (tip, tip_ord, recorded(1, json!({}), results(json!({})))),
            (tip, tip_ord, recorded(2, json!({}), results(json!({})))),
        ],
    ));
    let mut r = Replies::new(table);
    assert_eq!(
        r.take(iid, ord, &json!({}), false).unwrap_err(),
        "mpspy serve: no recorded Mining.isTestChain call to answer with (the recording has none)"
    );
    r.take(tip, tip_ord, &json!({}), false).unwrap();
    r.take(tip, tip_ord, &json!({}), false).unwrap();
    assert_eq!(
        r.take(tip, tip_ord, &json!({}), false).unwrap_err(),
        "mpspy serve: no recorded Mining.getTip call left to answer (recorded 2, both used)"
    );
}

/// Serves `table` to the client runtime running `steps`; the runtime's result and the notes.
fn serve_chain(
    table: Table,
    steps: &[(&str, Json)],
) -> (Result<runtime::Outcome, ClientError>, Vec<Note>) {
    let set = master();
    let calls: Vec<Call> = steps
        .iter()
        .map(|(s, a)| Call::plan(&set, s, a).unwrap())
        .collect();
    let notes: Rc<RefCell<Vec<Note>>> = Rc::default();
    let heard = notes.clone();
    let result = crate::block_on(async move {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let server = tokio::task::spawn_local(serve_connection(
            theirs,
            Rc::new(table),
            Options::default(),
            Names::new("serve-test"),
            Rc::new(move |n| heard.borrow_mut().push(n)),
        ));
        let result =
            runtime::run_chain(ours, Names::new("client"), &calls, Repeat::default()).await;
        let _ = server.await;
        result
    })
    .unwrap();
    let notes = notes.take();
    (result, notes)
}

#[test]
fn a_served_recording_answers_the_runtime_with_capabilities_and_exceptions() {
    let set = master();
    let (make, make_ord) = id(&set, "Init.makeEcho");
    let (echo, echo_ord) = id(&set, "Echo.echo");
    let table = |extra: Vec<(u64, u16, Recorded)>| {
        let mut calls = vec![(
            make,
            make_ord,
            recorded(
                1,
                json!({}),
                results(json!({"result": {"cap": "Echo#5", "index": 0, "interface": "Echo"}})),
            ),
        )];
        calls.extend(extra);
        Table::from_calls(master(), calls)
    };
    let steps = [
        ("Init.makeEcho", json!({})),
        ("Echo.echo", json!({"echo": "hi"})),
    ];
    // construct and makeThread by the runtime; makeEcho's Echo is a served object; destroy
    // answered without the table.
    let (result, notes) = serve_chain(
        table(vec![(
            echo,
            echo_ord,
            recorded(
                2,
                json!({"echo": "hi"}),
                results(json!({"result": "recorded hi"})),
            ),
        )]),
        &steps,
    );
    let outcome = result.unwrap();
    let sets = [&*set];
    assert_eq!(
        serde_json::to_value(outcome.results.decode(Lookup::new(&sets))).unwrap(),
        json!({"result": "recorded hi"})
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        matches!(&notes[1], Note::Answered { method, recorded_seq: 2, same_params: true, .. } if method == "Echo.echo")
    );

    // A recorded exception comes back as one.
    let (result, _) = serve_chain(
        table(vec![(
            echo,
            echo_ord,
            recorded(
                2,
                json!({"echo": "hi"}),
                Answer::Exception {
                    kind: "failed".into(),
                    reason: "std::exception: recorded".into(),
                },
            ),
        )]),
        &steps,
    );
    match result {
        Err(ClientError::Exception {
            method,
            kind,
            reason,
        }) => {
            assert_eq!((method.as_str(), kind.as_str()), ("Echo.echo", "failed"));
            assert_eq!(reason, "std::exception: recorded");
        }
        other => panic!("expected the recorded exception, got {other:?}"),
    }

    // Nothing recorded for Echo.echo: the clear exception, and a note.
    let (result, notes) = serve_chain(table(vec![]), &steps);
    match result {
        Err(ClientError::Exception { reason, .. }) => assert_eq!(
            reason,
            "mpspy serve: no recorded Echo.echo call to answer with (the recording has none)"
        ),
        other => panic!("expected an exception, got {other:?}"),
    }
    assert!(matches!(notes.last(), Some(Note::Unmatched { method, .. }) if method == "Echo.echo"));
}

fn call_event(seq: u64, set: &SchemaSet, step: &str, params: Value) -> Event {
    let (iid, ord) = id(set, step);
    let (interface, method) = step.split_once('.').unwrap();
    Event {
        seq,
        t_ns: seq,
        conn: 1,
        dir: Some(Direction::ClientToServer),
        kind: EventKind::Call(mpspy_schema::event::CallEvent {
            question: seq as u32,
            interface: interface.into(),
            method: method.into(),
            interface_id: iid,
            method_id: ord,
            target: String::new(),
            thread: None,
            callback_thread: None,
            parent_seq: None,
            params,
            cap_table: Vec::new(),
            bytes: 0,
        }),
    }
}

fn return_event(seq: u64, call_seq: u64, results: Option<Value>, exception: Option<&str>) -> Event {
    Event {
        seq,
        t_ns: seq,
        conn: 1,
        dir: Some(Direction::ServerToClient),
        kind: EventKind::Return(mpspy_schema::event::ReturnEvent {
            answer: call_seq as u32,
            call_seq: Some(call_seq),
            interface: String::new(),
            method: String::new(),
            outcome: if exception.is_some() {
                "exception"
            } else {
                "results"
            }
            .into(),
            latency_ns: Some(1_000),
            results,
            exception: exception.map(|r| mpspy_schema::rpc::ExceptionInfo {
                kind: "failed",
                reason: r.into(),
                trace: String::new(),
            }),
            thread: None,
            cap_table: Vec::new(),
            bytes: 0,
        }),
    }
}

#[test]
fn the_table_keeps_call_order_and_leaves_out_what_it_cannot_or_need_not_answer() {
    let set = master();
    let echo = |t: &str| Value::Struct(vec![("echo".into(), Value::Text(t.into()))]);
    let result = |t: &str| {
        Some(Value::Struct(vec![(
            "result".into(),
            Value::Text(t.into()),
        )]))
    };
    let mut b = TableBuilder::new();
    for e in [
        call_event(1, &set, "Init.construct", Value::Struct(vec![])),
        call_event(2, &set, "Echo.echo", echo("first")),
        call_event(3, &set, "Echo.echo", echo("second")),
        // Returned out of order: the table still has the calls in call order.
        return_event(4, 3, result("second"), None),
        return_event(5, 2, result("first"), None),
        return_event(6, 1, Some(Value::Struct(vec![])), None),
        call_event(7, &set, "Echo.destroy", Value::Struct(vec![])),
        return_event(8, 7, Some(Value::Struct(vec![])), None),
        call_event(9, &set, "Mining.getTip", Value::Struct(vec![])),
        return_event(10, 9, None, Some("std::exception: tip")),
        // Never answered.
        call_event(11, &set, "Echo.echo", echo("third")),
    ] {
        b.event(&e);
    }
    let table = b.finish(set.clone());
    assert_eq!(
        table.methods(),
        [
            ("Echo.echo".to_string(), 2),
            ("Mining.getTip".to_string(), 1)
        ]
    );
    assert_eq!(table.unanswered(), 1);
    let (iid, ord) = id(&set, "Echo.echo");
    let calls = &table.methods[&(iid, ord)].calls;
    assert_eq!(calls[0].params, json!({"echo": "first"}));
    assert_eq!(calls[0].answer, results(json!({"result": "first"})));
    assert_eq!(calls[0].latency, Duration::from_micros(1));
    let (iid, ord) = id(&set, "Mining.getTip");
    assert_eq!(
        table.methods[&(iid, ord)].calls[0].answer,
        Answer::Exception {
            kind: "failed".into(),
            reason: "std::exception: tip".into()
        }
    );
}
