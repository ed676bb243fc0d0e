//! Go's clientv3 (the reference client, through the helper in `tests/goclient`) beside
//! evetcd against one real etcd: every helper command once, each checked from the other
//! side. What Go writes (keys, leases, lock and election keys, STM balances, namespaced
//! keys, service endpoints) is read back through evetcd; what evetcd writes is what Go's
//! gets, watches, observers, locks and endpoint lists see.
//!
//! Each step waits for what it depends on: a Go result or event (the helper's results come
//! once clientv3 returned; a watch answers once etcd created it), an evetcd callback, a
//! key showing up in an evetcd watch ([`await_put`]), or once (Go's lock waiting, which
//! only shows on the server as a watcher) etcd's watcher gauge. Never a fixed sleep.
//!
//! Without Go (and without `CI=true`) every test prints `SKIP: go not found: <test>`.

mod support;

use evetcd::{
    Client, CompactOptions, DeleteOptions, EtcdError, EventType, GetOptions, KeyValue,
    LeaseGrantOptions, PutOptions, WatchOptions,
};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use support::client::{client, drive_until, ok};
use support::goclient::{skip_without_go, GoClient, Reply};
use support::metrics::wait_for_metric;
use support::{unique_prefix, Etcd};

const WAIT: Duration = Duration::from_secs(15);
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// etcd, an evetcd client and the Go helper on it; `None` (the test is skipped, visibly)
/// where Go is missing.
fn setup(test: &str) -> Option<(Etcd, Client, GoClient)> {
    if skip_without_go(test) {
        return None;
    }
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let go = GoClient::start(&etcd.endpoint());
    Some((etcd, c, go))
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("UTF-8")
}

/// `key` read through evetcd.
fn get(c: &Client, key: &str) -> Option<KeyValue> {
    ok(c, |cb| c.get(key.to_string(), GetOptions::new(), cb)).kvs.into_iter().next()
}

/// Every key under `prefix` read through evetcd, as (key, value).
fn get_prefix(c: &Client, prefix: &str) -> Vec<(String, String)> {
    let r = ok(c, |cb| c.get(prefix.to_string(), GetOptions::new().prefix(true), cb));
    r.kvs.iter().map(|kv| (text(&kv.key).to_string(), text(&kv.value).to_string())).collect()
}

/// Writes through evetcd; returns the revision.
fn put(c: &Client, key: &str, value: &str) -> i64 {
    let r = ok(c, |cb| c.put(key.to_string(), value.to_string(), PutOptions::new(), cb));
    r.header.expect("header").revision
}

/// Deletes through evetcd; returns the revision.
fn delete(c: &Client, key: &str) -> i64 {
    let r = ok(c, |cb| c.delete(key.to_string(), DeleteOptions::new(), cb));
    r.header.expect("header").revision
}

fn grant(c: &Client, ttl: i64) -> i64 {
    ok(c, |cb| c.lease_grant(ttl, LeaseGrantOptions::new(), cb)).id
}

/// The lease's remaining TTL as evetcd sees it (-1 once revoked or expired).
fn ttl(c: &Client, lease: i64) -> i64 {
    ok(c, |cb| c.lease_time_to_live(lease, false, cb)).ttl
}

/// Waits until `key` has been written at revision `from` or later, watching it through
/// evetcd from `from` (so a write before the call counts), and returns it as written then.
fn await_put(c: &Client, key: &str, from: i64) -> KeyValue {
    let seen: Rc<RefCell<Option<KeyValue>>> = Rc::default();
    let s = seen.clone();
    let w = c.watch(key.to_string(), WatchOptions::new().start_revision(from), move |r| {
        let resp = r.expect("watch");
        let put = resp.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
        let first = s.borrow().is_none();
        if let (Some(e), true) = (put, first) {
            *s.borrow_mut() = e.kv;
        }
    });
    drive_until(&[c], WAIT, || seen.borrow().is_some());
    w.cancel(|r| r.expect("cancel the watch"));
    let kv = seen.borrow_mut().take().expect("checked by drive_until");
    kv
}

