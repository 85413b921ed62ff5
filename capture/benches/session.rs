//! Throughput of the decode path on a generated 1M-frame session (the demo recording's
//! `Echo.echo` call repeated, see `mpspy_capture::synth`): the engine alone (frames in,
//! events out: envelope, params and results by schema, connection state, pairing, stats), the
//! JSON Lines serialization of its events, and the pcapng writer. Run with
//! `cargo bench -p mpspy-capture --bench session`.

use std::hint::black_box;
use std::io::{self, Write};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpspy_capture::record::Recorder;
use mpspy_capture::synth;
use mpspy_capture::tap::Tapped;
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::event::json_line;

// The allocator the mpspy binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FRAMES: usize = 1_000_000;

/// Counts what is written, keeps nothing.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let items: Vec<Tapped> = synth::echo_session(FRAMES / synth::frames_per_call()).collect();
    let frames = items
        .iter()
        .filter(|t| matches!(t, Tapped::Frame { .. }))
        .count() as u64;
    // Sets are loaded once per process; the first Session pays for it outside the loop.
    let mut session = Session::new(SchemaConfig::default());
    let mut events = Vec::new();
    for item in &items {
        session.apply(item);
        events.extend(session.drain());
    }

    let mut g = c.benchmark_group("generated_1m_frames");
    g.sample_size(10);
    g.throughput(Throughput::Elements(frames));
    g.bench_function("engine (frames/s)", |b| {
        b.iter(|| {
            let mut s = Session::new(SchemaConfig::default());
            let mut n = 0usize;
            for item in &items {
                s.apply(item);
                n += s.drain().len();
            }
            black_box(n)
        })
    });
    g.bench_function("pcapng writer (frames/s)", |b| {
        b.iter(|| {
            let mut r = Recorder::new(Counter::default(), "auto", 0).expect("header");
            for item in &items {
                r.write(item).expect("writes");
            }
            r.flush().expect("flushes");
        })
    });
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("JSON Lines (events/s)", |b| {
        b.iter(|| {
            // As the JSON Lines sink does: each line built in a reused buffer, then written.
            let mut out = io::BufWriter::with_capacity(64 << 10, Counter::default());
            let mut line = Vec::new();
            for e in &events {
                line.clear();
                json_line(e, &mut line);
                out.write_all(&line).expect("writes");
            }
            out.flush().expect("flushes");
            black_box(out.get_ref().0)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
