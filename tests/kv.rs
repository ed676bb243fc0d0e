//! KV against a real etcd: every option of get, put, delete and compact, the range-end
//! rules, binary data, and many calls in flight.

mod support;

use bytes::Bytes;
use evetcd::{
    Code, CompactOptions, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
};
use support::client::{block, client, ok};
use support::Etcd;

fn keys(kvs: &[KeyValue]) -> Vec<Vec<u8>> {
    kvs.iter().map(|kv| kv.key.to_vec()).collect()
}

/// A lease id from etcdctl ("lease 694d... granted with TTL(60s)").
fn grant_lease(endpoint: &str) -> i64 {
    let out = support::etcdctl(endpoint, &["lease", "grant", "600"]);
    assert!(out.status.success(), "etcdctl lease grant: {:?}", out);
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().nth(1).expect("lease id");
    i64::from_str_radix(hex, 16).expect("hex lease id")
}

#[test]
fn put_then_get_round_trips_with_revisions() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("roundtrip");
    let put = ok(&c, |cb| c.put(format!("{p}a"), "1", PutOptions::new(), cb));
    let rev = put.header.expect("header").revision;
    assert!(rev > 1);
    let got = ok(&c, |cb| c.get(format!("{p}a"), GetOptions::new(), cb));
    assert_eq!(got.count, 1);
    let kv = &got.kvs[0];
    assert_eq!(
        (&kv.value[..], kv.create_revision, kv.mod_revision, kv.version),
        (&b"1"[..], rev, rev, 1)
    );
    let missing = ok(&c, |cb| c.get(format!("{p}none"), GetOptions::new(), cb));
    assert_eq!((missing.count, missing.kvs.len()), (0, 0));
}

#[test]
fn get_options() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("getopts");
    let mut revs = Vec::new();
    // Keys a..e written in order c, a, e, b, d so that key, create and mod orders differ.
    for (k, v) in [("c", "3"), ("a", "1"), ("e", "5"), ("b", "22"), ("d", "4")] {
        let r = ok(&c, |cb| c.put(format!("{p}{k}"), v, PutOptions::new(), cb));
        revs.push(r.header.unwrap().revision);
    }
    ok(&c, |cb| c.put(format!("{p}a"), "11", PutOptions::new(), cb)); // a: version 2
    ok(&c, |cb| c.put(format!("{p}z-outside"), "", PutOptions::new(), cb));
    let all = |o: GetOptions| ok(&c, |cb| c.get(p.clone(), o.prefix(true), cb));
    let k = |s: &str| format!("{p}{s}").into_bytes();

    let r = all(GetOptions::new());
    assert_eq!(keys(&r.kvs), ["a", "b", "c", "d", "e", "z-outside"].map(k));
    let r = ok(&c, |cb| c.get(format!("{p}b"), GetOptions::new().range_end(format!("{p}d")), cb));
    assert_eq!(keys(&r.kvs), ["b", "c"].map(k));
    let r = ok(&c, |cb| c.get(format!("{p}d"), GetOptions::new().from_key(true), cb));
    assert_eq!(keys(&r.kvs)[..3], ["d", "e", "z-outside"].map(k));

    let r = all(GetOptions::new().limit(2));
    assert_eq!((keys(&r.kvs), r.more, r.count), (["a", "b"].map(k).to_vec(), true, 6));
    let r = all(GetOptions::new().count_only(true));
    assert_eq!((r.count, r.kvs.len()), (6, 0));
    let r = all(GetOptions::new().keys_only(true));
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()) && r.kvs.len() == 6);
    let r = all(GetOptions::new().serializable(true));
    assert_eq!(r.count, 6);

    // Historical read: as of the revision where only c and a existed, a was "1".
    let r = all(GetOptions::new().revision(revs[1]));
    assert_eq!(keys(&r.kvs), ["a", "c"].map(k));
    assert_eq!(&r.kvs[0].value[..], b"1");

    let order = |t: SortTarget, o: SortOrder| {
        keys(&all(GetOptions::new().sort_target(t).sort_order(o)).kvs)[..5].to_vec()
    };
    assert_eq!(order(SortTarget::Key, SortOrder::Descend)[0], k("z-outside"));
    assert_eq!(order(SortTarget::Create, SortOrder::Ascend), ["c", "a", "e", "b", "d"].map(k));
    assert_eq!(order(SortTarget::Mod, SortOrder::Descend)[0], k("z-outside"));
    assert_eq!(order(SortTarget::Version, SortOrder::Descend)[0], k("a"));
    assert_eq!(order(SortTarget::Value, SortOrder::Ascend)[..3], ["z-outside", "a", "b"].map(k));

    let r = all(GetOptions::new().min_create_revision(revs[2]).max_create_revision(revs[3]));
    assert_eq!(keys(&r.kvs), ["b", "e"].map(k));
    let r = all(GetOptions::new().min_mod_revision(revs[4] + 1));
    assert_eq!(keys(&r.kvs), ["a", "z-outside"].map(k));
    let r = all(GetOptions::new().max_mod_revision(revs[0]));
    assert_eq!(keys(&r.kvs), ["c"].map(k));
}

