//! Recordings: pcapng files that Wireshark's tools read, holding raw frames (not decoded events,
//! so a newer mpspy decodes old recordings better) and replayed through the same decode path.
//!
//! Layout:
//! - Section header: `shb_userappl` = `mpspy <version>`, and a comment
//!   `mpspy-recording v1; schemas=<set>; start_unix_ns=<n>`.
//! - Interface 0, `mpspy-control` (LINKTYPE_USER1): control records, one JSON object per packet
//!   (`closed`, `dropped`, `bad`, `notice`).
//! - One interface per connection (LINKTYPE_USER0), named `conn N`, whose description is a JSON
//!   object with the label and both processes (name, pid, argv).
//! - One enhanced packet block per Cap'n Proto frame, nanosecond timestamps (`if_tsresol` 9),
//!   direction in `epb_flags`: inbound (1) = client→server, outbound (2) = server→client.
//! - With `--inject`: a second section comment `mpspy fault injection: RULES`; each fault as an
//!   `injected` control record, except a call mpspy answered itself: the answer is recorded as
//!   the frame its receiver got, with a packet comment `mpspy-injected {fault as JSON}`.
//!
//! - At the end, one interface statistics block per connection: `isb_ifrecv` (frames that
//!   crossed the relay) and `isb_ifdrop` (those the recording could not keep because the disk
//!   fell behind; a `dropped` control record marks where).
//!
//! Live, the recording is written by its own thread ([`record_live`]) from its own queue on the
//! tap, beside the decoder: it holds every frame that crossed the relay, whether or not decoding
//! kept up. It is flushed in batches (every 64 KiB, and a frame is in the file within 50 ms of
//! crossing the relay: see [`RECORDER`]), so a crash loses
//! at most that much; the reader stops quietly at a torn tail.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::tap::Consumer;
use mpspy_schema::event::{ConnId, Direction, Fault, NoticeLevel, Peer};
use pcap_file::DataLink;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use serde::{Deserialize, Serialize};

use mpspy_engine::BadBytes;
use mpspy_engine::Tapped;

/// The recording format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first four bytes of every pcapng file (a Section Header Block's type): how a recording
/// is told from a text log before it is read.
pub const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];
const MAGIC: &str = "mpspy-recording";
/// How a packet comment marks a frame mpspy sent in a peer's place (followed by the fault).
const INJECTED: &str = "mpspy-injected ";

/// Why a recording could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// File system trouble.
    #[error("recording error: {0}")]
    Io(#[from] io::Error),
    /// The pcapng layer failed.
    #[error("recording error: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    /// A pcapng file, but not one mpspy wrote.
    #[error("recording error: not an mpspy recording ({0})")]
    NotOurs(String),
    /// Written by a newer mpspy.
    #[error(
        "recording error: format v{found} was written by a newer mpspy; this build reads v{FORMAT_VERSION} (please update mpspy)"
    )]
    TooNew {
        /// The version in the file.
        found: u32,
    },
}

/// A control record on interface 0.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Closed {
        conn: ConnId,
        reason: String,
    },
    Dropped {
        count: u64,
    },
    Notice {
        level: NoticeLevel,
        text: String,
    },
    Injected {
        conn: ConnId,
        dir: Direction,
        fault: Fault,
    },
    Bad {
        conn: ConnId,
        dir: Direction,
        offset: u64,
        len: usize,
        reason: String,
        hex: String,
        stopped: bool,
    },
}

