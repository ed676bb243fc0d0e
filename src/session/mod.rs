//! The sans-IO core: calls, the connection's state, deadlines. No socket, no thread, no clock.
//!
//! Inputs ([`handle_*`](Session::handle_input)): bytes received, end of input, the outcome
//! of a connection attempt, "now is T". Commands: [`start_unary`](Session::start_unary).
//! Outputs, to be read after every input or command, in this order:
//! [`drive`](Session::drive) (lets h2 make progress), [`poll_connect`](Session::poll_connect)
//! (a connection is wanted), [`pipe`](Session::pipe) output (bytes to send),
//! [`poll_event`](Session::poll_event) (finished calls) and
//! [`next_deadline`](Session::next_deadline).
//!
//! The link to the server:
//!
//! ```text
//!   Down ──poll_connect (work queued)──► Connecting ──handle_connected──► Up ──GOAWAY, member
//!    ▲                                        │                           │   UNAVAILABLE,
//!    └── handle_connect_failed, connect timer ┘   EOF, read/write error,  │   unhealthy
//!    ├───────────────────────────────────────────── h2 error, PING timeout┘       │
//!    └──────── no call with a deadline left ◄── Up, draining (no new streams) ◄────┘
//! ```
//!
//! When an established link ends, the frames that already arrived are delivered first; then
//! every call that was sent fails with `UNAVAILABLE` (retryable), except calls none of whose
//! bytes left (they are re-sent), and calls still queued wait for a new connection. A stream
//! the server refused or left above a GOAWAY's last stream id is re-sent as well. When a
//! connection attempt fails, the queued calls wait for the next endpoint, and fail with
//! `UNAVAILABLE` once every endpoint failed in a row. The endpoint rotates once per link.

mod auth;
pub(crate) mod call;
mod health;
pub(crate) mod keepalive;
pub(crate) mod observe;
mod ping;
mod shared;
pub(crate) mod sink;
#[cfg(test)]
mod tests;
pub(crate) mod watch;

use crate::endpoint::Endpoint;
use crate::error::{Code, EtcdError};
use crate::h2io::pipe::PipeBuffers;
use crate::h2io::wake::CONNECTION;
use crate::h2io::{StreamEvent, Transport, Wakers};
use crate::timer::{TimerKey, TimerWheel};
use auth::AuthGate;
use bytes::Bytes;
use call::{h2_error, Call, CallKey, CallKind, CallState, Completion, Reader, Step};
use health::Health;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request};
use keepalive::{KeepaliveDelivery, KeepaliveKey, Keepalives};
use observe::{ObserveDelivery, ObserveKey, Observes};
use ping::PingState;
use shared::{Shared, SharedStream};
use sink::{SinkDelivery, Sinks};
use slab::Slab;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};
use watch::{Delivery, WatchHub};

/// Times a call is sent again because the server provably never processed it (refused
/// stream, above a GOAWAY's last stream id, never written): bounded, in case a server
/// refuses everything.
const MAX_RESENDS: u8 = 3;

/// Rounds of "poll the connection, then the woken calls" per [`Session::drive`]; the rest is
/// left for the next turn so one busy connection cannot starve the caller's loop.
const MAX_DRIVE_ROUNDS: usize = 64;

/// What the session needs to know of the client's configuration.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Each endpoint, in order of preference.
    pub(crate) endpoints: Vec<Endpoint>,
    /// Deadline of a unary call.
    pub(crate) timeout: Duration,
    /// Largest encoded request message that is sent.
    pub(crate) max_request_bytes: usize,
    /// Sent as the `token` metadata of every call.
    pub(crate) token: Option<HeaderValue>,
    /// How long a TCP connect may take before the endpoint counts as failed.
    pub(crate) connect_timeout: Duration,
    /// User and password: authenticate on every connection, and again on a stale token.
    pub(crate) credentials: Option<(String, String)>,
    /// Interval of keepalive PINGs while calls or streams are open (`None`: off).
    pub(crate) keepalive_time: Option<Duration>,
    /// How long a PING may go unanswered before the connection counts as dead.
    pub(crate) keepalive_timeout: Duration,
    /// Re-opens of a stream in a row before its users get the error (0: never re-open).
    pub(crate) max_retries: u32,
    /// Interval of the health check (`None`: off).
    pub(crate) health_interval: Option<Duration>,
}

/// A finished call, for the client to run once no borrow is held.
pub(crate) struct Completed {
    /// The caller's completion.
    pub(crate) done: Completion,
    /// The response message, or why there is none.
    pub(crate) result: Result<Bytes, EtcdError>,
}

