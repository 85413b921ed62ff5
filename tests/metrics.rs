//! `--metrics ADDR`: the endpoint scraped over HTTP while a live session runs and after a
//! replay, each scrape parsed by the Prometheus project's own Python client
//! (tests/py/promparse.py: an implementation independent of the Rust crate that wrote it) and
//! compared with the same session's `--json` events.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::live::{TestDir, events_in, pycapnp, start_wrapped_peer, stop_ok, wait_for};
use crate::testpeer::testpeer;

/// The latency buckets docs/metrics.md promises, in seconds.
const BUCKETS: [f64; 16] = [
    1e-5,
    5e-5,
    1e-4,
    5e-4,
    1e-3,
    5e-3,
    1e-2,
    5e-2,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    f64::INFINITY,
];

/// Whether Python's `prometheus_client` is importable (.ci/run installs it next to pycapnp, and
/// CI sets MPSPY_REQUIRE_PYCAPNP, which makes its absence a failure).
fn prometheus_client() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("MPSPY_REQUIRE_PYCAPNP").is_some_and(|v| !v.is_empty()) {
        panic!(
            "MPSPY_REQUIRE_PYCAPNP is set but prometheus_client is not importable \
             (python3 -m pip install prometheus-client)"
        );
    }
    if !ok {
        eprintln!(
            "note: Python's prometheus_client missing; skipping (set MPSPY_REQUIRE_PYCAPNP=1 to fail instead)"
        );
    }
    ok
}

/// One HTTP/1.1 GET over a plain socket: status, content type and body.
fn get(addr: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = accept {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

/// One sample as the Python parser read it.
#[derive(Debug)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
#[derive(Debug)]
struct Scrape(Vec<Sample>);

impl Scrape {
    /// `GET /metrics` (OpenMetrics when `openmetrics`), checked and parsed by promparse.py.
    fn take(addr: &str, openmetrics: bool) -> Scrape {
        let accept = openmetrics.then_some("application/openmetrics-text; version=1.0.0");
        let (status, ctype, body) = get(addr, "/metrics", accept);
        assert_eq!(status, 200, "{body}");
        if openmetrics {
            assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        } else {
            assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        }
        let mut py = Command::new("python3");
        py.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/promparse.py"));
        if openmetrics {
            py.arg("--openmetrics");
        }
        let mut child = py
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the Prometheus parser rejects the scrape: {}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        Scrape(
            parsed
                .into_iter()
                .map(|s| Sample {
                    family: s["family"].as_str().unwrap().into(),
                    kind: s["type"].as_str().unwrap().into(),
                    name: s["name"].as_str().unwrap().into(),
                    labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                    value: s["value"].as_f64().unwrap_or(f64::INFINITY),
                })
                .collect(),
        )
    }

    /// The sample `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {self:#?}"))
    }

    /// The sum over every series of `name`.
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Every histogram has the documented buckets, cumulative, and +Inf equal to its count.
    fn check_histograms(&self) {
        // (family, labels but `le`) → (le, cumulative count) per bucket.
        type Labels = BTreeMap<String, String>;
        let mut series: HashMap<(String, Labels), Vec<(f64, f64)>> = HashMap::new();
        for s in self.0.iter().filter(|s| s.kind == "histogram") {
            if let Some(le) = s.labels.get("le") {
                assert_eq!(s.name, format!("{}_bucket", s.family));
                let mut labels = s.labels.clone();
                labels.remove("le");
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                series
                    .entry((s.family.clone(), labels))
                    .or_default()
                    .push((le, s.value));
            }
        }
        assert!(!series.is_empty(), "no histograms");
        for ((family, labels), mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
            assert_eq!(les, BUCKETS, "{family} {labels:?}");
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family} {labels:?} buckets are not cumulative: {buckets:?}"
            );
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = self.value(&format!("{family}_count"), &labels);
            assert_eq!(buckets.last().unwrap().1, count, "{family} {labels:?}");
        }
    }
}

