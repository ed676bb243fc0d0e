//! Authentication with stored credentials: on every new connection, and again (once, for
//! every call that needs it) when the server says the token is stale.
//!
//! ```text
//!   Open ──new connection, or a call failed with a stale token──► Authenticating(call)
//!    ▲                                                                  │
//!    └──────────── answered: new token (or the failure, reported) ──────┘
//! ```
//!
//! While `Authenticating`, no other call is opened: they wait in the queue behind the
//! Authenticate call, so that streams re-open with the new token and the calls that failed
//! are retried with it. A call is retried at most once; "authentication failed" is final.

use super::call::{CallKey, CallKind};
use super::shared::Shared;
use super::{Session, Timer};
use crate::error::Code;
use crate::grpc::{codec, Rpc};
use crate::pb::etcdserverpb::{auth_rpc, AuthenticateRequest, AuthenticateResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use http::HeaderValue;
use prost::Message;

/// Whether a server error means "authenticate again and retry": etcd's invalid token and
/// old auth revision. The code varies (UNAUTHENTICATED, INVALID_ARGUMENT, UNKNOWN), and so
/// does the wording: etcd 3.5.1 reports a JWT token issued before an auth-store change as
/// UNKNOWN "auth: revision in header is old". So the message decides.
pub(crate) fn is_stale_token(message: &str) -> bool {
    ["invalid auth token", "revision of auth store is old", "revision in header is old"]
        .iter()
        .any(|m| message.contains(m))
}

/// The authentication gate.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) enum AuthGate {
    /// Calls go out as they come.
    #[default]
    Open,
    /// This Authenticate call goes first; the others wait behind it.
    Authenticating(CallKey),
    /// The last Authenticate failed for a passing reason (a leader change, its deadline)
    /// while the connection stayed up: it is tried again when this timer fires, and the
    /// others keep waiting.
    Backoff(TimerKey),
}

/// Transient Authenticate failures in a row before the waiting calls get the error.
const MAX_AUTH_RETRIES: u32 = 5;

impl Session {
    /// Starts an Authenticate call at the front of the queue, unless one is under way or no
    /// credentials are held.
    pub(super) fn start_auth(&mut self) {
        let Some((name, password)) = self.cfg.credentials.clone() else { return };
        if !matches!(self.auth, AuthGate::Open) {
            return; // one is under way, or scheduled
        }
        let body = codec::encode(&AuthenticateRequest { name, password });
        let path = <auth_rpc::Authenticate as Rpc>::PATH;
        let key = self.queue_call(path, "authenticate", CallKind::Auth { response: None }, body);
        // queue_call appended it: it goes first instead.
        self.queued.pop_back();
        self.queued.push_front(key);
        let deadline = self.timers.insert(self.now + self.cfg.timeout, super::Timer::Deadline(key));
        self.calls[key.index].deadline = Some(deadline);
        self.auth = AuthGate::Authenticating(key);
    }

    /// Whether call `key` may be opened now (the gate lets only its own call through).
    pub(super) fn auth_allows(&self, key: CallKey) -> bool {
        match self.auth {
            AuthGate::Open => true,
            AuthGate::Authenticating(auth) => auth == key,
            AuthGate::Backoff(_) => false,
        }
    }

    /// The Authenticate call ended: keep the token, or report the failure to every call
    /// that was waiting for it.
    pub(super) fn auth_done(
        &mut self,
        response: Option<Bytes>,
        result: Result<(), (Code, String)>,
    ) {
        self.auth = AuthGate::Open;
        self.wakers.wake(crate::h2io::wake::CONNECTION);
        let token = result.and_then(|()| {
            let bytes = response.ok_or((Code::Internal, "no authenticate response".into()))?;
            let resp = AuthenticateResponse::decode(bytes)
                .map_err(|e| (Code::Internal, format!("cannot decode: {e}")))?;
            HeaderValue::from_str(&resp.token)
                .map_err(|_| (Code::Internal, "the server's token is not a valid header".into()))
        });
        match token {
            Ok(token) => {
                self.cfg.token = Some(token);
                self.auth_epoch += 1;
                self.auth_failures = 0;
            }
            // The server has auth off: nothing to authenticate, and no token to send.
            Err((_, msg)) if msg.contains("authentication is not enabled") => {
                self.cfg.token = None;
                self.auth_failures = 0;
            }
            Err((code @ (Code::Unavailable | Code::DeadlineExceeded), msg)) => {
                self.auth_failed_for_now(code, &msg)
            }
            Err((code, msg)) => {
                self.auth_failures = 0;
                self.fail_waiting_calls(code, &msg);
            }
        }
    }

