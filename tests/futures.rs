//! The futures adapter (feature `futures`) against a real etcd, driven by a hand-written
//! `block_on`: poll the future; until its waker fires, wait on the client's fd (at most
//! `next_timeout()`) and `process()`. A future that is never woken fails the test.
#![cfg(feature = "futures")]

mod support;

use evetcd::concurrency::{Session, SessionOptions};
use evetcd::future::AsyncClient;
use evetcd::{
    AlarmAction, AlarmType, CallOptions, Client, Code, CompactOptions, Compare, CompareOp,
    DeleteOptions, DowngradeAction, EtcdError, EventType, GetOptions, LeaseGrantOptions,
    PermissionType, PutOptions, StreamOptions, Txn, TxnOp, WatchOptions,
};
use futures_core::{FusedStream, Stream};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use support::client::{client, drive_all, drive_until};
use support::Etcd;

/// A waker that raises a flag (the test's one thread checks it between turns).
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
    }
}

/// Runs `future` to completion, driving `client` between polls; polls again only once the
/// future's waker fired. Panics after 20 s without a wake.
fn block_on<F: Future>(client: &Client, future: F) -> F::Output {
    let mut future = pin!(future);
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        drive_until(&[client], Duration::from_secs(20), || {
            flag.woken.swap(false, Ordering::SeqCst)
        });
    }
}

/// The next item of `stream`, driving `client` meanwhile.
fn next<S: Stream + Unpin>(client: &Client, stream: &mut S) -> Option<S::Item> {
    block_on(client, std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)))
}

/// Polls `future` once with a waker nobody hears.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// Drives `client` for `d`.
fn drive_for(client: &Client, d: Duration) {
    let end = Instant::now() + d;
    drive_until(&[client], d + Duration::from_secs(5), || Instant::now() >= end);
}

fn code<T: std::fmt::Debug>(r: Result<T, EtcdError>) -> Code {
    r.expect_err("an error").code()
}

#[test]
fn kv_txn_lease_cluster_maintenance_and_auth_calls_resolve() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let a = c.asynchronous();

    let put = block_on(&c, a.put("k", "v", PutOptions::new())).unwrap();
    let got = block_on(&c, a.get("k", GetOptions::new())).unwrap();
    assert_eq!(&got.kvs[0].value[..], b"v");
    // Started at once: two calls in flight before either is polled.
    let (first, second) = (a.put("k2", "x", PutOptions::new()), a.get("k", GetOptions::new()));
    assert_eq!(block_on(&c, second).unwrap().count, 1);
    assert!(block_on(&c, first).unwrap().header.is_some());

    let swap = |from: &'static str| {
        let write = TxnOp::put("k", "w", PutOptions::new());
        Txn::new().when([Compare::value("k", CompareOp::Equal, from)]).and_then([write])
    };
    assert!(block_on(&c, a.txn(swap("v"))).unwrap().succeeded);
    assert!(!block_on(&c, a.txn(swap("v"))).unwrap().succeeded);
    let revision = put.header.unwrap().revision;
    block_on(&c, a.compact(revision, CompactOptions::new())).unwrap();
    assert_eq!(block_on(&c, a.delete("k2", DeleteOptions::new())).unwrap().deleted, 1);

    let lease = block_on(&c, a.lease_grant(30, LeaseGrantOptions::new())).unwrap();
    let ttl = block_on(&c, a.lease_time_to_live(lease.id, true)).unwrap();
    assert!(ttl.ttl > 0 && ttl.granted_ttl == 30, "{ttl:?}");
    let leases = block_on(&c, a.lease_leases()).unwrap();
    assert!(leases.leases.iter().any(|l| l.id == lease.id));
    block_on(&c, a.lease_revoke(lease.id)).unwrap();
    assert_eq!(code(block_on(&c, a.lease_revoke(lease.id))), Code::NotFound);

    assert_eq!(block_on(&c, a.member_list(false)).unwrap().members.len(), 1);
    assert!(!block_on(&c, a.status()).unwrap().version.is_empty());
    assert!(!block_on(&c, a.auth_status()).unwrap().enabled);
    block_on(&c, a.hash_kv(0)).unwrap();
    block_on(&c, a.alarm(AlarmAction::Get, 0, AlarmType::None)).unwrap();
    block_on(&c, a.role_add("futures-role")).unwrap();
    assert!(block_on(&c, a.role_list()).unwrap().roles.contains(&"futures-role".to_string()));

    // Views keep what they are; their errors arrive as Err.
    let ns = a.namespaced("ns/");
    block_on(&c, ns.put("a", "1", PutOptions::new())).unwrap();
    assert_eq!(&block_on(&c, a.get("ns/a", GetOptions::new())).unwrap().kvs[0].value[..], b"1");
    assert_eq!(code(block_on(&c, ns.get("", GetOptions::new()))), Code::InvalidArgument);
    let timed = a.with(CallOptions::new().timeout(Duration::from_secs(5)));
    assert_eq!(block_on(&c, timed.get("ns/a", GetOptions::new())).unwrap().count, 1);
    assert_eq!(code(block_on(&c, a.lock("l", 0))), Code::InvalidArgument);
}

