//! One connection to one member: which endpoint, its state, its generation, whether it
//! drains, and the keepalive PINGs that tell a frozen peer from a quiet one. The IO layer
//! hears what to do through [`LinkCommand`]s; the core, whether the link works.
//!
//! ```text
//!   Down ──connect (work queued)──► Connecting ──connected──► Up ──GOAWAY, member
//!    ▲                                  │                      │   UNAVAILABLE,
//!    └── connect failed, connect timer ─┘  EOF, read/write     │   unhealthy
//!    ├──────────────────────────────────── error, h2 error, ───┘       │
//!    │                                     PING timeout                ▼
//!    └──────── no call with a deadline left ◄── Up, draining (no new streams)
//! ```
//!
//! PINGs (a deadline only fires per call, and a watch has none, so without them a dead
//! connection with only streams on it would go unnoticed until TCP gives up):
//!
//! ```text
//!   Off ──up──► Scheduled ──due, calls or streams open──► Waiting ──PONG──► Scheduled
//!                  ▲   │                                     │
//!                  └───┘ due while idle: no PING (etcd       └──timeout──► the link is dead
//!                        answers pings on idle connections
//!                        with GOAWAY "too_many_pings")
//! ```
//!
//! The endpoint rotates once per link that ends. The design allows more than one link at a
//! time (each is its own value); the core holds one today.

use super::cx::{Cx, Timer};
use crate::endpoint::Endpoint;
use crate::h2io::{Transport, Wakers};
use crate::info::{ConnectFailure, LinkState, CONNECT_FAILURES_KEPT};
use crate::timer::TimerKey;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the IO layer must do for the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkCommand {
    /// Drop any socket and connect to this endpoint; report the outcome with
    /// `handle_connected` (after `handle_handshaking` and the handshake, for TLS) or
    /// `handle_connect_failed`. `keepalive`: TCP keepalive interval and timeout, if on.
    Connect { endpoint: Endpoint, keepalive: Option<(Duration, Duration)> },
    /// The link is gone: drop the socket (a TLS socket says close_notify first).
    Close,
}

/// The link's settings.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    /// Each endpoint, in order of preference.
    pub(crate) endpoints: Vec<Endpoint>,
    /// How long a connect (and TLS handshake) may take before the endpoint counts as failed.
    pub(crate) connect_timeout: Duration,
    /// Interval of keepalive PINGs while calls or streams are open (`None`: off).
    pub(crate) keepalive_time: Option<Duration>,
    /// How long a PING may go unanswered before the connection counts as dead.
    pub(crate) keepalive_timeout: Duration,
}

enum State {
    Down,
    /// The connect timer starts when the IO layer takes the command (`None` until then).
    Connecting(Option<TimerKey>),
    /// Boxed: a link changes state rarely.
    Up(Box<Transport>),
}

#[derive(Debug, Default, Clone, Copy)]
enum Ping {
    /// No keepalive (turned off, or no connection).
    #[default]
    Off,
    /// The next PING is due when this timer fires.
    Scheduled(TimerKey),
    /// A PING is out; the connection is dead if this timer fires first.
    Waiting(TimerKey),
}

/// How a link ended, for the core to settle its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    /// The generation of the link that ended.
    pub(crate) generation: u64,
    /// Whether it had been up (else a connection attempt failed).
    pub(crate) was_up: bool,
    /// Bytes that left on it: a call whose bytes started at or after this mark was never
    /// processed. 0 for a link refused before the server spoke.
    pub(crate) sent: u64,
    /// A connection attempt failed and every endpoint failed in a row: the waiting calls
    /// give up. (Otherwise they wait for the next endpoint.)
    pub(crate) every_endpoint_failed: bool,
    /// It was refused before the server spoke (see [`Link::refused`]).
    pub(crate) refused: bool,
}

/// One connection and its endpoint rotation (see the module diagram).
pub(crate) struct Link {
    cfg: LinkConfig,
    state: State,
    /// Why the established link is ending, once known (end of input, a read or write
    /// error, or h2's own verdict). While set, stream failures are left for the link's
    /// loss to report with this reason.
    error: Option<String>,
    /// Index into the endpoints of the endpoint in use.
    endpoint: usize,
    /// Counts connections (timers of an old link are recognised).
    generation: u64,
    /// Why the link takes no new streams: it ends once the calls with a deadline on it are
    /// done.
    draining: Option<String>,
    /// Connection attempts that failed in a row.
    connect_failures: usize,
    /// The latest connection attempt is in its TLS handshake.
    handshaking: bool,
    /// The link was refused before the server spoke.
    refused: bool,
    /// The endpoint list changed under the link: the next one starts at its first endpoint.
    restart_at_first: bool,
    ping: Ping,
    commands: VecDeque<LinkCommand>,
    /// When the link entered its [`LinkState`] (see [`info`](Self::info)).
    since: Instant,
    /// The endpoint of the latest connection attempt, kept once it ends (unlike `endpoint`,
    /// it still names it after the list changed under the link).
    peer: Option<Endpoint>,
    /// The latest failed connection attempts, oldest first (at most
    /// `CONNECT_FAILURES_KEPT`).
    failures: VecDeque<ConnectFailure>,
}