#[test]
fn put_and_delete_options() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("putopts");
    let lease = grant_lease(&etcd.endpoint());

    let r = ok(&c, |cb| c.put(format!("{p}k"), "v1", PutOptions::new().lease(lease), cb));
    assert!(r.prev_kv.is_none());
    let r = ok(&c, |cb| {
        c.put(format!("{p}k"), "v2", PutOptions::new().prev_kv(true).ignore_lease(true), cb)
    });
    let prev = r.prev_kv.expect("prev_kv asked for");
    assert_eq!((&prev.value[..], prev.lease), (&b"v1"[..], lease));
    let got = ok(&c, |cb| c.get(format!("{p}k"), GetOptions::new(), cb));
    assert_eq!(
        (&got.kvs[0].value[..], got.kvs[0].lease),
        (&b"v2"[..], lease),
        "ignore_lease kept the lease"
    );
    ok(&c, |cb| c.put(format!("{p}k"), "", PutOptions::new().ignore_value(true), cb));
    let got = ok(&c, |cb| c.get(format!("{p}k"), GetOptions::new(), cb));
    assert_eq!(
        (&got.kvs[0].value[..], got.kvs[0].lease),
        (&b"v2"[..], 0),
        "ignore_value kept the value, lease dropped"
    );
    let err =
        block(&c, |cb| c.put(format!("{p}absent"), "", PutOptions::new().ignore_value(true), cb))
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    for key in ["a", "b1", "b2", "c", "d"] {
        ok(&c, |cb| c.put(format!("{p}{key}"), key, PutOptions::new(), cb));
    }
    let r = ok(&c, |cb| c.delete(format!("{p}a"), DeleteOptions::new().prev_kv(true), cb));
    assert_eq!((r.deleted, r.prev_kvs.len(), &r.prev_kvs[0].value[..]), (1, 1, &b"a"[..]));
    let r = ok(&c, |cb| c.delete(format!("{p}b"), DeleteOptions::new().prefix(true), cb));
    assert_eq!((r.deleted, r.prev_kvs.len()), (2, 0));
    let r =
        ok(&c, |cb| c.delete(format!("{p}c"), DeleteOptions::new().range_end(format!("{p}d")), cb));
    assert_eq!(r.deleted, 1);
    let r = ok(&c, |cb| {
        c.delete(format!("{p}d"), DeleteOptions::new().from_key(true).prev_kv(true), cb)
    });
    assert_eq!(keys(&r.prev_kvs), [format!("{p}d").into_bytes(), format!("{p}k").into_bytes()]);
    let r = ok(&c, |cb| c.delete(format!("{p}nothing"), DeleteOptions::new(), cb));
    assert_eq!(r.deleted, 0);
}

