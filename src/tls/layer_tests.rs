//! The TLS layer against a rustls server in memory: no socket, no clock.

use super::*;
use crate::endpoint::{self, Endpoint};
use crate::tls::connector::Connector;
use crate::tls::testcerts::{Issued, Pki};
use crate::tls::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::io::Read;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    crate::tls::connector::ring_provider()
}

/// A server presenting `server`, with ALPN `alpn`, requiring a client certificate from
/// `client_ca` when given.
pub(crate) fn server(server: &Issued, alpn: &[&[u8]], client_ca: Option<&str>) -> ServerConnection {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
            builder.with_client_cert_verifier(verifier.build().unwrap())
        }
    };
    let certs = vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    ServerConnection::new(Arc::new(config)).unwrap()
}

/// The client side for `tls` and the endpoint `raw`.
pub(crate) fn client(tls: Tls, raw: &str) -> TlsLayer {
    let ep = Endpoint { address: endpoint::parse(raw).unwrap().0, tls: true };
    Connector::new(tls, std::slice::from_ref(&ep)).unwrap().connect(&ep).unwrap()
}

/// Moves ciphertext both ways until both sides are quiet; the client's plaintext is
/// collected into `got`. The first error of either side ends it.
pub(crate) fn pump(
    c: &mut TlsLayer,
    s: &mut ServerConnection,
    got: &mut Vec<u8>,
) -> Result<(), String> {
    for _ in 0..100 {
        let to_server = c.pending().to_vec();
        c.advance(to_server.len());
        let mut slice = &to_server[..];
        while !slice.is_empty() {
            s.read_tls(&mut slice).unwrap();
            if let Err(e) = s.process_new_packets() {
                // Let the server's alert reach the client.
                let mut alert = Vec::new();
                while s.wants_write() {
                    s.write_tls(&mut alert).unwrap();
                }
                c.receive(&alert, &mut |p| got.extend_from_slice(p))?;
                return Err(format!("server: {e}"));
            }
        }
        let mut to_client = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut to_client).unwrap();
        }
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(());
        }
        c.receive(&to_client, &mut |p| got.extend_from_slice(p))?;
    }
    panic!("never went quiet")
}

fn trusting(pki: &Pki) -> Tls {
    Tls::new().ca_pem(&pki.ca.cert_pem)
}

#[test]
fn the_connection_is_ready_once_h2_is_agreed_without_waiting_for_the_server() {
    let pki = Pki::new();
    let mut c = client(trusting(&pki), "https://127.0.0.1:2379");
    let mut s = server(&pki.server, &[b"h2"], None);
    let mut got = Vec::new();
    assert!(!c.ready().unwrap(), "ready before the handshake");
    s.writer().write_all(b"SETTINGS").unwrap();
    pump(&mut c, &mut s, &mut got).unwrap();
    assert!(c.ready().unwrap() && c.heard());
    assert!(got.is_empty(), "plaintext is held until the session is told");
    assert_eq!(c.take_early(), b"SETTINGS");
    // A server that waits for the client (a TLS terminator before a plaintext port).
    let mut quiet = client(trusting(&pki), "https://127.0.0.1:2379");
    let mut s2 = server(&pki.server, &[b"h2"], None);
    pump(&mut quiet, &mut s2, &mut Vec::new()).unwrap();
    assert!(quiet.ready().unwrap() && !quiet.heard());
    assert!(quiet.take_early().is_empty());
    // Established: plaintext flows straight through, both ways.
    s.writer().write_all(b"more").unwrap();
    assert_eq!(c.send(b"PRI * HTTP/2.0"), 14);
    pump(&mut c, &mut s, &mut got).unwrap();
    assert_eq!(got, b"more");
    let mut buf = [0u8; 64];
    let n = s.reader().read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"PRI * HTTP/2.0");
    // close_notify from the server ends the session cleanly.
    s.send_close_notify();
    let mut bytes = Vec::new();
    s.write_tls(&mut bytes).unwrap();
    assert_eq!(c.receive(&bytes, &mut |_| {}), Ok(true));
    // The client's close_notify is ciphertext like any other.
    c.close();
    assert!(!c.pending().is_empty());
}

