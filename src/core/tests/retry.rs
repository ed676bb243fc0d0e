//! The retry policy of unary calls (`Config::retry`) and per-call deadlines.

use super::world::{config, Reach, World};
use super::{response, RANGE};
use crate::core::{Deadline, UnaryOptions};
use crate::error::Code;
use crate::grpc::codec;
use crate::pb::etcdserverpb::RangeRequest;
use bytes::Bytes;
use std::time::Duration;

const A: &str = "127.0.0.1:2379";
const B: &str = "127.0.0.1:22379";

/// Two endpoints, reads retried up to `attempts` times 25 ms (±20 %) apart, a 2 s deadline.
fn world(attempts: u32) -> World {
    let mut cfg = config(&[A, B]);
    cfg.retry_attempts = attempts;
    World::with(cfg)
}

fn body(key: &'static str) -> Bytes {
    codec::encode(&RangeRequest { key: key.into(), ..Default::default() })
}

fn read() -> UnaryOptions {
    UnaryOptions { deadline: Deadline::Default, retryable: true }
}

fn write() -> UnaryOptions {
    UnaryOptions { deadline: Deadline::Default, retryable: false }
}

/// Answers every call that has arrived with `code` and `msg`.
fn fail_all(w: &mut World, code: i32, msg: &str) -> usize {
    let mut calls = w.take_calls();
    for c in &mut calls {
        c.trailers(code, msg);
    }
    calls.len()
}

fn error(w: &mut World) -> crate::error::EtcdError {
    let done = w.collect();
    assert_eq!(done.len(), 1, "exactly one result");
    done[0].1.clone().unwrap_err()
}

#[test]
fn a_read_answered_unavailable_is_retried_on_the_next_endpoint_after_the_backoff() {
    let mut w = world(3);
    w.start_with(1, body("k"), read());
    w.run_until(|w| w.server_calls() == 1);
    fail_all(&mut w, 14, "etcdserver: no leader");
    w.run_until(|w| w.server_calls() == 1);
    let second = w.arrivals.last().unwrap().clone();
    assert_eq!((second.endpoint.as_str(), second.path.as_str()), (B, RANGE), "moved on");
    let wait = second.at;
    assert!(wait >= Duration::from_millis(20) && wait <= Duration::from_millis(30), "{wait:?}");
    assert!(w.results().is_empty(), "the failure was not reported");
    let mut calls = w.take_calls();
    calls[0].message(response(9));
    calls[0].trailers(0, "");
    w.run_until(|w| w.results().len() == 1);
    assert!(w.collect()[0].1.is_ok());
    w.run_to(5_000);
    assert!(w.collect().is_empty(), "nothing delivered twice");
}

#[test]
fn too_many_requests_is_retried_too_and_the_attempts_are_bounded() {
    let mut w = world(2);
    w.start_with(1, body("k"), read());
    let mut attempts = 0;
    while w.results().is_empty() {
        w.run_until(|w| w.server_calls() == 1 || !w.results().is_empty());
        attempts += fail_all(&mut w, 8, "etcdserver: too many requests");
        w.run_until(|w| w.server_calls() == 1 || !w.results().is_empty());
    }
    assert_eq!(attempts, 3, "the first attempt and two retries");
    let e = error(&mut w);
    assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "etcdserver: too many requests"));
}

#[test]
fn a_write_is_not_retried_after_it_was_processed_unless_it_opted_in() {
    let mut w = world(3);
    w.start_with(1, body("w"), write());
    w.run_until(|w| w.server_calls() == 1);
    fail_all(&mut w, 14, "etcdserver: no leader");
    w.run_until(|w| !w.results().is_empty());
    assert_eq!(error(&mut w).code(), Code::Unavailable);
    // The same write, opted in: retried like a read.
    w.start_with(2, body("w"), read());
    w.run_until(|w| w.server_calls() == 1);
    fail_all(&mut w, 14, "etcdserver: no leader");
    w.run_until(|w| w.server_calls() == 1);
    assert!(w.results().is_empty());
}

#[test]
fn deadline_exceeded_and_other_statuses_are_final() {
    for (code, msg) in [(4, "context deadline exceeded"), (3, "etcdserver: key is not provided")] {
        let mut w = world(3);
        w.start_with(1, body("k"), read());
        w.run_until(|w| w.server_calls() == 1);
        fail_all(&mut w, code, msg);
        w.run_until(|w| !w.results().is_empty());
        assert_eq!(error(&mut w).message(), msg);
        w.run_to(3_000);
        assert_eq!(w.server_calls(), 0, "never sent again");
    }
}

#[test]
fn with_retries_off_the_first_unavailable_is_reported() {
    let mut w = world(0);
    w.start_with(1, body("k"), read());
    w.run_until(|w| w.server_calls() == 1);
    fail_all(&mut w, 14, "etcdserver: no leader");
    w.run_until(|w| !w.results().is_empty());
    assert_eq!(error(&mut w).code(), Code::Unavailable);
}

