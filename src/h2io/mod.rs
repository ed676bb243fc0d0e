//! The only asynchronous code: h2's handles, polled by hand.
//!
//! No executor and no `async` blocks. The core calls plain methods here; each polls an h2
//! handle with the waker of the caller's key (see [`wake`]) and returns what happened as
//! plain data. h2 does all of its IO on [`Pipe`], an in-memory duplex (at the end of this file):
//! giving h2 this pipe instead of the socket keeps the core free of IO; the reactor moves
//! bytes between socket and pipe (through TLS when used), and tests drive the core with no
//! socket at all.
//!
//! Nothing is written until the connection task is polled, so the core polls it after
//! every input and after every call it polls ([`Transport::poll_connection`]).

#[cfg(test)]
pub(crate) mod test_server;
pub(crate) mod wake;

use bytes::Bytes;
use bytes::{Buf, BytesMut};
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
pub(crate) use wake::Wakers;

/// Per-stream receive window. Large, so that a big range, snapshot chunk or a burst of watch
/// events does not wait for WINDOW_UPDATE round trips.
const STREAM_WINDOW: u32 = 4 << 20;
/// Connection receive window: several streams' worth. It also sizes h2's budget for small
/// unread DATA frames, which many calls in flight would otherwise exhaust.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// One HTTP/2 connection over a pipe.
pub(crate) struct Transport {
    pipe: Rc<RefCell<PipeBuffers>>,
    send: SendRequest<Bytes>,
    conn: Connection<Pipe, Bytes>,
    /// The connection's user PINGs (keepalive).
    ping: Option<h2::PingPong>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

impl Transport {
    /// Starts the HTTP/2 handshake: the preface and SETTINGS go into the pipe at once (h2 does
    /// not wait for the server's SETTINGS before requests may be sent).
    pub(crate) fn handshake(wakers: &Wakers) -> Result<Transport, h2::Error> {
        let pipe = Rc::new(RefCell::new(PipeBuffers::default()));
        let mut fut = Box::pin(
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .enable_push(false)
                .handshake::<_, Bytes>(Pipe(pipe.clone())),
        );
        let mut cx = Context::from_waker(wakers.connection());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok((send, mut conn))) => {
                let ping = conn.ping_pong();
                Ok(Transport { pipe, send, conn, ping })
            }
            Poll::Ready(Err(e)) => Err(e),
            // The pipe never blocks a write of the 24-byte preface.
            Poll::Pending => unreachable!("handshake on an empty pipe completes at once"),
        }
    }

    /// Bytes received from the server, for h2 to read.
    pub(crate) fn push_input(&self, bytes: &[u8]) {
        self.pipe.borrow_mut().push_input(bytes);
    }

    /// The end of the server's input: h2 reads it after what came before.
    pub(crate) fn push_eof(&self) {
        self.pipe.borrow_mut().push_eof();
    }

    /// Whether input (or its end) waits that h2 has not read yet.
    pub(crate) fn has_unread_input(&self) -> bool {
        self.pipe.borrow().has_unread_input()
    }

    /// What h2 wrote since the last call, if anything; report what reaches the socket with
    /// [`written`](Self::written).
    pub(crate) fn take_output(&self) -> Option<Bytes> {
        self.pipe.borrow_mut().take_output()
    }

    /// `n` bytes of the output reached the socket (or TLS).
    pub(crate) fn written(&self, n: usize) {
        self.pipe.borrow_mut().written(n);
    }

    /// Bytes h2 has written so far (sent or not): the mark of what comes next.
    pub(crate) fn produced(&self) -> u64 {
        self.pipe.borrow().produced()
    }

    /// Bytes that reached the socket so far (see [`written`](Self::written)).
    pub(crate) fn sent(&self) -> u64 {
        self.pipe.borrow().sent()
    }

    /// Drives the connection: reads frames, writes queued frames, answers pings and settings.
    /// `Some` once the connection has ended; any end, even `Ok`, means it is gone.
    pub(crate) fn poll_connection(&mut self, wakers: &Wakers) -> Option<Result<(), h2::Error>> {
        let mut cx = Context::from_waker(wakers.connection());
        match Pin::new(&mut self.conn).poll(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    /// Sends a PING (one at a time; see [`poll_pong`](Self::poll_pong)).
    pub(crate) fn send_ping(&mut self) -> Result<(), h2::Error> {
        match self.ping.as_mut() {
            Some(p) => p.send_ping(h2::Ping::opaque()),
            None => Ok(()),
        }
    }

    /// The answer to the PING sent: `None` while none came.
    pub(crate) fn poll_pong(&mut self, wakers: &Wakers) -> Option<Result<(), h2::Error>> {
        let mut cx = Context::from_waker(wakers.connection());
        match self.ping.as_mut()?.poll_pong(&mut cx) {
            Poll::Ready(r) => Some(r.map(|_| ())),
            Poll::Pending => None,
        }
    }

    /// Whether a new stream may be opened now. `None`: not yet (the connection waker fires
    /// when it may). `Some(Err)`: never on this connection (GOAWAY, or closed).
    pub(crate) fn poll_ready(&mut self, wakers: &Wakers) -> Option<Result<(), h2::Error>> {
        let mut cx = Context::from_waker(wakers.connection());
        match self.send.poll_ready(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    /// Opens a stream with `request`'s headers and sends `body`; `end` half-closes our side
    /// (unary and server-streaming calls), otherwise more messages may follow.
    pub(crate) fn open(
        &mut self,
        request: Request<()>,
        body: Bytes,
        end: bool,
    ) -> Result<H2Stream, h2::Error> {
        let (response, mut send) = self.send.send_request(request, false)?;
        send.send_data(body, end)?;
        Ok(H2Stream {
            response: Some(response),
            recv: None,
            send: Some(send),
            body_done: false,
            over: false,
        })
    }
}

/// What a stream produced.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// The response headers; `end` when the stream ended with them (trailers-only).
    Headers(http::response::Parts, bool),
    /// A DATA chunk (its flow-control capacity already released).
    Data(Bytes),
    /// The trailers; the stream is over.
    Trailers(HeaderMap),
    /// The stream ended without trailers.
    End,
    /// The stream failed: reset, GOAWAY, or the connection broke.
    Failed(h2::Error),
}

/// One request/response stream.
///
/// ```text
///  response: Some ──headers──► recv: Some ──data*──► body_done ──trailers──► over
/// ```
pub(crate) struct H2Stream {
    response: Option<ResponseFuture>,
    recv: Option<RecvStream>,
    send: Option<SendStream<Bytes>>,
    body_done: bool,
    /// The server ended the stream (trailers, end, or a failure): nothing to reset.
    over: bool,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream").field("body_done", &self.body_done).finish_non_exhaustive()
    }
}

impl H2Stream {
    /// The next thing that happened on the stream, or `None` until `key` is woken again.
    pub(crate) fn poll(&mut self, wakers: &mut Wakers, key: usize) -> Option<StreamEvent> {
        let event = self.poll_inner(wakers, key);
        if let Some(StreamEvent::Trailers(_) | StreamEvent::End | StreamEvent::Failed(_)) = &event {
            self.over = true;
        }
        if let Some(StreamEvent::Headers(_, true)) = &event {
            self.over = true;
        }
        event
    }

    fn poll_inner(&mut self, wakers: &mut Wakers, key: usize) -> Option<StreamEvent> {
        let mut cx = Context::from_waker(wakers.for_key(key));
        if let Some(fut) = self.response.as_mut() {
            return match Pin::new(fut).poll(&mut cx) {
                Poll::Pending => None,
                Poll::Ready(Err(e)) => Some(StreamEvent::Failed(e)),
                Poll::Ready(Ok(resp)) => {
                    self.response = None;
                    let (parts, body) = resp.into_parts();
                    let end = body.is_end_stream();
                    self.recv = Some(body);
                    Some(StreamEvent::Headers(parts, end))
                }
            };
        }
        let recv = self.recv.as_mut()?;
        if !self.body_done {
            match recv.poll_data(&mut cx) {
                Poll::Pending => return None,
                Poll::Ready(Some(Ok(chunk))) => {
                    // Give the window back at once: the core consumes every chunk.
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    return Some(StreamEvent::Data(chunk));
                }
                Poll::Ready(Some(Err(e))) => return Some(StreamEvent::Failed(e)),
                Poll::Ready(None) => self.body_done = true,
            }
        }
        match recv.poll_trailers(&mut cx) {
            Poll::Pending => None,
            Poll::Ready(Ok(Some(t))) => Some(StreamEvent::Trailers(t)),
            Poll::Ready(Ok(None)) => Some(StreamEvent::End),
            Poll::Ready(Err(e)) => Some(StreamEvent::Failed(e)),
        }
    }

    /// Sends one more request message on a bidi stream.
    pub(crate) fn send(&mut self, body: Bytes, end: bool) -> Result<(), h2::Error> {
        match self.send.as_mut() {
            Some(s) => s.send_data(body, end),
            None => Ok(()),
        }
    }

    /// Abandons the stream: RST_STREAM(CANCEL) if it is still open. One the server already
    /// ended is only dropped (a reset of it would be work for nothing: h2 ignores it).
    pub(crate) fn cancel(mut self) {
        if self.over {
            return;
        }
        if let Some(mut s) = self.send.take() {
            s.send_reset(h2::Reason::CANCEL);
        }
    }
}

// ===== the pipe =====

/// Above this many unsent bytes, h2's writes wait until the reactor drains the pipe.
const HIGH_WATER: usize = 4 << 20;
/// An empty input buffer larger than this is given back.
const SHRINK_ABOVE: usize = 64 << 10;

/// The buffers shared by the h2 side ([`Pipe`]) and the core side (the transport).
#[derive(Debug, Default)]
pub(crate) struct PipeBuffers {
    /// Bytes received from the peer, not yet read by h2.
    inbound: BytesMut,
    /// The peer closed its side: reads return EOF once `inbound` is empty.
    eof: bool,
    /// h2 has read that EOF.
    eof_read: bool,
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

    /// Whether input (or its end) waits that h2 has not read yet.
    pub(crate) fn has_unread_input(&self) -> bool {
        !self.inbound.is_empty() || (self.eof && !self.eof_read)
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
                p.eof_read = true;
                return Poll::Ready(Ok(()));
            }
            p.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.remaining().min(p.inbound.len());
        buf.put_slice(&p.inbound[..n]);
        p.inbound.advance(n);
        if p.inbound.is_empty() && p.inbound.capacity() > SHRINK_ABOVE {
            // A burst (every watch's creation, a large range) does not keep its room.
            p.inbound = BytesMut::new();
        }
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
