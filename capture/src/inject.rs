//! Fault injection (`--inject`): the one place where the relay alters the traffic, and only
//! when asked to. A rule names a method (`BlockTemplate.waitNext`, `Mining.*`) or the
//! connection (`conn`) and a fault: hold the call back for a while, answer it with an
//! exception in the callee's place, or cut the connection.
//!
//! The relay finds the calls with the least decoding that tells them apart: the envelope of
//! every frame (which message, the question id, interface id and method ordinal, the target and
//! the cap table), never the params. A connection relayed without rules never gets here (see
//! [`crate::relay`]), so the byte-transparent hot path costs nothing more.
//!
//! Answering in the callee's place must leave both peers' RPC state as it would be had the
//! callee thrown:
//! - The caller gets a `Return` with the exception for its question and `releaseParamCaps`
//!   set, so it releases the capabilities it exported in the params itself (the callee never
//!   received them, so never will).
//! - The caller's `Finish` for that question is not forwarded: the callee never had the
//!   question.
//! - Calls pipelined on that answer (their target, or a capability in their params, is a
//!   promise in it) are answered with the same exception, as the callee would have; a
//!   `Disembargo` aimed at it is not forwarded either.
//!
//! Limits (docs/inject.md): faults are never put into a direction whose framing was lost; a
//! rule names methods by the schemas in use, so with `--schemas auto` a name that has a
//! different ordinal in another built-in set also matches that ordinal.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use capnp_rpc::rpc_capnp::{exception, message};
use mpspy_schema::SchemaSet;
use mpspy_schema::event::{ConnId, Direction, Fault, FaultKind};
use mpspy_schema::rpc::{self, CapDescriptor, MessageTarget, Rpc};
use mpspy_schema::wire::Message;

use mpspy_engine::Tapped;

/// Why an `--inject` rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The rule could not be read; the text says what is wrong.
    #[error("{0}")]
    Syntax(String),
    /// The rule names a method or interface the schemas do not have.
    #[error("no {what} '{name}' in the schemas ({sets})")]
    Unknown {
        /// `method` or `interface`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// The sets searched.
        sets: String,
    },
}

fn syntax(s: impl Into<String>) -> SpecError {
    SpecError::Syntax(s.into())
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Calls of one method, `Interface.method`.
    Method {
        /// Interface name, e.g. `Mining`.
        interface: String,
        /// Method name, e.g. `getTip`.
        method: String,
    },
    /// Every method of an interface, `Interface.*`.
    Interface(String),
    /// Every call, `*`.
    AnyMethod,
    /// The connection itself, `conn`.
    Conn,
}

/// The exception types of rpc.capnp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionType {
    /// `failed`: something went wrong (what a C++ exception in the callee becomes).
    Failed,
    /// `overloaded`: try again later.
    Overloaded,
    /// `disconnected`: the callee (or the connection to it) is gone.
    Disconnected,
    /// `unimplemented`: the callee does not have the method.
    Unimplemented,
}

impl ExceptionType {
    const NAMES: &'static str = "failed, overloaded, disconnected, unimplemented";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "failed" => ExceptionType::Failed,
            "overloaded" => ExceptionType::Overloaded,
            "disconnected" => ExceptionType::Disconnected,
            "unimplemented" => ExceptionType::Unimplemented,
            _ => return None,
        })
    }

    /// Its name in rpc.capnp (and in `return` events).
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionType::Failed => "failed",
            ExceptionType::Overloaded => "overloaded",
            ExceptionType::Disconnected => "disconnected",
            ExceptionType::Unimplemented => "unimplemented",
        }
    }

    fn wire(self) -> exception::Type {
        match self {
            ExceptionType::Failed => exception::Type::Failed,
            ExceptionType::Overloaded => exception::Type::Overloaded,
            ExceptionType::Disconnected => exception::Type::Disconnected,
            ExceptionType::Unimplemented => exception::Type::Unimplemented,
        }
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Hold the call (and everything after it in its direction) this long, then forward it.
    Delay(Duration),
    /// Answer the call with this exception; it is not forwarded.
    Exception {
        /// The type.
        kind: ExceptionType,
        /// The reason text the caller gets.
        reason: String,
    },
    /// Cut the connection when the call arrives (it is not forwarded).
    Disconnect,
    /// Cut the connection once this many calls went through (at the next one), or this long
    /// after it opened.
    DisconnectAfter(After),
}

