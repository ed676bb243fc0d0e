//! A virtual-time world that jumps to `poll_timeout` by itself: the [`Core`], a scripted
//! etcd (one in-process h2 [`TestServer`] per link), and a virtual clock.
//!
//! [`World::run_until`] plays the IO layer of the module comment of `core`, turn after turn:
//! it runs the events (as the client does), carries out the link commands (a `Connect` to a
//! reachable endpoint comes up at once, one to a refused endpoint fails at once, one to a
//! hanging endpoint never answers), moves bytes both ways between the core and the server
//! of the link that is up; and when none of that does anything, it jumps the clock to
//! [`Core::poll_timeout`] and calls [`Core::handle_timeout`]. It stops once the predicate
//! holds, and panics when nothing more can happen or the virtual-time limit is reached first
//! (as quinn-proto's `Pair::drive`). What the scripted etcd answers is up to the test,
//! between two `run_until`s.
//!
//! The by-hand helpers ([`connect`](World::connect), [`pump`](World::pump),
//! [`turn`](World::turn), [`hand_over`](World::hand_over), ...) are for the tests that need
//! a precise interleaving.

use crate::core::link::LinkCommand;
use crate::core::{
    CallKey, Completion, Core, CoreConfig, Event, StreamCallback, StreamItem, StreamKey,
};
use crate::core::{Deadline, UnaryOptions};
use crate::endpoint::{Address, Endpoint};
use crate::error::EtcdError;
use crate::grpc::codec;
use crate::h2io::test_server::{Peer, ServerCall, TestServer};
use crate::pb::etcdserverpb::{
    LeaseKeepAliveResponse, RangeRequest, WatchCreateRequest, WatchResponse,
};
use crate::pb::v3electionpb::LeaderResponse;
use bytes::Bytes;
use http::HeaderValue;
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a stream's callback received, in order.
pub(super) type Seen<T> = Rc<RefCell<Vec<Result<T, EtcdError>>>>;
pub(super) type WSeen = Seen<WatchResponse>;
pub(super) type KaSeen = Seen<LeaseKeepAliveResponse>;
pub(super) type ObsSeen = Seen<LeaderResponse>;

/// Completed unary calls: the test's id for the call, and its result.
type Results = Rc<RefCell<Vec<(u32, Result<Bytes, EtcdError>)>>>;

/// Turns of `run_until` before it gives up (a livelock, not a test that needs more).
const MAX_STEPS: usize = 100_000;

/// How an endpoint answers a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Connected at once.
    Up,
    /// Refused at once (`handle_connect_failed`).
    Refused,
    /// Never answers: the connect timer decides.
    Hanging,
}

/// A link command the world carried out, and when (since the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LinkEvent {
    Connect { endpoint: String, reach: Reach, at: Duration },
    Close { at: Duration },
}

/// A call a scripted etcd accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Arrival {
    /// When, since the start.
    pub(super) at: Duration,
    /// The endpoint of the link it came on.
    pub(super) endpoint: String,
    pub(super) path: String,
}

/// A plain TCP endpoint `host:port`.
pub(crate) fn endpoint(raw: &str) -> Endpoint {
    Endpoint { address: Address::Tcp(raw.parse().unwrap()), tls: false }
}

/// The configuration of the tests: timeout 2 s, connect timeout 3 s, PINGs every 5 s
/// answered within 2 s, two re-opens of a stream, requests up to 1000 bytes, token "tok",
/// jitter seed 1.
pub(crate) fn config(endpoints: &[&str]) -> CoreConfig {
    CoreConfig {
        retry_attempts: 0,
        retry_backoff: Duration::from_millis(25),
        endpoints: endpoints.iter().map(|e| endpoint(e)).collect(),
        timeout: Duration::from_secs(2),
        max_request_bytes: 1000,
        max_response_bytes: crate::config::DEFAULT_MAX_RESPONSE_BYTES,
        token: Some(HeaderValue::from_static("tok")),
        connect_timeout: Duration::from_secs(3),
        credentials: None,
        keepalive_time: Some(Duration::from_secs(5)),
        keepalive_timeout: Duration::from_secs(2),
        max_retries: 2,
        health_interval: None,
        jitter_seed: 1,
        auto_sync: None,
        default_tls: false,
        ordering: true,
    }
}