/// What a connection interface's description holds.
#[derive(Debug, Serialize, Deserialize)]
struct ConnDescription {
    conn: ConnId,
    #[serde(default)]
    t_ns: u64,
    label: String,
    client: Option<PeerRecord>,
    server: Option<PeerRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PeerRecord {
    name: String,
    pid: Option<u32>,
    argv: Vec<String>,
}

impl From<&Peer> for PeerRecord {
    fn from(p: &Peer) -> Self {
        PeerRecord {
            name: p.name.clone(),
            pid: p.pid,
            argv: p.argv.clone(),
        }
    }
}

impl From<PeerRecord> for Peer {
    fn from(p: PeerRecord) -> Self {
        Peer {
            name: p.name,
            pid: p.pid,
            argv: p.argv,
        }
    }
}

const FLAG_INBOUND: u32 = 1;
const FLAG_OUTBOUND: u32 = 2;

/// Writes a recording as items arrive.
pub struct Recorder<W: Write> {
    out: PcapNgWriter<BufWriter<W>>,
    interfaces: HashMap<ConnId, u32>,
    next_interface: u32,
    start_unix_ns: u64,
    /// Frames written per connection.
    written: HashMap<ConnId, u64>,
}

/// Bytes buffered before a write to the file (and a flush at most this far apart).
const FLUSH_BYTES: usize = 64 << 10;
/// The longest a live recording keeps frames buffered once it has taken them from its queue.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(25);
/// The recording writer's queue on the tap: bytes of frames it may fall behind the relay by
/// before it loses some (counted in the file).
pub const RECORD_BUDGET: usize = 256 << 20;
/// The recording writer on the tap: it looks at its queue every 25 ms while traffic flows, so a
/// frame reaches the file within 50 ms (this plus [`FLUSH_INTERVAL`]), which is what a SIGKILL
/// can cost.
pub const RECORDER: Consumer = Consumer {
    budget: RECORD_BUDGET,
    linger: Duration::from_millis(25),
};

impl<W: Write> std::fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl Recorder<File> {
    /// Creates (or truncates) a recording file.
    pub fn create(path: &Path, schemas: &str, start_unix_ns: u64) -> Result<Self, RecordError> {
        Recorder::new(File::create(path)?, schemas, start_unix_ns)
    }

    /// [`create`](Self::create), with more section comments (`--inject` says so in the header).
    pub fn create_with_comments(
        path: &Path,
        schemas: &str,
        start_unix_ns: u64,
        comments: &[String],
    ) -> Result<Self, RecordError> {
        Recorder::with_comments(File::create(path)?, schemas, start_unix_ns, comments)
    }
}

fn interface(
    name: String,
    description: Option<String>,
    linktype: DataLink,
) -> InterfaceDescriptionBlock<'static> {
    let mut options = vec![
        InterfaceDescriptionOption::IfName(Cow::Owned(name)),
        InterfaceDescriptionOption::IfTsResol(9),
    ];
    if let Some(d) = description {
        options.push(InterfaceDescriptionOption::IfDescription(Cow::Owned(d)));
    }
    InterfaceDescriptionBlock {
        linktype,
        snaplen: 0,
        options,
    }
}

impl<W: Write> Recorder<W> {
    /// Starts a recording on `out`.
    pub fn new(out: W, schemas: &str, start_unix_ns: u64) -> Result<Self, RecordError> {
        Recorder::with_comments(out, schemas, start_unix_ns, &[])
    }

    /// [`new`](Self::new), with more section comments after the one that makes it a recording.
    pub fn with_comments(
        out: W,
        schemas: &str,
        start_unix_ns: u64,
        comments: &[String],
    ) -> Result<Self, RecordError> {
        let mut section = SectionHeaderBlock {
            endianness: pcap_file::Endianness::Little,
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options: vec![
                SectionHeaderOption::UserApplication(Cow::Owned(format!(
                    "mpspy {}",
                    env!("CARGO_PKG_VERSION")
                ))),
                SectionHeaderOption::Comment(Cow::Owned(format!(
                    "{MAGIC} v{FORMAT_VERSION}; schemas={schemas}; start_unix_ns={start_unix_ns}"
                ))),
            ],
        };
        section.options.extend(
            comments
                .iter()
                .map(|c| SectionHeaderOption::Comment(Cow::Owned(c.clone()))),
        );
        let mut out =
            PcapNgWriter::with_section_header(BufWriter::with_capacity(FLUSH_BYTES, out), section)?;
        out.write_pcapng_block(interface(
            "mpspy-control".into(),
            Some("mpspy control records (JSON)".into()),
            DataLink::USER1,
        ))?;
        out.get_mut().flush()?;
        Ok(Recorder {
            out,
            interfaces: HashMap::new(),
            next_interface: 1,
            start_unix_ns,
            written: HashMap::new(),
        })
    }