/// When `conn:disconnect-after` cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// After this many of the client's calls: the next one is not forwarded and the connection
    /// is cut.
    Calls(u64),
    /// This long after the connection opened.
    Time(Duration),
}

/// One `--inject` rule, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's text, for messages.
    pub text: String,
    /// What it applies to.
    pub target: Target,
    /// What it does.
    pub action: Action,
    /// Apply it to the first N matches only (`,times=N`).
    pub times: Option<u64>,
    /// Apply it to every Nth match only (`,every=N`; 1 = each).
    pub every: u64,
}

const FAULTS: &str = "delay, exception, disconnect, disconnect-after";

impl std::str::FromStr for Rule {
    type Err = SpecError;

    /// `TARGET:FAULT=VALUE[,times=N][,every=N]`, e.g. `BlockTemplate.waitNext:delay=5s`,
    /// `Mining.createNewBlock:exception=overloaded`, `conn:disconnect-after=10`.
    fn from_str(text: &str) -> Result<Self, SpecError> {
        let (target, rest) = text.split_once(':').ok_or_else(|| {
            syntax(format!(
                "'{text}' has no fault; write TARGET:FAULT, e.g. Mining.getTip:exception=overloaded ({FAULTS})"
            ))
        })?;
        let target = match target {
            "conn" => Target::Conn,
            "*" | "*.*" => Target::AnyMethod,
            t => match t.split_once('.') {
                Some((i, "*")) if ident(i) => Target::Interface(i.to_string()),
                Some((i, m)) if ident(i) && ident(m) => Target::Method {
                    interface: i.to_string(),
                    method: m.to_string(),
                },
                _ => {
                    return Err(syntax(format!(
                        "'{t}' is not a target: write Interface.method, Interface.*, * or conn"
                    )));
                }
            },
        };
        // Options come last and never hold commas, so a reason may.
        let mut fault = rest;
        let (mut times, mut every) = (None, 1);
        while let Some((head, opt)) = fault.rsplit_once(',') {
            if let Some(n) = opt.strip_prefix("times=") {
                times = Some(count(n, "times")?);
            } else if let Some(n) = opt.strip_prefix("every=") {
                every = count(n, "every")?.max(1);
            } else {
                break;
            }
            fault = head;
        }
        let (key, value) = fault.split_once('=').unwrap_or((fault, ""));
        let action = match key {
            "delay" => Action::Delay(duration(value, "delay")?),
            "exception" => {
                let (kind, reason) = value.split_once(':').unwrap_or((value, ""));
                let kind = ExceptionType::parse(kind).ok_or_else(|| {
                    syntax(format!(
                        "unknown exception type '{kind}' ({})",
                        ExceptionType::NAMES
                    ))
                })?;
                let reason = if reason.is_empty() {
                    format!("injected by mpspy ({text})")
                } else {
                    reason.to_string()
                };
                Action::Exception { kind, reason }
            }
            "disconnect" if value.is_empty() => Action::Disconnect,
            "disconnect-after" => Action::DisconnectAfter(
                if value.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
                    After::Calls(count(value, "disconnect-after")?)
                } else {
                    After::Time(duration(value, "disconnect-after")?)
                },
            ),
            "disconnect" => {
                return Err(syntax(format!(
                    "disconnect takes no value (for a count or a time: conn:disconnect-after={value})"
                )));
            }
            k => return Err(syntax(format!("unknown fault '{k}' ({FAULTS})"))),
        };
        match (&target, &action) {
            (Target::Conn, Action::DisconnectAfter(_)) => {}
            (Target::Conn, _) => {
                return Err(syntax(
                    "conn takes disconnect-after=N (calls) or =DURATION; faults of calls name a method",
                ));
            }
            (_, Action::DisconnectAfter(_)) => {
                return Err(syntax(
                    "disconnect-after is a connection fault: conn:disconnect-after=N (or =5s); to cut when a method is called: METHOD:disconnect",
                ));
            }
            _ => {}
        }
        Ok(Rule {
            text: text.to_string(),
            target,
            action,
            times,
            every,
        })
    }
}

