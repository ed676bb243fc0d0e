//! TLS faults a real etcd will not produce on demand, against rustls servers on loopback
//! (`support::tls_server`): a reset connection in a process that keeps SIGPIPE at its
//! default, close_notify arriving with the server's first bytes, a bare handshake_failure
//! alert, a CA file that breaks between connections, and a TLS terminator in front of etcd's
//! plaintext port, which waits for the client to speak first.
#![cfg(feature = "tls")]

mod support;

use evetcd::{Client, Code, Config, EtcdError, GetOptions, PutOptions, Tls};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::certs::TlsFiles;
use support::client::{drive_until, ok};
use support::tls_server::{self, TlsTerminator, SETTINGS};
use support::Etcd;

/// Starts one get and drives the client until its callback ran; the result and how long.
fn get_result(c: &Client) -> (Result<(), EtcdError>, Duration) {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let start = Instant::now();
    c.get("k", GetOptions::new(), move |r| *s.borrow_mut() = Some(r.map(|_| ())));
    drive_until(&[c], Duration::from_secs(15), || slot.borrow().is_some());
    let r = slot.borrow_mut().take().expect("checked by drive_until");
    (r, start.elapsed())
}

/// A TLS server on loopback (the harness's certificate, ALPN h2) that completes one handshake
/// and then does `then` with the connection and its socket: its port, and its thread.
fn after_handshake(
    files: &TlsFiles,
    then: impl FnOnce(rustls::ServerConnection, std::net::TcpStream) + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = tls_server::server_config(files);
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let conn = tls_server::handshake(config, &mut socket);
        then(conn, socket);
    });
    (port, server)
}

/// A server on loopback that reads the client's ClientHello and then does `then` with the
/// socket: its port, and its thread.
fn after_client_hello(
    then: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut hello = [0u8; 4096];
        let _ = socket.read(&mut hello).unwrap();
        then(socket);
    });
    (port, server)
}

fn client_for(port: u16, files: &TlsFiles, timeout: Duration) -> Client {
    let config = Config::new()
        .endpoints([format!("https://127.0.0.1:{port}")])
        .tls(Tls::new().ca_file(&files.ca))
        .timeout(timeout)
        // The first failure is reported: each fake server answers one connection.
        .retry(0, Duration::ZERO);
    Client::new(config).expect("config")
}

