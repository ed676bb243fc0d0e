//! An in-memory duplex that h2 reads from and writes to.
//!
//! h2 needs `AsyncRead + AsyncWrite`; giving it this pipe instead of the socket keeps the
//! core free of IO: the reactor moves bytes between socket and pipe (and TLS could sit in
//! between), and tests can drive the core with no socket at all.

use bytes::{Buf, Bytes, BytesMut};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Above this many unsent bytes, h2's writes wait until the reactor drains the pipe.
const HIGH_WATER: usize = 4 << 20;

/// The buffers shared by the h2 side ([`Pipe`]) and the core side (the transport).
#[derive(Debug, Default)]
pub(crate) struct PipeBuffers {
    /// Bytes received from the peer, not yet read by h2.
    inbound: BytesMut,
    /// The peer closed its side: reads return EOF once `inbound` is empty.
    eof: bool,
    reader: Option<Waker>,
    /// Bytes h2 wrote, not yet sent to the peer.
    outbound: BytesMut,
    writer: Option<Waker>,
    /// Bytes taken out of `outbound` so far (see [`take_output`](Self::take_output)).
    taken: u64,
    /// Bytes the IO layer reported written to the socket (or to TLS): with
    /// [`produced`](Self::produced), tells whether anything written after a given point ever
    /// left.
    sent: u64,
}

impl PipeBuffers {
    /// Appends received bytes and wakes h2's reader.
    pub(crate) fn push_input(&mut self, bytes: &[u8]) {
        self.inbound.extend_from_slice(bytes);
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Marks end of input and wakes h2's reader.
    pub(crate) fn push_eof(&mut self) {
        self.eof = true;
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    /// Bytes h2 has written so far (sent or not): the mark of what comes next.
    pub(crate) fn produced(&self) -> u64 {
        self.taken + self.outbound.len() as u64
    }

    /// `n` more bytes reached the socket (or TLS).
    pub(crate) fn written(&mut self, n: usize) {
        self.sent += n as u64;
    }

    /// Bytes handed to the socket so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Takes every byte waiting to be sent (no copy: the buffer is split off), and lets a
    /// blocked h2 write again. The taker reports what it wrote with [`written`](Self::written). The taker holds them until written, so
    /// h2's writes wait while more than [`HIGH_WATER`] bytes are unsent on either side.
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        if self.outbound.is_empty() {
            return None;
        }
        let out = self.outbound.split().freeze();
        self.taken += out.len() as u64;
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        Some(out)
    }
}

/// h2's end of the pipe.
#[derive(Debug)]
pub(crate) struct Pipe(pub(crate) Rc<RefCell<PipeBuffers>>);

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = self.0.borrow_mut();
        if p.inbound.is_empty() {
            if p.eof {
                return Poll::Ready(Ok(()));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.remaining().min(p.inbound.len());
        buf.put_slice(&p.inbound[..n]);
        p.inbound.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.0.borrow_mut();
        if p.outbound.len() >= HIGH_WATER {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for b in bufs {
            p.outbound.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
