//! What a relay costs: `Echo.echo` round trips direct, through `mpspy --` (decoding only), through
//! `mpspy -- --json --record`, and through socat (where installed), against the test peer and,
//! when `MPSPY_PEERS_DIR` names the real binaries, a real `bitcoin-node`; with an 11-byte and a
//! 40 KiB payload.
//!
//! The client is `mpspy bench` (the product's own libmultiprocess client) in a process of its
//! own. For each relay the table gives the client's round-trip percentiles and the relay
//! process's CPU per call: its utime+stime (all threads, and reaped children for socat's
//! per-connection fork) over the client's run, divided by the calls made. Run with
//! `cargo bench --bench echo_relay`; `ECHO_ROUND_TRIPS` sets the measured calls per row
//! (default 20000).

// Unix sockets, /proc and `kill` throughout: the bench is unix-only (a stub `main` elsewhere).
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A background process, stopped with SIGTERM (and waited for) when dropped.
#[cfg(unix)]
struct Killed(Child);

#[cfg(unix)]
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// CPU time of `pid` in seconds: user + system of all its threads (exited ones too), plus its
/// reaped children (socat forks a process per connection and reaps it).
#[cfg(unix)]
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 of the line: 11-14 after the name.
    let ticks: u64 = f.get(11..15).map_or(0, |s| s.iter().sum());
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 / hz
}

/// One row: `mpspy bench` against `socket`, and the CPU that `relay` (if any) spent meanwhile.
#[cfg(unix)]
fn row(mpspy: &Path, socket: &Path, count: u32, payload: &str, relay: Option<u32>) -> String {
    const WARMUP: u32 = 200;
    let before = relay.map(cpu_seconds);
    let out = Command::new(mpspy)
        .args(["bench", &format!("unix:{}", socket.display())])
        .args(["Init.makeEcho", "Echo.echo"])
        .arg(serde_json::json!({ "echo": payload }).to_string())
        .args(["--count", &count.to_string()])
        .args(["--warmup", &WARMUP.to_string(), "--json"])
        .output()
        .expect("mpspy bench runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // socat's per-connection process must have ended (and been reaped) to be counted.
    std::thread::sleep(Duration::from_millis(200));
    let cpu = relay.zip(before).map(|(pid, b)| cpu_seconds(pid) - b);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench --json");
    let us = |k: &str| v[k].as_u64().unwrap_or(0) as f64 / 1000.0;
    let per_call = cpu.map_or("-".to_string(), |c| {
        format!("{:.1}", c * 1e6 / f64::from(count + WARMUP))
    });
    format!(
        "{:>7} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>10}",
        v["count"],
        v["rate_per_s"].as_f64().unwrap_or(0.0),
        us("p50_ns"),
        us("p90_ns"),
        us("p99_ns"),
        per_call
    )
}

/// Starts a server listening on `socket`.
#[cfg(unix)]
type Server<'a> = &'a dyn Fn(&Path) -> Command;

#[cfg(unix)]
fn table(dir: &Path, mpspy: &Path, name: &str, server: Server<'_>, count: u32) {
    let direct = dir.join(format!("{name}-direct.sock"));
    let _server = Killed(
        server(&direct)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts"),
    );
    wait_for(&direct);
    let has_socat = Command::new("socat").arg("-V").output().is_ok();
    for (size, label, payload) in [
        ("small", "11 B", "hello world".to_string()),
        ("large", "40 KiB", "x".repeat(40 * 1024)),
    ] {
        println!(
            "\n{name}, Echo.echo {label}      {:>7} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "calls", "calls/s", "p50 µs", "p90 µs", "p99 µs", "CPU µs/call"
        );
        println!(
            "  direct                  {}",
            row(mpspy, &direct, count, &payload, None)
        );
        let wrapped = |tag: &str, extra: &[String]| {
            // A fresh path per row: a program leaves its socket behind when it stops.
            let sock = dir.join(format!("{name}-{size}-{tag}.sock"));
            let mut cmd = server(&sock);
            let program: Vec<_> = std::iter::once(cmd.get_program().to_owned())
                .chain(cmd.get_args().map(ToOwned::to_owned))
                .collect();
            cmd = Command::new(mpspy);
            cmd.arg("--quiet").args(extra).arg("--").args(program);
            let child = Killed(
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mpspy starts"),
            );
            wait_for(&sock);
            let pid = child.0.id();
            row(mpspy, &sock, count, &payload, Some(pid))
        };
        println!("  mpspy (decode)          {}", wrapped("mpspy", &[]));
        let json = dir.join("events.jsonl").display().to_string();
        let rec = dir.join("session.pcapng").display().to_string();
        println!(
            "  mpspy --json --record   {}",
            wrapped(
                "full",
                &["--json".into(), json, "--record".into(), rec.clone()]
            )
        );
        if has_socat {
            let sock = dir.join(format!("{name}-{size}-socat.sock"));
            let socat = Killed(
                Command::new("socat")
                    .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
                    .arg(format!("UNIX-CONNECT:{}", direct.display()))
                    // It reports the client's close as a broken pipe.
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("socat starts"),
            );
            wait_for(&sock);
            let pid = socat.0.id();
            println!(
                "  socat                   {}",
                row(mpspy, &sock, count, &payload, Some(pid))
            );
        } else {
            println!("  socat                   (not installed)");
        }
    }
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
    println!(
        "Round trips seen by `mpspy bench` (a separate process); CPU = the relay's utime+stime per call"
    );

    let peer = testpeer::testpeer();
    let testpeer = |sock: &Path| {
        let mut c = Command::new(&peer);
        c.arg(format!("-ipcbind=unix:{}", sock.display()));
        c
    };
    table(&dir, &mpspy, "test peer", &testpeer, count);

    match std::env::var_os("MPSPY_PEERS_DIR") {
        Some(peers) => {
            let node = PathBuf::from(peers).join("bitcoin-node");
            let real = |sock: &Path| {
                // A datadir per node: the direct one runs beside each wrapped one.
                let datadir = sock.with_extension("datadir");
                std::fs::create_dir_all(&datadir).unwrap();
                let mut c = Command::new(&node);
                c.args(["-regtest", "-listen=0", "-server=0", "-printtoconsole=0"])
                    .arg(format!("-datadir={}", datadir.display()))
                    .arg(format!("-ipcbind=unix:{}", sock.display()));
                c
            };
            table(&dir, &mpspy, "bitcoin-node", &real, count);
        }
        None => println!("\n(set MPSPY_PEERS_DIR to a directory with bitcoin-node for its rows)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(unix))]
fn main() {
    eprintln!("echo_relay runs on unix only (unix sockets, /proc, kill)");
}
