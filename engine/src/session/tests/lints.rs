//! One test per lint: the smallest traffic that provokes it, checked to fire once with the
//! right id, next to the nearest traffic that must stay quiet.

use capnp_rpc::rpc_capnp::exception;

use super::*;
use crate::lint::{LintConfig, LintId, Severity};

/// The lints among `events`.
fn lints(events: &[Event]) -> Vec<&Lint> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Lint(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn ids(events: &[Event]) -> Vec<LintId> {
    lints(events).iter().map(|l| l.id).collect()
}

/// Context with the server Thread (import 2 after the handshake) and no callback thread.
fn on_worker() -> (Json, [Desc; 1]) {
    (
        json!({"context": {"thread": {"cap": 0}}}),
        [Desc::ReceiverHosted(2)],
    )
}

/// `Init.makeEcho` as question `q`, answered with Echo as export `export` of the server.
fn make_echo(r: &mut Run, q: u32, export: u32) -> Vec<Event> {
    let (ctx, caps) = on_worker();
    let mut ev = r.feed(C2S, &call(q, To::Import(0), "Init", "makeEcho", ctx, &caps));
    ev.extend(r.feed(
        S2C,
        &results(
            q,
            Some(("Init", "makeEcho")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(export)],
        ),
    ));
    ev.extend(r.feed(C2S, &finish(q)));
    ev
}

/// `Init.makeMining` as question `q`, answered with Mining as export `export`.
fn make_mining(r: &mut Run, q: u32, export: u32) {
    let (ctx, caps) = on_worker();
    r.feed(
        C2S,
        &call(q, To::Import(0), "Init", "makeMining", ctx, &caps),
    );
    r.feed(
        S2C,
        &results(
            q,
            Some(("Init", "makeMining")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(export)],
        ),
    );
    r.feed(C2S, &finish(q));
}

fn unimplemented(answer: u32) -> Vec<u8> {
    let mut b = Builder::new_default();
    {
        let mut r = b.init_root::<message::Builder<'_>>().init_return();
        r.set_answer_id(answer);
        let mut e = r.init_exception();
        e.set_type(exception::Type::Unimplemented);
        e.set_reason("Method not implemented.");
    }
    frame(&b)
}

/// A [`Run`] whose session lints with `config`.
fn run_with(config: LintConfig) -> Run {
    let mut r = Run::new();
    r.s = Session::new(SchemaConfig {
        choice: Choice::Fixed("master".into()),
        user: Vec::new(),
        ..SchemaConfig::default()
    })
    .with_lints(config);
    r.s.open(1, 0, "test", None, None);
    r.s.drain();
    r
}

fn closed(r: &mut Run) -> Vec<Event> {
    r.s.close(1, r.t + 1_000, "eof from client");
    r.s.drain()
}

#[test]
fn handshake_and_a_well_behaved_client_are_quiet() {
    let mut r = Run::new();
    r.handshake();
    let mut ev = make_echo(&mut r, 3, 5);
    let (ctx, caps) = on_worker();
    ev.extend(r.feed(C2S, &call(4, To::Import(5), "Echo", "destroy", ctx, &caps)));
    ev.extend(r.feed(S2C, &results(4, Some(("Echo", "destroy")), json!({}), &[])));
    ev.extend(r.feed(C2S, &release(5, 1)));
    ev.extend(closed(&mut r));
    assert_eq!(ids(&ev), []);
}

#[test]
fn thread_busy_fires_for_a_second_call_on_a_thread_that_runs_one() {
    let mut r = Run::new();
    r.handshake();
    let (ctx, caps) = on_worker();
    let ev = r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeEcho", ctx.clone(), &caps),
    );
    assert_eq!(ids(&ev), []);
    let ev = r.feed(
        C2S,
        &call(4, To::Import(0), "Init", "makeMining", ctx.clone(), &caps),
    );
    let (call_event, _) = the_call(&ev);
    let l = only(&ev, |k| match k {
        EventKind::Lint(l) => Some(l),
        _ => None,
    });
    assert_eq!(l.id, LintId::ThreadBusy);
    assert_eq!(l.severity, Severity::Warning);
    assert_eq!(l.call_seq, Some(call_event.seq));
    assert_eq!(l.thread.as_deref(), Some("worker"));
    assert_eq!(l.method.as_deref(), Some("Init.makeMining"));
    // Once both returned, the thread is free again.
    r.feed(S2C, &exception(3, "done"));
    r.feed(S2C, &exception(4, "done"));
    let ev = r.feed(C2S, &call(5, To::Import(0), "Init", "makeEcho", ctx, &caps));
    assert_eq!(ids(&ev), []);
}

