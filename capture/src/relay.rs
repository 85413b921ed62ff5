//! The byte-transparent relay: two pump threads per connection copy bytes verbatim and hand a
//! copy of each complete frame to the tap.
//!
//! Why the copy is queued before the bytes are written on: the peer cannot answer a frame it has
//! not received, so queueing first makes the tap's order causal (a call is always queued before
//! its return) without any lock between the two directions. Queueing is a memcpy and a
//! non-blocking `try_send`; the relay never waits for the decoder.
//!
//! The pumps work on any [`Stream`]: unix sockets on unix, the loopback TCP pairs of the
//! Windows spawn protocol (protocol README §5.4) on Windows. Accepting on a listening path
//! ([`serve`]) is unix-only so far.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;
#[cfg(unix)]
use std::time::Instant;

use mpspy_schema::event::{ConnId, Direction, Peer};

use crate::inject::{DirFaults, Injector, Verdict};
use crate::tap::Tap;
use mpspy_engine::Tapped;
use mpspy_engine::framing::{Piece, Splitter};
use mpspy_schema::event::{Fault, FaultKind};

/// Bytes read per `read` call.
const CHUNK: usize = 64 * 1024;

/// A connected byte stream the pumps can relay: each direction gets its own clone, and a pump
/// half-closes its writing side when its reading side ends, so both sides see EOF as they would
/// without mpspy.
pub trait Stream: Read + Write + Send + Sized + 'static {
    /// Another handle to the same socket.
    fn try_clone(&self) -> io::Result<Self>;
    /// Shuts down one or both directions.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

#[cfg(unix)]
impl Stream for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
}

impl Stream for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

/// Connection numbers for one session, shared by all relays.
#[derive(Debug, Clone, Default)]
pub struct ConnIds(Arc<AtomicU32>);

impl ConnIds {
    /// The next connection number (from 1).
    pub fn next(&self) -> ConnId {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The connections being relayed, so they can all be closed when the program exits.
#[derive(Debug, Clone, Default)]
pub struct Relays {
    live: Arc<Mutex<Vec<LiveConn>>>,
    /// Signalled whenever a connection ends.
    ended: Arc<std::sync::Condvar>,
    /// `--inject` rules, when given: every connection relayed from now on gets them.
    injector: Option<Arc<Injector>>,
}

struct LiveConn {
    conn: ConnId,
    /// Shuts both sockets down (type-erased: a session may relay more than one stream type).
    close: Box<dyn Fn() + Send>,
    first_end: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for LiveConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConn")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Relays {
    /// Relays that inject the faults of `injector` into every connection (`--inject`).
    #[must_use]
    pub fn with_injector(injector: Arc<Injector>) -> Self {
        Relays {
            injector: Some(injector),
            ..Relays::default()
        }
    }

    /// Closes every live connection; each reports `reason` in its `conn_closed` event.
    pub fn close_all(&self, reason: &str) {
        let live = self
            .live
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        for c in live {
            if let Ok(mut f) = c.first_end.lock() {
                f.get_or_insert_with(|| reason.to_string());
            }
            (c.close)();
        }
    }

    /// Connections currently relayed.
    pub fn count(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }

    /// Waits until no connection is relayed any more (each has queued its `Closed` notice), or
    /// `timeout` passed; whether they all ended.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let Ok(live) = self.live.lock() else {
            return false;
        };
        self.ended
            .wait_timeout_while(live, timeout, |l| !l.is_empty())
            .is_ok_and(|(l, _)| l.is_empty())
    }

    fn add<S: Stream>(
        &self,
        conn: ConnId,
        client: &S,
        server: &S,
        first_end: &Arc<Mutex<Option<String>>>,
    ) -> io::Result<()> {
        let (client, server) = (client.try_clone()?, server.try_clone()?);
        let entry = LiveConn {
            conn,
            close: Box::new(move || {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }),
            first_end: first_end.clone(),
        };
        if let Ok(mut l) = self.live.lock() {
            l.push(entry);
        }
        Ok(())
    }

