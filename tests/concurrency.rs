//! The recipes of `evetcd::concurrency` against a real etcd: `Session` (granted or adopted,
//! its loss told once and why, orphan, close), `Mutex` (Go's keys, fair queue, try_lock,
//! cancel, fencing with `is_owner`, a session lost while waiting or holding, one key per
//! session and prefix) and `Election` (campaign, leader, proclaim, resign, cancel, observe).
//! Every step waits for a callback or for what the server shows, never for a sleep.

mod support;

use evetcd::concurrency::{Election, Error, Lost, Mutex, Session, SessionOptions};
use evetcd::{Client, Code, Config, GetOptions, PutOptions, RangeResponse, Txn, TxnOp};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use support::client::Got;
use support::client::{block, client, drive_until, ok};
use support::proxy::{Mode, Proxy};
use support::Etcd;

const LIMIT: Duration = Duration::from_secs(15);

/// Runs `clients` until `got` is set.
fn wait<T: 'static>(clients: &[&Client], got: &Got<T>) -> T {
    drive_until(clients, LIMIT, || got.is_set());
    got.take()
}

fn session(c: &Client, options: SessionOptions) -> Session {
    let got = Got::new();
    Session::new(c, options, got.cb());
    wait(&[c], &got).expect("session")
}

/// Keys under `prefix`, in create order.
fn keys(c: &Client, prefix: &str) -> Vec<String> {
    let options = GetOptions::new().prefix(true).sort_target(evetcd::SortTarget::Create);
    let got = ok(c, |cb| c.get(prefix.to_string(), options, cb));
    got.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

fn granted_ttl(c: &Client, lease: i64) -> i64 {
    ok(c, |cb| c.lease_time_to_live(lease, false, cb)).granted_ttl
}

#[test]
fn a_session_keeps_its_lease_reports_its_loss_once_and_ends_on_purpose() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());

    // Checks go through a client of their own: a live session keeps its client busy.
    let other = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new());
    assert_eq!(granted_ttl(&other, s.lease()), 60, "Go's default TTL");
    assert!(s.is_alive());

    // Revoked by someone else: lost once, as Revoked.
    let s = session(&c, SessionOptions::new().ttl(Duration::from_millis(4500)));
    assert_eq!((s.ttl(), granted_ttl(&other, s.lease())), (5, 5), "rounded up to whole seconds");
    let lost = Got::new();
    s.on_lost(lost.cb());
    ok(&other, |cb| other.lease_revoke(s.lease(), cb));
    assert_eq!(wait(&[&c], &lost), Lost::Revoked);
    assert_eq!(s.lost(), Some(Lost::Revoked));
    // Registered after the loss: told on the next turn, still once.
    let late = Got::new();
    s.on_lost(late.cb());
    assert!(!late.is_set(), "never from inside on_lost");
    assert_eq!(wait(&[&c], &late), Lost::Revoked);

    // Adopted: the lease of an earlier session, kept alive by a new one.
    let first = session(&c, SessionOptions::new().ttl(Duration::from_secs(30)));
    first.orphan();
    let adopted = session(&c, SessionOptions::new().lease(first.lease()));
    assert_eq!((adopted.lease(), adopted.ttl()), (first.lease(), 30));
    // An adopted lease that is gone fails the session.
    let gone = Got::new();
    Session::new(&c, SessionOptions::new().lease(0x7e57), gone.cb());
    let err = wait(&[&c], &gone).unwrap_err();
    assert_eq!(err, Error::SessionLost(Lost::Expired));

    // Closed: the lease is revoked, and nothing is reported as lost.
    let never = Got::<Lost>::new();
    adopted.on_lost(never.cb());
    let closed = Got::new();
    adopted.close(closed.cb());
    wait(&[&c], &closed).expect("close");
    assert_eq!(granted_ttl(&other, adopted.lease()), 0, "revoked");
    assert!(!adopted.is_alive() && !never.is_set());
    // Closing again is harmless.
    let again = Got::new();
    adopted.close(again.cb());
    wait(&[&c], &again).expect("a lease already gone counts as revoked");
}

