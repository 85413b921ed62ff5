//! Echo round trips against the test peer: direct, through `mpspy --`, through `mpspy --` with
//! JSON and a recording, and through a plain relay (socat, where installed). Run with
//! `cargo bench --bench echo_relay`; `ECHO_ROUND_TRIPS` sets the count (default 20000).

// Unix sockets and `kill` throughout: the bench is unix-only (a stub `main` elsewhere).
#[cfg(unix)]
#[path = "../tests/testpeer.rs"]
mod testpeer;

#[cfg(unix)]
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::{Child, Command, Stdio};
#[cfg(unix)]
use std::time::{Duration, Instant};

#[cfg(unix)]
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(unix)]
struct Killed(Child);

#[cfg(unix)]
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
fn round_trips(peer: &Path, socket: &Path, count: u32) -> String {
    let out = Command::new(peer)
        .arg("client")
        .arg(format!("unix:{}", socket.display()))
        .args([
            "--echo",
            "benchmark payload",
            "--count",
            &count.to_string(),
            "--timings",
        ])
        .output()
        .expect("client runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("echo_round_trips"))
        .expect("timings line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let us = |k: &str| v[k].as_u64().unwrap() as f64 / 1000.0;
    format!(
        "{:>8} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
        v["echo_round_trips"],
        us("p50_ns"),
        us("p90_ns"),
        us("p99_ns"),
        us("max_ns")
    )
}

#[cfg(unix)]
fn main() {
    // `cargo bench` passes --bench; a test run (`cargo test --benches`) passes nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count: u32 = std::env::var("ECHO_ROUND_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mpspy = PathBuf::from(env!("CARGO_BIN_EXE_mpspy"));
    let dir = PathBuf::from(format!("/tmp/mpspy-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let peer = testpeer::testpeer();

    let direct = dir.join("direct.sock");
    let _server = Killed(
        Command::new(&peer)
            .arg(format!("-ipcbind=unix:{}", direct.display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&direct);
    println!(
        "echo round trips, µs       {:>8} {:>9} {:>9} {:>9} {:>10}",
        "calls", "p50", "p90", "p99", "max"
    );
    println!(
        "direct                     {}",
        round_trips(&peer, &direct, count)
    );

    let wrapped = |name: &str, extra: &[&str]| {
        let sock = dir.join(format!("{name}.sock"));
        let mut cmd = Command::new(&mpspy);
        cmd.arg("--quiet")
            .args(extra)
            .arg("--")
            .arg(&peer)
            .arg(format!("-ipcbind=unix:{}", sock.display()));
        let child = Killed(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for(&sock);
        let row = round_trips(&peer, &sock, count);
        drop(child);
        row
    };
    println!("through mpspy              {}", wrapped("mpspy", &[]));
    let json = dir.join("events.jsonl").display().to_string();
    let rec = dir.join("session.pcapng").display().to_string();
    println!(
        "mpspy --json --record      {}",
        wrapped("full", &["--json", &json, "--record", &rec])
    );

    if Command::new("socat").arg("-V").output().is_ok() {
        let sock = dir.join("socat.sock");
        let _socat = Killed(
            Command::new("socat")
                .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
                .arg(format!("UNIX-CONNECT:{}", direct.display()))
                .spawn()
                .unwrap(),
        );
        wait_for(&sock);
        println!(
            "through socat              {}",
            round_trips(&peer, &sock, count)
        );
    } else {
        println!("through socat              (socat not installed)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(unix))]
fn main() {
    eprintln!("echo_relay runs on unix only (unix sockets, kill)");
}
