//! `mpspy serve RECORDING --listen unix:PATH`: a stand-in node that answers from a recording
//! (docs/serve.md).
//!
//! The recording goes through the engine once, into the client runtime's answer table
//! (`mpspy_client::serve`); every accepted connection is then served from a fresh copy of it
//! by the runtime's own server side (bootstrap Init, ThreadMap/Thread, Context turns,
//! returned capabilities, destroy). The served traffic is decoded like a live session: each
//! connection's bytes pass a tee into the same engine and sinks as `mpspy -- PROGRAM`
//! (text lines, `--json`, `--record`), and what the matching did shows as notices.

use crate::tee::{Tee, TeeTap};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use mpspy_capture::record::Recorder;
use mpspy_client::serve::{self, Note, Table, TableBuilder, Timing};
use mpspy_client::threads::Names;
use mpspy_engine::framing::Splitter;
use mpspy_engine::{Session, Tapped};
use mpspy_schema::Direction;
use mpspy_schema::event::{ConnId, NoticeLevel, Peer};
use mpspy_schema::sets::{self, Choice};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{SchemaArgs, ServeArgs};
use crate::pipeline::Outputs;

/// Reads `file` through the engine into an answer table, decoded with `schemas` (else the
/// recording's own selection; `auto` takes the set the engine chose for the recording).
fn load(file: &Path, schemas: Option<&Choice>) -> Result<Table> {
    let (header, choice) = crate::open_recording(file, "serve", schemas)?;
    let config = crate::schema_config(&SchemaArgs {
        schemas: choice.clone(),
        ..SchemaArgs::default()
    })?;
    let mut builder = TableBuilder::new();
    let source = format!("serve {}", file.display());
    let (_, torn) = crate::decode_recording(file, config, header.start_unix_ns, &source, |e| {
        builder.event(e)
    })?;
    if let Some(why) = torn {
        eprintln!(
            "mpspy serve: {}: the recording ends inside a block ({why}); answering from what came before it",
            file.display()
        );
    }
    let name = match &choice {
        Choice::Fixed(s) => s.clone(),
        Choice::Auto => builder.chosen_schemas().unwrap_or("master").to_string(),
    };
    let set = sets::builtin(&name).with_context(|| format!("schema set {name}"))?;
    Ok(builder.finish(set))
}

/// What the served sessions go through: the engine, the sinks, the recording.
struct Tap {
    session: Session,
    outputs: Outputs,
    recorder: Option<Recorder<File>>,
    start: Instant,
    open: BTreeSet<ConnId>,
    served: u32,
    answered: u64,
    differed: u64,
    unmatched: u64,
}

impl Tap {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn item(&mut self, item: &Tapped) {
        if let Some(r) = &mut self.recorder
            && let Err(e) = r.write(item)
        {
            eprintln!("mpspy serve: --record stopped: {e}");
            self.recorder = None;
        }
        self.outputs.item(&mut self.session, item);
    }

    fn flush(&mut self) {
        self.outputs.flush();
        if let Some(r) = &mut self.recorder {
            let _ = r.flush();
        }
    }

    /// What the matching did, as the session's notices (a plain answer is only counted).
    fn note(&mut self, conn: ConnId, note: Note) {
        let t_ns = self.now();
        let (level, text) = match note {
            Note::Answered {
                same_params: true, ..
            } => {
                self.answered += 1;
                return;
            }
            Note::Answered {
                method,
                recorded_seq,
                params,
                ..
            } => {
                self.answered += 1;
                self.differed += 1;
                let asked = params.map(|p| p.to_string()).unwrap_or_default();
                (
                    NoticeLevel::Info,
                    format!(
                        "#{conn} {method}: no unused recorded call has these params ({asked}); answered with the next one (recorded call seq {recorded_seq})"
                    ),
                )
            }
            Note::Unmatched { method, reason } => {
                self.unmatched += 1;
                (NoticeLevel::Warning, format!("#{conn} {method}: {reason}"))
            }
            _ => return,
        };
        self.item(&Tapped::Notice { t_ns, level, text });
        self.flush();
    }
}

/// One connection's side of the tap: its number and a framer per direction.
struct ConnTap {
    conn: ConnId,
    splitters: [Splitter; 2],
    tap: Rc<RefCell<Tap>>,
}

/// The served connection, seen from the server's end: what it reads the client sent.
impl TeeTap for ConnTap {
    fn bytes(&mut self, dir: Direction, data: &[u8]) {
        let i = usize::from(dir == Direction::ServerToClient);
        let mut pieces = Vec::new();
        self.splitters[i].push(data, &mut pieces);
        if pieces.is_empty() {
            return;
        }
        let mut tap = self.tap.borrow_mut();
        let t = tap.now();
        for p in pieces {
            tap.item(&p.tapped(self.conn, dir, t));
        }
        tap.flush();
    }
}

/// What every connection is served with.
struct Served {
    table: Rc<Table>,
    options: serve::Options,
    names: Rc<Names>,
    tap: Rc<RefCell<Tap>>,
    address: String,
}

