//! Certificates and keys from PEM, with errors that name the file and what is wrong.

use super::Source;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The bytes of a source (a file is read now).
fn read(source: &Source) -> Result<Vec<u8>, String> {
    match source {
        Source::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        Source::Pem(bytes) => Ok(bytes.clone()),
    }
}

/// Every `CERTIFICATE` block of `source`; at least one.
pub(crate) fn certificates(source: &Source) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(source)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {}", source.name(), describe(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found (expected a PEM block BEGIN CERTIFICATE)",
            source.name()
        ));
    }
    Ok(certs)
}

/// The one private key of `source`: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
/// SEC1 (`EC PRIVATE KEY`). Encrypted keys are refused: rustls cannot decrypt them.
pub(crate) fn private_key(source: &Source) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(source)?;
    let name = source.name();
    if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(&bytes, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(format!(
            "{name}: the private key is encrypted, which is not supported; \
             decrypt it first (openssl pkey -in KEY -out PLAIN_KEY)"
        ));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{name}: no private key found (expected a PEM block BEGIN PRIVATE KEY, \
             BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)"
        ),
        e => format!("{name}: not valid PEM: {}", describe(&e)),
    })
}

fn describe(e: &pem::Error) -> String {
    match e {
        pem::Error::Base64Decode(_) => "bad base64 inside a PEM block".to_string(),
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_string(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".to_string(),
        e => e.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testcerts::Pki;

    #[test]
    fn certificates_and_keys_of_every_format_parse() {
        let pki = Pki::new();
        let chain = format!("{}{}", pki.client.cert_pem, pki.ca.cert_pem);
        assert_eq!(certificates(&Source::Pem(chain.into_bytes())).unwrap().len(), 2);
        for key in [&pki.client.key_pem, &pki.rsa_pkcs1_key_pem(), &pki.ec_sec1_key_pem()] {
            private_key(&Source::Pem(key.clone().into_bytes())).unwrap();
        }
    }

    #[test]
    fn bad_pem_is_refused_with_the_reason() {
        let no_cert = certificates(&Source::Pem(b"hello".to_vec())).unwrap_err();
        assert!(no_cert.contains("no certificate found"), "{no_cert}");
        let key_only = Pki::new().client.key_pem.into_bytes();
        let err = certificates(&Source::Pem(key_only)).unwrap_err();
        assert!(err.contains("no certificate found"), "{err}");
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = private_key(&Source::Pem(encrypted.to_vec())).unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
        let err = private_key(&Source::Pem(Pki::new().ca.cert_pem.into_bytes())).unwrap_err();
        assert!(err.contains("no private key found"), "{err}");
        let truncated = b"-----BEGIN PRIVATE KEY-----\nMIIB\n".to_vec();
        let err = private_key(&Source::Pem(truncated)).unwrap_err();
        assert!(err.contains("no END line"), "{err}");
        let err = certificates(&Source::File("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(err.starts_with("cannot read /nonexistent/ca.pem"), "{err}");
    }
}
