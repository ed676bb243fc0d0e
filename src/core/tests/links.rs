//! The link: its loss, calls sent again when provably unprocessed, GOAWAY, endpoint rotation,
//! connect timeouts, keepalive PINGs.

use super::world::{config, Reach, World};
use super::{decoded, request_key, response, RANGE};
use crate::core::failure::MAX_RESENDS;
use crate::core::link::LinkCommand;
use crate::core::CoreConfig;
use crate::error::Code;
use crate::grpc::codec;
use crate::pb::etcdserverpb::RangeRequest;
use bytes::Bytes;
use std::time::Duration;

/// The test configuration with a call deadline of 30 s.
fn timeout_30s(endpoints: &[&str]) -> CoreConfig {
    CoreConfig { timeout: Duration::from_secs(30), ..config(endpoints) }
}

impl World {
    /// Answers every call the server holds with a Range response; their keys.
    fn answer_all(&mut self) -> Vec<Bytes> {
        let mut calls = self.take_calls();
        let keys = calls.iter_mut().map(request_key).collect();
        for c in &mut calls {
            c.message(response(1));
            c.trailers(0, "");
        }
        self.pump();
        keys
    }
}

#[test]
fn a_broken_link_fails_sent_calls_once_keeps_unsent_ones_and_rotates() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.start(2, "b");
    w.connect();
    w.pump();
    assert_eq!(w.take_calls().len(), 2, "calls 1 and 2 reached the server");
    w.start(3, "c"); // queued, not yet sent
    w.core.handle_link_error("read: connection reset by peer");
    w.turn();
    let done = w.collect();
    assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2]);
    for (_, r) in &done {
        let e = r.clone().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_retryable() && e.message().contains("reset"), "{e}");
    }
    // Call 3 was never sent: it waits for the next connection, on the next endpoint.
    assert_eq!(w.poll_link(), Some(LinkCommand::Close), "the broken socket is dropped");
    w.reconnect("127.0.0.1:22379");
    let mut calls = w.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(request_key(&mut calls[0]), "c");
    // The expired deadlines of the failed calls are gone with them.
    w.advance_to(2000);
    assert_eq!(w.collect().iter().map(|d| d.0).collect::<Vec<_>>(), [3]);
}

#[test]
fn a_link_refused_before_the_server_spoke_resends_its_calls_a_bounded_number_of_times() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    assert!(w.transmit().is_some()); // the call is written: its bytes left
    let msg = "TLS handshake with 127.0.0.1:2379 failed: no client certificate";
    let mut endpoints = Vec::new();
    for _ in 0..=MAX_RESENDS {
        w.core.handle_refused(msg);
        w.turn();
        if let Some(ep) = w.next_connect() {
            endpoints.push(ep);
            w.connected();
            assert!(w.transmit().is_some(), "sent again, and its bytes left");
        }
    }
    // Nothing on a refused link was processed: sent again on the next endpoint each time,
    // and given up with the refusal's reason once MAX_RESENDS is used.
    assert_eq!(endpoints, ["127.0.0.1:22379", "127.0.0.1:2379", "127.0.0.1:22379"]);
    let done = w.collect();
    assert_eq!(done.len(), 1);
    let err = done[0].1.clone().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no client certificate"), "{err}");
}

#[test]
fn calls_queued_on_a_refused_endpoint_go_to_the_next_one_which_is_tried_once() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379"]);
    for (id, key) in [(1, "a"), (2, "b"), (3, "c")] {
        w.start(id, key);
    }
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
    w.core.handle_connect_failed("connect to 127.0.0.1:2379: Connection refused", w.now);
    assert!(w.collect().is_empty(), "never written: they wait for the next endpoint");
    // Three calls failed with the one attempt: the client moved once, to the second endpoint.
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:22379");
    w.connected();
    w.pump();
    let mut calls = w.take_calls();
    let keys: Vec<Bytes> = calls.iter_mut().map(request_key).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    for c in &mut calls {
        c.message(response(1));
        c.trailers(0, "");
    }
    w.pump();
    let done = w.collect();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|(_, r)| r.is_ok()));
}

