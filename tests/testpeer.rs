//! The test peer's binary, which the tests and benches run as a separate program (it is a dev
//! tool, never part of mpspy). Shared by the integration tests and `benches/echo_relay.rs`.
//!
//! Cargo builds a package's own binaries for its tests, not those of other packages, so
//! `mpspy-testpeer` is there only when the workspace was built (`cargo test --workspace` does).
//! On unix the first use therefore runs `cargo build -p mpspy-testpeer` for this build's
//! profile, target and target directory: a no-op after `cargo test --workspace`, and what keeps
//! `cargo test -p mpspy` from running a missing or stale test peer. Under Wine (the Windows
//! cross-test) there is no cargo to run; `cargo test --workspace --target …` has built it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The test peer built alongside this mpspy.
pub(crate) fn testpeer() -> PathBuf {
    static PEER: OnceLock<PathBuf> = OnceLock::new();
    PEER.get_or_init(|| {
        let mpspy = Path::new(env!("CARGO_BIN_EXE_mpspy"));
        let file = format!(
            "{}{}",
            mpspy_testpeer::EXE_NAME,
            std::env::consts::EXE_SUFFIX
        );
        let peer = mpspy.with_file_name(file);
        #[cfg(unix)]
        build(mpspy, &peer);
        assert!(
            peer.is_file(),
            "{} is missing: run `cargo build -p mpspy-testpeer` (`cargo test --workspace` builds it)",
            peer.display()
        );
        peer
    })
    .clone()
}

/// `cargo build -p mpspy-testpeer` into the directory `mpspy` was built in.
#[cfg(unix)]
fn build(mpspy: &Path, peer: &Path) {
    use std::process::Command;

    // `<target dir>/[<triple>/]<profile>/mpspy`; the target dir is where cargo put this test's
    // scratch directory.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory");
    let profile_dir = mpspy.parent().expect("mpspy is in a profile directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "mpspy-testpeer", "--bin"])
        .arg(mpspy_testpeer::EXE_NAME)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    if let Some(triple) = profile_dir
        .parent()
        .filter(|p| *p != target_dir)
        .and_then(Path::file_name)
    {
        cmd.arg("--target").arg(triple);
    }
    match cmd.output() {
        Ok(out) => assert!(
            out.status.success(),
            "building the test peer ({cmd:?}) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        // No cargo to run (the tests were started some other way): a peer that is there is used.
        Err(e) if peer.is_file() => {
            eprintln!("note: not rebuilding {}: {e}", peer.display());
        }
        Err(e) => panic!(
            "{} is missing and cargo could not be run to build it: {e}",
            peer.display()
        ),
    }
}
