//! The one event model. Live capture, recordings and raw captures produce these; JSON Lines,
//! recordings, stats and the TUI consume them. The JSON form is a documented contract
//! (`docs/json-lines.md`): add fields freely, never change the meaning of one.

use serde::{Deserialize, Serialize};

use crate::lint::{LintId, Severity};
use crate::rpc::{CapDescriptor, ExceptionInfo, MessageTarget, Resolution};
use crate::value::Value;

/// Version of the JSON Lines envelope (the `v` field of every line).
pub const JSON_VERSION: u32 = 1;

/// Appends `e` to `line` as one line of JSON Lines, in its versioned envelope
/// (`{"v":1,"seq":…}` and a newline): the one place that defines what `--json` writes.
///
/// It writes into a `Vec` rather than any writer because serde writes a value token by token,
/// and a `Vec` takes those small writes several times faster than a `BufWriter` does; the
/// caller then writes the whole line at once.
pub fn json_line(e: &Event, line: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Line<'a> {
        v: u32,
        #[serde(flatten)]
        event: &'a Event,
    }
    // Serializing our own types into memory cannot fail (no maps with non-string keys).
    serde_json::to_writer(
        &mut *line,
        &Line {
            v: JSON_VERSION,
            event: e,
        },
    )
    .expect("events serialize");
    line.push(b'\n');
}

/// `Interface.method`, or just the method for interface-less questions (`bootstrap`).
pub fn qualified(interface: &str, method: &str) -> String {
    if interface.is_empty() {
        method.to_string()
    } else {
        format!("{interface}.{method}")
    }
}

/// A connection within a session, numbered from 1 in the order they were seen.
pub type ConnId = u32;

/// Which way a message went. The client is the side that connected or spawned (and sends
/// `Bootstrap`); the server hosts the bootstrap capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Direction {
    /// Client to server.
    #[serde(rename = "c2s")]
    ClientToServer,
    /// Server to client.
    #[serde(rename = "s2c")]
    ServerToClient,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// The side that sends in this direction.
    pub fn sender(self) -> Side {
        match self {
            Direction::ClientToServer => Side::Client,
            Direction::ServerToClient => Side::Server,
        }
    }

    /// Short arrow form for text output.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "→",
            Direction::ServerToClient => "←",
        }
    }
}

/// One side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The connecting/spawning side.
    Client,
    /// The listening/spawned side.
    Server,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// The direction in which this side sends.
    pub fn sends(self) -> Direction {
        match self {
            Side::Client => Direction::ClientToServer,
            Side::Server => Direction::ServerToClient,
        }
    }
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Global order within the session, from 0.
    pub seq: u64,
    /// Nanoseconds since the session started (see [`EventKind::Session`] for the wall clock).
    pub t_ns: u64,
    /// The connection (0 for session-wide events).
    pub conn: ConnId,
    /// The direction, for events caused by a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<Direction>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A process at one end of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Program name.
    pub name: String,
    /// Process id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Command line, when known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
}

/// A call that had not returned when its connection closed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingCall {
    /// `seq` of the call's event: the engine's pairing, so consumers need not match ids.
    pub call_seq: u64,
    /// Who called.
    pub dir: Direction,
    /// The question id.
    pub question: u32,
    /// `Interface.method`.
    pub method: String,
    /// How long it had been waiting.
    pub elapsed_ns: u64,
    /// The server thread (lane) it runs on, by name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// One connection's pending calls, in a [`EventKind::Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnPending {
    /// The connection.
    pub conn: ConnId,
    /// Its pending calls, oldest first.
    pub pending: Vec<PendingCall>,
}

