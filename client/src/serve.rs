//! Answering calls from a recording: the server side of `mpspy serve` (docs/serve.md).
//!
//! A [`Table`] holds what a recorded server answered: per interface and method, the client's
//! calls in recording order with their params and their results or exception. Each served
//! connection gets its own [`Replies`] over it, so every connection starts with every
//! recorded answer unused.
//!
//! # Matching
//!
//! A call of `Interface.method` is answered by:
//!
//! 1. the oldest unused recorded call of that method whose params are equal, compared as JSON
//!    after [`matchable`] has removed the capabilities (`Proxy.Context`, which names this
//!    run's threads, and any other capability field);
//! 2. else, unless matching is strict, the oldest unused recorded call of that method, whatever
//!    its params (the served session says so in a [`Note::Answered`] with `same_params`
//!    false);
//! 3. else nothing: the call fails with an exception of type `failed` whose reason starts with
//!    `mpspy serve:` and names the method and what the recording had.
//!
//! A recorded call is used once. Recorded exceptions are answered as exceptions (same type,
//! same reason). Calls the recording has no answer for (canceled, or pending when it ended)
//! and the server's callbacks into the client are not in the table.
//!
//! # What the runtime answers itself
//!
//! Like the node, not from the recording: `Init.construct` (a new ThreadMap of this
//! connection; the client's ThreadMap is kept for the connection's lifetime), everything on
//! ThreadMaps and Threads (`mpspy_client::threads`: makeThread, makePool, getName and the
//! per-Thread turn queues that every method with a `Context` waits in), and `destroy` on any
//! object (answered at once on its Thread; the object goes when the client releases it).
//!
//! Capabilities in recorded results become new objects of the interface the schema gives the
//! field (`Init.makeMining` returns a Mining object whose calls are answered from Mining's
//! recorded calls); a ThreadMap or Thread in results is a real one of this connection.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use capnp::any_pointer;
use capnp::capability::{
    DispatchCallResult, FromClientHook, FromServer, Params, Promise, Results, Server,
};
use capnp::private::capability::ClientHook;
use capnp::traits::{FromPointerReader, Imbue, ImbueMut};
use mpspy_schema::Value;
use mpspy_schema::decode::{Lookup, Walker};
use mpspy_schema::encode::{self, CapSource};
use mpspy_schema::event::{Direction, Event, EventKind};
use mpspy_schema::registry::{FieldKind, Node, SchemaSet, Type};
use mpspy_schema::wire::Message;
use serde_json::{Map, Value as Json};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net;
use crate::schema::proxy_capnp::context;
use crate::threads::{self, ConnThreads, Names};

/// libmultiprocess's per-call struct, found by name as the runtime finds it.
const CONTEXT: &str = "Context";

/// How a recorded call was answered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Answer {
    /// Results, as the decoder's JSON (what the schema encoder takes back).
    Results(Json),
    /// An exception.
    Exception {
        /// `failed`, `overloaded`, `disconnected` or `unimplemented`.
        kind: String,
        /// The reason, as recorded.
        reason: String,
    },
}

/// One recorded call of the client's and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `seq` of the call's event in the recording (what `mpspy replay --json` shows).
    pub seq: u64,
    /// The params as compared ([`matchable`]).
    pub params: Json,
    /// The answer.
    pub answer: Answer,
    /// How long the recorded call took, call to return.
    pub latency: Duration,
}

/// The recorded calls of one method.
#[derive(Debug, Clone, Default)]
struct Method {
    /// `Interface.method`.
    name: String,
    calls: Vec<Recorded>,
}

/// Every answerable recorded call, per `(interface id, method ordinal)`, in recording order.
#[derive(Debug, Clone)]
pub struct Table {
    set: Arc<SchemaSet>,
    methods: HashMap<(u64, u16), Method>,
    /// Client calls in the recording without an answer to give (canceled, or still pending).
    unanswered: usize,
}

