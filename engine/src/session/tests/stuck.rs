//! Stuck calls: a call pending longer than its limit is reported once, naming its lane and
//! what that thread did before it; long polls are judged by their own timeout.

use super::*;
use crate::lint::LintConfig;

const S: u64 = 1_000_000_000;

/// The `stuck` events among `events`, as (method, thread, limit, last on thread).
fn stuck(events: &[Event]) -> Vec<(String, Option<String>, u64, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Stuck {
                interface,
                method,
                thread,
                limit_ns,
                last_on_thread,
                ..
            } => Some((
                qualified(interface, method),
                thread.clone(),
                *limit_ns,
                last_on_thread.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Context with the server Thread (import 2 after the handshake).
fn on_worker() -> (Json, [Desc; 1]) {
    (
        json!({"context": {"thread": {"cap": 0}}}),
        [Desc::ReceiverHosted(2)],
    )
}

/// A handshaken session with `Init.makeMining` answered at 0 s: the worker thread's last call.
fn ready() -> Run {
    let mut r = Run::new();
    r.handshake();
    let (ctx, caps) = on_worker();
    r.feed(
        C2S,
        &call(3, To::Import(0), "Init", "makeMining", ctx, &caps),
    );
    r.feed(
        S2C,
        &results(
            3,
            Some(("Init", "makeMining")),
            json!({"result": {"cap": 0}}),
            &[Desc::SenderHosted(6)],
        ),
    );
    r.feed(C2S, &finish(3));
    r
}

/// `iface.method` with `params` plus the worker's Context, as question `q`, at `t_ns`.
fn call_at(r: &mut Run, t_ns: u64, q: u32, iface: &str, method: &str, params: Json) -> Vec<Event> {
    let (mut ctx, caps) = on_worker();
    if let (Some(ctx), Json::Object(p)) = (ctx.as_object_mut(), params) {
        ctx.extend(p);
    }
    r.t = t_ns - 1_000;
    r.feed(C2S, &call(q, To::Import(6), iface, method, ctx, &caps))
}

fn tick(r: &mut Run, t_ns: u64) -> Vec<Event> {
    r.s.tick(t_ns);
    r.s.drain()
}

#[test]
fn a_plain_call_is_stuck_once_after_the_threshold_naming_its_lane_and_the_thread_s_last_call() {
    let mut r = ready();
    let t0 = r.t + 2 * S;
    call_at(&mut r, t0, 4, "Mining", "getTip", json!({}));
    assert_eq!(
        stuck(&tick(&mut r, t0 + 10 * S)),
        [],
        "at the threshold: not yet"
    );
    let ev = tick(&mut r, t0 + 10 * S + 1);
    let s = stuck(&ev);
    assert_eq!(s.len(), 1, "{ev:#?}");
    let (method, thread, limit, last) = &s[0];
    assert_eq!(method, "Mining.getTip");
    assert_eq!(thread.as_deref(), Some("worker"));
    assert_eq!(*limit, 10 * S);
    // makeMining returned at about t0 - 2 s: the thread went idle, then this call hung.
    let last = last.as_deref().expect("the thread's last call");
    assert!(last.starts_with("Init.makeMining returned 12.0"), "{last}");
    let EventKind::Stuck {
        call_seq,
        question,
        pending_ns,
        ..
    } = &ev[0].kind
    else {
        unreachable!()
    };
    assert_eq!((*question, *pending_ns), (4, 10 * S + 1));
    assert!(*call_seq > 0);
    assert_eq!((ev[0].conn, ev[0].dir), (1, Some(C2S)));
    // The JSON Lines shape (docs/json-lines.md#stuck).
    let j = serde_json::to_value(&ev[0].kind).unwrap();
    assert_eq!(j["type"], "stuck");
    assert_eq!(j["data"]["method"], "getTip");
    assert_eq!(j["data"]["thread"], "worker");
    assert_eq!(j["data"]["limit_ns"], 10 * S);
    assert!(j["data"]["last_on_thread"].is_string());
    // Once per call: later ticks and frames are quiet.
    assert_eq!(stuck(&tick(&mut r, t0 + 60 * S)), []);
    r.t = t0 + 70 * S;
    assert_eq!(stuck(&r.feed(S2C, &exception(4, "late"))), []);
}

#[test]
fn a_call_that_returns_before_the_threshold_is_never_stuck() {
    let mut r = ready();
    call_at(&mut r, 5 * S, 4, "Mining", "getTip", json!({}));
    r.t = 14 * S;
    r.feed(S2C, &exception(4, "done"));
    assert_eq!(stuck(&tick(&mut r, 100 * S)), []);
}

#[test]
fn a_frame_advances_time_so_replays_report_stuck_calls_before_the_late_return() {
    let mut r = ready();
    call_at(&mut r, S, 4, "Mining", "getTip", json!({}));
    r.t = 20 * S;
    let ev = r.feed(S2C, &exception(4, "late"));
    assert_eq!(stuck(&ev).len(), 1);
    assert_eq!(ev[0].kind.name(), "stuck");
    assert_eq!(ev.last().map(|e| e.kind.name()), Some("return"));
}

#[test]
fn a_call_queued_behind_a_running_one_names_it() {
    let mut r = ready();
    call_at(&mut r, S, 4, "Mining", "createNewBlock", json!({}));
    call_at(&mut r, 2 * S, 5, "Mining", "getTip", json!({}));
    let s = stuck(&tick(&mut r, 12 * S + 1));
    let names: Vec<_> = s.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, ["Mining.createNewBlock", "Mining.getTip"]);
    assert!(
        s[0].3
            .as_deref()
            .unwrap()
            .starts_with("Init.makeMining returned")
    );
    assert!(
        s[1].3
            .as_deref()
            .unwrap()
            .starts_with("Mining.createNewBlock still running after 11.0"),
        "{:?}",
        s[1].3
    );
}

#[test]
fn long_polls_are_judged_by_their_own_timeout_plus_the_margin() {
    let mut r = ready();
    call_at(
        &mut r,
        S,
        4,
        "BlockTemplate",
        "waitNext",
        json!({"options": {"timeout": 1000.0}}),
    );
    // 1 s timeout + 5 s margin: quiet at 3 s of waiting (the general 10 s does not apply
    // either way), stuck at 7 s.
    assert_eq!(stuck(&tick(&mut r, 4 * S)), []);
    let s = stuck(&tick(&mut r, 8 * S));
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].0.as_str(), s[0].2), ("BlockTemplate.waitNext", 6 * S));

    // A long timeout is waited out in full, past the general threshold.
    call_at(
        &mut r,
        10 * S,
        5,
        "Mining",
        "waitTipChanged",
        json!({"timeout": 60_000.0}),
    );
    assert_eq!(stuck(&tick(&mut r, 70 * S)), []);
    assert_eq!(stuck(&tick(&mut r, 76 * S)).len(), 1);
}

