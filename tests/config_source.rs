//! `evetcd::config_source` against a real etcd: the snapshot and the changes after it, in
//! order, with the view agreeing with etcd; writes through the source; the test
//! (10,000 keys read in pages, the source cut off while keys change and etcd is compacted
//! past its resume revision, converging to exactly etcd's content once back); a watch
//! cancelled by a compaction without a cut; the hybrid overlay; a failed read retried after
//! a backoff; and `close` (also from inside the callback, by dropping the last handle, and by
//! closing the client). Every step waits for a callback or for what etcd shows, never for a
//! sleep.

mod support;

use bytes::Bytes;
use evetcd::config_source::{Change, ConfigEvent, ConfigSource};
use evetcd::{
    Client, Code, CompactOptions, Config, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions, WatchResponse,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use support::client::{client, drive_until, ok};
use support::proxy::{Mode, Proxy};
use support::Etcd;

const LIMIT: Duration = Duration::from_secs(15);

type Events = Rc<RefCell<Vec<ConfigEvent>>>;
type Model = BTreeMap<Bytes, Bytes>;

fn b(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

fn change(key: &str, value: Option<&str>, previous: Option<&str>) -> Change {
    Change { key: b(key), value: value.map(b), previous: previous.map(b) }
}

/// Opens `prefix` on `c` with a callback that records every event.
fn open(c: &Client, prefix: &str) -> (ConfigSource, Events) {
    let events = Events::default();
    let e = events.clone();
    let source = ConfigSource::open(c, prefix.to_string(), move |_, ev| e.borrow_mut().push(ev));
    assert!(events.borrow().is_empty(), "never from inside open");
    (source, events)
}

fn count(events: &Events, want: fn(&ConfigEvent) -> bool) -> usize {
    events.borrow().iter().filter(|e| want(e)).count()
}

fn is_snapshot(e: &ConfigEvent) -> bool {
    matches!(e, ConfigEvent::Snapshot { .. })
}

fn is_changed(e: &ConfigEvent) -> bool {
    matches!(e, ConfigEvent::Changed { .. })
}

fn is_resynced(e: &ConfigEvent) -> bool {
    matches!(e, ConfigEvent::Resynced { .. })
}

/// Drives `c` until `events` holds `n` events.
fn wait_events(c: &Client, events: &Events, n: usize) {
    drive_until(&[c], LIMIT, || events.borrow().len() >= n);
}

/// etcd's content under `prefix` (keys relative to it), and the revision of the read.
fn etcd_content(c: &Client, prefix: &str) -> (Model, i64) {
    let got = ok(c, |cb| c.get(prefix.to_string(), GetOptions::new().prefix(true), cb));
    let content = got.kvs.iter().map(|kv| (kv.key.slice(prefix.len()..), kv.value.clone()));
    (content.collect(), got.header.expect("header").revision)
}

fn view(source: &ConfigSource) -> Model {
    source.entries().into_iter().collect()
}

/// One write of a test: a put, or a delete (`None`).
type Write = (String, Option<String>);

/// Applies `writes` (relative keys) under `prefix` in transactions of at most 128 ops
/// (etcd's default `--max-txn-ops`), updating `model`; returns the last revision.
fn write(c: &Client, prefix: &str, writes: &[Write], model: &mut Model) -> i64 {
    let mut revision = 0;
    for chunk in writes.chunks(128) {
        let ops = chunk.iter().map(|(k, v)| match v {
            Some(v) => TxnOp::put(format!("{prefix}{k}"), v.clone(), PutOptions::new()),
            None => TxnOp::delete(format!("{prefix}{k}"), DeleteOptions::new()),
        });
        let resp = ok(c, |cb| c.txn(Txn::new().and_then(ops), cb));
        revision = resp.header.expect("header").revision;
        for (k, v) in chunk {
            match v {
                Some(v) => model.insert(b(k), b(v)),
                None => model.remove(k.as_bytes()),
            };
        }
    }
    revision
}

fn put(k: impl Into<String>, v: impl Into<String>) -> Write {
    (k.into(), Some(v.into()))
}

fn del(k: impl Into<String>) -> Write {
    (k.into(), None)
}

/// The changes from `before` to `after`, as a resync must report them.
fn expected_diff(before: &Model, after: &Model) -> Vec<Change> {
    let keys: std::collections::BTreeSet<&Bytes> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| Change {
            key: k.clone(),
            value: after.get(k).cloned(),
            previous: before.get(k).cloned(),
        })
        .collect()
}

fn key(i: usize) -> String {
    format!("k{i:05}")
}

#[test]
fn a_snapshot_then_each_revision_in_order_with_writes_through_the_source() {
    let etcd = Etcd::start();
    let w = client(&etcd.endpoint());
    let prefix = support::unique_prefix("cfg_basic");
    let mut model = Model::new();
    write(&w, &prefix, &[put("x", "1"), put("y", "2")], &mut model);
    // Just outside the prefix, on either side: never in the view.
    let outside = prefix.trim_end_matches('/');
    ok(&w, |cb| w.put(outside.to_string(), "no", PutOptions::new(), cb));
    ok(&w, |cb| w.put(format!("{outside}0"), "no", PutOptions::new(), cb));

    let c = client(&etcd.endpoint());
    let (source, events) = open(&c, &prefix);
    assert_eq!((source.revision(), source.len(), source.is_synced()), (0, 0, false));
    wait_events(&c, &events, 1);
    let (content, revision) = etcd_content(&w, &prefix);
    assert_eq!(events.borrow()[0], ConfigEvent::Snapshot { revision });
    assert_eq!((source.revision(), source.is_synced()), (revision, true));
    assert_eq!(view(&source), content);
    assert_eq!(source.entries(), [(b("x"), b("1")), (b("y"), b("2"))]);
    assert_eq!((source.get("x"), source.get("nope"), source.len()), (Some(b("1")), None, 2));

    // Writes through the source (relative keys, the prefix's own key as ""): the view
    // changes when the watch reports them, one Changed per revision.
    let mut revisions = Vec::new();
    for (k, v) in [("z", Some("3")), ("x", Some("10")), ("y", None), ("", Some("root"))] {
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        match v {
            Some(v) => source.put(k, v, move |r| *g.borrow_mut() = Some(r.unwrap().header)),
            None => source.delete(k, move |r| *g.borrow_mut() = Some(r.unwrap().header)),
        }
        drive_until(&[&c], LIMIT, || got.borrow().is_some());
        revisions.push(got.borrow().unwrap().unwrap().revision);
    }
    // A transaction: one Changed, its keys in key order.
    let txn_rev = write(&w, &prefix, &[put("x", "11"), del("z"), put("a", "1")], &mut model);
    // Invisible: the same value again, and keys outside the prefix; then one more change.
    write(&w, &prefix, &[put("a", "1")], &mut model);
    ok(&w, |cb| w.put(outside.to_string(), "still no", PutOptions::new(), cb));
    let last_rev = write(&w, &prefix, &[put("b", "2")], &mut model);
    wait_events(&c, &events, 7);
    let changed = |revision, changes| ConfigEvent::Changed { revision, changes };
    let want = vec![
        ConfigEvent::Snapshot { revision },
        changed(revisions[0], vec![change("z", Some("3"), None)]),
        changed(revisions[1], vec![change("x", Some("10"), Some("1"))]),
        changed(revisions[2], vec![change("y", None, Some("2"))]),
        changed(revisions[3], vec![change("", Some("root"), None)]),
        changed(
            txn_rev,
            vec![
                change("a", Some("1"), None),
                change("x", Some("11"), Some("10")),
                change("z", None, Some("3")),
            ],
        ),
        changed(last_rev, vec![change("b", Some("2"), None)]),
    ];
    assert_eq!(*events.borrow(), want);
    let (content, _) = etcd_content(&w, &prefix);
    assert_eq!(view(&source), content);
    assert_eq!(source.revision(), last_rev);
    assert_eq!(source.get(""), Some(b("root")));
    source.close();
}

/// Issue 19, point 6: 10,000 keys read in pages of 1,000; the source's client cut off by the
/// proxy while keys change (at the page boundaries too) and etcd is compacted past the
/// revision the watch would resume from; once back, the source reads again and converges to
/// exactly etcd's content, reporting only the difference, and then follows changes again.
#[test]
fn ten_thousand_keys_paged_cut_off_while_changed_and_compacted_converge_to_etcd() {
    const N: usize = 10_000;
    let started = std::time::Instant::now();
    let etcd = Etcd::start();
    let w = client(&etcd.endpoint());
    let prefix = support::unique_prefix("cfg_big");
    let mut model = Model::new();
    let fill: Vec<Write> = (0..N).map(|i| put(key(i), format!("v{i}"))).collect();
    write(&w, &prefix, &fill, &mut model);

    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    let c = client(&proxy.endpoint());
    let (source, events) = open(&c, &prefix);
    wait_events(&c, &events, 1);
    assert!(is_snapshot(&events.borrow()[0]), "{:?}", events.borrow()[0]);
    assert_eq!(source.len(), N);
    assert!(view(&source) == model, "the snapshot is etcd's content");
    if support::etcd_version() < (3, 7, 0) {
        // Range calls of 1,000 keys: one Range for all would be 1 page.
        assert_eq!(source.pages_read(), 10, "read in pages of 1,000");
    } else {
        // RangeStream: the server's chunks (10 of them on 3.7.4), still more than one.
        assert!(source.pages_read() >= 2, "read in chunks: {}", source.pages_read());
    }
    // The watch is live.
    write(&w, &prefix, &[put("live", "1")], &mut model);
    wait_events(&c, &events, 2);
    assert!(is_changed(&events.borrow()[1]));
    let before = model.clone();

    // Cut off: nothing reaches the source while keys change and etcd compacts.
    proxy.set_mode(Mode::Blackhole);
    let mut changes: Vec<Write> = Vec::new();
    for i in [0, 999, 1000, 1001, 1999, 2000, 2001, 4999, 5000, 8999, 9000, 9998, 9999] {
        changes.push(put(key(i), format!("changed{i}")));
    }
    changes.extend([998, 3000, 7000, 7001].map(|i| del(key(i))));
    changes.extend((3100..3300).map(|i| del(key(i)))); // more than a txn's worth
    changes.extend((N..N + 150).map(|i| put(key(i), "new")));
    changes.push(put("k00999a", "between two pages"));
    changes.push(del("live"));
    let compact_at = write(&w, &prefix, &changes, &mut model);
    assert!(compact_at > source.revision() + 1, "the resume revision is compacted");
    ok(&w, |cb| w.compact(compact_at, CompactOptions::new(), cb));
    let after_compaction = [put(key(0), "again"), del(key(1000)), put(key(998), "back")];
    write(&w, &prefix, &after_compaction, &mut model);
    // Back: the old connection is cut (what it held is lost), new ones pass.
    proxy.reset_all();
    proxy.set_mode(Mode::Pass);
    drive_until(&[&c], LIMIT, || count(&events, is_resynced) == 1);

    let (content, revision) = etcd_content(&w, &prefix);
    assert!(content == model, "the test's model is etcd's content");
    assert!(view(&source) == content, "the view is exactly etcd's content");
    assert!(source.revision() >= revision, "{} < {revision}", source.revision());
    assert!(source.is_synced());
    assert!(source.pages_read() >= 20 || support::etcd_version() >= (3, 7, 0));
    {
        let events = events.borrow();
        assert_eq!(events.len(), 3, "nothing between the live change and the resync");
        let ConfigEvent::Resynced { revision: r, changes } = &events[2] else { unreachable!() };
        assert_eq!(*r, source.revision());
        assert!(*changes == expected_diff(&before, &content), "only the difference");
        assert_eq!(changes.len(), 13 + 4 + 200 + 150 + 2);
    }

    // Following changes again: each once, in order.
    let r1 = write(&w, &prefix, &[put("after", "1")], &mut model);
    let r2 = write(&w, &prefix, &[put(key(5000), "after")], &mut model);
    wait_events(&c, &events, 5);
    let want = [
        ConfigEvent::Changed { revision: r1, changes: vec![change("after", Some("1"), None)] },
        ConfigEvent::Changed {
            revision: r2,
            changes: vec![change(&key(5000), Some("after"), Some("changed5000"))],
        },
    ];
    assert_eq!(events.borrow()[3..], want);
    assert!(view(&source) == model);
    source.close();
    let took = started.elapsed();
    eprintln!("10,000 keys: {took:?}");
}

/// The compaction happens between the snapshot and the watch's creation (the writes and the
/// compaction run inside the Snapshot callback, before the watch's create is sent): etcd
/// cancels the watch, and the source reads again and delivers the difference.
#[test]
fn a_watch_cancelled_by_compaction_reads_again_and_delivers_the_difference() {
    let etcd = Etcd::start();
    let w = client(&etcd.endpoint());
    let prefix = support::unique_prefix("cfg_compacted");
    let mut model = Model::new();
    write(&w, &prefix, &[put("a", "1"), put("b", "2"), put("c", "3")], &mut model);
    let before = model.clone();

    let c = client(&etcd.endpoint());
    let events = Events::default();
    let model = Rc::new(RefCell::new(model));
    let (e, m, p) = (events.clone(), model.clone(), prefix.clone());
    let source = ConfigSource::open(&c, prefix.clone(), move |_, ev| {
        if is_snapshot(&ev) {
            // The watch would start at the revision of the first write: the compaction
            // removes the revisions before the second one.
            let mut m = m.borrow_mut();
            write(&w, &p, &[put("a", "10"), del("b")], &mut m);
            let rev = write(&w, &p, &[put("d", "4")], &mut m);
            ok(&w, |cb| w.compact(rev, CompactOptions::new(), cb));
            write(&w, &p, &[put("e", "5"), put("a", "1")], &mut m);
        }
        e.borrow_mut().push(ev);
    });
    drive_until(&[&c], LIMIT, || count(&events, is_resynced) == 1);
    let w = client(&etcd.endpoint());
    let (content, revision) = etcd_content(&w, &prefix);
    assert!(content == *model.borrow());
    {
        let events = events.borrow();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(is_snapshot(&events[0]));
        let want = ConfigEvent::Resynced {
            revision,
            changes: vec![
                change("b", None, Some("2")),
                change("d", Some("4"), None),
                change("e", Some("5"), None),
            ],
        };
        assert_eq!(events[1], want, "a is back to its old value: no change");
        assert!(expected_diff(&before, &content).len() == 3);
    }
    assert!(view(&source) == content && source.is_synced());
    // Watching again.
    let rev = write(&w, &prefix, &[put("f", "6")], &mut model.borrow_mut());
    wait_events(&c, &events, 3);
    let want = ConfigEvent::Changed { revision: rev, changes: vec![change("f", Some("6"), None)] };
    assert_eq!(events.borrow()[2], want);
    source.close();
}

#[test]
fn a_hybrid_source_overlays_etcd_on_its_base_and_reports_merged_changes() {
    let etcd = Etcd::start();
    let w = client(&etcd.endpoint());
    let prefix = support::unique_prefix("cfg_hybrid");
    let mut model = Model::new();
    write(&w, &prefix, &[put("b", "20"), put("d", "4")], &mut model);

    let c = client(&etcd.endpoint());
    let base: Model = [(b("a"), b("1")), (b("b"), b("2")), (b("c"), b("3"))].into();
    let events = Events::default();
    let e = events.clone();
    let source =
        ConfigSource::hybrid(&c, prefix.clone(), base, move |_, ev| e.borrow_mut().push(ev));
    // The base shows before the snapshot.
    assert_eq!((source.get("a"), source.len()), (Some(b("1")), 3));
    wait_events(&c, &events, 1);
    let merged = [("a", "1"), ("b", "20"), ("c", "3"), ("d", "4")].map(|(k, v)| (b(k), b(v)));
    assert_eq!(source.entries(), merged);

    // a put with the base's value: invisible; c changed.
    let r1 = write(&w, &prefix, &[put("a", "1"), put("c", "30")], &mut model);
    // Deleted in etcd: b falls back to its base value, d is gone.
    let r2 = write(&w, &prefix, &[del("b")], &mut model);
    let r3 = write(&w, &prefix, &[del("d")], &mut model);
    // Deleted in etcd with the base's value equal to etcd's: invisible; then one change.
    write(&w, &prefix, &[del("a")], &mut model);
    let r4 = write(&w, &prefix, &[put("e", "5")], &mut model);
    wait_events(&c, &events, 5);
    let changed = |revision, changes| ConfigEvent::Changed { revision, changes };
    let want = [
        changed(r1, vec![change("c", Some("30"), Some("3"))]),
        changed(r2, vec![change("b", Some("2"), Some("20"))]),
        changed(r3, vec![change("d", None, Some("4"))]),
        changed(r4, vec![change("e", Some("5"), None)]),
    ];
    assert_eq!(events.borrow()[1..], want);
    let merged = [("a", "1"), ("b", "2"), ("c", "30"), ("e", "5")].map(|(k, v)| (b(k), b(v)));
    assert_eq!(source.entries(), merged);
    assert_eq!(source.revision(), r4);
    source.close();
}

/// A read that fails is reported as `Error` and tried again after a backoff, until etcd can
/// be reached.
#[test]
fn a_failed_read_is_reported_and_retried_until_the_snapshot_arrives() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint().parse().unwrap());
    proxy.set_mode(Mode::Refuse);
    let config = Config::new()
        .endpoints([proxy.endpoint()])
        .timeout(Duration::from_secs(5))
        .retry(0, Duration::from_millis(10));
    let c = Client::new(config).unwrap();
    let prefix = support::unique_prefix("cfg_retry");
    let (source, events) = open(&c, &prefix);
    wait_events(&c, &events, 1);
    let ConfigEvent::Error(e) = events.borrow()[0].clone() else {
        panic!("{:?}", events.borrow()[0])
    };
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(!source.is_synced() && source.revision() == 0);
    proxy.set_mode(Mode::Pass);
    drive_until(&[&c], LIMIT, || count(&events, is_snapshot) == 1);
    let events = events.borrow();
    let (last, errors) = events.split_last().unwrap();
    assert!(errors.iter().all(|e| matches!(e, ConfigEvent::Error(_))), "{events:?}");
    assert!(is_snapshot(last) && source.is_synced());
    source.close();
}

