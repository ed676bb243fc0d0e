//! Endpoints at run time: `Client::set_endpoints` and `Config::auto_sync_interval`, against
//! real etcd.

mod support;

use evetcd::{Client, Code, Config, GetOptions, PutOptions};
use std::net::SocketAddr;
use std::time::Duration;
use support::client::{block, drive_until, ok};
use support::metrics::metric;
use support::proxy::Proxy;
use support::{Cluster, Etcd};

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