    fn timestamp(&self, t_ns: u64) -> Duration {
        Duration::from_nanos(self.start_unix_ns + t_ns)
    }

    fn control(&mut self, t_ns: u64, c: &Control) -> Result<(), RecordError> {
        let data = serde_json::to_vec(c).map_err(io::Error::other)?;
        self.out.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: self.timestamp(t_ns),
            original_len: data.len() as u32,
            data: Cow::Owned(data),
            options: vec![],
        })?;
        Ok(())
    }

    /// Writes what is buffered to the file.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.out.get_mut().flush()?;
        Ok(())
    }

    /// Ends the recording: the interface statistics (frames and the recording's own drops per
    /// connection, `dropped`), flushed.
    pub fn finish(&mut self, t_ns: u64, dropped: &HashMap<ConnId, u64>) -> Result<(), RecordError> {
        use pcap_file::pcapng::blocks::interface_statistics::{
            InterfaceStatisticsBlock, InterfaceStatisticsOption,
        };
        let mut conns: Vec<(ConnId, u32)> = self.interfaces.iter().map(|(c, i)| (*c, *i)).collect();
        conns.sort_unstable();
        let timestamp = self.start_unix_ns + t_ns;
        for (conn, interface_id) in conns {
            let lost = dropped.get(&conn).copied().unwrap_or(0);
            let kept = self.written.get(&conn).copied().unwrap_or(0);
            self.out.write_pcapng_block(InterfaceStatisticsBlock {
                interface_id,
                timestamp,
                options: vec![
                    InterfaceStatisticsOption::IsbIfRecv(kept + lost),
                    InterfaceStatisticsOption::IsbIfDrop(lost),
                ],
            })?;
        }
        self.flush()
    }

    /// Records one item (buffered: see [`flush`](Self::flush)).
    pub fn write(&mut self, item: &Tapped) -> Result<(), RecordError> {
        match item {
            Tapped::Opened {
                conn,
                t_ns,
                label,
                client,
                server,
            } => {
                let desc = ConnDescription {
                    conn: *conn,
                    t_ns: *t_ns,
                    label: label.clone(),
                    client: client.as_ref().map(PeerRecord::from),
                    server: server.as_ref().map(PeerRecord::from),
                };
                let desc = serde_json::to_string(&desc).map_err(io::Error::other)?;
                self.out.write_pcapng_block(interface(
                    format!("conn {conn}"),
                    Some(desc),
                    DataLink::USER0,
                ))?;
                self.interfaces.insert(*conn, self.next_interface);
                self.next_interface += 1;
            }
            Tapped::Frame {
                conn,
                dir,
                t_ns,
                bytes,
                ..
            } => {
                let Some(&interface_id) = self.interfaces.get(conn) else {
                    return Ok(());
                };
                let flags = match dir {
                    Direction::ClientToServer => FLAG_INBOUND,
                    Direction::ServerToClient => FLAG_OUTBOUND,
                };
                self.out.write_pcapng_block(EnhancedPacketBlock {
                    interface_id,
                    timestamp: self.timestamp(*t_ns),
                    original_len: bytes.len() as u32,
                    data: Cow::Borrowed(bytes),
                    options: vec![EnhancedPacketOption::Flags(flags)],
                })?;
                *self.written.entry(*conn).or_default() += 1;
            }
            Tapped::Bad {
                conn,
                dir,
                t_ns,
                bad,
            } => self.control(
                *t_ns,
                &Control::Bad {
                    conn: *conn,
                    dir: *dir,
                    offset: bad.offset,
                    len: bad.len,
                    reason: bad.reason.clone(),
                    hex: bad.hex.clone(),
                    stopped: bad.stopped,
                },
            )?,
            Tapped::Closed { conn, t_ns, reason } => self.control(
                *t_ns,
                &Control::Closed {
                    conn: *conn,
                    reason: reason.clone(),
                },
            )?,
            Tapped::Dropped { t_ns, count } => {
                self.control(*t_ns, &Control::Dropped { count: *count })?
            }
            Tapped::Injected {
                conn,
                dir,
                t_ns,
                fault,
                frame: None,
            } => self.control(
                *t_ns,
                &Control::Injected {
                    conn: *conn,
                    dir: *dir,
                    fault: fault.clone(),
                },
            )?,
            // The answer mpspy sent: a frame of the opposite direction, as its receiver got it,
            // marked so that Wireshark users see it and replay puts the fault back.
            Tapped::Injected {
                conn,
                dir,
                t_ns,
                fault,
                frame: Some(bytes),
            } => {
                let Some(&interface_id) = self.interfaces.get(conn) else {
                    return Ok(());
                };
                let flags = match dir.reverse() {
                    Direction::ClientToServer => FLAG_INBOUND,
                    Direction::ServerToClient => FLAG_OUTBOUND,
                };
                let fault = serde_json::to_string(fault).map_err(io::Error::other)?;
                self.out.write_pcapng_block(EnhancedPacketBlock {
                    interface_id,
                    timestamp: self.timestamp(*t_ns),
                    original_len: bytes.len() as u32,
                    data: Cow::Borrowed(bytes),
                    options: vec![
                        EnhancedPacketOption::Flags(flags),
                        EnhancedPacketOption::Comment(Cow::Owned(format!("{INJECTED}{fault}"))),
                    ],
                })?;
                *self.written.entry(*conn).or_default() += 1;
            }
            Tapped::Notice { t_ns, level, text } => self.control(
                *t_ns,
                &Control::Notice {
                    level: *level,
                    text: text.clone(),
                },
            )?,
        }
        Ok(())
    }
}