impl Table {
    /// The schema set the table is read with, and its objects served in.
    pub fn set(&self) -> &Arc<SchemaSet> {
        &self.set
    }

    /// The interface the bootstrap capability is served as: `Init`.
    pub fn bootstrap(&self) -> Option<u64> {
        self.set
            .interfaces()
            .find(|(_, i)| i.name == "Init")
            .map(|(id, _)| id)
    }

    /// Recorded calls that can be answered.
    pub fn len(&self) -> usize {
        self.methods.values().map(|m| m.calls.len()).sum()
    }

    /// True when nothing can be answered from the recording.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Interface.method` and how many recorded calls it has, sorted by name.
    pub fn methods(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .methods
            .values()
            .map(|m| (m.name.clone(), m.calls.len()))
            .collect();
        v.sort();
        v
    }

    /// Client calls the recording has no answer for.
    pub fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// A table of `calls` (`(interface id, method ordinal, recorded call)`), for tests and tools
    /// that make their own.
    pub fn from_calls(
        set: Arc<SchemaSet>,
        calls: impl IntoIterator<Item = (u64, u16, Recorded)>,
    ) -> Table {
        let mut methods: HashMap<(u64, u16), Method> = HashMap::new();
        for (iface, ordinal, rec) in calls {
            let name = method_name(&set, iface, ordinal);
            methods
                .entry((iface, ordinal))
                .or_insert_with(|| Method {
                    name,
                    calls: Vec::new(),
                })
                .calls
                .push(rec);
        }
        Table {
            set,
            methods,
            unanswered: 0,
        }
    }
}

fn method_name(set: &SchemaSet, iface: u64, ordinal: u16) -> String {
    match set.method(iface, ordinal) {
        Some((i, m)) => format!("{}.{}", i.name, m.name),
        None => format!("{iface:#018x}.@{ordinal}"),
    }
}

/// A call seen in the recording, waiting for its return.
#[derive(Debug)]
struct Seen {
    interface_id: u64,
    method_id: u16,
    params: Value,
    answer: Option<(RawAnswer, Duration)>,
}

#[derive(Debug)]
enum RawAnswer {
    Results(Value),
    Exception { kind: String, reason: String },
}

/// Builds a [`Table`] from a recording's events, in one pass.
#[derive(Debug, Default)]
pub struct TableBuilder {
    /// By the call's `seq`, so the table keeps the order of the calls, not of their returns.
    calls: BTreeMap<u64, Seen>,
    chosen: Option<String>,
}

impl TableBuilder {
    /// Nothing seen yet.
    pub fn new() -> Self {
        TableBuilder::default()
    }

    /// Takes in one event of the recording's decode.
    pub fn event(&mut self, e: &Event) {
        match &e.kind {
            // The client's calls; the server's callbacks are not the server's to answer.
            EventKind::Call(c) if e.dir == Some(Direction::ClientToServer) => {
                self.calls.insert(
                    e.seq,
                    Seen {
                        interface_id: c.interface_id,
                        method_id: c.method_id,
                        params: c.params.clone(),
                        answer: None,
                    },
                );
            }
            EventKind::Return(r) => {
                let Some(seen) = r.call_seq.and_then(|s| self.calls.get_mut(&s)) else {
                    return;
                };
                let latency = Duration::from_nanos(r.latency_ns.unwrap_or(0));
                let answer = match (r.outcome.as_str(), &r.results, &r.exception) {
                    ("results", results, _) => {
                        RawAnswer::Results(results.clone().unwrap_or(Value::Null))
                    }
                    ("exception", _, Some(x)) => RawAnswer::Exception {
                        kind: x.kind.to_string(),
                        reason: x.reason.clone(),
                    },
                    _ => return,
                };
                seen.answer = Some((answer, latency));
            }
            EventKind::SchemaChosen { schemas, .. } if self.chosen.is_none() => {
                self.chosen = Some(schemas.clone());
            }
            _ => {}
        }
    }

