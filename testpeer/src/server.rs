//! The capability implementations: what bitcoin-node master answers.
//!
//! libmultiprocess runs every Context-taking method on the worker thread named
//! in `Context.thread`; here everything runs on the one event-loop thread and
//! the waits (`waitTipChanged`, `waitNext`) are asynchronous sleeps, so the
//! wire shows the same calls, results and timings without worker threads.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use capnp::Error;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::EXE_NAME;
use crate::blocks;
use crate::schema::echo_capnp::echo;
use crate::schema::init_capnp::init;
use crate::schema::mining_capnp::{block_template, mining};
use crate::schema::proxy_capnp::{context, thread, thread_map};
use crate::schema::rpc_capnp::rpc;

/// Waits are capped so a client asking for "forever" (the schema default
/// `maxDouble` ms) cannot pin a test for long.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What C++ `std::exception`s look like on the wire: libmultiprocess sends
/// `Exception{type = failed, reason = "std::exception: <what()>"}`.
fn std_exception(what: &str) -> Error {
    Error::failed(format!("std::exception: {what}"))
}

/// A libmultiprocess server needs `Context.thread` to know which worker runs
/// the call. Without it (and without a pool, which this peer never has)
/// master fails the call with this exact text.
fn require_thread(ctx: context::Reader<'_>) -> Result<(), Error> {
    if ctx.has_thread() {
        Ok(())
    } else {
        Err(std_exception("no thread specified and no pool configured"))
    }
}

/// A wait timeout in milliseconds (Float64, as in `BlockWaitOptions` and
/// `waitTipChanged`), capped at [`MAX_WAIT`]. NaN and negatives mean "now".
fn wait_duration(timeout_ms: f64) -> Duration {
    if timeout_ms > 0.0 {
        // Clamp as a float first: the schema default (maxDouble) and
        // infinity do not fit in a Duration.
        Duration::from_secs_f64((timeout_ms / 1000.0).min(MAX_WAIT.as_secs_f64()))
    } else {
        Duration::ZERO
    }
}

/// Process-wide state shared by every connection.
pub(crate) struct Peer {
    pid: u32,
    next_thread: Cell<u64>,
}

impl Peer {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self {
            pid: std::process::id(),
            next_thread: Cell::new(1),
        })
    }

    /// The long thread name `Thread.getName` returns. libmultiprocess uses
    /// `<exe>-<pid>/<pthread name>-<tid> (from <client thread name>)`; a
    /// counter stands in for the OS thread here.
    fn thread_name(&self, from: &str) -> String {
        let n = self.next_thread.get();
        self.next_thread.set(n + 1);
        format!("{EXE_NAME}-{}/{n} (from {from})", self.pid)
    }

    /// The name this process gives its own (calling) thread as a client.
    pub(crate) fn main_thread_name(&self) -> String {
        format!("{EXE_NAME}-{}/main", self.pid)
    }
}

/// A new `Init`: the bootstrap capability of one connection (libmultiprocess
/// creates one per connection).
pub(crate) fn new_init(peer: Rc<Peer>) -> init::Client {
    capnp_rpc::new_client(InitImpl {
        peer,
        client_thread_maps: RefCell::default(),
    })
}

/// A `ThreadMap` whose `makeThread` creates named [`thread::Client`]s. The
/// server returns one from `construct`; a client passes its own to
/// `construct` so the server could create threads in it.
pub(crate) fn new_thread_map(peer: Rc<Peer>) -> thread_map::Client {
    capnp_rpc::new_client(ThreadMapImpl { peer })
}

/// A `Thread` with a fixed name: a client's `Context.callbackThread`.
pub(crate) fn new_thread(name: String) -> thread::Client {
    capnp_rpc::new_client(ThreadImpl { name })
}

struct InitImpl {
    peer: Rc<Peer>,
    /// The ThreadMaps clients passed to `construct`. Kept for the connection's
    /// lifetime like libmultiprocess does; never used, since the node never
    /// creates threads in its clients.
    client_thread_maps: RefCell<Vec<thread_map::Client>>,
}

impl init::Server for InitImpl {
    async fn construct(
        self: Rc<Self>,
        params: init::ConstructParams,
        mut results: init::ConstructResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        if params.has_thread_map() {
            self.client_thread_maps
                .borrow_mut()
                .push(params.get_thread_map()?);
        }
        results
            .get()
            .set_thread_map(new_thread_map(self.peer.clone()));
        Ok(())
    }