/// What a live recording did.
#[derive(Debug, Default)]
pub struct RecordSummary {
    /// Frames written.
    pub frames: u64,
    /// Frames the recording lost because writing fell behind.
    pub dropped: u64,
    /// The error that stopped it, if one did (the session went on without it).
    pub error: Option<RecordError>,
}

/// Writes a live recording on its own thread from `rx` (its own queue on the tap) until the tap
/// finishes: every frame as it crossed the relay, flushed in batches (at least every
/// [`FLUSH_INTERVAL`]), then the interface statistics with what it lost.
///
/// # Errors
/// When the thread cannot be started.
pub fn record_live(
    mut recorder: Recorder<File>,
    mut rx: crate::tap::TapReceiver,
    clock: crate::tap::Clock,
) -> io::Result<std::thread::JoinHandle<RecordSummary>> {
    std::thread::Builder::new()
        .name("mpspy-record".into())
        .spawn(move || {
            let mut summary = RecordSummary::default();
            let mut last_flush = std::time::Instant::now();
            let mut dirty = false;
            let mut failed = None;
            loop {
                // With nothing buffered there is no flush to come back for: sleep until a
                // frame arrives (an idle session costs no wake-ups).
                let next = if dirty {
                    rx.recv_timeout(&clock, FLUSH_INTERVAL.saturating_sub(last_flush.elapsed()))
                } else {
                    Ok(rx.recv(&clock))
                };
                let item = match next {
                    Ok(Some(item)) => Some(item),
                    Ok(None) => break,
                    Err(()) => None,
                };
                if let Some(item) = &item {
                    match &**item {
                        Tapped::Frame { .. } => summary.frames += 1,
                        Tapped::Dropped { count, .. } => summary.dropped += count,
                        _ => {}
                    }
                    if failed.is_none() {
                        match recorder.write(item) {
                            Ok(()) => dirty = true,
                            Err(e) => failed = Some(e),
                        }
                    }
                }
                if dirty && failed.is_none() && last_flush.elapsed() >= FLUSH_INTERVAL {
                    if let Err(e) = recorder.flush() {
                        failed = Some(e);
                    }
                    last_flush = std::time::Instant::now();
                    dirty = false;
                }
            }
            if failed.is_none()
                && let Err(e) = recorder.finish(clock.now_ns(), &rx.dropped_per_conn())
            {
                failed = Some(e);
            }
            summary.error = failed;
            summary
        })
}

