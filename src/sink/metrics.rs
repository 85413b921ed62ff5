//! `--metrics ADDR`: the session as Prometheus metrics, served at `http://ADDR/metrics` while
//! mpspy runs (docs/metrics.md lists every series).
//!
//! The per-method series (calls, errors, cancels, unanswered and pending calls, latency) are
//! the engine's own statistics ([`mpspy_engine::Stats`], the numbers of the exit summary, the
//! TUI and `mpspy stats`), read at each scrape by [`StatsCollector`]: one fold, so the
//! endpoint cannot disagree with the summary. What the engine does not count (messages and
//! bytes by type, capabilities by interface, connections, lints, stuck calls, drops)
//! [`MetricsSink`] folds from the events into prometheus-client's metrics, which are atomics
//! behind `Arc`s. [`MetricsServer`] is one HTTP thread that only reads and encodes them. So a
//! scrape never holds up decoding (and so never the relay): the decoder at most waits for the
//! statistics' lock while a scrape copies them out, or for a family's lock when it adds a new
//! series.
//!
//! Labels stay low-cardinality: methods (`Interface.method`, a bounded set from the schemas,
//! with [`MAX_METHODS`] as a guard against garbage), interfaces, directions, message types and
//! lint ids. No connection or question ids: those are in `--json`.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use mpspy_engine::SharedStats;
use mpspy_schema::event::{CapInfo, ConnId, Direction, Side};
use mpspy_schema::{Event, EventKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::Sink;

/// Upper bounds of the latency buckets, in seconds: 10 µs (a local round trip) to 60 s (past
/// the longest long poll's usual timeout), in 1-5-10 steps up to 10 s.
pub(crate) const LATENCY_BUCKETS: [f64; 15] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
    60.0,
];

/// Distinct `method` label values at most, besides `other`: calls of further methods are
/// counted under `method="other"`. Real schemas have a few hundred methods; undecodable traffic (unknown
/// interface ids, `@N` ordinals) could otherwise grow the series without bound.
pub(crate) const MAX_METHODS: usize = 1000;

/// `method="Interface.method"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// `interface="Mining"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabel {
    interface: String,
}

/// `dir="c2s"` (as in `--json`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabel {
    dir: &'static str,
}

/// `dir="c2s",type="call"`: a message by its direction and `--json` type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabel {
    dir: &'static str,
    r#type: &'static str,
}

/// `id="thread-busy",severity="warning"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LintLabel {
    id: &'static str,
    severity: &'static str,
}

fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::ClientToServer => "c2s",
        Direction::ServerToClient => "s2c",
    }
}

/// Every metric, registered once; the sink holds these handles, the server the registry.
#[derive(Clone)]
struct Families {
    stuck: Family<MethodLabel, Counter>,
    caps_live: Family<InterfaceLabel, Gauge>,
    caps_created: Family<InterfaceLabel, Counter>,
    messages: Family<MessageLabel, Counter>,
    frame_bytes: Family<MessageLabel, Counter>,
    undecodable: Family<DirLabel, Counter>,
    lints: Family<LintLabel, Counter>,
    connections: Gauge,
    connections_opened: Counter,
    dropped: Counter,
}

impl Families {
    fn register() -> (Registry, Families) {
        let f = Families {
            stuck: Family::default(),
            caps_live: Family::default(),
            caps_created: Family::default(),
            messages: Family::default(),
            frame_bytes: Family::default(),
            undecodable: Family::default(),
            lints: Family::default(),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            dropped: Counter::default(),
        };
        let mut r = Registry::with_prefix("mpspy");
        r.register(
            "build",
            "The mpspy serving these metrics",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "stuck_calls",
            "Calls reported stuck: pending longer than their limit (docs/lints.md)",
            f.stuck.clone(),
        );
        r.register(
            "live_capabilities",
            "Capabilities exported and not yet released, on open connections",
            f.caps_live.clone(),
        );
        r.register(
            "capabilities_created",
            "Capabilities exported (first export of an id)",
            f.caps_created.clone(),
        );
        r.register(
            "messages",
            "RPC messages by direction and type",
            f.messages.clone(),
        );
        r.register_with_unit(
            "frame",
            "Frame sizes of call, return and bootstrap messages, by direction",
            Unit::Bytes,
            f.frame_bytes.clone(),
        );
        r.register(
            "undecodable_frames",
            "Stretches of bytes that were not a valid frame (forwarded anyway)",
            f.undecodable.clone(),
        );
        r.register("lints", "IPC misuse found (docs/lints.md)", f.lints.clone());
        r.register("connections", "Connections open now", f.connections.clone());
        r.register(
            "connections_opened",
            "Connections seen",
            f.connections_opened.clone(),
        );
        r.register(
            "dropped_events",
            "Frames not decoded because decoding fell behind (a recording still has them)",
            f.dropped.clone(),
        );
        (r, f)
    }
}

