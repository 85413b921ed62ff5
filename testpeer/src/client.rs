//! The client side: what a libmultiprocess C++ client (bitcoin-cli, a
//! spawning parent) sends, used by `client ADDRESS` and by `-spawn`.
//!
//! Shape on the wire (protocol digest §4.1): Bootstrap, then `Init.construct`
//! with our own ThreadMap, pipelined on the bootstrap promise; after it
//! returns, `ThreadMap.makeThread(name)` followed at once by the first real
//! call, whose `Context.thread` is the pipelined makeThread result and whose
//! `Context.callbackThread` is a Thread we host. Every later Context call
//! carries the (by then resolved) server Thread and the same callbackThread:
//! one Thread object for the one client thread, so it is always the same
//! export (id 1, after our ThreadMap's 0). The node releases it after each
//! call, and it is then exported afresh under the same id, as from a C++
//! client. Every question is Finished as soon as its Return is in (the
//! C++ client's habit), `destroy` is called before an object with one is
//! released, and the session ends like bitcoin-cli's: the last objects it
//! made are released, Init, the ThreadMap and the Thread are not, and the
//! socket closes without an Abort ([`net::as_client`]).
//!
//! # Where it still differs from a C++ client
//!
//! capnp-rust's bootstrap capability never resolves to the imported `Init`:
//! it stays a promise on the Bootstrap question. So every call on Init
//! targets `promisedAnswer(q0)` (a C++ client targets the import, id 0), the
//! bootstrap question is never Finished (the C++ client Finishes it right
//! after its Return), question ids start at 1 for the calls after construct
//! (the C++ client reuses 0), and right after the bootstrap Return the client
//! sends `Release{id = 0}` for the import it does not use (the C++ client never
//! releases Init). The node keeps serving Init through the answer, so nothing
//! else changes. Making the bootstrap resolve would need changes inside
//! capnp-rpc.

use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::EXE_NAME;
use crate::blocks::display_hash;
use mpspy_client::net::{self, KeepUntilClose};
use mpspy_client::schema::echo_capnp::echo;
use mpspy_client::schema::init_capnp::init;
use mpspy_client::schema::mining_capnp::{block_template, mining};
use mpspy_client::schema::proxy_capnp::{context, thread};
use mpspy_client::threads::{self, ConnThreads, Names};

/// What one client session does after the handshake.
#[derive(Debug, Clone)]
pub(crate) struct SessionOptions {
    /// Texts for `Echo.echo`, each sent `count` times. Without any, the
    /// session makes no Echo.
    pub(crate) echo: Vec<String>,
    pub(crate) count: u32,
    /// Also exercise Mining and BlockTemplate.
    pub(crate) mining: bool,
    /// JSON-RPC methods to run through `Init.makeRpc` / `Rpc.executeRpc`.
    pub(crate) rpc: Vec<String>,
    /// Call `Thread.getName` on the server thread and print it (an extra call
    /// the C++ client never makes, so off by default).
    pub(crate) thread_name: bool,
    /// Time each echo round trip and print percentiles instead of every result (benchmarks).
    pub(crate) timings: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            echo: vec![DEFAULT_ECHO.to_string()],
            count: 1,
            mining: false,
            rpc: Vec::new(),
            thread_name: false,
            timings: false,
        }
    }
}

/// The default echo text when none is given.
pub(crate) const DEFAULT_ECHO: &str = "hello from parent";

impl SessionOptions {
    /// Parses `[--echo TEXT]… [--count N] [--mining] [--rpc METHOD]…
    /// [--thread-name]`.
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let (opts, positional) = Self::parse_with_positional(args)?;
        if let Some(extra) = positional.first() {
            bail!("unexpected argument '{extra}'");
        }
        Ok(opts)
    }

    fn parse_with_positional(args: &[String]) -> Result<(Self, Vec<String>)> {
        let mut opts = Self {
            echo: Vec::new(),
            ..Self::default()
        };
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{flag} needs a value"))
            };
            match arg.as_str() {
                "--echo" => opts.echo.push(value("--echo")?),
                "--count" => {
                    let v = value("--count")?;
                    opts.count = v
                        .parse()
                        .with_context(|| format!("--count: not a number: '{v}'"))?;
                }
                "--mining" => opts.mining = true,
                "--rpc" => opts.rpc.push(value("--rpc")?),
                "--thread-name" => opts.thread_name = true,
                "--timings" => opts.timings = true,
                // `-spawn NAME -- OPTIONS`: the separator is accepted and
                // ignored; the child's argv is always exactly `NAME -ipcfd N`.
                "--" => {}
                s if s.starts_with("--") => bail!("unknown option '{s}'"),
                _ => positional.push(arg.clone()),
            }
        }
        // With nothing asked for, echo the default text; `--rpc METHOD` alone is
        // a bitcoin-cli session (makeRpc, executeRpc), with no Echo in it.
        if opts.echo.is_empty() && !opts.mining && opts.rpc.is_empty() {
            opts.echo.push(DEFAULT_ECHO.to_string());
        }
        Ok((opts, positional))
    }
}

