//! The sans-IO core: a router over standalone machines. No socket, no thread, no clock.
//!
//! Each machine keeps its own state and takes what it needs explicitly (a [`Cx`] with the
//! time, the timers and the event queue): [`Link`] (the connection, its endpoint and PINGs),
//! [`Calls`] (every gRPC call and the queue), [`Auth`] (gate, token, credentials), the
//! [`WatchHub`] and [`SharedStream`]s, [`Keepalives`], [`Observes`], [`Health`], and the
//! [`Streams`] registry of stream callbacks. [`failure::decide`] is the one decision on
//! failures. `Core` routes inputs to them and gathers their outputs.
//!
//! # The IO contract (as quinn-proto's)
//!
//! The IO layer owns the socket (and TLS) and calls, in this order, every turn:
//!
//! 1. inputs, as they happen: [`handle_connected`](Core::handle_connected) /
//!    [`handle_handshaking`](Core::handle_handshaking) /
//!    [`handle_connect_failed`](Core::handle_connect_failed) for the connect it was asked
//!    for; [`handle_input`](Core::handle_input) with plaintext read, then
//!    [`handle_eof`](Core::handle_eof), [`handle_link_error`](Core::handle_link_error) or
//!    [`handle_refused`](Core::handle_refused) when the link ends;
//! 2. [`handle_timeout`](Core::handle_timeout)`(now)`: what was read is processed first (a
//!    response that arrived in time beats its deadline), then the timers due fire;
//! 3. [`poll_event`](Core::poll_event) until `None`: the client runs each callback with no
//!    borrow held (callbacks may issue commands);
//! 4. [`poll_link`](Core::poll_link) until `None` (connect, close the socket), and
//!    [`poll_transmit`](Core::poll_transmit) until `None` or the socket would block,
//!    reporting each write with [`handle_written`](Core::handle_written); again while
//!    either produced something;
//! 5. sleep until [`poll_timeout`](Core::poll_timeout) or readiness.
//!
//! Commands (start a call, a watch, a keepalive; cancel; close) may come at any time
//! between turns. Nothing is ever delivered from inside the command that caused it.

pub(crate) mod alarms;
mod auth;
mod calls;
pub(crate) mod cx;
pub(crate) mod failure;
mod health;
mod keepalive;
pub(crate) mod link;
mod observe;
mod ordering;
pub(crate) mod registry;
mod shared;
mod sync;
#[cfg(test)]
pub(crate) mod tests;
mod watch;

use crate::endpoint::Endpoint;
use crate::error::{Code, EtcdError};
use crate::grpc::reader::{h2_error, Reader, Step};
use crate::grpc::{codec, Rpc};
use crate::h2io::wake::{CONNECTION, CORE};
use crate::h2io::{StreamEvent, Wakers};
use crate::info::{ClientInfo, LinkState};
use crate::pb::etcdserverpb::{
    auth_rpc, cluster_rpc, lease_rpc, maintenance_rpc, watch_rpc, LeaseKeepAliveResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::pb::v3electionpb::election_rpc;
use auth::{Auth, AuthOutcome};
use bytes::{Bytes, BytesMut};
use calls::{CallKind, CallState, Calls};
pub(crate) use cx::{Completion, Cx, Event, Shared, Timer};
use failure::{decide, leaves_member, Cause, Decision, Policy, Subject};
use health::Health;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Request};
use keepalive::Keepalives;
use link::{Link, LinkCommand, LinkConfig};
use observe::Observes;
use prost::Message;
pub(crate) use registry::{CallKey, StreamCallback, StreamItem, StreamKey};
use registry::{Owner, Streams};
use shared::{ended_by_server, SharedStream};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use watch::WatchHub;

/// A unary call's options (see `Client::with`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnaryOptions {
    pub(crate) deadline: Deadline,
    /// May be retried after it was processed, on `UNAVAILABLE` (see `Config::retry`).
    pub(crate) retryable: bool,
}

/// When a unary call gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// The configured timeout.
    Default,
    /// This long after it starts, as given (no floor).
    After(Duration),
    /// Never (lock and campaign wait as long as it takes).
    None,
}

/// Rounds of "poll the connection, then the woken calls" per drive; the rest is left for
/// the next turn so one busy connection cannot starve the caller's loop.
const MAX_DRIVE_ROUNDS: usize = 64;

/// Which step of the IO contract a drive serves (see [`Core::drive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Input and timers (`handle_timeout`): the connection is polled only to read.
    Input,
    /// On the way out (`poll_link`, `poll_transmit`): it is polled for whatever woke it.
    Output,
}

/// What the core needs to know of the client's configuration.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    /// Each endpoint, in order of preference.
    pub(crate) endpoints: Vec<Endpoint>,
    /// Deadline of a unary call.
    pub(crate) timeout: Duration,
    /// Largest encoded request message that is sent.
    pub(crate) max_request_bytes: usize,
    /// Largest response message accepted (the gRPC prefix tells, before it is buffered).
    pub(crate) max_response_bytes: usize,
    /// Sent as the `token` metadata of every call.
    pub(crate) token: Option<HeaderValue>,
    /// How long a connect (and TLS handshake) may take before the endpoint counts as failed.
    pub(crate) connect_timeout: Duration,
    /// User and password: authenticate on every connection, and again on a stale token.
    pub(crate) credentials: Option<(String, String)>,
    /// Interval of keepalive PINGs while calls or streams are open (`None`: off).
    pub(crate) keepalive_time: Option<Duration>,
    /// How long a PING may go unanswered before the connection counts as dead.
    pub(crate) keepalive_timeout: Duration,
    /// Re-opens of a stream in a row before its users get the error (0: never re-open).
    pub(crate) max_retries: u32,
    /// Retries of a retryable unary call (read-only, or opted in) on UNAVAILABLE.
    pub(crate) retry_attempts: u32,
    /// Wait between two attempts of a retryable unary call (before jitter).
    pub(crate) retry_backoff: Duration,
    /// Interval of the health check (`None`: off).
    pub(crate) health_interval: Option<Duration>,
    /// Seed of the backoff jitter (0: a random one); tests fix it.
    pub(crate) jitter_seed: u64,
    /// Interval of the endpoint auto-sync (`None`: off).
    pub(crate) auto_sync: Option<Duration>,
    /// Endpoints without a scheme use TLS (the client has a TLS configuration).
    pub(crate) default_tls: bool,
    /// The revision-ordering guard is on (see `ordering.rs`).
    pub(crate) ordering: bool,
}

