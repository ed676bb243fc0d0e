//! Streams: keepalives, watches and observers; re-opened after they end (at once, then with a
//! jittered backoff cut short by a new link), given up when retries run out or the status
//! is permanent; and `close`.

use super::world::{config, KaSeen, ObsSeen, Reach, Seen, WSeen, World};
use super::{
    creates, ka_response, renewals, response, watch_created, watch_events, LEASE_KEEPALIVE, RANGE,
    WATCH,
};
use crate::core::link::LinkCommand;
use crate::core::{CoreConfig, Event};
use crate::error::Code;
use crate::grpc::codec;
use crate::pb::etcdserverpb::WatchResponse;
use bytes::Bytes;
use std::time::Duration;

const A: &str = "127.0.0.1:2379";
const B: &str = "127.0.0.1:22379";

/// The codes of the errors a stream's callback received.
fn errors<T>(seen: &Seen<T>) -> Vec<Code> {
    seen.borrow().iter().filter_map(|r| r.as_ref().err().map(|e| e.code())).collect()
}

/// The mod revisions of the events a watch received, in order.
fn event_revisions(seen: &WSeen) -> Vec<i64> {
    let seen = seen.borrow();
    let responses = seen.iter().filter_map(|r| r.as_ref().ok());
    responses.flat_map(|r| r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision)).collect()
}

// ===== keepalives =====

#[test]
fn keepalives_renew_at_a_third_of_the_ttl_and_share_one_request_per_lease() {
    let mut w = World::new(&[A]);
    let (a, b): (KaSeen, KaSeen) = Default::default();
    w.keepalive(7, true, &a);
    w.keepalive(7, true, &b);
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    assert_eq!(calls.len(), 1, "one stream for every keepalive");
    assert_eq!(calls[0].path, LEASE_KEEPALIVE);
    assert_eq!(renewals(&mut calls[0]), [7], "one renewal for both keepalives of lease 7");
    calls[0].message(ka_response(7, 3));
    w.pump();
    w.run_events();
    assert_eq!((a.borrow().len(), b.borrow().len()), (1, 1));
    // TTL 3 s: the next renewal is due 1 s after the answer, not before.
    w.advance_to(999);
    w.pump();
    assert_eq!(renewals(&mut calls[0]), [7]);
    w.advance_to(1000);
    w.pump();
    assert_eq!(renewals(&mut calls[0]), [7, 7]);
    // TTL 0: the lease is gone; each keepalive gets one NOT_FOUND and ends.
    calls[0].message(ka_response(7, 0));
    w.pump();
    w.run_events();
    for seen in [&a, &b] {
        let err = seen.borrow()[1].clone().unwrap_err();
        assert_eq!((err.code(), err.operation()), (Code::NotFound, "keepalive"));
        assert_eq!(seen.borrow().len(), 2);
    }
    assert!(w.core.is_idle(), "both keepalives ended");
    w.pump();
    assert!(calls[0].read().1, "the unused stream was reset");
}

#[test]
fn a_keepalive_stream_that_ends_reopens_and_renews_every_lease_at_once() {
    let mut w = World::new(&[A]);
    let seen: KaSeen = Default::default();
    for lease in [1, 2, 3] {
        w.keepalive(lease, true, &seen);
    }
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    for lease in [1, 2, 3] {
        calls[0].message(ka_response(lease, 60));
    }
    w.run_until(|_| seen.borrow().len() == 3);
    // The server ends the stream (say it lost its leader): re-opened at once, every lease
    // renewed without waiting for its 20 s timer, and no error reaches the callbacks.
    let ended = w.elapsed();
    calls[0].trailers(14, "etcdserver: no leader");
    w.run_until(|w| w.server_calls() == 1);
    assert_eq!(w.elapsed(), ended, "at once");
    let mut again = w.take_calls();
    assert_eq!(renewals(&mut again[0]), [1, 2, 3]);
    w.run_events();
    assert_eq!(seen.borrow().len(), 3);
    assert!(seen.borrow().iter().all(|r| r.is_ok()));
}

