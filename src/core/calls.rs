//! Every gRPC call of the client (unary calls and the calls that carry streams): the table,
//! the queue of calls waiting for a usable link, and re-sending.
//!
//! ```text
//!   Queued ──link up, stream opened──► Open ──trailers / trailers-only──► removed (Ok or status)
//!     ▲                                  │
//!     └── re-sent (never processed) ─────┤
//!                                        └── deadline, link lost, h2 error ──► removed (error)
//! ```

use super::cx::{Completion, Cx, Shared, Timer};
use super::failure::MAX_RESENDS;
use super::registry::{tag, CallKey, ObserveKey, Slots, StreamKey};
use crate::endpoint::Endpoint;
use crate::grpc::reader::Reader;
use crate::h2io::H2Stream;
use crate::timer::TimerKey;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// One call.
pub(crate) struct Call {
    pub(crate) path: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) kind: CallKind,
    /// The deadline's timer: unary calls started with one (not lock and campaign, which
    /// wait as long as it takes), the client's Authenticate and its health check. Stream
    /// calls have none.
    deadline: Option<TimerKey>,
    /// How long after its start the deadline is (for its message).
    pub(crate) timeout: Option<Duration>,
    pub(crate) state: CallState,
    /// Which token (see `Auth::epoch`) the call was sent with.
    pub(crate) auth_epoch: u64,
    /// The link generation the call was sent on: only failures on the current link say
    /// anything about the endpoint in use.
    pub(crate) link: u64,
    /// The link's byte count when the call was opened: if no more than this had been sent
    /// when the link died, none of the call's bytes ever left, and it can be sent again.
    pub(crate) sent_mark: u64,
    /// Times the call was sent again because the server provably never processed it.
    pub(crate) resends: u8,
    /// Times it was retried after a transient failure (see `failure::decide`).
    pub(crate) retries: u32,
    /// The failure that made it retry last, for the deadline's message.
    pub(crate) last_error: Option<String>,
    /// The highest revision seen when it started: a read must not be answered below it.
    pub(crate) floor: i64,
}

/// What a call's messages are for.
pub(crate) enum CallKind {
    /// One response, handed to `done`.
    Unary {
        done: Completion,
        /// The response message, once read (exactly one).
        response: Option<Bytes>,
        /// The framed request, kept to send it again.
        request: Bytes,
        /// Already retried after a stale token.
        retried: bool,
        /// May be retried after it was processed (read-only, or the caller opted in).
        retryable: bool,
    },
    /// The client's own Authenticate call.
    Auth { response: Option<Bytes> },
    /// A shared stream (watch, lease keepalive): its messages go to their machine.
    Shared(Shared),
    /// An election observer's own server stream.
    Observe(ObserveKey),
    /// A one-shot server stream whose messages go to the stream's callback (snapshot).
    Sink(StreamKey),
    /// The endpoint auto-sync's MemberList.
    Sync { response: Option<Bytes> },
    /// The periodic health check.
    Health {
        /// The endpoint it was sent to, once sent (not an index: the list may change while
        /// the check is in flight).
        sent_to: Option<Endpoint>,
        response: Option<Bytes>,
    },
}

impl CallKind {
    /// Whether it carries a stream that asks etcd to end it when the member loses its
    /// leader (`hasleader`), so that it moves on instead of waiting on a partitioned member.
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, CallKind::Shared(_) | CallKind::Observe(_))
    }
}

/// Where a call is in its life.
pub(crate) enum CallState {
    /// Waiting for a usable link; holds the framed request.
    Queued(Bytes),
    /// Sent; the response is being read.
    Open(H2Stream, Reader),
}

/// Every call, and the queue of calls waiting for a link.
#[derive(Default)]
pub(crate) struct Calls {
    slots: Slots<Call, tag::Call>,
    /// Calls waiting for a usable link, oldest first. Keys of calls that have ended
    /// meanwhile are skipped.
    queued: VecDeque<CallKey>,
    /// Unary calls pending.
    unary: usize,
}

