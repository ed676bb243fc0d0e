//! Endpoints at run time: `Client::set_endpoints` and `Config::auto_sync_interval`, against
//! real etcd.

mod support;

use evetcd::{Client, Code, Config, GetOptions, PutOptions};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use support::client::{block, drive_until, ok};
use support::metrics::metric;
use support::proxy::Proxy;
use support::{Cluster, Etcd};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const MEMBER_LISTS: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="MemberList",grpc_service="etcdserverpb.Cluster",grpc_type="unary"}"#;

fn addr(endpoint: &str) -> SocketAddr {
    endpoint.parse().unwrap_or_else(|e| panic!("{endpoint}: {e}"))
}

#[test]
fn set_endpoints_moves_the_client_to_the_new_list() {
    let etcd = Etcd::start();
    let (first, second) =
        (Proxy::start(addr(&etcd.endpoint())), Proxy::start(addr(&etcd.endpoint())));
    let c = support::client::client(&first.endpoint());
    ok(&c, |cb| c.put("moved", "1", PutOptions::new(), cb));
    assert_eq!((first.accepted(), second.accepted()), (1, 0));

    c.set_endpoints([second.endpoint()]).unwrap();
    ok(&c, |cb| c.put("moved", "2", PutOptions::new(), cb));
    assert_eq!(second.accepted(), 1, "the next connection goes to the new list");
    drive_until(&[&c], Duration::from_secs(5), || first.open() == 0);
    assert_eq!(first.accepted(), 1, "the old endpoint is left, not reconnected");

    // The link in use stays when its endpoint is still listed.
    c.set_endpoints([first.endpoint(), second.endpoint()]).unwrap();
    ok(&c, |cb| c.put("moved", "3", PutOptions::new(), cb));
    assert_eq!((first.accepted(), second.accepted()), (1, 1));

    let bad = c.set_endpoints(Vec::<String>::new()).unwrap_err();
    assert_eq!((bad.code(), bad.operation()), (Code::InvalidArgument, "set_endpoints"));
    let bad = c.set_endpoints(["host:port/path"]).unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    ok(&c, |cb| c.get("moved", GetOptions::new(), cb));
    assert_eq!(second.accepted(), 1, "a refused list changed nothing");
}

#[test]
fn auto_sync_learns_the_members_and_outlives_the_endpoint_it_started_with() {
    let mut cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    // The client starts with a follower, the one killed below: the cluster keeps its leader,
    // so writes go on (a write caught in a leader change fails, and writes are not retried).
    let follower = (0..endpoints.len())
        .find(|&i| {
            let c = support::client::client(&endpoints[i]);
            let status = ok(&c, |cb| c.status(cb));
            status.header.map(|h| h.member_id) != Some(status.leader)
        })
        .expect("a follower");
    let config = |sync: bool| {
        let c = Config::new().endpoints([&endpoints[follower]]).timeout(Duration::from_secs(10));
        let c = if sync { c.auto_sync_interval(Duration::from_millis(200)) } else { c };
        Client::new(c).unwrap()
    };
    let (synced, fixed) = (config(true), config(false));
    ok(&synced, |cb| synced.put("sync", "1", PutOptions::new(), cb));
    ok(&fixed, |cb| fixed.put("sync", "1", PutOptions::new(), cb));
    // Wait until the member list was fetched (etcd counts the answers).
    let lists = || endpoints.iter().map(|e| metric(e, MEMBER_LISTS)).sum::<f64>();
    drive_until(&[&synced], Duration::from_secs(10), || lists() >= 2.0);

    cluster.members[follower].kill();
    ok(&synced, |cb| synced.put("sync", "2", PutOptions::new(), cb));
    let e = block(&fixed, |cb| fixed.put("sync", "2", PutOptions::new(), cb)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "without auto-sync the only endpoint is gone: {e}");
}

/// Every "endpoints changed" event (target `evetcd`) in the process, with the thread that
/// told it and its fields as text (`endpoints=["127.0.0.1:PORT", ...]`). Process-wide: a
/// scoped subscriber (`with_default`) can miss the event, as tracing decides whether a call
/// site is of interest once, from the thread that reaches it first (another test's thread).
static ENDPOINT_CHANGES: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

struct EndpointChanges;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        write!(self.0, "{}={value:?} ", field.name()).unwrap();
    }
}

impl Subscriber for EndpointChanges {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "evetcd"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        if fields.0.contains("message=endpoints changed ") {
            let changes = &mut ENDPOINT_CHANGES.lock().unwrap_or_else(|e| e.into_inner());
            changes.push((std::thread::current().id(), fields.0));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Starts recording [`ENDPOINT_CHANGES`] (once per process).
fn record_endpoint_changes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(EndpointChanges).expect("no other subscriber")
    });
}

