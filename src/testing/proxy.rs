//! A TCP proxy between a client and a server, to inject the network faults a real etcd
//! cannot produce on demand: silence, latency, refused connections and resets.
//!
//! Blocking std IO on plain threads (per connection, a reader and a writer each way plus one
//! owning the pair; the listener is polled with mio), so it runs beside a single-threaded
//! client without sharing its event loop. Every blocking call is bounded by [`TICK`] or woken
//! by the shared condvar, so mode changes, resets and drop take effect promptly and no thread
//! outlives the proxy.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, Scope};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::Error;

/// Longest a blocking read, write or accept goes without re-checking state.
const TICK: Duration = Duration::from_millis(50);
/// Upstream is on loopback: it answers at once unless the host is overloaded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CHUNK: usize = 16 * 1024;
/// Bytes held per direction before the proxy stops reading, so a peer that
/// does not read pushes back on the sender as it would without the proxy.
const MAX_QUEUED: usize = 1 << 20;

/// What the proxy does with traffic; see [`Proxy::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Keep every connection open but forward nothing, new ones included.
    /// The proxy stops reading, so each peer sees a hung server or a
    /// partitioned link: silence, then writes backing up. Nothing is dropped
    /// (that would corrupt HTTP/2 framing), so after `Pass` the streams
    /// resume intact, like a healed partition.
    Blackhole,
    /// Forward, holding each chunk this long after it was read (per
    /// direction, in order), like a slow link.
    Delay(Duration),
    /// Accept new connections and reset them at once (closest to "connection
    /// refused" a listening socket can get). Existing connections keep the
    /// behaviour of the mode before.
    Refuse,
}

/// A proxy on `127.0.0.1:PORT` forwarding to one target address (an etcd member's
/// [`client_addr`](super::Etcd::client_addr), say): point the client under test at its
/// [`endpoint`](Proxy::endpoint) and switch its [`Mode`] to inject faults.
///
/// Dropping it closes the listener and every connection and joins all of its threads.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target` in
    /// [`Mode::Pass`]. The upstream connection is made per client connection,
    /// so `target` need not be up yet.
    pub fn start(target: SocketAddr) -> Result<Proxy, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("local_addr", e))?;
        // Polled (edge-triggered) before accepting until WouldBlock.
        listener.set_nonblocking(true).map_err(|e| Error::io("set_nonblocking", e))?;
        let poll = Poll::new().map_err(|e| Error::io("creating the proxy's poll", e))?;
        poll.registry()
            .register(&mut SourceFd(&listener.as_raw_fd()), Token(0), Interest::READABLE)
            .map_err(|e| Error::io("registering the proxy's listener", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Pass,
                forward: Mode::Pass,
                stopping: false,
                accepted: 0,
                next_id: 0,
                writing: 0,
                conns: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(&shared, &listener, poll, target))
                .map_err(|e| Error::io("spawning the proxy's acceptor", e))?
        };
        Ok(Proxy { addr, shared, acceptor: Some(acceptor) })
    }

    /// The address it listens on, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for the client under test.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Switches mode for existing and new connections (see [`Mode`]).
    ///
    /// Returns once no write started under the old mode is still in
    /// progress, so e.g. after `set_mode(Mode::Blackhole)` not one more byte
    /// reaches either peer.
    pub fn set_mode(&self, mode: Mode) {
        let mut st = self.shared.lock();
        st.mode = mode;
        if mode != Mode::Refuse {
            st.forward = mode;
        }
        self.shared.changed.notify_all();
        while st.writing > 0 {
            st = self.shared.wait(st, None);
        }
    }

    /// Cuts every current connection: the client gets a TCP RST (its next
    /// read fails with `ConnectionReset`), the upstream an orderly close.
    /// Returns once all their sockets are closed, so the RST has been sent.
    pub fn reset_all(&self) {
        let mut st = self.shared.lock();
        let ids: Vec<u64> = st.conns.keys().copied().collect();
        for &id in &ids {
            st.kill(id, Some(Side::Client));
        }
        self.shared.changed.notify_all();
        while ids.iter().any(|id| st.conns.contains_key(id)) {
            st = self.shared.wait(st, None);
        }
    }

    /// Connections accepted so far, refused ones included: how many times a
    /// client connected through the proxy.
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Connections currently open (accepted, not yet fully closed).
    pub fn open(&self) -> usize {
        self.shared.lock().conns.len()
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("mode", &st.mode)
            .field("accepted", &st.accepted)
            .field("open", &st.conns.len())
            .finish()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            let ids: Vec<u64> = st.conns.keys().copied().collect();
            for id in ids {
                st.kill(id, None);
            }
        }
        self.shared.changed.notify_all();
        // Wakes the acceptor now rather than at its next poll timeout.
        let _ = TcpStream::connect_timeout(&self.addr, TICK);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Notified on every state change; all proxy threads wait on it.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a notification, or until `until` if given.
    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match until {
            None => self.changed.wait(guard).unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                let timeout = t.saturating_duration_since(Instant::now());
                self.changed.wait_timeout(guard, timeout).unwrap_or_else(|e| e.into_inner()).0
            }
        }
    }

    fn kill(&self, id: u64, reset: Option<Side>) {
        self.lock().kill(id, reset);
        self.changed.notify_all();
    }
}