    async fn make_echo(
        self: Rc<Self>,
        params: init::MakeEchoParams,
        mut results: init::MakeEchoResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(capnp_rpc::new_client(EchoImpl));
        Ok(())
    }

    async fn make_mining_old2(
        self: Rc<Self>,
        _: init::MakeMiningOld2Params,
        _: init::MakeMiningOld2Results,
    ) -> Result<(), Error> {
        // The stub master keeps at v30's makeMining ordinal.
        Err(std_exception(
            "Old mining interface (@2) not supported. Please update your client!",
        ))
    }

    async fn make_mining(
        self: Rc<Self>,
        params: init::MakeMiningParams,
        mut results: init::MakeMiningResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(capnp_rpc::new_client(MiningImpl {
            interrupt: Rc::new(Interrupt::default()),
        }));
        Ok(())
    }

    async fn make_rpc(
        self: Rc<Self>,
        params: init::MakeRpcParams,
        mut results: init::MakeRpcResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(capnp_rpc::new_client(RpcImpl));
        Ok(())
    }
}

struct ThreadMapImpl {
    peer: Rc<Peer>,
}

impl thread_map::Server for ThreadMapImpl {
    async fn make_thread(
        self: Rc<Self>,
        params: thread_map::MakeThreadParams,
        mut results: thread_map::MakeThreadResults,
    ) -> Result<(), Error> {
        let from = params.get()?.get_name()?;
        let name = self
            .peer
            .thread_name(&String::from_utf8_lossy(from.as_bytes()));
        results.get().set_result(new_thread(name));
        Ok(())
    }
    // makePool (master only) stays unimplemented: this peer has no pools.
}

struct ThreadImpl {
    name: String,
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

struct EchoImpl;

impl echo::Server for EchoImpl {
    async fn destroy(
        self: Rc<Self>,
        params: echo::DestroyParams,
        _: echo::DestroyResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)
    }

    async fn echo(
        self: Rc<Self>,
        params: echo::EchoParams,
        mut results: echo::EchoResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        require_thread(params.get_context()?)?;
        results.get().set_result(params.get_echo()?);
        Ok(())
    }
}

/// An interruptible wait with Bitcoin's semantics: `trigger` wakes every
/// waiter and leaves a flag that the first waiter to see it consumes, so an
/// interrupt sent just before the wait starts is not lost.
#[derive(Default)]
struct Interrupt {
    flag: Cell<bool>,
    notify: Notify,
}

impl Interrupt {
    fn trigger(&self) {
        self.flag.set(true);
        self.notify.notify_waiters();
    }

    /// Sleeps for `timeout` unless interrupted first; returns whether it was.
    async fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Register before checking the flag, so a trigger in between
            // still wakes us.
            let notified = self.notify.notified();
            if self.flag.replace(false) {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return false,
                () = notified => {}
            }
        }
    }
}

struct MiningImpl {
    interrupt: Rc<Interrupt>,
}

fn set_tip(mut tip: crate::schema::common_capnp::block_ref::Builder<'_>) {
    tip.set_hash(&blocks::TIP_HASH);
    tip.set_height(blocks::TIP_HEIGHT);
}

impl mining::Server for MiningImpl {
    async fn is_test_chain(
        self: Rc<Self>,
        params: mining::IsTestChainParams,
        mut results: mining::IsTestChainResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(true);
        Ok(())
    }

    async fn is_initial_block_download(
        self: Rc<Self>,
        params: mining::IsInitialBlockDownloadParams,
        mut results: mining::IsInitialBlockDownloadResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(false);
        Ok(())
    }

    async fn get_tip(
        self: Rc<Self>,
        params: mining::GetTipParams,
        mut results: mining::GetTipResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        let mut r = results.get();
        set_tip(r.reborrow().init_result());
        r.set_has_result(true);
        Ok(())
    }

    async fn wait_tip_changed(
        self: Rc<Self>,
        params: mining::WaitTipChangedParams,
        mut results: mining::WaitTipChangedResults,
    ) -> Result<(), Error> {
        let timeout = {
            let params = params.get()?;
            require_thread(params.get_context()?)?;
            wait_duration(params.get_timeout())
        };
        // The tip never changes here: return it after the timeout, or early
        // when `interrupt` is called.
        self.interrupt.wait(timeout).await;
        set_tip(results.get().init_result());
        Ok(())
    }