    fn remove(&self, conn: ConnId) {
        if let Ok(mut l) = self.live.lock() {
            l.retain(|c| c.conn != conn);
        }
        self.ended.notify_all();
    }
}

/// Describes a connection for its `conn_opened` event.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// Human label.
    pub label: String,
    /// The client process.
    pub client: Option<Peer>,
    /// The server process.
    pub server: Option<Peer>,
}

/// Relays between `client` and `server` until both directions end; returns a handle that
/// finishes after the `Closed` notice was queued.
pub fn relay<S: Stream>(
    conn: ConnId,
    client: S,
    server: S,
    tap: Tap,
    info: ConnInfo,
    relays: &Relays,
) -> io::Result<JoinHandle<()>> {
    announce(&tap, conn, info);
    let first_end: Arc<Mutex<Option<String>>> = Arc::default();
    relays.add(conn, &client, &server, &first_end)?;
    let (c2s, s2c) = match &relays.injector {
        None => (
            spawn_pump(
                conn,
                Direction::ClientToServer,
                client.try_clone()?,
                server.try_clone()?,
                tap.clone(),
                first_end.clone(),
            )?,
            spawn_pump(
                conn,
                Direction::ServerToClient,
                server,
                client,
                tap.clone(),
                first_end.clone(),
            )?,
        ),
        Some(injector) => spawn_inject_pumps(conn, client, server, &tap, &first_end, injector)?,
    };
    let relays = relays.clone();
    thread::Builder::new()
        .name(format!("mpspy-conn-{conn}"))
        .spawn(move || {
            let _ = c2s.join();
            let _ = s2c.join();
            let reason = first_end
                .lock()
                .map(|r| r.clone())
                .ok()
                .flatten()
                .unwrap_or_else(|| "closed".into());
            tap.send_control(Tapped::Closed {
                conn,
                t_ns: tap.clock.now_ns(),
                reason,
            });
            // After the notice: once no connection is left, every notice is queued.
            relays.remove(conn);
        })
}

/// Queues the `Opened` notice of a connection.
fn announce(tap: &Tap, conn: ConnId, info: ConnInfo) {
    tap.send_control(Tapped::Opened {
        conn,
        t_ns: tap.clock.now_ns(),
        label: info.label,
        client: info.client,
        server: info.server,
    });
}

fn spawn_pump<S: Stream>(
    conn: ConnId,
    dir: Direction,
    from: S,
    to: S,
    tap: Tap,
    first_end: Arc<Mutex<Option<String>>>,
) -> io::Result<JoinHandle<()>> {
    let name = match dir {
        Direction::ClientToServer => format!("mpspy-c2s-{conn}"),
        Direction::ServerToClient => format!("mpspy-s2c-{conn}"),
    };
    thread::Builder::new().name(name).spawn(move || {
        let mut to = to;
        let end = pump(conn, dir, from, &mut to, &tap);
        // Say which side ended first before the other side can react to it: the half-close
        // below makes the peer close too, and its pump must not win the race to report.
        if let Ok(mut f) = first_end.lock() {
            f.get_or_insert(end);
        }
        // Propagate the half-close so the other side sees EOF exactly as without mpspy.
        let _ = to.shutdown(Shutdown::Write);
    })
}

/// The side that sends in `dir`, as the end-of-connection reasons name it.
fn sender(dir: Direction) -> &'static str {
    match dir {
        Direction::ClientToServer => "client",
        Direction::ServerToClient => "server",
    }
}