#[test]
fn watch_keepalive_paged_and_snapshot_streams() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let a = c.asynchronous();

    let mut watch = a.watch("w/", WatchOptions::new().prefix(true));
    assert!(next(&c, &mut watch).unwrap().unwrap().created);
    let writes = [a.put("w/1", "a", PutOptions::new()), a.put("w/2", "b", PutOptions::new())];
    let mut keys = Vec::new();
    while keys.len() < 2 {
        for ev in next(&c, &mut watch).unwrap().unwrap().events {
            assert_eq!(ev.r#type(), EventType::Put);
            keys.push(ev.kv.unwrap().key);
        }
    }
    keys.sort(); // two calls in flight at once: etcd applies them in either order
    assert_eq!(keys, ["w/1", "w/2"]);
    for w in writes {
        block_on(&c, w).unwrap();
    }

    let lease = block_on(&c, a.lease_grant(10, LeaseGrantOptions::new())).unwrap();
    let mut keepalive = a.lease_keepalive(lease.id);
    let renewed = next(&c, &mut keepalive).unwrap().unwrap();
    assert_eq!((renewed.id, renewed.ttl), (lease.id, 10));
    drop(keepalive);
    let mut gone = a.lease_keepalive_with(0x7777, StreamOptions::new());
    assert_eq!(code(next(&c, &mut gone).unwrap()), Code::NotFound);
    assert!(next(&c, &mut gone).is_none() && gone.is_terminated());

    let puts: Vec<_> =
        (0..25).map(|i| a.put(format!("p/{i:02}"), "x", PutOptions::new())).collect();
    for p in puts {
        block_on(&c, p).unwrap();
    }
    let mut pages = a.get_paged("p/", GetOptions::new().prefix(true), 10);
    let mut seen = Vec::new();
    while let Some(page) = next(&c, &mut pages) {
        let page = page.unwrap();
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        assert_eq!(page.more, seen.len() < 25, "only the last page has more == false");
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let mut refused = a.get_paged("p/", GetOptions::new().limit(3), 10);
    assert_eq!(code(next(&c, &mut refused).unwrap()), Code::InvalidArgument);
    assert!(next(&c, &mut refused).is_none());

    let mut snapshot = a.snapshot();
    let (mut bytes, mut last) = (0, None);
    while let Some(chunk) = next(&c, &mut snapshot) {
        let chunk = chunk.unwrap();
        bytes += chunk.blob.len();
        last = Some(chunk.remaining_bytes);
    }
    assert!(bytes > 32 && last == Some(0), "{bytes} bytes, last remaining {last:?}");

    drop(watch);
    drive_all(&[&c], Duration::from_secs(10)); // nothing left: watch and keepalive cancelled
}

#[test]
fn lock_election_and_session() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let a = c.asynchronous();
    let grant = || block_on(&c, a.lease_grant(30, LeaseGrantOptions::new())).unwrap().id;
    let (l1, l2) = (grant(), grant());

    let held = block_on(&c, a.lock("l", l1)).unwrap();
    let mut waiter = a.lock("l", l2);
    drive_for(&c, Duration::from_millis(300));
    assert!(poll_once(&mut waiter).is_pending(), "the lock is held");
    assert_eq!(c.info().pending_calls, 1);
    drop(waiter); // abandons the wait
    drive_for(&c, Duration::from_millis(100));
    assert_eq!(c.info().pending_calls, 0, "the dropped lock call was cancelled");
    block_on(&c, a.unlock(held.key)).unwrap();
    // etcd removes the abandoned waiter's key (its context ended): nobody holds the lock.
    let deadline = Instant::now() + Duration::from_secs(5);
    while block_on(&c, a.get("l", GetOptions::new().prefix(true))).unwrap().count > 0 {
        assert!(Instant::now() < deadline, "the abandoned waiter's key stayed");
        drive_for(&c, Duration::from_millis(50));
    }

    let mut observe = a.election_observe("e");
    let won = block_on(&c, a.election_campaign("e", l1, "one")).unwrap();
    let leader = won.leader.unwrap();
    assert_eq!(&next(&c, &mut observe).unwrap().unwrap().kv.unwrap().value[..], b"one");
    block_on(&c, a.election_proclaim(leader.clone(), "two")).unwrap();
    assert_eq!(&next(&c, &mut observe).unwrap().unwrap().kv.unwrap().value[..], b"two");
    let now = block_on(&c, a.election_leader("e")).unwrap();
    assert_eq!(&now.kv.unwrap().value[..], b"two");
    block_on(&c, a.election_resign(leader)).unwrap();
    drop(observe);

    let session = block_on(&c, Session::new_async(&c, SessionOptions::new())).unwrap();
    assert!(session.lease() > 0);
    block_on(&c, session.close_async()).unwrap();
    assert_eq!(block_on(&c, a.lease_time_to_live(session.lease(), false)).unwrap().ttl, -1);
    drive_all(&[&c], Duration::from_secs(10));
}

