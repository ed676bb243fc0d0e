//! Endpoints as Go's clientv3 reads them: where to connect and whether to use TLS.
//!
//! | form                         | reached through | TLS                              |
//! |------------------------------|-----------------|----------------------------------|
//! | `https://host:port`          | TCP             | always                           |
//! | `http://host:port`           | TCP             | never                            |
//! | `host:port`, `host`          | TCP             | exactly when a `Tls` is set      |
//! | `unixs://path`, `unixs:path` | Unix socket     | always                           |
//! | `unix://path`, `unix:path`   | Unix socket     | never                            |
//!
//! (Go's clientv3 lets `unix://` use TLS when credentials are configured, a behaviour its
//! own comment calls a likely bug; here `unix://` is plaintext, as its name says.)
//!
//! The port defaults to 2379. Parsing is pure, so it is tested here without sockets.

use crate::error::EtcdError;
use http::uri::Authority;
use std::fmt;
use std::path::PathBuf;

/// Where the socket goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// `host:port`, resolved when connecting.
    Tcp(Authority),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// What the scheme (or its absence) says about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// `https://`, `unixs://`.
    Tls,
    /// `http://`, `unix://`.
    Plain,
    /// No scheme: TLS when the configuration has a `Tls`.
    Default,
}

/// One configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Where to connect.
    pub(crate) address: Address,
    /// Whether the connection goes through TLS (settled by `Config::validate`).
    pub(crate) tls: bool,
}

impl Endpoint {
    /// The `:authority` of requests: the endpoint's `host:port`, or `localhost` for a Unix
    /// socket (as gRPC sends for Unix targets).
    pub(crate) fn authority(&self) -> Authority {
        match &self.address {
            Address::Tcp(a) => a.clone(),
            Address::Unix(_) => Authority::from_static("localhost"),
        }
    }

    /// The name the server's certificate is checked against when none is configured, as Go's
    /// clientv3 chooses it: the host (an IP literal is checked against IP SANs); for a Unix
    /// socket the file name, without what follows a `:` (etcd's `localhost:PORT` sockets).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))] // used by the tls feature
    pub(crate) fn default_server_name(&self) -> String {
        match &self.address {
            Address::Tcp(a) => a.host().trim_start_matches('[').trim_end_matches(']').to_string(),
            Address::Unix(path) => {
                let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
                match name.rsplit_once(':') {
                    Some((host, _)) if !host.is_empty() => host.to_string(),
                    _ if name.is_empty() => "localhost".to_string(),
                    _ => name.into_owned(),
                }
            }
        }
    }
}

/// `host:port` for TCP (as configured, without the scheme), `unix://path` or `unixs://path`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::Tcp(a) => f.write_str(a.as_str()),
            Address::Unix(p) => {
                let scheme = if self.tls { "unixs" } else { "unix" };
                write!(f, "{scheme}://{}", p.display())
            }
        }
    }
}

/// One endpoint, its TLS settled: a scheme says, and no scheme means `default_tls` (whether
/// the client has a `Tls` configuration). `operation` names the caller in the error.
pub(crate) fn endpoint(
    raw: &str,
    default_tls: bool,
    operation: &'static str,
) -> Result<Endpoint, EtcdError> {
    let (address, security) = parse(raw).map_err(|e| e.with_operation(operation))?;
    let tls = match security {
        Security::Tls => true,
        Security::Plain => false,
        Security::Default => default_tls,
    };
    if tls && !cfg!(feature = "tls") {
        let msg =
            format!("endpoint {raw:?} needs TLS, which this build leaves out (feature `tls`)");
        return Err(EtcdError::invalid(msg, operation));
    }
    Ok(Endpoint { address, tls })
}