/// What the client must run: finished calls and watch deliveries, in order.
pub(crate) enum Event {
    /// A unary call finished (or a local completion, such as a cancel's).
    Call(Completed),
    /// A response or final error for a watch's callback.
    Watch(Delivery),
    /// A renewal or final error for a keepalive's callback.
    Keepalive(KeepaliveDelivery),
    /// A leader or final error for an observer's callback.
    Observe(ObserveDelivery),
    /// A message, the clean end or the error of a one-shot server stream.
    Sink(SinkDelivery),
    /// The health check's verdict changed: healthy or not, and the endpoint checked.
    Health(bool, String),
}

/// Timers on the wheel.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// A unary call's deadline.
    Deadline(CallKey),
    /// The connect timeout of the link with this generation.
    Connect(u64),
    /// The end of a failed Authenticate's backoff.
    AuthRetry,
    /// A keepalive PING is due on the link with this generation.
    PingDue(u64),
    /// The keepalive PING on the link with this generation went unanswered.
    PingTimeout(u64),
    /// The end of a shared stream's reconnect backoff.
    Reopen(Shared),
    /// A keepalive's next renewal.
    Renew(KeepaliveKey),
    /// The end of an observer's reconnect backoff.
    ObserveReopen(ObserveKey),
    /// The next health check is due.
    Health,
}

/// The connection's state (see the module diagram).
enum Link {
    Down,
    Connecting(TimerKey),
    /// Boxed: a link changes state rarely, and the session stays small.
    Up(Box<Transport>),
}

/// The core of a client.
pub(crate) struct Session {
    cfg: SessionConfig,
    calls: Slab<Call>,
    next_generation: u64,
    /// Calls waiting for a usable connection, oldest first. Keys of calls that have ended
    /// meanwhile are skipped.
    queued: VecDeque<CallKey>,
    timers: TimerWheel<Timer>,
    link: Link,
    /// Why the established link is ending, once known (end of input, a read or write
    /// error, or h2's own verdict). While set, stream failures are left for `link_lost` to
    /// report with this reason.
    link_error: Option<String>,
    /// Index into `cfg.endpoints` of the endpoint in use.
    endpoint: usize,
    /// Counts connections, so the reactor can tell that the one it holds a socket for is gone.
    link_generation: u64,
    wakers: Wakers,
    events: VecDeque<Event>,
    /// Unary calls pending (the calls slab also holds streams).
    unary_calls: usize,
    /// The last time the session was told (by `handle_timeout` or a command).
    now: Instant,
    /// Every watch, and the state of the stream they share.
    watches: WatchHub,
    watch_stream: SharedStream,
    /// Every keepalive, and the state of the stream they share.
    keepalives: Keepalives,
    keepalive_stream: SharedStream,
    /// Every election observer (each on its own stream).
    observes: Observes,
    /// Every one-shot server stream (snapshot).
    sinks: Sinks,
    /// Whether an Authenticate call holds the other calls back.
    auth: AuthGate,
    /// Counts the tokens obtained, so that a call knows whether it was sent with the latest.
    auth_epoch: u64,
    /// Transient Authenticate failures in a row.
    auth_failures: u32,
    /// The keepalive PING on the current connection.
    ping: PingState,
    /// Why the link takes no new streams (GOAWAY, or its member answered UNAVAILABLE): it
    /// ends, and the next endpoint is used, once the calls with a deadline on it are done.
    draining: Option<String>,
    /// Connection attempts that failed in a row: the calls waiting try each endpoint once
    /// before they fail.
    connect_failures: usize,
    /// The endpoint of the latest connection attempt.
    attempted: usize,
    /// The latest connection attempt is in its TLS handshake.
    handshaking: bool,
    /// The link up was refused before the server spoke (see `handle_refused`).
    refused: bool,
    /// State of the generator that jitters backoffs.
    jitter: u64,
    /// The periodic health check (see `session/health.rs`).
    health: Health,
}

impl Session {
    /// A session with no connection yet; `now` anchors its timer wheel.
    pub(crate) fn new(cfg: SessionConfig, now: Instant) -> Session {
        let mut watches = WatchHub::default();
        watches.reauth = cfg.credentials.is_some();
        let mut session = Session {
            cfg,
            calls: Slab::new(),
            next_generation: 0,
            queued: VecDeque::new(),
            timers: TimerWheel::new(now),
            link: Link::Down,
            link_error: None,
            endpoint: 0,
            link_generation: 0,
            wakers: Wakers::default(),
            events: VecDeque::new(),
            unary_calls: 0,
            now,
            watches,
            watch_stream: SharedStream::default(),
            keepalives: Keepalives::default(),
            keepalive_stream: SharedStream::default(),
            observes: Observes::default(),
            sinks: Sinks::default(),
            auth: AuthGate::default(),
            auth_epoch: 0,
            auth_failures: 0,
            ping: PingState::Off,
            draining: None,
            connect_failures: 0,
            attempted: 0,
            handshaking: false,
            refused: false,
            jitter: jitter_seed(),
            health: Health::default(),
        };
        session.schedule_health();
        session
    }

