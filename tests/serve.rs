//! `mpspy serve`: recordings answered to real clients (bitcoin-cli, pycapnp, the test peer's
//! libmultiprocess-style client), unmatched calls failing with the clear exception, and the
//! served traffic decoded and recorded like a live session.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::live::pycapnp;
use crate::peers::{KillOnDrop, Scratch, cli, peer, regtest_args, wait_node_ready};
use crate::testpeer::testpeer;

const PATIENCE: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng")
}

/// `mpspy serve RECORDING --listen unix:DIR/served.sock --json DIR/served.jsonl [extra]`,
/// running (killed if the test fails), once it listens.
struct Serve {
    child: KillOnDrop,
    dir: PathBuf,
    sock: PathBuf,
}

impl Serve {
    fn start(dir: &Path, recording: &Path, extra: &[&str]) -> Serve {
        let sock = dir.join("served.sock");
        let child = mpspy()
            .arg("serve")
            .arg(recording)
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--json")
            .arg(dir.join("served.jsonl"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("serve.stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("serve.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut serve = Serve {
            child: KillOnDrop(Some(child)),
            dir: dir.to_path_buf(),
            sock,
        };
        // Told by its stderr, not by connecting: a probe would be a served connection too.
        let listening = || {
            std::fs::read_to_string(dir.join("serve.stderr"))
                .is_ok_and(|t| t.contains("mpspy serve: listening on"))
        };
        let start = Instant::now();
        while !listening() {
            if let Some(status) = serve.child.child().try_wait().unwrap() {
                panic!(
                    "mpspy serve exited ({status}): {}",
                    text(&std::fs::read(dir.join("serve.stderr")).unwrap())
                );
            }
            assert!(start.elapsed() < PATIENCE, "mpspy serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    fn address(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// SIGTERM, as Ctrl-C or a service manager ends it; its exit status, stderr and events.
    fn stop(mut self) -> (std::process::ExitStatus, String, Vec<Value>) {
        let pid = self.child.child().id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let start = Instant::now();
        while self.child.child().try_wait().unwrap().is_none() {
            assert!(start.elapsed() < PATIENCE, "mpspy serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.take().wait().unwrap();
        let stderr = text(&std::fs::read(self.dir.join("serve.stderr")).unwrap());
        let events = json_lines(&std::fs::read(self.dir.join("served.jsonl")).unwrap());
        (status, stderr, events)
    }
}

/// The recording decoded by `mpspy replay --json`.
fn replayed(recording: &Path) -> Vec<Value> {
    let out = run_ok(mpspy().arg("replay").arg(recording).arg("--json"));
    json_lines(&out.stdout)
}

/// The results of the recorded returns of `method`, in order.
fn recorded_results(events: &[Value], method: &str) -> Vec<Value> {
    returns_of(events, method)
        .iter()
        .map(|r| r["data"]["results"].clone())
        .collect()
}

fn exception_reasons(events: &[Value]) -> Vec<String> {
    of_type(events, "return")
        .iter()
        .filter(|r| r["data"]["outcome"] == "exception")
        .map(|r| {
            r["data"]["exception"]["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A real node answers bitcoin-cli under `mpspy --record`; served from that recording,
/// bitcoin-cli prints what the node printed. With --strict, a request the node never answered
/// fails with the clear exception, which bitcoin-cli shows.
#[test]
fn bitcoin_cli_gets_what_a_recorded_real_node_answered() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("serve-node");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let recording = dir.path().join("node.pcapng");
    let log = dir.path().join("mpspy.log");
    let mut run = KillOnDrop(Some(
        mpspy()
            .env("TMPDIR", dir.path())
            .args(["--no-tui", "--quiet", "--log"])
            .arg(&log)
            .arg("--record")
            .arg(&recording)
            .arg("--")
            .arg(&node)
            .args(regtest_args(&datadir))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    crate::live::wait_interposed(&log);
    wait_node_ready(&datadir);
    let from_node = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert!(from_node.status.success(), "{}", text(&from_node.stderr));
    let stop = cli(&cli_bin, &datadir, &["stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let start = Instant::now();
    while run.child().try_wait().unwrap().is_none() {
        assert!(start.elapsed() < PATIENCE, "the recorded node did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exited: this only collects the status.
    let status = run.take().wait().unwrap();
    assert!(status.success(), "mpspy with the node: {status}");

    let served_cli = |serve: &Serve, method: &str| -> Output {
        Command::new(&cli_bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", datadir.display()))
            .arg(format!("-ipcconnect={}", serve.address()))
            .arg(method)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let serve = Serve::start(dir.path(), &recording, &["--strict"]);
    // Twice: each connection is served from a fresh copy of the recording.
    for _ in 0..2 {
        let out = served_cli(&serve, "getblockcount");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), text(&from_node.stdout));
    }
    let out = served_cli(&serve, "getbestblockhash");
    assert!(!out.status.success());
    let clear = "mpspy serve: no recorded Rpc.executeRpc call left to answer, none with these params (recorded 2, 2 unused with other params)";
    assert!(text(&out.stderr).contains(clear), "{}", text(&out.stderr));
    let (status, stderr, ev) = serve.stop();
    assert!(status.success(), "{stderr}");

    // The served sessions decode like the node's: bitcoin-cli's calls, all answered.
    assert_eq!(of_type(&ev, "conn_opened").len(), 3);
    for c in of_type(&ev, "conn_opened") {
        assert_eq!(c["data"]["client"]["name"], "bitcoin-cli", "{c}");
    }
    assert_eq!(
        calls_on(&ev, &serde_json::json!(1)),
        [
            "Init.construct",
            "ThreadMap.makeThread",
            "Init.makeRpc",
            "Rpc.executeRpc"
        ]
    );
    assert_eq!(exception_reasons(&ev), [clear]);
    assert_eq!(returns_of(&ev, "Rpc.executeRpc").len(), 3);
}

/// The demo recording (the test peer answering its own client) served to a pycapnp client:
/// Echo, then Mining and BlockTemplate objects made from recorded results, the recorded
/// exception of checkBlock, and an echo more than the recording has failing clearly.
#[test]
fn pycapnp_is_answered_from_the_demo_recording() {
    if !pycapnp() {
        return;
    }
    let recorded = replayed(&demo());
    let echoed = recorded_results(&recorded, "Echo.echo");
    let echo = echoed[0]["result"].as_str().unwrap().to_string();
    assert!(echoed.len() >= 2);
    let tip = &recorded_results(&recorded, "Mining.getTip")[0]["result"];

    let dir = Scratch::new("serve-py");
    let serve = Serve::start(
        dir.path(),
        &demo(),
        &[
            "--record",
            dir.path().join("served.pcapng").to_str().unwrap(),
        ],
    );
    let py = |args: &[&str]| -> Output {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/client.py"))
            .arg(serve.address())
            .args(args)
            .output()
            .unwrap()
    };
    let out = py(&["--echo", &echo, "--mining"]);
    assert!(
        out.status.success(),
        "pycapnp client: {}",
        text(&out.stderr)
    );
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got_tip = lines.iter().find(|l| l["call"] == "getTip").unwrap();
    assert_eq!(got_tip["height"], tip["height"]);
    // The client prints the hash in display order; the recording has the bytes.
    let mut hash = hex_bytes(tip["hash"]["hex"].as_str().unwrap());
    hash.reverse();
    assert_eq!(got_tip["hash"], hex_string(&hash));

    // One echo more than the recording has: the clear exception, as the client sees it.
    let n = echoed.len().to_string();
    let out = py(&["--echo", &echo, "--count", &(echoed.len() + 1).to_string()]);
    assert!(!out.status.success());
    let all = if echoed.len() == 2 {
        "both used"
    } else {
        "all used"
    };
    let clear =
        format!("mpspy serve: no recorded Echo.echo call left to answer (recorded {n}, {all})");
    assert!(text(&out.stderr).contains(&clear), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        echoed.len(),
        "every recorded echo answered first"
    );

    let (status, stderr, ev) = serve.stop();
    assert!(status.success(), "{stderr}");
    // In the served session's events: the recorded exception and the unmatched call, both as
    // exception returns, and a notice naming the unmatched call.
    let recorded_reason = exception_reasons(&recorded);
    assert_eq!(
        exception_reasons(&ev),
        [recorded_reason[0].clone(), clear.clone()]
    );
    assert!(
        of_type(&ev, "notice")
            .iter()
            .any(|n| n["data"]["text"].as_str().unwrap().contains(&clear)),
        "a notice for the unmatched call"
    );
    // BlockTemplate calls went to an object made from createNewBlock's recorded result.
    let header = returns_of(&ev, "BlockTemplate.getBlockHeader");
    assert_eq!(
        header[0]["data"]["results"],
        recorded_results(&recorded, "BlockTemplate.getBlockHeader")[0]
    );
    // --record wrote the served sessions: they replay to the same calls.
    let again = replayed(&dir.path().join("served.pcapng"));
    assert_eq!(call_names(&again), call_names(&ev));
}

/// The test peer's libmultiprocess-style client (makeThread pipelined with its first call, a
/// callbackThread per call) runs its Mining session against the served demo recording.
#[test]
fn the_test_peer_client_runs_against_a_served_recording() {
    let dir = Scratch::new("serve-tp");
    let serve = Serve::start(dir.path(), &demo(), &["--immediate"]);
    let out = Command::new(testpeer())
        .args(["client", &serve.address(), "--mining"])
        .output()
        .unwrap();
    let (status, stderr, ev) = serve.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        out.status.success(),
        "test peer client: {}",
        text(&out.stderr)
    );
    let recorded = replayed(&demo());
    // Every Mining and BlockTemplate call it made was answered from the recording.
    for m in [
        "Mining.getTip",
        "BlockTemplate.getBlock",
        "BlockTemplate.getCoinbaseTx",
    ] {
        assert_eq!(
            returns_of(&ev, m)[0]["data"]["results"],
            recorded_results(&recorded, m)[0],
            "{m}"
        );
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