#[test]
fn ipv6_literals_are_checked_against_ip_sans() {
    let pki = Pki::new();
    let mut c = client(trusting(&pki), "https://[::1]:2379");
    let mut s = server(&pki.server, &[b"h2"], None);
    s.writer().write_all(b"S").unwrap();
    pump(&mut c, &mut s, &mut Vec::new()).unwrap();
    assert!(c.ready().unwrap());
}

fn handshake_error(tls: Tls, raw: &str, mut s: ServerConnection) -> String {
    let mut c = client(tls, raw);
    s.writer().write_all(b"S").unwrap();
    let err = pump(&mut c, &mut s, &mut Vec::new()).and_then(|_| c.ready().map(|_| ()));
    // A refusal of the client certificate answers the client's first data (TLS 1.3).
    let err = err.and_then(|_| {
        c.take_early();
        c.send(b"PRI");
        pump(&mut c, &mut s, &mut Vec::new())
    });
    err.expect_err("handshake succeeded")
}

#[test]
fn certificate_failures_say_what_is_wrong_and_name_the_endpoint() {
    let pki = Pki::new();
    let wrong_ca = Tls::new().ca_pem(&pki.other_ca.cert_pem);
    let err =
        handshake_error(wrong_ca, "https://127.0.0.1:2379", server(&pki.server, &[b"h2"], None));
    assert!(err.starts_with("TLS handshake with 127.0.0.1:2379 failed: unknown issuer"), "{err}");

    let other_name = pki.ca.issue("etcd", &["etcd.example"], false);
    let s = server(&other_name, &[b"h2"], None);
    let err = handshake_error(trusting(&pki), "https://127.0.0.1:2379", s);
    assert!(err.contains("not valid for 127.0.0.1; it names etcd.example"), "{err}");
    // The override checks the certificate against the name it carries.
    let mut c = client(trusting(&pki).server_name("etcd.example"), "https://127.0.0.1:2379");
    let mut s = server(&other_name, &[b"h2"], None);
    s.writer().write_all(b"S").unwrap();
    pump(&mut c, &mut s, &mut Vec::new()).unwrap();
    assert!(c.ready().unwrap());

    let expired = pki.ca.issue("etcd", &["127.0.0.1"], true);
    let err =
        handshake_error(trusting(&pki), "https://127.0.0.1:2379", server(&expired, &[b"h2"], None));
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn a_server_that_wants_a_client_certificate_fails_the_handshake_without_one() {
    let pki = Pki::new();
    let s = server(&pki.server, &[b"h2"], Some(&pki.ca.cert_pem));
    let err = handshake_error(trusting(&pki), "https://127.0.0.1:2379", s);
    assert!(err.contains("no client certificate"), "{err}");
    // With one, it is ready.
    let tls = trusting(&pki).identity_pem(&pki.client.cert_pem, &pki.client.key_pem);
    let mut c = client(tls, "https://127.0.0.1:2379");
    let mut s = server(&pki.server, &[b"h2"], Some(&pki.ca.cert_pem));
    s.writer().write_all(b"S").unwrap();
    pump(&mut c, &mut s, &mut Vec::new()).unwrap();
    assert!(c.ready().unwrap());
}

#[test]
fn a_server_without_h2_is_refused() {
    let pki = Pki::new();
    let err =
        handshake_error(trusting(&pki), "https://127.0.0.1:1", server(&pki.server, &[], None));
    assert!(err.contains("h2 not negotiated"), "{err}");
    let s = server(&pki.server, &[b"http/1.1"], None);
    let err = handshake_error(trusting(&pki), "https://127.0.0.1:1", s);
    assert!(err.contains("h2 not negotiated") || err.contains("NoApplicationProtocol"), "{err}");
}

#[test]
fn accepting_invalid_certificates_skips_issuer_and_name_checks() {
    let pki = Pki::new();
    let stranger = pki.other_ca.issue("x", &["elsewhere.example"], true);
    let mut c = client(Tls::new().danger_accept_invalid_certs(), "https://127.0.0.1:2379");
    let mut s = server(&stranger, &[b"h2"], None);
    s.writer().write_all(b"S").unwrap();
    pump(&mut c, &mut s, &mut Vec::new()).unwrap();
    assert!(c.ready().unwrap());
}
