//! An in-process gRPC server on h2, over in-memory buffers, for virtual-time tests of the
//! core: the test moves bytes between the core and this server by hand, so
//! nothing touches a socket or the clock. It answers exactly what the test tells it to, so
//! it is only for what a real etcd will not do on demand (silence, trailers-only errors,
//! GOAWAY, a connection that ends).

use super::{Pipe, PipeBuffers};
use bytes::{Bytes, BytesMut};
use h2::server::{self, SendResponse};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

type Handshake = Pin<Box<dyn Future<Output = Result<server::Connection<Pipe, Bytes>, h2::Error>>>>;

enum State {
    Handshaking(Handshake),
    Serving(Box<server::Connection<Pipe, Bytes>>),
    Closed,
}

/// The server side of one connection.
pub(crate) struct TestServer {
    pipe: Rc<RefCell<PipeBuffers>>,
    state: State,
    /// Calls accepted and not yet taken by the test.
    accepted: Vec<ServerCall>,
}

/// One request the server received.
pub(crate) struct ServerCall {
    /// `/package.Service/Method`.
    pub(crate) path: String,
    /// The request headers.
    pub(crate) headers: HeaderMap,
    body: RecvStream,
    received: BytesMut,
    respond: SendResponse<Bytes>,
    stream: Option<SendStream<Bytes>>,
}

impl TestServer {
    /// A server waiting for the client preface.
    pub(crate) fn new() -> TestServer {
        let pipe = Rc::new(RefCell::new(PipeBuffers::default()));
        let hs = Box::pin(server::handshake(Pipe(pipe.clone())));
        TestServer { pipe, state: State::Handshaking(hs), accepted: Vec::new() }
    }

    /// Moves bytes both ways between `client` and this server, and lets both h2 sides run,
    /// until neither has anything more to send.
    pub(crate) fn exchange(&mut self, client: &mut impl Peer) {
        for _ in 0..1000 {
            let to_server = client.transmit().unwrap_or_default();
            self.pipe.borrow_mut().push_input(&to_server);
            self.poll();
            let to_client = self.output();
            if to_server.is_empty() && to_client.is_empty() {
                return;
            }
            client.receive(&to_client);
        }
        panic!("client and server never went quiet");
    }

    /// Starts a graceful shutdown: GOAWAY with the highest stream id, a PING, then GOAWAY
    /// with the last stream the server accepted; the accepted streams may still finish.
    pub(crate) fn graceful_shutdown(&mut self) {
        if let State::Serving(conn) = &mut self.state {
            conn.graceful_shutdown();
        }
        self.poll();
    }

    /// Sends GOAWAY with the last stream accepted, and closes the connection once written:
    /// whatever the client sent after that point is never read.
    pub(crate) fn abrupt_shutdown(&mut self, reason: h2::Reason) {
        if let State::Serving(conn) = &mut self.state {
            conn.abrupt_shutdown(reason);
        }
        self.poll();
    }

    /// Whether the server side of the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Takes bytes from the client, lets the server run, and returns what it sends back:
    /// for a test that puts something (TLS) between the two pipes.
    #[cfg(feature = "tls")]
    pub(crate) fn serve(&mut self, input: &[u8]) -> Vec<u8> {
        self.pipe.borrow_mut().push_input(input);
        self.poll();
        self.output()
    }

    fn output(&self) -> Vec<u8> {
        self.pipe.borrow_mut().take_output().map_or_else(Vec::new, |b| b.to_vec())
    }

    /// Calls accepted since the last take.
    pub(crate) fn take_calls(&mut self) -> Vec<ServerCall> {
        std::mem::take(&mut self.accepted)
    }

    fn poll(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        if let State::Handshaking(hs) = &mut self.state {
            match hs.as_mut().poll(&mut cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(conn)) => self.state = State::Serving(Box::new(conn)),
                Poll::Ready(Err(_)) => self.state = State::Closed,
            }
        }
        let State::Serving(conn) = &mut self.state else {
            return;
        };
        loop {
            match conn.poll_accept(&mut cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    self.accepted.push(ServerCall::new(req, respond))
                }
                Poll::Ready(Some(Err(_)) | None) => {
                    self.state = State::Closed;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }
}

/// The client side of an exchange: its bytes out, the server's bytes in.
pub(crate) trait Peer {
    fn transmit(&mut self) -> Option<Bytes>;
    fn receive(&mut self, bytes: &[u8]);
}

impl ServerCall {
    fn new(req: Request<RecvStream>, respond: SendResponse<Bytes>) -> ServerCall {
        let (parts, body) = req.into_parts();
        ServerCall {
            path: parts.uri.path().to_string(),
            headers: parts.headers,
            body,
            received: BytesMut::new(),
            respond,
            stream: None,
        }
    }

    /// Request bytes received so far (framed gRPC messages), and whether the client reset
    /// the stream.
    pub(crate) fn read(&mut self) -> (&[u8], bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut reset = false;
        loop {
            match self.body.poll_data(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.received.extend_from_slice(&chunk);
                }
                Poll::Ready(Some(Err(e))) => {
                    reset = e.is_reset();
                    break;
                }
                _ => break,
            }
        }
        reset |= match self.stream.as_mut() {
            Some(s) => matches!(s.poll_reset(&mut cx), Poll::Ready(Ok(_))),
            None => matches!(self.respond.poll_reset(&mut cx), Poll::Ready(Ok(_))),
        };
        (&self.received, reset)
    }

    /// Sends the response headers (status 200, gRPC content type).
    pub(crate) fn headers(&mut self) {
        let resp = Response::builder().status(200).header("content-type", "application/grpc");
        // On a stream the client reset this fails, as a late answer does on a real server.
        self.stream = self.respond.send_response(resp.body(()).unwrap(), false).ok();
    }

    /// Sends one framed message (headers first if not sent yet).
    pub(crate) fn message(&mut self, framed: Bytes) {
        if self.stream.is_none() {
            self.headers();
        }
        if let Some(s) = self.stream.as_mut() {
            let _ = s.send_data(framed, false);
        }
    }

    /// Ends the call with trailers carrying `code` and `message`.
    pub(crate) fn trailers(&mut self, code: i32, message: &str) {
        if self.stream.is_none() {
            self.headers();
        }
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.to_string().parse().unwrap());
        t.insert("grpc-message", message.parse().unwrap());
        if let Some(s) = self.stream.as_mut() {
            let _ = s.send_trailers(t);
        }
    }

    /// Resets the stream with `reason` (REFUSED_STREAM: "not processed, try again").
    pub(crate) fn reset(&mut self, reason: h2::Reason) {
        match self.stream.as_mut() {
            Some(s) => s.send_reset(reason),
            None => self.respond.send_reset(reason),
        }
    }

    /// Ends the call with a trailers-only response: one HEADERS frame with the status.
    pub(crate) fn trailers_only(&mut self, code: i32, message: &str) {
        let resp = Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", message);
        let _ = self.respond.send_response(resp.body(()).unwrap(), true);
    }
}
