//! The capability implementations: what bitcoin-node master answers.
//!
//! Every method that takes a `Context` first waits for its turn on the server Thread that runs
//! it and holds that turn until it returns (`ConnThreads::enter`); the [`threads`]
//! module says how that stands in for libmultiprocess's worker threads. The waits
//! (`waitTipChanged`, `waitNext`) are timers on the event loop, so the wire shows the same
//! calls, results, order and timings as the node's blocked worker threads.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use capnp::Error;
use tokio::sync::Notify;
use tokio::time::Instant;

use mpspy_client::dispatch::{self, Interface, std_exception};
use mpspy_client::schema::echo_capnp::echo;
use mpspy_client::schema::init_capnp::init;
use mpspy_client::schema::mining_capnp::{block_template, mining};
use mpspy_client::schema::proxy_capnp::thread_map;
use mpspy_client::schema::rpc_capnp::rpc;
use mpspy_client::threads::{self, ConnThreads, Names};

use crate::blocks;

/// Waits are capped so a client asking for "forever" (the schema default
/// `maxDouble` ms) cannot pin a test for long.
const MAX_WAIT: Duration = Duration::from_secs(10);

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

/// A new `Init`: the bootstrap capability of one connection (libmultiprocess
/// creates one per connection), with the connection's threads and pool.
pub(crate) fn new_init(names: Rc<Names>) -> init::Client {
    dispatch::new_client(InitImpl {
        conn: ConnThreads::new(names),
        client_thread_maps: RefCell::default(),
    })
}

struct InitImpl {
    conn: Rc<ConnThreads>,
    /// The ThreadMaps clients passed to `construct`. Kept for the connection's
    /// lifetime like libmultiprocess does; never used, since the node never
    /// creates threads in its clients.
    client_thread_maps: RefCell<Vec<thread_map::Client>>,
}

impl Interface for InitImpl {
    type Client = init::Client;
    const NAME: &'static str = "capnp/init.capnp:Init";
    const METHODS: u16 = 5;
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
            .set_thread_map(threads::thread_map(self.conn.clone()));
        Ok(())
    }

    async fn make_echo(
        self: Rc<Self>,
        params: init::MakeEchoParams,
        mut results: init::MakeEchoResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(dispatch::new_client(EchoImpl {
            conn: self.conn.clone(),
        }));
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
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(dispatch::new_client(MiningImpl {
            conn: self.conn.clone(),
            interrupt: Rc::new(Interrupt::default()),
        }));
        Ok(())
    }

    async fn make_rpc(
        self: Rc<Self>,
        params: init::MakeRpcParams,
        mut results: init::MakeRpcResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(dispatch::new_client(RpcImpl {
            conn: self.conn.clone(),
        }));
        Ok(())
    }
}

struct EchoImpl {
    conn: Rc<ConnThreads>,
}

impl Interface for EchoImpl {
    type Client = echo::Client;
    const NAME: &'static str = "capnp/echo.capnp:Echo";
    const METHODS: u16 = 2;
}

impl echo::Server for EchoImpl {
    async fn destroy(
        self: Rc<Self>,
        params: echo::DestroyParams,
        _: echo::DestroyResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        Ok(())
    }

