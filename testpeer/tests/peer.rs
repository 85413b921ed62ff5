//! End-to-end tests of mpspy-testpeer: real processes on real unix sockets
//! and socketpairs.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_mpspy-testpeer");
const TIMEOUT: Duration = Duration::from_secs(60);

/// A scratch directory removed on drop. Kept short: socket paths are limited
/// to 107 bytes.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tp-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` with a deadline; kills it if the deadline passes.
fn wait_for(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{what} did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command to completion (with a deadline), capturing its output.
fn run(cmd: &mut Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    // Drain both pipes on threads so a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).ok();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).ok();
        v
    });
    let status = wait_for(&mut child, what);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(bytes: &[u8]) -> Vec<String> {
    text(bytes).lines().map(str::to_owned).collect()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A listening test peer; killed on drop if still running.
struct Node {
    child: Child,
    /// Further stdout lines after the Listening line.
    _stdout: mpsc::Receiver<String>,
}

impl Node {
    /// Starts `mpspy-testpeer ARGS…` and waits for its Listening line;
    /// returns the node and the address it printed.
    fn start(args: &[String]) -> (Self, String) {
        let mut child = Command::new(PEER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the test peer");
        let rx = line_reader(child.stdout.take().unwrap());
        let line = match rx.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                child.kill().ok();
                panic!("no Listening line from the peer: {e}");
            }
        };
        let address = line
            .strip_prefix("Listening for IPC requests on address ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        (Self { child, _stdout: rx }, address)
    }

    fn terminate(mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        wait_for(&mut self.child, "the test peer after SIGTERM")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn pycapnp_available() -> bool {
    Command::new("python3")
        .args(["-c", "import capnp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/client.py")
}

#[test]
fn listens_serves_clients_and_cleans_up_on_sigterm() {
    let dir = TempDir::new("listen");
    let sock = dir.path().join("node.sock");
    let (node, address) = Node::start(&[format!("-ipcbind=unix:{}", sock.display())]);
    assert_eq!(address, format!("unix:{}", sock.display()));
    assert!(sock.exists());

    // The built-in client: the libmultiprocess C++ client's call pattern.
    let out = run(
        Command::new(PEER).args([
            "client",
            &address,
            "--echo",
            "hello",
            "--echo",
            "two words, \"quoted\"",
            "--count",
            "2",
            "--mining",
            "--rpc",
            "getblockcount",
            "--thread-name",
        ]),
        "the built-in client",
    );
    assert_success(&out, "the built-in client");
    let got = lines(&out.stdout);
    let thread = got
        .iter()
        .find_map(|l| l.strip_prefix("thread: "))
        .expect("a thread line");
    let thread: String = serde_json::from_str(thread).unwrap();
    // "<exe>-<server pid>/<n> (from <exe>-<client pid>/<exe>-<client pid>)": libmultiprocess's
    // long names of a server thread (a counter for its tid) and of a client's main thread.
    let node_pid = node.child.id();
    let from = thread
        .strip_prefix(&format!("mpspy-testpeer-{node_pid}/"))
        .and_then(|t| t.split_once(" (from "))
        .and_then(|(n, from)| n.parse::<u64>().ok().and(from.strip_suffix(')')))
        .unwrap_or_else(|| panic!("thread name {thread:?}"));
    let (exe_pid, pthread_tid) = from.split_once('/').unwrap();
    assert!(
        exe_pid == pthread_tid && exe_pid.starts_with("mpspy-testpeer-"),
        "thread name {thread:?}"
    );
    let echoes: Vec<String> = got
        .iter()
        .filter_map(|l| l.strip_prefix("echo: "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    assert_eq!(
        echoes,
        [
            "hello",
            "hello",
            "two words, \"quoted\"",
            "two words, \"quoted\""
        ]
    );
    for expected in [
        "Echo.destroy: ok",
        "isTestChain: true",
        "getBlockHeader: 80 bytes",
        "getBlock: 227 bytes",
        "waitNext: null",
        "BlockTemplate.destroy: ok",
        "checkBlock: exception \"std::exception: SpanReader::read(): end of data: iostream error\"",
        r#"executeRpc: {"jsonrpc":"2.0","result":5,"id":"1"}"#,
    ] {
        assert!(
            got.iter().any(|l| l == expected),
            "missing {expected:?} in {got:#?}"
        );
    }
    assert!(
        got.iter().any(|l| l.starts_with("getTip: height 5 hash ")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|l| l.starts_with(
            "getCoinbaseTx: version 2 sequence 0xfffffffe blockRewardRemaining 5000000000 lockTime 5 requiredOutputs 1"
        )),
        "{got:#?}"
    );

    // The pycapnp client: an independent implementation, the upstream
    // functional tests' call pattern.
    if pycapnp_available() {
        let out = run(
            Command::new("python3").arg(python_client()).args([
                &address, "--echo", "py", "--echo", "", "--count", "2", "--mining",
            ]),
            "client.py",
        );
        assert_success(&out, "client.py");
        let records: Vec<serde_json::Value> = lines(&out.stdout)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let echoes: Vec<&str> = records
            .iter()
            .filter(|r| r["call"] == "echo")
            .map(|r| r["result"].as_str().unwrap())
            .collect();
        assert_eq!(echoes, ["py", "py", "", ""]);
        let call = |name: &str| {
            records
                .iter()
                .find(|r| r["call"] == name)
                .unwrap_or_else(|| panic!("no {name} record in {records:#?}"))
        };
        assert_eq!(call("getTip")["height"], 5);
        assert_eq!(call("getBlockHeader")["size"], 80);
        assert!(call("waitNext")["result"].is_null());
        assert!(
            call("checkBlock")["exception"]
                .as_str()
                .unwrap()
                .contains("std::exception: SpanReader::read(): end of data: iostream error")
        );
    } else if std::env::var_os("MPSPY_REQUIRE_PYCAPNP").is_some_and(|v| v == "1") {
        panic!("pycapnp is required (MPSPY_REQUIRE_PYCAPNP=1) but `import capnp` fails");
    } else {
        eprintln!("note: pycapnp not importable; skipping the client.py part");
    }

    let status = node.terminate();
    assert!(status.success(), "peer exit after SIGTERM: {status}");
    // Like bitcoin-node: the socket stays, and the next client is refused.
    let e = std::os::unix::net::UnixStream::connect(&sock).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn default_socket_under_datadir_and_stale_socket_replaced() {
    let dir = TempDir::new("datadir");
    let sock = dir.path().join("regtest").join("node.sock");
    // A stale socket from an earlier run: bitcoin-node removes it and binds.
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let (node, address) = Node::start(&[
        format!("-datadir={}", dir.path().display()),
        "-regtest".to_string(),
        "-ipcbind=unix".to_string(),
    ]);
    assert_eq!(address, format!("unix:{}", sock.display()));
    let out = run(
        Command::new(PEER).args(["client", &address]),
        "the built-in client",
    );
    assert_success(&out, "the built-in client");
    assert!(lines(&out.stdout).contains(&"echo: \"hello from parent\"".to_string()));
    assert!(node.terminate().success());
    assert!(sock.exists(), "left behind, as bitcoin-node leaves it");
}

#[test]
fn regular_file_at_bind_path_is_an_error_and_left_alone() {
    let dir = TempDir::new("file");
    let path = dir.path().join("node.sock");
    std::fs::write(&path, b"not a socket\n").unwrap();
    let out = run(
        Command::new(PEER).arg(format!("-ipcbind=unix:{}", path.display())),
        "the test peer",
    );
    assert!(
        !out.status.success(),
        "binding over a regular file succeeded"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "Unable to bind to IPC address 'unix:{}'",
            path.display()
        )) && err.contains("not a socket"),
        "stderr: {err}"
    );
    assert!(!text(&out.stdout).contains("Listening"));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket\n");
}

/// `Process NAME pid N exited with status S` lines: (pid, status).
fn exits(out: &[String]) -> Vec<(u32, i32)> {
    out.iter()
        .filter_map(|l| l.strip_prefix("Process mpspy-testpeer pid "))
        .filter_map(|l| l.split_once(" exited with status "))
        .map(|(pid, status)| (pid.parse().unwrap(), status.parse().unwrap()))
        .collect()
}

#[test]
fn spawn_serves_child_over_socketpair() {
    let out = run(
        Command::new(PEER)
            .args(["-spawn", "mpspy-testpeer", "--echo", "a", "--echo", "b c"])
            .env_remove("MPSPY_TESTPEER_SPAWN"),
        "the spawning parent",
    );
    assert_success(&out, "the spawning parent");
    let got = lines(&out.stdout);
    assert_eq!(
        got.iter()
            .filter(|l| l.starts_with("echo: "))
            .collect::<Vec<_>>(),
        ["echo: \"a\"", "echo: \"b c\""]
    );
    let exited = exits(&got);
    assert_eq!(exited.len(), 1, "{got:#?}");
    assert_eq!(exited[0].1, 0);
    assert!(got.contains(&format!(
        "Process mpspy-testpeer pid {} launched",
        exited[0].0
    )));
}

#[test]
fn nested_spawn_parent_child_grandchild() {
    let out = run(
        Command::new(PEER)
            .args(["-spawn", "mpspy-testpeer", "--echo", "to child"])
            .env("MPSPY_TESTPEER_SPAWN", "mpspy-testpeer"),
        "the spawning parent",
    );
    assert_success(&out, "the spawning parent");
    let got = lines(&out.stdout);
    let echoes: Vec<&String> = got.iter().filter(|l| l.starts_with("echo: ")).collect();
    // The parent's text to the child, the child's default text to the grandchild.
    assert_eq!(echoes.len(), 2, "{got:#?}");
    assert!(got.contains(&"echo: \"to child\"".to_string()));
    assert!(got.contains(&"echo: \"hello from parent\"".to_string()));
    let exited = exits(&got);
    assert_eq!(exited.len(), 2, "{got:#?}");
    assert!(exited.iter().all(|(_, status)| *status == 0), "{got:#?}");
    assert_ne!(exited[0].0, exited[1].0);
}

#[test]
fn ipcfd_argument_rules() {
    let out = run(Command::new(PEER).args(["-ipcfd", "99"]), "-ipcfd 99");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Invalid -ipcfd number '99'"));

    let out = run(Command::new(PEER).args(["-ipcfd", "x"]), "-ipcfd x");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Invalid -ipcfd number 'x'"));

    // Bitcoin's rule: spawned only with exactly `-ipcfd N`.
    let out = run(
        Command::new(PEER).args(["-ipcfd", "3", "-regtest"]),
        "-ipcfd 3 -regtest",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Invalid parameter -ipcfd"));

    let out = run(
        Command::new(PEER).args(["-spawn", "no-such-testpeer"]),
        "-spawn of a missing program",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no-such-testpeer"));
}

// ---------------------------------------------------------------------------------------------
// The test peer next to the real programs: the same clients against both, the same wire.

/// The real program `name` in `MPSPY_PEERS_DIR` (a small copy of the workspace tests' lookup,
/// `tests/peers.rs`), or `None` with a note when the tests that need it must skip. Panics when
/// `MPSPY_REQUIRE_PEERS=1` and the program is not there.
fn real_peer(name: &str) -> Option<PathBuf> {
    let require = std::env::var_os("MPSPY_REQUIRE_PEERS").is_some_and(|v| v == "1");
    let why = match std::env::var_os("MPSPY_PEERS_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => {
            // Relative to the workspace root, as `.ci/run` gives it.
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(dir)
                .join(name);
            if p.is_file() {
                return Some(p);
            }
            format!("{} does not exist", p.display())
        }
        None => "MPSPY_PEERS_DIR is not set".to_string(),
    };
    assert!(
        !require,
        "MPSPY_REQUIRE_PEERS=1 but {why}: the real-peer tests cannot run"
    );
    eprintln!("note: skipping the {name} part ({why}); set MPSPY_PEERS_DIR to a directory with it");
    None
}

/// A throwaway regtest `bitcoin-node` with IPC on `<dir>/regtest/node.sock`; stopped on drop.
struct RealNode {
    child: Child,
    sock: PathBuf,
}

impl RealNode {
    fn start(bin: &Path, dir: &Path) -> Self {
        // An RPC port of our own: other nodes may be running beside the tests.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", dir.display()))
            .args(["-ipcbind=unix", "-listen=0", "-printtoconsole=0"])
            .arg(format!("-rpcport={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting bitcoin-node");
        let node = RealNode {
            child,
            sock: dir.join("regtest").join("node.sock"),
        };
        let deadline = Instant::now() + TIMEOUT;
        while std::os::unix::net::UnixStream::connect(&node.sock).is_err() {
            assert!(Instant::now() < deadline, "bitcoin-node did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn address(&self) -> String {
        format!("unix:{}", self.sock.display())
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + TIMEOUT;
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The test peer and, when `MPSPY_PEERS_DIR` has one, a real `bitcoin-node`, each listening:
/// `(name, address)` plus what keeps them running.
struct Servers {
    list: Vec<(&'static str, String)>,
    _peer: Node,
    _real: Option<RealNode>,
    _dirs: Vec<TempDir>,
}

fn servers(tag: &str) -> Servers {
    let dir = TempDir::new(tag);
    let (peer, address) = Node::start(&[format!(
        "-ipcbind=unix:{}",
        dir.path().join("node.sock").display()
    )]);
    let mut list = vec![("mpspy-testpeer", address)];
    let mut dirs = vec![dir];
    let real = real_peer("bitcoin-node").map(|bin| {
        let dir = TempDir::new(&format!("{tag}-real"));
        let node = RealNode::start(&bin, dir.path());
        list.push(("bitcoin-node", node.address()));
        dirs.push(dir);
        node
    });
    Servers {
        list,
        _peer: peer,
        _real: real,
        _dirs: dirs,
    }
}

/// One RPC message as a relay saw it: direction, a description of what it says, and size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Frame {
    from_client: bool,
    what: String,
    bytes: usize,
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    let word = |i: usize| {
        buf.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let segments = word(0)? + 1;
    let mut len = (4 + 4 * segments).next_multiple_of(8);
    for i in 0..segments {
        len += 8 * word(1 + i)?;
    }
    (buf.len() >= len).then_some(len)
}

fn describe(frame: &[u8]) -> String {
    use capnp_rpc::rpc_capnp::{cap_descriptor, message, message_target, return_};
    let reader = capnp::serialize::read_message_from_flat_slice(
        &mut &frame[..],
        capnp::message::ReaderOptions::new(),
    )
    .unwrap();
    let m: message::Reader<'_> = reader.get_root().unwrap();
    let caps = |t: capnp::struct_list::Reader<'_, cap_descriptor::Owned>| -> String {
        t.iter()
            .map(|d| match d.which().unwrap() {
                cap_descriptor::SenderHosted(i) => format!("sh{i}"),
                cap_descriptor::ReceiverHosted(i) => format!("rh{i}"),
                cap_descriptor::ReceiverAnswer(a) => format!("ra{}", a.unwrap().get_question_id()),
                _ => "other".to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    match m.which().unwrap() {
        message::Bootstrap(b) => format!("bootstrap q{}", b.unwrap().get_question_id()),
        message::Call(c) => {
            let c = c.unwrap();
            let target = match c.get_target().unwrap().which().unwrap() {
                message_target::ImportedCap(i) => format!("import {i}"),
                message_target::PromisedAnswer(a) => {
                    format!("answer q{}", a.unwrap().get_question_id())
                }
            };
            format!(
                "call q{} {:#x}@{} on {target} [{}]",
                c.get_question_id(),
                c.get_interface_id(),
                c.get_method_id(),
                caps(c.get_params().unwrap().get_cap_table().unwrap())
            )
        }
        message::Return(r) => {
            let r = r.unwrap();
            let how = match r.which().unwrap() {
                return_::Results(p) => format!("[{}]", caps(p.unwrap().get_cap_table().unwrap())),
                return_::Exception(e) => {
                    format!(
                        "exception {}",
                        e.unwrap().get_reason().unwrap().to_str().unwrap()
                    )
                }
                return_::Canceled(()) => "canceled".to_string(),
                _ => "other".to_string(),
            };
            format!("return a{} {how}", r.get_answer_id())
        }
        message::Finish(f) => format!("finish q{}", f.unwrap().get_question_id()),
        message::Release(r) => {
            let r = r.unwrap();
            format!("release {}x{}", r.get_id(), r.get_reference_count())
        }
        message::Abort(e) => {
            let e = e.unwrap();
            format!(
                "abort {:?} {}",
                e.get_type().unwrap(),
                e.get_reason().unwrap().to_str().unwrap()
            )
        }
        _ => "other".to_string(),
    }
}

/// Relays one connection from `listen` to `upstream` and returns every message that crossed,
/// once both sides have closed. Each message is logged before it is passed on, so one written
/// into a closed socket (the node's last Abort) is still seen.
fn relay(listen: &Path, upstream: &str) -> std::thread::JoinHandle<Vec<Frame>> {
    use std::io::Write;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::{Arc, Mutex};
    let listener = UnixListener::bind(listen).unwrap();
    let upstream = PathBuf::from(upstream.strip_prefix("unix:").unwrap());
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = UnixStream::connect(&upstream).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let pump = |mut from: UnixStream, mut to: UnixStream, from_client: bool| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 1 << 16];
                loop {
                    let n = from.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        log.lock().unwrap().push(Frame {
                            from_client,
                            what: "eof".to_string(),
                            bytes: 0,
                        });
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(len) = frame_len(&buf) {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        log.lock().unwrap().push(Frame {
                            from_client,
                            what: describe(&frame),
                            bytes: len,
                        });
                        let _ = to.write_all(&frame);
                    }
                }
            })
        };
        let up = pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            true,
        );
        let down = pump(server, client, false);
        up.join().unwrap();
        down.join().unwrap();
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    })
}

fn one_way(frames: &[Frame], from_client: bool) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| f.from_client == from_client)
        .collect()
}

fn require_pycapnp() -> bool {
    if pycapnp_available() {
        return true;
    }
    assert!(
        std::env::var_os("MPSPY_REQUIRE_PYCAPNP").is_none_or(|v| v != "1"),
        "pycapnp is required (MPSPY_REQUIRE_PYCAPNP=1) but `import capnp` fails"
    );
    eprintln!("note: pycapnp not importable; skipping");
    false
}

#[test]
fn threads_pools_and_their_errors_behave_like_bitcoin_node() {
    if !require_pycapnp() {
        return;
    }
    let servers = servers("threads");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/threads.py");
    for (name, address) in &servers.list {
        let out = run(
            Command::new("python3").arg(&script).arg(address),
            "threads.py",
        );
        assert_success(&out, &format!("threads.py against {name}"));
        let records: Vec<serde_json::Value> = lines(&out.stdout)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let check = |c: &str| {
            records
                .iter()
                .find(|r| r["check"] == c)
                .unwrap_or_else(|| panic!("{name}: no {c} in {records:#?}"))
        };
        let ms = |c: &str, call: &str| check(c)["ms"][call].as_u64().unwrap();
        // One Thread: the short call waits for the long one; two Threads: it does not.
        assert_eq!(
            check("one_thread")["order"],
            serde_json::json!(["long", "short"]),
            "{name}"
        );
        assert!(ms("one_thread", "short") >= 320, "{name}: {records:#?}");
        assert_eq!(
            check("two_threads")["order"],
            serde_json::json!(["short", "long"]),
            "{name}"
        );
        // A call canceled while queued still holds its Thread for its whole wait.
        assert!(
            check("canceled_while_queued")["last_ms"].as_u64().unwrap() >= 520,
            "{name}: {records:#?}"
        );
        assert_eq!(
            check("errors")["texts"],
            serde_json::json!([
                "std::exception: no thread specified and no pool configured",
                "std::exception: invalid thread handle",
                "std::exception: no thread specified and no pool configured",
                "std::exception: no thread specified and no pool configured",
                "std::exception: makePool called on connection with existing pool",
                "std::exception: makePool called on connection with existing pool",
            ]),
            "{name}"
        );
        // Two pool threads: a and c on pool/0, b and d on pool/1.
        assert_eq!(
            check("pool")["order"],
            serde_json::json!(["b", "d", "a", "c"]),
            "{name}"
        );
        assert!(ms("pool", "c") >= 450, "{name}: {records:#?}");
    }
}

/// Sends `bytes` (whole frames) to `address`, closes the sending side and returns every
/// message that comes back until the other side closes.
fn exchange(address: &str, bytes: &[u8]) -> Vec<String> {
    use std::io::Write;
    let mut s =
        std::os::unix::net::UnixStream::connect(address.strip_prefix("unix:").unwrap()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(bytes).unwrap();
    if !bytes.is_empty() {
        // The Return first: then the server's tables hold the bootstrap answer and export.
        let mut got = [0u8; 8];
        s.read_exact(&mut got).unwrap();
        let mut rest = vec![0u8; 8 * u32::from_le_bytes(got[4..].try_into().unwrap()) as usize];
        s.read_exact(&mut rest).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let mut out = Vec::new();
    while let Some(len) = frame_len(&buf) {
        out.push(describe(&buf[..len]));
        buf.drain(..len);
    }
    out
}

#[test]
fn the_server_aborts_after_the_clients_eof_like_bitcoin_node() {
    let mut bootstrap = capnp::message::Builder::new_default();
    bootstrap
        .init_root::<capnp_rpc::rpc_capnp::message::Builder<'_>>()
        .init_bootstrap()
        .set_question_id(0);
    let bootstrap = capnp::serialize::write_message_to_words(&bootstrap);
    let servers = servers("abort");
    for (name, address) in &servers.list {
        // Whatever the tables hold, even nothing at all (observed on master).
        for sent in [&bootstrap[..], &[]] {
            assert_eq!(
                exchange(address, sent),
                ["abort Disconnected Peer disconnected."],
                "{name}"
            );
        }
    }
}

#[test]
fn the_test_client_closes_like_bitcoin_cli() {
    let servers = servers("close");
    for (name, address) in &servers.list {
        let dir = TempDir::new("relay");
        let sock = dir.path().join("r.sock");
        let relayed = relay(&sock, address);
        let out = run(
            Command::new(PEER).args([
                "client",
                &format!("unix:{}", sock.display()),
                "--rpc",
                "getblockcount",
            ]),
            "the built-in client",
        );
        assert_success(&out, "the built-in client");
        let frames = relayed.join().unwrap();
        let client = one_way(&frames, true);
        let whats: Vec<&str> = client.iter().map(|f| f.what.as_str()).collect();
        // Its last words: Finish of executeRpc, Release of the Rpc, then it closes; no Abort,
        // and no Release of the ThreadMap (import 1) or the Thread.
        let n = whats.len();
        assert!(
            n > 3
                && whats[n - 3].starts_with("finish")
                && whats[n - 2].starts_with("release")
                && whats[n - 1] == "eof",
            "{name}: {whats:#?}"
        );
        assert!(!whats.iter().any(|w| w.starts_with("abort")), "{name}");
        let releases: Vec<&str> = whats
            .iter()
            .filter(|w| w.starts_with("release"))
            .copied()
            .collect();
        // Init (import 0) right after the bootstrap Return: the documented capnp-rust
        // difference; then only the Rpc.
        assert_eq!(releases.len(), 2, "{name}: {whats:#?}");
        assert_eq!(releases[0], "release 0x1", "{name}: {whats:#?}");
        let server = one_way(&frames, false);
        assert_eq!(
            server[server.len() - 2].what,
            "abort Disconnected Peer disconnected.",
            "{name}: {server:#?}"
        );
    }
}

#[test]
fn bitcoin_cli_gets_the_same_answers_from_the_test_peer_as_from_bitcoin_node() {
    let Some(cli) = real_peer("bitcoin-cli") else {
        return;
    };
    let servers = servers("cli");
    if servers.list.len() < 2 {
        return;
    }
    let mut sessions = Vec::new();
    for (name, address) in &servers.list {
        let dir = TempDir::new("clirelay");
        // The node answers RPC only once it has loaded; ask it directly until it does.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let out = Command::new(&cli)
                .arg("-regtest")
                .arg(format!("-datadir={}", dir.path().display()))
                .arg(format!("-ipcconnect={address}"))
                .arg("getblockcount")
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {}", text(&out.stderr));
            std::thread::sleep(Duration::from_millis(100));
        }
        let sock = dir.path().join("r.sock");
        let relayed = relay(&sock, address);
        let out = run(
            Command::new(&cli)
                .arg("-regtest")
                .arg(format!("-datadir={}", dir.path().display()))
                .arg(format!("-ipcconnect=unix:{}", sock.display()))
                .arg("getblockcount"),
            "bitcoin-cli",
        );
        assert_success(&out, &format!("bitcoin-cli against {name}"));
        sessions.push((*name, relayed.join().unwrap()));
    }
    let (_, peer) = &sessions[0];
    let (_, node) = &sessions[1];
    // The client's side is the same program doing the same thing: the same messages (sizes
    // differ with the length of its pid in the thread name), from makeThread on. Before that,
    // whether bitcoin-cli pipelines construct on the bootstrap answer or calls the imported Init
    // depends on whether the answer came back before its next write: timing, not the server.
    let kinds = |frames: &[Frame]| -> Vec<String> {
        let client = one_way(frames, true);
        let from = client
            .iter()
            .position(|f| f.what.contains("0xee5e37179ad9dc9d@0"))
            .unwrap_or(0);
        client[from..].iter().map(|f| f.what.clone()).collect()
    };
    assert_eq!(kinds(peer), kinds(node));
    // The server's side: the same answers, the same sizes (getblockcount's result is one digit
    // on both), with the node's per-call Releases of the callbackThread each after a Return.
    let answers = |frames: &[Frame]| -> (Vec<(String, usize)>, Vec<usize>) {
        let server = one_way(frames, false);
        let released_after: Vec<usize> = server
            .iter()
            .enumerate()
            .filter(|(_, f)| f.what.starts_with("release"))
            .map(|(i, _)| {
                server[..i]
                    .iter()
                    .filter(|f| f.what.starts_with("return"))
                    .count()
            })
            .collect();
        let rest = server
            .iter()
            .filter(|f| !f.what.starts_with("release"))
            .map(|f| {
                // The answer id follows the client's question id (see above): not compared.
                let what = match f.what.strip_prefix("return a") {
                    Some(rest) => format!(
                        "return {}",
                        rest.trim_start_matches(|c: char| c.is_ascii_digit())
                    ),
                    None => f.what.clone(),
                };
                (what, f.bytes)
            })
            .collect();
        (rest, released_after)
    };
    let (peer_answers, peer_releases) = answers(peer);
    let (node_answers, node_releases) = answers(node);
    assert_eq!(peer_answers, node_answers);
    // The same references released: capnp-rust may fold two Releases of one export into one
    // message ("release 1x2") when both drops come before it writes, so count references.
    let refs = |frames: &[Frame]| -> u32 {
        one_way(frames, false)
            .iter()
            .filter_map(|f| f.what.strip_prefix("release "))
            .filter_map(|r| r.split_once('x').and_then(|(_, n)| n.parse::<u32>().ok()))
            .sum()
    };
    assert_eq!(refs(peer), refs(node), "{peer:#?}\n{node:#?}");
    assert!(!node_releases.is_empty() && !peer_releases.is_empty());
    // The first Release (of makeRpc's callbackThread) comes after that call's Return, and every
    // one after makeRpc's.
    for after in &peer_releases {
        assert!(*after >= 4, "{peer:#?}");
    }
}
