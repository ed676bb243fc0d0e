//! Maintenance on a chosen member (`Client::member`) against a real 3-member cluster: each
//! call reaches the member named, over a second link that closes once its work is done,
//! driven by the client's own loop (its fd wakes for the view's answers); the main link is
//! left alone; failures, `close()`, authentication and TLS carry over.

mod support;

use evetcd::pb::etcdserverpb::SnapshotResponse;
use evetcd::{AlarmAction, AlarmType, Client, Code, Config, EtcdError, GetOptions, PutOptions};
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{block, client, connections_to, ok};
use support::{Cluster, Etcd, SilentListener};

/// The member id a status answered from `view` names as its own.
fn id_of(view: &Client) -> u64 {
    ok(view, |cb| view.status(cb)).header.expect("header").member_id
}

/// Connections this process holds to each member, in member order.
fn links(cluster: &Cluster) -> Vec<usize> {
    cluster.members.iter().map(|m| connections_to(m.client_port())).collect()
}

#[test]
fn maintenance_reaches_the_chosen_member_and_its_link_closes_after() {
    let cluster = Cluster::start(3);
    let eps = cluster.endpoints();
    let c = client(&eps[0]);
    let p = support::unique_prefix("member");
    let rev =
        ok(&c, |cb| c.put(format!("{p}k"), "v", PutOptions::new(), cb)).header.unwrap().revision;
    let own = ok(&c, |cb| c.status(cb)).header.unwrap().member_id;
    assert_eq!(links(&cluster), [1, 0, 0], "the client's own link");

    // Status: each member answers for itself; the client's link stays where it was.
    let views: Vec<Client> = eps.iter().map(|e| c.member(e).expect("a valid endpoint")).collect();
    let ids: Vec<u64> = views.iter().map(id_of).collect();
    assert_eq!(ids[0], own);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three members answered: {ids:x?}");
    assert_eq!(links(&cluster), [1, 0, 0], "every view's link closed once its call was done");
    assert!(c.is_idle());

    // hash_kv up to one revision agrees across members (each read through a linearizable
    // get first, which makes the member catch up).
    let hashes: Vec<u32> = views
        .iter()
        .map(|v| {
            ok(v, |cb| v.get(format!("{p}k"), GetOptions::new(), cb));
            ok(v, |cb| v.hash_kv(rev, cb)).hash
        })
        .collect();
    assert!(hashes.iter().all(|&h| h == hashes[0] && h != 0), "{hashes:?}");

    // Defragment and alarms on one member.
    ok(&views[2], |cb| views[2].defragment(cb));
    let alarms = ok(&views[1], |cb| views[1].alarm(AlarmAction::Get, 0, AlarmType::None, cb));
    assert!(alarms.alarms.is_empty(), "{:?}", alarms.alarms);
    assert_eq!(links(&cluster), [1, 0, 0]);

    // A snapshot streamed from member 2: its link lives as long as the stream.
    let chunks: Rc<RefCell<Vec<SnapshotResponse>>> = Rc::default();
    let failed: Rc<RefCell<Option<EtcdError>>> = Rc::default();
    let (ch, f) = (chunks.clone(), failed.clone());
    let pending = views[2].snapshot(move |r| match r {
        Ok(chunk) => ch.borrow_mut().push(chunk),
        Err(e) => *f.borrow_mut() = Some(e),
    });
    c.run();
    // Cancelling what already finished leaves nothing for the loop to wait on.
    pending.cancel();
    assert_eq!(c.next_timeout(), Some(Duration::ZERO), "a turn to tidy up, not a sleep");
    c.run();
    assert!(c.is_idle());
    assert!(failed.borrow().is_none(), "{:?}", failed.borrow());
    let chunks = chunks.borrow();
    assert_eq!(chunks.last().map(|c| c.remaining_bytes), Some(0), "the last chunk came");
    let size: usize = chunks.iter().map(|c| c.blob.len()).sum();
    assert!(size > 32, "a database and its checksum: {size} bytes");
    assert_eq!(links(&cluster), [1, 0, 0]);

    // move_leader: a follower refuses it; the leader hands over.
    let leader = ok(&c, |cb| c.status(cb)).leader;
    let li = ids.iter().position(|&id| id == leader).expect("the leader is a member");
    let (fi, other) = ((li + 1) % 3, (li + 2) % 3);
    let err = block(&c, |cb| views[fi].move_leader(ids[other], cb)).unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "etcdserver: not leader"));
    ok(&c, |cb| views[li].move_leader(ids[fi], cb));
    assert_eq!(ok(&views[fi], |cb| views[fi].status(cb)).leader, ids[fi]);
    assert_eq!(links(&cluster), [1, 0, 0]);
}