    async fn echo(
        self: Rc<Self>,
        params: echo::EchoParams,
        mut results: echo::EchoResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
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
    conn: Rc<ConnThreads>,
    interrupt: Rc<Interrupt>,
}

impl Interface for MiningImpl {
    type Client = mining::Client;
    const NAME: &'static str = "capnp/mining.capnp:Mining";
    const METHODS: u16 = 10;
}

fn set_tip(mut tip: mpspy_client::schema::common_capnp::block_ref::Builder<'_>) {
    tip.set_hash(&blocks::TIP_HASH);
    tip.set_height(blocks::TIP_HEIGHT);
}

/// What the node's deserializer throws when a `Data` argument ends too early.
fn end_of_data() -> Error {
    std_exception("SpanReader::read(): end of data: iostream error")
}

/// Fails like the node for bytes too short to be a transaction (version, one input count, one
/// output count, lock time: 10 bytes). Nothing longer is parsed: the test peer never looks
/// inside transactions.
fn check_transaction(tx: &[u8]) -> Result<(), Error> {
    if tx.len() < 10 {
        Err(end_of_data())
    } else {
        Ok(())
    }
}

/// The first check a block fails here: what master answers for a block built from a template
/// without work (observed). On regtest about half of such blocks pass proof of work by chance
/// and then fail the merkle root check; the test peer always reports the proof-of-work failure
/// when asked to check it, so its answers are repeatable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// `high-hash` / `proof of work failed`.
    HighHash,
    /// `bad-txnmrklroot` / `hashMerkleRoot mismatch` (proof of work not checked).
    BadMerkleRoot,
    /// Neither checked: the block's parent is not one the test peer knows (its chain is made
    /// up).
    BadPrevBlock,
}

impl Verdict {
    fn parts(self) -> (bool, &'static str, &'static str) {
        match self {
            Verdict::HighHash => (false, "high-hash", "proof of work failed"),
            Verdict::BadMerkleRoot => (false, "bad-txnmrklroot", "hashMerkleRoot mismatch"),
            Verdict::BadPrevBlock => (false, "bad-prevblk", ""),
        }
    }

    fn write(self, mut r: mining::check_block_results::Builder<'_>) {
        let (result, reason, debug) = self.parts();
        r.set_result(result);
        r.set_reason(reason);
        r.set_debug(debug);
    }

    fn write_solution(self, mut r: block_template::submit_solution_results::Builder<'_>) {
        let (result, reason, debug) = self.parts();
        r.set_result(result);
        r.set_reason(reason);
        r.set_debug(debug);
    }
}

/// Judges a serialized block like `checkBlock`: anything up to the header alone cannot be
/// deserialized (the transaction count is missing).
fn judge_block(block: &[u8], check_pow: bool, check_merkle_root: bool) -> Result<Verdict, Error> {
    if block.len() <= 80 {
        return Err(end_of_data());
    }
    Ok(if check_pow {
        Verdict::HighHash
    } else if check_merkle_root {
        Verdict::BadMerkleRoot
    } else {
        Verdict::BadPrevBlock
    })
}

/// Transaction ids are deserialized as 256-bit hashes before the lookup, so each must be 32
/// bytes. (No transaction is ever found: there is no mempool.)
fn check_ids(ids: capnp::data_list::Reader<'_>) -> Result<(), Error> {
    for id in ids.iter() {
        if id?.len() != 32 {
            return Err(end_of_data());
        }
    }
    Ok(())
}

impl mining::Server for MiningImpl {
    async fn is_test_chain(
        self: Rc<Self>,
        params: mining::IsTestChainParams,
        mut results: mining::IsTestChainResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(true);
        Ok(())
    }

    async fn is_initial_block_download(
        self: Rc<Self>,
        params: mining::IsInitialBlockDownloadParams,
        mut results: mining::IsInitialBlockDownloadResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(false);
        Ok(())
    }

    async fn get_tip(
        self: Rc<Self>,
        params: mining::GetTipParams,
        mut results: mining::GetTipResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
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
        let (turn, timeout) = {
            let params = params.get()?;
            let turn = self.conn.enter(params.get_context()?).await?;
            (turn, wait_duration(params.get_timeout()))
        };
        // The tip never changes here: return it after the timeout, or early
        // when `interrupt` is called. The wait holds the Thread's turn, like
        // the node's blocked worker thread.
        self.interrupt.wait(timeout).await;
        set_tip(results.get().init_result());
        drop(turn);
        Ok(())
    }

