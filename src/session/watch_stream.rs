//! The shared watch stream: opened while any watch lives, re-opened after it ends (with
//! backoff while attempts keep failing), closed when the last watch goes. The watches
//! themselves are the [`WatchHub`](super::watch::WatchHub)'s.
//!
//! ```text
//!   Idle ──a watch wants it──► Call(key) ──stream ended──► Backoff(timer) ──timer──► Idle ─┐
//!    ▲  ▲                         │          (first attempt: straight back to Idle)        │
//!    │  └─────────────────────────┼────────── a watch wants it: open again ◄─────────────┘
//!    └── last watch gone ─────────┘  (stream reset)
//! ```

use super::watch::{WatchCallback, WatchKey};
use super::{h2_error, CallKey, CallKind, CallState, Event, Session, Timer};
use crate::error::Code;
use crate::grpc::{codec, Rpc};
use crate::h2io::wake::CONNECTION;
use crate::pb::etcdserverpb::{watch_rpc, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::timer::TimerKey;
use bytes::{Bytes, BytesMut};
use prost::Message;
use std::time::Duration;

/// Backoff step: attempt n (n ≥ 1) waits n × this, up to [`MAX_BACKOFF`].
const BACKOFF_STEP: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The stream's state (see the module diagram) and its failed attempts in a row.
#[derive(Debug, Default)]
pub(crate) struct WatchStream {
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

/// Frames requests back to back, for one DATA frame.
pub(super) fn encode(requests: Vec<WatchRequest>) -> Bytes {
    let mut out = BytesMut::new();
    for r in &requests {
        out.extend_from_slice(&codec::encode(r));
    }
    out.freeze()
}

/// The wait before re-open attempt `n` (0: at once).
fn backoff(n: u32) -> Duration {
    (BACKOFF_STEP * n).min(MAX_BACKOFF)
}

impl Session {
    /// Adds a watch; the stream opens (or the watch is created on it) during the next drive.
    pub(crate) fn watch(
        &mut self,
        create: WatchCreateRequest,
        callback: WatchCallback,
    ) -> WatchKey {
        let key = self.watches.add(create, callback);
        self.ensure_watch_stream();
        self.wakers.wake(CONNECTION);
        key
    }

    /// Removes a watch at once (see [`WatchHub::cancel`](super::watch::WatchHub::cancel)).
    pub(crate) fn cancel_watch(&mut self, key: WatchKey) -> bool {
        let existed = self.watches.cancel(key);
        self.close_watch_stream_if_unused();
        self.wakers.wake(CONNECTION);
        existed
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
    pub(crate) fn restore_watch_callback(&mut self, key: WatchKey, callback: WatchCallback) {
        self.watches.restore_callback(key, callback);
        self.close_watch_stream_if_unused();
    }

    /// Queues the stream call when a watch needs it and none exists or waits.
    fn ensure_watch_stream(&mut self) {
        if matches!(self.watch_stream.state, State::Idle) && self.watches.wants_stream() {
            let path = <watch_rpc::Watch as Rpc>::PATH;
            let key = self.queue_call(path, "watch", CallKind::WatchStream, Bytes::new());
            self.watch_stream.state = State::Call(key);
        }
    }

    /// Resets the stream once no watch needs it (etcd keeps a stream's resources otherwise).
    pub(super) fn close_watch_stream_if_unused(&mut self) {
        if self.watches.wants_stream() {
            return;
        }
        match std::mem::take(&mut self.watch_stream.state) {
            State::Call(key) => {
                if self
                    .calls
                    .get(key.index)
                    .is_some_and(|c| c.generation == key.generation)
                {
                    if let CallState::Open(stream, _) = self.calls.remove(key.index).state {
                        stream.cancel();
                    }
                }
            }
            State::Backoff(timer) => {
                self.timers.cancel(timer);
            }
            State::Idle => {}
        }
        self.watches.on_stream_lost();
        self.watch_stream.attempts = 0;
    }

    /// Sends the hub's queued requests once the stream is open.
    pub(super) fn flush_watch_requests(&mut self) {
        if !self.watches.has_outbox() {
            return;
        }
        let State::Call(key) = self.watch_stream.state else {
            return;
        };
        let Some(call) = self.calls.get_mut(key.index) else {
            return;
        };
        let CallState::Open(stream, _) = &mut call.state else {
            return;
        };
        let body = encode(self.watches.take_outbox());
        if let Err(e) = stream.send(body, false) {
            self.finish(key.index, Err(h2_error(&e)));
        }
    }

    /// Hands the stream's messages to the hub and queues what the watches receive.
    pub(super) fn on_watch_messages(&mut self, msgs: Vec<Bytes>) -> Result<(), (Code, String)> {
        let mut out = Vec::new();
        for m in msgs {
            let resp = WatchResponse::decode(m).map_err(|e| {
                (
                    Code::Internal,
                    format!("cannot decode a watch response: {e}"),
                )
            })?;
            self.watches.on_response(resp, &mut out);
        }
        self.watch_stream.attempts = 0; // the stream works
        self.events.extend(out.into_iter().map(Event::Watch));
        Ok(())
    }

    /// The stream call ended (already removed from the slab): the watches wait, and the
    /// stream re-opens at once the first time, after a growing backoff after that.
    pub(super) fn watch_stream_ended(&mut self, _result: Result<(), (Code, String)>) {
        self.watch_stream.state = State::Idle;
        self.watches.on_stream_lost();
        if !self.watches.wants_stream() {
            self.watch_stream.attempts = 0;
            return;
        }
        let delay = backoff(self.watch_stream.attempts);
        self.watch_stream.attempts += 1;
        if delay.is_zero() {
            self.ensure_watch_stream();
        } else {
            let timer = self.timers.insert(self.now + delay, Timer::WatchReopen);
            self.watch_stream.state = State::Backoff(timer);
        }
    }

    /// The backoff is over: open the stream again if a watch still wants it.
    pub(super) fn watch_backoff_over(&mut self) {
        if let State::Backoff(_) = self.watch_stream.state {
            self.watch_stream.state = State::Idle;
            self.ensure_watch_stream();
        }
    }
}
