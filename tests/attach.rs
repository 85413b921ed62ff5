//! `mpspy attach` (to a node that is already running) and `mpspy proxy` (a standalone relay),
//! against the real bitcoin-node and bitcoin-cli where they apply and the test peer otherwise.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::peers::{KillOnDrop, Scratch, cli, peer, wait_for};
use crate::real::start_plain_node;
use crate::testpeer::testpeer;

const PATIENCE: Duration = Duration::from_secs(60);

/// An mpspy session started in the background with `--no-tui --json D/events.jsonl --log
/// D/mpspy.log`, its stdout and stderr in files of `D`.
struct Spy {
    child: KillOnDrop,
    dir: PathBuf,
}

impl Spy {
    /// `mpspy ARGS --no-tui --json … --log …` (ARGS start with the subcommand).
    fn start(dir: &Path, args: &[&str]) -> Spy {
        Spy::start_with(dir, args, &[])
    }

    fn start_with(dir: &Path, args: &[&str], extra: &[&str]) -> Spy {
        let out = std::fs::File::create(dir.join("mpspy.stdout")).unwrap();
        let err = std::fs::File::create(dir.join("mpspy.stderr")).unwrap();
        let child = mpspy()
            .args(args)
            .arg("--no-tui")
            .arg("--json")
            .arg(dir.join("events.jsonl"))
            .arg("--log")
            .arg(dir.join("mpspy.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Spy {
            child: KillOnDrop(Some(child)),
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mpspy.log")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("mpspy.stderr")).unwrap_or_default()
    }

    fn events(&self) -> Vec<Value> {
        json_lines(&std::fs::read(self.dir.join("events.jsonl")).unwrap())
    }

    /// Waits until mpspy's messages contain `text`.
    fn wait_said(&mut self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            if let Some(status) = self.child.child().try_wait().unwrap() {
                panic!(
                    "mpspy exited ({status}) before saying {text:?}:\n{}\n{}",
                    self.log(),
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "mpspy never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&mut self, sig: &str) {
        let pid = self.child.child().id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for mpspy to exit by itself (killing it if it does not, so the test fails).
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.child().try_wait().unwrap() {
                // Reaped already: this only hands the child back.
                let _ = self.child.take().wait();
                return s;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "mpspy did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and expects a clean end (exit 0).
    fn stop(&mut self, sig: &str) {
        self.signal(sig);
        let status = self.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "{sig}: {status}\n{}\n{}",
            self.log(),
            self.stderr()
        );
    }
}

/// `mpspy ARGS` run to its end: exit code, stderr.
fn mpspy_out(args: &[&str]) -> (Option<i32>, String) {
    let out = mpspy()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mpspy runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// The node's socket is back at `sock` (the same file the node listens on: it answers), and
/// nothing of mpspy's is left beside it.
fn assert_put_back(sock: &Path) {
    assert!(is_socket(sock), "{} is a socket again", sock.display());
    let dir = sock.parent().unwrap();
    let left: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".") && n.contains("mpspy"))
        .collect();
    assert!(left.is_empty(), "left beside the node's socket: {left:?}");
}

/// The test peer as a node listening at `sock`.
fn start_testpeer(sock: &Path) -> KillOnDrop {
    let child = Command::new(testpeer())
        .arg(format!("-ipcbind=unix:{}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the test peer to listen", PATIENCE, || {
        UnixStream::connect(sock).is_ok()
    });
    KillOnDrop(Some(child))
}

/// `mpspy-testpeer client unix:SOCK --echo WORD`, which must succeed.
fn echo_client(sock: &Path, word: &str) {
    let out = Command::new(testpeer())
        .args([
            "client",
            &format!("unix:{}", sock.display()),
            "--echo",
            word,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client through {}: {}",
        sock.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `Echo.echo` arguments seen, in order.
fn echoes(ev: &[Value]) -> Vec<String> {
    calls_of(ev, "Echo.echo")
        .iter()
        .map(|c| {
            c["data"]["params"]["echo"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

/// `mpspy replay FILE --json`'s calls, which must be those of the live session.
fn assert_replays_the_same(rec: &Path, live: &[Value]) {
    let out = run_ok(mpspy().arg("replay").arg(rec).arg("--json"));
    let replayed = json_lines(&out.stdout);
    assert!(!call_names(live).is_empty());
    assert_eq!(call_names(&replayed), call_names(live));
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A real node that was running first: attach finds its default socket from --datadir and
/// --chain, records bitcoin-cli's call through it, and puts the node's socket back on SIGINT;
/// bitcoin-cli then reaches the node directly at the same path.
#[test]
fn attach_records_bitcoin_cli_on_a_running_node_and_puts_its_socket_back_on_sigint() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("att");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let _node = start_plain_node(&node, &datadir);
    let sock = datadir.join("regtest/node.sock");
    // A connection made before attaching stays the node's (it is not cut).
    let before = UnixStream::connect(&sock).unwrap();

    let mut spy = Spy::start(
        dir.path(),
        &[
            "attach",
            "--datadir",
            datadir.to_str().unwrap(),
            "--chain",
            "-regtest",
        ],
    );
    spy.wait_said("attached to bitcoin-node");
    let moved: Vec<String> = names(&datadir.join("regtest"))
        .into_iter()
        .filter(|n| n.starts_with(".node.sock.mpspy-"))
        .collect();
    assert_eq!(moved.len(), 1, "the node's socket moved aside: {moved:?}");

    let out = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "0");

    spy.stop("-INT");
    let ev = spy.events();
    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened.len(), 1, "only the new connection: {opened:?}");
    assert_eq!(opened[0]["data"]["server"]["name"], "bitcoin-node");
    assert_eq!(opened[0]["data"]["client"]["name"], "bitcoin-cli");
    let exec = returns_of(&ev, "Rpc.executeRpc");
    assert_eq!(exec.len(), 1, "the call is recorded");
    assert!(
        exec[0]["data"]["latency_ns"].is_u64(),
        "paired with its call: {}",
        exec[0]
    );
    let log = spy.log();
    assert!(log.contains("put the node's socket back at"), "{log}");
    assert!(log.contains("stopped by SIGINT"), "{log}");
    assert!(log.contains("Rpc.executeRpc"), "the summary: {log}");

    assert_put_back(&sock);
    let out = cli(&cli_bin, &datadir, &["getblockcount"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "0");
    // The early connection was the node's all along: still open (no EOF, no error).
    before.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let e = std::io::Read::read(&mut &before, &mut b).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
}

/// The node stops while mpspy is attached (bitcoin-cli stop, through mpspy): mpspy notices,
/// puts the path back (the node's leftover socket, as the node leaves it) and ends, exit 0.
#[test]
fn attach_ends_when_the_real_node_exits() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("attx");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let mut node = start_plain_node(&node, &datadir);
    let sock = datadir.join("regtest/node.sock");
    let mut spy = Spy::start(dir.path(), &["attach", &format!("unix:{}", sock.display())]);
    spy.wait_said("attached to bitcoin-node");
    let out = cli(&cli_bin, &datadir, &["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Reaped, so that it is gone, not a zombie, while mpspy watches.
    let status = node.take().wait().unwrap();
    assert!(status.success(), "{status}");
    let status = spy.wait();
    assert_eq!(status.code(), Some(0), "{}", spy.log());
    let log = spy.log();
    assert!(
        log.contains("bitcoin-node") && log.contains("exited"),
        "{log}"
    );
    assert!(log.contains("put the node's socket back at"), "{log}");
    assert!(!calls_of(&spy.events(), "Rpc.executeRpc").is_empty());
    assert_put_back(&sock);
    let e = UnixStream::connect(&sock).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

/// SIGTERM and SIGHUP end an attach cleanly too, with the socket put back, and a client through
/// mpspy was recorded.
#[test]
fn attach_puts_the_socket_back_on_sigterm_and_sighup() {
    for sig in ["-TERM", "-HUP"] {
        let dir = Scratch::new("atts");
        let sock = dir.path().join("node.sock");
        let _peer = start_testpeer(&sock);
        let mut spy = Spy::start(dir.path(), &["attach", &format!("unix:{}", sock.display())]);
        spy.wait_said("attached to mpspy-testpeer");
        echo_client(&sock, "through");
        spy.stop(sig);
        assert_eq!(echoes(&spy.events()), ["through"], "{sig}");
        let name = if sig == "-TERM" { "SIGTERM" } else { "SIGHUP" };
        assert!(
            spy.log().contains(&format!("stopped by {name}")),
            "{}",
            spy.log()
        );
        assert_put_back(&sock);
        echo_client(&sock, "direct");
    }
}

/// What attach refuses, naming the path and what is wrong (exit 2), changing nothing.
#[test]
fn attach_refuses_a_missing_path_a_file_a_stale_socket_and_an_attached_one() {
    let dir = Scratch::new("attr");
    let d = dir.path();
    let refuse = |path: &Path, why: &str| {
        let before = names(d);
        let (code, stderr) = mpspy_out(&["attach", &format!("unix:{}", path.display())]);
        assert_eq!(code, Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains(why),
            "{stderr}"
        );
        assert_eq!(names(d), before, "nothing changed");
    };
    refuse(&d.join("none.sock"), "does not exist");
    std::fs::write(d.join("file.sock"), b"x").unwrap();
    refuse(&d.join("file.sock"), "is not a socket");
    drop(UnixListener::bind(d.join("stale.sock")).unwrap());
    refuse(&d.join("stale.sock"), "connection refused");

    let sock = d.join("node.sock");
    let _peer = start_testpeer(&sock);
    // A moved-aside name whose pid runs but is no mpspy (here: this test): only the user can
    // tell whether an mpspy was killed and the pid taken since, so mpspy says both.
    let odd = d.join(format!(".node.sock.mpspy-{}", std::process::id()));
    std::fs::hard_link(&sock, &odd).unwrap();
    refuse(&sock, "if that is not an mpspy");
    std::fs::remove_file(&odd).unwrap();
    let spy_dir = d.join("spy");
    std::fs::create_dir(&spy_dir).unwrap();
    let mut spy = Spy::start(&spy_dir, &["attach", &format!("unix:{}", sock.display())]);
    spy.wait_said("attached to mpspy-testpeer");
    refuse(&sock, "is already attached");
    spy.stop("-TERM");
    assert_put_back(&sock);
    // Refused without a connection through the first mpspy.
    assert!(of_type(&spy.events(), "conn_opened").is_empty());
}

/// An mpspy killed with SIGKILL cannot put the socket back; the next attach finds its moved-aside
/// name and says exactly how to fix it, and the fix works. A leftover whose node is gone too is
/// removed as the stale socket it is.
#[test]
fn attach_after_a_killed_attach_says_how_to_put_the_socket_back() {
    let dir = Scratch::new("attk");
    let sock = dir.path().join("node.sock");
    let mut peer = start_testpeer(&sock);
    let spy_dir = dir.path().join("spy");
    std::fs::create_dir(&spy_dir).unwrap();
    let mut spy = Spy::start(&spy_dir, &["attach", &format!("unix:{}", sock.display())]);
    spy.wait_said("attached to mpspy-testpeer");
    spy.signal("-KILL");
    spy.wait();
    let (code, stderr) = mpspy_out(&["attach", &format!("unix:{}", sock.display())]);
    assert_eq!(code, Some(2), "{stderr}");
    let fix = stderr
        .split("put it back with: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{stderr}"))
        .trim();
    let words: Vec<&str> = fix.split(' ').collect();
    assert_eq!(words.len(), 3, "{fix}");
    assert_eq!((words[0], words[2]), ("mv", sock.to_str().unwrap()));
    let status = Command::new("mv").args(&words[1..]).status().unwrap();
    assert!(status.success());
    assert_put_back(&sock);
    echo_client(&sock, "fixed");

    // Killed again, and the node stops too: the leftover is stale and goes.
    let mut spy = Spy::start(&spy_dir, &["attach", &format!("unix:{}", sock.display())]);
    spy.wait_said("attached to mpspy-testpeer");
    spy.signal("-KILL");
    spy.wait();
    let mut node = peer.take();
    node.kill().unwrap();
    node.wait().unwrap();
    let (code, stderr) = mpspy_out(&["attach", &format!("unix:{}", sock.display())]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(
        !names(dir.path())
            .iter()
            .any(|n| n.starts_with(".node.sock.mpspy-")),
        "{:?}",
        names(dir.path())
    );
}

/// A socket that another mpspy relays (`mpspy -- PROGRAM` took it over) is refused too: its
/// listener is an mpspy's.
#[test]
fn attach_refuses_a_socket_mpspy_already_relays() {
    let dir = crate::live::TestDir::new("attw");
    let (child, sock) = crate::live::start_wrapped_peer(&dir, &["--no-tui"]);
    let mut wrapped = KillOnDrop(Some(child));
    let (code, stderr) = mpspy_out(&["attach", &format!("unix:{}", sock.display())]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("mpspy's own listener"), "{stderr}");
    crate::live::stop_ok(wrapped.take());
}

/// `mpspy proxy` in front of the real node: bitcoin-cli pointed at the proxy is recorded, the
/// recording replays to the same calls, and SIGTERM ends it with exit 0, its socket removed.
#[test]
fn proxy_in_front_of_the_real_node_records_bitcoin_cli() {
    let (Some(node), Some(cli_bin)) = (peer("bitcoin-node"), peer("bitcoin-cli")) else {
        return;
    };
    let dir = Scratch::new("prx");
    let datadir = dir.path().join("d");
    std::fs::create_dir(&datadir).unwrap();
    let _node = start_plain_node(&node, &datadir);
    let spy_sock = dir.path().join("spy.sock");
    let rec = dir.path().join("s.pcapng");
    let mut spy = Spy::start_with(
        dir.path(),
        &[
            "proxy",
            "--listen",
            &format!("unix:{}", spy_sock.display()),
            "--connect",
            &format!("unix:{}", datadir.join("regtest/node.sock").display()),
        ],
        &["--record", rec.to_str().unwrap()],
    );
    spy.wait_said("are relayed to");
    let out = Command::new(&cli_bin)
        .arg("-regtest")
        .arg(format!("-datadir={}", datadir.display()))
        .arg(format!("-ipcconnect=unix:{}", spy_sock.display()))
        .arg("getblockcount")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "0");
    spy.stop("-TERM");
    let ev = spy.events();
    assert_eq!(returns_of(&ev, "Rpc.executeRpc").len(), 1);
    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened[0]["data"]["server"]["name"], "bitcoin-node");
    assert_eq!(opened[0]["data"]["client"]["name"], "bitcoin-cli");
    assert_replays_the_same(&rec, &ev);
    assert!(
        !spy_sock.exists(),
        "the proxy's socket is removed at the end"
    );
    assert!(spy.log().contains("stopped by SIGTERM"), "{}", spy.log());
}

/// `mpspy proxy` in front of the test peer: while the server is down each client is closed
/// ("upstream unreachable") and the proxy keeps running; once it is up, clients are relayed
/// and recorded. A stale socket at the listening path is replaced.
#[test]
fn proxy_closes_clients_while_the_server_is_down_and_relays_them_once_it_is_up() {
    let dir = Scratch::new("prt");
    let node_sock = dir.path().join("node.sock");
    let spy_sock = dir.path().join("spy.sock");
    drop(UnixListener::bind(&spy_sock).unwrap());
    let rec = dir.path().join("s.pcapng");
    let mut spy = Spy::start_with(
        dir.path(),
        &[
            "proxy",
            "--listen",
            &format!("unix:{}", spy_sock.display()),
            "--connect",
            &format!("unix:{}", node_sock.display()),
        ],
        &["--record", rec.to_str().unwrap()],
    );
    spy.wait_said("are relayed to");
    assert!(
        spy.log().contains("removed the stale socket"),
        "{}",
        spy.log()
    );
    let down = Command::new(testpeer())
        .args([
            "client",
            &format!("unix:{}", spy_sock.display()),
            "--echo",
            "x",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!down.status.success(), "no server: the client fails");
    assert!(
        spy.child.child().try_wait().unwrap().is_none(),
        "still running"
    );

    let _peer = start_testpeer(&node_sock);
    echo_client(&spy_sock, "up");
    echo_client(&spy_sock, "again");
    spy.stop("-INT");
    let ev = spy.events();
    let opened = of_type(&ev, "conn_opened");
    assert_eq!(opened.len(), 3, "{opened:?}");
    assert!(
        opened[0]["data"]["label"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        opened[0]
    );
    assert_eq!(echoes(&ev), ["up", "again"]);
    assert_replays_the_same(&rec, &ev);
}

/// What proxy refuses at its listening path: a file that is not a socket, a socket someone
/// listens on; and `--check` fails (exit 1) a session whose client misbehaved.
#[test]
fn proxy_refuses_a_busy_or_foreign_listen_path_and_check_fails_a_misbehaving_client() {
    let dir = Scratch::new("prr");
    let node_sock = dir.path().join("node.sock");
    let _peer = start_testpeer(&node_sock);
    let connect = format!("unix:{}", node_sock.display());
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for (path, why) in [
        (&file, "is not a socket"),
        (&node_sock, "already listening"),
    ] {
        let (code, stderr) = mpspy_out(&[
            "proxy",
            "--listen",
            &format!("unix:{}", path.display()),
            "--connect",
            &connect,
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains(why),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    let spy_sock = dir.path().join("spy.sock");
    let listen = format!("unix:{}", spy_sock.display());
    let mut spy = Spy::start_with(
        dir.path(),
        &["proxy", "--listen", &listen, "--connect", &connect],
        &["--check"],
    );
    spy.wait_said("are relayed to");
    let out = Command::new(testpeer())
        .args(["misbehave", &listen, "thread-busy"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    spy.signal("-TERM");
    let status = spy.wait();
    assert_eq!(status.code(), Some(1), "--check fails: {}", spy.log());
    assert!(spy.log().contains("thread-busy"), "{}", spy.log());
}

/// `mpspy proxy --inject`: the proxy injects like `mpspy --` does, and says so.
#[test]
fn proxy_injects_faults_too() {
    let dir = Scratch::new("pri");
    let node_sock = dir.path().join("node.sock");
    let spy_sock = dir.path().join("spy.sock");
    let _peer = start_testpeer(&node_sock);
    let mut spy = Spy::start_with(
        dir.path(),
        &[
            "proxy",
            "--listen",
            &format!("unix:{}", spy_sock.display()),
            "--connect",
            &format!("unix:{}", node_sock.display()),
        ],
        &["--inject", "Echo.echo:exception=failed:no echo today"],
    );
    spy.wait_said("are relayed to");
    let out = mpspy()
        .arg("call")
        .arg(format!("unix:{}", spy_sock.display()))
        .args(["Init.makeEcho", "Echo.echo", r#"{"echo":"hi"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed: no echo today"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    spy.stop("-INT");
    let ev = spy.events();
    assert!(
        of_type(&ev, "notice").iter().any(|n| n["data"]["text"]
            .as_str()
            .unwrap()
            .starts_with("fault injection is on")),
        "the proxy says it alters the traffic"
    );
    let injected = of_type(&ev, "injected");
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert_eq!(injected[0]["data"]["method"], "Echo.echo");
}