#[test]
fn when_every_endpoint_refused_the_queued_calls_fail_once_each() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.set_reach("127.0.0.1:2379", Reach::Refused);
    w.set_reach("127.0.0.1:22379", Reach::Refused);
    w.start(1, "a");
    w.run_until(|w| !w.results().is_empty());
    assert_eq!(w.connects(), ["127.0.0.1:2379", "127.0.0.1:22379"]);
    let done = w.collect();
    assert_eq!(done.len(), 1);
    let e = done[0].1.clone().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_retryable() && e.message().contains("22379: Connection refused"), "{e}");
    assert!(w.next_connect().is_none(), "nothing left to connect for");
    // The next call starts a new round, at the first endpoint again.
    w.start(2, "b");
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
}

#[test]
fn a_connect_that_hangs_times_out_and_rotates() {
    let mut w = World::with(timeout_30s(&["127.0.0.1:2379", "127.0.0.1:22379"]));
    w.start(1, "a");
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
    w.advance_to(2999);
    assert!(w.collect().is_empty());
    w.advance_to(3000);
    assert!(w.collect().is_empty(), "the call moves on to the next endpoint");
    // The abandoned attempt's socket is dropped before the next connect is asked for (in
    // the same turn the connect timer fired), so no "connected" can come for it later.
    assert_eq!(w.poll_link(), Some(LinkCommand::Close));
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:22379");
    w.advance_to(6000);
    let e = w.collect()[0].1.clone().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("22379 timed out"), "{e}");
    // A late "connected" for the abandoned attempt, with no connect asked for, is ignored:
    // no link comes up (no preface), and nothing more is asked of the IO layer.
    w.core.handle_connected(w.now);
    assert_eq!(w.transmit(), None, "no link is up");
    assert_eq!(w.poll_link(), Some(LinkCommand::Close), "the attempt that timed out");
    assert_eq!(w.poll_link(), None);
}

#[test]
fn a_connect_that_hangs_times_out_at_the_connect_timeout_in_a_world() {
    let mut w = World::with(timeout_30s(&["127.0.0.1:2379", "127.0.0.1:22379"]));
    w.set_reach("127.0.0.1:2379", Reach::Hanging);
    w.set_reach("127.0.0.1:22379", Reach::Hanging);
    w.start(1, "a");
    w.run_until(|w| !w.results().is_empty());
    assert_eq!(w.elapsed(), Duration::from_secs(6), "two connect timeouts of 3 s");
    assert_eq!(w.connects(), ["127.0.0.1:2379", "127.0.0.1:22379"]);
    let e = w.collect()[0].1.clone().unwrap_err();
    assert!(e.message().contains("connect to 127.0.0.1:22379 timed out after 3s"), "{e}");
}

#[test]
fn a_call_whose_bytes_never_left_is_sent_again_on_the_next_endpoint() {
    // The turn after the connect writes the preface and the call's frames into the pipe;
    // a twin world shows what that turn wrote.
    let mut twin = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    twin.start(1, "a");
    twin.connect();
    twin.turn();
    let written = twin.transmit().map_or(0, |b| b.len());
    assert!(written > 24, "more than the preface: the call was opened ({written} bytes)");

    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    w.turn(); // the call's frames are in the pipe, not yet on the wire
    w.core.handle_link_error("write: broken pipe");
    w.turn();
    assert!(w.collect().is_empty(), "never written, so not failed");
    w.reconnect("127.0.0.1:22379");
    assert_eq!(w.answer_all(), ["a"]);
    assert!(w.collect()[0].1.is_ok());
}

/// Bytes count as sent once the IO layer reports them written, not when it takes them.
#[test]
fn a_call_whose_bytes_were_taken_but_never_written_is_sent_again() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    let taken = w.core.poll_transmit().expect("the preface and the call");
    assert!(taken.len() > 24);
    w.core.handle_written(24); // the preface reached the socket, the call did not
    w.core.handle_link_error("write: broken pipe");
    w.turn();
    assert!(w.collect().is_empty(), "never written, so not failed");
    w.reconnect("127.0.0.1:22379");
    assert_eq!(w.answer_all(), ["a"]);
    assert!(w.collect()[0].1.is_ok());
}

#[test]
fn a_refused_stream_is_sent_again_at_most_three_times() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "a");
    w.connect();
    w.pump();
    for attempt in 0..4 {
        let mut calls = w.take_calls();
        assert_eq!(calls.len(), 1, "attempt {attempt}");
        calls[0].reset(h2::Reason::REFUSED_STREAM);
        w.pump();
        if attempt < 3 {
            assert!(w.collect().is_empty(), "refused: sent again, attempt {attempt}");
        }
    }
    let e = w.collect()[0].1.clone().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.is_retryable() && e.message().contains("refused stream"), "{e}");
    // Once answered, a refused call succeeds.
    w.start(2, "b");
    w.pump();
    w.take_calls()[0].reset(h2::Reason::REFUSED_STREAM);
    w.pump();
    assert_eq!(w.answer_all(), ["b"]);
    assert!(w.collect()[0].1.is_ok());
}