/// The client's fd alone wakes a foreign loop for a member view's answer: the view's epoll
/// fd is nested in the client's.
#[test]
fn a_foreign_loop_on_the_clients_fd_drives_a_member_view() {
    let cluster = Cluster::start(3);
    let eps = cluster.endpoints();
    let c = client(&eps[0]);
    ok(&c, |cb| c.status(cb)); // the main link is up and idle
    let view = c.member(&eps[1]).unwrap();
    let done: Rc<Cell<Option<u64>>> = Rc::new(Cell::new(None));
    let d = done.clone();
    view.status(move |r| d.set(Some(r.expect("status").header.unwrap().member_id)));
    let start = Instant::now();
    let mut longest_sleep = Duration::ZERO;
    while done.get().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "no answer");
        // Sleep as long as the client allows (its next timer is the call's 10 s deadline).
        let wait = c.next_timeout().unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5));
        let mut pfd = libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let slept = Instant::now();
        unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
        longest_sleep = longest_sleep.max(slept.elapsed());
        c.process();
    }
    assert_ne!(done.get(), Some(0));
    assert!(longest_sleep < Duration::from_secs(2), "the fd never woke: slept {longest_sleep:?}");
    assert_eq!(view.as_raw_fd(), c.as_raw_fd(), "a view's fd is its client's");
    assert!(c.is_idle() && view.is_idle());
}

#[test]
fn failures_and_close_reach_the_views_callbacks_once() {
    let etcd = Etcd::start();
    let config = Config::new()
        .endpoints([etcd.endpoint()])
        .timeout(Duration::from_secs(5))
        .retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();

    // A bad endpoint is refused at once.
    let err = c.member("http://").unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "member"), "{err}");

    // A member that refuses connections: UNAVAILABLE, and the client carries on.
    let dead = c.member(&support::refused_endpoint()).unwrap();
    let err = block(&c, |cb| dead.status(cb)).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    ok(&c, |cb| c.put("member-after", "v", PutOptions::new(), cb));

    // A member that never answers: the call waits; close() cancels it once.
    let silent = SilentListener::new();
    let hung = c.member(&silent.endpoint()).unwrap();
    let got: Rc<RefCell<Vec<Code>>> = Rc::default();
    let g = got.clone();
    hung.status(move |r| g.borrow_mut().push(r.unwrap_err().code()));
    c.process();
    assert!(!c.is_idle(), "the view's call keeps the client busy");
    hung.close(); // a view's close is its client's
    assert_eq!(*got.borrow(), [Code::Cancelled]);
    c.run();
    assert_eq!(*got.borrow(), [Code::Cancelled], "once");
    assert!(c.is_idle());
    // Both stay usable.
    ok(&c, |cb| c.get("member-after", GetOptions::new(), cb));
    let view = c.member(&etcd.endpoint()).unwrap();
    assert_ne!(id_of(&view), 0);
}

#[test]
fn a_view_carries_the_clients_authentication() {
    let etcd = Etcd::start();
    let admin = client(&etcd.endpoint());
    ok(&admin, |cb| admin.user_add("root", "pw", cb));
    ok(&admin, |cb| admin.user_grant_role("root", "root", cb));
    ok(&admin, |cb| admin.auth_enable(cb));

    // Authenticated by hand: the view starts from the client's token and credentials.
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.authenticate("root", "pw", cb));
    ok(&c, |cb| c.put("secret", "v", PutOptions::new(), cb));
    let view = c.member(&etcd.endpoint()).unwrap();
    let got = ok(&view, |cb| view.get("secret", GetOptions::new(), cb));
    assert_eq!(got.kvs[0].value.as_ref(), b"v");

    // A client without a token: the view's read is refused as the client's would be.
    let anonymous = client(&etcd.endpoint());
    let view = anonymous.member(&etcd.endpoint()).unwrap();
    let err = block(&anonymous, |cb| view.get("secret", GetOptions::new(), cb)).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}"); // "user name is empty"
}

#[cfg(feature = "tls")]
#[test]
fn views_and_new_endpoints_reach_tls_members_checking_their_certificates() {
    let files = support::certs::TlsFiles::new();
    let cluster = Cluster::start_tls(3, &files, false, &[]);
    let eps = cluster.endpoints();
    let tls = evetcd::Tls::new().ca_file(&files.ca);
    // The client knows member 0 only; the views go to the others by their https URLs.
    let config =
        Config::new().endpoints([eps[0].clone()]).tls(tls).timeout(Duration::from_secs(10));
    let c = Client::new(config).unwrap();
    let ids: Vec<u64> = eps.iter().map(|e| id_of(&c.member(e).unwrap())).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:x?}");
    // An endpoint the configuration did not name is checked against its own host too
    // (auto-sync and set_endpoints bring such endpoints).
    c.set_endpoints([&eps[2]]).unwrap();
    c.close(); // the next call connects to the new list
    assert_eq!(id_of(&c), ids[2]);
}