impl Calls {
    #[allow(clippy::too_many_arguments)] // one call's parts, each needed
    /// Adds a call at the back of the queue (`first`: at its front). `deadline`: its timer
    /// is armed that far from now.
    pub(crate) fn add(
        &mut self,
        path: &'static str,
        operation: &'static str,
        kind: CallKind,
        body: Bytes,
        deadline: Option<Duration>,
        first: bool,
        cx: &mut Cx,
    ) -> CallKey {
        if matches!(kind, CallKind::Unary { .. }) {
            self.unary += 1;
        }
        let key = self.slots.insert(Call {
            path,
            operation,
            kind,
            deadline: None,
            timeout: deadline,
            state: CallState::Queued(body),
            auth_epoch: 0,
            link: 0,
            sent_mark: 0,
            resends: 0,
            retries: 0,
            last_error: None,
            floor: 0,
        });
        if let Some(after) = deadline {
            let timer = cx.after(after, Timer::Deadline(key));
            self.slots.get_mut(key).expect("just added").deadline = Some(timer);
        }
        match first {
            true => self.queued.push_front(key),
            false => self.queued.push_back(key),
        }
        key
    }

    pub(crate) fn get(&self, key: CallKey) -> Option<&Call> {
        self.slots.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: CallKey) -> Option<&mut Call> {
        self.slots.get_mut(key)
    }

    /// The key of the call in slot `index` (its h2 waker's key).
    pub(crate) fn key_at(&self, index: usize) -> Option<CallKey> {
        self.slots.key_at(index)
    }

    /// Takes a call out: its deadline is disarmed and its stream, if open, reset (what is
    /// returned holds only what its owner is told with).
    pub(crate) fn remove(&mut self, key: CallKey, cx: &mut Cx) -> Option<Call> {
        let mut call = self.slots.remove(key)?;
        if let CallState::Open(stream, _) =
            std::mem::replace(&mut call.state, CallState::Queued(Bytes::new()))
        {
            stream.cancel();
        }
        if let Some(deadline) = call.deadline {
            cx.cancel(deadline);
        }
        if matches!(call.kind, CallKind::Unary { .. }) {
            self.unary -= 1;
        }
        Some(call)
    }

    /// The next queued call still pending, left at the front of the queue.
    pub(crate) fn next_queued(&mut self) -> Option<CallKey> {
        while let Some(&key) = self.queued.front() {
            match self.slots.get(key) {
                Some(Call { state: CallState::Queued(_), .. }) => return Some(key),
                _ => {
                    self.queued.pop_front();
                }
            }
        }
        None
    }

    /// Drops the front of the queue (it was opened).
    pub(crate) fn pop_queued(&mut self) {
        self.queued.pop_front();
    }

    /// Whether a call waits for a link (keys of ended calls are dropped on the way).
    pub(crate) fn any_queued(&mut self) -> bool {
        let slots = &self.slots;
        self.queued.retain(|&k| slots.contains(k));
        !self.queued.is_empty()
    }

    /// Queued unary calls (waiting for a token that will not come, say).
    pub(crate) fn queued_unary(&self) -> Vec<CallKey> {
        let unary = |k: &&CallKey| {
            self.slots.get(**k).is_some_and(|c| {
                matches!((&c.kind, &c.state), (CallKind::Unary { .. }, CallState::Queued(_)))
            })
        };
        self.queued.iter().filter(unary).copied().collect()
    }

    /// Calls with an open stream.
    pub(crate) fn open(&self) -> Vec<CallKey> {
        self.slots.keys_where(|c| matches!(c.state, CallState::Open(..)))
    }

    /// Every call.
    pub(crate) fn all(&self) -> Vec<CallKey> {
        self.slots.keys_where(|_| true)
    }

    /// Whether any call has an open stream (a PING is worth sending).
    pub(crate) fn any_open(&self) -> bool {
        self.slots.iter().any(|(_, c)| matches!(c.state, CallState::Open(..)))
    }

    /// Whether no call with a deadline is open: a draining link may end. The long-lived ones
    /// (streams, lock, campaign, snapshot) are not waited for; streams re-open elsewhere.
    pub(crate) fn drained(&self) -> bool {
        !self.slots.iter().any(|(_, c)| {
            matches!(c.state, CallState::Open(..))
                && (c.deadline.is_some() || matches!(c.kind, CallKind::Auth { .. }))
        })
    }

    /// Unary calls pending.
    pub(crate) fn unary(&self) -> usize {
        self.unary
    }