/// Runs test `name` again in a child process whose SIGPIPE is at its default (as in a C
/// program embedding the client; Rust's runtime ignores it), and asserts that it exits
/// normally.
fn in_child_with_default_sigpipe(name: &str, body: impl FnOnce()) {
    const ENV: &str = "EVETCD_SIGPIPE_CHILD";
    if std::env::var(ENV).as_deref() == Ok(name) {
        // SAFETY: setting a signal disposition before this process writes to any socket.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        return body();
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, name)
        .output()
        .expect("child");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success(),
        "child died: status {:?}, signal {:?} (13 = SIGPIPE)\n{}{}",
        out.status.code(),
        out.status.signal(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// writev(2) on a reset socket raises SIGPIPE, send(MSG_NOSIGNAL) does not: every TLS
/// write, the close_notify on the way out included, must be the latter.
#[test]
fn a_reset_tls_connection_does_not_kill_the_process_with_sigpipe() {
    in_child_with_default_sigpipe(
        "a_reset_tls_connection_does_not_kill_the_process_with_sigpipe",
        || {
            let files = TlsFiles::new();
            let (port, server) = after_handshake(&files, |mut conn, mut socket| {
                conn.writer().write_all(&SETTINGS).unwrap();
                tls_server::flush(&mut conn, &mut socket);
                // The client's preface has arrived: reset, as a killed server's kernel does.
                let mut preface = [0u8; 24];
                std::io::Read::read_exact(
                    &mut rustls::Stream::new(&mut conn, &mut socket),
                    &mut preface,
                )
                .unwrap();
                tls_server::reset(socket);
            });
            let c = client_for(port, &files, Duration::from_secs(5));
            let (r, _) = get_result(&c);
            assert_eq!(r.unwrap_err().code(), Code::Unavailable);
            server.join().unwrap();
            c.close(); // writes close_notify to the reset socket
            drop(c);
        },
    );
}

#[test]
fn close_notify_with_the_first_bytes_ends_the_link_at_once() {
    let files = TlsFiles::new();
    let (port, server) = after_handshake(&files, |mut conn, mut socket| {
        // SETTINGS and close_notify in one write, so the client reads them together.
        conn.writer().write_all(&SETTINGS).unwrap();
        conn.send_close_notify();
        tls_server::flush(&mut conn, &mut socket);
        tls_server::wait_for_close(&mut socket); // the socket stays open
    });
    let c = client_for(port, &files, Duration::from_secs(5));
    let (r, took) = get_result(&c);
    let err = r.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "after {took:?}: {err}");
    assert!(took < Duration::from_secs(2), "waited {took:?} for the deadline: {err}");
    c.close();
    server.join().unwrap();
}

#[test]
fn a_handshake_failure_alert_is_not_called_a_missing_client_certificate() {
    let files = TlsFiles::new();
    let (port, server) = after_client_hello(|mut socket| {
        // alert(21), TLS 1.2, length 2: fatal(2), handshake_failure(40)
        socket.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]).unwrap();
        tls_server::wait_for_close(&mut socket);
    });
    let c = client_for(port, &files, Duration::from_secs(5));
    let err = get_result(&c).0.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("refused the handshake"), "{err}");
    assert!(!err.message().contains("client certificate"), "{err}");
    c.close();
    server.join().unwrap();
}

#[test]
fn a_ca_file_broken_between_connections_fails_that_attempt_naming_file_and_endpoint() {
    let files = TlsFiles::new();
    let ca = files.write("reloaded-ca.crt", &files.pki.ca.cert_pem);
    let silent = support::SilentListener::new();
    let config = Config::new()
        .endpoints([format!("https://{}", silent.endpoint())])
        .tls(Tls::new().ca_file(&ca))
        .connect_timeout(Duration::from_secs(2));
    let c = Client::new(config).unwrap();
    std::fs::write(&ca, "garbage").unwrap();
    let err = get_result(&c).0.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let named = format!("TLS handshake with {} failed: {}", silent.endpoint(), ca.display());
    assert!(err.message().starts_with(&named), "{err}");
}

/// etcd's plaintext port waits for the client's HTTP/2 preface before it sends anything, so
/// a client that waited for the server's first bytes after the handshake would never get
/// through a TLS terminator in front of it.
#[test]
fn a_tls_terminator_in_front_of_a_plaintext_port_works() {
    let files = TlsFiles::new();
    let etcd = Etcd::start();
    let terminator = TlsTerminator::start(&files, &etcd.endpoint());
    let config = Config::new()
        .endpoints([terminator.endpoint()])
        .tls(Tls::new().ca_file(&files.ca))
        .timeout(Duration::from_secs(5));
    let c = Client::new(config).unwrap();
    ok(&c, |cb| c.put("/terminated", "1", PutOptions::new(), cb));
    let got = ok(&c, |cb| c.get("/terminated", GetOptions::new(), cb));
    assert_eq!(&got.kvs[0].value[..], b"1");
}

/// etcd's plaintext port closes a TLS connection, or resets it: both name the likely cause.
#[test]
fn a_reset_during_the_handshake_says_which_scheme_to_use() {
    let files = TlsFiles::new();
    let (port, server) = after_client_hello(tls_server::reset);
    let c = client_for(port, &files, Duration::from_secs(5));
    let err = get_result(&c).0.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let m = err.message();
    assert!(m.starts_with("TLS handshake with") && m.contains("use http://"), "{err}");
    server.join().unwrap();
}
