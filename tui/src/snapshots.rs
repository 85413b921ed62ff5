//! Render snapshots of every screen (gitui's pattern): the fixed session folded into an
//! [`App`], drawn on a `TestBackend` with an explicit `now`. Review changes with
//! `cargo insta review`; CI fails on a changed snapshot instead of writing it.

use std::sync::Arc;

use mpspy_engine::SharedStats;
use mpspy_schema::event::{Event, EventKind, Lint};
use mpspy_schema::lint::LintId;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::{Action, App, Feed, Options};
use crate::fixture;
use crate::view::render;

fn app() -> App {
    let mut app = App::new(Options {
        title: "bitcoin-node -regtest (pid 4242)".into(),
        live: true,
        history: 1000,
    });
    let events = fixture::session();
    // The engine's statistics come with the session, as live and replay runs hand them over.
    app.feed(Feed::Stats(SharedStats::from_events(&events)));
    for e in events {
        app.feed(Feed::Event(Arc::new(e)));
    }
    app.feed(Feed::Output {
        t_ns: 5_000_000,
        stderr: false,
        line: "2026-11-23T12:00:00Z Bitcoin Core version v30.99.0 (release build)".into(),
    });
    app.feed(Feed::Output {
        t_ns: 6_000_000,
        stderr: true,
        line: "Warning: this is a regtest node".into(),
    });
    app
}

/// The session's end plus a bit, as the live clock would read it.
const NOW: u64 = 2_200_000_000;

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(f, app, NOW)).unwrap();
    t.backend().to_string()
}

fn key(app: &mut App, code: KeyCode) -> Action {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE), NOW)
}

fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

#[test]
fn calls_following() {
    insta::assert_snapshot!(draw(&app(), 120, 34));
}

#[test]
fn calls_narrow_terminal_drops_the_thread_column() {
    insta::assert_snapshot!(draw(&app(), 80, 24));
}

#[test]
fn detail_of_a_block_header_unfolded() {
    let mut a = app();
    // Select getBlockHeader by searching for it, then unfold its result's hex dump.
    key(&mut a, KeyCode::Char('/'));
    keys(&mut a, "getblockheader");
    key(&mut a, KeyCode::Enter);
    key(&mut a, KeyCode::Enter);
    key(&mut a, KeyCode::Char('r'));
    // return → its meta line → the result.
    for _ in 0..2 {
        key(&mut a, KeyCode::Down);
    }
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!(draw(&a, 120, 44));
}

#[test]
fn filter_errors_then_applies() {
    let mut a = app();
    key(&mut a, KeyCode::Char('f'));
    keys(&mut a, "method:Mining.* status:eror");
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("filter_error", draw(&a, 120, 16));
    for _ in 0..4 {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "error,disconnected");
    key(&mut a, KeyCode::Enter);
    insta::assert_snapshot!("filter_applied", draw(&a, 120, 30));
}

#[test]
fn paused_hides_newer_rows() {
    let mut a = App::new(Options {
        title: "replay demo.pcapng".into(),
        live: false,
        history: 1000,
    });
    let events = fixture::session();
    a.feed(Feed::Stats(SharedStats::from_events(&events)));
    let half = events.len() / 2;
    for e in events[..half].iter().cloned() {
        a.feed(Feed::Event(Arc::new(e)));
    }
    key(&mut a, KeyCode::Char(' '));
    for e in events[half..].iter().cloned() {
        a.feed(Feed::Event(Arc::new(e)));
    }
    insta::assert_snapshot!(draw(&a, 110, 20));
}

#[test]
fn methods_with_histogram() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    // Echo.echo: the third row.
    for _ in 0..2 {
        key(&mut a, KeyCode::Down);
    }
    insta::assert_snapshot!(draw(&a, 120, 30));
}

#[test]
fn capabilities_with_leaks_at_disconnect() {
    let mut a = app();
    key(&mut a, KeyCode::Char('3'));
    key(&mut a, KeyCode::Down);
    insta::assert_snapshot!(draw(&a, 130, 26));
}

#[test]
fn log_with_program_output_and_problems() {
    let mut a = app();
    key(&mut a, KeyCode::Char('4'));
    insta::assert_snapshot!(draw(&a, 120, 20));
}