#[test]
fn a_keepalive_without_auto_reconnect_ends_with_the_stream_and_the_others_go_on() {
    let mut w = World::new(&[A]);
    let (once, always): (KaSeen, KaSeen) = Default::default();
    w.keepalive(1, false, &once);
    w.keepalive(2, true, &always);
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    calls[0].trailers(14, "etcdserver: no leader");
    w.run_until(|w| w.server_calls() == 1 && !once.borrow().is_empty());
    assert_eq!(errors(&once), [Code::Unavailable]);
    assert_eq!(once.borrow().len(), 1);
    assert!(always.borrow().is_empty());
    let mut again = w.take_calls();
    assert_eq!(renewals(&mut again[0]), [2], "only the other lease is renewed");
}

/// Issue 16 point 5 (b): the link is lost, no endpoint takes connections for a while, so
/// the stream waits out a backoff; a link that comes up meanwhile (for a call) carries the
/// re-opened stream at once, and the lease is renewed then, not when the backoff ends.
#[test]
fn a_keepalive_stream_reopens_after_the_link_is_lost_and_renews_as_soon_as_a_new_link_is_up() {
    let mut w = World::new(&[A, B]);
    let seen: KaSeen = Default::default();
    w.keepalive(7, true, &seen);
    w.run_until(|w| w.server_calls() == 1);
    let mut first = w.take_calls();
    assert_eq!(renewals(&mut first[0]), [7]);
    first[0].message(ka_response(7, 60));
    w.run_until(|_| seen.borrow().len() == 1);
    // The link is lost, and neither member takes connections: the stream re-opens at once,
    // fails with every endpoint, and waits out its backoff.
    w.set_reach(A, Reach::Refused);
    w.set_reach(B, Reach::Refused);
    w.core.handle_link_error("read: connection reset by peer");
    w.run_until(|w| w.connects().len() == 3);
    assert_eq!(w.connects(), [A, B, A]);
    let gave_up = w.elapsed();
    let backoff_over = w.core.poll_timeout().expect("the stream waits for its backoff") - w.t0;
    assert!(backoff_over >= gave_up + Duration::from_millis(300), "{backoff_over:?}");
    // B is back; a call brings a link up before the backoff is over.
    w.set_reach(B, Reach::Up);
    w.start(1, "k");
    w.run_until(|w| w.server_calls() == 2);
    assert_eq!(w.elapsed(), gave_up, "the stream re-opened with the link, at once");
    let mut calls = w.take_calls();
    let ka = calls.iter_mut().find(|c| c.path == LEASE_KEEPALIVE).expect("the keepalive stream");
    assert_eq!(renewals(ka), [7], "the lease renewed as soon as the link is up");
    assert_eq!(w.arrivals.last().unwrap().endpoint, B);
    ka.message(ka_response(7, 60));
    w.run_until(|_| seen.borrow().len() == 2);
    assert!(seen.borrow().iter().all(|r| r.is_ok()), "the keepalive never saw the outage");
}

#[test]
fn streams_carry_hasleader_and_unary_calls_do_not() {
    let mut w = World::new(&[A]);
    let seen: KaSeen = Default::default();
    w.keepalive(7, true, &seen);
    w.start(1, "k");
    w.run_until(|w| w.server_calls() == 2);
    let calls = w.take_calls();
    let stream = calls.iter().find(|c| c.path == LEASE_KEEPALIVE).unwrap();
    let unary = calls.iter().find(|c| c.path == RANGE).unwrap();
    assert_eq!(stream.headers["hasleader"], "true");
    assert!(unary.headers.get("hasleader").is_none());
}

// ===== watches =====

#[test]
fn a_permanent_status_ends_every_watch_once_and_nothing_reopens() {
    let mut w = World::new(&[A]);
    let (a, b): (WSeen, WSeen) = Default::default();
    w.watch("a", true, &a);
    w.watch("b", true, &b);
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    calls[0].trailers(7, "etcdserver: permission denied");
    w.run_until(|_| !a.borrow().is_empty() && !b.borrow().is_empty());
    assert_eq!(
        (errors(&a), errors(&b)),
        (vec![Code::PermissionDenied], vec![Code::PermissionDenied])
    );
    w.run_to(10_000);
    assert!(w.take_calls().is_empty(), "not re-opened");
    assert_eq!((a.borrow().len(), b.borrow().len()), (1, 1), "once");
    assert!(w.core.is_idle());
}