#[test]
fn calls_above_a_goaway_last_stream_are_sent_again_and_the_ones_below_are_not() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    w.pump(); // stream 1 reaches the server
    w.start(2, "b");
    w.turn(); // stream 3 is written by the client...
    w.server().abrupt_shutdown(h2::Reason::NO_ERROR); // ...after the server said GOAWAY(1)
    w.pump();
    assert!(w.server().is_closed());
    w.core.handle_eof();
    w.turn();
    let done = w.collect();
    assert_eq!(done.len(), 1, "only the processed call fails");
    assert_eq!(done[0].0, 1);
    assert_eq!(done[0].1.clone().unwrap_err().code(), Code::Unavailable);
    w.take_calls(); // call 1, on the old link
    w.reconnect("127.0.0.1:22379");
    assert_eq!(w.answer_all(), ["b"]);
    assert!(w.collect()[0].1.is_ok());
}

#[test]
fn a_call_above_the_goaway_is_sent_again_when_the_goaway_comes_with_the_eof() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    w.pump(); // stream 1 reaches the server
    w.start(2, "b");
    w.turn(); // stream 3 is written by the client...
    w.server().abrupt_shutdown(h2::Reason::NO_ERROR); // ...after the server said GOAWAY(1)
                                                      // The GOAWAY and the end of input are read in the same turn (the server closed right
                                                      // after writing it): nothing processes the GOAWAY before the end of input is known.
    w.hand_over();
    assert!(w.server().is_closed());
    w.core.handle_eof();
    w.turn();
    let done = w.collect();
    let ids: Vec<u32> = done.iter().map(|d| d.0).collect();
    assert_eq!(
        ids,
        [1],
        "only the processed call fails; got {:?}",
        done.iter().map(|d| d.1.clone().unwrap_err().to_string()).collect::<Vec<_>>()
    );
    // And the other is sent on the next endpoint.
    w.take_calls();
    w.reconnect("127.0.0.1:22379");
    assert_eq!(w.answer_all(), ["b"]);
    assert!(w.collect()[0].1.is_ok());
}

#[test]
fn a_graceful_goaway_drains_the_link_then_the_next_endpoint_takes_new_calls() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    w.pump();
    let mut first = w.take_calls();
    w.server().graceful_shutdown();
    w.pump();
    w.start(2, "b"); // after GOAWAY: waits, never sent on the draining link
    w.pump();
    assert!(w.take_calls().is_empty());
    assert!(w.collect().is_empty());
    assert_eq!(w.poll_link(), None, "the draining link stays while call 1 runs");
    // The call below the GOAWAY finishes normally on the old link...
    first[0].message(response(7));
    first[0].trailers(0, "");
    w.pump();
    let done = w.collect();
    assert_eq!(decoded(&done[0].1).header.unwrap().revision, 7);
    // ...which then ends; the waiting call goes to the next endpoint.
    w.reconnect("127.0.0.1:22379");
    assert_eq!(w.answer_all(), ["b"]);
    assert!(w.collect()[0].1.is_ok());
}

#[test]
fn a_member_answering_unavailable_is_left_for_the_next_endpoint() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.start(2, "b");
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    calls[0].trailers(14, "etcdserver: no leader");
    w.pump();
    let e = w.collect()[0].1.clone().unwrap_err();
    assert!(e.is_retryable() && e.message().contains("no leader"), "{e}");
    // Call 2 is still open on the old link: it may finish there.
    w.start(3, "c");
    w.pump();
    assert!(w.take_calls().is_empty(), "no new call on the draining link");
    calls[1].message(response(3));
    calls[1].trailers(0, "");
    w.pump();
    assert!(w.collect()[0].1.is_ok());
    w.reconnect("127.0.0.1:22379");
    assert_eq!(w.answer_all(), ["c"]);
}