struct State {
    /// As last set, for the acceptor.
    mode: Mode,
    /// What connections do: the last mode set other than `Refuse`.
    forward: Mode,
    stopping: bool,
    accepted: usize,
    next_id: u64,
    /// Writes in progress outside the lock; `set_mode` waits for them.
    writing: usize,
    conns: HashMap<u64, Conn>,
}

impl State {
    /// The connection, unless it is being torn down.
    fn live(&mut self, id: u64) -> Option<&mut Conn> {
        if self.stopping {
            return None;
        }
        self.conns.get_mut(&id).filter(|c| !c.killed)
    }

    /// Ends the pair: its threads exit on their next check, and shutting
    /// the sockets down wakes those blocked in a read. `reset` gets a TCP
    /// RST instead of a FIN; it is sent when its last descriptor closes,
    /// so its read side is only shut locally (SHUT_RD sends nothing).
    fn kill(&mut self, id: u64, reset: Option<Side>) {
        let Some(conn) = self.conns.get_mut(&id).filter(|c| !c.killed) else { return };
        conn.killed = true;
        let sockets =
            [(Side::Client, Some(&conn.client)), (Side::Upstream, conn.upstream.as_ref())];
        for (side, socket) in sockets {
            let Some(socket) = socket else { continue };
            if reset == Some(side) {
                let _ = set_linger_zero(socket);
                let _ = socket.shutdown(Shutdown::Read);
            } else {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// Index into [`Conn::queues`].
const UP: usize = 0;
const DOWN: usize = 1;

/// One proxied connection, in the table for `open()`, resets and drop.
struct Conn {
    /// Clones of the sockets, the last to be closed (see `serve`).
    client: TcpStream,
    upstream: Option<TcpStream>,
    killed: bool,
    /// Chunks read but not yet written: client to upstream, and back.
    queues: [Queue; 2],
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
}

enum Item {
    Data {
        due: Instant,
        bytes: Vec<u8>,
    },
    /// The source sent FIN; forwarded as a write shutdown.
    Eof,
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, mut poll: Poll, target: SocketAddr) {
    let mut serving: Vec<JoinHandle<()>> = Vec::new();
    let mut events = Events::with_capacity(4);
    'outer: while !shared.lock().stopping {
        serving.retain(|h| !h.is_finished());
        // Readiness is only a hint to stop waiting: every turn accepts until WouldBlock, so
        // a connection left over by a failed accept is taken a tick later.
        if poll.poll(&mut events, Some(TICK)).is_err() {
            thread::sleep(TICK);
        }
        loop {
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // E.g. out of descriptors: back off instead of spinning.
                Err(_) => {
                    thread::sleep(TICK);
                    break;
                }
            };
            if !admit(shared, client, target, &mut serving) {
                break 'outer;
            }
        }
    }
    for handle in serving {
        let _ = handle.join();
    }
}

/// Takes one accepted connection: refused (reset) in [`Mode::Refuse`], else served on a
/// thread of its own. False once the proxy is stopping.
fn admit(
    shared: &Arc<Shared>,
    client: TcpStream,
    target: SocketAddr,
    serving: &mut Vec<JoinHandle<()>>,
) -> bool {
    let mut st = shared.lock();
    if st.stopping {
        return false;
    }
    st.accepted += 1;
    if st.mode == Mode::Refuse {
        drop(st);
        let _ = set_linger_zero(&client);
        return true;
    }
    let (Ok(()), Ok(entry)) = (client.set_nonblocking(false), client.try_clone()) else {
        let _ = set_linger_zero(&client);
        return true;
    };
    let id = st.next_id;
    st.next_id += 1;
    st.conns.insert(
        id,
        Conn { client: entry, upstream: None, killed: false, queues: Default::default() },
    );
    drop(st);
    let conn_shared = Arc::clone(shared);
    match thread::Builder::new()
        .name(format!("proxy-conn-{id}"))
        .spawn(move || serve(&conn_shared, id, client, target))
    {
        Ok(handle) => serving.push(handle),
        Err(_) => {
            if let Some(conn) = shared.lock().conns.remove(&id) {
                let _ = set_linger_zero(&conn.client);
            }
            shared.changed.notify_all();
        }
    }
    true
}

/// Runs one connection to its end, then removes it from the table.
fn serve(shared: &Shared, id: u64, client: TcpStream, target: SocketAddr) {
    pump(shared, id, client, target);
    // Every socket of ours is closed by now, so dropping the table's clones
    // closes the connection (sending any pending RST) before anyone waiting
    // in `reset_all` sees it gone.
    let conn = shared.lock().conns.remove(&id);
    drop(conn);
    shared.changed.notify_all();
}

fn pump(shared: &Shared, id: u64, client: TcpStream, target: SocketAddr) {
    // Connect only once something may pass, so a connection accepted while
    // blackholed stays silent even if the upstream is down.
    {
        let mut st = shared.lock();
        loop {
            if st.live(id).is_none() {
                return;
            }
            if st.forward != Mode::Blackhole {
                break;
            }
            st = shared.wait(st, None);
        }
    }
    let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        // The client sees a reset, the nearest thing to the refusal.
        let _ = set_linger_zero(&client);
        return;
    };
    let setup = || -> io::Result<(TcpStream, TcpStream, TcpStream)> {
        for s in [&client, &upstream] {
            s.set_read_timeout(Some(TICK))?;
            s.set_write_timeout(Some(TICK))?;
            s.set_nodelay(true)?;
        }
        Ok((client.try_clone()?, upstream.try_clone()?, upstream.try_clone()?))
    };
    let Ok((client2, upstream2, entry)) = setup() else {
        let _ = set_linger_zero(&client);
        return;
    };
    match shared.lock().live(id) {
        Some(conn) => conn.upstream = Some(entry),
        None => return,
    }
    thread::scope(|s| {
        // Each direction has a reader and a writer, so a chunk's delay runs
        // from when it arrived, not from when the one before it was written.
        let _ = spawn_pipe(s, shared, id, move || read_side(shared, id, UP, client))
            && spawn_pipe(s, shared, id, move || write_side(shared, id, UP, upstream))
            && spawn_pipe(s, shared, id, move || read_side(shared, id, DOWN, upstream2))
            && spawn_pipe(s, shared, id, move || write_side(shared, id, DOWN, client2));
    });
}

/// Spawns one of a connection's pipe threads; if that fails, ends the pair
/// so the ones already running exit and the scope can join them.
fn spawn_pipe<'scope>(
    s: &'scope Scope<'scope, '_>,
    shared: &Shared,
    id: u64,
    f: impl FnOnce() + Send + 'scope,
) -> bool {
    let spawned = thread::Builder::new().name(format!("proxy-pipe-{id}")).spawn_scoped(s, f);
    if spawned.is_err() {
        shared.kill(id, None);
    }
    spawned.is_ok()
}

