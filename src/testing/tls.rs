//! TLS for etcd's client listener, from certificate files the caller provides.

use std::path::PathBuf;

use crate::Config;

/// The PEM files a member serves clients over TLS with, and those a client of it uses.
///
/// Bring your own certificates (with `rcgen`, `openssl` or your deployment's CA): the server
/// certificate must name `127.0.0.1` (an IP SAN), where members listen. Peers always talk
/// plain HTTP on loopback.
///
/// ```no_run
/// use evetcd::testing::{Etcd, EtcdTls};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = EtcdTls::new("certs/ca.crt", "certs/server.crt", "certs/server.key")
///     .client_identity("certs/client.crt", "certs/client.key")
///     .require_client_certs(true);
/// let etcd = Etcd::start_tls(&tls, &[])?;
/// // https://127.0.0.1:PORT, trusting ca.crt and showing client.crt (`tls` feature).
/// let client = evetcd::Client::new(etcd.config())?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client: Option<(PathBuf, PathBuf)>,
    require_client_certs: bool,
}

impl EtcdTls {
    /// Serves with the certificate `cert` and its key `key`; `ca` is the CA that signed it
    /// (clients trust it; with [`require_client_certs`](EtcdTls::require_client_certs) it
    /// must also have signed client certificates).
    pub fn new(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> EtcdTls {
        EtcdTls {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            client: None,
            require_client_certs: false,
        }
    }

    /// A client certificate and key, signed by the CA, for the clients of
    /// [`Etcd::config`](super::Etcd::config) (and [`Etcd::is_leader`](super::Etcd::is_leader)).
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> EtcdTls {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// mTLS: etcd refuses clients without a certificate signed by the CA
    /// (`--client-cert-auth --trusted-ca-file`).
    pub fn require_client_certs(mut self, on: bool) -> EtcdTls {
        self.require_client_certs = on;
        self
    }

    /// The etcd flags for it: `--cert-file` and `--key-file`, and with client certificates
    /// required, `--client-cert-auth` and `--trusted-ca-file`.
    pub fn etcd_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--cert-file={}", self.cert.display()),
            format!("--key-file={}", self.key.display()),
        ];
        if self.require_client_certs {
            flags.push("--client-cert-auth".to_string());
            flags.push(format!("--trusted-ca-file={}", self.ca.display()));
        }
        flags
    }

    /// A client's TLS settings: trust the CA, show the client identity if there is one.
    #[cfg(feature = "tls")]
    pub fn client_tls(&self) -> crate::Tls {
        let tls = crate::Tls::new().ca_file(&self.ca);
        match &self.client {
            Some((cert, key)) => tls.identity_files(cert, key),
            None => tls,
        }
    }
}

/// `config` with `tls`'s client settings, where the `tls` feature has them.
pub(super) fn client_config(config: Config, tls: Option<&EtcdTls>) -> Config {
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        return config.tls(tls.client_tls());
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    config
}