/// A partition longer than the TTL: the lease expires on the server, and the keepalive
/// learns it when the link heals.
#[test]
fn a_session_cut_off_longer_than_its_ttl_is_lost_as_expired() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    let config = Config::new()
        .endpoints([proxy.endpoint()])
        .timeout(Duration::from_secs(10))
        .keepalive(Duration::from_secs(30), Duration::from_secs(30));
    let c = Client::new(config).unwrap();
    let s = session(&c, SessionOptions::new().ttl(Duration::from_secs(2)));
    let lost = Got::new();
    s.on_lost(lost.cb());
    proxy.set_mode(Mode::Blackhole);
    // Wait (through a client of its own) until etcd dropped the lease.
    let direct = client(&etcd.endpoint());
    drive_until(&[&c], LIMIT, || granted_ttl(&direct, s.lease()) == 0);
    assert!(!lost.is_set(), "nothing told while cut off");
    proxy.set_mode(Mode::Pass);
    proxy.reset_all();
    assert_eq!(wait(&[&c], &lost), Lost::Expired);
}

#[test]
fn a_mutex_queues_fairly_on_gos_keys_and_fences_with_is_owner() {
    let etcd = Etcd::start();
    let clients: Vec<Client> = (0..3).map(|_| client(&etcd.endpoint())).collect();
    let refs: Vec<&Client> = clients.iter().collect();
    let sessions: Vec<Session> =
        clients.iter().map(|c| session(c, SessionOptions::new())).collect();
    let mutexes: Vec<Mutex> = sessions.iter().map(|s| Mutex::new(s, "mx")).collect();
    let checker = client(&etcd.endpoint()); // no session: `ok` runs it until idle
    let c = &checker;

    let first = Got::new();
    mutexes[0].lock(first.cb());
    wait(&refs, &first).expect("uncontended");
    let key = format!("mx/{:x}", sessions[0].lease());
    assert_eq!(&mutexes[0].key()[..], key.as_bytes(), "Go's key: prefix/lease in hex");
    assert!(mutexes[0].is_locked());

    // Two waiters queue in the order they came.
    let order = Rc::new(RefCell::new(Vec::new()));
    for i in [1, 2] {
        let o = order.clone();
        mutexes[i].lock(move |r| {
            r.expect("lock");
            o.borrow_mut().push(i);
        });
        // The next one starts once this one's key is on the server.
        drive_until(&refs, LIMIT, || keys(c, "mx/").len() == i + 1);
    }

    // Fencing: a Txn guarded by is_owner runs only for the holder.
    let guarded = |m: &Mutex, value: &str| {
        let txn = Txn::new().when([m.is_owner()]).and_then([TxnOp::put(
            "fenced",
            value.to_string(),
            PutOptions::new(),
        )]);
        ok(c, |cb| c.txn(txn, cb)).succeeded
    };
    assert!(guarded(&mutexes[0], "0"));

    let unlocked = Got::new();
    mutexes[0].unlock(unlocked.cb());
    wait(&refs, &unlocked).expect("unlock");
    assert!(!guarded(&mutexes[0], "0"), "after unlock the fence holds no more");
    drive_until(&refs, LIMIT, || order.borrow().len() == 1);
    assert_eq!(*order.borrow(), [1]);
    assert!(guarded(&mutexes[1], "1"));
    let unlocked = Got::new();
    mutexes[1].unlock(unlocked.cb());
    wait(&refs, &unlocked).expect("unlock");
    drive_until(&refs, LIMIT, || order.borrow().len() == 2);
    assert_eq!(*order.borrow(), [1, 2]);

    // Unlocking what is not held.
    let again = Got::new();
    mutexes[1].unlock(again.cb());
    assert_eq!(wait(&refs, &again), Err(Error::NotLocked));
    let unlocked = Got::new();
    mutexes[2].unlock(unlocked.cb());
    wait(&refs, &unlocked).expect("unlock");
    assert!(keys(c, "mx/").is_empty(), "no stray key: {:?}", keys(c, "mx/"));
}

