//! The recipes at their edges: stale `Wait` handles, an unlock racing a lock, a lease lost
//! under a waiter or a holder before the keepalive tells, a session closed or dropped while
//! recipes use it, resign during a campaign, and watches that resume after a compaction
//! (observe delivers each leader once; a waiting lock or campaign keeps its place).

mod support;

use evetcd::concurrency::{Election, Error, Lost, Mutex, Session, SessionOptions};
use evetcd::{
    Client, Code, CompactOptions, Config, GetOptions, PutOptions, RangeResponse, Txn, TxnOp,
};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::Got;
use support::client::{client, drive_until, ok};
use support::proxy::Proxy;
use support::Etcd;

const LIMIT: Duration = Duration::from_secs(15);

fn wait<T: 'static>(clients: &[&Client], got: &Got<T>) -> T {
    drive_until(clients, LIMIT, || got.is_set());
    got.take()
}

/// Drives `clients` for `d` (whatever happens).
fn drive_for(clients: &[&Client], d: Duration) {
    let end = Instant::now() + d;
    drive_until(clients, d + Duration::from_secs(5), || Instant::now() >= end);
}

fn session(c: &Client, options: SessionOptions) -> Session {
    let got = Got::new();
    Session::new(c, options, got.cb());
    wait(&[c], &got).expect("session")
}

fn keys(c: &Client, prefix: &str) -> Vec<String> {
    let options = GetOptions::new().prefix(true).sort_target(evetcd::SortTarget::Create);
    let got = ok(c, |cb| c.get(prefix.to_string(), options, cb));
    got.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

fn guarded(c: &Client, m: &Mutex) -> bool {
    let txn =
        Txn::new().when([m.is_owner()]).and_then([TxnOp::put("fenced", "x", PutOptions::new())]);
    ok(c, |cb| c.txn(txn, cb)).succeeded
}

fn is_cancelled(r: &Result<(), Error>) -> bool {
    matches!(r, Err(Error::Etcd(e)) if e.code() == Code::Cancelled)
}

/// A `Wait` belongs to its attempt: a stale handle (say a timeout armed for the first lock)
/// does not cancel a later `lock` of the same mutex.
#[test]
fn a_stale_lock_wait_leaves_a_later_lock_alone() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new());
    let m = Mutex::new(&s, "stale");
    let first = Got::new();
    let w1 = m.lock(first.cb());
    wait(&[&c], &first).expect("lock");
    let u = Got::new();
    m.unlock(u.cb());
    wait(&[&c], &u).expect("unlock");

    let second = Got::new();
    let _w2 = m.lock(second.cb());
    w1.cancel(); // the first lock's callback ran long ago: must do nothing
    let r = wait(&[&c], &second);
    assert!(!is_cancelled(&r), "the stale Wait of the first lock cancelled the second: {r:?}");
    r.expect("second lock");
}

/// The same for `Election::campaign`'s `Wait`.
#[test]
fn a_stale_campaign_wait_leaves_a_later_campaign_alone() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new());
    let e = Election::new(&s, "stale-el");
    let first = Got::new();
    let w1 = e.campaign("v1", first.cb());
    wait(&[&c], &first).expect("campaign");
    let r = Got::new();
    e.resign(r.cb());
    wait(&[&c], &r).expect("resign");

    let second = Got::new();
    let _w2 = e.campaign("v2", second.cb());
    w1.cancel();
    let r = wait(&[&c], &second);
    assert!(!is_cancelled(&r), "the stale Wait of the first campaign cancelled the second: {r:?}");
    r.expect("second campaign");
}

/// `lock(cb)` sent before an `unlock(cb)` answered is refused (it would race the delete:
/// either a holder whose key the delete removes, or a key the mutex forgets); once the
/// unlock answered, the lock goes through and is tracked.
#[test]
fn a_lock_sent_before_the_unlock_answered_is_refused() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new());
    let m = Mutex::new(&s, "relock");
    let first = Got::new();
    m.lock(first.cb());
    wait(&[&c], &first).expect("lock");

    let unlocked = Got::new();
    let relocked = Got::new();
    m.unlock(unlocked.cb());
    m.lock(relocked.cb());
    wait(&[&c], &unlocked).expect("unlock");
    let refused = wait(&[&c], &relocked).unwrap_err();
    assert!(
        matches!(&refused, Error::Etcd(e) if e.code() == Code::FailedPrecondition),
        "{refused:?}"
    );
    assert!(keys(&checker, "relock/").is_empty() && !m.is_locked(), "{m:?}");

    let relocked = Got::new();
    m.lock(relocked.cb());
    wait(&[&c], &relocked).expect("relock after the unlock answered");
    let key = format!("relock/{:x}", s.lease());
    assert_eq!(keys(&checker, "relock/"), std::slice::from_ref(&key));
    assert!(m.is_locked() && m.key() == key.as_bytes(), "{m:?}");
    assert!(guarded(&checker, &m), "the holder passes its own fence");
    let u = Got::new();
    m.unlock(u.cb());
    wait(&[&c], &u).expect("unlock");
    assert!(keys(&checker, "relock/").is_empty(), "unlock left the key behind");
}

