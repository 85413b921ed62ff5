//! The libmultiprocess client runtime, untyped: what `mpspy call` and `mpspy bench` drive.
//!
//! It does what a libmultiprocess C++ client does (protocol digest §4.1): Bootstrap `Init`,
//! `construct` with our own ThreadMap (so the other side can call back), `makeThread` for the
//! calling thread pipelined with the first real call (later calls name the server Thread by
//! its import), and `Proxy.Context` filled on every call, with one callbackThread per stream.
//! It closes like the test peer's own client (see the `client` module for what still differs
//! from a C++ client: the bootstrap capability stays a promise).
//! Params arrive already encoded (by mpspy's schema-driven encoder) with capability pointers
//! 0 = `Context.thread` and 1 = `Context.callbackThread`; the runtime attaches the real
//! capabilities to those indices.

use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use capnp::any_pointer;
use capnp::capability::Client;
use capnp::private::capability::{ClientHook, PipelineOp};
use capnp::traits::Imbue;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::{self, KeepUntilClose};
use crate::schema::init_capnp::init;
use crate::schema::proxy_capnp::{thread, thread_map};
use crate::server::Peer;
use crate::threads::{self, Conn};

/// One step of a call chain.
#[derive(Debug, Clone)]
pub struct Call {
    /// Interface id.
    pub interface_id: u64,
    /// Method ordinal.
    pub method_id: u16,
    /// The params struct as one stream-framed message (root = the struct).
    pub params: Vec<u8>,
    /// Pointer field of the results holding the capability the next step runs on.
    pub next: Option<u16>,
    /// `destroy` for that capability (interface id, method id, encoded params), called before
    /// it is released, as libmultiprocess clients do.
    pub destroy: Option<(u64, u16, Vec<u8>)>,
}

/// Round-trip times of the last step, when it was repeated (`bench`).
#[derive(Debug, Default)]
pub struct Timings {
    /// One entry per repetition, in nanoseconds.
    pub round_trips_ns: Vec<u64>,
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
) -> Result<capnp::capability::RemotePromise<any_pointer::Owned>> {
    let mut req = target.new_call::<any_pointer::Owned, any_pointer::Owned>(
        call.interface_id,
        call.method_id,
        None,
    );
    let msg = capnp::serialize::read_message_from_flat_slice(
        &mut &call.params[..],
        capnp::message::ReaderOptions::new(),
    )
    .context("encoded params")?;
    let mut root: any_pointer::Reader<'_> = msg.get_root()?;
    let table = hooks(thread, callback);
    root.imbue(&table);
    req.get().set_as::<any_pointer::Owned>(root)?;
    Ok(req.send())
}

/// Runs `calls` in order over `stream`, each on the capability the previous one returned (the
/// first on `Init`), repeating the last one as `repeat` says; then disconnects cleanly.
pub async fn run_chain<S>(
    stream: S,
    thread_name: &str,
    calls: &[Call],
    repeat: Repeat,
) -> Result<Timings>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    net::as_client(stream, |init, keep| {
        chain(init, keep, thread_name, calls, repeat)
    })
    .await
    .0
}

/// One client thread's view of its server Thread: first the pipelined makeThread answer, then,
/// once that Return is in, the Thread itself.
struct Stream {
    thread: thread::Client,
    /// The makeThread answer until it has been taken.
    made: Option<capnp::capability::RemotePromise<thread_map::make_thread_results::Owned>>,
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
            callback: threads::new_callback_thread(name),
        }
    }

    /// After the first call was sent: waits for the makeThread Return, switches to the Thread
    /// it names and lets go of that question (so it is Finished now), and keeps the Thread
    /// until the connection closes, as a C++ client does.
    async fn settle(&mut self, keep: &KeepUntilClose) -> Result<()> {
        if let Some(made) = self.made.take() {
            self.thread = threads::settle_made_thread(made, keep).await?;
        }
        Ok(())
    }
}

async fn chain(
    init: init::Client,
    keep: KeepUntilClose,
    thread_name: &str,
    calls: &[Call],
    repeat: Repeat,
) -> Result<Timings> {
    let peer: Rc<Peer> = Peer::new();
    let mut req = init.construct_request();
    req.get()
        .set_thread_map(threads::new_thread_map(Conn::new(peer)));
    let thread_map = req
        .send()
        .promise
        .await
        .context("Init.construct")?
        .get()?
        .get_thread_map()?;
    keep.keep(&thread_map);

    let mut main = Stream::new(&thread_map, thread_name.to_string());

    let mut target: Client = init.client.clone();
    let Some((last, rest)) = calls.split_last() else {
        return Ok(Timings::default());
    };
    // Capabilities to destroy at the end, newest first.
    let mut to_destroy: Vec<(Client, Call)> = Vec::new();
    for call in rest {
        let sent = send(&target, call, &main.thread, &main.callback)?;
        main.settle(&keep).await?;
        let capnp::capability::RemotePromise { promise, pipeline } = sent;
        drop(pipeline);
        // Each step waits for the previous one's Return (a C++ client thread blocks in the
        // call), so the next target is the returned capability itself, not a promise on the
        // answer; the response is dropped at once, so the question is Finished now.
        let response = promise.await.map_err(anyhow::Error::from)?;
        let next = match call.next {
            Some(i) => Some(Client::new(
                response
                    .get()?
                    .get_pipelined_cap(&[PipelineOp::GetPointerField(i)])?,
            )),
            None => None,
        };
        drop(response);
        target = next.context("this step returns no capability for the next one")?;
        if let Some((interface_id, method_id, params)) = &call.destroy {
            to_destroy.push((
                target.clone(),
                Call {
                    interface_id: *interface_id,
                    method_id: *method_id,
                    params: params.clone(),
                    next: None,
                    destroy: None,
                },
            ));
        }
    }

    let mut timings = Timings::default();
    let mut streams = vec![main];
    for i in 1..repeat.concurrency.max(1) {
        streams.push(Stream::new(&thread_map, format!("{thread_name}/{i}")));
    }
    let runs = streams.iter_mut().map(|stream| {
        let target = target.clone();
        let keep = keep.clone();
        async move {
            let mut times = Vec::with_capacity(repeat.count as usize);
            for i in 0..repeat.warmup + repeat.count.max(1) {
                let start = Instant::now();
                let sent = send(&target, last, &stream.thread, &stream.callback)?;
                stream.settle(&keep).await?;
                sent.promise.await.map_err(anyhow::Error::from)?;
                if i >= repeat.warmup {
                    times.push(start.elapsed().as_nanos() as u64);
                }
            }
            Ok::<_, anyhow::Error>(times)
        }
    });
    let results = futures::future::try_join_all(runs).await;
    let main = &streams[0];
    for (cap, call) in to_destroy.iter().rev() {
        send(cap, call, &main.thread, &main.callback)?
            .promise
            .await
            .map_err(anyhow::Error::from)
            .context("destroy")?;
    }
    for times in results? {
        timings.round_trips_ns.extend(times);
    }
    Ok(timings)
}
