//! One Cap'n Proto two-party RPC connection over a byte stream, and the places where mpspy
//! adjusts what capnp-rust would put on the wire so that it looks like the C++ peers (Cap'n
//! Proto 0.9.2 under libmultiprocess, as in the real binaries). Both ends use it: the client
//! ([`as_client`]) and the test peer's servers ([`rpc_system`]).
//!
//! `Network` wraps capnp-rpc's two-party network and sees every message in both directions.
//! It changes five things:
//!
//! - **First segment size.** capnp-rpc sizes the bootstrap `Return` with a 10-word first
//!   segment; the message needs 11, so it goes out as two segments (8 + 4 words, 112 bytes)
//!   where the C++ runtime sends one (96 bytes). Every first segment is therefore at least
//!   `MIN_FIRST_SEGMENT_WORDS` words. That is only the allocation: a segment goes on the wire
//!   with the words actually used, so small messages stay the size they were, and large ones
//!   keep their small first segment plus one big one (as the C++ peers' 40 KB messages do).
//! - **No empty capability tables.** capnp-rpc writes an empty `Payload.capTable` list into
//!   every Call and Return without capabilities (one word: the list's tag); the C++ runtime
//!   leaves the pointer null. Such messages are copied into a fresh one without the table, so
//!   they are the C++ size (e.g. 160 bytes for `makeThread`, 120 for the `executeRpc` Return
//!   of a `getblockcount`).
//! - **No `noFinishNeeded`.** capnp-rpc sets `Return.noFinishNeeded` (a Cap'n Proto 1.x
//!   field) on every Return without capabilities, and a capnp-rust caller then skips the
//!   Finish. Cap'n Proto 0.9.2 has no such field: its Returns never carry it, and its callers
//!   Finish every question. So the bit is cleared; the answer is forgotten at the Return all
//!   the same, and the Finish that then comes is ignored, as capnp-rpc does for callers that do
//!   not know the hint.
//! - **Calls run to completion when the caller cancels them.** A caller cancels with a
//!   `Finish` before the `Return`. capnp-rpc then drops the call at once and never answers
//!   it, so the caller's question stays open. The C++ runtime lets the call finish (the method
//!   keeps its worker thread busy until it returns; later calls on that Thread keep waiting)
//!   and then answers `Return{canceled}` (observed: a `waitTipChanged` canceled while queued
//!   behind another still ran its whole timeout, then came back canceled, and only then did
//!   the next queued call start). So an early Finish is held back from capnp-rpc until the
//!   call has produced its Return; that Return goes out as `canceled` (its results dropped),
//!   and the Finish is handed on right after it, ahead of anything read later (the caller may
//!   reuse the question id once it has the Return).
//! - **No Abort from a closing client.** capnp-rpc's disconnector always sends
//!   `Abort{"client requested disconnect"}` before closing. A libmultiprocess client (bitcoin-cli,
//!   a spawning parent) sends nothing: its last message is a Release (or a Finish), then the
//!   socket closes. [`as_client`] closes that way. The server side is left as capnp-rpc has it,
//!   because that already matches the node: after the client's EOF it sends
//!   `Abort{type = disconnected, reason = "Peer disconnected."}`, whatever its tables hold
//!   (observed on master bitcoin-node even for a client that connects and closes at once), and
//!   it answers a peer's Abort with one of its own (`remote exception: …`), as the node does.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::{Rc, Weak};

use capnp::capability::{FromClientHook, Promise};
use capnp::message::{Builder, HeapAllocator};
use capnp_rpc::rpc_capnp::message;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::twoparty::VatNetwork;
use capnp_rpc::{Connection, IncomingMessage, OutgoingMessage, RpcSystem};
use futures::io::{BufReader, BufWriter};
use futures::{AsyncRead, TryFutureExt};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::schema::init_capnp::init;

/// The smallest first segment a message is allocated with: enough for the bootstrap Return
/// (11 words) and the other small messages in one segment, as the C++ runtime sends them.
const MIN_FIRST_SEGMENT_WORDS: u32 = 32;

/// capnp-rpc's two-party network, with the adjustments in the module docs.
struct Network<R: AsyncRead + Unpin + 'static> {
    inner: VatNetwork<R>,
    /// Set once this side closes the connection on purpose: its Abort is then not sent.
    closing: Rc<Cell<bool>>,
}

