//! The Chrome / Perfetto timeline (`mpspy export --format chrome-trace`, `--trace-out`): parsed
//! back and checked against the same session's events: every call has its slice, every lane's
//! slices nest, async slices pair up, flow arrows start inside a slice and end at a callback.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// A trace's event list (the JSON array form).
pub(crate) fn trace_in(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    match serde_json::from_str(&text) {
        Ok(Value::Array(v)) => v,
        other => panic!(
            "{}: not a JSON array of trace events: {other:?}",
            path.display()
        ),
    }
}

/// Trace timestamps are microseconds with the nanoseconds as the fraction.
fn ns(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 1000.0).round() as i64
}

/// Checks `trace` against the `events` of the same session; returns the number of flow arrows.
pub(crate) fn assert_trace(trace: &[Value], events: &[Value]) -> usize {
    let ph = |e: &Value| e["ph"].as_str().unwrap().to_string();
    // Every process and track in use is named.
    let named_pids: HashSet<i64> = trace
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    let named_tids: HashSet<(i64, i64)> = trace
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap()))
        .collect();
    for e in trace.iter().filter(|e| e["ph"] != "M") {
        let (pid, tid) = (e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap());
        assert!(named_pids.contains(&pid), "unnamed process: {e}");
        assert!(named_tids.contains(&(pid, tid)), "unnamed track: {e}");
    }

    // Every call (and bootstrap) has exactly one slice, found by connection and question.
    let calls = of_type(events, "call").len() + of_type(events, "bootstrap").len();
    let slices: Vec<&Value> = trace
        .iter()
        .filter(|e| e["cat"] == "call" && (e["ph"] == "X" || e["ph"] == "b"))
        .collect();
    assert_eq!(slices.len(), calls, "a slice per call");
    for s in &slices {
        assert!(s["args"]["outcome"].is_string(), "{s}");
        assert!(s["args"]["question"].is_u64(), "{s}");
    }

    // Async slices pair up.
    let mut begun: HashMap<String, i64> = HashMap::new();
    for e in trace.iter().filter(|e| e["cat"] == "call") {
        match ph(e).as_str() {
            "b" => assert!(begun.insert(e["id"].to_string(), ns(&e["ts"])).is_none()),
            "e" => {
                let start = begun.remove(&e["id"].to_string()).expect("e without b");
                assert!(ns(&e["ts"]) >= start);
            }
            _ => {}
        }
    }
    assert!(begun.is_empty(), "unended async slices: {begun:?}");

    // On each track the X slices nest: sorted by start (longest first on ties), each one lies
    // inside the innermost slice still open at its start, or starts after it ended.
    let mut by_track: HashMap<(i64, i64), Vec<(i64, i64)>> = HashMap::new();
    for e in trace.iter().filter(|e| e["ph"] == "X") {
        let (s, d) = (ns(&e["ts"]), ns(&e["dur"]));
        assert!(d >= 0, "{e}");
        by_track
            .entry((e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap()))
            .or_default()
            .push((s, s + d));
    }
    for (track, mut v) in by_track.clone() {
        v.sort_by_key(|&(s, e)| (s, -e));
        let mut stack: Vec<(i64, i64)> = Vec::new();
        for (s, e) in v {
            while stack.last().is_some_and(|&(_, end)| end <= s) {
                stack.pop();
            }
            if let Some(&(ps, pe)) = stack.last() {
                assert!(
                    ps <= s && e <= pe,
                    "track {track:?}: [{s}, {e}] overlaps [{ps}, {pe}] without nesting"
                );
            }
            stack.push((s, e));
        }
    }

    // Flow arrows: each start has its finish; the start lies inside a slice on its track.
    let starts: Vec<&Value> = trace.iter().filter(|e| e["ph"] == "s").collect();
    let finishes: HashSet<String> = trace
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| e["id"].to_string())
        .collect();
    for s in &starts {
        assert!(
            finishes.contains(&s["id"].to_string()),
            "flow without end: {s}"
        );
        let track = (s["pid"].as_i64().unwrap(), s["tid"].as_i64().unwrap());
        let t = ns(&s["ts"]);
        assert!(
            by_track
                .get(&track)
                .is_some_and(|v| v.iter().any(|&(a, b)| a <= t && t <= b)),
            "flow start outside any slice of its track: {s}"
        );
    }
    assert_eq!(starts.len(), finishes.len());
    starts.len()
}

/// The demo recording exported, and the same through `replay --trace-out`: byte for byte the
/// same file, and a valid timeline of the session.
#[test]
fn export_writes_a_timeline_of_every_call_and_replay_writes_the_same() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let dir = std::env::temp_dir().join(format!("mpspy-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exported = dir.join("export.json");
    let replayed = dir.join("replay.json");
    run_ok(
        mpspy()
            .arg("export")
            .arg(&demo)
            .args(["--format", "chrome-trace", "-o"])
            .arg(&exported),
    );
    let out = run_ok(
        mpspy()
            .arg("replay")
            .arg(&demo)
            .arg("--json")
            .arg("--trace-out")
            .arg(&replayed),
    );
    let events = json_lines(&out.stdout);
    let trace = trace_in(&exported);
    assert_trace(&trace, &events);
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(&replayed).unwrap(),
        "export and replay --trace-out agree"
    );
    // The demo's processes by name, and its exception as a slice's outcome.
    assert!(trace.iter().any(|e| {
        e["name"] == "process_name"
            && e["args"]["name"]
                .as_str()
                .unwrap()
                .contains("mpspy-testpeer")
    }),);
    assert!(trace.iter().any(|e| e["name"] == "Mining.checkBlock"
        && e["args"]["outcome"] == "exception"
        && e["args"]["exception"].is_string()));
    assert!(
        trace
            .iter()
            .any(|e| e["ph"] == "i" && e["name"] == "disconnect")
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A file that is not a recording is named.
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let out = mpspy().arg("export").arg(&readme).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("README.md: not a recording"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
