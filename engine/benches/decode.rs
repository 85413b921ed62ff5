//! Frames per second on the shared real captures: splitting, envelope decode, and the full path
//! (envelope + params/results against schemas + connection state + JSON).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mpspy_engine::framing::{Piece, split_all};
use mpspy_engine::raw::decode_pair;
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::rpc;
use mpspy_schema::wire::Message;
use std::hint::black_box;

// The allocator the mpspy binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CAPTURES: [(&str, &[u8], &[u8]); 2] = [
    (
        "pyclient",
        include_bytes!("../../tests/fixtures/captures/bitcoin-node-master/pyclient.c2s.bin"),
        include_bytes!("../../tests/fixtures/captures/bitcoin-node-master/pyclient.s2c.bin"),
    ),
    (
        "mpcalculator",
        include_bytes!(
            "../../tests/fixtures/captures/mpexample/mpcalculator.mpexample-to-child.bin"
        ),
        include_bytes!(
            "../../tests/fixtures/captures/mpexample/mpcalculator.child-to-mpexample.bin"
        ),
    ),
];

fn frames(b: &[u8]) -> Vec<Vec<u8>> {
    split_all(b)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Frame { bytes, .. } => Some(bytes),
            Piece::Bad { .. } => None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, c2s, s2c) in CAPTURES {
        let n = (frames(c2s).len() + frames(s2c).len()) as u64;
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(n));
        g.bench_function("split", |b| {
            b.iter(|| black_box(split_all(black_box(c2s)).len() + split_all(black_box(s2c)).len()))
        });
        let all: Vec<Vec<u8>> = frames(c2s).into_iter().chain(frames(s2c)).collect();
        g.bench_function("envelope", |b| {
            b.iter(|| {
                let mut ok = 0;
                for f in &all {
                    let (m, _) = Message::parse(f).unwrap();
                    ok += usize::from(rpc::decode(&m).is_ok());
                }
                black_box(ok)
            })
        });
        // Sets are loaded once per process; the first Session pays for it outside the loop.
        drop(Session::new(SchemaConfig::default()));
        // Decoding and state alone, as a session sees a capture: many connections in one
        // Session (a short capture decoded in a fresh Session mostly measures its setup).
        const CONNS: u32 = 100;
        g.throughput(Throughput::Elements(n * u64::from(CONNS)));
        g.bench_function("state_100_conns", |b| {
            b.iter(|| {
                let mut s = Session::new(SchemaConfig::default());
                let mut events = 0;
                for conn in 1..=CONNS {
                    decode_pair(&mut s, conn, name, c2s, s2c);
                    events += s.drain().len();
                }
                black_box(events)
            })
        });
        g.throughput(Throughput::Elements(n));
        g.bench_function("full_json", |b| {
            b.iter(|| {
                let mut s = Session::new(SchemaConfig::default());
                decode_pair(&mut s, 1, name, c2s, s2c);
                let mut out = Vec::with_capacity(64 * 1024);
                for e in s.drain() {
                    serde_json::to_writer(&mut out, &e).unwrap();
                    out.push(b'\n');
                }
                black_box(out.len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
