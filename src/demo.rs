//! `mpspy demo`: mpspy wraps the test peer (a stand-in for bitcoin-node on the wire) while the
//! test peer's libmultiprocess-style client drives traffic through it. No Bitcoin Core needed.
//!
//! The test peer is a separate program, a dev tool that is not part of mpspy: the workspace
//! builds it next to mpspy (`cargo build --release --workspace`), and the demo looks for it
//! there first.

#[cfg(unix)]
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[cfg(unix)]
use anyhow::Context;
use anyhow::Result;

use crate::cli;

/// The test peer's program name.
#[cfg(unix)]
const TESTPEER: &str = "mpspy-testpeer";

/// The test peer's file in the first of `dirs` that has it.
#[cfg(unix)]
fn find_in(file: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        // An empty PATH entry means the current directory to a shell; not to us.
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(file))
        .find(|p| p.is_file())
}

/// Where the demo finds the test peer: next to mpspy's own executable (where `cargo build
/// --workspace` puts it), else on `PATH`. With the platform's suffix, so that it holds when the
/// demo runs on Windows too.
#[cfg(unix)]
fn find_testpeer() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding mpspy's own executable")?;
    let own_dir = exe.parent().map(Path::to_path_buf);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let file = format!("{TESTPEER}{}", std::env::consts::EXE_SUFFIX);
    let dirs = own_dir
        .clone()
        .into_iter()
        .chain(std::env::split_paths(&path));
    find_in(&file, dirs).with_context(|| {
        format!(
            "the demo runs the test peer, {file}, which is neither next to mpspy ({}) nor on \
             PATH; build it with `cargo build --release -p mpspy-testpeer` (or `cargo build \
             --release --workspace`)",
            own_dir.unwrap_or_default().display()
        )
    })
}

#[cfg(unix)]
pub(crate) fn demo(args: &cli::DemoArgs) -> Result<ExitCode> {
    use std::process::Command;

    let peer = find_testpeer()?;
    let dir = std::env::temp_dir().join(format!("mpspy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socket = dir.join("node.sock");
    let run = cli::RunArgs {
        json: args.json.then(|| "-".to_string()),
        no_tui: args.no_tui,
        record: args.record.clone(),
        trace_out: None,
        otlp: None,
        quiet: false,
        log: None,
        no_bind: true,
        no_spawn_shim: false,
        check: false,
        fail_on: mpspy_schema::lint::Severity::Warning,
        metrics: None,
        inject: Vec::new(),
        schema: cli::SchemaArgs::default(),
        program: vec![
            peer.display().to_string(),
            format!("-ipcbind=unix:{}", socket.display()),
        ],
    };
    let client_socket = socket.clone();
    let hook: crate::live::AfterStart = Box::new(move |pid| {
        std::thread::spawn(move || {
            let status = Command::new(&peer)
                .arg("client")
                .arg(format!("unix:{}", client_socket.display()))
                .args(["--echo", "hello from the demo", "--count", "3", "--mining"])
                .args(["--rpc", "getblockcount"])
                .stdout(std::process::Stdio::null())
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("mpspy demo: the client failed: {status:?}");
            }
            // The session is over: stop the peer the way a user would.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        });
    });
    let code = crate::live::run_with(&run, Some(hook));
    let _ = std::fs::remove_dir_all(&dir);
    code
}

#[cfg(not(unix))]
pub(crate) fn demo(_args: &cli::DemoArgs) -> Result<ExitCode> {
    // The test peer listens on unix sockets only.
    anyhow::bail!("the live demo needs unix sockets; try `mpspy decode` on the files in samples/")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_test_peer_is_found_in_the_first_directory_that_has_it() {
        let base = std::env::temp_dir().join(format!("mpspy-find-{}", std::process::id()));
        let (a, b, c) = (base.join("a"), base.join("b"), base.join("c"));
        for d in [&a, &b, &c] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(b.join("peer"), "").unwrap();
        std::fs::write(c.join("peer"), "").unwrap();
        // A directory of that name is not the program.
        std::fs::create_dir_all(a.join("peer")).unwrap();
        let dirs = || vec![PathBuf::new(), a.clone(), b.clone(), c.clone()];
        assert_eq!(find_in("peer", dirs()), Some(b.join("peer")));
        assert_eq!(find_in("other", dirs()), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
