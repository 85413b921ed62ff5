//! The filter language of the calls list.
//!
//! Terms separated by spaces; a row is shown when every term matches. A term starting with `-`
//! or `!` is negated.
//!
//! | term | matches |
//! |---|---|
//! | `method:Mining.*` | `Interface.method` against a glob (`*`, `?`); without glob characters, a substring |
//! | `iface:BlockTemplate` | the interface name, same rules |
//! | `status:error` | `ok`, `error` (= `exception`), `canceled`, `pending`, `disconnected`, `stuck` (reported stuck by the engine, returned since or not), `injected` (a fault `--inject` put in); `a,b` for either |
//! | `latency>10ms` | also `>=`, `<`, `<=`; units `ns`, `us`/`µs`, `ms`, `s`; pending calls count their time so far |
//! | `conn:2` | connection number; `conn:1,3` for either |
//! | `thread:pyclient` | a substring of the caller's or the callee's thread name |
//! | `cap:Mining#2` | a substring of the target capability |
//! | a bare word | a substring of the method, target or thread names |
//!
//! Matching is case-insensitive.

use crate::state::{CallRow, Status};

/// A parse error, naming the term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {term:?}: {why}")]
pub struct FilterError {
    term: String,
    why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Method(String),
    Iface(String),
    /// Any of these statuses, or (when set) reported stuck, or (when set) given a fault by
    /// `--inject`.
    Status(Vec<Status>, bool, bool),
    Latency(Cmp, u64),
    Conn(Vec<u32>),
    Thread(String),
    Cap(String),
    Word(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Term {
    negate: bool,
    test: Test,
}

/// A parsed filter; the empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter {
    terms: Vec<Term>,
    text: String,
}

impl Filter {
    /// Parses `text`.
    pub(crate) fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut terms = Vec::new();
        for raw in text.split_whitespace() {
            let err = |why: &str| FilterError {
                term: raw.to_string(),
                why: why.to_string(),
            };
            let (negate, body) = match raw.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest),
                _ => (false, raw),
            };
            let test = if let Some(rest) = strip_key(body, "latency") {
                let (cmp, value) = if let Some(v) = rest.strip_prefix(">=") {
                    (Cmp::Ge, v)
                } else if let Some(v) = rest.strip_prefix("<=") {
                    (Cmp::Le, v)
                } else if let Some(v) = rest.strip_prefix('>') {
                    (Cmp::Gt, v)
                } else if let Some(v) = rest.strip_prefix('<') {
                    (Cmp::Lt, v)
                } else {
                    return Err(err("latency needs >, >=, < or <= (e.g. latency>10ms)"));
                };
                Test::Latency(cmp, parse_duration(value).map_err(|w| err(&w))?)
            } else if let Some((key, value)) = body.split_once(':') {
                if value.is_empty() {
                    return Err(err("empty value"));
                }
                let value_lc = value.to_lowercase();
                match key.to_lowercase().as_str() {
                    "method" | "m" => Test::Method(value_lc),
                    "iface" | "interface" | "i" => Test::Iface(value_lc),
                    "thread" | "t" => Test::Thread(value_lc),
                    "cap" | "target" => Test::Cap(value_lc),
                    "conn" | "c" => Test::Conn(
                        value
                            .split(',')
                            .map(|n| n.trim_start_matches('#').parse::<u32>())
                            .collect::<Result<_, _>>()
                            .map_err(|_| err("conn takes connection numbers, e.g. conn:2"))?,
                    ),
                    "status" | "s" => {
                        let stuck = value_lc.split(',').any(|v| v == "stuck");
                        let injected = value_lc.split(',').any(|v| v == "injected");
                        Test::Status(
                            value_lc
                                .split(',')
                                .filter(|v| *v != "stuck" && *v != "injected")
                                .map(parse_status)
                                .collect::<Option<_>>()
                                .ok_or_else(|| {
                                    err("status is one of ok, error, canceled, pending, \
                                         disconnected, stuck, injected")
                                })?,
                            stuck,
                            injected,
                        )
                    }
                    _ => {
                        return Err(err(
                            "unknown key; use method:, iface:, status:, latency>, conn:, thread:, cap:",
                        ));
                    }
                }
            } else {
                Test::Word(body.to_lowercase())
            };
            terms.push(Term { negate, test });
        }
        Ok(Filter {
            terms,
            text: text.trim().to_string(),
        })
    }

    /// The text it was parsed from.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether `row` is shown at time `now_ns`.
    pub(crate) fn matches(&self, row: &CallRow, now_ns: u64) -> bool {
        self.terms
            .iter()
            .all(|t| t.negate != t.test.matches(row, now_ns))
    }
}

fn strip_key<'a>(term: &'a str, key: &str) -> Option<&'a str> {
    let head = term.get(..key.len())?;
    head.eq_ignore_ascii_case(key)
        .then(|| &term[key.len()..])
        .filter(|rest| rest.starts_with(['<', '>', '=']) || rest.is_empty())
}

fn parse_status(s: &str) -> Option<Status> {
    Some(match s {
        "ok" => Status::Ok,
        "error" | "exception" | "err" => Status::Exception,
        "canceled" | "cancelled" | "cancel" => Status::Canceled,
        "pending" => Status::Pending,
        "disconnected" | "lost" => Status::Disconnected,
        _ => return None,
    })
}

