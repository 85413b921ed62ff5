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
        err.contains("README.md: not a recording"),
        "the file and what is wrong with it: {err}"
    );
}