#[test]
fn retries_stop_at_the_calls_one_deadline() {
    let mut w = world(1_000);
    w.start_with(1, body("k"), read());
    let mut attempts = 0;
    while w.results().is_empty() {
        w.run_until(|w| w.server_calls() > 0 || !w.results().is_empty());
        attempts += fail_all(&mut w, 14, "etcdserver: no leader");
    }
    let e = error(&mut w);
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(e.message().contains("last: UNAVAILABLE: etcdserver: no leader"), "says why: {e}");
    assert_eq!(w.elapsed(), Duration::from_secs(2), "the deadline, not a fresh one per attempt");
    assert!(attempts > 20, "retried all along: {attempts}");
}

#[test]
fn a_read_waits_out_an_outage_of_every_endpoint_within_its_deadline() {
    let mut w = world(1_000);
    w.set_reach(A, Reach::Refused);
    w.set_reach(B, Reach::Refused);
    w.start_with(1, body("k"), read());
    w.run_to(500);
    assert!(w.results().is_empty(), "still retrying: {:?}", w.results());
    assert!(w.connects().len() >= 4, "rounds of endpoints: {:?}", w.connects());
    w.set_reach(B, Reach::Up);
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    calls[0].message(response(3));
    calls[0].trailers(0, "");
    w.run_until(|w| !w.results().is_empty());
    assert!(w.collect()[0].1.is_ok());
    // Without retries the same outage fails the read once every endpoint failed.
    let mut w = world(0);
    w.set_reach(A, Reach::Refused);
    w.set_reach(B, Reach::Refused);
    w.start_with(1, body("k"), read());
    w.run_until(|w| !w.results().is_empty());
    assert_eq!((error(&mut w).code(), w.elapsed()), (Code::Unavailable, Duration::ZERO));
}

#[test]
fn a_per_call_deadline_is_taken_as_given() {
    let mut w = world(3);
    let opts = UnaryOptions { deadline: Deadline::After(Duration::from_millis(150)), ..read() };
    w.start_with(1, body("k"), opts);
    w.run_until(|w| !w.results().is_empty());
    let e = error(&mut w);
    assert_eq!((e.code(), w.elapsed()), (Code::DeadlineExceeded, Duration::from_millis(150)));
    assert!(e.message().contains("150ms"), "{e}");
    // No deadline at all: still pending long after the configured one.
    let opts = UnaryOptions { deadline: Deadline::None, ..read() };
    w.start_with(2, body("k"), opts);
    w.run_to(60_000);
    assert!(w.results().is_empty());
}

// ===== the revision-ordering guard =====

/// Answers the one call that arrived with a Range response at `revision`.
fn answer(w: &mut World, revision: i64) {
    let mut calls = w.take_calls();
    assert_eq!(calls.len(), 1);
    calls[0].message(response(revision));
    calls[0].trailers(0, "");
}

#[test]
fn a_read_answered_behind_a_revision_seen_before_is_retried_elsewhere_never_delivered() {
    let mut w = world(3);
    w.start_with(1, body("k"), read());
    w.run_until(|w| w.server_calls() == 1);
    answer(&mut w, 10);
    w.run_until(|w| w.results().len() == 1);
    assert_eq!(super::decoded(&w.collect()[0].1).header.unwrap().revision, 10);
    // The member falls behind (a failover to a lagging member): its answer is not delivered.
    w.start_with(2, body("k"), read());
    w.run_until(|w| w.server_calls() == 1);
    answer(&mut w, 7);
    w.run_until(|w| w.server_calls() == 1 || !w.results().is_empty());
    assert!(w.results().is_empty(), "the stale answer was not delivered");
    assert_eq!(w.arrivals.last().unwrap().endpoint, B, "asked the other member");
    answer(&mut w, 11);
    w.run_until(|w| !w.results().is_empty());
    assert_eq!(super::decoded(&w.collect()[0].1).header.unwrap().revision, 11);
    // With retries off the caller hears UNAVAILABLE, never the stale answer.
    let mut w = world(0);
    w.start_with(1, body("k"), read());
    w.run_until(|w| w.server_calls() == 1);
    answer(&mut w, 10);
    w.run_until(|w| w.results().len() == 1);
    w.collect();
    w.start_with(2, body("k"), read());
    w.run_until(|w| w.server_calls() == 1);
    answer(&mut w, 9);
    w.run_until(|w| !w.results().is_empty());
    let e = error(&mut w);
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("stale read"), "{e}");
}

#[test]
fn reads_in_flight_together_may_be_answered_in_any_order() {
    let mut w = world(3);
    w.start_with(1, body("a"), read());
    w.start_with(2, body("b"), read());
    w.run_until(|w| w.server_calls() == 2);
    let mut calls = w.take_calls();
    calls[1].message(response(10));
    calls[1].trailers(0, "");
    w.run_until(|w| w.results().len() == 1);
    calls[0].message(response(9));
    calls[0].trailers(0, "");
    w.run_until(|w| w.results().len() == 2);
    assert!(w.collect().iter().all(|(_, r)| r.is_ok()), "both started before 10 was seen");
}