    // ===== commands =====

    /// Starts a unary call of `path` with the framed request `body`. `done` is handed back in
    /// an event when the call ends, never from inside this method. `timed`: whether the
    /// call gets the configured deadline (lock and campaign wait as long as it takes).
    /// Returns the call's key, or `None` if it failed at once (it is then already queued
    /// as an event).
    pub(crate) fn start_unary(
        &mut self,
        path: &'static str,
        body: Bytes,
        operation: &'static str,
        done: Completion,
        now: Instant,
        timed: bool,
    ) -> Option<CallKey> {
        let size = body.len().saturating_sub(crate::grpc::codec::PREFIX_LEN);
        if size > self.cfg.max_request_bytes {
            let msg = format!(
                "request of {size} bytes exceeds the limit of {} bytes; not sent",
                self.cfg.max_request_bytes
            );
            self.fail_soon(done, EtcdError::invalid(msg, operation));
            return None;
        }
        self.now = now;
        let kind = CallKind::Unary { done, response: None, request: body.clone(), retried: false };
        let key = self.queue_call(path, operation, kind, body);
        if timed {
            let deadline = self.timers.insert(now + self.cfg.timeout, Timer::Deadline(key));
            self.calls[key.index].deadline = Some(deadline);
        }
        self.unary_calls += 1;
        Some(key)
    }

    /// Abandons a pending unary call: its completion gets `CANCELLED` on the next turn and
    /// its stream is reset. A call that already ended is left alone.
    pub(crate) fn cancel_call(&mut self, key: CallKey) {
        let cancellable =
            |c: &mut Call| matches!(c.kind, CallKind::Unary { .. } | CallKind::Sink(_));
        if self.call_mut(key).is_some_and(cancellable) {
            let msg = "cancelled by the caller".to_string();
            self.finish(key.index, Err((Code::Cancelled, msg)));
        }
    }

    /// Adds a call to the slab and the queue (streams and unary calls alike).
    fn queue_call(
        &mut self,
        path: &'static str,
        operation: &'static str,
        kind: CallKind,
        body: Bytes,
    ) -> CallKey {
        let generation = self.next_generation;
        self.next_generation += 1;
        let index = self.calls.insert(Call {
            generation,
            path,
            operation,
            kind,
            deadline: None,
            state: CallState::Queued(body),
            auth_epoch: 0,
            link: 0,
            sent_mark: 0,
            resends: 0,
        });
        let key = CallKey { index, generation };
        self.queued.push_back(key);
        // So that the next drive opens its stream (or the next flush connects).
        self.wakers.wake(CONNECTION);
        // Health checks stopped by `close` start again with the next operation.
        self.resume_health();
        key
    }

    /// Reports `err` to `done` on the next turn (never synchronously).
    pub(crate) fn fail_soon(&mut self, done: Completion, err: EtcdError) {
        self.complete_soon(done, Err(err));
    }

    /// Hands `result` to `done` on the next turn (never synchronously).
    pub(crate) fn complete_soon(&mut self, done: Completion, result: Result<Bytes, EtcdError>) {
        self.events.push_back(Event::Call(Completed { done, result }));
    }

    /// The current time, told at the start of every turn (before any input), so that
    /// timers set while handling input start from now.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The token sent as `token` metadata from now on (`None`: none). Running streams keep
    /// the token they were opened with.
    pub(crate) fn set_token(&mut self, token: Option<HeaderValue>) {
        self.cfg.token = token;
    }

    /// The credentials to authenticate with from now on (on every new connection, and
    /// again when the token goes stale).
    pub(crate) fn set_credentials(&mut self, user: String, password: String) {
        self.cfg.credentials = Some((user, password));
        self.watches.reauth = true;
    }

    /// Forgets the token and the credentials (auth was turned off).
    pub(crate) fn clear_credentials(&mut self) {
        self.cfg.token = None;
        self.cfg.credentials = None;
        self.watches.reauth = false;
    }

    // ===== inputs =====

    /// Bytes received from the server.
    pub(crate) fn handle_input(&mut self, bytes: &[u8]) {
        if let Link::Up(t) = &self.link {
            t.pipe().borrow_mut().push_input(bytes);
        }
    }

    /// The server closed the connection (read returned 0).
    pub(crate) fn handle_eof(&mut self) {
        self.handle_link_error("connection closed by the server");
    }

    /// The connection attempt that [`poll_connect`](Self::poll_connect) asked for succeeded.
    pub(crate) fn handle_connected(&mut self) {
        let Link::Connecting(timer) = self.link else {
            return;
        };
        self.timers.cancel(timer);
        match Transport::handshake(&self.wakers) {
            Ok(t) => {
                self.link = Link::Up(Box::new(t));
                self.connect_failures = 0;
                self.wakers.wake(CONNECTION);
                // With credentials, a new connection authenticates before anything else.
                self.start_auth();
                self.schedule_ping();
                self.cut_backoffs();
            }
            Err(e) => self.link_lost(&h2_error(&e).1, false),
        }
    }

