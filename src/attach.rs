//! `mpspy attach unix:PATH` (or `--datadir D --chain C`): record the IPC of a node that is
//! already running, without restarting it.
//!
//! A bound unix listener is not tied to its path: the node keeps accepting on its socket
//! whatever name the file has. So mpspy gives the node's socket a second name beside the path
//! and renames a listener of its own over the path ([`mpspy_capture::takeover::take_over`]: a
//! hard link and an atomic rename, so the path never goes missing), and relays every new
//! connection to the second name. Connections made before stay as they are, unrecorded. On
//! every way out short of SIGKILL (the session's end, Ctrl-C, SIGTERM, SIGHUP, SIGQUIT, an
//! error, a panic) the node's socket is renamed back over the path (atomically again: clients
//! never find the path missing); if that cannot be done, mpspy says exactly how to do it by
//! hand (`mv MOVED PATH`) and exits 2.
//!
//! **The moved-aside name is the marker.** The node's socket is at `.<name>.mpspy-<pid>` beside
//! `<name>`, `<pid>` being the attached mpspy's. Another `mpspy attach` of the same path finds
//! it there and refuses: "already attached" when that pid is a running mpspy, or, when the
//! mpspy that made it is gone (killed with SIGKILL), the `mv` that puts the node's socket back
//! (a leftover that nobody listens on any more, its node gone too, is removed as the stale
//! socket it is). As a second line, the probe connection mpspy makes before attaching (to know
//! the path is alive) reads who made the listener there (Linux: the peer credentials): when
//! that is an mpspy (`mpspy -- bitcoin-node`, `mpspy proxy`, an attach whose marker was
//! removed), it refuses too. The name survives what a lock file or a pid file would not: it
//! is on the same filesystem as the path, needs nothing but the directory, and says where the
//! node's socket is to anyone who lists the directory.
//!
//! When the node exits while mpspy is attached (Linux: its pid is gone; anywhere: a connection
//! to its socket is refused), mpspy says so, puts the path back (the node's leftover socket
//! file, as the node leaves it) and ends.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use mpspy_bitcoin::args as bitcoin;
use mpspy_capture::relay::{self, ConnInfo, Upstream};
use mpspy_capture::takeover::take_over;
use mpspy_schema::event::{NoticeLevel, Peer};

use crate::cli::AttachArgs;
use crate::live::peer_of;
use crate::live_common::Messages;
use crate::proxy::{file_id, who};
use crate::standalone::{Ending, Session, unix_path};

/// What goes between `.<name>` and the pid in the moved-aside name.
const MARK: &str = ".mpspy-";

/// The longest path a unix socket can be connected at (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

pub(crate) fn run(args: &AttachArgs) -> Result<ExitCode> {
    let public = socket_path(args)?;
    let messages = Messages::new(&args.session)?;
    // Every refusal comes before anything is changed or any output file is created.
    let node = check(&public)?;
    let wanted = moved_name(&public, std::process::id())?;
    let session = Session::start(&args.session, messages)?;
    let taken = take_over(&public, &wanted)
        .with_context(|| format!("moving the node's socket at {} aside", public.display()))?;
    let attachment = Arc::new(Attachment {
        public: public.clone(),
        moved: taken.moved.clone(),
        ours: file_id(&public),
        outcome: Mutex::new(None),
    });
    // From here on every way out puts the node's socket back.
    let guard = Guard(attachment.clone());
    if taken.moved != wanted {
        // take_over's fallback name: still beside the path, but not the marker.
        let _ = attachment.restore();
        bail!(
            "could not give the node's socket the name {} (hard link failed); put back",
            wanted.display()
        );
    }
    let node_name = who(node.as_ref(), "the node");
    let server = node.clone();
    let label_tail = format!("{node_name} (unix:{})", public.display());
    let describe = Arc::new(move |client: &UnixStream, upstream: &UnixStream| {
        let client = peer_of(client);
        ConnInfo {
            label: format!("{} → {label_tail}", who(client.as_ref(), "client")),
            client,
            server: peer_of(upstream).or_else(|| server.clone()),
        }
    });
    let serving = relay::serve(
        taken.listener,
        // The node as a program: a refused connection means it stopped listening, and the
        // relay stops accepting (later clients are refused, as they would be).
        Upstream::Program(taken.moved.clone()),
        session.tap.clone(),
        session.ids.clone(),
        session.relays.clone(),
        describe,
    )
    .with_context(|| format!("relaying {}", public.display()))?;
    session.tap.notice(
        NoticeLevel::Info,
        format!(
            "attached to {node_name} at {}: its socket is at {} while mpspy runs, and mpspy relays every new connection (connections made before are not recorded); Ctrl-C or SIGTERM ends and puts it back",
            public.display(),
            taken.moved.display()
        ),
    );

    let node_pid = node.as_ref().and_then(|n| n.pid);
    let (gone_name, gone_path) = (node_name.clone(), public.display().to_string());
    let watch = Box::new(move |serving: &relay::Serving| {
        if node_pid.is_some_and(|p| !alive(p)) {
            return Some(format!("{gone_name} exited"));
        }
        serving.is_stopped().then(|| {
            format!("{gone_name} stopped listening at {gone_path} (a connection to it was refused)")
        })
    });
    let at_end = attachment.clone();
    let on_stop = Box::new(
        move |tap: &mpspy_capture::tap::Tap| match at_end.restore() {
            Ok(done) => {
                tap.notice(NoticeLevel::Info, done);
                true
            }
            Err(e) => {
                tap.notice(NoticeLevel::Warning, e);
                false
            }
        },
    );
    let title = format!("mpspy attach {} ({node_name})", public.display());
    let code = session.run(
        serving,
        Ending { watch, on_stop },
        &title,
        &format!("the session attached to {node_name}"),
    );
    // The last word, whatever the outputs: the socket is not where the node's clients look.
    if let Some(Err(e)) = attachment.outcome() {
        eprintln!("mpspy: error: {e}");
    }
    drop(guard);
    code
}

