//! The typed errors of the recipes.

use crate::error::EtcdError;

/// Why a recipe failed: etcd's own error, or one of the recipe's outcomes that a caller
/// acts on (the lock is taken, the session is gone, the caller is not the leader).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `try_lock`: another session holds the mutex (Go's `ErrLocked`). No key was left.
    #[error("mutex: locked by another session")]
    Locked,
    /// `unlock` of a mutex this handle does not hold (Go's `ErrLockReleased`).
    #[error("mutex: lock has already been released")]
    NotLocked,
    /// The session's lease is gone, or its keepalive gave up: whatever it held is lost
    /// (Go's `ErrSessionExpired`).
    #[error("session lost: {0}")]
    SessionLost(Lost),
    /// `proclaim` or `resign` by a campaigner that is not (or no longer) the leader (Go's
    /// `ErrElectionNotLeader`).
    #[error("election: not leader")]
    NotLeader,
    /// `leader`: nobody campaigns (Go's `ErrElectionNoLeader`).
    #[error("election: no leader")]
    NoLeader,
    /// An STM transaction ended by its `apply` (nothing was written).
    #[error("aborted: {0}")]
    Aborted(String),
    /// etcd or the connection failed (a cancelled wait is `CANCELLED` here).
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// How a session was lost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// The lease ran out: etcd no longer knows it, and its last granted TTL had passed.
    #[error("lease expired")]
    Expired,
    /// The lease was revoked by someone else before its TTL ran out.
    #[error("lease revoked")]
    Revoked,
    /// The keepalive ended with this error (it gave up re-opening its stream, or the
    /// client was closed).
    #[error("keepalive failed: {0}")]
    KeepaliveFailed(EtcdError),
    /// The program closed or orphaned the session: what waited on it (a lock, a
    /// campaign) ends. Never told to `on_lost`.
    #[error("session closed")]
    Closed,
}