/// The core as the IO layer's peer: its bytes go out (all of them written at once), the
/// server's come in (recorded, and processed by the next `poll_transmit`).
impl Peer for Core {
    fn transmit(&mut self) -> Option<Bytes> {
        let out = self.poll_transmit()?;
        self.handle_written(out.len());
        Some(out)
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.handle_input(bytes);
    }
}

/// The core, counting the bytes that move.
struct Counted<'a> {
    core: &'a mut Core,
    moved: usize,
}

impl Peer for Counted<'_> {
    fn transmit(&mut self) -> Option<Bytes> {
        let out = self.core.transmit();
        self.moved += out.as_ref().map_or(0, Bytes::len);
        out
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.moved += bytes.len();
        self.core.receive(bytes);
    }
}

/// The core, with bytes it handed out earlier sent first.
struct Prefixed<'a> {
    first: Option<Bytes>,
    core: &'a mut Core,
}

impl Peer for Prefixed<'_> {
    fn transmit(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.core.transmit())
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.core.receive(bytes);
    }
}

/// A peer that sends `out` once and keeps what it receives (nothing reaches the core).
struct Holding {
    out: Option<Bytes>,
    received: Vec<u8>,
}

impl Peer for Holding {
    fn transmit(&mut self) -> Option<Bytes> {
        self.out.take()
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.received.extend_from_slice(bytes);
    }
}

/// A core, a scripted etcd per link and a virtual clock (see the module comment).
pub(super) struct World {
    pub(super) core: Core,
    pub(super) t0: Instant,
    /// The virtual time.
    pub(super) now: Instant,
    /// The scripted etcd of the link that is up.
    server: Option<TestServer>,
    /// The endpoint of the link that is up, or being made.
    link_endpoint: Option<String>,
    /// Servers of the links that ended (their calls' streams stay readable).
    retired: Vec<TestServer>,
    reach: HashMap<String, Reach>,
    /// Calls accepted by a server and not yet taken by the test.
    inbox: Vec<ServerCall>,
    /// Every call accepted, in order.
    pub(super) arrivals: Vec<Arrival>,
    /// Every link command carried out, in order.
    pub(super) links: Vec<LinkEvent>,
    results: Results,
    /// Health changes reported, in order.
    pub(super) health: Vec<(bool, String)>,
    /// How far from the start `run_until` may take the clock.
    pub(super) limit: Duration,
}

impl World {
    /// A world with the test configuration (see [`config`]).
    pub(super) fn new(endpoints: &[&str]) -> World {
        World::with(config(endpoints))
    }

    pub(super) fn with(cfg: CoreConfig) -> World {
        let t0 = Instant::now();
        World {
            core: Core::new(cfg, t0),
            t0,
            now: t0,
            server: None,
            link_endpoint: None,
            retired: Vec::new(),
            reach: HashMap::new(),
            inbox: Vec::new(),
            arrivals: Vec::new(),
            links: Vec::new(),
            results: Default::default(),
            health: Vec::new(),
            limit: Duration::from_secs(600),
        }
    }

    /// The instant `ms` after the start.
    pub(super) fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// The virtual time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// How `endpoint` answers connects from now on (all are [`Reach::Up`] at first).
    pub(super) fn set_reach(&mut self, endpoint: &str, reach: Reach) {
        self.reach.insert(endpoint.to_string(), reach);
    }

    // ===== commands =====

    /// Starts a Range of `key` (with the configured deadline) whose result is kept under `id`.
    pub(super) fn start(&mut self, id: u32, key: &'static str) -> Option<CallKey> {
        let body = codec::encode(&RangeRequest { key: key.into(), ..Default::default() });
        self.start_raw(id, body)
    }

    pub(super) fn start_raw(&mut self, id: u32, body: Bytes) -> Option<CallKey> {
        let opts = UnaryOptions { deadline: Deadline::Default, retryable: true };
        self.start_with(id, body, opts)
    }