#[test]
fn when_retries_run_out_each_watch_gets_exactly_one_error() {
    let mut w = World::new(&[A]); // max_retries 2
    let seen: WSeen = Default::default();
    w.watch("a", true, &seen);
    let mut opened = Vec::new();
    for ends in 1..=3 {
        w.run_until(|w| w.server_calls() == 1);
        opened.push(w.elapsed());
        let mut calls = w.take_calls();
        calls[0].trailers(14, "etcdserver: no leader");
        w.run_until(|w| w.server_calls() == 1 || !seen.borrow().is_empty());
        assert_eq!(errors(&seen).len(), usize::from(ends == 3), "after {ends} ends");
    }
    // The first re-open is at once, the second after 500 ms ± 20 %.
    assert_eq!(opened[1], opened[0]);
    let wait = opened[2] - opened[1];
    assert!(wait >= Duration::from_millis(400) && wait <= Duration::from_millis(600), "{wait:?}");
    assert_eq!(errors(&seen), [Code::Unavailable]);
    w.run_to(10_000);
    assert!(w.take_calls().is_empty());
    assert_eq!(seen.borrow().len(), 1);
}

#[test]
fn a_watch_without_auto_reconnect_ends_with_the_stream_and_the_others_go_on() {
    let mut w = World::new(&[A]);
    let (once, always): (WSeen, WSeen) = Default::default();
    w.watch("once", false, &once);
    w.watch("always", true, &always);
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    calls[0].trailers(14, "etcdserver: no leader");
    w.run_until(|w| w.server_calls() == 1 && !once.borrow().is_empty());
    assert_eq!(errors(&once), [Code::Unavailable]);
    assert!(errors(&always).is_empty());
    let mut reopened = w.take_calls();
    assert_eq!(reopened.len(), 1, "the stream re-opens for the other watch");
    let keys: Vec<Bytes> = creates(&mut reopened[0]).into_iter().map(|c| c.key).collect();
    assert_eq!(keys, ["always"], "only the other watch is created again");
}

/// Found by `call::props::every_split_reads_as_whole`: whole messages that share a DATA chunk
/// with a bad frame are handed out, and the stream ends at once (not at its next event).
#[test]
fn a_framing_error_after_a_message_in_the_same_chunk_delivers_the_message_then_ends() {
    let mut w = World::new(&[A]);
    let seen: WSeen = Default::default();
    w.watch("a", false, &seen);
    w.connect();
    w.pump();
    let mut calls = w.take_calls();
    let created = WatchResponse { created: true, watch_id: 0, ..Default::default() };
    let mut data = codec::encode(&created).to_vec();
    data.extend_from_slice(&[1, 0, 0, 0, 0]); // the compression flag, never negotiated
    calls[0].message(Bytes::from(data));
    w.pump();
    w.run_events();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].as_ref().unwrap().created);
    let err = seen[1].clone().unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("compressed"), "{}", err.message());
}