/// A capability, for lifetime events and disconnect reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapInfo {
    /// Stable name within the connection, e.g. `Mining#4`.
    pub cap: String,
    /// Interface name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The side that hosts (exports) it.
    pub host: Side,
    /// Its export id on the host side.
    pub export_id: u32,
    /// References the other side holds.
    pub refs: u32,
    /// True when `destroy` was called on it.
    pub destroyed: bool,
    /// True when its interface has a `destroy` method (so not calling it is a leak).
    pub destroyable: bool,
    /// True when its `destroy` was called and has not returned yet (the object is on its way
    /// out, not leaked).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub destroy_pending: bool,
}

/// How much a [`EventKind::Notice`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeLevel {
    /// What mpspy did (for example: which socket it took over).
    Info,
    /// What it could not do: a part of the session is not recorded, or was recorded differently
    /// than asked.
    Warning,
}

impl NoticeLevel {
    /// `info` or `warning`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeLevel::Info => "info",
            NoticeLevel::Warning => "warning",
        }
    }
}

/// What happened. JSON: `"type"` is the snake_case variant name, `"data"` its fields.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The first event of a session.
    Session {
        /// `mpspy <version>`.
        tool: String,
        /// Where the events come from (`live`, `decode A B`, `replay FILE`).
        source: String,
        /// Schema selection (`master`, `auto`, …).
        schemas: String,
        /// Wall-clock start as Unix nanoseconds, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        start_unix_ns: Option<u64>,
    },
    /// A connection appeared.
    ConnOpened {
        /// Human label, e.g. `bitcoin-cli → bitcoin-node (unix:/…/node.sock)`.
        label: String,
        /// The client process.
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<Peer>,
        /// The server process.
        #[serde(skip_serializing_if = "Option::is_none")]
        server: Option<Peer>,
    },
    /// A connection ended; lists what was still open.
    ConnClosed {
        /// Why: `eof from client`, `reset`, `process exited`, …
        reason: String,
        /// Calls without a return.
        pending_calls: Vec<PendingCall>,
        /// Capabilities still referenced.
        live_caps: Vec<CapInfo>,
    },
    /// `bootstrap`.
    Bootstrap {
        /// Question id.
        question: u32,
        /// Frame size in bytes.
        bytes: usize,
    },
    /// `call`.
    Call(CallEvent),
    /// `return`, paired with its call.
    Return(ReturnEvent),
    /// `finish`.
    Finish {
        /// Question id.
        question: u32,
        /// `seq` of the question's call event, when it was seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        call_seq: Option<u64>,
        /// `Interface.method` of the question, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        /// `releaseResultCaps`.
        release_result_caps: bool,
        /// True when the Finish came before the Return: the caller canceled.
        cancel: bool,
    },
    /// `resolve`.
    Resolve {
        /// The promise export id.
        promise: u32,
        /// What it resolved to.
        resolution: Resolution,
    },
    /// `release`.
    Release {
        /// Export id of the receiver.
        id: u32,
        /// References dropped.
        count: u32,
        /// The capability's name.
        cap: String,
        /// References left after this.
        remaining: u32,
    },
    /// `disembargo`.
    Disembargo {
        /// The target.
        target: MessageTarget,
        /// The context.
        context: String,
    },
    /// `abort`: the sender is closing the connection.
    Abort {
        /// The exception.
        exception: ExceptionInfo,
    },
    /// `unimplemented`: the sender did not understand a message of ours.
    Unimplemented {
        /// The echoed variant.
        which: String,
        /// The echoed question, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        question: Option<u32>,
    },
    /// A level-3 or obsolete message variant, shown raw.
    OtherMessage {
        /// Discriminant.
        which: u16,
        /// rpc.capnp name.
        name: String,
    },
    /// A capability appeared (first export of an id).
    CapCreated(CapInfo),
    /// A capability's last reference was released.
    CapReleased {
        /// The capability.
        #[serde(flatten)]
        cap: CapInfo,
        /// How long it lived.
        lifetime_ns: u64,
    },
    /// Bytes that are not a valid frame or envelope; they were forwarded anyway.
    Undecodable {
        /// Byte offset in this direction's stream.
        offset: u64,
        /// Bytes in the bad frame (or left in the stream when decoding stopped).
        len: usize,
        /// What is wrong.
        reason: String,
        /// The first bytes, in hex.
        hex: String,
        /// True when this direction is no longer decoded (framing lost).
        stopped: bool,
    },
    /// The traffic does not fit the chosen schema set.
    SchemaMismatch {
        /// Interface name or id.
        interface: String,
        /// Method ordinal.
        method_id: u16,
        /// The set in use.
        schemas: String,
        /// Sets that fit what was seen.
        likely: Vec<String>,
        /// What did not fit.
        reason: String,
    },
    /// `--schemas auto` settled on a set for this connection.
    SchemaChosen {
        /// The set.
        schemas: String,
        /// Why.
        reason: String,
    },
    /// Something mpspy itself has to say about the session: what it interposed, what it could
    /// not, what it added to the program's arguments. With `--quiet` these are the only place
    /// it says them (nothing goes to the program's stdout or stderr).
    Notice {
        /// How much it matters.
        level: NoticeLevel,
        /// The notice, one line.
        text: String,
    },
    /// The engine saw an IPC misuse (`docs/lints.md`).
    Lint(Lint),
    /// A call has been pending longer than its limit (`docs/lints.md#stuck-calls`): reported
    /// once per call, while it is still pending, so a hang shows before the connection ends.
    Stuck {
        /// `seq` of the call event.
        call_seq: u64,
        /// Interface name of the call.
        interface: String,
        /// Method name of the call.
        method: String,
        /// The call's question id.
        question: u32,
        /// The server thread (lane) the call runs on, by name.
        #[serde(skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        /// How long the call has been pending.
        pending_ns: u64,
        /// The limit it exceeded.
        limit_ns: u64,
        /// What that server thread ran just before this call, e.g. `Mining.getTip returned
        /// 2.10s ago` (the thread went idle: this call is what hangs) or `… still running
        /// after 30.00s` (this call waits behind it).
        #[serde(skip_serializing_if = "Option::is_none")]
        last_on_thread: Option<String>,
    },
    /// Every pending call, per connection (with its lane), when asked for one (SIGUSR1 to a
    /// live mpspy): what is waiting on what, right now.
    Snapshot {
        /// Connections with pending calls.
        connections: Vec<ConnPending>,
    },
    /// mpspy injected a fault (`--inject`, docs/inject.md): it held a call back, answered it
    /// with an exception instead of forwarding it, or cut the connection. Only ever emitted when
    /// fault injection was asked for.
    Injected {
        /// What was done.
        #[serde(flatten)]
        fault: Fault,
        /// `seq` of the call event it concerns, when it concerns a call that was seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        call_seq: Option<u64>,
    },
    /// Events were dropped because a consumer was slow.
    Dropped {
        /// Events dropped since the previous `dropped` event.
        count: u64,
        /// Total dropped in this session.
        total: u64,
    },
}

