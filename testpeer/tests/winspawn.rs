//! The test peer on Windows: spawns through the named pipe protocol of libmultiprocess PR
//! #231, in both roles (run under Wine in CI).
#![cfg(windows)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_mpspy-testpeer");

/// Runs the peer with `args` to completion (killed after a minute), capturing its output.
fn peer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(PEER)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("mpspy-testpeer {args:?} did not exit within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn spawn_serves_the_child_through_a_named_pipe() {
    let out = peer(
        &["-spawn", "mpspy-testpeer", "--echo", "through the pipe"],
        &[],
    );
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("echo: \"through the pipe\""), "{text}");
    assert!(text.contains("launched"), "{text}");
    assert!(text.contains("exited with status 0"), "{text}");
}

#[test]
fn the_examples_shape_passes_the_pipe_path_alone() {
    let out = peer(&["-spawn-bare", "mpspy-testpeer"], &[]);
    assert_success(&out);
    assert!(stdout(&out).contains("echo: \"hello from parent\""));
}

#[test]
fn nested_spawn_parent_child_grandchild() {
    let out = peer(
        &["-spawn", "mpspy-testpeer"],
        &[("MPSPY_TESTPEER_SPAWN", "mpspy-testpeer")],
    );
    assert_success(&out);
    // Two spawns, two sessions, two clean exits.
    let text = stdout(&out);
    assert_eq!(text.matches("launched").count(), 2, "{text}");
    assert_eq!(text.matches("exited with status 0").count(), 2, "{text}");
}

#[test]
fn a_pipe_that_does_not_exist_is_an_error() {
    let out = peer(&["-ipcfd", r"\\.\pipe\mpspy-test-no-such-pipe"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Invalid -ipcfd pipe"), "{err}");
    assert!(err.contains("CreateFile(pipe)"), "{err}");
}
