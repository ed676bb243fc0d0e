//! From [`Tls`] settings to a rustls client for each new connection.
//!
//! The crypto provider is ring, chosen here explicitly: rustls's process-wide default is
//! never consulted, so another crate in the program turning on aws-lc cannot make it
//! ambiguous (rustls panics then).

use super::layer::TlsLayer;
use super::verify::AcceptAnyCertificate;
use super::{pem, Tls};
use crate::endpoint::{self, Address, Endpoint};
use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore};
use std::sync::Arc;

/// Makes the TLS side of every connection.
pub(crate) struct Connector {
    tls: Tls,
    provider: Arc<CryptoProvider>,
    /// Built once when nothing comes from files; rebuilt per connection otherwise.
    cached: Option<Arc<ClientConfig>>,
    /// The name each endpoint's certificate is checked against.
    names: Vec<(Address, ServerName<'static>)>,
    /// The system's CA certificates, read once (reading them can take tens of ms).
    native: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("tls", &self.tls).finish_non_exhaustive()
    }
}

impl Connector {
    /// Checks the settings and reads the files once, so that a bad file or name fails
    /// `Client::new` with a message naming it.
    pub(crate) fn new(tls: Tls, endpoints: &[Endpoint]) -> Result<Connector, String> {
        let provider = ring_provider();
        let names = server_names(&tls, endpoints)?;
        let native = match tls.native_roots || (tls.cas.is_empty() && !tls.accept_invalid_certs) {
            true => Some(native_roots(tls.native_roots)?),
            false => None,
        };
        let mut connector = Connector { tls, provider, cached: None, names, native };
        let config = connector.build()?;
        if !connector.tls.reads_files() {
            connector.cached = Some(config);
        }
        Ok(connector)
    }

    /// The TLS side of a new connection to `endpoint`. Files are read again here, so a
    /// rotated certificate is used; a file that no longer parses fails this attempt only.
    pub(crate) fn connect(&mut self, endpoint: &Endpoint) -> Result<TlsLayer, String> {
        let failed = |e: String| format!("TLS handshake with {endpoint} failed: {e}");
        let config = match &self.cached {
            Some(config) => config.clone(),
            None => self.build().map_err(failed)?,
        };
        // An endpoint learned at run time (auto-sync, `set_endpoints`, a member view) is
        // checked against the configured server name, else its own host.
        let name = match self.names.iter().find(|(address, _)| *address == endpoint.address) {
            Some((_, name)) => name.clone(),
            None => server_name(&self.tls, endpoint, None).map_err(failed)?,
        };
        let has_identity = self.tls.identity.is_some();
        TlsLayer::new(config, name, endpoint.to_string(), has_identity)
    }

    /// A rustls configuration from the current contents of the sources.
    fn build(&self) -> Result<Arc<ClientConfig>, String> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = self.verifier(builder)?;
        let mut config = match &self.tls.identity {
            None => builder.with_no_client_auth(),
            Some((cert_source, key_source)) => {
                let certs = pem::certificates(cert_source)?;
                let key = pem::private_key(key_source)?;
                builder.with_client_auth_cert(certs, key).map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "{}: the private key does not match the certificate in {}",
                        key_source.name(),
                        cert_source.name()
                    ),
                    e => format!("{}: the private key does not parse: {e}", key_source.name()),
                })?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Trusted roots, or no verification at all when asked for by name.
    fn verifier(
        &self,
        builder: ConfigBuilder<ClientConfig, rustls::WantsVerifier>,
    ) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, String> {
        if self.tls.accept_invalid_certs {
            let verifier = Arc::new(AcceptAnyCertificate(self.provider.clone()));
            return Ok(builder.dangerous().with_custom_certificate_verifier(verifier));
        }
        let mut roots = RootCertStore::empty();
        for source in &self.tls.cas {
            for cert in pem::certificates(source)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", source.name()))?;
            }
        }
        if let Some(native) = &self.native {
            roots.add_parsable_certificates(native.iter().cloned());
        }
        Ok(builder.with_root_certificates(roots))
    }
}

/// ring, always. rustls 0.23.48 deprecates ring's provider for lacking post-quantum key
/// exchange; aws-lc would bring it but must not be compiled in (a C toolchain and a larger
/// build), and etcd 3.5's Go TLS does not offer it anyway.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA certificates; at least one.
#[cfg(feature = "native-roots")]
fn native_roots(_asked: bool) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(format!("no CA configured, and no system CA certificate found{why}"));
    }
    Ok(found.certs)
}

/// Without the feature: why there are no system roots (asked for by `Tls::native_roots`,
/// or needed because no CA is configured).
#[cfg(not(feature = "native-roots"))]
fn native_roots(asked: bool) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    Err(match asked {
        true => "Tls::native_roots needs the feature native-roots".to_string(),
        false => "no CA configured: give one with Tls::ca_file or Tls::ca_pem (or build with \
                  the feature native-roots to trust the system's CA certificates)"
            .to_string(),
    })
}

/// Each endpoint's name: its `server_name_for`, else the common `server_name`, else its host.
fn server_names(
    tls: &Tls,
    endpoints: &[Endpoint],
) -> Result<Vec<(Address, ServerName<'static>)>, String> {
    let mut overrides = Vec::new();
    for (raw, name) in &tls.server_names {
        let address = endpoint::parse(raw).map_err(|e| e.message().to_string())?.0;
        if !endpoints.iter().any(|e| e.address == address) {
            return Err(format!("server_name_for: {raw:?} is not one of the endpoints"));
        }
        overrides.push((address, name.clone()));
    }
    let mut names = Vec::new();
    for ep in endpoints.iter().filter(|e| e.tls) {
        let chosen = overrides.iter().rev().find(|(address, _)| *address == ep.address);
        names.push((ep.address.clone(), server_name(tls, ep, chosen.map(|(_, n)| n))?));
    }
    Ok(names)
}

/// The name `ep`'s certificate is checked against: its override, else the configured
/// server name, else the endpoint's host.
fn server_name(
    tls: &Tls,
    ep: &Endpoint,
    chosen: Option<&String>,
) -> Result<ServerName<'static>, String> {
    let name =
        chosen.or(tls.server_name.as_ref()).cloned().unwrap_or_else(|| ep.default_server_name());
    ServerName::try_from(name.clone())
        .map_err(|_| format!("server name {name:?} (for {ep}) is not a DNS name or an IP"))
}