/// Folds events into the metrics the engine does not count. It keeps what it needs to take
/// back what it added to the gauges: which capabilities are alive, by connection, so a closed
/// connection takes its share with it whatever the engine said of each.
pub(crate) struct MetricsSink {
    f: Families,
    /// `stuck_calls` by `Interface.method` (at most [`MAX_METHODS`] entries, then `other`).
    stuck: HashMap<String, Counter>,
    /// Live capabilities by connection, host side and export id: their gauge.
    caps: HashMap<(ConnId, Side, u32), Gauge>,
    /// Open connections.
    open: std::collections::HashSet<ConnId>,
    /// The engine's statistics, for [`StatsCollector`] (given at the session's start).
    stats: Arc<OnceLock<SharedStats>>,
}

impl MetricsSink {
    /// A sink and the registry it updates (for [`MetricsServer::start`]).
    pub(crate) fn new() -> (MetricsSink, Arc<Registry>) {
        let (mut registry, f) = Families::register();
        let stats: Arc<OnceLock<SharedStats>> = Arc::default();
        registry.register_collector(Box::new(StatsCollector(stats.clone())));
        let sink = MetricsSink {
            f,
            stuck: HashMap::new(),
            caps: HashMap::new(),
            open: Default::default(),
            stats,
        };
        (sink, Arc::new(registry))
    }

    fn cap_created(&mut self, conn: ConnId, cap: &CapInfo) {
        let l = InterfaceLabel {
            interface: cap.interface.clone().unwrap_or_else(|| "unknown".into()),
        };
        self.f.caps_created.get_or_create(&l).inc();
        let gauge = self.f.caps_live.get_or_create_owned(&l);
        gauge.inc();
        if let Some(old) = self.caps.insert((conn, cap.host, cap.export_id), gauge) {
            old.dec();
        }
    }

    /// Folds one event in.
    pub(crate) fn fold(&mut self, e: &Event) {
        if let Some(dir) = e.dir
            && is_message(&e.kind)
        {
            let l = MessageLabel {
                dir: dir_str(dir),
                r#type: e.kind.name(),
            };
            self.f.messages.get_or_create(&l).inc();
            let bytes = match &e.kind {
                EventKind::Bootstrap { bytes, .. } => Some(*bytes),
                EventKind::Call(c) => Some(c.bytes),
                EventKind::Return(r) => Some(r.bytes),
                _ => None,
            };
            if let Some(b) = bytes {
                self.f.frame_bytes.get_or_create(&l).inc_by(b as u64);
            }
        }
        match &e.kind {
            EventKind::ConnOpened { .. } => {
                if self.open.insert(e.conn) {
                    self.f.connections.inc();
                }
                self.f.connections_opened.inc();
            }
            EventKind::ConnClosed { .. } => {
                if self.open.remove(&e.conn) {
                    self.f.connections.dec();
                }
                self.caps.retain(|(conn, _, _), gauge| {
                    let keep = *conn != e.conn;
                    if !keep {
                        gauge.dec();
                    }
                    keep
                });
            }
            EventKind::CapCreated(cap) => self.cap_created(e.conn, cap),
            EventKind::CapReleased { cap, .. } => {
                if let Some(g) = self.caps.remove(&(e.conn, cap.host, cap.export_id)) {
                    g.dec();
                }
            }
            EventKind::Undecodable { .. } => {
                let dir = e.dir.map_or("unknown", dir_str);
                self.f.undecodable.get_or_create(&DirLabel { dir }).inc();
            }
            EventKind::Lint(l) => {
                let l = LintLabel {
                    id: l.id.as_str(),
                    severity: l.severity.as_str(),
                };
                self.f.lints.get_or_create(&l).inc();
            }
            EventKind::Stuck {
                interface, method, ..
            } => {
                let mut name = mpspy_schema::event::qualified(interface, method);
                if !self.stuck.contains_key(&name) && self.stuck.len() >= MAX_METHODS {
                    name = "other".into();
                }
                let f = &self.f.stuck;
                self.stuck
                    .entry(name)
                    .or_insert_with_key(|m| {
                        f.get_or_create_owned(&MethodLabel { method: m.clone() })
                    })
                    .inc();
            }
            EventKind::Dropped { count, .. } => {
                self.f.dropped.inc_by(*count);
            }
            _ => {}
        }
    }
}

