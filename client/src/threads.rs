//! Threads: `ThreadMap.makeThread`, `ThreadMap.makePool` and where each Context call runs
//! (protocol digest §4.2, §4.3), for both ends of a connection.
//!
//! A libmultiprocess client passes its own ThreadMap to `Init.construct`, so that the server can
//! make threads on the client's side and call back into it; the server's ThreadMap, returned by
//! `construct`, makes the threads the client's calls run on. Both are the same object in
//! libmultiprocess, and here too: [`thread_map()`] is what this crate's client hands to
//! `construct`, and what the test peer's `Init` returns.
//!
//! bitcoin-node runs every method that takes a `Context` on a worker: the dedicated OS thread
//! that `makeThread` started for `Context.thread`, or, when `thread` is not set and the
//! connection has a pool (`makePool`, master only), the pool thread with the fewest requests in
//! flight. A worker runs its calls strictly one after another, queueing the ones that arrive
//! while it is busy; different workers run in parallel. Methods without a Context run on the
//! event loop at once (that is how `Mining.interrupt` and `BlockTemplate.interruptWait` reach a
//! worker blocked in a wait).
//!
//! # No OS threads here, same wire
//!
//! Everything stays on the one event loop (capnp-rust objects are `!Send`), and each Thread is a first-in-first-out turn queue instead: a Context method first
//! takes its Thread's turn, runs to completion (waits included) while holding it, and only then
//! lets the next queued call start. So, as with the C++ node:
//!
//! - two calls on one Thread return one after the other, in the order they arrived: the second
//!   one's Return comes a whole run of the first one later;
//! - calls on different Threads, or on Threads of different connections, do not wait for each
//!   other;
//! - a call waiting for its turn that the client cancels (`Finish` before `Return`) leaves the
//!   queue and is answered `canceled`.
//!
//! What cannot be seen on the wire is not imitated: there are no tids (the long names use a
//! counter where libmultiprocess has the OS thread id), and a method never blocks the event
//! loop, because the waits (`waitTipChanged`, `waitNext`) are timers, not blocked threads.
//!
//! # Errors, with master's texts (observed)
//!
//! | case | `Exception.reason` (type `failed`) |
//! |---|---|
//! | no `thread`, no pool on the connection | `std::exception: no thread specified and no pool configured` |
//! | `thread` is not a Thread this process made (e.g. one the client hosts) | `std::exception: invalid thread handle` |
//! | `makePool` when the connection already has a pool | `std::exception: makePool called on connection with existing pool` |
//!
//! `makePool(0)` creates nothing, so a later `makePool` still works, as on master.
//!
//! # Releases of `callbackThread`
//!
//! For each request the node wraps `Context.callbackThread` and drops that wrapper once the
//! result is back on the event loop, so its `Release` follows the call's `Return` (in the same
//! write, or shortly after). capnp-rust would release it while the method returns, one message
//! *before* the Return; [`Turn`] keeps the capability until the Return has been queued.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use capnp::Error;
use capnp::capability::FromClientHook;
use capnp_rpc::CapabilityServerSet;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::dispatch::{self, Hook, Interface, std_exception};
use crate::schema::proxy_capnp::{context, thread, thread_map};

/// Pools larger than this are refused: each pool thread is cheap here, but a peer asking for
/// billions should get an error rather than exhaust this process's memory.
const MAX_POOL: u32 = 1024;

/// How this process names threads, as libmultiprocess does: `<exe>-<pid>/<thread>`.
#[derive(Debug)]
pub struct Names {
    exe: String,
    pid: u32,
    next_thread: Cell<u64>,
}

impl Names {
    /// Names for this process, running as `exe` (e.g. `mpspy`, `mpspy-testpeer`).
    pub fn new(exe: &str) -> Rc<Self> {
        Rc::new(Names {
            exe: exe.to_string(),
            pid: std::process::id(),
            next_thread: Cell::new(1),
        })
    }

    /// The long name of a new Thread made here, as `Thread.getName` returns it. libmultiprocess
    /// uses `<exe>-<pid>/<pthread name>-<tid> (<origin>)`, `<origin>` being `from <caller's
    /// thread name>` or `pool/<i>`; its `<exe>-<pid>/<tid>` form for threads without a pthread
    /// name is used here, with a counter standing in for the tid (there is no OS thread).
    pub fn thread_name(&self, origin: &str) -> String {
        let n = self.next_thread.get();
        self.next_thread.set(n + 1);
        format!("{}-{}/{n} ({origin})", self.exe, self.pid)
    }

