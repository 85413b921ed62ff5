//! The relay is byte-transparent and its tap sees every frame, in causal order.
#![cfg(unix)]

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread;

use mpspy_capture::relay::{ConnIds, ConnInfo, Relays, Upstream, serve};
use mpspy_capture::tap::{Clock, Consumer, Tap, Tapped};
use mpspy_schema::Direction;

/// A deterministic stream of valid frames with varied sizes (1 segment, 1..300 words).
fn frames(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::new();
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let words = 1 + (x >> 33) as u32 % 300;
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&words.to_le_bytes());
        for w in 0..words {
            out.extend_from_slice(&(x ^ u64::from(w)).to_le_bytes());
        }
    }
    out
}

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

/// Writes `data` in uneven chunks, so frames split across writes and writes batch frames.
fn write_chunked(s: &mut UnixStream, data: &[u8], seed: usize) {
    let mut at = 0;
    let mut i = seed;
    while at < data.len() {
        i = i.wrapping_mul(31).wrapping_add(7);
        let n = (1 + i % 9000).min(data.len() - at);
        s.write_all(&data[at..at + n]).unwrap();
        at += n;
    }
}

#[test]
fn thousands_of_frames_pass_unchanged_both_ways() {
    let dir = std::env::temp_dir().join(format!("mpspy-relay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("public.sock");
    let upstream = dir.join("upstream.sock");
    let _ = std::fs::remove_file(&public);
    let _ = std::fs::remove_file(&upstream);

    let c2s = frames(1, 3000);
    let s2c = frames(2, 3000);

    // The "server": reads everything the client sent while sending its own stream.
    let server_listener = UnixListener::bind(&upstream).unwrap();
    let s2c_copy = s2c.clone();
    let server = thread::spawn(move || {
        let (mut s, _) = server_listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            write_chunked(&mut w, &s2c_copy, 3);
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    });

    let clock = Clock::start();
    let (tap, mut rx) = Tap::single(clock, Consumer::eager(1 << 30));
    let listener = UnixListener::bind(&public).unwrap();
    let _serving = serve(
        listener,
        Upstream::Server {
            path: upstream.clone(),
            first: None,
        },
        tap.clone(),
        ConnIds::default(),
        Relays::default(),
        Arc::new(|_, _| ConnInfo {
            label: "test".into(),
            ..ConnInfo::default()
        }),
    )
    .unwrap();

    let mut client = UnixStream::connect(&public).unwrap();
    let mut w = client.try_clone().unwrap();
    let c2s_copy = c2s.clone();
    let writer = thread::spawn(move || {
        write_chunked(&mut w, &c2s_copy, 5);
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut client_got = Vec::new();
    client.read_to_end(&mut client_got).unwrap();
    writer.join().unwrap();
    let server_got = server.join().unwrap();

    assert_eq!(server_got.len(), c2s.len());
    assert_eq!(hash(&server_got), hash(&c2s), "client→server bytes changed");
    assert_eq!(hash(&client_got), hash(&s2c), "server→client bytes changed");

    // The tap saw every frame, whole, at the right offsets, and then the close.
    let mut seen = [Vec::new(), Vec::new()];
    let mut closed = false;
    while !closed {
        match &*rx.recv(&clock).expect("tap item") {
            Tapped::Frame {
                dir, bytes, offset, ..
            } => {
                let i = usize::from(*dir == Direction::ServerToClient);
                assert_eq!(*offset as usize, seen[i].len());
                seen[i].extend_from_slice(bytes);
            }
            Tapped::Closed { reason, .. } => {
                assert!(reason.contains("closed the connection"), "{reason}");
                closed = true;
            }
            Tapped::Opened { label, .. } => assert_eq!(label, "test"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(hash(&seen[0]), hash(&c2s));
    assert_eq!(hash(&seen[1]), hash(&s2c));
    assert_eq!(tap.dropped(), vec![0]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A consumer that does not keep up loses frames once its byte budget is full, counts them,
/// and is told before the next item; the sender never waits.
#[test]
fn a_full_tap_drops_and_counts_but_never_blocks_the_relay() {
    let clock = Clock::start();
    let (tap, mut rx) = Tap::single(clock, Consumer::eager(4 * (8 + 64)));
    for i in 0..10 {
        tap.send(Tapped::Frame {
            conn: 1,
            dir: Direction::ClientToServer,
            t_ns: i,
            offset: 8 * i,
            bytes: vec![0; 8],
        });
    }
    assert_eq!(tap.dropped(), vec![6]);
    tap.finish();
    let mut got = Vec::new();
    while let Some(i) = rx.recv(&clock) {
        got.push(i);
    }
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(
        matches!(*got[4], Tapped::Dropped { count: 6, .. }),
        "{got:?}"
    );
}