    /// Starts a Range with the framed request `body` and `opts`, kept under `id`.
    pub(super) fn start_with(
        &mut self,
        id: u32,
        body: Bytes,
        opts: UnaryOptions,
    ) -> Option<CallKey> {
        let r = self.results.clone();
        let done: Completion = Box::new(move |res| r.borrow_mut().push((id, res)));
        self.core.start_unary(super::RANGE, body, "get", done, self.now, opts)
    }

    /// Watches `key` from revision 1.
    pub(super) fn watch(
        &mut self,
        key: &'static str,
        auto_reconnect: bool,
        seen: &WSeen,
    ) -> StreamKey {
        let create =
            WatchCreateRequest { key: key.into(), start_revision: 1, ..Default::default() };
        self.watch_with(create, auto_reconnect, seen)
    }

    pub(super) fn watch_with(
        &mut self,
        create: WatchCreateRequest,
        auto_reconnect: bool,
        seen: &WSeen,
    ) -> StreamKey {
        let seen = seen.clone();
        let cb = StreamCallback::Watch(Box::new(move |r| seen.borrow_mut().push(r)));
        self.core.watch(create, cb, auto_reconnect)
    }

    /// Keeps lease `lease` alive.
    pub(super) fn keepalive(
        &mut self,
        lease: i64,
        auto_reconnect: bool,
        seen: &KaSeen,
    ) -> StreamKey {
        let seen = seen.clone();
        let cb = StreamCallback::Keepalive(Box::new(move |r| seen.borrow_mut().push(r)));
        self.core.keepalive(lease, cb, auto_reconnect)
    }

    /// Observes an election with the framed LeaderRequest `request`.
    pub(super) fn observe(
        &mut self,
        request: Bytes,
        auto_reconnect: bool,
        seen: &ObsSeen,
    ) -> StreamKey {
        let seen = seen.clone();
        let cb = StreamCallback::Observe(Box::new(move |r| seen.borrow_mut().push(r)));
        self.core.observe(request, cb, auto_reconnect)
    }

    // ===== events, as the client runs them =====