/// An evetcd call started now whose result lands in the returned slot, for calls that
/// wait on Go (a lock, a campaign).
type Later<T> = Rc<RefCell<Option<Result<T, EtcdError>>>>;

fn later<T>() -> (Later<T>, impl FnOnce(Result<T, EtcdError>)) {
    let slot: Later<T> = Rc::default();
    let s = slot.clone();
    (slot, move |r| *s.borrow_mut() = Some(r))
}

/// Drives `c` until the call behind `slot` has completed; returns its result.
fn finish<T>(c: &Client, slot: &Later<T>) -> T {
    drive_until(&[c], WAIT, || slot.borrow().is_some());
    let r = slot.borrow_mut().take().expect("checked by drive_until");
    r.unwrap_or_else(|e| panic!("evetcd call failed: {e}"))
}

/// The fields of a Go watch or observe event: (type, key, value).
fn event_of(ev: &Reply) -> (&str, &str, &str) {
    (ev.str("type"), ev.str("key"), ev.str("value"))
}

#[test]
fn go_put_is_read_by_evetcd() {
    let Some((_etcd, c, go)) = setup("go_put_is_read_by_evetcd") else { return };
    let key = format!("{}k", unique_prefix("go_put"));
    let lease = grant(&c, 60);
    let r1 = go.ok(json!({"cmd": "put", "key": key, "value": "v1", "lease": lease}));
    let kv = get(&c, &key).expect("Go's put is visible to evetcd");
    assert_eq!((text(&kv.value), kv.mod_revision, kv.lease), ("v1", r1.i64("revision"), lease));

    let r2 = go.ok(json!({"cmd": "put", "key": key, "value": "v2", "prev_kv": true}));
    assert_eq!(r2["prev"]["value"], "v1", "{r2:?}");
    assert_eq!(r2.i64("revision"), r1.i64("revision") + 1);
    let kv = get(&c, &key).expect("still there");
    assert_eq!((text(&kv.value), kv.version, kv.lease), ("v2", 2, 0));
}

#[test]
fn go_get_reads_evetcd_writes() {
    let Some((_etcd, c, go)) = setup("go_get_reads_evetcd_writes") else { return };
    let p = unique_prefix("go_get");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let rev_a1 = put(&c, &a, "1");
    let rev_b = put(&c, &b, "2");
    let rev_a3 = put(&c, &a, "3");
    // Next to the prefix but not under it.
    put(&c, &format!("{}x", p.trim_end_matches('/')), "outside");

    let all = go.ok(json!({"cmd": "get", "key": p, "prefix": true}));
    assert_eq!(all.i64("count"), 2, "{all:?}");
    let kvs = all["kvs"].as_array().expect("kvs");
    let seen: Vec<(&str, &str, i64, i64)> = kvs
        .iter()
        .map(|kv| {
            let n = |f: &str| kv[f].as_i64().expect("number");
            (
                kv["key"].as_str().unwrap(),
                kv["value"].as_str().unwrap(),
                n("create_revision"),
                n("mod_revision"),
            )
        })
        .collect();
    assert_eq!(seen, [(&*a, "3", rev_a1, rev_a3), (&*b, "2", rev_b, rev_b)]);

    let old = go.ok(json!({"cmd": "get", "key": a, "revision": rev_b}));
    assert_eq!(old["kvs"][0]["value"], "1", "{old:?}");
    let none = go.ok(json!({"cmd": "get", "key": format!("{p}missing")}));
    assert_eq!((none.i64("count"), none["kvs"].as_array().map(Vec::len)), (0, Some(0)));
}