/// Copies `from` to `to` until `from` ends; returns how it ended.
fn pump<S: Stream>(conn: ConnId, dir: Direction, mut from: S, to: &mut S, tap: &Tap) -> String {
    let side = sender(dir);
    let mut buf = vec![0u8; CHUNK];
    let mut splitter = Splitter::new();
    let mut pieces = Vec::new();
    let mut batch: Vec<Arc<Tapped>> = Vec::new();
    let mut write_failed = false;
    let end = loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break format!("{side} closed the connection"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break format!("{side} connection error: {e}"),
        };
        // The frames go to the tap before the bytes go on: once the peer has them it may
        // answer at once, and the answer (read by the other pump) must not reach the tap before
        // the message it answers. Handing over is cheap (a copy and a queue push, no decoding,
        // no wake-up while the consumers linger); decoding happens on the consumers' threads.
        splitter.push(&buf[..n], &mut pieces);
        if !pieces.is_empty() {
            // Everything this read completed goes over in one hand-off.
            let t_ns = tap.clock.now_ns();
            batch.extend(
                pieces
                    .drain(..)
                    .map(|p| Arc::new(p.tapped(conn, dir, t_ns))),
            );
            tap.send_batch(&batch);
            batch.clear();
        }
        // A peer that is gone (half-closed) cannot take more bytes; keep reading so the sender
        // is never blocked, and let the other direction report the end.
        if !write_failed && to.write_all(&buf[..n]).is_err() {
            write_failed = true;
        }
    };
    if let Some(p) = splitter.finish() {
        tap.send(p.tapped(conn, dir, tap.clock.now_ns()));
    }
    end
}

/// Cuts a connection on purpose (an injected fault): says why before both sockets close, so the
/// `conn_closed` event gives this reason rather than the EOF it causes.
type Cut = Arc<dyn Fn(&str) + Send + Sync>;

/// Set once a connection is cut on purpose, so that a pump holding a call back (a `delay`)
/// stops waiting at once instead of at the end of its delay.
#[derive(Debug, Default)]
struct CutSignal {
    cut: Mutex<bool>,
    changed: std::sync::Condvar,
}

impl CutSignal {
    fn cut(&self) {
        if let Ok(mut c) = self.cut.lock() {
            *c = true;
        }
        self.changed.notify_all();
    }

    /// Waits `d`, or less if the connection is cut meanwhile.
    fn sleep(&self, d: Duration) {
        if let Ok(c) = self.cut.lock() {
            let _ = self.changed.wait_timeout_while(c, d, |cut| !*cut);
        }
    }
}

/// The pumps of a connection with `--inject` rules: both sides' writing ends are shared, so
/// that a pump can answer a call in the callee's place between two frames the other pump
/// forwards. Timed disconnects get a timer thread each.
fn spawn_inject_pumps<S: Stream>(
    conn: ConnId,
    client: S,
    server: S,
    tap: &Tap,
    first_end: &Arc<Mutex<Option<String>>>,
    injector: &Arc<Injector>,
) -> io::Result<(JoinHandle<()>, JoinHandle<()>)> {
    let to_client = Arc::new(Mutex::new(client.try_clone()?));
    let to_server = Arc::new(Mutex::new(server.try_clone()?));
    let signal = Arc::new(CutSignal::default());
    let cut: Cut = {
        // Clones of their own: the shared writing ends may be held by a pump blocked in a
        // write, and a cut must not wait for it.
        let sockets = Mutex::new((client.try_clone()?, server.try_clone()?));
        let first_end = first_end.clone();
        let signal = signal.clone();
        Arc::new(move |why: &str| {
            signal.cut();
            if let Ok(mut f) = first_end.lock() {
                f.get_or_insert_with(|| why.to_string());
            }
            if let Ok(s) = sockets.lock() {
                let _ = s.0.shutdown(Shutdown::Both);
                let _ = s.1.shutdown(Shutdown::Both);
            }
        })
    };
    for (rule, after) in injector.timed_disconnects() {
        let (tap, cut, first_end, injector) = (
            tap.clone(),
            cut.clone(),
            first_end.clone(),
            injector.clone(),
        );
        thread::Builder::new()
            .name(format!("mpspy-cut-{conn}"))
            .spawn(move || {
                thread::sleep(after);
                let open = first_end.lock().is_ok_and(|f| f.is_none());
                if open && injector.fires(rule) {
                    let detail = format!(
                        "cut the connection {} after it opened ({})",
                        crate::inject::show_duration(after),
                        injector.text(rule)
                    );
                    tap.send_control(Tapped::Injected {
                        conn,
                        dir: Direction::ClientToServer,
                        t_ns: tap.clock.now_ns(),
                        fault: Fault {
                            kind: FaultKind::Disconnect,
                            method: None,
                            question: None,
                            detail: detail.clone(),
                        },
                        frame: None,
                    });
                    cut(&format!("mpspy {detail}"));
                }
            })?;
    }
    let pump = |dir: Direction, from: S, to: &Arc<Mutex<S>>, back: &Arc<Mutex<S>>| {
        let name = match dir {
            Direction::ClientToServer => format!("mpspy-c2s-{conn}"),
            Direction::ServerToClient => format!("mpspy-s2c-{conn}"),
        };
        let (to, back, tap, first_end, cut, signal) = (
            to.clone(),
            back.clone(),
            tap.clone(),
            first_end.clone(),
            cut.clone(),
            signal.clone(),
        );
        let faults = DirFaults::new(injector.clone(), dir);
        thread::Builder::new().name(name).spawn(move || {
            let end = inject_pump(conn, dir, from, &to, &back, &tap, faults, (&cut, &signal));
            if let Ok(mut f) = first_end.lock() {
                f.get_or_insert(end);
            }
            if let Ok(to) = to.lock() {
                let _ = to.shutdown(Shutdown::Write);
            }
        })
    };
    let c2s = pump(Direction::ClientToServer, client, &to_server, &to_client)?;
    let s2c = pump(Direction::ServerToClient, server, &to_client, &to_server)?;
    Ok((c2s, s2c))
}

