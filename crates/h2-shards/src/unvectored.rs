//! The connection's byte stream as h2 writes to it: the same stream, said not to take vectored
//! writes, and made to let the tasks ready on its thread run once before each write, so that one
//! write carries the frames of many pushes instead of one.
//!
//! h2 (0.4) chains a DATA frame's payload behind its buffer, unwritten, when the payload is at
//! least 256 bytes and the stream takes vectored writes (1,024 bytes when it does not), and it
//! buffers no further frame until that one is written. A push's body (an FCM message with a
//! 160-character token is about 450 bytes) is over 256 bytes, so over TLS (tokio-rustls takes
//! vectored writes) every push cost a write of its own: a TLS record, an encryption and a
//! `writev` system call, the largest single cost in the profile of a fan-out. Copied into the
//! buffer instead, a write carries every frame ready at the time, up to 16 KiB.
//!
//! Even so the connection's task, woken by each new request, wrote about 0.7 times per push: it
//! ran as soon as the first push of a burst queued its request. Yielding once before a write
//! puts it behind the push tasks already woken on its thread (answers read in the same read),
//! whose requests then go in the same write: 0.15 writes per push. The cost is one more poll of
//! the connection's task per write, never a wait on a timer.
//!
//! What may change here: nothing but the delegation and the yield; bodies over 1,024 bytes are
//! still chained.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `T`, without vectored writes, yielding once before each write.
pub(crate) struct Unvectored<T> {
    io: T,
    /// Whether this write already yielded.
    yielded: bool,
}

impl<T> Unvectored<T> {
    pub(crate) fn new(io: T) -> Self {
        Self { io, yielded: false }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.yielded {
            // Woken at once: the runtime polls this task again after those already ready.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