    /// Results of the unary calls completed and not yet collected.
    pub(super) fn results(&self) -> Ref<'_, Vec<(u32, Result<Bytes, EtcdError>)>> {
        self.results.borrow()
    }

    /// Runs the events queued, then hands out the results not yet collected.
    pub(super) fn collect(&mut self) -> Vec<(u32, Result<Bytes, EtcdError>)> {
        self.run_events();
        std::mem::take(&mut *self.results.borrow_mut())
    }

    /// Runs every queued event; whether there was any.
    pub(super) fn run_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.core.poll_event() {
            any = true;
            self.deliver(event);
        }
        any
    }

    /// Runs events handed out by the core (by `close`).
    pub(super) fn run_all(&mut self, events: Vec<Event>) {
        for event in events {
            self.deliver(event);
        }
    }

    /// One event, as `Client::deliver` runs it.
    fn deliver(&mut self, event: Event) {
        match event {
            Event::Call(done, result) => done(result),
            Event::Local(work) => work(),
            Event::Health(healthy, endpoint) => self.health.push((healthy, endpoint)),
            Event::Stream(key, item) => {
                let item = match item.is_final() {
                    true => match self.core.defer_final(key, item) {
                        None => return,
                        Some(item) => item,
                    },
                    false => item,
                };
                self.run_stream_callback(key, item);
                if let Some(item) = self.core.take_deferred(key) {
                    self.run_stream_callback(key, item);
                }
            }
        }
    }

    /// Take, call, put back (as `Client::run_stream_callback`).
    fn run_stream_callback(&mut self, key: StreamKey, item: StreamItem) {
        let last = item.is_final();
        let Some(mut callback) = self.core.take_callback(key) else { return };
        callback.call(item);
        drop(self.core.restore_callback(key, callback, last));
    }

    // ===== the IO layer, by hand =====

    /// The next link command, taken at the current time (a connect's timeout starts then).
    pub(super) fn poll_link(&mut self) -> Option<LinkCommand> {
        self.core.poll_link(self.now)
    }

    /// The bytes the core has to send, written to the socket at once (as the IO layer
    /// reports them); the server never sees them unless the test hands them on.
    pub(super) fn transmit(&mut self) -> Option<Bytes> {
        self.core.transmit()
    }

    /// One turn with no IO: what was read is processed, the timers due fire.
    pub(super) fn turn(&mut self) {
        self.core.handle_timeout(self.now);
    }

    /// Moves the clock to `ms` after the start and takes a turn there.
    pub(super) fn advance_to(&mut self, ms: u64) {
        let at = self.at(ms);
        assert!(at >= self.now, "the clock goes forward");
        self.now = at;
        self.turn();
    }

    /// The next link command that is not a `Close`, as the endpoint it connects to; a
    /// `Close` retires the server of the link that ended. The connect is left for the test
    /// to report.
    pub(super) fn next_connect(&mut self) -> Option<String> {
        loop {
            match self.poll_link()? {
                LinkCommand::Close => self.closed(),
                LinkCommand::Connect { endpoint, .. } => return Some(self.connecting(&endpoint).0),
            }
        }
    }

    /// Reports the connect asked for as made: a fresh scripted etcd serves the link.
    pub(super) fn connected(&mut self) {
        self.core.handle_connected(self.now);
        self.server = Some(TestServer::new());
    }

    /// Connects where the core asks to (whatever the endpoint's [`Reach`]).
    pub(super) fn connect(&mut self) -> String {
        let endpoint = self.next_connect().expect("a connection is wanted");
        self.connected();
        endpoint
    }

    /// Connects to `expect` (a fresh server), and moves bytes.
    pub(super) fn reconnect(&mut self, expect: &str) {
        assert_eq!(self.connect(), expect);
        self.pump();
    }

    /// Moves bytes both ways between the core and the server of the link until both are
    /// quiet (the core processes what it receives). Whether any byte moved.
    pub(super) fn pump(&mut self) -> bool {
        let Some(server) = self.server.as_mut() else { return false };
        let mut peer = Counted { core: &mut self.core, moved: 0 };
        server.exchange(&mut peer);
        let moved = peer.moved;
        self.gather();
        moved > 0
    }

    /// [`pump`](Self::pump), with `first` (bytes the test took from `poll_transmit`) sent
    /// before anything else.
    pub(super) fn pump_with(&mut self, first: Bytes) {
        let server = self.server.as_mut().expect("a link is up");
        server.exchange(&mut Prefixed { first: Some(first), core: &mut self.core });
        self.gather();
    }

    /// Sends the core's pending bytes to the server, and hands the server's answer to the
    /// core with `handle_input` only: it reaches the core, which has not processed it yet.
    pub(super) fn hand_over(&mut self) {
        let out = self.transmit();
        let server = self.server.as_mut().expect("a link is up");
        let mut peer = Holding { out, received: Vec::new() };
        server.exchange(&mut peer);
        self.core.handle_input(&peer.received);
        self.gather();
    }

    /// The server of the link that is up.
    pub(super) fn server(&mut self) -> &mut TestServer {
        self.server.as_mut().expect("a link is up")
    }

    /// Calls accepted by the servers and not yet taken.
    pub(super) fn server_calls(&self) -> usize {
        self.inbox.len()
    }

    /// Takes the calls accepted by the servers so far.
    pub(super) fn take_calls(&mut self) -> Vec<ServerCall> {
        self.gather();
        std::mem::take(&mut self.inbox)
    }

    /// Endpoints the core asked to connect to, in order.
    pub(super) fn connects(&self) -> Vec<String> {
        let connects = self.links.iter().filter_map(|l| match l {
            LinkEvent::Connect { endpoint, .. } => Some(endpoint.clone()),
            LinkEvent::Close { .. } => None,
        });
        connects.collect()
    }

    fn gather(&mut self) {
        let Some(server) = self.server.as_mut() else { return };
        let endpoint = self.link_endpoint.clone().unwrap_or_default();
        let at = self.now - self.t0;
        for call in server.take_calls() {
            let path = call.path.clone();
            self.arrivals.push(Arrival { at, endpoint: endpoint.clone(), path });
            self.inbox.push(call);
        }
    }

    fn reach_of(&self, endpoint: &str) -> Reach {
        self.reach.get(endpoint).copied().unwrap_or(Reach::Up)
    }

    /// The core asked to connect to `endpoint`: the link that was, if any, is over.
    fn connecting(&mut self, endpoint: &Endpoint) -> (String, Reach) {
        let endpoint = endpoint.to_string();
        let reach = self.reach_of(&endpoint);
        let at = self.elapsed();
        self.links.push(LinkEvent::Connect { endpoint: endpoint.clone(), reach, at });
        self.retire();
        self.link_endpoint = Some(endpoint.clone());
        (endpoint, reach)
    }

    fn closed(&mut self) {
        self.links.push(LinkEvent::Close { at: self.elapsed() });
        self.retire();
    }

    fn retire(&mut self) {
        self.gather();
        self.retired.extend(self.server.take());
        self.link_endpoint = None;
    }

    // ===== the IO layer, by itself =====

    /// Carries out every link command; whether there was any.
    fn carry_out_link_commands(&mut self) -> bool {
        let mut any = false;
        while let Some(command) = self.poll_link() {
            any = true;
            match command {
                LinkCommand::Close => self.closed(),
                LinkCommand::Connect { endpoint, .. } => {
                    let (endpoint, reach) = self.connecting(&endpoint);
                    match reach {
                        Reach::Up => self.connected(),
                        Reach::Refused => {
                            let msg = format!("connect to {endpoint}: Connection refused");
                            self.core.handle_connect_failed(&msg, self.now);
                        }
                        Reach::Hanging => {}
                    }
                }
            }
        }
        any
    }

    /// Runs the world until `done` holds: events, link commands and bytes while they do
    /// anything, else the clock jumps to the core's next timeout. Panics if nothing more can
    /// happen, or the clock would pass [`limit`](Self::limit), before `done` holds.
    pub(super) fn run_until(&mut self, done: impl Fn(&World) -> bool) {
        for _ in 0..MAX_STEPS {
            if done(self) {
                return;
            }
            if !self.step() {
                let Some(next) = self.core.poll_timeout() else {
                    panic!(
                        "stuck at +{:?}: nothing can happen any more (core idle: {}; no \
                         timeout, no event, no byte, no link command), and the predicate \
                         does not hold",
                        self.elapsed(),
                        self.core.is_idle()
                    );
                };
                let next = next.max(self.now);
                assert!(
                    next - self.t0 <= self.limit,
                    "the virtual-time limit of {:?} was reached (next timeout at +{:?}) \
                     and the predicate does not hold",
                    self.limit,
                    next - self.t0
                );
                self.now = next;
                self.core.handle_timeout(next);
            }
        }
        panic!("{MAX_STEPS} steps at +{:?} and the predicate does not hold", self.elapsed());
    }

    /// Runs the world up to the instant `ms` after the start (whatever happens meanwhile),
    /// and takes a turn there.
    pub(super) fn run_to(&mut self, ms: u64) {
        let end = self.at(ms);
        for _ in 0..MAX_STEPS {
            if self.step() {
                continue;
            }
            match self.core.poll_timeout() {
                Some(next) if next <= end => {
                    self.now = next.max(self.now);
                    self.core.handle_timeout(self.now);
                }
                _ => {
                    self.now = end.max(self.now);
                    self.core.handle_timeout(self.now);
                    while self.step() {}
                    return;
                }
            }
        }
        panic!("{MAX_STEPS} steps at +{:?} before +{ms} ms", self.elapsed());
    }

    /// Events, link commands, bytes: whether any of them did something.
    fn step(&mut self) -> bool {
        let events = self.run_events();
        let links = self.carry_out_link_commands();
        let bytes = self.pump();
        events || links || bytes
    }
}

mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "nothing can happen any more")]
    fn run_until_panics_when_nothing_can_happen() {
        let mut w = World::new(&["127.0.0.1:2379"]);
        w.run_until(|w| w.server_calls() == 1);
    }

    #[test]
    #[should_panic(expected = "virtual-time limit")]
    fn run_until_panics_at_the_virtual_time_limit() {
        let mut w = World::new(&["127.0.0.1:2379"]);
        let seen: WSeen = Default::default();
        w.watch("k", true, &seen);
        // The stream opens and stays open; PINGs are answered: time goes on forever.
        w.run_until(|w| w.server_calls() == 2);
    }
}