/// `client ADDRESS [session options]`.
#[derive(Debug)]
pub(crate) struct Options {
    address: String,
    session: SessionOptions,
}

impl Options {
    pub(crate) fn new(address: String, session: SessionOptions) -> Self {
        Self { address, session }
    }

    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let (session, positional) = SessionOptions::parse_with_positional(args)?;
        match positional.as_slice() {
            [address] => Ok(Self {
                address: address.clone(),
                session,
            }),
            [] => bail!("client needs an address (unix:PATH)"),
            [_, extra, ..] => bail!("unexpected argument '{extra}'"),
        }
    }
}

/// `mpspy-testpeer client unix:PATH …`.
pub(crate) async fn run_client(opts: Options) -> Result<ExitCode> {
    let stream = connect(&opts.address).await?;
    run_over(stream, &opts.session).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn connect(address: &str) -> Result<tokio::net::UnixStream> {
    let Some(path) = address.strip_prefix("unix:") else {
        bail!("Unrecognized address '{address}'");
    };
    tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("connecting to {address}"))
}

#[cfg(not(unix))]
async fn connect(address: &str) -> Result<tokio::net::TcpStream> {
    bail!("Unrecognized address '{address}' (unix sockets only)")
}

/// Runs one client session over `stream`, then closes the connection.
pub(crate) async fn run_over<S>(stream: S, opts: &SessionOptions) -> Result<()>
where
    S: AsyncRead + AsyncWrite + 'static,
{
    // All our capabilities are dropped when the session ends (their Releases are queued).
    let (result, problems) = net::as_client(stream, |init, keep| session(init, keep, opts)).await;
    for p in problems {
        eprintln!("{p}");
    }
    result
}

/// The Context every worker call carries.
struct Threads {
    /// The server worker thread (first the pipelined makeThread answer).
    thread: thread::Client,
    /// Our calling thread, for callbacks.
    callback: thread::Client,
}

impl Threads {
    fn fill(&self, mut ctx: context::Builder<'_>) {
        ctx.set_thread(self.thread.clone());
        ctx.set_callback_thread(self.callback.clone());
    }
}