    /// The schema set `--schemas auto` settled on for the first connection, if it did.
    pub fn chosen_schemas(&self) -> Option<&str> {
        self.chosen.as_deref()
    }

    /// The table, read with `set`.
    pub fn finish(self, set: Arc<SchemaSet>) -> Table {
        let sets = [&*set];
        let lookup = Lookup::new(&sets);
        let mut unanswered = 0;
        let mut calls = Vec::new();
        for (seq, seen) in self.calls {
            if runtime_answers(lookup, seen.interface_id, seen.method_id) {
                continue;
            }
            let Some((raw, latency)) = seen.answer else {
                unanswered += 1;
                continue;
            };
            let params = match set.method(seen.interface_id, seen.method_id) {
                Some((_, m)) => matchable(lookup, m.params, &seen.params),
                None => strip_untyped(&seen.params).unwrap_or(Json::Null),
            };
            let answer = match raw {
                RawAnswer::Results(v) => {
                    Answer::Results(serde_json::to_value(&v).unwrap_or(Json::Null))
                }
                RawAnswer::Exception { kind, reason } => Answer::Exception { kind, reason },
            };
            calls.push((
                seen.interface_id,
                seen.method_id,
                Recorded {
                    seq,
                    params,
                    answer,
                    latency,
                },
            ));
        }
        let mut table = Table::from_calls(set.clone(), calls);
        table.unanswered = unanswered;
        table
    }
}

/// True for the calls the runtime answers itself, never from the recording (module docs):
/// everything on ThreadMaps and Threads, `destroy`, and `construct` where it returns a
/// ThreadMap.
fn runtime_answers(lookup: Lookup<'_>, interface: u64, method: u16) -> bool {
    let Some((iname, m)) = lookup.method(interface, method) else {
        return false;
    };
    matches!(iname, "ThreadMap" | "Thread")
        || m.name == "destroy"
        || (m.name == "construct" && construct_result(lookup, m.results).is_some())
}

/// The ThreadMap field of `construct`'s results.
fn construct_result(lookup: Lookup<'_>, results: u64) -> Option<(u16, String)> {
    pointer_of(lookup, results, |t| {
        is_named_interface(lookup, t, "ThreadMap")
    })
}

/// Params as they are compared: the decoded struct `struct_id` as JSON, without capabilities.
/// A capability field is removed whether it is set or null, and so is a struct left empty by
/// that (`Proxy.Context`: its `thread` and `callbackThread` name this run's threads, and
/// clients fill in one or both).
pub fn matchable(lookup: Lookup<'_>, struct_id: u64, v: &Value) -> Json {
    strip(
        lookup,
        Some(&Type::Struct(struct_id, Default::default())),
        v,
    )
    .unwrap_or(Json::Object(Map::new()))
}

/// `v` without capabilities; `None` when nothing is left of it.
fn strip(lookup: Lookup<'_>, ty: Option<&Type>, v: &Value) -> Option<Json> {
    match (ty, v) {
        (Some(Type::Interface(_)), _) | (_, Value::Cap(_)) => None,
        (_, Value::Struct(fields)) => {
            let node = match ty {
                Some(Type::Struct(id, _)) => match lookup.node(*id) {
                    Some(Node::Struct(s)) => Some(s),
                    _ => None,
                },
                _ => None,
            };
            let mut out = Map::new();
            for (name, fv) in fields {
                let fty = node
                    .and_then(|n| n.fields.iter().find(|f| &f.name == name))
                    .map(|f| match &f.kind {
                        FieldKind::Group(g) => Type::Struct(*g, Default::default()),
                        FieldKind::Slot { ty, .. } => ty.clone(),
                    });
                if let Some(j) = strip(lookup, fty.as_ref(), fv) {
                    out.insert(name.clone(), j);
                }
            }
            if out.is_empty() && !fields.is_empty() {
                return None;
            }
            Some(Json::Object(out))
        }
        (_, Value::List(items)) => {
            let elem = match ty {
                Some(Type::List(e)) => Some(&**e),
                _ => None,
            };
            Some(Json::Array(
                items
                    .iter()
                    .map(|i| strip(lookup, elem, i).unwrap_or(Json::Null))
                    .collect(),
            ))
        }
        (_, other) => serde_json::to_value(other).ok(),
    }
}