    /// Puts unary call `key` back in the queue, its request as first sent (its stream, if
    /// any, is reset); false for any other kind of call.
    pub(crate) fn requeue(&mut self, key: CallKey) -> bool {
        self.park(key) && {
            self.queued.push_back(key);
            true
        }
    }

    /// Takes unary call `key` off the link, its request as first sent, without queueing it
    /// (it waits for a timer: see [`unpark`](Self::unpark)); false for any other kind.
    pub(crate) fn park(&mut self, key: CallKey) -> bool {
        let Some(call) = self.slots.get_mut(key) else { return false };
        let CallKind::Unary { request, response, .. } = &mut call.kind else {
            return false;
        };
        *response = None;
        let queued = CallState::Queued(request.clone());
        if let CallState::Open(stream, _) = std::mem::replace(&mut call.state, queued) {
            stream.cancel();
        }
        // Off the queue, if it waited there (a failed connect fails queued calls too).
        self.queued.retain(|&k| k != key);
        true
    }

    /// Queues a parked call (its backoff is over).
    pub(crate) fn unpark(&mut self, key: CallKey) -> bool {
        let parked = self.slots.get(key).is_some_and(|c| matches!(c.state, CallState::Queued(_)));
        if parked && !self.queued.contains(&key) {
            self.queued.push_back(key);
        }
        parked
    }

    /// Queues unary call `key` to be sent again (the server never processed it); counts
    /// against [`MAX_RESENDS`].
    pub(crate) fn resend(&mut self, key: CallKey) -> bool {
        let Some(call) = self.slots.get_mut(key) else { return false };
        if call.resends >= MAX_RESENDS {
            return false;
        }
        call.resends += 1;
        self.requeue(key)
    }

    /// Forgets every call: returns them for their owners to be told.
    pub(crate) fn drain(&mut self, cx: &mut Cx) -> Vec<Call> {
        let keys = self.all();
        self.queued.clear();
        keys.into_iter().filter_map(|k| self.remove(k, cx)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn unary() -> CallKind {
        CallKind::Unary {
            done: Box::new(|_| {}),
            response: None,
            request: Bytes::from_static(b"req"),
            retried: false,
            retryable: false,
        }
    }

    #[test]
    fn the_queue_keeps_order_skips_ended_calls_and_puts_auth_first() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut calls = Calls::default();
        let a = calls.add("/a", "a", unary(), Bytes::new(), None, false, &mut cx);
        let b = calls.add("/b", "b", unary(), Bytes::new(), None, false, &mut cx);
        let auth = calls.add(
            "/auth",
            "authenticate",
            CallKind::Auth { response: None },
            Bytes::new(),
            None,
            true,
            &mut cx,
        );
        assert_eq!(calls.next_queued(), Some(auth));
        calls.pop_queued();
        calls.remove(a, &mut cx);
        assert_eq!(calls.next_queued(), Some(b), "ended calls are skipped");
        assert_eq!(calls.unary(), 1);
        assert_eq!(calls.queued_unary(), vec![b]);
    }

    #[test]
    fn a_deadline_is_armed_and_disarmed_with_the_call() {
        let t0 = Instant::now();
        let mut cx = Cx::new(t0, 1);
        let mut calls = Calls::default();
        let a = calls.add(
            "/a",
            "a",
            unary(),
            Bytes::new(),
            Some(Duration::from_secs(2)),
            false,
            &mut cx,
        );
        let due = cx.timers.next_deadline().expect("armed");
        assert!(due <= t0 + Duration::from_secs(2) && due > t0 + Duration::from_millis(1900));
        calls.remove(a, &mut cx);
        assert_eq!(cx.timers.next_deadline(), None);
    }

    #[test]
    fn a_unary_call_is_resent_a_bounded_number_of_times_and_a_stream_never() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut calls = Calls::default();
        let a = calls.add("/a", "a", unary(), Bytes::new(), None, false, &mut cx);
        calls.pop_queued();
        for _ in 0..MAX_RESENDS {
            assert!(calls.resend(a));
        }
        assert!(!calls.resend(a));
        let w = calls.add(
            "/w",
            "watch",
            CallKind::Shared(Shared::Watch),
            Bytes::new(),
            None,
            false,
            &mut cx,
        );
        assert!(!calls.resend(w));
    }
}
