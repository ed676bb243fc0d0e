//! The core in virtual time over an in-memory TLS pair: the core, our TLS
//! layer, a rustls server and the in-process h2 server, with no socket and no clock. The
//! core is told it is connected only once the handshake is done and the server spoke.

use super::layer::tests::{client, server};
use super::testcerts::Pki;
use super::Tls;
use crate::core::link::LinkCommand;
use crate::core::{Core, CoreConfig, Event};
use crate::endpoint::{Address, Endpoint};
use crate::grpc::codec;
use crate::h2io::test_server::TestServer;
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use bytes::Bytes;
use prost::Message;
use rustls::ServerConnection;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

const RANGE: &str = "/etcdserverpb.KV/Range";

fn config() -> CoreConfig {
    let address = Address::Tcp("127.0.0.1:2379".parse().unwrap());
    let endpoints = vec![Endpoint { address, tls: true }];
    let base = crate::core::tests::world::config(&["127.0.0.1:2379"]);
    CoreConfig { endpoints, token: None, keepalive_time: None, ..base }
}

/// Moves bytes session → TLS client → TLS server → h2 server and back until all are quiet.
fn exchange(
    session: &mut Core,
    tls: &mut super::layer::TlsLayer,
    tls_server: &mut ServerConnection,
    h2: &mut TestServer,
) {
    for _ in 0..100 {
        if let Some(out) = session.poll_transmit() {
            assert_eq!(tls.send(&out), out.len(), "TLS takes what it is given here");
            session.handle_written(out.len());
        }
        let wire = tls.pending().to_vec();
        tls.advance(wire.len());
        let mut slice = &wire[..];
        while !slice.is_empty() {
            tls_server.read_tls(&mut slice).unwrap();
            tls_server.process_new_packets().unwrap();
        }
        let mut plain = Vec::new();
        let _ = tls_server.reader().read_to_end(&mut plain);
        let answer = h2.serve(&plain);
        tls_server.writer().write_all(&answer).unwrap();
        let mut back = Vec::new();
        while tls_server.wants_write() {
            tls_server.write_tls(&mut back).unwrap();
        }
        if wire.is_empty() && back.is_empty() {
            return;
        }
        let closed = tls.receive(&back, &mut |p| session.handle_input(p)).unwrap();
        assert!(!closed);
        if tls.ready().unwrap() {
            session.handle_connected(Instant::now());
            session.handle_input(&tls.take_early());
        }
    }
    panic!("never went quiet");
}

#[test]
fn a_unary_call_round_trips_through_tls_in_virtual_time() {
    let pki = Pki::new();
    let t0 = Instant::now();
    let mut session = Core::new(config(), t0);
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    let body = codec::encode(&RangeRequest { key: "k".into(), ..Default::default() });
    let done = Box::new(move |res| *r.borrow_mut() = Some(res));
    session.start_unary(
        RANGE,
        body,
        "get",
        done,
        t0,
        crate::core::UnaryOptions { deadline: crate::core::Deadline::Default, retryable: true },
    );
    let Some(LinkCommand::Connect { endpoint, .. }) = session.poll_link(t0) else {
        panic!("a connection is wanted")
    };
    assert!(endpoint.tls);
    session.handle_handshaking();

    let mut tls = client(Tls::new().ca_pem(&pki.ca.cert_pem), "https://127.0.0.1:2379");
    let mut tls_server = server(&pki.server, &[b"h2"], None);
    let mut h2 = TestServer::new();
    exchange(&mut session, &mut tls, &mut tls_server, &mut h2);
    assert!(session.poll_link(t0).is_none(), "connected: nothing more to do for the link");

    let mut calls = h2.take_calls();
    assert_eq!(calls.len(), 1, "the call went out through TLS");
    let header = ResponseHeader { revision: 9, ..Default::default() };
    let reply = RangeResponse { header: Some(header), ..Default::default() };
    calls[0].message(codec::encode(&reply));
    calls[0].trailers(0, "");
    exchange(&mut session, &mut tls, &mut tls_server, &mut h2);
    session.handle_timeout(t0);
    let Some(Event::Call(done, res)) = session.poll_event() else { panic!("the call finished") };
    done(res);
    let bytes: Bytes = result.borrow_mut().take().unwrap().expect("ok");
    assert_eq!(RangeResponse::decode(bytes).unwrap().header.unwrap().revision, 9);

    // The connect timeout covers the handshake, and names it.
    let cfg = CoreConfig { connect_timeout: Duration::from_secs(1), ..config() };
    let mut session = Core::new(cfg, t0);
    let done = Box::new(|_| {});
    session.start_unary(
        RANGE,
        codec::encode(&RangeRequest::default()),
        "get",
        done,
        t0,
        crate::core::UnaryOptions { deadline: crate::core::Deadline::Default, retryable: true },
    );
    assert!(matches!(session.poll_link(t0), Some(LinkCommand::Connect { .. })));
    session.handle_handshaking();
    session.handle_timeout(t0 + Duration::from_secs(1));
    let Some(Event::Call(_, result)) = session.poll_event() else { panic!("the call failed") };
    let err = result.unwrap_err();
    assert!(err.message().contains("TLS handshake with 127.0.0.1:2379 timed out"), "{err}");
}
