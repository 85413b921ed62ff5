//! `--otlp`: a local OTLP/HTTP receiver (a socket, an HTTP/1.1 reader of our own, and the
//! official protobuf definitions from `opentelemetry-proto`) takes what mpspy sends, and the
//! spans are checked against the same session's events: one per call, named
//! `Interface.method`, the program that ran it as the service, the attributes, and callbacks
//! as children of the calls that caused them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value;

use crate::common::*;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) span_id: Vec<u8>,
    pub(crate) trace_id: Vec<u8>,
    pub(crate) parent: Vec<u8>,
    pub(crate) attrs: HashMap<String, String>,
    pub(crate) error: Option<String>,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// A collector on 127.0.0.1: answers every POST 200 and keeps the decoded spans.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) spans: Arc<Mutex<Vec<Got>>>,
    pub(crate) paths: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let paths: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, p) = (spans.clone(), paths.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, p) = (s.clone(), p.clone());
                std::thread::spawn(move || serve(conn, &s, &p));
            }
        });
        Receiver { url, spans, paths }
    }

    pub(crate) fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

/// HTTP/1.1 requests on one connection (keep-alive), each body a protobuf export request.
fn serve(conn: TcpStream, spans: &Mutex<Vec<Got>>, paths: &Mutex<Vec<String>>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut len = 0usize;
        let mut content_type = String::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        assert_eq!(content_type, "application/x-protobuf");
        paths.lock().unwrap().push(path);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP request");
        for rs in req.resource_spans {
            let res = rs
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            let service = res.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for sp in ss.spans {
                    let error = sp
                        .status
                        .as_ref()
                        .filter(|s| s.code == 2)
                        .map(|s| s.message.clone());
                    spans.lock().unwrap().push(Got {
                        service: service.clone(),
                        name: sp.name.clone(),
                        span_id: sp.span_id.clone(),
                        trace_id: sp.trace_id.clone(),
                        parent: sp.parent_span_id.clone(),
                        attrs: attrs(&sp.attributes),
                        error,
                        start_ns: sp.start_time_unix_nano,
                        end_ns: sp.end_time_unix_nano,
                    });
                }
            }
        }
        out.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
    }
}

/// Checks `spans` against the session's `events`: a span per call and bootstrap, names,
/// services, attributes, and each callback a child of its cause. Returns the callbacks seen.
pub(crate) fn assert_spans(spans: &[Got], events: &[Value]) -> usize {
    let calls = of_type(events, "call");
    assert_eq!(
        spans.len(),
        calls.len() + of_type(events, "bootstrap").len(),
        "a span per call: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let servers: HashMap<u64, String> = of_type(events, "conn_opened")
        .iter()
        .map(|c| {
            (
                c["conn"].as_u64().unwrap(),
                c["data"]["server"]["name"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string(),
            )
        })
        .collect();
    let by_key = |conn: u64, q: u64, name: &str| -> &Got {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && s.attrs["mpspy.conn"] == conn.to_string()
                    && s.attrs["mpspy.question"] == q.to_string()
            })
            .unwrap_or_else(|| panic!("no span {name} q{q} on #{conn}"))
    };
    let mut callbacks = 0;
    let seq_of: HashMap<u64, &Value> = calls
        .iter()
        .map(|c| (c["seq"].as_u64().unwrap(), *c))
        .collect();
    for c in &calls {
        let conn = c["conn"].as_u64().unwrap();
        let q = c["data"]["question"].as_u64().unwrap();
        let s = by_key(conn, q, &method_of(c));
        assert_eq!(s.attrs["rpc.system"], "capnp");
        assert_eq!(s.attrs["rpc.method"], c["data"]["method"].as_str().unwrap());
        assert!(s.attrs.contains_key("mpspy.outcome"), "{s:?}");
        assert!(
            s.end_ns >= s.start_ns && s.start_ns > 1_600_000_000_000_000_000,
            "{s:?}"
        );
        if c["dir"] == "c2s" {
            assert_eq!(s.service, servers[&conn], "the server runs it: {s:?}");
        }
        if let Some(p) = c["data"]["parent_seq"].as_u64() {
            let pc = seq_of[&p];
            let parent = by_key(
                pc["conn"].as_u64().unwrap(),
                pc["data"]["question"].as_u64().unwrap(),
                &method_of(pc),
            );
            assert_eq!(s.parent, parent.span_id, "a callback's parent is its cause");
            assert_eq!(s.trace_id, parent.trace_id);
            callbacks += 1;
        } else {
            assert!(s.parent.is_empty(), "a root span: {s:?}");
        }
    }
    callbacks
}

/// Replaying the demo recording with `--otlp`: every call a span with the recording's
/// timestamps, the exception as an error status; the summary says how many were sent.
#[test]
fn replay_sends_every_call_as_a_span() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let rx = Receiver::start();
    let out = run_ok(
        mpspy()
            .arg("replay")
            .arg(&demo)
            .arg("--json")
            .args(["--otlp", &rx.url]),
    );
    let events = json_lines(&out.stdout);
    let spans = rx.spans();
    assert_spans(&spans, &events);
    assert!(rx.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));
    let check = spans
        .iter()
        .find(|s| s.name == "Mining.checkBlock")
        .unwrap();
    assert!(
        check
            .error
            .as_deref()
            .is_some_and(|e| e.contains("SpanReader")),
        "{check:?}"
    );
    assert_eq!(check.attrs["mpspy.outcome"], "exception");
    assert!(spans.iter().all(|s| s.service == "mpspy-testpeer"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "OTLP: {} span(s) sent to {}/v1/traces",
            spans.len(),
            rx.url
        )),
        "{err}"
    );
}

/// A collector that is not there costs the spans, not the replay: it says so and ends well.
#[test]
fn an_unreachable_collector_is_reported_not_fatal() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_ok(
        mpspy()
            .arg("replay")
            .arg(&demo)
            .args(["--otlp", &format!("http://127.0.0.1:{port}")]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OTLP: 0 span(s) sent") && err.contains("not accepted by the collector"),
        "{err}"
    );

    let out = mpspy()
        .arg("replay")
        .arg(&demo)
        .args(["--otlp", "https://tempo:4318"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--otlp: https is not supported"), "{err}");
}
