//! The periodic health check: every `health_interval`, a Maintenance Status call to the
//! endpoint in use. Healthy means it answered within the interval and knows a leader (gRPC's
//! own health service answers SERVING whatever the cluster's state, so it is not asked).
//! Only changes are reported; an unhealthy endpoint is left for the next one when there
//! are several.
//!
//! ```text
//!   timer ──► check queued ──answer with a leader──► healthy
//!     ▲            │        ──error, no leader, late──► unhealthy (link drains, moves on)
//!     └─ re-armed at every tick; a tick while a check runs starts none
//! ```

use super::cx::{Cx, Event, Timer};
use crate::grpc::codec;
use crate::pb::etcdserverpb::{StatusRequest, StatusResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use prost::Message;
use std::time::{Duration, Instant};

/// The health check's state.
#[derive(Debug)]
pub(crate) struct Health {
    /// Time between checks (`None`: checks are off).
    every: Option<Duration>,
    /// The next tick, while armed.
    timer: Option<(TimerKey, Instant)>,
    /// A check is in flight.
    checking: bool,
    /// The last health reported (healthy until a check says otherwise).
    healthy: bool,
}

impl Health {
    /// Checks every `every` (`None`: never); the first tick is armed one interval from now.
    pub(crate) fn new(every: Option<Duration>, cx: &mut Cx) -> Health {
        let mut health = Health { every, timer: None, checking: false, healthy: true };
        health.schedule(cx);
        health
    }

    fn schedule(&mut self, cx: &mut Cx) {
        if let Some(every) = self.every {
            self.timer = Some((cx.after(every, Timer::Health), cx.now + every));
        }
    }

    /// Stops the checks until [`resume`](Self::resume) (the client was closed).
    pub(crate) fn stop(&mut self, cx: &mut Cx) {
        if let Some((timer, _)) = self.timer.take() {
            cx.cancel(timer);
        }
        self.checking = false;
    }

    /// Arms the checks again if they were stopped (an operation started after a close).
    pub(crate) fn resume(&mut self, cx: &mut Cx) {
        if self.timer.is_none() {
            self.schedule(cx);
        }
    }

    /// When the next check starts, if checks are on: an embedding loop must wake for it even
    /// while nothing else is pending.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.timer.map(|(_, at)| at)
    }

    /// A tick: re-arm, and return the framed Status request of a check to start, with its
    /// deadline (the interval, at most `timeout`), unless one still runs.
    pub(crate) fn tick(&mut self, timeout: Duration, cx: &mut Cx) -> Option<(Bytes, Duration)> {
        self.timer = None;
        self.schedule(cx);
        if self.checking {
            return None;
        }
        self.checking = true;
        let every = self.every.unwrap_or(timeout);
        Some((codec::encode(&StatusRequest {}), every.min(timeout)))
    }

    /// The check ended with `response` (`None`: it failed) on endpoint `name`: reports a
    /// change; whether the endpoint is healthy.
    pub(crate) fn checked(&mut self, name: String, response: Option<Bytes>, cx: &mut Cx) -> bool {
        self.checking = false;
        let healthy =
            response.and_then(|r| StatusResponse::decode(r).ok()).is_some_and(|s| s.leader != 0);
        if healthy != self.healthy {
            self.healthy = healthy;
            cx.emit(Event::Health(healthy, name));
        }
        healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: u64) -> Option<Bytes> {
        Some(StatusResponse { leader, ..Default::default() }.encode_to_vec().into())
    }

    fn reports(cx: &mut Cx) -> Vec<bool> {
        cx.events
            .drain(..)
            .map(|e| match e {
                Event::Health(h, _) => h,
                _ => panic!("not a health event"),
            })
            .collect()
    }

    #[test]
    fn only_changes_are_reported_and_no_leader_is_unhealthy() {
        let t0 = Instant::now();
        let mut cx = Cx::new(t0, 1);
        let every = Duration::from_secs(1);
        let mut h = Health::new(Some(every), &mut cx);
        assert_eq!(h.due(), Some(t0 + every));
        let (_, deadline) = h.tick(Duration::from_secs(5), &mut cx).unwrap();
        assert_eq!(deadline, every, "an answer later than the interval is too late");
        assert!(h.tick(Duration::from_secs(5), &mut cx).is_none(), "one check at a time");
        assert!(h.checked("a".into(), status(1), &mut cx));
        assert!(!h.checked("a".into(), status(0), &mut cx));
        assert!(!h.checked("a".into(), None, &mut cx));
        assert!(h.checked("a".into(), status(2), &mut cx));
        assert_eq!(reports(&mut cx), vec![false, true]);
    }

    #[test]
    fn off_stays_off_and_a_stop_waits_for_resume() {
        let mut cx = Cx::new(Instant::now(), 1);
        assert_eq!(Health::new(None, &mut cx).due(), None);
        let mut h = Health::new(Some(Duration::from_secs(1)), &mut cx);
        h.stop(&mut cx);
        assert_eq!((h.due(), cx.timers.next_deadline()), (None, None));
        h.resume(&mut cx);
        assert!(h.due().is_some());
    }
}