fn print_echo(text: &str) {
    println!("echo: {}", json_str(text));
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

async fn session(init: init::Client, keep: KeepUntilClose, opts: &SessionOptions) -> Result<()> {
    let peer = Names::new(EXE_NAME);
    let thread_name = peer.main_thread_name();

    // construct: sent right behind the Bootstrap, targeting its answer.
    let mut req = init.construct_request();
    req.get()
        .set_thread_map(threads::thread_map(ConnThreads::new(peer.clone())));
    // The response is dropped once the capability is out of it, so the
    // question is Finished right after its Return, like the C++ client does.
    let thread_map = req
        .send()
        .promise
        .await
        .context("Init.construct")?
        .get()?
        .get_thread_map()?;
    keep.keep(&thread_map);

    // makeThread, and the first real call pipelined on its answer.
    let mut req = thread_map.make_thread_request();
    req.get().set_name(&thread_name[..]);
    let make_thread = req.send();
    let mut threads = Threads {
        thread: make_thread.pipeline.get_result(),
        callback: threads::callback_thread(thread_name.clone()),
    };
    let first = first_call(&init, &threads, opts);
    // The answers come in order; take each as it arrives and let go of its
    // question so that it is Finished then, not at the end of the session.
    threads.thread = threads::settle_made_thread(make_thread, &keep)
        .await
        .context("ThreadMap.makeThread")?;

    if opts.thread_name {
        let reply = threads
            .thread
            .get_name_request()
            .send()
            .promise
            .await
            .context("Thread.getName")?;
        let name = reply.get()?.get_result()?.to_string()?;
        println!("thread: {}", json_str(&name));
    }

    // Each arm takes the first call's answer and drops the rest of it (its
    // pipeline) at once, so that question is Finished now too.
    match first {
        First::Echo(make_echo) => {
            let echo = answer(make_echo, "Init.makeEcho")
                .await?
                .get()?
                .get_result()?;
            run_echo(&echo, &threads, opts).await?;
            drop(echo);
            if opts.mining {
                run_mining(&init, &threads, None).await?;
            }
        }
        First::Mining(make_mining) => {
            let mining = answer(make_mining, "Init.makeMining")
                .await?
                .get()?
                .get_result()?;
            run_mining(&init, &threads, Some(mining)).await?;
        }
        First::Rpc(make_rpc) => {
            let rpc = answer(make_rpc, "Init.makeRpc")
                .await?
                .get()?
                .get_result()?;
            run_rpc(&init, &threads, &opts.rpc[0], Some(rpc)).await?;
        }
    }
    // The first `--rpc` ran above when nothing came before it.
    let skip = usize::from(opts.echo.is_empty() && !opts.mining);
    for method in opts.rpc.iter().skip(skip) {
        run_rpc(&init, &threads, method, None).await?;
    }
    Ok(())
}

/// Waits for the Return of `sent` and drops its pipeline, so that the question
/// is Finished as soon as the caller drops the response.
async fn answer<T>(
    sent: capnp::capability::RemotePromise<T>,
    what: &'static str,
) -> Result<capnp::capability::Response<T>>
where
    T: capnp::traits::Pipelined + capnp::traits::Owned + 'static,
{
    let capnp::capability::RemotePromise { promise, pipeline } = sent;
    drop(pipeline);
    promise.await.context(what)
}

/// The call that goes out with makeThread: the session's first Context call.
enum First {
    Echo(capnp::capability::RemotePromise<init::make_echo_results::Owned>),
    Mining(capnp::capability::RemotePromise<init::make_mining_results::Owned>),
    Rpc(capnp::capability::RemotePromise<init::make_rpc_results::Owned>),
}

fn first_call(init: &init::Client, threads: &Threads, opts: &SessionOptions) -> First {
    if !opts.echo.is_empty() {
        let mut req = init.make_echo_request();
        threads.fill(req.get().init_context());
        First::Echo(req.send())
    } else if opts.mining {
        let mut req = init.make_mining_request();
        threads.fill(req.get().init_context());
        First::Mining(req.send())
    } else {
        let mut req = init.make_rpc_request();
        threads.fill(req.get().init_context());
        First::Rpc(req.send())
    }
}

async fn run_echo(echo: &echo::Client, threads: &Threads, opts: &SessionOptions) -> Result<()> {
    let mut times = Vec::new();
    for text in &opts.echo {
        for _ in 0..opts.count {
            let start = std::time::Instant::now();
            let mut req = echo.echo_request();
            threads.fill(req.get().init_context());
            req.get().set_echo(&text[..]);
            let reply = req.send().promise.await.context("Echo.echo")?;
            let got = reply.get()?.get_result()?.to_string()?;
            if opts.timings {
                times.push(start.elapsed().as_nanos() as u64);
            } else {
                print_echo(&got);
            }
            ensure!(
                got == *text,
                "Echo.echo returned {got:?}, expected {text:?}"
            );
        }
    }
    if opts.timings && !times.is_empty() {
        times.sort_unstable();
        let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "{{\"echo_round_trips\":{},\"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"max_ns\":{}}}",
            times.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            times[times.len() - 1]
        );
    }
    let mut req = echo.destroy_request();
    threads.fill(req.get().init_context());
    req.send().promise.await.context("Echo.destroy")?;
    println!("Echo.destroy: ok");
    // The caller drops the Echo right after this: destroy, then Release.
    Ok(())
}

/// Mining and BlockTemplate calls; `mining` when makeMining already went out
/// with makeThread.
async fn run_mining(
    init: &init::Client,
    threads: &Threads,
    mining: Option<mining::Client>,
) -> Result<()> {
    let mining: mining::Client = match mining {
        Some(m) => m,
        None => {
            let mut req = init.make_mining_request();
            threads.fill(req.get().init_context());
            req.send()
                .promise
                .await
                .context("Init.makeMining")?
                .get()?
                .get_result()?
        }
    };

    let mut req = mining.is_test_chain_request();
    threads.fill(req.get().init_context());
    let reply = req.send().promise.await.context("Mining.isTestChain")?;
    println!("isTestChain: {}", reply.get()?.get_result());
    // Responses go as soon as they are read, so each question is Finished
    // right after its Return, as by a C++ client (a shadowed `reply` would
    // live to the end of the function).
    drop(reply);

    let mut req = mining.get_tip_request();
    threads.fill(req.get().init_context());
    let reply = req.send().promise.await.context("Mining.getTip")?;
    let tip = reply.get()?;
    ensure!(tip.get_has_result(), "Mining.getTip: no tip");
    let block = tip.get_result()?;
    println!(
        "getTip: height {} hash {}",
        block.get_height(),
        display_hash(block.get_hash()?)
    );
    drop(reply);

    let mut req = mining.create_new_block_request();
    {
        let mut p = req.get();
        threads.fill(p.reborrow().init_context());
        // Schema defaults (useMempool, 8000, 400), sent explicitly like the
        // C++ and Python clients do.
        p.reborrow().init_options();
        p.set_cooldown(false);
    }
    let template: block_template::Client = req
        .send()
        .promise
        .await
        .context("Mining.createNewBlock")?
        .get()?
        .get_result()?;
    println!("createNewBlock: ok");

    run_template(&template, threads).await?;
    drop(template);

    let mut req = mining.check_block_request();
    {
        let mut p = req.get();
        threads.fill(p.reborrow().init_context());
        p.set_block(&[0u8; 10]);
        p.reborrow().init_options();
    }
    match req.send().promise.await {
        Ok(_) => bail!("Mining.checkBlock on 10 zero bytes: expected an exception, got a result"),
        Err(e) => {
            // capnp-rust prefixes remote reasons; print what was on the wire.
            let reason = e
                .extra
                .strip_prefix("remote exception: ")
                .unwrap_or(&e.extra);
            println!("checkBlock: exception {}", json_str(reason));
        }
    }
    Ok(())
}

