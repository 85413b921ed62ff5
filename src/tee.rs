//! A stream that shows every byte it carries to a tap, for the connections mpspy is itself an
//! end of (`mpspy call`/`bench` as the client, `mpspy serve` as the server): what it reads came
//! from the peer, what it writes goes to it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use mpspy_schema::Direction;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a [`Tee`] shows the bytes: the direction they travel, and the bytes.
pub(crate) trait TeeTap {
    fn bytes(&mut self, dir: Direction, data: &[u8]);
}

/// `inner`, with every byte read or written shown to `tap`; `read` is the direction of what is
/// read (server to client for a client's stream).
pub(crate) struct Tee<S, T> {
    pub(crate) inner: S,
    pub(crate) tap: T,
    pub(crate) read: Direction,
}

impl<S: AsyncRead + Unpin, T: TeeTap + Unpin> AsyncRead for Tee<S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let dir = self.read;
            self.tap.bytes(dir, &buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, T: TeeTap + Unpin> AsyncWrite for Tee<S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            let dir = self.read.reverse();
            self.tap.bytes(dir, &buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