/// `10ms`, `1.5s`, `250us`, `800ns`; a bare number is milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10ms, 1.5s, 250us)"))?;
    let scale = match unit.to_lowercase().as_str() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "" | "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        other => return Err(format!("unknown unit {other:?} (ns, us, ms, s)")),
    };
    Ok((n * scale).round() as u64)
}

/// Glob with `*` and `?`, or a substring when the pattern has neither; `pattern` is lower-case,
/// `text` any case. No allocation: this runs for every row on every frame.
fn like(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return contains(text, pattern);
    }
    glob(pattern.as_bytes(), text.as_bytes())
}

/// ASCII case-insensitive substring test (`needle` lower-case).
fn contains(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear enough for method names.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti].to_ascii_lowercase()) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl Test {
    fn matches(&self, row: &CallRow, now_ns: u64) -> bool {
        let threads = || {
            [&row.client_thread, &row.server_thread]
                .into_iter()
                .flatten()
        };
        match self {
            Test::Method(p) => like(p, &row.method),
            Test::Iface(p) => like(p, &row.interface),
            Test::Status(set, stuck, injected) => {
                set.contains(&row.status)
                    || (*stuck && row.stuck)
                    || (*injected && row.injected.is_some())
            }
            Test::Latency(cmp, limit) => {
                let l = row.latency_ns(now_ns);
                match cmp {
                    Cmp::Lt => l < *limit,
                    Cmp::Le => l <= *limit,
                    Cmp::Gt => l > *limit,
                    Cmp::Ge => l >= *limit,
                }
            }
            Test::Conn(ids) => ids.contains(&row.conn),
            Test::Thread(s) => threads().any(|t| contains(t, s)),
            Test::Cap(s) => contains(&row.target, s),
            Test::Word(w) => {
                contains(&row.method, w)
                    || contains(&row.target, w)
                    || threads().any(|t| contains(t, w))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::state::State;

    fn shown(filter: &str) -> Vec<String> {
        let mut s = State::new(1000);
        for e in fixture::session() {
            s.apply(&e);
        }
        let f = Filter::parse(filter).unwrap();
        s.calls
            .iter()
            .filter(|r| f.matches(r, s.last_ns))
            .map(|r| r.method.clone())
            .collect()
    }

    #[test]
    fn method_glob_and_substring() {
        assert_eq!(
            shown("method:Mining.*"),
            [
                "Mining.getTip",
                "Mining.createNewBlock",
                "Mining.checkBlock",
                "Mining.waitTipChanged"
            ]
        );
        assert_eq!(shown("method:echo.echo").len(), 3);
        // No glob characters: substring, case-insensitive.
        assert_eq!(
            shown("method:TIP"),
            ["Mining.getTip", "Mining.waitTipChanged"]
        );
        assert_eq!(shown("method:*.make?ining"), ["Init.makeMining"]);
        assert!(shown("method:Mining.").len() == 4);
    }

    #[test]
    fn status_latency_conn_thread() {
        assert_eq!(shown("status:error"), ["Mining.checkBlock"]);
        assert_eq!(shown("status:disconnected"), ["Mining.waitTipChanged"]);
        assert_eq!(
            shown("status:error,disconnected"),
            ["Mining.checkBlock", "Mining.waitTipChanged"]
        );
        // createNewBlock took 13ms, executeRpc 2.4ms, waitTipChanged 2s until the disconnect.
        assert_eq!(
            shown("latency>10ms"),
            ["Mining.createNewBlock", "Mining.waitTipChanged"]
        );
        assert_eq!(shown("latency>=2s"), ["Mining.waitTipChanged"]);
        assert_eq!(shown("latency<100us").len(), 2);
        assert_eq!(shown("conn:1").len(), 3);
        assert_eq!(shown("conn:1,2").len(), shown("").len());
        assert_eq!(shown("thread:b-cli"), ["Init.makeRpc", "Rpc.executeRpc"]);
        assert_eq!(
            shown("cap:blocktemplate#3"),
            ["BlockTemplate.getBlockHeader"]
        );
    }

    #[test]
    fn terms_combine_and_negate() {
        assert_eq!(
            shown("method:Mining.* -status:ok"),
            ["Mining.checkBlock", "Mining.waitTipChanged"]
        );
        assert_eq!(
            shown("conn:2 !method:echo.*").len(),
            shown("conn:2").len() - 4
        );
        assert_eq!(shown("pyclient echo").len(), 5);
        assert_eq!(
            shown("method:Mining.* status:error latency>10ms conn:2").len(),
            0
        );
        assert!(Filter::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_terms_name_the_term() {
        let e = Filter::parse("method:Echo.* status:broken").unwrap_err();
        assert!(e.to_string().contains("\"status:broken\""), "{e}");
        assert!(e.to_string().contains("ok, error"), "{e}");
        let e = Filter::parse("latency=5ms").unwrap_err();
        assert!(e.to_string().contains("latency"), "{e}");
        let e = Filter::parse("latency>5parsecs").unwrap_err();
        assert!(e.to_string().contains("unknown unit"), "{e}");
        let e = Filter::parse("colour:red").unwrap_err();
        assert!(e.to_string().contains("unknown key"), "{e}");
        assert!(Filter::parse("conn:x").is_err());
        assert!(Filter::parse("method:").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10ms"), Ok(10_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("250us"), Ok(250_000));
        assert_eq!(parse_duration("250µs"), Ok(250_000));
        assert_eq!(parse_duration("7"), Ok(7_000_000));
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"*.echo", b"echo.echo"));
        assert!(!glob(b"?", b""));
    }
}
