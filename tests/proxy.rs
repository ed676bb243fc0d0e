//! Tests of the fault-injecting proxy in `support::proxy` against a plain
//! echo server (no etcd), so a broken proxy shows up here rather than as
//! mysterious client test failures.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::proxy::{Mode, Proxy};

/// How long a read must stay silent to count as "nothing came through".
const SILENCE: Duration = Duration::from_millis(200);
/// Safety net so a broken proxy fails a test instead of hanging it.
const HANG: Duration = Duration::from_secs(5);

/// An echo server on loopback: writes back every chunk, closes on EOF.
/// Its threads live as long as the test binary.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("local_addr");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).expect("connect to proxy");
    s.set_read_timeout(Some(HANG)).expect("set_read_timeout");
    s
}

#[track_caller]
fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("read echo");
    assert_eq!(got, msg);
}

/// Asserts that nothing arrives for [`SILENCE`].
#[track_caller]
fn assert_silent(s: &mut TcpStream) {
    s.set_read_timeout(Some(SILENCE)).expect("set_read_timeout");
    let mut buf = [0; 16];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    s.set_read_timeout(Some(HANG)).expect("set_read_timeout");
}

#[test]
fn pass_forwards_both_ways_and_half_close() {
    let proxy = Proxy::start(echo_server());
    assert_eq!(proxy.endpoint(), format!("127.0.0.1:{}", proxy.addr().port()));
    let mut s = connect(&proxy);
    round_trip(&mut s, b"hello");
    round_trip(&mut s, &vec![7; 300_000]);
    assert_eq!((proxy.accepted(), proxy.open()), (1, 1));
    // Our FIN reaches the server, which echoes what is left and closes.
    s.write_all(b"bye").expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to EOF");
    assert_eq!(rest, b"bye");
}

#[test]
fn blackhole_silences_old_and_new_connections_until_pass() {
    let proxy = Proxy::start(echo_server());
    let mut old = connect(&proxy);
    round_trip(&mut old, b"before");
    proxy.set_mode(Mode::Blackhole);
    old.write_all(b"held").expect("write");
    let mut new = connect(&proxy);
    new.write_all(b"new").expect("write");
    assert_silent(&mut old);
    assert_silent(&mut new);
    assert_eq!((proxy.accepted(), proxy.open()), (2, 2));
    // Nothing was dropped: both streams resume where they stopped.
    proxy.set_mode(Mode::Pass);
    let mut got = [0; 4];
    old.read_exact(&mut got).expect("read held echo");
    assert_eq!(&got, b"held");
    let mut got = [0; 3];
    new.read_exact(&mut got).expect("read new echo");
    assert_eq!(&got, b"new");
    round_trip(&mut new, b"after");
}

#[test]
fn delay_holds_each_direction() {
    let delay = Duration::from_millis(150);
    let proxy = Proxy::start(echo_server());
    let mut s = connect(&proxy);
    round_trip(&mut s, b"warm-up");
    proxy.set_mode(Mode::Delay(delay));
    let t = Instant::now();
    round_trip(&mut s, b"slow");
    // Once on the way in, once on the way back.
    assert!(t.elapsed() >= 2 * delay, "round trip took only {:?}", t.elapsed());
}

#[test]
fn refuse_cuts_new_connections_only() {
    let proxy = Proxy::start(echo_server());
    let mut old = connect(&proxy);
    round_trip(&mut old, b"before");
    proxy.set_mode(Mode::Refuse);
    let mut new = connect(&proxy);
    let mut buf = [0; 16];
    match new.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF or reset, got {other:?}"),
    }
    round_trip(&mut old, b"still");
    assert_eq!((proxy.accepted(), proxy.open()), (2, 1));
    proxy.set_mode(Mode::Pass);
    round_trip(&mut connect(&proxy), b"again");
    assert_eq!(proxy.accepted(), 3);
}

#[test]
fn reset_all_resets_every_client() {
    let proxy = Proxy::start(echo_server());
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    round_trip(&mut a, b"a");
    round_trip(&mut b, b"b");
    proxy.reset_all();
    assert_eq!(proxy.open(), 0);
    for s in [&mut a, &mut b] {
        let err = s.read(&mut [0; 16]).expect_err("read after reset_all");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    }
    // The proxy itself keeps serving.
    round_trip(&mut connect(&proxy), b"c");
    assert_eq!(proxy.accepted(), 3);
}

#[test]
fn upstream_down_resets_the_client() {
    let proxy = Proxy::start(support::refused_endpoint().parse().expect("addr"));
    let mut s = connect(&proxy);
    let err = s.read(&mut [0; 16]).expect_err("read without upstream");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(proxy.accepted(), 1);
}

#[test]
fn drop_closes_connections_and_listener() {
    let proxy = Proxy::start(echo_server());
    let addr = proxy.addr();
    let mut s = connect(&proxy);
    round_trip(&mut s, b"x");
    proxy.set_mode(Mode::Blackhole);
    drop(proxy);
    assert_eq!(s.read(&mut [0; 16]).expect("read after drop"), 0);
    let err = TcpStream::connect(addr).expect_err("connect after drop");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}
