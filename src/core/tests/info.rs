//! `Client::info`'s snapshot of the core: the link's state and since when as it connects,
//! drains and ends; connect failures (refused, timed out) with their endpoint and error,
//! and their bound; the counts of watches, keepalives, observers and pending calls; the
//! auth state, which never holds the password or the token.

use super::world::{config, endpoint, KaSeen, ObsSeen, Reach, WSeen, World};
use super::{response, token, AUTHENTICATE};
use crate::core::CoreConfig;
use crate::grpc::codec;
use crate::info::{AuthState, LinkState, CONNECT_FAILURES_KEPT};
use crate::pb::v3electionpb::LeaderRequest;
use std::time::Duration;

const A: &str = "127.0.0.1:2379";
const B: &str = "127.0.0.1:22379";
const C: &str = "127.0.0.1:32379";

impl World {
    /// Answers every call the server holds with a Range response.
    fn answer(&mut self) {
        for mut call in self.take_calls() {
            call.message(response(1));
            call.trailers(0, "");
        }
        self.pump();
    }
}

#[test]
fn the_state_and_since_follow_the_link_as_it_connects_drains_and_ends() {
    let mut w = World::new(&[A, B]);
    let info = w.core.info();
    assert_eq!((info.state, info.since, info.endpoint), (LinkState::Idle, w.t0, None));
    assert_eq!(info.endpoints, [A, B]);
    assert_eq!(info.pending_calls, 0);

    w.advance_to(100);
    w.start(1, "a");
    assert_eq!(w.core.info().pending_calls, 1, "queued counts");
    assert_eq!(w.core.info().state, LinkState::Idle, "no turn yet");
    assert_eq!(w.next_connect().as_deref(), Some(A));
    let info = w.core.info();
    assert_eq!((info.state, info.since), (LinkState::Connecting, w.at(100)));
    assert_eq!(info.endpoint.as_deref(), Some(A));

    w.advance_to(150);
    w.core.handle_handshaking();
    assert_eq!(w.core.info().state, LinkState::Handshaking);
    assert_eq!(w.core.info().since, w.at(150));

    w.now = w.at(200);
    w.connected();
    w.pump();
    let info = w.core.info();
    assert_eq!((info.state, info.since), (LinkState::Connected, w.at(200)));
    assert_eq!(info.endpoint.as_deref(), Some(A));
    w.answer();
    w.collect();
    assert_eq!(w.core.info().pending_calls, 0);
    assert_eq!(w.core.info().since, w.at(200), "calls do not move since");

    // The endpoint leaves the list while a call is open on it: the link drains, then ends.
    w.start(2, "b");
    w.pump();
    w.advance_to(300);
    w.core.set_endpoints(vec![endpoint(C)]);
    let info = w.core.info();
    assert_eq!((info.state, info.since), (LinkState::Draining, w.at(300)));
    assert_eq!(info.endpoint.as_deref(), Some(A), "still the member in use");
    assert_eq!(info.endpoints, [C]);
    w.advance_to(400);
    w.answer();
    assert_eq!(w.collect().len(), 1);
    let info = w.core.info();
    assert_eq!((info.state, info.since, info.endpoint), (LinkState::Idle, w.at(400), None));
    assert!(info.connect_failures.is_empty(), "a drained link is no connect failure");
}

#[test]
fn failed_connects_are_recorded_with_their_endpoint_and_error_until_one_connects() {
    // Calls wait 30 s: long enough to outlast B's connect timeout.
    let mut w = World::with(CoreConfig { timeout: Duration::from_secs(30), ..config(&[A, B, C]) });
    w.set_reach(A, Reach::Refused);
    w.set_reach(B, Reach::Hanging);
    w.start(1, "a");
    w.run_until(|w| w.server_calls() == 1);
    let info = w.core.info();
    assert_eq!(info.state, LinkState::Connected);
    assert_eq!(info.endpoint.as_deref(), Some(C));
    assert_eq!(info.since, w.at(3000), "after B's connect timeout");
    let failures: Vec<(&str, &str)> =
        info.connect_failures.iter().map(|f| (&*f.endpoint, &*f.error)).collect();
    assert_eq!(
        failures,
        [
            (A, "connect to 127.0.0.1:2379: Connection refused"),
            (B, "connect to 127.0.0.1:22379 timed out after 3s"),
        ]
    );
    assert_eq!(info.connect_failures[0].at, w.t0);
    assert_eq!(info.connect_failures[1].at, w.at(3000));
    w.answer();
    assert!(w.collect()[0].1.is_ok());
    assert_eq!(w.core.info().connect_failures.len(), 2, "kept after a success");
}