#[test]
fn long_polls_that_may_wait_forever_are_never_stuck() {
    let mut r = ready();
    // No timeout: the schema default, maxDouble milliseconds.
    call_at(&mut r, S, 4, "Mining", "waitTipChanged", json!({}));
    call_at(
        &mut r,
        S,
        5,
        "BlockTemplate",
        "waitNext",
        json!({"options": {"timeout": "inf"}}),
    );
    call_at(
        &mut r,
        S,
        6,
        "Mining",
        "waitTipChanged",
        json!({"timeout": "NaN"}),
    );
    assert_eq!(stuck(&tick(&mut r, 3600 * S)), []);
}

#[test]
fn untimed_sources_never_report_stuck_calls() {
    let mut r = ready();
    r.s.set_untimed();
    call_at(&mut r, S, 4, "Mining", "getTip", json!({}));
    assert_eq!(stuck(&tick(&mut r, 3600 * S)), []);
    r.t = 7200 * S;
    assert_eq!(stuck(&r.feed(S2C, &exception(4, "late"))), []);
}

#[test]
fn the_thresholds_come_from_the_lint_config() {
    let mut r = ready();
    r.s = Session::new(SchemaConfig {
        choice: Choice::Fixed("master".into()),
        user: Vec::new(),
        ..SchemaConfig::default()
    })
    .with_lints(LintConfig {
        stuck_after_ns: S,
        long_poll_margin_ns: 0,
        ..LintConfig::default()
    });
    r.s.open(1, 0, "test", None, None);
    r.t = 0;
    r.handshake();
    r.s.drain();
    let t = r.t;
    r.feed(
        C2S,
        &call(
            3,
            To::Import(0),
            "Init",
            "makeEcho",
            on_worker().0,
            &on_worker().1,
        ),
    );
    assert_eq!(stuck(&tick(&mut r, t + 2 * S)).len(), 1);
}