fn ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn count(s: &str, what: &str) -> Result<u64, SpecError> {
    s.parse()
        .map_err(|_| syntax(format!("{what}={s}: not a whole number")))
}

/// `5s`, `500ms`, `1.5s`, `2m`, `250us`.
fn duration(s: &str, what: &str) -> Result<Duration, SpecError> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let not_one = || syntax(format!("{what}={s}: not a duration (e.g. 5s, 500ms)"));
    let n: f64 = n.parse().map_err(|_| not_one())?;
    let scale = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "" => {
            return Err(syntax(format!(
                "{what}={s}: give a unit (e.g. {s}s or {s}ms)"
            )));
        }
        u => {
            return Err(syntax(format!(
                "{what}={s}: unknown unit '{u}' (us, ms, s, m)"
            )));
        }
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| syntax(format!("{what}={s}: out of range")))
}

/// A duration as a person writes it (`5s`, `250ms`).
pub fn show_duration(d: Duration) -> String {
    if d.as_nanos().is_multiple_of(1_000_000_000) {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:?}", d)
    }
}

/// One rule with its match counter.
#[derive(Debug)]
struct Armed {
    rule: Rule,
    matched: AtomicU64,
}

impl Armed {
    /// Counts a match; whether the rule applies to it (`times`, `every`).
    fn fires(&self) -> bool {
        let n = self.matched.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_multiple_of(self.rule.every)
            && self.rule.times.is_none_or(|t| n / self.rule.every <= t)
    }
}

/// The rules of a session, resolved against its schemas; shared by every relay.
#[derive(Debug)]
pub struct Injector {
    rules: Vec<Armed>,
    /// (interface id, method ordinal) → the rules that name it, in the order given.
    by_method: HashMap<(u64, u16), Vec<usize>>,
    /// Rules for every call (`*`).
    any: Vec<usize>,
    /// `Interface.method` of every method the schemas know, for the events.
    names: HashMap<(u64, u16), String>,
    /// `conn:disconnect-after=N`.
    after_calls: Vec<(usize, u64)>,
    /// `conn:disconnect-after=DURATION`.
    after_time: Vec<(usize, Duration)>,
}

