//! Helpers shared by the integration tests: run the real binary, read its JSON Lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub(crate) fn mpspy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mpspy"))
}

/// `mpspy call ARGS…`: exit code, stdout, stderr.
pub(crate) fn call(args: &[&str]) -> (Option<i32>, String, String) {
    let out = mpspy().arg("call").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("mpspy runs");
    assert!(
        out.status.success(),
        "mpspy failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Parses JSON Lines output, checking the envelope every line must have.
pub(crate) fn json_lines(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("utf-8 output");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["v"], 1, "versioned envelope: {l}");
            assert!(
                v["type"].is_string() && v["seq"].is_u64() && v["t_ns"].is_u64(),
                "{l}"
            );
            v
        })
        .collect()
}

/// Decodes a capture pair with `mpspy decode --json` and returns the events.
pub(crate) fn decode_json(c2s: &str, s2c: &str, extra: &[&str]) -> Vec<Value> {
    let out = run_ok(
        mpspy()
            .arg("decode")
            .arg(fixture(c2s))
            .arg(fixture(s2c))
            .arg("--json")
            .args(extra),
    );
    json_lines(&out.stdout)
}

pub(crate) fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// `Interface.method` of an event's data.
pub(crate) fn method_of(e: &Value) -> String {
    format!(
        "{}.{}",
        e["data"]["interface"].as_str().unwrap_or("?"),
        e["data"]["method"].as_str().unwrap_or("?")
    )
}

/// Events of type `ty` (`call`, `return`) for `Interface.method`, in order.
pub(crate) fn named<'a>(events: &'a [Value], ty: &str, method: &str) -> Vec<&'a Value> {
    of_type(events, ty)
        .into_iter()
        .filter(|e| method_of(e) == method)
        .collect()
}

pub(crate) fn calls_of<'a>(events: &'a [Value], method: &str) -> Vec<&'a Value> {
    named(events, "call", method)
}

pub(crate) fn returns_of<'a>(events: &'a [Value], method: &str) -> Vec<&'a Value> {
    named(events, "return", method)
}

/// `Interface.method` of the calls on connection `conn`, in order.
pub(crate) fn calls_on(events: &[Value], conn: &Value) -> Vec<String> {
    let mine: Vec<Value> = events
        .iter()
        .filter(|e| e["conn"] == *conn)
        .cloned()
        .collect();
    call_names(&mine)
}

/// The calls of a spawned test peer's session as its parent drives it.
pub(crate) const SPAWNED_SESSION: [&str; 5] = [
    "Init.construct",
    "ThreadMap.makeThread",
    "Init.makeEcho",
    "Echo.echo",
    "Echo.destroy",
];

/// `Interface.method` of call events, in order.
pub(crate) fn call_names(events: &[Value]) -> Vec<String> {
    of_type(events, "call").into_iter().map(method_of).collect()
}

/// Message events per direction (every frame yields exactly one of these).
pub(crate) fn message_count(events: &[Value], dir: &str) -> usize {
    const MESSAGES: [&str; 10] = [
        "bootstrap",
        "call",
        "return",
        "finish",
        "resolve",
        "release",
        "disembargo",
        "abort",
        "unimplemented",
        "other_message",
    ];
    events
        .iter()
        .filter(|e| e["dir"] == dir && MESSAGES.contains(&e["type"].as_str().unwrap()))
        .count()
}

pub(crate) fn frames_in(rel: &str) -> usize {
    let b = std::fs::read(fixture(rel)).unwrap();
    let (mut at, mut n) = (0usize, 0usize);
    while at < b.len() {
        let count = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize + 1;
        let words: usize = (0..count)
            .map(|i| {
                u32::from_le_bytes(b[at + 4 + 4 * i..at + 8 + 4 * i].try_into().unwrap()) as usize
            })
            .sum();
        at += (4 + 4 * count).div_ceil(8) * 8 + 8 * words;
        n += 1;
    }
    n
}
