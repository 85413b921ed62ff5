//! `mpspy stats`: per-method tables from Bitcoin Core `-debug=ipc` logs and from recordings.
//!
//! The expected numbers were counted from the fixture text with grep, independently of the
//! parser; each constant says how.

use std::path::PathBuf;

use serde_json::Value;

use crate::common::{fixture, mpspy, run_ok};

const MASTER_LOG: &str = "debug-logs/bitcoin-node-master-ipc-trace.log";
const FUNCTIONAL_LOG: &str = "debug-logs/interface_ipc-node0.log";
const EXAMPLE_LOG: &str = "debug-logs/mpexample-debug.log";

fn demo_recording() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng")
}

/// `mpspy stats --json FILE`: the one file's object.
fn stats_json(path: PathBuf) -> Value {
    let out = run_ok(mpspy().arg("stats").arg("--json").arg(path));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let files = v["files"].as_array().expect("files");
    assert_eq!(files.len(), 1, "{v}");
    files[0].clone()
}

/// The row of `method` on `side` of `process` (debug.log rows).
fn row<'a>(file: &'a Value, process: &str, side: &str, method: &str) -> &'a Value {
    file["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["process"] == process && r["side"] == side && r["method"] == method)
        .unwrap_or_else(|| panic!("no row {process} {side} {method} in {file}"))
}

/// (count, errors, cancels, unanswered) of a row.
fn counts(r: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    (n("count"), n("errors"), n("cancels"), n("unanswered"))
}