/// Writes `bytes` on a shared writing end. Frames are written whole under its lock, so what the
/// other pump injects lands between two frames, never inside one.
fn write_shared<S: Stream>(to: &Mutex<S>, bytes: &[u8]) -> bool {
    bytes.is_empty() || to.lock().is_ok_and(|mut to| to.write_all(bytes).is_ok())
}

/// [`pump`] with faults: copies `from` to `to` frame by frame, and for each frame does what
/// its [`Verdict`] says (forward, hold, answer on `back` instead, drop, cut). Frames reach the
/// tap before anything is done with them, as in [`pump`], and each fault right after its
/// frame. Once framing is lost the rest of the direction is forwarded as it comes, unaltered.
#[allow(clippy::too_many_arguments)]
fn inject_pump<S: Stream>(
    conn: ConnId,
    dir: Direction,
    mut from: S,
    to: &Mutex<S>,
    back: &Mutex<S>,
    tap: &Tap,
    mut faults: DirFaults,
    (cut, signal): (&Cut, &CutSignal),
) -> String {
    let side = sender(dir);
    let mut buf = vec![0u8; CHUNK];
    let mut splitter = Splitter::new();
    let mut pieces = Vec::new();
    let mut batch: Vec<Arc<Tapped>> = Vec::new();
    // Bytes read and not yet forwarded or dropped: whole frames at the front, then the start
    // of the next one.
    let mut unsent: Vec<u8> = Vec::new();
    let mut plan: Vec<(std::ops::Range<usize>, Verdict)> = Vec::new();
    let (mut raw, mut write_failed, mut was_cut) = (false, false, false);
    let end = loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break format!("{side} closed the connection"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break format!("{side} connection error: {e}"),
        };
        splitter.push(&buf[..n], &mut pieces);
        let t_ns = tap.clock.now_ns();
        if !raw {
            unsent.extend_from_slice(&buf[..n]);
        }
        let mut at = 0;
        for piece in pieces.drain(..) {
            match &piece {
                Piece::Frame { bytes, .. } if !raw => {
                    let verdict = faults.verdict(bytes);
                    let len = bytes.len();
                    let extra = verdict.tapped(conn, dir, t_ns);
                    batch.push(Arc::new(piece.tapped(conn, dir, t_ns)));
                    batch.extend(extra.map(Arc::new));
                    plan.push((at..at + len, verdict));
                    at += len;
                }
                Piece::Bad { stopped: true, .. } => {
                    raw = true;
                    batch.push(Arc::new(piece.tapped(conn, dir, t_ns)));
                }
                _ => batch.push(Arc::new(piece.tapped(conn, dir, t_ns))),
            }
        }
        if !batch.is_empty() {
            tap.send_batch(&batch);
            batch.clear();
        }
        // Forward runs of frames in one write each; act where a verdict says so.
        let mut run = 0;
        for (range, verdict) in plan.drain(..) {
            if was_cut {
                break;
            }
            match verdict {
                Verdict::Forward => continue,
                Verdict::Delay(by, _) => {
                    write_failed |= !write_failed && !write_shared(to, &unsent[run..range.start]);
                    signal.sleep(by);
                    run = range.start;
                }
                Verdict::Answer(_, frame) => {
                    write_failed |= !write_failed && !write_shared(to, &unsent[run..range.start]);
                    // A caller that is gone cannot take its answer; nothing else to do.
                    let _ = write_shared(back, &frame);
                    run = range.end;
                }
                Verdict::Swallow => {
                    write_failed |= !write_failed && !write_shared(to, &unsent[run..range.start]);
                    run = range.end;
                }
                Verdict::Cut(fault) => {
                    write_failed |= !write_failed && !write_shared(to, &unsent[run..range.start]);
                    cut(&format!("mpspy {}", fault.detail));
                    was_cut = true;
                }
            }
        }
        if was_cut {
            // Both sockets are shut: what is left is read until EOF and dropped.
            unsent.clear();
            continue;
        }
        if raw {
            // Framing is lost: the tail (and all that follows) goes on as it comes.
            let rest = if unsent.is_empty() {
                &buf[..n]
            } else {
                &unsent[run..]
            };
            write_failed |= !write_failed && !write_shared(to, rest);
            unsent = Vec::new();
        } else {
            write_failed |= !write_failed && !write_shared(to, &unsent[run..at]);
            unsent.drain(..at);
        }
    };
    if let Some(p) = splitter.finish() {
        tap.send(p.tapped(conn, dir, tap.clock.now_ns()));
    }
    // A torn last frame still goes on, as it would without mpspy.
    if !was_cut && !write_failed {
        write_shared(to, &unsent);
    }
    end
}

