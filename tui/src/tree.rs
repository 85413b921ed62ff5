//! The detail pane: one call and its return as a foldable tree of lines.
//!
//! Fold state is kept by path (`params.options`, `results.result`), relative to a default, so
//! unfolding `params.context` once keeps it unfolded for the next call too.

use std::collections::HashSet;

use mpspy_bitcoin::data;
use mpspy_engine::stats::format_ns;
use mpspy_schema::rpc::CapDescriptor;
use mpspy_schema::value::{Value, hex};

use crate::state::{CallRow, Status};

/// Bytes of hex dump shown before "… more bytes" (the JSON log has them all).
const HEX_DUMP_MAX: usize = 1024;
/// Data up to this size is shown inline in full.
const INLINE_DATA: usize = 32;

/// What a line is, for styling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// `call …` / `return …` headers.
    Header,
    /// Secondary text under a header.
    Meta,
    Field,
    /// Hex dump.
    Hex,
    /// A Bitcoin reading of a Data value.
    Reading,
    /// An exception or undecodable part.
    Error,
}

/// One line of the tree.
#[derive(Debug, Clone)]
pub(crate) struct TreeLine {
    pub(crate) depth: usize,
    pub(crate) path: String,
    pub(crate) text: String,
    pub(crate) kind: LineKind,
    /// `Some(folded)` when the line can fold.
    pub(crate) fold: Option<bool>,
}

/// Paths folded by default: the `Proxy.Context` (it is on every call) and long Data dumps.
fn folded_by_default(path: &str, value: &Value) -> bool {
    path.ends_with(".context")
        || matches!(value, Value::Data(b) if b.len() > INLINE_DATA)
        || matches!(value, Value::List(items) if items.len() > 16)
}

struct Builder<'a> {
    lines: Vec<TreeLine>,
    toggled: &'a HashSet<String>,
}

impl Builder<'_> {
    fn line(&mut self, depth: usize, path: String, text: String, kind: LineKind) {
        self.lines.push(TreeLine {
            depth,
            path,
            text,
            kind,
            fold: None,
        });
    }

    fn folded(&self, path: &str, value: &Value) -> bool {
        folded_by_default(path, value) != self.toggled.contains(path)
    }

    fn value(&mut self, depth: usize, path: String, name: &str, v: &Value) {
        match v {
            Value::Struct(fields) if !fields.is_empty() => {
                let folded = self.folded(&path, v);
                let text = if folded {
                    format!("{name} {}", v.to_text(8))
                } else {
                    name.to_string()
                };
                self.lines.push(TreeLine {
                    depth,
                    path: path.clone(),
                    text,
                    kind: LineKind::Field,
                    fold: Some(folded),
                });
                if !folded {
                    for (n, child) in fields {
                        self.value(depth + 1, format!("{path}.{n}"), n, child);
                    }
                }
            }
            Value::List(items) if !items.is_empty() => {
                let folded = self.folded(&path, v);
                self.lines.push(TreeLine {
                    depth,
                    path: path.clone(),
                    text: format!("{name} [{} items]", items.len()),
                    kind: LineKind::Field,
                    fold: Some(folded),
                });
                if !folded {
                    for (i, child) in items.iter().enumerate() {
                        self.value(depth + 1, format!("{path}[{i}]"), &format!("[{i}]"), child);
                    }
                }
            }
            Value::Data(bytes) => self.data(depth, path, name, bytes, v),
            Value::Error(e) => {
                self.line(
                    depth,
                    path,
                    format!("{name} = <undecodable: {e}>"),
                    LineKind::Error,
                );
            }
            other => {
                self.line(
                    depth,
                    path,
                    format!("{name} = {}", other.to_text(INLINE_DATA)),
                    LineKind::Field,
                );
            }
        }
    }

    fn data(&mut self, depth: usize, path: String, name: &str, bytes: &[u8], v: &Value) {
        let readings = data::readings(name, bytes);
        let short = bytes.len() <= INLINE_DATA;
        let folded = !short && self.folded(&path, v);
        let head = if short {
            format!("{name} = <{} bytes> {}", bytes.len(), hex(bytes))
        } else {
            let label = readings
                .first()
                .map_or(String::new(), |r| format!(" · {}", r.label));
            format!(
                "{name} = <{} bytes{label}> {}…",
                bytes.len(),
                hex(&bytes[..16])
            )
        };
        self.lines.push(TreeLine {
            depth,
            path: path.clone(),
            text: head,
            kind: LineKind::Field,
            fold: (!short).then_some(folded),
        });
        for r in &readings {
            self.line(
                depth + 1,
                format!("{path}#{}", r.label),
                format!("{}:", r.label),
                LineKind::Reading,
            );
            for l in &r.lines {
                self.line(
                    depth + 2,
                    format!("{path}#{}", r.label),
                    l.clone(),
                    LineKind::Reading,
                );
            }
        }
        if !folded && !short {
            let shown = bytes.len().min(HEX_DUMP_MAX);
            for (i, chunk) in bytes[..shown].chunks(16).enumerate() {
                self.line(
                    depth + 1,
                    format!("{path}@{i}"),
                    format!("{:04x}  {}", i * 16, spaced_hex(chunk)),
                    LineKind::Hex,
                );
            }
            if shown < bytes.len() {
                self.line(
                    depth + 1,
                    format!("{path}@more"),
                    format!("… {} more bytes (--json has them all)", bytes.len() - shown),
                    LineKind::Meta,
                );
            }
        }
    }
}