#[test]
fn dropped_futures_and_streams_and_streams_that_end() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let a = c.asynchronous();

    // A dropped get: its answer goes nowhere, and the client carries on and goes idle.
    drop(a.get("k", GetOptions::new()));
    block_on(&c, a.put("k", "v", PutOptions::new())).unwrap();
    drive_all(&[&c], Duration::from_secs(10));

    // A dropped watch stream cancels its watch: the client goes idle.
    let mut watch = a.watch("k", WatchOptions::new());
    assert!(next(&c, &mut watch).unwrap().unwrap().created);
    assert_eq!(c.info().watches, 1);
    drop(watch);
    drive_all(&[&c], Duration::from_secs(10));
    assert_eq!(c.info().watches, 0);

    // A watch from a compacted revision: one error carrying the compaction, then the end.
    let mut rev = 0;
    for v in ["1", "2", "3"] {
        rev = block_on(&c, a.put("k", v, PutOptions::new())).unwrap().header.unwrap().revision;
    }
    block_on(&c, a.compact(rev, CompactOptions::new())).unwrap();
    let mut old = a.watch("k", WatchOptions::new().start_revision(1));
    let mut ended = None;
    while let Some(item) = next(&c, &mut old) {
        if let Err(e) = item {
            ended = Some(e);
        }
    }
    let e = ended.expect("the watch ended with an error");
    assert_eq!(e.compact_revision(), Some(rev), "{e}");
    assert!(old.is_terminated());

    // close() ends a live watch stream with CANCELLED, and then the stream.
    let mut live = a.watch("k", WatchOptions::new());
    assert!(next(&c, &mut live).unwrap().unwrap().created);
    c.close();
    assert_eq!(code(next(&c, &mut live).unwrap()), Code::Cancelled);
    assert!(next(&c, &mut live).is_none());
}

#[test]
fn starting_an_async_call_wakes_a_loop_that_waits_on_the_fd() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let a = c.asynchronous();
    block_on(&c, a.put("k", "v", PutOptions::new())).unwrap();
    drive_all(&[&c], Duration::from_secs(10));
    // Idle: a loop reads "no timeout" and waits on the fd alone.
    assert_eq!(c.next_timeout(), None);
    let get = a.get("k", GetOptions::new());
    let mut fd = [libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let started = Instant::now();
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(fd.as_mut_ptr(), 1, 5_000) };
    assert!(n == 1 && started.elapsed() < Duration::from_secs(1), "the fd was not woken");
    assert_eq!(block_on(&c, get).unwrap().count, 1);
}

/// Every async form type-checks with the arguments of its callback form (never run: some
/// would change the cluster).
#[allow(dead_code)]
fn every_async_form_compiles(a: &AsyncClient, leader: evetcd::LeaderKey) {
    drop((a.get("k", GetOptions::new()), a.put("k", "v", PutOptions::new())));
    drop((a.delete("k", DeleteOptions::new()), a.compact(1, CompactOptions::new())));
    drop((a.txn(Txn::new()), a.get_paged("k", GetOptions::new(), 10)));
    drop((a.watch("k", WatchOptions::new()), a.request_progress()));
    drop((a.lease_grant(1, LeaseGrantOptions::new()), a.lease_revoke(1)));
    drop((a.lease_time_to_live(1, true), a.lease_leases(), a.lease_keepalive(1)));
    drop(a.lease_keepalive_with(1, StreamOptions::new()));
    drop((a.lock("l", 1), a.unlock("l/1"), a.election_campaign("e", 1, "v")));
    drop((a.election_proclaim(leader.clone(), "v"), a.election_leader("e")));
    drop((a.election_resign(leader), a.election_observe("e")));
    drop(a.election_observe_with("e", StreamOptions::new()));
    drop((a.member_list(true), a.member_add(["http://h:2380"], false), a.member_remove(1)));
    drop((a.member_update(1, vec![String::from("http://h:2380")]), a.member_promote(1)));
    drop((a.status(), a.alarm(AlarmAction::Get, 0, AlarmType::None), a.defragment()));
    drop((a.downgrade(DowngradeAction::Validate, "3.5"), a.hash(), a.hash_kv(0)));
    drop((a.snapshot(), a.move_leader(1)));
    drop((a.authenticate("u", "p"), a.auth_enable(), a.auth_disable(), a.auth_status()));
    drop((a.user_add("u", "p"), a.user_add_no_password("u"), a.user_delete("u")));
    drop((a.user_change_password("u", "p"), a.user_get("u"), a.user_list()));
    drop((a.user_grant_role("u", "r"), a.user_revoke_role("u", "r")));
    drop((a.role_add("r"), a.role_delete("r"), a.role_get("r"), a.role_list()));
    drop(a.role_grant_permission("r", PermissionType::Readwrite, "k", "l"));
    drop(a.role_revoke_permission("r", "k", "l"));
    let _: Result<AsyncClient, EtcdError> = a.member("127.0.0.1:2379");
    let _: &Client = a.client();
    drop(AsyncClient::from(a.client().clone()));
}
