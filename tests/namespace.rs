//! `Client::namespaced` against a real etcd: every key of the view is under its prefix, as
//! through Go's `namespace` package. Each test writes or reads through the view and checks
//! the other side through the plain client (raw keys), or through Go's own
//! `namespace.NewKV` / `NewWatcher` / `NewLease` and a Go session on a namespaced client (the
//! helper in `tests/goclient`).
//!
//! Beside every namespace the tests put raw keys just outside it (the prefix without its
//! last byte, and the prefix's end itself, `…/ns0` for `…/ns/`), which no range may reach,
//! and sometimes the key that is the prefix itself, which Go's rules leave out of a
//! namespaced get but put into a namespaced watch.
//!
//! Every wait is for a callback, a watch event or a Go result or event; never a sleep.

mod support;

use evetcd::concurrency::{self, Election, Mutex, Session, SessionOptions};
use evetcd::{
    CallOptions, Cancel, Client, Code, Compare, CompareOp, DeleteOptions, EtcdError, EventType,
    GetOptions, KeyValue, LeaseGrantOptions, PutOptions, RangeResponse, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchResponse,
};
use serde_json::json;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use support::client::{block, block_busy, client, drive_until, Cb};
use support::goclient::{skip_without_go, GoClient};
use support::proxy::Proxy;
use support::{unique_prefix, Etcd};

const WAIT: Duration = Duration::from_secs(15);
const EMPTY_KEY: &str = "etcdserver: key is not provided";

/// Starts one operation and drives the client until its callback ran (live watches and
/// observers of the test keep the client busy, so `run()` would not return); it must succeed.
fn ok<T: 'static>(c: &Client, start: impl FnOnce(Cb<T>)) -> T {
    block_busy(c, start).unwrap_or_else(|e| panic!("operation failed: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| text(&kv.key)).collect()
}

/// (key, value) of each pair.
fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter().map(|kv| (text(&kv.key), text(&kv.value))).collect()
}

fn put(c: &Client, key: &str, value: &str) -> i64 {
    let r = ok(c, |cb| c.put(key.to_string(), value.to_string(), PutOptions::new(), cb));
    r.header.expect("header").revision
}

fn get(c: &Client, key: &str) -> Option<KeyValue> {
    ok(c, |cb| c.get(key.to_string(), GetOptions::new(), cb)).kvs.into_iter().next()
}

fn value(c: &Client, key: &str) -> Option<String> {
    get(c, key).map(|kv| text(&kv.value))
}

fn get_with(c: &Client, key: &str, o: GetOptions) -> RangeResponse {
    ok(c, |cb| c.get(key.to_string(), o, cb))
}

fn grant(c: &Client) -> i64 {
    ok(c, |cb| c.lease_grant(60, LeaseGrantOptions::new(), cb)).id
}

/// The raw keys every test puts around namespace `ns` (ending in `/`): the prefix without
/// its `/` (before the namespace) and the prefix's end (`…0`, just after it).
fn put_outside(c: &Client, ns: &str) -> [String; 2] {
    let before = ns.trim_end_matches('/').to_string();
    let after = format!("{before}0");
    put(c, &before, "out");
    put(c, &after, "out");
    [before, after]
}

/// Asserts that `r` is Go's `ErrEmptyKey`, reported for `operation`.
fn assert_empty_key<T: std::fmt::Debug>(r: Result<T, EtcdError>, operation: &str) {
    let e = r.expect_err("an empty key is refused");
    assert_eq!(
        (e.code(), e.message(), e.operation()),
        (Code::InvalidArgument, EMPTY_KEY, operation)
    );
    assert!(!e.is_retryable());
}