/// Events that stand for one RPC message (each frame decodes to exactly one of these).
fn is_message(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Bootstrap { .. }
            | EventKind::Call(_)
            | EventKind::Return(_)
            | EventKind::Finish { .. }
            | EventKind::Resolve { .. }
            | EventKind::Release { .. }
            | EventKind::Disembargo { .. }
            | EventKind::Abort { .. }
            | EventKind::Unimplemented { .. }
            | EventKind::OtherMessage { .. }
    )
}

impl Sink for MetricsSink {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        self.fold(e);
        Ok(())
    }

    fn stats(&mut self, stats: &SharedStats) {
        let _ = self.stats.set(stats.clone());
    }
}

/// One method's numbers, copied out of the engine's statistics.
#[derive(Debug, Default, Clone)]
struct MethodRow {
    calls: u64,
    errors: u64,
    cancels: u64,
    unanswered: u64,
    pending: u64,
    /// Latencies at most each of [`LATENCY_BUCKETS`] (not cumulative: per bucket), then the
    /// ones above the last.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    count: u64,
    sum_ns: u64,
}

impl MethodRow {
    fn of(m: &mpspy_engine::stats::MethodStats) -> MethodRow {
        let mut r = MethodRow {
            calls: m.calls,
            errors: m.errors,
            cancels: m.cancels,
            unanswered: m.unanswered,
            pending: m.pending(),
            count: m.latency.len(),
            sum_ns: m.latency_sum_ns,
            ..MethodRow::default()
        };
        let mut below = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            // The histogram keeps 3 significant digits: a latency within 0.1% of a bound may
            // count in the bucket next to it.
            let upto = m.latency.count_between(0, (le * 1e9) as u64);
            r.buckets[i] = upto - below;
            below = upto;
        }
        r.buckets[LATENCY_BUCKETS.len()] = r.count - below;
        r
    }

    fn add(&mut self, o: &MethodRow) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.cancels += o.cancels;
        self.unanswered += o.unanswered;
        self.pending += o.pending;
        self.count += o.count;
        self.sum_ns += o.sum_ns;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
    }
}

/// The per-method series, read from the engine's statistics at each scrape.
#[derive(Debug)]
struct StatsCollector(Arc<OnceLock<SharedStats>>);

