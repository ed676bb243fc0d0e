//! TLS servers for what a real etcd will not do on demand: reset a TLS connection, say
//! close_notify with its first bytes, send a bare alert, or sit behind a TLS terminator that
//! waits for the client to speak first. Each runs on loopback in threads of the test.

use super::certs::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// An empty HTTP/2 SETTINGS frame: what an HTTP/2 server sends first.
pub const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A server configuration presenting the harness's server certificate, offering `h2`.
pub fn server_config(files: &TlsFiles) -> Arc<ServerConfig> {
    let certs = vec![CertificateDer::from_pem_file(&files.server_cert).expect("server cert")];
    let key = PrivateKeyDer::from_pem_file(&files.server_key).expect("server key");
    #[allow(deprecated)] // ring's provider, as the client uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Completes a server handshake on `socket` (blocking).
pub fn handshake(config: Arc<ServerConfig>, socket: &mut TcpStream) -> ServerConnection {
    let mut conn = ServerConnection::new(config).expect("server connection");
    while conn.is_handshaking() {
        conn.complete_io(socket).expect("server handshake");
    }
    conn
}

/// Writes everything rustls has to send.
pub fn flush(conn: &mut ServerConnection, socket: &mut TcpStream) {
    while conn.wants_write() {
        if conn.write_tls(socket).is_err() {
            return;
        }
    }
}

/// Blocks until the client closes its end (or 20 s pass): a server that keeps the socket
/// open without a sleep.
pub fn wait_for_close(socket: &mut TcpStream) {
    socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut buf = [0u8; 4096];
    while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
}

/// Closes `socket` with a reset (SO_LINGER 0): what a killed server's kernel sends.
pub fn reset(socket: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(socket);
}

/// A TLS terminator in front of a plaintext endpoint (as stunnel or a load balancer): it
/// forwards plaintext both ways and, like etcd's plaintext port behind it, never speaks
/// before the client does.
pub struct TlsTerminator {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TlsTerminator {
    /// Serves connections to `backend` (`host:port`) until dropped.
    pub fn start(files: &TlsFiles, backend: &str) -> TlsTerminator {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (config, backend) = (server_config(files), backend.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(upstream)) = (client, TcpStream::connect(&backend)) else {
                    continue;
                };
                let config = config.clone();
                thread::spawn(move || forward(config, client, upstream));
            }
        });
        TlsTerminator { addr, stop }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Moves plaintext between the TLS client and the backend until either side closes.
fn forward(config: Arc<ServerConfig>, mut client: TcpStream, mut backend: TcpStream) {
    let mut tls = handshake(config, &mut client);
    flush(&mut tls, &mut client);
    // The client's first data may have come with its last handshake message.
    if !to_backend(&mut tls, &mut backend) {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: backend.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd entries on sockets we own.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, 20_000) } <= 0 {
            return;
        }
        if fds[0].revents != 0 {
            match tls.read_tls(&mut client) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if tls.process_new_packets().is_err() {
                return flush(&mut tls, &mut client);
            }
            if !to_backend(&mut tls, &mut backend) {
                return;
            }
        }
        if fds[1].revents != 0 {
            let n = backend.read(&mut buf).unwrap_or(0);
            if n == 0 {
                tls.send_close_notify();
                return flush(&mut tls, &mut client);
            }
            if tls.writer().write_all(&buf[..n]).is_err() {
                return;
            }
            flush(&mut tls, &mut client);
        }
    }
}

/// Passes the plaintext rustls holds to the backend; false once the client closed.
fn to_backend(tls: &mut ServerConnection, backend: &mut TcpStream) -> bool {
    let mut plain = Vec::new();
    let open =
        matches!(tls.reader().read_to_end(&mut plain), Err(e) if e.kind() == ErrorKind::WouldBlock);
    backend.write_all(&plain).is_ok() && open
}