/// One watch event as (type, key, value, previous key).
type Seen = (&'static str, String, String, Option<String>);

/// The events a [`recorder`] saw.
type Log = Rc<RefCell<Vec<Seen>>>;

/// A watch callback, boxed.
type WatchCallback = Box<dyn FnMut(Result<WatchResponse, EtcdError>)>;

/// A watch callback recording every event, and how many `created` responses came.
fn recorder() -> (Log, Rc<RefCell<u32>>, WatchCallback) {
    let (events, created): (Log, Rc<RefCell<u32>>) = Default::default();
    let (e, c) = (events.clone(), created.clone());
    let cb = move |r: Result<WatchResponse, EtcdError>| {
        let resp = r.expect("the watch never fails");
        *c.borrow_mut() += u32::from(resp.created);
        for ev in resp.events {
            let kind = if ev.r#type == EventType::Put as i32 { "PUT" } else { "DELETE" };
            let kv = ev.kv.expect("kv");
            let prev = ev.prev_kv.map(|p| text(&p.key));
            e.borrow_mut().push((kind, text(&kv.key), text(&kv.value), prev));
        }
    };
    (events, created, Box::new(cb))
}

fn seen(kind: &'static str, key: &str, value: &str, prev: Option<&str>) -> Seen {
    (kind, key.to_string(), value.to_string(), prev.map(str::to_string))
}

#[test]
fn get_put_delete_stay_under_the_prefix_and_return_relative_keys() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_kv"));
    let v = c.namespaced(ns.clone());
    let outside = put_outside(&c, &ns);
    // The key that is the prefix itself: a namespaced get starts just after it (Go's too).
    put(&c, &ns, "the prefix itself");

    let r = ok(&v, |cb| v.put("a", "1", PutOptions::new(), cb));
    assert_eq!(value(&c, &format!("{ns}a")).as_deref(), Some("1"), "written under the prefix");
    let rev = r.header.unwrap().revision;
    put(&c, &format!("{ns}b"), "2");
    put(&c, &format!("{ns}c"), "3");

    let a = get_with(&v, "a", GetOptions::new());
    assert_eq!((pairs(&a.kvs), a.kvs[0].mod_revision), (vec![("a".into(), "1".into())], rev));
    assert!(get(&v, &format!("{ns}a")).is_none(), "the raw key is not a key of the view");
    let all = get_with(&v, "", GetOptions::new().prefix(true));
    assert_eq!((keys(&all.kvs), all.count), (vec!["a".into(), "b".into(), "c".into()], 3));
    let from_b = get_with(&v, "b", GetOptions::new().from_key(true));
    assert_eq!(keys(&from_b.kvs), ["b", "c"], "a from-key read ends with the namespace");
    let from_start = get_with(&v, "", GetOptions::new().from_key(true));
    assert_eq!(keys(&from_start.kvs), ["a", "b", "c"]);
    let range = get_with(&v, "a", GetOptions::new().range_end("c"));
    assert_eq!(keys(&range.kvs), ["a", "b"]);
    let to_end = get_with(&v, "b", GetOptions::new().range_end("\0"));
    assert_eq!(keys(&to_end.kvs), ["b", "c"], "an explicit \\0 end is the namespace's end");
    let page = get_with(&v, "", GetOptions::new().prefix(true).limit(2).keys_only(true));
    assert_eq!(
        (keys(&page.kvs), page.more, page.kvs[0].value.is_empty()),
        (vec!["a".into(), "b".into()], true, true)
    );
    let count = get_with(&v, "", GetOptions::new().prefix(true).count_only(true));
    assert_eq!((count.count, count.kvs.len()), (3, 0));

    let prev = ok(&v, |cb| v.put("a", "10", PutOptions::new().prev_kv(true), cb));
    let prev = prev.prev_kv.expect("prev_kv");
    assert_eq!((text(&prev.key), text(&prev.value)), ("a".into(), "1".into()));

    let one = ok(&v, |cb| v.delete("c", DeleteOptions::new().prev_kv(true), cb));
    assert_eq!((one.deleted, keys(&one.prev_kvs)), (1, vec!["c".to_string()]));
    assert!(get(&c, &format!("{ns}c")).is_none());
    let rest = ok(&v, |cb| v.delete("", DeleteOptions::new().prefix(true).prev_kv(true), cb));
    assert_eq!(pairs(&rest.prev_kvs), [("a".into(), "10".into()), ("b".into(), "2".into())]);
    assert_eq!(rest.deleted, 2);
    for key in outside {
        assert_eq!(value(&c, &key).as_deref(), Some("out"), "{key} is outside the namespace");
    }
    assert_eq!(value(&c, &ns).as_deref(), Some("the prefix itself"), "not in a prefix delete");
}

