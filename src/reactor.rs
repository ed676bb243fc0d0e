//! The thin IO driver: one `mio::Poll`, at most one socket, and the clock.
//!
//! It moves bytes between the socket and the session's pipe, reports connection outcomes,
//! and tells the session the time. One turn ([`Reactor::turn`]):
//!
//! 1. wait for readiness (or not at all, for a foreign loop's `process()`);
//! 2. finish a pending connect; read until the socket is drained and hand the bytes in;
//! 3. fire expired timers;
//! 4. let h2 process what was read.
//!
//! The client then runs the callbacks of finished calls, with no borrow held, and only then
//! [`flush`](Reactor::flush)es: h2 makes progress, a connection is started if the session
//! wants one, and output is written until `WouldBlock`. Writing after the callbacks puts the
//! requests they started in the same write as h2's own frames (such as the ack of the PING
//! that etcd sends with every response): one write per turn instead of two.
//!
//! Readiness is edge-triggered: `readable`/`writable` are cached, since no new edge arrives
//! for data already signalled. `writable` is cleared on `WouldBlock`; `readable` also by a
//! read that did not fill the buffer (the socket was drained: later data raises a new edge),
//! unless the peer's end of input was signalled, which is read on to the 0.

use crate::session::Session;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
const READ_CHUNK: usize = 64 * 1024;
/// Rounds of drive-and-write per flush: writing can unblock h2, which then writes more.
const MAX_FLUSH_ROUNDS: usize = 8;

/// The socket of the current link.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// The endpoint, for error messages.
    peer: String,
    /// Further addresses of the endpoint, tried in turn when a connect fails.
    fallback: Vec<SocketAddr>,
    /// The session's link generation this socket belongs to.
    generation: u64,
    connected: bool,
    readable: bool,
    writable: bool,
    /// The peer's FIN or an error was signalled: read on to the 0 / the error.
    read_closed: bool,
}

/// The mio side of a client.
#[derive(Debug)]
pub(crate) struct Reactor {
    poll: Poll,
    events: Events,
    socket: Option<Socket>,
    read_buf: Box<[u8]>,
}

