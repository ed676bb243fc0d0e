//! TLS and mTLS through rustls (feature `tls`).
//!
//! rustls is sans-IO like the session: the reactor reads ciphertext from the socket into a
//! [`layer::TlsLayer`], which hands plaintext to the h2 pipe, and h2's output goes back
//! through it. The session does not know TLS is there.
//!
//! ```text
//!   socket ──ciphertext──► TlsLayer ──plaintext──► pipe ──► h2 ──► session
//!   socket ◄─ciphertext─── TlsLayer ◄─plaintext─── pipe ◄── h2 ◄── session
//! ```
//!
//! [`Tls`] is the user's description; [`connector::Connector`] turns it into a rustls
//! configuration for every new connection (again from the files, when they came from
//! files, so rotated certificates are picked up at the next reconnect).

pub(crate) mod connector;
pub(crate) mod layer;
mod pem;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a certificate or key comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// Read again for every new connection.
    File(PathBuf),
    /// Given once, in memory.
    Pem(Vec<u8>),
}

impl Source {
    /// How error messages name it.
    pub(crate) fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Pem(_) => "PEM given in memory".to_string(),
        }
    }

    fn is_file(&self) -> bool {
        matches!(self, Source::File(_))
    }
}

/// Key bytes and passwords never reach a log: only where they came from.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Pem(b) => write!(f, "pem ({} bytes)", b.len()),
        }
    }
}

/// TLS settings for [`Config::tls`](crate::Config::tls): trusted CAs, a client identity for
/// mTLS, and the names certificates are checked against.
///
/// Which endpoints use TLS follows Go's clientv3: `https://` and `unixs://` always (with
/// these roots, or the system's when none are given), `http://` and `unix://` never, and an
/// endpoint without a scheme exactly when a `Tls` is configured.
///
/// ```no_run
/// use evetcd::{Config, Tls};
/// // A kubeadm control plane's etcd: its own CA, and the API server's client certificate.
/// let config = Config::new().endpoints(["https://10.0.0.10:2379"]).tls(
///     Tls::new()
///         .ca_file("/etc/kubernetes/pki/etcd/ca.crt")
///         .identity_files(
///             "/etc/kubernetes/pki/apiserver-etcd-client.crt",
///             "/etc/kubernetes/pki/apiserver-etcd-client.key",
///         ),
/// );
/// # let _ = config;
/// ```
///
/// Files are read when the client is created (a bad file makes [`Client::new`](crate::Client::new)
/// fail, naming it) and again for every new connection, so a rotated certificate is used
/// after the next reconnect.
#[derive(Clone, Default)]
pub struct Tls {
    pub(crate) cas: Vec<Source>,
    pub(crate) identity: Option<(Source, Source)>,
    pub(crate) server_name: Option<String>,
    pub(crate) server_names: Vec<(String, String)>,
    pub(crate) native_roots: bool,
    pub(crate) accept_invalid_certs: bool,
}

impl Tls {
    /// No CA, no identity: the system's roots if the `native-roots` feature is on.
    pub fn new() -> Tls {
        Tls::default()
    }

    /// Trusts the CA certificates in this PEM file (every `CERTIFICATE` block). May be
    /// given several times.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Tls {
        self.cas.push(Source::File(path.as_ref().to_path_buf()));
        self
    }

    /// Trusts the CA certificates in this PEM text. May be given several times.
    pub fn ca_pem(mut self, pem: impl AsRef<[u8]>) -> Tls {
        self.cas.push(Source::Pem(pem.as_ref().to_vec()));
        self
    }

    /// The client certificate chain and its private key (PKCS#8, PKCS#1 or SEC1, not
    /// encrypted), as PEM files: presented to servers that ask (mTLS).
    pub fn identity_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Tls {
        let cert = Source::File(cert.as_ref().to_path_buf());
        self.identity = Some((cert, Source::File(key.as_ref().to_path_buf())));
        self
    }

    /// The client certificate chain and its private key as PEM text (see
    /// [`identity_files`](Tls::identity_files)).
    pub fn identity_pem(mut self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Tls {
        let cert = Source::Pem(cert.as_ref().to_vec());
        self.identity = Some((cert, Source::Pem(key.as_ref().to_vec())));
        self
    }

    /// Checks every endpoint's certificate against `name` instead of the endpoint's host
    /// (etcdctl's `--discovery-srv` setups, or a proxy in front of etcd). Also sent as SNI.
    pub fn server_name(mut self, name: impl Into<String>) -> Tls {
        self.server_name = Some(name.into());
        self
    }

    /// Checks the certificate of `endpoint` (as given to [`Config::endpoints`](crate::Config::endpoints))
    /// against `name`; overrides [`server_name`](Tls::server_name) for that endpoint.
    pub fn server_name_for(mut self, endpoint: impl Into<String>, name: impl Into<String>) -> Tls {
        self.server_names.push((endpoint.into(), name.into()));
        self
    }

    /// Also trusts the operating system's CA certificates (read once, by `Client::new`).
    /// Needs the `native-roots` feature: without it, `Client::new` refuses a `Tls` that asks
    /// for them, saying so.
    pub fn native_roots(mut self, on: bool) -> Tls {
        self.native_roots = on;
        self
    }

    /// Accepts any server certificate, checking neither its issuer nor its name nor its
    /// dates (etcdctl's `--insecure-skip-tls-verify`): the connection is encrypted but
    /// anyone in the middle can read it. For tests and emergencies only.
    pub fn danger_accept_invalid_certs(mut self) -> Tls {
        self.accept_invalid_certs = true;
        self
    }

    /// Whether anything came from files, and so must be read again for a new connection.
    pub(crate) fn reads_files(&self) -> bool {
        self.cas.iter().any(Source::is_file)
            || self.identity.as_ref().is_some_and(|(c, k)| c.is_file() || k.is_file())
    }
}

/// Shows where the CAs and identity come from, never key bytes.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = self.identity.as_ref().map(|(cert, key)| match key {
            Source::File(p) => format!("cert {cert:?}, key file {}", p.display()),
            Source::Pem(_) => format!("cert {cert:?}, key (redacted)"),
        });
        f.debug_struct("Tls")
            .field("cas", &self.cas)
            .field("identity", &identity)
            .field("server_name", &self.server_name)
            .field("server_names", &self.server_names)
            .field("native_roots", &self.native_roots)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .finish()
    }
}

#[cfg(test)]
mod core_tests;
#[cfg(test)]
pub(crate) mod testcerts;