    /// A passing Authenticate failure. With the connection gone there is nothing to do: the
    /// next one authenticates first. Otherwise try again after a backoff, the other calls
    /// still waiting; after a few failures in a row they get the error.
    fn auth_failed_for_now(&mut self, code: Code, msg: &str) {
        if !matches!(self.link, super::Link::Up(_)) {
            return;
        }
        self.auth_failures += 1;
        if self.auth_failures > MAX_AUTH_RETRIES {
            self.auth_failures = 0;
            return self.fail_waiting_calls(code, msg);
        }
        let delay = self.jittered(super::shared::backoff(self.auth_failures));
        let timer = self.timers.insert(self.now + delay, Timer::AuthRetry);
        self.auth = AuthGate::Backoff(timer);
    }

    /// The Authenticate backoff is over: try again.
    pub(super) fn auth_retry_due(&mut self) {
        if let AuthGate::Backoff(_) = self.auth {
            self.auth = AuthGate::Open;
            self.start_auth();
        }
    }

    /// Opens the gate without waiting (the connection is gone; the next one authenticates
    /// before anything else).
    pub(super) fn reset_auth_gate(&mut self) {
        if let AuthGate::Backoff(timer) = std::mem::take(&mut self.auth) {
            self.timers.cancel(timer);
        }
    }

    /// Fails every queued unary call with the authentication error (it had been waiting for
    /// a token that will not come).
    fn fail_waiting_calls(&mut self, code: Code, msg: &str) {
        let waiting: Vec<usize> = self
            .queued
            .iter()
            .filter(|k| {
                self.calls.get(k.index).is_some_and(|c| {
                    c.generation == k.generation && matches!(c.kind, CallKind::Unary { .. })
                })
            })
            .map(|k| k.index)
            .collect();
        for index in waiting {
            let msg = format!("authentication failed: {msg}");
            self.finish_now(index, Err((code, msg)));
        }
    }

    /// Whether unary call `index`, failing with `message`, should instead be retried once
    /// after authenticating again.
    pub(super) fn retry_after_auth(&mut self, index: usize, message: &str) -> bool {
        if self.cfg.credentials.is_none() || !is_stale_token(message) {
            return false;
        }
        let call = &mut self.calls[index];
        let CallKind::Unary { retried, .. } = &mut call.kind else {
            return false;
        };
        if *retried {
            return false;
        }
        // Sent with a token older than the current one: retrying with the current token is
        // enough, without authenticating again.
        let newer_token_exists = call.auth_epoch < self.auth_epoch;
        *retried = true;
        self.requeue_unary(index);
        if !newer_token_exists {
            self.start_auth();
        }
        true
    }

    /// Whether a stream ended for a stale token that the client can renew (it holds
    /// credentials): it then starts authenticating, and the stream is not given up.
    pub(super) fn stale_token_to_renew(&mut self, message: &str) -> bool {
        if self.cfg.credentials.is_none() || !is_stale_token(message) {
            return false;
        }
        self.start_auth();
        true
    }

    /// A watch create was refused for a stale token: authenticate again, then re-open the
    /// watch stream (its token is the one it was opened with), resuming every watch.
    pub(super) fn reauth_watches(&mut self) {
        self.start_auth();
        self.restart_shared(Shared::Watch);
        // Once per stream: refusals on the stream opened with the fresh token are final.
        self.watches.reauth_spent = true;
    }
}
