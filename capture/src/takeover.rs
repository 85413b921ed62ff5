//! Taking over a listening socket the program bound itself.
//!
//! `mpspy -- bitcoin-node -ipcbind=unix` does not change where or how the node listens: it
//! binds its own path, by its own arguments and config file, removing a stale socket first as
//! it always does, and its log says what it would say. Once the node's socket file is there,
//! [`take_over`] gives that socket a second name that only mpspy knows (a hard link: the node's
//! listener keeps working under it) and atomically renames a listener of mpspy's over the public
//! path. From then on clients reach mpspy, which relays each connection to the node's socket
//! under its second name.
//!
//! What clients see is what they would see without mpspy:
//! - before the node binds, the path is whatever it was (missing, or a stale socket that
//!   refuses connections);
//! - at no moment during the takeover is the public path missing: it names the node's socket
//!   until the rename makes it name mpspy's;
//! - after the node exits, mpspy's socket file stays at the path, refusing connections once
//!   mpspy has closed it, as the node's own leftover socket would (a node that removes its
//!   socket at exit removes mpspy's, which ends the same way).
//!
//! The one difference: a client that connects in the moment between the node's `bind` and the
//! takeover reaches the node directly and is not recorded. [`Watcher`] keeps that moment short
//! (inotify on Linux: the takeover follows the file's creation within microseconds; a short poll
//! elsewhere).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One socket file, told apart from another at the same path (a stale socket the program
/// removed and replaced may get the same inode number back, but not the same change time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketId {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl SocketId {
    /// The socket at `path`, if `path` is a socket (not followed if it is a link).
    #[must_use]
    pub fn of(path: &Path) -> Option<SocketId> {
        use std::os::unix::fs::FileTypeExt;
        let m = fs::symlink_metadata(path).ok()?;
        m.file_type().is_socket().then(|| SocketId::from_meta(&m))
    }

    /// The same file, whatever happened to it since (linking it changes its change time).
    fn same_file(self, other: Option<SocketId>) -> bool {
        other.is_some_and(|o| (o.dev, o.ino) == (self.dev, self.ino))
    }

    fn from_meta(m: &fs::Metadata) -> SocketId {
        SocketId {
            dev: m.dev(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A socket taken over by [`take_over`].
#[derive(Debug)]
pub struct Taken {
    /// mpspy's listener, now at the public path.
    pub listener: UnixListener,
    /// The program's socket under its second name: relay connections here.
    pub moved: PathBuf,
}

/// A unique name beside `public` for a file of mpspy's.
fn sibling(public: &Path, what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = public.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        ".mpspy-{}-{}{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Takes over the program's listening socket at `public` (see the module docs): its second
/// name is `moved` if a hard link there works (same filesystem), else a hidden name beside
/// `public`; mpspy's listener gets `public`'s permission bits.
///
/// # Errors
/// When `public` is not a socket, or was replaced while this ran (then nothing is changed), or
/// a step fails (then what was done is undone as far as possible).
pub fn take_over(public: &Path, moved: &Path) -> io::Result<Taken> {
    let meta = fs::symlink_metadata(public)?;
    let id = SocketId::of(public)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a socket"))?;
    let tmp = sibling(public, "");
    let listener = UnixListener::bind(&tmp)?;
    let undo_tmp = |e: io::Error| {
        let _ = fs::remove_file(&tmp);
        e
    };
    fs::set_permissions(&tmp, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(undo_tmp)?;
    let moved = match fs::hard_link(public, moved) {
        Ok(()) => moved.to_path_buf(),
        Err(_) => {
            // Another filesystem (or no links across directories there): beside it.
            let beside = sibling(public, ".program");
            fs::hard_link(public, &beside).map_err(undo_tmp)?;
            beside
        }
    };
    let undo = |e: io::Error| {
        let _ = fs::remove_file(&moved);
        let _ = fs::remove_file(&tmp);
        e
    };
    // The program may have replaced its socket since we looked; then `moved` names another
    // socket than the one checked, and we must not hide the new one.
    if !id.same_file(SocketId::of(&moved)) || !id.same_file(SocketId::of(public)) {
        return Err(undo(io::Error::other(
            "the socket was replaced during the takeover",
        )));
    }
    fs::rename(&tmp, public).map_err(undo)?;
    Ok(Taken { listener, moved })
}

/// How many connections reached the program's socket bound at `public` directly, before a
/// takeover: accepted or still queued. Call it right after [`take_over`] and before relaying
/// anything (mpspy's own relayed connections would count too). Linux only (from
/// `/proc/net/unix`, where the program's sockets keep the path they were bound at); `None`
/// elsewhere or if it cannot be read.
#[must_use]
pub fn direct_connections(public: &Path) -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let table = fs::read_to_string("/proc/net/unix").ok()?;
        Some(count_direct(&table, public.to_str()?))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = public;
        None
    }
}

/// In a `/proc/net/unix` table: the sockets at `path` other than listeners.
#[cfg(any(target_os = "linux", target_os = "android", test))]
fn count_direct(table: &str, path: &str) -> usize {
    /// `__SO_ACCEPTCON`: the socket is listening.
    const LISTENING: u32 = 0x0001_0000;
    table
        .lines()
        .skip(1)
        .filter(|line| {
            // Num RefCount Protocol Flags Type St Inode Path: the path is what follows the
            // seventh field (it may contain spaces).
            let mut rest = line.trim_start();
            let mut fields = Vec::with_capacity(7);
            for _ in 0..7 {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                fields.push(&rest[..end]);
                rest = rest[end..].trim_start();
            }
            let flags = fields
                .get(3)
                .and_then(|f| u32::from_str_radix(f, 16).ok())
                .unwrap_or(LISTENING);
            rest == path && flags & LISTENING == 0
        })
        .count()
}

/// Waits for changes on the way to some paths: the directory a path is in, or, while that does
/// not exist yet, the nearest one above it that does.
#[derive(Debug)]
pub struct Watcher {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    inotify: Option<std::os::fd::OwnedFd>,
}

/// How often to look when there is no inotify.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const POLL: Duration = Duration::from_millis(2);

impl Default for Watcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Watcher {
    /// A watcher (inotify where there is one; polling otherwise, or if inotify fails).
    #[must_use]
    pub fn new() -> Watcher {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::fs::inotify::{CreateFlags, init};
            Watcher {
                inotify: init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok(),
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Watcher {}
    }

    /// Starts watching on the way to each of `paths` (call again after a wake-up: directories
    /// created since are watched from then on). Call before the program starts, so that no
    /// change is missed.
    pub fn arm(&mut self, paths: &[PathBuf]) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.inotify {
            use rustix::fs::inotify::{WatchFlags, add_watch};
            for p in paths {
                let mut dir = p.parent();
                while let Some(d) = dir {
                    let flags = WatchFlags::CREATE | WatchFlags::MOVED_TO | WatchFlags::ONLYDIR;
                    // Adding a watch twice returns the same one: arming again is cheap.
                    if add_watch(fd, d, flags).is_ok() {
                        break;
                    }
                    dir = d.parent();
                }
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = paths;
    }

    /// Blocks until something was created in a watched directory, or `timeout` passed.
    pub fn wait(&mut self, timeout: Duration) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.inotify {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            if poll(&mut fds, Some(&ts)).is_ok_and(|n| n > 0) {
                // Drain: the events only say "look again".
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
                let mut reader = rustix::fs::inotify::Reader::new(fd, &mut buf);
                while reader.next().is_ok() {}
            }
            return;
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let timeout = timeout.min(POLL);
        std::thread::sleep(timeout);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpspy-takeover-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// The program's listener keeps working under its second name, ours answers at the public
    /// path, the mode is kept, and nothing else is left in the directory.
    #[test]
    fn takes_over_without_a_gap_and_keeps_the_programs_socket_working() {
        let d = scratch("basic");
        let public = d.join("node.sock");
        let program = UnixListener::bind(&public).unwrap();
        fs::set_permissions(&public, fs::Permissions::from_mode(0o700)).unwrap();
        let private = scratch("basic-private");
        let t = take_over(&public, &private.join("bind0.sock")).unwrap();
        assert_eq!(t.moved, private.join("bind0.sock"));

        // A client at the public path reaches mpspy's listener.
        let mut c = UnixStream::connect(&public).unwrap();
        let (mut ours, _) = t.listener.accept().unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        ours.read_exact(&mut b).unwrap();
        // mpspy reaches the program under the moved name.
        let _up = UnixStream::connect(&t.moved).unwrap();
        program.accept().unwrap();

        let mode = fs::symlink_metadata(&public).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["node.sock"], "no temporary names left");

        // Closed, ours refuses like a stale socket.
        drop(t.listener);
        let e = UnixStream::connect(&public).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let _ = fs::remove_dir_all(&d);
        let _ = fs::remove_dir_all(&private);
    }

    /// A client that reached the program before the takeover is counted (accepted or queued);
    /// the listener itself is not.
    #[test]
    fn connections_that_came_first_are_counted() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000097ce35bc: 00000003 00000000 00000000 0001 03 54951 /d/node.sock
000000000e95e2ee: 00000003 00000000 00000000 0001 02     0 /d/node.sock
000000006a6f42b1: 00000002 00000000 00010000 0001 01 54948 /d/node.sock
0000000012345678: 00000002 00000000 00000000 0001 03 54950 /d/other.sock
0000000012345679: 00000002 00000000 00000000 0001 03 54952 /d/with space.sock
";
        assert_eq!(count_direct(table, "/d/node.sock"), 2);
        assert_eq!(count_direct(table, "/d/with space.sock"), 1);
        assert_eq!(count_direct(table, "/d/none.sock"), 0);

        #[cfg(target_os = "linux")]
        {
            let d = scratch("direct");
            let public = d.join("node.sock");
            let program = UnixListener::bind(&public).unwrap();
            let _early = UnixStream::connect(&public).unwrap();
            let t = take_over(&public, &d.join("moved.sock")).unwrap();
            assert_eq!(direct_connections(&public), Some(1));
            drop((t, program));
            let _ = fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn refuses_what_is_not_a_socket_and_changes_nothing() {
        let d = scratch("file");
        let public = d.join("node.sock");
        fs::write(&public, b"not a socket").unwrap();
        let e = take_over(&public, &d.join("moved.sock")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["node.sock"]);
        assert_eq!(fs::read(&public).unwrap(), b"not a socket");
        let _ = fs::remove_dir_all(&d);
    }

    /// A replaced stale socket is a new socket, even when its inode number comes back.
    #[test]
    fn a_rebound_socket_is_a_different_socket() {
        let d = scratch("id");
        let p = d.join("s.sock");
        assert_eq!(SocketId::of(&p), None);
        let l = UnixListener::bind(&p).unwrap();
        let first = SocketId::of(&p).unwrap();
        assert_eq!(SocketId::of(&p), Some(first));
        drop(l);
        fs::remove_file(&p).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let _l = UnixListener::bind(&p).unwrap();
        assert_ne!(SocketId::of(&p), Some(first));
        let _ = fs::remove_dir_all(&d);
    }

    /// The watcher wakes up for a socket created in a directory that did not exist when it
    /// was armed.
    #[test]
    fn watcher_follows_directories_as_they_appear() {
        let d = scratch("watch");
        let target = d.join("regtest/node.sock");
        let mut w = Watcher::new();
        w.arm(std::slice::from_ref(&target));
        let t = std::thread::spawn({
            let target = target.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                fs::create_dir(target.parent().unwrap()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                UnixListener::bind(&target).unwrap()
            }
        });
        let start = std::time::Instant::now();
        while SocketId::of(&target).is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "never saw it");
            w.wait(Duration::from_secs(5));
            w.arm(std::slice::from_ref(&target));
        }
        // Woken by the events, not by the 5 s timeout.
        assert!(start.elapsed() < Duration::from_secs(4));
        drop(t.join().unwrap());
        let _ = fs::remove_dir_all(&d);
    }
}