/// What a recording says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The schema selection used when recording.
    pub schemas: String,
    /// Wall clock at the session start.
    pub start_unix_ns: u64,
    /// The program that wrote it.
    pub writer: String,
}

/// How reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// At a clean end of file.
    Complete,
    /// At a torn tail (the writer stopped mid-block); everything before it was read.
    Torn(String),
}

/// Reads a recording, handing each item to `f` in file order.
pub fn read<R: Read>(input: R, mut f: impl FnMut(Tapped)) -> Result<(Header, End), RecordError> {
    read_streaming(input, |_, t| f(t))
}

/// [`read`], with the recording's header beside each item, so a consumer can set itself up by
/// it (the schema selection) on the first item and take the file as a stream: nothing is held
/// but the item at hand.
pub fn read_streaming<R: Read>(
    input: R,
    mut f: impl FnMut(&Header, Tapped),
) -> Result<(Header, End), RecordError> {
    let mut reader = PcapNgReader::new(BufReader::new(input))
        .map_err(|e| RecordError::NotOurs(format!("not a pcapng file: {e}")))?;
    let header = header(reader.section())?;
    // Interface index -> connection (None for the control interface).
    let mut conns: Vec<Option<ConnId>> = Vec::new();
    // Frames are contiguous in their stream, so offsets are the running sum of lengths.
    let mut offsets: HashMap<(ConnId, Direction), u64> = HashMap::new();
    let end = loop {
        let block = match reader.next_block() {
            None => break End::Complete,
            Some(Err(e)) => break End::Torn(e.to_string()),
            Some(Ok(b)) => b,
        };
        match block {
            Block::InterfaceDescription(idb) => {
                let desc = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfDescription(d) => Some(d.to_string()),
                    _ => None,
                });
                let parsed = desc
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<ConnDescription>(d).ok());
                match parsed {
                    Some(d) => {
                        conns.push(Some(d.conn));
                        f(
                            &header,
                            Tapped::Opened {
                                conn: d.conn,
                                t_ns: d.t_ns,
                                label: d.label,
                                client: d.client.map(Peer::from),
                                server: d.server.map(Peer::from),
                            },
                        );
                    }
                    None => conns.push(None),
                }
            }
            Block::EnhancedPacket(epb) => {
                let t_ns = (epb.timestamp.as_nanos() as u64).saturating_sub(header.start_unix_ns);
                match conns.get(epb.interface_id as usize).copied().flatten() {
                    Some(conn) => {
                        let outbound = epb
                            .options
                            .iter()
                            .any(|o| matches!(o, EnhancedPacketOption::Flags(f) if f & 3 == FLAG_OUTBOUND));
                        let dir = if outbound {
                            Direction::ServerToClient
                        } else {
                            Direction::ClientToServer
                        };
                        let offset = offsets.entry((conn, dir)).or_default();
                        let at = *offset;
                        *offset += epb.data.len() as u64;
                        let injected = epb.options.iter().find_map(|o| match o {
                            EnhancedPacketOption::Comment(c) => c
                                .strip_prefix(INJECTED)
                                .and_then(|j| serde_json::from_str::<Fault>(j).ok()),
                            _ => None,
                        });
                        if let Some(fault) = injected {
                            f(
                                &header,
                                Tapped::Injected {
                                    conn,
                                    dir: dir.reverse(),
                                    t_ns,
                                    fault,
                                    frame: Some(epb.data.into_owned()),
                                },
                            );
                            continue;
                        }
                        f(
                            &header,
                            Tapped::Frame {
                                conn,
                                dir,
                                t_ns,
                                offset: at,
                                bytes: epb.data.into_owned(),
                            },
                        );
                    }
                    None => match serde_json::from_slice::<Control>(&epb.data) {
                        Ok(Control::Closed { conn, reason }) => {
                            f(&header, Tapped::Closed { conn, t_ns, reason })
                        }
                        Ok(Control::Dropped { count }) => {
                            f(&header, Tapped::Dropped { t_ns, count })
                        }
                        Ok(Control::Notice { level, text }) => {
                            f(&header, Tapped::Notice { t_ns, level, text })
                        }
                        Ok(Control::Injected { conn, dir, fault }) => f(
                            &header,
                            Tapped::Injected {
                                conn,
                                dir,
                                t_ns,
                                fault,
                                frame: None,
                            },
                        ),
                        Ok(Control::Bad {
                            conn,
                            dir,
                            offset,
                            len,
                            reason,
                            hex,
                            stopped,
                        }) => f(
                            &header,
                            Tapped::Bad {
                                conn,
                                dir,
                                t_ns,
                                bad: BadBytes {
                                    offset,
                                    len,
                                    reason,
                                    hex,
                                    stopped,
                                },
                            },
                        ),
                        // A control record of a newer minor kind: skip it.
                        Err(_) => {}
                    },
                }
            }
            _ => {}
        }
    };
    Ok((header, end))
}

