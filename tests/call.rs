//! `mpspy call` / `mpspy bench`: mpspy as a libmultiprocess client of the test peer.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::common::*;
use crate::live::{TestDir, wait_for};
use crate::testpeer::testpeer;

struct Peer(Child, String);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listening_peer(dir: &TestDir) -> Peer {
    let sock = dir.path("node.sock");
    let child = Command::new(testpeer())
        .arg(format!("-ipcbind=unix:{}", sock.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| sock.exists(), "the peer to listen");
    Peer(child, format!("unix:{}", sock.display()))
}

#[test]
fn call_chains_print_decoded_results() {
    let dir = TestDir::new("call");
    let peer = listening_peer(&dir);
    let (code, out, err) = call(&[
        &peer.1,
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"hi there"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"result": "hi there"})
    );

    let (code, out, err) = call(&[&peer.1, "Init.makeMining", "Mining.getTip"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hasResult"], true);
    assert_eq!(v["result"]["height"], 5);
    assert_eq!(
        v["result"]["hash"].as_str().unwrap().len(),
        64,
        "Data as hex"
    );

    let (code, out, _) = call(&[
        &peer.1,
        "Init.makeRpc",
        "Rpc.executeRpc",
        r#"{"request":"{\"method\":\"getblockcount\",\"params\":[],\"id\":\"1\"}","uri":"/"}"#,
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["result"],
        r#"{"jsonrpc":"2.0","result":5,"id":"1"}"#
    );

    // --trace shows the whole session as the proxy would: construct, makeThread, Context.
    let (_, _, err) = call(&[
        "--trace",
        &peer.1,
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"x"}"#,
    ]);
    assert!(
        err.contains("Init.construct") && err.contains("ThreadMap.makeThread"),
        "{err}"
    );
    assert!(
        err.contains("callbackThread = Thread#"),
        "Context filled: {err}"
    );
}

#[test]
fn remote_exceptions_and_bad_steps_are_clear_errors() {
    let dir = TestDir::new("callerr");
    let peer = listening_peer(&dir);
    let (code, _, err) = call(&[
        &peer.1,
        "Init.makeMining",
        "Mining.checkBlock",
        r#"{"block":"00000000000000000000"}"#,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("Mining.checkBlock failed") && err.contains("SpanReader::read(): end of data"),
        "{err}"
    );

    let (code, _, err) = call(&[&peer.1, "Init.makeEcho", "Echo.ech"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("Echo has no method ech (have: destroy, echo)"),
        "{err}"
    );
    let (code, _, err) = call(&[&peer.1, "Init.makeEcho", "Echo.echo", r#"{"eco":"x"}"#]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no field 'eco'"), "{err}");
    // A block the node cannot deserialize: its exception, as for checkBlock.
    let (code, _, err) = call(&[
        &peer.1,
        "Init.makeMining",
        "Mining.submitBlock",
        r#"{"block":"00"}"#,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("Mining.submitBlock failed")
            && err.contains("SpanReader::read(): end of data"),
        "{err}"
    );
    // A child that exits before answering: the disconnect is an error too, with its exit.
    let (code, _, err) = call(&["spawn:/bin/true", "Init.makeEcho", "Echo.echo"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("call failed")
            && err.contains("Init.construct: the connection failed")
            && err.contains("(/bin/true exited: exit status: 0)"),
        "{err}"
    );
    // One that fails after the session is an error even though the calls were answered.
    let failing = dir.path("failing-peer");
    std::fs::write(
        &failing,
        format!("#!/bin/sh\n{} \"$@\"\nexit 3\n", testpeer().display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, out, err) = call(&[
        "--schemas",
        "master",
        &format!("spawn:{}", failing.display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"answered"}"#,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out.trim(), r#"{"result":"answered"}"#);
    assert!(
        err.contains("child exited: exit status: 3") && err.contains("did not end cleanly"),
        "{err}"
    );
    // Nobody listening.
    let (code, _, err) = call(&["unix:/nonexistent/node.sock", "Init.makeEcho"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("connecting to /nonexistent/node.sock"),
        "{err}"
    );
}

#[test]
fn spawn_starts_the_peer_with_ipcfd_and_it_exits_when_we_disconnect() {
    let peer = testpeer();
    let (code, out, err) = call(&[
        &format!("spawn:{}", peer.display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"spawned"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["result"],
        "spawned"
    );
    assert!(err.contains("child exited: exit status: 0"), "{err}");
    assert!(
        err.contains("v31.99.0") && err.contains("using the master schemas"),
        "{err}"
    );
    let (code, out, _) = call(&[
        "--argv",
        "bare",
        &format!("spawn:{}", peer.display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"bare"}"#,
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["result"],
        "bare"
    );
}

#[test]
fn bench_reports_percentiles_per_stream() {
    let dir = TestDir::new("bench");
    let peer = listening_peer(&dir);
    let out = run_ok(mpspy().args([
        "bench",
        &peer.1,
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"b"}"#,
        "--count",
        "200",
        "--warmup",
        "10",
        "--concurrency",
        "3",
        "--json",
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 600);
    assert_eq!(v["method"], "Echo.echo");
    let p50 = v["p50_ns"].as_u64().unwrap();
    // The interval log reads back with HdrHistogram's own parser.
    let log = dir.path("bench.hlog");
    run_ok(
        mpspy()
            .args([
                "bench",
                &peer.1,
                "Init.makeEcho",
                "Echo.echo",
                "--count",
                "50",
                "--warmup",
                "0",
            ])
            .arg("--hdr-log")
            .arg(&log),
    );
    let bytes = std::fs::read(&log).unwrap();
    let mut histograms = 0;
    for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&bytes) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) = entry {
            assert_eq!(i.tag().map(|t| t.as_str()), Some("Echo.echo"));
            histograms += 1;
        }
    }
    assert_eq!(histograms, 1);
    assert!(
        p50 > 0
            && p50 <= v["p99_ns"].as_u64().unwrap()
            && v["p99_ns"].as_u64().unwrap() <= v["max_ns"].as_u64().unwrap()
    );
}

#[test]
fn call_works_against_an_independent_pycapnp_server_that_calls_back() {
    if !crate::live::pycapnp() {
        eprintln!("note: pycapnp missing; skipping (set MPSPY_REQUIRE_PYCAPNP=1 to fail instead)");
        return;
    }
    use std::io::{BufRead, BufReader};
    let dir = TestDir::new("pysrv");
    let sock = dir.path("py.sock");
    let mut child = Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/server.py"))
        .arg(format!("unix:{}", sock.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Killed on any early return or panic; a no-op once it has been waited for.
    let mut server = Peer(child, format!("unix:{}", sock.display()));
    // The socket file exists from bind(), before listen(): wait for the line instead.
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening", "server.py did not start");

    let out = run_ok(mpspy().args([
        "call",
        &server.1,
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"hi there"}"#,
    ]));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"result": "hi there"})
    );

    // construct() made the server call makeThread + getName on our ThreadMap; this echo text
    // returns the name our ThreadMap gave: callbacks into mpspy work.
    let out = run_ok(mpspy().args([
        "call",
        &server.1,
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"callback-name"}"#,
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = v["result"].as_str().unwrap_or_default();
    assert!(name.ends_with(" (from pyserver-callback)"), "{v}");

    let out = run_ok(mpspy().args(["call", &server.1, "Init.makeMining", "Mining.getTip"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hasResult"], true, "{v}");
    assert_eq!(v["result"]["height"], 7, "{v}");
    assert_eq!(
        v["result"]["hash"], "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "Data as hex, in byte order"
    );

    let ok = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "server.py exits cleanly on SIGTERM");
    assert!(!sock.exists(), "server.py removed its socket");
}

#[test]
fn the_unix_address_finds_bitcoins_default_socket() {
    let dir = TestDir::new("calldef");
    let datadir = dir.path("dd");
    std::fs::create_dir_all(datadir.join("regtest")).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let child = Command::new(testpeer())
        .arg(format!("-ipcbind=unix:{}", sock.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _peer = Peer(child, String::new());
    wait_for(|| sock.exists(), "the peer to listen");
    let out = run_ok(
        mpspy()
            .args(["call", "unix", "--chain", "regtest"])
            .arg("--datadir")
            .arg(&datadir)
            .args(["Init.makeEcho", "Echo.echo", r#"{"echo":"default"}"#]),
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["result"],
        "default"
    );
}

/// Reads from `stream` until `frames` whole Cap'n Proto messages have arrived (or EOF).
fn read_frames(stream: &mut std::os::unix::net::UnixStream, frames: usize) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let whole = |b: &[u8]| {
        let (mut at, mut n) = (0usize, 0usize);
        while b.len() >= at + 4 {
            let count = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize + 1;
            let table = (4 + 4 * count).div_ceil(8) * 8;
            if b.len() < at + table {
                break;
            }
            let words: usize = (0..count)
                .map(|i| {
                    let o = at + 4 + 4 * i;
                    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
                })
                .sum();
            if b.len() < at + table + 8 * words {
                break;
            }
            at += table + 8 * words;
            n += 1;
        }
        n
    };
    while whole(&buf) < frames {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn a_peer_that_closes_mid_call_is_a_transport_error() {
    use std::os::unix::net::UnixListener;
    let dir = TestDir::new("callclose");
    let sock = dir.path("closing.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // A peer that takes the client's Bootstrap and Init.construct (sent together, construct
    // pipelined on the bootstrap answer) and hangs up without answering either.
    let peer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_frames(&mut stream, 2);
    });
    let (code, out, err) = call(&[
        &format!("unix:{}", sock.display()),
        "Init.makeEcho",
        "Echo.echo",
    ]);
    peer.join().unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("call failed")
            && err.contains("Init.construct: the connection failed: Peer disconnected"),
        "{err}"
    );
}

#[test]
fn a_connection_lost_while_a_call_waits_names_that_call() {
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let dir = TestDir::new("calllost");
    let node = listening_peer(&dir);
    let sock = dir.path("relay.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let upstream_path = node.1.trim_start_matches("unix:").to_string();
    // A relay that cuts the connection once both sides have been silent for two seconds: a
    // client in the middle of a session is then waiting for an answer, and the only call that
    // takes that long is waitTipChanged (its timeout is 10 s), so that one is in flight.
    let relay = std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = UnixStream::connect(&upstream_path).unwrap();
        let heard = Arc::new(Mutex::new(Instant::now()));
        let pump = |mut from: UnixStream, mut to: UnixStream| {
            let heard = heard.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut from, &mut buf) {
                    if n == 0 || std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                        break;
                    }
                    *heard.lock().unwrap() = Instant::now();
                }
            })
        };
        let up = pump(client.try_clone().unwrap(), server.try_clone().unwrap());
        let down = pump(server.try_clone().unwrap(), client.try_clone().unwrap());
        while heard.lock().unwrap().elapsed() < Duration::from_secs(2)
            && !up.is_finished()
            && !down.is_finished()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = server.shutdown(std::net::Shutdown::Both);
        let _ = (up.join(), down.join());
    });
    let (code, out, err) = call(&[
        &format!("unix:{}", sock.display()),
        "Init.makeMining",
        "Mining.waitTipChanged",
        r#"{"timeout": 10000}"#,
    ]);
    relay.join().unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("Mining.waitTipChanged: the connection failed"),
        "{err}"
    );
}

#[test]
fn a_refused_connection_is_an_error_before_the_session() {
    let dir = TestDir::new("callrefused");
    let sock = dir.path("stale.sock");
    // A socket file nobody listens on any more, as a stopped node leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let (code, out, err) = call(&[&format!("unix:{}", sock.display()), "Init.makeEcho"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("connecting to {}", sock.display()))
            && err.contains("Connection refused"),
        "{err}"
    );
}