async fn run_template(template: &block_template::Client, threads: &Threads) -> Result<()> {
    let mut req = template.get_block_header_request();
    threads.fill(req.get().init_context());
    let reply = req
        .send()
        .promise
        .await
        .context("BlockTemplate.getBlockHeader")?;
    let header = reply.get()?.get_result()?;
    println!("getBlockHeader: {} bytes", header.len());
    ensure!(header.len() == 80, "getBlockHeader: expected 80 bytes");
    drop(reply);

    let mut req = template.get_block_request();
    threads.fill(req.get().init_context());
    let reply = req.send().promise.await.context("BlockTemplate.getBlock")?;
    println!("getBlock: {} bytes", reply.get()?.get_result()?.len());
    drop(reply);

    let mut req = template.get_coinbase_tx_request();
    threads.fill(req.get().init_context());
    let reply = req
        .send()
        .promise
        .await
        .context("BlockTemplate.getCoinbaseTx")?;
    let tx = reply.get()?.get_result()?;
    println!(
        "getCoinbaseTx: version {} sequence {:#x} blockRewardRemaining {} lockTime {} requiredOutputs {}",
        tx.get_version(),
        tx.get_sequence(),
        tx.get_block_reward_remaining(),
        tx.get_lock_time(),
        tx.get_required_outputs()?.len()
    );
    drop(reply);

    let mut req = template.wait_next_request();
    {
        let mut p = req.get();
        threads.fill(p.reborrow().init_context());
        p.init_options().set_timeout(50.0);
    }
    let reply = req.send().promise.await.context("BlockTemplate.waitNext")?;
    // Null after the timeout, unless the node has a new template to hand out (a real regtest
    // node has one when its tip is older than 20 minutes, as a fresh chain's genesis is).
    if reply.get()?.has_result() {
        let next = reply.get()?.get_result()?;
        let mut req = next.destroy_request();
        threads.fill(req.get().init_context());
        req.send()
            .promise
            .await
            .context("BlockTemplate.destroy (the new template)")?;
        println!("waitNext: a new template");
    } else {
        println!("waitNext: null");
    }
    // Finished now, as a C++ client finishes every answer right after its Return.
    drop(reply);

    let mut req = template.destroy_request();
    threads.fill(req.get().init_context());
    req.send().promise.await.context("BlockTemplate.destroy")?;
    println!("BlockTemplate.destroy: ok");
    Ok(())
}

/// `Init.makeRpc` (unless `rpc` came with makeThread), `Rpc.executeRpc`, and
/// the Release of the Rpc: bitcoin-cli's whole session after the handshake.
async fn run_rpc(
    init: &init::Client,
    threads: &Threads,
    method: &str,
    rpc: Option<mpspy_client::schema::rpc_capnp::rpc::Client>,
) -> Result<()> {
    let rpc = match rpc {
        Some(r) => r,
        None => {
            let mut req = init.make_rpc_request();
            threads.fill(req.get().init_context());
            req.send()
                .promise
                .await
                .context("Init.makeRpc")?
                .get()?
                .get_result()?
        }
    };

    let request = serde_json::json!({
        "method": method,
        "params": [],
        "id": "1",
        "jsonrpc": "2.0",
    })
    .to_string();
    let mut req = rpc.execute_rpc_request();
    {
        let mut p = req.get();
        threads.fill(p.reborrow().init_context());
        p.set_request(&request[..]);
        p.set_uri("/");
        p.set_user("");
    }
    let reply = req.send().promise.await.context("Rpc.executeRpc")?;
    println!("executeRpc: {}", reply.get()?.get_result()?.to_string()?);
    // Finish, then the Release that ends a bitcoin-cli session.
    drop(reply);
    drop(rpc);
    Ok(())
}
