//! `mpspy diff A B`: two sessions side by side. Per-method counts and latency percentiles with
//! their deltas, the methods one side has and the other does not, and the first calls whose
//! params, outcome or results differ once the two sessions are aligned by their sequence of
//! methods (a longest-common-subsequence diff, so a call more or less on one side does not
//! misalign everything after it). For v30 against master, or before against after a change.
//!
//! Each side is a recording (decoded by the engine: the per-method numbers are its statistics,
//! the calls its paired call and return events) or a `-debug=ipc` log (its per-method
//! numbers; a log cuts payloads at 200 characters, so its calls are not compared).
//!
//! Capability names (`Thread#4`) and thread names (`bitcoin-node-4702/b-capnp-loop-4719`: pids
//! and tids) differ from run to run however equal the sessions are: values are compared with
//! each capability reduced to its interface, and the numbers in thread names masked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use mpspy_engine::SchemaConfig;
use mpspy_engine::stats::format_ns;
use mpspy_schema::EventKind;
use serde_json::{Value as Json, json};

/// One method's numbers on one side.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Row {
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) cancels: u64,
    /// Latency quantiles (p50, p90, p99) in nanoseconds, when there are latencies.
    pub(crate) p50: Option<u64>,
    pub(crate) p90: Option<u64>,
    pub(crate) p99: Option<u64>,
}

/// One call, as compared.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) conn: u32,
    pub(crate) question: u32,
    pub(crate) t_ns: u64,
    pub(crate) params: Json,
    /// `results`, `exception`, `canceled`, …, or `unanswered`.
    pub(crate) outcome: String,
    /// Results, or the exception's reason.
    pub(crate) answer: Json,
}

/// A session, as `diff` sees it.
#[derive(Debug, Default)]
pub(crate) struct Side {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) rows: BTreeMap<String, Row>,
    /// In call order; empty for logs.
    pub(crate) calls: Vec<Call>,
}