/// The node's socket: `unix:PATH`, or `unix`: where `bitcoin-node -ipcbind=unix` with these
/// options listens (its datadir, chain and config file, read as Bitcoin does).
fn socket_path(args: &AttachArgs) -> Result<PathBuf> {
    if args.address != "unix" {
        if args.datadir.is_some() || args.chain.is_some() {
            bail!(
                "--datadir and --chain are for the `unix` address (the node's default socket), not {}",
                args.address
            );
        }
        return unix_path(&args.address, "address");
    }
    let env = bitcoin::Env::from_process().context("reading the environment")?;
    let mut node_args = Vec::new();
    if let Some(d) = &args.datadir {
        node_args.push(format!("-datadir={}", d.display()));
    }
    if let Some(c) = &args.chain {
        // `regtest` or the node's own spelling (`-regtest`, `-chain=regtest`).
        node_args.push(if c.starts_with('-') {
            c.clone()
        } else {
            format!("-chain={c}")
        });
    }
    // As the node decides: its config file's ipcbind= if it has one, else -ipcbind=unix.
    let plan = bitcoin::plan("bitcoin-node", &node_args, &env, true)
        .context("working out the node's socket")?;
    match plan.binds.as_slice() {
        [one] => Ok(one.path.clone()),
        [] => bail!("the node's options say it listens on no IPC socket (-noipcbind)"),
        many => bail!(
            "the node listens on several sockets ({}): name one with unix:PATH",
            many.iter()
                .map(|b| b.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The moved-aside name of the node's socket at `public` for the mpspy with `pid`.
fn moved_name(public: &Path, pid: u32) -> Result<PathBuf> {
    let (dir, name) = split(public)?;
    let moved = dir.join(format!(".{name}{MARK}{pid}"));
    if moved.as_os_str().len() > SUN_PATH_MAX {
        bail!(
            "{} is too long a path to move the node's socket aside beside it ({}: over {SUN_PATH_MAX} bytes, the limit of a unix socket path)",
            public.display(),
            moved.display()
        );
    }
    Ok(moved)
}

fn split(public: &Path) -> Result<(PathBuf, String)> {
    let name = public
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", public.display()))?;
    let dir = match public.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_string()))
}

/// The moved-aside names next to `public`, with their pids.
fn markers(public: &Path) -> Result<Vec<(PathBuf, u32)>> {
    let (dir, name) = split(public)?;
    let prefix = format!(".{name}{MARK}");
    let entries = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid = e
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            Some((e.path(), pid))
        })
        .collect())
}

/// Whether the process `pid` runs (a zombie, exited but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last parenthesis.
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        return !matches!(state, Some('Z' | 'X'));
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Whether `pid` is a running mpspy.
fn is_mpspy(pid: u32) -> bool {
    alive(pid) && crate::shim::process_peer(pid).name == "mpspy"
}

/// Refuses (naming the path and what is wrong) unless a node listens at `public` and no mpspy
/// is attached there; the node, as far as the kernel tells (Linux).
fn check(public: &Path) -> Result<Option<Peer>> {
    let shown = public.display();
    let meta = match fs::symlink_metadata(public) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "{shown} does not exist: no node listens there (is it running with -ipcbind=unix, with this datadir and chain?)"
        ),
        Err(e) => return Err(e).with_context(|| format!("{shown}")),
    };
    for (moved, pid) in markers(public)? {
        let moved_shown = moved.display();
        if is_mpspy(pid) {
            bail!(
                "mpspy (pid {pid}) is already attached to {shown} (the node's socket is at {moved_shown} meanwhile); stop it first"
            );
        }
        match UnixStream::connect(&moved) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                // Its node is gone too: a stale socket, removed as a node removes one.
                let _ = fs::remove_file(&moved);
            }
            // The pid was taken by another process since (or mpspy runs under another name):
            // only the user can tell.
            _ if alive(pid) => bail!(
                "{moved_shown} says mpspy pid {pid} is attached to {shown}, and pid {pid} runs as {}: if that is not an mpspy, the mpspy that attached was killed; put the node's socket back with: mv {moved_shown} {shown}",
                crate::shim::process_peer(pid).name
            ),
            _ => bail!(
                "an `mpspy attach` (pid {pid}, no longer running) was killed before it could put the node's socket back: it is at {moved_shown}; put it back with: mv {moved_shown} {shown}"
            ),
        }
    }
    if !meta.file_type().is_socket() {
        bail!("{shown} is not a socket");
    }
    let probe = match UnixStream::connect(public) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => bail!(
            "nobody listens on {shown} (connection refused): a stale socket, left by a node that stopped"
        ),
        Err(e) => return Err(e).with_context(|| format!("connecting to {shown}")),
    };
    let node = peer_of(&probe);
    if let Some(p) = &node
        && p.name == "mpspy"
    {
        bail!(
            "{shown} is mpspy's own listener (pid {}): another mpspy relays this socket already",
            p.pid.unwrap_or(0)
        );
    }
    Ok(node)
}