impl Reactor {
    /// A reactor with no socket yet.
    pub(crate) fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            socket: None,
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
        })
    }

    /// The epoll fd: readable when the socket has news.
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// How long the caller may sleep before the next turn: zero when work is waiting, until
    /// the next timer otherwise, `None` when there is no timer.
    pub(crate) fn next_timeout(&self, session: &Session, now: Instant) -> Option<Duration> {
        if session.needs_drive() {
            return Some(Duration::ZERO);
        }
        if session.is_idle() {
            // Nothing pending: the internal timers left (the idle connection's PING timer)
            // have nothing to do until an operation starts, which makes this zero again.
            // The health check alone runs while idle.
            return session.health_due().map(|d| d.saturating_duration_since(now));
        }
        session.next_deadline().map(|d| d.saturating_duration_since(now))
    }

    /// The input half of a turn: wait up to `timeout` for readiness, read, fire the timers.
    /// Follow with [`flush`](Reactor::flush) once the finished calls' callbacks have run.
    pub(crate) fn turn(&mut self, session: &mut Session, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                session.handle_link_error(&format!("poll: {e}"));
            }
        }
        for ev in self.events.iter() {
            if let (SOCKET, Some(s)) = (ev.token(), self.socket.as_mut()) {
                s.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                s.read_closed |= ev.is_read_closed() || ev.is_error();
                s.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
            }
        }
        session.set_now(Instant::now());
        self.finish_connect(session);
        self.read(session);
        // What was read goes to h2 before the timers fire: a response that arrived in time
        // beats its deadline expiring in the same turn.
        session.drive();
        if session.handle_timeout(Instant::now()) {
            session.drive();
        }
    }

    /// Lets the session make progress and sends what it produced.
    pub(crate) fn flush(&mut self, session: &mut Session) {
        for _ in 0..MAX_FLUSH_ROUNDS {
            session.drive();
            self.sync_socket(session);
            self.write(session);
            if !session.has_ready_tasks() {
                return;
            }
        }
    }

    /// Drops a socket whose link is gone; starts a connection the session asks for.
    fn sync_socket(&mut self, session: &mut Session) {
        let stale = self
            .socket
            .as_ref()
            .is_some_and(|s| s.generation != session.link_generation() || !session.wants_socket());
        if stale {
            if let Some(mut s) = self.socket.take() {
                let _ = self.poll.registry().deregister(&mut s.stream);
            }
        }
        if let Some(authority) = session.poll_connect(Instant::now()) {
            let peer = authority.to_string();
            let mut addrs = match resolve(&peer) {
                Ok(addrs) => addrs,
                Err(e) => return session.handle_connect_failed(&format!("resolve {peer}: {e}")),
            };
            addrs.reverse(); // popped from the back: first address first
            self.connect(session, peer, addrs);
        }
    }

    /// Starts a non-blocking connect to the next of `addrs` that the OS accepts; reports the
    /// last error when none is left.
    fn connect(&mut self, session: &mut Session, peer: String, mut addrs: Vec<SocketAddr>) {
        let mut last = io::Error::new(ErrorKind::NotFound, "no address");
        while let Some(addr) = addrs.pop() {
            let mut stream = match TcpStream::connect(addr) {
                Ok(stream) => stream,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut stream, SOCKET, interest) {
                last = e;
                continue;
            }
            self.socket = Some(Socket {
                stream,
                peer,
                fallback: addrs,
                generation: session.link_generation(),
                connected: false,
                readable: false,
                writable: false,
                read_closed: false,
            });
            return;
        }
        session.handle_connect_failed(&format!("connect to {peer}: {last}"));
    }

    /// Completes a pending connect once the socket reports readiness.
    fn finish_connect(&mut self, session: &mut Session) {
        let Some(s) = self.socket.as_mut().filter(|s| !s.connected) else {
            return;
        };
        if !(s.writable || s.readable) {
            return;
        }
        let failure = match s.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match s.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == ErrorKind::NotConnected => {
                    // A spurious wake-up: still connecting.
                    s.readable = false;
                    s.writable = false;
                    return;
                }
                Err(e) => Some(e),
            },
        };
        match failure {
            Some(e) => {
                // Try the endpoint's next address (say 127.0.0.1 after ::1) before giving up.
                let mut s = self.socket.take().expect("checked above");
                let _ = self.poll.registry().deregister(&mut s.stream);
                if s.fallback.is_empty() {
                    session.handle_connect_failed(&format!("connect to {}: {e}", s.peer));
                } else {
                    self.connect(session, s.peer, s.fallback);
                }
            }
            None => {
                // Without TCP_NODELAY, Nagle and delayed ACKs turn 100 µs calls into 40 ms.
                let _ = s.stream.set_nodelay(true);
                if let Some((time, timeout)) = session.tcp_keepalive() {
                    let _ = crate::sockopt::set_tcp_keepalive(s.stream.as_raw_fd(), time, timeout);
                }
                s.connected = true;
                session.handle_connected();
            }
        }
    }

    /// Reads until `WouldBlock`, EOF or an error, handing every chunk to the session. A read
    /// that does not fill the buffer drained the socket: the registration is edge-triggered,
    /// so data arriving later raises a new event, and the read that would only say
    /// `WouldBlock` (one syscall per response) is skipped.
    fn read(&mut self, session: &mut Session) {
        let Some(s) = self.socket.as_mut().filter(|s| s.connected) else {
            return;
        };
        while s.readable {
            match s.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    s.readable = false;
                    session.handle_eof();
                }
                Ok(n) => {
                    s.readable = n == self.read_buf.len() || s.read_closed;
                    session.handle_input(&self.read_buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    s.readable = false;
                    session.handle_link_error(&format!("read: {e}"));
                }
            }
        }
    }

    /// Writes the session's output until it is empty or the socket would block.
    fn write(&mut self, session: &mut Session) {
        let Some(s) = self.socket.as_mut().filter(|s| s.connected) else {
            return;
        };
        if s.generation != session.link_generation() {
            return;
        }
        let Some(pipe) = session.pipe().cloned() else {
            return;
        };
        let mut pipe = pipe.borrow_mut();
        while s.writable && !pipe.output().is_empty() {
            match s.stream.write(pipe.output()) {
                Ok(n) => pipe.consume_output(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    drop(pipe);
                    return session.handle_link_error(&format!("write: {e}"));
                }
            }
        }
    }
}

/// The addresses of `host:port`. Names go through the system resolver, which blocks: use IP
/// addresses where the loop must never stall.
fn resolve(authority: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}