#[test]
fn a_leader_change_is_not_blamed_on_the_member() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    w.connect();
    w.pump();
    w.take_calls()[0].trailers(14, "etcdserver: leader changed");
    w.pump();
    assert!(w.collect()[0].1.is_err());
    w.start(2, "b");
    w.pump();
    assert_eq!(w.answer_all(), ["b"], "same link");
    assert_eq!(w.connects().len(), 1);
}

#[test]
fn after_close_a_new_call_tries_every_endpoint_again() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    w.start(1, "a");
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
    w.core.handle_connect_failed("connection refused", w.now);
    let closed = w.core.close("client closed");
    assert_eq!(closed.len(), 1, "call 1 cancelled");
    w.run_all(closed);
    assert_eq!(w.collect()[0].1.clone().unwrap_err().code(), Code::Cancelled);
    // A fresh start: call 2 should get a try on each endpoint before it fails.
    w.start(2, "b");
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:22379");
    w.core.handle_connect_failed("connection refused", w.now);
    w.turn();
    let done = w.collect();
    assert!(
        done.is_empty(),
        "call 2 failed after one endpoint only: {:?}",
        done.iter().map(|d| d.1.clone().unwrap_err().to_string()).collect::<Vec<_>>()
    );
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
}

#[test]
fn a_call_started_after_the_waiting_ones_ended_tries_every_endpoint() {
    let mut w = World::new(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    let body = codec::encode(&RangeRequest { key: "a".into(), ..Default::default() });
    let key = w
        .core
        .start_unary(
            RANGE,
            body,
            "get",
            Box::new(|_| {}),
            w.now,
            crate::core::UnaryOptions { deadline: crate::core::Deadline::Default, retryable: true },
        )
        .unwrap();
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
    w.core.handle_connect_failed("connection refused", w.now);
    w.core.cancel_call(key); // the caller gives up (or its deadline fires) before B is tried
    w.turn();
    assert!(w.next_connect().is_none(), "nothing waits: no connection");
    w.collect();
    // Later, B and A may both be fine again; call 2 should try each.
    w.start(2, "b");
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:22379");
    w.core.handle_connect_failed("connection refused", w.now);
    w.turn();
    let done = w.collect();
    assert!(
        done.is_empty(),
        "call 2 failed after one endpoint only: {:?}",
        done.iter().map(|d| d.1.clone().unwrap_err().to_string()).collect::<Vec<_>>()
    );
    assert_eq!(w.next_connect().unwrap(), "127.0.0.1:2379");
}

// ===== keepalive PINGs =====

/// Whether `bytes` are exactly one HTTP/2 PING frame (not an ACK).
fn is_ping(bytes: &[u8]) -> bool {
    bytes.len() == 9 + 8 && bytes[..3] == [0, 0, 8] && bytes[3] == 0x6 && bytes[4] & 1 == 0
}

#[test]
fn an_unanswered_ping_ends_the_link_long_before_the_call_deadline() {
    let mut w = World::with(timeout_30s(&["127.0.0.1:2379"]));
    w.start(1, "k");
    w.connect();
    w.pump(); // the request reached the server, which now freezes
    w.advance_to(4999);
    assert_eq!(w.transmit(), None, "no PING before the interval");
    w.advance_to(5000);
    let out = w.transmit().expect("a PING is written while the call is open");
    assert!(is_ping(&out), "{out:?}");
    w.advance_to(6999);
    assert!(w.collect().is_empty());
    w.advance_to(7000);
    let err = w.collect()[0].1.clone().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("keepalive PING"), "{err}");
    assert_eq!(w.poll_link(), Some(LinkCommand::Close));
}

#[test]
fn an_idle_link_sends_no_ping_and_an_answered_one_keeps_the_link() {
    let mut w = World::with(timeout_30s(&["127.0.0.1:2379"]));
    w.start(1, "a");
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    calls[0].message(response(1));
    calls[0].trailers(0, "");
    w.pump();
    assert_eq!(w.collect().len(), 1);
    w.advance_to(5000);
    assert_eq!(w.transmit(), None, "no PING on an idle connection (etcd refuses those)");
    w.start(2, "b");
    w.pump();
    w.advance_to(10_000);
    let ping = w.transmit().expect("a PING while call 2 is open");
    assert!(is_ping(&ping), "{ping:?}");
    w.pump_with(ping); // the server answers the PING
    w.advance_to(12_000);
    w.pump();
    assert!(w.collect().is_empty(), "the link stays up; call 2 still waits for its answer");
    assert_eq!(w.poll_link(), None, "the socket is kept");
}