#[test]
fn only_the_latest_connect_failures_are_kept_newest_last() {
    let mut w = World::new(&[A]);
    w.set_reach(A, Reach::Refused);
    let rounds = CONNECT_FAILURES_KEPT as u64 + 3;
    for round in 0..rounds {
        w.advance_to(round * 100);
        w.start(1, "a");
        w.run_until(|w| !w.results().is_empty());
        assert!(w.collect()[0].1.is_err(), "every endpoint refused");
    }
    let failures = w.core.info().connect_failures;
    assert_eq!(failures.len(), CONNECT_FAILURES_KEPT);
    let at: Vec<_> = failures.iter().map(|f| f.at).collect();
    let latest: Vec<_> = (3..rounds).map(|round| w.at(round * 100)).collect();
    assert_eq!(at, latest);
    assert_eq!(w.core.info().state, LinkState::Idle);
}

#[test]
fn watches_keepalives_observers_and_pending_calls_are_counted_until_they_end() {
    let mut w = World::new(&[A]);
    let (ws, ks, os): (WSeen, KaSeen, ObsSeen) = Default::default();
    let watch = w.watch("k", true, &ws);
    w.watch("j", true, &ws);
    let keepalive = w.keepalive(7, true, &ks);
    let request = codec::encode(&LeaderRequest { name: "e".into() });
    let observer = w.observe(request, true, &os);
    w.start(1, "a");
    let counts = |w: &World| {
        let i = w.core.info();
        (i.watches, i.keepalives, i.observers, i.pending_calls)
    };
    assert_eq!(counts(&w), (2, 1, 1, 1), "counted from the start, before any link");
    w.run_until(|w| w.server_calls() == 4);
    assert_eq!(w.core.info().state, LinkState::Connected);
    assert_eq!(counts(&w), (2, 1, 1, 1));
    for key in [watch, keepalive, observer] {
        drop(w.core.cancel_stream(key));
    }
    assert_eq!(counts(&w), (1, 0, 0, 1));
    let mut calls = w.take_calls(); // the streams' calls are kept: dropped, they would end
    for call in calls.iter_mut().filter(|c| c.path == super::RANGE) {
        call.message(response(1));
        call.trailers(0, "");
    }
    w.pump();
    assert_eq!(w.collect().len(), 1);
    assert_eq!(counts(&w), (1, 0, 0, 0));
}

#[test]
fn the_auth_state_names_the_user_and_never_holds_the_password_or_the_token() {
    let none = World::with(CoreConfig { token: None, ..config(&[A]) });
    assert_eq!(none.core.info().auth, AuthState::None);
    let seeded = World::new(&[A]); // the test configuration seeds token "tok"
    assert_eq!(seeded.core.info().auth, AuthState::Authenticated { user: None });

    let cfg = CoreConfig {
        token: None,
        credentials: Some(("root".into(), "s3cret".into())),
        ..config(&[A])
    };
    let mut w = World::with(cfg);
    let user = || "root".to_string();
    assert_eq!(w.core.info().auth, AuthState::Unauthenticated { user: user() });
    w.start(1, "a");
    w.run_until(|w| w.server_calls() == 1);
    assert_eq!(w.core.info().auth, AuthState::Authenticating { user: user() });
    let mut auth = w.take_calls();
    assert_eq!(auth[0].path, AUTHENTICATE);
    auth[0].message(token("T1"));
    auth[0].trailers(0, "");
    w.run_until(|w| w.server_calls() == 1);
    let info = w.core.info();
    assert_eq!(info.auth, AuthState::Authenticated { user: Some(user()) });
    let shown = format!("{info:?}");
    assert!(!shown.contains("s3cret") && !shown.contains("T1"), "{shown}");
    w.answer();
    w.collect();

    // A new link authenticates again; a wrong password is reported, never the password.
    w.core.handle_link_error("read: connection reset by peer");
    w.start(2, "b");
    w.run_until(|w| w.server_calls() == 1);
    assert_eq!(w.core.info().auth, AuthState::Authenticating { user: user() });
    let mut auth = w.take_calls();
    auth[0].trailers_only(3, "etcdserver: authentication failed, invalid user ID or password");
    w.run_until(|w| !w.results().is_empty());
    w.collect();
    let message = "authentication failed: etcdserver: authentication failed, invalid user ID \
                   or password"
        .to_string();
    assert_eq!(w.core.info().auth, AuthState::Failed { user: user(), message });
    assert!(!format!("{:?}", w.core.info()).contains("s3cret"));
}
