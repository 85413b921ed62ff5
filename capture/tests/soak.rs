//! Soak: many request/response exchanges through the production relay, with the recording
//! written from the capture side and a real decoder beside it. Both ends of every connection
//! are hashed (SHA-256 of what each side sent and what the other received), and the recording
//! must hold exactly the frames that crossed, in order, per direction.
//!
//! Ignored by default (it is long); CI runs it with a moderate count:
//! `MPSPY_SOAK_CALLS=200000 cargo test -p mpspy-capture --test soak -- --ignored`.
//! Run it at 1M calls by hand before trusting a relay change:
//! `MPSPY_SOAK_CALLS=1000000 cargo test --release -p mpspy-capture --test soak -- --ignored --nocapture`.
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use mpspy_capture::record::{self, RECORDER, Recorder, record_live};
use mpspy_capture::relay::{ConnIds, ConnInfo, Relays, Upstream, serve};
use mpspy_capture::tap::{Clock, DECODER, Tap, Tapped};
use mpspy_engine::framing::{Piece, Splitter};
use mpspy_engine::{SchemaConfig, Session};
use mpspy_schema::Direction;
use mpspy_schema::sets::Choice;
use sha2::{Digest, Sha256};

/// Connections at once.
const CONNS: usize = 4;

/// The frames of a real session (a pycapnp client against bitcoin-node master), each
/// direction's stream split at frame boundaries: requests from the client's side, responses
/// from the server's.
fn real_frames(rel: &str) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/../tests/fixtures/captures/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut pieces = Vec::new();
    Splitter::new().push(&std::fs::read(&path).unwrap(), &mut pieces);
    pieces
        .into_iter()
        .map(|p| match p {
            Piece::Frame { bytes, .. } => bytes,
            other => panic!("{path}: {other:?}"),
        })
        .collect()
}

/// One side's view of a connection: the SHA-256 of what it wrote and of what it read.
struct Ends {
    wrote: [u8; 32],
    read: [u8; 32],
}

fn read_frame(s: &mut UnixStream, buf: &mut Vec<u8>) -> bool {
    let mut head = [0u8; 8];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    let count = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize + 1;
    let mut table = vec![0u8; (4 + 4 * count).div_ceil(8) * 8 - 8];
    s.read_exact(&mut table).unwrap();
    let mut sizes = head[4..].to_vec();
    sizes.extend_from_slice(&table);
    let words: usize = (0..count)
        .map(|i| u32::from_le_bytes(sizes[4 * i..4 * i + 4].try_into().unwrap()) as usize)
        .sum();
    buf.clear();
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&table);
    let at = buf.len();
    buf.resize(at + 8 * words, 0);
    s.read_exact(&mut buf[at..]).unwrap();
    true
}