/// The metrics of a finished session agree with its `--json` events: per-method calls, errors,
/// latencies, messages and frame bytes; nothing pending, alive or open.
fn assert_agrees_with_events(m: &Scrape, events: &[Value]) {
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    for c in of_type(events, "call") {
        *calls.entry(method_of(c)).or_default() += 1;
    }
    let bootstraps = of_type(events, "bootstrap").len() as u64;
    if bootstraps > 0 {
        calls.insert("bootstrap".into(), bootstraps);
    }
    assert!(!calls.is_empty());
    for (method, n) in &calls {
        assert_eq!(
            m.value("mpspy_calls_total", &[("method", method)]),
            *n as f64,
            "{method}"
        );
    }
    assert_eq!(
        m.sum("mpspy_calls_total"),
        calls.values().sum::<u64>() as f64
    );
    let returns = of_type(events, "return");
    let errors = returns
        .iter()
        .filter(|r| r["data"]["outcome"] == "exception")
        .count();
    assert_eq!(m.sum("mpspy_call_errors_total"), errors as f64);
    let timed: Vec<u64> = returns
        .iter()
        .filter_map(|r| r["data"]["latency_ns"].as_u64())
        .collect();
    assert_eq!(
        m.sum("mpspy_call_latency_seconds_count"),
        timed.len() as f64
    );
    let secs = timed.iter().map(|ns| *ns as f64 / 1e9).sum::<f64>();
    assert!(
        (m.sum("mpspy_call_latency_seconds_sum") - secs).abs() < 1e-6,
        "latency sum {} vs {secs}",
        m.sum("mpspy_call_latency_seconds_sum")
    );
    m.check_histograms();
    for dir in ["c2s", "s2c"] {
        for ty in [
            "bootstrap",
            "call",
            "return",
            "finish",
            "release",
            "resolve",
            "abort",
        ] {
            let of: Vec<&Value> = events
                .iter()
                .filter(|e| e["dir"] == dir && e["type"] == ty)
                .collect();
            let labels = [("dir", dir), ("type", ty)];
            assert_eq!(
                m.get("mpspy_messages_total", &labels).unwrap_or(0.0),
                of.len() as f64,
                "{dir} {ty}"
            );
            let bytes: u64 = of.iter().filter_map(|e| e["data"]["bytes"].as_u64()).sum();
            assert_eq!(
                m.get("mpspy_frame_bytes_total", &labels).unwrap_or(0.0),
                bytes as f64,
                "{dir} {ty}"
            );
        }
    }
    assert!(
        m.value(
            "mpspy_frame_bytes_total",
            &[("dir", "c2s"), ("type", "call")]
        ) > 0.0
    );
    assert!(
        m.value(
            "mpspy_frame_bytes_total",
            &[("dir", "s2c"), ("type", "return")]
        ) > 0.0
    );
    assert_eq!(
        m.sum("mpspy_pending_calls"),
        0.0,
        "nothing pending at the end"
    );
    assert_eq!(m.sum("mpspy_live_capabilities"), 0.0, "closed connections");
    assert_eq!(m.value("mpspy_connections", &[]), 0.0);
    assert_eq!(
        m.value("mpspy_connections_opened_total", &[]),
        of_type(events, "conn_opened").len() as f64
    );
    let dropped: u64 = of_type(events, "dropped")
        .iter()
        .map(|d| d["data"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(m.value("mpspy_dropped_events_total", &[]), dropped as f64);
}

/// `ADDR` of `http://ADDR/metrics` in a message line.
fn addr_in(line: &str) -> Option<String> {
    let at = line.find("http://")?;
    let url = line[at + "http://".len()..].split_whitespace().next()?;
    url.strip_suffix("/metrics").map(str::to_string)
}

#[test]
fn live_metrics_follow_the_session_and_match_its_events() {
    if !prometheus_client() {
        return;
    }
    let py = pycapnp();
    let dir = TestDir::new("metrics");
    let json = dir.path("events.jsonl");
    // Port 0: a free one, which mpspy names in its messages (with --quiet, in --log only).
    let (child, sock) = start_wrapped_peer(
        &dir,
        &[
            "--json",
            json.to_str().unwrap(),
            "--metrics",
            "0",
            "--quiet",
        ],
    );
    let address = format!("unix:{}", sock.display());
    let log = std::fs::read_to_string(dir.path("mpspy.log")).unwrap();
    let addr = log
        .lines()
        .filter(|l| l.contains("serving metrics on"))
        .find_map(addr_in)
        .unwrap_or_else(|| panic!("no metrics address in the log: {log}"));
    assert!(
        addr.starts_with("127.0.0.1:"),
        "loopback by default: {addr}"
    );

    let m = Scrape::take(&addr, false);
    assert_eq!(m.value("mpspy_connections_opened_total", &[]), 0.0);
    assert_eq!(m.value("mpspy_connections", &[]), 0.0);
    for path in ["/", "/metrics/x", "/favicon.ico"] {
        assert_eq!(get(&addr, path, None).0, 404, "{path}");
    }

    // A call that stays pending: the gauges show it while it waits, and it counts as
    // unanswered once its connection is gone.
    if py {
        let mut client = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/client.py"))
            .args([&address, "--hang"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
        while !lines
            .next()
            .expect("client output")
            .unwrap()
            .contains("waiting")
        {}
        let wait = [("method", "Mining.waitTipChanged")];
        wait_for(
            || Scrape::take(&addr, false).get("mpspy_pending_calls", &wait) == Some(1.0),
            "the pending waitTipChanged in the metrics",
        );
        let m = Scrape::take(&addr, false);
        assert_eq!(m.value("mpspy_connections", &[]), 1.0);
        assert!(m.value("mpspy_live_capabilities", &[("interface", "Mining")]) >= 1.0);
        assert_eq!(m.value("mpspy_unanswered_calls_total", &wait), 0.0);
        client.kill().unwrap();
        client.wait().unwrap();
        wait_for(
            || Scrape::take(&addr, false).value("mpspy_connections", &[]) == 0.0,
            "the client's connection closed in the metrics",
        );
        let m = Scrape::take(&addr, false);
        assert_eq!(m.value("mpspy_pending_calls", &wait), 0.0);
        assert_eq!(m.value("mpspy_unanswered_calls_total", &wait), 1.0);
    }

    // Echo calls from the peer's own Rust client: 2 texts × 7.
    let out = Command::new(testpeer())
        .args([
            "client", &address, "--echo", "one", "--echo", "two", "--count", "7", "--mining",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::live::wait_closed(&json, if py { 2 } else { 1 });
    let m = Scrape::take(&addr, false);
    let events = events_in(&json);
    // The Rust client's 14 echoes, and whatever the pycapnp client echoed before it hung.
    let rust_conn = &of_type(&events, "conn_opened").last().unwrap()["conn"];
    let echoes = calls_of(&events, "Echo.echo");
    assert_eq!(
        echoes.iter().filter(|c| c["conn"] == *rust_conn).count(),
        14
    );
    let echo = [("method", "Echo.echo")];
    assert_eq!(m.value("mpspy_calls_total", &echo), echoes.len() as f64);
    assert_eq!(
        m.value("mpspy_call_latency_seconds_count", &echo),
        echoes.len() as f64
    );
    assert_agrees_with_events(&m, &events);

    // The same numbers in OpenMetrics, read by the strict parser.
    let om = Scrape::take(&addr, true);
    assert_agrees_with_events(&om, &events);

    let stderr = stop_ok(child);
    assert!(!stderr.contains("serving metrics"), "--quiet: {stderr}");
    // The endpoint ends with the session.
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening on {addr}"
    );
}

#[test]
fn replay_serves_the_recordings_metrics_until_interrupted() {
    if !prometheus_client() {
        return;
    }
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    // Killed if the test fails: it would serve until interrupted.
    let mut guard = crate::peers::KillOnDrop(Some(
        mpspy()
            .arg("replay")
            .arg(&demo)
            .args(["--json", "--metrics", ":0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let child = guard.child();
    // Read while it serves: the JSON is more than a pipe holds.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "mpspy ended: {said}"
        );
        said.push_str(&line);
        if line.contains("until Ctrl-C") {
            break addr_in(&line).unwrap();
        }
    };
    assert!(
        said.starts_with("mpspy: serving the replay's metrics on http://127.0.0.1:"),
        "{said}"
    );
    // Scraped twice: the final values stay.
    let m = Scrape::take(&addr, false);
    let again = Scrape::take(&addr, true);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM ends serving normally");
    let events = json_lines(&reader.join().unwrap());
    // What the shipped recording holds (tests/replay.rs), seen through the metrics.
    assert_eq!(m.sum("mpspy_calls_total"), 20.0, "19 calls + the bootstrap");
    assert_eq!(m.value("mpspy_connections_opened_total", &[]), 1.0);
    assert_agrees_with_events(&m, &events);
    assert_agrees_with_events(&again, &events);
}

#[test]
fn a_bad_metrics_address_or_a_port_in_use_names_the_flag() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let out = mpspy()
        .arg("replay")
        .arg(&demo)
        .args(["--metrics", "nowhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--metrics") && stderr.contains("PORT, :PORT or HOST:PORT"),
        "{stderr}"
    );

    let out = mpspy()
        .args(["--metrics", "70000", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--metrics") && stderr.contains("not a port"),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = mpspy()
        .arg("replay")
        .arg(&demo)
        .args(["--json", "--metrics", &port.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--metrics 127.0.0.1:{port}: port {port} is in use"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing replayed");
}
