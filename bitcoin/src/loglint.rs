//! Lints from `-debug=ipc` logs, for `mpspy check debug.log`: the misuses a node's log can show
//! by itself, with the same ids, severities and thresholds ([`LintConfig`]) as the lints the
//! engine computes from frames.
//!
//! A log is a weaker witness than the wire: it does not tell connections apart (request numbers
//! count per process), carries no capnp ids, cuts payloads at 200 characters and logs nothing for
//! calls the C++ runtime refuses before libmultiprocess sees them (an unknown ordinal, a call on a
//! released capability). So only what its lines say outright is reported:
//!
//! | lint | from |
//! |---|---|
//! | `thread-busy` | `post request #N {W}` while an earlier request posted to `W` has not ended (and `W` is not inside a callback, where libmultiprocess runs the nested call) |
//! | `null-thread` | `error request #N, no thread specified and no pool configured`, or the `getLocalServer … ThreadMap` error |
//! | `unimplemented-method` | the `… not supported. Please update your client!` stub (`unhandled exception` or `error request`) |
//! | `polling-storm` | `recv request` lines of a long-poll method, per process, faster than the rate (whole-second timestamps count per second) |
//! | `long-poll-at-disconnect` | a long poll ended `Interrupted by disconnect` |
//! | stuck | a request received more than the stuck threshold before the log's last line and never answered, canceled or failed (not `waitTipChanged`/`waitNext`, whose timeout the log does not carry) |
//!
//! The rest (`unknown-ordinal`, `released-without-destroy`, `alive-at-disconnect`,
//! `call-after-release`, `schema-mismatch`) need the frames: record with mpspy.

use std::collections::HashMap;

use mpspy_engine::lint::{LintConfig, LintId, PollRate, Severity};
use mpspy_engine::stats::{LONG_POLL, format_ns};

use crate::debuglog::{Cancel, Kind, Record, Side, parse_line};

/// What a log finding is: a lint, or a request that never got an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A lint (same id as the engine's).
    Lint(LintId),
    /// A request unanswered for longer than the stuck threshold when the log ends.
    Stuck,
}

/// One finding in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFinding {
    /// Line number (1-based) of the line that showed it (for stuck requests: the `recv` line).
    pub line: u64,
    /// The line's timestamp, microseconds since the epoch, when it had one.
    pub time_us: Option<u64>,
    /// `<exe>-<pid>`.
    pub process: String,
    /// What it is.
    pub what: What,
    /// How much it matters (stuck requests count as warnings, as in recordings).
    pub severity: Severity,
    /// The plain-words message.
    pub message: String,
}

/// A request the log has seen begin.
#[derive(Debug, Default)]
struct Req {
    method: Option<String>,
    recv_line: u64,
    recv_us: Option<u64>,
    /// The worker it was posted to, while it runs or waits there.
    worker: Option<String>,
    /// Answered, failed or canceled: no longer pending.
    ended: bool,
}

/// The fold of one log into findings.
#[derive(Debug)]
pub struct LogLints {
    config: LintConfig,
    line: u64,
    ipc_lines: u64,
    last_us: Option<u64>,
    /// Requests by process, then `#N`.
    reqs: HashMap<String, HashMap<u64, Req>>,
    /// Client calls in flight per (process, thread): a worker inside a callback runs the
    /// nested requests its peer makes, which is not two calls on one thread.
    calls_out: HashMap<(String, String), u32>,
    /// Long-poll request rates per (process, method).
    polls: HashMap<(String, String), PollRate>,
    /// `unimplemented-method` once per (process, method), as the engine does per connection.
    unimplemented: std::collections::HashSet<(String, String)>,
    findings: Vec<LogFinding>,
}

impl LogLints {
    /// An empty fold with these thresholds and allow list.
    pub fn new(config: LintConfig) -> Self {
        LogLints {
            config,
            line: 0,
            ipc_lines: 0,
            last_us: None,
            reqs: HashMap::new(),
            calls_out: HashMap::new(),
            polls: HashMap::new(),
            unimplemented: Default::default(),
            findings: Vec::new(),
        }
    }

    /// Parses and folds the next line of the log.
    pub fn line(&mut self, line: &str) {
        self.line += 1;
        if let Some(r) = parse_line(line) {
            self.ipc_lines += 1;
            self.fold(&r);
        }
    }

    /// IPC lines seen so far (none: not a `-debug=ipc` log, or IPC logging was off).
    pub fn ipc_lines(&self) -> u64 {
        self.ipc_lines
    }

