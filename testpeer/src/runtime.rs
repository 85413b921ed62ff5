//! The libmultiprocess client runtime, untyped: what `mpspy call` and `mpspy bench` drive.
//!
//! It does what a libmultiprocess C++ client does (protocol digest §4.1): Bootstrap `Init`,
//! `construct` with our own ThreadMap (so the other side can call back), `makeThread` for the
//! calling thread pipelined with the first real call, and `Proxy.Context` filled on every call.
//! Params arrive already encoded (by mpspy's schema-driven encoder) with capability pointers
//! 0 = `Context.thread` and 1 = `Context.callbackThread`; the runtime attaches the real
//! capabilities to those indices.

use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use capnp::any_pointer;
use capnp::capability::Client;
use capnp::private::capability::ClientHook;
use capnp::traits::Imbue;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net;
use crate::schema::init_capnp::init;
use crate::schema::proxy_capnp::thread;
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
    net::as_client(stream, |init| chain(init, thread_name, calls, repeat))
        .await
        .0
}

async fn chain(
    init: init::Client,
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

    let make_thread = |name: String| {
        let mut req = thread_map.make_thread_request();
        req.get().set_name(&name[..]);
        let sent = req.send();
        // Pipelined: the first call goes out with the makeThread, like libmultiprocess.
        (
            sent.pipeline.get_result(),
            sent.promise,
            threads::new_callback_thread(name),
        )
    };
    let (thread, made, callback) = make_thread(thread_name.to_string());

    let mut target: Client = init.client.clone();
    let Some((last, rest)) = calls.split_last() else {
        return Ok(Timings::default());
    };
    // Capabilities to destroy at the end, newest first.
    let mut to_destroy: Vec<(Client, Call)> = Vec::new();
    for call in rest {
        let sent = send(&target, call, &thread, &callback)?;
        let next = call
            .next
            .map(|i| Client::new(sent.pipeline.get_pointer_field(i).as_cap()));
        sent.promise.await.map_err(anyhow::Error::from)?;
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
    let _ = made.await.context("ThreadMap.makeThread")?;

    let mut timings = Timings::default();
    let streams: Vec<_> = (0..repeat.concurrency.max(1))
        .map(|i| {
            if i == 0 {
                (thread.clone(), callback.clone())
            } else {
                let (t, _, cb) = make_thread(format!("{thread_name}/{i}"));
                (t, cb)
            }
        })
        .collect();
    let runs = streams.iter().map(|(t, cb)| {
        let target = target.clone();
        async move {
            let mut times = Vec::with_capacity(repeat.count as usize);
            for i in 0..repeat.warmup + repeat.count.max(1) {
                let start = Instant::now();
                let sent = send(&target, last, t, cb)?;
                sent.promise.await.map_err(anyhow::Error::from)?;
                if i >= repeat.warmup {
                    times.push(start.elapsed().as_nanos() as u64);
                }
            }
            Ok::<_, anyhow::Error>(times)
        }
    });
    let results = futures::future::try_join_all(runs).await;
    for (cap, call) in to_destroy.iter().rev() {
        send(cap, call, &thread, &callback)?
            .promise
            .await
            .map_err(anyhow::Error::from)
            .context("destroy")?;
    }
    for times in results? {
        timings.round_trips_ns.extend(times);
    }
    // Let the server's Releases for our callback threads arrive before disconnecting.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(timings)
}
