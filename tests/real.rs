//! mpspy against the real programs (`tests/peers.rs` finds them): Bitcoin Core master's
//! `bitcoin-node`, `bitcoin-cli` and `bitcoin`, and the libmultiprocess example `mpexample`.
//! These are the reference for what mpspy must decode and for what it must not change.
//!
//! The nodes run on regtest in scratch datadirs with `-listen=0 -server=0` (no P2P, no RPC
//! port to clash between parallel tests; bitcoin-cli reaches them over IPC).

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::lints::misbehaving;
use crate::live::{pycapnp, wait_interposed};
use crate::peers::{
    KillOnDrop, Scratch, accepts, cli, peer, regtest_args, wait_for, wait_node_ready,
};

const PATIENCE: Duration = Duration::from_secs(60);

fn events_in(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read(path).unwrap())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `mpspy --no-tui --json J --log L [extra] -- PROGRAM ARGS`, started in the background, its
/// stdout and stderr to files in `dir` (a pipe nobody reads would stop it once full).
fn mpspy_run(dir: &Path, extra: &[&str], program: &Path, args: &[String]) -> (KillOnDrop, PathBuf) {
    let out = std::fs::File::create(dir.join("mpspy.stdout")).unwrap();
    let err = std::fs::File::create(dir.join("mpspy.stderr")).unwrap();
    let child = mpspy()
        .env("TMPDIR", dir)
        .arg("--no-tui")
        .arg("--json")
        .arg(dir.join("events.jsonl"))
        .arg("--log")
        .arg(dir.join("mpspy.log"))
        .args(extra)
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    (KillOnDrop(Some(child)), dir.to_path_buf())
}

/// Waits for a [`mpspy_run`] with a deadline (killing it on timeout so the test fails instead
/// of hanging); its status and what it wrote.
fn wait_output((mut child, dir): (KillOnDrop, PathBuf), what: &str) -> Output {
    let c = child.child();
    let start = std::time::Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < PATIENCE, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exited: this only collects the status.
    let status = child.take().wait().unwrap();
    Output {
        status,
        stdout: std::fs::read(dir.join("mpspy.stdout")).unwrap(),
        stderr: std::fs::read(dir.join("mpspy.stderr")).unwrap(),
    }
}

/// A node without mpspy, listening at `<datadir>/regtest/node.sock` and done loading.
pub(crate) fn start_plain_node(node: &Path, datadir: &Path) -> KillOnDrop {
    let child = KillOnDrop(Some(
        Command::new(node)
            .args(regtest_args(datadir))
            .arg("-ipcbind=unix")
            .spawn()
            .unwrap(),
    ));
    let sock = datadir.join("regtest/node.sock");
    wait_for("the node to listen", PATIENCE, || accepts(&sock));
    wait_node_ready(datadir);
    child
}

/// Runs the pycapnp client (tests/py/client.py) against `sock` with `mode`; it must succeed.
fn pyclient(sock: &Path, mode: &str) -> Output {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/client.py"))
        .arg(format!("unix:{}", sock.display()))
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pycapnp client: {}",
        text(&out.stderr)
    );
    out
}

/// Every call has its return, with a latency, and every method has a name from the schema.
fn assert_paired_and_named(ev: &[Value]) {
    let calls = of_type(ev, "call");
    assert!(!calls.is_empty());
    for c in &calls {
        let m = method_of(c);
        assert!(
            !m.contains("0x") && !m.contains('@'),
            "unnamed method {m}: {c}"
        );
    }
    let returns = of_type(ev, "return");
    for r in &returns {
        assert!(
            r["data"]["latency_ns"].is_u64(),
            "return without latency: {r}"
        );
        assert_ne!(
            r["data"]["method"], "?",
            "a return whose call was not seen: {r}"
        );
    }
    // Each call is answered once (bootstraps are answered too, without a call event).
    let bootstraps = of_type(ev, "bootstrap").len();
    assert_eq!(
        returns.len(),
        calls.len() + bootstraps,
        "every call paired with its return"
    );
}

/// Every connection that opened was closed, with a reason.
fn assert_all_closed(ev: &[Value]) -> usize {
    let opened = of_type(ev, "conn_opened").len();
    let closed = of_type(ev, "conn_closed");
    assert_eq!(closed.len(), opened, "conn_closed for every conn_opened");
    for c in &closed {
        assert!(c["data"]["reason"].is_string(), "{c}");
    }
    opened
}