impl StatsCollector {
    /// The rows by method, copied under the statistics' lock (which the decoder shares, so it
    /// is held only to copy), methods past [`MAX_METHODS`] summed as `other`.
    fn rows(&self) -> Vec<(String, MethodRow)> {
        let Some(stats) = self.0.get() else {
            return Vec::new();
        };
        let stats = stats.lock();
        let mut rows: Vec<(String, MethodRow)> = Vec::new();
        let mut other: Option<MethodRow> = None;
        for (name, m) in &stats.methods {
            if rows.len() < MAX_METHODS {
                rows.push((name.clone(), MethodRow::of(m)));
            } else {
                other.get_or_insert_default().add(&MethodRow::of(m));
            }
        }
        rows.extend(other.map(|o| ("other".to_string(), o)));
        rows
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        type Pick = fn(&MethodRow) -> u64;
        let counters: [(&str, &str, Pick); 4] = [
            (
                "calls",
                "Calls made (call messages, and bootstrap requests as method \"bootstrap\")",
                |r| r.calls,
            ),
            ("call_errors", "Calls that returned an exception", |r| {
                r.errors
            }),
            (
                "call_cancels",
                "Calls the caller canceled (a Finish before the Return; once per call)",
                |r| r.cancels,
            ),
            (
                "unanswered_calls",
                "Calls still without a return when their connection closed",
                |r| r.unanswered,
            ),
        ];
        for (name, help, pick) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (method, r) in &rows {
                let label = MethodLabel {
                    method: method.clone(),
                };
                ConstCounter::new(pick(r)).encode(family.encode_family(&label)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "pending_calls",
            "Calls sent and not answered yet, on open connections",
            None,
            MetricType::Gauge,
        )?;
        for (method, r) in &rows {
            let label = MethodLabel {
                method: method.clone(),
            };
            ConstGauge::new(r.pending as i64).encode(family.encode_family(&label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "call_latency",
            "Time from call to return (returns whose call was seen)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (method, r) in &rows {
            let label = MethodLabel {
                method: method.clone(),
            };
            // +Inf last, as an infinite bound (both text encoders write it as `+Inf`).
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(r.buckets)
                .collect();
            family
                .encode_family(&label)?
                .encode_histogram::<NoLabelSet>(r.sum_ns as f64 / 1e9, r.count, &buckets, None)?;
        }
        Ok(())
    }
}

/// The text of a scrape: OpenMetrics when the scraper asks for it in `Accept` (Prometheus
/// does), else the Prometheus text format 0.0.4 that every other tool reads. Returns the
/// content type and the body.
pub(crate) fn encode(registry: &Registry, accept: &str) -> (&'static str, String) {
    use prometheus_client::encoding::{prometheus_text, text};
    let mut body = String::new();
    // Writing into a String cannot fail.
    if accept.contains("application/openmetrics-text") {
        let _ = text::encode(&mut body, registry);
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        let _ = prometheus_text::encode(&mut body, registry);
        (prometheus_text::CONTENT_TYPE, body)
    }
}

/// The `/metrics` endpoint: one thread answering scrapes until dropped.
pub(crate) struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens (the port chosen when 0 was asked for).
    pub(crate) addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` now (so a port in use fails before the session starts) and serves
    /// `registry` from a thread of its own.
    pub(crate) fn start(addr: SocketAddr, registry: Arc<Registry>) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::AddrInUse {
                format!("port {} is in use ({e})", addr.port())
            } else {
                e.to_string()
            };
            anyhow::anyhow!("--metrics {addr}: {why}")
        })?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("--metrics {addr}"))?;
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .map_err(|e| anyhow::anyhow!("--metrics {addr}: {e}"))?,
        );
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("mpspy-metrics".into())
            .spawn(move || {
                for req in serving.incoming_requests() {
                    respond(&registry, req);
                }
            })
            .context("starting the metrics thread")?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr,
        })
    }

    /// `http://ADDR/metrics`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request: `GET /metrics` (or `HEAD`), 404 for any other path, 405 for any
/// other method.
fn respond(registry: &Registry, req: tiny_http::Request) {
    use tiny_http::{Header, Method, Response};
    let path = req.url().split('?').next().unwrap_or_default();
    if path != "/metrics" {
        let _ = req.respond(
            Response::from_string("not found: mpspy serves /metrics\n").with_status_code(404),
        );
        return;
    }
    if !matches!(req.method(), Method::Get | Method::Head) {
        let _ = req.respond(
            Response::from_string("method not allowed\n")
                .with_status_code(405)
                .with_header(Header::from_bytes("Allow", "GET, HEAD").expect("valid header")),
        );
        return;
    }
    let accept = req
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let (content_type, body) = encode(registry, &accept);
    let header = Header::from_bytes("Content-Type", content_type).expect("valid header");
    let _ = req.respond(Response::from_string(body).with_header(header));
}

/// `--metrics`: `PORT` or `:PORT` is 127.0.0.1:PORT (loopback unless another host is named:
/// the metrics name the methods a node's clients call); `HOST:PORT` or `[V6]:PORT` as given.
/// Port 0 picks a free port (mpspy says which).
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, ToSocketAddrs};
    let port = s.strip_prefix(':').unwrap_or(s);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .map_err(|_| format!("'{port}' is not a port (0 to 65535)"));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("'{s}' is not an address: give PORT, :PORT or HOST:PORT");
    if !s.contains(':') {
        return Err(bad());
    }
    // A host name (`localhost:9100`): its first address.
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(bad),
        Err(e) => Err(format!("{}: {e}", bad())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpspy_schema::event::{CallEvent, PendingCall, ReturnEvent};
    use mpspy_schema::value::Value;

    /// Events with consecutive `seq`s, as the engine numbers them, and the engine's
    /// statistics of them (which the per-method series show).
    #[derive(Default)]
    struct Script {
        events: Vec<Event>,
        seq: u64,
        stats: SharedStats,
    }

    impl Script {
        /// Folds the events so far into `sink`, and into the statistics the engine would
        /// have given it.
        fn fold_into(&mut self, sink: &mut MetricsSink) {
            sink.stats(&self.stats);
            for e in self.events.drain(..) {
                self.stats.lock().fold(&e);
                sink.fold(&e);
            }
        }
        fn push(&mut self, conn: ConnId, dir: Option<Direction>, kind: EventKind) -> u64 {
            let seq = self.seq;
            self.seq += 1;
            self.events.push(Event {
                seq,
                t_ns: seq * 1000,
                conn,
                dir,
                kind,
            });
            seq
        }
        fn call(&mut self, conn: ConnId, method: &str, bytes: usize) -> u64 {
            let (interface, method) = method.split_once('.').unwrap();
            self.push(
                conn,
                Some(Direction::ClientToServer),
                EventKind::Call(CallEvent {
                    question: 0,
                    interface: interface.into(),
                    method: method.into(),
                    interface_id: 1,
                    method_id: 0,
                    target: "x".into(),
                    thread: None,
                    callback_thread: None,
                    parent_seq: None,
                    params: Value::Void,
                    cap_table: Vec::new(),
                    bytes,
                }),
            )
        }
        fn ret(&mut self, conn: ConnId, call: u64, method: &str, outcome: &str, ns: u64) {
            let (interface, method) = method.split_once('.').unwrap();
            self.push(
                conn,
                Some(Direction::ServerToClient),
                EventKind::Return(ReturnEvent {
                    answer: 0,
                    call_seq: Some(call),
                    interface: interface.into(),
                    method: method.into(),
                    outcome: outcome.into(),
                    latency_ns: Some(ns),
                    results: None,
                    exception: None,
                    thread: None,
                    cap_table: Vec::new(),
                    bytes: 100,
                }),
            );
        }
        fn open(&mut self, conn: ConnId) {
            self.push(
                conn,
                None,
                EventKind::ConnOpened {
                    label: "a → b".into(),
                    client: None,
                    server: None,
                },
            );
        }
        fn close(&mut self, conn: ConnId, pending: Vec<PendingCall>, live: Vec<CapInfo>) {
            self.push(
                conn,
                None,
                EventKind::ConnClosed {
                    reason: "eof".into(),
                    pending_calls: pending,
                    live_caps: live,
                },
            );
        }
    }

    fn cap(interface: &str, id: u32) -> CapInfo {
        CapInfo {
            cap: format!("{interface}#{id}"),
            interface: Some(interface.into()),
            host: Side::Server,
            export_id: id,
            refs: 1,
            destroyed: false,
            destroyable: true,
            destroy_pending: false,
        }
    }

    /// The samples of a scrape in the Prometheus text format, by `name{labels}` with the
    /// labels sorted and `le` written as Rust writes the number (`le="0.001"`, `le="inf"`).
    fn samples(registry: &Registry) -> HashMap<String, f64> {
        let (ctype, body) = encode(registry, "*/*");
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                let key = match k.split_once('{') {
                    None => k.to_string(),
                    Some((name, labels)) => {
                        let mut labels: Vec<String> = labels
                            .trim_end_matches('}')
                            .split(',')
                            .map(|kv| match kv.strip_prefix("le=") {
                                Some(le) => {
                                    let n: f64 = le.trim_matches('"').parse().unwrap();
                                    format!("le=\"{n}\"")
                                }
                                None => kv.to_string(),
                            })
                            .collect();
                        labels.sort();
                        format!("{name}{{{}}}", labels.join(","))
                    }
                };
                (key, v.parse::<f64>().unwrap())
            })
            .collect()
    }

