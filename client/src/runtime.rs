//! Chains of calls, untyped: what `mpspy call` and `mpspy bench` drive.
//!
//! It does what a libmultiprocess C++ client does (protocol digest §4.1): Bootstrap `Init`,
//! `construct` with our own ThreadMap (so the other side can call back), `makeThread` for the
//! calling thread pipelined with the first real call (later calls name the server Thread by
//! its import), and `Proxy.Context` filled on every call, with one callbackThread per stream.
//! It closes like a C++ client (see [`crate::net::as_client`]; what still differs from one: the
//! bootstrap capability stays a promise, see the test peer's docs).
//!
//! Params arrive already encoded (by mpspy's schema-driven encoder, [`Call::plan`]) with
//! capability pointers 0 = `Context.thread` and 1 = `Context.callbackThread`; the runtime
//! attaches the real capabilities to those indices.

use std::rc::Rc;
use std::time::Instant;

use capnp::any_pointer;
use capnp::capability::{Client, RemotePromise, Response};
use capnp::private::capability::{ClientHook, PipelineOp};
use capnp::traits::{Imbue, ImbueMut};
use mpspy_schema::decode::{Lookup, Walker};
use mpspy_schema::encode::{self, CapSource, EncodeError};
use mpspy_schema::registry::{FieldKind, Method, Node, Type};
use mpspy_schema::wire::Message;
use mpspy_schema::{SchemaSet, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::ClientError;
use crate::net::{self, KeepUntilClose};
use crate::schema::init_capnp::init;
use crate::schema::proxy_capnp::{thread, thread_map};
use crate::threads::{self, ConnThreads, Names};

/// libmultiprocess's struct that every worker method takes as `context`, found by name (like the
/// engine finds ThreadMap): a user's copy of `proxy.capnp` has other ids only if it was edited,
/// but the same names.
const CONTEXT: &str = "Context";

/// One step of a call chain.
#[derive(Debug, Clone)]
pub struct Call {
    /// `Interface.method`, for messages.
    pub name: String,
    /// Interface id.
    pub interface_id: u64,
    /// Method ordinal.
    pub method_id: u16,
    /// The params struct as one stream-framed message (root = the struct).
    pub params: Vec<u8>,
    /// The results struct's id, to decode what the call returns.
    pub results: u64,
    /// Pointer field of the results holding the capability the next step runs on.
    pub next: Option<u16>,
    /// `destroy` for that capability, called before it is released, as libmultiprocess
    /// clients do.
    pub destroy: Option<Box<Call>>,
}

/// Why a step could not be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// Not `Interface.method`.
    #[error("step '{step}': a step is Interface.method, e.g. Echo.echo")]
    BadStep {
        /// The step as given.
        step: String,
    },
    /// The schema set has no such interface.
    #[error("step '{step}': no interface {interface} in the {set} schemas (have: {known})")]
    NoInterface {
        /// The step as given.
        step: String,
        /// The interface asked for.
        interface: String,
        /// The schema set's name.
        set: String,
        /// The interfaces there are, sorted.
        known: String,
    },
    /// The interface has no such method.
    #[error("step '{step}': {interface} has no method {method} (have: {known})")]
    NoMethod {
        /// The step as given.
        step: String,
        /// The interface.
        interface: String,
        /// The method asked for.
        method: String,
        /// The interface's methods.
        known: String,
    },
    /// The args do not fit the params struct.
    #[error("step '{step}': args")]
    Args {
        /// The step as given.
        step: String,
        /// What the encoder said.
        #[source]
        source: EncodeError,
    },
}

/// `Context.thread` and `Context.callbackThread` are the runtime's capabilities 0 and 1.
struct ContextCaps;

impl CapSource for ContextCaps {
    fn cap(&mut self, path: &str, _: Option<u64>, _: &Json) -> Result<u32, String> {
        match path.rsplit('.').next() {
            Some("thread") if path.ends_with("context.thread") => Ok(0),
            Some("callbackThread") => Ok(1),
            _ => Err(
                "capability arguments are not supported (mpspy fills Proxy.Context itself)".into(),
            ),
        }
    }
}

/// The Context the runtime fills in: the JSON the encoder turns into capabilities 0 and 1.
fn context_json() -> Json {
    json!({"thread": "thread", "callbackThread": "callbackThread"})
}

