//! Lints stay quiet on every shipped capture, sample and demo recording: they are traffic of
//! well-behaved peers (the demo's `checkBlock` exception is a deliberate failure of the call,
//! not a misuse of IPC), so a lint firing there is a false positive.

use std::path::Path;

use crate::common::*;

fn lints_of(args: &[&Path], cmd: &str) -> Vec<serde_json::Value> {
    let out = run_ok(mpspy().arg(cmd).args(args).arg("--json"));
    let events = json_lines(&out.stdout);
    assert!(events.len() > 10, "{args:?}: too few events");
    of_type(&events, "lint").into_iter().cloned().collect()
}

#[test]
fn lints_are_quiet_on_every_shipped_capture_and_recording() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/captures");
    let pairs = [
        (
            fixtures.join("bitcoin-node-master/cli-getblockcount.c2s.bin"),
            fixtures.join("bitcoin-node-master/cli-getblockcount.s2c.bin"),
        ),
        (
            fixtures.join("bitcoin-node-master/pyclient.c2s.bin"),
            fixtures.join("bitcoin-node-master/pyclient.s2c.bin"),
        ),
        (
            fixtures.join("mpexample/mpcalculator.mpexample-to-child.bin"),
            fixtures.join("mpexample/mpcalculator.child-to-mpexample.bin"),
        ),
        (
            fixtures.join("mpexample/mpprinter.mpexample-to-child.bin"),
            fixtures.join("mpexample/mpprinter.child-to-mpexample.bin"),
        ),
        (
            root.join("samples/pyclient.c2s.bin"),
            root.join("samples/pyclient.s2c.bin"),
        ),
    ];
    for (c2s, s2c) in &pairs {
        let lints = lints_of(&[c2s, s2c], "decode");
        assert!(lints.is_empty(), "{}: {lints:#?}", c2s.display());
    }
    let demo = root.join("samples/demo.pcapng");
    let lints = lints_of(&[&demo], "replay");
    assert!(lints.is_empty(), "demo: {lints:#?}");
}

#[test]
fn decoding_with_the_wrong_schemas_is_a_schema_mismatch_lint() {
    // The pycapnp client talks master; read as v30, its Mining calls do not fit.
    let events = decode_json(
        "captures/bitcoin-node-master/pyclient.c2s.bin",
        "captures/bitcoin-node-master/pyclient.s2c.bin",
        &["--schemas", "v30"],
    );
    let lints = of_type(&events, "lint");
    assert!(!lints.is_empty());
    assert!(
        lints
            .iter()
            .any(|l| l["data"]["id"] == "schema-mismatch" && l["data"]["severity"] == "warning"),
        "{lints:#?}"
    );
}

#[test]
fn text_output_prints_a_lint_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures");
    let out = run_ok(
        mpspy()
            .arg("decode")
            .arg(root.join("bitcoin-node-master/pyclient.c2s.bin"))
            .arg(root.join("bitcoin-node-master/pyclient.s2c.bin"))
            .args(["--schemas", "v30"]),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("LINT warning schema-mismatch: Mining @4 under v30")),
        "{text}"
    );
}

#[test]
fn allow_lint_silences_a_lint() {
    let events = decode_json(
        "captures/bitcoin-node-master/pyclient.c2s.bin",
        "captures/bitcoin-node-master/pyclient.s2c.bin",
        &["--schemas", "v30", "--allow-lint", "schema-mismatch"],
    );
    let lints = of_type(&events, "lint");
    assert!(
        lints.iter().all(|l| l["data"]["id"] != "schema-mismatch"),
        "{lints:#?}"
    );
    // The mismatch itself is still reported: only the lint is silenced.
    assert!(!of_type(&events, "schema_mismatch").is_empty());
}

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let out = mpspy().arg("check").arg(&demo).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mpspy check` for CI: a clean recording passes; decoded with the wrong schemas it fails
/// (exit 1) and names the findings; `--fail-on` and `--allow` decide what fails; a file that is
/// not a recording is named as such (exit 2).
#[test]
fn check_passes_clean_recordings_and_fails_on_findings() {
    let (code, out, err) = check(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("demo.pcapng: no findings\n"), "{out}");

    let (code, out, _) = check(&["--schemas", "v30"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("unknown-ordinal"), "{out}");
    assert!(out.contains("schema-mismatch"), "{out}");
    assert!(out.contains("mpspy check: FAILED"), "{out}");

    let (code, out, _) = check(&["--schemas", "v30", "--fail-on", "error"]);
    assert_eq!(code, Some(0), "warnings only: {out}");

    let (code, out, _) = check(&[
        "--schemas",
        "v30",
        "--allow",
        "unknown-ordinal",
        "--allow",
        "schema-mismatch",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no findings"), "{out}");

    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let out = mpspy().arg("check").arg(&readme).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "README.md: no IPC lines: not a recording, and a text file without -debug=ipc"
        ),
        "the file and what is wrong with it: {err}"
    );
}

/// `mpspy check` on `-debug=ipc` logs: what the lines show by themselves. The upstream
/// functional test's node log (interface_ipc) has the `makeMining @2` stub it provokes on
/// purpose, a waitNext interrupted by its client's disconnect, and three waitNext calls sent
/// on one thread at once (the node queues them: #20 runs only once #19 has answered); the
/// pycapnp session's trace log and the example's log are clean.
#[test]
fn check_reads_debug_ipc_logs() {
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debug-logs");
    for clean in ["bitcoin-node-master-ipc-trace.log", "mpexample-debug.log"] {
        let out = mpspy().arg("check").arg(logs.join(clean)).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{clean}: {text}");
        assert!(text.ends_with(&format!("{clean}: no findings\n")), "{text}");
    }

    let log = logs.join("interface_ipc-node0.log");
    let out = mpspy().arg("check").arg(&log).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("4 finding(s): 0 error, 3 warning, 1 info"),
        "{text}"
    );
    for line in [
        "line 105     bitcoin-node-6437    warning  unimplemented-method       Init.makeMiningOld2 answered \"Old mining interface (@2) not supported. Please update your client!\"",
        "line 151     bitcoin-node-6437    info     long-poll-at-disconnect    BlockTemplate.waitNext (#15) was still waiting when its client disconnected",
        "line 189     bitcoin-node-6437    warning  thread-busy                BlockTemplate.waitNext (#20) was posted to bitcoin-node-6437/b-capnp-loop-6453 (from pythread) while BlockTemplate.waitNext (#19) still ran there",
    ] {
        assert!(text.contains(line), "{line}\nnot in:\n{text}");
    }

    let out = mpspy()
        .arg("check")
        .arg(&log)
        .args(["--allow", "thread-busy", "--allow", "unimplemented-method"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Warnings do not fail a check that fails on errors only.
    let out = mpspy()
        .arg("check")
        .arg(&log)
        .args(["--fail-on", "error"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "only warnings and info");
}
