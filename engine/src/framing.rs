//! Splits one direction's byte stream into Cap'n Proto frames.
//!
//! A read may hold several frames and a frame may span many reads (a relay saw 40 KB messages
//! arrive in 8 KiB chunks), so frames are reassembled from the segment table, never by read.

use mpspy_schema::event::{ConnId, Direction};
use mpspy_schema::value::hex;

use crate::{BadBytes, Tapped};
use mpspy_schema::wire::{self, WireError};

/// Bytes of a bad frame shown in an `undecodable` event.
pub const HEX_EXCERPT: usize = 64;

/// What the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A complete frame starting at `offset` in the stream.
    Frame {
        /// Stream offset of the first byte.
        offset: u64,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// Bytes that cannot be framed.
    Bad {
        /// Stream offset where framing failed.
        offset: u64,
        /// Bytes affected (what was buffered when framing stopped).
        len: usize,
        /// Why.
        reason: String,
        /// The first bytes in hex.
        hex: String,
        /// Framing was lost: the rest of this direction is not decoded (else a torn tail).
        stopped: bool,
    },
}

impl Piece {
    /// The engine's input for this piece of connection `conn`'s direction `dir`, seen at
    /// `t_ns`.
    pub fn tapped(self, conn: ConnId, dir: Direction, t_ns: u64) -> Tapped {
        match self {
            Piece::Frame { offset, bytes } => Tapped::Frame {
                conn,
                dir,
                t_ns,
                offset,
                bytes,
            },
            Piece::Bad {
                offset,
                len,
                reason,
                hex,
                stopped,
            } => Tapped::Bad {
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
        }
    }
}

/// Incremental frame splitter for one direction.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    offset: u64,
    /// Set once framing is lost; later bytes are only counted.
    stopped: bool,
    /// Bytes seen after framing was lost.
    skipped: u64,
    /// Framing was lost here (offset, why) and the excerpt for the report is still being
    /// collected: the report waits for [`HEX_EXCERPT`] bytes (or the end of the stream), so it
    /// reads the same however the stream was cut into reads.
    losing: Option<(u64, String)>,
}

impl Splitter {
    /// A splitter at stream offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a bad header made the rest of the stream unframeable.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Bytes that were not decoded because framing was lost.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Feeds bytes and appends every complete frame (or a framing failure) to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Piece>) {
        if self.stopped {
            self.skipped += data.len() as u64;
            if self.losing.is_some() {
                let want = HEX_EXCERPT.saturating_sub(self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..want]);
                if self.buf.len() == HEX_EXCERPT {
                    out.extend(self.lost());
                }
            }
            return;
        }
        // Fast path: with nothing buffered, frames wholly inside this read are copied once,
        // straight out of it; only a partial tail is buffered.
        let data = if self.buf.is_empty() {
            let mut at = 0;
            while let Ok(Some(len)) = wire::frame_len(&data[at..]) {
                if data.len() - at < len {
                    break;
                }
                out.push(Piece::Frame {
                    offset: self.offset + at as u64,
                    bytes: data[at..at + len].to_vec(),
                });
                at += len;
            }
            self.offset += at as u64;
            &data[at..]
        } else {
            data
        };
        if data.is_empty() {
            return;
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            match wire::frame_len(&self.buf[at..]) {
                Ok(Some(len)) if self.buf.len() - at >= len => {
                    out.push(Piece::Frame {
                        offset: self.offset + at as u64,
                        bytes: self.buf[at..at + len].to_vec(),
                    });
                    at += len;
                }
                Ok(_) => break,
                Err(e) => {
                    // Without a trustworthy segment table there is no next frame boundary to
                    // find, so this direction stops decoding; the relay keeps forwarding.
                    let rest = self.buf.split_off(at);
                    self.skipped += rest.len() as u64;
                    self.stopped = true;
                    self.losing = Some((
                        self.offset + at as u64,
                        format!("{e}; decoding of this direction stops here"),
                    ));
                    self.buf = rest;
                    self.buf.truncate(HEX_EXCERPT);
                    if self.buf.len() == HEX_EXCERPT {
                        out.extend(self.lost());
                    }
                    return;
                }
            }
        }
        self.buf.drain(..at);
        self.offset += at as u64;
    }

    /// Ends the stream: a partial frame left over becomes a `Bad` piece (a torn tail).
    pub fn finish(&mut self) -> Option<Piece> {
        if self.stopped {
            return self.lost();
        }
        if self.buf.is_empty() {
            return None;
        }
        let need = match wire::frame_len(&self.buf) {
            Ok(Some(n)) => format!("{n} bytes"),
            _ => "a complete header".to_string(),
        };
        let piece = Piece::Bad {
            offset: self.offset,
            len: self.buf.len(),
            reason: format!(
                "stream ended inside a frame: {} bytes buffered, frame needs {need}",
                self.buf.len()
            ),
            hex: hex(&self.buf[..self.buf.len().min(HEX_EXCERPT)]),
            stopped: false,
        };
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Some(piece)
    }
}

impl Splitter {
    /// The report of lost framing, once: its excerpt is what was collected.
    fn lost(&mut self) -> Option<Piece> {
        let (offset, reason) = self.losing.take()?;
        let excerpt = std::mem::take(&mut self.buf);
        Some(Piece::Bad {
            offset,
            len: excerpt.len(),
            reason,
            hex: hex(&excerpt),
            stopped: true,
        })
    }
}

/// Splits a whole buffer (a capture file) into pieces.
pub fn split_all(bytes: &[u8]) -> Vec<Piece> {
    let mut s = Splitter::new();
    let mut out = Vec::new();
    s.push(bytes, &mut out);
    out.extend(s.finish());
    out
}

/// Re-exported so callers can name framing errors.
pub type FramingError = WireError;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(words: u32, fill: u8) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&words.to_le_bytes());
        b.extend(std::iter::repeat_n(fill, words as usize * 8));
        b
    }

    #[test]
    fn reassembles_across_reads_and_splits_batches() {
        let mut all = frame(2, 1);
        all.extend(frame(1, 2));
        all.extend(frame(3, 3));
        for chunk in [1, 3, 7, 8, 13, 1000] {
            let mut s = Splitter::new();
            let mut out = Vec::new();
            for c in all.chunks(chunk) {
                s.push(c, &mut out);
            }
            assert_eq!(s.finish(), None);
            let offsets: Vec<u64> = out
                .iter()
                .map(|p| match p {
                    Piece::Frame { offset, .. } => *offset,
                    Piece::Bad { .. } => panic!("bad piece"),
                })
                .collect();
            assert_eq!(offsets, vec![0, 24, 40], "chunk size {chunk}");
        }
    }

    #[test]
    fn garbage_stops_with_offset_and_hex() {
        let mut all = frame(1, 9);
        all.extend([0xff; 16]);
        let out = split_all(&all);
        assert_eq!(out.len(), 2);
        match &out[1] {
            Piece::Bad {
                offset,
                reason,
                hex,
                ..
            } => {
                assert_eq!(*offset, 16);
                assert!(reason.contains("segments"), "{reason}");
                assert!(hex.starts_with("ffff"));
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn torn_tail_is_reported() {
        let f = frame(4, 0);
        let out = split_all(&f[..20]);
        assert!(matches!(
            &out[..],
            [Piece::Bad {
                offset: 0,
                len: 20,
                ..
            }]
        ));
    }
}