/// [`strip`] without a schema (a method the set does not know).
fn strip_untyped(v: &Value) -> Option<Json> {
    strip(Lookup::new(&[]), None, v)
}

/// The recorded answers one connection has left.
#[derive(Debug)]
pub struct Replies {
    table: Rc<Table>,
    used: HashMap<(u64, u16), Vec<bool>>,
}

/// Which recorded call answers a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// The recorded call.
    pub recorded: Recorded,
    /// True when its params were equal to the call's; false when it was taken as the next
    /// unused call of the method.
    pub same_params: bool,
}

impl Replies {
    /// Every recorded answer of `table`, unused.
    pub fn new(table: Rc<Table>) -> Self {
        Replies {
            table,
            used: HashMap::new(),
        }
    }

    /// Takes the recorded call that answers a call of `(interface, method)` with `params`
    /// (already [`matchable`]), as the module docs say; `strict` allows equal params only.
    ///
    /// # Errors
    ///
    /// No recorded call is left to answer it: the exception's reason, naming the method and
    /// what the recording had.
    pub fn take(
        &mut self,
        interface: u64,
        method: u16,
        params: &Json,
        strict: bool,
    ) -> Result<Pick, String> {
        let Some(m) = self.table.methods.get(&(interface, method)) else {
            let name = method_name(&self.table.set, interface, method);
            return Err(format!(
                "mpspy serve: no recorded {name} call to answer with (the recording has none)"
            ));
        };
        let used = self
            .used
            .entry((interface, method))
            .or_insert_with(|| vec![false; m.calls.len()]);
        let unused = || (0..m.calls.len()).filter(|i| !used[*i]);
        let same = unused().find(|i| m.calls[*i].params == *params);
        let pick = match same {
            Some(i) => Some((i, true)),
            None if !strict => unused().next().map(|i| (i, false)),
            None => None,
        };
        if let Some((i, same_params)) = pick {
            used[i] = true;
            return Ok(Pick {
                recorded: m.calls[i].clone(),
                same_params,
            });
        }
        let n = m.calls.len();
        let left = unused().count();
        let name = &m.name;
        Err(if left > 0 {
            format!(
                "mpspy serve: no recorded {name} call left to answer, none with these params (recorded {n}, {left} unused with other params)"
            )
        } else {
            let all = match n {
                1 => "it was used",
                2 => "both used",
                _ => "all used",
            };
            format!("mpspy serve: no recorded {name} call left to answer (recorded {n}, {all})")
        })
    }
}

/// What a served connection did with a call that the recording answers (for the session's
/// notices and counts).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Note {
    /// Answered from the recorded call `recorded_seq`.
    Answered {
        /// `Interface.method`.
        method: String,
        /// `seq` of the recorded call.
        recorded_seq: u64,
        /// False when its params differed from the call's (the call's params are given).
        same_params: bool,
        /// The call's params ([`matchable`]), when they differed.
        params: Option<Json>,
    },
    /// No recorded call was left: the call failed with `reason`.
    Unmatched {
        /// `Interface.method`.
        method: String,
        /// The exception's reason.
        reason: String,
    },
}

/// How recorded answers are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    /// Each answer takes as long as the recorded call took (a long poll waits again).
    #[default]
    Recorded,
    /// Answer at once.
    Immediate,
}

/// How a connection is served.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Answer only calls whose params equal a recorded call's.
    pub strict: bool,
    /// When answers go out.
    pub timing: Timing,
}

