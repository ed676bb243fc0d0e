//! [`ClientInfo`]: what [`Client::info`](crate::Client::info) reports, a snapshot of the
//! client's connection, its streams, its pending calls and its authentication (eetcd's
//! `info`), for logs, status pages and debugging.
//!
//! Each field is read from the machine that owns it (the link, the call table, the stream
//! hubs, the auth gate); nothing is counted or stamped on the way of a call, so taking a
//! snapshot costs the calls nothing. The snapshot itself allocates (the endpoint strings).

use std::time::Instant;

/// How many connect failures a client keeps for [`ClientInfo::connect_failures`]: the most
/// recent ones.
pub(crate) const CONNECT_FAILURES_KEPT: usize = 8;

/// A snapshot of a client: its connection, streams, pending calls and authentication, as
/// [`Client::info`](crate::Client::info) returns it.
///
/// Plain data: it does not change once taken. Fields may be added in later releases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The endpoint of the link in use or being made, as configured (`host:port`,
    /// `unix://path`); `None` while there is no link ([`LinkState::Idle`]).
    pub endpoint: Option<String>,
    /// Every endpoint, in order of preference: the configured list, or the latest one given
    /// to [`Client::set_endpoints`](crate::Client::set_endpoints) or found by the auto-sync.
    pub endpoints: Vec<String>,
    /// The state of the link.
    pub state: LinkState,
    /// When the link entered [`state`](Self::state) (as of the client's turn in which it
    /// did); the client's creation while it never had a link.
    pub since: Instant,
    /// The most recent connection attempts that failed (at most 8; oldest first, newest
    /// last), whichever endpoint they were for. Kept across successful connections.
    pub connect_failures: Vec<ConnectFailure>,
    /// Live watches (being created, active, or waiting to resume on a new stream).
    pub watches: usize,
    /// Live lease keepalives.
    pub keepalives: usize,
    /// Live election observers.
    pub observers: usize,
    /// Unary calls not yet answered: in flight, queued for a link or for a token, waiting
    /// to be retried (`lock` and `election_campaign` included). Streams are counted above;
    /// the client's own calls (authenticate, health checks, auto-sync) are not counted.
    pub pending_calls: usize,
    /// The authentication state.
    pub auth: AuthState,
}

/// The state of a client's link (its one connection to a member).
///
/// ```text
///   Idle ──work──► Connecting ──► (Handshaking, with TLS) ──► Connected ──► Draining
///    ▲                 │                   │                      │            │
///    └─────────────────┴───────────────────┴──────────────────────┴────────────┘
///            failed, timed out                  broken, closed      calls done, broken
/// ```
///
/// A link that ends while work waits goes straight on to `Connecting` (the next endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkState {
    /// No link: none was needed yet, the last one ended and nothing asked for another (a
    /// stream waiting out its re-open backoff, say), or the client was closed. The next
    /// operation connects.
    Idle,
    /// Connecting a socket (the name resolved, each address tried in turn).
    Connecting,
    /// The socket is connected and the TLS handshake runs.
    Handshaking,
    /// Up: calls and streams go out on it.
    Connected,
    /// Up, but taking no new calls: it ends once the calls with a deadline on it are done,
    /// and the next endpoint takes over (after a GOAWAY, a member that answered
    /// `UNAVAILABLE` or failed a health check, an endpoint no longer listed).
    Draining,
}

/// A connection attempt that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectFailure {
    /// The endpoint it was for, as configured.
    pub endpoint: String,
    /// Why it failed (refused, timed out, TLS handshake, refused by the TLS server, …).
    pub error: String,
    /// When it failed.
    pub at: Instant,
}

/// The authentication state of a client. It never holds the password or the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthState {
    /// No credentials and no token: calls go out unauthenticated.
    None,
    /// Credentials for `user` are held but no token: the client authenticates before its
    /// next call on a new connection (also the state after the server answered that
    /// authentication is not enabled).
    Unauthenticated {
        /// The user the credentials are for.
        user: String,
    },
    /// The client's Authenticate call for `user` is under way (or waits to be retried after
    /// a passing failure); other calls wait behind it.
    Authenticating {
        /// The user it authenticates as.
        user: String,
    },
    /// A token is held and sent with every call.
    Authenticated {
        /// The user the token is for; `None` for a token given by
        /// [`Config::auth_token`](crate::Config::auth_token) alone.
        user: Option<String>,
    },
    /// The last Authenticate call failed for good (a wrong password, say): the calls that
    /// waited for it failed with `message`. The next connection tries again.
    Failed {
        /// The user it authenticated as.
        user: String,
        /// The error the waiting calls got.
        message: String,
    },
}