fn total_count(file: &Value) -> u64 {
    file["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["side"] == "server")
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn master_log_with_whole_second_timestamps_gives_counts_only() {
    let f = stats_json(fixture(MASTER_LOG));
    assert_eq!(f["kind"], "debug.log");
    assert_eq!(f["timestamps"], "seconds");
    assert!(
        f["note"].as_str().unwrap().contains("-logtimemicros"),
        "{}",
        f["note"]
    );
    const P: &str = "bitcoin-node-4515";
    // grep -oE 'IPC server send response #[0-9]+ \S+' FILE | awk '{print $NF}' | sort | uniq -c
    const SENT: [(&str, u64); 6] = [
        ("Init.construct", 17),
        ("Init.makeRpc", 13),
        ("Rpc.executeRpc", 13),
        ("Echo.echo", 9),
        ("Mining.isInitialBlockDownload", 4),
        ("BlockTemplate.getBlockHeader", 3),
    ];
    for (method, n) in SENT {
        assert_eq!(
            counts(row(&f, P, "server", method)),
            (n, 0, 0, 0),
            "{method}"
        );
    }
    // grep -c 'recv request  #[0-9]* Mining.checkBlock' FILE → 2, no `send response` for them,
    // grep -c 'error request #[0-9]* Mining.checkBlock' FILE → 2 (#65 and #85, each also has an
    // `uncaught exception` line: one error per request, not per line).
    const CHECK_BLOCK_ERRORS: u64 = 2;
    assert_eq!(
        counts(row(&f, P, "server", "Mining.checkBlock")),
        (CHECK_BLOCK_ERRORS, CHECK_BLOCK_ERRORS, 0, 0)
    );
    // Long polls, apart: grep -c 'send response #[0-9]* Mining.waitTipChanged' FILE → 2,
    // … Mining.createNewBlock → 3.
    let wait = row(&f, P, "server", "Mining.waitTipChanged");
    assert_eq!(
        (wait["long_poll"].as_bool(), counts(wait).0),
        (Some(true), 2)
    );
    let create = row(&f, P, "server", "Mining.createNewBlock");
    assert_eq!(
        (create["long_poll"].as_bool(), counts(create).0),
        (Some(true), 3)
    );
    // grep -c 'IPC server recv request' FILE → 97: every request ended (95 sent, 2 errors).
    const RECV_LINES: u64 = 97;
    assert_eq!(total_count(&f), RECV_LINES);
    for r in f["rows"].as_array().unwrap() {
        assert!(r["total_us"].is_null() && r["exec_us"].is_null(), "{r}");
    }
    // The same file as text says why there is no latency.
    let out = run_ok(mpspy().arg("stats").arg(fixture(MASTER_LOG)));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("latency needs -logtimemicros"), "{text}");
    assert!(text.contains("bitcoin-node-4515 server"), "{text}");
    assert!(text.contains("long-poll methods"), "{text}");
}

#[test]
fn functional_test_log_with_micros_gives_phases_errors_and_cancels() {
    let f = stats_json(fixture(FUNCTIONAL_LOG));
    assert_eq!(f["timestamps"], "micros");
    assert!(f["note"].is_null(), "{}", f["note"]);
    const P: &str = "bitcoin-node-6437";
    // grep -oE 'IPC server send response #[0-9]+ \S+' FILE | awk '{print $NF}' | sort | uniq -c
    const SENT: [(&str, u64); 5] = [
        ("Echo.echo", 3),
        ("Init.construct", 4),
        ("Init.makeMining", 3),
        ("BlockTemplate.destroy", 4),
        ("Mining.isTestChain", 1),
    ];
    for (method, n) in SENT {
        assert_eq!(
            counts(row(&f, P, "server", method)),
            (n, 0, 0, 0),
            "{method}"
        );
    }
    // `recv request  #11 Init.makeMiningOld2$Params`, then on the same loop thread
    // `[error] ipc: … IPC server unhandled exception: Old mining interface (@2) not supported`
    // (grep -c 'unhandled exception' FILE → 1) and no `send response #11`.
    assert_eq!(
        counts(row(&f, P, "server", "Init.makeMiningOld2")),
        (1, 1, 0, 0)
    );
    // BlockTemplate.waitNext: grep -c 'recv request  #[0-9]* BlockTemplate.waitNext' → 4,
    // grep -c 'send response #[0-9]* BlockTemplate.waitNext' → 3, and #15 has
    // `canceled while executing.`, `error request #15 … Interrupted by disconnect` and
    // `interrupted (canceled)`: one cancel (its error line is the cancellation, not a failure).
    let wait_next = row(&f, P, "server", "BlockTemplate.waitNext");
    assert_eq!(counts(wait_next), (4, 0, 1, 0));
    assert_eq!(wait_next["long_poll"], true);
    // grep -c 'IPC server recv request' FILE → 25: 23 sent, #11 failed, #15 canceled.
    const RECV_LINES: u64 = 25;
    assert_eq!(total_count(&f), RECV_LINES);

    // #2 Init.makeEcho (the only one: grep -c 'Init.makeEcho\$Params' FILE → 1), from
    // grep -E ' #2( |$)' FILE: recv .068274, post .068313, executing .068436, send .068865.
    const DISPATCH_US: u64 = 68_313 - 68_274; // 39
    const QUEUE_US: u64 = 68_436 - 68_313; // 123
    const EXEC_US: u64 = 68_865 - 68_436; // 429
    const TOTAL_US: u64 = 68_865 - 68_274; // 591
    let echo = row(&f, P, "server", "Init.makeEcho");
    assert_eq!(counts(echo), (1, 0, 0, 0));
    for (phase, us) in [
        ("dispatch_us", DISPATCH_US),
        ("queue_us", QUEUE_US),
        ("exec_us", EXEC_US),
        ("total_us", TOTAL_US),
    ] {
        let p = &echo[phase];
        assert_eq!(p["n"], 1, "{phase}: {p}");
        for q in ["min", "p50", "p999", "max"] {
            assert_eq!(p[q].as_u64(), Some(us), "{phase} {q}: {p}");
        }
    }
    // Init.construct runs on the event loop: recv and send only, so a total but no phases.
    let construct = row(&f, P, "server", "Init.construct");
    assert_eq!(construct["total_us"]["n"], 4);
    assert!(construct["dispatch_us"].is_null() && construct["exec_us"].is_null());

    let out = run_ok(mpspy().arg("stats").arg(fixture(FUNCTIONAL_LOG)));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "p99.9",
        "where the time went",
        "39µs / 39µs",
        "long-poll methods",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("latency needs"), "{text}");
}