/// Drives `c` until a plain watch on `prefix` (on `c`, created before) saw `n` events.
fn watch_prefix(c: &Client, prefix: &str) -> (evetcd::Watch, Rc<RefCell<Vec<WatchResponse>>>) {
    let seen: Rc<RefCell<Vec<WatchResponse>>> = Rc::default();
    let s = seen.clone();
    let watch = c.watch(prefix.to_string(), WatchOptions::new().prefix(true), move |r| {
        s.borrow_mut().push(r.expect("watch"));
    });
    drive_until(&[c], LIMIT, || !seen.borrow().is_empty()); // created
    (watch, seen)
}

fn events_seen(seen: &Rc<RefCell<Vec<WatchResponse>>>) -> usize {
    seen.borrow().iter().map(|r| r.events.len()).sum()
}

#[test]
fn close_stops_every_callback_at_once_also_from_inside_one() {
    let etcd = Etcd::start();
    let w = client(&etcd.endpoint());
    let c = client(&etcd.endpoint());
    let prefix = support::unique_prefix("cfg_close");
    let mut model = Model::new();
    write(&w, &prefix, &[put("a", "1")], &mut model);

    // Closed before the snapshot: nothing at all, and nothing left running.
    let (source, events) = open(&c, &prefix);
    source.close();
    assert!(source.is_closed() && !source.is_synced());
    drive_until(&[&c], LIMIT, || c.is_idle());
    assert!(events.borrow().is_empty());

    // Closed from inside the first Changed, with more changes already on their way.
    let events = Events::default();
    let e = events.clone();
    let source = ConfigSource::open(&c, prefix.clone(), move |source, ev| {
        if is_changed(&ev) {
            source.close();
            assert!(source.is_closed());
        }
        e.borrow_mut().push(ev);
    });
    wait_events(&c, &events, 1);
    let (watch, seen) = watch_prefix(&c, &prefix);
    // Written while `c` does not turn: the responses arrive together.
    write(&w, &prefix, &[put("b", "2")], &mut model);
    write(&w, &prefix, &[put("c", "3")], &mut model);
    write(&w, &prefix, &[put("d", "4")], &mut model);
    drive_until(&[&c], LIMIT, || events_seen(&seen) == 3);
    assert_eq!(events.borrow().len(), 2, "{:?}", events.borrow());
    assert!(is_changed(&events.borrow()[1]));
    assert_eq!((source.get("b"), source.get("c")), (Some(b("2")), None), "frozen at close");
    watch.cancel(|_| ());
    drive_until(&[&c], LIMIT, || c.is_idle()); // the source's watch is gone too

    // The last handle dropped: closed the same way.
    let (source, events) = open(&c, &prefix);
    wait_events(&c, &events, 1);
    drop(source);
    drive_until(&[&c], LIMIT, || c.is_idle());
    write(&w, &prefix, &[put("e", "5")], &mut model);
    assert_eq!(events.borrow().len(), 1);

    // The client closed: one Error (CANCELLED), then the source stops following etcd,
    // even once the client is used again.
    let (source, events) = open(&c, &prefix);
    wait_events(&c, &events, 1);
    c.close();
    assert_eq!(events.borrow().len(), 2);
    let ConfigEvent::Error(err) = events.borrow()[1].clone() else { panic!("{events:?}") };
    assert_eq!(err.code(), Code::Cancelled, "{err}");
    assert!(!source.is_synced() && !source.is_closed());
    ok(&c, |cb| c.put(format!("{prefix}f"), "6", PutOptions::new(), cb));
    drive_until(&[&c], LIMIT, || c.is_idle());
    assert_eq!(events.borrow().len(), 2);
    assert_eq!(source.get("f"), None);
}
