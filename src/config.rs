//! Client configuration: a small builder with etcd's defaults, validated by `Client::new`.

use crate::core::CoreConfig;
use crate::endpoint::{self, Endpoint};
use crate::error::EtcdError;
#[cfg(feature = "tls")]
use crate::tls::{connector::Connector, Tls};
use http::HeaderValue;
use std::fmt;
use std::time::Duration;

/// etcd's default `--max-request-bytes` (1.5 MiB) plus the 512 KiB gRPC overhead etcd allows
/// on top: the server's receive limit, so a request above it could never succeed.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 512 * 1024 + 512 * 1024;

/// The largest response message accepted by default: 2^31 − 1 bytes, Go's clientv3 default
/// `MaxCallRecvMsgSize` (`math.MaxInt32`).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The shortest unary deadline; shorter values are raised to it (as in EV::Etcd).
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Retries of a read-only call by default (see [`Config::retry`]): Go's clientv3 default.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 100;
/// Wait between two attempts of a read-only call by default (see [`Config::retry`]).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// The shortest keepalive PING interval: etcd answers more frequent PINGs with GOAWAY
/// "too_many_pings".
pub const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(5);

/// The longest deadline or connect timeout; longer values are lowered to it, so that "no
/// timeout" can be asked for with `Duration::MAX`.
pub const MAX_TIMEOUT: Duration = crate::timer::MAX_DELAY;

/// How to reach etcd and how long to wait.
///
/// ```
/// use std::time::Duration;
/// let config = evetcd::Config::new()
///     .endpoints(["127.0.0.1:2379", "http://127.0.0.1:22379"])
///     .timeout(Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct Config {
    endpoints: Vec<String>,
    timeout: Duration,
    max_request_bytes: usize,
    max_response_bytes: usize,
    auth_token: Option<String>,
    connect_timeout: Duration,
    credentials: Option<(String, String)>,
    keepalive: (Duration, Duration),
    max_retries: u32,
    retry: (u32, Duration),
    health_interval: Duration,
    auto_sync: Duration,
    ordering: bool,
    #[cfg(feature = "tls")]
    tls: Option<Tls>,
}