/// The kind of fault `--inject` put into a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A call (and what followed it in its direction) was held back before being forwarded.
    Delay,
    /// A call was answered with an exception by mpspy and never reached the callee.
    Exception,
    /// mpspy closed both sides of the connection.
    Disconnect,
}

impl FaultKind {
    /// `delay`, `exception` or `disconnect`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Delay => "delay",
            FaultKind::Exception => "exception",
            FaultKind::Disconnect => "disconnect",
        }
    }
}

/// One fault mpspy injected, as the relay saw it (the engine adds the call's `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What was done.
    pub kind: FaultKind,
    /// `Interface.method` of the call it was done to (none for a timed disconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The call's question id (the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<u32>,
    /// One line for people, e.g. `held 5s before forwarding` or
    /// `answered with overloaded: injected by mpspy; not forwarded`.
    pub detail: String,
}

/// A lint: what the engine found wrong with how the peers use IPC. The optional fields say what
/// it concerns, so tools can jump to the call or capability without parsing `message`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lint {
    /// The stable id, e.g. `thread-busy`.
    pub id: LintId,
    /// How much it matters.
    pub severity: Severity,
    /// What happened, one line, naming the method, capability or thread.
    pub message: String,
    /// `seq` of the call event it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_seq: Option<u64>,
    /// `Interface.method` it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The capability it concerns, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
    /// The server thread it concerns, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

