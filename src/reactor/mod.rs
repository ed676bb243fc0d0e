//! The thin IO driver: one `mio::Poll`, at most one socket, the clock, and a waker for other
//! threads: system calls and TLS records only; every decision is the core's (see the
//! contract on [`Core`]).
//!
//! One turn ([`Reactor::turn`]):
//!
//! 1. wait for readiness (or not at all, for a foreign loop's `process()`);
//! 2. take a host name lookup's answer (connect to its addresses); finish a pending connect;
//!    read until the socket is drained and hand the plaintext in
//!    (through TLS, when the endpoint uses it: see [`secure`]);
//! 3. tell the core the time ([`Core::handle_timeout`]): it processes what was read, then
//!    fires its timers.
//!
//! The client then runs the callbacks of finished calls, with no borrow held, and only then
//! [`flush`](Reactor::flush)es: the core's link commands are carried out (connect, close)
//! and its output is written until `WouldBlock`. Writing after the callbacks puts the
//! requests they started in the same write as h2's own frames (such as the ack of the PING
//! that etcd sends with every response): one write per turn instead of two.
//!
//! Readiness is edge-triggered: `readable`/`writable` are cached, since no new edge arrives
//! for data already signalled. `writable` is cleared on `WouldBlock`; `readable` also by a
//! read that did not fill the buffer (the socket was drained: later data raises a new edge),
//! unless the peer's end of input was signalled, which is read on to the 0.
//!
//! A socket's life, and what the core hears of it:
//!
//! ```text
//!   connecting ──connected──► [TLS handshaking ──handshake done, ALPN h2──►] established
//!       │                                  │                                   │
//!       └─ handle_connect_failed ◄─────────┘ (refused, certificate, alert)     ├─► handle_connected
//!                                                                              │
//!   established, TLS, the server silent so far ── alert or EOF ──► handle_refused
//!   (a TLS 1.3 server refusing the client certificate answers our first data)
//! ```
//!
//! A TLS socket that is dropped sends close_notify first (best effort: never blocks).
//!
//! Name resolution never blocks the loop (see [`resolve`]): an IP literal is connected to at
//! once; a host name is looked up on a helper thread, which wakes the `Poll` through the
//! reactor's one [`Waker`] (token [`WAKER`]) when its answer is in. Meanwhile the link is
//! connecting as far as the core knows, and the core's connect timeout bounds the lookup too:
//! when the core gives up (a `Close`, or a `Connect` elsewhere), the lookup is forgotten and
//! its late answer discarded. A name that does not resolve fails the endpoint at once.

mod resolve;
mod secure;
#[cfg(test)]
mod tests;

use crate::core::link::LinkCommand;
use crate::core::Core;
use crate::endpoint::{Address, Endpoint};
use bytes::{Buf, Bytes};
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use resolve::Resolver;
pub(crate) use secure::Connector;
use secure::Secure;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
/// The reactor's one [`Waker`]: other threads wake the loop through it (a lookup's answer).
const WAKER: Token = Token(1);
/// The epoll fds of member views' reactors, nested in this one (see [`Reactor::watch`]).
const MEMBERS: Token = Token(2);
const READ_CHUNK: usize = 64 * 1024;
/// Rounds of commands-and-writes per flush: writing can unblock h2, which then writes more.
const MAX_FLUSH_ROUNDS: usize = 8;

/// The socket of the current link.
#[derive(Debug)]
struct Socket {
    io: Io,
    /// TLS between the socket and the pipe, for a TLS endpoint once connected.
    tls: Option<Box<Secure>>,
    endpoint: Endpoint,
    /// Further addresses of the endpoint, tried in turn when a connect fails.
    fallback: Vec<SocketAddr>,
    /// TCP keepalive interval and timeout, if on.
    keepalive: Option<(Duration, Duration)>,
    /// Output taken from the core and not yet written (plaintext, before TLS).
    pending: Bytes,
    /// The socket's own connect finished.
    connected: bool,
    /// The core was told it is connected (after the TLS handshake, with TLS).
    established: bool,
    readable: bool,
    writable: bool,
    /// The peer's FIN or an error was signalled: read on to the 0 / the error.
    read_closed: bool,
    /// Bytes arrived from the server on this plaintext socket (to explain an early close;
    /// the TLS layer keeps its own).
    heard: bool,
}