#[test]
fn try_lock_cancel_and_a_lost_session_leave_no_key() {
    let etcd = Etcd::start();
    let (a, b) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let both = [&a, &b];
    // A loss is seen at the next renewal (a third of the TTL), as in Go: a short TTL.
    let short = || SessionOptions::new().ttl(Duration::from_secs(3));
    let (sa, sb) = (session(&a, short()), session(&b, short()));
    let (ma, mb) = (Mutex::new(&sa, "tl"), Mutex::new(&sb, "tl"));
    let checker = client(&etcd.endpoint());
    let held = Got::new();
    ma.lock(held.cb());
    wait(&both, &held).expect("lock");

    // try_lock: Locked, and its key is gone again.
    let tried = Got::new();
    mb.try_lock(tried.cb());
    assert_eq!(wait(&both, &tried), Err(Error::Locked));
    assert_eq!(keys(&checker, "tl/").len(), 1);
    assert!(mb.key().is_empty());

    // A waiting lock cancelled: CANCELLED once, its key removed.
    let waiting = Got::new();
    let w = mb.lock(waiting.cb());
    drive_until(&both, LIMIT, || keys(&checker, "tl/").len() == 2);
    w.cancel();
    assert!(!waiting.is_set(), "never from inside cancel()");
    let err = wait(&both, &waiting).unwrap_err();
    assert!(matches!(&err, Error::Etcd(e) if e.code() == Code::Cancelled), "{err:?}");
    assert_eq!(keys(&checker, "tl/").len(), 1, "the cancelled waiter's key is gone");
    w.cancel(); // again: nothing

    // A session lost while waiting: the lock fails with SessionLost.
    let waiting = Got::new();
    mb.lock(waiting.cb());
    drive_until(&both, LIMIT, || keys(&checker, "tl/").len() == 2);
    ok(&checker, |cb| checker.lease_revoke(sb.lease(), cb));
    assert_eq!(wait(&both, &waiting), Err(Error::SessionLost(Lost::Revoked)));
    let relock = Got::new();
    mb.lock(relock.cb());
    assert_eq!(
        wait(&both, &relock),
        Err(Error::SessionLost(Lost::Revoked)),
        "a lost session takes nothing"
    );

    // Lost while holding: the lock is gone with the lease, and unlock says so.
    ok(&checker, |cb| checker.lease_revoke(sa.lease(), cb));
    drive_until(&both, LIMIT, || sa.lost().is_some());
    let unlocked = Got::new();
    ma.unlock(unlocked.cb());
    assert_eq!(wait(&both, &unlocked), Err(Error::SessionLost(Lost::Revoked)));
    assert!(keys(&checker, "tl/").is_empty(), "{:?}", keys(&checker, "tl/"));
}

/// As in Go: two mutexes of one session on one prefix are one contender with one key.
#[test]
fn mutexes_of_one_session_share_their_key() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new());
    let (m1, m2) = (Mutex::new(&s, "shared"), Mutex::new(&s, "shared"));
    for m in [&m1, &m2] {
        let got = Got::new();
        m.lock(got.cb());
        wait(&[&c], &got).expect("the same contender holds at once");
    }
    assert_eq!(m1.key(), m2.key());
    let got = Got::new();
    m2.unlock(got.cb());
    wait(&[&c], &got).expect("unlock");
    let checker = client(&etcd.endpoint());
    assert!(keys(&checker, "shared/").is_empty(), "one unlock released both");
}

