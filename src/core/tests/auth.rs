//! Authentication: the gate, the token on every call, stale tokens, failed Authenticates.

use super::world::{config, World};
use super::{decoded, response, token, AUTHENTICATE, RANGE};
use crate::core::failure::is_stale_token;
use crate::core::CoreConfig;
use crate::error::Code;
use crate::pb::etcdserverpb::AuthenticateRequest;
use prost::Message;

/// A world whose core holds credentials and no token.
fn with_credentials() -> World {
    let cfg = CoreConfig {
        token: None,
        credentials: Some(("root".into(), "pw".into())),
        ..config(&["127.0.0.1:2379"])
    };
    World::with(cfg)
}

/// Connects, and answers the Authenticate call that goes first with `t`.
fn connect_and_authenticate(w: &mut World, t: &str) {
    w.run_until(|w| w.server_calls() == 1);
    let mut auth = w.take_calls();
    assert_eq!(auth[0].path, AUTHENTICATE);
    auth[0].message(token(t));
    auth[0].trailers(0, "");
    w.pump();
}

#[test]
fn a_new_connection_authenticates_first_and_the_other_calls_wait_for_the_token() {
    let mut w = with_credentials();
    w.start(1, "a");
    w.run_until(|w| w.server_calls() == 1);
    w.run_to(500);
    let mut calls = w.take_calls();
    assert_eq!(calls.len(), 1, "only Authenticate goes out first");
    assert_eq!(calls[0].path, AUTHENTICATE);
    assert!(calls[0].headers.get("token").is_none(), "no stale token on Authenticate");
    let (bytes, _) = calls[0].read();
    assert_eq!(AuthenticateRequest::decode(&bytes[5..]).unwrap().name, "root");
    calls[0].message(token("T1"));
    calls[0].trailers(0, "");
    w.run_until(|w| w.server_calls() == 1);
    let mut calls = w.take_calls();
    assert_eq!(calls[0].path, RANGE);
    assert_eq!(calls[0].headers["token"], "T1");
    calls[0].message(response(3));
    calls[0].trailers(0, "");
    w.run_until(|w| w.results().len() == 1);
    assert_eq!(decoded(&w.collect()[0].1).header.unwrap().revision, 3);
}

#[test]
fn calls_failing_with_a_stale_token_share_one_reauthentication_and_are_retried_once() {
    let mut w = with_credentials();
    w.start(1, "a");
    w.start(2, "b");
    connect_and_authenticate(&mut w, "T1");
    let mut calls = w.take_calls();
    assert_eq!(calls.len(), 2);
    calls[0].trailers_only(16, "etcdserver: invalid auth token");
    calls[1].trailers_only(3, "etcdserver: revision of auth store is old");
    w.pump();
    assert!(w.collect().is_empty(), "nothing reported: both wait for a new token");
    let mut again = w.take_calls();
    assert_eq!(again.len(), 1, "one Authenticate for both");
    assert_eq!(again[0].path, AUTHENTICATE);
    again[0].message(token("T2"));
    again[0].trailers(0, "");
    w.pump();
    let mut retried = w.take_calls();
    assert_eq!(retried.len(), 2);
    assert!(retried.iter().all(|c| c.headers["token"] == "T2"));
    // A second stale-token failure is final: no loop.
    retried[0].message(response(5));
    retried[0].trailers(0, "");
    retried[1].trailers_only(16, "etcdserver: invalid auth token");
    w.pump();
    let mut done = w.collect();
    done.sort_by_key(|d| d.0);
    assert_eq!(decoded(&done[0].1).header.unwrap().revision, 5);
    assert_eq!(done[1].1.clone().unwrap_err().code(), Code::Unauthenticated);
    w.run_to(10_000);
    assert!(w.take_calls().is_empty(), "no further Authenticate");
}

#[test]
fn a_wrong_password_reaches_the_waiting_calls_and_is_never_retried() {
    let mut w = with_credentials();
    w.start(1, "a");
    w.run_until(|w| w.server_calls() == 1);
    let mut auth = w.take_calls();
    auth[0].trailers_only(3, "etcdserver: authentication failed, invalid user ID or password");
    w.run_until(|w| !w.results().is_empty());
    let done = w.collect();
    let err = done[0].1.clone().unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "get"));
    assert!(err.message().contains("invalid user ID or password"), "{err}");
    w.run_to(10_000);
    assert!(w.take_calls().is_empty(), "not retried");
}

#[test]
fn stale_token_messages_of_every_etcd_version_are_recognised() {
    assert!(is_stale_token("etcdserver: invalid auth token"));
    assert!(is_stale_token("etcdserver: revision of auth store is old"));
    assert!(is_stale_token("auth: revision in header is old"));
    assert!(!is_stale_token("etcdserver: authentication failed, invalid user ID or password"));
    assert!(!is_stale_token("etcdserver: permission denied"));
}

#[test]
fn a_passing_authenticate_failure_keeps_the_gate_closed_and_tries_again() {
    let mut w = with_credentials();
    w.start(1, "a");
    w.connect();
    w.pump();
    let mut auth = w.take_calls();
    auth[0].trailers_only(14, "etcdserver: leader changed");
    w.pump();
    assert!(w.take_calls().is_empty(), "nothing goes out without a token");
    assert!(w.collect().is_empty());
    w.advance_to(399); // the backoff is 500 ms ± 20 %
    w.pump();
    assert!(w.take_calls().is_empty(), "not before the backoff");
    w.advance_to(600);
    w.pump();
    let mut again = w.take_calls();
    assert_eq!(again[0].path, AUTHENTICATE);
    again[0].message(token("T1"));
    again[0].trailers(0, "");
    w.pump();
    let calls = w.take_calls();
    assert_eq!(calls[0].headers["token"], "T1");
}

#[test]
fn a_call_sent_with_an_older_token_is_retried_without_authenticating_again() {
    let mut w = with_credentials();
    w.start(1, "a");
    w.start(2, "b");
    connect_and_authenticate(&mut w, "T1");
    let mut calls = w.take_calls(); // both sent with T1
    calls[1].trailers_only(16, "etcdserver: invalid auth token");
    w.pump();
    let mut reauth = w.take_calls();
    reauth[0].message(token("T2"));
    reauth[0].trailers(0, "");
    w.pump();
    let mut b_again = w.take_calls();
    assert_eq!(b_again[0].headers["token"], "T2");
    // Now a's T1 is refused too: T2 exists already, so a is simply sent again with it.
    calls[0].trailers_only(16, "etcdserver: invalid auth token");
    w.pump();
    let a_again = w.take_calls();
    assert_eq!(a_again.len(), 1);
    assert_eq!(a_again[0].path, RANGE);
    assert_eq!(a_again[0].headers["token"], "T2");
    b_again[0].message(response(1));
    b_again[0].trailers(0, "");
    w.pump();
    assert_eq!(w.collect().len(), 1);
}