    /// The socket is connected and a TLS handshake started: the connect timeout goes on, and
    /// its message names the handshake.
    pub(crate) fn handle_handshaking(&mut self) {
        self.handshaking = matches!(self.link, Link::Connecting(_));
    }

    /// The link reported up failed before the server sent a byte (a TLS 1.3 server refusing
    /// the client certificate answers the first data with an alert): nothing on it was
    /// processed, so its unary calls are sent again (within `MAX_RESENDS`), as after a
    /// refused stream, and the next endpoint is used.
    pub(crate) fn handle_refused(&mut self, reason: &str) {
        if matches!(self.link, Link::Up(_)) {
            self.refused = true;
            self.handle_link_error(reason);
        }
    }

    /// The connection attempt failed (refused, unreachable, no address, TLS handshake).
    pub(crate) fn handle_connect_failed(&mut self, reason: &str) {
        if matches!(self.link, Link::Connecting(_)) {
            self.link_lost(reason, false);
        }
    }

    /// The established connection broke (read or write error). Like end of input, except
    /// that `reason` is what the calls that were sent will report.
    pub(crate) fn handle_link_error(&mut self, reason: &str) {
        if let Link::Up(t) = &self.link {
            t.pipe().borrow_mut().push_eof();
            self.link_error.get_or_insert_with(|| reason.to_string());
        }
    }

