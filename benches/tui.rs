//! The terminal UI keeps up: events folded per second (the UI thread's whole job between
//! frames) and the time to draw one frame with a full history, with and without a filter.
//! Events are the real pyclient capture decoded by the real decoder, repeated. Run with
//! `cargo bench --bench tui`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpspy_engine::raw::decode_pair;
use mpspy_engine::{SchemaConfig, Session, SharedStats};
use mpspy_schema::{Event, EventKind};
use mpspy_tui::{App, Feed, Options};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const C2S: &[u8] =
    include_bytes!("../tests/fixtures/captures/bitcoin-node-master/pyclient.c2s.bin");
const S2C: &[u8] =
    include_bytes!("../tests/fixtures/captures/bitcoin-node-master/pyclient.s2c.bin");

/// The capture's events, `copies` times over as separate connections, times spread out.
fn events(copies: u32) -> Vec<Event> {
    let mut session = Session::new(SchemaConfig {
        choice: mpspy_schema::sets::Choice::Auto,
        user: Vec::new(),
        ..SchemaConfig::default()
    });
    session.set_untimed();
    session.start("bench", None);
    decode_pair(&mut session, 1, "bench", C2S, S2C);
    let one: Vec<Event> = session
        .drain()
        .into_iter()
        .filter(|e| !matches!(e.kind, EventKind::Session { .. }))
        .collect();
    let span = one.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
    let mut all = Vec::with_capacity(one.len() * copies as usize);
    for k in 0..copies {
        let base = u64::from(k) * span;
        for e in &one {
            let mut e = e.clone();
            e.conn += k;
            // Returns, finishes and disconnects name their call by its seq: shift those too.
            e.seq += base;
            match &mut e.kind {
                EventKind::Return(r) => r.call_seq = r.call_seq.map(|c| c + base),
                EventKind::Finish { call_seq, .. } => *call_seq = call_seq.map(|c| c + base),
                EventKind::ConnClosed { pending_calls, .. } => {
                    for p in pending_calls {
                        p.call_seq += base;
                    }
                }
                _ => {}
            }
            e.t_ns = all.len() as u64 * 10_000;
            all.push(e);
        }
    }
    all
}

fn filled(events: &[Event]) -> App {
    let mut app = App::new(Options::default());
    // The engine's statistics, as a live session hands them over (the UI does not fold them).
    app.feed(Feed::Stats(SharedStats::from_events(events)));
    for e in events {
        app.feed(Feed::Event(Arc::new(e.clone())));
    }
    app
}

fn bench(c: &mut Criterion) {
    let evs = events(200);
    let mut g = c.benchmark_group("tui");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("fold", |b| b.iter(|| black_box(filled(&evs))));
    g.finish();

    let mut app = filled(&events(2_000));
    let now = app.last_event_ns();
    let mut term = Terminal::new(TestBackend::new(200, 60)).unwrap();
    c.bench_function("tui/frame 200x60, full history", |b| {
        b.iter(|| {
            term.draw(|f| mpspy_tui::render(f, &app, now)).unwrap();
        });
    });
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    app.handle_key(key(KeyCode::Char('f')), now);
    for ch in "method:Echo.* latency>10us".chars() {
        app.handle_key(key(KeyCode::Char(ch)), now);
    }
    app.handle_key(key(KeyCode::Enter), now);
    c.bench_function("tui/frame 200x60, filtered", |b| {
        b.iter(|| {
            term.draw(|f| mpspy_tui::render(f, &app, now)).unwrap();
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