impl Call {
    /// `step` (`Interface.method`) of `set`, with `args` (a JSON object by field name) encoded
    /// as its params. `Proxy.Context` is filled in unless `args` gives one, as libmultiprocess
    /// clients fill it; if the method returns a capability, the next step runs on it, and
    /// if that capability's interface has `destroy`, it is destroyed before it is released.
    ///
    /// # Errors
    ///
    /// No such interface or method in `set`, or args that do not fit the params.
    pub fn plan(set: &SchemaSet, step: &str, args: &Json) -> Result<Call, PlanError> {
        let (iface, method) = step.rsplit_once('.').ok_or_else(|| PlanError::BadStep {
            step: step.to_string(),
        })?;
        let (interface_id, inode) =
            set.interfaces()
                .find(|(_, n)| n.name == iface)
                .ok_or_else(|| {
                    let mut known: Vec<&str> =
                        set.interfaces().map(|(_, n)| n.name.as_str()).collect();
                    known.sort_unstable();
                    PlanError::NoInterface {
                        step: step.to_string(),
                        interface: iface.to_string(),
                        set: set.name.clone(),
                        known: known.join(", "),
                    }
                })?;
        let m = inode
            .methods
            .iter()
            .find(|m| m.name == method)
            .ok_or_else(|| PlanError::NoMethod {
                step: step.to_string(),
                interface: iface.to_string(),
                method: method.to_string(),
                known: inode
                    .methods
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Call::method(set, interface_id, iface, m, args, step)
    }

    /// Method `m` of interface `interface_id` (named `iface`); `step` names it in errors.
    fn method(
        set: &SchemaSet,
        interface_id: u64,
        iface: &str,
        m: &Method,
        args: &Json,
        step: &str,
    ) -> Result<Call, PlanError> {
        let sets = [set];
        let lookup = Lookup::new(&sets);
        let mut args = args.clone();
        if let Json::Object(obj) = &mut args
            && takes_context(lookup, m.params)
            && !obj.contains_key("context")
        {
            obj.insert("context".into(), context_json());
        }
        let params =
            encode::encode(lookup, m.params, &args, &mut ContextCaps).map_err(|source| {
                PlanError::Args {
                    step: step.to_string(),
                    source,
                }
            })?;
        let returned = match lookup.node(m.results) {
            Some(Node::Struct(r)) => r.fields.iter().find_map(|f| match &f.kind {
                FieldKind::Slot {
                    ty: Type::Interface(id),
                    offset,
                    ..
                } => Some((*offset as u16, *id)),
                _ => None,
            }),
            _ => None,
        };
        // Objects with `destroy` are destroyed before they are released (libmultiprocess).
        let destroy = match returned.and_then(|(_, id)| Some((id, set.interface(id)?))) {
            Some((id, i)) => match i.methods.iter().find(|m| m.name == "destroy") {
                Some(d) => {
                    let name = format!("{}.destroy", i.name);
                    Some(Box::new(Call::method(
                        set,
                        id,
                        &i.name,
                        d,
                        &json!({}),
                        &name,
                    )?))
                }
                None => None,
            },
            None => None,
        };
        Ok(Call {
            name: format!("{iface}.{}", m.name),
            interface_id,
            method_id: m.ordinal,
            params,
            results: m.results,
            next: returned.map(|(offset, _)| offset),
            destroy,
        })
    }
}

/// Whether params struct `params` has a `context` field of libmultiprocess's Context type.
fn takes_context(lookup: Lookup<'_>, params: u64) -> bool {
    let Some(Node::Struct(p)) = lookup.node(params) else {
        return false;
    };
    p.fields.iter().any(|f| {
        f.name == "context"
            && matches!(&f.kind, FieldKind::Slot { ty: Type::Struct(id, _), .. }
                if matches!(lookup.node(*id), Some(Node::Struct(s)) if s.name == CONTEXT))
    })
}

/// How many times to run the last step, and how many streams in parallel.
#[derive(Debug, Clone, Copy)]
pub struct Repeat {
    /// Repetitions measured, per stream.
    pub count: u32,
    /// Unmeasured repetitions first.
    pub warmup: u32,
    /// Parallel streams, each with its own server thread (makeThread), as libmultiprocess
    /// clients do with one thread per caller.
    pub concurrency: u32,
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat {
            count: 1,
            warmup: 0,
            concurrency: 1,
        }
    }
}

/// What the last step of a chain returned: its Return's content, copied out of the response
/// (whose question is then Finished at once, as a C++ client finishes every answer).
#[derive(Debug, Clone)]
pub struct Results {
    /// The results struct as one stream-framed message (root = the struct). A capability in
    /// it points into a table of its own, numbered in the order the copy met them; the
    /// capabilities themselves are released with the response.
    pub message: Vec<u8>,
    /// The results struct's schema id.
    pub struct_id: u64,
}

impl Results {
    /// The results decoded by schema (what the proxy's decoder would show for this Return,
    /// but for capability names, which only a connection's state gives).
    pub fn decode(&self, lookup: Lookup<'_>) -> Value {
        match Message::parse(&self.message).and_then(|(m, _)| {
            let root = m.root()?;
            Ok(Walker::new(lookup).decode(self.struct_id, root))
        }) {
            Ok(v) => v,
            Err(e) => Value::Error(e.to_string()),
        }
    }