/// A waiter whose lease is revoked, woken before its keepalive notices: `lock` fails with
/// the same reason the session then reports (`Revoked`): one answer for one loss.
#[test]
fn a_waiter_whose_lease_was_revoked_is_told_revoked() {
    let etcd = Etcd::start();
    let (a, b) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let checker = client(&etcd.endpoint());
    let both = [&a, &b];
    let sa = session(&a, SessionOptions::new());
    let sb = session(&b, SessionOptions::new().ttl(Duration::from_secs(9)));
    let (ma, mb) = (Mutex::new(&sa, "rv"), Mutex::new(&sb, "rv"));
    let held = Got::new();
    ma.lock(held.cb());
    wait(&both, &held).expect("lock");
    let waiting = Got::new();
    mb.lock(waiting.cb());
    drive_until(&both, LIMIT, || keys(&checker, "rv/").len() == 2);
    let lost = Got::new();
    sb.on_lost(lost.cb());

    ok(&checker, |cb| checker.lease_revoke(sb.lease(), cb));
    let u = Got::new();
    ma.unlock(u.cb());
    let lock_result = wait(&both, &waiting);
    let session_lost = wait(&both, &lost);
    assert_eq!(session_lost, Lost::Revoked);
    assert_eq!(lock_result, Err(Error::SessionLost(session_lost)), "one loss, two reasons");
}

/// `Session::close()` while a campaign waits: the campaign ends with `SessionLost(Closed)`
/// and never leads with a key it no longer has (Go's `Campaign` would report success).
#[test]
fn closing_the_session_ends_a_waiting_campaign() {
    let etcd = Etcd::start();
    let cs: Vec<Client> = (0..3).map(|_| client(&etcd.endpoint())).collect();
    let all: Vec<&Client> = cs.iter().collect();
    let checker = client(&etcd.endpoint());
    let ss: Vec<Session> = cs.iter().map(|c| session(c, SessionOptions::new())).collect();
    let es: Vec<Election> = ss.iter().map(|s| Election::new(s, "cl")).collect();
    let a = Got::new();
    es[0].campaign("a", a.cb());
    wait(&all, &a).expect("a leads");
    let b = Got::new();
    es[1].campaign("b", b.cb());
    drive_until(&all, LIMIT, || keys(&checker, "cl/").len() == 2);
    let closed = Got::new();
    ss[1].close(closed.cb());
    wait(&all, &closed).expect("close");
    let c3 = Got::new();
    es[2].campaign("c", c3.cb());
    drive_until(&all, LIMIT, || keys(&checker, "cl/").len() == 2);
    let r = Got::new();
    es[0].resign(r.cb());
    wait(&all, &r).expect("resign");
    wait(&all, &c3).expect("c leads");
    drive_for(&all, Duration::from_millis(500));
    if b.is_set() {
        let rb = b.take();
        assert!(rb.is_err(), "b, whose session was closed, was told it leads too");
    }
}