/// One served connection.
struct Conn {
    threads: Rc<ConnThreads>,
    table: Rc<Table>,
    replies: RefCell<Replies>,
    options: Options,
    notes: Rc<dyn Fn(Note)>,
    /// The ThreadMaps the client passed to `construct`, kept like libmultiprocess keeps them.
    client_thread_maps: RefCell<Vec<capnp::capability::Client>>,
}

/// An object served from the recording: the bootstrap `Init`, or a capability from recorded
/// results.
struct Object {
    conn: Rc<Conn>,
    /// Its interface (`None`: an `AnyPointer` capability, which answers nothing).
    interface: Option<u64>,
}

/// The capability of an [`Object`]: capnp-rpc builds a local capability from any `FromServer`
/// pair, and this one dispatches by the schema instead of generated code.
struct ServedHook(Box<dyn ClientHook>);

impl FromClientHook for ServedHook {
    fn new(hook: Box<dyn ClientHook>) -> Self {
        ServedHook(hook)
    }

    fn into_client_hook(self) -> Box<dyn ClientHook> {
        self.0
    }

    fn as_client_hook(&self) -> &dyn ClientHook {
        &*self.0
    }
}

impl FromServer<Object> for ServedHook {
    type Dispatch = Dispatch;

    fn from_server(server: Rc<Object>) -> Dispatch {
        Dispatch(server)
    }
}

/// Dispatches every call of an [`Object`] through [`answer`].
#[derive(Clone)]
struct Dispatch(Rc<Object>);

impl Deref for Dispatch {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.0
    }
}

impl Server for Dispatch {
    fn dispatch_call(
        self,
        interface_id: u64,
        method_id: u16,
        params: Params<any_pointer::Owned>,
        results: Results<any_pointer::Owned>,
    ) -> DispatchCallResult {
        DispatchCallResult::new(
            Promise::from_future(answer(self.0, interface_id, method_id, params, results)),
            false,
        )
    }

    fn as_ptr(&self) -> usize {
        Rc::as_ptr(&self.0) as usize
    }
}

fn new_object(conn: &Rc<Conn>, interface: Option<u64>) -> Box<dyn ClientHook> {
    let ServedHook(hook) = capnp_rpc::new_client_from_rc::<ServedHook, Object>(Rc::new(Object {
        conn: conn.clone(),
        interface,
    }));
    hook
}

/// A struct behind an `AnyPointer`, to reach its pointer fields by index.
struct AnyStruct<'a>(capnp::private::layout::StructReader<'a>);

impl<'a> FromPointerReader<'a> for AnyStruct<'a> {
    fn get_from_pointer(
        reader: &capnp::private::layout::PointerReader<'a>,
        default: Option<&'a [capnp::Word]>,
    ) -> capnp::Result<Self> {
        Ok(AnyStruct(reader.get_struct(default)?))
    }
}

/// Pointer field `index` of the struct `content` points to.
fn pointer_field(
    content: any_pointer::Reader<'_>,
    index: u16,
) -> capnp::Result<any_pointer::Reader<'_>> {
    let s: AnyStruct<'_> = content.get_as()?;
    Ok(any_pointer::Reader::new(
        s.0.get_pointer_field(index.into()),
    ))
}

/// The pointer index of the field of `struct_id` named `name` whose type satisfies `pred`.
fn pointer_of(
    lookup: Lookup<'_>,
    struct_id: u64,
    pred: impl Fn(&Type) -> bool,
) -> Option<(u16, String)> {
    let Some(Node::Struct(s)) = lookup.node(struct_id) else {
        return None;
    };
    s.fields.iter().find_map(|f| match &f.kind {
        FieldKind::Slot { offset, ty, .. } if pred(ty) => Some((*offset as u16, f.name.clone())),
        _ => None,
    })
}

fn is_named_struct(lookup: Lookup<'_>, ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Struct(id, _) if matches!(lookup.node(*id), Some(Node::Struct(s)) if s.name == name))
}