    #[test]
    fn calls_returns_and_closes_fold_into_counters_gauges_and_histograms() {
        let (mut sink, registry) = MetricsSink::new();
        let mut s = Script::default();
        s.open(1);
        s.open(2);
        let c = s.call(1, "Echo.echo", 200);
        s.ret(1, c, "Echo.echo", "results", 7_000); // 7 µs
        let c = s.call(1, "Echo.echo", 200);
        s.ret(1, c, "Echo.echo", "exception", 2_000_000); // 2 ms
        let c = s.call(1, "Echo.echo", 200);
        s.push(
            1,
            Some(Direction::ClientToServer),
            EventKind::Finish {
                question: 0,
                call_seq: Some(c),
                method: Some("Echo.echo".into()),
                release_result_caps: false,
                cancel: true,
            },
        );
        s.ret(1, c, "Echo.echo", "canceled", 90_000_000_000); // 90 s: only +Inf
        s.push(
            1,
            Some(Direction::ServerToClient),
            EventKind::CapCreated(cap("Mining", 3)),
        );
        s.push(
            1,
            Some(Direction::ServerToClient),
            EventKind::CapCreated(cap("Mining", 4)),
        );
        s.push(
            1,
            Some(Direction::ClientToServer),
            EventKind::CapReleased {
                cap: cap("Mining", 3),
                lifetime_ns: 5,
            },
        );
        // Pending on both connections; connection 2 closes with its call unanswered.
        let w = s.call(1, "Mining.waitTipChanged", 64);
        let p = s.call(2, "Mining.waitTipChanged", 64);
        s.fold_into(&mut sink);
        let got = samples(&registry);
        let m = |name: &str, method: &str| got[&format!("mpspy_{name}{{method=\"{method}\"}}")];
        assert_eq!(m("calls_total", "Echo.echo"), 3.0);
        assert_eq!(m("call_errors_total", "Echo.echo"), 1.0);
        assert_eq!(m("call_cancels_total", "Echo.echo"), 1.0);
        assert_eq!(m("pending_calls", "Echo.echo"), 0.0);
        assert_eq!(m("pending_calls", "Mining.waitTipChanged"), 2.0);
        assert_eq!(m("call_latency_seconds_count", "Echo.echo"), 3.0);
        let bucket = |le: &str| {
            got[&format!("mpspy_call_latency_seconds_bucket{{le=\"{le}\",method=\"Echo.echo\"}}")]
        };
        assert_eq!(bucket("0.00001"), 1.0, "{got:#?}");
        assert_eq!(bucket("0.001"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("60"), 2.0);
        assert_eq!(bucket("inf"), 3.0);
        assert_eq!(
            got["mpspy_live_capabilities{interface=\"Mining\"}"], 1.0,
            "Mining#3 released, #4 alive"
        );
        assert_eq!(
            got["mpspy_capabilities_created_total{interface=\"Mining\"}"],
            2.0
        );
        assert_eq!(got["mpspy_connections"], 2.0);
        assert_eq!(
            got["mpspy_frame_bytes_total{dir=\"c2s\",type=\"call\"}"],
            728.0
        );
        assert_eq!(
            got["mpspy_frame_bytes_total{dir=\"s2c\",type=\"return\"}"],
            300.0
        );
        assert_eq!(
            got["mpspy_messages_total{dir=\"c2s\",type=\"finish\"}"],
            1.0
        );

        // Closing takes the connection's pending calls and live capabilities with it.
        let pend = |seq: u64| PendingCall {
            call_seq: seq,
            dir: Direction::ClientToServer,
            question: 0,
            method: "Mining.waitTipChanged".into(),
            elapsed_ns: 1,
            thread: None,
        };
        s.close(2, vec![pend(p)], Vec::new());
        s.ret(1, w, "Mining.waitTipChanged", "results", 1_500_000_000);
        s.close(1, Vec::new(), vec![cap("Mining", 4)]);
        s.fold_into(&mut sink);
        let got = samples(&registry);
        let m = |name: &str, method: &str| got[&format!("mpspy_{name}{{method=\"{method}\"}}")];
        assert_eq!(m("pending_calls", "Mining.waitTipChanged"), 0.0);
        assert_eq!(m("unanswered_calls_total", "Mining.waitTipChanged"), 1.0);
        assert_eq!(
            m("call_latency_seconds_count", "Mining.waitTipChanged"),
            1.0
        );
        assert_eq!(got["mpspy_live_capabilities{interface=\"Mining\"}"], 0.0);
        assert_eq!(got["mpspy_connections"], 0.0);
        assert_eq!(got["mpspy_connections_opened_total"], 2.0);
    }

    #[test]
    fn drops_lints_stuck_and_a_bounded_method_label() {
        let (mut sink, registry) = MetricsSink::new();
        let mut s = Script::default();
        s.push(0, None, EventKind::Dropped { count: 5, total: 5 });
        s.push(0, None, EventKind::Dropped { count: 2, total: 7 });
        let mut lint =
            mpspy_schema::event::Lint::new(mpspy_schema::lint::LintId::ThreadBusy, "busy".into());
        lint.severity = mpspy_schema::lint::Severity::Warning;
        s.push(1, None, EventKind::Lint(lint));
        s.push(
            1,
            None,
            EventKind::Stuck {
                call_seq: 0,
                interface: "Mining".into(),
                method: "createNewBlock".into(),
                question: 1,
                thread: None,
                pending_ns: 11,
                limit_ns: 10,
                last_on_thread: None,
            },
        );
        for i in 0..MAX_METHODS + 5 {
            s.call(1, &format!("Iface.m{i}"), 8);
        }
        s.fold_into(&mut sink);
        let got = samples(&registry);
        assert_eq!(got["mpspy_dropped_events_total"], 7.0);
        assert_eq!(
            got["mpspy_lints_total{id=\"thread-busy\",severity=\"warning\"}"],
            1.0
        );
        assert_eq!(
            got["mpspy_stuck_calls_total{method=\"Mining.createNewBlock\"}"],
            1.0
        );
        let methods: std::collections::HashSet<&str> = got
            .keys()
            .filter(|k| k.starts_with("mpspy_calls_total{"))
            .map(|k| k.as_str())
            .collect();
        // The first MAX_METHODS methods by name have their own series; the calls of the
        // last five are counted as `other`.
        assert_eq!(methods.len(), MAX_METHODS + 1);
        assert_eq!(got["mpspy_calls_total{method=\"other\"}"], 5.0);
        assert_eq!(got["mpspy_calls_total{method=\"Iface.m0\"}"], 1.0);
    }

    #[test]
    fn addresses() {
        let a = |s| parse_addr(s).map(|a| a.to_string());
        assert_eq!(a("9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(a(":9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(a("0.0.0.0:9100").unwrap(), "0.0.0.0:9100");
        assert_eq!(a("[::1]:9100").unwrap(), "[::1]:9100");
        assert!(a("99999").unwrap_err().contains("not a port"));
        assert!(
            a("metrics")
                .unwrap_err()
                .contains("PORT, :PORT or HOST:PORT")
        );
        assert!(a("").is_err());
    }

    #[test]
    fn openmetrics_when_asked_for() {
        let (_, registry) = MetricsSink::new();
        let (ctype, body) = encode(&registry, "application/openmetrics-text;version=1.0.0");
        assert!(ctype.starts_with("application/openmetrics-text"));
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (_, body) = encode(&registry, "text/plain");
        assert!(!body.contains("# EOF"));
    }
}
