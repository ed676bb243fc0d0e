//! h2-floor: what the `h2` crate itself costs for etcd calls. The workloads of
//! `shared/peer-bench/WORKLOADS.md` (seq-get, seq-put, pipe-get, pipe-put), with h2 driven
//! directly over a nonblocking TCP socket and none of evetcd's layers, printing the same JSON
//! line with `"client":"h2-floor"`. A measuring stick, not product code.
//!
//! ```text
//! cargo bench --bench h2_floor -- [ENDPOINT] [WORKLOAD|all] [options]
//!   ENDPOINT            host:port (default 127.0.0.1:2379); plain HTTP/2 only
//!   WORKLOAD            seq-get seq-put pipe-get pipe-put, or all
//!   --default-settings  h2's default SETTINGS instead of the ones evetcd uses
//!   --coalesce-writes   buffer h2's writes, write them once before blocking (see below)
//!   --in-flight N       calls outstanding in the pipe-* workloads (100)
//!   --duration S        seconds of each pipe-* workload (5)
//! ```
//!
//! The cheapest honest use of h2:
//! - `h2::client::handshake` over a `std::net::TcpStream` (nonblocking, TCP_NODELAY) behind
//!   tokio's `AsyncRead`/`AsyncWrite` traits (`Pending` on `WouldBlock`); no tokio runtime.
//! - A hand-written executor: the connection has a flag-setting waker, every call slot its own;
//!   one pass polls the connection, then only the slots whose waker fired. When a pass leaves
//!   no waker fired, the thread blocks in poll(2) on the socket (readable, and writable when h2
//!   had a write refused). Readiness is tracked as tokio does: after a `WouldBlock`, h2's next
//!   read (write) returns `Pending` without a syscall until poll(2) reports the socket ready.
//! - h2 writes at the end of every connection poll, so an ACK it owes (etcd's gRPC server
//!   PINGs with most responses) goes out in a write of its own. `--coalesce-writes` buffers
//!   h2's writes and writes them once, when the executor is about to block: fewer syscalls, at
//!   the cost of a copy; off by default, so that the default measures h2 as it writes.
//! - The request heads (`Request<()>`, one per method) are built once, with a `'static` URI,
//!   and cloned per call: a clone copies the two-entry `HeaderMap` (two small allocations) and
//!   nothing else, cheaper than `Request::builder()` per call. h2 still HPACK-encodes each head.
//! - `SendRequest::poll_ready` before each `send_request` (h2 asks for it); the body (5-byte
//!   gRPC prefix + prost-encoded request) goes with `send_data(body, true)`.
//! - Responses: prost decodes the DATA (zero-copy from h2's `Bytes` when the message is one
//!   chunk), each chunk's capacity is released at once, grpc-status must be "0" in the trailers.
//!
//! stdout: one JSON line per workload. stderr: the h2 settings, the check, and per workload
//! the syscalls per call and p50 / p90 / p99 / p99.9. Errors: stderr and exit status 1.

use bytes::{BufMut, Bytes, BytesMut};
use evetcd::pb::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::RecvStream;
use http::{HeaderMap, Request};
use prost::Message;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// evetcd's h2 settings (src/h2io/mod.rs): the per-stream and connection receive windows, no
/// push; max frame size and header table size stay at h2's defaults there too.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

fn fatal(msg: impl std::fmt::Display) -> ! {
    eprintln!("h2-floor: {msg}");
    std::process::exit(1)
}

// ===== the socket =====

/// Above this many bytes, `--coalesce-writes` writes its buffer out before taking more.
const COALESCE_MAX: usize = 256 << 10;

/// The nonblocking socket, its readiness as the last syscalls left it (as tokio and mio track
/// it: a `WouldBlock` clears it, poll(2) sets it), and syscall counts.
struct Io {
    s: TcpStream,
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// `--coalesce-writes`: h2's writes go to `out`, written when the executor is about to block.
    coalesce: bool,
    out: RefCell<Vec<u8>>,
    reads: Cell<u64>,
    writes: Cell<u64>,
    polls: Cell<u64>,
}