/// Capabilities reduced to their interface, recursively: `{"cap": "Thread#4", "index": 0,
/// "interface": "Thread"}` becomes `{"cap": "Thread"}`.
fn normalize(v: &Json) -> Json {
    match v {
        Json::Object(m) if m.contains_key("cap") => {
            let iface = m
                .get("interface")
                .and_then(Json::as_str)
                .map(str::to_string)
                .or_else(|| {
                    m.get("cap")
                        .and_then(Json::as_str)
                        .map(|c| c.split('#').next().unwrap_or(c).to_string())
                })
                .unwrap_or_default();
            json!({ "cap": iface })
        }
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        Json::Array(a) => Json::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// Thread names carry pids and tids: `sv2-tp-5352/b-sv2-5356` → `sv2-tp-N/b-sv2-N`.
fn mask_numbers(v: &Json) -> Json {
    match v {
        Json::String(s) => {
            // Only numbers after a '-' (`-4702`): `sv2` keeps its digit.
            let mut out = String::with_capacity(s.len());
            let mut masking = false;
            for ch in s.chars() {
                if ch.is_ascii_digit() && (masking || out.ends_with('-')) {
                    if !masking {
                        out.push('N');
                    }
                    masking = true;
                } else {
                    out.push(ch);
                    masking = false;
                }
            }
            Json::String(out)
        }
        Json::Object(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), mask_numbers(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The methods whose values are thread names.
fn names_threads(method: &str) -> bool {
    matches!(method, "ThreadMap.makeThread" | "Thread.getName")
}

/// Reads a recording through the engine.
pub(crate) fn recording(path: &Path) -> Result<Side> {
    let (header, choice) = crate::open_recording(path, "diff", None)?;
    let mut calls: Vec<Call> = Vec::new();
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    let config = SchemaConfig {
        choice,
        ..SchemaConfig::default()
    };
    let source = format!("diff {}", path.display());
    let (session, _) = crate::decode_recording(path, config, header.start_unix_ns, &source, |e| {
        match &e.kind {
            EventKind::Call(c) => {
                by_seq.insert(e.seq, calls.len());
                let method = mpspy_schema::event::qualified(&c.interface, &c.method);
                let mut params = normalize(&serde_json::to_value(&c.params).unwrap_or_default());
                if names_threads(&method) {
                    params = mask_numbers(&params);
                }
                calls.push(Call {
                    method,
                    conn: e.conn,
                    question: c.question,
                    t_ns: e.t_ns,
                    params,
                    outcome: "unanswered".into(),
                    answer: Json::Null,
                });
            }
            EventKind::Return(r) => {
                if let Some(&i) = r.call_seq.as_ref().and_then(|s| by_seq.get(s)) {
                    let c = &mut calls[i];
                    c.outcome = r.outcome.clone();
                    c.answer = match (&r.results, &r.exception) {
                        (Some(v), _) => normalize(&serde_json::to_value(v).unwrap_or_default()),
                        (None, Some(x)) => Json::String(x.reason.clone()),
                        (None, None) => Json::Null,
                    };
                    if names_threads(&c.method) {
                        c.answer = mask_numbers(&c.answer);
                    }
                }
            }
            _ => {}
        }
    })?;
    let stats = session.stats();
    let rows = stats
        .lock()
        .methods
        .iter()
        .map(|(name, m)| {
            let row = Row {
                count: m.calls.max(m.count),
                errors: m.errors,
                cancels: m.cancels,
                p50: m.quantile_ns(0.5),
                p90: m.quantile_ns(0.9),
                p99: m.quantile_ns(0.99),
            };
            (name.clone(), row)
        })
        .collect();
    Ok(Side {
        name: path.display().to_string(),
        kind: "recording",
        rows,
        calls,
    })
}

/// Reads a `-debug=ipc` log: the requests its processes answered (or, for a client's log, the
/// calls they made), all processes together.
pub(crate) fn log(path: &Path) -> Result<Side> {
    let log = mpspy_bitcoin::debuglog::LogStats::read_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    if log.ipc_lines == 0 {
        anyhow::bail!(
            "{}: no IPC lines: not a recording, and a text file without -debug=ipc log lines",
            path.display()
        );
    }
    let mut merged: BTreeMap<String, mpspy_bitcoin::debuglog::MethodLog> = BTreeMap::new();
    let servers = log.processes.values().any(|p| !p.server.is_empty());
    for p in log.processes.values() {
        let side = if servers { &p.server } else { &p.client };
        for (m, s) in side {
            merged
                .entry(m.clone())
                .and_modify(|x| x.merge(s))
                .or_insert_with(|| s.clone());
        }
    }
    let rows = merged
        .into_iter()
        .map(|(name, m)| {
            let q = |p| m.total.quantile(p).map(|us| us * 1000);
            let row = Row {
                count: m.count + m.unanswered,
                errors: m.errors,
                cancels: m.cancels,
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
            };
            (name, row)
        })
        .collect();
    Ok(Side {
        name: path.display().to_string(),
        kind: "debug.log",
        rows,
        calls: Vec::new(),
    })
}

/// Where two values differ: the first few paths, `a ≠ b`.
fn differences(path: &str, a: &Json, b: &Json, out: &mut Vec<String>) {
    const MOST: usize = 3;
    if out.len() >= MOST || a == b {
        return;
    }
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                differences(
                    &p,
                    x.get(k).unwrap_or(&Json::Null),
                    y.get(k).unwrap_or(&Json::Null),
                    out,
                );
            }
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ => out.push(format!("{path}: {} ≠ {}", short(a), short(b))),
    }
}

/// A value for a one-line message.
fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// Two calls the alignment paired, and how they differ.
#[derive(Debug, Clone)]
pub(crate) struct Differs {
    pub(crate) a: usize,
    pub(crate) b: usize,
    pub(crate) what: Vec<String>,
}

/// The comparison of two sides.
#[derive(Debug)]
pub(crate) struct Diff {
    pub(crate) only_a: Vec<String>,
    pub(crate) only_b: Vec<String>,
    /// Methods on both sides whose counts differ.
    pub(crate) counts_differ: Vec<String>,
    /// Every aligned pair that differs, in order.
    pub(crate) differs: Vec<Differs>,
    /// Calls compared pairwise (both sides had calls).
    pub(crate) aligned: usize,
    /// False when a side has no calls to compare (a log).
    pub(crate) calls_compared: bool,
}

impl Diff {
    /// True when the sessions did the same: the same methods, as often, with the same params
    /// and answers (latencies always differ and do not count).
    pub(crate) fn same(&self) -> bool {
        self.only_a.is_empty()
            && self.only_b.is_empty()
            && self.counts_differ.is_empty()
            && self.differs.is_empty()
    }
}

/// Compares `a` with `b`.
pub(crate) fn compare(a: &Side, b: &Side) -> Diff {
    let only = |x: &Side, y: &Side| -> Vec<String> {
        x.rows
            .keys()
            .filter(|m| !y.rows.contains_key(*m))
            .cloned()
            .collect()
    };
    let counts_differ = a
        .rows
        .iter()
        .filter(|(m, r)| b.rows.get(*m).is_some_and(|s| s.count != r.count))
        .map(|(m, _)| m.clone())
        .collect();
    let calls_compared = !a.calls.is_empty() && !b.calls.is_empty();
    let mut differs = Vec::new();
    let mut aligned = 0;
    if calls_compared {
        let sa: Vec<&str> = a.calls.iter().map(|c| c.method.as_str()).collect();
        let sb: Vec<&str> = b.calls.iter().map(|c| c.method.as_str()).collect();
        for op in similar::capture_diff_slices(similar::Algorithm::Myers, &sa, &sb) {
            if let similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } = op
            {
                for k in 0..len {
                    let (i, j) = (old_index + k, new_index + k);
                    let (x, y) = (&a.calls[i], &b.calls[j]);
                    aligned += 1;
                    let mut what = Vec::new();
                    differences("params", &x.params, &y.params, &mut what);
                    if x.outcome != y.outcome {
                        what.push(format!("outcome: {} ≠ {}", x.outcome, y.outcome));
                    } else {
                        let label = if x.outcome == "results" {
                            "results"
                        } else {
                            "exception"
                        };
                        differences(label, &x.answer, &y.answer, &mut what);
                    }
                    if !what.is_empty() {
                        differs.push(Differs { a: i, b: j, what });
                    }
                }
            }
        }
    }
    Diff {
        only_a: only(a, b),
        only_b: only(b, a),
        counts_differ,
        differs,
        aligned,
        calls_compared,
    }
}

fn ns(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), format_ns)
}

