//! What hyper's HTTP/2 server cannot be told to do, done to its frames on the wire: the two
//! connection behaviours of APNs that the notifier's client must survive. A connection can
//! - start with a low `SETTINGS_MAX_CONCURRENT_STREAMS` and raise it once the first request is
//!   answered (the first SETTINGS is rewritten; a second one is written later, and the client's
//!   ACK for it is kept from hyper, which never sent it);
//! - go away mid-burst: after a number of streams, every later stream's frames are dropped
//!   before hyper sees them, a GOAWAY naming the last stream kept says they were not processed,
//!   and hyper's own GOAWAYs (it is then told to finish and close) are rewritten so the last
//!   stream id never grows.
//!
//! Only HTTP/2 connections are touched (HTTP/1.1 passes through), and only when the stand-in is
//! configured for one of the two. What may change here: the frames written; the parsing is
//! RFC 9113 §4.1 and should stay that small.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Conn;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// The debug data of the GOAWAY written, as APNs words its reason.
const GOAWAY_DEBUG: &[u8] = br#"{"reason":"Shutdown"}"#;

enum Mode {
    /// Reading the first bytes, to tell HTTP/2's preface from HTTP/1.1.
    Sniffing,
    Http2,
    Passthrough,
}

/// An I/O stream whose HTTP/2 frames are rewritten as the module says.
pub(crate) struct Frames<T> {
    io: T,
    conn: Arc<Conn>,
    mode: Mode,
    /// Bytes from the client not yet handed on whole.
    inbound: Vec<u8>,
    /// Whole frames ready for hyper, and how much of them it has read.
    to_server: Vec<u8>,
    to_server_read: usize,
    /// Bytes from hyper not yet a whole frame.
    outbound: Vec<u8>,
    /// Frames ready for the client, and how much of them is written.
    to_client: Vec<u8>,
    to_client_written: usize,
    /// Every SETTINGS sent, oldest first: `true` for ours, whose ACK hyper must not see.
    settings_sent: VecDeque<bool>,
    raised: bool,
    /// Streams opened by the client so far, for the GOAWAY.
    streams_read: u64,
    /// The last stream processed, once the connection decided to go away; frames of later
    /// streams are dropped from then on. The GOAWAY itself is written once one such stream has
    /// been turned back, so a burst always meets the case RFC 9113 §6.8 describes: streams the
    /// client sent that the server never processed.
    last_stream: Option<u32>,
    turned_back: u64,
    goaway_written: bool,
}

impl<T> Frames<T> {
    pub(crate) fn new(io: T, conn: Arc<Conn>) -> Self {
        Self {
            io,
            conn,
            mode: Mode::Sniffing,
            inbound: Vec::new(),
            to_server: Vec::new(),
            to_server_read: 0,
            outbound: Vec::new(),
            to_client: Vec::new(),
            to_client_written: 0,
            settings_sent: VecDeque::new(),
            raised: false,
            streams_read: 0,
            last_stream: None,
            turned_back: 0,
            goaway_written: false,
        }
    }

    /// Moves what the client sent into `to_server`, whole frames only, dropping those hyper
    /// must not see.
    fn pass_client_frames(&mut self) {
        if let Mode::Sniffing = self.mode {
            let n = self.inbound.len().min(PREFACE.len());
            if self.inbound[..n] != PREFACE[..n] {
                self.mode = Mode::Passthrough;
            } else if n == PREFACE.len() {
                self.mode = Mode::Http2;
                self.to_server.extend(self.inbound.drain(..n));
            }
        }
        if let Mode::Passthrough = self.mode {
            self.to_server.append(&mut self.inbound);
        }
        let Mode::Http2 = self.mode else { return };
        while let Some(len) = whole_frame(&self.inbound) {
            let frame: Vec<u8> = self.inbound.drain(..len).collect();
            let (kind, flags, stream) = (frame[3], frame[4], stream_id(&frame));
            if kind == SETTINGS && flags & ACK != 0 && self.settings_sent.pop_front() == Some(true)
            {
                continue;
            }
            if let Some(last) = self.last_stream
                && stream > last
            {
                if kind == HEADERS {
                    self.turned_back += 1;
                    self.conn.refused_after_goaway();
                }
                continue;
            }
            if kind == HEADERS {
                self.streams_read += 1;
                if self.conn.goaway_after() == Some(self.streams_read) {
                    self.last_stream = Some(stream);
                }
            }
            self.to_server.extend_from_slice(&frame);
        }
    }