impl Lint {
    /// A lint with its default severity and no subject yet.
    pub fn new(id: LintId, message: String) -> Self {
        Lint {
            id,
            severity: id.severity(),
            message,
            call_seq: None,
            method: None,
            cap: None,
            thread: None,
        }
    }
}

/// A call.
#[derive(Debug, Clone, Serialize)]
pub struct CallEvent {
    /// Question id (per caller).
    pub question: u32,
    /// Interface name (or hex id when unknown).
    pub interface: String,
    /// Method name (or `@N` when unknown).
    pub method: String,
    /// Raw interface id (hex string in JSON: 64-bit ids do not survive JSON doubles).
    #[serde(serialize_with = "hex_id")]
    pub interface_id: u64,
    /// Raw method ordinal.
    pub method_id: u16,
    /// The capability called, by name (e.g. `Echo#3`, or `answer(q0)` when pipelined).
    pub target: String,
    /// The server thread from `Context.thread`, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The caller's thread from `Context.callbackThread`, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_thread: Option<String>,
    /// For a callback: `seq` of the pending call (in the other direction) whose
    /// `callbackThread` this call runs on, the call that caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_seq: Option<u64>,
    /// Decoded params.
    pub params: Value,
    /// The cap table, as sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_table: Vec<CapDescriptor>,
    /// Frame size in bytes.
    pub bytes: usize,
}

/// A return, paired with its call.
#[derive(Debug, Clone, Serialize)]
pub struct ReturnEvent {
    /// The answered question id.
    pub answer: u32,
    /// `seq` of the paired call's event (`None` when the call was not seen): the engine's
    /// pairing, so consumers need not match question ids per connection and direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_seq: Option<u64>,
    /// Interface name of the call, when it was seen.
    pub interface: String,
    /// Method name of the call.
    pub method: String,
    /// `results`, `exception`, `canceled`, …
    pub outcome: String,
    /// Time from call to return.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
    /// Decoded results (for `results`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Value>,
    /// The exception (for `exception`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionInfo>,
    /// Server thread of the call, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The cap table, as sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_table: Vec<CapDescriptor>,
    /// Frame size in bytes.
    pub bytes: usize,
}

impl EventKind {
    /// The JSON `type` string of this event.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Session { .. } => "session",
            EventKind::ConnOpened { .. } => "conn_opened",
            EventKind::ConnClosed { .. } => "conn_closed",
            EventKind::Bootstrap { .. } => "bootstrap",
            EventKind::Call(_) => "call",
            EventKind::Return(_) => "return",
            EventKind::Finish { .. } => "finish",
            EventKind::Resolve { .. } => "resolve",
            EventKind::Release { .. } => "release",
            EventKind::Disembargo { .. } => "disembargo",
            EventKind::Abort { .. } => "abort",
            EventKind::Unimplemented { .. } => "unimplemented",
            EventKind::OtherMessage { .. } => "other_message",
            EventKind::CapCreated(_) => "cap_created",
            EventKind::CapReleased { .. } => "cap_released",
            EventKind::Undecodable { .. } => "undecodable",
            EventKind::SchemaMismatch { .. } => "schema_mismatch",
            EventKind::SchemaChosen { .. } => "schema_chosen",
            EventKind::Notice { .. } => "notice",
            EventKind::Lint(_) => "lint",
            EventKind::Stuck { .. } => "stuck",
            EventKind::Snapshot { .. } => "snapshot",
            EventKind::Injected { .. } => "injected",
            EventKind::Dropped { .. } => "dropped",
        }
    }
}

fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:#018x}"))
}
