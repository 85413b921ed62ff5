//! `mpspy diff A B`: a session against itself, against one made to differ, and two node logs.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Records a session of the test peer serving one client run with `client_args`.
#[cfg(unix)]
fn record(dir: &crate::live::TestDir, name: &str, client_args: &[&str]) -> std::path::PathBuf {
    use crate::live::{start_wrapped_peer, stop_ok, wait_closed};
    let rec = dir.path(&format!("{name}.pcapng"));
    let json = dir.path(&format!("{name}.jsonl"));
    let (child, sock) = start_wrapped_peer(
        dir,
        &[
            "--record",
            rec.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--quiet",
        ],
    );
    let out = std::process::Command::new(crate::testpeer::testpeer())
        .arg("client")
        .arg(format!("unix:{}", sock.display()))
        .args(client_args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its end recorded before the peer stops, so both sessions end the same way.
    wait_closed(&json, 1);
    stop_ok(child);
    rec
}

fn diff(a: &Path, b: &Path, json: bool) -> (Option<i32>, String) {
    let mut cmd = mpspy();
    cmd.arg("diff").arg(a).arg(b);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_session_against_itself_has_no_differences() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let (code, out) = diff(&demo, &demo, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("19 calls aligned by method sequence: params and answers the same"),
        "{out}"
    );
    assert!(
        out.ends_with("mpspy diff: the sessions did the same (latencies aside)\n"),
        "{out}"
    );
    let (code, out) = diff(&demo, &demo, true);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["same"], true);
    assert_eq!(v["aligned"], 19);
    let echo = v["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "Echo.echo")
        .unwrap();
    assert_eq!(
        (echo["a"]["count"].as_u64(), echo["count_delta"].as_i64()),
        (Some(3), Some(0))
    );
}

/// Two live sessions of the test peer, the second with other echoes and one more call: the
/// counts, the methods and the first differing call (aligned past the extra one) are named.
#[cfg(unix)]
#[test]
fn a_changed_session_shows_counts_methods_and_the_calls_that_differ() {
    // A directory each: a session's socket and log are per directory.
    let (da, db) = (
        crate::live::TestDir::new("diff-a"),
        crate::live::TestDir::new("diff-b"),
    );
    let a = record(&da, "a", &["--echo", "hello", "--echo", "same"]);
    let b = record(
        &db,
        "b",
        &[
            "--echo", "bye", "--echo", "same", "--echo", "more", "--mining",
        ],
    );
    let (code, out) = diff(&a, &b, false);
    assert_eq!(code, Some(1), "{out}");
    let row = out.lines().find(|l| l.starts_with("Echo.echo ")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["2", "3", "+1"], "{row}");
    assert!(
        out.contains("only in B: ") && out.contains("Mining.getTip"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("Echo.echo")
            && l.contains("params.echo: \"hello\" ≠ \"bye\"")
            && l.contains("results.result: \"hello\" ≠ \"bye\"")),
        "{out}"
    );
    // The second echo is the same on both sides: aligned, no difference listed for it.
    assert!(!out.contains("\"same\" ≠"), "{out}");
    let (_, out) = diff(&a, &b, true);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["same"], false);
    assert_eq!(v["calls_differ"].as_array().unwrap().len(), 1, "{v:#}");
    assert!(
        v["only_b"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "Mining.getTip")
    );
}

#[test]
fn logs_compare_by_their_numbers_and_bad_files_are_named() {
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debug-logs");
    let (code, out) = diff(
        &logs.join("bitcoin-node-master-ipc-trace.log"),
        &logs.join("interface_ipc-node0.log"),
        false,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("only in B: Init.makeMiningOld2"), "{out}");
    assert!(
        out.contains("calls not compared: a -debug=ipc log"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("Init.construct "))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["17", "4", "-13"], "{row}");

    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let (code, out) = diff(&readme, &readme, false);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("README.md: no IPC lines"), "{out}");
}