#[test]
fn an_election_campaigns_proclaims_resigns_and_is_observed_in_order() {
    let etcd = Etcd::start();
    let (a, b, w) = (client(&etcd.endpoint()), client(&etcd.endpoint()), client(&etcd.endpoint()));
    let all = [&a, &b, &w];
    let (sa, sb) = (session(&a, SessionOptions::new()), session(&b, SessionOptions::new()));
    let (ea, eb) = (Election::new(&sa, "el"), Election::new(&sb, "el"));

    let none = Got::new();
    ea.leader(none.cb());
    assert_eq!(wait(&all, &none), Err(Error::NoLeader));
    let p = Got::new();
    ea.proclaim("x", p.cb());
    assert_eq!(wait(&all, &p), Err(Error::NotLeader));

    // An observer from before the first campaign sees every leader and value in order.
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let s = seen.clone();
    let observer = Election::new(&sa, "el").observe(move |r: Result<RangeResponse, Error>| {
        let kv = &r.expect("observe").kvs[0];
        s.borrow_mut().push(String::from_utf8_lossy(&kv.value).into_owned());
    });

    let won = Got::new();
    ea.campaign("a1", won.cb());
    wait(&all, &won).expect("elected");
    assert_eq!(&ea.key()[..], format!("el/{:x}", sa.lease()).as_bytes());
    let second = Got::new();
    let b_wait = eb.campaign("b1", second.cb());
    drive_until(&all, LIMIT, || keys(&w, "el/").len() == 2);
    let p = Got::new();
    ea.proclaim("a2", p.cb());
    wait(&all, &p).expect("proclaim");
    let leader = Got::new();
    eb.leader(leader.cb());
    assert_eq!(&wait(&all, &leader).unwrap().kvs[0].value[..], b"a2");
    assert!(!second.is_set());

    let resigned = Got::new();
    ea.resign(resigned.cb());
    wait(&all, &resigned).expect("resign");
    wait(&all, &second).expect("b leads once a resigned");
    drop(b_wait);
    drive_until(&all, LIMIT, || seen.borrow().len() == 3);
    assert_eq!(*seen.borrow(), ["a1", "a2", "b1"]);

    // A campaign cancelled while waiting: CANCELLED, its key gone, b still leads.
    let third = Got::new();
    let a_wait = ea.campaign("a3", third.cb());
    drive_until(&all, LIMIT, || keys(&w, "el/").len() == 2);
    a_wait.cancel();
    let err = wait(&all, &third).unwrap_err();
    assert!(matches!(&err, Error::Etcd(e) if e.code() == Code::Cancelled), "{err:?}");
    assert_eq!(keys(&w, "el/"), [format!("el/{:x}", sb.lease())]);

    observer.cancel();
    let resigned = Got::new();
    eb.resign(resigned.cb());
    wait(&all, &resigned).expect("resign");
    assert!(keys(&w, "el/").is_empty());
    assert_eq!(seen.borrow().len(), 3, "nothing after cancel");
    let _ = block(&w, |cb| w.get("el/", GetOptions::new(), cb));
}

/// Releasing the lock wakes the next waiter only (Go's `waitDeletes`: each waiter watches
/// the one key just ahead of it): the waiters further back read nothing.
#[test]
fn an_unlock_wakes_one_waiter_not_the_herd() {
    const RANGES: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
    let etcd = Etcd::start();
    let clients: Vec<Client> = (0..5).map(|_| client(&etcd.endpoint())).collect();
    let refs: Vec<&Client> = clients.iter().collect();
    let mutexes: Vec<Mutex> =
        clients.iter().map(|c| Mutex::new(&session(c, SessionOptions::new()), "herd")).collect();
    let checker = client(&etcd.endpoint());
    let held = Got::new();
    mutexes[0].lock(held.cb());
    wait(&refs, &held).expect("lock");
    let order = Rc::new(RefCell::new(Vec::new()));
    for (i, m) in mutexes.iter().enumerate().skip(1) {
        let o = order.clone();
        m.lock(move |r| {
            r.expect("lock");
            o.borrow_mut().push(i);
        });
        drive_until(&refs, LIMIT, || keys(&checker, "herd/").len() == i + 1);
    }
    // Every waiter has read its key ahead and watches it: from now on, count reads.
    let watchers =
        || support::metrics::metric(&etcd.endpoint(), "etcd_debugging_mvcc_watcher_total");
    drive_until(&refs, LIMIT, || watchers() == 4.0);
    let before = support::metrics::metric(&etcd.endpoint(), RANGES);
    let unlocked = Got::new();
    mutexes[0].unlock(unlocked.cb());
    wait(&refs, &unlocked).expect("unlock");
    drive_until(&refs, LIMIT, || order.borrow().len() == 1);
    let reads = support::metrics::metric(&etcd.endpoint(), RANGES) - before;
    assert_eq!(*order.borrow(), [1]);
    // The next waiter: one look for keys still ahead, one check of its own key.
    assert_eq!(reads, 2.0, "ranges after one unlock with 4 waiters");
}
