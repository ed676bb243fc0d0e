//! Authentication: the token sent with every call (set here and nowhere else), the
//! credentials to get a new one with, and the gate that holds calls back while the
//! client's own Authenticate call runs.
//!
//! ```text
//!   Open ──new link / stale token (credentials held)──► Authenticating(call) ──token──► Open
//!    ▲                                                        │
//!    │                   passing failure (no leader, late) ───┤──other failure──► Open, and
//!    └───── timer ◄── Backoff(timer) ◄────────────────────────┘   the waiting calls fail
//! ```

use super::cx::{Cx, Timer};
use super::failure::{decide, Cause, Decision, Policy, Subject};
use super::registry::CallKey;
use crate::error::Code;
use crate::grpc::codec;
use crate::info::AuthState;
use crate::pb::etcdserverpb::{AuthenticateRequest, AuthenticateResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use http::HeaderValue;
use prost::Message;

#[derive(Debug, Default, Clone, Copy)]
enum Gate {
    /// Calls go out as they come.
    #[default]
    Open,
    /// This Authenticate call goes first; the others wait behind it.
    Authenticating(CallKey),
    /// The last Authenticate failed for a passing reason while the link stayed up: it is
    /// tried again when this timer fires, and the others keep waiting.
    Backoff(TimerKey),
}

/// What the end of an Authenticate call means for the calls waiting behind it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// They go out (with the new token, or with none: auth is off on the server).
    Proceed,
    /// They keep waiting: it is tried again after a backoff, or by the next link.
    Wait,
    /// They fail with this.
    Fail(Code, String),
}

/// The client's authentication state.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    gate: Gate,
    token: Option<HeaderValue>,
    /// User and password: authenticate on every link, and again on a stale token.
    credentials: Option<(String, String)>,
    /// Counts the tokens obtained, so that a call knows whether it was sent with the latest.
    epoch: u64,
    /// Passing Authenticate failures in a row.
    failures: u32,
    /// Why the last Authenticate failed for good, until one succeeds (for `Client::info`).
    failed: Option<String>,
}

impl Auth {
    pub(crate) fn new(token: Option<HeaderValue>, credentials: Option<(String, String)>) -> Auth {
        Auth { token, credentials, ..Auth::default() }
    }

