//! The terminal UI driven through a real pseudo-terminal: the real binary, the real test peer
//! and its client, keys typed into the terminal, and the screen read back through a vt100
//! emulator.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};

use crate::common::{mpspy, run_ok};
use crate::live::TestDir;
use crate::testpeer::testpeer;

const ROWS: u16 = 40;
const COLS: u16 = 140;

/// A program running on a pseudo-terminal, with its screen kept by an emulator.
struct Pty {
    child: Child,
    master: File,
    screen: Arc<Mutex<vt100::Parser>>,
}

/// A test that fails halfway leaves no mpspy behind.
impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        let size = Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm-256color");
        let child = cmd.spawn().expect("mpspy starts");
        let master = File::from(pty.master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let mut reader = master.try_clone().unwrap();
        let sink = screen.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends with EIO once every holder of the slave side has exited.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().process(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            screen,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows every one of `want`.
    fn wait_for(&self, want: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.contents();
            if want.iter().all(|w| s.contains(w)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {want:?}:\n{s}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
        // One frame for the UI to answer.
        thread::sleep(Duration::from_millis(250));
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("mpspy did not exit:\n{}", self.contents());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The row of the screen that contains `needle`.
fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}:\n{screen}"))
}

#[test]
fn demo_on_a_terminal_shows_calls_methods_and_the_end() {
    // The demo runs the test peer found next to mpspy: make sure it is built.
    testpeer();
    let mut pty = Pty::spawn({
        let mut c = mpspy();
        c.arg("demo");
        c
    });
    let screen = pty.wait_for(&["Echo.echo", "Rpc.executeRpc", "exited with status"]);
    // Calls: one row per call with its return folded in.
    let echo = line_with(&screen, "Echo.echo");
    assert!(echo.contains(" ok"), "{echo}");
    assert!(line_with(&screen, "Mining.checkBlock").contains("exception"));
    assert!(screen.contains("1 Calls"));
    // The detail pane shows the newest call's params and results.
    assert!(screen.contains("getblockcount"), "{screen}");
    // Methods: per-method counts.
    pty.keys("2");
    let screen = pty.wait_for(&["long-poll"]);
    let row = line_with(&screen, "Echo.echo ");
    assert!(row.split_whitespace().nth(1) == Some("3"), "{row}");
    // Capabilities; thread lanes (the test peer runs every call on its main thread).
    pty.keys("3");
    pty.wait_for(&["connections", "capabilities"]);
    pty.keys("5");
    let screen = pty.wait_for(&["thread lanes from Proxy.Context"]);
    // The one lane is the client's main thread, named the libmultiprocess way:
    // `mpspy-testpeer-PID/mpspy-testpeer-PID` (cut to the column's width).
    assert!(
        line_with(&screen, "#1   mpspy-testpeer-").contains("idle"),
        "{screen}"
    );
    pty.keys("q");
    let status = pty.wait_exit();
    assert!(status.success(), "{status}");
    // The terminal is given back and the summary printed after the UI closed.
    pty.wait_for(&["per-method summary"]);
}

#[test]
fn replay_on_a_terminal_filters_and_searches() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let mut pty = Pty::spawn({
        let mut c = mpspy();
        c.arg("replay").arg(&sample);
        c
    });
    let screen = pty.wait_for(&["end of recording", "Mining.getTip"]);
    assert!(screen.contains("replay"), "{screen}");
    pty.keys("f");
    pty.keys("method:Echo.* status:ok\r");
    let screen = pty.wait_for(&["filter: method:Echo.* status:ok"]);
    let list: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.starts_with("time"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(!list.is_empty(), "{screen}");
    assert!(
        list.iter()
            .all(|l| l.contains("Echo.echo") || l.contains("Echo.destroy")),
        "{screen}"
    );
    // A bad filter names the term and keeps the old one.
    pty.keys("f");
    pty.keys(" latency>>5\r");
    pty.wait_for(&["latency>>5", "not a duration"]);
    pty.keys("\x1b");
    // Search jumps to a call and the detail shows it.
    pty.keys("f");
    pty.keys(&"\x7f".repeat(60));
    pty.keys("\r/getblockheader\r");
    pty.wait_for(&["call #", "BlockTemplate.getBlockHeader  q"]);
    pty.keys("?");
    pty.wait_for(&["any key closes this help"]);
    pty.keys("x");
    pty.keys("q");
    assert!(pty.wait_exit().success());
}

#[test]
fn ctrl_c_interrupts_the_program_and_the_ui_stays_until_q() {
    let dir = TestDir::new("tui-ctrlc");
    let socket = dir.path("node.sock");
    let mut pty = Pty::spawn({
        let mut c = mpspy();
        c.arg("--")
            .arg(testpeer())
            .arg(format!("-ipcbind=unix:{}", socket.display()));
        c
    });
    // Program output lands in the log pane, not across the screen.
    pty.keys("4");
    pty.wait_for(&["out   Listening for IPC requests"]);
    pty.keys("1");
    run_ok(
        Command::new(testpeer())
            .arg("client")
            .arg(format!("unix:{}", socket.display()))
            .args(["--echo", "via the tui", "--count", "4"]),
    );
    let screen = pty.wait_for(&["Echo.destroy"]);
    assert_eq!(screen.matches("Echo.echo").count(), 4, "{screen}");
    pty.keys("4");
    pty.wait_for(&["connection closed"]);
    // Ctrl-C is a key in raw mode: mpspy passes SIGINT to the program and keeps the screen.
    pty.keys("\x03");
    pty.wait_for(&["mpspy-testpeer exited", "interrupt sent"]);
    assert!(pty.child.try_wait().unwrap().is_none(), "mpspy left early");
    pty.keys("q");
    let status = pty.wait_exit();
    // The test peer exits 0 on SIGINT; mpspy exits with the program's status.
    assert!(status.success(), "{status}");
}

/// `mpspy attach` with the UI: the calls of a client through it show, Ctrl-C ends the session
/// (the node's socket is put back at once) and the UI stays until `q`; exit 0.
#[test]
fn attach_in_the_ui_shows_calls_and_ctrl_c_puts_the_socket_back() {
    let dir = TestDir::new("tui-attach");
    let socket = dir.path("node.sock");
    let node = Command::new(testpeer())
        .arg(format!("-ipcbind=unix:{}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _node = crate::peers::KillOnDrop(Some(node));
    crate::peers::wait_for("the test peer to listen", Duration::from_secs(30), || {
        crate::peers::accepts(&socket)
    });
    let moved = |socket: &std::path::Path| {
        std::fs::read_dir(socket.parent().unwrap())
            .unwrap()
            .any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".node.sock.mpspy-")
            })
    };
    let mut pty = Pty::spawn({
        let mut c = mpspy();
        c.arg("attach").arg(format!("unix:{}", socket.display()));
        c
    });
    crate::peers::wait_for("mpspy to attach", Duration::from_secs(30), || {
        moved(&socket)
    });
    run_ok(
        Command::new(testpeer())
            .arg("client")
            .arg(format!("unix:{}", socket.display()))
            .args(["--echo", "via attach", "--count", "2"]),
    );
    let screen = pty.wait_for(&["Echo.destroy"]);
    assert_eq!(screen.matches("Echo.echo").count(), 2, "{screen}");
    pty.keys("\x03");
    pty.wait_for(&["stopped from the UI"]);
    assert!(
        !moved(&socket),
        "put back while the UI still shows the session"
    );
    assert!(pty.child.try_wait().unwrap().is_none(), "mpspy left early");
    pty.keys("q");
    let status = pty.wait_exit();
    assert!(status.success(), "{status}");
    run_ok(
        Command::new(testpeer())
            .arg("client")
            .arg(format!("unix:{}", socket.display()))
            .args(["--echo", "direct"]),
    );
}

#[test]
fn a_pipe_gets_text_not_the_ui() {
    // stdout is a pipe here: the replay prints lines, with no escape sequences.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let out = run_ok(mpspy().arg("replay").arg(sample));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Echo.echo"));
    assert!(!text.contains('\x1b'), "escape sequences in piped output");
}