#[test]
fn empty_keys_are_refused_unless_the_request_is_a_prefix_or_from_key_one() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_empty"));
    let v = c.namespaced(ns.clone());
    // etcd's own answer to an empty key, without a namespace: the view gives the same.
    let server = block(&c, |cb| c.put("", "v", PutOptions::new(), cb)).expect_err("etcd refuses");
    assert_eq!((server.code(), server.message()), (Code::InvalidArgument, EMPTY_KEY));

    assert_empty_key(block(&v, |cb| v.put("", "v", PutOptions::new(), cb)), "put");
    assert_empty_key(block(&v, |cb| v.get("", GetOptions::new(), cb)), "get");
    assert_empty_key(block(&v, |cb| v.get("", GetOptions::new().range_end("z"), cb)), "get");
    assert_empty_key(block(&v, |cb| v.delete("", DeleteOptions::new(), cb)), "delete");
    let bad_txn = Txn::new().and_then([TxnOp::txn(Txn::new().or_else([TxnOp::put(
        "",
        "v",
        PutOptions::new(),
    )]))]);
    assert_empty_key(block(&v, |cb| v.txn(bad_txn, cb)), "txn");
    assert_empty_key(block(&v, |cb| v.unlock("", cb)), "unlock");
    let paged: Rc<RefCell<Vec<Result<RangeResponse, EtcdError>>>> = Rc::default();
    let p = paged.clone();
    v.get_paged("", GetOptions::new(), 10, move |r| p.borrow_mut().push(r));
    v.run();
    assert_eq!(paged.borrow().len(), 1);
    assert_empty_key(paged.borrow_mut().remove(0), "get_paged");
    assert!(get(&c, &ns).is_none(), "nothing was written at the prefix itself");

    // Prefix and from-key requests of "" are the whole namespace.
    ok(&v, |cb| v.put("k", "v", PutOptions::new(), cb));
    assert_eq!(keys(&get_with(&v, "", GetOptions::new().prefix(true)).kvs), ["k"]);
    assert_eq!(keys(&get_with(&v, "", GetOptions::new().from_key(true)).kvs), ["k"]);
    let fine = Txn::new()
        .when([Compare::version("", CompareOp::Equal, 0)])
        .and_then([TxnOp::get("", GetOptions::new().prefix(true))]);
    let r = ok(&v, |cb| v.txn(fine, cb));
    assert!(r.succeeded, "a compare of \"\" is taken as is (the prefix itself, absent)");
    let d = ok(&v, |cb| v.delete("", DeleteOptions::new().from_key(true), cb));
    assert_eq!(d.deleted, 1);
}

#[test]
fn txn_compares_ops_and_nested_txns_are_namespaced_both_ways() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_txn"));
    let v = c.namespaced(ns.clone());
    let outside = put_outside(&c, &ns);
    for (k, val) in [("a", "1"), ("b", "2"), ("y", "y")] {
        put(&c, &format!("{ns}{k}"), val);
    }
    // Each compare holds only if its key or range is the namespaced one; the one on the
    // prefix "" would fail if its range reached the keys just outside (value "out").
    let nested = Txn::new()
        .when([Compare::lease("y", CompareOp::Equal, 0)])
        .and_then([TxnOp::get("x", GetOptions::new().from_key(true))])
        .or_else([TxnOp::delete("y", DeleteOptions::new())]);
    let txn = Txn::new()
        .when([
            Compare::value("a", CompareOp::Equal, "1"),
            Compare::version("a", CompareOp::Greater, 0).with_range_end("c"),
            Compare::value("", CompareOp::NotEqual, "out").with_prefix(),
            Compare::create_revision("b", CompareOp::Greater, 0).with_range_end("\0"),
        ])
        .and_then([
            TxnOp::get("", GetOptions::new().prefix(true)),
            TxnOp::put("a", "10", PutOptions::new().prev_kv(true)),
            TxnOp::delete("b", DeleteOptions::new().prev_kv(true)),
            TxnOp::txn(nested),
        ])
        .or_else([TxnOp::get("a", GetOptions::new())]);
    let r = ok(&v, |cb| v.txn(txn.clone(), cb));
    assert!(r.succeeded, "every compare was on the namespaced keys");
    let ops: Vec<_> = r.responses.into_iter().map(|op| op.response.expect("response")).collect();
    use TxnOpResponse::{ResponseDeleteRange, ResponsePut, ResponseRange, ResponseTxn};
    let [ResponseRange(all), ResponsePut(p), ResponseDeleteRange(d), ResponseTxn(inner)] = &ops[..]
    else {
        panic!("four results of the right kinds: {ops:?}");
    };
    assert_eq!(keys(&all.kvs), ["a", "b", "y"]);
    let prev = p.prev_kv.as_ref().expect("prev_kv");
    assert_eq!((text(&prev.key), text(&prev.value)), ("a".into(), "1".into()));
    assert_eq!(pairs(&d.prev_kvs), [("b".into(), "2".into())]);
    assert!(inner.succeeded);
    let Some(TxnOpResponse::ResponseRange(x)) = &inner.responses[0].response else {
        panic!("the nested get's result: {inner:?}");
    };
    assert_eq!(keys(&x.kvs), ["y"], "from x to the namespace's end, stripped two levels down");

    assert_eq!(value(&c, &format!("{ns}a")).as_deref(), Some("10"));
    assert!(get(&c, &format!("{ns}b")).is_none());
    for key in &outside {
        assert_eq!(value(&c, key).as_deref(), Some("out"));
    }
    // The same txn again: a no longer holds "1", so the failure branch runs, stripped too.
    let r = ok(&v, |cb| v.txn(txn, cb));
    assert!(!r.succeeded);
    let Some(TxnOpResponse::ResponseRange(a)) = &r.responses[0].response else { panic!() };
    assert_eq!(pairs(&a.kvs), [("a".into(), "10".into())]);
}

