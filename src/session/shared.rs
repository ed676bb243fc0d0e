//! The two shared bidi streams, Watch and LeaseKeepAlive: each is opened while something
//! needs it, re-opened after it ends (at once the first time, then with a growing backoff
//! while attempts keep failing), and closed when nothing needs it any more. What travels on
//! them belongs to the watch hub and to the keepalives.
//!
//! ```text
//!   Idle ──needed──► Call(key) ──stream ended──► Backoff(timer) ──timer──► Idle ──needed──► …
//!    ▲                  │          (first attempt: straight back to Idle, and re-opened)
//!    └── not needed ────┘  (stream reset)
//! ```

use super::watch::{WatchCallback, WatchKey};
use super::{h2_error, CallKey, CallKind, CallState, Event, Session, Timer};
use crate::error::{Code, EtcdError};
use crate::grpc::{codec, Rpc};
use crate::h2io::wake::CONNECTION;
use crate::pb::etcdserverpb::{
    lease_rpc, watch_rpc, LeaseKeepAliveResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::timer::TimerKey;
use bytes::{Bytes, BytesMut};
use prost::Message;
use std::time::Duration;

/// Backoff step: attempt n (n ≥ 1) waits n × this, up to [`MAX_BACKOFF`].
const BACKOFF_STEP: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The keepalive stream's longest wait before re-opening.
const KEEPALIVE_MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Which shared stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    /// `etcdserverpb.Watch/Watch`, for every watch.
    Watch,
    /// `etcdserverpb.Lease/LeaseKeepAlive`, for every keepalive.
    Keepalive,
}

/// A shared stream's state (see the module diagram) and its failed attempts in a row.
#[derive(Debug, Default)]
pub(crate) struct SharedStream {
    state: State,
    /// Re-opens since the stream last delivered a message.
    attempts: u32,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Idle,
    Call(CallKey),
    Backoff(TimerKey),
}

/// Frames messages back to back, for one DATA frame.
pub(super) fn encode<M: Message>(messages: &[M]) -> Bytes {
    let mut out = BytesMut::new();
    for m in messages {
        out.extend_from_slice(&codec::encode(m));
    }
    out.freeze()
}

/// Statuses that re-opening cannot fix: the stream's users get the error at once.
pub(super) fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Unauthenticated
    )
}

/// The wait before re-open attempt `n` (0: at once), before jitter.
pub(super) fn backoff(n: u32) -> Duration {
    (BACKOFF_STEP * n).min(MAX_BACKOFF)
}

/// Backoffs are spread over ±[`JITTER`] of their length, so that clients that lost the same
/// member do not all come back at the same instant.
pub(super) const JITTER: f64 = 0.2;

impl Session {
    /// `delay` moved by a random fraction of at most ±[`JITTER`].
    pub(super) fn jittered(&mut self, delay: Duration) -> Duration {
        // xorshift64*: plenty for spreading timers, and no dependency.
        let mut x = self.jitter;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.jitter = x;
        let unit = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
    }
}

// ===== watch commands =====

impl Session {
    /// Adds a watch; the stream opens (or the watch is created on it) during the next drive.
    pub(crate) fn watch(
        &mut self,
        create: WatchCreateRequest,
        callback: WatchCallback,
        auto_reconnect: bool,
    ) -> WatchKey {
        // A create above the request size limit fails that watch alone (on the next turn):
        // sent, it would make etcd end the stream shared by every watch, again and again.
        let size = create.encoded_len();
        if size > self.cfg.max_request_bytes {
            let msg = format!(
                "watch create of {size} bytes exceeds the limit of {} bytes; not sent",
                self.cfg.max_request_bytes
            );
            let err = EtcdError::invalid(msg, "watch");
            let (key, delivery) = self.watches.add_failed(callback, err);
            self.events.push_back(Event::Watch(delivery));
            return key;
        }
        let key = self.watches.add(create, callback);
        self.watches.set_auto_reconnect(key, auto_reconnect);
        self.ensure_shared(Shared::Watch);
        self.wakers.wake(CONNECTION);
        key
    }

    /// Removes a watch at once (see [`WatchHub::cancel`](super::watch::WatchHub::cancel)).
    pub(crate) fn cancel_watch(&mut self, key: WatchKey) -> Option<WatchCallback> {
        let callback = self.watches.cancel(key);
        self.close_shared_if_unused(Shared::Watch);
        self.wakers.wake(CONNECTION);
        callback
    }

