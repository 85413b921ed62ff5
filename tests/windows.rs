//! mpspy on Windows (run under Wine in CI): `call spawn:PROGRAM` through the named pipe
//! protocol of libmultiprocess PR #231.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::*;

/// The test peer's Windows build, next to mpspy's (`cargo test --workspace` builds it).
fn testpeer() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_mpspy")).with_file_name("mpspy-testpeer.exe");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p mpspy-testpeer`",
        p.display()
    );
    p
}

#[test]
fn call_spawns_the_peer_through_a_named_pipe_and_decodes_the_calls() {
    let peer = testpeer();
    let (code, out, err) = call(&[
        "--trace",
        &format!("spawn:{}", peer.display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"through the pipe"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"result": "through the pipe"})
    );
    // The decoder saw the whole libmultiprocess handshake and the call.
    for line in [
        "call q1 Init.construct",
        "ThreadMap.makeThread",
        "Init.makeEcho on Init#1",
        "echo = \"through the pipe\"",
        "return q2 Echo.echo",
        "Echo.destroy",
    ] {
        assert!(err.contains(line), "no {line:?} in:\n{err}");
    }
    assert!(err.contains("child exited: exit code: 0"), "{err}");
}

#[test]
fn spawn_finds_name_exe_and_quotes_paths_with_spaces() {
    // `…\mpspy-testpeer` without `.exe` resolves to `mpspy-testpeer.exe`.
    let peer = testpeer();
    let bare_name = peer.with_extension("");
    let (code, out, err) = call(&[
        "--argv",
        "bare",
        &format!("spawn:{}", bare_name.display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"bare"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["result"],
        "bare"
    );

    // argv0 with spaces must reach the child as one argument, or its `-ipcfd` is argv[2+].
    let dir = std::env::temp_dir().join(format!("mpspy win {} dir", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("mpspy-testpeer.exe");
    std::fs::copy(&peer, &copy).unwrap();
    let (code, out, err) = call(&[
        &format!("spawn:{}", dir.join("mpspy-testpeer").display()),
        "Init.makeEcho",
        "Echo.echo",
        r#"{"echo":"spaced"}"#,
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["result"],
        "spaced"
    );
}

#[test]
fn a_child_that_exits_before_connecting_is_a_clear_error() {
    // mpspy itself does not understand `-ipcfd \\.\pipe\…` and exits at once.
    let (code, _, err) = call(&[
        &format!("spawn:{}", env!("CARGO_BIN_EXE_mpspy")),
        "Init.makeEcho",
        "Echo.echo",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("child process exited before connecting to named pipe"),
        "{err}"
    );
    let (code, _, err) = call(&["spawn:mpspy-no-such-program", "Init.makeEcho"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no such program"), "{err}");
}