/// Where direction `dir` is read from (`read_side`).
fn src_side(dir: usize) -> Side {
    if dir == UP {
        Side::Client
    } else {
        Side::Upstream
    }
}

/// Where direction `dir` is written to (`write_side`).
fn dst_side(dir: usize) -> Side {
    if dir == UP {
        Side::Upstream
    } else {
        Side::Client
    }
}

/// Reads from the source of `dir` into its queue until EOF or an error.
fn read_side(shared: &Shared, id: u64, dir: usize, mut src: TcpStream) {
    let mut buf = vec![0; CHUNK];
    loop {
        {
            let mut st = shared.lock();
            loop {
                let forward = st.forward;
                let Some(conn) = st.live(id) else { return };
                // Not reading is what silences a blackholed connection.
                if forward != Mode::Blackhole && conn.queues[dir].bytes < MAX_QUEUED {
                    break;
                }
                st = shared.wait(st, None);
            }
        }
        let item = match src.read(&mut buf) {
            Ok(0) => Item::Eof,
            Ok(n) => Item::Data { due: Instant::now(), bytes: buf[..n].to_vec() },
            Err(e) if is_timeout(&e) => continue,
            Err(_) => {
                // Pass the breakage on as a reset of the other side.
                shared.kill(id, Some(dst_side(dir)));
                return;
            }
        };
        let mut st = shared.lock();
        let delay = match st.forward {
            Mode::Delay(d) => d,
            _ => Duration::ZERO,
        };
        let Some(conn) = st.live(id) else { return };
        let queue = &mut conn.queues[dir];
        let eof = match item {
            Item::Data { due, bytes } => {
                queue.bytes += bytes.len();
                queue.items.push_back(Item::Data { due: due + delay, bytes });
                false
            }
            Item::Eof => {
                queue.items.push_back(Item::Eof);
                true
            }
        };
        drop(st);
        shared.changed.notify_all();
        if eof {
            return;
        }
    }
}