    async fn create_new_block(
        self: Rc<Self>,
        params: mining::CreateNewBlockParams,
        mut results: mining::CreateNewBlockResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results
            .get()
            .set_result(dispatch::new_client(BlockTemplateImpl {
                conn: self.conn.clone(),
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
        let _turn = self.conn.enter(params.get_context()?).await?;
        let options = params.get_options()?;
        let verdict = judge_block(
            params.get_block()?,
            options.get_check_pow(),
            options.get_check_merkle_root(),
        )?;
        verdict.write(results.get());
        Ok(())
    }

    async fn submit_block(
        self: Rc<Self>,
        params: mining::SubmitBlockParams,
        mut results: mining::SubmitBlockResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
        let (result, reason, debug) = judge_block(params.get_block()?, true, true)?.parts();
        let mut r = results.get();
        r.set_result(result);
        r.set_reason(reason);
        r.set_debug(debug);
        Ok(())
    }

    async fn get_transactions_by_tx_i_d(
        self: Rc<Self>,
        params: mining::GetTransactionsByTxIDParams,
        mut results: mining::GetTransactionsByTxIDResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
        let txids = params.get_txids()?;
        check_ids(txids)?;
        // Null elements: what master sends for transactions it does not have (observed).
        results.get().init_result(txids.len());
        Ok(())
    }

    async fn get_transactions_by_witness_i_d(
        self: Rc<Self>,
        params: mining::GetTransactionsByWitnessIDParams,
        mut results: mining::GetTransactionsByWitnessIDResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
        let wtxids = params.get_wtxids()?;
        check_ids(wtxids)?;
        results.get().init_result(wtxids.len());
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
    conn: Rc<ConnThreads>,
    interrupt: Interrupt,
}

impl Interface for BlockTemplateImpl {
    type Client = block_template::Client;
    const NAME: &'static str = "capnp/mining.capnp:BlockTemplate";
    const METHODS: u16 = 11;
}

impl block_template::Server for BlockTemplateImpl {
    async fn destroy(
        self: Rc<Self>,
        params: block_template::DestroyParams,
        _: block_template::DestroyResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        Ok(())
    }

    async fn get_block_header(
        self: Rc<Self>,
        params: block_template::GetBlockHeaderParams,
        mut results: block_template::GetBlockHeaderResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(&blocks::header());
        Ok(())
    }

    async fn get_block(
        self: Rc<Self>,
        params: block_template::GetBlockParams,
        mut results: block_template::GetBlockResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().set_result(&blocks::block());
        Ok(())
    }

    async fn get_tx_fees(
        self: Rc<Self>,
        params: block_template::GetTxFeesParams,
        mut results: block_template::GetTxFeesResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        // The coinbase is the only transaction, and it is not listed.
        results.get().init_result(0);
        Ok(())
    }

    async fn get_tx_sigops(
        self: Rc<Self>,
        params: block_template::GetTxSigopsParams,
        mut results: block_template::GetTxSigopsResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().init_result(0);
        Ok(())
    }

    async fn get_coinbase_tx(
        self: Rc<Self>,
        params: block_template::GetCoinbaseTxParams,
        mut results: block_template::GetCoinbaseTxResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
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
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        results.get().init_result(0);
        Ok(())
    }

    async fn submit_solution_old7(
        self: Rc<Self>,
        params: block_template::SubmitSolutionOld7Params,
        _: block_template::SubmitSolutionOld7Results,
    ) -> Result<(), Error> {
        let params = params.get()?;
        // Master's stub at v31's submitSolution ordinal. It still runs on the worker and the
        // coinbase is still deserialized first, so those errors come before the stub's.
        let _turn = self.conn.enter(params.get_context()?).await?;
        check_transaction(params.get_coinbase()?)?;
        Err(std_exception(
            "Old submitSolution (@7) not supported. Please update your client!",
        ))
    }

    async fn submit_solution(
        self: Rc<Self>,
        params: block_template::SubmitSolutionParams,
        mut results: block_template::SubmitSolutionResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
        check_transaction(params.get_coinbase()?)?;
        // Nothing here does proof of work.
        Verdict::HighHash.write_solution(results.get());
        Ok(())
    }

    async fn wait_next(
        self: Rc<Self>,
        params: block_template::WaitNextParams,
        _: block_template::WaitNextResults,
    ) -> Result<(), Error> {
        let (turn, timeout) = {
            let params = params.get()?;
            let turn = self.conn.enter(params.get_context()?).await?;
            (turn, wait_duration(params.get_options()?.get_timeout()))
        };
        // No new template ever appears: after the timeout (or an
        // interruptWait) the answer is a null capability, i.e. `result` left
        // unset. The wait holds the Thread's turn.
        self.interrupt.wait(timeout).await;
        drop(turn);
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

struct RpcImpl {
    conn: Rc<ConnThreads>,
}

impl Interface for RpcImpl {
    type Client = rpc::Client;
    const NAME: &'static str = "capnp/rpc.capnp:Rpc";
    const METHODS: u16 = 1;
}

impl rpc::Server for RpcImpl {
    async fn execute_rpc(
        self: Rc<Self>,
        params: rpc::ExecuteRpcParams,
        mut results: rpc::ExecuteRpcResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
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
    use crate::EXE_NAME;

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

    /// A Mining object and a Thread to call it on, from one connection.
    fn mining_client() -> (
        mining::Client,
        mpspy_client::schema::proxy_capnp::thread::Client,
    ) {
        let conn = ConnThreads::new(Names::new(EXE_NAME));
        let thread = conn.make_thread("test");
        let mining = dispatch::new_client(MiningImpl {
            conn,
            interrupt: Rc::new(Interrupt::default()),
        });
        (mining, thread)
    }

    #[test]
    fn calls_without_context_thread_fail_like_master() {
        local(async {
            let (mining, _) = mining_client();
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
            let (mining, thread) = mining_client();
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

    /// Sends `waitTipChanged(timeout_ms)` on `thread` (none: the pool) and returns its name
    /// once it has returned, pushing it onto `order`.
    async fn wait(
        mining: &mining::Client,
        thread: Option<&mpspy_client::schema::proxy_capnp::thread::Client>,
        timeout_ms: f64,
        name: &'static str,
        order: &RefCell<Vec<&'static str>>,
    ) {
        let mut req = mining.wait_tip_changed_request();
        if let Some(t) = thread {
            req.get().init_context().set_thread(t.clone());
        }
        req.get().set_timeout(timeout_ms);
        req.send().promise.await.unwrap();
        order.borrow_mut().push(name);
    }

    #[test]
    fn calls_queue_per_thread_and_pools_take_the_least_busy_thread() {
        local(async {
            let conn = ConnThreads::new(Names::new(EXE_NAME));
            let t1 = conn.make_thread("t1");
            let t2 = conn.make_thread("t2");
            let mining = dispatch::new_client(MiningImpl {
                conn: conn.clone(),
                interrupt: Rc::new(Interrupt::default()),
            });
            let order = RefCell::new(Vec::new());
            // Sent in this order: on one Thread the short call waits for the long one, on
            // another it does not.
            futures::join!(
                wait(&mining, Some(&t1), 200.0, "t1 long", &order),
                wait(&mining, Some(&t1), 10.0, "t1 short", &order),
                wait(&mining, Some(&t2), 50.0, "t2", &order),
            );
            assert_eq!(order.take(), ["t2", "t1 long", "t1 short"]);

            let mut req = threads::thread_map(conn.clone()).make_pool_request();
            req.get().set_count(2);
            req.send().promise.await.unwrap();
            // a, c on pool/0 (ties go to the lower index); b, d on pool/1.
            futures::join!(
                wait(&mining, None, 300.0, "a", &order),
                wait(&mining, None, 40.0, "b", &order),
                wait(&mining, None, 40.0, "c", &order),
                wait(&mining, None, 40.0, "d", &order),
            );
            assert_eq!(order.take(), ["b", "d", "a", "c"]);
        });
    }
}