    /// The name of one of this process's own (calling) threads: `<exe>-<pid>/<thread>`.
    pub fn own_thread(&self, thread: &str) -> String {
        format!("{}-{}/{thread}", self.exe, self.pid)
    }

    /// The name this process gives its main thread as a client: libmultiprocess's
    /// `<exe>-<pid>/<pthread name>-<tid>`, which for a process's main thread is
    /// `<exe>-<pid>/<exe>-<pid>` (the pthread name is the executable's, and the main thread's
    /// tid is the pid), e.g. `bitcoin-cli-4607/bitcoin-cli-4607`.
    pub fn main_thread_name(&self) -> String {
        self.own_thread(&format!("{}-{}", self.exe, self.pid))
    }
}

/// One connection's threads: the Threads its ThreadMaps made, and its pool.
pub struct ConnThreads {
    names: Rc<Names>,
    /// Our Thread capabilities, to recognise them when they come back in `Context.thread`
    /// (libmultiprocess keeps a `CapabilityServerSet<Thread>` for the same purpose).
    threads: RefCell<CapabilityServerSet<ThreadImpl, Hook>>,
    /// Empty until `makePool`.
    pool: RefCell<Vec<Rc<ThreadImpl>>>,
}

impl ConnThreads {
    /// No threads yet; new ones are named by `names`.
    pub fn new(names: Rc<Names>) -> Rc<Self> {
        Rc::new(ConnThreads {
            names,
            threads: RefCell::default(),
            pool: RefCell::default(),
        })
    }

    /// A new Thread named after the caller's thread `from` (what `makeThread` does).
    pub fn make_thread(&self, from: &str) -> thread::Client {
        let worker = ThreadImpl::new(self.names.thread_name(&format!("from {from}")));
        let mut threads = self.threads.borrow_mut();
        // Forget Threads the client has released.
        threads.gc();
        let Hook(hook) = threads.new_client(worker);
        thread::Client::new(hook)
    }

    fn make_pool(&self, count: u32) -> Result<(), Error> {
        let mut pool = self.pool.borrow_mut();
        if !pool.is_empty() {
            return Err(std_exception(
                "makePool called on connection with existing pool",
            ));
        }
        if count > MAX_POOL {
            return Err(std_exception(&format!(
                "makePool: {count} threads is more than this process makes ({MAX_POOL})"
            )));
        }
        *pool = (0..count)
            .map(|i| {
                Rc::new(ThreadImpl::new(
                    self.names.thread_name(&format!("pool/{i}")),
                ))
            })
            .collect();
        Ok(())
    }

    /// Waits for the turn of the Thread that runs a call with Context `ctx`; the call runs
    /// while the returned [`Turn`] is held.
    ///
    /// # Errors
    ///
    /// master's exceptions for a `thread` that is not one of ours and for a call without
    /// `thread` on a connection without a pool (see the module docs).
    pub async fn enter(&self, ctx: context::Reader<'_>) -> Result<Turn, Error> {
        let callback = if ctx.has_callback_thread() {
            Some(ctx.get_callback_thread()?)
        } else {
            None
        };
        let worker = if ctx.has_thread() {
            // The first call of a client thread names the Thread by the makeThread answer it
            // was pipelined on; resolving waits for that answer.
            let requested = capnp::capability::get_resolved_cap(ctx.get_thread()?).await;
            self.threads
                .borrow()
                .get_local_server_of_resolved(&Hook(requested.client.hook))
                .ok_or_else(|| std_exception("invalid thread handle"))?
        } else {
            // Fewest in flight; `min_by_key` takes the first of equals, so ties go to the
            // lowest pool index (what master does: observed with 200/600 ms waits).
            self.pool
                .borrow()
                .iter()
                .min_by_key(|t| t.in_flight.get())
                .cloned()
                .ok_or_else(|| std_exception("no thread specified and no pool configured"))?
        };
        Ok(worker.take_turn(callback).await)
    }
}

/// A `ThreadMap` making its Threads in `conn`: the server returns a new one from each
/// `construct`; a client passes its own to `construct`.
pub fn thread_map(conn: Rc<ConnThreads>) -> thread_map::Client {
    dispatch::new_client(ThreadMapImpl { conn })
}

