//! A fake etcd for what a real one will not do on demand: answer a call with broken HTTP/2
//! framing, a DATA frame cut short, a gRPC message above the client's limit, bytes that do
//! not decode as the response, or a trailers-only error.
//!
//! HTTP/2 is spoken by hand (no h2 server: that needs a runtime): the server reads the client
//! preface, sends an empty SETTINGS, acknowledges the client's SETTINGS and PINGs, and answers
//! the first request of each connection as its [`Hostile`] mode says, once the request's whole
//! gRPC message is in (so the call was provably sent). Response headers are HPACK literals
//! without indexing, so no table state is kept; the client's request headers are not decoded.
//! After the answer the server sends GOAWAY (NO_ERROR, the answered stream as the last), so
//! that any later call the client opened on this connection is re-sent elsewhere, and keeps
//! reading until the client closes. Blocking std IO on plain threads, on loopback, on a free
//! port; every read is bounded so no thread outlives a test by long.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest a connection waits for the client before giving up on it.
const READ_LIMIT: Duration = Duration::from_secs(30);
/// Largest frame the server accepts (the default SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;

// Frame types and flags (RFC 9113, section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;

/// How the server answers the first call of each connection.
#[derive(Clone, Debug)]
pub enum Hostile {
    /// Bytes that are not HTTP/2 frames (an HTTP/1.1 error page, as a misconfigured port
    /// answers), after the server's SETTINGS; the connection stays open, so only the framing
    /// can tell the client.
    Garbage,
    /// Response headers, then a DATA frame whose header announces 64 bytes of which 10 are
    /// sent, then EOF.
    TruncatedFrame,
    /// Response headers, then one DATA frame with a gRPC prefix announcing `announced` bytes
    /// and 16 bytes of that message, never the rest; the stream stays open until the client
    /// resets it.
    Oversized { announced: u32 },
    /// A well-framed response (headers, one message, `grpc-status: 0`) whose message is
    /// `message`: bytes that do not decode as the response the client expects.
    Undecodable { message: Vec<u8> },
    /// The same, with a message that does decode: a lagging member's well-formed answer
    /// (say a Range response at an old revision; tests/ordering.rs).
    #[allow(dead_code)] // each test binary uses some of the modes
    Answer { message: Vec<u8> },
    /// One HEADERS frame with END_STREAM and no DATA: `:status`, `content-type:
    /// application/grpc`, then `headers` (`grpc-status` and `grpc-message`, or none).
    TrailersOnly { status: u16, headers: Vec<(&'static str, String)> },
}

/// What the server saw, over every connection.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Connections accepted.
    pub connections: usize,
    /// Requests (HEADERS frames opening a stream), as (connection, stream id), in order.
    pub requests: Vec<(usize, u32)>,
    /// Requests answered as the mode says, as (connection, stream id).
    pub answered: Vec<(usize, u32)>,
    /// RST_STREAM frames from the client, as (connection, stream id, error code).
    pub resets: Vec<(usize, u32, u32)>,
    /// Connections the client closed (EOF or a reset).
    pub closed: usize,
    /// What the client did wrong (a bad preface, a frame that does not parse).
    pub protocol_errors: Vec<String>,
}

/// A fake server on `127.0.0.1:PORT`. Dropping it closes every connection and joins its
/// threads.
pub struct HostileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    seen: Seen,
    stopping: bool,
    /// A handle on each open connection, to shut it down on drop.
    sockets: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records something seen and wakes [`HostileServer::wait_for`].
    fn record(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.lock().seen);
        self.changed.notify_all();
    }
}