    fn lint(&mut self, r: &Record, id: LintId, message: String) {
        if self.config.enabled(id) {
            self.findings.push(LogFinding {
                line: self.line,
                time_us: r.time_us,
                process: r.process.clone(),
                what: What::Lint(id),
                severity: id.severity(),
                message,
            });
        }
    }

    fn fold(&mut self, r: &Record) {
        if r.time_us.is_some() {
            self.last_us = r.time_us;
        }
        if r.side == Some(Side::Client) {
            let key = (r.process.clone(), r.thread.clone());
            let n = self.calls_out.entry(key).or_default();
            match r.kind {
                Kind::ClientSend => *n += 1,
                Kind::ClientRecv | Kind::ClientException { .. } => *n = n.saturating_sub(1),
                _ => {}
            }
            return;
        }
        if let Kind::Unhandled { message } = &r.kind {
            // Names no request: it is the event-loop method in flight on that loop thread.
            let method = self.reqs.get(&r.process).and_then(|reqs| {
                reqs.iter()
                    .filter(|(_, q)| !q.ended && q.worker.is_none())
                    .max_by_key(|(n, _)| **n)
                    .and_then(|(_, q)| q.method.clone())
            });
            self.stub(r, method, message);
            return;
        }
        let Some(n) = r.request else { return };
        let process = r.process.clone();
        match &r.kind {
            Kind::Recv => {
                let method = r.method.clone();
                self.reqs.entry(process.clone()).or_default().insert(
                    n,
                    Req {
                        method: method.clone(),
                        recv_line: self.line,
                        recv_us: r.time_us,
                        ..Req::default()
                    },
                );
                if let (Some(m), Some(t)) = (method, r.time_us)
                    && LONG_POLL.contains(&m.as_str())
                {
                    let rate = self.polls.entry((process, m.clone())).or_default();
                    if rate.call(t.saturating_mul(1000), &self.config) {
                        let per = if r.micros {
                            ""
                        } else {
                            " (whole-second timestamps)"
                        };
                        let msg = format!(
                            "{m} requested more than {} times per second by this process{per}: \
                             a long poll called in a loop",
                            self.config.poll_rate
                        );
                        self.lint(r, LintId::PollingStorm, msg);
                    }
                }
            }
            Kind::Post { worker } => self.post(r, n, worker),
            Kind::Send => self.end(&process, n),
            Kind::Error { message } => {
                let method = self.method_of(&process, n);
                let m = method.clone().unwrap_or_else(|| format!("request #{n}"));
                if message.contains("no thread specified and no pool configured")
                    || message.contains("did you forget to provide a ThreadMap")
                {
                    let msg = format!(
                        "{m} (#{n}) came without a thread to run on and the connection has no \
                         pool: the node refused it"
                    );
                    self.lint(r, LintId::NullThread, msg);
                } else if message.contains("Interrupted by disconnect")
                    && method.as_deref().is_some_and(|m| LONG_POLL.contains(&m))
                {
                    let msg = format!("{m} (#{n}) was still waiting when its client disconnected");
                    self.lint(r, LintId::LongPollAtDisconnect, msg);
                } else {
                    self.stub(r, method, message);
                }
                self.end(&process, n);
            }
            Kind::Canceled(Cancel::BeforeExecuting | Cancel::Interrupted(_)) => {
                self.end(&process, n)
            }
            // Canceled while executing: the worker still runs it until `interrupted`.
            Kind::Canceled(Cancel::WhileExecuting) => {
                if let Some(q) = self.req(&process, n) {
                    q.ended = true;
                }
            }
            _ => {}
        }
    }

    fn req(&mut self, process: &str, n: u64) -> Option<&mut Req> {
        self.reqs.get_mut(process).and_then(|m| m.get_mut(&n))
    }

    fn method_of(&self, process: &str, n: u64) -> Option<String> {
        self.reqs
            .get(process)
            .and_then(|m| m.get(&n))
            .and_then(|q| q.method.clone())
    }

    /// The request is over (its worker free, nothing pending): forgotten, so a long log takes
    /// memory for what is in flight only.
    fn end(&mut self, process: &str, n: u64) {
        if let Some(m) = self.reqs.get_mut(process) {
            m.remove(&n);
        }
    }

    /// Bitcoin Core's answer to a method it dropped from the schema.
    fn stub(&mut self, r: &Record, method: Option<String>, message: &str) {
        if !message.contains("not supported. Please update your client!") {
            return;
        }
        let m = method.unwrap_or_else(|| "a method".into());
        if self.unimplemented.insert((r.process.clone(), m.clone())) {
            let msg = format!(
                "{m} answered \"{}\": the client was built from other schemas",
                message.trim()
            );
            self.lint(r, LintId::UnimplementedMethod, msg);
        }
    }