impl Link {
    /// A link with no connection yet, since `now`.
    pub(crate) fn new(cfg: LinkConfig, now: Instant) -> Link {
        Link {
            cfg,
            state: State::Down,
            error: None,
            endpoint: 0,
            generation: 0,
            draining: None,
            connect_failures: 0,
            handshaking: false,
            refused: false,
            restart_at_first: false,
            ping: Ping::Off,
            commands: VecDeque::new(),
            since: now,
            peer: None,
            failures: VecDeque::new(),
        }
    }

    // ===== state =====

    pub(crate) fn is_down(&self) -> bool {
        matches!(self.state, State::Down)
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    pub(crate) fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting(_))
    }

    /// Whether new streams may be opened on it (up, not draining).
    pub(crate) fn takes_streams(&self) -> bool {
        self.is_up() && self.draining.is_none()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The endpoint in use (or about to be).
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.cfg.endpoints[self.endpoint]
    }

    pub(crate) fn endpoint_index(&self) -> usize {
        self.endpoint
    }

    /// The link's failure, once known (see `error`).
    pub(crate) fn failing(&self) -> bool {
        self.error.is_some()
    }

    /// Why it drains, if it does.
    pub(crate) fn draining(&self) -> Option<&str> {
        self.draining.as_deref()
    }

    /// Its state as `Client::info` reports it, and since when.
    pub(crate) fn info(&self) -> (LinkState, Instant) {
        let state = match &self.state {
            State::Down => LinkState::Idle,
            State::Connecting(_) if self.handshaking => LinkState::Handshaking,
            State::Connecting(_) => LinkState::Connecting,
            State::Up(_) if self.draining.is_some() => LinkState::Draining,
            State::Up(_) => LinkState::Connected,
        };
        (state, self.since)
    }

    /// The endpoint of the latest connection attempt: the link's, while there is one.
    pub(crate) fn peer(&self) -> Option<&Endpoint> {
        self.peer.as_ref()
    }

    /// The latest failed connection attempts, oldest first.
    pub(crate) fn connect_failures(&self) -> impl Iterator<Item = &ConnectFailure> {
        self.failures.iter()
    }

    /// Keeps the latest connection attempt as failed with `error`, forgetting the oldest
    /// beyond `CONNECT_FAILURES_KEPT`.
    pub(crate) fn record_failure(&mut self, error: &str, at: Instant) {
        let Some(endpoint) = &self.peer else { return };
        if self.failures.len() == CONNECT_FAILURES_KEPT {
            self.failures.pop_front();
        }
        let (endpoint, error) = (endpoint.to_string(), error.to_string());
        self.failures.push_back(ConnectFailure { endpoint, error, at });
    }

    /// The h2 connection, while up.
    pub(crate) fn transport(&mut self) -> Option<&mut Transport> {
        match &mut self.state {
            State::Up(t) => Some(t),
            _ => None,
        }
    }

    /// What the IO layer must do next; taking a connect starts its timeout.
    pub(crate) fn poll_command(&mut self, cx: &mut Cx) -> Option<LinkCommand> {
        let command = self.commands.pop_front()?;
        if let (LinkCommand::Connect { .. }, State::Connecting(timer @ None)) =
            (&command, &mut self.state)
        {
            *timer = Some(cx.after(self.cfg.connect_timeout, Timer::Connect(self.generation)));
        }
        Some(command)
    }

    /// The link ends: a connect not taken yet is dropped, and the socket closed.
    fn close_socket(&mut self) {
        self.commands.retain(|c| !matches!(c, LinkCommand::Connect { .. }));
        self.commands.push_back(LinkCommand::Close);
    }

    // ===== transitions =====

    /// Down → Connecting at `now`: asks the IO layer to connect to the endpoint in use.
    pub(crate) fn connect(&mut self, now: Instant) {
        if !self.is_down() {
            return;
        }
        self.state = State::Connecting(None);
        self.since = now;
        self.handshaking = false;
        self.peer = Some(self.endpoint().clone());
        let keepalive = self.cfg.keepalive_time.map(|t| (t, self.cfg.keepalive_timeout));
        self.commands
            .push_back(LinkCommand::Connect { endpoint: self.endpoint().clone(), keepalive });
    }

    /// The TLS handshake started at `now`: the connect timeout goes on, and its message
    /// says so.
    pub(crate) fn handshaking(&mut self, now: Instant) {
        if self.is_connecting() && !self.handshaking {
            self.since = now;
        }
        self.handshaking = self.is_connecting();
    }

    /// Connecting → Up: h2's preface and SETTINGS go out. `Err`: h2 refused to start, and the
    /// link is to be settled as a failed attempt.
    pub(crate) fn connected(&mut self, wakers: &Wakers, cx: &mut Cx) -> Result<bool, String> {
        let State::Connecting(timer) = self.state else { return Ok(false) };
        if let Some(timer) = timer {
            cx.cancel(timer);
        }
        let t = Transport::handshake(wakers).map_err(|e| format!("http2: {e}"))?;
        self.state = State::Up(Box::new(t));
        self.since = cx.now;
        self.connect_failures = 0;
        self.schedule_ping(cx);
        Ok(true)
    }

    /// The established link broke: h2 reads the end of input, and the calls that were sent
    /// will report `reason`.
    pub(crate) fn error(&mut self, reason: &str) {
        if let State::Up(t) = &self.state {
            t.push_eof();
            self.error.get_or_insert_with(|| reason.to_string());
        }
    }

    /// The link broke before the server sent a byte: nothing on it was processed.
    pub(crate) fn refused(&mut self, reason: &str) {
        if self.is_up() {
            self.refused = true;
            self.error(reason);
        }
    }

    /// The connect timer of link `generation` fired: the message for its calls, if it was
    /// still connecting.
    pub(crate) fn connect_timed_out(&self, generation: u64) -> Option<String> {
        if generation != self.generation || !self.is_connecting() {
            return None;
        }
        let stage = if self.handshaking { "TLS handshake with" } else { "connect to" };
        Some(format!("{stage} {} timed out after {:?}", self.endpoint(), self.cfg.connect_timeout))
    }

    /// The link takes no new streams from `now` on, and ends once its calls with a deadline
    /// are done; the next endpoint is used then.
    pub(crate) fn start_drain(&mut self, why: String, now: Instant) {
        if self.is_up() && self.draining.is_none() {
            self.draining = Some(why);
            self.since = now;
        }
    }

    /// The member in use is unfit (`why`): drain so the next endpoint takes over. With one
    /// endpoint there is no other to move to, and dropping the link would only reset every
    /// stream on it.
    pub(crate) fn leave(&mut self, why: String, now: Instant) {
        if self.cfg.endpoints.len() > 1 {
            self.start_drain(why, now);
        }
    }

    /// The reason of a link that is up and failing or ended, for `poll`'s caller.
    pub(crate) fn end_reason(&mut self, end: Result<(), h2::Error>) -> String {
        self.error
            .get_or_insert_with(|| match end {
                Ok(()) => "connection closed by the server".to_string(),
                Err(e) => format!("http2: {e}"),
            })
            .clone()
    }

    /// Takes the link down and rotates the endpoint; says how it ended (see [`Lost`]).
    pub(crate) fn lost(&mut self, cx: &mut Cx) -> Lost {
        let generation = self.generation;
        let refused = std::mem::take(&mut self.refused);
        let (was_up, sent) = match std::mem::replace(&mut self.state, State::Down) {
            State::Up(_) if refused => (true, 0),
            State::Up(t) => (true, t.sent()),
            State::Connecting(timer) => {
                if let Some(timer) = timer {
                    cx.cancel(timer);
                }
                (false, 0)
            }
            State::Down => (false, 0),
        };
        self.since = cx.now;
        self.error = None;
        self.draining = None;
        self.generation += 1;
        self.endpoint = match std::mem::take(&mut self.restart_at_first) {
            true => 0,
            false => (self.endpoint + 1) % self.cfg.endpoints.len(),
        };
        self.stop_ping(cx);
        self.close_socket();
        let mut every_endpoint_failed = false;
        if !was_up {
            self.connect_failures += 1;
            if self.connect_failures >= self.cfg.endpoints.len() {
                self.connect_failures = 0;
                every_endpoint_failed = true;
            }
        }
        Lost { generation, was_up, sent, every_endpoint_failed, refused }
    }

    /// The endpoints in use from now on (not empty). The link in use carries on if its
    /// endpoint is in the new list; otherwise it drains (its calls with a deadline finish
    /// there, from `now`) and the next link goes to the first new endpoint. Whether the list
    /// changed.
    pub(crate) fn set_endpoints(&mut self, endpoints: Vec<Endpoint>, now: Instant) -> bool {
        if endpoints.is_empty() || endpoints == self.cfg.endpoints {
            return false;
        }
        let current = self.endpoint().clone();
        self.cfg.endpoints = endpoints;
        self.connect_failures = 0;
        match self.cfg.endpoints.iter().position(|e| *e == current) {
            Some(i) => self.endpoint = i,
            None if self.is_down() => self.endpoint = 0,
            None => {
                // The next link starts at the new list's first endpoint.
                self.endpoint = self.endpoint.min(self.cfg.endpoints.len() - 1);
                self.restart_at_first = true;
                self.start_drain(format!("{current} is no longer an endpoint"), now);
            }
        }
        true
    }

    /// The endpoints, in order.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.cfg.endpoints
    }

    /// Nothing waits for a connection any more: the next attempt starts a new round of
    /// endpoints.
    pub(crate) fn forget_failures(&mut self) {
        self.connect_failures = 0;
    }

    /// The client closed: down at once, without rotating.
    pub(crate) fn close(&mut self, cx: &mut Cx) {
        match std::mem::replace(&mut self.state, State::Down) {
            State::Down => {}
            State::Connecting(timer) => {
                if let Some(timer) = timer {
                    cx.cancel(timer);
                }
                self.since = cx.now;
            }
            State::Up(_) => self.since = cx.now,
        }
        self.error = None;
        self.draining = None;
        self.refused = false;
        self.connect_failures = 0;
        self.generation += 1;
        self.stop_ping(cx);
        self.close_socket();
    }

    /// Polls the h2 connection and the PING: `Some` once the connection has ended (any end,
    /// even `Ok`, means it is gone).
    pub(crate) fn poll(&mut self, wakers: &Wakers, cx: &mut Cx) -> Option<Result<(), h2::Error>> {
        let State::Up(t) = &mut self.state else { return None };
        if let Some(end) = t.poll_connection(wakers) {
            return Some(end);
        }
        if let Ping::Waiting(_) = self.ping {
            if t.poll_pong(wakers).is_some() {
                // Answered (or failed with the connection, which then ends anyway).
                self.schedule_ping(cx);
            }
        }
        None
    }

    // ===== PINGs =====

    fn schedule_ping(&mut self, cx: &mut Cx) {
        self.stop_ping(cx);
        if let Some(every) = self.cfg.keepalive_time {
            self.ping = Ping::Scheduled(cx.after(every, Timer::PingDue(self.generation)));
        }
    }

    fn stop_ping(&mut self, cx: &mut Cx) {
        if let Ping::Scheduled(timer) | Ping::Waiting(timer) = std::mem::take(&mut self.ping) {
            cx.cancel(timer);
        }
    }

    /// The PING interval of link `generation` is over: send one if a call or stream is open
    /// (`busy`), else wait again. Whether a PING went out.
    pub(crate) fn ping_due(&mut self, generation: u64, busy: bool, cx: &mut Cx) -> bool {
        if generation != self.generation {
            return false;
        }
        self.ping = Ping::Off;
        let State::Up(t) = &mut self.state else { return false };
        if !busy || t.send_ping().is_err() {
            self.schedule_ping(cx);
            return false;
        }
        let timer = cx.after(self.cfg.keepalive_timeout, Timer::PingTimeout(generation));
        self.ping = Ping::Waiting(timer);
        true
    }

    /// The PING of link `generation` went unanswered: the message to end the link with.
    pub(crate) fn ping_timed_out(&mut self, generation: u64) -> Option<String> {
        if generation != self.generation || !matches!(self.ping, Ping::Waiting(_)) {
            return None;
        }
        self.ping = Ping::Off;
        Some(format!("no answer to a keepalive PING within {:?}", self.cfg.keepalive_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Address;
    use std::time::Instant;

    fn link(n: usize) -> (Link, Cx, Wakers) {
        let endpoints = (0..n)
            .map(|i| Endpoint {
                address: Address::Tcp(format!("127.0.0.1:{}", 2379 + i).parse().unwrap()),
                tls: false,
            })
            .collect();
        let cfg = LinkConfig {
            endpoints,
            connect_timeout: Duration::from_secs(3),
            keepalive_time: Some(Duration::from_secs(5)),
            keepalive_timeout: Duration::from_secs(2),
        };
        let now = Instant::now();
        (Link::new(cfg, now), Cx::new(now, 1), Wakers::default())
    }

    fn connect_target(l: &mut Link, cx: &mut Cx) -> String {
        match l.poll_command(cx) {
            Some(LinkCommand::Connect { endpoint, .. }) => endpoint.to_string(),
            other => panic!("expected a connect, got {other:?}"),
        }
    }

    #[test]
    fn failed_attempts_rotate_and_give_up_once_every_endpoint_failed() {
        let (mut l, mut cx, _) = link(2);
        l.connect(cx.now);
        assert_eq!(connect_target(&mut l, &mut cx), "127.0.0.1:2379");
        let lost = l.lost(&mut cx);
        assert!(!lost.was_up && !lost.every_endpoint_failed);
        assert_eq!(l.poll_command(&mut cx), Some(LinkCommand::Close));
        l.connect(cx.now);
        assert_eq!(connect_target(&mut l, &mut cx), "127.0.0.1:2380");
        assert!(l.lost(&mut cx).every_endpoint_failed);
        assert_eq!(l.poll_command(&mut cx), Some(LinkCommand::Close));
        l.connect(cx.now);
        assert_eq!(connect_target(&mut l, &mut cx), "127.0.0.1:2379", "a new round");
    }

    #[test]
    fn the_connect_timer_names_the_stage_and_ignores_older_links() {
        let (mut l, mut cx, _) = link(1);
        l.connect(cx.now);
        let g = l.generation();
        l.handshaking(cx.now);
        let msg = l.connect_timed_out(g).unwrap();
        assert!(msg.starts_with("TLS handshake with 127.0.0.1:2379 timed out"), "{msg}");
        l.lost(&mut cx);
        assert_eq!(l.connect_timed_out(g), None);
    }

    #[test]
    fn a_link_refused_before_the_server_spoke_counts_nothing_as_sent() {
        let (mut l, mut cx, w) = link(2);
        l.connect(cx.now);
        assert_eq!(l.connected(&w, &mut cx), Ok(true));
        assert!(l.transport().unwrap().take_output().is_some(), "the preface");
        l.refused("alert");
        assert!(l.failing());
        let lost = l.lost(&mut cx);
        assert_eq!((lost.was_up, lost.sent), (true, 0));
    }

    #[test]
    fn draining_needs_another_endpoint_to_leave_for() {
        let (mut one, mut cx, w) = link(1);
        one.connect(cx.now);
        one.connected(&w, &mut cx).unwrap();
        one.leave("unhealthy".into(), cx.now);
        assert!(one.takes_streams(), "nowhere to go");
        let (mut two, mut cx, w) = link(2);
        two.connect(cx.now);
        two.connected(&w, &mut cx).unwrap();
        two.leave("unhealthy".into(), cx.now);
        assert_eq!(two.draining(), Some("unhealthy"));
        assert!(!two.takes_streams());
    }

    #[test]
    fn a_ping_goes_out_only_while_busy_and_times_out_unanswered() {
        let (mut l, mut cx, w) = link(1);
        l.connect(cx.now);
        l.connected(&w, &mut cx).unwrap();
        let g = l.generation();
        assert!(!l.ping_due(g, false, &mut cx), "idle: no PING");
        assert!(l.ping_due(g, true, &mut cx));
        assert!(l.ping_timed_out(g + 1).is_none(), "another link's timer");
        let msg = l.ping_timed_out(g).unwrap();
        assert!(msg.contains("keepalive PING within 2s"), "{msg}");
    }

    #[test]
    fn new_endpoints_keep_a_listed_link_and_drain_one_that_is_gone() {
        let at = |port: u16| Endpoint {
            address: Address::Tcp(format!("127.0.0.1:{port}").parse().unwrap()),
            tls: false,
        };
        let (mut l, mut cx, w) = link(2);
        l.connect(cx.now);
        assert_eq!(connect_target(&mut l, &mut cx), "127.0.0.1:2379");
        l.connected(&w, &mut cx).unwrap();
        assert!(!l.set_endpoints(l.endpoints().to_vec(), cx.now), "the same list changes nothing");
        assert!(!l.set_endpoints(Vec::new(), cx.now), "an empty list is refused");
        assert!(l.set_endpoints(vec![at(3000), at(2379)], cx.now));
        assert!(l.takes_streams(), "still listed: the link stays");
        assert_eq!(l.endpoint().to_string(), "127.0.0.1:2379");
        assert!(l.set_endpoints(vec![at(4000), at(4001)], cx.now));
        assert!(l.draining().unwrap().contains("no longer an endpoint"));
        l.lost(&mut cx);
        assert_eq!(l.poll_command(&mut cx), Some(LinkCommand::Close));
        l.connect(cx.now);
        assert_eq!(connect_target(&mut l, &mut cx), "127.0.0.1:4000", "the new list's first");
    }
}