impl HostileServer {
    /// Listens on a free loopback port and answers every connection's first call as `mode`.
    pub fn start(mode: Hostile) -> HostileServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                seen: Seen::default(),
                stopping: false,
                sockets: Vec::new(),
                threads: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("hostile-{}", addr.port()))
                .spawn(move || accept_loop(&shared, &listener, &mode))
                .unwrap_or_else(|e| panic!("spawning the hostile acceptor: {e}"))
        };
        HostileServer { addr, shared, acceptor: Some(acceptor) }
    }

    /// `127.0.0.1:PORT`, for the client under test.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// What the server saw so far.
    pub fn seen(&self) -> Seen {
        self.shared.lock().seen.clone()
    }

    /// Waits (on the server's own events, not a timer) until `done(seen)`; panics after
    /// `limit`, showing what was seen.
    pub fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.lock();
        while !done(&st.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "hostile server: not within {limit:?}: {what}; saw {:?}",
                st.seen
            );
            st = self.shared.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.seen.clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            for s in &st.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let _ = TcpStream::connect(self.addr); // wakes the acceptor
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut self.shared.lock().threads);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, mode: &Hostile) {
    for socket in listener.incoming() {
        let mut st = shared.lock();
        if st.stopping {
            return;
        }
        let Ok(socket) = socket else { continue };
        let Ok(handle) = socket.try_clone() else { continue };
        st.sockets.push(handle);
        st.seen.connections += 1;
        let conn = st.seen.connections;
        let (shared2, mode) = (Arc::clone(shared), mode.clone());
        let thread = thread::Builder::new()
            .name(format!("hostile-conn-{conn}"))
            .spawn(move || {
                let mut c = Conn { socket, shared: shared2, conn, mode, bodies: HashMap::new() };
                if let Err(e) = c.serve() {
                    c.shared.record(|s| s.protocol_errors.push(e));
                }
                c.shared.record(|s| s.closed += 1);
            })
            .unwrap_or_else(|e| panic!("spawning a hostile connection: {e}"));
        st.threads.push(thread);
    }
}

/// One connection.
struct Conn {
    socket: TcpStream,
    shared: Arc<Shared>,
    /// Its number (1 for the first accepted).
    conn: usize,
    mode: Hostile,
    /// Request bytes received per stream, until the stream is answered.
    bodies: HashMap<u32, Vec<u8>>,
}

/// One frame read: type, flags, stream id, payload.
type Frame = (u8, u8, u32, Vec<u8>);