/// After a reconnect, a leader-key watch that resumes below a compaction fails with
/// "compacted"; the observer reads the leader again and does not deliver it a second time.
#[test]
fn observe_delivers_the_leader_once_across_a_reconnect_past_a_compaction() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    let config = Config::new().endpoints([proxy.endpoint()]).timeout(Duration::from_secs(10));
    let w = Client::new(config).unwrap();
    let c = client(&etcd.endpoint());
    let all = [&w, &c];
    let s = session(&c, SessionOptions::new());
    let sw = session(&w, SessionOptions::new());
    let e = Election::new(&s, "cmp");
    let won = Got::new();
    e.campaign("a", won.cb());
    wait(&all, &won).expect("leads");

    let seen: Rc<RefCell<Vec<(String, i64)>>> = Rc::default();
    let sn = seen.clone();
    let observer = Election::new(&sw, "cmp").observe(move |r: Result<RangeResponse, Error>| {
        let r = r.expect("observe");
        let kv = &r.kvs[0];
        sn.borrow_mut().push((String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision));
    });
    drive_until(&all, LIMIT, || seen.borrow().len() == 1);
    drive_for(&all, Duration::from_millis(300)); // the key watch is created

    // Unrelated writes, then a compaction (periodic compaction does this in production).
    let checker = client(&etcd.endpoint());
    for i in 0..5 {
        ok(&checker, |cb| checker.put(format!("other{i}"), "v", PutOptions::new(), cb));
    }
    let rev =
        ok(&checker, |cb| checker.get("other4", GetOptions::new(), cb)).header.unwrap().revision;
    ok(&checker, |cb| checker.compact(rev, CompactOptions::default(), cb));

    // The observer's connection drops and comes back; nothing changed in the election.
    proxy.reset_all();
    drive_for(&all, Duration::from_secs(3));
    observer.cancel();
    assert_eq!(seen.borrow().len(), 1, "one leader, delivered more than once: {:?}", seen.borrow());
}

/// Starts etcd, a proxy to it, and a client through the proxy.
fn proxied() -> (Etcd, Proxy, Client) {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    let config = Config::new().endpoints([proxy.endpoint()]).timeout(Duration::from_secs(10));
    let w = Client::new(config).unwrap();
    (etcd, proxy, w)
}

/// Writes a few keys and compacts to the latest revision.
fn compact_now(checker: &Client) {
    for i in 0..3 {
        ok(checker, |cb| checker.put(format!("other{i}"), "v", PutOptions::new(), cb));
    }
    let rev =
        ok(checker, |cb| checker.get("other0", GetOptions::new(), cb)).header.unwrap().revision;
    ok(checker, |cb| checker.compact(rev, CompactOptions::default(), cb));
}

/// A campaign waiting behind the leader whose connection drops after a compaction: its
/// watch on the key ahead resumes below the compaction, and the wait reads the queue again
/// instead of failing; it leads once the leader resigns.
#[test]
fn a_waiting_campaign_keeps_its_place_across_a_reconnect_past_a_compaction() {
    let (etcd, proxy, w) = proxied();
    let a = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let all = [&a, &w];
    let (sa, sw) = (session(&a, SessionOptions::new()), session(&w, SessionOptions::new()));
    let (ea, ew) = (Election::new(&sa, "ph"), Election::new(&sw, "ph"));
    let led = Got::new();
    ea.campaign("a", led.cb());
    wait(&all, &led).expect("a leads");
    let waiting = Got::new();
    ew.campaign("w", waiting.cb());
    drive_until(&all, LIMIT, || keys(&checker, "ph/").len() == 2);
    drive_for(&all, Duration::from_millis(300));
    compact_now(&checker);
    proxy.reset_all();
    drive_for(&all, Duration::from_millis(500));
    assert!(!waiting.is_set(), "the campaign still waits: {:?}", waiting.0.borrow());
    assert_eq!(keys(&checker, "ph/").len(), 2);
    let resigned = Got::new();
    ea.resign(resigned.cb());
    wait(&all, &resigned).expect("resign");
    wait(&all, &waiting).expect("w leads once a resigned");
    let leader = Got::new();
    ea.leader(leader.cb());
    assert_eq!(&wait(&all, &leader).unwrap().kvs[0].value[..], b"w");
    let resigned = Got::new();
    ew.resign(resigned.cb());
    wait(&all, &resigned).expect("resign");
    assert!(keys(&checker, "ph/").is_empty());
}

/// The same reconnect past a compaction: a waiting `lock` keeps its place in the queue.
#[test]
fn a_waiting_lock_keeps_its_place_across_a_reconnect_past_a_compaction() {
    let (etcd, proxy, w) = proxied();
    let a = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let all = [&a, &w];
    let (sa, sw) = (session(&a, SessionOptions::new()), session(&w, SessionOptions::new()));
    let (ma, mw) = (Mutex::new(&sa, "lc"), Mutex::new(&sw, "lc"));
    let held = Got::new();
    ma.lock(held.cb());
    wait(&all, &held).expect("lock");
    let waiting = Got::new();
    mw.lock(waiting.cb());
    drive_until(&all, LIMIT, || keys(&checker, "lc/").len() == 2);
    drive_for(&all, Duration::from_millis(300));
    compact_now(&checker);
    proxy.reset_all();
    drive_for(&all, Duration::from_secs(2));
    assert!(!waiting.is_set(), "the waiting lock ended: {:?}", waiting.take());
}