/// Issue 16 point 5 (a): the watch stream dies with its link; on the next link the watch is
/// created again from the revision after the last one delivered, and an event delivered
/// already is not delivered again.
#[test]
fn a_watch_over_a_lost_link_resumes_on_the_next_link_from_the_next_revision_exactly_once() {
    let mut w = World::new(&[A, B]);
    let seen: WSeen = Default::default();
    w.watch("k", true, &seen);
    w.run_until(|w| w.server_calls() == 1);
    let mut on_a = w.take_calls();
    assert_eq!(on_a[0].path, WATCH);
    let starts: Vec<i64> = creates(&mut on_a[0]).iter().map(|c| c.start_revision).collect();
    assert_eq!(starts, [1]);
    on_a[0].message(watch_created(0, 4));
    on_a[0].message(watch_events(0, "k", &[5, 6]));
    w.run_until(|_| seen.borrow().len() == 2);
    // The link to A is lost.
    w.core.handle_link_error("read: connection reset by peer");
    w.run_until(|w| w.server_calls() == 1);
    assert_eq!(w.connects(), [A, B]);
    let mut on_b = w.take_calls();
    assert_eq!(on_b[0].path, WATCH);
    let starts: Vec<i64> = creates(&mut on_b[0]).iter().map(|c| c.start_revision).collect();
    assert_eq!(starts, [7], "resumed after the last revision delivered");
    // A server that replays revision 6 anyway: it is not delivered twice.
    on_b[0].message(watch_created(0, 8));
    on_b[0].message(watch_events(0, "k", &[6, 7]));
    on_b[0].message(watch_events(0, "k", &[8]));
    w.run_until(|_| seen.borrow().len() == 5);
    w.run_to(w.elapsed().as_millis() as u64 + 1000);
    assert_eq!(seen.borrow().len(), 5, "nothing else comes");
    assert!(errors(&seen).is_empty(), "the watch never saw the lost link");
    let created = seen.borrow().iter().filter(|r| r.as_ref().unwrap().created).count();
    assert_eq!(created, 2, "one created reply per stream");
    assert_eq!(event_revisions(&seen), [5, 6, 7, 8], "each revision exactly once, in order");
}

// ===== observers =====

#[test]
fn an_oversized_observe_request_ends_the_observer_on_the_next_turn_and_is_never_sent() {
    use crate::pb::v3electionpb::LeaderRequest;
    let mut w = World::new(&[A]);
    let seen: ObsSeen = Default::default();
    let request = codec::encode(&LeaderRequest { name: vec![b'e'; 1001].into() });
    let key = w.observe(request, true, &seen);
    assert!(seen.borrow().is_empty(), "not from inside the call");
    assert!(w.poll_link().is_none(), "nothing to send, so no connection");
    // Delivered as the client does: the final error, then the observer is gone.
    let Some(Event::Stream(k, item)) = w.core.poll_event() else { panic!("no final error") };
    assert_eq!(k, key);
    assert!(item.is_final());
    let mut cb = w.core.take_callback(key).expect("the observer's callback");
    cb.call(item);
    assert!(w.core.restore_callback(key, cb, true).is_some(), "handed back to be dropped");
    assert!(w.core.poll_event().is_none(), "one delivery");
    let e = seen.borrow_mut().pop().unwrap().unwrap_err();
    assert_eq!((e.code(), e.operation()), (Code::InvalidArgument, "election_observe"));
    assert!(e.message().contains("exceeds the limit") && !e.is_retryable(), "{e}");
    // Nothing re-opens later either.
    w.advance_to(60_000);
    assert!(w.poll_link().is_none());
    assert!(w.core.is_idle());
}

// ===== close =====