impl Conn {
    /// Serves until the client closes; `Err` for what the client got wrong.
    fn serve(&mut self) -> Result<(), String> {
        self.socket.set_read_timeout(Some(READ_LIMIT)).map_err(|e| e.to_string())?;
        let mut preface = [0u8; PREFACE.len()];
        if !self.read_exact(&mut preface)? {
            return Ok(());
        }
        if preface != PREFACE {
            return Err(format!("bad client preface {preface:?}"));
        }
        self.write(&frame(SETTINGS, 0, 0, &[]));
        // The stream answered, once it is; for `Oversized`, whether GOAWAY went out.
        let mut answered: Option<u32> = None;
        let mut gone_away = false;
        while let Some((kind, flags, stream, payload)) = self.read_frame()? {
            match kind {
                SETTINGS if flags & ACK == 0 => self.write(&frame(SETTINGS, ACK, 0, &[])),
                PING if flags & ACK == 0 => self.write(&frame(PING, ACK, 0, &payload)),
                HEADERS => {
                    let conn = self.conn;
                    self.shared.record(|s| s.requests.push((conn, stream)));
                    if answered.is_none() {
                        self.bodies.insert(stream, Vec::new());
                    }
                }
                DATA => {
                    let Some(body) = self.bodies.get_mut(&stream) else { continue };
                    body.extend_from_slice(data_payload(flags, &payload)?);
                    if whole_grpc_message(body) || flags & END_STREAM != 0 {
                        self.bodies.clear();
                        answered = Some(stream);
                        let conn = self.conn;
                        self.shared.record(|s| s.answered.push((conn, stream)));
                        if self.answer(stream) {
                            gone_away = true;
                        }
                    }
                }
                RST_STREAM => {
                    let code = payload.get(..4).ok_or("short RST_STREAM")?;
                    let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
                    let conn = self.conn;
                    self.shared.record(|s| s.resets.push((conn, stream, code)));
                    if answered == Some(stream) && !gone_away {
                        self.write(&goaway(stream));
                        gone_away = true;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Answers `stream` as the mode says; whether the GOAWAY went out with it (`Oversized`
    /// waits for the client's RST_STREAM first).
    fn answer(&mut self, stream: u32) -> bool {
        let ok = [(":status", "200".to_string()), ("content-type", "application/grpc".into())];
        match self.mode.clone() {
            Hostile::Garbage => {
                self.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                false
            }
            Hostile::TruncatedFrame => {
                self.write(&frame(HEADERS, END_HEADERS, stream, &hpack(&ok)));
                let mut cut = frame(DATA, 0, stream, &[0u8; 64]);
                cut.truncate(9 + 10);
                self.write(&cut);
                let _ = self.socket.shutdown(Shutdown::Write);
                false
            }
            Hostile::Oversized { announced } => {
                self.write(&frame(HEADERS, END_HEADERS, stream, &hpack(&ok)));
                let mut data = vec![0];
                data.extend_from_slice(&announced.to_be_bytes());
                data.extend_from_slice(&[0x0a; 16]);
                self.write(&frame(DATA, 0, stream, &data));
                false
            }
            Hostile::Undecodable { message } | Hostile::Answer { message } => {
                self.write(&frame(HEADERS, END_HEADERS, stream, &hpack(&ok)));
                let mut data = vec![0];
                data.extend_from_slice(&(message.len() as u32).to_be_bytes());
                data.extend_from_slice(&message);
                self.write(&frame(DATA, 0, stream, &data));
                let trailers = [("grpc-status", "0".to_string())];
                self.write(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &hpack(&trailers)));
                self.write(&goaway(stream));
                true
            }
            Hostile::TrailersOnly { status, headers } => {
                let mut all = vec![
                    (":status", status.to_string()),
                    ("content-type", "application/grpc".to_string()),
                ];
                all.extend(headers);
                self.write(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &hpack(&all)));
                self.write(&goaway(stream));
                true
            }
        }
    }

    /// Writes `bytes`; a client that is gone is noticed by the next read.
    fn write(&mut self, bytes: &[u8]) {
        let _ = self.socket.write_all(bytes);
    }

    /// Fills `buf`; `Ok(false)` when the client closed (or reset) first.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, String> {
        match self.socket.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ) =>
            {
                Ok(false)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!("client silent for {READ_LIMIT:?}"))
            }
            // Shut down by the server's drop.
            Err(_) if self.shared.lock().stopping => Ok(false),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The next frame; `None` when the client closed.
    fn read_frame(&mut self) -> Result<Option<Frame>, String> {
        let mut head = [0u8; 9];
        if !self.read_exact(&mut head)? {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes from the client"));
        }
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if !self.read_exact(&mut payload)? {
            return Ok(None);
        }
        Ok(Some((head[3], head[4], stream, payload)))
    }
}

/// A DATA frame's data, without its padding.
fn data_payload(flags: u8, payload: &[u8]) -> Result<&[u8], String> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let pad = *payload.first().ok_or("empty padded DATA")? as usize;
    payload.get(1..payload.len().saturating_sub(pad)).ok_or_else(|| "bad padding".to_string())
}

/// Whether `body` holds a whole gRPC message (the request: the client sends one per call).
fn whole_grpc_message(body: &[u8]) -> bool {
    body.len() >= 5
        && body.len() >= 5 + u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize
}

/// One frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// GOAWAY (NO_ERROR) with `last` as the last stream processed.
fn goaway(last: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

/// A header block of literal fields without indexing and without Huffman coding (RFC 7541,
/// section 6.2.2): no dynamic table on either side.
fn hpack(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_string(&mut out, name.as_bytes());
        hpack_string(&mut out, value.as_bytes());
    }
    out
}

/// A string literal: its length as a 7-bit-prefix integer (section 5.1), then its bytes.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}