/// Parses one endpoint as Go's clientv3 does (see the module table).
pub(crate) fn parse(raw: &str) -> Result<(Address, Security), EtcdError> {
    let bad = |why: &str| EtcdError::invalid(format!("endpoint {raw:?}: {why}"), "new");
    let unix = [
        ("unixs://", Security::Tls),
        ("unix://", Security::Plain),
        ("unixs:", Security::Tls),
        ("unix:", Security::Plain),
    ];
    for (prefix, security) in unix {
        if let Some(path) = raw.strip_prefix(prefix) {
            if path.is_empty() || path.contains('\0') {
                return Err(bad("expected a socket path after the scheme"));
            }
            return Ok((Address::Unix(PathBuf::from(path)), security));
        }
    }
    let (rest, security) = if let Some(rest) = raw.strip_prefix("https://") {
        (rest, Security::Tls)
    } else if let Some(rest) = raw.strip_prefix("http://") {
        (rest, Security::Plain)
    } else {
        (raw, Security::Default)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest.contains(['/', '@', '?', '#'])
        || rest.contains(char::is_whitespace)
        || rest.contains("://")
    {
        return Err(bad("expected host:port, http(s)://host:port or unix(s)://path"));
    }
    let authority: Authority =
        rest.parse().map_err(|_| bad("expected host:port, http(s)://host:port"))?;
    if authority.port_u16().is_some() {
        return Ok((Address::Tcp(authority), security));
    }
    if rest.contains(':') && !rest.ends_with(']') {
        return Err(bad("expected a port number after ':'"));
    }
    let authority = format!("{rest}:2379").parse().map_err(|_| bad("expected host:port"))?;
    Ok((Address::Tcp(authority), security))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(raw: &str) -> (String, Security) {
        match parse(raw).unwrap() {
            (Address::Tcp(a), s) => (a.to_string(), s),
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn schemes_decide_tls_as_go_does() {
        assert_eq!(tcp("127.0.0.1:2379"), ("127.0.0.1:2379".into(), Security::Default));
        assert_eq!(tcp("http://localhost:22379/"), ("localhost:22379".into(), Security::Plain));
        assert_eq!(tcp("https://etcd-0"), ("etcd-0:2379".into(), Security::Tls));
        assert_eq!(tcp("https://[::1]:2379"), ("[::1]:2379".into(), Security::Tls));
        assert_eq!(tcp("etcd-0"), ("etcd-0:2379".into(), Security::Default));
        let (addr, sec) = parse("unixs://localhost:1234").unwrap();
        assert_eq!((addr, sec), (Address::Unix("localhost:1234".into()), Security::Tls));
        let (addr, sec) = parse("unix:///run/etcd.sock").unwrap();
        assert_eq!((addr, sec), (Address::Unix("/run/etcd.sock".into()), Security::Plain));
        assert_eq!(parse("unix:rel.sock").unwrap().0, Address::Unix("rel.sock".into()));
        assert_eq!(
            parse("unixs:rel.sock").unwrap(),
            (Address::Unix("rel.sock".into()), Security::Tls)
        );
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for bad in ["", "http://", "https://", "unix://", "h:1/path", "user@h:1", "h :1", "h:x"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["ftp://h:1", "https://h:1/x"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn server_names_and_authorities() {
        let ep = |raw: &str| Endpoint { address: parse(raw).unwrap().0, tls: true };
        assert_eq!(ep("https://[::1]:2379").default_server_name(), "::1");
        assert_eq!(ep("https://127.0.0.1:1").default_server_name(), "127.0.0.1");
        assert_eq!(ep("etcd.example:1").default_server_name(), "etcd.example");
        assert_eq!(ep("unixs://localhost:27989").default_server_name(), "localhost");
        assert_eq!(ep("unixs:///tmp/etcd.sock").default_server_name(), "etcd.sock");
        assert_eq!(ep("unixs:///run/etcd/host-a:2379").default_server_name(), "host-a");
        assert_eq!(ep("unixs:///tmp/etcd.sock").authority().as_str(), "localhost");
        assert_eq!(ep("unixs:///tmp/etcd.sock").to_string(), "unixs:///tmp/etcd.sock");
        assert_eq!(ep("https://h:1").to_string(), "h:1");
    }
}