impl Drop for Socket {
    /// Ends a TLS session politely: close_notify, if the socket takes it now.
    fn drop(&mut self) {
        if let (Some(tls), true) = (self.tls.as_mut(), self.established) {
            tls.close();
            let _ = self.io.write(tls.pending());
        }
    }
}

/// The mio side of a client.
#[derive(Debug)]
pub(crate) struct Reactor {
    poll: Poll,
    events: Events,
    socket: Option<Socket>,
    read_buf: Box<[u8]>,
    /// Makes the TLS side of connections to TLS endpoints.
    connector: Option<Connector>,
    /// Wakes `poll` from another thread (registered under [`WAKER`]; mio allows one per
    /// `Poll`, so every user shares it).
    waker: Arc<Waker>,
    /// Host names looked up off the loop, and the lookup the next connect waits for.
    resolver: Resolver,
}

impl Reactor {
    /// A reactor with no socket yet; `connector` serves the TLS endpoints.
    pub(crate) fn new(connector: Option<Connector>) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Reactor {
            poll,
            events: Events::with_capacity(64),
            socket: None,
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            connector,
            resolver: Resolver::new(waker.clone()),
            waker,
        })
    }

    /// The waker of this reactor's `Poll`: `wake()` from any thread makes the current or next
    /// wait return (and the epoll fd readable, for a foreign loop). Shared, since a `Poll`
    /// takes only one.
    #[cfg_attr(not(test), allow(dead_code))] // for other threads that post work to the loop
    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The epoll fd: readable when the socket has news, or the waker was woken (a lookup
    /// answered).
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Wakes this reactor's `Poll` when `fd` (a member view's own epoll fd) has news: the
    /// client then turns its member views too, and one fd still covers the whole client.
    pub(crate) fn watch(&self, fd: RawFd) -> io::Result<()> {
        let interest = Interest::READABLE;
        self.poll.registry().register(&mut mio::unix::SourceFd(&fd), MEMBERS, interest)
    }

    /// Stops watching `fd` (see [`watch`](Self::watch)).
    pub(crate) fn unwatch(&self, fd: RawFd) {
        let _ = self.poll.registry().deregister(&mut mio::unix::SourceFd(&fd));
    }

    /// How long the caller may sleep before the next turn (see [`Core::poll_timeout`]).
    pub(crate) fn next_timeout(&self, core: &Core, now: Instant) -> Option<Duration> {
        core.poll_timeout().map(|at| at.saturating_duration_since(now))
    }

    /// The input half of a turn: wait up to `timeout` for readiness, read, tell the time.
    /// Follow with [`flush`](Reactor::flush) once the finished calls' callbacks have run.
    pub(crate) fn turn(&mut self, core: &mut Core, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                core.handle_link_error(&format!("poll: {e}"));
            }
        }
        let mut woken = false;
        for ev in self.events.iter() {
            match (ev.token(), self.socket.as_mut()) {
                (SOCKET, Some(s)) => {
                    s.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    s.read_closed |= ev.is_read_closed() || ev.is_error();
                    s.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                }
                (WAKER, _) => woken = true,
                _ => {}
            }
        }
        let now = Instant::now();
        if woken {
            self.resolved(core, now);
        }
        self.finish_connect(core, now);
        self.read(core, now);
        core.handle_timeout(now);
    }

    /// Carries out the core's link commands and writes its output, again while either
    /// produced something (writing can unblock h2, which then writes more).
    pub(crate) fn flush(&mut self, core: &mut Core) {
        for _ in 0..MAX_FLUSH_ROUNDS {
            self.apply_commands(core);
            // Taking output drives the core, which may end the link: its commands are
            // carried out before returning.
            if !self.write(core) && !self.apply_commands(core) {
                return;
            }
        }
        self.apply_commands(core);
    }

    /// Carries out the core's link commands; whether there were any.
    fn apply_commands(&mut self, core: &mut Core) -> bool {
        let mut acted = false;
        while let Some(command) = core.poll_link(Instant::now()) {
            acted = true;
            // Either way the core gave up on the current attempt: a lookup still running is
            // forgotten, and its answer discarded when it comes.
            self.resolver.cancel();
            self.drop_socket();
            if let LinkCommand::Connect { endpoint, keepalive } = command {
                self.start(core, endpoint, keepalive);
            }
        }
        acted
    }

    /// Starts connecting to `endpoint`: at once to a Unix socket or an IP literal; for a host
    /// name, once its lookup on a helper thread answers (see [`resolved`](Self::resolved)).
    fn start(
        &mut self,
        core: &mut Core,
        endpoint: Endpoint,
        keepalive: Option<(Duration, Duration)>,
    ) {
        let Address::Tcp(authority) = &endpoint.address else {
            return self.connect(core, endpoint, keepalive, Vec::new()); // a Unix socket
        };
        if let Some(addr) = resolve::literal(authority.as_str()) {
            return self.connect(core, endpoint, keepalive, vec![addr]);
        }
        if let Err(e) = self.resolver.start(&endpoint, keepalive) {
            let msg = format!("resolve {endpoint}: cannot start a resolver thread: {e}");
            core.handle_connect_failed(&msg, Instant::now());
        }
    }

    /// The loop was woken: if the pending lookup answered, connects to its addresses, or
    /// fails the endpoint (the next one is tried, as after a refused connect).
    fn resolved(&mut self, core: &mut Core, now: Instant) {
        let Some((lookup, answer)) = self.resolver.poll() else { return };
        match answer {
            Ok(mut addrs) => {
                addrs.reverse(); // popped from the back: first address first
                self.connect(core, lookup.endpoint, lookup.keepalive, addrs);
            }
            Err(e) => core.handle_connect_failed(&format!("resolve {}: {e}", lookup.endpoint), now),
        }
    }

    fn drop_socket(&mut self) {
        if let Some(mut s) = self.socket.take() {
            let _ = self.poll.registry().deregister(&mut s.io);
        }
    }

    /// Starts a non-blocking connect: to the Unix socket, or to the next of `addrs` that the
    /// OS accepts; reports the last error when none is left.
    fn connect(
        &mut self,
        core: &mut Core,
        endpoint: Endpoint,
        keepalive: Option<(Duration, Duration)>,
        mut addrs: Vec<SocketAddr>,
    ) {
        let mut last = io::Error::new(ErrorKind::NotFound, "no address");
        loop {
            let started = match &endpoint.address {
                Address::Unix(path) => Io::unix(path),
                Address::Tcp(_) => match addrs.pop() {
                    Some(addr) => Io::tcp(addr),
                    None => break,
                },
            };
            let unix = matches!(endpoint.address, Address::Unix(_));
            let mut io = match started {
                Ok(io) => io,
                Err(e) if unix => {
                    return core
                        .handle_connect_failed(&connect_error(&endpoint, &e), Instant::now())
                }
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut io, SOCKET, interest) {
                last = e;
                if unix {
                    break;
                }
                continue;
            }
            self.socket = Some(Socket {
                io,
                tls: None,
                endpoint,
                fallback: addrs,
                keepalive,
                pending: Bytes::new(),
                connected: false,
                established: false,
                readable: false,
                writable: false,
                read_closed: false,
                heard: false,
            });
            return;
        }
        core.handle_connect_failed(&connect_error(&endpoint, &last), Instant::now());
    }

    /// Completes a pending connect once the socket reports readiness; starts TLS for a TLS
    /// endpoint (the handshake counts against the connect timeout).
    fn finish_connect(&mut self, core: &mut Core, now: Instant) {
        let Some(s) = self.socket.as_mut().filter(|s| !s.connected) else {
            return;
        };
        if !(s.writable || s.readable) {
            return;
        }
        match s.io.connect_result() {
            Ok(false) => {
                // A spurious wake-up: still connecting.
                s.readable = false;
                s.writable = false;
            }
            Err(e) => {
                // Try the endpoint's next address (say 127.0.0.1 after ::1) before giving up.
                let mut s = self.socket.take().expect("checked above");
                let _ = self.poll.registry().deregister(&mut s.io);
                let (endpoint, fallback) = (s.endpoint.clone(), std::mem::take(&mut s.fallback));
                if fallback.is_empty() {
                    core.handle_connect_failed(&connect_error(&endpoint, &e), now);
                } else {
                    self.connect(core, endpoint, s.keepalive, fallback);
                }
            }
            Ok(true) => {
                s.io.tune(s.keepalive);
                s.connected = true;
                if !s.endpoint.tls {
                    s.established = true;
                    return core.handle_connected(now);
                }
                match secure::start(self.connector.as_mut(), &s.endpoint) {
                    Ok(tls) => {
                        s.tls = Some(tls);
                        core.handle_handshaking();
                    }
                    Err(msg) => {
                        self.drop_socket();
                        core.handle_connect_failed(&msg, now);
                    }
                }
            }
        }
    }

    /// A TLS failure, or an end of input during the handshake: a failed connection attempt
    /// (the next endpoint is tried) before the core was told, a refused link while the
    /// TLS server has not spoken yet (nothing on it was processed), a broken link after.
    fn fail(&mut self, core: &mut Core, reason: &str, now: Instant) {
        let Some(s) = self.socket.as_mut() else {
            return;
        };
        if s.established {
            s.readable = false;
            return match s.tls.as_ref().is_some_and(|t| !t.heard()) {
                true => core.handle_refused(reason),
                false => core.handle_link_error(reason),
            };
        }
        if let Some(tls) = s.tls.as_mut() {
            // The alert rustls queued tells the server why.
            let _ = s.io.write(tls.pending());
        }
        self.drop_socket();
        core.handle_connect_failed(reason, now);
    }

    /// Reads until `WouldBlock`, EOF or an error, handing every chunk to the core. A read
    /// that does not fill the buffer drained the socket: the registration is edge-triggered,
    /// so data arriving later raises a new event, and the read that would only say
    /// `WouldBlock` (one syscall per response) is skipped.
    fn read(&mut self, core: &mut Core, now: Instant) {
        loop {
            let Some(s) = self.socket.as_mut().filter(|s| s.connected && s.readable) else {
                return;
            };
            match s.io.read(&mut self.read_buf) {
                Ok(0) => {
                    s.readable = false;
                    let msg = end_of_input(s);
                    match msg {
                        None => core.handle_eof(),
                        Some(msg) => self.fail(core, &msg, now),
                    }
                }
                Ok(n) => {
                    s.readable = n == self.read_buf.len() || s.read_closed;
                    let Some(tls) = s.tls.as_mut() else {
                        s.heard = true;
                        core.handle_input(&self.read_buf[..n]);
                        continue;
                    };
                    let result = tls.receive(&self.read_buf[..n], &mut |p| core.handle_input(p));
                    let ready = result.and_then(|closed| Ok((closed, tls.ready()?)));
                    let closed = match ready {
                        Err(msg) => {
                            self.fail(core, &msg, now);
                            continue;
                        }
                        Ok((closed, true)) => {
                            // Told first: the pipe that takes the plaintext exists from now on.
                            s.established = true;
                            core.handle_connected(now);
                            core.handle_input(&tls.take_early());
                            closed
                        }
                        Ok((closed, false)) => closed,
                    };
                    if closed {
                        // close_notify: the end of input, as TLS says it.
                        s.readable = false;
                        match end_of_input(s) {
                            None => core.handle_eof(),
                            Some(msg) => self.fail(core, &msg, now),
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = explain(s, &format!("read: {e}"));
                    self.fail(core, &msg, now);
                }
            }
        }
    }

    /// Writes the core's output until it has no more or the socket would block; through
    /// TLS, what TLS has to send (the handshake too) goes first. Whether output was taken
    /// from the core.
    fn write(&mut self, core: &mut Core) -> bool {
        let Some(s) = self.socket.as_mut().filter(|s| s.connected) else {
            return false;
        };
        let mut took = false;
        let result = loop {
            if let Some(tls) = s.tls.as_mut() {
                match flush_tls(&mut s.io, tls, &mut s.writable) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            if !s.established {
                break Ok(()); // the TLS handshake's records only, until it is done
            }
            if s.pending.is_empty() {
                if s.tls.is_none() && !s.writable {
                    break Ok(()); // taken only when it can be written: h2 feels the back-pressure
                }
                match core.poll_transmit() {
                    Some(out) => {
                        s.pending = out;
                        took = true;
                    }
                    None => break Ok(()),
                }
            }
            if let Some(tls) = s.tls.as_mut() {
                // TLS takes what fits in its buffer; the rest waits for the records to leave.
                let n = tls.send(&s.pending);
                s.pending.advance(n);
                core.handle_written(n);
                if n == 0 && (tls.pending().is_empty() || !s.writable) {
                    break Ok(()); // nothing to flush to make room, or the socket is full
                }
                continue;
            }
            if !s.writable {
                break Ok(());
            }
            match s.io.write(&s.pending) {
                Ok(n) => {
                    s.pending.advance(n);
                    core.handle_written(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let msg = explain(s, &format!("write: {e}"));
            self.fail(core, &msg, Instant::now());
        }
        took
    }
}

/// Writes TLS's ciphertext until none is left (true) or the socket would block (false).
fn flush_tls(io: &mut Io, tls: &mut Secure, writable: &mut bool) -> io::Result<bool> {
    loop {
        let out = tls.pending();
        if out.is_empty() {
            return Ok(true);
        }
        if !*writable {
            return Ok(false);
        }
        match io.write(out) {
            Ok(n) => tls.advance(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => *writable = false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What the end of input on `s` means: `None` for a plain end of the link, or the
/// explanation of a connection that ended before it was of any use.
fn end_of_input(s: &Socket) -> Option<String> {
    let early = s.tls.as_ref().map_or(s.established && !s.heard, |t| !t.heard());
    early.then(|| explain(s, "the server closed the connection"))
}

/// `what` went wrong on `s`, in words a user can act on: before the server said anything, a
/// scheme mix-up is the likely cause (etcd closes or resets a TLS port on a preface that is
/// not TLS, and a plaintext port on a ClientHello), and the message says which to use.
fn explain(s: &Socket, what: &str) -> String {
    match &s.tls {
        Some(tls) if !tls.heard() => format!(
            "TLS handshake with {} failed: {what} (a plaintext port? then use http://)",
            s.endpoint
        ),
        None if s.established && !s.heard => format!(
            "{what} before it sent anything (does {} serve TLS? then use https://)",
            s.endpoint
        ),
        _ => what.to_string(),
    }
}

fn connect_error(endpoint: &Endpoint, e: &io::Error) -> String {
    format!("connect to {endpoint}: {e}")
}

// ===== the socket: TCP or a Unix-domain socket, both non-blocking, behind one type =====

/// A connecting or connected socket.
#[derive(Debug)]
pub(crate) enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Io {
    /// Starts a non-blocking TCP connect.
    pub(crate) fn tcp(addr: SocketAddr) -> io::Result<Io> {
        TcpStream::connect(addr).map(Io::Tcp)
    }

    /// Starts a non-blocking connect to a Unix-domain socket.
    pub(crate) fn unix(path: &Path) -> io::Result<Io> {
        UnixStream::connect(path).map(Io::Unix)
    }

    /// The connect's outcome once readiness was signalled: `Ok(true)` connected,
    /// `Ok(false)` still connecting (a spurious wake-up), `Err` failed.
    pub(crate) fn connect_result(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Io::Tcp(s) => (s.take_error(), s.peer_addr().map(|_| ())),
            Io::Unix(s) => (s.take_error(), s.peer_addr().map(|_| ())),
        };
        match error {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match peer {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// TCP_NODELAY (without it, Nagle and delayed ACKs turn 100 µs calls into 40 ms) and
    /// TCP keepalive; nothing for a Unix socket.
    pub(crate) fn tune(&self, keepalive: Option<(Duration, Duration)>) {
        if let Io::Tcp(s) = self {
            let _ = s.set_nodelay(true);
            if let Some((time, timeout)) = keepalive {
                let _ = crate::sockopt::set_tcp_keepalive(s, time, timeout);
            }
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Unix(s) => s.read(buf),
        }
    }
}

/// Only `write`: it is `send` with MSG_NOSIGNAL, where mio's `write_vectored` is `writev`,
/// which raises SIGPIPE on a reset socket and kills a host that did not ignore it.
impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Io {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.register(r, t, i),
            Io::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.reregister(r, t, i),
            Io::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Io::Tcp(s) => s.deregister(r),
            Io::Unix(s) => s.deregister(r),
        }
    }
}