/// The core of a client (see the module comment).
pub(crate) struct Core {
    /// Deadline of a unary call.
    timeout: Duration,
    max_request_bytes: usize,
    max_response_bytes: usize,
    max_retries: u32,
    retry_attempts: u32,
    retry_backoff: Duration,
    cx: Cx,
    wakers: Wakers,
    link: Link,
    calls: Calls,
    auth: Auth,
    streams: Streams,
    watches: WatchHub,
    watch_stream: SharedStream,
    keepalives: Keepalives,
    keepalive_stream: SharedStream,
    observes: Observes,
    health: Health,
    sync: sync::Sync,
    ordering: ordering::Ordering,
    alarms: alarms::Alarms,
    /// h2 woke its connection task since the last poll of it (see [`drive`](Self::drive)).
    h2_woken: bool,
    /// Polls of the h2 connection so far: the costliest step of a call, counted so that a
    /// test holds a call to the fewest.
    h2_polls: u64,
    /// Buffers of `drive` kept between drives, so that a drive allocates nothing.
    ready: Vec<usize>,
    woken: Vec<usize>,
}

impl Core {
    /// A core with no connection yet; `now` anchors its timer wheel.
    pub(crate) fn new(cfg: CoreConfig, now: Instant) -> Core {
        let mut cx = Cx::new(now, cfg.jitter_seed);
        let health = Health::new(cfg.health_interval, &mut cx);
        let sync = sync::Sync::new(cfg.auto_sync, cfg.default_tls, &mut cx);
        let mut watches = WatchHub::default();
        watches.reauth = cfg.credentials.is_some();
        Core {
            timeout: cfg.timeout,
            max_request_bytes: cfg.max_request_bytes,
            max_response_bytes: cfg.max_response_bytes,
            max_retries: cfg.max_retries,
            retry_attempts: cfg.retry_attempts,
            retry_backoff: cfg.retry_backoff,
            wakers: Wakers::default(),
            link: Link::new(
                LinkConfig {
                    endpoints: cfg.endpoints,
                    connect_timeout: cfg.connect_timeout,
                    keepalive_time: cfg.keepalive_time,
                    keepalive_timeout: cfg.keepalive_timeout,
                },
                now,
            ),
            calls: Calls::default(),
            auth: Auth::new(cfg.token, cfg.credentials),
            streams: Streams::default(),
            watches,
            watch_stream: SharedStream::new(Shared::Watch),
            keepalives: Keepalives::default(),
            keepalive_stream: SharedStream::new(Shared::Keepalive),
            observes: Observes::default(),
            health,
            sync,
            ordering: ordering::Ordering::new(cfg.ordering),
            alarms: alarms::Alarms::default(),
            h2_woken: false,
            h2_polls: 0,
            ready: Vec::new(),
            woken: Vec::new(),
            cx,
        }
    }

    // ===== inputs =====

    /// Plaintext received on the link.
    pub(crate) fn handle_input(&mut self, bytes: &[u8]) {
        if let Some(t) = self.link.transport() {
            t.push_input(bytes);
        }
    }

    /// The server closed the link (read returned 0, or TLS close_notify).
    pub(crate) fn handle_eof(&mut self) {
        self.link.error("connection closed by the server");
    }

    /// The established link broke (a read or write error): what the calls sent on it report.
    pub(crate) fn handle_link_error(&mut self, reason: &str) {
        self.link.error(reason);
    }

    /// The link broke before the server sent a byte (a TLS 1.3 server refusing the client
    /// certificate answers the first data with an alert): nothing on it was processed, so
    /// its unary calls are sent again (a bounded number of times) on the next endpoint.
    pub(crate) fn handle_refused(&mut self, reason: &str) {
        self.link.refused(reason);
    }

    /// The socket is connected and a TLS handshake started: the connect timeout goes on, and
    /// its message names the handshake.
    pub(crate) fn handle_handshaking(&mut self) {
        self.link.handshaking(self.cx.now);
    }

    /// The connect that [`poll_link`](Self::poll_link) asked for succeeded (after the TLS
    /// handshake, with TLS): the link is up.
    pub(crate) fn handle_connected(&mut self, now: Instant) {
        self.cx.now = now;
        match self.link.connected(&self.wakers, &mut self.cx) {
            Ok(false) => {}
            Ok(true) => {
                info!(target: "evetcd", endpoint = %self.link.endpoint(), generation = self.link.generation(), "connected");
                // The new connection is polled first (h2 has not been yet), then calls open.
                self.wakers.wake(CONNECTION);
                self.wakers.wake(CORE);
                // With credentials, a new connection authenticates before anything else.
                self.start_auth();
                self.cut_backoffs();
            }
            Err(reason) => self.link_lost(&reason),
        }
    }

    /// The connect failed (refused, unreachable, no address, TLS handshake).
    pub(crate) fn handle_connect_failed(&mut self, reason: &str, now: Instant) {
        self.cx.now = now;
        if self.link.is_connecting() {
            info!(target: "evetcd", endpoint = %self.link.endpoint(), reason, "connect failed");
            self.link_lost(reason);
        }
    }