    /// Moves what hyper wrote into `to_client`, whole frames only, rewritten, with ours before
    /// the next frame when one is due.
    fn pass_server_frames(&mut self) {
        if !matches!(self.mode, Mode::Http2) {
            self.to_client.append(&mut self.outbound);
            return;
        }
        while let Some(len) = whole_frame(&self.outbound) {
            let mut frame: Vec<u8> = self.outbound.drain(..len).collect();
            self.due_frames();
            match frame[3] {
                SETTINGS if frame[4] & ACK == 0 => {
                    if self.settings_sent.is_empty()
                        && let Some(initial) = self.conn.initial_streams()
                    {
                        frame = settings_with_streams(&frame[HEADER..], initial);
                    }
                    self.settings_sent.push_back(false);
                }
                GOAWAY if frame.len() >= HEADER + 4 => {
                    if let Some(last) = self.last_stream {
                        let theirs =
                            u32::from_be_bytes([frame[9], frame[10], frame[11], frame[12]])
                                & 0x7fff_ffff;
                        frame[9..13].copy_from_slice(&theirs.min(last).to_be_bytes());
                    }
                }
                _ => {}
            }
            self.to_client.extend_from_slice(&frame);
        }
    }

    /// Our own frames, when the connection's state asks for them.
    fn due_frames(&mut self) {
        if let (Some(last), false, 1..) = (self.last_stream, self.goaway_written, self.turned_back)
        {
            self.goaway_written = true;
            // hyper finishes the streams up to `last`, then closes with its own GOAWAY.
            self.conn.going_away();
            let mut payload = last.to_be_bytes().to_vec();
            payload.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
            payload.extend_from_slice(GOAWAY_DEBUG);
            self.to_client.extend(frame(GOAWAY, 0, &payload));
        }
        if !self.raised
            && let Some(streams) = self.conn.raise_due()
        {
            self.raised = true;
            self.to_client.extend(settings_with_streams(&[], streams));
            self.settings_sent.push_back(true);
            self.conn.advertise(streams);
        }
    }
}

fn whole_frame(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < HEADER {
        return None;
    }
    let len =
        HEADER + (usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]));
    (bytes.len() >= len).then_some(len)
}

fn stream_id(frame: &[u8]) -> u32 {
    u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff
}

fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with `params` (6 bytes each), its stream limit set to `streams`.
fn settings_with_streams(params: &[u8], streams: u32) -> Vec<u8> {
    let mut payload: Vec<u8> = params
        .chunks_exact(6)
        .filter(|p| u16::from_be_bytes([p[0], p[1]]) != MAX_CONCURRENT_STREAMS)
        .flatten()
        .copied()
        .collect();
    payload.extend_from_slice(&MAX_CONCURRENT_STREAMS.to_be_bytes());
    payload.extend_from_slice(&streams.to_be_bytes());
    frame(SETTINGS, 0, &payload)
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Frames<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.to_server_read < this.to_server.len() {
                let ready = &this.to_server[this.to_server_read..];
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.to_server_read += n;
                if this.to_server_read == this.to_server.len() {
                    this.to_server.clear();
                    this.to_server_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.inbound.extend_from_slice(read.filled());
            this.pass_client_frames();
            // A GOAWAY due after a turned-back stream goes out now: hyper may have nothing
            // more to write that would carry it.
            this.due_frames();
            let _ = this.poll_drain(cx)?;
        }
    }
}

impl<T: AsyncWrite + Unpin> Frames<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.to_client_written < self.to_client.len() {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.to_client[self.to_client_written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.to_client_written += n;
        }
        self.to_client.clear();
        self.to_client_written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Frames<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.outbound.extend_from_slice(buf);
        this.pass_server_frames();
        // What the socket does not take now goes with the next write or the flush.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settings_frame_gets_the_stream_limit_asked_for_and_keeps_the_rest() {
        // INITIAL_WINDOW_SIZE 65535, MAX_CONCURRENT_STREAMS 100.
        let params = [0, 4, 0, 0, 0xff, 0xff, 0, 3, 0, 0, 0, 100];
        let f = settings_with_streams(&params, 1);
        assert_eq!(whole_frame(&f), Some(f.len()));
        assert_eq!(&f[3..5], &[SETTINGS, 0]);
        assert_eq!(&f[HEADER..], &[0, 4, 0, 0, 0xff, 0xff, 0, 3, 0, 0, 0, 1]);
    }
}