    fn copy(response: &Response<any_pointer::Owned>, struct_id: u64) -> capnp::Result<Results> {
        let content: any_pointer::Reader<'_> = response.get()?;
        let mut message = capnp::message::Builder::new_default();
        // Copying a capability pointer needs a table to put the capability in.
        let mut caps = Vec::new();
        {
            let mut root: any_pointer::Builder<'_> = message.init_root();
            root.imbue_mut(&mut caps);
            root.set_as(content)?;
        }
        drop(caps);
        Ok(Results {
            message: capnp::serialize::write_message_to_words(&message),
            struct_id,
        })
    }
}

/// What a chain gave back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The last step's results (of the main stream's last repetition).
    pub results: Results,
    /// Round trips of the last step, one per measured repetition, in nanoseconds.
    pub round_trips_ns: Vec<u64>,
}

fn hooks(t: &thread::Client, cb: &thread::Client) -> Vec<Option<Box<dyn ClientHook>>> {
    vec![
        Some(t.client.hook.add_ref()),
        Some(cb.client.hook.add_ref()),
    ]
}

/// Sends one call on `target` with encoded `params`; returns the pending response.
fn send(
    target: &Client,
    call: &Call,
    thread: &thread::Client,
    callback: &thread::Client,
) -> Result<RemotePromise<any_pointer::Owned>, ClientError> {
    let bad = |e: capnp::Error| ClientError::Message {
        method: call.name.clone(),
        reason: format!("encoded params: {e}"),
    };
    let mut req = target.new_call::<any_pointer::Owned, any_pointer::Owned>(
        call.interface_id,
        call.method_id,
        None,
    );
    let msg = capnp::serialize::read_message_from_flat_slice(
        &mut &call.params[..],
        capnp::message::ReaderOptions::new(),
    )
    .map_err(bad)?;
    let mut root: any_pointer::Reader<'_> = msg.get_root().map_err(bad)?;
    let table = hooks(thread, callback);
    root.imbue(&table);
    req.get().set_as::<any_pointer::Owned>(root).map_err(bad)?;
    Ok(req.send())
}

/// Runs `calls` in order over `stream`, each on the capability the previous one returned (the
/// first on `Init`), repeating the last one as `repeat` says; then disconnects cleanly. The
/// calling thread is `<exe>-<pid>/main` by `names` (parallel streams add `/1`, `/2`, …), and
/// Threads the other side makes here are named by `names` too.
///
/// # Errors
///
/// A call failed (an exception, or the connection went away while it was in flight), or the
/// connection did not close cleanly.
pub async fn run_chain<S>(
    stream: S,
    names: Rc<Names>,
    calls: &[Call],
    repeat: Repeat,
) -> Result<Outcome, ClientError>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let (result, problems) =
        net::as_client(stream, |init, keep| chain(init, keep, names, calls, repeat)).await;
    let outcome = result?;
    if !problems.is_empty() {
        return Err(ClientError::Closing {
            problems: problems.join("; "),
        });
    }
    Ok(outcome)
}

/// One client thread's view of its server Thread: first the pipelined makeThread answer, then,
/// once that Return is in, the Thread itself.
struct Stream {
    thread: thread::Client,
    /// The makeThread answer until it has been taken.
    made: Option<RemotePromise<thread_map::make_thread_results::Owned>>,
    callback: thread::Client,
}

impl Stream {
    /// `makeThread(name)`; the stream's first call is to go out right after it, pipelined.
    fn new(thread_map: &thread_map::Client, name: String) -> Stream {
        let mut req = thread_map.make_thread_request();
        req.get().set_name(&name[..]);
        let made = req.send();
        Stream {
            thread: made.pipeline.get_result(),
            made: Some(made),
            callback: threads::callback_thread(name),
        }
    }

    /// After the first call was sent: waits for the makeThread Return, switches to the Thread
    /// it names and lets go of that question (so it is Finished now), and keeps the Thread
    /// until the connection closes, as a C++ client does.
    async fn settle(&mut self, keep: &KeepUntilClose) -> Result<(), ClientError> {
        if let Some(made) = self.made.take() {
            self.thread = threads::settle_made_thread(made, keep)
                .await
                .map_err(|e| ClientError::from_call("ThreadMap.makeThread", e))?;
        }
        Ok(())
    }
}