#[test]
fn prefix_rules_for_the_empty_key_and_all_0xff_keys() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    for key in [&b"\xff"[..], b"\xff\xff", b"\xff\xff\x01", b"\xfe", b"a"] {
        ok(&c, |cb| c.put(Bytes::copy_from_slice(key), "v", PutOptions::new(), cb));
    }
    let r = ok(&c, |cb| c.get(&b"\xff\xff"[..], GetOptions::new().prefix(true), cb));
    assert_eq!(keys(&r.kvs), [&b"\xff\xff"[..], b"\xff\xff\x01"]);
    let r = ok(&c, |cb| c.get(&b"\xff"[..], GetOptions::new().prefix(true), cb));
    assert_eq!(r.count, 3);
    // The empty key with prefix means every key.
    let r = ok(&c, |cb| c.get("", GetOptions::new().prefix(true).count_only(true), cb));
    assert_eq!(r.count, 5);
    let r = ok(&c, |cb| c.delete("", DeleteOptions::new().prefix(true), cb));
    assert_eq!(r.deleted, 5);
    let r = ok(&c, |cb| c.get("", GetOptions::new().from_key(true), cb));
    assert_eq!(r.count, 0);
}

#[test]
fn binary_keys_and_values_round_trip_byte_for_byte() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"nul\0in\0key".to_vec(), b"\0\0\0".to_vec()),
        (vec![0xff, 0xfe, 0x80], vec![0xc3, 0x28, 0xa0, 0xa1]), // invalid UTF-8
        ("ключ-✓".as_bytes().to_vec(), "😀 value".as_bytes().to_vec()),
        (b"all-bytes".to_vec(), (0..=255u8).collect()),
        (b"empty-value".to_vec(), vec![]),
    ];
    for (k, v) in &cases {
        ok(&c, |cb| c.put(k.clone(), v.clone(), PutOptions::new(), cb));
    }
    for (k, v) in &cases {
        let r = ok(&c, |cb| c.get(k.clone(), GetOptions::new(), cb));
        assert_eq!((&r.kvs[0].key[..], &r.kvs[0].value[..]), (&k[..], &v[..]));
    }
}

#[test]
fn compact_makes_old_revisions_unreadable() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let first = ok(&c, |cb| c.put("ck", "1", PutOptions::new(), cb)).header.unwrap().revision;
    let second = ok(&c, |cb| c.put("ck", "2", PutOptions::new(), cb)).header.unwrap().revision;
    ok(&c, |cb| c.compact(second, CompactOptions::new().physical(true), cb));
    let err = block(&c, |cb| c.get("ck", GetOptions::new().revision(first), cb)).unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.message().contains("compacted"), "{err}");
    assert!(!err.is_retryable());
    let r = ok(&c, |cb| c.get("ck", GetOptions::new().revision(second), cb));
    assert_eq!(&r.kvs[0].value[..], b"2");
    let err = block(&c, |cb| c.compact(first, CompactOptions::new(), cb)).unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
}

#[test]
fn a_thousand_pipelined_calls_all_complete_on_one_connection() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let results = Rc::new(RefCell::new(vec![None; 1000]));
    for i in 0..1000 {
        let r = results.clone();
        c.put(format!("pipe/{i:04}"), format!("v{i}"), PutOptions::new(), move |res| {
            assert!(r.borrow_mut()[i].replace(res.map(|p| p.header.unwrap().revision)).is_none());
        });
    }
    c.run();
    let revs: Vec<i64> = results.borrow().iter().map(|r| r.clone().unwrap().unwrap()).collect();
    let mut sorted = revs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000, "every put got its own revision");
    let r = ok(&c, |cb| c.get("pipe/", GetOptions::new().prefix(true).count_only(true), cb));
    assert_eq!(r.count, 1000);
    assert_eq!(support::client::connections_to(etcd.client_port()), 1, "one shared connection");
}