/// Issue 16 point 5 (c).
#[test]
fn close_cancels_a_pending_call_a_watch_and_a_keepalive_exactly_once_each() {
    let mut w = World::new(&[A]);
    let (watch, keepalive): (WSeen, KaSeen) = Default::default();
    w.start(1, "a");
    let watch_key = w.watch("k", true, &watch);
    let keepalive_key = w.keepalive(7, true, &keepalive);
    w.run_until(|w| w.server_calls() == 3);
    let mut calls = w.take_calls();
    let at = |path: &str| calls.iter().position(|c| c.path == path).unwrap();
    let (range, watching, renewing) = (at(RANGE), at(WATCH), at(LEASE_KEEPALIVE));
    calls[watching].message(watch_created(0, 4));
    calls[renewing].message(ka_response(7, 60));
    w.run_until(|_| watch.borrow().len() == 1 && keepalive.borrow().len() == 1);

    let events = w.core.close("client closed");
    assert_eq!((watch.borrow().len(), keepalive.borrow().len()), (1, 1), "not from inside");
    assert!(w.results().is_empty(), "not from inside");
    // One final item for each, handed back by close itself.
    let (mut calls_ended, mut finals) = (0, Vec::new());
    for event in &events {
        match event {
            Event::Call(..) => calls_ended += 1,
            Event::Stream(key, item) if item.is_final() => finals.push(*key),
            _ => {}
        }
    }
    assert_eq!(calls_ended, 1, "one completion for the call");
    finals.sort_by_key(|k| *k == keepalive_key);
    assert_eq!(finals, [watch_key, keepalive_key], "one final item per stream");
    w.run_all(events);
    let done = w.collect();
    assert_eq!(done.len(), 1);
    let err = done[0].1.clone().unwrap_err();
    assert_eq!((done[0].0, err.code(), err.message()), (1, Code::Cancelled, "client closed"));
    assert_eq!((watch.borrow().len(), keepalive.borrow().len()), (2, 2));
    assert_eq!(errors(&watch), [Code::Cancelled]);
    assert_eq!(errors(&keepalive), [Code::Cancelled]);
    assert!(w.core.is_idle(), "every stream ended with its delivery");
    assert_eq!(w.poll_link(), Some(LinkCommand::Close), "the link is dropped");

    // Nothing more, ever: not the late answers, not the timers (deadline, renewal, PING).
    calls[range].message(response(1));
    calls[range].trailers(0, "");
    calls[watching].message(watch_events(0, "k", &[5]));
    calls[renewing].message(ka_response(7, 60));
    w.pump();
    w.run_to(120_000);
    assert!(w.collect().is_empty());
    assert_eq!((watch.borrow().len(), keepalive.borrow().len()), (2, 2));
    assert!(w.take_calls().is_empty(), "nothing re-opened");
    assert_eq!(w.connects().len(), 1, "no new connection");
}

// ===== jitter =====

/// When (since the start) the watch stream was opened, in a world with `seed`, while its
/// server ends it with UNAVAILABLE each time, until the watch gets its error.
fn watch_open_times(seed: u64, max_retries: u32) -> Vec<Duration> {
    let cfg = CoreConfig { jitter_seed: seed, max_retries, ..config(&[A]) };
    let mut w = World::with(cfg);
    let seen: WSeen = Default::default();
    w.watch("k", true, &seen);
    while seen.borrow().is_empty() {
        w.run_until(|w| w.server_calls() == 1);
        w.take_calls()[0].trailers(14, "etcdserver: no leader");
        w.run_until(|w| w.server_calls() == 1 || !seen.borrow().is_empty());
    }
    assert_eq!(errors(&seen), [Code::Unavailable]);
    w.arrivals.iter().filter(|a| a.path == WATCH).map(|a| a.at).collect()
}

/// Issue 16 point 5 (d): one seed, one sequence of re-open times; another seed, another.
#[test]
fn backoff_jitter_is_deterministic_for_a_seed() {
    let one = watch_open_times(1, 5);
    assert_eq!(one.len(), 6, "the first open and five re-opens: {one:?}");
    assert_eq!(watch_open_times(1, 5), one, "the same seed, the same re-open times");
    // Re-open n waits (n - 1) × 500 ms, jittered within a fifth either way.
    let waits: Vec<Duration> = one.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(waits[0], Duration::ZERO, "the first re-open is at once");
    for (n, wait) in waits.iter().enumerate().skip(1) {
        let nominal = Duration::from_millis(500 * n as u64);
        assert!(
            *wait >= nominal.mul_f64(0.8) && *wait <= nominal.mul_f64(1.2),
            "re-open {n}: {wait:?}"
        );
    }
    assert!(
        waits.iter().enumerate().any(|(n, w)| w.as_millis() != 500 * n as u128),
        "jittered: {waits:?}"
    );
    assert_ne!(watch_open_times(7, 5), one, "another seed, other times");
}

#[test]
fn backoffs_are_jittered_within_a_fifth_either_way() {
    // The second re-open waits 500 ms ± 20 %: over many seeds, spread over that range.
    let waits: Vec<u128> = (0..200)
        .map(|i| {
            let times = watch_open_times(2 * i + 1, 2);
            (times[2] - times[1]).as_millis()
        })
        .collect();
    assert!(waits.iter().all(|w| (400..=600).contains(w)), "{waits:?}");
    let spread = waits.iter().max().unwrap() - waits.iter().min().unwrap();
    assert!(spread > 150, "spread over the range, not constant: {spread} ms");
}