/// Everything but secrets: the password and the token are shown as redacted.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "(redacted)"))
            .field("connect_timeout", &self.connect_timeout)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("password", &self.credentials.as_ref().map(|_| "(redacted)"))
            .field("keepalive", &self.keepalive)
            .field("max_retries", &self.max_retries)
            .field("retry", &self.retry)
            .field("health_interval", &self.health_interval)
            .field("auto_sync", &self.auto_sync)
            .field("ordering_guard", &self.ordering);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            timeout: Duration::from_secs(30),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            auth_token: None,
            connect_timeout: Duration::from_secs(3),
            credentials: None,
            keepalive: (Duration::from_secs(10), Duration::from_secs(10)),
            max_retries: 30,
            retry: (DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BACKOFF),
            health_interval: Duration::ZERO,
            auto_sync: Duration::ZERO,
            ordering: true,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Config {
    /// The defaults: endpoint `127.0.0.1:2379`, 30 s deadline, 2 MiB request limit.
    pub fn new() -> Config {
        Config::default()
    }

    /// The endpoints, one used at a time, in order: `host:port`, `http://host:port`,
    /// `https://host:port` (TLS), `unix://path` or `unixs://path` (TLS over a Unix socket).
    /// The port defaults to 2379. An endpoint without a scheme uses TLS exactly when
    /// `Config::tls` is set, as in Go's clientv3.
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Config
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// The deadline of every unary call (lock and campaign excepted); at least one second.
    pub fn timeout(mut self, timeout: Duration) -> Config {
        self.timeout = timeout;
        self
    }

    /// The largest encoded request sent; a larger one fails locally with `INVALID_ARGUMENT`.
    /// Match it to the server's `--max-request-bytes` plus 512 KiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Config {
        self.max_request_bytes = bytes;
        self
    }

    /// The largest response message accepted, in bytes (Go's clientv3 `MaxCallRecvMsgSize`;
    /// default [`DEFAULT_MAX_RESPONSE_BYTES`], 2^31 − 1). A response whose gRPC length prefix
    /// announces more fails its call with `RESOURCE_EXHAUSTED` ("grpc: received message
    /// larger than max (N vs. M)", as in Go), decided from the prefix: no byte of it is
    /// buffered, and the connection stays up. A stream (watch, keepalive, observe, snapshot)
    /// that receives one ends as for any other error of its own.
    pub fn max_response_bytes(mut self, bytes: usize) -> Config {
        self.max_response_bytes = bytes;
        self
    }

    /// How long a TCP connect may take before the endpoint counts as failed: the next
    /// endpoint is tried (queued calls fail with `UNAVAILABLE` once every endpoint failed in
    /// a row). Default 3 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Config {
        self.connect_timeout = timeout;
        self
    }

    /// Authenticate as `user` on every connection, before any other call, and again when
    /// the server reports the token stale ("invalid auth token", "revision of auth store is
    /// old"): the calls that failed are retried once with the new token, and watches are
    /// re-created on a stream that carries it. A wrong password is reported to the calls
    /// that waited, and never retried.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Config {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// HTTP/2 keepalive: while calls or streams are open, a PING every `time` (at least 5 s,
    /// the most often etcd allows; zero turns keepalive off), and the connection counts as
    /// dead when one goes unanswered for `timeout`: its calls fail with `UNAVAILABLE` and
    /// its streams re-open. Default 10 s and 10 s. No PING is sent on an idle connection.
    pub fn keepalive(mut self, time: Duration, timeout: Duration) -> Config {
        self.keepalive = (time, timeout);
        self
    }

    /// How many times in a row a stream (watch, keepalive, observe) is re-opened after it
    /// breaks before its users get the error (one each); 0 never re-opens. Default 30. A
    /// permanent status (`INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`,
    /// `PERMISSION_DENIED`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `UNIMPLEMENTED`,
    /// `UNAUTHENTICATED`) is reported at once.
    pub fn max_retries(mut self, retries: u32) -> Config {
        self.max_retries = retries;
        self
    }

    /// How read-only unary calls (`get`, `lease_time_to_live`, `lease_leases`, `status`,
    /// `hash`, `hash_kv`, `member_list`, `auth_status`, `user_get`, `user_list`,
    /// `role_get`, `role_list`) are retried: up to `attempts` more times, `backoff` (±20 %)
    /// apart, each time the server or the link answers `UNAVAILABLE` (no leader, a member
    /// stopping, a lost connection, no endpoint reachable) or "too many requests", all
    /// within the call's one deadline; the next attempt goes to the next endpoint when the
    /// member was at fault. `DEADLINE_EXCEEDED` and every other status are final. Writes
    /// are sent again only when provably never processed, unless a call opts in with
    /// [`CallOptions::retry_writes`](crate::CallOptions::retry_writes). Default 100 and
    /// 25 ms, as Go's clientv3; `retry(0, _)` turns retries off (EV::Etcd's behaviour: the
    /// first failure is reported).
    pub fn retry(mut self, attempts: u32, backoff: Duration) -> Config {
        self.retry = (attempts, backoff);
        self
    }

    /// How often to refresh the endpoints from the cluster's member list (zero, the default,
    /// turns it off, as in Go's clientv3): the client URLs of the voting members (learners
    /// serve no clients) replace the endpoints, with their schemes (a URL without one uses
    /// TLS when `Config::tls` is set); an endpoint in use that is gone is left once its
    /// calls with a deadline are done. A member added after start is used once the original
    /// ones are gone. An `https://` member needs a `Config::tls` configuration.
    /// See also [`Client::set_endpoints`](crate::Client::set_endpoints).
    pub fn auto_sync_interval(mut self, interval: Duration) -> Config {
        self.auto_sync = interval;
        self
    }

    /// The revision-ordering guard (on by default; Go's `clientv3/ordering`): the client
    /// remembers the highest revision it has seen in any response, and a `get` answered by
    /// a member behind it (after a failover to a lagging member, or a serializable read on a
    /// follower that has not caught up) is never delivered: it counts as `UNAVAILABLE` from
    /// that member, so it is retried on another endpoint, or on the same one once it caught
    /// up, within the call's deadline (see [`retry`](Config::retry); with retries off the
    /// caller gets that `UNAVAILABLE`). Off, reads are delivered as the member answers.
    pub fn ordering_guard(mut self, on: bool) -> Config {
        self.ordering = on;
        self
    }

    /// How often to check the endpoint in use (zero, the default, turns checks off): a
    /// Maintenance Status call that must answer within the interval (and the deadline) and
    /// name a leader. [`Client::on_health_change`](crate::Client::on_health_change) hears of
    /// every change; an unhealthy endpoint is left for the next one when there are several.
    /// Checks run whenever the client's loop runs: [`Client::next_timeout`](crate::Client::next_timeout)
    /// includes the next one even when nothing else is pending, but
    /// [`Client::run`](crate::Client::run) returns once no operation is pending.
    pub fn health_interval(mut self, interval: Duration) -> Config {
        self.health_interval = interval;
        self
    }

    /// TLS settings: trusted CAs, a client certificate for mTLS, server names. Endpoints
    /// without a scheme use TLS once this is set (see [`Tls`]).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Tls) -> Config {
        self.tls = Some(tls);
        self
    }

    /// An auth token obtained elsewhere, sent with every call as the `token` metadata.
    pub fn auth_token(mut self, token: impl Into<String>) -> Config {
        self.auth_token = Some(token.into());
        self
    }

    /// One endpoint, with TLS settled: by its scheme, else by whether `tls` is set.
    fn endpoint(&self, raw: &str) -> Result<Endpoint, EtcdError> {
        endpoint::endpoint(raw, self.has_tls(), "new")
    }

    #[cfg(feature = "tls")]
    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn has_tls(&self) -> bool {
        false
    }

    /// What makes TLS connections, when an endpoint uses TLS: the files are read now, so a
    /// bad one fails `Client::new` naming it.
    #[cfg(feature = "tls")]
    pub(crate) fn connector(&self, endpoints: &[Endpoint]) -> Result<Option<Connector>, EtcdError> {
        if !endpoints.iter().any(|e| e.tls) {
            return Ok(None);
        }
        let tls = self.tls.clone().unwrap_or_default();
        Connector::new(tls, endpoints)
            .map(Some)
            .map_err(|e| EtcdError::invalid(format!("TLS: {e}"), "new"))
    }

    /// Checks the settings and turns them into what the core needs.
    pub(crate) fn validate(&self) -> Result<CoreConfig, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::invalid("no endpoints configured", "new"));
        }
        let endpoints =
            self.endpoints.iter().map(|e| self.endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        let token = match &self.auth_token {
            None => None,
            Some(t) => Some(
                HeaderValue::from_str(t)
                    .ok()
                    .filter(|_| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or_else(|| {
                        EtcdError::invalid("auth_token must be printable ASCII", "new")
                    })?,
            ),
        };
        Ok(CoreConfig {
            endpoints,
            timeout: self.timeout.clamp(MIN_TIMEOUT, MAX_TIMEOUT),
            connect_timeout: self.connect_timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT),
            credentials: self.credentials.clone(),
            keepalive_time: (!self.keepalive.0.is_zero())
                .then(|| self.keepalive.0.clamp(MIN_KEEPALIVE_TIME, MAX_TIMEOUT)),
            keepalive_timeout: self.keepalive.1.clamp(Duration::from_millis(1), MAX_TIMEOUT),
            max_retries: self.max_retries,
            retry_attempts: self.retry.0,
            retry_backoff: self.retry.1.min(MAX_TIMEOUT),
            auto_sync: (!self.auto_sync.is_zero())
                .then(|| self.auto_sync.clamp(Duration::from_millis(100), MAX_TIMEOUT)),
            default_tls: self.has_tls(),
            ordering: self.ordering,
            health_interval: (!self.health_interval.is_zero())
                .then(|| self.health_interval.clamp(Duration::from_millis(100), MAX_TIMEOUT)),
            max_request_bytes: self.max_request_bytes,
            max_response_bytes: self.max_response_bytes,
            token,
            jitter_seed: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_of(config: Config) -> Vec<bool> {
        config.validate().unwrap().endpoints.iter().map(|e| e.tls).collect()
    }

    #[test]
    fn endpoints_use_tls_by_scheme_or_when_tls_is_configured() {
        #[cfg(feature = "tls")]
        {
            let eps = ["h:1", "http://h:2", "https://h:3", "unix:///s", "unixs:///s"];
            let with = Config::new().endpoints(eps).tls(crate::Tls::new());
            assert_eq!(tls_of(with), [true, false, true, false, true]);
            assert_eq!(tls_of(Config::new().endpoints(eps)), [false, false, true, false, true]);
        }
        #[cfg(not(feature = "tls"))]
        {
            assert_eq!(tls_of(Config::new().endpoints(["h:1", "unix:///s"])), [false, false]);
            let err = Config::new().endpoints(["https://h:3"]).validate().unwrap_err();
            assert!(err.message().contains("feature `tls`"), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_the_password_or_the_token() {
        let config = Config::new().user("alice", "s3cret-pass").auth_token("tok.en-value");
        #[cfg(feature = "tls")]
        let config = config.tls(crate::Tls::new().identity_pem("CERT", "-----KEY BYTES-----"));
        let shown = format!("{config:?}");
        for secret in ["s3cret-pass", "tok.en-value", "KEY BYTES"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("alice") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn validation_clamps_timeout_and_checks_token() {
        let cfg = Config::new().timeout(Duration::ZERO).validate().unwrap();
        assert_eq!(cfg.timeout, MIN_TIMEOUT);
        let cfg = Config::new().timeout(Duration::MAX).connect_timeout(Duration::MAX);
        let cfg = cfg.validate().unwrap();
        assert_eq!((cfg.timeout, cfg.connect_timeout), (MAX_TIMEOUT, MAX_TIMEOUT));
        assert_eq!(cfg.max_request_bytes, 2 * 1024 * 1024);
        assert_eq!(cfg.max_response_bytes, (1 << 31) - 1);
        assert_eq!(Config::new().max_response_bytes(7).validate().unwrap().max_response_bytes, 7);
        assert!(Config::new().endpoints(Vec::<String>::new()).validate().is_err());
        assert!(Config::new().auth_token("bad\ntoken").validate().is_err());
        assert!(Config::new().auth_token("é").validate().is_err());
        assert!(Config::new().auth_token("abc.def").validate().unwrap().token.is_some());
    }
}