impl<R: AsyncRead + Unpin + 'static> Network<R> {
    fn adjust(
        inner: Box<dyn Connection<Side>>,
        closing: Rc<Cell<bool>>,
    ) -> Box<dyn Connection<Side>> {
        Box::new(Adjusted {
            inner: Rc::new(RefCell::new(inner)),
            closing,
            answers: Rc::default(),
        })
    }
}

impl<R: AsyncRead + Unpin + 'static> capnp_rpc::VatNetwork<Side> for Network<R> {
    fn connect(&mut self, host_id: Side) -> Option<Box<dyn Connection<Side>>> {
        let closing = self.closing.clone();
        self.inner
            .connect(host_id)
            .map(|inner| Self::adjust(inner, closing))
    }

    fn accept(&mut self) -> Promise<Box<dyn Connection<Side>>, capnp::Error> {
        let closing = self.closing.clone();
        Promise::from_future(
            self.inner
                .accept()
                .map_ok(|inner| Self::adjust(inner, closing)),
        )
    }

    fn drive_until_shutdown(&mut self) -> Promise<(), capnp::Error> {
        self.inner.drive_until_shutdown()
    }
}

/// The peer's calls as far as this connection has seen them, for holding back early Finishes.
#[derive(Default)]
struct Answers {
    /// Question ids of the peer's calls that have no Return yet.
    running: HashSet<u32>,
    /// Finishes that came before their Return, by question id: not handed to capnp-rpc yet.
    held: HashMap<u32, Box<dyn IncomingMessage>>,
    /// Messages to hand to capnp-rpc before reading more: held Finishes whose Return has gone
    /// out, and what was read while one was waiting.
    ready: VecDeque<Box<dyn IncomingMessage>>,
}

/// The connection of a [`Network`].
struct Adjusted {
    inner: Rc<RefCell<Box<dyn Connection<Side>>>>,
    closing: Rc<Cell<bool>>,
    answers: Rc<RefCell<Answers>>,
}

/// What an incoming message means for [`Answers`].
enum Incoming {
    Call(u32),
    Finish(u32),
    Other,
}

fn classify(m: &dyn IncomingMessage) -> Incoming {
    let Ok(body) = m.get_body().and_then(|b| b.get_as::<message::Reader<'_>>()) else {
        return Incoming::Other;
    };
    match body.which() {
        Ok(message::Call(Ok(call))) => Incoming::Call(call.get_question_id()),
        Ok(message::Finish(Ok(finish))) => Incoming::Finish(finish.get_question_id()),
        _ => Incoming::Other,
    }
}

impl Connection<Side> for Adjusted {
    fn get_peer_vat_id(&self) -> Side {
        self.inner.borrow().get_peer_vat_id()
    }

    fn new_outgoing_message(&mut self, first_segment_words: u32) -> Box<dyn OutgoingMessage> {
        let inner = self
            .inner
            .borrow_mut()
            .new_outgoing_message(first_segment_words.max(MIN_FIRST_SEGMENT_WORDS));
        Box::new(Outgoing {
            inner,
            connection: Rc::downgrade(&self.inner),
            closing: self.closing.clone(),
            answers: self.answers.clone(),
        })
    }

    fn receive_incoming_message(
        &mut self,
    ) -> Promise<Option<Box<dyn IncomingMessage>>, capnp::Error> {
        if let Some(m) = self.answers.borrow_mut().ready.pop_front() {
            return Promise::ok(Some(m));
        }
        // Weak: a pending read must not keep the connection alive, or capnp-rpc, which waits
        // for the connection to go before it finishes, and the read, which it drops only
        // when it finishes, would wait for each other.
        let inner = Rc::downgrade(&self.inner);
        let answers = self.answers.clone();
        Promise::from_future(async move {
            loop {
                let Some(connection) = inner.upgrade() else {
                    return Ok(None);
                };
                // The borrow ends with the call: the read itself owns the stream.
                let read = connection.borrow_mut().receive_incoming_message();
                drop(connection);
                let Some(m) = read.await? else {
                    return Ok(None);
                };
                let mut answers = answers.borrow_mut();
                match classify(&*m) {
                    Incoming::Call(q) => {
                        answers.running.insert(q);
                    }
                    Incoming::Finish(q) if answers.running.contains(&q) => {
                        answers.held.insert(q, m);
                        continue;
                    }
                    _ => {}
                }
                // A Finish released while this read was waiting goes first: it was sent
                // before `m`, and `m` may already reuse its question id.
                return Ok(Some(match answers.ready.pop_front() {
                    Some(first) => {
                        answers.ready.push_back(m);
                        first
                    }
                    None => m,
                }));
            }
        })
    }