    /// Asks for a progress notification on the watch stream.
    pub(crate) fn request_progress(&mut self) {
        self.watches.request_progress();
        self.wakers.wake(CONNECTION);
    }

    /// Takes a watch's callback out to run it.
    pub(crate) fn take_watch_callback(&mut self, key: WatchKey) -> Option<WatchCallback> {
        self.watches.take_callback(key)
    }

    /// Puts a watch's callback back after it ran (see
    /// [`WatchHub::restore_callback`](super::watch::WatchHub::restore_callback)).
    pub(crate) fn restore_watch_callback(
        &mut self,
        key: WatchKey,
        callback: WatchCallback,
        delivered_final: bool,
    ) -> Option<WatchCallback> {
        let leftover = self.watches.restore_callback(key, callback, delivered_final);
        self.close_shared_if_unused(Shared::Watch);
        leftover
    }
}

// ===== the streams' life =====

impl Session {
    fn shared_mut(&mut self, kind: Shared) -> &mut SharedStream {
        match kind {
            Shared::Watch => &mut self.watch_stream,
            Shared::Keepalive => &mut self.keepalive_stream,
        }
    }

    fn shared_wanted(&self, kind: Shared) -> bool {
        match kind {
            Shared::Watch => self.watches.wants_stream(),
            Shared::Keepalive => self.keepalives.wants_stream(),
        }
    }

    /// Queues the stream call when something needs it and none exists or waits.
    pub(super) fn ensure_shared(&mut self, kind: Shared) {
        if !matches!(self.shared_mut(kind).state, State::Idle) || !self.shared_wanted(kind) {
            return;
        }
        let (path, operation) = match kind {
            Shared::Watch => (<watch_rpc::Watch as Rpc>::PATH, "watch"),
            Shared::Keepalive => (<lease_rpc::LeaseKeepAlive as Rpc>::PATH, "keepalive"),
        };
        let key = self.queue_call(path, operation, CallKind::Shared(kind), Bytes::new());
        self.shared_mut(kind).state = State::Call(key);
    }

    /// Resets the stream once nothing needs it (etcd keeps a stream's resources otherwise).
    pub(super) fn close_shared_if_unused(&mut self, kind: Shared) {
        if self.shared_wanted(kind) {
            return;
        }
        self.shared_mut(kind).attempts = 0;
        self.end_shared(kind);
    }

    /// Ends the stream, whatever its state: its call is reset, or its backoff cancelled.
    fn end_shared(&mut self, kind: Shared) {
        match std::mem::take(&mut self.shared_mut(kind).state) {
            State::Call(key) => self.drop_stream_call(key),
            State::Backoff(timer) => {
                self.timers.cancel(timer);
            }
            State::Idle => {}
        }
        self.shared_lost(kind);
    }

    /// The stream is being opened: its first messages (a create per watch, a renewal per
    /// lease).
    pub(super) fn shared_opened(&mut self, kind: Shared) -> Bytes {
        match kind {
            Shared::Watch => {
                self.watches.on_stream_opened();
                encode(&self.watches.take_outbox())
            }
            Shared::Keepalive => self.keepalive_opened(),
        }
    }

    fn shared_lost(&mut self, kind: Shared) {
        match kind {
            Shared::Watch => self.watches.on_stream_lost(),
            Shared::Keepalive => self.keepalive_lost(),
        }
    }

    /// Sends what each open shared stream has queued.
    pub(super) fn flush_shared(&mut self) {
        for kind in [Shared::Watch, Shared::Keepalive] {
            let State::Call(key) = self.shared_mut(kind).state else {
                continue;
            };
            let body = match kind {
                Shared::Watch if self.watches.has_outbox() => {
                    encode::<WatchRequest>(&self.watches.take_outbox())
                }
                Shared::Keepalive if self.keepalives.has_outbox() => self.keepalives.take_outbox(),
                _ => continue,
            };
            let Some(call) = self.calls.get_mut(key.index) else {
                continue;
            };
            let CallState::Open(stream, _) = &mut call.state else {
                continue;
            };
            if let Err(e) = stream.send(body, false) {
                self.finish(key.index, Err(h2_error(&e)));
            }
        }
    }