fn header(shb: &SectionHeaderBlock<'_>) -> Result<Header, RecordError> {
    let mut writer = String::new();
    let mut comment = None;
    for o in &shb.options {
        match o {
            SectionHeaderOption::UserApplication(a) => writer = a.to_string(),
            SectionHeaderOption::Comment(c) if c.starts_with(MAGIC) => {
                comment = Some(c.to_string())
            }
            _ => {}
        }
    }
    let comment = comment.ok_or_else(|| {
        RecordError::NotOurs(format!(
            "no '{MAGIC}' section comment; written by {}",
            if writer.is_empty() {
                "an unknown program"
            } else {
                &writer
            }
        ))
    })?;
    let mut version = None;
    let mut schemas = "auto".to_string();
    let mut start_unix_ns = 0;
    for part in comment.split(';').map(str::trim) {
        if let Some(v) = part.strip_prefix(MAGIC).map(str::trim) {
            version = v.strip_prefix('v').and_then(|v| v.parse::<u32>().ok());
        } else if let Some(s) = part.strip_prefix("schemas=") {
            schemas = s.to_string();
        } else if let Some(s) = part.strip_prefix("start_unix_ns=") {
            start_unix_ns = s.parse().unwrap_or(0);
        }
    }
    match version {
        Some(v) if v > FORMAT_VERSION => Err(RecordError::TooNew { found: v }),
        Some(_) => Ok(Header {
            schemas,
            start_unix_ns,
            writer,
        }),
        None => Err(RecordError::NotOurs(format!(
            "unreadable section comment '{comment}'"
        ))),
    }
}

/// Reads a recording file.
pub fn read_file(path: &Path, f: impl FnMut(Tapped)) -> Result<(Header, End), RecordError> {
    read(File::open(path)?, f)
}

/// Reads only what a recording says about itself (before reading it whole, to set up by it).
pub fn read_header(path: &Path) -> Result<Header, RecordError> {
    let reader = PcapNgReader::new(BufReader::new(File::open(path)?))
        .map_err(|e| RecordError::NotOurs(format!("not a pcapng file: {e}")))?;
    header(reader.section())
}

