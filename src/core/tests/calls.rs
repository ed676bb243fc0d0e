//! Unary calls: round trips, deadlines, statuses, size limits.

use super::world::World;
use super::{decoded, request_key, response, RANGE};
use crate::core::link::LinkCommand;
use crate::error::Code;
use crate::grpc::codec;
use crate::pb::etcdserverpb::RangeRequest;
use bytes::Bytes;

#[test]
fn a_unary_call_round_trips_with_grpc_headers() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "k");
    assert!(w.collect().is_empty(), "nothing completes before the server answers");
    w.run_until(|w| w.server_calls() == 1);
    assert_eq!(w.connects(), ["127.0.0.1:2379"]);
    let mut calls = w.take_calls();
    let call = &mut calls[0];
    assert_eq!(call.path, RANGE);
    assert_eq!(call.headers["content-type"], "application/grpc");
    assert_eq!(call.headers["te"], "trailers");
    assert_eq!(call.headers["token"], "tok");
    assert_eq!(request_key(call), "k");
    assert!(w.results().is_empty(), "still nothing before the answer");
    call.message(response(7));
    call.trailers(0, "");
    w.run_until(|w| w.results().len() == 1);
    let done = w.collect();
    assert_eq!(decoded(&done[0].1).header.unwrap().revision, 7);
    assert_eq!(w.elapsed(), std::time::Duration::ZERO, "no time passed: no timer was needed");
    assert!(w.core.is_idle());
}

/// The h2 connection is the costliest thing a call touches: a call on an established link
/// polls it once to write the request (with whatever else it owed) and once per piece of
/// input to read, not once per drive round (against a real etcd: two polls per call).
#[test]
fn a_call_on_an_established_link_polls_the_connection_once_per_input_and_once_to_write() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "warm");
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    calls[0].message(response(1));
    calls[0].trailers(0, "");
    w.run_until(|w| w.results().len() == 1);
    w.collect();
    for i in 2..12 {
        let before = w.core.h2_polls();
        w.start(i, "k");
        w.run_until(|w| w.server_calls() == 1);
        let mut calls = w.take_calls();
        calls[0].message(response(i as i64));
        calls[0].trailers(0, "");
        w.run_until(|w| w.results().len() == 1);
        assert_eq!(decoded(&w.collect()[0].1).header.unwrap().revision, i as i64);
        // Six before issue 21 (a poll per drive round); the world hands the answer over in
        // pieces (headers, data, trailers, the server's window update), each read once.
        assert!(w.core.h2_polls() - before <= 4, "call {i}: {} polls", w.core.h2_polls() - before);
    }
}

#[test]
fn calls_queued_before_the_connection_go_out_in_order_on_one_connection() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    let keys: Vec<&'static str> = (0..100).map(|i| &*format!("k{i:03}").leak()).collect();
    for (i, k) in keys.iter().enumerate() {
        w.start(i as u32, k);
    }
    w.connect();
    assert!(w.next_connect().is_none(), "one connection for every call");
    w.pump();
    let mut calls = w.take_calls();
    let seen: Vec<Bytes> = calls.iter_mut().map(request_key).collect();
    assert_eq!(seen, keys);
    for (i, call) in calls.iter_mut().enumerate().rev() {
        call.message(response(i as i64));
        call.trailers(0, "");
    }
    w.pump();
    let mut done = w.collect();
    done.sort_by_key(|d| d.0);
    assert_eq!(done.len(), 100);
    for (i, (id, r)) in done.iter().enumerate() {
        assert_eq!((*id as usize, decoded(r).header.unwrap().revision), (i, i as i64));
    }
}

#[test]
fn the_deadline_fires_exactly_at_the_timeout_and_resets_the_stream() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "k");
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    w.advance_to(1999);
    assert!(w.collect().is_empty());
    assert!(!calls[0].read().1, "not reset before the deadline");
    // The deadline fires before the answer reaches the client (input processed in the same
    // turn as the deadline beats it: see the next test).
    w.advance_to(2000);
    let done = w.collect();
    assert_eq!(done.len(), 1);
    let err = done[0].1.clone().unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::DeadlineExceeded, "get"));
    assert!(err.is_retryable());
    // The late answer is dropped: nothing is delivered twice.
    calls[0].message(response(1));
    calls[0].trailers(0, "");
    w.hand_over();
    w.turn();
    w.pump();
    assert!(w.collect().is_empty());
    assert!(w.core.is_idle());
}