#[test]
fn a_call_made_from_inside_a_callback_does_not_make_the_thread_busy() {
    let mut r = Run::new();
    r.handshake();
    let (ctx, caps) = on_worker();
    r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeEcho", ctx.clone(), &caps),
    );
    // The server calls back into the client while q3 waits on it...
    r.feed(
        S2C,
        &call(0, To::Import(7), "Echo", "echo", json!({"echo": "cb"}), &[]),
    );
    // ...and the client's callback calls the server on the same thread: libmultiprocess runs it.
    let ev = r.feed(
        C2S,
        &call(4, To::Import(0), "Init", "makeMining", ctx, &caps),
    );
    assert_eq!(ids(&ev), []);
}

#[test]
fn null_thread_fires_for_a_context_without_thread_until_a_pool_exists() {
    let mut r = Run::new();
    r.handshake();
    let ev = r.feed(
        C2S,
        &call(
            3,
            To::Import(0),
            "Init",
            "makeEcho",
            json!({"context": {}}),
            &[],
        ),
    );
    let l = only(&ev, |k| match k {
        EventKind::Lint(l) => Some(l),
        _ => None,
    });
    assert_eq!((l.id, l.severity), (LintId::NullThread, Severity::Error));
    // A method without Context needs no thread.
    let ev = r.feed(
        C2S,
        &call(4, To::Import(0), "Init", "construct", json!({}), &[]),
    );
    assert_eq!(ids(&ev), []);
    // After makePool, calls without a thread go to the pool.
    r.feed(
        C2S,
        &call(
            5,
            To::Import(1),
            "ThreadMap",
            "makePool",
            json!({"count": 2}),
            &[],
        ),
    );
    let ev = r.feed(
        C2S,
        &call(
            6,
            To::Import(0),
            "Init",
            "makeEcho",
            json!({"context": {}}),
            &[],
        ),
    );
    assert_eq!(ids(&ev), []);
}

#[test]
fn unimplemented_method_fires_once_per_method() {
    let mut r = Run::new();
    r.handshake();
    r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeMining", json!({}), &[]),
    );
    let ev = r.feed(S2C, &unimplemented(3));
    assert_eq!(ids(&ev), [LintId::UnimplementedMethod]);
    assert_eq!(
        lints(&ev)[0].method.as_deref(),
        Some("Init.makeMining"),
        "{ev:#?}"
    );
    r.feed(
        C2S,
        &call(4, To::Import(0), "Init", "makeMining", json!({}), &[]),
    );
    let ev = r.feed(S2C, &unimplemented(4));
    assert_eq!(ids(&ev), []);
    // Bitcoin Core's stub for retired ordinals is the same mistake (bitcoin/bitcoin#34568).
    r.feed(
        C2S,
        &call(5, To::Import(0), "Init", "makeEcho", json!({}), &[]),
    );
    let ev = r.feed(
        S2C,
        &exception(
            5,
            "std::exception: Old mining interface (@2) not supported. Please update your client!",
        ),
    );
    assert_eq!(ids(&ev), [LintId::UnimplementedMethod]);
}