/// The node's socket moved aside, and how to put it back.
struct Attachment {
    public: PathBuf,
    moved: PathBuf,
    /// mpspy's listener file at `public` (device, inode).
    ours: Option<(u64, u64)>,
    /// How putting it back went, once tried.
    outcome: Mutex<Option<Result<String, String>>>,
}

impl Attachment {
    /// Puts the node's socket back (once; later calls say how that went).
    fn restore(&self) -> Result<String, String> {
        let mut outcome = self
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outcome.get_or_insert_with(|| self.put_back()).clone()
    }

    fn outcome(&self) -> Option<Result<String, String>> {
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn put_back(&self) -> Result<String, String> {
        let (public, moved) = (self.public.display(), self.moved.display());
        let at_public = file_id(&self.public);
        let ours = at_public.is_some() && at_public == self.ours;
        if !fs::symlink_metadata(&self.moved).is_ok_and(|m| m.file_type().is_socket()) {
            if ours {
                let _ = fs::remove_file(&self.public);
            }
            return Err(format!(
                "the node's socket at {moved} was removed while mpspy was attached: nothing to put back at {public} (restart the node to listen there again)"
            ));
        }
        if at_public.is_some() && !ours {
            return Err(format!(
                "{public} was replaced while mpspy was attached, so the node's socket was not put back over it; it is at {moved}: if it is still wanted, put it back with: mv {moved} {public}"
            ));
        }
        // One rename: the path names mpspy's listener until it names the node's socket.
        fs::rename(&self.moved, &self.public)
            .map(|()| format!("put the node's socket back at {public}"))
            .map_err(|e| {
                format!(
                    "could not put the node's socket back at {public} ({e}); do it by hand: mv {moved} {public}"
                )
            })
    }
}

/// Puts the node's socket back when dropped: on an error or a panic too.
struct Guard(Arc<Attachment>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.outcome().is_none()
            && let Err(e) = self.0.restore()
        {
            eprintln!("mpspy: error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moved_aside_name_is_found_beside_the_path_with_its_pid() {
        let d = std::env::temp_dir().join(format!("mpspy-attach-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let public = d.join("node.sock");
        let moved = moved_name(&public, 4242).unwrap();
        assert_eq!(moved, d.join(".node.sock.mpspy-4242"));
        fs::write(&moved, b"").unwrap();
        // Other names are not markers of this path.
        fs::write(d.join(".other.sock.mpspy-7"), b"").unwrap();
        fs::write(d.join(".node.sock.mpspy-x"), b"").unwrap();
        assert_eq!(markers(&public).unwrap(), vec![(moved, 4242)]);
        let _ = fs::remove_dir_all(&d);
    }

    /// `--datadir D --chain C` names the node's default socket as Bitcoin places it, for
    /// either spelling of the chain.
    #[test]
    fn the_default_socket_is_in_the_chains_directory() {
        let d = std::env::temp_dir().join(format!("mpspy-attach-dd-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let path = |chain: Option<&str>| {
            socket_path(&AttachArgs {
                address: "unix".into(),
                datadir: Some(d.clone()),
                chain: chain.map(str::to_string),
                session: Default::default(),
            })
        };
        assert_eq!(path(Some("regtest")).unwrap(), d.join("regtest/node.sock"));
        assert_eq!(path(Some("-regtest")).unwrap(), d.join("regtest/node.sock"));
        assert_eq!(
            path(Some("-testnet4")).unwrap(),
            d.join("testnet4/node.sock")
        );
        assert_eq!(path(Some("test")).unwrap(), d.join("testnet3/node.sock"));
        assert_eq!(path(None).unwrap(), d.join("node.sock"));
        let e = format!("{:#}", path(Some("nochain")).unwrap_err());
        assert!(e.contains("unknown chain"), "{e}");
        let e = socket_path(&AttachArgs {
            address: "unix:/x/node.sock".into(),
            datadir: Some(d.clone()),
            chain: None,
            session: Default::default(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--datadir and --chain are for the `unix` address"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_path_too_long_to_move_aside_is_refused() {
        let long = PathBuf::from(format!("/tmp/{}/node.sock", "d".repeat(90)));
        let e = moved_name(&long, 1).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(alive(std::process::id()));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!alive(pid));
    }
}