/// Serves one accepted connection until it closes.
async fn serve_one(stream: UnixStream, conn: ConnId, served: Rc<Served>) {
    let client = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|pid| u32::try_from(pid).ok())
        .map(crate::shim::process_peer);
    {
        let mut tap = served.tap.borrow_mut();
        let t_ns = tap.now();
        let who = client.as_ref().map_or("client", |p| p.name.as_str());
        let label = format!("{who} → mpspy serve ({})", served.address);
        tap.item(&Tapped::Opened {
            conn,
            t_ns,
            label,
            client,
            server: Some(Peer {
                name: "mpspy serve".into(),
                pid: Some(std::process::id()),
                argv: Vec::new(),
            }),
        });
        tap.open.insert(conn);
        tap.served += 1;
        tap.flush();
    }
    let tee = Tee {
        inner: stream,
        tap: ConnTap {
            conn,
            splitters: [Splitter::new(), Splitter::new()],
            tap: served.tap.clone(),
        },
        read: Direction::ClientToServer,
    };
    let notes: Rc<dyn Fn(Note)> = {
        let tap = served.tap.clone();
        Rc::new(move |n| tap.borrow_mut().note(conn, n))
    };
    let result = serve::serve_connection(
        tee,
        served.table.clone(),
        served.options,
        served.names.clone(),
        notes,
    )
    .await;
    let reason = match result {
        Ok(()) => "client closed the connection".to_string(),
        Err(e) => format!("the connection failed: {e}"),
    };
    let mut tap = served.tap.borrow_mut();
    let t_ns = tap.now();
    tap.item(&Tapped::Closed { conn, t_ns, reason });
    tap.open.remove(&conn);
    tap.flush();
}

/// The socket path of `unix:PATH`.
fn socket_path(listen: &str) -> Result<PathBuf> {
    match listen.strip_prefix("unix:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!("--listen '{listen}': give unix:PATH"),
    }
}

/// Binds `path`, replacing a stale socket there (never anything else).
fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?,
        Ok(_) => bail!(
            "{} exists and is not a socket; not removing it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    }
    UnixListener::bind(path).with_context(|| format!("listening on unix:{}", path.display()))
}

async fn accept_loop(listener: UnixListener, served: Rc<Served>) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut next: ConnId = 1;
    loop {
        tokio::select! {
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::task::spawn_local(serve_one(stream, next, served.clone()));
                    next += 1;
                }
                Err(e) => {
                    // E.g. out of file descriptors: keep listening, without spinning.
                    eprintln!("mpspy serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

pub(crate) fn serve(args: &ServeArgs) -> Result<ExitCode> {
    let path = socket_path(&args.listen)?;
    let table = load(&args.file, args.schemas.as_ref())?;
    let set = table.set().clone();
    if table.bootstrap().is_none() {
        bail!(
            "the {} schemas have no Init interface to serve as the bootstrap capability",
            set.name
        );
    }
    let methods = table.methods();
    let mut outputs = Outputs::new();
    if let Some(target) = &args.json {
        outputs.json(target)?;
    }
    if !args.quiet && args.json.as_deref() != Some("-") {
        outputs.text_stdout();
    }
    let start_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let recorder = match &args.record {
        Some(p) => Some(
            Recorder::create(p, &set.name, start_unix_ns)
                .with_context(|| format!("--record {}", p.display()))?,
        ),
        None => None,
    };
    let mut session = Session::new(crate::schema_config(&SchemaArgs {
        schemas: Choice::Fixed(set.name.clone()),
        ..SchemaArgs::default()
    })?);
    outputs.start(
        &mut session,
        &format!("serve {}", args.file.display()),
        Some(start_unix_ns),
    );
    let tap = Rc::new(RefCell::new(Tap {
        session,
        outputs,
        recorder,
        start: Instant::now(),
        open: BTreeSet::new(),
        served: 0,
        answered: 0,
        differed: 0,
        unmatched: 0,
    }));
    let served = Rc::new(Served {
        table: Rc::new(table),
        options: serve::Options {
            strict: args.strict,
            timing: if args.immediate {
                Timing::Immediate
            } else {
                Timing::Recorded
            },
        },
        names: Names::new("mpspy"),
        tap: tap.clone(),
        address: format!("unix:{}", path.display()),
    });
    let listed: Vec<String> = methods.iter().map(|(m, n)| format!("{m} ×{n}")).collect();
    let result = mpspy_client::block_on(async {
        let listener = bind(&path)?;
        eprintln!(
            "mpspy serve: answering from {} ({} schemas): {} recorded calls{}: {}",
            args.file.display(),
            set.name,
            served.table.len(),
            match served.table.unanswered() {
                0 => String::new(),
                n => format!(" ({n} more without an answer to give)"),
            },
            listed.join(", ")
        );
        eprintln!("mpspy serve: listening on unix:{}", path.display());
        accept_loop(listener, served.clone()).await
    })?;
    let _ = std::fs::remove_file(&path);
    let mut tap = tap.borrow_mut();
    let t_ns = tap.now();
    for conn in std::mem::take(&mut tap.open) {
        tap.item(&Tapped::Closed {
            conn,
            t_ns,
            reason: "mpspy serve stopped".into(),
        });
    }
    tap.outputs.finish();
    if let Some(mut r) = tap.recorder.take()
        && let Err(e) = r.finish(t_ns, &Default::default())
    {
        eprintln!("mpspy serve: --record: {e}");
    }
    eprintln!(
        "mpspy serve: {} connection(s); {} call(s) answered from the recording ({} with other params), {} without a recorded answer",
        tap.served, tap.answered, tap.differed, tap.unmatched
    );
    result?;
    if let Some(e) = tap.outputs.error.take() {
        return Err(e);
    }
    Ok(ExitCode::SUCCESS)
}