#[test]
fn get_paged_reads_the_namespace_in_pages_with_relative_keys() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_paged"));
    let v = c.namespaced(ns.clone());
    put_outside(&c, &ns);
    let want: Vec<String> = (0..10).map(|i| format!("k{i:02}")).collect();
    for k in &want {
        put(&c, &format!("{ns}{k}"), k);
    }
    let pages: Rc<RefCell<Vec<RangeResponse>>> = Rc::default();
    let p = pages.clone();
    v.get_paged("", GetOptions::new().prefix(true), 4, move |r| {
        p.borrow_mut().push(r.expect("page"))
    });
    v.run();
    let pages = pages.borrow();
    let got: Vec<String> = pages.iter().flat_map(|p| keys(&p.kvs)).collect();
    assert_eq!(got, want, "every key of the namespace once, in order, relative, nothing outside");
    assert!(!pages.last().unwrap().more);
    let from: Rc<RefCell<Vec<String>>> = Rc::default();
    let f = from.clone();
    v.get_paged("k07", GetOptions::new().from_key(true), 2, move |r| {
        f.borrow_mut().extend(keys(&r.expect("page").kvs));
    });
    v.run();
    assert_eq!(*from.borrow(), ["k07", "k08", "k09"]);
}

#[test]
fn a_namespaced_watch_strips_keys_also_after_it_resumes_on_a_new_connection() {
    let etcd = Etcd::start();
    let addr: SocketAddr = etcd.endpoint().parse().expect("host:port");
    let proxy = Proxy::start(addr);
    let c = client(&proxy.endpoint());
    let direct = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_watch"));
    let v = c.namespaced(ns.clone());
    let (events, created, cb) = recorder();
    let w = v.watch("", WatchOptions::new().prefix(true).prev_kv(true), cb);
    drive_until(&[&c], WAIT, || *created.borrow() == 1);

    put_outside(&direct, &ns);
    put(&direct, &format!("{ns}a"), "1");
    block_busy(&v, |cb| v.put("a", "2", PutOptions::new(), cb)).expect("put through the view");
    drive_until(&[&c], WAIT, || events.borrow().len() == 2);
    assert_eq!(
        *events.borrow(),
        [seen("PUT", "a", "1", None), seen("PUT", "a", "2", Some("a"))],
        "relative keys, previous ones too; nothing from outside"
    );

    // The connection breaks; while the watch is away, keys change (written by another
    // client); it resumes where it stopped, on the proxy's next connection.
    proxy.reset_all();
    put_outside(&direct, &ns);
    put(&direct, &format!("{ns}b"), "3");
    ok(&direct, |cb| direct.delete(format!("{ns}a"), DeleteOptions::new(), cb));
    drive_until(&[&c], WAIT, || events.borrow().len() == 4);
    assert!(proxy.accepted() >= 2, "the watch came back on a new connection");
    assert_eq!(*created.borrow(), 2, "created again after the reconnect");
    assert_eq!(
        events.borrow()[2..],
        [seen("PUT", "b", "3", None), seen("DELETE", "a", "", Some("a"))],
        "still relative after the resume"
    );
    w.cancel(|r| r.expect("cancel"));
    c.run();
}

#[test]
fn lease_time_to_live_lists_only_the_namespaces_keys_relative() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = unique_prefix("ns_lease");
    let ns = format!("{p}ns/");
    let v = c.namespaced(ns.clone());
    let lease = grant(&c);
    ok(&v, |cb| v.put("a", "1", PutOptions::new().lease(lease), cb));
    ok(&c, |cb| c.put(format!("{p}other"), "2", PutOptions::new().lease(lease), cb));
    let raw = ok(&c, |cb| c.lease_time_to_live(lease, true, cb));
    let mut raw_keys: Vec<String> = raw.keys.iter().map(|k| text(k)).collect();
    raw_keys.sort();
    assert_eq!(raw_keys, [format!("{ns}a"), format!("{p}other")]);
    let viewed = ok(&v, |cb| v.lease_time_to_live(lease, true, cb));
    let viewed_keys: Vec<String> = viewed.keys.iter().map(|k| text(k)).collect();
    assert_eq!(viewed_keys, ["a"]);
    assert_eq!((viewed.id, viewed.granted_ttl), (lease, 60));
}