/// Describes a new connection from its two sockets (client side, server side), e.g. by the
/// processes' peer credentials.
#[cfg(unix)]
pub type Describe = Arc<dyn Fn(&UnixStream, &UnixStream) -> ConnInfo + Send + Sync>;

/// Where [`serve`] relays each client to.
#[cfg(unix)]
#[derive(Debug)]
pub enum Upstream {
    /// The listening socket of the program mpspy runs, taken over from it
    /// ([`crate::takeover`]). When it refuses a connection the program has stopped listening
    /// (it is shutting down), so mpspy stops too: later clients are refused, as they would be.
    Program(PathBuf),
    /// A server the program connects to. Every client is connected on its own.
    Server {
        /// The server's socket.
        path: PathBuf,
        /// A connection already made to it, for the first client (mpspy connects before the
        /// program starts, to know whether the server is there at all).
        first: Option<UnixStream>,
    },
}

/// Where one accepted client goes.
#[cfg(unix)]
#[derive(Debug, Clone)]
struct Dest {
    path: PathBuf,
    program: bool,
    first: Arc<Mutex<Option<UnixStream>>>,
}

/// How long a taken-over program socket may refuse connections before it counts as closed: it
/// refuses between the program's `bind` and its `listen`, which mpspy can see in between.
#[cfg(unix)]
const LISTEN_GRACE: Duration = Duration::from_millis(500);