    /// The token to send (`None`: none).
    pub(crate) fn token(&self) -> Option<&HeaderValue> {
        self.token.as_ref()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The user and password to authenticate with, if any.
    pub(crate) fn credentials(&self) -> Option<&(String, String)> {
        self.credentials.as_ref()
    }

    /// A token obtained by the user's own `authenticate` call, and the credentials to renew
    /// it with.
    pub(crate) fn set(&mut self, token: HeaderValue, user: String, password: String) {
        self.store(Some(token));
        self.credentials = Some((user, password));
        self.failed = None;
    }

    /// Forgets the token and the credentials (auth was turned off).
    pub(crate) fn clear(&mut self) {
        self.token = None;
        self.credentials = None;
        self.failed = None;
    }

    /// The state `Client::info` reports: never the password or the token.
    pub(crate) fn info(&self) -> AuthState {
        let user = self.credentials.as_ref().map(|(user, _)| user.clone());
        match (self.gate, user, &self.failed) {
            (Gate::Authenticating(_) | Gate::Backoff(_), Some(user), _) => {
                AuthState::Authenticating { user }
            }
            (_, Some(user), Some(message)) => AuthState::Failed { user, message: message.clone() },
            (_, user, _) if self.token.is_some() => AuthState::Authenticated { user },
            (_, Some(user), _) => AuthState::Unauthenticated { user },
            (_, None, _) => AuthState::None,
        }
    }

    /// The one place the token changes.
    fn store(&mut self, token: Option<HeaderValue>) {
        if token.is_some() {
            self.epoch += 1;
        }
        self.token = token;
    }

    /// The framed Authenticate request to send first, unless one is under way or scheduled
    /// or no credentials are held. Follow with [`started`](Self::started).
    pub(crate) fn request(&self) -> Option<Bytes> {
        let (name, password) = self.credentials.clone()?;
        matches!(self.gate, Gate::Open)
            .then(|| codec::encode(&AuthenticateRequest { name, password }))
    }

    /// Authenticate call `key` is queued first: the gate closes behind it.
    pub(crate) fn started(&mut self, key: CallKey) {
        self.gate = Gate::Authenticating(key);
    }

    /// Whether call `key` may be opened now (the gate lets only its own call through).
    pub(crate) fn allows(&self, key: CallKey) -> bool {
        match self.gate {
            Gate::Open => true,
            Gate::Authenticating(auth) => auth == key,
            Gate::Backoff(_) => false,
        }
    }

    /// The Authenticate call ended with `response` or an error; `link_up`: the link it ran
    /// on is still up.
    pub(crate) fn finished(
        &mut self,
        response: Option<Bytes>,
        result: Result<(), (Code, String)>,
        link_up: bool,
        cx: &mut Cx,
    ) -> AuthOutcome {
        self.gate = Gate::Open;
        let token = result.and_then(|()| {
            let bytes = response.ok_or((Code::Internal, "no authenticate response".into()))?;
            let resp = AuthenticateResponse::decode(bytes)
                .map_err(|e| (Code::Internal, format!("cannot decode: {e}")))?;
            HeaderValue::from_str(&resp.token)
                .map_err(|_| (Code::Internal, "the server's token is not a valid header".into()))
        });
        let (code, msg) = match token {
            Ok(token) => {
                self.store(Some(token));
                self.failures = 0;
                self.failed = None;
                return AuthOutcome::Proceed;
            }
            Err(e) => e,
        };
        if msg.contains("authentication is not enabled") {
            // The server has auth off: nothing to authenticate, and no token to send.
            self.store(None);
            self.failures = 0;
            self.failed = None;
            return AuthOutcome::Proceed;
        }
        let subject = Subject::Auth { failures: self.failures, link_up };
        let policy = Policy {
            credentials: true,
            max_retries: 0,
            retry_attempts: 0,
            retry_backoff: std::time::Duration::ZERO,
        };
        match decide(subject, Cause::Status(code, &msg), policy) {
            Decision::Nothing => AuthOutcome::Wait,
            Decision::RetryAuth { after } => {
                self.failures += 1;
                let delay = cx.jittered(after);
                self.gate = Gate::Backoff(cx.after(delay, Timer::AuthRetry));
                AuthOutcome::Wait
            }
            _ => {
                self.failures = 0;
                let msg = format!("authentication failed: {msg}");
                self.failed = Some(msg.clone());
                AuthOutcome::Fail(code, msg)
            }
        }
    }

    /// The backoff is over: whether to authenticate again now.
    pub(crate) fn retry_due(&mut self) -> bool {
        if let Gate::Backoff(_) = self.gate {
            self.gate = Gate::Open;
            return true;
        }
        false
    }

    /// Opens the gate without waiting (the link is gone; the next one authenticates first).
    pub(crate) fn reset(&mut self, cx: &mut Cx) {
        if let Gate::Backoff(timer) = std::mem::take(&mut self.gate) {
            cx.cancel(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::{tag, Slots};
    use std::time::Instant;

    fn token_response(t: &str) -> Option<Bytes> {
        Some(AuthenticateResponse { token: t.into(), ..Default::default() }.encode_to_vec().into())
    }

    #[test]
    fn a_token_opens_the_gate_and_moves_the_epoch() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut auth = Auth::new(None, Some(("u".into(), "p".into())));
        assert!(auth.request().is_some());
        let key = Slots::<(), tag::Call>::default().insert(());
        let other = Slots::<(), tag::Call>::default().insert(());
        auth.started(key);
        assert!(auth.request().is_none(), "one at a time");
        assert!(auth.allows(key));
        assert_eq!(
            auth.finished(token_response("t1"), Ok(()), true, &mut cx),
            AuthOutcome::Proceed
        );
        assert_eq!((auth.token().unwrap(), auth.epoch()), (&HeaderValue::from_static("t1"), 1));
        assert!(auth.allows(other));
    }

    #[test]
    fn passing_failures_back_off_then_fail_and_a_lost_link_just_waits() {
        let t0 = Instant::now();
        let mut cx = Cx::new(t0, 1);
        let mut auth = Auth::new(None, Some(("u".into(), "p".into())));
        let unavailable = || Err((Code::Unavailable, "etcdserver: no leader".to_string()));
        for _ in 0..5 {
            assert_eq!(auth.finished(None, unavailable(), true, &mut cx), AuthOutcome::Wait);
            assert!(auth.request().is_none(), "the gate stays closed during the backoff");
            assert!(auth.retry_due());
        }
        let out = auth.finished(None, unavailable(), true, &mut cx);
        assert!(matches!(out, AuthOutcome::Fail(Code::Unavailable, _)), "{out:?}");
        assert_eq!(auth.finished(None, unavailable(), false, &mut cx), AuthOutcome::Wait);
        let wrong = Err((Code::InvalidArgument, "authentication failed".to_string()));
        assert!(matches!(auth.finished(None, wrong, true, &mut cx), AuthOutcome::Fail(..)));
    }

    #[test]
    fn auth_off_on_the_server_drops_the_token() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut auth =
            Auth::new(Some(HeaderValue::from_static("old")), Some(("u".into(), "p".into())));
        let off = Err((Code::FailedPrecondition, "authentication is not enabled".to_string()));
        assert_eq!(auth.finished(None, off, true, &mut cx), AuthOutcome::Proceed);
        assert!(auth.token().is_none());
    }
}