/// The node's socket is left as bitcoin-node leaves it: there, and refusing connections.
fn assert_left_like_the_node(sock: &Path) {
    let e = std::os::unix::net::UnixStream::connect(sock).unwrap_err();
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{}: {e}",
        sock.display()
    );
}

/// The node under mpspy with no -ipcbind (mpspy adds it), at the default path, unchanged:
/// bitcoin-cli (getblockcount, a 40 KB echo, stop) and a pycapnp client written against our
/// own schema files (Echo; Mining: createNewBlock, getBlock, waitNext, destroy, a remote
/// exception).
#[test]
fn a_real_node_under_mpspy_serves_bitcoin_cli_and_pycapnp_at_its_default_path() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("node");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let run = mpspy_run(dir.path(), &[], &node, &regtest_args(&datadir));
    wait_interposed(&dir.path().join("mpspy.log"));
    wait_node_ready(&datadir);

    let out = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0\n");
    let big = "x".repeat(40_000);
    let out = cli(&cli_bin, &datadir, &["echo", &big]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&big));
    let py = pycapnp();
    if py {
        pyclient(&sock, "--mining");
    }
    let out = cli(&cli_bin, &datadir, &["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = wait_output(run, "mpspy with the node");
    assert_eq!(out.status.code(), Some(0), "the node's exit status");
    assert_left_like_the_node(&sock);

    let ev = events_in(&dir.path().join("events.jsonl"));
    assert_paired_and_named(&ev);
    let conns = assert_all_closed(&ev);
    assert_eq!(conns, 3 + usize::from(py));
    for c in of_type(&ev, "conn_opened") {
        assert_eq!(c["data"]["server"]["name"], "bitcoin-node", "{c}");
        assert!(
            c["data"]["label"]
                .as_str()
                .unwrap()
                .contains(&sock.display().to_string()),
            "{c}"
        );
    }
    // The 40 KB echo, whole (a -debug=ipc log cuts it at 200 characters).
    let echoes: Vec<&Value> = calls_of(&ev, "Rpc.executeRpc")
        .into_iter()
        .filter(|c| {
            c["data"]["params"]["request"]
                .as_str()
                .is_some_and(|r| r.contains(&big))
        })
        .collect();
    assert_eq!(echoes.len(), 1);
    let rets = returns_of(&ev, "Rpc.executeRpc");
    assert!(
        rets.iter().any(|r| r["data"]["results"]["result"]
            .as_str()
            .is_some_and(|r| r.contains(&big))),
        "the 40 KB result"
    );
    if py {
        for m in [
            "Echo.echo",
            "Echo.destroy",
            "Mining.createNewBlock",
            "BlockTemplate.getBlock",
            "BlockTemplate.waitNext",
            "BlockTemplate.destroy",
        ] {
            assert!(!returns_of(&ev, m).is_empty(), "{m} missing");
        }
        let check = &returns_of(&ev, "Mining.checkBlock")[0]["data"];
        assert_eq!(check["outcome"], "exception");
        assert!(
            check["exception"]["reason"]
                .as_str()
                .unwrap()
                .contains("SpanReader::read(): end of data"),
            "{check}"
        );
        let caps: Vec<&str> = of_type(&ev, "cap_created")
            .iter()
            .map(|c| c["data"]["interface"].as_str().unwrap_or(""))
            .collect();
        for iface in [
            "Init",
            "ThreadMap",
            "Thread",
            "Echo",
            "Mining",
            "BlockTemplate",
        ] {
            assert!(
                caps.contains(&iface),
                "no {iface} capability record: {caps:?}"
            );
        }
    }
}

/// A pycapnp client that misuses IPC on purpose against the real node: it polls
/// waitTipChanged in a tight loop, calls without a thread, and leaves a block template it never
/// destroyed. Each lint fires, the node answers the threadless call as the lint says, and
/// `--check` turns the node's exit 0 into mpspy's 1.
#[test]
fn lints_fire_on_a_misbehaving_client_of_the_real_node_and_check_fails() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    if !pycapnp() {
        eprintln!("note: pycapnp missing; skipping");
        return;
    }
    let dir = Scratch::new("lints");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let run = mpspy_run(
        dir.path(),
        &["--quiet", "--check"],
        &node,
        &regtest_args(&datadir),
    );
    wait_interposed(&dir.path().join("mpspy.log"));
    wait_node_ready(&datadir);
    let out = pyclient(&sock, "--misbehave");
    assert!(
        text(&out.stdout).contains("no thread specified and no pool"),
        "the node refuses the threadless call: {}",
        text(&out.stdout)
    );
    let out = cli(&cli_bin, &datadir, &["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = wait_output(run, "mpspy with the node");
    assert_eq!(out.status.code(), Some(1), "--check fails the run");
    assert!(out.stderr.is_empty(), "--quiet: {}", text(&out.stderr));

    let ev = events_in(&dir.path().join("events.jsonl"));
    let mut ids: Vec<&str> = of_type(&ev, "lint")
        .iter()
        .map(|l| l["data"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["alive-at-disconnect", "null-thread", "polling-storm"]);
    let log = std::fs::read_to_string(dir.path().join("mpspy.log")).unwrap();
    assert!(log.contains("3 finding(s): 1 error, 2 warning"), "{log}");
    // The template the client left, in plain words in the end-of-run summary.
    let left = log
        .lines()
        .find(|l| l.contains("was never destroyed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        left.contains(": BlockTemplate#")
            && left.ends_with("when the client closed the connection"),
        "{left}"
    );
    assert!(log.contains("mpspy check: FAILED"), "{log}");
}

/// The raw-frame misbehaving client (`mpspy-testpeer misbehave`) against the real node, one
/// connection per case: each gives its lint (exactly, per connection; see
/// `lints::misbehaving::EXPECTED`), and the node answers as the test peer does.
#[test]
fn every_lint_fires_on_a_session_with_the_real_node_made_to_provoke_it() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("misbehave");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let run = mpspy_run(dir.path(), &["--quiet"], &node, &regtest_args(&datadir));
    wait_interposed(&dir.path().join("mpspy.log"));
    wait_node_ready(&datadir);
    let runs = misbehaving::run_cases(&sock);
    let out = cli(&cli_bin, &datadir, &["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = wait_output(run, "mpspy with the node");
    assert_eq!(out.status.code(), Some(0), "the node's exit status");

    misbehaving::assert_answers(&runs);
    let ev = events_in(&dir.path().join("events.jsonl"));
    misbehaving::assert_lints_per_case(&ev, &runs);
    // bitcoin-cli's stop is the one connection besides the cases.
    assert_eq!(assert_all_closed(&ev), runs.len() + 1);
}

/// `bitcoin -m node …` under mpspy: the wrapper's target runs with mpspy on its socket, and
/// with --quiet nothing of mpspy's reaches the node's stderr.
#[test]
fn the_bitcoin_wrapper_runs_the_real_node_under_mpspy() {
    let (Some(wrapper), Some(cli_bin)) = (peer("bitcoin"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("wrap");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let mut args = vec!["-m".to_string(), "node".to_string()];
    args.extend(regtest_args(&datadir));
    args.push("-ipcbind=unix".into());
    let run = mpspy_run(dir.path(), &["--quiet"], &wrapper, &args);
    wait_interposed(&dir.path().join("mpspy.log"));
    wait_node_ready(&datadir);
    let out = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert_eq!(text(&out.stdout), "0\n", "{}", text(&out.stderr));
    cli(&cli_bin, &datadir, &["stop"]);
    let out = wait_output(run, "mpspy with the wrapper");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "--quiet");
    assert_eq!(text(&out.stdout), "");
    let ev = events_in(&dir.path().join("events.jsonl"));
    assert_paired_and_named(&ev);
    assert_eq!(assert_all_closed(&ev), 2);
    let notices: Vec<String> = of_type(&ev, "notice")
        .iter()
        .map(|n| n["data"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("`bitcoin` would run") && n.contains("bitcoin-node")),
        "{notices:?}"
    );
    assert!(!calls_of(&ev, "Rpc.executeRpc").is_empty());
}

/// A plain node; bitcoin-cli under mpspy. Also: with the node gone (its socket left behind)
/// and with no socket at all, bitcoin-cli meets the error itself, byte for byte as without
/// mpspy.
#[test]
fn bitcoin_cli_is_interposed_against_a_plain_node_and_meets_its_own_errors() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("cli");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let cli_args = |cmd: &str| -> Vec<String> {
        vec![
            "-regtest".into(),
            format!("-datadir={}", datadir.display()),
            "-ipcconnect=unix".into(),
            cmd.into(),
        ]
    };
    let quiet = |args: &[String]| -> Output {
        mpspy()
            .env("TMPDIR", dir.path())
            .args(["--quiet", "--json"])
            .arg(dir.path().join("events.jsonl"))
            .arg("--")
            .arg(&cli_bin)
            .args(args)
            .output()
            .unwrap()
    };
    let direct = |args: &[String]| Command::new(&cli_bin).args(args).output().unwrap();

    // No node yet, no socket: "No such file or directory" from bitcoin-cli itself.
    let (a, b) = (
        direct(&cli_args("getblockcount")),
        quiet(&cli_args("getblockcount")),
    );
    assert!(
        text(&a.stderr).contains("No such file or directory"),
        "{a:?}"
    );
    assert_eq!(
        (a.status.code(), &a.stdout, &a.stderr),
        (b.status.code(), &b.stdout, &b.stderr)
    );

    let mut plain = start_plain_node(&node, &datadir);
    let out = quiet(&cli_args("getblockcount"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0\n");
    assert_eq!(text(&out.stderr), "");
    let ev = events_in(&dir.path().join("events.jsonl"));
    assert_paired_and_named(&ev);
    assert_eq!(assert_all_closed(&ev), 1);
    let opened = &of_type(&ev, "conn_opened")[0]["data"];
    assert_eq!(opened["client"]["name"], "bitcoin-cli");
    assert_eq!(opened["server"]["name"], "bitcoin-node");
    let exec = &returns_of(&ev, "Rpc.executeRpc")[0]["data"]["results"]["result"];
    assert_eq!(exec, r#"{"jsonrpc":"2.0","result":0,"id":"1"}"#);

    direct(&cli_args("stop"));
    let status = plain.take().wait().unwrap();
    assert!(status.success());
    // The node left its socket behind: "Connection refused", from bitcoin-cli itself.
    let (a, b) = (
        direct(&cli_args("getblockcount")),
        quiet(&cli_args("getblockcount")),
    );
    assert!(text(&a.stderr).contains("Connection refused"), "{a:?}");
    assert_eq!(
        (a.status.code(), &a.stdout, &a.stderr),
        (b.status.code(), &b.stdout, &b.stderr)
    );
    let ev = events_in(&dir.path().join("events.jsonl"));
    assert!(of_type(&ev, "conn_opened").is_empty());
    let why = &of_type(&ev, "notice")[0]["data"]["text"];
    assert!(
        why.as_str().unwrap().contains("Connection refused"),
        "the notice says why nothing was interposed: {why}"
    );
}

/// `mpspy -- mpexample`, stdin passed through: both spawned children (mpprinter, mpcalculator)
/// relayed, every call named, and the program's output as without mpspy.
#[test]
fn mpexample_under_mpspy_relays_both_children_with_stdin_passed_through() {
    let Some(example) = peer("mpexample") else {
        return;
    };
    let input = b"1+1\nhello world\nexit\n";
    let collector = crate::otlp::Receiver::start();
    let run_in = |cwd: &Path, under: bool| -> Output {
        let mut cmd = if under {
            let mut c = mpspy();
            c.env("TMPDIR", cwd)
                .args(["--quiet", "--json"])
                .arg(cwd.join("events.jsonl"))
                .arg("--trace-out")
                .arg(cwd.join("trace.json"))
                .args(["--otlp", &collector.url])
                .arg("--")
                .arg(&example);
            c
        } else {
            Command::new(&example)
        };
        let mut child = cmd
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let (a_dir, b_dir) = (Scratch::new("mpx-a"), Scratch::new("mpx-b"));
    let alone = run_in(a_dir.path(), false);
    let under = run_in(b_dir.path(), true);
    assert!(alone.status.success(), "{}", text(&alone.stderr));
    assert_eq!(
        (
            under.status.code(),
            text(&under.stdout),
            text(&under.stderr)
        ),
        (
            alone.status.code(),
            text(&alone.stdout),
            text(&alone.stderr)
        ),
        "the program's output and status, as without mpspy"
    );
    assert!(text(&under.stdout).contains("mpprinter: Wow 1+1"));

    let ev = events_in(&b_dir.path().join("events.jsonl"));
    assert_paired_and_named(&ev);
    assert_eq!(assert_all_closed(&ev), 2);
    let servers: Vec<String> = of_type(&ev, "conn_opened")
        .iter()
        .map(|c| c["data"]["server"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(servers, ["mpprinter", "mpcalculator"]);
    for m in [
        "InitInterface.construct",
        "ThreadMap.makeThread",
        "InitInterface.makePrinter",
        "InitInterface.makeCalculator",
        "CalculatorInterface.solveEquation",
        "PrinterInterface.print",
        "CalculatorInterface.destroy",
        "PrinterInterface.destroy",
    ] {
        assert!(!returns_of(&ev, m).is_empty(), "{m} missing");
    }
    // The calculator prints through a callback into mpexample, which passes it on to mpprinter.
    let printed: Vec<&str> = calls_of(&ev, "PrinterInterface.print")
        .iter()
        .filter_map(|c| c["data"]["params"]["text"].as_str())
        .collect();
    assert!(printed.iter().any(|t| t.contains("1+1")), "{printed:?}");

    // The timeline: a flow arrow from each call to the callback it caused (the calculator's
    // print and destroy calls into mpexample's callback threads), and the programs by name.
    let trace = crate::trace::trace_in(&b_dir.path().join("trace.json"));
    let flows = crate::trace::assert_trace(&trace, &ev);
    let callbacks = of_type(&ev, "call")
        .iter()
        .filter(|c| c["dir"] == "s2c")
        .count();
    assert!(callbacks >= 3, "print twice and destroy: {callbacks}");
    assert_eq!(flows, callbacks, "a flow arrow per callback");
    // The spans: a child span per callback, the programs as services.
    let spans = collector.spans();
    assert_eq!(crate::otlp::assert_spans(&spans, &ev), callbacks);
    for service in ["mpexample", "mpcalculator", "mpprinter"] {
        assert!(spans.iter().any(|s| s.service == service), "{service}");
    }
    let names: Vec<&str> = trace
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("mpcalculator ("))
            && names.iter().any(|n| n.starts_with("mpprinter (")),
        "{names:?}"
    );
}

/// `mpspy call` and `mpspy bench` against a real node over its socket, and `call
/// spawn:bitcoin-node` (bitcoin-node -ipcfd N serves Init without starting the node).
#[test]
fn call_and_bench_against_the_real_node() {
    let Some(node) = peer("bitcoin-node") else {
        return;
    };
    let dir = Scratch::new("call");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let _node = start_plain_node(&node, &datadir);
    let address = format!("unix:{}", sock.display());

    let (code, out, err) = call(&[&address, "Init.makeEcho", "Echo.echo", r#"{"echo":"hi"}"#]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), r#"{"result":"hi"}"#);

    // The default socket of a datadir and chain.
    let (code, out, err) = call(&[
        "unix",
        "--datadir",
        datadir.to_str().unwrap(),
        "--chain",
        "regtest",
        "Init.makeMining",
        "Mining.getTip",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let tip: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(tip["result"]["height"], 0, "{tip}");
    assert_eq!(tip["hasResult"], true, "{tip}");

    // A remote exception is reported as such.
    let (code, _, err) = call(&[
        &address,
        "Init.makeMining",
        "Mining.checkBlock",
        r#"{"block":"00000000000000000000","options":{}}"#,
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("SpanReader::read(): end of data"), "{err}");

    let out = mpspy()
        .args([
            "bench",
            &address,
            "Init.makeEcho",
            "Echo.echo",
            r#"{"echo":"x"}"#,
        ])
        .args([
            "--count",
            "300",
            "--warmup",
            "20",
            "--concurrency",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["count"], 600, "{summary}");
    assert!(summary["p50_ns"].as_u64().unwrap() > 0, "{summary}");

    let (code, out, err) = call(&[
        &format!("spawn:{}", node.display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"spawned"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), r#"{"result":"spawned"}"#);
}

// ---------------------------------------------------------------------------------------------
// Transparency: with --quiet, the node's stdout, stderr, exit status, signals and files are what
// they are without mpspy.

/// One run of the node, directly or under `mpspy --quiet`, with its console log on stdout.
struct NodeRun {
    dir: Scratch,
    child: KillOnDrop,
}

impl NodeRun {
    fn start(node: &Path, under_mpspy: bool, tag: &str) -> NodeRun {
        let dir = Scratch::new(tag);
        let datadir = dir.path().join("d");
        std::fs::create_dir(&datadir).unwrap();
        let mut args = regtest_args(&datadir);
        args.retain(|a| a != "-printtoconsole=0");
        args.push("-ipcbind=unix".into());
        let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let mut cmd = if under_mpspy {
            let mut c = mpspy();
            c.env("TMPDIR", dir.path())
                .args(["--quiet", "--log"])
                .arg(dir.path().join("mpspy.log"))
                .arg("--")
                .arg(node);
            c
        } else {
            Command::new(node)
        };
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let run = NodeRun {
            dir,
            child: KillOnDrop(Some(child)),
        };
        if under_mpspy {
            wait_interposed(&run.dir.path().join("mpspy.log"));
        }
        wait_for("the node to finish loading", PATIENCE, || {
            run.stdout().contains("init message: Done loading") && accepts(&run.sock())
        });
        run
    }

    fn datadir(&self) -> PathBuf {
        self.dir.path().join("d")
    }

    fn sock(&self) -> PathBuf {
        self.datadir().join("regtest/node.sock")
    }

    fn pid(&mut self) -> u32 {
        self.child.child().id()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn wait(&mut self) -> ExitStatus {
        let c = self.child.child();
        let start = std::time::Instant::now();
        while c.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < PATIENCE, "the node did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.take().wait().unwrap()
    }

    /// The console log with what differs between any two runs masked: timestamps, the
    /// datadir, pids and thread ids, random keys; as a sorted list of lines, since threads
    /// interleave their lines differently from run to run.
    fn masked(&self, s: &str) -> Vec<String> {
        let datadir = self.datadir().display().to_string();
        let mut lines: Vec<String> = s
            .lines()
            .map(|l| {
                let l = l.replace(&datadir, "<datadir>");
                mask(&l)
            })
            .collect();
        lines.sort();
        lines
    }

    /// What is left in the datadir: names and kinds (sizes and contents are the node's own).
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let ty = e.file_type().unwrap();
                let rel = e.path().strip_prefix(base).unwrap().display().to_string();
                use std::os::unix::fs::FileTypeExt;
                let kind = if ty.is_dir() {
                    "dir"
                } else if ty.is_socket() {
                    "socket"
                } else {
                    "file"
                };
                out.push(format!("{kind} {rel}"));
                if ty.is_dir() {
                    walk(&e.path(), base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.datadir(), &self.datadir(), &mut out);
        out.sort();
        out
    }
}

/// Masks durations (`0.002s`: how long the node took for something varies from run to run).
fn mask_durations(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int_end = i;
        if int_end > start && i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let unit_ok =
                b.get(i) == Some(&b's') && !b.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric());
            if unit_ok {
                out.push_str("<dur>");
                i += 1;
                continue;
            }
        }
        if i == start {
            out.push(line[i..].chars().next().unwrap_or(' '));
            i += line[i..].chars().next().map_or(1, char::len_utf8);
        } else {
            out.push_str(&line[start..i]);
        }
    }
    out
}

/// Masks timestamps, durations, numbers after `-` (pids, thread ids, dates) and hex keys in a
/// log line.
fn mask(line: &str) -> String {
    let line = &mask_durations(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    // A leading ISO timestamp ("2026-12-02T16:16:32Z " or with micros).
    let ts_end = line
        .find(' ')
        .filter(|&i| line[..i].contains('T') && line[..i].ends_with('Z'));
    if let Some(end) = ts_end {
        out.push_str("<time>");
        for _ in 0..end {
            chars.next();
        }
    }
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        if c.is_ascii_hexdigit() && !prev.is_ascii_alphanumeric() {
            let mut tok = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_hexdigit() {
                    tok.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let digits = tok.chars().all(|c| c.is_ascii_digit());
            let next_alnum = chars.peek().is_some_and(|n| n.is_ascii_alphanumeric());
            if !next_alnum && ((prev == '-' && digits) || tok.len() >= 16) {
                out.push_str("<n>");
            } else {
                out.push_str(&tok);
            }
            prev = tok.chars().last().unwrap_or(c);
            continue;
        }
        out.push(c);
        prev = c;
    }
    out
}

#[test]
fn masking_keeps_what_matters_and_hides_what_differs_between_runs() {
    assert_eq!(
        mask("2026-12-02T16:16:32Z Command-line arg: ipcbind=\"unix\""),
        "<time> Command-line arg: ipcbind=\"unix\""
    );
    assert_eq!(
        mask(
            "2026-12-02T16:16:35Z ipc: {bitcoin-node-8739/b-capnp-loop-8751} EventLoop::loop bye."
        ),
        "<time> ipc: {bitcoin-node-<n>/b-capnp-loop-<n>} EventLoop::loop bye."
    );
    assert_eq!(
        mask("Using obfuscation key for x: 92404e29b07e0ad0"),
        "Using obfuscation key for x: <n>"
    );
    assert_eq!(mask("prevout.02 thread start"), "prevout.02 thread start");
    assert_eq!(
        mask("Dumped mempool: 0.000s to copy, 0.002s to dump, 27 bytes dumped to file"),
        "Dumped mempool: <dur> to copy, <dur> to dump, 27 bytes dumped to file"
    );
    assert_eq!(mask("completed (0.01s)"), "completed (<dur>)");
    assert_eq!(mask("1014.0 MiB"), "1014.0 MiB");
    assert_eq!(
        mask("Listening for IPC requests on address unix:/a/b"),
        "Listening for IPC requests on address unix:/a/b"
    );
}

/// The same sorted lines; on failure, only the lines that differ.
fn assert_same_lines(alone: &[String], under: &[String], what: &str) {
    if alone == under {
        return;
    }
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let mut b = b.to_vec();
        a.iter()
            .filter(|l| match b.iter().position(|x| x == *l) {
                Some(i) => {
                    b.remove(i);
                    false
                }
                None => true,
            })
            .cloned()
            .collect()
    };
    panic!(
        "{what}: lines only without mpspy: {:#?}\nlines only under mpspy: {:#?}",
        only(alone, under),
        only(under, alone)
    );
}

/// Stops a node run with `how` (sent to the node, or to mpspy, which passes it on) and returns
/// its exit status.
fn stop(run: &mut NodeRun, how: &str, cli_bin: &Path) -> ExitStatus {
    match how {
        "stop" => {
            let out = cli(cli_bin, &run.datadir(), &["stop"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        sig => {
            let pid = run.pid();
            let ok = Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    run.wait()
}

/// The same session twice, directly and under `mpspy --quiet`, ended three ways (RPC stop,
/// SIGINT, SIGTERM): the node's stdout, stderr and exit status are the same (masked for what
/// differs between any two runs), and so is what it leaves in its datadir, node.sock included.
#[test]
fn under_mpspy_quiet_the_node_prints_exits_and_leaves_files_as_without_it() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    for how in ["stop", "-INT", "-TERM"] {
        let mut direct = NodeRun::start(&node, false, "tr-a");
        let mut under = NodeRun::start(&node, true, "tr-b");
        for run in [&direct, &under] {
            let out = cli(&cli_bin, &run.datadir(), &["getblockcount"]);
            assert_eq!(text(&out.stdout), "0\n", "{}", text(&out.stderr));
        }
        let a = stop(&mut direct, how, &cli_bin);
        let b = stop(&mut under, how, &cli_bin);
        assert_eq!(
            (a.code(), a.signal()),
            (b.code(), b.signal()),
            "exit status after {how}"
        );
        assert_same_lines(
            &direct.masked(&direct.stdout()),
            &under.masked(&under.stdout()),
            &format!("stdout after {how}"),
        );
        assert!(
            under.stdout().contains("Shutdown done"),
            "{how}: the node shut down cleanly:\n{}",
            under.stdout()
        );
        assert_eq!(direct.stderr(), under.stderr(), "stderr after {how}");
        assert_eq!(direct.files(), under.files(), "files left after {how}");
        assert_left_like_the_node(&under.sock());
        // mpspy's own files are gone (its private directory was under the scratch dir).
        let leftovers: Vec<String> = std::fs::read_dir(under.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("mpspy-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// A program's own bad arguments are its own to report: bitcoin-node with `-conf=0` (master
/// reads it as a file named `0`) and with its bitcoin.conf a directory fails under mpspy exactly
/// as without it, and mpspy's outputs say what it could not read.
#[test]
fn a_node_with_a_bad_config_fails_as_it_would_without_mpspy() {
    let Some(node) = peer("bitcoin-node") else {
        return;
    };
    type ArgsFor<'a> = &'a dyn Fn(&Path) -> Vec<String>;
    let cases: [(&str, ArgsFor); 2] = [
        ("conf0", &|d: &Path| {
            vec![
                format!("-datadir={}", d.display()),
                "-regtest".into(),
                "-conf=0".into(),
            ]
        }),
        ("confdir", &|d: &Path| {
            std::fs::create_dir_all(d.join("bitcoin.conf")).unwrap();
            vec![format!("-datadir={}", d.display()), "-regtest".into()]
        }),
    ];
    for (tag, args_for) in cases {
        let (a_dir, b_dir) = (Scratch::new(tag), Scratch::new(tag));
        let (a_data, b_data) = (a_dir.path().join("d"), b_dir.path().join("d"));
        std::fs::create_dir(&a_data).unwrap();
        std::fs::create_dir(&b_data).unwrap();
        let alone = Command::new(&node)
            .args(args_for(&a_data))
            .output()
            .unwrap();
        let under = mpspy()
            .env("TMPDIR", b_dir.path())
            .args(["--quiet", "--json"])
            .arg(b_dir.path().join("events.jsonl"))
            .arg("--")
            .arg(&node)
            .args(args_for(&b_data))
            .output()
            .unwrap();
        assert_eq!(
            alone.status.code(),
            Some(1),
            "{tag}: {}",
            text(&alone.stderr)
        );
        let masked =
            |o: &Output, d: &Path| text(&o.stderr).replace(&d.display().to_string(), "<datadir>");
        assert_eq!(
            (under.status.code(), masked(&under, &b_data)),
            (alone.status.code(), masked(&alone, &a_data)),
            "{tag}"
        );
        let ev = events_in(&b_dir.path().join("events.jsonl"));
        let notices: Vec<&str> = of_type(&ev, "notice")
            .iter()
            .map(|n| n["data"]["text"].as_str().unwrap())
            .collect();
        assert!(
            notices
                .iter()
                .any(|n| n.contains("-conf:") && n.contains("the program will report this itself")),
            "{tag}: {notices:?}"
        );
    }
}

/// sv2-tp reads `-conf=0` as "no config file" and is started that way; mpspy must not impose
/// bitcoin-node's reading on it. A stand-in named sv2-tp (the test peer's client, which takes
/// Bitcoin-style options) connects to a real node with `-conf=0` under mpspy.
#[test]
fn a_client_started_with_conf_0_runs_under_mpspy() {
    let Some(node) = peer("bitcoin-node") else {
        return;
    };
    let dir = Scratch::new("sv2");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let sock = datadir.join("regtest/node.sock");
    let _node = start_plain_node(&node, &datadir);
    let sv2 = dir.path().join("sv2-tp");
    std::os::unix::fs::symlink(crate::testpeer::testpeer(), &sv2).unwrap();
    let out = mpspy()
        .env("TMPDIR", dir.path())
        .args(["--quiet", "--json"])
        .arg(dir.path().join("events.jsonl"))
        .arg("--")
        .arg(&sv2)
        .arg(format!("-datadir={}", datadir.display()))
        .arg("-regtest")
        .arg("-conf=0")
        .arg(format!("-ipcconnect=unix:{}", sock.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ev = events_in(&dir.path().join("events.jsonl"));
    assert_eq!(assert_all_closed(&ev), 1, "interposed");
    assert!(!returns_of(&ev, "Mining.createNewBlock").is_empty());
    assert!(
        of_type(&ev, "notice")
            .iter()
            .all(|n| n["data"]["level"] != "warning")
    );
}
