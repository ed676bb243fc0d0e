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

use super::call::CallKind;
use super::{Event, Session, Timer};
use crate::error::EtcdError;
use crate::grpc::{codec, Rpc};
use crate::pb::etcdserverpb::{maintenance_rpc, StatusRequest, StatusResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use prost::Message;
use std::time::Instant;

/// The health check's state.
#[derive(Debug)]
pub(crate) struct Health {
    /// The next tick (`None`: checks are off).
    timer: Option<(TimerKey, Instant)>,
    /// A check is in flight.
    pub(super) checking: bool,
    /// The last health reported (healthy until a check says otherwise).
    healthy: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health { timer: None, checking: false, healthy: true }
    }
}

impl Session {
    /// Arms the first tick, one interval from now (when checks are on).
    pub(super) fn schedule_health(&mut self) {
        if let Some(every) = self.cfg.health_interval {
            let at = self.now + every;
            self.health.timer = Some((self.timers.insert(at, Timer::Health), at));
        }
    }

    /// Stops the checks until the next operation (the client was closed).
    pub(super) fn stop_health(&mut self) {
        if let Some((timer, _)) = self.health.timer.take() {
            self.timers.cancel(timer);
        }
    }

    /// Arms the checks again if they were stopped (an operation started after a close).
    pub(super) fn resume_health(&mut self) {
        if self.health.timer.is_none() {
            self.schedule_health();
        }
    }

    /// When the next check starts, if checks are on: an embedding loop must wake for it even
    /// while nothing else is pending.
    pub(crate) fn health_due(&self) -> Option<Instant> {
        self.health.timer.map(|(_, at)| at)
    }

    /// A tick: re-arm, and start a check unless one still runs.
    pub(super) fn health_tick(&mut self) {
        self.health.timer = None;
        self.schedule_health();
        if self.health.checking {
            return;
        }
        self.health.checking = true;
        let path = <maintenance_rpc::Status as Rpc>::PATH;
        let body = codec::encode(&StatusRequest {});
        let key = self.queue_call(
            path,
            "health",
            CallKind::Health { sent_to: None, response: None },
            body,
        );
        let every = self.cfg.health_interval.unwrap_or(self.cfg.timeout);
        let at = self.now + every.min(self.cfg.timeout);
        let deadline = self.timers.insert(at, Timer::Deadline(key));
        self.calls[key.index].deadline = Some(deadline);
    }

    /// The check ended on `endpoint` (the one it was sent to, or the one that could not be
    /// reached): report a change, and move on from an unhealthy endpoint.
    pub(super) fn health_checked(
        &mut self,
        endpoint: usize,
        response: Option<Bytes>,
        result: Result<(), EtcdError>,
    ) {
        self.health.checking = false;
        let healthy = result.is_ok()
            && response.and_then(|r| StatusResponse::decode(r).ok()).is_some_and(|s| s.leader != 0);
        if healthy != self.health.healthy {
            self.health.healthy = healthy;
            let name = self.cfg.endpoints[endpoint].to_string();
            self.events.push_back(Event::Health(healthy, name));
        }
        if !healthy && endpoint == self.endpoint {
            self.leave_endpoint(format!("health check of {} failed", self.cfg.endpoints[endpoint]));
        }
    }
}
