//! The real programs mpspy exists for (Bitcoin Core's `bitcoin-node`, `bitcoin-cli`, `bitcoin`,
//! `bitcoind`, and the libmultiprocess example `mpexample` with its children), for the tests that
//! check mpspy against them.
//!
//! They are found through `MPSPY_PEERS_DIR` (a directory holding the binaries), so anyone can
//! point the tests at their own build. When it is unset the tests that need them say so on
//! stderr and pass without running; with `MPSPY_REQUIRE_PEERS=1` (CI) they fail instead, so a
//! CI run that cannot find the binaries is red, not silently green.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The real peer binary `name` (`let Some(node) = peer("bitcoin-node") else { return };`), or
/// `None` (with a note on stderr) when the tests that
/// need `name` must skip. Panics when `MPSPY_REQUIRE_PEERS=1` and the binary is not there.
pub(crate) fn peer(name: &str) -> Option<PathBuf> {
    let require = std::env::var_os("MPSPY_REQUIRE_PEERS").is_some_and(|v| v == "1");
    let dir = std::env::var_os("MPSPY_PEERS_DIR").filter(|d| !d.is_empty());
    let why = match dir {
        Some(d) => {
            // Relative to the workspace root, as `.ci/run` gives it.
            let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(d);
            let p = d.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
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
    // Straight to stderr, not through eprintln!: the test harness captures that for passing
    // tests, and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "note: skipping a real-peer test ({why}); set MPSPY_PEERS_DIR to a directory with {name}"
    );
    None
}

/// A fresh, empty directory for one test (a datadir, a scratch cwd), removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        // Short: socket paths under it must fit sun_path (108 bytes).
        let dir = std::env::temp_dir().join(format!(
            "mp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills a child at the end of a test that failed halfway, so no node outlives the suite.
pub(crate) struct KillOnDrop(pub(crate) Option<Child>);

impl KillOnDrop {
    pub(crate) fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned")
    }

    /// Takes the child back (the test waits for it itself).
    pub(crate) fn take(&mut self) -> Child {
        self.0.take().expect("child still owned")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts connections on the unix socket at `path`.
#[cfg(unix)]
pub(crate) fn accepts(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// The usual arguments of a throwaway regtest node in `datadir`: no P2P, no RPC port (parallel
/// nodes would clash on it; bitcoin-cli reaches the node over IPC), no console log on stdout
/// (tests that compare output turn it back on).
pub(crate) fn regtest_args(datadir: &Path) -> Vec<String> {
    vec![
        "-regtest".into(),
        format!("-datadir={}", datadir.display()),
        "-listen=0".into(),
        "-server=0".into(),
        "-printtoconsole=0".into(),
    ]
}

/// Waits until the node in `datadir` (regtest) has finished loading: before that its RPC
/// methods, over IPC too, answer "Loading…" (-28).
pub(crate) fn wait_node_ready(datadir: &Path) {
    wait_for(
        "the node to finish loading",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(datadir.join("regtest/debug.log"))
                .is_ok_and(|l| l.contains("init message: Done loading"))
        },
    );
}

/// `bitcoin-cli -regtest -datadir=D -ipcconnect=unix ARGS…`, with its output.
pub(crate) fn cli(cli: &Path, datadir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(cli)
        .arg("-regtest")
        .arg(format!("-datadir={}", datadir.display()))
        .arg("-ipcconnect=unix")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("bitcoin-cli runs")
}
