//! Client configuration: a small builder with etcd's defaults, validated by `Client::new`.

use crate::error::EtcdError;
use crate::session::SessionConfig;
use http::uri::Authority;
use http::HeaderValue;
use std::time::Duration;

/// etcd's default `--max-request-bytes` (1.5 MiB) plus the 512 KiB gRPC overhead etcd allows
/// on top: the server's receive limit, so a request above it could never succeed.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 512 * 1024 + 512 * 1024;

/// The shortest unary deadline; shorter values are raised to it (as in EV::Etcd).
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest keepalive PING interval: etcd answers more frequent PINGs with GOAWAY
/// "too_many_pings".
pub const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(5);

/// The longest deadline or connect timeout; longer values are lowered to it, so that "no
/// timeout" can be asked for with `Duration::MAX`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How to reach etcd and how long to wait.
///
/// ```
/// use std::time::Duration;
/// let config = evetcd::Config::new()
///     .endpoints(["127.0.0.1:2379", "http://127.0.0.1:22379"])
///     .timeout(Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    endpoints: Vec<String>,
    timeout: Duration,
    max_request_bytes: usize,
    auth_token: Option<String>,
    connect_timeout: Duration,
    credentials: Option<(String, String)>,
    keepalive: (Duration, Duration),
    max_retries: u32,
    health_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            timeout: Duration::from_secs(30),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            auth_token: None,
            connect_timeout: Duration::from_secs(3),
            credentials: None,
            keepalive: (Duration::from_secs(10), Duration::from_secs(10)),
            max_retries: 30,
            health_interval: Duration::ZERO,
        }
    }
}

impl Config {
    /// The defaults: endpoint `127.0.0.1:2379`, 30 s deadline, 2 MiB request limit.
    pub fn new() -> Config {
        Config::default()
    }

    /// The endpoints, as `host:port` (an `http://` prefix is accepted; the port defaults to
    /// 2379). One is used at a time, in order.
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

    /// An auth token obtained elsewhere, sent with every call as the `token` metadata.
    pub fn auth_token(mut self, token: impl Into<String>) -> Config {
        self.auth_token = Some(token.into());
        self
    }

    /// Checks the settings and turns them into what the session needs.
    pub(crate) fn validate(&self) -> Result<SessionConfig, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::invalid("no endpoints configured", "new"));
        }
        let endpoints =
            self.endpoints.iter().map(|e| parse_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
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
        Ok(SessionConfig {
            endpoints,
            timeout: self.timeout.clamp(MIN_TIMEOUT, MAX_TIMEOUT),
            connect_timeout: self.connect_timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT),
            credentials: self.credentials.clone(),
            keepalive_time: (!self.keepalive.0.is_zero())
                .then(|| self.keepalive.0.clamp(MIN_KEEPALIVE_TIME, MAX_TIMEOUT)),
            keepalive_timeout: self.keepalive.1.clamp(Duration::from_millis(1), MAX_TIMEOUT),
            max_retries: self.max_retries,
            health_interval: (!self.health_interval.is_zero())
                .then(|| self.health_interval.clamp(Duration::from_millis(100), MAX_TIMEOUT)),
            max_request_bytes: self.max_request_bytes,
            token,
        })
    }
}

/// `host:port`, `http://host:port/` or `host` → the authority `host:port`.
fn parse_endpoint(raw: &str) -> Result<Authority, EtcdError> {
    let bad = |why: &str| EtcdError::invalid(format!("endpoint {raw:?}: {why}"), "new");
    if raw.starts_with("https://") {
        return Err(bad("TLS is not supported yet; use http:// or host:port"));
    }
    let rest = raw.strip_prefix("http://").unwrap_or(raw);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) || rest.contains(char::is_whitespace)
    {
        return Err(bad("expected host:port"));
    }
    let authority: Authority = rest.parse().map_err(|_| bad("expected host:port"))?;
    if authority.port_u16().is_some() {
        return Ok(authority);
    }
    format!("{rest}:2379").parse().map_err(|_| bad("expected host:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_http_prefix_and_default_port() {
        assert_eq!(parse_endpoint("127.0.0.1:2379").unwrap().as_str(), "127.0.0.1:2379");
        assert_eq!(parse_endpoint("http://localhost:22379/").unwrap().as_str(), "localhost:22379");
        assert_eq!(parse_endpoint("etcd-0").unwrap().as_str(), "etcd-0:2379");
        assert_eq!(parse_endpoint("[::1]:2379").unwrap().port_u16(), Some(2379));
        for bad in ["", "http://", "https://h:1", "h:1/path", "user@h:1", "h :1", "h:x"] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validation_clamps_timeout_and_checks_token() {
        let cfg = Config::new().timeout(Duration::ZERO).validate().unwrap();
        assert_eq!(cfg.timeout, MIN_TIMEOUT);
        let cfg = Config::new().timeout(Duration::MAX).connect_timeout(Duration::MAX);
        let cfg = cfg.validate().unwrap();
        assert_eq!((cfg.timeout, cfg.connect_timeout), (MAX_TIMEOUT, MAX_TIMEOUT));
        assert_eq!(cfg.max_request_bytes, 2 * 1024 * 1024);
        assert!(Config::new().endpoints(Vec::<String>::new()).validate().is_err());
        assert!(Config::new().auth_token("bad\ntoken").validate().is_err());
        assert!(Config::new().auth_token("é").validate().is_err());
        assert!(Config::new().auth_token("abc.def").validate().unwrap().token.is_some());
    }
}