fn spaced_hex(chunk: &[u8]) -> String {
    chunk.chunks(4).map(hex).collect::<Vec<_>>().join(" ")
}

fn cap_table(caps: &[CapDescriptor]) -> String {
    caps.iter()
        .map(|c| match c {
            CapDescriptor::None => "none".to_string(),
            CapDescriptor::SenderHosted(id) => format!("senderHosted {id}"),
            CapDescriptor::SenderPromise(id) => format!("senderPromise {id}"),
            CapDescriptor::ReceiverHosted(id) => format!("receiverHosted {id}"),
            CapDescriptor::ReceiverAnswer(_) => "receiverAnswer".to_string(),
            CapDescriptor::ThirdPartyHosted => "thirdPartyHosted".to_string(),
            CapDescriptor::Unknown(w) => format!("unknown({w})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tree of `row`, with `time` formatting event times.
pub(crate) fn build(
    row: &CallRow,
    toggled: &HashSet<String>,
    now_ns: u64,
    time: &dyn Fn(u64) -> String,
) -> Vec<TreeLine> {
    let mut b = Builder {
        lines: Vec::new(),
        toggled,
    };
    let callback = if row.dir == mpspy_schema::Direction::ServerToClient {
        " (callback: server → client)"
    } else {
        ""
    };
    b.line(
        0,
        "call".into(),
        format!(
            "call #{} {}  q{}  conn #{}  on {}{callback}",
            row.seq, row.method, row.question, row.conn, row.target
        ),
        LineKind::Header,
    );
    let threads = match (&row.client_thread, &row.server_thread) {
        (None, None) => String::new(),
        (c, s) => format!(
            " · thread {} → {}",
            c.as_deref().unwrap_or("?"),
            s.as_deref().unwrap_or("?")
        ),
    };
    b.line(
        1,
        "call.meta".into(),
        format!("at {}{threads} · {} bytes", time(row.t_ns), row.bytes),
        LineKind::Meta,
    );
    if let Some((kind, detail)) = &row.injected {
        b.line(
            1,
            "call.injected".into(),
            format!("injected by mpspy ({}): {detail}", kind.as_str()),
            LineKind::Header,
        );
    }
    if !row.cap_table.is_empty() {
        b.line(
            1,
            "call.caps".into(),
            format!("cap table: {}", cap_table(&row.cap_table)),
            LineKind::Meta,
        );
    }
    match &row.params {
        Value::Struct(fields) => {
            for (n, v) in fields {
                b.value(1, format!("params.{n}"), n, v);
            }
        }
        Value::Void => {}
        other => b.value(1, "params".into(), "params", other),
    }
    match &row.ret {
        Some(r) => {
            b.line(
                0,
                "return".into(),
                format!(
                    "return #{} {}  in {}",
                    r.seq,
                    row.status.label(),
                    format_ns(r.t_ns.saturating_sub(row.t_ns))
                ),
                LineKind::Header,
            );
            b.line(
                1,
                "return.meta".into(),
                format!("at {} · {} bytes", time(r.t_ns), r.bytes),
                LineKind::Meta,
            );
            if !r.cap_table.is_empty() {
                b.line(
                    1,
                    "return.caps".into(),
                    format!("cap table: {}", cap_table(&r.cap_table)),
                    LineKind::Meta,
                );
            }
            if let Some(ex) = &r.exception {
                b.line(
                    1,
                    "return.exception".into(),
                    format!("exception ({}): {}", ex.kind, ex.reason),
                    LineKind::Error,
                );
                if !ex.trace.is_empty() {
                    b.line(
                        1,
                        "return.trace".into(),
                        format!("trace: {}", ex.trace),
                        LineKind::Error,
                    );
                }
            }
            match &r.results {
                Some(Value::Struct(fields)) => {
                    for (n, v) in fields {
                        b.value(1, format!("results.{n}"), n, v);
                    }
                }
                Some(Value::Void) | None => {}
                Some(other) => b.value(1, "results".into(), "results", other),
            }
        }
        None => {
            let text = match row.status {
                Status::Disconnected => format!(
                    "no return: the connection closed after {}",
                    format_ns(row.latency_ns(now_ns))
                ),
                Status::Canceled => format!(
                    "no return yet: canceled by the caller, waiting {}",
                    format_ns(row.latency_ns(now_ns))
                ),
                _ => format!(
                    "no return yet: waiting {}",
                    format_ns(row.latency_ns(now_ns))
                ),
            };
            b.line(0, "return".into(), text, LineKind::Header);
        }
    }
    b.lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::state::State;

    fn tree_of(method: &str, toggled: &HashSet<String>) -> Vec<TreeLine> {
        let mut s = State::new(100);
        for e in fixture::session() {
            s.apply(&e);
        }
        let row = s.calls.iter().find(|r| r.method == method).unwrap();
        build(row, toggled, s.last_ns, &|t| format!("+{t}"))
    }

    #[test]
    fn context_is_folded_until_toggled() {
        let lines = tree_of("Echo.echo", &HashSet::new());
        let ctx = lines.iter().find(|l| l.path == "params.context").unwrap();
        assert_eq!(ctx.fold, Some(true));
        assert!(ctx.text.contains("Thread#3"), "{}", ctx.text);
        assert!(!lines.iter().any(|l| l.path == "params.context.thread"));
        let open = tree_of("Echo.echo", &HashSet::from(["params.context".to_string()]));
        assert!(open.iter().any(|l| l.path == "params.context.thread"));
    }

    #[test]
    fn header_data_gets_readings_and_a_folded_dump() {
        let lines = tree_of("BlockTemplate.getBlockHeader", &HashSet::new());
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let all = text.join("\n");
        assert!(
            all.contains("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"),
            "{all}"
        );
        assert!(!lines.iter().any(|l| l.kind == LineKind::Hex));
        let open = tree_of(
            "BlockTemplate.getBlockHeader",
            &HashSet::from(["results.result".to_string()]),
        );
        assert_eq!(open.iter().filter(|l| l.kind == LineKind::Hex).count(), 5);
    }

    #[test]
    fn pending_exception_and_hash_lines() {
        let all = |m| {
            tree_of(m, &HashSet::new())
                .iter()
                .map(|l| l.text.clone())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(all("Mining.waitTipChanged").contains("connection closed after 2.00s"));
        assert!(all("Mining.checkBlock").contains("SpanReader::read(): end of data"));
        // A 32-byte hash reads in display order.
        assert!(
            all("Mining.getTip")
                .contains("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
        );
    }
}