/// Writes the queue of `dir` to its destination, in order and when due,
/// until the source's EOF has been passed on or the pair ends.
fn write_side(shared: &Shared, id: u64, dir: usize, mut dst: TcpStream) {
    let mut st = shared.lock();
    loop {
        let forward = st.forward;
        let Some(conn) = st.live(id) else { return };
        let queue = &mut conn.queues[dir];
        let next = match queue.items.front() {
            _ if forward == Mode::Blackhole => None,
            None => None,
            Some(Item::Eof) => Some(None),
            Some(Item::Data { due, .. }) => Some(Some(*due)),
        };
        let due = match next {
            None => {
                st = shared.wait(st, None);
                continue;
            }
            Some(None) => {
                drop(st);
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Some(Some(due)) if due > Instant::now() => {
                st = shared.wait(st, Some(due));
                continue;
            }
            Some(Some(due)) => due,
        };
        let Some(Item::Data { bytes, .. }) = queue.items.pop_front() else { return };
        queue.bytes -= bytes.len();
        st.writing += 1;
        drop(st);
        let result = dst.write(&bytes);
        st = shared.lock();
        st.writing -= 1;
        let written = match result {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => 0,
            Err(_) => {
                // Pass the breakage on as a reset of the source.
                st.kill(id, Some(src_side(dir)));
                drop(st);
                shared.changed.notify_all();
                return;
            }
        };
        shared.changed.notify_all();
        if written < bytes.len() {
            let Some(conn) = st.live(id) else { return };
            let queue = &mut conn.queues[dir];
            let rest = bytes[written..].to_vec();
            queue.bytes += rest.len();
            queue.items.push_front(Item::Data { due, bytes: rest });
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

/// Makes the socket's final close send RST instead of FIN (SO_LINGER with a zero timeout).
fn set_linger_zero(socket: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO))
}
