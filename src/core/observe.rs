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

use super::cx::{Cx, Timer};
use super::failure::{decide, Cause, Decision, Policy, Subject};
use super::registry::{tag, CallKey, ObserveKey, Slots, StreamItem, StreamKey};
use crate::error::{Code, EtcdError};
use crate::pb::v3electionpb::LeaderResponse;
use crate::timer::TimerKey;
use bytes::Bytes;
use prost::Message;

struct Entry {
    stream: StreamKey,
    /// The framed LeaderRequest, sent again on every re-open.
    request: Bytes,
    call: Option<CallKey>,
    backoff: Option<TimerKey>,
    attempts: u32,
    /// The key and mod revision of the last leader kv delivered.
    last: Option<(Bytes, i64)>,
    /// Whether the stream re-opens after it breaks (else the observer ends with its error).
    auto_reconnect: bool,
}

/// What to do after an observer's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterEnd {
    /// Open it again now (`authenticate` first).
    Reopen { authenticate: bool },
    /// It re-opens when its backoff timer fires (`authenticate` meanwhile).
    Wait { authenticate: bool },
    /// It ended (its final error is queued), or it was gone already.
    Over,
}

/// Every observer of a client.
#[derive(Default)]
pub(crate) struct Observes {
    entries: Slots<Entry, tag::Observe>,
}

impl Observes {
    /// How many observers are live.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds an observer of stream `stream` with the framed `request`; open it with
    /// [`request`](Self::request) and [`opened`](Self::opened).
    pub(crate) fn add(
        &mut self,
        stream: StreamKey,
        request: Bytes,
        auto_reconnect: bool,
    ) -> ObserveKey {
        self.entries.insert(Entry {
            stream,
            request,
            call: None,
            backoff: None,
            attempts: 0,
            last: None,
            auto_reconnect,
        })
    }

    /// The request to open observer `key`'s stream with.
    pub(crate) fn request(&self, key: ObserveKey) -> Option<Bytes> {
        self.entries.get(key).map(|e| e.request.clone())
    }

