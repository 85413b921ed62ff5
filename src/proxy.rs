//! `mpspy proxy --listen unix:PATH --connect unix:PATH`: a standalone recording relay for
//! clients one points at it. Each client that connects to the listening path is relayed, byte
//! for byte, to a connection of its own to the server; the session ([`crate::standalone`]) runs
//! until Ctrl-C or SIGTERM. A server that is down does not end it: each client that comes
//! meanwhile is closed at once (its `conn_opened` says "upstream … unreachable"), as the client
//! would be refused without mpspy.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mpspy_capture::relay::{self, ConnInfo, Upstream};
use mpspy_schema::event::{NoticeLevel, Peer};

use crate::cli::ProxyArgs;
use crate::live::peer_of;
use crate::live_common::Messages;
use crate::standalone::{Ending, Session, unix_path};

pub(crate) fn run(args: &ProxyArgs) -> Result<ExitCode> {
    let listen = unix_path(&args.listen, "--listen")?;
    let connect = unix_path(&args.connect, "--connect")?;
    let messages = Messages::new(&args.session)?;
    // Refusals come before any output file is created.
    let (listener, replaced) = bind_listen(&listen)?;
    let _ours = RemoveOnDrop::new(&listen);
    let session = Session::start(&args.session, messages)?;
    if replaced {
        session.tap.notice(
            NoticeLevel::Info,
            format!(
                "removed the stale socket at {} (nobody listened there)",
                listen.display()
            ),
        );
    }
    let target = format!("unix:{}", connect.display());
    let describe = Arc::new(move |client: &UnixStream, server: &UnixStream| {
        let client = peer_of(client);
        let server = peer_of(server);
        ConnInfo {
            label: format!(
                "{} → {} ({target})",
                who(client.as_ref(), "client"),
                who(server.as_ref(), "server")
            ),
            client,
            server,
        }
    });
    let serving = relay::serve(
        listener,
        Upstream::Server {
            path: connect.clone(),
            first: None,
        },
        session.tap.clone(),
        session.ids.clone(),
        session.relays.clone(),
        describe,
    )
    .with_context(|| format!("relaying {}", listen.display()))?;
    session.tap.notice(
        NoticeLevel::Info,
        format!(
            "proxy: clients of {} are relayed to {}; Ctrl-C or SIGTERM ends the session",
            listen.display(),
            connect.display()
        ),
    );
    // Looked at without connecting: a probe would be a connection the server sees.
    if !fs::symlink_metadata(&connect).is_ok_and(|m| m.file_type().is_socket()) {
        session.tap.notice(
            NoticeLevel::Warning,
            format!(
                "{} is not a socket yet: clients are closed at once until the server listens there",
                connect.display()
            ),
        );
    }
    let title = format!("mpspy proxy {} → {}", listen.display(), connect.display());
    session.run(
        serving,
        Ending {
            watch: Box::new(|_| None),
            on_stop: Box::new(|_| true),
        },
        &title,
        "the proxy's session",
    )
}

/// `name (pid)` of a peer, or `fallback`.
pub(crate) fn who(peer: Option<&Peer>, fallback: &str) -> String {
    peer.map_or(fallback.to_string(), |p| match p.pid {
        Some(pid) => format!("{} ({pid})", p.name),
        None => p.name.clone(),
    })
}

/// Listens at `path`. A socket already there that refuses connections is stale (a server that
/// stopped leaves it behind) and is removed, as bitcoin-node does before it binds; one that
/// accepts is someone's, and anything else is not ours to replace. Whether a stale one was
/// removed.
fn bind_listen(path: &Path) -> Result<(UnixListener, bool)> {
    let shown = path.display();
    let replaced = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("--listen {shown}")),
        Ok(m) if !m.file_type().is_socket() => {
            bail!("--listen {shown}: the path exists and is not a socket; not replacing it")
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => bail!("--listen {shown}: something is already listening there"),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                fs::remove_file(path)
                    .with_context(|| format!("--listen {shown}: removing the stale socket"))?;
                true
            }
            Err(e) => {
                return Err(e).with_context(|| format!("--listen {shown}: probing the socket"));
            }
        },
    };
    let listener = UnixListener::bind(path).with_context(|| format!("--listen {shown}"))?;
    Ok((listener, replaced))
}

/// Removes the proxy's socket file at the end, if it is still the proxy's (not replaced by
/// someone else's meanwhile): a proxy that is gone should not leave a path that refuses.
struct RemoveOnDrop {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl RemoveOnDrop {
    fn new(path: &Path) -> RemoveOnDrop {
        RemoveOnDrop {
            path: path.to_path_buf(),
            id: file_id(path),
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Device and inode of the file at `path` (not followed).
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