/// Reads a recording file as a stream (see [`read_streaming`]).
pub fn read_file_streaming(
    path: &Path,
    f: impl FnMut(&Header, Tapped),
) -> Result<(Header, End), RecordError> {
    read_streaming(File::open(path)?, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Tapped> {
        vec![
            Tapped::Opened {
                conn: 1,
                t_ns: 0,
                label: "bitcoin-cli → bitcoin-node".into(),
                client: Some(Peer {
                    name: "bitcoin-cli".into(),
                    pid: Some(42),
                    argv: vec!["bitcoin-cli".into(), "getblockcount".into()],
                }),
                server: None,
            },
            Tapped::Frame {
                conn: 1,
                dir: Direction::ClientToServer,
                t_ns: 1_000,
                offset: 0,
                bytes: vec![0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            },
            Tapped::Frame {
                conn: 1,
                dir: Direction::ServerToClient,
                t_ns: 2_500,
                offset: 0,
                bytes: vec![0, 0, 0, 0, 0, 0, 0, 0],
            },
            Tapped::Dropped {
                t_ns: 3_000,
                count: 7,
            },
            Tapped::Closed {
                conn: 1,
                t_ns: 4_000,
                reason: "client closed the connection".into(),
            },
        ]
    }

    /// Faults read back as written: the answer mpspy sent as a frame of the other direction
    /// with its fault in the packet comment, the others as control records; the header's
    /// extra comment does not disturb it.
    #[test]
    fn injected_faults_round_trip() {
        use mpspy_schema::event::FaultKind;
        let fault = |kind, question: Option<u32>| Fault {
            kind,
            method: question.map(|_| "Mining.getTip".to_string()),
            question,
            detail: "answered with overloaded: busy".into(),
        };
        let mut items = sample();
        items.truncate(2);
        items.push(Tapped::Injected {
            conn: 1,
            dir: Direction::ClientToServer,
            t_ns: 1_000,
            fault: fault(FaultKind::Exception, Some(3)),
            frame: Some(vec![0, 0, 0, 0, 0, 0, 0, 0]),
        });
        items.push(Tapped::Injected {
            conn: 1,
            dir: Direction::ClientToServer,
            t_ns: 2_000,
            fault: fault(FaultKind::Disconnect, None),
            frame: None,
        });
        let mut buf = Vec::new();
        let comments = ["mpspy fault injection: Mining.getTip:exception=overloaded".to_string()];
        let mut r = Recorder::with_comments(&mut buf, "master", 1, &comments).unwrap();
        for item in &items {
            r.write(item).unwrap();
        }
        drop(r);
        let mut got = Vec::new();
        let (h, end) = read(&buf[..], |t| got.push(t)).unwrap();
        assert_eq!((h.schemas.as_str(), end), ("master", End::Complete));
        assert_eq!(got, items);
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let mut buf = Vec::new();
        let mut r = Recorder::new(&mut buf, "master", 1_700_000_000_000_000_000).unwrap();
        for item in sample() {
            r.write(&item).unwrap();
        }
        drop(r);
        let mut got = Vec::new();
        let (h, end) = read(&buf[..], |t| got.push(t)).unwrap();
        assert_eq!(h.schemas, "master");
        assert_eq!(end, End::Complete);
        assert_eq!(got, sample());

        // Cut inside the last block: everything before it survives.
        let mut got = Vec::new();
        let (_, end) = read(&buf[..buf.len() - 5], |t| got.push(t)).unwrap();
        assert!(matches!(end, End::Torn(_)));
        assert_eq!(got, sample()[..4]);
    }

    #[test]
    fn newer_and_foreign_files_are_refused_with_a_reason() {
        let mut buf = Vec::new();
        drop(Recorder::new(&mut buf, "auto", 0).unwrap());
        // Same length, so the block structure stays valid.
        let at = buf
            .windows(18)
            .position(|w| w == b"mpspy-recording v1")
            .unwrap();
        buf[at + 17] = b'9';
        let err = read(&buf[..], |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("v9") && err.to_string().contains("update"),
            "{err}"
        );
        let err = read(&b"not a pcapng file at all"[..], |_| {}).unwrap_err();
        assert!(err.to_string().contains("not an mpspy recording"), "{err}");
    }
}