#[test]
fn go_delete_removes_evetcd_keys() {
    let Some((_etcd, c, go)) = setup("go_delete_removes_evetcd_keys") else { return };
    let p = unique_prefix("go_delete");
    let outside = format!("{}x", p.trim_end_matches('/'));
    for k in ["a", "b", "c"] {
        put(&c, &format!("{p}{k}"), k);
    }
    put(&c, &outside, "stays");

    let one = go.ok(json!({"cmd": "delete", "key": format!("{p}a")}));
    assert_eq!(one.i64("deleted"), 1);
    assert!(get(&c, &format!("{p}a")).is_none(), "Go deleted it");

    let rest = go.ok(json!({"cmd": "delete", "key": p, "prefix": true, "prev_kv": true}));
    assert_eq!(rest.i64("deleted"), 2, "{rest:?}");
    let prev: Vec<&str> = rest["prev_kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["value"].as_str().unwrap())
        .collect();
    assert_eq!(prev, ["b", "c"]);
    assert!(get_prefix(&c, &p).is_empty(), "Go deleted the prefix");
    assert_eq!(get(&c, &outside).map(|kv| kv.value), Some("stays".into()));
}

#[test]
fn go_watch_sees_evetcd_writes() {
    let Some((_etcd, c, go)) = setup("go_watch_sees_evetcd_writes") else { return };
    let p = unique_prefix("go_watch");
    let a = format!("{p}a");
    let w = go.ok(json!({"cmd": "watch", "key": p, "prefix": true, "prev_kv": true})).id();

    let rev1 = put(&c, &a, "1");
    // Not under the prefix: the next event Go sees must be the second put of `a`.
    put(&c, &format!("{}x", p.trim_end_matches('/')), "outside");
    let rev2 = put(&c, &a, "2");
    let rev3 = delete(&c, &a);

    let e1 = go.event(w);
    assert_eq!(
        (event_of(&e1), e1.i64("mod_revision"), e1.i64("revision")),
        (("PUT", &*a, "1"), rev1, rev1)
    );
    let e2 = go.event(w);
    assert_eq!(
        (event_of(&e2), e2.i64("mod_revision"), e2.str("prev_value")),
        (("PUT", &*a, "2"), rev2, "1")
    );
    let e3 = go.event(w);
    assert_eq!(
        (event_of(&e3), e3.i64("mod_revision"), e3.str("prev_value")),
        (("DELETE", &*a, ""), rev3, "2")
    );

    let end = go.cancel(w).expect_err("a cancelled watch ends with the cancellation");
    assert_eq!(end.code.as_deref(), Some("Canceled"), "{end:?}");
}

#[test]
fn go_watch_replays_from_a_start_revision_and_reports_compaction() {
    let test = "go_watch_replays_from_a_start_revision_and_reports_compaction";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let key = format!("{}k", unique_prefix("go_watch_rev"));
    let revs: Vec<i64> = ["v1", "v2", "v3"].iter().map(|v| put(&c, &key, v)).collect();

    let w = go.ok(json!({"cmd": "watch", "key": key, "revision": revs[1]})).id();
    for (rev, value) in [(revs[1], "v2"), (revs[2], "v3")] {
        let ev = go.event(w);
        assert_eq!((event_of(&ev), ev.i64("mod_revision")), (("PUT", &*key, value), rev));
    }
    let rev4 = put(&c, &key, "v4");
    let ev = go.event(w);
    assert_eq!((event_of(&ev), ev.i64("mod_revision")), (("PUT", &*key, "v4"), rev4));

    // After evetcd compacts, a watch from before the compaction is created, then ends.
    ok(&c, |cb| c.compact(revs[2], CompactOptions::new(), cb));
    let old = go.ok(json!({"cmd": "watch", "key": key, "revision": revs[0]})).id();
    let end = go.done(old).expect_err("a watch from a compacted revision fails");
    assert_eq!(end.code.as_deref(), Some("OutOfRange"), "{end:?}");
    assert_eq!(end.line["compact_revision"], revs[2], "{end:?}");
}

/// A Go session with a mutex on `name`: (session, mutex id, the mutex's key).
fn go_mutex(go: &GoClient, name: &str) -> (Reply, u64, String) {
    let s = go.ok(json!({"cmd": "session", "ttl": 30}));
    assert_eq!(s.str("lease_hex"), format!("{:x}", s.i64("lease")));
    let m = go.ok(json!({"cmd": "mutex", "session": s.id(), "name": name})).id();
    let key = format!("{name}/{}", s.str("lease_hex"));
    (s, m, key)
}

#[test]
fn go_lock_holds_off_evetcd() {
    let Some((_etcd, c, go)) = setup("go_lock_holds_off_evetcd") else { return };
    let name = format!("{}lock", unique_prefix("go_lock"));
    let (s, m, go_key) = go_mutex(&go, &name);
    let held = go.run(json!({"cmd": "lock", "mutex": m})).expect("Go locks a free mutex");
    assert_eq!(held.str("key"), go_key, "the key is the prefix, '/' and the lease in hex");
    let kv = get(&c, &go_key).expect("Go's lock key is visible to evetcd");
    assert_eq!((kv.lease, kv.create_revision), (s.i64("lease"), held.i64("revision")));

    // evetcd's lock (the server's Lock API) queues behind Go's key.
    let lease = grant(&c, 30);
    let (slot, cb) = later();
    c.lock(name.clone(), lease, cb);
    let waiting = await_put(&c, &format!("{name}/{lease:x}"), 1);
    assert!(waiting.create_revision > kv.create_revision);
    assert!(slot.borrow().is_none(), "evetcd got the lock while Go holds it");

    go.ok(json!({"cmd": "unlock", "mutex": m}));
    let mine = finish(&c, &slot);
    assert_eq!(text(&mine.key), format!("{name}/{lease:x}"));
    assert!(get(&c, &go_key).is_none(), "Go's unlock deleted its key");
}

#[test]
fn go_lock_waits_for_evetcd_and_can_be_abandoned() {
    let test = "go_lock_waits_for_evetcd_and_can_be_abandoned";
    let Some((etcd, c, go)) = setup(test) else { return };
    let name = format!("{}lock", unique_prefix("go_lock_wait"));
    let lease = grant(&c, 30);
    let held = ok(&c, |cb| {
        c.lock(name.clone(), lease, cb);
    });
    let (s, m, go_key) = go_mutex(&go, &name);

    // A waiting lock abandoned: Go removes its key. Cancelled while still in its first
    // request (the txn that puts its key) Go's Lock returns at once and leaves the key, so
    // the cancel waits until Go waits on evetcd's key: its watch is the server's only one.
    let first = go.ok(json!({"cmd": "lock", "mutex": m})).id();
    wait_for_metric(&etcd.endpoint(), WATCHERS, 1.0, WAIT);
    let first_key = get(&c, &go_key).expect("Go waits with its key in place");
    let end = go.cancel(first).expect_err("the abandoned lock fails");
    assert_eq!(end.code.as_deref(), Some("Canceled"), "{end:?}");
    assert!(get(&c, &go_key).is_none(), "the abandoned lock's key is gone");

    // A waiting lock that gets the mutex once evetcd unlocks.
    let second = go.ok(json!({"cmd": "lock", "mutex": m})).id();
    let waiting = await_put(&c, &go_key, first_key.mod_revision + 1);
    assert_eq!(waiting.lease, s.i64("lease"), "Go waits with its key in place");
    assert!(go.try_event(second).is_none(), "Go got the lock while evetcd holds it");
    ok(&c, |cb| c.unlock(held.key.clone(), cb));
    let got = go.done(second).expect("Go gets the lock after evetcd's unlock");
    assert_eq!(got.str("key"), go_key);

    go.ok(json!({"cmd": "unlock", "mutex": m}));
    assert!(get_prefix(&c, &format!("{name}/")).is_empty(), "no lock key left");
}

#[test]
fn go_trylock_fails_while_evetcd_holds_the_lock() {
    let test = "go_trylock_fails_while_evetcd_holds_the_lock";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let name = format!("{}lock", unique_prefix("go_trylock"));
    let lease = grant(&c, 30);
    let held = ok(&c, |cb| {
        c.lock(name.clone(), lease, cb);
    });
    let (s, m, go_key) = go_mutex(&go, &name);

    let busy = go.call(json!({"cmd": "trylock", "mutex": m})).expect_err("evetcd holds it");
    assert_eq!(busy.message, "mutex: Locked by another session");
    assert!(get(&c, &go_key).is_none(), "a failed try-lock leaves no key");

    ok(&c, |cb| c.unlock(held.key.clone(), cb));
    let got = go.ok(json!({"cmd": "trylock", "mutex": m}));
    assert_eq!(got.str("key"), go_key);
    let kv = get(&c, &go_key).expect("Go holds the lock");
    assert_eq!(kv.lease, s.i64("lease"));
    go.ok(json!({"cmd": "unlock", "mutex": m}));
    assert!(get(&c, &go_key).is_none());
    let again = go.call(json!({"cmd": "unlock", "mutex": m})).expect_err("already released");
    assert_eq!(again.message, "mutex: lock has already been released");
}

#[test]
fn go_session_close_revokes_its_lease_and_orphan_keeps_it() {
    let test = "go_session_close_revokes_its_lease_and_orphan_keeps_it";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let p = unique_prefix("go_session");
    let orphaned = go.ok(json!({"cmd": "session", "ttl": 30}));
    let closed = go.ok(json!({"cmd": "session", "ttl": 30}));
    for (s, k) in [(&orphaned, "o"), (&closed, "c")] {
        go.ok(json!({"cmd": "put", "key": format!("{p}{k}"), "value": k, "lease": s.i64("lease")}));
        assert!(ttl(&c, s.i64("lease")) > 0);
    }

    go.ok(json!({"cmd": "session_orphan", "session": orphaned.id()}));
    go.done(orphaned.id()).expect("an orphaned session ends");
    assert!(ttl(&c, orphaned.i64("lease")) > 0, "an orphaned session's lease lives on");

    go.ok(json!({"cmd": "session_close", "session": closed.id()}));
    go.done(closed.id()).expect("a closed session ends");
    assert_eq!(ttl(&c, closed.i64("lease")), -1, "Close revoked the lease");
    assert_eq!(get_prefix(&c, &p), [(format!("{p}o"), "o".to_string())]);
}

#[test]
fn go_session_ends_when_evetcd_revokes_its_lease() {
    let Some((_etcd, c, go)) = setup("go_session_ends_when_evetcd_revokes_its_lease") else {
        return;
    };
    // A short TTL: Go's keepalive (every TTL/3) notices the revocation within a second.
    let s = go.ok(json!({"cmd": "session", "ttl": 3}));
    assert!(go.try_event(s.id()).is_none(), "the session is alive");
    ok(&c, |cb| c.lease_revoke(s.i64("lease"), cb));
    go.done(s.id()).expect("the session ends with its lease");
}

#[test]
fn go_campaign_is_seen_by_evetcd() {
    let Some((_etcd, c, go)) = setup("go_campaign_is_seen_by_evetcd") else { return };
    let name = format!("{}election", unique_prefix("go_campaign"));
    let s = go.ok(json!({"cmd": "session", "ttl": 30}));
    let e = go.ok(json!({"cmd": "election", "session": s.id(), "name": name})).id();
    let won = go.run(json!({"cmd": "campaign", "election": e, "value": "go-1"})).expect("elected");
    let go_key = format!("{name}/{}", s.str("lease_hex"));
    assert_eq!(won.str("key"), go_key);

    let leader = |c: &Client| ok(c, |cb| c.election_leader(name.clone(), cb)).kv.expect("a leader");
    let kv = leader(&c);
    let seen = (text(&kv.key), text(&kv.value), kv.lease, kv.create_revision);
    assert_eq!(seen, (&*go_key, "go-1", s.i64("lease"), won.i64("revision")));
    go.ok(json!({"cmd": "proclaim", "election": e, "value": "go-2"}));
    assert_eq!(text(&leader(&c).value), "go-2");

    // evetcd campaigns behind Go and wins once Go resigns.
    let lease = grant(&c, 30);
    let (slot, cb) = later();
    c.election_campaign(name.clone(), lease, "rs-1", cb);
    await_put(&c, &format!("{name}/{lease:x}"), 1);
    assert!(slot.borrow().is_none(), "evetcd won while Go leads");
    go.ok(json!({"cmd": "resign", "election": e}));
    let ours = finish(&c, &slot).leader.expect("leader key");
    assert_eq!(text(&ours.key), format!("{name}/{lease:x}"));

    let now = go.ok(json!({"cmd": "leader", "election": e}));
    assert_eq!(
        (now.str("key"), now.str("value"), now.i64("lease")),
        (text(&ours.key), "rs-1", lease)
    );
    let err =
        go.call(json!({"cmd": "proclaim", "election": e, "value": "x"})).expect_err("resigned");
    assert_eq!(err.message, "election: not leader");
}

#[test]
fn go_observe_follows_evetcd_leaders_and_go_campaign_waits() {
    let test = "go_observe_follows_evetcd_leaders_and_go_campaign_waits";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let name = format!("{}election", unique_prefix("go_observe"));
    let lease = grant(&c, 30);
    let ours = ok(&c, |cb| {
        c.election_campaign(name.clone(), lease, "a", cb);
    })
    .leader
    .expect("leader key");
    let s = go.ok(json!({"cmd": "session", "ttl": 30}));
    let e = go.ok(json!({"cmd": "election", "session": s.id(), "name": name})).id();
    let go_key = format!("{name}/{}", s.str("lease_hex"));
    let our_key = format!("{name}/{lease:x}");

    let obs = go.ok(json!({"cmd": "observe", "election": e})).id();
    let first = go.event(obs);
    assert_eq!(
        (first.str("event"), first.str("key"), first.str("value")),
        ("leader", &*our_key, "a")
    );
    ok(&c, |cb| c.election_proclaim(ours.clone(), "b", cb));
    let second = go.event(obs);
    assert_eq!((second.str("key"), second.str("value")), (&*our_key, "b"));

    // Go's campaign waits behind evetcd's leadership.
    let camp = go.ok(json!({"cmd": "campaign", "election": e, "value": "g"})).id();
    await_put(&c, &go_key, 1);
    assert!(go.try_event(camp).is_none(), "Go won while evetcd leads");
    ok(&c, |cb| c.election_resign(ours.clone(), cb));
    let won = go.done(camp).expect("Go wins once evetcd resigns");
    assert_eq!(won.str("key"), go_key);
    let third = go.event(obs);
    assert_eq!((third.str("key"), third.str("value")), (&*go_key, "g"));

    let end = go.cancel(obs).expect_err("a cancelled observer ends with the cancellation");
    assert_eq!(end.code.as_deref(), Some("Canceled"), "{end:?}");
}

/// Both balances, read through evetcd.
fn balances(c: &Client, from: &str, to: &str) -> (i64, i64) {
    let n = |k: &str| text(&get(c, k).expect("balance").value).parse::<i64>().expect("number");
    (n(from), n(to))
}

#[test]
fn go_stm_transfers_conserve_the_sum() {
    let Some((_etcd, c, go)) = setup("go_stm_transfers_conserve_the_sum") else { return };
    let p = unique_prefix("go_stm");
    let (from, to) = (format!("{p}from"), format!("{p}to"));
    put(&c, &from, "100");
    put(&c, &to, "50");

    let done = go
        .run(json!({"cmd": "stm_transfer", "from": from, "to": to, "amount": 30}))
        .expect("transfer");
    assert_eq!(
        (done.i64("from_balance"), done.i64("to_balance"), done.i64("attempts")),
        (70, 80, 1)
    );
    assert_eq!(balances(&c, &from, &to), (70, 80));
    assert_eq!(get(&c, &from).unwrap().mod_revision, done.i64("revision"));

    let broke = go.run(json!({"cmd": "stm_transfer", "from": from, "to": to, "amount": 1000}));
    let broke = broke.expect_err("not enough on the source");
    assert!(broke.message.starts_with("insufficient funds"), "{broke:?}");
    assert_eq!(balances(&c, &from, &to), (70, 80), "a failed transfer writes nothing");

    // Transfers both ways at once: they conflict and retry, and every one lands once.
    let ids: Vec<u64> = (0..6)
        .map(|i| {
            let (src, dst, amount) = if i % 2 == 0 { (&from, &to, 5) } else { (&to, &from, 2) };
            go.ok(json!({"cmd": "stm_transfer", "from": src, "to": dst, "amount": amount})).id()
        })
        .collect();
    for id in ids {
        go.done(id).expect("transfer");
    }
    assert_eq!(balances(&c, &from, &to), (70 - 15 + 6, 80 + 15 - 6));
}

#[test]
fn go_stm_transfer_retries_after_a_conflicting_evetcd_write() {
    let test = "go_stm_transfer_retries_after_a_conflicting_evetcd_write";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let p = unique_prefix("go_stm_conflict");
    // The same transfer under serializable isolation (the reads are checked at commit) and
    // read-committed (they are not): evetcd deposits 100 between Go's read and its commit.
    for (iso, attempts, expected) in
        [("serializable", 2, (170, 80)), ("read_committed", 1, (70, 80))]
    {
        let (from, to) = (format!("{p}{iso}/from"), format!("{p}{iso}/to"));
        put(&c, &from, "100");
        put(&c, &to, "50");
        let t = go
            .ok(json!({
                "cmd": "stm_transfer", "from": from, "to": to, "amount": 30,
                "isolation": iso, "pause": true,
            }))
            .id();
        let read = go.event(t);
        assert_eq!(
            (read.str("event"), read.i64("attempt"), read.i64("from"), read.i64("to")),
            ("read", 1, 100, 50)
        );
        put(&c, &from, "200");
        go.ok(json!({"cmd": "resume", "ref": t}));
        if attempts == 2 {
            let read = go.event(t);
            assert_eq!(
                (read.str("event"), read.i64("attempt"), read.i64("from")),
                ("read", 2, 200),
                "{iso}"
            );
            go.ok(json!({"cmd": "resume", "ref": t}));
        }
        let done = go.done(t).expect("transfer");
        assert_eq!(done.i64("attempts"), attempts, "{iso}");
        assert_eq!(balances(&c, &from, &to), expected, "{iso}");
    }
}

#[test]
fn go_namespace_kv_and_watch_stay_under_the_prefix() {
    let test = "go_namespace_kv_and_watch_stay_under_the_prefix";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let p = unique_prefix("go_namespace");
    let ns = format!("{p}ns/");
    let outside = format!("{p}outside");

    let r = go.ok(json!({"cmd": "put", "namespace": ns, "key": "a", "value": "1"}));
    let kv = get(&c, &format!("{ns}a")).expect("Go's namespaced put lands under the prefix");
    assert_eq!((text(&kv.value), kv.mod_revision), ("1", r.i64("revision")));
    put(&c, &format!("{ns}b"), "2");
    put(&c, &outside, "x");

    let all = go.ok(json!({"cmd": "get", "namespace": ns, "key": "", "prefix": true}));
    let seen: Vec<(&str, &str)> = all["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| (kv["key"].as_str().unwrap(), kv["value"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("a", "1"), ("b", "2")], "keys relative to the namespace, nothing else");

    let w = go.ok(json!({"cmd": "watch", "namespace": ns, "key": "", "prefix": true})).id();
    put(&c, &outside, "y");
    put(&c, &format!("{ns}c"), "3");
    assert_eq!(event_of(&go.event(w)), ("PUT", "c", "3"));
    go.ok(json!({"cmd": "delete", "namespace": ns, "key": "a"}));
    assert!(get(&c, &format!("{ns}a")).is_none());
    assert_eq!(event_of(&go.event(w)), ("DELETE", "a", ""));
    go.cancel(w).expect_err("cancelled");
    assert_eq!(get(&c, &outside).map(|kv| kv.value), Some("y".into()));
}

#[test]
fn go_endpoints_manager_writes_what_evetcd_reads() {
    let test = "go_endpoints_manager_writes_what_evetcd_reads";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let target = format!("{}svc", unique_prefix("go_endpoints"));
    let lease = grant(&c, 60);
    let add = json!({
        "cmd": "endpoints_add", "target": target, "name": "e1", "addr": "10.0.0.1:80",
        "metadata": {"weight": 3}, "lease": lease,
    });
    assert_eq!(go.ok(add).str("key"), format!("{target}/e1"));
    let kv = get(&c, &format!("{target}/e1")).expect("Go's endpoint is visible to evetcd");
    assert_eq!(text(&kv.value), r#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":{"weight":3}}"#);
    assert_eq!(kv.lease, lease);
    go.ok(json!({"cmd": "endpoints_add", "target": target, "name": "e2", "addr": "10.0.0.2:80"}));
    let kv = get(&c, &format!("{target}/e2")).expect("no metadata");
    assert_eq!(text(&kv.value), r#"{"Op":0,"Addr":"10.0.0.2:80","Metadata":null}"#);

    // An endpoint evetcd registers the same way is one of Go's.
    put(&c, &format!("{target}/e3"), r#"{"Op":0,"Addr":"10.0.0.3:80","Metadata":"blue"}"#);
    let list = go.ok(json!({"cmd": "endpoints_list", "target": target}));
    let expected = json!({
        format!("{target}/e1"): {"addr": "10.0.0.1:80", "metadata": {"weight": 3}},
        format!("{target}/e2"): {"addr": "10.0.0.2:80", "metadata": null},
        format!("{target}/e3"): {"addr": "10.0.0.3:80", "metadata": "blue"},
    });
    assert_eq!(list["endpoints"], expected);

    go.ok(json!({"cmd": "endpoints_delete", "target": target, "name": "e1"}));
    assert!(get(&c, &format!("{target}/e1")).is_none());
    let list = go.ok(json!({"cmd": "endpoints_list", "target": target}));
    let keys: Vec<&String> = list["endpoints"].as_object().unwrap().keys().collect();
    assert_eq!(keys, [&format!("{target}/e2"), &format!("{target}/e3")]);
}

#[test]
fn go_endpoints_watch_sees_evetcd_registrations() {
    let test = "go_endpoints_watch_sees_evetcd_registrations";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let target = format!("{}svc", unique_prefix("go_endpoints_watch"));
    let (e1, e2) = (format!("{target}/e1"), format!("{target}/e2"));
    put(&c, &e1, r#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}"#);

    let w = go.ok(json!({"cmd": "endpoints_watch", "target": target})).id();
    let update = |go: &GoClient| {
        let ev = go.event(w);
        assert_eq!(ev.str("event"), "update", "{ev:?}");
        ev
    };
    let first = update(&go);
    assert_eq!(
        (first.str("op"), first.str("key"), first.str("addr")),
        ("add", &*e1, "10.0.0.1:80")
    );
    put(&c, &e2, r#"{"Op":0,"Addr":"10.0.0.2:80","Metadata":{"zone":"a"}}"#);
    let second = update(&go);
    assert_eq!(
        (second.str("op"), second.str("key"), second.str("addr")),
        ("add", &*e2, "10.0.0.2:80")
    );
    assert_eq!(second["metadata"], json!({"zone": "a"}));
    delete(&c, &e1);
    let third = update(&go);
    assert_eq!((third.str("op"), third.str("key")), ("delete", &*e1));
    go.cancel(w).expect_err("cancelled");
}

#[test]
fn go_helper_reports_failures_under_the_command_id() {
    let test = "go_helper_reports_failures_under_the_command_id";
    let Some((_etcd, c, go)) = setup(test) else { return };
    assert_eq!(go.client_version(), "v3.6.17", "the pinned clientv3");
    let err = go.call(json!({"cmd": "nope"})).expect_err("unknown command");
    assert_eq!(err.message, r#"unknown command "nope""#);
    let err = go.call(json!({"cmd": "get", "kee": "k"})).expect_err("unknown field");
    assert!(err.message.contains(r#"unknown field "kee""#), "{err:?}");
    let err = go.call(json!({"cmd": "cancel", "ref": 999})).expect_err("no such command");
    assert_eq!(err.message, "no background command with id 999");

    // clientv3's errors come with their gRPC code.
    let lease = grant(&c, 60);
    ok(&c, |cb| c.lease_revoke(lease, cb));
    let err = go
        .call(json!({"cmd": "put", "key": "k", "value": "v", "lease": lease}))
        .expect_err("revoked lease");
    assert_eq!(
        (err.message.as_str(), err.code.as_deref()),
        ("etcdserver: requested lease not found", Some("NotFound"))
    );

    let s = go.ok(json!({"cmd": "session", "ttl": 30}));
    let e =
        go.ok(json!({"cmd": "election", "session": s.id(), "name": unique_prefix("nobody")})).id();
    let err = go.call(json!({"cmd": "leader", "election": e})).expect_err("no leader yet");
    assert_eq!(err.message, "election: no leader");
}