    /// Observer `key`'s stream is call `call`.
    pub(crate) fn opened(&mut self, key: ObserveKey, call: CallKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.call = Some(call);
        }
    }

    /// Removes an observer at once: the call to drop, if its stream is open.
    pub(crate) fn cancel(&mut self, key: ObserveKey, cx: &mut Cx) -> Option<CallKey> {
        let entry = self.entries.remove(key)?;
        if let Some(timer) = entry.backoff {
            cx.cancel(timer);
        }
        entry.call
    }

    /// The observer's stream delivered leaders: each new one goes to its callback.
    pub(crate) fn on_messages(
        &mut self,
        key: ObserveKey,
        msgs: Vec<Bytes>,
        cx: &mut Cx,
    ) -> Result<(), (Code, String)> {
        for m in msgs {
            let resp = LeaderResponse::decode(m)
                .map_err(|e| (Code::Internal, format!("cannot decode a leader response: {e}")))?;
            let Some(entry) = self.entries.get_mut(key) else { return Ok(()) };
            entry.attempts = 0; // the stream works
            let Some(kv) = resp.kv.as_ref() else { continue };
            let seen =
                entry.last.as_ref().is_some_and(|(k, rev)| *k == kv.key && kv.mod_revision <= *rev);
            if !seen {
                entry.last = Some((kv.key.clone(), kv.mod_revision));
                cx.deliver(entry.stream, StreamItem::Observe(Ok(resp)));
            }
        }
        Ok(())
    }

    /// The observer's stream ended with `result` (its call is gone): re-open it, or end it.
    pub(crate) fn ended(
        &mut self,
        key: ObserveKey,
        result: Result<(), (Code, String)>,
        policy: Policy,
        cx: &mut Cx,
    ) -> AfterEnd {
        let Some(entry) = self.entries.get_mut(key) else { return AfterEnd::Over };
        entry.call = None;
        let (code, message) =
            result.err().unwrap_or((Code::Unavailable, "stream ended by the server".into()));
        let subject = Subject::Stream { attempts: entry.attempts, keepalive: false };
        let decision = match decide(subject, Cause::Status(code, &message), policy) {
            // Without auto-reconnect only a stale token the client renews re-opens it.
            Decision::Reopen { authenticate: false, .. } if !entry.auto_reconnect => Decision::Fail,
            decision => decision,
        };
        let Decision::Reopen { after, authenticate } = decision else {
            let stream = entry.stream;
            self.entries.remove(key);
            let err = EtcdError::new(code, message, "election_observe");
            cx.deliver(stream, StreamItem::Observe(Err(err)));
            return AfterEnd::Over;
        };
        entry.attempts += 1;
        let delay = cx.jittered(after);
        if delay.is_zero() {
            return AfterEnd::Reopen { authenticate };
        }
        entry.backoff = Some(cx.after(delay, Timer::ObserveReopen(key)));
        AfterEnd::Wait { authenticate }
    }

    /// Observer `key`'s backoff is over: whether to open it now.
    pub(crate) fn backoff_over(&mut self, key: ObserveKey) -> bool {
        let Some(entry) = self.entries.get_mut(key) else { return false };
        entry.backoff = None;
        entry.call.is_none()
    }

    /// A link came up: observers waiting out a backoff re-open now (returned).
    pub(crate) fn cut_backoffs(&mut self, cx: &mut Cx) -> Vec<ObserveKey> {
        let waiting = self.entries.keys_where(|e| e.backoff.is_some());
        for &key in &waiting {
            if let Some(timer) = self.entries.get_mut(key).and_then(|e| e.backoff.take()) {
                cx.cancel(timer);
            }
        }
        waiting
    }

    /// Ends every observer with one error (the client is closing): the calls to drop.
    pub(crate) fn end_all(&mut self, code: Code, reason: &str, cx: &mut Cx) -> Vec<CallKey> {
        let mut calls = Vec::new();
        for key in self.entries.keys_where(|_| true) {
            let Some(entry) = self.entries.remove(key) else { continue };
            if let Some(timer) = entry.backoff {
                cx.cancel(timer);
            }
            calls.extend(entry.call);
            let err = EtcdError::new(code, reason, "election_observe");
            cx.deliver(entry.stream, StreamItem::Observe(Err(err)));
        }
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cx::Event;
    use crate::core::registry::{StreamCallback, Streams};
    use crate::pb::mvccpb::KeyValue;
    use std::time::{Duration, Instant};

    const POLICY: Policy = Policy {
        credentials: false,
        max_retries: 2,
        retry_attempts: 0,
        retry_backoff: std::time::Duration::ZERO,
    };

    fn setup() -> (Observes, ObserveKey, Cx) {
        let stream = Streams::default().add(StreamCallback::Observe(Box::new(|_| {})));
        let mut obs = Observes::default();
        let key = obs.add(stream, Bytes::from_static(b"req"), true);
        (obs, key, Cx::new(Instant::now(), 1))
    }

    fn leader(key: &'static str, rev: i64) -> Bytes {
        let kv = KeyValue { key: key.into(), mod_revision: rev, ..Default::default() };
        LeaderResponse { kv: Some(kv), ..Default::default() }.encode_to_vec().into()
    }

    fn delivered(cx: &mut Cx) -> Vec<Result<i64, Code>> {
        cx.events
            .drain(..)
            .map(|e| match e {
                Event::Stream(_, StreamItem::Observe(r)) => {
                    r.map(|r| r.kv.unwrap().mod_revision).map_err(|e| e.code())
                }
                _ => panic!("not an observe item"),
            })
            .collect()
    }

    #[test]
    fn a_leader_seen_before_a_reopen_is_not_delivered_again() {
        let (mut obs, key, mut cx) = setup();
        obs.on_messages(key, vec![leader("e/1", 5), leader("e/1", 6)], &mut cx).unwrap();
        assert_eq!(delivered(&mut cx), vec![Ok(5), Ok(6)]);
        // Re-opened: the current leader again, then a new leader with an older key.
        obs.on_messages(key, vec![leader("e/1", 6), leader("e/2", 4)], &mut cx).unwrap();
        assert_eq!(delivered(&mut cx), vec![Ok(4)]);
    }

    #[test]
    fn reopens_at_once_then_after_a_backoff_then_gives_up_with_one_error() {
        let (mut obs, key, mut cx) = setup();
        let lost = || Err((Code::Unavailable, "link lost".to_string()));
        assert_eq!(
            obs.ended(key, lost(), POLICY, &mut cx),
            AfterEnd::Reopen { authenticate: false }
        );
        assert_eq!(obs.ended(key, lost(), POLICY, &mut cx), AfterEnd::Wait { authenticate: false });
        let at = cx.timers.next_deadline().unwrap() - cx.now;
        assert!(at >= Duration::from_millis(400) && at <= Duration::from_millis(600), "{at:?}");
        assert!(obs.backoff_over(key));
        assert_eq!(obs.ended(key, lost(), POLICY, &mut cx), AfterEnd::Over);
        assert_eq!(delivered(&mut cx), vec![Err(Code::Unavailable)]);
        assert_eq!(obs.len(), 0);
    }

    #[test]
    fn a_cancelled_observer_hands_back_its_call_and_disarms_its_backoff() {
        let (mut obs, key, mut cx) = setup();
        let call = Slots::<(), tag::Call>::default().insert(());
        obs.opened(key, call);
        assert_eq!(obs.cancel(key, &mut cx), Some(call));
        assert_eq!(obs.cancel(key, &mut cx), None);
        assert_eq!(obs.ended(key, Ok(()), POLICY, &mut cx), AfterEnd::Over);
        assert!(cx.events.is_empty());
    }
}