#[test]
fn log_with_lints() {
    let mut a = app();
    // What the engine says about the fixture's second connection: a long poll cut by the
    // disconnect (info: not a problem) and a block template never destroyed (a problem).
    let lint = |id: LintId, message: &str| {
        let mut l = Lint::new(id, message.into());
        l.method = Some("Mining.waitTipChanged".into());
        EventKind::Lint(l)
    };
    for (seq, kind) in [
        (
            1000,
            lint(
                LintId::LongPollAtDisconnect,
                "Mining.waitTipChanged (q9) was still waiting after 2.0s when the connection \
                 closed (process exited)",
            ),
        ),
        (
            1001,
            lint(
                LintId::AliveAtDisconnect,
                "BlockTemplate#5 was never destroyed: alive with 1 reference(s) when the \
                 connection closed (process exited)",
            ),
        ),
    ] {
        a.feed(Feed::Event(Arc::new(Event {
            seq,
            t_ns: 2_140_000_000,
            conn: 2,
            dir: None,
            kind,
        })));
    }
    key(&mut a, KeyCode::Char('4'));
    let screen = draw(&a, 120, 20);
    assert!(screen.contains("problems 2"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn help_overlay() {
    let mut a = app();
    key(&mut a, KeyCode::Char('?'));
    insta::assert_snapshot!(draw(&a, 100, 24));
}

#[test]
fn too_small_and_resize() {
    let a = app();
    insta::assert_snapshot!(draw(&a, 40, 8));
    // The same state redrawn larger is whole again.
    assert!(draw(&a, 100, 24).contains("Mining.waitTipChanged"));
}

#[test]
fn ctrl_c_interrupts_live_but_quits_a_replay() {
    let mut a = app();
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(a.handle_key(ctrl_c, NOW), Action::Interrupt);
    a.feed(Feed::Ended("bitcoin-node exited with status 0".into()));
    assert_eq!(a.handle_key(ctrl_c, NOW), Action::Quit);
    assert_eq!(key(&mut app(), KeyCode::Char('q')), Action::Quit);
}

#[test]
fn pending_latency_ticks_with_now() {
    let mut a = App::new(Options::default());
    let events = fixture::session();
    // Everything up to (not including) the disconnect: waitTipChanged is pending.
    for e in events[..events.len() - 1].iter().cloned() {
        a.feed(Feed::Event(Arc::new(e)));
    }
    let at = |now: u64| {
        let mut t = Terminal::new(TestBackend::new(100, 30)).unwrap();
        t.draw(|f| render(f, &a, now)).unwrap();
        t.backend().to_string()
    };
    assert!(
        at(1_140_000_000).contains("1.00s…"),
        "{}",
        at(1_140_000_000)
    );
    assert!(at(3_140_000_000).contains("3.00s…"));
}

#[test]
fn enter_on_a_method_or_a_connection_filters_the_calls() {
    let mut a = app();
    key(&mut a, KeyCode::Char('2'));
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Enter);
    let screen = draw(&a, 120, 30);
    assert!(
        screen.contains("filter: method:Echo.echo  (3 rows)"),
        "{screen}"
    );
    key(&mut a, KeyCode::Char('3'));
    key(&mut a, KeyCode::Enter);
    let screen = draw(&a, 120, 30);
    assert!(screen.contains("filter: conn:1  (3 rows)"), "{screen}");
    assert!(screen.contains("Rpc.executeRpc"), "{screen}");
}

#[test]
fn thread_lanes_with_a_call_in_flight() {
    let mut a = App::new(Options {
        title: "bitcoin-node -regtest (pid 4242)".into(),
        live: true,
        history: 1000,
    });
    let events = fixture::session();
    // Before the disconnect: waitTipChanged is still running on its lane.
    for e in events[..events.len() - 1].iter().cloned() {
        a.feed(Feed::Event(Arc::new(e)));
    }
    key(&mut a, KeyCode::Char('5'));
    key(&mut a, KeyCode::Down);
    insta::assert_snapshot!(draw(&a, 140, 14));
    key(&mut a, KeyCode::Enter);
    let screen = draw(&a, 120, 30);
    assert!(
        screen.contains("filter: conn:2 thread:b-capnp-loop  (11 rows)"),
        "{screen}"
    );
}
