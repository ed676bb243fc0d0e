//! Election observers: one server-streaming Observe call each (server streams cannot share a
//! call), re-opened after it ends, at once the first time and then with a growing backoff.
//!
//! ```text
//!  add ──► Call(key) ──LeaderResponse*──► (delivered when its kv is newer than the last one)
//!            ▲   │
//!            │   └──stream ended──► Backoff(timer) ──timer──┐   (first attempt: no wait)
//!            └──────────────────────────────────────────────┘
//! ```
//!
//! A re-opened Observe starts with the current leader, which the observer may have seen
//! already: a response is skipped only if it carries the same leader key as the last one
//! delivered, at a mod revision not above it. A new leader always has another key (and its
//! key may well be older than the last proclaimed value: it was waiting), so each leader and
//! each proclaimed value arrives once, in order.

use super::call::CallKey;
use super::shared::backoff;
use super::{CallKind, Event, Session, Timer};
use crate::error::{Code, EtcdError};
use crate::grpc::Rpc;
use crate::h2io::wake::CONNECTION;
use crate::pb::v3electionpb::{election_rpc, LeaderResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use prost::Message;
use slab::Slab;

/// What an observer's callback receives.
pub(crate) type ObserveCallback = Box<dyn FnMut(Result<LeaderResponse, EtcdError>)>;

/// An observer's slab index plus a generation (an ABA guard for handles that outlive it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ObserveKey {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

/// One delivery: a leader or the observer's final error.
pub(crate) type ObserveDelivery = (ObserveKey, Result<LeaderResponse, EtcdError>);

struct Entry {
    generation: u64,
    /// The framed LeaderRequest, sent again on every re-open.
    request: Bytes,
    call: Option<CallKey>,
    backoff: Option<TimerKey>,
    attempts: u32,
    /// The key and mod revision of the last leader kv delivered.
    last: Option<(Bytes, i64)>,
    callback: Option<ObserveCallback>,
    ended: bool,
    /// Whether the stream re-opens after it breaks (else the observer ends with its error).
    auto_reconnect: bool,
}

/// Every observer of a client.
#[derive(Default)]
pub(crate) struct Observes {
    entries: Slab<Entry>,
    next_generation: u64,
}

impl Observes {
    /// Whether no observer is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get_mut(&mut self, key: ObserveKey) -> Option<&mut Entry> {
        self.entries.get_mut(key.index).filter(|e| e.generation == key.generation)
    }
}

impl Session {
    /// Starts observing; `request` is the framed LeaderRequest. A request above the size
    /// limit is never sent: the observer ends with `INVALID_ARGUMENT` on the next turn.
    pub(crate) fn observe(
        &mut self,
        request: Bytes,
        callback: ObserveCallback,
        auto_reconnect: bool,
    ) -> ObserveKey {
        let size = request.len().saturating_sub(crate::grpc::codec::PREFIX_LEN);
        let too_large = (size > self.cfg.max_request_bytes).then(|| {
            let msg = format!(
                "observe request of {size} bytes exceeds the limit of {} bytes; not sent",
                self.cfg.max_request_bytes
            );
            EtcdError::invalid(msg, "election_observe")
        });
        let obs = &mut self.observes;
        let generation = obs.next_generation;
        obs.next_generation += 1;
        let index = obs.entries.insert(Entry {
            generation,
            request,
            call: None,
            backoff: None,
            attempts: 0,
            last: None,
            callback: Some(callback),
            ended: too_large.is_some(),
            auto_reconnect,
        });
        let key = ObserveKey { index, generation };
        match too_large {
            Some(err) => self.events.push_back(Event::Observe((key, Err(err)))),
            None => self.open_observe(key),
        }
        key
    }

    fn open_observe(&mut self, key: ObserveKey) {
        let request = self.observes.entries[key.index].request.clone();
        let path = <election_rpc::Observe as Rpc>::PATH;
        let call = self.queue_call(path, "election_observe", CallKind::Observe(key), request);
        self.observes.entries[key.index].call = Some(call);
    }

    /// Stops an observer at once: its stream is reset. Returns its callback (`None` if the
    /// observer is gone or its callback is running), to be dropped once no borrow is held.
    pub(crate) fn cancel_observe(&mut self, key: ObserveKey) -> Option<ObserveCallback> {
        self.observes.get_mut(key)?;
        let entry = self.remove_observe(key.index);
        self.wakers.wake(CONNECTION);
        entry.callback
    }

    /// Takes observer slot `index` out, with its stream (reset) or its backoff.
    fn remove_observe(&mut self, index: usize) -> Entry {
        let entry = self.observes.entries.remove(index);
        if let Some(call) = entry.call {
            self.drop_stream_call(call);
        }
        if let Some(timer) = entry.backoff {
            self.timers.cancel(timer);
        }
        entry
    }