/// A client's pipelined `makeThread`, settled: waits for its Return, lets go of the question
/// (pipeline and response, so it is Finished now, as a C++ client finishes every answer) and
/// keeps the Thread until the connection closes.
///
/// # Errors
///
/// `makeThread` failed (the error is capnp-rpc's: an exception, or the connection went).
pub async fn settle_made_thread(
    made: capnp::capability::RemotePromise<thread_map::make_thread_results::Owned>,
    keep: &crate::net::KeepUntilClose,
) -> Result<thread::Client, Error> {
    let capnp::capability::RemotePromise { promise, pipeline } = made;
    let thread = promise.await?.get()?.get_result()?;
    drop(pipeline);
    keep.keep(&thread);
    Ok(thread)
}

/// A `Thread` that only has a name: a client's `Context.callbackThread`. Nothing is routed to
/// it: the peers mpspy talks to never run a call of theirs on it.
pub fn callback_thread(name: String) -> thread::Client {
    dispatch::new_client(ThreadImpl::new(name))
}

struct ThreadMapImpl {
    conn: Rc<ConnThreads>,
}

impl Interface for ThreadMapImpl {
    type Client = thread_map::Client;
    const NAME: &'static str = "include/mp/proxy.capnp:ThreadMap";
    const METHODS: u16 = 2;
}

impl thread_map::Server for ThreadMapImpl {
    async fn make_thread(
        self: Rc<Self>,
        params: thread_map::MakeThreadParams,
        mut results: thread_map::MakeThreadResults,
    ) -> Result<(), Error> {
        let from = params.get()?.get_name()?;
        let thread = self
            .conn
            .make_thread(&String::from_utf8_lossy(from.as_bytes()));
        results.get().set_result(thread);
        Ok(())
    }

    async fn make_pool(
        self: Rc<Self>,
        params: thread_map::MakePoolParams,
        _: thread_map::MakePoolResults,
    ) -> Result<(), Error> {
        self.conn.make_pool(params.get()?.get_count())
    }
}

/// A Thread: its long name and its queue of calls.
pub(crate) struct ThreadImpl {
    name: String,
    /// Held by the call that runs now. tokio's mutex hands the lock over in the order it was
    /// asked for, which is the order the calls arrived in.
    turn: Arc<Mutex<()>>,
    /// Calls routed here that have not returned yet, queued or running (what pool routing
    /// compares).
    in_flight: Cell<usize>,
}

impl Interface for ThreadImpl {
    type Client = thread::Client;
    const NAME: &'static str = "include/mp/proxy.capnp:Thread";
    const METHODS: u16 = 1;
}

impl ThreadImpl {
    fn new(name: String) -> Self {
        ThreadImpl {
            name,
            turn: Arc::default(),
            in_flight: Cell::new(0),
        }
    }

    async fn take_turn(self: Rc<Self>, callback: Option<thread::Client>) -> Turn {
        self.in_flight.set(self.in_flight.get() + 1);
        // Counted from here, so a call that is canceled while queued is uncounted on drop.
        let in_flight = InFlight(self.clone());
        let running = self.turn.clone().lock_owned().await;
        Turn {
            _running: running,
            _in_flight: in_flight,
            callback,
        }
    }
}

impl thread::Server for ThreadImpl {
    async fn get_name(
        self: Rc<Self>,
        _: thread::GetNameParams,
        mut results: thread::GetNameResults,
    ) -> Result<(), Error> {
        results.get().set_result(&self.name[..]);
        Ok(())
    }
}

struct InFlight(Rc<ThreadImpl>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// A call's turn on its Thread: while it is held, later calls on the same Thread wait.
pub struct Turn {
    _running: OwnedMutexGuard<()>,
    _in_flight: InFlight,
    /// The request's `Context.callbackThread`, released after the Return (see the module docs).
    callback: Option<thread::Client>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            // The Turn drops as the method's future completes; capnp-rpc queues the Return in
            // that same poll, before any other task runs, so this Release is queued after it.
            tokio::task::spawn_local(async move {
                tokio::task::yield_now().await;
                drop(callback);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names() {
        let names = Names::new("mpspy-testpeer");
        let pid = std::process::id();
        assert_eq!(
            names.thread_name("from pyclient"),
            format!("mpspy-testpeer-{pid}/1 (from pyclient)")
        );
        assert_eq!(
            names.thread_name("pool/0"),
            format!("mpspy-testpeer-{pid}/2 (pool/0)")
        );
        assert_eq!(
            names.main_thread_name(),
            format!("mpspy-testpeer-{pid}/mpspy-testpeer-{pid}")
        );
        assert_eq!(
            names.own_thread("main"),
            format!("mpspy-testpeer-{pid}/main")
        );
    }
}