    /// Time is `now`: processes what was read, then fires the timers due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.cx.now = now;
        self.drive(Phase::Input);
        let mut fired = false;
        while let Some(timer) = self.cx.timers.poll(now) {
            fired = true;
            self.fire(timer);
        }
        if fired {
            self.drive(Phase::Input);
        }
    }

    // ===== outputs =====

    /// What the IO layer must do for the link at `now`: connect somewhere (the connect
    /// timeout starts now), or drop the socket.
    pub(crate) fn poll_link(&mut self, now: Instant) -> Option<LinkCommand> {
        self.cx.now = now;
        self.drive(Phase::Output);
        let command = self.link.poll_command(&mut self.cx);
        if let Some(LinkCommand::Connect { endpoint, .. }) = &command {
            debug!(target: "evetcd", %endpoint, generation = self.link.generation(), "connecting");
        }
        command
    }

    /// Bytes to send on the link, if any. Call again only once the previous bytes are
    /// written, so h2 feels the socket's back-pressure; report each write with
    /// [`handle_written`](Self::handle_written).
    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.drive(Phase::Output);
        self.link.transport()?.take_output()
    }

    /// `n` bytes of what [`poll_transmit`](Self::poll_transmit) returned reached the socket
    /// (or TLS): a call none of whose bytes reached it when the link dies is sent again.
    pub(crate) fn handle_written(&mut self, n: usize) {
        if let Some(t) = self.link.transport() {
            t.written(n);
        }
    }

    /// The next finished call or stream delivery, for the client to run.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let event = self.cx.events.pop_front();
        if event.is_none() && self.cx.events.capacity() > 256 {
            // A burst (thousands of watches created at once) does not keep its room.
            self.cx.events = std::collections::VecDeque::new();
        }
        event
    }

    /// When the IO layer must call [`handle_timeout`](Self::handle_timeout) at the latest:
    /// at once while work is waiting, at the next timer otherwise, `None` when nothing is
    /// pending (an idle connection's PING timer has nothing to do until an operation starts;
    /// only the health check runs while idle).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        // `h2_woken` after a turn: a callback panicked out of the flush that would have
        // served it; the next turn does.
        if !self.cx.events.is_empty() || self.wakers.any_ready() || self.h2_woken {
            return Some(self.cx.now);
        }
        if self.is_idle() {
            return self.health.due();
        }
        self.cx.timers.next_deadline()
    }

    /// What `Client::info` reports: the link, the streams, the pending calls, the auth.
    pub(crate) fn info(&self) -> ClientInfo {
        let (state, since) = self.link.info();
        let in_use = self.link.peer().filter(|_| state != LinkState::Idle);
        ClientInfo {
            endpoint: in_use.map(Endpoint::to_string),
            endpoints: self.link.endpoints().iter().map(Endpoint::to_string).collect(),
            state,
            since,
            connect_failures: self.link.connect_failures().cloned().collect(),
            watches: self.watches.len(),
            keepalives: self.keepalives.len(),
            observers: self.observes.len(),
            pending_calls: self.calls.unary(),
            auth: self.auth.info(),
        }
    }

    /// Polls of the h2 connection so far (see `drive`).
    #[cfg(test)]
    pub(crate) fn h2_polls(&self) -> u64 {
        self.h2_polls
    }

    /// Whether nothing is pending: no unary call, no live stream, no undelivered event.
    pub(crate) fn is_idle(&self) -> bool {
        self.calls.unary() == 0
            && self.streams.is_empty()
            && self.cx.events.is_empty()
            && self.alarms.is_empty()
    }

    // ===== commands: calls =====

    /// Starts a unary call of `path` with the framed request `body`; `done` is handed back in
    /// an event when it ends. `None`: it failed at once (already queued as an event).
    pub(crate) fn start_unary(
        &mut self,
        path: &'static str,
        body: Bytes,
        operation: &'static str,
        done: Completion,
        now: Instant,
        opts: UnaryOptions,
    ) -> Option<CallKey> {
        self.cx.now = now;
        if let Err(err) =
            self.check_size(body.len().saturating_sub(codec::PREFIX_LEN), "request", operation)
        {
            self.cx.emit(Event::Local(Box::new(move || done(Err(err)))));
            return None;
        }
        let retryable = opts.retryable;
        let kind = CallKind::Unary {
            done,
            response: None,
            request: body.clone(),
            retried: false,
            retryable,
        };
        let deadline = match opts.deadline {
            Deadline::Default => Some(self.timeout),
            Deadline::After(d) => Some(d.min(crate::timer::MAX_DELAY)),
            Deadline::None => None,
        };
        let key = self.add_call(path, operation, kind, body, deadline);
        if let Some(call) = self.calls.get_mut(key) {
            call.floor = self.ordering.floor();
        }
        Some(key)
    }

    /// Abandons a pending unary call or server stream: its callback gets `CANCELLED` on the
    /// next turn and its stream is reset. One that already ended is left alone.
    pub(crate) fn cancel_call(&mut self, key: CallKey) {
        let cancellable = |k: &CallKind| matches!(k, CallKind::Unary { .. } | CallKind::Sink(_));
        if self.calls.get(key).is_some_and(|c| cancellable(&c.kind)) {
            self.finish(key, Err((Code::Cancelled, "cancelled by the caller".into())));
        }
    }

    /// Whether call `key` is still pending.
    pub(crate) fn is_pending(&self, key: CallKey) -> bool {
        self.calls.get(key).is_some()
    }

    /// Queues `work` to run on the next turn (never from inside the current operation).
    pub(crate) fn defer(&mut self, work: Box<dyn FnOnce()>) {
        self.cx.emit(Event::Local(work));
    }

    /// Queues `work` to run `delay` from now (or at `close`, see `alarms.rs`); until then the
    /// core is not idle.
    pub(crate) fn alarm(&mut self, delay: Duration, work: alarms::Work) -> alarms::AlarmKey {
        self.alarms.arm(delay, work, &mut self.cx)
    }

    /// Disarms an alarm that has not fired; its work is handed back uncalled, for the caller
    /// to drop once the core is no longer borrowed.
    pub(crate) fn disarm(&mut self, key: alarms::AlarmKey) -> Option<alarms::Work> {
        self.alarms.disarm(key, &mut self.cx)
    }

    /// The endpoints to use from now on (see `Link::set_endpoints`).
    pub(crate) fn set_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        if self.link.set_endpoints(endpoints, self.cx.now) {
            let names: Vec<String> = self.link.endpoints().iter().map(|e| e.to_string()).collect();
            info!(target: "evetcd", endpoints = ?names, "endpoints changed");
            self.wakers.wake(CORE);
        }
    }

    /// A token and credentials obtained by the user's own `authenticate` call.
    pub(crate) fn set_auth(&mut self, token: HeaderValue, user: String, password: String) {
        self.auth.set(token, user, password);
        self.watches.reauth = true;
    }

    /// The token in use and the credentials that renew it: what a member view of the
    /// client starts from.
    pub(crate) fn auth_state(&self) -> (Option<HeaderValue>, Option<(String, String)>) {
        (self.auth.token().cloned(), self.auth.credentials().cloned())
    }

    /// Forgets the token and the credentials (auth was turned off).
    pub(crate) fn clear_auth(&mut self) {
        self.auth.clear();
        self.watches.reauth = false;
    }

    // ===== commands: streams =====

    /// Starts a watch; the stream opens (or the watch is created on it) during the next turn.
    pub(crate) fn watch(
        &mut self,
        create: WatchCreateRequest,
        callback: StreamCallback,
        auto_reconnect: bool,
    ) -> StreamKey {
        let stream = self.streams.add(callback);
        // A create above the request size limit fails that watch alone: sent, it would make
        // etcd end the stream shared by every watch, again and again.
        if let Err(err) = self.check_size(create.encoded_len(), "watch create", "watch") {
            self.cx.deliver(stream, StreamItem::Watch(Err(err)));
            return stream;
        }
        let key = self.watches.add(create, stream, auto_reconnect);
        self.streams.bind(stream, Owner::Watch(key));
        self.ensure_shared(Shared::Watch);
        self.wakers.wake(CORE);
        stream
    }

    /// Asks for a progress notification on the watch stream.
    pub(crate) fn request_progress(&mut self) {
        self.watches.request_progress();
        self.wakers.wake(CORE);
    }

    /// Starts keeping lease `lease` alive; the first renewal goes out once the stream opens.
    pub(crate) fn keepalive(
        &mut self,
        lease: i64,
        callback: StreamCallback,
        auto_reconnect: bool,
    ) -> StreamKey {
        let stream = self.streams.add(callback);
        let key = self.keepalives.add(stream, lease, auto_reconnect);
        self.streams.bind(stream, Owner::Keepalive(key));
        self.ensure_shared(Shared::Keepalive);
        self.wakers.wake(CORE);
        stream
    }

    /// Starts an election observer; `request` is the framed LeaderRequest. One above the
    /// size limit is never sent: it ends with `INVALID_ARGUMENT` on the next turn.
    pub(crate) fn observe(
        &mut self,
        request: Bytes,
        callback: StreamCallback,
        auto_reconnect: bool,
    ) -> StreamKey {
        let stream = self.streams.add(callback);
        let size = request.len().saturating_sub(codec::PREFIX_LEN);
        if let Err(err) = self.check_size(size, "observe request", "election_observe") {
            self.cx.deliver(stream, StreamItem::Observe(Err(err)));
            return stream;
        }
        let key = self.observes.add(stream, request, auto_reconnect);
        self.streams.bind(stream, Owner::Observe(key));
        self.open_observe(key);
        stream
    }

    /// Starts server stream `path` with the framed request `body`, every message of which
    /// goes to `callback`; returns its call (to cancel with [`cancel_call`](Self::cancel_call)).
    pub(crate) fn start_sink(
        &mut self,
        path: &'static str,
        operation: &'static str,
        body: Bytes,
        callback: StreamCallback,
    ) -> CallKey {
        let stream = self.streams.add(callback);
        let call = self.add_call(path, operation, CallKind::Sink(stream), body, None);
        self.streams.bind(stream, Owner::Sink(call));
        call
    }

    /// Removes a stream at once: its callback never runs again. Returns the callback (if not
    /// out running), to be dropped once no borrow is held.
    pub(crate) fn cancel_stream(&mut self, key: StreamKey) -> Option<StreamCallback> {
        let (owner, callback) = self.streams.remove(key)?;
        match owner {
            Some(Owner::Watch(w)) => {
                self.watches.cancel(w);
                self.close_shared_if_unused(Shared::Watch);
            }
            Some(Owner::Keepalive(k)) => {
                self.keepalives.cancel(k, &mut self.cx);
                self.close_shared_if_unused(Shared::Keepalive);
            }
            Some(Owner::Observe(o)) => {
                if let Some(call) = self.observes.cancel(o, &mut self.cx) {
                    self.calls.remove(call, &mut self.cx);
                }
            }
            Some(Owner::Sink(call)) => {
                self.calls.remove(call, &mut self.cx);
            }
            None => {}
        }
        self.wakers.wake(CORE);
        callback
    }

    /// Takes stream `key`'s callback out to run it.
    pub(crate) fn take_callback(&mut self, key: StreamKey) -> Option<StreamCallback> {
        self.streams.take(key)
    }

    /// Puts a callback back after it ran (see [`Streams::restore`]).
    pub(crate) fn restore_callback(
        &mut self,
        key: StreamKey,
        callback: StreamCallback,
        delivered_final: bool,
    ) -> Option<StreamCallback> {
        self.streams.restore(key, callback, delivered_final)
    }

    /// Keeps a final item while its callback is out running (see [`Streams::defer_final`]).
    pub(crate) fn defer_final(&mut self, key: StreamKey, item: StreamItem) -> Option<StreamItem> {
        self.streams.defer_final(key, item)
    }

    /// The final item kept by [`defer_final`](Self::defer_final), once the callback is back.
    pub(crate) fn take_deferred(&mut self, key: StreamKey) -> Option<StreamItem> {
        self.streams.take_deferred(key)
    }

    /// Puts events whose callbacks did not run (a callback panicked) back at the front of
    /// the queue, in order.
    pub(crate) fn requeue(&mut self, events: Vec<Event>) {
        for e in events.into_iter().rev() {
            self.cx.events.push_front(e);
        }
    }

    /// Ends everything at once: the events already queued, then `CANCELLED` for every
    /// pending call and live stream, are returned for the client to run; the link is
    /// dropped. The core stays usable: a new operation connects again.
    pub(crate) fn close(&mut self, reason: &str) -> Vec<Event> {
        let cancelled = |operation| EtcdError::new(Code::Cancelled, reason, operation);
        let mut out: Vec<Event> = self.cx.events.drain(..).collect();
        for call in self.calls.drain(&mut self.cx) {
            match call.kind {
                CallKind::Unary { done, .. } => {
                    out.push(Event::Call(done, Err(cancelled(call.operation))));
                }
                CallKind::Sink(stream) => {
                    let item = StreamItem::Sink(Err(cancelled(call.operation)));
                    out.push(Event::Stream(stream, item));
                }
                CallKind::Health { .. }
                | CallKind::Sync { .. }
                | CallKind::Shared(_)
                | CallKind::Observe(_)
                | CallKind::Auth { .. } => {}
            }
        }
        self.auth.reset(&mut self.cx);
        let ended = self.watches.end_all(false, (Code::Cancelled, reason));
        self.deliver_watches(ended);
        self.keepalives.end_all(false, Code::Cancelled, reason, &mut self.cx);
        self.observes.end_all(Code::Cancelled, reason, &mut self.cx);
        for kind in [Shared::Watch, Shared::Keepalive] {
            let (stream, cx) = self.shared_cx(kind);
            stream.stop(true, cx);
            self.shared_lost(kind);
        }
        out.extend(self.cx.events.drain(..));
        self.link.close(&mut self.cx);
        self.health.stop(&mut self.cx);
        self.sync.stop(&mut self.cx);
        for work in self.alarms.drain(&mut self.cx) {
            out.push(Event::Local(Box::new(move || work(alarms::Fired::Closed))));
        }
        out
    }

    // ===== the drive =====

    /// Lets h2 make progress while anything was woken: reads what came in, opens streams
    /// for queued calls, sends what the shared streams have queued, polls woken calls; then
    /// asks for a connection if calls wait for one.
    ///
    /// Polling the h2 connection is the costliest step of a call, so it is done only when
    /// needed: at once for unread input (it may end the link, which must not be given new
    /// calls), and for anything else (frames to write after new requests, a freed stream's
    /// bookkeeping) once per round on the way out ([`Phase::Output`]), after the queued calls
    /// are opened, so that one poll writes them all. An input drive leaves such a wake for
    /// the output drive that follows it in the same turn.
    fn drive(&mut self, phase: Phase) {
        let mut ready = std::mem::take(&mut self.ready);
        // Work taken from the queue at the end of the last round (see `take_ready`).
        let mut more = false;
        for _ in 0..MAX_DRIVE_ROUNDS {
            let h2_due = phase == Phase::Output && self.h2_woken;
            if !more && !self.wakers.any_ready() && !h2_due {
                break;
            }
            self.take_ready(&mut ready);
            if self.link.draining().is_some() && self.calls.drained() {
                let why = self.link.draining().unwrap_or_default().to_string();
                self.link_lost(&why);
            }
            if self.link.transport().is_some_and(|t| t.has_unread_input()) {
                self.poll_connection();
            }
            self.open_queued();
            self.flush_shared();
            for index in ready.drain(..) {
                self.poll_call(index);
            }
            // What the messages just read queued (a cancel for an unknown watch id).
            self.flush_shared();
            more = false;
            if phase == Phase::Output {
                more = self.take_ready(&mut ready);
                if self.h2_woken {
                    self.poll_connection();
                }
            }
        }
        // Calls woken in the last round allowed wait for the next drive.
        if more {
            self.wakers.wake(CORE);
        }
        for key in ready.drain(..) {
            self.wakers.wake(key);
        }
        self.ready = ready;
        if self.link.is_down() {
            match self.calls.any_queued() {
                true => self.link.connect(self.cx.now),
                // The calls that were going round the endpoints are gone: a new round starts.
                false => self.link.forget_failures(),
            }
        }
    }

    /// Adds the woken call slots to `ready` (the connection's wake becomes `h2_woken`);
    /// whether anything but the connection was woken.
    fn take_ready(&mut self, ready: &mut Vec<usize>) -> bool {
        let mut woken = std::mem::take(&mut self.woken);
        self.wakers.take_ready(&mut woken);
        let mut more = false;
        for key in woken.drain(..) {
            match key {
                CONNECTION => self.h2_woken = true,
                CORE => more = true,
                _ => {
                    more = true;
                    ready.push(key);
                }
            }
        }
        self.woken = woken;
        more
    }

    /// Polls the connection; if it ended, delivers what its streams had already received,
    /// then takes the link down.
    fn poll_connection(&mut self) {
        self.h2_woken = false;
        self.h2_polls += 1;
        let Some(end) = self.link.poll(&self.wakers, &mut self.cx) else { return };
        let reason = self.link.end_reason(end);
        // A response may have been read in full in the same read as the end of input: h2
        // keeps it in its stream, so every open call is polled before anything fails. Calls
        // left unfinished fail below, with the link's reason rather than h2's.
        for key in self.calls.open() {
            self.poll_call(key.index());
        }
        self.link_lost(&reason);
    }

    /// Opens h2 streams for queued calls while the link takes them.
    fn open_queued(&mut self) {
        while self.link.takes_streams() {
            let Some(key) = self.calls.next_queued() else { return };
            if !self.auth.allows(key) {
                return; // calls wait behind the Authenticate call
            }
            let t = self.link.transport().expect("up");
            match t.poll_ready(&self.wakers) {
                None => return,
                // GOAWAY: the streams below its last id still finish on this link.
                Some(Err(e)) if e.is_go_away() && e.is_remote() => {
                    return self.drain(format!("server sent GOAWAY: {e}"));
                }
                Some(Err(e)) => return self.link_lost(&h2_error(&e).1),
                Some(Ok(())) => {}
            }
            self.calls.pop_queued();
            let Some(call) = self.calls.get(key) else { continue };
            let CallState::Queued(body) = &call.state else { continue };
            let (path, stream, body) = (call.path, call.kind.is_stream(), body.clone());
            // Authenticate never carries the (stale) token it replaces.
            let token = match call.kind {
                CallKind::Auth { .. } => None,
                _ => self.auth.token().cloned(),
            };
            // A shared stream opens with its first messages (a create per watch, a renewal
            // per lease); a unary call sends its one request and half-closes.
            let (body, end) = match call.kind {
                CallKind::Shared(kind) => (self.shared_opened(kind), false),
                _ => (body, true),
            };
            let request = build_request(self.link.endpoint(), path, token.as_ref(), stream);
            let (generation, endpoint, epoch) =
                (self.link.generation(), self.link.endpoint_index(), self.auth.epoch());
            let t = self.link.transport().expect("up");
            let sent_mark = t.produced();
            match t.open(request, body, end) {
                Ok(h2) => {
                    let call = self.calls.get_mut(key).expect("still there");
                    call.state = CallState::Open(h2, Reader::new(self.max_response_bytes));
                    call.auth_epoch = epoch;
                    call.link = generation;
                    call.sent_mark = sent_mark;
                    if let CallKind::Health { sent_to, .. } = &mut call.kind {
                        *sent_to = Some(self.link.endpoints()[endpoint].clone());
                    }
                    self.wakers.wake(key.index());
                }
                Err(e) => {
                    let (code, msg) = h2_error(&e);
                    self.fail_call(key, code, msg);
                }
            }
        }
    }

    /// Polls call slot `index` until its stream has nothing more to say.
    fn poll_call(&mut self, index: usize) {
        let Some(key) = self.calls.key_at(index) else { return };
        loop {
            let Some(call) = self.calls.get_mut(key) else { return };
            let CallState::Open(stream, reader) = &mut call.state else { return };
            // A framing error after messages of the same chunk: they went out, now it ends.
            if let Some((code, msg)) = reader.take_failure() {
                return self.fail_call(key, code, msg);
            }
            let Some(event) = stream.poll(&mut self.wakers, index) else { return };
            let from_server = !matches!(event, StreamEvent::Failed(_));
            if let StreamEvent::Failed(e) = &event {
                if let Some(why) = unprocessed(e) {
                    if e.is_go_away() {
                        self.drain(why);
                    }
                    if self.retry(key, Cause::Unprocessed) {
                        return;
                    }
                }
                // The link's loss reports it, with the link's reason.
                if self.link.failing() {
                    return;
                }
            }
            let Some(call) = self.calls.get_mut(key) else { return };
            let on_current_link = call.link == self.link.generation();
            let CallState::Open(_, reader) = &mut call.state else { return };
            match reader.apply(event) {
                Step::Continue => {}
                Step::Messages(msgs) => {
                    if let Err(e) = self.on_messages(key, msgs) {
                        return self.finish(key, Err(e));
                    }
                }
                Step::Finished(Ok(())) => {
                    if let Err(why) = self.check_order(key) {
                        warn!(target: "evetcd", endpoint = %self.link.endpoint(), why, "stale read");
                        self.leave(format!("{} is behind: {why}", self.link.endpoint()));
                        return self.fail_call(key, Code::Unavailable, why);
                    }
                    return self.finish(key, Ok(()));
                }
                Step::Finished(Err((code, msg))) => {
                    if on_current_link && leaves_member(code, &msg, from_server) {
                        let endpoint = self.link.endpoint().to_string();
                        self.leave(format!("{endpoint} is unavailable: {msg}"));
                    }
                    return self.fail_call(key, code, msg);
                }
            }
        }
    }

    /// The ordering guard's verdict on a unary call's response (see `ordering.rs`).
    fn check_order(&mut self, key: CallKey) -> Result<(), String> {
        match self.calls.get(key) {
            Some(call) => match &call.kind {
                CallKind::Unary { response: Some(bytes), .. } => {
                    self.ordering.check(call.path, call.floor, bytes)
                }
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Hands a call's messages to what they are for.
    fn on_messages(&mut self, key: CallKey, msgs: Vec<Bytes>) -> Result<(), (Code, String)> {
        let Some(call) = self.calls.get_mut(key) else { return Ok(()) };
        match &mut call.kind {
            CallKind::Unary { response, .. }
            | CallKind::Auth { response }
            | CallKind::Sync { response }
            | CallKind::Health { response, .. } => {
                if msgs.len() > 1 || response.is_some() {
                    let msg = "more than one response message for a unary call";
                    return Err((Code::Internal, msg.to_string()));
                }
                *response = msgs.into_iter().next();
                Ok(())
            }
            CallKind::Sink(stream) => {
                let stream = *stream;
                for m in msgs {
                    self.cx.deliver(stream, StreamItem::Sink(Ok(Some(m))));
                }
                Ok(())
            }
            CallKind::Observe(o) => {
                let o = *o;
                self.observes.on_messages(o, msgs, &mut self.cx)
            }
            CallKind::Shared(kind) => {
                let kind = *kind;
                self.on_shared_messages(kind, msgs)
            }
        }
    }

    // ===== failures =====

    fn policy(&self) -> Policy {
        Policy {
            credentials: self.auth.has_credentials(),
            max_retries: self.max_retries,
            retry_attempts: self.retry_attempts,
            retry_backoff: self.retry_backoff,
        }
    }

    /// Re-queues unary call `key` if [`decide`] says so for `cause`; whether it did.
    fn retry(&mut self, key: CallKey, cause: Cause<'_>) -> bool {
        let policy = self.policy();
        let epoch = self.auth.epoch();
        let Some(call) = self.calls.get_mut(key) else { return false };
        let CallKind::Unary { retried, retryable, .. } = &mut call.kind else { return false };
        let subject = Subject::Unary {
            resends: call.resends,
            retried_after_auth: *retried,
            newer_token: call.auth_epoch < epoch,
            retryable: *retryable,
            retries: call.retries,
        };
        let operation = call.operation;
        let decision = decide(subject, cause, policy);
        debug!(target: "evetcd", operation, ?cause, ?decision, retries = call.retries, "call failed");
        let requeued = match decision {
            Decision::Resend => self.calls.resend(key),
            Decision::Retry { after } => {
                call.retries += 1;
                if let Cause::Status(code, msg) = cause {
                    call.last_error = Some(format!("{}: {msg}", code.name()));
                }
                let delay = self.cx.jittered(after);
                self.calls.park(key);
                self.cx.after(delay, Timer::Retry(key));
                return true;
            }
            Decision::Reauthenticate { authenticate } => {
                *retried = true;
                self.calls.requeue(key);
                if authenticate {
                    self.start_auth();
                }
                true
            }
            _ => false,
        };
        if requeued {
            self.wakers.wake(CORE);
        }
        requeued
    }

    /// Call `key` failed with `code`: retried if [`decide`] says so, else ended.
    fn fail_call(&mut self, key: CallKey, code: Code, msg: String) {
        if !self.retry(key, Cause::Status(code, &msg)) {
            self.finish(key, Err((code, msg)));
        }
    }

    /// Ends call `key` with `result`: a unary call's completion is queued; a stream's
    /// machine learns that it ended.
    fn finish(&mut self, key: CallKey, result: Result<(), (Code, String)>) {
        let Some(call) = self.calls.remove(key, &mut self.cx) else { return };
        if self.link.draining().is_some() {
            self.wakers.wake(CORE); // the link may end now
        }
        let operation = call.operation;
        let error = |(code, msg): (Code, String)| EtcdError::new(code, msg, operation);
        match call.kind {
            CallKind::Unary { done, response, .. } => {
                let result = result.map_err(error).and_then(|()| {
                    let msg = "response had no message";
                    response.ok_or_else(|| EtcdError::new(Code::Internal, msg, operation))
                });
                self.cx.emit(Event::Call(done, result));
            }
            CallKind::Auth { response } => self.auth_done(response, result),
            CallKind::Shared(kind) => self.shared_ended(kind, result),
            CallKind::Observe(o) => {
                let policy = self.policy();
                let after = self.observes.ended(o, result, policy, &mut self.cx);
                debug!(target: "evetcd", stream = "observe", ?after, "stream ended");
                match after {
                    observe::AfterEnd::Reopen { authenticate } => {
                        self.start_auth_if(authenticate);
                        self.open_observe(o);
                    }
                    observe::AfterEnd::Wait { authenticate } => self.start_auth_if(authenticate),
                    observe::AfterEnd::Over => {}
                }
            }
            CallKind::Sink(stream) => {
                self.cx.deliver(stream, StreamItem::Sink(result.map(|()| None).map_err(error)));
            }
            CallKind::Sync { response } => {
                if let Some(endpoints) = self.sync.finished(response.filter(|_| result.is_ok())) {
                    self.set_endpoints(endpoints);
                }
            }
            CallKind::Health { sent_to, response } => {
                let Some(endpoint) = sent_to.or_else(|| self.link.peer().cloned()) else {
                    return; // never sent, and no link was ever tried
                };
                let name = endpoint.to_string();
                let healthy = self.health.checked(
                    name.clone(),
                    response.filter(|_| result.is_ok()),
                    &mut self.cx,
                );
                // Leave only the member checked, if it is still the one in use.
                let in_use = self.link.endpoints().get(self.link.endpoint_index());
                if !healthy && in_use == Some(&endpoint) {
                    debug!(target: "evetcd", endpoint = %name, "health check failed");
                    self.leave(format!("health check of {name} failed"));
                }
            }
        }
    }

    fn expire(&mut self, key: CallKey) {
        if let Some(call) = self.calls.get(key) {
            // The timer fired, so its key is spent; the cancel in `remove` is a no-op.
            let mut msg =
                format!("deadline of {:?} exceeded", call.timeout.unwrap_or(self.timeout));
            if let Some(last) = &call.last_error {
                msg = format!("{msg} (retried {} times; last: {last})", call.retries);
            }
            self.fail_call(key, Code::DeadlineExceeded, msg);
        }
    }

    /// Takes the link down. Calls that were sent fail with `UNAVAILABLE` (unless none of
    /// their bytes left: they are sent again); queued ones wait for the next link. After a
    /// failed connection attempt they wait for the next endpoint only until every endpoint
    /// failed in a row, then fail too.
    fn link_lost(&mut self, reason: &str) {
        let endpoint = self.link.endpoint().to_string();
        let lost = self.link.lost(&mut self.cx);
        if !lost.was_up || lost.refused {
            self.link.record_failure(reason, self.cx.now);
        }
        if lost.was_up {
            info!(target: "evetcd", %endpoint, generation = lost.generation, reason, next = %self.link.endpoint(), "link lost");
        } else if lost.every_endpoint_failed {
            warn!(target: "evetcd", reason, "every endpoint failed in a row");
        }
        self.auth.reset(&mut self.cx);
        self.wakers.wake(CORE);
        if !lost.was_up && !lost.every_endpoint_failed {
            return; // the waiting calls try the next endpoint
        }
        let doomed = if lost.was_up { self.calls.open() } else { self.calls.all() };
        for key in doomed {
            let Some(call) = self.calls.get(key) else { continue };
            // A call none of whose bytes left before the link died was never processed.
            let never_left =
                lost.was_up && call.link == lost.generation && call.sent_mark >= lost.sent;
            if never_left && self.retry(key, Cause::Unprocessed) {
                continue;
            }
            self.fail_call(key, Code::Unavailable, reason.to_string());
        }
    }

    /// The link takes no new streams and ends once its calls with a deadline are done.
    fn drain(&mut self, why: String) {
        info!(target: "evetcd", endpoint = %self.link.endpoint(), why = %why, "draining the link");
        self.link.start_drain(why, self.cx.now);
        self.wakers.wake(CORE);
    }

    /// The member in use is unfit: drain its link so the next endpoint takes over.
    fn leave(&mut self, why: String) {
        info!(target: "evetcd", endpoint = %self.link.endpoint(), why = %why, "leaving the member");
        self.link.leave(why, self.cx.now);
        self.wakers.wake(CORE);
    }

    fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::Deadline(key) => self.expire(key),
            Timer::Retry(key) => {
                if self.calls.unpark(key) {
                    self.wakers.wake(CORE);
                }
            }
            Timer::Connect(generation) => {
                if let Some(msg) = self.link.connect_timed_out(generation) {
                    self.link_lost(&msg);
                }
            }
            Timer::AuthRetry => {
                if self.auth.retry_due() {
                    self.start_auth();
                }
            }
            Timer::PingDue(generation) => {
                let busy = self.calls.any_open();
                if self.link.ping_due(generation, busy, &mut self.cx) {
                    self.wakers.wake(CONNECTION);
                }
            }
            Timer::PingTimeout(generation) => {
                if let Some(msg) = self.link.ping_timed_out(generation) {
                    self.link.error(&msg);
                }
            }
            Timer::Reopen(kind) => {
                if self.shared_mut(kind).backoff_over() {
                    self.ensure_shared(kind);
                }
            }
            Timer::Renew(key) => {
                if self.keepalives.renewal_due(key) {
                    self.wakers.wake(CORE);
                }
            }
            Timer::ObserveReopen(key) => {
                if self.observes.backoff_over(key) {
                    self.open_observe(key);
                }
            }
            Timer::Sync => {
                if let Some(body) = self.sync.tick(&mut self.cx) {
                    let path = <cluster_rpc::MemberList as Rpc>::PATH;
                    let kind = CallKind::Sync { response: None };
                    self.add_call(path, "auto_sync", kind, body, Some(self.timeout));
                }
            }
            Timer::Alarm(key) => {
                if let Some(work) = self.alarms.fired(key) {
                    self.cx.emit(Event::Local(Box::new(move || work(alarms::Fired::Due))));
                }
            }
            Timer::Health => {
                if let Some((body, deadline)) = self.health.tick(self.timeout, &mut self.cx) {
                    let path = <maintenance_rpc::Status as Rpc>::PATH;
                    let kind = CallKind::Health { sent_to: None, response: None };
                    self.add_call(path, "health", kind, body, Some(deadline));
                }
            }
        }
    }

    // ===== auth =====

    /// Queues an Authenticate call at the front, unless one is under way or scheduled or no
    /// credentials are held.
    fn start_auth(&mut self) {
        let Some(body) = self.auth.request() else { return };
        let path = <auth_rpc::Authenticate as Rpc>::PATH;
        let kind = CallKind::Auth { response: None };
        let deadline = Some(self.timeout);
        let key = self.calls.add(path, "authenticate", kind, body, deadline, true, &mut self.cx);
        debug!(target: "evetcd", "authenticating");
        self.auth.started(key);
        self.wakers.wake(CORE);
    }

    fn start_auth_if(&mut self, authenticate: bool) {
        if authenticate {
            self.start_auth();
        }
    }

    fn auth_done(&mut self, response: Option<Bytes>, result: Result<(), (Code, String)>) {
        let link_up = self.link.is_up();
        let outcome = self.auth.finished(response, result, link_up, &mut self.cx);
        debug!(target: "evetcd", ?outcome, "authenticate ended");
        self.wakers.wake(CORE);
        if let AuthOutcome::Fail(code, msg) = outcome {
            // The calls waiting for a token that will not come.
            for key in self.calls.queued_unary() {
                self.finish(key, Err((code, msg.clone())));
            }
        }
    }

    // ===== shared streams and observers =====

    fn shared_mut(&mut self, kind: Shared) -> &mut SharedStream {
        self.shared_cx(kind).0
    }

    /// The stream's state and the context, for a call that needs both.
    fn shared_cx(&mut self, kind: Shared) -> (&mut SharedStream, &mut Cx) {
        match kind {
            Shared::Watch => (&mut self.watch_stream, &mut self.cx),
            Shared::Keepalive => (&mut self.keepalive_stream, &mut self.cx),
        }
    }

    fn shared_wanted(&self, kind: Shared) -> bool {
        match kind {
            Shared::Watch => self.watches.wants_stream(),
            Shared::Keepalive => self.keepalives.wants_stream(),
        }
    }

    /// Queues the stream's call when something needs it and none exists or waits.
    fn ensure_shared(&mut self, kind: Shared) {
        if !self.shared_mut(kind).is_idle() || !self.shared_wanted(kind) {
            return;
        }
        let (path, operation) = match kind {
            Shared::Watch => (<watch_rpc::Watch as Rpc>::PATH, "watch"),
            Shared::Keepalive => (<lease_rpc::LeaseKeepAlive as Rpc>::PATH, "keepalive"),
        };
        let key = self.add_call(path, operation, CallKind::Shared(kind), Bytes::new(), None);
        self.shared_mut(kind).opened(key);
    }

    /// Resets the stream once nothing needs it (etcd keeps a stream's resources otherwise).
    fn close_shared_if_unused(&mut self, kind: Shared) {
        if !self.shared_wanted(kind) {
            self.restart_shared(kind, false);
        }
    }

    /// Ends the stream, whatever its state; `reopen`: open a new one at once (queued behind
    /// any Authenticate call, so it carries the new token), its users resuming on it.
    fn restart_shared(&mut self, kind: Shared, reopen: bool) {
        let (stream, cx) = self.shared_cx(kind);
        if let Some(call) = stream.stop(!reopen, cx) {
            self.calls.remove(call, &mut self.cx);
        }
        self.shared_lost(kind);
        if reopen {
            self.ensure_shared(kind);
        }
    }

    /// The stream is being opened: its first messages (a create per watch, a renewal per
    /// lease).
    fn shared_opened(&mut self, kind: Shared) -> Bytes {
        match kind {
            Shared::Watch => {
                self.watches.on_stream_opened();
                encode_all(&self.watches.take_outbox())
            }
            Shared::Keepalive => self.keepalives.on_stream_opened(&mut self.cx),
        }
    }

    fn shared_lost(&mut self, kind: Shared) {
        match kind {
            Shared::Watch => self.watches.on_stream_lost(),
            Shared::Keepalive => self.keepalives.on_stream_lost(&mut self.cx),
        }
    }

    /// Sends what each open shared stream has queued.
    fn flush_shared(&mut self) {
        for kind in [Shared::Watch, Shared::Keepalive] {
            let Some(key) = self.shared_mut(kind).call() else { continue };
            let body = match kind {
                Shared::Watch if self.watches.has_outbox() => {
                    encode_all::<WatchRequest>(&self.watches.take_outbox())
                }
                Shared::Keepalive if self.keepalives.has_outbox() => self.keepalives.take_outbox(),
                _ => continue,
            };
            let Some(call) = self.calls.get_mut(key) else { continue };
            let CallState::Open(stream, _) = &mut call.state else { continue };
            if let Err(e) = stream.send(body, false) {
                self.finish(key, Err(h2_error(&e)));
            }
        }
    }

    /// Hands a stream's messages to their machine; a message that does not decode ends the
    /// stream.
    fn on_shared_messages(&mut self, kind: Shared, msgs: Vec<Bytes>) -> Result<(), (Code, String)> {
        let mut works = false;
        let undecodable = |e: prost::DecodeError| {
            (Code::Internal, format!("cannot decode a {kind:?} response: {e}"))
        };
        for m in msgs {
            match kind {
                Shared::Watch => {
                    let resp = WatchResponse::decode(m).map_err(undecodable)?;
                    // A created reply alone does not prove the stream works (a create that
                    // makes etcd end the stream comes right after one).
                    works |= !resp.created;
                    let mut out = Vec::new();
                    self.watches.on_response(resp, &mut out);
                    self.deliver_watches(out);
                }
                Shared::Keepalive => {
                    let resp = LeaseKeepAliveResponse::decode(m).map_err(undecodable)?;
                    works = true;
                    self.keepalives.on_response(resp, &mut self.cx);
                }
            }
        }
        if works {
            self.shared_mut(kind).worked();
        }
        if kind == Shared::Watch && self.watches.take_needs_reauth() {
            // A create was refused for a stale token: authenticate again, then re-open the
            // stream (its token is the one it was opened with), resuming every watch.
            self.start_auth();
            self.restart_shared(Shared::Watch, true);
            // Once per stream: refusals on the stream opened with the fresh token are final.
            self.watches.reauth_spent = true;
        }
        self.close_shared_if_unused(kind);
        Ok(())
    }

    /// The stream's call ended (already removed): users that asked for no reconnect end;
    /// the others wait for it to re-open, or get the error once it gives up.
    fn shared_ended(&mut self, kind: Shared, result: Result<(), (Code, String)>) {
        self.shared_lost(kind);
        let (code, message) = result.clone().err().unwrap_or_else(ended_by_server);
        self.end_users(kind, true, code, &message);
        let wanted = self.shared_wanted(kind);
        let policy = self.policy();
        let (stream, cx) = self.shared_cx(kind);
        let after = stream.ended(result, wanted, policy, cx);
        match after {
            shared::AfterEnd::GiveUp if wanted => {
                warn!(target: "evetcd", stream = ?kind, ?code, message, "stream gave up")
            }
            _ if wanted => {
                debug!(target: "evetcd", stream = ?kind, ?code, message, ?after, "stream ended")
            }
            _ => {}
        }
        match after {
            shared::AfterEnd::GiveUp => self.end_users(kind, false, code, &message),
            shared::AfterEnd::Reopen { authenticate } => {
                self.start_auth_if(authenticate);
                self.ensure_shared(kind);
            }
            shared::AfterEnd::Wait { authenticate } => self.start_auth_if(authenticate),
        }
    }

    /// Queues one final error for each user of the stream (only those that asked for no
    /// reconnect, with `only_no_reconnect`).
    fn end_users(&mut self, kind: Shared, only_no_reconnect: bool, code: Code, message: &str) {
        match kind {
            Shared::Watch => {
                let out = self.watches.end_all(only_no_reconnect, (code, message));
                self.deliver_watches(out);
            }
            Shared::Keepalive => {
                self.keepalives.end_all(only_no_reconnect, code, message, &mut self.cx);
            }
        }
    }

    fn deliver_watches(&mut self, out: Vec<watch::Delivery>) {
        for (stream, item) in out {
            self.cx.deliver(stream, StreamItem::Watch(item));
        }
    }

    fn open_observe(&mut self, key: registry::ObserveKey) {
        let Some(request) = self.observes.request(key) else { return };
        let path = <election_rpc::Observe as Rpc>::PATH;
        let call = self.add_call(path, "election_observe", CallKind::Observe(key), request, None);
        self.observes.opened(key, call);
    }

    /// A link came up: streams waiting out a backoff re-open now.
    fn cut_backoffs(&mut self) {
        for kind in [Shared::Watch, Shared::Keepalive] {
            let (stream, cx) = self.shared_cx(kind);
            if stream.cut_backoff(cx) {
                self.ensure_shared(kind);
            }
        }
        for key in self.observes.cut_backoffs(&mut self.cx) {
            self.open_observe(key);
        }
    }

    // ===== helpers =====

    /// Adds a call to the queue; a connection is made for it on the next drive.
    fn add_call(
        &mut self,
        path: &'static str,
        operation: &'static str,
        kind: CallKind,
        body: Bytes,
        deadline: Option<Duration>,
    ) -> CallKey {
        let key = self.calls.add(path, operation, kind, body, deadline, false, &mut self.cx);
        self.wakers.wake(CORE); // opened by the next drive
                                // Health checks and syncs stopped by `close` start again with the next operation.
        self.health.resume(&mut self.cx);
        self.sync.resume(&mut self.cx);
        key
    }

    /// `INVALID_ARGUMENT` for a message above the request size limit (never sent).
    fn check_size(
        &self,
        size: usize,
        what: &str,
        operation: &'static str,
    ) -> Result<(), EtcdError> {
        if size <= self.max_request_bytes {
            return Ok(());
        }
        let limit = self.max_request_bytes;
        let msg = format!("{what} of {size} bytes exceeds the limit of {limit} bytes; not sent");
        Err(EtcdError::invalid(msg, operation))
    }
}