/// The IO contract: what was read is processed before the timers due fire, so an answer
/// that arrived in time is not failed by a deadline that comes due in the same turn.
#[test]
fn an_answer_read_in_the_turn_its_deadline_comes_due_is_delivered() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "k");
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    w.advance_to(1999);
    // The answer reaches the client's pipe, unread, and the deadline is due at the turn
    // that reads it.
    calls[0].message(response(1));
    calls[0].trailers(0, "");
    w.hand_over();
    w.advance_to(2000);
    let done = w.collect();
    assert_eq!(done.len(), 1);
    assert_eq!(decoded(&done[0].1).header.unwrap().revision, 1);
    w.advance_to(4000);
    assert!(w.collect().is_empty(), "and the deadline is gone with the call");
}

#[test]
fn an_expired_call_resets_its_stream() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "k");
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    w.run_until(|w| w.results().len() == 1);
    assert_eq!(w.elapsed().as_millis(), 2000, "at the deadline");
    assert_eq!(w.collect()[0].1.clone().unwrap_err().code(), Code::DeadlineExceeded);
    w.pump();
    assert!(calls[0].read().1, "the server saw RST_STREAM");
}

#[test]
fn a_call_waiting_for_a_connection_that_never_comes_still_times_out() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "k");
    assert!(w.next_connect().is_some()); // connecting, never completes
                                         // The wheel may wake early (a coarse slot's start), never late.
    assert!(w.core.poll_timeout().unwrap() <= w.at(2000));
    w.advance_to(1999);
    assert!(w.collect().is_empty());
    w.advance_to(2000);
    assert_eq!(w.collect()[0].1.clone().unwrap_err().code(), Code::DeadlineExceeded);
    assert!(w.core.is_idle());
}

#[test]
fn statuses_from_trailers_and_trailers_only_headers() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "a");
    w.start(2, "b");
    w.run_until(|w| w.server_calls() == 2);
    let mut calls = w.take_calls();
    calls[0].trailers_only(5, "etcdserver: requested lease not found");
    calls[1].message(response(1));
    calls[1].trailers(14, "etcdserver:%20no%20leader");
    w.run_until(|w| w.results().len() == 2);
    let mut done = w.collect();
    done.sort_by_key(|d| d.0);
    let e1 = done[0].1.clone().unwrap_err();
    assert_eq!(
        (e1.code(), e1.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let e2 = done[1].1.clone().unwrap_err();
    assert_eq!((e2.code(), e2.message()), (Code::Unavailable, "etcdserver: no leader"));
}

#[test]
fn two_messages_for_a_unary_call_is_an_internal_error() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "k");
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    calls[0].message(response(1));
    calls[0].message(response(2));
    calls[0].trailers(0, "");
    w.run_until(|w| !w.results().is_empty());
    let done = w.collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1.clone().unwrap_err().code(), Code::Internal);
}

#[test]
fn an_oversized_request_fails_on_the_next_turn_and_is_never_queued() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    let body = codec::encode(&RangeRequest { key: vec![b'x'; 1001].into(), ..Default::default() });
    assert!(w.start_raw(1, body).is_none());
    assert!(w.results().is_empty(), "not from inside the call");
    assert!(w.poll_link().is_none(), "nothing to send, so no connection");
    let e = w.collect()[0].1.clone().unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(w.core.is_idle());
}

#[test]
fn a_response_read_together_with_the_end_of_input_is_delivered() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "a");
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    calls[0].message(response(9));
    calls[0].trailers(0, "");
    // The answer and the end of input arrive before h2 looks at either.
    w.hand_over();
    w.core.handle_eof();
    w.turn();
    let done = w.collect();
    assert_eq!(decoded(&done[0].1).header.unwrap().revision, 9, "not failed as UNAVAILABLE");
}

#[test]
fn end_of_input_from_the_server_ends_the_link() {
    let mut w = World::new(&["127.0.0.1:2379"]);
    w.start(1, "a");
    w.connect();
    w.pump();
    assert_eq!(w.poll_link(), None, "the link is up");
    w.core.handle_eof();
    w.turn();
    let e = w.collect()[0].1.clone().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("closed"), "{e}");
    assert_eq!(w.poll_link(), Some(LinkCommand::Close), "the reactor drops the old socket");
    assert_eq!(w.poll_link(), None, "nothing waits: no new connection");
}
