//! Fault injection (`--inject`, docs/inject.md), seen from the clients' side: each fault reaches
//! a real client as the error it should get (a late answer, an exception of the given type, a
//! disconnect), and every output says what was injected. Against the test peer with `mpspy
//! call` as the client (every clone runs these), and against the real bitcoin-node with
//! bitcoin-cli and pycapnp when they are there.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::live::{TestDir, events_in, pycapnp, start_wrapped_peer, stop_ok};
use crate::peers::{KillOnDrop, Scratch, cli, peer, regtest_args, wait_node_ready};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `mpspy call unix:SOCK STEPS…`, timed.
fn timed_call(sock: &Path, steps: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = mpspy()
        .arg("call")
        .arg(format!("unix:{}", sock.display()))
        .args(steps)
        .output()
        .unwrap();
    (out, start.elapsed())
}

/// The `injected` events, as (kind, method).
fn injected(ev: &[Value]) -> Vec<(String, String)> {
    of_type(ev, "injected")
        .iter()
        .map(|e| {
            (
                e["data"]["kind"].as_str().unwrap().to_string(),
                e["data"]["method"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The notice that says injection is on.
fn injection_notice(ev: &[Value]) -> Option<String> {
    of_type(ev, "notice").iter().find_map(|n| {
        n["data"]["text"]
            .as_str()
            .filter(|t| t.starts_with("fault injection is on: "))
            .map(str::to_string)
    })
}

/// An exception and a delay against the test peer: `mpspy call` gets the exception's type and
/// reason (and exits 1), the delayed call takes at least the delay; the events, the log's
/// summary and the recording (replayed) all show both faults, with the synthesized return as
/// the frame the client received, marked.
#[test]
fn an_injected_exception_and_delay_reach_a_client_of_the_test_peer() {
    let dir = TestDir::new("inject");
    let (json, rec, log) = (
        dir.path("ev.jsonl"),
        dir.path("s.pcapng"),
        dir.path("mpspy.log"),
    );
    let (child, sock) = start_wrapped_peer(
        &dir,
        &[
            "--no-tui",
            "--json",
            json.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
            "--inject",
            "Mining.getTip:exception=overloaded:busy, come back later",
            "--inject",
            "Mining.isTestChain:delay=400ms",
        ],
    );
    let mut child = KillOnDrop(Some(child));

    let (out, _) = timed_call(&sock, &["Init.makeMining", "Mining.getTip"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Mining.getTip failed: overloaded: busy, come back later"),
        "{}",
        text(&out.stderr)
    );
    let (out, took) = timed_call(&sock, &["Init.makeMining", "Mining.isTestChain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(took >= Duration::from_millis(400), "answered in {took:?}");
    // Other methods pass untouched.
    let (out, took) = timed_call(&sock, &["Init.makeEcho", "Echo.echo", r#"{"echo":"hi"}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(took < Duration::from_millis(400) * 10);

    stop_ok(child.take());
    let ev = events_in(&json);
    assert!(injection_notice(&ev).is_some_and(|n| n.contains("Mining.isTestChain:delay=400ms")));
    assert_eq!(
        injected(&ev),
        [
            ("exception".into(), "Mining.getTip".into()),
            ("delay".into(), "Mining.isTestChain".into())
        ]
    );
    // The exception event names its call, and the call's return is the one the client got.
    let fault = &of_type(&ev, "injected")[0]["data"];
    let call_seq = fault["call_seq"].as_u64().expect("paired with its call");
    let call = ev.iter().find(|e| e["seq"] == call_seq).unwrap();
    assert_eq!(method_of(call), "Mining.getTip");
    assert_eq!(call["data"]["question"], fault["question"]);
    let ret = &returns_of(&ev, "Mining.getTip")[0]["data"];
    assert_eq!(ret["call_seq"], call_seq);
    assert_eq!(ret["exception"]["type"], "overloaded");
    assert_eq!(ret["exception"]["reason"], "busy, come back later");
    // The test peer never saw getTip, so never answered one: one return, mpspy's.
    assert_eq!(returns_of(&ev, "Mining.getTip").len(), 1);
    // The client finished its question; the Finish was not passed on, and the session reads as
    // finished (nothing pending at the close).
    for c in of_type(&ev, "conn_closed") {
        assert_eq!(c["data"]["pending_calls"], Value::Array(vec![]), "{c}");
    }
    let delayed = &returns_of(&ev, "Mining.isTestChain")[0]["data"];
    assert!(delayed["latency_ns"].as_u64().unwrap() >= 400_000_000);

    let summary = std::fs::read_to_string(&log).unwrap();
    assert!(
        summary.contains("fault injection was on") && summary.contains("2 fault(s) injected"),
        "{summary}"
    );

    // The recording: its header says so, the answer is a frame with a packet comment, and a
    // replay gives the same faults and the same return.
    let bytes = std::fs::read(&rec).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has(
        "mpspy fault injection: Mining.getTip:exception=overloaded"
    ));
    assert!(has("mpspy-injected {\"kind\":\"exception\""));
    let out = run_ok(mpspy().arg("replay").arg(&rec).arg("--json"));
    let replayed = json_lines(&out.stdout);
    assert_eq!(injected(&replayed), injected(&ev));
    let again = &returns_of(&replayed, "Mining.getTip")[0]["data"];
    assert_eq!(again["exception"], ret["exception"]);
    assert!(injection_notice(&replayed).is_some());
}

/// `conn:disconnect-after=N`: the first N calls of each connection pass, the next one is not
/// forwarded and the connection is cut; the client sees the disconnect, the events say why.
#[test]
fn disconnect_after_n_calls_cuts_a_client_of_the_test_peer() {
    let dir = TestDir::new("inject-cut");
    let json = dir.path("ev.jsonl");
    let (child, sock) = start_wrapped_peer(
        &dir,
        &[
            "--no-tui",
            "--json",
            json.to_str().unwrap(),
            "--inject",
            "conn:disconnect-after=2",
        ],
    );
    let mut child = KillOnDrop(Some(child));
    // construct and makeThread pass; makeMining is the third call. (`mpspy call` pipelines
    // them, so the first it hears of the cut may be for an earlier one.)
    let (out, _) = timed_call(&sock, &["Init.makeMining", "Mining.getTip"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("the connection failed: Peer disconnected"),
        "{err}"
    );
    stop_ok(child.take());
    let ev = events_in(&json);
    assert_eq!(
        injected(&ev),
        [("disconnect".into(), "Init.makeMining".into())]
    );
    let closed = &of_type(&ev, "conn_closed")[0]["data"];
    assert!(
        closed["reason"]
            .as_str()
            .unwrap()
            .starts_with("mpspy cut the connection at call 3"),
        "{closed}"
    );
    // The cut call is left pending: it never got an answer (nor may the calls before it, sent
    // in the same write, whose answers the cut overtook).
    let pending: Vec<&str> = closed["pending_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["method"].as_str().unwrap())
        .collect();
    assert!(pending.contains(&"Init.makeMining"), "{pending:?}");
}

/// Without `--inject` nothing is injected and nothing says it is: the same call succeeds.
#[test]
fn without_inject_the_relay_alters_nothing() {
    let dir = TestDir::new("inject-off");
    let json = dir.path("ev.jsonl");
    let (child, sock) = start_wrapped_peer(&dir, &["--no-tui", "--json", json.to_str().unwrap()]);
    let mut child = KillOnDrop(Some(child));
    let (out, _) = timed_call(&sock, &["Init.makeMining", "Mining.getTip"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = stop_ok(child.take());
    let ev = events_in(&json);
    assert!(injected(&ev).is_empty());
    assert!(injection_notice(&ev).is_none());
    assert_eq!(
        returns_of(&ev, "Mining.getTip")[0]["data"]["outcome"],
        "results"
    );
    let log = std::fs::read_to_string(dir.path("mpspy.log")).unwrap();
    assert!(!log.contains("fault injection") && !stderr.contains("fault injection"));
}

/// A bad rule names the flag and what is wrong, exit 2, before anything runs.
#[test]
fn bad_inject_rules_are_refused_with_the_reason() {
    for (rule, says) in [
        (
            "Mining.getTip:foo=1",
            "unknown fault 'foo' (delay, exception, disconnect, disconnect-after)",
        ),
        ("Mining.getTip:delay=5", "delay=5: give a unit"),
        (
            "Mining.getTip:exception=boom",
            "unknown exception type 'boom'",
        ),
        (
            "Mining.nope:delay=1s",
            "--inject: no method 'Mining.nope' in the schemas",
        ),
    ] {
        let out = mpspy()
            .args(["--no-tui", "--inject", rule, "--", "true"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rule}: {err}");
        assert!(
            err.contains("--inject") && err.contains(says),
            "{rule}: {err}"
        );
    }
}

/// pycapnp's view of the faults (tests/py/faults.py prints one line per call).
fn faults_client(sock: &Path, steps: &[&str]) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/faults.py"))
        .arg(format!("unix:{}", sock.display()))
        .args(steps)
        .output()
        .unwrap();
    assert!(out.status.success(), "faults.py: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The real bitcoin-node under `mpspy --inject`: bitcoin-cli gets the injected error for its
/// `Rpc.executeRpc` (and exits non-zero) and then works again; pycapnp gets an OVERLOADED
/// `KjException`, a late answer, a FAILED one for a call and for the call pipelined on it (the
/// node never saw either and keeps serving), and a disconnect. The node shuts down cleanly.
#[test]
fn the_real_node_under_inject_gives_bitcoin_cli_and_pycapnp_the_faults() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("inject");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let json = dir.path().join("events.jsonl");
    let log = dir.path().join("mpspy.log");
    let mut run = KillOnDrop(Some(
        mpspy()
            .env("TMPDIR", dir.path())
            .args(["--no-tui", "--json"])
            .arg(&json)
            .arg("--log")
            .arg(&log)
            .args([
                "--inject",
                "Rpc.executeRpc:exception=failed:node is busy,times=1",
                "--inject",
                "Mining.getTip:exception=overloaded,times=1",
                "--inject",
                "Mining.isTestChain:delay=300ms,times=1",
                "--inject",
                "Init.makeMining:exception=failed:no mining here,every=2",
                "--inject",
                "Mining.isTestChain:disconnect",
            ])
            .arg("--")
            .arg(&node)
            .args(regtest_args(&datadir))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    crate::live::wait_interposed(&log);
    wait_node_ready(&datadir);

    let out = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("node is busy"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0\n");

    let mut faults = Vec::new();
    if pycapnp() {
        let sock = datadir.join("regtest/node.sock");
        let got = faults_client(
            &sock,
            &[
                "getTip",
                "isTestChain",
                "pipelined",
                "getTip",
                "isTestChain",
                "getTip",
            ],
        );
        let seen = |i: usize| {
            (
                got[i]["step"].as_str().unwrap().to_string(),
                got[i]["exception"].as_str().unwrap_or("ok").to_string(),
            )
        };
        let expect = [
            ("getTip", "OVERLOADED"),
            ("isTestChain", "ok"),
            ("pipelined.makeMining", "FAILED"),
            ("pipelined.getTip", "FAILED"),
            ("getTip", "ok"),
            ("isTestChain", "DISCONNECTED"),
            ("getTip", "DISCONNECTED"),
        ];
        assert_eq!(got.len(), expect.len(), "{got:?}");
        for (i, (step, outcome)) in expect.iter().enumerate() {
            assert_eq!(seen(i), (step.to_string(), outcome.to_string()), "{got:?}");
        }
        assert!(got[1]["ms"].as_f64().unwrap() >= 300.0, "{:?}", got[1]);
        assert!(
            got[2]["description"]
                .as_str()
                .unwrap()
                .contains("no mining here")
                && got[3]["description"] == got[2]["description"],
            "{got:?}"
        );
        faults = vec![
            "exception Mining.getTip",
            "delay Mining.isTestChain",
            "exception Init.makeMining",
            "exception Mining.getTip",
            "disconnect Mining.isTestChain",
        ];
    }

    let out = cli(&cli_bin, &datadir, &["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let start = Instant::now();
    while run.child().try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mpspy did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exited: this only collects the status.
    let status = run.take().wait().unwrap();
    assert_eq!(status.code(), Some(0), "the node's exit status");

    let ev = events_in(&json);
    let got: Vec<String> = injected(&ev)
        .into_iter()
        .map(|(k, m)| format!("{k} {m}"))
        .collect();
    let mut want = vec!["exception Rpc.executeRpc"];
    want.extend(faults);
    assert_eq!(got, want);
    // The node never saw what mpspy answered, so it never aborted a connection over a question
    // it did not know.
    for a in of_type(&ev, "abort") {
        assert_eq!(
            a["data"]["exception"]["reason"], "Peer disconnected.",
            "{a}"
        );
    }
    let rets = returns_of(&ev, "Rpc.executeRpc");
    assert_eq!(rets[0]["data"]["exception"]["reason"], "node is busy");
    let summary = std::fs::read_to_string(&log).unwrap();
    assert!(summary.contains("fault injection was on"), "{summary}");
}