impl Io {
    fn new(s: TcpStream, coalesce: bool) -> Io {
        Io {
            s,
            readable: Cell::new(true),
            writable: Cell::new(true),
            coalesce,
            out: RefCell::new(Vec::new()),
            reads: Cell::new(0),
            writes: Cell::new(0),
            polls: Cell::new(0),
        }
    }

    /// One write(2): `None` on `WouldBlock` (and the socket is marked not writable).
    fn write(&self, buf: &[u8]) -> Option<io::Result<usize>> {
        if !self.writable.get() {
            return None;
        }
        loop {
            self.writes.set(self.writes.get() + 1);
            match (&self.s).write(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.writable.set(false);
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return Some(r),
            }
        }
    }

    /// Writes out what `--coalesce-writes` buffered, as far as the socket takes it.
    fn flush_out(&self) -> io::Result<()> {
        let mut out = self.out.borrow_mut();
        let mut at = 0;
        while at < out.len() {
            match self.write(&out[at..]) {
                Some(Ok(0)) => return Err(ErrorKind::WriteZero.into()),
                Some(Ok(n)) => at += n,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        out.drain(..at);
        Ok(())
    }

    /// Nothing to do until the socket is readable (or writable, when a write was refused):
    /// writes out the coalesced bytes, then blocks in poll(2).
    fn wait(&self) {
        if self.coalesce {
            self.flush_out().unwrap_or_else(|e| fatal(format!("write: {e}")));
        }
        let want_write = !self.writable.get();
        let events = libc::POLLIN | if want_write { libc::POLLOUT } else { 0 };
        let mut p = libc::pollfd { fd: self.s.as_raw_fd(), events, revents: 0 };
        self.polls.set(self.polls.get() + 1);
        // SAFETY: one valid pollfd.
        while unsafe { libc::poll(&mut p, 1, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                fatal(format!("poll: {e}"));
            }
        }
        let broken = p.revents & (libc::POLLERR | libc::POLLHUP) != 0;
        if broken || p.revents & libc::POLLIN != 0 {
            self.readable.set(true);
        }
        if broken || p.revents & libc::POLLOUT != 0 {
            self.writable.set(true);
        }
    }
}

/// What h2 does its IO on.
struct Sock(Rc<Io>);

impl AsyncRead for Sock {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let io = &*self.0;
        if !io.readable.get() {
            return Poll::Pending; // no syscall until poll(2) says readable
        }
        // SAFETY: as tokio's TcpStream does: read(2) only writes into the buffer, and only the
        // `n` bytes it reports are marked initialized. Saves zeroing h2's read buffer each call.
        let dst =
            unsafe { &mut *(buf.unfilled_mut() as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        loop {
            io.reads.set(io.reads.get() + 1);
            match (&io.s).read(dst) {
                Ok(n) => {
                    // SAFETY: read(2) initialized these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    io.readable.set(false);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Sock {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let io = &*self.0;
        if io.coalesce {
            if io.out.borrow().len() >= COALESCE_MAX {
                if let Err(e) = io.flush_out() {
                    return Poll::Ready(Err(e));
                }
                if io.out.borrow().len() >= COALESCE_MAX {
                    return Poll::Pending; // the socket is full: poll(2) waits for writable
                }
            }
            io.out.borrow_mut().extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        match io.write(buf) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing buffered here, or (coalescing) written before blocking
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.s.shutdown(std::net::Shutdown::Write))
    }
}

// ===== the executor's wakers =====

/// A waker that raises a flag.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A call slot's waker: its own flag, and the one that says some slot was woken.
struct SlotWake {
    ready: AtomicBool,
    any: Arc<Flag>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Relaxed);
        self.any.0.store(true, Ordering::Relaxed);
    }
}

// ===== calls =====

#[derive(Debug)]
enum Resp {
    Range(RangeResponse),
    Put(PutResponse),
}

enum State {
    Free,
    Head(ResponseFuture),
    Body(RecvStream),
    Trailers(RecvStream),
}

struct Slot {
    state: State,
    put: bool,
    start: Instant,
    wake: Arc<SlotWake>,
    waker: Waker,
    /// The response message when it came in one chunk (the usual case), prefix included.
    msg: Option<Bytes>,
    /// Chunks of a message split across DATA frames.
    acc: BytesMut,
}

impl Slot {
    /// Polls the call as far as it goes: `Some` when it is over.
    fn poll(&mut self) -> Option<Result<Resp, String>> {
        let mut cx = Context::from_waker(&self.waker);
        loop {
            match &mut self.state {
                State::Free => return None,
                State::Head(fut) => match Pin::new(fut).poll(&mut cx) {
                    Poll::Pending => return None,
                    Poll::Ready(Err(e)) => return Some(Err(format!("response: {e}"))),
                    Poll::Ready(Ok(resp)) => {
                        let (parts, body) = resp.into_parts();
                        if parts.status != http::StatusCode::OK {
                            return Some(Err(format!("HTTP status {}", parts.status)));
                        }
                        if body.is_end_stream() {
                            return Some(Err(format!(
                                "trailers-only response: {}",
                                grpc_status(&parts.headers)
                            )));
                        }
                        self.state = State::Body(body);
                    }
                },
                State::Body(body) => match body.poll_data(&mut cx) {
                    Poll::Pending => return None,
                    Poll::Ready(Some(Err(e))) => return Some(Err(format!("data: {e}"))),
                    Poll::Ready(Some(Ok(chunk))) => {
                        if let Err(e) = body.flow_control().release_capacity(chunk.len()) {
                            return Some(Err(format!("release_capacity: {e}")));
                        }
                        if self.msg.is_none() && self.acc.is_empty() {
                            self.msg = Some(chunk);
                        } else {
                            if let Some(m) = self.msg.take() {
                                self.acc.extend_from_slice(&m);
                            }
                            self.acc.extend_from_slice(&chunk);
                        }
                    }
                    Poll::Ready(None) => {
                        let State::Body(body) = std::mem::replace(&mut self.state, State::Free)
                        else {
                            unreachable!()
                        };
                        self.state = State::Trailers(body);
                    }
                },
                State::Trailers(body) => {
                    return match body.poll_trailers(&mut cx) {
                        Poll::Pending => None,
                        Poll::Ready(Err(e)) => Some(Err(format!("trailers: {e}"))),
                        Poll::Ready(Ok(None)) => Some(Err("no trailers".into())),
                        Poll::Ready(Ok(Some(t))) => {
                            if t.get("grpc-status").map(|v| v.as_bytes()) != Some(b"0") {
                                return Some(Err(grpc_status(&t)));
                            }
                            Some(self.decode())
                        }
                    };
                }
            }
        }
    }

    /// The one gRPC message of the response.
    fn decode(&mut self) -> Result<Resp, String> {
        let m = match self.msg.take() {
            Some(m) => m,
            None => std::mem::take(&mut self.acc).freeze(),
        };
        if m.len() < 5 || m[0] != 0 {
            return Err("no uncompressed gRPC message".into());
        }
        let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
        if m.len() != 5 + len {
            return Err(format!("{} bytes of DATA for a {len}-byte message", m.len()));
        }
        let body = m.slice(5..);
        if self.put {
            PutResponse::decode(body).map(Resp::Put).map_err(|e| format!("PutResponse: {e}"))
        } else {
            RangeResponse::decode(body).map(Resp::Range).map_err(|e| format!("RangeResponse: {e}"))
        }
    }
}

fn grpc_status(h: &HeaderMap) -> String {
    let s = |k| {
        h.get(k).map(|v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    format!(
        "grpc-status {:?} grpc-message {:?}",
        s("grpc-status").unwrap_or_default(),
        s("grpc-message").unwrap_or_default()
    )
}

/// A finished call: its slot's start and the result.
struct Done {
    start: Instant,
    resp: Result<Resp, String>,
}

// ===== the client =====

struct Floor {
    send: SendRequest<Bytes>,
    conn: Connection<Sock, Bytes>,
    io: Rc<Io>,
    conn_flag: Arc<Flag>,
    conn_waker: Waker,
    slots_any: Arc<Flag>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    range_head: Request<()>,
    put_head: Request<()>,
    passes: u64,
}

impl Floor {
    fn connect(endpoint: &str, default_settings: bool, coalesce: bool) -> Floor {
        let s = TcpStream::connect(endpoint)
            .unwrap_or_else(|e| fatal(format!("connect {endpoint}: {e}")));
        s.set_nodelay(true).unwrap_or_else(|e| fatal(format!("TCP_NODELAY: {e}")));
        s.set_nonblocking(true).unwrap_or_else(|e| fatal(format!("nonblocking: {e}")));
        let io = Rc::new(Io::new(s, coalesce));
        let mut builder = h2::client::Builder::new();
        if default_settings {
            eprintln!("h2-floor: h2 settings: h2's defaults (initial_window_size 65535, connection window 65535, max_frame_size 16384, header_table_size 4096, enable_push not sent)");
        } else {
            builder
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .enable_push(false);
            eprintln!("h2-floor: h2 settings: evetcd's (initial_window_size {STREAM_WINDOW}, connection window {CONNECTION_WINDOW}, max_frame_size 16384 (default), header_table_size 4096 (default), enable_push false)");
        }
        let conn_flag = Arc::new(Flag::default());
        let conn_waker = Waker::from(conn_flag.clone());
        let mut cx = Context::from_waker(&conn_waker);
        let mut hs = Box::pin(builder.handshake::<_, Bytes>(Sock(io.clone())));
        let (send, conn) = loop {
            match hs.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(x)) => break x,
                Poll::Ready(Err(e)) => fatal(format!("handshake: {e}")),
                Poll::Pending => io.wait(),
            }
        };
        // 'static URIs: cloning the heads copies no URI bytes.
        let head = |method: &str| {
            let uri: &'static str =
                Box::leak(format!("http://{endpoint}/etcdserverpb.KV/{method}").into_boxed_str());
            Request::builder()
                .method(http::Method::POST)
                .uri(http::Uri::from_static(uri))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers")
                .body(())
                .unwrap_or_else(|e| fatal(format!("request head: {e}")))
        };
        Floor {
            send,
            conn,
            io,
            conn_flag,
            conn_waker,
            slots_any: Arc::new(Flag::default()),
            slots: Vec::new(),
            free: Vec::new(),
            range_head: head("Range"),
            put_head: head("Put"),
            passes: 0,
        }
    }

    /// Whether h2 lets a new stream open now (`false`: the connection's waker fires when it does).
    fn ready(&mut self) -> bool {
        let mut cx = Context::from_waker(&self.conn_waker);
        match self.send.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => fatal(format!("poll_ready: {e}")),
            Poll::Pending => false,
        }
    }

    /// Starts one call (after [`ready`](Self::ready) said yes).
    fn issue(&mut self, put: bool, key: &Bytes, value: &Bytes) {
        let body = if put {
            grpc_body(&PutRequest { key: key.clone(), value: value.clone(), ..Default::default() })
        } else {
            grpc_body(&RangeRequest { key: key.clone(), serializable: true, ..Default::default() })
        };
        let head = if put { self.put_head.clone() } else { self.range_head.clone() };
        let start = Instant::now();
        let (response, mut stream) = self
            .send
            .send_request(head, false)
            .unwrap_or_else(|e| fatal(format!("send_request: {e}")));
        stream.send_data(body, true).unwrap_or_else(|e| fatal(format!("send_data: {e}")));
        let i = self.free.pop().unwrap_or_else(|| {
            let wake =
                Arc::new(SlotWake { ready: AtomicBool::new(false), any: self.slots_any.clone() });
            self.slots.push(Slot {
                state: State::Free,
                put: false,
                start,
                waker: Waker::from(wake.clone()),
                wake,
                msg: None,
                acc: BytesMut::new(),
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[i];
        slot.state = State::Head(response);
        slot.put = put;
        slot.start = start;
        // Polled once in the next pass, to register its waker.
        slot.waker.wake_by_ref();
    }

    /// One pass: drives the connection, then the woken calls; finished ones go to `done`.
    /// Blocks in poll(2) when the pass finished nothing and no waker fired.
    fn turn(&mut self, done: &mut Vec<Done>) {
        self.passes += 1;
        self.conn_flag.0.store(false, Ordering::Relaxed);
        let mut cx = Context::from_waker(&self.conn_waker);
        match Pin::new(&mut self.conn).poll(&mut cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => fatal("connection closed"),
            Poll::Ready(Err(e)) => fatal(format!("connection: {e}")),
        }
        if self.slots_any.0.swap(false, Ordering::Relaxed) {
            for (i, slot) in self.slots.iter_mut().enumerate() {
                if !slot.wake.ready.swap(false, Ordering::Relaxed) {
                    continue;
                }
                if let Some(resp) = slot.poll() {
                    slot.state = State::Free;
                    done.push(Done { start: slot.start, resp });
                    self.free.push(i);
                }
            }
        }
        if done.is_empty()
            && !self.conn_flag.0.load(Ordering::Relaxed)
            && !self.slots_any.0.load(Ordering::Relaxed)
        {
            self.io.wait();
        }
    }

    /// One call, start to end.
    fn call(&mut self, put: bool, key: &Bytes, value: &Bytes) -> Resp {
        let mut done = Vec::with_capacity(1);
        while !self.ready() {
            self.turn(&mut done);
        }
        self.issue(put, key, value);
        while done.is_empty() {
            self.turn(&mut done);
        }
        done.pop().map(|d| d.resp).unwrap().unwrap_or_else(|e| fatal(e))
    }
}

/// 5-byte gRPC prefix (uncompressed, length) + the prost-encoded message.
fn grpc_body<M: Message>(m: &M) -> Bytes {
    let len = m.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    m.encode(&mut b).unwrap_or_else(|e| fatal(format!("encode: {e}")));
    b.freeze()
}

// ===== workloads =====

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The per-call check: one kv with the value's size for a Range; a revision for a Put.
fn check(resp: Result<Resp, String>, put: bool, value_len: usize) {
    match resp {
        Ok(Resp::Range(r)) if !put && r.kvs.len() == 1 && r.kvs[0].value.len() == value_len => {}
        Ok(Resp::Put(r)) if put && r.header.is_some_and(|h| h.revision > 0) => {}
        Ok(other) => fatal(format!("unexpected response {other:?}")),
        Err(e) => fatal(e),
    }
}

/// Runs calls with `in_flight` outstanding until `count` were issued or `duration` passed;
/// the latency of each, and the calls issued.
fn drive(
    f: &mut Floor,
    put: bool,
    in_flight: usize,
    count: usize,
    duration: Duration,
    keys: &[Bytes],
    value: &Bytes,
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(count.min(1 << 21));
    let mut done = Vec::with_capacity(in_flight);
    let deadline = Instant::now().checked_add(duration);
    let (mut issued, mut active, mut owed) = (0usize, 0usize, in_flight.min(count));
    loop {
        while owed > 0 && f.ready() {
            let key = if put { &keys[issued % keys.len()] } else { &keys[0] };
            f.issue(put, key, value);
            issued += 1;
            active += 1;
            owed -= 1;
        }
        if active == 0 && owed == 0 {
            return lat;
        }
        f.turn(&mut done);
        if done.is_empty() {
            continue;
        }
        let now = Instant::now();
        let more = deadline.is_none_or(|d| now < d);
        for d in done.drain(..) {
            check(d.resp, put, value.len());
            lat.push(now - d.start);
            active -= 1;
            if more && issued + owed < count {
                owed += 1;
            }
        }
    }
}

fn report(
    f: &Floor,
    workload: &str,
    wall: Duration,
    cpu: Duration,
    io0: [u64; 4],
    mut lat: Vec<Duration>,
) {
    let ops = lat.len();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    println!(
        "{{\"client\":\"h2-floor\",\"workload\":\"{workload}\",\"ops\":{ops},\"ops_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"cpu_us_per_op\":{:.2}}}",
        ops as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        cpu.as_secs_f64() * 1e6 / ops.max(1) as f64,
    );
    let io1 = counters(f);
    let per = |k: usize| (io1[k] - io0[k]) as f64 / ops.max(1) as f64;
    eprintln!(
        "# {workload}: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} µs; per call: reads {:.2} writes {:.2} polls {:.2} passes {:.2}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        per(0),
        per(1),
        per(2),
        per(3),
    );
}

fn counters(f: &Floor) -> [u64; 4] {
    [f.io.reads.get(), f.io.writes.get(), f.io.polls.get(), f.passes]
}

/// Correctness before measuring, and the setup: Range returns the value Put wrote (a pattern,
/// then the benchmark's 256-byte value, which stays in `bench/k0`).
fn verify_and_setup(f: &mut Floor, key: &Bytes, value: &Bytes) {
    let pattern: Bytes = (0..value.len()).map(|i| b'a' + (i % 26) as u8).collect();
    let mut last = 0;
    for v in [&pattern, value] {
        let rev = match f.call(true, key, v) {
            Resp::Put(r) => r.header.map_or(0, |h| h.revision),
            other => fatal(format!("verify: Put answered {other:?}")),
        };
        let got = match f.call(false, key, &Bytes::new()) {
            Resp::Range(r) => r,
            other => fatal(format!("verify: Range answered {other:?}")),
        };
        match got.kvs.as_slice() {
            [kv] if kv.key == *key && kv.value == *v && kv.mod_revision == rev && rev > last => {}
            _ => fatal(format!("verify: Put (revision {rev}), then Range returned {got:?}")),
        }
        last = rev;
    }
    eprintln!("h2-floor: verify ok: Range returned the {}-byte value each Put wrote", value.len());
}

struct Options {
    endpoint: String,
    workload: String,
    default_settings: bool,
    coalesce_writes: bool,
    in_flight: usize,
    duration: Duration,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        endpoint: "127.0.0.1:2379".into(),
        workload: "all".into(),
        default_settings: false,
        coalesce_writes: false,
        in_flight: 100,
        duration: Duration::from_secs(5),
    };
    let mut positional = 0;
    let mut args = args.filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        if !arg.starts_with("--") {
            match positional {
                0 => o.endpoint = arg.trim_start_matches("http://").to_string(),
                1 => o.workload = arg,
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
            positional += 1;
            continue;
        }
        if arg == "--default-settings" || arg == "--coalesce-writes" {
            o.default_settings |= arg == "--default-settings";
            o.coalesce_writes |= arg == "--coalesce-writes";
            continue;
        }
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|_| format!("{arg}: not a number"));
        match arg.as_str() {
            "--in-flight" => o.in_flight = number()?.max(1),
            "--duration" => o.duration = Duration::from_secs(number()? as u64),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    let known = ["all", "seq-get", "seq-put", "pipe-get", "pipe-put"];
    if !known.contains(&o.workload.as_str()) {
        return Err(format!("unknown workload {:?}; one of {known:?}", o.workload));
    }
    Ok(o)
}

fn main() {
    // As benches/workloads.rs does (see its `quiet_tracing`): the dev-dependencies turn on
    // `tracing`'s `log` feature, which a user of h2 without it never pays; both floors and
    // evetcd are measured the same way.
    let _ = tracing::dispatcher::set_global_default(tracing::Dispatch::none());
    let o = parse(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("{e}\nusage: h2_floor [ENDPOINT] [WORKLOAD|all] [--default-settings] [--coalesce-writes] [--in-flight N] [--duration S]");
        std::process::exit(2);
    });
    let keys: Vec<Bytes> = (0..1000).map(|i| Bytes::from(format!("bench/k{i}"))).collect();
    let value = Bytes::from(vec![b'x'; 256]);
    let mut f = Floor::connect(&o.endpoint, o.default_settings, o.coalesce_writes);
    verify_and_setup(&mut f, &keys[0], &value);
    for w in ["seq-get", "seq-put", "pipe-get", "pipe-put"] {
        if o.workload != "all" && o.workload != w {
            continue;
        }
        let put = w.ends_with("put");
        let (in_flight, count, duration) = match (w.starts_with("seq"), put) {
            (true, false) => (1, 20_000, Duration::MAX),
            (true, true) => (1, 5_000, Duration::MAX),
            (false, _) => (o.in_flight, usize::MAX, o.duration),
        };
        let io0 = counters(&f);
        let (t0, cpu0) = (Instant::now(), cpu_time());
        let lat = drive(&mut f, put, in_flight, count, duration, &keys, &value);
        let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
        report(&f, w, wall, cpu, io0, lat);
    }
}
