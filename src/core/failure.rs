//! The one decision about failures: what happens to a call or stream that failed (re-send,
//! retry after authenticating again, re-open after a delay, fail), and whether its member
//! should be left. Pure: the core gathers the facts, [`decide`] answers, the core acts.
//! (Snapshots and health checks are never retried: nothing asks.)

use crate::error::Code;
use std::time::Duration;

/// Times a unary call is sent again because the server provably never processed it:
/// bounded, in case a server refuses everything.
pub(crate) const MAX_RESENDS: u8 = 3;
/// Transient Authenticate failures in a row before the waiting calls get the error.
pub(crate) const MAX_AUTH_RETRIES: u32 = 5;
/// Backoff step: re-open attempt n (n ≥ 1) waits n × this, up to [`MAX_BACKOFF`].
const BACKOFF_STEP: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The keepalive stream's longest wait before re-opening: a lease lives for its TTL, so a
/// renewal must go out soon after the server is back (etcd grants every lease a fresh TTL
/// on restart, so the lease survives if the renewal is prompt).
const KEEPALIVE_MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    /// A unary call: how often it was re-sent already, whether it was already retried
    /// after a stale token, whether a newer token than the one it carried exists, whether
    /// it may be retried after it was processed (read-only, or opted in), and how often it
    /// was.
    Unary {
        resends: u8,
        retried_after_auth: bool,
        newer_token: bool,
        retryable: bool,
        retries: u32,
    },
    /// The client's own Authenticate call: transient failures in a row before this one,
    /// and whether the link it ran on is still up.
    Auth { failures: u32, link_up: bool },
    /// A re-opening stream (the shared watch or keepalive stream, an observer): re-opens in
    /// a row so far, and whether it is the keepalive stream (shorter backoff).
    Stream { attempts: u32, keepalive: bool },
}

/// How it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause<'a> {
    /// Provably never processed: refused (REFUSED_STREAM), above a GOAWAY's last stream id,
    /// none of its bytes left before the link died, or the link was refused before the
    /// server spoke.
    Unprocessed,
    /// Ended with this status (from the server, h2, the link's loss or a local deadline).
    Status(Code, &'a str),
}

/// The client's settings that bear on the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The client holds credentials: a stale token can be renewed.
    pub(crate) credentials: bool,
    /// Re-opens of a stream in a row before its users get the error.
    pub(crate) max_retries: u32,
    /// Retries of a retryable unary call.
    pub(crate) retry_attempts: u32,
    /// Wait between two attempts of a retryable unary call.
    pub(crate) retry_backoff: Duration,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Queue it again as first sent.
    Resend,
    /// Queue it again after this delay (before jitter): a retryable call the server or the
    /// link answered `UNAVAILABLE`.
    Retry { after: Duration },
    /// Queue it again behind an Authenticate call (`authenticate`: start one; otherwise a
    /// newer token exists already).
    Reauthenticate { authenticate: bool },
    /// Open the stream again after this delay (before jitter); `authenticate` first.
    Reopen { after: Duration, authenticate: bool },
    /// Authenticate again after this delay (before jitter); the waiting calls keep waiting.
    RetryAuth { after: Duration },
    /// Nothing now: the next connection authenticates first anyway.
    Nothing,
    /// Report the error (to the call, to the stream's users, to the calls waiting for a
    /// token).
    Fail,
}

/// The decision for `subject`, failed by `cause`, under `policy`.
pub(crate) fn decide(subject: Subject, cause: Cause<'_>, policy: Policy) -> Decision {
    let stale = matches!(cause, Cause::Status(_, msg) if policy.credentials && is_stale_token(msg));
    match subject {
        Subject::Unary { resends, .. } if cause == Cause::Unprocessed && resends < MAX_RESENDS => {
            Decision::Resend
        }
        Subject::Unary { retried_after_auth: false, newer_token, .. } if stale => {
            Decision::Reauthenticate { authenticate: !newer_token }
        }
        Subject::Unary { retryable: true, retries, .. }
            if retries < policy.retry_attempts && is_transient(cause) =>
        {
            Decision::Retry { after: policy.retry_backoff }
        }
        Subject::Unary { .. } => Decision::Fail,
        Subject::Auth { link_up: false, .. } => Decision::Nothing,
        Subject::Auth { failures, .. } => match cause {
            Cause::Status(Code::Unavailable | Code::DeadlineExceeded, _) | Cause::Unprocessed
                if failures < MAX_AUTH_RETRIES =>
            {
                Decision::RetryAuth { after: backoff(failures + 1) }
            }
            _ => Decision::Fail,
        },
        Subject::Stream { attempts, keepalive } => {
            let code = match cause {
                Cause::Status(code, _) => code,
                Cause::Unprocessed => Code::Unavailable,
            };
            if !stale && (is_permanent(code) || attempts >= policy.max_retries) {
                return Decision::Fail;
            }
            let mut after = backoff(attempts);
            if keepalive {
                after = after.min(KEEPALIVE_MAX_BACKOFF);
            }
            Decision::Reopen { after, authenticate: stale }
        }
    }
}