fn is_named_interface(lookup: Lookup<'_>, ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Interface(id) if lookup.interface_name(*id) == Some(name))
}

/// The struct `content` points to, decoded as `struct_id` (a copy: the walker reads flat
/// messages, and capabilities only need to be seen, not kept).
fn decode_struct(lookup: Lookup<'_>, struct_id: u64, content: any_pointer::Reader<'_>) -> Value {
    let copy = || -> capnp::Result<Vec<u8>> {
        let mut message = capnp::message::Builder::new_default();
        let mut caps = Vec::new();
        {
            let mut root: any_pointer::Builder<'_> = message.init_root();
            root.imbue_mut(&mut caps);
            root.set_as(content)?;
        }
        Ok(capnp::serialize::write_message_to_words(&message))
    };
    match copy().and_then(|bytes| {
        let (m, _) = Message::parse(&bytes).map_err(|e| capnp::Error::failed(e.to_string()))?;
        let root = m.root().map_err(|e| capnp::Error::failed(e.to_string()))?;
        Ok(Walker::new(lookup).decode(struct_id, root))
    }) {
        Ok(v) => v,
        Err(e) => Value::Error(e.to_string()),
    }
}

/// Capabilities for re-encoded results: new served objects, or this connection's ThreadMap and
/// Threads.
struct ResultCaps<'a> {
    conn: &'a Rc<Conn>,
    lookup: Lookup<'a>,
    hooks: Vec<Option<Box<dyn ClientHook>>>,
}

impl CapSource for ResultCaps<'_> {
    fn cap(&mut self, _path: &str, interface: Option<u64>, _: &Json) -> Result<u32, String> {
        let hook = match interface.and_then(|i| self.lookup.interface_name(i)) {
            Some("ThreadMap") => threads::thread_map(self.conn.threads.clone()).client.hook,
            Some("Thread") => self.conn.threads.make_thread("mpspy serve").client.hook,
            _ => new_object(self.conn, interface),
        };
        self.hooks.push(Some(hook));
        Ok(self.hooks.len() as u32 - 1)
    }
}

/// Writes `json` (the decoder's form of results struct `struct_id`) as the call's results.
fn write_results(
    conn: &Rc<Conn>,
    lookup: Lookup<'_>,
    struct_id: u64,
    json: &Json,
    results: &mut Results<any_pointer::Owned>,
    name: &str,
) -> Result<(), capnp::Error> {
    let mut caps = ResultCaps {
        conn,
        lookup,
        hooks: Vec::new(),
    };
    let bytes = encode::encode(lookup, struct_id, json, &mut caps).map_err(|e| {
        capnp::Error::failed(format!(
            "mpspy serve: the recorded results of {name} cannot be sent again: {e}"
        ))
    })?;
    let msg = capnp::serialize::read_message_from_flat_slice(
        &mut &bytes[..],
        capnp::message::ReaderOptions::new(),
    )?;
    let mut root: any_pointer::Reader<'_> = msg.get_root()?;
    root.imbue(&caps.hooks);
    results.get().set_as(root)
}

fn exception(kind: &str, reason: String) -> capnp::Error {
    match kind {
        "overloaded" => capnp::Error::overloaded(reason),
        "disconnected" => capnp::Error::disconnected(reason),
        "unimplemented" => capnp::Error::unimplemented(reason),
        _ => capnp::Error::failed(reason),
    }
}

