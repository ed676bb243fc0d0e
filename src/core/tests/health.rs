//! The periodic health check: reported on change, an unhealthy member left, and nothing
//! after `close` until the next operation.

use super::status;
use super::world::{config, endpoint, World};
use super::{RANGE, STATUS};
use crate::core::link::LinkCommand;
use crate::core::CoreConfig;
use std::time::Duration;

/// A world whose core checks health every second.
fn checked_every_second(endpoints: &[&str]) -> World {
    World::with(CoreConfig { health_interval: Some(Duration::from_secs(1)), ..config(endpoints) })
}

impl World {
    /// Answers the one health check the server holds: a Status naming `leader` (0: none).
    fn answer_health_check(&mut self, leader: u64) {
        let mut calls = self.take_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].path, STATUS);
        calls[0].message(status(leader));
        calls[0].trailers(0, "");
        self.pump();
        self.collect();
    }
}

#[test]
fn health_is_checked_every_interval_reported_on_change_and_an_unhealthy_member_is_left() {
    let mut w = checked_every_second(&["127.0.0.1:2379", "127.0.0.1:22379"]);
    assert_eq!(w.core.poll_timeout(), Some(w.at(1000)));
    assert!(w.core.is_idle(), "health checks are not the user's work");
    w.advance_to(1000);
    w.connect();
    w.pump();
    w.answer_health_check(42);
    assert!(w.health.is_empty(), "healthy, as assumed: no change to report");
    // The next check finds no leader: one report, and the client moves on.
    w.advance_to(2000);
    w.pump();
    w.answer_health_check(0);
    assert_eq!(w.health, [(false, "127.0.0.1:2379".to_string())]);
    w.advance_to(3000);
    w.reconnect("127.0.0.1:22379");
    w.answer_health_check(42);
    assert_eq!(w.health[1], (true, "127.0.0.1:22379".to_string()));
    assert_eq!(w.health.len(), 2);
}

#[test]
fn a_health_check_runs_by_itself_every_interval_in_a_world() {
    let mut w = checked_every_second(&["127.0.0.1:2379"]);
    for second in 1..=3 {
        w.run_until(|w| w.server_calls() == 1);
        assert_eq!(w.elapsed(), Duration::from_secs(second), "check {second}");
        w.answer_health_check(42);
    }
    assert!(w.health.is_empty());
    assert_eq!(w.connects().len(), 1, "one link for every check");
}

#[test]
fn a_health_check_with_no_answer_within_the_interval_is_unhealthy() {
    let mut w = checked_every_second(&["127.0.0.1:2379"]);
    w.advance_to(1000);
    w.connect();
    w.pump();
    assert_eq!(w.take_calls().len(), 1); // never answered
    w.advance_to(1999);
    w.collect();
    assert!(w.health.is_empty());
    w.advance_to(2000);
    w.collect();
    assert_eq!(w.health, [(false, "127.0.0.1:2379".to_string())]);
}

#[test]
fn a_second_unhealthy_endpoint_in_a_row_is_left_too() {
    let mut w = checked_every_second(&["127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379"]);
    w.advance_to(1000);
    w.connect();
    w.pump();
    w.answer_health_check(0); // A: no leader
    assert_eq!(w.health, [(false, "127.0.0.1:2379".to_string())]);
    w.advance_to(2000);
    w.reconnect("127.0.0.1:22379");
    w.answer_health_check(0); // B: no leader either
    w.advance_to(3000);
    let next = w.next_connect();
    if next.is_none() {
        w.pump();
        let on_b: Vec<String> = w.take_calls().iter().map(|c| c.path.clone()).collect();
        panic!(
            "B is unhealthy too, yet the client stays on it; the next check went to B: {on_b:?}"
        );
    }
    assert_eq!(next.as_deref(), Some("127.0.0.1:32379"));
}

#[test]
fn after_close_health_checks_wait_for_the_next_operation() {
    let mut w = checked_every_second(&["127.0.0.1:2379"]);
    w.start(1, "a");
    w.connect();
    w.pump();
    let closed = w.core.close("client closed");
    assert_eq!(closed.len(), 1);
    w.run_all(closed);
    assert!(w.core.is_idle());
    assert_eq!(w.poll_link(), Some(LinkCommand::Close), "the connection is dropped");
    // Nothing started since close(): no wake-up, no connection.
    assert_eq!(w.core.poll_timeout(), None);
    w.advance_to(1000);
    assert!(w.poll_link().is_none(), "close() must not reconnect for health checks");
    // The next operation brings the checks back, one interval after it.
    w.advance_to(1500);
    w.take_calls();
    w.start(2, "b");
    w.run_until(|w| w.arrivals.iter().any(|a| a.path == STATUS));
    let arrivals: Vec<(u128, &str)> =
        w.arrivals.iter().map(|a| (a.at.as_millis(), a.path.as_str())).collect();
    assert_eq!(arrivals, [(0, RANGE), (1500, RANGE), (2500, STATUS)]);
}

#[test]
fn a_health_check_answered_after_its_endpoint_left_the_list_is_told_of_that_endpoint() {
    // The check goes to the third endpoint; the list then shrinks to the first alone
    // (set_endpoints or auto-sync): its answer must neither index the new list with the old
    // position nor make the client leave a member it did not check.
    let mut w = checked_every_second(&["127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379"]);
    w.advance_to(1000);
    w.connect();
    w.pump();
    w.answer_health_check(0); // A unhealthy: the client moves on
    w.advance_to(2000);
    w.reconnect("127.0.0.1:22379");
    w.answer_health_check(0); // B too
    w.advance_to(3000);
    w.reconnect("127.0.0.1:32379");
    let mut calls = w.take_calls();
    assert_eq!(calls.len(), 1, "the check on C, unanswered for now");
    w.core.set_endpoints(vec![endpoint("127.0.0.1:2379")]);
    calls[0].message(status(0));
    calls[0].trailers(0, "");
    w.pump();
    w.collect();
    // Still unhealthy as reported (verdicts are told on change): nothing new to tell, and
    // the next link goes to the one endpoint left.
    assert_eq!(w.health, [(false, "127.0.0.1:2379".to_string())]);
    w.advance_to(4000);
    assert_eq!(w.next_connect().as_deref(), Some("127.0.0.1:2379"));
}
