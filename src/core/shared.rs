//! The life of a shared bidi stream (Watch, LeaseKeepAlive): opened while something needs
//! it, re-opened after it ends (at once the first time, then with a growing backoff while
//! attempts keep failing), and closed when nothing needs it any more. What travels on it
//! belongs to the watch hub and to the keepalives.
//!
//! ```text
//!   Idle ──needed──► Call(key) ──stream ended──► Backoff(timer) ──timer──► Idle ──needed──► …
//!    ▲                  │          (first attempt: straight back to Idle, and re-opened)
//!    └── not needed ────┘  (stream reset)
//! ```

use super::cx::{Cx, Shared, Timer};
use super::failure::{decide, Cause, Decision, Policy, Subject};
use super::registry::CallKey;
use crate::error::Code;
use crate::timer::TimerKey;

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Idle,
    Call(CallKey),
    Backoff(TimerKey),
}

/// What to do after the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterEnd {
    /// Open it again now, if still needed (`authenticate` first).
    Reopen { authenticate: bool },
    /// It re-opens when its backoff timer fires (`authenticate` meanwhile).
    Wait { authenticate: bool },
    /// Give up: every user gets the error; nothing re-opens.
    GiveUp,
}

/// One shared stream's state (see the module diagram) and its failed attempts in a row.
#[derive(Debug)]
pub(crate) struct SharedStream {
    kind: Shared,
    state: State,
    /// Re-opens since the stream last delivered a message.
    attempts: u32,
}

impl SharedStream {
    pub(crate) fn new(kind: Shared) -> SharedStream {
        SharedStream { kind, state: State::Idle, attempts: 0 }
    }

    /// The call carrying the stream, while it exists.
    pub(crate) fn call(&self) -> Option<CallKey> {
        match self.state {
            State::Call(key) => Some(key),
            _ => None,
        }
    }

    /// Whether neither a call nor a backoff exists (it may be opened).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Call `key` now carries the stream.
    pub(crate) fn opened(&mut self, key: CallKey) {
        self.state = State::Call(key);
    }

    /// The stream delivered a message that shows it works.
    pub(crate) fn worked(&mut self) {
        self.attempts = 0;
    }

    /// Ends the stream, whatever its state (nothing needs it, or it restarts): returns the
    /// call to reset, if any. `forget`: the attempts count starts over.
    pub(crate) fn stop(&mut self, forget: bool, cx: &mut Cx) -> Option<CallKey> {
        if forget {
            self.attempts = 0;
        }
        match std::mem::take(&mut self.state) {
            State::Call(key) => Some(key),
            State::Backoff(timer) => {
                cx.cancel(timer);
                None
            }
            State::Idle => None,
        }
    }

    /// The stream's call ended with `result` (`wanted`: something still needs it).
    pub(crate) fn ended(
        &mut self,
        result: Result<(), (Code, String)>,
        wanted: bool,
        policy: Policy,
        cx: &mut Cx,
    ) -> AfterEnd {
        self.state = State::Idle;
        let (code, message) = result.err().unwrap_or_else(ended_by_server);
        let subject =
            Subject::Stream { attempts: self.attempts, keepalive: self.kind == Shared::Keepalive };
        let decision = decide(subject, Cause::Status(code, &message), policy);
        let Decision::Reopen { after, authenticate } = decision else {
            self.attempts = 0;
            return AfterEnd::GiveUp;
        };
        if !wanted {
            self.attempts = 0;
            return AfterEnd::Reopen { authenticate };
        }
        self.attempts += 1;
        let delay = cx.jittered(after);
        if delay.is_zero() {
            return AfterEnd::Reopen { authenticate };
        }
        self.state = State::Backoff(cx.after(delay, Timer::Reopen(self.kind)));
        AfterEnd::Wait { authenticate }
    }

    /// The backoff is over: whether the stream may be opened now.
    pub(crate) fn backoff_over(&mut self) -> bool {
        if let State::Backoff(_) = self.state {
            self.state = State::Idle;
            return true;
        }
        false
    }

    /// A link came up: a stream waiting out a backoff may re-open now instead of when its
    /// timer fires (a lease must not expire for a wait that no longer has a reason).
    pub(crate) fn cut_backoff(&mut self, cx: &mut Cx) -> bool {
        if let State::Backoff(timer) = self.state {
            cx.cancel(timer);
            self.state = State::Idle;
            return true;
        }
        false
    }
}

/// A stream etcd ends with OK still ended: for its users that is "unavailable".
pub(crate) fn ended_by_server() -> (Code, String) {
    (Code::Unavailable, "stream ended by the server".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::{tag, Slots};
    use std::time::{Duration, Instant};

    const POLICY: Policy = Policy {
        credentials: false,
        max_retries: 2,
        retry_attempts: 0,
        retry_backoff: std::time::Duration::ZERO,
    };

    fn lost() -> Result<(), (Code, String)> {
        Err((Code::Unavailable, "link lost".into()))
    }

    #[test]
    fn reopens_at_once_then_after_a_backoff_and_gives_up_when_retries_run_out() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut s = SharedStream::new(Shared::Watch);
        let call = Slots::<(), tag::Call>::default().insert(());
        s.opened(call);
        assert_eq!(
            s.ended(lost(), true, POLICY, &mut cx),
            AfterEnd::Reopen { authenticate: false }
        );
        assert!(s.is_idle());
        assert_eq!(s.ended(lost(), true, POLICY, &mut cx), AfterEnd::Wait { authenticate: false });
        assert!(!s.is_idle());
        let wait = cx.timers.next_deadline().unwrap() - cx.now;
        assert!(wait >= Duration::from_millis(400) && wait <= Duration::from_millis(600));
        assert!(s.backoff_over());
        assert_eq!(s.ended(lost(), true, POLICY, &mut cx), AfterEnd::GiveUp);
    }

    #[test]
    fn a_message_resets_the_count_and_a_new_link_cuts_the_backoff() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut s = SharedStream::new(Shared::Keepalive);
        s.ended(lost(), true, POLICY, &mut cx);
        s.worked();
        assert_eq!(
            s.ended(lost(), true, POLICY, &mut cx),
            AfterEnd::Reopen { authenticate: false }
        );
        assert_eq!(s.ended(lost(), true, POLICY, &mut cx), AfterEnd::Wait { authenticate: false });
        assert!(s.cut_backoff(&mut cx));
        assert_eq!(cx.timers.next_deadline(), None);
        assert!(s.is_idle());
    }

    #[test]
    fn a_permanent_status_gives_up_at_once() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut s = SharedStream::new(Shared::Watch);
        let denied = Err((Code::PermissionDenied, "permission denied".into()));
        assert_eq!(s.ended(denied, true, POLICY, &mut cx), AfterEnd::GiveUp);
    }
}
