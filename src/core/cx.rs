//! What every machine of the core may touch, handed to it explicitly: the time, the timer
//! wheel, the queue of events for the client, and the jitter generator. A machine takes a
//! `&mut Cx` and nothing else of the core, so it can be built and tested alone.

use super::registry::{CallKey, KeepaliveKey, ObserveKey, StreamItem, StreamKey};
use crate::error::EtcdError;
use crate::timer::{TimerKey, TimerWheel};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What runs when a unary call completes: it receives the response message's bytes, or the
/// error. The core never calls it; it hands it out in an event for the client to run once
/// no borrow is held.
pub(crate) type Completion = Box<dyn FnOnce(Result<Bytes, EtcdError>)>;

/// Which shared bidi stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shared {
    /// `etcdserverpb.Watch/Watch`, for every watch.
    Watch,
    /// `etcdserverpb.Lease/LeaseKeepAlive`, for every keepalive.
    Keepalive,
}

/// Timers on the wheel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timer {
    /// A unary call's deadline.
    Deadline(CallKey),
    /// A retryable call's backoff is over: it is queued again.
    Retry(CallKey),
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
    /// The next endpoint auto-sync is due.
    Sync,
    /// A recipe's alarm (see `alarms.rs`).
    Alarm(super::alarms::AlarmKey),
}

/// What the client must run, in order.
pub(crate) enum Event {
    /// A unary call finished: its completion and its result.
    Call(Completion, Result<Bytes, EtcdError>),
    /// An item for a stream's callback (watch, keepalive, observer, server stream).
    Stream(StreamKey, StreamItem),
    /// Deferred work: a cancel's callback, a failure found before anything was sent. Never
    /// run from inside the operation that queued it.
    Local(Box<dyn FnOnce()>),
    /// The health check's verdict changed: healthy or not, and the endpoint checked.
    Health(bool, String),
}

/// The core's shared context (see the module comment).
pub(crate) struct Cx {
    /// The time of the latest input or command.
    pub(crate) now: Instant,
    pub(crate) timers: TimerWheel<Timer>,
    pub(crate) events: VecDeque<Event>,
    /// State of the generator that jitters backoffs.
    jitter: u64,
}

/// Backoffs are spread over ±`JITTER` of their length, so that clients that lost the same
/// member do not all come back at the same instant.
pub(crate) const JITTER: f64 = 0.2;

impl Cx {
    /// A context at `now`; `seed` starts the jitter generator (0: a random seed).
    pub(crate) fn new(now: Instant, seed: u64) -> Cx {
        let jitter = if seed == 0 { random_seed() } else { seed | 1 };
        Cx { now, timers: TimerWheel::new(now), events: VecDeque::new(), jitter }
    }

    /// Arms `timer` to fire `delay` from now.
    pub(crate) fn after(&mut self, delay: Duration, timer: Timer) -> TimerKey {
        self.timers.insert(self.now + delay, timer)
    }

    /// Disarms a timer (a spent key is harmless).
    pub(crate) fn cancel(&mut self, timer: TimerKey) {
        self.timers.cancel(timer);
    }

    /// Queues an event for the client.
    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Queues an item for stream `key`'s callback.
    pub(crate) fn deliver(&mut self, key: StreamKey, item: StreamItem) {
        self.events.push_back(Event::Stream(key, item));
    }

    /// `delay` moved by a random fraction of at most ±[`JITTER`].
    pub(crate) fn jittered(&mut self, delay: Duration) -> Duration {
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

/// A seed different in every client (std's hasher keys are random).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth_and_one_seed_gives_one_sequence() {
        let now = Instant::now();
        let (mut a, mut b) = (Cx::new(now, 7), Cx::new(now, 7));
        let base = Duration::from_secs(1);
        for _ in 0..1000 {
            let d = a.jittered(base);
            assert!(d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2), "{d:?}");
            assert_eq!(d, b.jittered(base), "deterministic for a seed");
        }
    }
}