#[test]
fn lock_names_and_keys_are_namespaced_and_exclude_raw_lockers() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_lock"));
    let v = c.namespaced(ns.clone());
    let (mine, theirs) = (grant(&c), grant(&c));
    let held = ok(&v, |cb| {
        v.lock("l", mine, cb);
    });
    let key = text(&held.key);
    assert_eq!(key, format!("l/{mine:x}"), "the ownership key, relative");
    assert!(get(&c, &format!("{ns}{key}")).is_some(), "held under the prefix");

    // A raw locker of the same lock, by its full name, waits for the namespaced holder.
    let (events, created, cb) = recorder();
    let raw_name = format!("{ns}l");
    let watch = c.watch(format!("{raw_name}/"), WatchOptions::new().prefix(true), cb);
    // Created before the waiter's key is written, so that the watch sees it.
    drive_until(&[&c], WAIT, || *created.borrow() == 1);
    let done: Rc<RefCell<Option<String>>> = Rc::default();
    let d = done.clone();
    c.lock(raw_name.clone(), theirs, move |r| *d.borrow_mut() = Some(text(&r.expect("lock").key)));
    let waiting = format!("{raw_name}/{theirs:x}");
    drive_until(&[&c], WAIT, || events.borrow().iter().any(|e| e.1 == waiting));
    assert!(done.borrow().is_none(), "waiting while the namespaced view holds the lock");
    block_busy(&v, |cb| v.unlock(key.clone(), cb)).expect("unlock through the view");
    drive_until(&[&c], WAIT, || done.borrow().is_some());
    assert_eq!(done.borrow().as_deref(), Some(&*waiting));
    assert!(get(&c, &format!("{ns}{key}")).is_none(), "unlock removed the prefixed key");
    watch.cancel(|r| r.expect("cancel"));
    ok(&c, |cb| c.unlock(waiting.clone(), cb));
}

#[test]
fn election_names_leader_keys_and_observed_leaders_are_namespaced() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let ns = format!("{}ns/", unique_prefix("ns_election"));
    let v = c.namespaced(ns.clone());
    let lease = grant(&c);
    let leader = ok(&v, |cb| {
        v.election_campaign("e", lease, "v1", cb);
    })
    .leader
    .expect("leader key");
    let key = format!("e/{lease:x}");
    assert_eq!((text(&leader.name), text(&leader.key)), ("e".into(), key.clone()));

    let raw = ok(&c, |cb| c.election_leader(format!("{ns}e"), cb)).kv.expect("kv");
    assert_eq!((text(&raw.key), text(&raw.value)), (format!("{ns}{key}"), "v1".into()));
    let seen_by_view = ok(&v, |cb| v.election_leader("e", cb)).kv.expect("kv");
    assert_eq!((text(&seen_by_view.key), text(&seen_by_view.value)), (key.clone(), "v1".into()));

    let observed: Rc<RefCell<Vec<(String, String)>>> = Rc::default();
    let o = observed.clone();
    let obs = v.election_observe("e", move |r| {
        let kv = r.expect("observe").kv.expect("kv");
        o.borrow_mut().push((text(&kv.key), text(&kv.value)));
    });
    drive_until(&[&c], WAIT, || observed.borrow().len() == 1);
    block_busy(&v, |cb| v.election_proclaim(leader.clone(), "v2", cb)).expect("proclaim");
    drive_until(&[&c], WAIT, || observed.borrow().len() == 2);
    assert_eq!(*observed.borrow(), [(key.clone(), "v1".into()), (key.clone(), "v2".into())]);
    assert_eq!(
        value(&c, &format!("{ns}{key}")).as_deref(),
        Some("v2"),
        "proclaimed under the prefix"
    );

    block_busy(&v, |cb| v.election_resign(leader, cb)).expect("resign through the view");
    assert!(get(&c, &format!("{ns}{key}")).is_none(), "resigned: the prefixed key is gone");
    obs.cancel(|r| r.expect("cancel"));
    c.run();
}