/// Whether a processed call may succeed if tried again: `UNAVAILABLE` (no leader, a member
/// stopping, the link lost, no endpoint reachable) or etcd's "too many requests" (its apply
/// queue is full). Not `DEADLINE_EXCEEDED`: the call's time is up.
fn is_transient(cause: Cause<'_>) -> bool {
    match cause {
        Cause::Unprocessed => true,
        Cause::Status(code, msg) => {
            code == Code::Unavailable
                || (code == Code::ResourceExhausted && msg.contains("too many requests"))
        }
    }
}

/// Whether a failure of a call on the link in use says its member is unfit, so that the
/// client should move to another endpoint: UNAVAILABLE from the server (no leader, the
/// member stopping, its own timeout). A leader change is cluster-wide: moving would not help.
pub(crate) fn leaves_member(code: Code, message: &str, from_server: bool) -> bool {
    from_server && code == Code::Unavailable && !message.contains("leader changed")
}

/// Statuses that re-opening cannot fix: a stream's users get the error at once.
pub(crate) fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Unauthenticated
    )
}

/// The wait before re-open attempt `n` (0: at once), before jitter.
pub(crate) fn backoff(n: u32) -> Duration {
    (BACKOFF_STEP * n).min(MAX_BACKOFF)
}

/// Whether an error message says the auth token is stale (the client can authenticate again
/// and retry): etcd's words differ by version.
pub(crate) fn is_stale_token(message: &str) -> bool {
    ["invalid auth token", "auth store is old", "revision in header is old"]
        .iter()
        .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cause::{Status, Unprocessed};
    use Code::*;
    use Decision::*;

    const STALE: &str = "etcdserver: invalid auth token";
    const MS: Duration = Duration::from_millis(1);
    const CREDS: Policy =
        Policy { credentials: true, max_retries: 2, retry_attempts: 0, retry_backoff: MS };
    const NO_CREDS: Policy =
        Policy { credentials: false, max_retries: 2, retry_attempts: 0, retry_backoff: MS };
    const READS: Policy = Policy {
        credentials: true,
        max_retries: 2,
        retry_attempts: 2,
        retry_backoff: Duration::from_millis(25),
    };

    fn unary(resends: u8, retried: bool, newer: bool) -> Subject {
        let (retryable, retries) = (false, 0);
        Subject::Unary {
            resends,
            retried_after_auth: retried,
            newer_token: newer,
            retryable,
            retries,
        }
    }
    fn read(retries: u32) -> Subject {
        let (resends, retried_after_auth, newer_token) = (0, false, false);
        Subject::Unary { resends, retried_after_auth, newer_token, retryable: true, retries }
    }
    fn stream(attempts: u32) -> Subject {
        Subject::Stream { attempts, keepalive: false }
    }
    fn reopen(ms: u64, authenticate: bool) -> Decision {
        Reopen { after: Duration::from_millis(ms), authenticate }
    }

    /// Every rule, one row each: subject, cause, policy, decision.
    #[test]
    fn the_table() {
        let rows: &[(Subject, Cause, Policy, Decision)] = &[
            // Unary calls: re-sent while provably unprocessed, within the bound.
            (unary(0, false, false), Unprocessed, NO_CREDS, Resend),
            (unary(2, false, false), Unprocessed, NO_CREDS, Resend),
            (unary(3, false, false), Unprocessed, NO_CREDS, Fail),
            // A sent call that failed is never re-sent: it may have been processed.
            (unary(0, false, false), Status(Unavailable, "link lost"), NO_CREDS, Fail),
            (unary(0, false, false), Status(DeadlineExceeded, "deadline"), CREDS, Fail),
            // A stale token: once, behind a new Authenticate unless a newer token exists.
            (
                unary(0, false, false),
                Status(Unauthenticated, STALE),
                CREDS,
                Reauthenticate { authenticate: true },
            ),
            (
                unary(0, false, true),
                Status(InvalidArgument, "auth store is old"),
                CREDS,
                Reauthenticate { authenticate: false },
            ),
            (unary(0, true, false), Status(Unauthenticated, STALE), CREDS, Fail),
            (unary(0, false, false), Status(Unauthenticated, STALE), NO_CREDS, Fail),
            (unary(0, false, false), Status(PermissionDenied, "permission denied"), CREDS, Fail),
            // Retryable calls (reads, writes opted in): UNAVAILABLE and "too many requests"
            // are retried after the backoff, a bounded number of times; nothing else.
            (
                read(0),
                Status(Unavailable, "etcdserver: no leader"),
                READS,
                Retry { after: Duration::from_millis(25) },
            ),
            (
                read(1),
                Status(ResourceExhausted, "etcdserver: too many requests"),
                READS,
                Retry { after: Duration::from_millis(25) },
            ),
            (read(2), Status(Unavailable, "link lost"), READS, Fail),
            (read(0), Status(DeadlineExceeded, "deadline of 1s exceeded"), READS, Fail),
            (read(0), Status(ResourceExhausted, "grpc: message too large"), READS, Fail),
            (read(0), Status(InvalidArgument, "etcdserver: key is not provided"), READS, Fail),
            (read(0), Status(Unavailable, "link lost"), NO_CREDS, Fail),
            (unary(0, false, false), Status(Unavailable, "etcdserver: no leader"), READS, Fail),
            // A stale token comes first; an unprocessed call is re-sent without a backoff.
            (read(0), Status(Unauthenticated, STALE), READS, Reauthenticate { authenticate: true }),
            (read(0), Unprocessed, READS, Resend),
            // Authenticate: passing failures retried with a growing backoff, up to a bound.
            (
                Subject::Auth { failures: 0, link_up: true },
                Status(Unavailable, "no leader"),
                CREDS,
                RetryAuth { after: Duration::from_millis(500) },
            ),
            (
                Subject::Auth { failures: 4, link_up: true },
                Status(DeadlineExceeded, "late"),
                CREDS,
                RetryAuth { after: Duration::from_millis(2500) },
            ),
            (
                Subject::Auth { failures: 5, link_up: true },
                Status(Unavailable, "no leader"),
                CREDS,
                Fail,
            ),
            (
                Subject::Auth { failures: 0, link_up: true },
                Status(InvalidArgument, "wrong password"),
                CREDS,
                Fail,
            ),
            (
                Subject::Auth { failures: 0, link_up: false },
                Status(Unavailable, "link lost"),
                CREDS,
                Nothing,
            ),
            // Streams: at once the first time, then n × 0.5 s up to 5 s; the keepalive
            // stream waits at most 0.5 s.
            (stream(0), Status(Unavailable, "link lost"), NO_CREDS, reopen(0, false)),
            (stream(1), Status(Unavailable, "link lost"), NO_CREDS, reopen(500, false)),
            (
                Subject::Stream { attempts: 1, keepalive: true },
                Status(Unavailable, "x"),
                NO_CREDS,
                reopen(500, false),
            ),
            (
                Subject::Stream { attempts: 20, keepalive: false },
                Status(Unavailable, "x"),
                Policy { max_retries: 30, ..NO_CREDS },
                reopen(5000, false),
            ),
            (
                Subject::Stream { attempts: 20, keepalive: true },
                Status(Unavailable, "x"),
                Policy { max_retries: 30, ..NO_CREDS },
                reopen(500, false),
            ),
            (stream(0), Unprocessed, NO_CREDS, reopen(0, false)),
            // ... until the retries are used up, or at once for a permanent status.
            (stream(2), Status(Unavailable, "link lost"), NO_CREDS, Fail),
            (stream(0), Status(PermissionDenied, "permission denied"), NO_CREDS, Fail),
            (stream(0), Status(Unimplemented, "unknown service"), CREDS, Fail),
            (
                Subject::Stream { attempts: 0, keepalive: false },
                Status(Ok, ""),
                Policy { max_retries: 0, ..NO_CREDS },
                Fail,
            ),
            // A stale token the client can renew is never final.
            (stream(0), Status(Unauthenticated, STALE), CREDS, reopen(0, true)),
            (stream(9), Status(Unauthenticated, STALE), CREDS, reopen(4500, true)),
            (stream(0), Status(Unauthenticated, STALE), NO_CREDS, Fail),
        ];
        for (i, &(subject, cause, policy, want)) in rows.iter().enumerate() {
            assert_eq!(decide(subject, cause, policy), want, "row {i}: {subject:?} {cause:?}");
        }
    }

    #[test]
    fn only_a_members_own_unavailable_leaves_it() {
        assert!(leaves_member(Unavailable, "etcdserver: no leader", true));
        assert!(!leaves_member(Unavailable, "etcdserver: leader changed", true));
        assert!(!leaves_member(Unavailable, "connection closed", false));
        assert!(!leaves_member(DeadlineExceeded, "etcdserver: request timed out", true));
    }

    #[test]
    fn stale_token_messages_of_every_etcd_version_are_recognised() {
        for m in [
            "etcdserver: invalid auth token",
            "auth: revision in header is old",
            "etcdserver: auth store is old",
        ] {
            assert!(is_stale_token(m), "{m}");
        }
        assert!(!is_stale_token("etcdserver: permission denied"));
    }
}