fn resign_during_campaign(after_txn: bool) {
    let etcd = Etcd::start();
    let (a, b) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let checker = client(&etcd.endpoint());
    let all = [&a, &b];
    let (sa, sb) = (session(&a, SessionOptions::new()), session(&b, SessionOptions::new()));
    let (ea, eb) = (Election::new(&sa, "rs"), Election::new(&sb, "rs"));
    let led = Got::new();
    ea.campaign("a", led.cb());
    wait(&all, &led).expect("a leads");
    let waiting = Got::new();
    eb.campaign("b", waiting.cb());
    if after_txn {
        drive_until(&all, LIMIT, || !eb.key().is_empty()); // waiting in wait_deletes
    }
    let r = Got::new();
    eb.resign(r.cb());
    wait(&all, &r).expect("resign");
    let r = Got::new();
    ea.resign(r.cb());
    wait(&all, &r).expect("resign");
    drive_for(&all, Duration::from_millis(500));
    let left = keys(&checker, "rs/");
    if waiting.is_set() {
        let w = waiting.take();
        assert!(
            w.is_err(),
            "b resigned, then was told it leads (keys left: {left:?}, b's key {:x})",
            sb.lease()
        );
    }
    assert!(left.is_empty(), "keys left after both resigned: {left:?}");
}

/// `resign` while the campaign waits for the leader ahead ends the campaign (`CANCELLED`)
/// and removes its key; it never reports leading.
#[test]
fn resign_while_the_campaign_waits_ends_it() {
    resign_during_campaign(true);
}

/// `resign` before the campaign's Txn answered ends the campaign too: its key is removed
/// when the Txn answers, and it never leads.
#[test]
fn resign_before_the_campaign_txn_answers_ends_it() {
    resign_during_campaign(false);
}

/// Dropping every clone of a Session without `close`/`orphan` stops its keepalive (nothing
/// could use the lease any more): `run()` returns and the lease expires after its TTL.
#[test]
fn a_dropped_session_stops_its_keepalive() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new().ttl(Duration::from_secs(2)));
    let lease = s.lease();
    drop(s);
    drive_for(&[&c], Duration::from_secs(4));
    let ttl = ok(&checker, |cb| checker.lease_time_to_live(lease, false, cb)).ttl;
    assert!(
        c.is_idle() && ttl <= 0,
        "lease {lease:x} still renewed (ttl {ttl}), client busy: {}",
        !c.is_idle()
    );
}

/// Cancel right after lock()/campaign() (racing the Txn), then
/// re-entrant calls from inside on_lost while a lock and a campaign wait.
#[test]
fn cancel_racing_the_txn_and_reentrant_calls_from_on_lost() {
    let etcd = Etcd::start();
    let (a, b) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let checker = client(&etcd.endpoint());
    let all = [&a, &b];
    let sa = session(&a, SessionOptions::new());
    let sb = session(&b, SessionOptions::new().ttl(Duration::from_secs(3)));
    let (ma, mb) = (Mutex::new(&sa, "pr"), Mutex::new(&sb, "pr"));
    // Uncontended cancel racing the Txn.
    let g = Got::new();
    let w = mb.lock(g.cb());
    w.cancel();
    let r = wait(&all, &g);
    assert!(is_cancelled(&r), "{r:?}");
    assert!(keys(&checker, "pr/").is_empty());
    let (ea, eb) = (Election::new(&sa, "pe"), Election::new(&sb, "pe"));
    let g = Got::new();
    let w = eb.campaign("x", g.cb());
    w.cancel();
    let r = wait(&all, &g);
    assert!(is_cancelled(&r), "{r:?}");
    assert!(keys(&checker, "pe/").is_empty());

    // Contended: a waits-free holder; b waits on both recipes.
    let g = Got::new();
    ma.lock(g.cb());
    wait(&all, &g).unwrap();
    let g = Got::new();
    ea.campaign("a", g.cb());
    wait(&all, &g).unwrap();
    let lw = Got::new();
    let lwait = mb.lock(lw.cb());
    let cw = Got::new();
    let cwait = eb.campaign("b", cw.cb());
    let obs_seen = Rc::new(RefCell::new(0));
    let os = obs_seen.clone();
    let observer: Rc<RefCell<Option<evetcd::concurrency::Observer>>> = Rc::default();
    let ob = observer.clone();
    let eb2 = eb.clone();
    *observer.borrow_mut() = Some(eb.observe(move |_| {
        *os.borrow_mut() += 1;
        if let Some(o) = ob.borrow().as_ref() {
            o.cancel();
        }
        // (Not resign: that would end b's campaign, which must still wait here.)
        eb2.leader(|_| ());
    }));
    drive_until(&all, LIMIT, || {
        keys(&checker, "pr/").len() == 2 && keys(&checker, "pe/").len() == 2
    });
    let lost = Got::new();
    let l2 = lost.cb();
    let (mb2, eb3, sb2) = (mb.clone(), eb.clone(), sb.clone());
    sb.on_lost(move |why| {
        lwait.cancel();
        cwait.cancel();
        mb2.unlock(|_| ());
        mb2.lock(|_| ());
        eb3.resign(|_| ());
        eb3.campaign("again", |_| ());
        sb2.close(|_| ());
        l2(why);
    });
    ok(&checker, |cb| checker.lease_revoke(sb.lease(), cb));
    assert_eq!(wait(&all, &lost), Lost::Revoked);
    let rl = wait(&all, &lw);
    let rc = wait(&all, &cw);
    eprintln!("lock {rl:?}, campaign {rc:?}, observed {}", obs_seen.borrow());
    drive_for(&all, Duration::from_millis(500));
    assert_eq!(*obs_seen.borrow(), 1);
    assert_eq!(keys(&checker, "pr/").len(), 1);
    assert_eq!(keys(&checker, "pe/").len(), 1);
}

