//! OpenTelemetry: every call as a span over OTLP/HTTP (`--otlp http://HOST:4318`), for Jaeger,
//! Grafana Tempo or any collector.
//!
//! The sink runs on the decoder thread and only turns events into small messages on a bounded
//! queue (a full queue drops the message and counts it: the decoder never waits for the
//! network). A thread of its own makes the spans with the OpenTelemetry SDK, whose batch
//! processor exports them with the official OTLP exporter. Spans are made as the calls are:
//! started at the call with its own timestamp, ended at the return with the return's, so a
//! callback's span is a child of the call that caused it (the engine's `parent_seq`) while
//! that call is still open.
//!
//! Each span: service name = the program that runs the call (the server for client calls, the
//! client for callbacks; `process.pid` beside it), name = `Interface.method`, kind server,
//! attributes `rpc.system` (`capnp`), `rpc.service`, `rpc.method`, `mpspy.conn`,
//! `mpspy.question`, `mpspy.thread`, `mpspy.target`, `mpspy.caller`, `mpspy.request_bytes`,
//! `mpspy.response_bytes`, `mpspy.outcome`, and an error status with the exception's reason.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mpspy_schema::event::{ConnId, Peer};
use mpspy_schema::{Direction, Event, EventKind};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use super::Sink;

/// Messages the queue holds: at ~200 bytes each, a few MiB when a collector stalls.
const QUEUE: usize = 1 << 14;

/// Where the spans went, for the summary.
#[derive(Debug, Default)]
pub(crate) struct OtlpStats {
    /// The collector's URL.
    pub(crate) endpoint: String,
    /// Spans handed to the SDK.
    pub(crate) ended: AtomicU64,
    /// Spans the collector accepted.
    pub(crate) sent: AtomicU64,
    /// Spans in batches the collector refused or did not answer.
    pub(crate) failed: AtomicU64,
    /// Calls not made into spans because the queue to the exporter thread was full.
    pub(crate) dropped: AtomicU64,
    /// The last export error.
    pub(crate) last_error: Mutex<Option<String>>,
}

impl OtlpStats {
    /// One line for mpspy's messages.
    pub(crate) fn summary(&self) -> String {
        let ended = self.ended.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        // What the SDK's own queue dropped: ended, but neither sent nor failed.
        let lost = ended.saturating_sub(sent + failed) + dropped;
        let mut s = format!("OTLP: {sent} span(s) sent to {}", self.endpoint);
        if failed > 0 {
            let why = self
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default();
            s.push_str(&format!("; {failed} not accepted by the collector ({why})"));
        }
        if lost > 0 {
            s.push_str(&format!(
                "; {lost} dropped because the exporter fell behind"
            ));
        }
        s
    }
}

/// What the decoder thread tells the exporter thread.
enum Msg {
    Start {
        seq: u64,
        service: (String, Option<u32>),
        name: String,
        start: SystemTime,
        parent: Option<u64>,
        attrs: Vec<KeyValue>,
    },
    End {
        seq: u64,
        end: SystemTime,
        outcome: String,
        exception: Option<String>,
        attrs: Vec<KeyValue>,
    },
}

/// The `--otlp` endpoint as the exporter wants it: `http://HOST:PORT/v1/traces`. Only plain
/// HTTP: this build has no TLS stack.
pub(crate) fn traces_url(arg: &str) -> Result<String, String> {
    let rest = arg.strip_prefix("http://").ok_or_else(|| {
        if arg.starts_with("https://") {
            "https is not supported (no TLS in mpspy): use the collector's plain OTLP/HTTP \
             port, e.g. http://localhost:4318"
                .to_string()
        } else {
            format!("'{arg}' is not an http:// URL (e.g. http://localhost:4318)")
        }
    })?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(format!("'{arg}' has no host"));
    }
    // The collector's base URL gets the traces path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
    let path = if path.trim_end_matches('/').is_empty() {
        "v1/traces"
    } else {
        path
    };
    Ok(format!("http://{host}/{path}"))
}

/// Counts what the OTLP exporter sent and what failed.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    stats: Arc<OtlpStats>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        match &r {
            Ok(()) => self.stats.sent.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
                self.stats.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter thread: spans by call `seq`, a tracer provider per program.