#[test]
fn unknown_ordinal_fires_once_and_is_not_also_a_schema_mismatch_lint() {
    let mut r = Run::new();
    r.handshake();
    let (iid, _, params, _) = method("Init", "construct");
    let ev = r.feed(
        C2S,
        &call_raw(3, To::Import(0), (iid, 99), params, json!({}), &[]),
    );
    assert_eq!(ids(&ev), [LintId::UnknownOrdinal]);
    assert_eq!(lints(&ev)[0].method.as_deref(), Some("Init.@99"));
    // The mismatch event names the missing method, not a struct size (seen against the real
    // node with Echo @9: "params of @9 arrived as 0w/1p, which master does not expect").
    let reason = only(&ev, |k| match k {
        EventKind::SchemaMismatch { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(
        reason.starts_with("master has no method @99 on this interface"),
        "{reason}"
    );
    let ev = r.feed(
        C2S,
        &call_raw(4, To::Import(0), (iid, 99), params, json!({}), &[]),
    );
    assert_eq!(ids(&ev), []);
}

#[test]
fn released_without_destroy_fires_when_a_destroyable_capability_is_released() {
    let mut r = Run::new();
    r.handshake();
    make_echo(&mut r, 3, 5);
    let ev = r.feed(C2S, &release(5, 1));
    let l = only(&ev, |k| match k {
        EventKind::Lint(l) => Some(l),
        _ => None,
    });
    assert_eq!(
        (l.id, l.cap.as_deref()),
        (LintId::ReleasedWithoutDestroy, Some("Echo#3"))
    );
    // Interfaces without destroy are freed by their release.
    make_mining(&mut r, 4, 6);
    let ev = r.feed(C2S, &release(6, 1));
    assert_eq!(ids(&ev), []);
}

#[test]
fn alive_at_disconnect_fires_per_destroyable_capability_left_alive() {
    let mut r = Run::new();
    r.handshake();
    make_echo(&mut r, 3, 5);
    make_mining(&mut r, 4, 6);
    let ev = closed(&mut r);
    let l = only(&ev, |k| match k {
        EventKind::Lint(l) => Some(l),
        _ => None,
    });
    assert_eq!(
        (l.id, l.cap.as_deref()),
        (LintId::AliveAtDisconnect, Some("Echo#3"))
    );
    assert!(
        matches!(
            ev.last().map(|e| &e.kind),
            Some(EventKind::ConnClosed { .. })
        ),
        "conn_closed stays the last event"
    );
}

#[test]
fn polling_storm_fires_once_per_storm() {
    let mut r = Run::new();
    r.handshake();
    make_mining(&mut r, 3, 6);
    let mut fired = Vec::new();
    // 30 waitTipChanged in 60 µs (the test clock advances 1 µs per frame), each answered.
    for q in 0..30 {
        let q = 10 + 2 * q;
        fired.extend(
            lints(&r.feed(
                C2S,
                &call(
                    q,
                    To::Import(6),
                    "Mining",
                    "waitTipChanged",
                    on_worker().0,
                    &on_worker().1,
                ),
            ))
            .into_iter()
            .cloned(),
        );
        r.feed(S2C, &exception(q, "timeout"));
    }
    assert_eq!(
        fired.iter().map(|l| l.id).collect::<Vec<_>>(),
        [LintId::PollingStorm]
    );
    assert_eq!(fired[0].method.as_deref(), Some("Mining.waitTipChanged"));
}

#[test]
fn polling_storm_follows_the_configured_rate_and_untimed_sources_never_storm() {
    let run = |config: LintConfig, timed: bool| {
        let mut r = run_with(config);
        if !timed {
            r.s.set_untimed();
        }
        r.handshake();
        make_mining(&mut r, 3, 6);
        let mut n = 0;
        for q in 10..40 {
            n += ids(&r.feed(
                C2S,
                &call(
                    q,
                    To::Import(6),
                    "Mining",
                    "waitTipChanged",
                    on_worker().0,
                    &on_worker().1,
                ),
            ))
            .iter()
            .filter(|id| **id == LintId::PollingStorm)
            .count();
        }
        n
    };
    assert_eq!(run(LintConfig::default(), true), 1);
    assert_eq!(run(LintConfig::default(), false), 0);
    let lax = LintConfig {
        poll_rate: 1e6,
        ..LintConfig::default()
    };
    assert_eq!(run(lax, true), 0);
}

#[test]
fn long_poll_at_disconnect_fires_for_a_long_poll_still_waiting() {
    let mut r = Run::new();
    r.handshake();
    make_mining(&mut r, 3, 6);
    let ev = r.feed(
        C2S,
        &call(
            4,
            To::Import(6),
            "Mining",
            "waitTipChanged",
            on_worker().0,
            &on_worker().1,
        ),
    );
    let seq = the_call(&ev).0.seq;
    // An ordinary pending call is not a long poll.
    r.feed(
        C2S,
        &call(
            5,
            To::Import(6),
            "Mining",
            "isTestChain",
            on_worker().0,
            &on_worker().1,
        ),
    );
    let ev = closed(&mut r);
    let l = only(&ev, |k| match k {
        EventKind::Lint(l) => Some(l),
        _ => None,
    });
    assert_eq!(
        (l.id, l.call_seq, l.severity),
        (LintId::LongPollAtDisconnect, Some(seq), Severity::Info)
    );
}

#[test]
fn call_after_release_fires_for_a_released_or_destroyed_capability() {
    let mut r = Run::new();
    r.handshake();
    make_mining(&mut r, 3, 6);
    r.feed(C2S, &release(6, 1));
    let ev = r.feed(
        C2S,
        &call(
            4,
            To::Import(6),
            "Mining",
            "isTestChain",
            on_worker().0,
            &on_worker().1,
        ),
    );
    let l = only(&ev, |k| match k {
        EventKind::Lint(l) => Some(l),
        _ => None,
    });
    assert_eq!(
        (l.id, l.cap.as_deref(), l.severity),
        (LintId::CallAfterRelease, Some("Mining#3"), Severity::Error)
    );
    // What the real node does (the test peer too): the connection goes, not just the call.
    assert!(
        l.message
            .contains("aborts the connection ('Message target is not a current export ID.')"),
        "{}",
        l.message
    );
    r.feed(S2C, &exception(4, "Called null capability"));
    // A reused id is a new object: calls on it are fine.
    make_mining(&mut r, 5, 6);
    let ev = r.feed(
        C2S,
        &call(
            6,
            To::Import(6),
            "Mining",
            "isTestChain",
            on_worker().0,
            &on_worker().1,
        ),
    );
    assert_eq!(ids(&ev), []);
    r.feed(S2C, &exception(6, "fine"));
    // After destroy, before the release.
    make_echo(&mut r, 7, 8);
    let (ctx, caps) = on_worker();
    r.feed(
        C2S,
        &call(9, To::Import(8), "Echo", "destroy", ctx.clone(), &caps),
    );
    r.feed(S2C, &results(9, Some(("Echo", "destroy")), json!({}), &[]));
    let ev = r.feed(C2S, &call(10, To::Import(8), "Echo", "echo", ctx, &caps));
    assert_eq!(ids(&ev), [LintId::CallAfterRelease]);
}

#[test]
fn schema_mismatch_fires_with_the_mismatch_event() {
    let mut r = Run::new();
    r.handshake();
    // Init.makeEcho's params with waitTipChanged's params struct (another size).
    let (iid, ord, _, _) = method("Init", "makeEcho");
    let (_, _, other, _) = method("Mining", "waitTipChanged");
    let ev = r.feed(
        C2S,
        &call_raw(
            3,
            To::Import(0),
            (iid, ord),
            other,
            on_worker().0,
            &on_worker().1,
        ),
    );
    assert_eq!(ids(&ev), [LintId::SchemaMismatch]);
    assert!(
        ev.iter()
            .any(|e| matches!(e.kind, EventKind::SchemaMismatch { .. }))
    );
}

#[test]
fn a_call_on_an_interface_no_set_knows_is_a_schema_mismatch_that_says_so() {
    let mut r = Run::new();
    r.handshake();
    let (_, _, params, _) = method("Init", "construct");
    let ev = r.feed(
        C2S,
        &call_raw(3, To::Import(0), (0x1234, 0), params, json!({}), &[]),
    );
    assert_eq!(ids(&ev), [LintId::SchemaMismatch]);
    let reason = only(&ev, |k| match k {
        EventKind::SchemaMismatch { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(
        reason.starts_with("master has no interface 0x0000000000001234"),
        "{reason}"
    );
}

#[test]
fn allowed_lints_are_not_reported() {
    let mut r = run_with(LintConfig {
        allow: vec![LintId::AliveAtDisconnect],
        ..LintConfig::default()
    });
    r.handshake();
    make_echo(&mut r, 3, 5);
    assert_eq!(ids(&closed(&mut r)), []);
}