/// Frames messages back to back, for one DATA frame.
fn encode_all<M: Message>(messages: &[M]) -> Bytes {
    let total = messages.iter().map(|m| codec::PREFIX_LEN + m.encoded_len()).sum();
    let mut out = BytesMut::with_capacity(total);
    for m in messages {
        codec::encode_into(&mut out, m);
    }
    out.freeze()
}

/// The HTTP/2 request for a gRPC call: absolute URI (so `:scheme`, `https` over TLS as
/// grpc-go sends, and `:authority` are sent), gRPC content type, `te: trailers`, the auth
/// token when there is one, and `hasleader` on streams: they ask etcd to end them when the
/// member loses its leader, so that they move on instead of waiting on a partitioned member.
fn build_request(
    endpoint: &Endpoint,
    path: &'static str,
    token: Option<&HeaderValue>,
    stream: bool,
) -> Request<()> {
    // Assembled from parts, not through the builders: no parse of the URI or of a header
    // name, no closures; the authority is the endpoint's, already parsed.
    const TOKEN: HeaderName = HeaderName::from_static("token");
    const HASLEADER: HeaderName = HeaderName::from_static("hasleader");
    let mut uri = http::uri::Parts::default();
    uri.scheme =
        Some(if endpoint.tls { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP });
    uri.authority = Some(endpoint.authority());
    uri.path_and_query = Some(PathAndQuery::from_static(path));
    let mut req = Request::new(());
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_parts(uri).expect("scheme, authority and path are all set");
    let headers = req.headers_mut();
    headers.reserve(4);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if let Some(t) = token {
        headers.insert(TOKEN, t.clone());
    }
    if stream {
        headers.insert(HASLEADER, HeaderValue::from_static("true"));
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