#[test]
fn views_nest_and_keep_each_others_options_and_member() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = unique_prefix("ns_views");

    // Nesting joins the prefixes; the outer view sees the inner one's keys relative to it.
    let outer = c.namespaced(format!("{p}a/"));
    let inner = outer.namespaced("b/");
    ok(&inner, |cb| inner.put("k", "1", PutOptions::new(), cb));
    assert_eq!(value(&c, &format!("{p}a/b/k")).as_deref(), Some("1"));
    assert_eq!(keys(&get_with(&outer, "", GetOptions::new().prefix(true)).kvs), ["b/k"]);
    put(&c, &format!("{p}a/b0"), "just outside the inner namespace");
    assert_eq!(keys(&get_with(&inner, "", GetOptions::new().from_key(true)).kvs), ["k"]);

    // `with` on a namespaced view keeps the namespace; `namespaced` on a `with` view keeps
    // the options (a cancelled token fails the call before it is sent).
    let timed = inner.with(CallOptions::new().timeout(Duration::from_secs(5)));
    ok(&timed, |cb| timed.put("t", "2", PutOptions::new(), cb));
    assert_eq!(value(&c, &format!("{p}a/b/t")).as_deref(), Some("2"));
    let cancel = Cancel::new();
    cancel.cancel();
    let cancelled = c.with(CallOptions::new().cancel(&cancel)).namespaced(format!("{p}a/"));
    let e = block(&cancelled, |cb| cancelled.put("x", "3", PutOptions::new(), cb)).unwrap_err();
    assert_eq!(e.code(), Code::Cancelled);
    assert!(get(&c, &format!("{p}a/x")).is_none());

    // A member view of a namespaced view keeps the namespace, and a namespaced view of a
    // member view keeps the member: this client's own endpoint refuses connections.
    let m = inner.member(&etcd.endpoint()).expect("member view");
    ok(&m, |cb| m.put("m", "4", PutOptions::new(), cb));
    assert_eq!(value(&c, &format!("{p}a/b/m")).as_deref(), Some("4"));
    assert_eq!(keys(&get_with(&m, "m", GetOptions::new()).kvs), ["m"]);
    let nowhere = client(&support::refused_endpoint());
    let via_member =
        nowhere.member(&etcd.endpoint()).expect("member view").namespaced(format!("{p}m/"));
    ok(&via_member, |cb| via_member.put("k", "5", PutOptions::new(), cb));
    assert_eq!(value(&c, &format!("{p}m/k")).as_deref(), Some("5"));

    // The view's loop is the client's: close() ends the view's watch.
    let ended: Rc<RefCell<Option<Code>>> = Rc::default();
    let e = ended.clone();
    inner.watch("w", WatchOptions::new(), move |r| {
        if let Err(err) = r {
            *e.borrow_mut() = Some(err.code());
        }
    });
    assert!(!c.is_idle(), "the view's watch is the client's");
    c.close();
    assert_eq!(*ended.borrow(), Some(Code::Cancelled));
}

// Go interop: Go's namespace package on the other side.

/// etcd, an evetcd client and the Go helper; `None` (skipped, visibly) without Go.
fn setup(test: &str) -> Option<(Etcd, Client, GoClient)> {
    if skip_without_go(test) {
        return None;
    }
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let go = GoClient::start(&etcd.endpoint());
    Some((etcd, c, go))
}

