//! One TLS connection between the socket and the h2 pipe, without IO of its own.
//!
//! ```text
//!   Handshaking ──handshake done, ALPN h2──► Established ──the server's first bytes──► Heard
//!        │                                        │                                     │
//!        └── error (certificate, alert, ALPN) ────┴──► the handshake failed             └── error,
//!                                                                                           close
//! ```
//!
//! With TLS 1.3 the client finishes its handshake before the server has checked the client
//! certificate: a server that refuses it answers the client's first application data with an
//! alert. So until the server has sent plaintext, a failure is still named a failed
//! handshake (and the reactor tells the session that nothing on the link was processed).
//! Waiting for the server to speak first instead would deadlock behind a TLS terminator in
//! front of etcd's plaintext port, which waits for the client's HTTP/2 preface.

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, Error};
use std::io::{self, BufRead, Write};
// `Write` is for rustls's writer(); ciphertext leaves through `pending`.
use std::sync::Arc;

/// The client side of one TLS connection.
pub(crate) struct TlsLayer {
    conn: ClientConnection,
    /// For messages: the endpoint as configured.
    endpoint: String,
    /// Whether a client certificate is configured, to explain the server's alerts.
    has_identity: bool,
    established: bool,
    /// The server has sent plaintext: its application saw the connection.
    heard: bool,
    /// Plaintext received before the connection counted as established.
    early: Vec<u8>,
    /// Ciphertext gathered from rustls, from `sent` on not yet written: written with one
    /// plain `write` (send with MSG_NOSIGNAL), never rustls's `writev`, which raises SIGPIPE
    /// on a reset socket.
    out: Vec<u8>,
    sent: usize,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("endpoint", &self.endpoint)
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

impl TlsLayer {
    /// Starts a handshake (the ClientHello is ready to be written at once).
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        endpoint: String,
        has_identity: bool,
    ) -> Result<TlsLayer, String> {
        let conn =
            ClientConnection::new(config, name).map_err(|e| format!("TLS with {endpoint}: {e}"))?;
        Ok(TlsLayer {
            conn,
            endpoint,
            has_identity,
            established: false,
            heard: false,
            early: Vec::new(),
            out: Vec::new(),
            sent: 0,
        })
    }

    /// Takes ciphertext read from the socket. Plaintext goes to `deliver` once established
    /// and is held until then. `Ok(true)`: the server closed the TLS session. `Err`: the
    /// connection is unusable, for the reason given (an alert may wait to be written).
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, String> {
        while !ciphertext.is_empty() {
            // Reads at most a few KiB per call: loop until the slice is used up.
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) => return Err(self.failure(&e.to_string())),
            }
            self.conn.process_new_packets().map_err(|e| self.failure(&describe(&e, self)))?;
            if self.drain(deliver) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves decrypted plaintext out; whether the server closed the session.
    fn drain(&mut self, deliver: &mut dyn FnMut(&[u8])) -> bool {
        loop {
            let mut reader = self.conn.reader();
            let n = match reader.fill_buf() {
                Ok([]) => return true, // close_notify
                Ok(chunk) => {
                    self.heard = true;
                    if self.established {
                        deliver(chunk);
                    } else {
                        self.early.extend_from_slice(chunk);
                    }
                    chunk.len()
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true, // end of input without close_notify
            };
            reader.consume(n);
        }
    }

    /// Whether the handshake is over: the session may now be told it is connected, then
    /// given [`take_early`](Self::take_early). `Err` when the server did not agree to HTTP/2.
    pub(crate) fn ready(&self) -> Result<bool, String> {
        if self.established || self.conn.is_handshaking() {
            return Ok(false);
        }
        if self.conn.alpn_protocol() != Some(b"h2") {
            return Err(self.failure(
                "h2 not negotiated: the server did not select HTTP/2 through ALPN \
                 (is this an etcd client port?)",
            ));
        }
        Ok(true)
    }

    /// Whether the server has sent plaintext (see the module docs).
    pub(crate) fn heard(&self) -> bool {
        self.heard
    }

    /// The plaintext held back until the session was told; afterwards plaintext goes
    /// straight to `receive`'s `deliver`.
    pub(crate) fn take_early(&mut self) -> Vec<u8> {
        self.established = true;
        std::mem::take(&mut self.early)
    }

    /// Encrypts as much of `plaintext` as rustls will buffer; how much it took.
    pub(crate) fn send(&mut self, plaintext: &[u8]) -> usize {
        self.conn.writer().write(plaintext).unwrap_or(0)
    }

    /// The ciphertext waiting to be written (empty: nothing); mark what was written with
    /// [`advance`](Self::advance).
    pub(crate) fn pending(&mut self) -> &[u8] {
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        while self.conn.wants_write() {
            // Writing into a Vec cannot fail.
            let _ = self.conn.write_tls(&mut self.out);
        }
        &self.out[self.sent..]
    }

    /// `n` bytes of [`pending`](Self::pending) were written.
    pub(crate) fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
    }

    /// Queues close_notify: the polite end of the session, part of the next `pending`.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
    }

    fn failure(&self, why: &str) -> String {
        let stage = if self.heard { "TLS" } else { "TLS handshake" };
        format!("{stage} with {} failed: {why}", self.endpoint)
    }
}

/// A rustls error in the words a user needs to fix it.
fn describe(e: &Error, layer: &TlsLayer) -> String {
    match e {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "unknown issuer: the server's certificate is not signed by a trusted CA \
                 (check Tls::ca_file)"
                    .to_string()
            }
            CertificateError::NotValidForName => {
                "name mismatch: the server's certificate is not valid for this endpoint's \
                 name (see Tls::server_name)"
                    .to_string()
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "name mismatch: the server's certificate is not valid for {}; it names {} \
                 (see Tls::server_name)",
                expected.to_str(),
                presented.iter().map(|n| plain_name(n)).collect::<Vec<_>>().join(", ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "expired: the server's certificate has expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_string()
            }
            other => format!("invalid server certificate: {other:?}"),
        },
        Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => no_client_certificate(),
            // TLS 1.2 servers say bad_certificate for a missing one.
            AlertDescription::BadCertificate if !layer.has_identity => no_client_certificate(),
            AlertDescription::HandshakeFailure => {
                "the server refused the handshake (alert HandshakeFailure: no TLS version, \
                 cipher suite or key exchange in common)"
                    .to_string()
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired => {
                format!("the server refused the client certificate (alert {alert:?})")
            }
            AlertDescription::NoApplicationProtocol => {
                "h2 not negotiated: the server refused HTTP/2 through ALPN".to_string()
            }
            other => format!("the server sent the alert {other:?}"),
        },
        Error::NoApplicationProtocol => {
            "h2 not negotiated: the server offers no HTTP/2 through ALPN".to_string()
        }
        other => other.to_string(),
    }
}

/// `DnsName("a.b")` → `a.b`, `IpAddress(::1)` → `::1`: rustls's names as a user writes them.
fn plain_name(name: &str) -> &str {
    for (open, close) in [("DnsName(\"", "\")"), ("IpAddress(", ")")] {
        if let Some(inner) = name.strip_prefix(open).and_then(|n| n.strip_suffix(close)) {
            return inner;
        }
    }
    name
}

fn no_client_certificate() -> String {
    "no client certificate: the server requires one (see Tls::identity_files)".to_string()
}

#[cfg(test)]
#[path = "layer_tests.rs"]
pub(crate) mod tests;