#[test]
#[ignore = "long: run with --ignored (CI sets MPSPY_SOAK_CALLS)"]
fn soak_every_frame_crosses_unchanged_and_is_recorded() {
    let calls: usize = std::env::var("MPSPY_SOAK_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let requests = real_frames("bitcoin-node-master/pyclient.c2s.bin");
    let responses = real_frames("bitcoin-node-master/pyclient.s2c.bin");

    let dir = std::env::temp_dir().join(format!("mpspy-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (public, upstream, rec) = (
        dir.join("public.sock"),
        dir.join("server.sock"),
        dir.join("soak.pcapng"),
    );

    // The server: answers each request with the next response frame, hashing both ways.
    let listener = UnixListener::bind(&upstream).unwrap();
    let server_responses = responses.clone();
    let server = thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..CONNS {
            let (mut s, _) = listener.accept().unwrap();
            let responses = server_responses.clone();
            handles.push(thread::spawn(move || {
                let (mut wrote, mut read) = (Sha256::new(), Sha256::new());
                let mut buf = Vec::new();
                let mut i = 0;
                while read_frame(&mut s, &mut buf) {
                    read.update(&buf);
                    let r = &responses[i % responses.len()];
                    s.write_all(r).unwrap();
                    wrote.update(r);
                    i += 1;
                }
                Ends {
                    wrote: wrote.finalize().into(),
                    read: read.finalize().into(),
                }
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });

    // The capture side, as `mpspy --record` builds it: a decoder and the recording writer,
    // each on its own queue.
    let clock = Clock::start();
    let (tap, mut rx) = Tap::new(clock, &[DECODER, RECORDER]);
    let record_rx = rx.pop().unwrap();
    let mut decode_rx = rx.pop().unwrap();
    let writer = record_live(
        Recorder::create(&rec, "master", 0).unwrap(),
        record_rx,
        clock,
    )
    .unwrap();
    let decoder = thread::spawn(move || {
        let mut session = Session::new(SchemaConfig {
            choice: Choice::Auto,
            user: Vec::new(),
            ..SchemaConfig::default()
        });
        let (mut events, mut dropped) = (0u64, 0u64);
        while let Some(item) = decode_rx.recv(&clock) {
            if let Tapped::Dropped { count, .. } = *item {
                dropped += count;
            }
            session.apply(&item);
            events += session.drain().len() as u64;
        }
        (events, dropped)
    });
    let relays = Relays::default();
    let serving = serve(
        UnixListener::bind(&public).unwrap(),
        Upstream::Server {
            path: upstream.clone(),
            first: None,
        },
        tap.clone(),
        ConnIds::default(),
        relays.clone(),
        Arc::new(|_, _| ConnInfo::default()),
    )
    .unwrap();

    let start = Instant::now();
    let clients: Vec<_> = (0..CONNS)
        .map(|c| {
            let requests = requests.clone();
            let public = public.clone();
            thread::spawn(move || {
                let mut s = UnixStream::connect(&public).unwrap();
                let (mut wrote, mut read) = (Sha256::new(), Sha256::new());
                let mut buf = Vec::new();
                for i in 0..calls / CONNS {
                    let q = &requests[(i + c) % requests.len()];
                    s.write_all(q).unwrap();
                    wrote.update(q);
                    assert!(read_frame(&mut s, &mut buf), "the response to call {i}");
                    read.update(&buf);
                }
                s.shutdown(std::net::Shutdown::Write).unwrap();
                // Wait for the server's side to end too.
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
                Ends {
                    wrote: wrote.finalize().into(),
                    read: read.finalize().into(),
                }
            })
        })
        .collect();
    let clients: Vec<Ends> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = start.elapsed();
    let servers = server.join().unwrap();
    assert!(relays.wait_idle(std::time::Duration::from_secs(10)));
    serving.stop();
    tap.finish();
    let (events, decode_dropped) = decoder.join().unwrap();
    let recorded = writer.join().unwrap();
    assert!(recorded.error.is_none(), "{:?}", recorded.error);

    // What crossed: each client's bytes reached a server unchanged, and back.
    let mut sent: Vec<_> = clients.iter().map(|c| (c.wrote, c.read)).collect();
    let mut got: Vec<_> = servers.iter().map(|s| (s.read, s.wrote)).collect();
    sent.sort();
    got.sort();
    assert_eq!(sent, got, "bytes changed on the way");

    // The recording: exactly those frames, per connection and direction.
    let mut streams: std::collections::BTreeMap<(u32, u8), (Sha256, u64)> = Default::default();
    let mut recorded_drops = 0;
    record::read_file(&rec, |t| match t {
        Tapped::Frame {
            conn, dir, bytes, ..
        } => {
            let e = streams
                .entry((conn, u8::from(dir == Direction::ServerToClient)))
                .or_insert_with(|| (Sha256::new(), 0));
            e.0.update(&bytes);
            e.1 += 1;
        }
        Tapped::Dropped { count, .. } => recorded_drops += count,
        _ => {}
    })
    .unwrap();
    assert_eq!(recorded_drops, 0, "the recording lost frames");
    let frames: u64 = streams.values().map(|(_, n)| n).sum();
    assert_eq!(frames as usize, 2 * (calls / CONNS) * CONNS);
    let mut in_recording: Vec<([u8; 32], [u8; 32])> = (1..=CONNS as u32)
        .map(|conn| {
            let c2s = streams.remove(&(conn, 0)).unwrap().0.finalize().into();
            let s2c = streams.remove(&(conn, 1)).unwrap().0.finalize().into();
            (c2s, s2c)
        })
        .collect();
    in_recording.sort();
    assert_eq!(
        in_recording, sent,
        "the recording differs from what crossed"
    );

    let per_s = calls as f64 / elapsed.as_secs_f64();
    let _ = writeln!(
        std::io::stderr(),
        "soak: {calls} calls ({frames} frames, {} bytes recorded) over {CONNS} connections in {:.2} s ({per_s:.0} calls/s); {events} events decoded, {decode_dropped} frames not decoded live; recording complete",
        std::fs::metadata(&rec).unwrap().len(),
        elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