    /// Hands a stream's messages to their owner; a message that does not decode ends the
    /// stream.
    pub(super) fn on_shared_messages(
        &mut self,
        kind: Shared,
        msgs: Vec<Bytes>,
    ) -> Result<(), (Code, String)> {
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
                    self.events.extend(out.into_iter().map(Event::Watch));
                }
                Shared::Keepalive => {
                    let resp = LeaseKeepAliveResponse::decode(m).map_err(undecodable)?;
                    works = true;
                    self.on_keepalive_response(resp);
                }
            }
        }
        if works {
            self.shared_mut(kind).attempts = 0;
        }
        if kind == Shared::Watch && self.watches.take_needs_reauth() {
            self.reauth_watches();
        }
        Ok(())
    }

    /// The stream call ended (already removed from the slab): its users wait, and it
    /// re-opens at once the first time, after a growing backoff after that.
    pub(super) fn shared_ended(&mut self, kind: Shared, result: Result<(), (Code, String)>) {
        self.shared_mut(kind).state = State::Idle;
        self.shared_lost(kind);
        // A stream etcd ends with OK still ended: for its users that is "unavailable".
        let (code, message) =
            result.err().unwrap_or((Code::Unavailable, "stream ended by the server".into()));
        // Users that asked for no reconnect end here, whatever comes next.
        self.end_users(kind, true, code, &message);
        let retries_left = self.shared_mut(kind).attempts < self.cfg.max_retries;
        if self.stale_token_to_renew(&message) {
            // Not permanent: the re-opened stream waits for the new token.
        } else if self.shared_wanted(kind) && (is_permanent(code) || !retries_left) {
            // One error for each user; nothing re-opens.
            self.end_users(kind, false, code, &message);
        }
        if !self.shared_wanted(kind) {
            self.shared_mut(kind).attempts = 0;
            return;
        }
        let attempts = self.shared_mut(kind).attempts;
        let mut delay = self.jittered(backoff(attempts));
        if kind == Shared::Keepalive {
            // A lease lives for its TTL: a renewal must go out soon after the server is back,
            // not at the end of a long backoff (etcd grants every lease a fresh TTL on
            // restart, so the lease survives if the renewal is prompt).
            delay = delay.min(KEEPALIVE_MAX_BACKOFF);
        }
        self.shared_mut(kind).attempts += 1;
        if delay.is_zero() {
            self.ensure_shared(kind);
        } else {
            let timer = self.timers.insert(self.now + delay, Timer::Reopen(kind));
            self.shared_mut(kind).state = State::Backoff(timer);
        }
    }

    /// Queues one final error for each user of the stream (only those that asked for no
    /// reconnect, with `only_no_reconnect`).
    fn end_users(&mut self, kind: Shared, only_no_reconnect: bool, code: Code, message: &str) {
        match kind {
            Shared::Watch => {
                let out = self.watches.end_all(only_no_reconnect, (code, message));
                self.events.extend(out.into_iter().map(Event::Watch));
            }
            Shared::Keepalive => {
                let out = self.end_keepalives(only_no_reconnect, code, message);
                self.events.extend(out.into_iter().map(Event::Keepalive));
            }
        }
    }

    /// Ends the stream now and opens a new one (queued behind any Authenticate call, so it
    /// carries the new token); its users resume on it.
    pub(super) fn restart_shared(&mut self, kind: Shared) {
        self.end_shared(kind);
        self.ensure_shared(kind);
    }

    /// A connection came up: streams waiting out a backoff re-open now instead of when their
    /// timer fires (a lease must not expire for a wait that no longer has a reason).
    pub(super) fn cut_backoffs(&mut self) {
        for kind in [Shared::Watch, Shared::Keepalive] {
            if let State::Backoff(timer) = self.shared_mut(kind).state {
                self.timers.cancel(timer);
                self.shared_mut(kind).state = State::Idle;
                self.ensure_shared(kind);
            }
        }
        self.cut_observe_backoffs();
    }

    /// The backoff is over: open the stream again if it is still needed.
    pub(super) fn shared_backoff_over(&mut self, kind: Shared) {
        if let State::Backoff(_) = self.shared_mut(kind).state {
            self.shared_mut(kind).state = State::Idle;
            self.ensure_shared(kind);
        }
    }
}