/// Client::close() while a lock and a campaign wait and an observer runs.
#[test]
fn client_close_while_a_lock_and_a_campaign_wait() {
    let etcd = Etcd::start();
    let (a, b) = (client(&etcd.endpoint()), client(&etcd.endpoint()));
    let checker = client(&etcd.endpoint());
    let all = [&a, &b];
    let sa = session(&a, SessionOptions::new());
    let sb = session(&b, SessionOptions::new());
    let (ma, mb) = (Mutex::new(&sa, "cc"), Mutex::new(&sb, "cc"));
    let (ea, eb) = (Election::new(&sa, "ce"), Election::new(&sb, "ce"));
    let g = Got::new();
    ma.lock(g.cb());
    wait(&all, &g).unwrap();
    let g = Got::new();
    ea.campaign("a", g.cb());
    wait(&all, &g).unwrap();
    let lw = Got::new();
    mb.lock(lw.cb());
    let cw = Got::new();
    eb.campaign("b", cw.cb());
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let sn = seen.clone();
    let _obs = eb
        .observe(move |r| sn.borrow_mut().push(format!("{:?}", r.map(|r| r.kvs[0].value.clone()))));
    let lost = Got::new();
    sb.on_lost(lost.cb());
    drive_until(&all, LIMIT, || {
        keys(&checker, "cc/").len() == 2
            && keys(&checker, "ce/").len() == 2
            && seen.borrow().len() == 1
    });
    b.close();
    drive_for(&all, Duration::from_millis(500));
    eprintln!(
        "lost {:?} lock {:?} campaign {:?} observed {:?}",
        lost.is_set().then(|| lost.take()),
        lw.is_set().then(|| lw.take()),
        cw.is_set().then(|| cw.take()),
        seen.borrow()
    );
    eprintln!(
        "b idle: {}, keys {:?} {:?}",
        b.is_idle(),
        keys(&checker, "cc/"),
        keys(&checker, "ce/")
    );
}

/// The holder's lease is revoked (its key, hence the lock, is gone and another session may
/// take it), then it unlocks before its keepalive noticed (up to TTL/3 later): `unlock`
/// reports the loss (the delete found no key).
#[test]
fn unlock_after_the_lock_was_lost_reports_the_loss() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let checker = client(&etcd.endpoint());
    let s = session(&c, SessionOptions::new());
    let m = Mutex::new(&s, "ul");
    let g = Got::new();
    m.lock(g.cb());
    wait(&[&c], &g).expect("lock");
    ok(&checker, |cb| checker.lease_revoke(s.lease(), cb));
    assert!(keys(&checker, "ul/").is_empty());
    let u = Got::new();
    m.unlock(u.cb());
    let r = wait(&[&c], &u);
    assert!(r.is_err(), "the lock was lost while held, yet unlock says {r:?}");
}
