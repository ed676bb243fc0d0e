//! Failover on a 3-member cluster: the member a watching client uses is killed (-9) while
//! another client writes through the other members; the watch moves to the next endpoint and
//! delivers every event exactly once, in order.

mod support;

use evetcd::{Client, Config};
use support::failover::watch_through_a_fault;
use support::Cluster;

#[test]
fn a_watch_survives_a_kill_of_its_member_and_delivers_every_event_once() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader_index().expect("a leader");
    // The watching client starts on a follower (killing the leader would stall the writes
    // for an election, which is beside the point); the writer uses the two others.
    let victim = (leader + 1) % 3;
    let others: Vec<String> =
        (0..3).filter(|&i| i != victim).map(|i| cluster.members[i].endpoint()).collect();
    let mut watch_endpoints = vec![cluster.members[victim].endpoint()];
    watch_endpoints.extend(others.iter().cloned());
    let c = Client::new(Config::new().endpoints(watch_endpoints)).unwrap();
    let created =
        watch_through_a_fault(&c, "failover", others, || cluster.members[victim].kill(), || {});
    assert!(created >= 2, "the watch was re-created on another member after the kill");
}
