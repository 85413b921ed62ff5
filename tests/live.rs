//! `mpspy -- PROGRAM` with real processes and sockets: the test peer (a bitcoin-node stand-in)
//! wrapped by mpspy, driven by a pycapnp client (an independent Cap'n Proto implementation) and
//! by the peer's own Rust client.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::testpeer::testpeer;

pub(crate) fn pycapnp() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import capnp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("MPSPY_REQUIRE_PYCAPNP").is_some() {
        panic!("MPSPY_REQUIRE_PYCAPNP is set but pycapnp is not importable");
    }
    ok
}

pub(crate) struct TestDir(pub(crate) PathBuf);

impl TestDir {
    pub(crate) fn new(name: &str) -> TestDir {
        // Short: unix socket paths are limited to ~107 bytes.
        let d = PathBuf::from(format!("/tmp/mpspy-t-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        TestDir(d)
    }
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until mpspy's messages in `log` (`--log`) say it has taken over the program's listening
/// socket: before that a client could reach the program directly.
pub(crate) fn wait_interposed(log: &Path) {
    wait_for(
        || std::fs::read_to_string(log).is_ok_and(|t| t.contains("mpspy relays every connection")),
        "mpspy to take over the program's socket",
    );
}

/// Starts `mpspy ARGS -- testpeer -ipcbind=unix:SOCK` with its private files under the test dir.
pub(crate) fn start_wrapped_peer(dir: &TestDir, mpspy_args: &[&str]) -> (Child, PathBuf) {
    let sock = dir.path("node.sock");
    let log = dir.path("mpspy.log");
    let child = mpspy()
        .env("TMPDIR", dir.path("tmp"))
        .args(mpspy_args)
        .arg("--log")
        .arg(&log)
        .arg("--")
        .arg(testpeer())
        .arg(format!("-ipcbind=unix:{}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (A probe connection would itself be a connection in the events.)
    wait_interposed(&log);
    (child, sock)
}

/// Waits until the `--json` output at `json` has `n` `conn_closed` events.
pub(crate) fn wait_closed(json: &Path, n: usize) {
    wait_for(
        || {
            std::fs::read_to_string(json)
                .map_or(0, |t| t.matches("\"type\":\"conn_closed\"").count())
                >= n
        },
        "the clients' connections closed",
    );
}

pub(crate) fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// SIGTERMs a wrapped program's mpspy, expects exit 0 (the program's status), returns stderr.
pub(crate) fn stop_ok(child: Child) -> String {
    signal(child.id(), "-TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    stderr
}

pub(crate) fn events_in(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read(path).unwrap())
}

#[test]
fn wraps_a_listening_peer_for_pycapnp_and_rust_clients_and_replays_the_same_events() {
    let dir = TestDir::new("bind");
    let json = dir.path("events.jsonl");
    let rec = dir.path("session.pcapng");
    let (child, sock) = start_wrapped_peer(
        &dir,
        &[
            "--json",
            json.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
        ],
    );
    let address = format!("unix:{}", sock.display());

    // The peer's own Rust client (libmultiprocess C++ client conventions).
    let out = Command::new(testpeer())
        .args([
            "client", &address, "--echo", "rust", "--count", "20", "--mining",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // pycapnp, if present (CI requires it).
    let py = pycapnp();
    if py {
        let out = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/client.py"))
            .args([&address, "--echo", "hello", "--echo", "", "--count", "50"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Both clients have exited; let mpspy see their ends before the peer is stopped, or on a
    // loaded machine the peer's own exit can be noticed first and the reasons would differ.
    wait_closed(&json, if py { 2 } else { 1 });
    let stderr = stop_ok(child);
    // The event lines go to stderr; mpspy's messages and the summary at exit, which names the
    // methods, to --log.
    assert!(stderr.contains("→ call q1 Init.construct"), "{stderr}");
    let log = std::fs::read_to_string(dir.path("mpspy.log")).unwrap();
    assert!(
        log.contains("per-method summary") && log.contains("Echo.echo"),
        "{log}"
    );
    assert!(!stderr.contains("per-method summary"), "{stderr}");
    // The socket is left as the program leaves it: nobody listens there any more.
    let e = std::os::unix::net::UnixStream::connect(&sock).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(
        std::fs::read_dir(dir.path("tmp")).unwrap().count(),
        0,
        "private dir removed"
    );

    let ev = events_in(&json);
    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened.len(), if py { 2 } else { 1 });
    assert_eq!(opened[0]["data"]["server"]["name"], "mpspy-testpeer");
    assert!(opened[0]["data"]["server"]["pid"].is_u64());
    assert_eq!(opened[0]["data"]["client"]["name"], "mpspy-testpeer");

    // Rust client: construct → makeThread → makeEcho → echo ×20 → destroy, all with latencies.
    let rust_conn = opened[0]["conn"].clone();
    let of_conn = |name: &str| -> Vec<Value> {
        calls_of(&ev, name)
            .into_iter()
            .filter(|e| e["conn"] == rust_conn)
            .cloned()
            .collect()
    };
    assert!(
        of_type(&ev, "bootstrap")
            .iter()
            .any(|b| b["conn"] == rust_conn),
        "bootstrap"
    );
    assert!(
        of_type(&ev, "release")
            .iter()
            .any(|r| r["conn"] == rust_conn && r["dir"] == "c2s"),
        "the client releases what it is done with"
    );
    assert_eq!(of_conn("Init.construct").len(), 1);
    assert_eq!(of_conn("ThreadMap.makeThread").len(), 1);
    assert_eq!(of_conn("Init.makeEcho").len(), 1);
    assert_eq!(of_conn("Echo.echo").len(), 20);
    assert_eq!(of_conn("Echo.destroy").len(), 1);
    for r in returns_of(&ev, "Echo.echo") {
        assert!(r["data"]["latency_ns"].as_u64().unwrap() > 0);
    }

    if py {
        let py_conn = opened[1]["conn"].clone();
        assert_eq!(opened[1]["data"]["client"]["name"], "python3");
        let py_echoes: Vec<&Value> = calls_of(&ev, "Echo.echo")
            .into_iter()
            .filter(|e| e["conn"] == py_conn)
            .map(|e| &e["data"]["params"]["echo"])
            .collect();
        assert_eq!(py_echoes.len(), 100);
        assert_eq!(py_echoes[0], "hello");
        assert_eq!(py_echoes[99], "");
        assert!(
            calls_of(&ev, "Echo.echo")
                .iter()
                .any(|c| c["conn"] == py_conn && c["data"]["thread"] == "pyclient")
        );
        let closed = of_type(&ev, "conn_closed")
            .into_iter()
            .find(|e| e["conn"] == py_conn)
            .unwrap();
        assert!(
            closed["data"]["reason"]
                .as_str()
                .unwrap()
                .contains("client closed"),
            "{closed}"
        );
    }

    // Replay yields the same events as the live run (the session line names its source).
    let out = run_ok(mpspy().arg("replay").arg(&rec).arg("--json"));
    let replayed = json_lines(&out.stdout);
    let strip = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .filter(|e| e["type"] != "session")
            .cloned()
            .collect()
    };
    let (replayed, live) = (strip(&replayed), strip(&ev));
    if let Some(i) = (0..replayed.len().max(live.len())).find(|&i| replayed.get(i) != live.get(i)) {
        panic!(
            "replay differs from the live run at event {i} of {}/{}:\nreplay: {:?}\nlive:   {:?}",
            replayed.len(),
            live.len(),
            replayed.get(i),
            live.get(i)
        );
    }

    // Wireshark's tools read the recording, where installed.
    for tool in ["capinfos", "tshark"] {
        let args: &[&str] = if tool == "tshark" { &["-r"] } else { &[] };
        if let Ok(out) = Command::new(tool).args(args).arg(&rec).output() {
            assert!(
                out.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn killing_the_server_mid_call_reports_the_pending_call_and_keeps_the_recording() {
    if !pycapnp() {
        eprintln!("note: pycapnp missing; skipping");
        return;
    }
    let dir = TestDir::new("kill");
    let json = dir.path("events.jsonl");
    let rec = dir.path("session.pcapng");
    // (start_wrapped_peer sends mpspy's messages there.)
    let log = dir.path("mpspy.log");
    let trace = dir.path("trace.json");
    let collector = crate::otlp::Receiver::start();
    let (child, sock) = start_wrapped_peer(
        &dir,
        &[
            "--json",
            json.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
            "--trace-out",
            trace.to_str().unwrap(),
            "--otlp",
            &collector.url,
            "--quiet",
        ],
    );
    let mut client = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/client.py"))
        .arg(format!("unix:{}", sock.display()))
        .arg("--hang")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("client output").unwrap();
        if l.contains("waiting") {
            break;
        }
    }
    // The waitTipChanged call must have reached the decoder before the kill.
    wait_for(
        || std::fs::read_to_string(&json).is_ok_and(|t| t.contains("waitTipChanged")),
        "the pending call in the JSON",
    );
    let peer_pid = events_in(&json)
        .iter()
        .find(|e| e["type"] == "conn_opened")
        .and_then(|e| e["data"]["server"]["pid"].as_u64())
        .unwrap();
    signal(peer_pid as u32, "-KILL");
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(
        (status.code(), status.signal()),
        (None, Some(9)),
        "mpspy ends like the program did: killed by SIGKILL"
    );
    let _ = client.kill();
    let _ = client.wait();

    let ev = events_in(&json);
    let closed = &of_type(&ev, "conn_closed")[0]["data"];
    let pending: Vec<&str> = closed["pending_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["method"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["Mining.waitTipChanged"], "{closed}");
    assert!(
        closed["live_caps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cap"].as_str().unwrap().starts_with("Mining#"))
    );

    let out = run_ok(mpspy().arg("replay").arg(&rec).arg("--json"));
    let replayed = json_lines(&out.stdout);
    assert!(
        replayed
            .iter()
            .any(|e| e["type"] == "call" && e["data"]["method"] == "waitTipChanged")
    );

    // The live timeline: the call the server never answered ends at the disconnect.
    let timeline = crate::trace::trace_in(&trace);
    crate::trace::assert_trace(&timeline, &ev);
    assert!(
        timeline
            .iter()
            .any(|e| e["name"] == "Mining.waitTipChanged" && e["args"]["outcome"] == "unanswered"),
        "the pending call's slice"
    );

    // The live spans: every call, the unanswered one ended at the disconnect.
    let spans = collector.spans();
    crate::otlp::assert_spans(&spans, &ev);
    assert!(
        spans
            .iter()
            .any(|s| s.name == "Mining.waitTipChanged" && s.attrs["mpspy.outcome"] == "unanswered"),
        "{spans:#?}"
    );

    // In plain words: at the disconnect in the text output, and in the summary at the end.
    let left = "Mining.waitTipChanged (q";
    let out = run_ok(mpspy().arg("replay").arg(&rec));
    let text = String::from_utf8_lossy(&out.stdout);
    let closed = text
        .lines()
        .find(|l| l.contains(" closed") && !l.contains("LINT"))
        .unwrap_or_else(|| panic!("no closed line: {text}"));
    assert!(
        closed.contains(&format!("closed: {left}")) && closed.contains(") had been pending "),
        "{closed}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("1 connection(s) closed with calls unanswered or objects never destroyed")
            && log.contains(left),
        "{log}"
    );
}

#[test]
fn bad_input_names_what_is_wrong_and_leaves_nothing_behind() {
    let dir = TestDir::new("bad");
    let run = |args: &[&str]| {
        let out = mpspy()
            .env("TMPDIR", dir.path("tmp"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--bogus", "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--bogus"), "{err}");

    let (code, err) = run(&["--", "/nonexistent/bitcoin-node", "-regtest"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/bitcoin-node"), "{err}");

    let (code, err) = run(&["--record", "/nonexistent/dir/x.pcapng", "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--record /nonexistent/dir/x.pcapng"), "{err}");

    // The program's own bad arguments are the program's to report: mpspy runs it as given, and
    // it fails as it would without mpspy, with its own message and status.
    let file = dir.path("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let peer = testpeer();
    let bind = format!("-ipcbind=unix:{}", file.display());
    let alone = Command::new(&peer).arg(&bind).output().unwrap();
    assert!(!alone.status.success());
    let (code, err) = run(&["--", peer.to_str().unwrap(), &bind]);
    assert_eq!(code, alone.status.code(), "{err}");
    assert!(
        err.contains(String::from_utf8_lossy(&alone.stderr).trim()),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let (code, err) = run(&["--", "true", "-datadir=/nonexistent/datadir"]);
    assert_eq!(code, Some(0), "run as given: {err}");
    assert!(
        err.contains("could not work out the IPC sockets of true")
            && err.contains("/nonexistent/datadir")
            && err.contains("running it as given"),
        "{err}"
    );

    assert_eq!(
        std::fs::read_dir(dir.path("tmp")).unwrap().count(),
        0,
        "nothing left in TMPDIR"
    );
}

#[test]
fn the_demo_wraps_the_test_peer_and_its_client() {
    // The demo runs the test peer found next to mpspy: make sure it is built.
    testpeer();
    let out = run_ok(mpspy().args(["demo", "--json"]));
    let ev = json_lines(&out.stdout);
    for m in [
        "Init.construct",
        "ThreadMap.makeThread",
        "Echo.echo",
        "Mining.createNewBlock",
        "Rpc.executeRpc",
    ] {
        assert!(!calls_of(&ev, m).is_empty(), "{m} missing from the demo");
    }
    let rpc = &returns_of(&ev, "Rpc.executeRpc")[0]["data"]["results"]["result"];
    assert_eq!(rpc, r#"{"jsonrpc":"2.0","result":5,"id":"1"}"#);
}

#[test]
fn the_demo_without_the_test_peer_says_how_to_build_it() {
    // mpspy alone in a directory (a link, so that its own path is there), nothing on PATH.
    let dir = TestDir::new("demo-alone");
    let alone = dir.path("mpspy");
    std::fs::hard_link(env!("CARGO_BIN_EXE_mpspy"), &alone)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_mpspy"), &alone).map(|_| ()))
        .unwrap();
    let out = Command::new(&alone)
        .args(["demo", "--json"])
        .env("PATH", "")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mpspy-testpeer") && err.contains("cargo build --release -p mpspy-testpeer"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_bitcoin_wrapper_is_followed_to_the_program_it_would_run() {
    let dir = TestDir::new("wrapper");
    // A release layout: bin/bitcoin and libexec/bitcoin-node (here: the test peer).
    std::fs::create_dir_all(dir.path("bin")).unwrap();
    std::fs::create_dir_all(dir.path("libexec")).unwrap();
    std::fs::write(dir.path("bin/bitcoin"), "#!/bin/sh\nexit 99\n").unwrap();
    std::os::unix::fs::symlink(testpeer(), dir.path("libexec/bitcoin-node")).unwrap();
    let sock = dir.path("node.sock");
    let json = dir.path("events.jsonl");
    let log = dir.path("mpspy.log");
    let child = mpspy()
        .env("TMPDIR", dir.path("tmp"))
        .args(["--quiet", "--json", json.to_str().unwrap(), "--log"])
        .arg(&log)
        .arg("--")
        .arg(dir.path("bin/bitcoin"))
        .args(["-m", "node"])
        .arg(format!("-ipcbind=unix:{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_interposed(&log);
    let out = Command::new(testpeer())
        .args([
            "client",
            &format!("unix:{}", sock.display()),
            "--echo",
            "via wrapper",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = stop_ok(child);
    assert!(!stderr.contains("mpspy"), "--quiet: {stderr}");
    let ev = events_in(&json);
    let notices: Vec<&str> = of_type(&ev, "notice")
        .iter()
        .map(|n| n["data"]["text"].as_str().unwrap())
        .collect();
    assert!(
        notices[0].contains("`bitcoin` would run") && notices[0].contains("libexec/bitcoin-node"),
        "{notices:?}"
    );
    assert_eq!(
        calls_of(&ev, "Echo.echo")[0]["data"]["params"]["echo"],
        "via wrapper"
    );
    assert_eq!(
        of_type(&ev, "conn_opened")[0]["data"]["server"]["name"],
        "bitcoin-node"
    );
}

#[test]
fn a_client_with_ipcconnect_is_relayed_to_the_real_socket() {
    let dir = TestDir::new("cli");
    let datadir = dir.path("dd");
    std::fs::create_dir_all(datadir.join("regtest")).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let mut node = Command::new(testpeer())
        .arg(format!("-ipcbind=unix:{}", sock.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| sock.exists(), "the node to listen");
    // A bitcoin-cli stand-in (the test peer answers to that name).
    let cli = dir.path("bitcoin-cli");
    std::os::unix::fs::symlink(testpeer(), &cli).unwrap();
    let json = dir.path("events.jsonl");
    let out = run_ok(
        mpspy()
            .env("TMPDIR", dir.path("tmp"))
            .args(["--quiet", "--json", json.to_str().unwrap(), "--"])
            .arg(&cli)
            .arg(format!("-datadir={}", datadir.display()))
            .args(["-regtest", "-ipcconnect=unix", "getblockcount"]),
    );
    let _ = node.kill();
    let _ = node.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""result":5"#), "{stdout}");
    let ev = events_in(&json);
    let exec = &calls_of(&ev, "Rpc.executeRpc")[0]["data"]["params"];
    assert!(exec["request"].as_str().unwrap().contains("getblockcount"));
    let opened = &of_type(&ev, "conn_opened")[0]["data"];
    assert_eq!(opened["client"]["name"], "bitcoin-cli");
    assert_eq!(
        opened["server"]["name"], "mpspy-testpeer",
        "server found by peer credentials"
    );
    assert!(
        opened["label"]
            .as_str()
            .unwrap()
            .contains(&sock.display().to_string())
    );
    assert_eq!(std::fs::read_dir(dir.path("tmp")).unwrap().count(), 0);
}

#[test]
fn a_node_without_ipcbind_gets_one_at_bitcoins_default_path() {
    let dir = TestDir::new("default");
    let datadir = dir.path("dd");
    std::fs::create_dir_all(&datadir).unwrap();
    let node = dir.path("bitcoin-node");
    std::os::unix::fs::symlink(testpeer(), &node).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let log = dir.path("mpspy.log");
    let child = mpspy()
        .env("TMPDIR", dir.path("tmp"))
        .arg("--quiet")
        .arg("--log")
        .arg(&log)
        .arg("--")
        .arg(&node)
        .arg(format!("-datadir={}", datadir.display()))
        .arg("-regtest")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_interposed(&log);
    let out = Command::new(testpeer())
        .args(["client", &format!("unix:{}", sock.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = stop_ok(child);
    assert_eq!(stderr, "", "--quiet writes nothing on the program's stderr");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("mpspy adds -ipcbind=unix") && log.contains("--no-bind"),
        "{log}"
    );
    assert!(
        log.contains(&format!("listens on {}", sock.display())),
        "{log}"
    );
    // Left as the program leaves it: a socket nobody listens on.
    let e = std::os::unix::net::UnixStream::connect(&sock).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

/// The process `parent` started (the wrapped program), from /proc.
fn child_of(parent: u32) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // The parent pid is the second field after the parenthesized name.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .is_some_and(|ppid| ppid == parent.to_string())
            })
        })
        .expect("the wrapped program")
}

/// A call that gets no answer is reported `stuck` by the live decoder's own timer, while no
/// frame comes at all (the server is stopped with SIGSTOP); SIGUSR1 writes a snapshot of what is
/// pending; the session goes on once the server does; and `--check` fails the run on it.
#[test]
fn a_call_that_gets_no_answer_is_reported_stuck_while_nothing_happens() {
    let dir = TestDir::new("stuck");
    let json = dir.path("events.jsonl");
    let (child, sock) = start_wrapped_peer(
        &dir,
        &[
            "--json",
            json.to_str().unwrap(),
            "--quiet",
            "--stuck-after",
            "1",
            "--check",
        ],
    );
    let peer = child_of(child.id());
    signal(peer, "-STOP");
    let client = mpspy()
        .args(["call", &format!("unix:{}", sock.display())])
        .args(["Init.makeEcho", "Echo.echo", r#"{"echo":"x"}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || std::fs::read_to_string(&json).is_ok_and(|t| t.contains(r#""type":"stuck""#)),
        "a stuck event",
    );
    // SIGUSR1 asks mpspy (not the program) for a snapshot of what is pending.
    signal(child.id(), "-USR1");
    wait_for(
        || std::fs::read_to_string(&json).is_ok_and(|t| t.contains(r#""type":"snapshot""#)),
        "a snapshot event",
    );
    signal(peer, "-CONT");
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --check: the program exited 0, but a stuck call is a warning, so mpspy exits 1 and says
    // why in its messages (--log here, as --quiet keeps them out of the program's stderr).
    signal(child.id(), "-TERM");
    let done = child.wait_with_output().unwrap();
    assert!(done.stderr.is_empty(), "--quiet");
    assert_eq!(done.status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path("mpspy.log")).unwrap();
    assert!(log.contains("finding(s)"), "{log}");
    assert!(log.contains("stuck"), "{log}");
    assert!(log.contains("mpspy check: FAILED"), "{log}");

    let ev = events_in(&json);
    let stuck = of_type(&ev, "stuck");
    let first = stuck.first().expect("a stuck event");
    // The client's first question, the bootstrap, is what hung.
    assert_eq!(first["data"]["method"], "bootstrap", "{first}");
    assert_eq!(first["data"]["limit_ns"], 1_000_000_000u64, "{first}");
    assert!(
        first["data"]["pending_ns"].as_u64().unwrap() > 1_000_000_000,
        "{first}"
    );
    // Reported once per call, and every call still got its return.
    let mut seqs: Vec<_> = stuck
        .iter()
        .map(|s| s["data"]["call_seq"].clone())
        .collect();
    seqs.dedup();
    assert_eq!(seqs.len(), stuck.len(), "{stuck:?}");
    assert_eq!(returns_of(&ev, "Echo.echo").len(), 1);
    // The snapshot lists the one connection's pending calls, the bootstrap first.
    let snap = of_type(&ev, "snapshot");
    assert_eq!(snap.len(), 1);
    let conns = snap[0]["data"]["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{}", snap[0]);
    let pending = conns[0]["pending"].as_array().unwrap();
    assert_eq!(pending[0]["method"], "bootstrap", "{}", snap[0]);
    assert!(pending[0]["elapsed_ns"].as_u64().unwrap() > 1_000_000_000);
}
