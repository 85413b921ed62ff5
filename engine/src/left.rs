//! What a connection left behind when it closed, in plain words: the calls nobody answered and
//! the objects nobody destroyed, worded the way a developer would say them in an issue
//! ("BlockTemplate#12 was never destroyed; Mining.waitTipChanged (q7) had been pending 31.00s
//! when the client closed the connection"). The `conn_closed` event has the same facts as data;
//! the text output, the UI and the end-of-run summary all word them with [`left_behind`].

use mpspy_schema::event::{CapInfo, PendingCall};

use crate::stats::format_ns;

/// A capability whose object would have been freed by a `destroy` that never came (one on its
/// way frees it).
pub fn never_destroyed(cap: &CapInfo) -> bool {
    cap.destroyable && !cap.destroyed && !cap.destroy_pending
}

/// "when the client closed the connection", from a `conn_closed` reason.
fn when(reason: &str) -> String {
    // The relay's reasons name the side that ended the connection first; anything else (an
    // error, the program's exit) is quoted as it is.
    match reason {
        "client closed the connection" | "server closed the connection" => {
            format!("when the {reason}")
        }
        _ => format!("when the connection ended ({reason})"),
    }
}

/// The sentence for a connection that closed with `pending` calls unanswered and `live`
/// capabilities still referenced; `None` when it left nothing that matters (capabilities
/// without `destroy`, such as `Init` or a `Thread`, are released with the connection and are
/// not named).
pub fn left_behind(reason: &str, pending: &[PendingCall], live: &[CapInfo]) -> Option<String> {
    let mut parts: Vec<String> = live
        .iter()
        .filter(|c| never_destroyed(c))
        .map(|c| format!("{} was never destroyed", c.cap))
        .collect();
    let calls: Vec<String> = pending
        .iter()
        .map(|p| {
            let lane = p
                .thread
                .as_deref()
                .map(|t| format!(" on {t}"))
                .unwrap_or_default();
            format!(
                "{} (q{}{lane}) had been pending {}",
                p.method,
                p.question,
                format_ns(p.elapsed_ns)
            )
        })
        .collect();
    match (parts.is_empty(), calls.is_empty()) {
        (true, true) => None,
        (_, true) => Some(format!("{} {}", parts.join("; "), when(reason))),
        _ => {
            parts.extend(calls);
            Some(format!("{} {}", parts.join("; "), when(reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use mpspy_schema::{Direction, Side};

    use super::*;

    fn cap(name: &str, destroyable: bool, destroyed: bool) -> CapInfo {
        CapInfo {
            cap: name.into(),
            interface: name.split('#').next().map(str::to_string),
            host: Side::Server,
            export_id: 1,
            refs: 1,
            destroyed,
            destroyable,
            destroy_pending: false,
        }
    }

    fn call(method: &str, question: u32, secs: u64) -> PendingCall {
        PendingCall {
            call_seq: 1,
            dir: Direction::ClientToServer,
            question,
            method: method.into(),
            elapsed_ns: secs * 1_000_000_000,
            thread: Some("Thread#3".into()),
        }
    }

    #[test]
    fn names_what_was_never_destroyed_and_what_was_still_pending() {
        let live = [
            cap("Init#0", false, false),
            cap("Thread#3", false, false),
            cap("BlockTemplate#12", true, false),
            cap("Echo#5", true, true),
        ];
        let pending = [call("BlockTemplate.waitNext", 7, 31)];
        assert_eq!(
            left_behind("client closed the connection", &pending, &live).unwrap(),
            "BlockTemplate#12 was never destroyed; BlockTemplate.waitNext (q7 on Thread#3) had \
             been pending 31.00s when the client closed the connection"
        );
    }

    #[test]
    fn a_clean_close_leaves_nothing_to_say() {
        let live = [cap("Init#0", false, false), cap("Echo#5", true, true)];
        assert_eq!(
            left_behind("client closed the connection", &[], &live),
            None
        );
    }

    #[test]
    fn a_destroy_on_its_way_is_not_a_leak_but_is_a_pending_call() {
        let mut echo = cap("Echo#5", true, false);
        echo.destroy_pending = true;
        let live = [echo];
        let pending = [call("Echo.destroy", 4, 0)];
        let s = left_behind("bitcoin-node exited (code 0)", &pending, &live).unwrap();
        assert!(!s.contains("never destroyed"), "{s}");
        assert!(
            s.ends_with("when the connection ended (bitcoin-node exited (code 0))"),
            "{s}"
        );
    }
}
