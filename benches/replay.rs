//! `mpspy replay` and `mpspy stats` on a large recording: throughput of the whole path (read the
//! pcapng, decode, pair, and write JSON Lines or text lines) and peak memory, which must stay
//! flat however large the file is (replay and stats read it as a stream).
//!
//! The recording is generated: the shipped demo session with its `Echo.echo` call repeated
//! (`mpspy_capture::synth`), `REPLAY_BENCH_MB` megabytes of it (default 1024). Each command runs
//! in a process of its own whose peak RSS is read from `getrusage` after it ends; its output
//! goes through a pipe and is counted, not kept. Run with `cargo bench --bench replay`;
//! `REPLAY_BENCH_FILE=PATH` keeps the recording there.

#[cfg(unix)]
fn main() {
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use mpspy_capture::record::Recorder;
    use mpspy_capture::synth;
    use mpspy_capture::tap::Tapped;

    // `cargo bench` passes --bench; a test run (`cargo test --benches`) passes nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // The measuring process of one row: runs mpspy with our stdout and reports its peak RSS
    // (of its only child, so nothing else is mixed in) on stderr.
    if let Some(args) = std::env::var_os("REPLAY_BENCH_CHILD") {
        let args: Vec<String> = args
            .to_string_lossy()
            .split('\x1f')
            .map(String::from)
            .collect();
        let status = Command::new(&args[0])
            .args(&args[1..])
            .stderr(Stdio::null())
            .status()
            .expect("mpspy starts");
        let rss_kb = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
            .map(|u| u.max_rss())
            .unwrap_or(0);
        eprintln!("{rss_kb}");
        std::process::exit(status.code().unwrap_or(1));
    }
    let mb: u64 = std::env::var("REPLAY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mpspy = PathBuf::from(env!("CARGO_BIN_EXE_mpspy"));
    let dir = std::env::temp_dir().join(format!("mpspy-replay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // REPLAY_BENCH_FILE keeps the generated recording there (to profile a replay of it).
    let keep = std::env::var_os("REPLAY_BENCH_FILE").map(PathBuf::from);
    let file = keep.clone().unwrap_or_else(|| dir.join("long.pcapng"));

    // About 150 bytes of file per frame: size the session, then write it.
    let started = Instant::now();
    let calls = (mb << 20) / 150 / synth::frames_per_call() as u64;
    let mut rec = Recorder::create(&file, "auto", 0).expect("creates the recording");
    let mut frames = 0u64;
    for item in synth::echo_session(calls as usize) {
        frames += u64::from(matches!(item, Tapped::Frame { .. }));
        rec.write(&item).expect("writes");
    }
    rec.finish(0, &Default::default()).expect("finishes");
    drop(rec);
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "recording: {:.0} MB, {frames} frames, {} echo calls (written in {:.1} s)",
        size as f64 / 1e6,
        calls + 2,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<34} {:>8} {:>12} {:>12} {:>10}",
        "command", "seconds", "frames/s", "lines/s", "peak RSS"
    );

    let run = |label: &str, args: &[&str]| {
        let started = Instant::now();
        let child_args: Vec<String> = std::iter::once(mpspy.display().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .chain(std::iter::once(file.display().to_string()))
            .collect();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("REPLAY_BENCH_CHILD", child_args.join("\x1f"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the measuring process starts");
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut lines = 0u64;
        loop {
            let n = out.read(&mut buf).expect("reads");
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        let mut report = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut report)
            .unwrap();
        let status = child.wait().expect("waits");
        let secs = started.elapsed().as_secs_f64();
        assert!(status.success(), "{label}: {status}");
        let rss_kb: u64 = report.trim().parse().unwrap_or(0);
        println!(
            "{label:<34} {secs:>8.2} {:>12.0} {:>12.0} {:>7.1} MiB",
            frames as f64 / secs,
            lines as f64 / secs,
            rss_kb as f64 / 1024.0
        );
    };
    run("mpspy stats FILE", &["stats"]);
    run("mpspy replay --no-tui FILE (text)", &["replay", "--no-tui"]);
    run("mpspy replay --json FILE", &["replay", "--json"]);
    if keep.is_none() {
        let _ = std::fs::remove_file(&file);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(unix))]
fn main() {
    eprintln!("the replay bench runs on unix only (getrusage)");
}