impl Injector {
    /// Resolves `rules` against `sets` (every set the session may decode with: a name matches in
    /// any of them).
    ///
    /// # Errors
    /// When a rule names a method or an interface none of the sets has.
    pub fn new(rules: Vec<Rule>, sets: &[Arc<SchemaSet>]) -> Result<Injector, SpecError> {
        let mut names = HashMap::new();
        let mut by_name: HashMap<(&str, &str), Vec<(u64, u16)>> = HashMap::new();
        let mut interfaces: HashMap<&str, Vec<(u64, u16)>> = HashMap::new();
        for set in sets {
            for (id, iface) in set.interfaces() {
                for m in &iface.methods {
                    names
                        .entry((id, m.ordinal))
                        .or_insert_with(|| format!("{}.{}", iface.name, m.name));
                    by_name
                        .entry((iface.name.as_str(), m.name.as_str()))
                        .or_default()
                        .push((id, m.ordinal));
                    interfaces
                        .entry(iface.name.as_str())
                        .or_default()
                        .push((id, m.ordinal));
                }
            }
        }
        let set_names = || {
            sets.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut by_method: HashMap<(u64, u16), Vec<usize>> = HashMap::new();
        let (mut any, mut after_calls, mut after_time) = (Vec::new(), Vec::new(), Vec::new());
        for (i, rule) in rules.iter().enumerate() {
            let keys = match &rule.target {
                Target::Method { interface, method } => by_name
                    .get(&(interface.as_str(), method.as_str()))
                    .ok_or_else(|| SpecError::Unknown {
                        what: "method",
                        name: format!("{interface}.{method}"),
                        sets: set_names(),
                    })?
                    .clone(),
                Target::Interface(interface) => interfaces
                    .get(interface.as_str())
                    .ok_or_else(|| SpecError::Unknown {
                        what: "interface",
                        name: interface.clone(),
                        sets: set_names(),
                    })?
                    .clone(),
                Target::AnyMethod => {
                    any.push(i);
                    continue;
                }
                Target::Conn => {
                    match rule.action {
                        Action::DisconnectAfter(After::Calls(n)) => after_calls.push((i, n)),
                        Action::DisconnectAfter(After::Time(d)) => after_time.push((i, d)),
                        _ => {}
                    }
                    continue;
                }
            };
            for k in keys {
                let v = by_method.entry(k).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        Ok(Injector {
            rules: rules
                .into_iter()
                .map(|rule| Armed {
                    rule,
                    matched: AtomicU64::new(0),
                })
                .collect(),
            by_method,
            any,
            names,
            after_calls,
            after_time,
        })
    }

    /// The rules as given, for the notices and the recording's header.
    pub fn describe(&self) -> String {
        self.rules
            .iter()
            .map(|a| a.rule.text.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `conn:disconnect-after=DURATION` rules: (rule, after).
    pub(crate) fn timed_disconnects(&self) -> impl Iterator<Item = (usize, Duration)> + '_ {
        self.after_time.iter().copied()
    }

    /// Whether the timed disconnect `rule` applies to this connection (`times`, `every`).
    pub(crate) fn fires(&self, rule: usize) -> bool {
        self.rules[rule].fires()
    }

    /// A rule's text.
    pub(crate) fn text(&self, rule: usize) -> &str {
        &self.rules[rule].rule.text
    }

    fn name(&self, interface: u64, method: u16) -> String {
        self.names
            .get(&(interface, method))
            .cloned()
            .unwrap_or_else(|| format!("{interface:#018x}.@{method}"))
    }
}

/// What the relay does with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Pass it on.
    Forward,
    /// Hold it (and what follows) this long, then pass it on.
    Delay(Duration, Fault),
    /// Do not pass it on; send `frame` back to its sender instead.
    Answer(Fault, Vec<u8>),
    /// Do not pass it on (a `Finish` or `Disembargo` for a question mpspy answered).
    Swallow,
    /// Do not pass it on; cut the connection.
    Cut(Fault),
}

impl Verdict {
    /// What the tap gets besides the frame itself.
    pub(crate) fn tapped(&self, conn: ConnId, dir: Direction, t_ns: u64) -> Option<Tapped> {
        let (fault, frame) = match self {
            Verdict::Forward | Verdict::Swallow => return None,
            Verdict::Delay(_, f) | Verdict::Cut(f) => (f.clone(), None),
            Verdict::Answer(f, frame) => (f.clone(), Some(frame.clone())),
        };
        Some(Tapped::Injected {
            conn,
            dir,
            t_ns,
            fault,
            frame,
        })
    }
}

/// One direction's injection state: the calls it has seen and the questions mpspy answered.
#[derive(Debug)]
pub(crate) struct DirFaults {
    injector: Arc<Injector>,
    dir: Direction,
    /// Calls seen in this direction.
    calls: u64,
    /// Questions of this direction's sender that mpspy answered, with the exception, until
    /// their `Finish`.
    answered: HashMap<u32, (ExceptionType, String)>,
}

impl DirFaults {
    pub(crate) fn new(injector: Arc<Injector>, dir: Direction) -> Self {
        DirFaults {
            injector,
            dir,
            calls: 0,
            answered: HashMap::new(),
        }
    }

    /// Decides what happens to one frame sent in this direction.
    pub(crate) fn verdict(&mut self, frame: &[u8]) -> Verdict {
        let Ok((msg, _)) = Message::parse(frame) else {
            return Verdict::Forward;
        };
        let Ok(rpc) = rpc::decode(&msg) else {
            return Verdict::Forward;
        };
        match rpc {
            Rpc::Call(call) => self.call(&call),
            Rpc::Finish { question, .. } => match self.answered.remove(&question) {
                Some(_) => Verdict::Swallow,
                None => Verdict::Forward,
            },
            Rpc::Disembargo {
                target: MessageTarget::PromisedAnswer(pa),
                ..
            } if self.answered.contains_key(&pa.question) => Verdict::Swallow,
            _ => Verdict::Forward,
        }
    }

    fn call(&mut self, call: &rpc::Call<'_>) -> Verdict {
        self.calls += 1;
        let inj = self.injector.clone();
        let method = inj.name(call.interface_id, call.method_id);
        let fault = |kind, detail: String| Fault {
            kind,
            method: Some(method.clone()),
            question: Some(call.question),
            detail,
        };
        // The client's calls count towards conn:disconnect-after=N.
        if self.dir == Direction::ClientToServer {
            for &(rule, n) in &inj.after_calls {
                if self.calls == n + 1 && inj.fires(rule) {
                    return Verdict::Cut(fault(
                        FaultKind::Disconnect,
                        format!(
                            "cut the connection at call {} instead of forwarding it ({})",
                            self.calls,
                            inj.text(rule)
                        ),
                    ));
                }
            }
        }
        // Pipelined on an answer mpspy gave: the callee never had that question, so the call
        // gets what the callee would have answered, the same exception.
        let on_answered = match &call.target {
            MessageTarget::PromisedAnswer(pa) => Some(pa.question),
            _ => None,
        }
        .into_iter()
        .chain(call.params.cap_table.iter().filter_map(|c| match c {
            CapDescriptor::ReceiverAnswer(pa) => Some(pa.question),
            _ => None,
        }))
        .find(|q| self.answered.contains_key(q));
        if let Some(q) = on_answered {
            let (kind, reason) = self.answered[&q].clone();
            return self.answer(
                call.question,
                kind,
                reason,
                fault(
                    FaultKind::Exception,
                    format!(
                        "answered with {}: pipelined on q{q}, which mpspy answered; not forwarded",
                        kind.as_str()
                    ),
                ),
            );
        }
        let rules = inj
            .by_method
            .get(&(call.interface_id, call.method_id))
            .into_iter()
            .flatten()
            .chain(&inj.any);
        for &i in rules {
            let armed = &inj.rules[i];
            if !armed.fires() {
                continue;
            }
            let text = &armed.rule.text;
            return match &armed.rule.action {
                Action::Delay(d) => Verdict::Delay(
                    *d,
                    fault(
                        FaultKind::Delay,
                        format!("held {} before forwarding ({text})", show_duration(*d)),
                    ),
                ),
                Action::Exception { kind, reason } => self.answer(
                    call.question,
                    *kind,
                    reason.clone(),
                    fault(
                        FaultKind::Exception,
                        format!(
                            "answered with {}: {reason}; not forwarded ({text})",
                            kind.as_str()
                        ),
                    ),
                ),
                Action::Disconnect => Verdict::Cut(fault(
                    FaultKind::Disconnect,
                    format!("cut the connection instead of forwarding the call ({text})"),
                )),
                Action::DisconnectAfter(_) => continue,
            };
        }
        Verdict::Forward
    }

    fn answer(
        &mut self,
        question: u32,
        kind: ExceptionType,
        reason: String,
        fault: Fault,
    ) -> Verdict {
        let frame = exception_return(question, kind, &reason);
        self.answered.insert(question, (kind, reason));
        Verdict::Answer(fault, frame)
    }
}

/// The `Return` a callee sends when a call throws: the answer to `question`, with the exception
/// and `releaseParamCaps` (so the caller releases the capabilities it sent in the params).
pub fn exception_return(question: u32, kind: ExceptionType, reason: &str) -> Vec<u8> {
    let mut b = capnp::message::Builder::new_default();
    {
        let msg = b.init_root::<message::Builder<'_>>();
        let mut ret = msg.init_return();
        ret.set_answer_id(question);
        ret.set_release_param_caps(true);
        let mut e = ret.init_exception();
        e.set_type(kind.wire());
        e.set_reason(reason);
    }
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    capnp::serialize::write_message(&mut out, &b).expect("writes to a Vec");
    out
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capnp_rpc::rpc_capnp::payload;
    use mpspy_schema::rpc::Outcome;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<Rule>().unwrap_err().to_string()
    }

    #[test]
    fn rules_parse() {
        let r = rule("BlockTemplate.waitNext:delay=5s");
        assert_eq!(
            r.target,
            Target::Method {
                interface: "BlockTemplate".into(),
                method: "waitNext".into()
            }
        );
        assert_eq!(r.action, Action::Delay(Duration::from_secs(5)));
        assert_eq!((r.times, r.every), (None, 1));
        assert_eq!(
            rule("Mining.*:delay=250ms").action,
            Action::Delay(Duration::from_millis(250))
        );
        assert_eq!(
            rule("Mining.createNewBlock:exception=overloaded").action,
            Action::Exception {
                kind: ExceptionType::Overloaded,
                reason: "injected by mpspy (Mining.createNewBlock:exception=overloaded)".into()
            }
        );
        // A reason may hold colons and commas; options come last.
        let r = rule("Rpc.executeRpc:exception=failed:node busy: try again, later,times=2,every=3");
        assert_eq!(
            r.action,
            Action::Exception {
                kind: ExceptionType::Failed,
                reason: "node busy: try again, later".into()
            }
        );
        assert_eq!((r.times, r.every), (Some(2), 3));
        assert_eq!(
            rule("conn:disconnect-after=10").action,
            Action::DisconnectAfter(After::Calls(10))
        );
        assert_eq!(
            rule("conn:disconnect-after=1.5s").action,
            Action::DisconnectAfter(After::Time(Duration::from_millis(1500)))
        );
        assert_eq!(rule("*:disconnect").target, Target::AnyMethod);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert_eq!(
            err("Mining.getTip:foo=1"),
            "unknown fault 'foo' (delay, exception, disconnect, disconnect-after)"
        );
        assert!(
            err("Mining.getTip").contains("has no fault"),
            "{}",
            err("Mining.getTip")
        );
        assert!(err("getTip:delay=1s").contains("not a target"));
        assert!(err("Mining.getTip:delay=5").contains("give a unit"));
        assert!(err("Mining.getTip:delay=5h").contains("unknown unit 'h'"));
        assert!(err("Mining.getTip:exception=boom").contains("unknown exception type 'boom'"));
        assert!(err("conn:delay=1s").contains("conn takes disconnect-after"));
        assert!(err("Mining.getTip:disconnect-after=3").contains("connection fault"));
        assert!(err("conn:disconnect-after=x").contains("not a duration"));
        assert!(err("Mining.getTip:delay=1s,times=x").contains("not a whole number"));
    }

    fn master() -> Vec<Arc<SchemaSet>> {
        vec![mpspy_schema::sets::builtin("master").unwrap()]
    }

    fn id_of(name: &str, method: &str) -> (u64, u16) {
        let set = mpspy_schema::sets::builtin("master").unwrap();
        set.interfaces()
            .find(|(_, i)| i.name == name)
            .and_then(|(id, i)| {
                i.methods
                    .iter()
                    .find(|m| m.name == method)
                    .map(|m| (id, m.ordinal))
            })
            .unwrap()
    }

    #[test]
    fn unknown_names_are_refused() {
        let e = Injector::new(vec![rule("Mining.nope:delay=1s")], &master()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no method 'Mining.nope' in the schemas (master)"
        );
        let e = Injector::new(vec![rule("Nope.*:delay=1s")], &master()).unwrap_err();
        assert_eq!(e.to_string(), "no interface 'Nope' in the schemas (master)");
    }

    /// A call frame as capnp-rust's RPC system writes it.
    fn call(question: u32, (iface, method): (u64, u16), on: Option<u32>, caps: &[u32]) -> Vec<u8> {
        let mut b = capnp::message::Builder::new_default();
        {
            let mut c = b.init_root::<message::Builder<'_>>().init_call();
            c.set_question_id(question);
            c.set_interface_id(iface);
            c.set_method_id(method);
            match on {
                Some(q) => c
                    .reborrow()
                    .init_target()
                    .init_promised_answer()
                    .set_question_id(q),
                None => c.reborrow().init_target().set_imported_cap(0),
            }
            let p: payload::Builder<'_> = c.init_params();
            let mut table = p.init_cap_table(caps.len() as u32);
            for (i, q) in caps.iter().enumerate() {
                table
                    .reborrow()
                    .get(i as u32)
                    .init_receiver_answer()
                    .set_question_id(*q);
            }
        }
        let mut out = Vec::new();
        capnp::serialize::write_message(&mut out, &b).unwrap();
        out
    }

    fn finish(question: u32) -> Vec<u8> {
        let mut b = capnp::message::Builder::new_default();
        b.init_root::<message::Builder<'_>>()
            .init_finish()
            .set_question_id(question);
        let mut out = Vec::new();
        capnp::serialize::write_message(&mut out, &b).unwrap();
        out
    }

    fn faults(rules: &[&str]) -> DirFaults {
        let inj = Injector::new(rules.iter().map(|r| rule(r)).collect(), &master()).unwrap();
        DirFaults::new(Arc::new(inj), Direction::ClientToServer)
    }

    /// The synthesized answer decodes (with mpspy's own reader) as the exception return of the
    /// call's question, releasing the param caps.
    fn answered(v: &Verdict) -> (u32, String, String) {
        let Verdict::Answer(_, frame) = v else {
            panic!("not answered: {v:?}")
        };
        let (msg, len) = Message::parse(frame).unwrap();
        assert_eq!(len, frame.len());
        match rpc::decode(&msg).unwrap() {
            Rpc::Return(r) => {
                assert!(r.release_param_caps);
                match r.outcome {
                    Outcome::Exception(e) => (r.answer, e.kind.to_string(), e.reason),
                    _ => panic!("not an exception"),
                }
            }
            _ => panic!("not a return"),
        }
    }

    #[test]
    fn an_answered_call_its_pipelined_calls_and_finish_stay_on_this_side() {
        let mut f = faults(&["Mining.getTip:exception=overloaded:busy"]);
        let get_tip = id_of("Mining", "getTip");
        let other = id_of("Mining", "isTestChain");
        assert_eq!(f.verdict(&call(3, other, None, &[])), Verdict::Forward);
        let v = f.verdict(&call(4, get_tip, None, &[]));
        assert_eq!(answered(&v), (4, "overloaded".into(), "busy".into()));
        let Verdict::Answer(fault, _) = &v else {
            unreachable!()
        };
        assert_eq!(fault.kind, FaultKind::Exception);
        assert_eq!(fault.method.as_deref(), Some("Mining.getTip"));
        assert_eq!(fault.question, Some(4));
        // Pipelined on q4 (as target, or a promise in the params): the same exception.
        let v = f.verdict(&call(5, other, Some(4), &[]));
        assert_eq!(answered(&v), (5, "overloaded".into(), "busy".into()));
        let v = f.verdict(&call(6, other, None, &[4]));
        assert_eq!(answered(&v).0, 6);
        // Pipelined on a forwarded question: forwarded.
        assert_eq!(f.verdict(&call(7, other, Some(3), &[])), Verdict::Forward);
        // Their Finishes are swallowed, once; other Finishes pass.
        assert_eq!(f.verdict(&finish(4)), Verdict::Swallow);
        assert_eq!(f.verdict(&finish(4)), Verdict::Forward);
        assert_eq!(f.verdict(&finish(5)), Verdict::Swallow);
        assert_eq!(f.verdict(&finish(3)), Verdict::Forward);
        // Not a frame mpspy can read: forwarded untouched.
        assert_eq!(f.verdict(&[1, 2, 3]), Verdict::Forward);
    }

    #[test]
    fn times_and_every_pick_the_matches() {
        let mut f = faults(&["Mining.getTip:delay=1ms,every=2,times=2"]);
        let get_tip = id_of("Mining", "getTip");
        let delayed: Vec<bool> = (0..8)
            .map(|q| matches!(f.verdict(&call(q, get_tip, None, &[])), Verdict::Delay(..)))
            .collect();
        assert_eq!(
            delayed,
            [false, true, false, true, false, false, false, false]
        );
    }

    #[test]
    fn disconnect_after_cuts_at_the_next_call() {
        let mut f = faults(&["conn:disconnect-after=2"]);
        let m = id_of("Mining", "getTip");
        assert_eq!(f.verdict(&call(0, m, None, &[])), Verdict::Forward);
        assert_eq!(f.verdict(&call(1, m, None, &[])), Verdict::Forward);
        let Verdict::Cut(fault) = f.verdict(&call(2, m, None, &[])) else {
            panic!("not cut")
        };
        assert_eq!(fault.kind, FaultKind::Disconnect);
        assert_eq!(fault.question, Some(2));
        // The server's calls (callbacks) do not count.
        let inj = Injector::new(vec![rule("conn:disconnect-after=0")], &master()).unwrap();
        let mut back = DirFaults::new(Arc::new(inj), Direction::ServerToClient);
        assert_eq!(back.verdict(&call(0, m, None, &[])), Verdict::Forward);
    }
}