/// `+12%`, or `-` when a side has no latency.
fn pct(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0 => format!("{:+.0}%", (b as f64 - a as f64) * 100.0 / a as f64),
        _ => "-".into(),
    }
}

/// The text report; `most` caps the differing calls listed.
pub(crate) fn text(a: &Side, b: &Side, d: &Diff, most: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {} ({}, {} calls)", a.name, a.kind, count(a));
    let _ = writeln!(out, "B: {} ({}, {} calls)", b.name, b.kind, count(b));
    let _ = writeln!(
        out,
        "\n{:<40} {:>6} {:>6} {:>6} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6}",
        "method", "A", "B", "Δ", "p50 A", "p50 B", "Δ%", "p99 A", "p99 B", "Δ%"
    );
    let methods: BTreeSet<&String> = a.rows.keys().chain(b.rows.keys()).collect();
    let empty = Row::default();
    for m in methods {
        let x = a.rows.get(m).unwrap_or(&empty);
        let y = b.rows.get(m).unwrap_or(&empty);
        let delta = y.count as i64 - x.count as i64;
        let delta = if delta == 0 {
            "=".to_string()
        } else {
            format!("{delta:+}")
        };
        let _ = writeln!(
            out,
            "{:<40} {:>6} {:>6} {:>6} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6}",
            m,
            x.count,
            y.count,
            delta,
            ns(x.p50),
            ns(y.p50),
            pct(x.p50, y.p50),
            ns(x.p99),
            ns(y.p99),
            pct(x.p99, y.p99)
        );
    }
    if !d.only_a.is_empty() {
        let _ = writeln!(out, "\nonly in A: {}", d.only_a.join(", "));
    }
    if !d.only_b.is_empty() {
        let _ = writeln!(
            out,
            "{}only in B: {}",
            if d.only_a.is_empty() { "\n" } else { "" },
            d.only_b.join(", ")
        );
    }
    if !d.calls_compared {
        let _ = writeln!(
            out,
            "\ncalls not compared: a -debug=ipc log does not carry whole params and results"
        );
    } else if d.differs.is_empty() {
        let _ = writeln!(
            out,
            "\n{} calls aligned by method sequence: params and answers the same",
            d.aligned
        );
    } else {
        let _ = writeln!(
            out,
            "\ncalls that differ ({} of {} aligned by method sequence; the first {}):",
            d.differs.len(),
            d.aligned,
            d.differs.len().min(most)
        );
        for x in d.differs.iter().take(most) {
            let (p, q) = (&a.calls[x.a], &b.calls[x.b]);
            let _ = writeln!(
                out,
                "  {}  A #{} q{} at {:.6}s  B #{} q{} at {:.6}s: {}",
                p.method,
                p.conn,
                p.question,
                p.t_ns as f64 / 1e9,
                q.conn,
                q.question,
                q.t_ns as f64 / 1e9,
                x.what.join("; ")
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if d.same() {
            "mpspy diff: the sessions did the same (latencies aside)"
        } else {
            "mpspy diff: the sessions differ"
        }
    );
    out
}

fn count(s: &Side) -> u64 {
    s.rows.values().map(|r| r.count).sum()
}

/// The `--json` report.
pub(crate) fn json(a: &Side, b: &Side, d: &Diff) -> Json {
    let side = |s: &Side| json!({"file": s.name, "kind": s.kind, "calls": count(s)});
    let row = |r: Option<&Row>| {
        r.map(|r| {
            json!({"count": r.count, "errors": r.errors, "cancels": r.cancels,
                "p50_ns": r.p50, "p90_ns": r.p90, "p99_ns": r.p99})
        })
    };
    let methods: BTreeSet<&String> = a.rows.keys().chain(b.rows.keys()).collect();
    let rows: Vec<Json> = methods
        .into_iter()
        .map(|m| {
            let (x, y) = (a.rows.get(m), b.rows.get(m));
            json!({
                "method": m,
                "a": row(x),
                "b": row(y),
                "count_delta": y.map_or(0, |r| r.count as i64) - x.map_or(0, |r| r.count as i64),
            })
        })
        .collect();
    let call = |c: &Call| json!({"conn": c.conn, "question": c.question, "t_ns": c.t_ns});
    let differs: Vec<Json> = d
        .differs
        .iter()
        .map(|x| {
            json!({"method": a.calls[x.a].method, "a": call(&a.calls[x.a]),
                "b": call(&b.calls[x.b]), "differences": x.what})
        })
        .collect();
    json!({
        "a": side(a),
        "b": side(b),
        "same": d.same(),
        "methods": rows,
        "only_a": d.only_a,
        "only_b": d.only_b,
        "counts_differ": d.counts_differ,
        "calls_compared": d.calls_compared,
        "aligned": d.aligned,
        "calls_differ": differs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, params: Json, answer: Json) -> Call {
        Call {
            method: method.into(),
            conn: 1,
            question: 0,
            t_ns: 0,
            params,
            outcome: "results".into(),
            answer,
        }
    }

    fn side(calls: Vec<Call>) -> Side {
        let mut rows: BTreeMap<String, Row> = BTreeMap::new();
        for c in &calls {
            rows.entry(c.method.clone()).or_default().count += 1;
        }
        Side {
            name: "x".into(),
            kind: "recording",
            rows,
            calls,
        }
    }

    #[test]
    fn thread_names_compare_without_pids_and_tids() {
        let a = json!({"name": "sv2-tp-5352/b-sv2-5356"});
        assert_eq!(mask_numbers(&a), json!({"name": "sv2-tp-N/b-sv2-N"}));
        assert_eq!(
            mask_numbers(&a),
            mask_numbers(&json!({"name": "sv2-tp-77/b-sv2-78"}))
        );
    }

    #[test]
    fn capabilities_compare_by_interface() {
        let a =
            json!({"context": {"thread": {"cap": "Thread#4", "index": 0, "interface": "Thread"}}});
        let b =
            json!({"context": {"thread": {"cap": "Thread#9", "index": 1, "interface": "Thread"}}});
        assert_eq!(normalize(&a), normalize(&b));
    }

    #[test]
    fn an_extra_call_does_not_misalign_the_rest() {
        let a = side(vec![
            call("Init.makeEcho", json!({}), json!({})),
            call("Echo.echo", json!({"echo": "a"}), json!({"result": "a"})),
            call("Echo.echo", json!({"echo": "b"}), json!({"result": "b"})),
        ]);
        let b = side(vec![
            call("Init.makeEcho", json!({}), json!({})),
            call("Mining.getTip", json!({}), json!({})),
            call("Echo.echo", json!({"echo": "a"}), json!({"result": "a"})),
            call("Echo.echo", json!({"echo": "c"}), json!({"result": "c"})),
        ]);
        let d = compare(&a, &b);
        assert_eq!(d.only_b, ["Mining.getTip"]);
        assert_eq!(d.aligned, 3);
        assert_eq!(d.differs.len(), 1);
        assert_eq!((d.differs[0].a, d.differs[0].b), (2, 3));
        assert_eq!(
            d.differs[0].what,
            [
                "params.echo: \"b\" ≠ \"c\"",
                "results.result: \"b\" ≠ \"c\""
            ]
        );
        assert!(!d.same());
        let same = compare(&a, &a);
        assert!(same.same(), "{same:?}");
    }
}