#[test]
fn example_programs_log_pairs_server_and_client_lines_per_process() {
    let f = stats_json(fixture(EXAMPLE_LOG));
    assert_eq!(f["timestamps"], "none");
    assert!(f["note"].as_str().unwrap().contains("no timestamps"));
    // grep -oE '^\{PROCESS/[^}]*\} IPC server send response #[0-9]+ \S+' FILE | sort | uniq -c
    // and the same with 'IPC client recv \S+' for the client side.
    const ROWS: [(&str, &str, &str, u64); 9] = [
        ("mpprinter-21912", "server", "PrinterInterface.print", 2),
        ("mpprinter-21912", "server", "InitInterface.makePrinter", 1),
        (
            "mpcalculator-21916",
            "server",
            "CalculatorInterface.solveEquation",
            2,
        ),
        ("mpcalculator-21916", "client", "PrinterInterface.print", 2),
        (
            "mpcalculator-21916",
            "client",
            "PrinterInterface.destroy",
            1,
        ),
        ("mpexample-21908", "server", "PrinterInterface.print", 2),
        ("mpexample-21908", "client", "InitInterface.construct", 2),
        (
            "mpexample-21908",
            "client",
            "CalculatorInterface.solveEquation",
            2,
        ),
        ("mpexample-21908", "client", "PrinterInterface.print", 2),
    ];
    for (process, side, method, n) in ROWS {
        let r = row(&f, process, side, method);
        assert_eq!(counts(r), (n, 0, 0, 0), "{process} {side} {method}");
        assert!(r["total_us"].is_null(), "{r}");
    }
    // Three processes; mpprinter only answers.
    let procs: std::collections::BTreeSet<&str> = f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["process"].as_str().unwrap())
        .collect();
    assert_eq!(
        procs.into_iter().collect::<Vec<_>>(),
        ["mpcalculator-21916", "mpexample-21908", "mpprinter-21912"]
    );
    assert!(
        !f["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["process"] == "mpprinter-21912" && r["side"] == "client")
    );
}

#[test]
fn recording_stats_come_from_the_decoded_session() {
    let f = stats_json(demo_recording());
    assert_eq!(f["kind"], "recording");
    let rows = f["rows"].as_array().unwrap();
    let find = |m: &str| {
        rows.iter()
            .find(|r| r["method"] == m)
            .unwrap_or_else(|| panic!("{m} in {f}"))
    };
    // The demo client runs `--echo … --count 3` (src/main.rs `demo`); `mpspy replay
    // samples/demo.pcapng` shows three `Echo.echo` returns and one `Mining.checkBlock` exception.
    let echo = find("Echo.echo");
    assert_eq!(counts(echo), (3, 0, 0, 0));
    assert_eq!(echo["latency_ns"]["n"], 3);
    assert!(echo["latency_ns"]["max"].as_u64().unwrap() > 0);
    assert_eq!(counts(find("Mining.checkBlock")), (1, 1, 0, 0));
    assert_eq!(find("BlockTemplate.waitNext")["long_poll"], true);

    let out = run_ok(mpspy().arg("stats").arg(demo_recording()));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("(mpspy recording)") && text.contains("p99.9"),
        "{text}"
    );
    let echo_line = text.lines().find(|l| l.starts_with("Echo.echo ")).unwrap();
    assert_eq!(
        echo_line.split_whitespace().nth(1),
        Some("3"),
        "{echo_line}"
    );
}

#[test]
fn several_files_in_one_object() {
    let out = run_ok(
        mpspy()
            .args(["stats", "--json"])
            .arg(fixture(FUNCTIONAL_LOG))
            .arg(demo_recording()),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["debug.log", "recording"]);
}

#[test]
fn unreadable_files_fail_and_logs_without_ipc_lines_say_so() {
    let dir = std::env::temp_dir().join(format!("mpspy-stats-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.log");
    let out = mpspy().arg("stats").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.log"), "{err}");

    let binary = dir.join("junk.bin");
    std::fs::write(&binary, [0u8, 1, 2, 3, 0, 0, 0, 0]).unwrap();
    let out = mpspy().arg("stats").arg(&binary).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    let quiet = dir.join("debug.log");
    std::fs::write(
        &quiet,
        "2026-11-23T11:02:20Z Bitcoin Core version v31.99.0\n2026-11-23T11:02:21Z [net] connected\n",
    )
    .unwrap();
    let out = run_ok(mpspy().arg("stats").arg(&quiet));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("no IPC lines"), "{text}");
    let f = stats_json(quiet);
    assert_eq!(
        (f["ipc_lines"].as_u64(), f["lines"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(f["rows"].as_array().unwrap().is_empty());

    let _ = std::fs::remove_dir_all(&dir);
}