/// Connects to `dest`. A program's socket that refuses right after the takeover is given
/// [`LISTEN_GRACE`] to start listening.
#[cfg(unix)]
fn connect_upstream(dest: &Dest, since: Instant) -> io::Result<UnixStream> {
    if let Some(s) = dest.first.lock().ok().and_then(|mut f| f.take()) {
        return Ok(s);
    }
    loop {
        match UnixStream::connect(&dest.path) {
            Err(e)
                if dest.program
                    && e.kind() == io::ErrorKind::ConnectionRefused
                    && since.elapsed() < LISTEN_GRACE =>
            {
                thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

/// A running [`serve`]: stop it to close the listener (clients are then refused).
#[cfg(unix)]
#[derive(Debug)]
pub struct Serving {
    wake: Arc<std::os::fd::OwnedFd>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

#[cfg(unix)]
impl Serving {
    /// Closes the listener and waits for the accept thread (connections already accepted go
    /// on until they end or [`Relays::close_all`]).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        signal_stop(&self.stopped, &self.wake);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// Whether it stopped by itself (its upstream was gone).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

#[cfg(unix)]
impl Drop for Serving {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(unix)]
fn signal_stop(stopped: &std::sync::atomic::AtomicBool, wake: &std::os::fd::OwnedFd) {
    stopped.store(true, Ordering::Relaxed);
    let _ = rustix::io::write(wake, &[1]);
}

/// Accepts clients on `listener` and relays each to `upstream`, each connection on its own
/// thread (a slow upstream never holds up the next accept).
///
/// # Errors
/// When the threads or the wake-up pipe cannot be made.
#[cfg(unix)]
pub fn serve(
    listener: UnixListener,
    upstream: Upstream,
    tap: Tap,
    ids: ConnIds,
    relays: Relays,
    describe: Describe,
) -> io::Result<Serving> {
    use rustix::event::{PollFd, PollFlags, poll};

    let dest = match upstream {
        Upstream::Program(path) => Dest {
            path,
            program: true,
            first: Arc::default(),
        },
        Upstream::Server { path, first } => Dest {
            path,
            program: false,
            first: Arc::new(Mutex::new(first)),
        },
    };
    let (wake_rx, wake_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let wake = Arc::new(wake_tx);
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    listener.set_nonblocking(true)?;
    let since = Instant::now();
    let (wake2, stopped2) = (wake.clone(), stopped.clone());
    let accept = thread::Builder::new()
        .name("mpspy-accept".into())
        .spawn(move || {
            while !stopped2.load(Ordering::Relaxed) {
                let mut fds = [
                    PollFd::new(&listener, PollFlags::IN),
                    PollFd::new(&wake_rx, PollFlags::IN),
                ];
                if poll(&mut fds, None).is_err() || !fds[1].revents().is_empty() {
                    continue;
                }
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => continue,
                };
                // Accepted sockets inherit O_NONBLOCK on some systems (BSDs, macOS).
                let _ = client.set_nonblocking(false);
                let conn = ids.next();
                let (tap, relays, describe, dest) =
                    (tap.clone(), relays.clone(), describe.clone(), dest.clone());
                let (wake, stopped) = (wake2.clone(), stopped2.clone());
                let _ = thread::Builder::new()
                    .name(format!("mpspy-open-{conn}"))
                    .spawn(move || match connect_upstream(&dest, since) {
                        Ok(server) => {
                            let info = describe(&client, &server);
                            let _ = relay(conn, client, server, tap, info, &relays);
                        }
                        Err(e) => {
                            if dest.program && e.kind() == io::ErrorKind::ConnectionRefused {
                                signal_stop(&stopped, &wake);
                            }
                            let mut info = describe(&client, &client);
                            info.server = None;
                            info.label = format!(
                                "{} (upstream {} unreachable)",
                                info.label,
                                dest.path.display()
                            );
                            announce(&tap, conn, info);
                            tap.send_control(Tapped::Closed {
                                conn,
                                t_ns: tap.clock.now_ns(),
                                reason: format!(
                                    "could not connect to {}: {e}",
                                    dest.path.display()
                                ),
                            });
                        }
                    });
            }
            // The listener is dropped here, which closes it: later clients are refused.
        })?;
    Ok(Serving {
        wake,
        stopped,
        accept: Some(accept),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;
    use crate::tap::{Clock, Consumer, TapReceiver};

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// A client and a server with a relay between them (loopback TCP, as on Windows), tapped
    /// by one eager consumer.
    struct Relayed {
        client: TcpStream,
        server: TcpStream,
        tap: Tap,
        rx: TapReceiver,
        relays: Relays,
        done: thread::JoinHandle<()>,
    }

    fn relayed(conn: ConnId) -> Relayed {
        relayed_with(conn, Relays::default())
    }

    fn relayed_with(conn: ConnId, relays: Relays) -> Relayed {
        let (client, client_side) = tcp_pair();
        let (server_side, server) = tcp_pair();
        let (tap, rx) = Tap::single(Clock::start(), Consumer::eager(1 << 30));
        let done = relay(
            conn,
            client_side,
            server_side,
            tap.clone(),
            ConnInfo::default(),
            &relays,
        )
        .unwrap();
        Relayed {
            client,
            server,
            tap,
            rx,
            relays,
            done,
        }
    }

    /// One empty Cap'n Proto frame: a segment table of one segment with no words.
    const FRAME: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 0];

    /// The Windows relay's case: loopback TCP on both sides. Bytes cross verbatim both ways,
    /// frames reach the tap, EOF crosses, and the connection's end is announced.
    #[test]
    fn relays_tcp_streams_and_taps_their_frames() {
        let Relayed {
            mut client,
            mut server,
            tap,
            mut rx,
            relays,
            done,
        } = relayed(7);
        client.write_all(&FRAME).unwrap();
        let mut got = [1u8; 8];
        server.read_exact(&mut got).unwrap();
        assert_eq!(got, FRAME);
        server.write_all(b"back").unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(server.read(&mut got).unwrap(), 0, "EOF crosses");
        drop(server);
        done.join().unwrap();
        assert_eq!(relays.count(), 0);
        tap.finish();
        let clock = tap.clock;
        let mut items = Vec::new();
        while let Some(i) = rx.recv(&clock) {
            items.push(i);
        }
        assert!(
            matches!(*items[0], Tapped::Opened { conn: 7, .. }),
            "{items:?}"
        );
        assert!(
            items.iter().any(|i| matches!(&**i, Tapped::Frame { dir: Direction::ClientToServer, bytes, .. } if bytes[..] == FRAME)),
            "{items:?}"
        );
        assert!(
            matches!(
                items.last().map(|i| &**i),
                Some(Tapped::Closed { conn: 7, .. })
            ),
            "{items:?}"
        );
    }

    /// A peer that answers the moment it has a message: the tap must still hold every message
    /// before its answer (the decoder pairs a return with a call it has already seen). This
    /// fails within a few hundred rounds when a pump forwards before it taps.
    #[test]
    fn the_tap_holds_each_message_before_the_answer_to_it() {
        let Relayed {
            mut client,
            mut server,
            tap,
            mut rx,
            relays: _relays,
            done,
        } = relayed(1);
        const ROUNDS: usize = 2000;
        let echo = std::thread::spawn(move || {
            let mut got = [0u8; 8];
            for _ in 0..ROUNDS {
                server.read_exact(&mut got).unwrap();
                server.write_all(&got).unwrap();
            }
        });
        let mut back = [0u8; 8];
        for _ in 0..ROUNDS {
            client.write_all(&FRAME).unwrap();
            client.read_exact(&mut back).unwrap();
        }
        echo.join().unwrap();
        drop(client);
        done.join().unwrap();
        tap.finish();
        let clock = tap.clock;
        let mut dirs = Vec::new();
        while let Some(i) = rx.recv(&clock) {
            if let Tapped::Frame { dir, .. } = *i {
                dirs.push(dir);
            }
        }
        assert_eq!(dirs.len(), 2 * ROUNDS);
        for (i, pair) in dirs.chunks(2).enumerate() {
            assert_eq!(
                pair,
                [Direction::ClientToServer, Direction::ServerToClient],
                "round {i}: the answer was tapped before the message"
            );
        }
    }

    /// One frame off a stream (the segment table says how long it is).
    fn read_frame(s: &mut TcpStream) -> Vec<u8> {
        let mut frame = vec![0u8; 8];
        s.read_exact(&mut frame).unwrap();
        loop {
            match mpspy_schema::wire::frame_len(&frame).unwrap() {
                Some(len) if len <= frame.len() => return frame,
                Some(len) => {
                    let at = frame.len();
                    frame.resize(len, 0);
                    s.read_exact(&mut frame[at..]).unwrap();
                }
                None => {
                    let at = frame.len();
                    frame.resize(at + 8, 0);
                    s.read_exact(&mut frame[at..]).unwrap();
                }
            }
        }
    }

    fn message(build: impl FnOnce(capnp_rpc::rpc_capnp::message::Builder<'_>)) -> Vec<u8> {
        let mut b = capnp::message::Builder::new_default();
        build(b.init_root());
        let mut out = Vec::new();
        capnp::serialize::write_message(&mut out, &b).unwrap();
        out
    }

    fn call(question: u32, (iface, method): (u64, u16)) -> Vec<u8> {
        message(|m| {
            let mut c = m.init_call();
            c.set_question_id(question);
            c.set_interface_id(iface);
            c.set_method_id(method);
            c.reborrow().init_target().set_imported_cap(0);
            c.init_params();
        })
    }

    fn finish(question: u32) -> Vec<u8> {
        message(|m| m.init_finish().set_question_id(question))
    }

    /// With an exception rule, in one write: a call that matches, its Finish and a call that
    /// does not. The server gets only the last, byte for byte; the client gets mpspy's answer
    /// to the first; the tap has the three frames, the fault with its answer, in that order.
    #[test]
    fn an_injecting_relay_answers_a_call_in_the_callees_place() {
        use crate::inject::{Injector, Rule};
        let set = mpspy_schema::sets::builtin("master").unwrap();
        let ids = |iface: &str, method: &str| {
            set.interfaces()
                .find(|(_, i)| i.name == iface)
                .and_then(|(id, i)| {
                    i.methods
                        .iter()
                        .find(|m| m.name == method)
                        .map(|m| (id, m.ordinal))
                })
                .unwrap()
        };
        let rule: Rule = "Mining.getTip:exception=overloaded:busy".parse().unwrap();
        let injector = Injector::new(vec![rule], std::slice::from_ref(&set)).unwrap();
        let Relayed {
            mut client,
            mut server,
            tap,
            mut rx,
            relays: _relays,
            done,
        } = relayed_with(1, Relays::with_injector(Arc::new(injector)));
        let passes = call(8, ids("Mining", "isTestChain"));
        let mut sent = call(7, ids("Mining", "getTip"));
        sent.extend(finish(7));
        sent.extend(&passes);
        client.write_all(&sent).unwrap();
        assert_eq!(read_frame(&mut server), passes);
        let answer = read_frame(&mut client);
        let (msg, _) = mpspy_schema::wire::Message::parse(&answer).unwrap();
        match mpspy_schema::rpc::decode(&msg).unwrap() {
            mpspy_schema::rpc::Rpc::Return(r) => {
                assert_eq!(r.answer, 7);
                assert!(matches!(
                    r.outcome,
                    mpspy_schema::rpc::Outcome::Exception(e) if e.kind == "overloaded" && e.reason == "busy"
                ));
            }
            other => panic!("not a return: {other:?}"),
        }
        // Nothing else reached the server: the next bytes it gets are the EOF.
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "{} more bytes reached the server",
            rest.len()
        );
        drop(server);
        done.join().unwrap();
        tap.finish();
        let clock = tap.clock;
        let mut got = Vec::new();
        while let Some(i) = rx.recv(&clock) {
            match &*i {
                Tapped::Frame { bytes, .. } => got.push(format!("frame {}", bytes.len())),
                Tapped::Injected {
                    fault,
                    frame: Some(f),
                    ..
                } if *f == answer => got.push(format!("injected {}", fault.kind.as_str())),
                _ => {}
            }
        }
        assert_eq!(
            got,
            [
                format!("frame {}", sent.len() - finish(7).len() - passes.len()),
                "injected exception".into(),
                format!("frame {}", finish(7).len()),
                format!("frame {}", passes.len()),
            ]
        );
    }
}