#[test]
fn go_namespace_kv_reads_what_the_view_writes_and_the_reverse() {
    let test = "go_namespace_kv_reads_what_the_view_writes_and_the_reverse";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let ns = format!("{}ns/", unique_prefix("ns_go_kv"));
    let v = c.namespaced(ns.clone());
    let outside = put_outside(&c, &ns);
    put(&c, &ns, "the prefix itself");

    ok(&v, |cb| v.put("a", "1", PutOptions::new(), cb));
    ok(&v, |cb| v.put("b", "2", PutOptions::new(), cb));
    let a = go.ok(json!({"cmd": "get", "namespace": ns, "key": "a"}));
    assert_eq!(
        (a["kvs"][0]["key"].as_str(), a["kvs"][0]["value"].as_str()),
        (Some("a"), Some("1"))
    );
    let go_all = go.ok(json!({"cmd": "get", "namespace": ns, "key": "", "prefix": true}));
    let go_keys: Vec<&str> =
        go_all["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(go_keys, ["a", "b"], "Go's prefix read of \"\" leaves out the prefix itself too");

    let r =
        go.ok(json!({"cmd": "put", "namespace": ns, "key": "c", "value": "3", "prev_kv": false}));
    let c_kv = get(&v, "c").expect("Go's namespaced put, read through the view");
    assert_eq!(
        (text(&c_kv.key), text(&c_kv.value), c_kv.mod_revision),
        ("c".into(), "3".into(), r.i64("revision"))
    );
    let ours = keys(&get_with(&v, "", GetOptions::new().prefix(true)).kvs);
    assert_eq!(ours, ["a", "b", "c"], "the same keys as Go's namespaced get");

    // Watches from both sides under the namespace see the same events, with the same keys:
    // a write of the prefix itself (the empty key to both), ours, Go's delete.
    let gw = go.ok(json!({"cmd": "watch", "namespace": ns, "key": "", "prefix": true})).id();
    let (events, created, cb) = recorder();
    let w = v.watch("", WatchOptions::new().prefix(true), cb);
    drive_until(&[&c], WAIT, || *created.borrow() == 1);
    put(&c, &ns, "again");
    put_outside(&c, &ns);
    ok(&v, |cb| {
        v.put("d", "4", PutOptions::new(), cb);
    });
    go.ok(json!({"cmd": "delete", "namespace": ns, "key": "a", "prev_kv": true}));
    drive_until(&[&c], WAIT, || events.borrow().len() == 3);
    let go_events: Vec<(String, String, String)> = (0..3)
        .map(|_| {
            let ev = go.event(gw);
            (ev.str("type").to_string(), ev.str("key").to_string(), ev.str("value").to_string())
        })
        .collect();
    let our_events: Vec<(String, String, String)> = events
        .borrow()
        .iter()
        .map(|(t, k, val, _)| (t.to_string(), k.clone(), val.clone()))
        .collect();
    assert_eq!(our_events, go_events);
    assert_eq!(
        our_events,
        [
            ("PUT".to_string(), String::new(), "again".to_string()),
            ("PUT".into(), "d".into(), "4".into()),
            ("DELETE".into(), "a".into(), String::new()),
        ]
    );
    go.cancel(gw).expect_err("cancelled");
    w.cancel(|r| r.expect("cancel"));
    let gone = go.ok(json!({"cmd": "delete", "namespace": ns, "key": "", "prefix": true}));
    assert_eq!(gone.i64("deleted"), 3, "b, c, d");
    for key in outside {
        assert_eq!(value(&c, &key).as_deref(), Some("out"));
    }
    c.run();
}

#[test]
fn go_namespaced_mutex_election_and_lease_keys_meet_the_views() {
    let test = "go_namespaced_mutex_election_and_lease_keys_meet_the_views";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let ns = format!("{}ns/", unique_prefix("ns_go_recipes"));
    let v = c.namespaced(ns.clone());

    // Go's Mutex on a namespaced client and the view's lock are one lock.
    let s = go.ok(json!({"cmd": "ns_session", "namespace": ns, "ttl": 60}));
    let go_hex = s.str("lease_hex").to_string();
    let m = go.ok(json!({"cmd": "mutex", "session": s.id(), "name": "l"}));
    let go_held = go.run(json!({"cmd": "lock", "mutex": m.id()})).expect("Go locks first");
    assert_eq!(go_held.str("key"), format!("l/{go_hex}"), "Go's key, relative to the namespace");
    let lease = grant(&c);
    let (events, created, cb) = recorder();
    let watch = c.watch(format!("{ns}l/"), WatchOptions::new().prefix(true), cb);
    // Created before the waiter's key is written, so that the watch sees it.
    drive_until(&[&c], WAIT, || *created.borrow() == 1);
    let mine: Rc<RefCell<Option<String>>> = Rc::default();
    let slot = mine.clone();
    let pending =
        v.lock("l", lease, move |r| *slot.borrow_mut() = Some(text(&r.expect("lock").key)));
    let our_raw_key = format!("{ns}l/{lease:x}");
    drive_until(&[&c], WAIT, || events.borrow().iter().any(|e| e.1 == our_raw_key));
    assert!(mine.borrow().is_none(), "the view waits while Go holds the lock");
    go.ok(json!({"cmd": "unlock", "mutex": m.id()}));
    drive_until(&[&c], WAIT, || mine.borrow().is_some());
    let key = mine.borrow().clone().unwrap();
    assert_eq!(key, format!("l/{lease:x}"));
    let busy = go.call(json!({"cmd": "trylock", "mutex": m.id()})).expect_err("we hold it");
    assert!(busy.message.contains("Locked"), "{busy}");
    block_busy(&v, |cb| v.unlock(key, cb)).expect("unlock");
    let again = go.ok(json!({"cmd": "trylock", "mutex": m.id()}));
    assert_eq!(again.str("key"), format!("l/{go_hex}"));
    go.ok(json!({"cmd": "unlock", "mutex": m.id()}));
    watch.cancel(|r| r.expect("cancel"));
    drop(pending);

    // Go's Election on the namespaced client and the view's election calls see each other.
    let e = go.ok(json!({"cmd": "election", "session": s.id(), "name": "e"}));
    go.run(json!({"cmd": "campaign", "election": e.id(), "value": "go"})).expect("Go leads");
    let leader = ok(&v, |cb| v.election_leader("e", cb)).kv.expect("a leader");
    assert_eq!((text(&leader.key), text(&leader.value)), (format!("e/{go_hex}"), "go".into()));
    go.ok(json!({"cmd": "resign", "election": e.id()}));
    let ours = block_busy(&v, |cb| {
        v.election_campaign("e", lease, "rust", cb);
    })
    .expect("campaign")
    .leader
    .expect("leader key");
    assert_eq!(text(&ours.key), format!("e/{lease:x}"));
    let go_leader = go.ok(json!({"cmd": "leader", "election": e.id()}));
    assert_eq!((go_leader.str("key"), go_leader.str("value")), (&*format!("e/{lease:x}"), "rust"));
    block_busy(&v, |cb| v.election_resign(ours, cb)).expect("resign");

    // Lease keys through Go's namespace.NewLease and through the view: the same list.
    let shared = grant(&c);
    ok(&v, |cb| v.put("k", "1", PutOptions::new().lease(shared), cb));
    put_with_lease(&c, &format!("{}elsewhere", ns.trim_end_matches('/')), shared);
    let go_ttl = go.ok(json!({"cmd": "lease_ttl", "lease": shared, "namespace": ns}));
    let ours = ok(&v, |cb| v.lease_time_to_live(shared, true, cb));
    let ours: Vec<String> = ours.keys.iter().map(|k| text(k)).collect();
    assert_eq!(go_ttl["keys"], json!(ours));
    assert_eq!(ours, ["k"]);
    let go_raw = go.ok(json!({"cmd": "lease_ttl", "lease": shared}));
    assert_eq!(go_raw["keys"].as_array().map(Vec::len), Some(2), "{go_raw:?}");
    go.ok(json!({"cmd": "session_close", "session": s.id()}));
    c.run();
}

fn put_with_lease(c: &Client, key: &str, lease: i64) {
    ok(c, |cb| c.put(key.to_string(), "v", PutOptions::new().lease(lease), cb));
}

#[test]
fn concurrency_recipes_on_a_namespaced_view_meet_gos_on_a_namespaced_client() {
    let test = "concurrency_recipes_on_a_namespaced_view_meet_gos_on_a_namespaced_client";
    let Some((_etcd, c, go)) = setup(test) else { return };
    let ns = format!("{}ns/", unique_prefix("ns_go_concurrency"));
    let v = c.namespaced(ns.clone());
    let session: Session = recipe(&c, |cb| Session::new(&v, SessionOptions::new(), cb))
        .unwrap_or_else(|e| panic!("session: {e}"));
    let hex = format!("{:x}", session.lease());

    // Our Mutex, on the view, holds; Go's Mutex on a client in the same namespace cannot.
    let m = Mutex::new(&session, "l");
    recipe(&c, |cb| {
        m.lock(cb);
    })
    .expect("lock");
    assert_eq!(text(&m.key()), format!("l/{hex}"), "the mutex's key is relative");
    assert!(get(&c, &format!("{ns}l/{hex}")).is_some(), "and under the prefix on the server");
    let s = go.ok(json!({"cmd": "ns_session", "namespace": ns, "ttl": 60}));
    let go_hex = s.str("lease_hex").to_string();
    let gm = go.ok(json!({"cmd": "mutex", "session": s.id(), "name": "l"}));
    let busy = go.call(json!({"cmd": "trylock", "mutex": gm.id()})).expect_err("we hold it");
    assert!(busy.message.contains("Locked"), "{busy}");
    // Fencing with is_owner() through the view: its relative key is prefixed in the Txn.
    let fenced = Txn::new().when([m.is_owner()]).and_then([TxnOp::put(
        "guarded",
        "by the lock",
        PutOptions::new(),
    )]);
    assert!(ok(&v, |cb| v.txn(fenced, cb)).succeeded, "is_owner holds under the namespace");
    assert_eq!(value(&c, &format!("{ns}guarded")).as_deref(), Some("by the lock"));

    recipe(&c, |cb| m.unlock(cb)).expect("unlock");
    let held = go.ok(json!({"cmd": "trylock", "mutex": gm.id()}));
    assert_eq!(held.str("key"), format!("l/{go_hex}"));
    let refused = recipe(&c, |cb| m.try_lock(cb)).expect_err("Go holds it");
    assert!(matches!(refused, concurrency::Error::Locked), "{refused:?}");
    let under: Vec<String> =
        keys(&get_with(&c, &format!("{ns}l/"), GetOptions::new().prefix(true)).kvs);
    assert_eq!(under, [format!("{ns}l/{go_hex}")], "our failed try_lock left no key");
    go.ok(json!({"cmd": "unlock", "mutex": gm.id()}));

    // Go's Election in the namespace, seen by our Election on the view.
    let ge = go.ok(json!({"cmd": "election", "session": s.id(), "name": "e"}));
    go.run(json!({"cmd": "campaign", "election": ge.id(), "value": "go"})).expect("Go leads");
    let e = Election::new(&session, "e");
    let leader = recipe(&c, |cb| e.leader(cb)).expect("leader");
    assert_eq!(pairs(&leader.kvs), [(format!("e/{go_hex}"), "go".to_string())]);
    go.ok(json!({"cmd": "resign", "election": ge.id()}));
    go.ok(json!({"cmd": "session_close", "session": s.id()}));
    recipe(&c, |cb| session.close(cb)).expect("close the session");
}

/// Starts a recipe step and drives the client until its callback ran.
fn recipe<T: 'static>(
    c: &Client,
    start: impl FnOnce(Box<dyn FnOnce(Result<T, concurrency::Error>)>),
) -> Result<T, concurrency::Error> {
    let slot: Rc<RefCell<Option<Result<T, concurrency::Error>>>> = Rc::default();
    let s = slot.clone();
    start(Box::new(move |r| *s.borrow_mut() = Some(r)));
    drive_until(&[c], WAIT, || slot.borrow().is_some());
    let r = slot.borrow_mut().take();
    r.expect("checked by drive_until")
}
