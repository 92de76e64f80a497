//! The connection's byte stream as h2 writes to it: the same stream, said not to take vectored
//! writes, so that h2 copies small DATA frames into its write buffer instead of chaining them.
//!
//! h2 (0.4) chains a DATA frame's payload behind its buffer, unwritten, when the payload is at
//! least 256 bytes and the stream takes vectored writes (1,024 bytes when it does not), and it
//! buffers no further frame until that one is written. A push's body (an FCM message with a
//! 160-character token is about 450 bytes) is over 256 bytes, so over TLS (tokio-rustls takes
//! vectored writes) every push cost a write of its own: a TLS record, an encryption and a
//! `writev` system call, the largest single cost in the profile of a fan-out. Copied into the
//! buffer instead, a write carries every frame ready at the time, up to 16 KiB.
//!
//! What may change here: nothing but the delegation; bodies over 1,024 bytes are still chained.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `T`, without vectored writes.
pub(crate) struct Unvectored<T>(pub(crate) T);

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