/// Answers one call on `obj`: refused as the C++ runtime refuses unknown interfaces and
/// methods, by the runtime for construct and destroy, else from the recording (module docs).
async fn answer(
    obj: Rc<Object>,
    interface_id: u64,
    method_id: u16,
    params: Params<any_pointer::Owned>,
    mut results: Results<any_pointer::Owned>,
) -> Result<(), capnp::Error> {
    let conn = obj.conn.clone();
    let set = conn.table.set.clone();
    let sets = [&*set];
    let lookup = Lookup::new(&sets);
    let iface_name = |id: Option<u64>| {
        id.and_then(|i| lookup.interface_name(i))
            .map(str::to_string)
            .unwrap_or_else(|| "(unknown)".into())
    };
    if obj.interface != Some(interface_id) {
        return Err(capnp::Error::unimplemented(format!(
            "Requested interface not implemented.; actualInterfaceName = {}; requestedTypeId = {interface_id}",
            iface_name(obj.interface)
        )));
    }
    let Some((iname, method)) = lookup.method(interface_id, method_id) else {
        return Err(capnp::Error::unimplemented(format!(
            "Method not implemented.; interfaceName = {}; typeId = {interface_id}; methodId = {method_id}",
            iface_name(obj.interface)
        )));
    };
    let name = format!("{iname}.{}", method.name);
    let content = params.get()?;
    // Every method with a Context runs on its Thread, queued behind that Thread's other calls.
    let _turn = match pointer_of(lookup, method.params, |t| {
        is_named_struct(lookup, t, CONTEXT)
    }) {
        Some((index, _)) => {
            let ctx: context::Reader<'_> = pointer_field(content, index)?.get_as()?;
            Some(conn.threads.enter(ctx).await?)
        }
        None => None,
    };
    if method.name == "destroy" {
        return Ok(());
    }
    if method.name == "construct"
        && let Some((_, field)) = construct_result(lookup, method.results)
    {
        if let Some((index, _)) = pointer_of(lookup, method.params, |t| {
            is_named_interface(lookup, t, "ThreadMap")
        }) && let Ok(theirs) = pointer_field(content, index)
            .and_then(|p| p.get_as_capability::<capnp::capability::Client>())
        {
            conn.client_thread_maps.borrow_mut().push(theirs);
        }
        let json = serde_json::json!({ field: "threadMap" });
        return write_results(&conn, lookup, method.results, &json, &mut results, &name);
    }
    let asked = matchable(
        lookup,
        method.params,
        &decode_struct(lookup, method.params, content),
    );
    let picked =
        conn.replies
            .borrow_mut()
            .take(interface_id, method_id, &asked, conn.options.strict);
    let pick = match picked {
        Ok(p) => p,
        Err(reason) => {
            (conn.notes)(Note::Unmatched {
                method: name,
                reason: reason.clone(),
            });
            return Err(capnp::Error::failed(reason));
        }
    };
    (conn.notes)(Note::Answered {
        method: name.clone(),
        recorded_seq: pick.recorded.seq,
        same_params: pick.same_params,
        params: (!pick.same_params).then(|| asked.clone()),
    });
    if conn.options.timing == Timing::Recorded && !pick.recorded.latency.is_zero() {
        tokio::time::sleep(pick.recorded.latency).await;
    }
    match &pick.recorded.answer {
        Answer::Exception { kind, reason } => Err(exception(kind, reason.clone())),
        Answer::Results(json) => {
            write_results(&conn, lookup, method.results, json, &mut results, &name)
        }
    }
}

/// Serves one connection from `table` until it closes: a fresh `Init` (of
/// [`Table::bootstrap`]) as its bootstrap capability, fresh Threads, and every recorded answer
/// unused. `notes` hears of every call answered from the recording, or not.
///
/// # Errors
///
/// The connection failed (capnp-rpc's error).
pub async fn serve_connection<S>(
    stream: S,
    table: Rc<Table>,
    options: Options,
    names: Rc<Names>,
    notes: Rc<dyn Fn(Note)>,
) -> Result<(), capnp::Error>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let conn = Rc::new(Conn {
        threads: ConnThreads::new(names),
        replies: RefCell::new(Replies::new(table.clone())),
        table: table.clone(),
        options,
        notes,
        client_thread_maps: RefCell::default(),
    });
    let init = new_object(&conn, table.bootstrap());
    net::rpc_system(stream, capnp::capability::Client::new(init)).await
}

#[cfg(test)]
mod tests;