async fn chain(
    init: init::Client,
    keep: KeepUntilClose,
    names: Rc<Names>,
    calls: &[Call],
    repeat: Repeat,
) -> Result<Outcome, ClientError> {
    let thread_name = names.own_thread("main");
    let mut req = init.construct_request();
    req.get()
        .set_thread_map(threads::thread_map(ConnThreads::new(names)));
    let thread_map = req
        .send()
        .promise
        .await
        .and_then(|r| r.get()?.get_thread_map())
        .map_err(|e| ClientError::from_call("Init.construct", e))?;
    keep.keep(&thread_map);

    let mut main = Stream::new(&thread_map, thread_name.clone());

    let mut target: Client = init.client.clone();
    let Some((last, rest)) = calls.split_last() else {
        return Err(ClientError::Message {
            method: "Init".into(),
            reason: "no calls to make".into(),
        });
    };
    // Capabilities to destroy at the end, newest first.
    let mut to_destroy: Vec<(Client, &Call)> = Vec::new();
    for call in rest {
        let failed = |e| ClientError::from_call(&call.name, e);
        let sent = send(&target, call, &main.thread, &main.callback)?;
        main.settle(&keep).await?;
        let RemotePromise { promise, pipeline } = sent;
        drop(pipeline);
        // Each step waits for the previous one's Return (a C++ client thread blocks in the
        // call), so the next target is the returned capability itself, not a promise on the
        // answer; the response is dropped at once, so the question is Finished now.
        let response = promise.await.map_err(failed)?;
        let next = match call.next {
            Some(i) => Some(Client::new(
                response
                    .get()
                    .and_then(|r| r.get_pipelined_cap(&[PipelineOp::GetPointerField(i)]))
                    .map_err(failed)?,
            )),
            None => None,
        };
        drop(response);
        target = next.ok_or_else(|| ClientError::Message {
            method: call.name.clone(),
            reason: "this step returns no capability for the next one".into(),
        })?;
        if let Some(destroy) = &call.destroy {
            to_destroy.push((target.clone(), destroy));
        }
    }

    let mut streams = vec![main];
    for i in 1..repeat.concurrency.max(1) {
        streams.push(Stream::new(&thread_map, format!("{thread_name}/{i}")));
    }
    let total = repeat.warmup + repeat.count.max(1);
    let runs = streams.iter_mut().enumerate().map(|(n, stream)| {
        let target = target.clone();
        let keep = keep.clone();
        async move {
            let mut times = Vec::with_capacity(repeat.count as usize);
            let mut results = None;
            for i in 0..total {
                let start = Instant::now();
                let sent = send(&target, last, &stream.thread, &stream.callback)?;
                stream.settle(&keep).await?;
                let response = sent
                    .promise
                    .await
                    .map_err(|e| ClientError::from_call(&last.name, e))?;
                if i >= repeat.warmup {
                    times.push(start.elapsed().as_nanos() as u64);
                }
                // Only the main stream's last answer is shown; copying the others would
                // only slow down what `bench` measures.
                if n == 0 && i + 1 == total {
                    results = Some(Results::copy(&response, last.results).map_err(|e| {
                        ClientError::Message {
                            method: last.name.clone(),
                            reason: format!("copying the results: {e}"),
                        }
                    })?);
                }
            }
            Ok::<_, ClientError>((times, results))
        }
    });
    let ran = futures::future::try_join_all(runs).await;
    // Destroyed even when the last step failed, so that what we made is not left behind; the
    // last step's error is the one reported.
    let destroyed = destroy_all(&to_destroy, &streams[0]).await;
    let ran = ran?;
    destroyed?;
    let mut round_trips_ns = Vec::new();
    let mut results = None;
    for (times, r) in ran {
        round_trips_ns.extend(times);
        results = results.or(r);
    }
    Ok(Outcome {
        results: results.ok_or_else(|| ClientError::Message {
            method: last.name.clone(),
            reason: "no results".into(),
        })?,
        round_trips_ns,
    })
}

/// Destroys `caps` newest first, on `stream`'s thread.
async fn destroy_all(caps: &[(Client, &Call)], stream: &Stream) -> Result<(), ClientError> {
    for (cap, call) in caps.iter().rev() {
        send(cap, call, &stream.thread, &stream.callback)?
            .promise
            .await
            .map_err(|e| ClientError::from_call(&call.name, e))?;
    }
    Ok(())
}
