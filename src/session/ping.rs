//! HTTP/2 PINGs that tell a frozen or partitioned peer from a quiet one: a deadline only
//! fires per call, and a stream (a watch) has none, so without them a dead connection with
//! only streams on it would go unnoticed until TCP gives up, which can take many minutes.
//!
//! ```text
//!   Off ──connection up──► Scheduled ──due, calls or streams open──► Waiting ──PONG──► Scheduled
//!                             ▲   │                                     │
//!                             └───┘ due while idle: no PING (etcd      └──timeout──► the link
//!                                   answers pings on idle connections         is declared dead
//!                                   with GOAWAY "too_many_pings")
//! ```

use super::call::CallState;
use super::{Link, Session, Timer};
use crate::h2io::wake::CONNECTION;
use crate::timer::TimerKey;

/// The keepalive PING's state on the current connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) enum PingState {
    /// No keepalive (turned off, or no connection).
    #[default]
    Off,
    /// The next PING is due when this timer fires.
    Scheduled(TimerKey),
    /// A PING is out; the connection is dead if this timer fires first.
    Waiting(TimerKey),
}

impl Session {
    /// Arms the next PING, one interval from now (when keepalive is on).
    pub(super) fn schedule_ping(&mut self) {
        self.stop_ping();
        if let Some(every) = self.cfg.keepalive_time {
            let timer = self.timers.insert(self.now + every, Timer::PingDue(self.link_generation));
            self.ping = PingState::Scheduled(timer);
        }
    }

    /// Cancels whatever PING timer runs (the connection went down).
    pub(super) fn stop_ping(&mut self) {
        match std::mem::take(&mut self.ping) {
            PingState::Scheduled(timer) | PingState::Waiting(timer) => {
                self.timers.cancel(timer);
            }
            PingState::Off => {}
        }
    }

    /// The PING interval is over: send one if a call or stream is open, else wait again.
    pub(super) fn ping_due(&mut self, generation: u64) {
        if generation != self.link_generation {
            return;
        }
        self.ping = PingState::Off;
        let busy = self.calls.iter().any(|(_, c)| matches!(c.state, CallState::Open(..)));
        let Link::Up(t) = &mut self.link else { return };
        if !busy || t.send_ping().is_err() {
            return self.schedule_ping();
        }
        let timeout = self.cfg.keepalive_timeout;
        let timer = self.timers.insert(self.now + timeout, Timer::PingTimeout(generation));
        self.ping = PingState::Waiting(timer);
        self.wakers.wake(CONNECTION);
    }

    /// Whether the PING was answered (polled with the connection).
    pub(super) fn poll_ping(&mut self) {
        let PingState::Waiting(_) = self.ping else { return };
        let Link::Up(t) = &mut self.link else { return };
        if t.poll_pong(&self.wakers).is_some() {
            // Answered (or failed with the connection, which then ends anyway).
            self.schedule_ping();
        }
    }

    /// No answer in time: the connection is dead.
    pub(super) fn ping_timeout(&mut self, generation: u64) {
        if generation == self.link_generation && matches!(self.ping, PingState::Waiting(_)) {
            self.ping = PingState::Off;
            let msg =
                format!("no answer to a keepalive PING within {:?}", self.cfg.keepalive_timeout);
            self.handle_link_error(&msg);
        }
    }
}