    fn new_stream(
        &mut self,
    ) -> (
        Box<dyn capnp_rpc::FlowController>,
        Promise<(), capnp::Error>,
    ) {
        self.inner.borrow_mut().new_stream()
    }

    fn shutdown(&mut self, result: capnp::Result<()>) -> Promise<(), capnp::Error> {
        self.inner.borrow_mut().shutdown(result)
    }
}

/// A message on its way out of an [`Adjusted`] connection.
struct Outgoing {
    inner: Box<dyn OutgoingMessage>,
    /// For the messages sent instead of this one (weak for the reason given in
    /// [`Adjusted::receive_incoming_message`]).
    connection: Weak<RefCell<Box<dyn Connection<Side>>>>,
    closing: Rc<Cell<bool>>,
    answers: Rc<RefCell<Answers>>,
}

/// What an outgoing message needs from [`Outgoing::send`].
enum Sending {
    Return(u32),
    Abort,
    Other,
}

impl Outgoing {
    fn kind(&self) -> Sending {
        let Ok(body) = self
            .inner
            .get_body_as_reader()
            .and_then(|b| b.get_as::<message::Reader<'_>>())
        else {
            return Sending::Other;
        };
        match body.which() {
            Ok(message::Return(Ok(ret))) => Sending::Return(ret.get_answer_id()),
            Ok(message::Abort(_)) => Sending::Abort,
            _ => Sending::Other,
        }
    }

    /// Clears `Return.noFinishNeeded` (see the module docs).
    fn clear_no_finish_needed(&mut self) -> capnp::Result<()> {
        let body = self.inner.get_body()?.get_as::<message::Builder<'_>>()?;
        if let message::Return(ret) = body.which()? {
            ret?.set_no_finish_needed(false);
        }
        Ok(())
    }

    /// A new message on the same connection.
    fn fresh(&self) -> capnp::Result<Box<dyn OutgoingMessage>> {
        let connection = self
            .connection
            .upgrade()
            .ok_or_else(|| capnp::Error::disconnected("connection closed".into()))?;
        let m = connection
            .borrow_mut()
            .new_outgoing_message(MIN_FIRST_SEGMENT_WORDS);
        Ok(m)
    }

    /// `Return{answerId, canceled}`, as the C++ runtime answers a call canceled while it ran.
    fn canceled(&self, answer_id: u32) -> capnp::Result<Box<dyn OutgoingMessage>> {
        let mut m = self.fresh()?;
        let mut ret = m
            .get_body()?
            .init_as::<message::Builder<'_>>()
            .init_return();
        ret.set_answer_id(answer_id);
        ret.set_release_param_caps(false);
        ret.set_canceled(());
        Ok(m)
    }

    /// For a Call or Return whose capability table is empty: the same message without the
    /// table, copied into a fresh one (clearing a pointer does not give its words back).
    fn without_empty_cap_table(&mut self) -> capnp::Result<Option<Box<dyn OutgoingMessage>>> {
        let body = self.inner.get_body()?.get_as::<message::Builder<'_>>()?;
        let payload = match body.which()? {
            message::Call(call) => call?.get_params()?,
            message::Return(ret) => match ret?.which()? {
                capnp_rpc::rpc_capnp::return_::Results(payload) => payload?,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        if !payload.has_cap_table() || !payload.reborrow_as_reader().get_cap_table()?.is_empty() {
            return Ok(None);
        }
        let payload: capnp::dynamic_value::Builder<'_> = payload.into();
        payload
            .downcast::<capnp::dynamic_struct::Builder<'_>>()
            .clear_named("capTable")?;
        let mut fresh = self.fresh()?;
        // A deep copy takes only what is reachable: the cleared table's words stay behind.
        fresh.get_body()?.set_as(self.inner.get_body_as_reader()?)?;
        Ok(Some(fresh))
    }
}

impl OutgoingMessage for Outgoing {
    fn get_body(&mut self) -> capnp::Result<capnp::any_pointer::Builder<'_>> {
        self.inner.get_body()
    }

    fn get_body_as_reader(&self) -> capnp::Result<capnp::any_pointer::Reader<'_>> {
        self.inner.get_body_as_reader()
    }

    fn send(mut self: Box<Self>) -> (Promise<(), capnp::Error>, Rc<Builder<HeapAllocator>>) {
        let replacement = match self.kind() {
            Sending::Abort if self.closing.get() => {
                // Dropped, not sent: the connection is shut down next and the peer sees EOF.
                return (Promise::ok(()), Rc::new(self.inner.take()));
            }
            Sending::Return(answer_id) => {
                let held = {
                    let mut answers = self.answers.borrow_mut();
                    answers.running.remove(&answer_id);
                    answers.held.remove(&answer_id)
                };
                match held {
                    Some(finish) => {
                        self.answers.borrow_mut().ready.push_back(finish);
                        self.canceled(answer_id).map(Some)
                    }
                    None => self
                        .clear_no_finish_needed()
                        .and_then(|()| self.without_empty_cap_table()),
                }
            }
            Sending::Other => self.without_empty_cap_table(),
            Sending::Abort => Ok(None),
        };
        match replacement {
            // capnp-rpc keeps the message it gets back here as the call's results (for calls
            // pipelined on the answer), so it gets the one it built, and the peer the other.
            Ok(Some(other)) => (other.send().0, Rc::new(self.inner.take())),
            Ok(None) => self.inner.send(),
            Err(e) => {
                // capnp-rpc built this message a moment ago, so it reads back; if it ever does
                // not, it goes out as built: capnp-rust's shape, nothing worse.
                debug_assert!(false, "adjusting an outgoing message: {e}");
                self.inner.send()
            }
        }
    }

    fn take(self: Box<Self>) -> Builder<HeapAllocator> {
        self.inner.take()
    }

    fn size_in_words(&self) -> usize {
        self.inner.size_in_words()
    }
}

fn new_rpc_system<S>(
    stream: S,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> (RpcSystem<Side>, Rc<Cell<bool>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
{
    let (read, write) = tokio::io::split(stream);
    // The write queue flushes after every message; buffering turns each
    // message (segment table + segments) into one write instead of several.
    let inner = VatNetwork::new(
        BufReader::new(read.compat()),
        BufWriter::new(write.compat_write()),
        side,
        capnp::message::ReaderOptions::default(),
    );
    let closing = Rc::new(Cell::new(false));
    let network = Network {
        inner,
        closing: closing.clone(),
    };
    (RpcSystem::new(Box::new(network), bootstrap), closing)
}

/// Builds the RPC system for one connection of the listening/spawned end, which hosts
/// `bootstrap` (its `Init`); it runs until the connection ends.
pub fn rpc_system<S>(stream: S, bootstrap: capnp::capability::Client) -> RpcSystem<Side>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
{
    new_rpc_system(stream, Side::Server, Some(bootstrap)).0
}

/// Capabilities a libmultiprocess C++ client holds until it disconnects (Init, its ThreadMap
/// and its Threads): [`as_client`] drops them only after the connection is closed, so, as from
/// bitcoin-cli, no Release for them is ever sent.
#[derive(Clone, Default)]
pub struct KeepUntilClose(Rc<RefCell<Vec<capnp::capability::Client>>>);

impl KeepUntilClose {
    /// Keeps a reference to `cap` until the connection is closed.
    pub fn keep<C: FromClientHook>(&self, cap: &C) {
        self.0.borrow_mut().push(capnp::capability::Client::new(
            cap.as_client_hook().add_ref(),
        ));
    }
}

/// Runs `session` on the server's `Init` over `stream` as the two-party client (libmultiprocess
/// clients never offer a bootstrap capability), then closes the connection like a C++ client:
/// whatever the session dropped has been released, what it kept ([`KeepUntilClose`], and Init
/// itself) is not, and no Abort is sent. Returns the session's result and what went wrong while
/// closing, if anything.
pub async fn as_client<S, F, Fut, T>(stream: S, session: F) -> (T, Vec<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
    F: FnOnce(init::Client, KeepUntilClose) -> Fut,
    Fut: Future<Output = T>,
{
    let (mut rpc, closing) = new_rpc_system(stream, Side::Client, None);
    let init: init::Client = rpc.bootstrap(Side::Server);
    let disconnector = rpc.get_disconnector();
    let driver = tokio::task::spawn_local(rpc);
    let keep = KeepUntilClose::default();
    keep.keep(&init);
    let result = session(init, keep.clone()).await;
    // Releases for what the session dropped are queued by now (capnp-rpc writes them as the
    // last reference goes); the disconnector sends them before it shuts the stream down.
    closing.set(true);
    let mut problems = Vec::new();
    if let Err(e) = disconnector.await {
        problems.push(format!("closing the connection: {e}"));
    }
    match driver.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("connection: {e}")),
        Err(e) => problems.push(format!("connection task: {e}")),
    }
    // Only now: with the connection gone these drops send nothing.
    drop(keep);
    (result, problems)
}
