//! Spawned processes (`NAME -ipcfd N` as Bitcoin does, `NAME N` as the libmultiprocess examples
//! do) are relayed through mpspy's spawn shim, and the program sees no difference.

use std::process::Output;

use serde_json::Value;

use crate::common::*;
use crate::live::TestDir;
use crate::testpeer::testpeer;

/// `mpspy --json FILE --quiet [ARGS] -- testpeer PEER_ARGS` with `env`; returns the output
/// (stdout is the program's own) and the events.
fn run_spawning_peer(
    dir: &TestDir,
    mpspy_args: &[&str],
    peer_args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Vec<Value>) {
    let json = dir.path("events.jsonl");
    let out = run_ok(
        mpspy()
            .env("TMPDIR", dir.path("tmp"))
            .envs(env.iter().copied())
            .arg("--json")
            .arg(&json)
            .arg("--quiet")
            .args(mpspy_args)
            .arg("--")
            .arg(testpeer())
            .args(peer_args),
    );
    let events = json_lines(&std::fs::read(&json).unwrap());
    (out, events)
}

/// The program's stdout with pids masked (they differ between runs).
fn masked(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    if w.bytes().all(|b| b.is_ascii_digit()) {
                        "N"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pid in `Process NAME pid PID launched` lines, in order.
fn launched_pids(stdout: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.ends_with(" launched"))
        .filter_map(|l| l.split(' ').nth(3)?.parse().ok())
        .collect()
}

#[test]
fn a_spawned_child_is_relayed_and_the_program_sees_no_difference() {
    let dir = TestDir::new("spawn");
    let peer_args = ["-spawn", "mpspy-testpeer", "--echo", "hi"];
    let direct = std::process::Command::new(testpeer())
        .args(peer_args)
        .output()
        .unwrap();
    assert!(direct.status.success());
    let (out, ev) = run_spawning_peer(&dir, &[], &peer_args, &[]);
    assert_eq!(
        masked(&out.stdout),
        masked(&direct.stdout),
        "same output as without mpspy"
    );

    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    let o = &opened[0];
    let conn = o["conn"].as_u64().unwrap();
    let label = o["data"]["label"].as_str().unwrap();
    assert!(label.ends_with("[spawned -ipcfd]"), "{label}");
    // The real child keeps the shim's pid: the one the parent printed.
    let child_pid = o["data"]["server"]["pid"].as_u64().unwrap();
    assert_eq!(launched_pids(&out.stdout), [child_pid]);
    assert!(
        label.contains(&format!("→ mpspy-testpeer ({child_pid})")),
        "{label}"
    );
    let argv = o["data"]["server"]["argv"].as_array().unwrap();
    assert_eq!(argv.len(), 3, "{argv:?}");
    assert_eq!(argv[1], "-ipcfd");
    assert_eq!(o["data"]["client"]["name"], "mpspy-testpeer");

    assert_eq!(calls_on(&ev, &conn.into()), SPAWNED_SESSION);
    assert_eq!(
        calls_of(&ev, "Echo.echo")[0]["data"]["params"]["echo"],
        "hi"
    );
    assert_eq!(
        returns_of(&ev, "Echo.echo")[0]["data"]["results"]["result"],
        "hi"
    );
    assert_eq!(of_type(&ev, "conn_closed").len(), 1);

    assert_eq!(
        std::fs::read_dir(dir.path("tmp")).unwrap().count(),
        0,
        "the shim directory and control socket are removed"
    );
}

#[test]
fn nested_spawns_are_each_relayed() {
    let dir = TestDir::new("nested");
    let (out, ev) = run_spawning_peer(
        &dir,
        &[],
        &["-spawn", "mpspy-testpeer"],
        &[("MPSPY_TESTPEER_SPAWN", "mpspy-testpeer")],
    );
    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened.len(), 2, "{opened:?}");
    let (first, second) = (&opened[0]["data"], &opened[1]["data"]);
    // The child of the first connection is the parent of the second.
    assert_eq!(second["client"]["pid"], first["server"]["pid"]);
    let mut pids = launched_pids(&out.stdout);
    pids.sort_unstable();
    let mut servers = vec![
        first["server"]["pid"].as_u64().unwrap(),
        second["server"]["pid"].as_u64().unwrap(),
    ];
    servers.sort_unstable();
    assert_eq!(pids, servers);
    for o in &opened {
        let conn = o["conn"].as_u64().unwrap();
        assert_eq!(calls_on(&ev, &conn.into()), SPAWNED_SESSION, "conn {conn}");
    }
    assert_eq!(of_type(&ev, "conn_closed").len(), 2);
}

#[test]
fn the_examples_bare_fd_argument_is_relayed_too() {
    let dir = TestDir::new("bare");
    let (out, ev) = run_spawning_peer(
        &dir,
        &[],
        &["-spawn-bare", "mpspy-testpeer", "--echo", "bare"],
        &[],
    );
    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened.len(), 1, "{opened:?}");
    let label = opened[0]["data"]["label"].as_str().unwrap();
    assert!(label.ends_with("[spawned fd]"), "{label}");
    let argv = opened[0]["data"]["server"]["argv"].as_array().unwrap();
    assert_eq!(argv.len(), 2, "`NAME N`: {argv:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo: \"bare\""));
    assert_eq!(calls_on(&ev, &opened[0]["conn"]), SPAWNED_SESSION);
}

#[test]
fn no_spawn_shim_leaves_spawns_alone() {
    let dir = TestDir::new("noshim");
    let (out, ev) = run_spawning_peer(
        &dir,
        &["--no-spawn-shim"],
        &["-spawn", "mpspy-testpeer", "--echo", "hi"],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo: \"hi\""));
    assert!(of_type(&ev, "conn_opened").is_empty());
}