    fn post(&mut self, r: &Record, n: u64, worker: &str) {
        let process = r.process.clone();
        // The worker is waiting inside a callback of its own call: libmultiprocess runs the
        // nested request there, on purpose.
        let nested = self
            .calls_out
            .get(&(process.clone(), worker.to_string()))
            .is_some_and(|&c| c > 0);
        let busy = self.reqs.get(&process).and_then(|reqs| {
            reqs.iter()
                .filter(|(m, q)| **m != n && q.worker.as_deref() == Some(worker))
                .min_by_key(|(m, _)| **m)
                .map(|(m, q)| (*m, q.method.clone()))
        });
        if let Some(q) = self.req(&process, n) {
            q.worker = Some(worker.to_string());
        }
        if nested {
            return;
        }
        if let Some((earlier, earlier_method)) = busy {
            let m = self
                .method_of(&process, n)
                .unwrap_or_else(|| format!("request #{n}"));
            let e = earlier_method.unwrap_or_else(|| format!("request #{earlier}"));
            let msg = format!(
                "{m} (#{n}) was posted to {worker} while {e} (#{earlier}) still ran there: two \
                 calls in flight on one thread (the second waits)"
            );
            self.lint(r, LintId::ThreadBusy, msg);
        }
    }

    /// Ends the fold: requests never answered by the end of the log, long enough, are stuck.
    pub fn finish(mut self) -> Vec<LogFinding> {
        let Some(last) = self.last_us else {
            return self.findings;
        };
        let limit_us = self.config.stuck_after_ns / 1000;
        let mut stuck = Vec::new();
        for (process, reqs) in &self.reqs {
            for (n, q) in reqs {
                let (Some(method), Some(recv)) = (&q.method, q.recv_us) else {
                    continue;
                };
                // Their limit is their own timeout argument, which the log does not carry.
                if q.ended
                    || matches!(
                        method.as_str(),
                        "Mining.waitTipChanged" | "BlockTemplate.waitNext"
                    )
                {
                    continue;
                }
                let waited = last.saturating_sub(recv);
                if waited > limit_us {
                    stuck.push(LogFinding {
                        line: q.recv_line,
                        time_us: Some(recv),
                        process: process.clone(),
                        what: What::Stuck,
                        severity: Severity::Warning,
                        message: format!(
                            "{method} (#{n}) had no answer {} after it was received, when the \
                             log ends (limit {})",
                            format_ns(waited.saturating_mul(1000)),
                            format_ns(self.config.stuck_after_ns)
                        ),
                    });
                }
            }
        }
        self.findings.extend(stuck);
        self.findings.sort_by_key(|f| f.line);
        self.findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-11-23T11:04:22";
    const LOOP: &str = "{bitcoin-node-1/b-capnp-loop-2}";
    const W: &str = "bitcoin-node-1/b-capnp-loop-3 (from sv2-tp-9/b-sv2-9)";

    fn run(lines: &[String], config: LintConfig) -> Vec<LogFinding> {
        let mut l = LogLints::new(config);
        for line in lines {
            l.line(line);
        }
        l.finish()
    }

    fn ids(f: &[LogFinding]) -> Vec<String> {
        f.iter()
            .map(|f| match &f.what {
                What::Lint(id) => id.to_string(),
                What::Stuck => "stuck".into(),
            })
            .collect()
    }

    fn recv(us: u32, n: u64, method: &str) -> String {
        format!("{T}.{us:06}Z [ipc] {LOOP} IPC server recv request  #{n} {method}$Params")
    }
    fn post(us: u32, n: u64) -> String {
        format!("{T}.{us:06}Z [ipc] {LOOP} IPC server post request  #{n} {{{W}}}")
    }
    fn send(us: u32, n: u64, method: &str) -> String {
        format!("{T}.{us:06}Z [ipc] {LOOP} IPC server send response #{n} {method}$Results")
    }

    #[test]
    fn a_second_request_posted_to_a_running_worker_is_thread_busy() {
        let lines = [
            recv(1, 1, "Mining.waitTipChanged"),
            post(2, 1),
            recv(3, 2, "Mining.getTip"),
            post(4, 2),
            send(5, 1, "Mining.waitTipChanged"),
            send(6, 2, "Mining.getTip"),
            // One after the other: fine.
            recv(7, 3, "Mining.getTip"),
            post(8, 3),
            send(9, 3, "Mining.getTip"),
        ];
        let f = run(&lines, LintConfig::default());
        assert_eq!(ids(&f), ["thread-busy"]);
        assert_eq!(f[0].line, 4);
        assert!(
            f[0].message
                .starts_with("Mining.getTip (#2) was posted to bitcoin-node-1/")
                && f[0]
                    .message
                    .contains("while Mining.waitTipChanged (#1) still ran there"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn a_request_nested_in_a_callback_of_the_worker_is_not_busy() {
        let lines = [
            recv(1, 1, "Chain.doWork"),
            post(2, 1),
            format!("{T}.000003Z [ipc] {{{W}}} IPC client send Callback.call$Params"),
            recv(4, 2, "Chain.nested"),
            post(5, 2),
            send(6, 2, "Chain.nested"),
            format!("{T}.000007Z [ipc] {{{W}}} IPC client recv Callback.call$Results"),
            send(8, 1, "Chain.doWork"),
        ];
        assert!(run(&lines, LintConfig::default()).is_empty());
    }

    #[test]
    fn the_nodes_error_texts_are_null_thread_stub_and_disconnect() {
        let lines = [
            recv(1, 1, "Mining.getTip"),
            format!(
                "{T}.000002Z [error] ipc: {LOOP} IPC server error request #1, no thread specified and no pool configured"
            ),
            recv(3, 2, "Init.makeMiningOld2"),
            format!(
                "{T}.000004Z [error] ipc: {LOOP} IPC server unhandled exception: Old mining interface (@2) not supported. Please update your client!"
            ),
            recv(5, 3, "BlockTemplate.waitNext"),
            post(6, 3),
            format!(
                "{T}.000007Z [error] ipc: {LOOP} IPC server error request #3 BlockTemplate.waitNext$Results kj::Exception: Interrupted by disconnect"
            ),
        ];
        let f = run(&lines, LintConfig::default());
        assert_eq!(
            ids(&f),
            [
                "null-thread",
                "unimplemented-method",
                "long-poll-at-disconnect"
            ]
        );
        assert!(
            f[1].message.starts_with("Init.makeMiningOld2 answered"),
            "{}",
            f[1].message
        );
        let allow = LintConfig {
            allow: vec![LintId::UnimplementedMethod],
            ..LintConfig::default()
        };
        assert_eq!(
            ids(&run(&lines, allow)),
            ["null-thread", "long-poll-at-disconnect"]
        );
    }

    #[test]
    fn long_polls_requested_in_a_loop_are_a_storm_once() {
        // 30 waitTipChanged requests 10 ms apart, each answered at once.
        let lines: Vec<String> = (0..30u32)
            .flat_map(|i| {
                let n = u64::from(i) + 1;
                [
                    recv(i * 10_000, n, "Mining.waitTipChanged"),
                    send(i * 10_000 + 5, n, "Mining.waitTipChanged"),
                ]
            })
            .collect();
        let f = run(&lines, LintConfig::default());
        assert_eq!(ids(&f), ["polling-storm"]);
        assert_eq!(f[0].line, 21, "the 11th request within a second");
    }

    #[test]
    fn a_request_unanswered_at_the_end_of_the_log_is_stuck() {
        let lines = [
            format!(
                "2026-11-23T11:00:00.000000Z [ipc] {LOOP} IPC server recv request  #1 Mining.createNewBlock$Params"
            ),
            format!("2026-11-23T11:00:00.000100Z [ipc] {LOOP} IPC server post request  #1 {{{W}}}"),
            // A waitTipChanged's limit is its timeout, which the log does not have: not judged.
            format!(
                "2026-11-23T11:00:01.000000Z [ipc] {LOOP} IPC server recv request  #2 Mining.waitTipChanged$Params"
            ),
            format!("2026-11-23T11:00:31.000000Z ipc: {LOOP} IPC server: socket connected."),
        ];
        let f = run(&lines, LintConfig::default());
        assert_eq!(ids(&f), ["stuck"]);
        assert_eq!(f[0].line, 1);
        assert!(
            f[0].message.starts_with(
                "Mining.createNewBlock (#1) had no answer 31.00s after it was received"
            ),
            "{}",
            f[0].message
        );
        // Within the threshold: nothing.
        let patient = LintConfig {
            stuck_after_ns: 60_000_000_000,
            ..LintConfig::default()
        };
        assert!(run(&lines, patient).is_empty());
    }
}