    /// Takes an observer's callback out to run it.
    pub(crate) fn take_observe_callback(&mut self, key: ObserveKey) -> Option<ObserveCallback> {
        self.observes.get_mut(key)?.callback.take()
    }

    /// Puts an observer's callback back after it ran (dropped if it was cancelled meanwhile).
    /// One not put back (cancelled meanwhile, or its final delivery) is returned, to be
    /// dropped once no borrow is held.
    pub(crate) fn restore_observe_callback(
        &mut self,
        key: ObserveKey,
        callback: ObserveCallback,
        delivered_final: bool,
    ) -> Option<ObserveCallback> {
        let Some(entry) = self.observes.get_mut(key) else { return Some(callback) };
        if entry.ended && delivered_final {
            self.remove_observe(key.index);
            return Some(callback);
        }
        entry.callback = Some(callback);
        None
    }

    /// A connection came up: observers waiting out a backoff re-open now.
    pub(super) fn cut_observe_backoffs(&mut self) {
        let waiting: Vec<ObserveKey> = self
            .observes
            .entries
            .iter()
            .filter(|(_, e)| e.backoff.is_some())
            .map(|(index, e)| ObserveKey { index, generation: e.generation })
            .collect();
        for key in waiting {
            if let Some(timer) = self.observes.entries[key.index].backoff.take() {
                self.timers.cancel(timer);
            }
            self.open_observe(key);
        }
    }

    /// The observer's stream delivered leaders.
    pub(super) fn on_observe_messages(
        &mut self,
        key: ObserveKey,
        msgs: Vec<Bytes>,
    ) -> Result<(), (Code, String)> {
        for m in msgs {
            let resp = LeaderResponse::decode(m)
                .map_err(|e| (Code::Internal, format!("cannot decode a leader response: {e}")))?;
            let Some(entry) = self.observes.get_mut(key) else {
                return Ok(());
            };
            entry.attempts = 0; // the stream works
            let Some(kv) = resp.kv.as_ref() else { continue };
            let seen =
                entry.last.as_ref().is_some_and(|(k, rev)| *k == kv.key && kv.mod_revision <= *rev);
            if !seen {
                entry.last = Some((kv.key.clone(), kv.mod_revision));
                self.events.push_back(Event::Observe((key, Ok(resp))));
            }
        }
        Ok(())
    }

    /// The observer's stream ended (already removed from the slab): re-open it.
    pub(super) fn observe_ended(&mut self, key: ObserveKey, result: Result<(), (Code, String)>) {
        let (code, message) =
            result.err().unwrap_or((Code::Unavailable, "stream ended by the server".into()));
        // A stale token the client can renew is not final: the re-opened stream waits for it.
        let renewing = self.stale_token_to_renew(&message);
        let (now, max_retries) = (self.now, self.cfg.max_retries);
        let Some(entry) = self.observes.get_mut(key) else {
            return;
        };
        entry.call = None;
        if entry.ended {
            return;
        }
        let give_up = super::shared::is_permanent(code)
            || entry.attempts >= max_retries
            || !entry.auto_reconnect;
        if !renewing && give_up {
            entry.ended = true;
            let err = EtcdError::new(code, message, "election_observe");
            self.events.push_back(Event::Observe((key, Err(err))));
            return;
        }
        entry.attempts += 1;
        let base = backoff(entry.attempts - 1);
        let delay = self.jittered(base);
        if delay.is_zero() {
            self.open_observe(key);
        } else {
            let timer = self.timers.insert(now + delay, Timer::ObserveReopen(key));
            self.observes.entries[key.index].backoff = Some(timer);
        }
    }

    /// An observer's backoff is over.
    pub(super) fn observe_backoff_over(&mut self, key: ObserveKey) {
        let Some(entry) = self.observes.get_mut(key) else {
            return;
        };
        entry.backoff = None;
        if entry.call.is_none() && !entry.ended {
            self.open_observe(key);
        }
    }

    /// Ends every observer with `CANCELLED` (the client is closing).
    pub(super) fn close_observes(&mut self, reason: &str) -> Vec<ObserveDelivery> {
        let mut out = Vec::new();
        let live: Vec<ObserveKey> = self
            .observes
            .entries
            .iter()
            .filter(|(_, e)| !e.ended)
            .map(|(index, e)| ObserveKey { index, generation: e.generation })
            .collect();
        for key in live {
            let entry = &mut self.observes.entries[key.index];
            entry.ended = true;
            let (call, timer) = (entry.call.take(), entry.backoff.take());
            if let Some(timer) = timer {
                self.timers.cancel(timer);
            }
            if let Some(call) = call {
                self.drop_stream_call(call);
            }
            let err = EtcdError::new(Code::Cancelled, reason, "election_observe");
            out.push((key, Err(err)));
        }
        out
    }
}