    async fn create_new_block(
        self: Rc<Self>,
        params: mining::CreateNewBlockParams,
        mut results: mining::CreateNewBlockResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results
            .get()
            .set_result(capnp_rpc::new_client(BlockTemplateImpl {
                interrupt: Interrupt::default(),
            }));
        Ok(())
    }

    async fn check_block(
        self: Rc<Self>,
        params: mining::CheckBlockParams,
        mut results: mining::CheckBlockResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        require_thread(params.get_context()?)?;
        if params.get_block()?.len() < 80 {
            // What the node's deserializer throws for a truncated block.
            return Err(std_exception(
                "SpanReader::read(): end of data: iostream error",
            ));
        }
        let mut r = results.get();
        r.set_result(false);
        r.set_reason("bad-prevblk");
        r.set_debug("");
        Ok(())
    }

    async fn interrupt(
        self: Rc<Self>,
        _: mining::InterruptParams,
        _: mining::InterruptResults,
    ) -> Result<(), Error> {
        self.interrupt.trigger();
        Ok(())
    }
}

struct BlockTemplateImpl {
    interrupt: Interrupt,
}

impl block_template::Server for BlockTemplateImpl {
    async fn destroy(
        self: Rc<Self>,
        params: block_template::DestroyParams,
        _: block_template::DestroyResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)
    }

    async fn get_block_header(
        self: Rc<Self>,
        params: block_template::GetBlockHeaderParams,
        mut results: block_template::GetBlockHeaderResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(&blocks::header());
        Ok(())
    }

    async fn get_block(
        self: Rc<Self>,
        params: block_template::GetBlockParams,
        mut results: block_template::GetBlockResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().set_result(&blocks::block());
        Ok(())
    }

    async fn get_tx_fees(
        self: Rc<Self>,
        params: block_template::GetTxFeesParams,
        mut results: block_template::GetTxFeesResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        // The coinbase is the only transaction, and it is not listed.
        results.get().init_result(0);
        Ok(())
    }

    async fn get_tx_sigops(
        self: Rc<Self>,
        params: block_template::GetTxSigopsParams,
        mut results: block_template::GetTxSigopsResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().init_result(0);
        Ok(())
    }

    async fn get_coinbase_tx(
        self: Rc<Self>,
        params: block_template::GetCoinbaseTxParams,
        mut results: block_template::GetCoinbaseTxResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        let mut tx = results.get().init_result();
        tx.set_version(blocks::COINBASE_VERSION);
        tx.set_sequence(blocks::COINBASE_SEQUENCE);
        tx.set_script_sig_prefix(&blocks::SCRIPT_SIG_PREFIX);
        tx.set_witness(&blocks::COINBASE_WITNESS);
        tx.set_block_reward_remaining(blocks::BLOCK_REWARD);
        tx.reborrow()
            .init_required_outputs(1)
            .set(0, &blocks::required_output());
        tx.set_lock_time(blocks::COINBASE_LOCK_TIME);
        Ok(())
    }

    async fn get_coinbase_merkle_path(
        self: Rc<Self>,
        params: block_template::GetCoinbaseMerklePathParams,
        mut results: block_template::GetCoinbaseMerklePathResults,
    ) -> Result<(), Error> {
        require_thread(params.get()?.get_context()?)?;
        results.get().init_result(0);
        Ok(())
    }

    async fn submit_solution_old7(
        self: Rc<Self>,
        _: block_template::SubmitSolutionOld7Params,
        _: block_template::SubmitSolutionOld7Results,
    ) -> Result<(), Error> {
        // Master's stub at v31's submitSolution ordinal.
        Err(std_exception(
            "Old submitSolution (@7) not supported. Please update your client!",
        ))
    }

    async fn wait_next(
        self: Rc<Self>,
        params: block_template::WaitNextParams,
        _: block_template::WaitNextResults,
    ) -> Result<(), Error> {
        let timeout = {
            let params = params.get()?;
            require_thread(params.get_context()?)?;
            wait_duration(params.get_options()?.get_timeout())
        };
        // No new template ever appears: after the timeout (or an
        // interruptWait) the answer is a null capability, i.e. `result` left
        // unset.
        self.interrupt.wait(timeout).await;
        Ok(())
    }

    async fn interrupt_wait(
        self: Rc<Self>,
        _: block_template::InterruptWaitParams,
        _: block_template::InterruptWaitResults,
    ) -> Result<(), Error> {
        self.interrupt.trigger();
        Ok(())
    }
}

struct RpcImpl;