/// Whether a client driven from this thread has switched to a list that names `endpoint`.
fn switched_to(endpoint: &str) -> bool {
    let me = std::thread::current().id();
    let changes = ENDPOINT_CHANGES.lock().unwrap_or_else(|e| e.into_inner());
    changes.iter().any(|(t, l)| *t == me && l.contains(&format!("{endpoint:?}")))
}

#[test]
fn auto_sync_moves_to_a_member_added_after_start_once_the_original_ones_are_gone() {
    // The strict reconfiguration check refuses to remove a member until every peer has been
    // connected for 5 s; the test removes members of a cluster that just started.
    let mut cluster = Cluster::start_with(3, &["--strict-reconfig-check=false"]);
    let first = cluster.endpoints()[0].clone();
    let config = |sync: bool| {
        let c = Config::new()
            .endpoints([&first])
            .timeout(Duration::from_secs(5))
            .retry(10, Duration::from_millis(50));
        let c = if sync { c.auto_sync_interval(Duration::from_millis(200)) } else { c };
        Client::new(c).unwrap()
    };
    record_endpoint_changes();
    let (synced, fixed) = (config(true), config(false));
    ok(&synced, |cb| synced.put("joined", "1", PutOptions::new(), cb));
    ok(&fixed, |cb| fixed.put("joined", "1", PutOptions::new(), cb));
    // The syncs run from the start: the first names the three first members.
    let second = cluster.endpoints()[1].clone();
    drive_until(&[&synced], Duration::from_secs(10), || switched_to(&second));

    // A fourth member joins the running cluster: MemberAdd, then its process.
    let admin = Client::new(Config::new().endpoints(cluster.endpoints())).unwrap();
    let mut ids: Vec<(String, u64)> = Vec::new();
    let new = cluster.add_member(|name, peer_url| {
        let added = ok(&admin, |cb| admin.member_add([peer_url], false, cb));
        let id = added.member.expect("the added member").id;
        let named = |m: &evetcd::pb::etcdserverpb::Member| match m.id == id {
            true => name.to_string(),
            false => m.name.clone(),
        };
        ids = added.members.iter().map(|m| (named(m), m.id)).collect();
        let members: Vec<(String, Vec<String>)> =
            added.members.iter().map(|m| (named(m), m.peer_ur_ls.clone())).collect();
        Cluster::initial_cluster(&members)
    });
    // Member ids in `cluster.members` order.
    let ids: Vec<u64> = cluster
        .members
        .iter()
        .map(|m| ids.iter().find(|(n, _)| n == m.name()).expect("listed by MemberAdd").1)
        .collect();
    let (added, added_id) = (cluster.members[new].endpoint(), ids[new]);
    assert!(!switched_to(&added));
    // The next syncs name it (its client URL is listed once it serves clients).
    drive_until(&[&synced], Duration::from_secs(10), || switched_to(&added));

    // Only the new member stays. It leads first, so no removal waits for an election.
    let leader = cluster.leader_index().expect("a leader");
    if leader != new {
        let c = support::client::client(&cluster.members[leader].endpoint());
        ok(&c, |cb| c.move_leader(added_id, cb));
    }
    let via_added = support::client::client(&added);
    for (i, &id) in ids.iter().enumerate().take(3) {
        ok(&via_added, |cb| via_added.member_remove(id, cb));
        // Removed, it has nothing left to hand over: no graceful stop needed.
        if cluster.members[i].is_running() {
            cluster.members[i].kill();
        }
    }
    let list = ok(&via_added, |cb| via_added.member_list(true, cb));
    let left: Vec<u64> = list.members.iter().map(|m| m.id).collect();
    assert_eq!(left, [added_id], "{:?}", list.members);

    // Still configured with the first member alone, the synced client reads and writes
    // through the added one.
    let started = Instant::now();
    let got = ok(&synced, |cb| synced.get("joined", GetOptions::new(), cb));
    assert_eq!(got.kvs[0].value, &b"1"[..]);
    assert_eq!(got.header.unwrap().member_id, added_id, "served by the added member");
    let put = ok(&synced, |cb| synced.put("joined", "2", PutOptions::new(), cb));
    assert_eq!(put.header.unwrap().member_id, added_id);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    let e = block(&fixed, |cb| fixed.get("joined", GetOptions::new(), cb)).unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
        "without auto-sync no endpoint it knows is left: {e}"
    );
}
