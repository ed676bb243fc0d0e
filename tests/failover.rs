//! Failover on a 3-member cluster: the member a watching client uses is killed (-9) while
//! another client writes through the other members; the watch moves to the next endpoint and
//! delivers every event exactly once, in order.

mod support;

use evetcd::{Client, Config};
use support::failover::{victim_first, watch_through_a_fault};
use support::Cluster;

#[test]
fn a_watch_survives_a_kill_of_its_member_and_delivers_every_event_once() {
    let mut cluster = Cluster::start(3);
    // The watching client starts on a follower; the writer uses the two others.
    let (victim, watch_endpoints, others) = victim_first(&cluster);
    let c = Client::new(Config::new().endpoints(watch_endpoints)).unwrap();
    let created =
        watch_through_a_fault(&c, "failover", others, || cluster.members[victim].kill(), || {});
    assert!(created >= 2, "the watch was re-created on another member after the kill");
}