    /// Fires the timers due at `now`; whether any fired.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> bool {
        self.now = now;
        let mut fired = false;
        while let Some(timer) = self.timers.poll(now) {
            fired = true;
            match timer {
                Timer::Deadline(key) => self.expire(key),
                Timer::Reopen(kind) => self.shared_backoff_over(kind),
                Timer::Renew(key) => self.renewal_due(key),
                Timer::AuthRetry => self.auth_retry_due(),
                Timer::PingDue(generation) => self.ping_due(generation),
                Timer::PingTimeout(generation) => self.ping_timeout(generation),
                Timer::ObserveReopen(key) => self.observe_backoff_over(key),
                Timer::Health => self.health_tick(),
                Timer::Connect(generation) => {
                    if generation == self.link_generation
                        && matches!(self.link, Link::Connecting(_))
                    {
                        let stage =
                            if self.handshaking { "TLS handshake with" } else { "connect to" };
                        let msg = format!(
                            "{stage} {} timed out after {:?}",
                            self.cfg.endpoints[self.endpoint], self.cfg.connect_timeout
                        );
                        self.link_lost(&msg, false);
                    }
                }
            }
        }
        fired
    }

    // ===== outputs =====

    /// Lets h2 make progress: opens streams for queued calls, polls the connection and every
    /// woken call until nothing is woken (or a round limit is reached; see
    /// [`needs_drive`](Self::needs_drive)).
    pub(crate) fn drive(&mut self) {
        let mut ready = Vec::new();
        for _ in 0..MAX_DRIVE_ROUNDS {
            // The connection first: a link that ended must not be given new calls.
            self.poll_link();
            self.open_queued();
            self.flush_shared();
            self.wakers.take_ready(&mut ready);
            if ready.is_empty() {
                return;
            }
            for key in ready.drain(..) {
                if key != CONNECTION {
                    self.poll_call(key);
                }
            }
        }
    }

    /// The endpoint to connect to, when a connection is wanted and none exists or is being
    /// made. The link is `Connecting` afterwards: report the outcome with
    /// [`handle_connected`](Self::handle_connected) (for TLS, after
    /// [`handle_handshaking`](Self::handle_handshaking) and the handshake) or
    /// [`handle_connect_failed`](Self::handle_connect_failed); `handle_link_error` is for a
    /// link that is up, and ignores one that is connecting.
    pub(crate) fn poll_connect(&mut self, now: Instant) -> Option<Endpoint> {
        if !matches!(self.link, Link::Down) {
            return None;
        }
        // Keys of calls that ended while queued (deadline, failed connect) are dropped here.
        let calls = &self.calls;
        self.queued.retain(|k| calls.get(k.index).is_some_and(|c| c.generation == k.generation));
        if self.queued.is_empty() {
            // The calls that were going round the endpoints are gone: a new round starts.
            self.connect_failures = 0;
            return None;
        }
        let timer = self
            .timers
            .insert(now + self.cfg.connect_timeout, Timer::Connect(self.link_generation));
        self.link = Link::Connecting(timer);
        self.handshaking = false;
        self.attempted = self.endpoint;
        Some(self.cfg.endpoints[self.endpoint].clone())
    }

    /// The buffers to move bytes through while the link is up: received bytes go in with
    /// [`handle_input`](Self::handle_input), bytes to send come out of `output()`.
    pub(crate) fn pipe(&self) -> Option<&Rc<RefCell<PipeBuffers>>> {
        match &self.link {
            Link::Up(t) => Some(t.pipe()),
            _ => None,
        }
    }

    /// Increases every time a connection starts, so a socket can be matched to its link.
    pub(crate) fn link_generation(&self) -> u64 {
        self.link_generation
    }

    /// The keepalive interval and timeout, for the TCP layer too (`None`: keepalive off).
    pub(crate) fn tcp_keepalive(&self) -> Option<(Duration, Duration)> {
        self.cfg.keepalive_time.map(|t| (t, self.cfg.keepalive_timeout))
    }

    /// Whether a connection is being made or is up (the reactor keeps its socket only then).
    pub(crate) fn wants_socket(&self) -> bool {
        !matches!(self.link, Link::Down)
    }

    /// Puts finished calls whose callbacks did not run (a callback panicked) back at the
    /// front of the queue, in order.
    pub(crate) fn requeue(&mut self, events: Vec<Event>) {
        for e in events.into_iter().rev() {
            self.events.push_front(e);
        }
    }

    /// The next finished call or watch delivery.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Whether work is waiting that needs no new input: woken h2 tasks or finished calls.
    pub(crate) fn needs_drive(&self) -> bool {
        !self.events.is_empty() || self.wakers.any_ready()
    }

    /// Whether h2 tasks were woken and [`drive`](Self::drive) has work.
    pub(crate) fn has_ready_tasks(&self) -> bool {
        self.wakers.any_ready()
    }

    /// Whether nothing is pending: no unary call, no live watch, no undelivered event.
    pub(crate) fn is_idle(&self) -> bool {
        self.unary_calls == 0
            && self.watches.is_empty()
            && self.keepalives.is_empty()
            && self.observes.is_empty()
            && self.sinks.is_empty()
            && self.events.is_empty()
    }

    /// Ends everything at once: the events already queued, then `CANCELLED` for every pending
    /// call and live watch, are returned for the client to run; the connection is dropped.
    /// The session stays usable: a new operation connects again.
    pub(crate) fn close(&mut self, reason: &str) -> Vec<Event> {
        let mut out: Vec<Event> = self.events.drain(..).collect();
        let indexes: Vec<usize> = self.calls.iter().map(|(i, _)| i).collect();
        for index in indexes {
            let (kind, operation) = self.remove_call(index);
            let cancelled = EtcdError::new(Code::Cancelled, reason, operation);
            match kind {
                CallKind::Unary { done, .. } => {
                    out.push(Event::Call(Completed { done, result: Err(cancelled) }));
                }
                CallKind::Sink(key) => {
                    self.sink_ended(key, operation, Err((Code::Cancelled, reason.into())));
                    out.extend(self.events.pop_back());
                }
                CallKind::Health { .. } => self.health.checking = false,
                CallKind::Shared(_) | CallKind::Observe(_) | CallKind::Auth { .. } => {}
            }
        }
        self.unary_calls = 0;
        self.queued.clear();
        self.reset_auth_gate();
        self.stop_ping();
        self.auth = AuthGate::Open;
        out.extend(self.watches.close(reason).into_iter().map(Event::Watch));
        self.watches.on_stream_lost();
        self.close_shared_if_unused(Shared::Watch);
        out.extend(self.close_keepalives(reason).into_iter().map(Event::Keepalive));
        self.close_shared_if_unused(Shared::Keepalive);
        out.extend(self.close_observes(reason).into_iter().map(Event::Observe));
        if let Link::Connecting(timer) = std::mem::replace(&mut self.link, Link::Down) {
            self.timers.cancel(timer);
        }
        self.link_error = None;
        self.draining = None;
        self.connect_failures = 0;
        self.link_generation += 1;
        self.stop_health();
        out
    }

    // ===== internals =====

    fn call_mut(&mut self, key: CallKey) -> Option<&mut Call> {
        self.calls.get_mut(key.index).filter(|c| c.generation == key.generation)
    }

    /// Polls the connection; if it ended, delivers what its streams had already received,
    /// then takes the link down.
    fn poll_link(&mut self) {
        if let Some(why) = self.draining.as_ref().filter(|_| self.drained()) {
            let why = why.clone();
            return self.link_lost(&why, true);
        }
        let Link::Up(t) = &mut self.link else { return };
        let Some(end) = t.poll_connection(&self.wakers) else {
            return self.poll_ping();
        };
        let reason = self.link_error.get_or_insert_with(|| match end {
            Ok(()) => "connection closed by the server".to_string(),
            Err(e) => h2_error(&e).1,
        });
        let reason = reason.clone();
        // A response may have been read in full in the same read as the end of input: h2
        // keeps it in its stream, so every open call gets polled before anything fails. Calls
        // left unfinished fail below, with the link's reason rather than h2's.
        let open: Vec<usize> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.state, CallState::Open(..)))
            .map(|(i, _)| i)
            .collect();
        for index in open {
            self.poll_call(index);
        }
        self.link_lost(&reason, true);
    }

    /// Opens h2 streams for queued calls while the connection accepts them.
    fn open_queued(&mut self) {
        while let Some(&key) = self.queued.front() {
            if !matches!(self.link, Link::Up(_)) || self.draining.is_some() {
                return;
            }
            let Some(call) = self.calls.get(key.index).filter(|c| c.generation == key.generation)
            else {
                self.queued.pop_front();
                continue;
            };
            let CallState::Queued(body) = &call.state else {
                self.queued.pop_front();
                continue;
            };
            let (path, body) = (call.path, body.clone());
            let shared = match call.kind {
                CallKind::Shared(kind) => Some(kind),
                CallKind::Unary { .. }
                | CallKind::Auth { .. }
                | CallKind::Health { .. }
                | CallKind::Observe(_)
                | CallKind::Sink(_) => None,
            };
            if !self.auth_allows(key) {
                return; // calls wait behind the Authenticate call
            }
            // Authenticate never carries the (stale) token it replaces.
            let token = match call.kind {
                CallKind::Auth { .. } => None,
                _ => self.cfg.token.clone(),
            };
            // Streams ask etcd to end them when the member loses its leader, so that they
            // move on instead of waiting on a partitioned member.
            let stream = matches!(call.kind, CallKind::Shared(_) | CallKind::Observe(_));
            let Link::Up(t) = &mut self.link else { return };
            match t.poll_ready(&self.wakers) {
                None => return,
                // GOAWAY: the streams below its last id still finish on this link.
                Some(Err(e)) if e.is_go_away() && e.is_remote() => {
                    return self.start_drain(format!("server sent GOAWAY: {e}"));
                }
                Some(Err(e)) => return self.link_lost(&h2_error(&e).1, true),
                Some(Ok(())) => {}
            }
            self.queued.pop_front();
            // A shared stream opens with its first messages (a create per watch, a renewal
            // per lease); a unary call sends its one request and half-closes.
            let (body, end) = match shared {
                Some(kind) => (self.shared_opened(kind), false),
                None => (body, true),
            };
            let mut request =
                build_request(&self.cfg.endpoints[self.endpoint], path, token.as_ref());
            if stream {
                request.headers_mut().insert("hasleader", HeaderValue::from_static("true"));
            }
            let Link::Up(t) = &mut self.link else { return };
            let sent_mark = t.pipe().borrow().produced();
            match t.open(request, body, end) {
                Ok(stream) => {
                    let call = &mut self.calls[key.index];
                    call.state = CallState::Open(stream, Reader::default());
                    call.auth_epoch = self.auth_epoch;
                    call.link = self.link_generation;
                    call.sent_mark = sent_mark;
                    if let CallKind::Health { sent_to, .. } = &mut call.kind {
                        *sent_to = Some(self.endpoint);
                    }
                    self.wakers.wake(key.index);
                }
                Err(e) => self.finish(key.index, Err(h2_error(&e))),
            }
        }
    }

    /// Polls call slot `index` until its stream has nothing more to say.
    fn poll_call(&mut self, index: usize) {
        loop {
            let Some(call) = self.calls.get_mut(index) else {
                return;
            };
            let CallState::Open(stream, reader) = &mut call.state else {
                return;
            };
            // A framing error after messages of the same chunk: they went out, now it ends.
            if let Some(err) = reader.take_failure() {
                return self.finish(index, Err(err));
            }
            let Some(event) = stream.poll(&mut self.wakers, index) else {
                return;
            };
            let from_server = match &event {
                StreamEvent::Failed(e) => {
                    if let Some(why) = unprocessed(e) {
                        if e.is_go_away() {
                            self.start_drain(why.clone());
                        }
                        if self.resend(index) {
                            return;
                        }
                    }
                    // `link_lost` reports it, with the link's reason.
                    if self.link_error.is_some() {
                        return;
                    }
                    false
                }
                _ => true,
            };
            let Some(Call { state: CallState::Open(_, reader), .. }) = self.calls.get_mut(index)
            else {
                return;
            };
            let step = reader.apply(event);
            if let Step::Finished(Err((Code::Unavailable, msg))) = &step {
                if from_server {
                    self.member_unavailable(index, msg);
                }
            }
            let Some(call) = self.calls.get_mut(index) else { return };
            match step {
                Step::Continue => {}
                Step::Messages(msgs) => match &mut call.kind {
                    CallKind::Unary { response, .. }
                    | CallKind::Auth { response }
                    | CallKind::Health { response, .. } => {
                        if msgs.len() > 1 || response.is_some() {
                            let msg = "more than one response message for a unary call";
                            return self.finish(index, Err((Code::Internal, msg.to_string())));
                        }
                        *response = msgs.into_iter().next();
                    }
                    CallKind::Sink(key) => {
                        let key = *key;
                        self.on_sink_messages(key, msgs);
                    }
                    CallKind::Observe(key) => {
                        let key = *key;
                        if let Err(e) = self.on_observe_messages(key, msgs) {
                            return self.finish(index, Err(e));
                        }
                    }
                    CallKind::Shared(kind) => {
                        let kind = *kind;
                        if let Err(e) = self.on_shared_messages(kind, msgs) {
                            return self.finish(index, Err(e));
                        }
                    }
                },
                Step::Finished(r) => return self.finish(index, r),
            }
        }
    }

    /// Ends call slot `index` with `result`, unless a unary call failed for a stale token
    /// and is retried after authenticating again.
    fn finish(&mut self, index: usize, result: Result<(), (Code, String)>) {
        if let Err((_, msg)) = &result {
            if self.retry_after_auth(index, msg) {
                return;
            }
        }
        self.finish_now(index, result);
    }

    /// Ends call slot `index` with `result`: a unary call's completion is queued; a stream's
    /// owner learns that it ended.
    fn finish_now(&mut self, index: usize, result: Result<(), (Code, String)>) {
        let (kind, operation) = self.remove_call(index);
        let (done, response) = match kind {
            CallKind::Unary { done, response, .. } => (done, response),
            CallKind::Auth { response } => return self.auth_done(response, result),
            CallKind::Shared(kind) => return self.shared_ended(kind, result),
            CallKind::Observe(key) => return self.observe_ended(key, result),
            CallKind::Sink(key) => return self.sink_ended(key, operation, result),
            CallKind::Health { sent_to, response } => {
                let endpoint = sent_to.unwrap_or(self.attempted);
                let result = result.map_err(|(c, m)| EtcdError::new(c, m, operation));
                return self.health_checked(endpoint, response, result);
            }
        };
        self.unary_calls -= 1;
        let result = match result {
            Ok(()) => response.ok_or_else(|| {
                EtcdError::new(Code::Internal, "response had no message", operation)
            }),
            Err((code, msg)) => Err(EtcdError::new(code, msg, operation)),
        };
        self.events.push_back(Event::Call(Completed { done, result }));
    }

    /// Takes call slot `index` out of the slab: its deadline is cancelled and its stream, if
    /// open, reset. Returns what its owner is told with: its kind and its operation. (The
    /// count of unary calls is the caller's to keep.)
    fn remove_call(&mut self, index: usize) -> (CallKind, &'static str) {
        let Call { kind, operation, deadline, state, .. } = self.calls.remove(index);
        if let Some(deadline) = deadline {
            self.timers.cancel(deadline);
        }
        if let CallState::Open(stream, _) = state {
            stream.cancel();
        }
        (kind, operation)
    }

    /// Removes a stream's call `key` (see [`remove_call`](Self::remove_call)) unless it has
    /// already ended: its owner is done with it and is not told.
    pub(super) fn drop_stream_call(&mut self, key: CallKey) {
        if self.call_mut(key).is_some() {
            self.remove_call(key.index);
        }
    }

    fn expire(&mut self, key: CallKey) {
        if self.call_mut(key).is_some() {
            // The timer fired, so its key is spent; the cancel in finish() is a no-op.
            let msg = format!("deadline of {:?} exceeded", self.cfg.timeout);
            self.finish(key.index, Err((Code::DeadlineExceeded, msg)));
        }
    }

    /// Takes the link down and rotates the endpoint. Calls that were sent fail with
    /// `UNAVAILABLE` (unless none of their bytes left: they are sent again); queued ones wait
    /// for the next connection. If the link never came up (`was_up` false), they wait for
    /// the next endpoint only until every endpoint failed in a row, then fail too.
    fn link_lost(&mut self, reason: &str, was_up: bool) {
        let lost = self.link_generation;
        let sent = match &self.link {
            // Refused before the server spoke: none of what was sent counts as received.
            Link::Up(_) if std::mem::take(&mut self.refused) => 0,
            Link::Up(t) => t.pipe().borrow().sent(),
            _ => 0,
        };
        if let Link::Connecting(timer) = std::mem::replace(&mut self.link, Link::Down) {
            self.timers.cancel(timer);
        }
        self.link_error = None;
        self.draining = None;
        self.link_generation += 1;
        self.endpoint = (self.endpoint + 1) % self.cfg.endpoints.len();
        self.reset_auth_gate();
        self.stop_ping();
        if !was_up {
            // Nothing was sent: the waiting calls try the next endpoint, until each failed.
            self.connect_failures += 1;
            if self.connect_failures < self.cfg.endpoints.len() {
                self.wakers.wake(CONNECTION);
                return;
            }
            self.connect_failures = 0;
        }
        let doomed: Vec<usize> = self
            .calls
            .iter()
            .filter(|(_, c)| !was_up || matches!(c.state, CallState::Open(..)))
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            // A call none of whose bytes left before the link died was never processed.
            let c = &self.calls[i];
            if was_up && c.link == lost && c.sent_mark >= sent && self.resend(i) {
                continue;
            }
            self.finish(i, Err((Code::Unavailable, reason.to_string())));
        }
    }

    /// Queues unary call `index` to be sent again (the server never processed it), unless it
    /// was already sent again too often; whether it was.
    fn resend(&mut self, index: usize) -> bool {
        let call = &mut self.calls[index];
        if call.resends >= MAX_RESENDS {
            return false;
        }
        call.resends += 1;
        self.requeue_unary(index)
    }

    /// Puts unary call `index` back in the queue, its request as first sent (its stream, if
    /// any, is reset); false for any other kind of call.
    pub(super) fn requeue_unary(&mut self, index: usize) -> bool {
        let call = &mut self.calls[index];
        let CallKind::Unary { request, response, .. } = &mut call.kind else {
            return false;
        };
        *response = None;
        let queued = CallState::Queued(request.clone());
        if let CallState::Open(stream, _) = std::mem::replace(&mut call.state, queued) {
            stream.cancel();
        }
        self.queued.push_back(CallKey { index, generation: call.generation });
        self.wakers.wake(CONNECTION);
        true
    }

    /// The link takes no new streams from now on, and ends once the calls with a deadline
    /// on it are done (see [`poll_link`](Self::poll_link)); the next endpoint is used then.
    fn start_drain(&mut self, why: String) {
        if matches!(self.link, Link::Up(_)) && self.draining.is_none() {
            self.draining = Some(why);
            self.wakers.wake(CONNECTION);
        }
    }

    /// Call `index` on the current link got UNAVAILABLE from its member (no leader, the
    /// member stopping, its own timeout): with other endpoints to try, the link drains and
    /// the client moves on. A leader change is cluster-wide: moving would not help.
    fn member_unavailable(&mut self, index: usize, msg: &str) {
        let on_current = self.calls.get(index).is_some_and(|c| c.link == self.link_generation);
        if on_current && !msg.contains("leader changed") {
            let endpoint = &self.cfg.endpoints[self.endpoint];
            self.leave_endpoint(format!("{endpoint} is unavailable: {msg}"));
        }
    }

    /// The member in use is unfit (`why`): drain its link so the next endpoint takes over.
    /// With one endpoint there is no other to move to, and dropping the link would only
    /// reset every stream on it.
    fn leave_endpoint(&mut self, why: String) {
        if self.cfg.endpoints.len() > 1 {
            self.start_drain(why);
        }
    }

    /// Whether a draining link has no call with a deadline left on it: the long-lived ones
    /// (streams, lock, campaign, snapshot) are not waited for; streams re-open elsewhere.
    fn drained(&self) -> bool {
        !self.calls.iter().any(|(_, c)| {
            matches!(c.state, CallState::Open(..))
                && (c.deadline.is_some() || matches!(c.kind, CallKind::Auth { .. }))
        })
    }
}