impl rpc::Server for RpcImpl {
    async fn execute_rpc(
        self: Rc<Self>,
        params: rpc::ExecuteRpcParams,
        mut results: rpc::ExecuteRpcResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        require_thread(params.get_context()?)?;
        let request = String::from_utf8_lossy(params.get_request()?.as_bytes()).into_owned();
        results.get().set_result(&json_rpc_reply(&request)[..]);
        Ok(())
    }
}

/// The JSON-RPC 2.0 reply bitcoin-node would send for `request`: only
/// `getblockcount` is known. Keys are written in Bitcoin's order.
fn json_rpc_reply(request: &str) -> String {
    let parsed: serde_json::Value = match serde_json::from_str(request) {
        Ok(v) => v,
        Err(_) => {
            return r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
                .to_string();
        }
    };
    let id = parsed.get("id").cloned().unwrap_or(serde_json::Value::Null);
    match parsed.get("method").and_then(serde_json::Value::as_str) {
        Some("getblockcount") => {
            format!(
                r#"{{"jsonrpc":"2.0","result":{},"id":{id}}}"#,
                blocks::TIP_HEIGHT
            )
        }
        _ => format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32601,"message":"Method not found"}},"id":{id}}}"#
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rpc_replies() {
        assert_eq!(
            json_rpc_reply(r#"{"method":"getblockcount","params":[],"id":"1","jsonrpc":"2.0"}"#),
            r#"{"jsonrpc":"2.0","result":5,"id":"1"}"#
        );
        assert_eq!(
            json_rpc_reply(r#"{"method":"stop","id":7,"jsonrpc":"2.0"}"#),
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":7}"#
        );
        assert!(json_rpc_reply("not json").contains("-32700"));
    }

    #[test]
    fn wait_durations_are_capped() {
        assert_eq!(wait_duration(50.0), Duration::from_millis(50));
        assert_eq!(wait_duration(f64::MAX), MAX_WAIT);
        assert_eq!(wait_duration(f64::INFINITY), MAX_WAIT);
        assert_eq!(wait_duration(-1.0), Duration::ZERO);
        assert_eq!(wait_duration(f64::NAN), Duration::ZERO);
    }

    /// Runs `f` on a current-thread runtime in a LocalSet, as the binary does.
    fn local<F: Future<Output = ()>>(f: F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    fn mining_client() -> mining::Client {
        capnp_rpc::new_client(MiningImpl {
            interrupt: Rc::new(Interrupt::default()),
        })
    }

    #[test]
    fn calls_without_context_thread_fail_like_master() {
        local(async {
            let mining = mining_client();
            let err = mining
                .is_test_chain_request()
                .send()
                .promise
                .await
                .err()
                .expect("an error");
            assert_eq!(
                err.extra,
                "std::exception: no thread specified and no pool configured"
            );
        });
    }

    #[test]
    fn default_timeouts_are_interruptible() {
        local(async {
            let thread = new_thread("test".to_string());
            let mining = mining_client();
            let mut req = mining.create_new_block_request();
            req.get().init_context().set_thread(thread.clone());
            let template = req
                .send()
                .promise
                .await
                .unwrap()
                .get()
                .unwrap()
                .get_result()
                .unwrap();

            // waitNext with the schema default timeout (maxDouble ms), ended
            // by interruptWait: a null template, well before the 10 s cap.
            let start = Instant::now();
            let mut req = template.wait_next_request();
            req.get().init_context().set_thread(thread.clone());
            req.get().init_options();
            let waiting = req.send().promise;
            template
                .interrupt_wait_request()
                .send()
                .promise
                .await
                .unwrap();
            let reply = waiting.await.unwrap();
            assert!(!reply.get().unwrap().has_result());

            // waitTipChanged with its default timeout, ended by interrupt:
            // still answers with the tip.
            let mut req = mining.wait_tip_changed_request();
            req.get().init_context().set_thread(thread.clone());
            let waiting = req.send().promise;
            mining.interrupt_request().send().promise.await.unwrap();
            let reply = waiting.await.unwrap();
            assert_eq!(reply.get().unwrap().get_result().unwrap().get_height(), 5);
            assert!(start.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    fn thread_names() {
        let peer = Peer::new();
        let pid = std::process::id();
        assert_eq!(
            peer.thread_name("pyclient"),
            format!("mpspy-testpeer-{pid}/1 (from pyclient)")
        );
        assert_eq!(
            peer.thread_name(""),
            format!("mpspy-testpeer-{pid}/2 (from )")
        );
    }
}