fn export_loop(url: String, rx: Receiver<Msg>, stats: Arc<OtlpStats>) {
    let mut providers: HashMap<(String, Option<u32>), (SdkTracerProvider, SdkTracer)> =
        HashMap::new();
    let mut spans: HashMap<u64, opentelemetry_sdk::trace::Span> = HashMap::new();
    let mut last = UNIX_EPOCH;
    for msg in rx {
        match msg {
            Msg::Start {
                seq,
                service,
                name,
                start,
                parent,
                attrs,
            } => {
                last = last.max(start);
                let entry = providers.entry(service.clone());
                let (_, tracer) = match entry {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        match provider(&url, &service, &stats) {
                            Ok(p) => {
                                let t = p.tracer("mpspy");
                                v.insert((p, t))
                            }
                            Err(e) => {
                                if let Ok(mut l) = stats.last_error.lock() {
                                    *l = Some(e);
                                }
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                };
                let cx = match parent.and_then(|p| spans.get(&p)) {
                    Some(p) => Context::new().with_remote_span_context(p.span_context().clone()),
                    None => Context::new(),
                };
                let span = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Server)
                    .with_start_time(start)
                    .with_attributes(attrs)
                    .start_with_context(tracer, &cx);
                spans.insert(seq, span);
            }
            Msg::End {
                seq,
                end,
                outcome,
                exception,
                attrs,
            } => {
                last = last.max(end);
                if let Some(mut span) = spans.remove(&seq) {
                    span.set_attributes(attrs);
                    span.set_attribute(KeyValue::new("mpspy.outcome", outcome));
                    if let Some(reason) = exception {
                        span.set_status(Status::error(reason));
                    }
                    span.end_with_timestamp(end);
                    stats.ended.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    // Calls whose end message was dropped: their real end is unknown.
    for (_, mut span) in spans.drain() {
        span.set_attribute(KeyValue::new("mpspy.outcome", "unknown"));
        span.end_with_timestamp(last);
        stats.ended.fetch_add(1, Ordering::Relaxed);
    }
    for (p, _) in providers.into_values() {
        let _ = p.shutdown_with_timeout(Duration::from_secs(10));
    }
}

/// A tracer provider for one program: its resource, the batch processor, the exporter.
fn provider(
    url: &str,
    (name, pid): &(String, Option<u32>),
    stats: &Arc<OtlpStats>,
) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let exporter = Counting {
        inner: exporter,
        stats: stats.clone(),
    };
    // A second's delay shows live spans in the collector soon; a big queue rides out a
    // collector that stalls for a while.
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(1 << 16)
        .with_scheduled_delay(Duration::from_secs(1))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(config)
        .build();
    let mut resource = opentelemetry_sdk::Resource::builder_empty().with_service_name(name.clone());
    if let Some(pid) = pid {
        resource = resource.with_attribute(KeyValue::new("process.pid", i64::from(*pid)));
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

/// The sink: events to span messages.
pub(crate) struct OtlpSink {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<OtlpStats>,
    /// Wall clock of the session's start, ns since the epoch.
    start_unix_ns: u64,
    peers: HashMap<ConnId, (Option<Peer>, Option<Peer>)>,
    /// Calls with a span open (call `seq` → connection), to end at a disconnect.
    open: HashMap<u64, ConnId>,
    /// The latest event's time: where calls still open at the end of the source end.
    last_ns: u64,
}

impl OtlpSink {
    /// Starts the exporter thread for `endpoint` (an `--otlp` argument).
    pub(crate) fn start(endpoint: &str) -> Result<(OtlpSink, Arc<OtlpStats>), String> {
        let url = traces_url(endpoint)?;
        let stats = Arc::new(OtlpStats {
            endpoint: url.clone(),
            ..OtlpStats::default()
        });
        let (tx, rx) = sync_channel(QUEUE);
        let s = stats.clone();
        let thread = std::thread::Builder::new()
            .name("mpspy-otlp".into())
            .spawn(move || export_loop(url, rx, s))
            .map_err(|e| e.to_string())?;
        Ok((
            OtlpSink {
                tx: Some(tx),
                thread: Some(thread),
                stats: stats.clone(),
                start_unix_ns: 0,
                peers: HashMap::new(),
                open: HashMap::new(),
                last_ns: 0,
            },
            stats,
        ))
    }

    fn at(&self, t_ns: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.start_unix_ns.saturating_add(t_ns))
    }

    /// Queues `m`, or counts it dropped (never waits: this is the decoder's thread).
    fn send(&mut self, m: Msg) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    fn peer(&self, conn: ConnId, server: bool) -> Option<&Peer> {
        let (c, s) = self.peers.get(&conn)?;
        if server { s.as_ref() } else { c.as_ref() }
    }

    fn begin(&mut self, e: &Event, name: String, parent: Option<u64>, mut attrs: Vec<KeyValue>) {
        // The callee runs it: the server for client calls, the client for callbacks.
        let to_server = e.dir != Some(Direction::ServerToClient);
        let callee = self.peer(e.conn, to_server);
        let service = (
            callee.map_or_else(|| "unknown".to_string(), |p| p.name.clone()),
            callee.and_then(|p| p.pid),
        );
        if let Some(caller) = self.peer(e.conn, !to_server) {
            let who = match caller.pid {
                Some(pid) => format!("{} ({pid})", caller.name),
                None => caller.name.clone(),
            };
            attrs.push(KeyValue::new("mpspy.caller", who));
        }
        attrs.push(KeyValue::new("mpspy.conn", i64::from(e.conn)));
        self.open.insert(e.seq, e.conn);
        let start = self.at(e.t_ns);
        self.send(Msg::Start {
            seq: e.seq,
            service,
            name,
            start,
            parent,
            attrs,
        });
    }
}

impl Sink for OtlpSink {
    fn event(&mut self, e: &Arc<Event>) -> io::Result<()> {
        self.last_ns = self.last_ns.max(e.t_ns);
        match &e.kind {
            EventKind::Session { start_unix_ns, .. } => {
                self.start_unix_ns = start_unix_ns.unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                });
            }
            EventKind::ConnOpened { client, server, .. } => {
                self.peers.insert(e.conn, (client.clone(), server.clone()));
            }
            EventKind::Bootstrap { question, bytes } => {
                let attrs = vec![
                    KeyValue::new("rpc.system", "capnp"),
                    KeyValue::new("rpc.method", "bootstrap"),
                    KeyValue::new("mpspy.question", i64::from(*question)),
                    KeyValue::new("mpspy.request_bytes", *bytes as i64),
                ];
                self.begin(e, "bootstrap".into(), None, attrs);
            }
            EventKind::Call(c) => {
                let mut attrs = vec![
                    KeyValue::new("rpc.system", "capnp"),
                    KeyValue::new("rpc.service", c.interface.clone()),
                    KeyValue::new("rpc.method", c.method.clone()),
                    KeyValue::new("mpspy.question", i64::from(c.question)),
                    KeyValue::new("mpspy.target", c.target.clone()),
                    KeyValue::new("mpspy.request_bytes", c.bytes as i64),
                ];
                if let Some(t) = &c.thread {
                    attrs.push(KeyValue::new("mpspy.thread", t.clone()));
                }
                let name = format!("{}.{}", c.interface, c.method);
                self.begin(e, name, c.parent_seq, attrs);
            }
            EventKind::Return(r) => {
                if let Some(seq) = r.call_seq.filter(|s| self.open.remove(s).is_some()) {
                    let end = self.at(e.t_ns);
                    self.send(Msg::End {
                        seq,
                        end,
                        outcome: r.outcome.clone(),
                        exception: r.exception.as_ref().map(|x| x.reason.clone()),
                        attrs: vec![KeyValue::new("mpspy.response_bytes", r.bytes as i64)],
                    });
                }
            }
            EventKind::ConnClosed { .. } => {
                let ended: Vec<u64> = self
                    .open
                    .iter()
                    .filter(|(_, c)| **c == e.conn)
                    .map(|(s, _)| *s)
                    .collect();
                let end = self.at(e.t_ns);
                for seq in ended {
                    self.open.remove(&seq);
                    self.send(Msg::End {
                        seq,
                        end,
                        outcome: "unanswered".into(),
                        exception: None,
                        attrs: Vec::new(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        // Calls open when the source ended end with it; then the thread flushes and stops
        // (this waits for the collector, at most the export timeout per program).
        let open: Vec<u64> = self.open.drain().map(|(s, _)| s).collect();
        let end = self.at(self.last_ns);
        if let Some(tx) = self.tx.take() {
            for seq in open {
                let _ = tx.send(Msg::End {
                    seq,
                    end,
                    outcome: "unanswered".into(),
                    exception: None,
                    attrs: Vec::new(),
                });
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_gets_the_traces_path_and_only_plain_http() {
        assert_eq!(
            traces_url("http://localhost:4318").unwrap(),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://tempo:4318/").unwrap(),
            "http://tempo:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom/traces").unwrap(),
            "http://c:4318/custom/traces"
        );
        assert!(traces_url("https://c:4318").unwrap_err().contains("no TLS"));
        assert!(
            traces_url("localhost:4318")
                .unwrap_err()
                .contains("not an http:// URL")
        );
        assert!(traces_url("http:///x").unwrap_err().contains("no host"));
    }
}