/// The HTTP/2 request for a gRPC call: absolute URI (so `:scheme`, `https` over TLS as
/// grpc-go sends, and `:authority` are sent), gRPC content type, `te: trailers`, and the auth
/// token when there is one.
fn build_request(
    endpoint: &Endpoint,
    path: &'static str,
    token: Option<&HeaderValue>,
) -> Request<()> {
    let scheme = if endpoint.tls { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(endpoint.authority())
        .path_and_query(PathAndQuery::from_static(path))
        .build()
        .expect("authority validated by Config, path generated from the protos");
    let mut req = Request::builder()
        .method(http::Method::POST)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .expect("static header values are valid");
    if let Some(t) = token {
        req.headers_mut().insert("token", t.clone());
    }
    req
}

/// Why a failed stream was provably never processed by the server, if it was: refused
/// (RST_STREAM REFUSED_STREAM), or above the last stream id of the GOAWAY it received (h2
/// fails those streams with the GOAWAY at once; the ones below finish normally).
fn unprocessed(e: &h2::Error) -> Option<String> {
    if !e.is_remote() {
        return None;
    }
    if e.is_go_away() {
        return Some(format!("server sent GOAWAY: {e}"));
    }
    (e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM))
        .then(|| format!("stream refused: {e}"))
}

/// A seed for the backoff jitter, different in every session (std's hasher keys are random).
fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}
