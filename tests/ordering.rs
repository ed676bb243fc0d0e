//! The revision-ordering guard (`Config::ordering_guard`): a read answered by a member behind
//! a revision the client has already seen is never delivered. A real etcd gives the client
//! its revisions; a fake member (tests/support/hostile_server.rs) plays the lagging one,
//! answering a Range at revision 1 — a member held back from replication on demand is what
//! etcd will not do for a test (the test proxy carries client traffic only).

mod support;

#[path = "support/hostile_server.rs"]
#[allow(dead_code)] // the other modes serve tests/hostile.rs
mod hostile_server;

use evetcd::{Client, Code, Config, GetOptions, PutOptions};
use hostile_server::{Hostile, HostileServer};
use prost::Message;
use std::net::SocketAddr;
use std::time::Duration;
use support::client::{block, drive_until, ok};
use support::proxy::{Mode, Proxy};
use support::Etcd;

/// A Range response at revision 1 holding `key` = "stale".
fn stale_answer(key: &str) -> Vec<u8> {
    let header = evetcd::ResponseHeader { revision: 1, ..Default::default() };
    let kv = evetcd::KeyValue {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        value: "stale".into(),
        mod_revision: 1,
        ..Default::default()
    };
    evetcd::RangeResponse { header: Some(header), kvs: vec![kv], count: 1, ..Default::default() }
        .encode_to_vec()
}

/// [proxy to etcd, the lagging member, etcd]: a put through the proxy, then the proxy
/// refuses and its connection is reset, so the next get goes to the lagging member first.
/// Returns the get's result.
fn get_after_a_failover_to_a_lagging_member(
    cfg: impl FnOnce(Config) -> Config,
) -> (Result<evetcd::RangeResponse, evetcd::EtcdError>, i64, usize) {
    let etcd = Etcd::start();
    let addr: SocketAddr = etcd.endpoint().parse().unwrap();
    let proxy = Proxy::start(addr);
    let key = support::unique_prefix("ordering");
    let lagging = HostileServer::start(Hostile::Answer { message: stale_answer(&key) });
    let config = Config::new()
        .endpoints([proxy.endpoint(), lagging.endpoint(), etcd.endpoint()])
        .timeout(Duration::from_secs(10));
    let c = Client::new(cfg(config)).unwrap();
    let put = ok(&c, |cb| c.put(key.clone(), "fresh", PutOptions::new(), cb));
    let seen = put.header.unwrap().revision;
    assert!(seen > 1);
    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    drive_until(&[&c], Duration::from_secs(5), || proxy.open() == 0);
    let got = block(&c, |cb| c.get(key.clone(), GetOptions::new().serializable(true), cb));
    (got, seen, lagging.seen().answered.len())
}

#[test]
fn a_read_from_a_lagging_member_is_retried_elsewhere_and_never_goes_back_in_time() {
    let (got, seen, asked) = get_after_a_failover_to_a_lagging_member(|c| c);
    assert_eq!(asked, 1, "the lagging member was asked");
    let got = got.expect("answered by an up-to-date member");
    assert!(got.header.unwrap().revision >= seen);
    assert_eq!(&got.kvs[0].value[..], b"fresh");
}

#[test]
fn with_retries_off_the_stale_read_is_an_error_and_with_the_guard_off_it_is_delivered() {
    let (got, _, asked) = get_after_a_failover_to_a_lagging_member(|c| c.retry(0, Duration::ZERO));
    assert_eq!(asked, 1);
    let e = got.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("stale read"), "{e}");
    let (got, _, _) = get_after_a_failover_to_a_lagging_member(|c| c.ordering_guard(false));
    let got = got.expect("delivered as the member answered");
    assert_eq!((got.header.unwrap().revision, &got.kvs[0].value[..]), (1, &b"stale"[..]));
}
