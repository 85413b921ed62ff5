//! `-ipcbind`: listen like bitcoin-node (protocol digest §6.1).

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::EXE_NAME;
use crate::server::new_init;
use mpspy_client::net;
use mpspy_client::threads::Names;

/// `sun_path` is 108 bytes on Linux including the terminating NUL (104 on
/// the BSDs and macOS).
#[cfg(target_os = "linux")]
const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
const MAX_SOCKET_PATH: usize = 103;

/// The node options this peer understands.
#[derive(Debug, Default)]
pub(crate) struct NodeOptions {
    /// Raw `-ipcbind` values, in order.
    binds: Vec<String>,
    datadir: Option<PathBuf>,
    /// Chain name as in `-chain=` ("main", "test", "testnet4", "signet",
    /// "regtest").
    chain: Option<String>,
}

fn parse_error(arg: &str) -> anyhow::Error {
    anyhow!("Error parsing command line arguments: Invalid parameter {arg}")
}

impl NodeOptions {
    /// Parses Bitcoin-style `-name[=value]` options (`--name` works too, as in
    /// Bitcoin).
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Self::default();
        let mut chains = Vec::new();
        for arg in args {
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(parse_error(arg));
            };
            let (key, value) = match body.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (body, None),
            };
            let is_set = || !matches!(value, Some("0"));
            match key {
                "ipcbind" => opts.binds.push(value.unwrap_or("unix").to_string()),
                "datadir" => {
                    let dir = value
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| parse_error(arg))?;
                    opts.datadir = Some(PathBuf::from(dir));
                }
                "regtest" if is_set() => chains.push("regtest"),
                "testnet" if is_set() => chains.push("test"),
                "testnet4" if is_set() => chains.push("testnet4"),
                "signet" if is_set() => chains.push("signet"),
                "regtest" | "testnet" | "testnet4" | "signet" => {}
                "chain" => chains.push(value.ok_or_else(|| parse_error(arg))?),
                _ => return Err(parse_error(arg)),
            }
        }
        if chains.len() > 1 {
            bail!(
                "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain. Can use at most one."
            );
        }
        opts.chain = chains.first().map(|c| c.to_string());
        if opts.binds.is_empty() {
            bail!("nothing to listen on: give -ipcbind=unix[:PATH] (see -help)");
        }
        Ok(opts)
    }

    /// The network datadir: `-datadir` (or `~/.bitcoin`) plus the chain's
    /// subdirectory.
    fn net_datadir(&self) -> Result<PathBuf> {
        let base = match &self.datadir {
            Some(dir) => {
                let dir = std::path::absolute(dir)?;
                if !dir.is_dir() {
                    bail!(
                        "Specified data directory \"{}\" does not exist.",
                        dir.display()
                    );
                }
                dir
            }
            None => {
                let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
                PathBuf::from(home).join(".bitcoin")
            }
        };
        let sub = match self.chain.as_deref().unwrap_or("main") {
            "main" => None,
            "test" => Some("testnet3"),
            "testnet4" => Some("testnet4"),
            "signet" => Some("signet"),
            "regtest" => Some("regtest"),
            other => bail!("Unknown chain {other}."),
        };
        Ok(match sub {
            Some(sub) => base.join(sub),
            None => base,
        })
    }

    /// The socket paths, resolved like Bitcoin: `unix` is
    /// `<net datadir>/node.sock`; a relative `unix:PATH` is relative to the
    /// network datadir.
    fn socket_paths(&self) -> Result<Vec<PathBuf>> {
        let mut net_dir = None;
        let mut paths = Vec::new();
        for bind in &self.binds {
            let rel = match bind.as_str() {
                "unix" | "unix:" => "node.sock",
                other => match other.strip_prefix("unix:") {
                    Some(path) => path,
                    None => bail!("Unrecognized address '{other}'"),
                },
            };
            let rel = Path::new(rel);
            paths.push(if rel.is_absolute() {
                rel.to_path_buf()
            } else {
                if net_dir.is_none() {
                    net_dir = Some(self.net_datadir()?);
                }
                net_dir.as_ref().map(|d| d.join(rel)).unwrap_or_default()
            });
        }
        Ok(paths)
    }
}

/// Prepares and binds one socket path like bitcoin-node: parent directories
/// are created, and an existing file there is removed only if it is a socket
/// (a stale one from an earlier run). Anything else is an error and is left
/// alone.
fn bind(path: &Path) -> Result<UnixListener> {
    let address = format!("unix:{}", path.display());
    let fail = |reason: String| anyhow!("Unable to bind to IPC address '{address}'. {reason}");
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(fail(format!(
            "Unix address path \"{}\" exceeded maximum socket path length",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| fail(format!("removing stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "The path exists and is not a socket; not removing it.".to_string(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    UnixListener::bind(path).map_err(|e| fail(e.to_string()))
}

/// Listens until SIGTERM or SIGINT. Like bitcoin-node, it leaves its socket files behind: the
/// next client is refused ("Connection refused"), and the next start removes them as stale.
pub(crate) async fn run(opts: NodeOptions) -> Result<ExitCode> {
    // Signals first: a test may send SIGTERM right after the Listening line.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let peer = Names::new(EXE_NAME);
    let mut listeners = Vec::new();
    for path in opts.socket_paths()? {
        listeners.push(bind(&path)?);
        println!(
            "Listening for IPC requests on address unix:{}",
            path.display()
        );
        std::io::stdout().flush()?;
    }
    for listener in listeners {
        tokio::task::spawn_local(accept_loop(listener, peer.clone()));
    }

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    // Connections are dropped with the runtime when we return, like the node
    // dropping IPC connections early in shutdown.
    Ok(ExitCode::SUCCESS)
}

async fn accept_loop(listener: UnixListener, peer: Rc<Names>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(serve_connection(stream, peer.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: keep listening, but do not spin.
                eprintln!("IPC server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: its own RPC system with a fresh `Init` as bootstrap.
async fn serve_connection(stream: UnixStream, peer: Rc<Names>) {
    let rpc = net::rpc_system(stream, new_init(peer).client);
    if let Err(e) = rpc.await.context("IPC server connection") {
        eprintln!("{e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_bind_paths() {
        let dir = std::env::temp_dir();
        let d = dir.display();
        let o = NodeOptions::parse(&args(&[
            &format!("-datadir={d}"),
            "-regtest",
            "-ipcbind=unix",
            "-ipcbind=unix:/tmp/x.sock",
            "--ipcbind=unix:rel.sock",
        ]))
        .unwrap();
        let net = std::path::absolute(&dir).unwrap().join("regtest");
        assert_eq!(
            o.socket_paths().unwrap(),
            vec![
                net.join("node.sock"),
                PathBuf::from("/tmp/x.sock"),
                net.join("rel.sock")
            ]
        );
    }

    #[test]
    fn rejects_bad_options() {
        let err = |a: &[&str]| NodeOptions::parse(&args(a)).unwrap_err().to_string();
        assert!(err(&["-ipcfd"]).contains("Invalid parameter -ipcfd"));
        assert!(err(&["-regtest", "-signet", "-ipcbind=unix"]).contains("at most one"));
        assert!(err(&["-regtest"]).contains("nothing to listen on"));
        let o = NodeOptions::parse(&args(&["-ipcbind=tcp:1"])).unwrap();
        assert!(
            o.socket_paths()
                .unwrap_err()
                .to_string()
                .contains("Unrecognized address 'tcp:1'")
        );
    }
}
