//! Watch against a real etcd: replay from an old revision, 10,000 events through one watch,
//! 1,000 watches on one stream (checked with etcd's metrics), cancel (from the watch's own
//! callback, of another watch whose event is already received, before the create is answered,
//! twice, after the client is gone), the compaction error, prev_kv, filters, progress
//! (requested and periodic), a failed create, fragmented responses, and exactly-once delivery
//! across a restart of etcd while another client keeps writing.
//!
//! Every test drives its client with [`drive`] (the documented foreign-loop contract:
//! poll(2) on the client's fd, `process()`, until `is_idle()`), which fails after a deadline
//! instead of hanging when an expected response never comes.

mod support;

use evetcd::{
    Client, Code, CompactOptions, DeleteOptions, EtcdError, EventType, GetOptions, PutOptions,
    Watch, WatchOptions, WatchResponse,
};
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support::client::{client, ok};
use support::metrics::{metric, wait_for_metric};
use support::Etcd;

const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
const STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
const PUT: i32 = EventType::Put as i32;
const DELETE: i32 = EventType::Delete as i32;

/// Drives `c` (poll on its fd, `process()`) until it is idle: no unary call pending and no
/// live watch, which is when `run()` returns. Panics after `limit`. Then checks that `run()`
/// agrees and returns at once.
fn drive(c: &Client, limit: Duration) {
    drive_checking(c, limit, || {});
}

/// [`drive`], calling `check` after every turn (to notice a failed helper thread).
fn drive_checking(c: &Client, limit: Duration, mut check: impl FnMut()) {
    drive_until(c, limit, || {
        check();
        c.is_idle()
    });
    c.run(); // nothing pending: returns at once
}

/// Drives `c` until `done()`, which is checked before every turn; panics after `limit`.
fn drive_until(c: &Client, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "still waiting after {limit:?} (a watch never got what it waited for)"
        );
        let timeout_ms = c.next_timeout().map_or(100, |t| t.as_millis().min(100) as i32);
        let mut pfd = libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
        c.process();
    }
}

/// Put that must succeed; returns its revision.
fn put(c: &Client, key: impl Into<String>, value: impl Into<String>) -> i64 {
    let (key, value) = (key.into(), value.into());
    ok(c, |cb| c.put(key, value, PutOptions::new(), cb)).header.expect("header").revision
}

/// The store's current revision.
fn current_revision(c: &Client) -> i64 {
    ok(c, |cb| c.get("any", GetOptions::new(), cb)).header.expect("header").revision
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the tests compare: (type, key, value, mod_revision) of each event.
type Ev = (i32, String, String, i64);

fn events_of(resp: &WatchResponse) -> Vec<Ev> {
    resp.events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().expect("event without kv");
            (e.r#type, text(&kv.key), text(&kv.value), kv.mod_revision)
        })
        .collect()
}

/// Fails at once when `evs` do not continue `seen` revision by revision. For a watch on a
/// store that only this test writes, one write per revision: a gap is a lost event, a step
/// back a repeated one.
fn assert_contiguous(seen: &[Ev], evs: &[Ev]) {
    let mut last = seen.last().map(|e| e.3);
    for e in evs {
        if let Some(l) = last {
            assert!(
                e.3 == l + 1,
                "after revision {l} came {e:?}: {}",
                if e.3 > l { "events lost" } else { "an event repeated" }
            );
        }
        last = Some(e.3);
    }
}

/// A slot for a watch's own handle, so that its callback can cancel it. `watch()` never runs
/// the callback inside the call, so the slot is filled before the callback can need it.
#[derive(Clone, Default)]
struct Handle(Rc<RefCell<Option<Watch>>>);

impl Handle {
    fn set(&self, w: Watch) {
        *self.0.borrow_mut() = Some(w);
    }

    fn get(&self) -> Watch {
        self.0.borrow().clone().expect("handle set before any callback")
    }

    /// Cancels the watch; `cancelled` is set once `cancel()` has returned (the watch's
    /// callback must not run after that) and `acks` counts the Ok callbacks of the cancel.
    fn cancel(&self, cancelled: &Rc<Cell<bool>>, acks: &Rc<Cell<u32>>) {
        let w = self.get();
        let acks2 = acks.clone();
        let inside = Rc::new(Cell::new(true));
        let inside2 = inside.clone();
        w.cancel(move |r| {
            assert!(!inside2.get(), "cancel callback ran inside cancel()");
            r.expect("cancel succeeds");
            acks2.set(acks2.get() + 1);
        });
        inside.set(false);
        cancelled.set(true);
    }
}

#[test]
fn replay_from_an_old_start_revision_in_order() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("replay");
    let key = format!("{p}k");
    let mut revs = Vec::new();
    for v in ["v1", "v2", "v3", "v4"] {
        revs.push(put(&c, &key, v));
        // A longer key with `key` as its prefix: not part of a single-key watch.
        put(&c, format!("{key}2"), v);
    }

    let got: Rc<RefCell<Vec<WatchResponse>>> = Rc::default();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let (g, h2, cd, a) = (got.clone(), h.clone(), cancelled.clone(), Rc::clone(&acks));
    h.set(c.watch(key.clone(), WatchOptions::new().start_revision(revs[0]), move |r| {
        assert!(!cd.get(), "callback after cancel returned");
        let resp = r.expect("watch response");
        g.borrow_mut().push(resp);
        let n: usize = g.borrow().iter().map(|r| r.events.len()).sum();
        if n >= 4 {
            h2.cancel(&cd, &a);
        }
    }));
    drive(&c, Duration::from_secs(20));

    let got = got.borrow();
    assert!(got[0].created, "first response is the created one: {:?}", got[0]);
    assert!(got[0].events.is_empty(), "{:?}", got[0]);
    assert!(got[1..].iter().all(|r| !r.created && !r.canceled));
    let id = got[0].watch_id;
    assert!(got.iter().all(|r| r.watch_id == id), "{got:?}");
    let events: Vec<Ev> = got.iter().flat_map(events_of).collect();
    let want: Vec<Ev> = ["v1", "v2", "v3", "v4"]
        .iter()
        .zip(&revs)
        .map(|(v, &rev)| (PUT, key.clone(), v.to_string(), rev))
        .collect();
    assert_eq!(events, want);
    assert_eq!(acks.get(), 1);
}

#[test]
fn ten_thousand_events_through_one_watch_in_order_none_missing_or_repeated() {
    const TOTAL: usize = 10_000;
    const IN_FLIGHT: usize = 100;
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p: Rc<str> = support::unique_prefix("tenk").into();

    // (revision, index) of every put, as the put responses report them.
    let written: Rc<RefCell<Vec<(i64, usize)>>> = Rc::default();
    let next = Rc::new(Cell::new(0usize));
    fn pump(c: Client, p: Rc<str>, next: Rc<Cell<usize>>, written: Rc<RefCell<Vec<(i64, usize)>>>) {
        let i = next.get();
        if i == TOTAL {
            return;
        }
        next.set(i + 1);
        let c2 = c.clone();
        c.put(format!("{p}{i:05}"), format!("v{i}"), PutOptions::new(), move |r| {
            let rev = r.expect("put").header.expect("header").revision;
            written.borrow_mut().push((rev, i));
            pump(c2, p, next, written);
        });
    }

    let events: Rc<RefCell<Vec<Ev>>> = Rc::default();
    let responses = Rc::new(Cell::new(0u32));
    // Per progress reply: (events delivered before it, its header revision).
    let progress: Rc<RefCell<Vec<(usize, i64)>>> = Rc::default();
    let pr = progress.clone();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let (c1, p1, w1, n1) = (c.clone(), p.clone(), written.clone(), next.clone());
    let (ev, rs, h2, cd, a) =
        (events.clone(), responses.clone(), h.clone(), cancelled.clone(), Rc::clone(&acks));
    h.set(c.watch(p.to_string(), WatchOptions::new().prefix(true), move |r| {
        assert!(!cd.get(), "callback after cancel returned");
        let resp = r.expect("watch response");
        rs.set(rs.get() + 1);
        if resp.created {
            assert!(resp.events.is_empty());
            // Start writing only now: the watch is in place, every write must show up.
            for _ in 0..IN_FLIGHT {
                pump(c1.clone(), p1.clone(), n1.clone(), w1.clone());
            }
            return;
        }
        if resp.events.is_empty() {
            // A reply to request_progress(): it may overtake events of older revisions
            // (etcd 3.5), which must still be delivered.
            assert_eq!(resp.watch_id, -1, "{resp:?}");
            let rev = resp.header.as_ref().expect("header").revision;
            pr.borrow_mut().push((ev.borrow().len(), rev));
            return;
        }
        let evs = events_of(&resp);
        assert_contiguous(&ev.borrow(), &evs);
        ev.borrow_mut().extend(evs);
        if ev.borrow().len() >= TOTAL {
            h2.cancel(&cd, &a);
        } else {
            c1.request_progress();
        }
    }));
    drive(&c, Duration::from_secs(40));

    let mut written = written.borrow().clone();
    assert_eq!(written.len(), TOTAL);
    written.sort();
    let want: Vec<Ev> =
        written.iter().map(|&(rev, i)| (PUT, format!("{p}{i:05}"), format!("v{i}"), rev)).collect();
    let events = events.borrow();
    assert_eq!(events.len(), TOTAL, "events delivered");
    assert!(events.windows(2).all(|w| w[0].3 < w[1].3), "mod_revisions strictly increasing");
    if *events != want {
        let at = events.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "event sequence differs from the writes at index {at:?}: got {:?}, want {:?}",
            at.map(|i| &events[i]),
            at.map(|i| &want[i])
        );
    }
    assert_eq!(acks.get(), 1);
    // Replies that overtook events (informational: how hard the test pushed).
    let overtaken =
        progress.borrow().iter().filter(|&&(n, rev)| n < TOTAL && events[n].3 <= rev).count();
    eprintln!(
        "{TOTAL} events in {} responses; {} progress replies, {overtaken} overtook events",
        responses.get(),
        progress.borrow().len()
    );
}

#[test]
fn a_thousand_watches_share_one_stream_and_each_gets_only_its_own_key() {
    const N: usize = 1000;
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let port = etcd.client_port();
    let c = client(&endpoint);
    let p: Rc<str> = support::unique_prefix("thousand").into();
    let key = |i: usize| format!("{p}{i:04}");

    let created = Rc::new(Cell::new(0usize));
    let checked = Rc::new(Cell::new(false));
    let acks = Rc::new(Cell::new(0u32));
    // Per watch: the events it got.
    let got: Rc<Vec<RefCell<Vec<Ev>>>> = Rc::new((0..N).map(|_| RefCell::default()).collect());
    for i in 0..N {
        let (h, cancelled) = (Handle::default(), Rc::new(Cell::new(false)));
        let (cr, ck, a, g, h2, c1, p1, ep) = (
            created.clone(),
            checked.clone(),
            acks.clone(),
            got.clone(),
            h.clone(),
            c.clone(),
            p.clone(),
            endpoint.clone(),
        );
        h.set(c.watch(key(i), WatchOptions::new(), move |r| {
            assert!(!cancelled.get(), "watch {i}: callback after cancel returned");
            let resp = r.unwrap_or_else(|e| panic!("watch {i}: {e}"));
            if resp.created {
                assert!(resp.events.is_empty());
                cr.set(cr.get() + 1);
                if cr.get() == N {
                    // Every create is answered: the server holds N watchers on one stream,
                    // and this client has one connection.
                    assert_eq!(metric(&ep, STREAMS), 1.0, "watch streams");
                    assert_eq!(metric(&ep, WATCHERS), N as f64, "watchers");
                    assert_eq!(support::client::connections_to(port), 1);
                    ck.set(true);
                    for j in 0..N {
                        c1.put(format!("{p1}{j:04}"), format!("v{j}"), PutOptions::new(), |r| {
                            r.expect("put");
                        });
                    }
                }
                return;
            }
            g[i].borrow_mut().extend(events_of(&resp));
            h2.cancel(&cancelled, &a);
        }));
    }
    drive(&c, Duration::from_secs(40));

    assert!(checked.get(), "all {N} watches were created");
    for i in 0..N {
        let got = got[i].borrow();
        assert_eq!(got.len(), 1, "watch {i}: {got:?}");
        assert_eq!((got[0].0, &got[0].1, &got[0].2), (PUT, &key(i), &format!("v{i}")));
    }
    assert_eq!(acks.get(), N as u32);
    assert_eq!(support::client::connections_to(port), 1);
    wait_for_metric(&endpoint, WATCHERS, 0.0, Duration::from_secs(5));
}

#[test]
fn cancel_from_the_watchs_own_callback() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let c = client(&endpoint);
    let p = support::unique_prefix("selfcancel");
    let key: Rc<str> = format!("{p}k").into();

    let calls: Rc<RefCell<Vec<WatchResponse>>> = Rc::default();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let late_done = Rc::new(Cell::new(0u32));
    let (cl, h2, cd, a, c1, k1, ld) = (
        calls.clone(),
        h.clone(),
        cancelled.clone(),
        Rc::clone(&acks),
        c.clone(),
        key.clone(),
        late_done.clone(),
    );
    h.set(c.watch(key.to_string(), WatchOptions::new(), move |r| {
        assert!(!cd.get(), "callback after cancel returned: {r:?}");
        let resp = r.expect("watch response");
        let created = resp.created;
        cl.borrow_mut().push(resp);
        if created {
            // Five writes at once, so more events are on their way when the first arrives.
            for i in 0..5 {
                c1.put(k1.to_string(), format!("v{i}"), PutOptions::new(), |r| {
                    r.expect("put");
                });
            }
            return;
        }
        // First event: cancel from inside the callback, then write more.
        h2.cancel(&cd, &a);
        for i in 0..3 {
            let ld = ld.clone();
            c1.put(k1.to_string(), format!("late{i}"), PutOptions::new(), move |r| {
                r.expect("put");
                ld.set(ld.get() + 1);
            });
        }
    }));
    drive(&c, Duration::from_secs(20));

    let calls = calls.borrow();
    assert_eq!(calls.len(), 2, "created, then the one batch that cancelled: {calls:?}");
    assert!(calls[0].created && calls[0].events.is_empty());
    assert!(!calls[1].events.is_empty());
    assert_eq!(acks.get(), 1, "cancel callback ran once");
    assert_eq!(late_done.get(), 3);
    // The late writes happened (pipelined, so in any order): 5 + 3 versions of the key.
    assert_eq!(ok(&c, |cb| c.get(key.to_string(), GetOptions::new(), cb)).kvs[0].version, 8);
    wait_for_metric(&endpoint, WATCHERS, 0.0, Duration::from_secs(5));
}

#[test]
fn cancelling_a_watch_drops_its_events_already_received() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("crosscancel");
    let key: Rc<str> = format!("{p}k").into();

    // Two watches on one key; one write reaches both, usually in the same read. Whichever
    // callback runs first cancels the other (whose event is then already received or on its
    // way) and itself: exactly one of them may see the event.
    let handles = [Handle::default(), Handle::default()];
    let cancelled = [Rc::new(Cell::new(false)), Rc::new(Cell::new(false))];
    let events = Rc::new(RefCell::new([0u32; 2]));
    let created = Rc::new(Cell::new(0));
    let acks: Rc<Cell<u32>> = Rc::default();
    for i in 0..2 {
        let (hs, cds, ev, cr, a, c1, k1) = (
            handles.clone(),
            cancelled.clone(),
            events.clone(),
            created.clone(),
            acks.clone(),
            c.clone(),
            key.clone(),
        );
        handles[i].set(c.watch(key.to_string(), WatchOptions::new(), move |r| {
            assert!(!cds[i].get(), "watch {i}: callback after cancel returned");
            let resp = r.unwrap_or_else(|e| panic!("watch {i}: {e}"));
            if resp.created {
                cr.set(cr.get() + 1);
                if cr.get() == 2 {
                    c1.put(k1.to_string(), "v", PutOptions::new(), |r| {
                        r.expect("put");
                    });
                }
                return;
            }
            ev.borrow_mut()[i] += 1;
            let other = 1 - i;
            hs[other].cancel(&cds[other], &a);
            hs[i].cancel(&cds[i], &a);
        }));
    }
    drive(&c, Duration::from_secs(20));
    let events = *events.borrow();
    assert_eq!(events.iter().sum::<u32>(), 1, "per watch: {events:?}");
    assert_eq!(acks.get(), 2);
}

#[test]
fn a_watch_from_a_compacted_revision_ends_with_one_error_carrying_the_revision() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("compacted");
    let key = format!("{p}k");
    let revs: Vec<i64> = (0..5).map(|i| put(&c, &key, format!("v{i}"))).collect();
    let compact_at = revs[3];
    ok(&c, |cb| c.compact(compact_at, CompactOptions::new(), cb));

    let calls: Rc<RefCell<Vec<Result<WatchResponse, EtcdError>>>> = Rc::default();
    let cl = calls.clone();
    let w = c.watch(key.clone(), WatchOptions::new().start_revision(1), move |r| {
        cl.borrow_mut().push(r)
    });
    // The watch ends by itself: the client becomes idle without a cancel.
    drive(&c, Duration::from_secs(20));
    {
        let calls = calls.borrow();
        let (last, before) = calls.split_last().expect("the watch was called back");
        // A created response may precede the error (etcd sends one); nothing else may.
        assert!(before.len() <= 1, "{calls:?}");
        for r in before {
            let r = r.as_ref().expect("only the last call is an error");
            assert!(r.created && r.events.is_empty(), "{r:?}");
        }
        let e = last.as_ref().expect_err("the watch ends with an error");
        assert_eq!(
            (e.code(), e.operation(), e.compact_revision()),
            (Code::Cancelled, "watch", Some(compact_at)),
            "{e}"
        );
    }

    // Nothing after the error, even for new writes of the key.
    let n = calls.borrow().len();
    let rev = put(&c, &key, "after");
    let acked = Rc::new(Cell::new(0));
    let a = acked.clone();
    w.cancel(move |r| {
        r.expect("cancelling an ended watch succeeds");
        a.set(a.get() + 1);
    });
    drive(&c, Duration::from_secs(10));
    assert_eq!(acked.get(), 1);
    // A fresh watch sees the new write at its revision; the ended one stays silent.
    let seen: Rc<RefCell<Vec<Ev>>> = Rc::default();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let (s, h2, cd, a) = (seen.clone(), h.clone(), cancelled.clone(), Rc::clone(&acks));
    h.set(c.watch(key.clone(), WatchOptions::new().start_revision(rev), move |r| {
        let resp = r.expect("watch response");
        s.borrow_mut().extend(events_of(&resp));
        if !s.borrow().is_empty() {
            h2.cancel(&cd, &a);
        }
    }));
    drive(&c, Duration::from_secs(10));
    assert_eq!(*seen.borrow(), [(PUT, key.clone(), "after".to_string(), rev)]);
    assert_eq!(calls.borrow().len(), n, "the compacted watch fired again");
}

#[test]
fn prev_kv_on_update_and_delete() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("prevkv");
    let key: Rc<str> = format!("{p}k").into();

    // Two watches on the key: with and without prev_kv. Each cancels after 3 events.
    let with: Rc<RefCell<Vec<evetcd::Event>>> = Rc::default();
    let without: Rc<RefCell<Vec<evetcd::Event>>> = Rc::default();
    let created = Rc::new(Cell::new(0));
    let acks: Rc<Cell<u32>> = Rc::default();
    for (store, opts) in
        [(with.clone(), WatchOptions::new().prev_kv(true)), (without.clone(), WatchOptions::new())]
    {
        let (h, cancelled) = (Handle::default(), Rc::new(Cell::new(false)));
        let (h2, a, cr, c1, k1) =
            (h.clone(), acks.clone(), created.clone(), c.clone(), key.clone());
        h.set(c.watch(key.to_string(), opts, move |r| {
            assert!(!cancelled.get(), "callback after cancel returned");
            let resp = r.expect("watch response");
            if resp.created {
                cr.set(cr.get() + 1);
                if cr.get() == 2 {
                    // create, update, delete: one after another.
                    let (c2, k2) = (c1.clone(), k1.clone());
                    c1.put(k1.to_string(), "a", PutOptions::new(), move |r| {
                        r.expect("put a");
                        let (c3, k3) = (c2.clone(), k2.clone());
                        c2.put(k2.to_string(), "b", PutOptions::new(), move |r| {
                            r.expect("put b");
                            c3.delete(k3.to_string(), DeleteOptions::new(), |r| {
                                assert_eq!(r.expect("delete").deleted, 1);
                            });
                        });
                    });
                }
                return;
            }
            store.borrow_mut().extend(resp.events);
            if store.borrow().len() >= 3 {
                h2.cancel(&cancelled, &a);
            }
        }));
    }
    drive(&c, Duration::from_secs(20));
    assert_eq!(acks.get(), 2);

    let with = with.borrow();
    assert_eq!(with.len(), 3, "{with:?}");
    let kinds: Vec<i32> = with.iter().map(|e| e.r#type).collect();
    assert_eq!(kinds, [PUT, PUT, DELETE]);
    let kv = |i: usize| with[i].kv.as_ref().unwrap();
    let prev = |i: usize| with[i].prev_kv.as_ref();
    // Create: no previous value.
    assert_eq!((&kv(0).value[..], kv(0).version), (&b"a"[..], 1));
    assert!(prev(0).is_none(), "a create has no prev_kv: {:?}", prev(0));
    // Update: the previous value with its revisions.
    assert_eq!((&kv(1).value[..], kv(1).version), (&b"b"[..], 2));
    let p1 = prev(1).expect("update carries prev_kv");
    assert_eq!(
        (&p1.key[..], &p1.value[..], p1.mod_revision, p1.version),
        (key.as_bytes(), &b"a"[..], kv(0).mod_revision, 1)
    );
    // Delete: the event's kv is the key at the delete revision; prev_kv is the last value.
    assert_eq!(&kv(2).key[..], key.as_bytes());
    assert!(kv(2).value.is_empty());
    assert_eq!(kv(2).mod_revision, kv(1).mod_revision + 1);
    let p2 = prev(2).expect("delete carries prev_kv");
    assert_eq!((&p2.value[..], p2.mod_revision, p2.version), (&b"b"[..], kv(1).mod_revision, 2));

    let without = without.borrow();
    assert_eq!(without.len(), 3);
    assert!(without.iter().all(|e| e.prev_kv.is_none()), "prev_kv only when asked: {without:?}");
}

#[test]
fn no_put_and_no_delete_filters() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p: Rc<str> = support::unique_prefix("filters").into();
    let k = |s: &str| format!("{p}{s}");
    let done_key = k("zz-done");

    // Each watch stops at the sentinel `zz-done`, which is put and then deleted last: the
    // no_delete watch stops at its put, the no_put watch at its delete.
    let no_put: Rc<RefCell<Vec<Ev>>> = Rc::default();
    let no_delete: Rc<RefCell<Vec<Ev>>> = Rc::default();
    let created = Rc::new(Cell::new(0));
    let acks: Rc<Cell<u32>> = Rc::default();
    for (store, opts) in [
        (no_put.clone(), WatchOptions::new().no_put(true)),
        (no_delete.clone(), WatchOptions::new().no_delete(true)),
    ] {
        let (h, cancelled) = (Handle::default(), Rc::new(Cell::new(false)));
        let (h2, a, cr, c1, p1, dk) =
            (h.clone(), acks.clone(), created.clone(), c.clone(), p.clone(), done_key.clone());
        h.set(c.watch(p.to_string(), opts.prefix(true), move |r| {
            assert!(!cancelled.get(), "callback after cancel returned");
            let resp = r.expect("watch response");
            if resp.created {
                cr.set(cr.get() + 1);
                if cr.get() == 2 {
                    write_filter_script(c1.clone(), p1.clone(), 0);
                }
                return;
            }
            let evs = events_of(&resp);
            let done = evs.iter().any(|e| e.1 == dk);
            store.borrow_mut().extend(evs);
            if done {
                h2.cancel(&cancelled, &a);
            }
        }));
    }
    drive(&c, Duration::from_secs(20));
    assert_eq!(acks.get(), 2);

    let no_put = no_put.borrow();
    let no_delete = no_delete.borrow();
    let brief = |v: &[Ev]| -> Vec<(i32, String, String)> {
        v.iter().map(|e| (e.0, e.1.clone(), e.2.clone())).collect()
    };
    let ev = |t: i32, key: &str, v: &str| (t, k(key), v.to_string());
    assert_eq!(
        brief(&no_delete),
        [ev(PUT, "a", "1"), ev(PUT, "b", "1"), ev(PUT, "a", "2"), ev(PUT, "zz-done", "")]
    );
    assert_eq!(
        brief(&no_put),
        [ev(DELETE, "a", ""), ev(DELETE, "a", ""), ev(DELETE, "b", ""), ev(DELETE, "zz-done", "")]
    );
    // Between them, every revision of the script exactly once.
    // (The range delete is one revision with two events.)
    let mut revs: Vec<i64> = no_put.iter().chain(no_delete.iter()).map(|e| e.3).collect();
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 7, "{revs:?}");
    assert!(revs.windows(2).all(|w| w[1] == w[0] + 1), "{revs:?}");
    assert_eq!(no_put[1].3, no_put[2].3, "a and b deleted at one revision");
}

/// put a=1, put b=1, delete a, put a=2, delete prefix a..b (deletes a, b, one revision),
/// put zz-done, delete zz-done; one after another.
fn write_filter_script(c: Client, p: Rc<str>, step: usize) {
    let c2 = c.clone();
    let p2 = p.clone();
    let next = move || write_filter_script(c2, p2, step + 1);
    let k = |s: &str| format!("{p}{s}");
    match step {
        0 => c.put(k("a"), "1", PutOptions::new(), move |r| {
            r.expect("put");
            next()
        }),
        1 => c.put(k("b"), "1", PutOptions::new(), move |r| {
            r.expect("put");
            next()
        }),
        2 => c.delete(k("a"), DeleteOptions::new(), move |r| {
            assert_eq!(r.expect("delete").deleted, 1);
            next()
        }),
        3 => c.put(k("a"), "2", PutOptions::new(), move |r| {
            r.expect("put");
            next()
        }),
        4 => c.delete(k("a"), DeleteOptions::new().range_end(k("c")), move |r| {
            assert_eq!(r.expect("delete").deleted, 2);
            next()
        }),
        5 => c.put(k("zz-done"), "", PutOptions::new(), move |r| {
            r.expect("put");
            next()
        }),
        6 => c.delete(k("zz-done"), DeleteOptions::new(), move |r| {
            assert_eq!(r.expect("delete").deleted, 1);
        }),
        _ => unreachable!(),
    }
}

#[test]
fn request_progress_reaches_every_watch_and_progress_notify_is_periodic() {
    // A short notification interval, so the progress_notify option can be seen working.
    let etcd = Etcd::start_with(&["--experimental-watch-progress-notify-interval=200ms"]);
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("progress");
    put(&c, format!("{p}x"), "1");
    let rev = current_revision(&c);

    // Watch 0 plain, watch 1 with progress_notify. Once both are created, request_progress();
    // both must get a -1 response. Watch 1 must also get periodic notifications with its own
    // id; once it has two of them and both have the -1 response, both are cancelled.
    let calls: Rc<[RefCell<Vec<WatchResponse>>; 2]> = Rc::default();
    let handles = [Handle::default(), Handle::default()];
    let cancelled = Rc::new(Cell::new(false));
    let acks: Rc<Cell<u32>> = Rc::default();
    let maybe_finish = {
        let (calls, handles, cancelled, acks) =
            (calls.clone(), handles.clone(), cancelled.clone(), acks.clone());
        Rc::new(move || {
            let has = |i: usize, f: &dyn Fn(&WatchResponse) -> bool| {
                calls[i].borrow().iter().filter(|r| f(r)).count()
            };
            let broadcast = |r: &WatchResponse| r.watch_id == -1;
            let own = |r: &WatchResponse| !r.created && r.watch_id != -1;
            if !cancelled.get()
                && has(0, &broadcast) >= 1
                && has(1, &broadcast) >= 1
                && has(1, &own) >= 2
            {
                for h in &handles {
                    h.cancel(&Rc::new(Cell::new(false)), &acks);
                }
                cancelled.set(true);
            }
        })
    };
    let created = Rc::new(Cell::new(0));
    for i in 0..2 {
        let opts = WatchOptions::new().prefix(true).progress_notify(i == 1);
        let (cl, cr, c1, cd, fin) =
            (calls.clone(), created.clone(), c.clone(), cancelled.clone(), maybe_finish.clone());
        handles[i].set(c.watch(p.clone(), opts, move |r| {
            assert!(!cd.get(), "watch {i}: callback after cancel returned");
            let resp = r.unwrap_or_else(|e| panic!("watch {i}: {e}"));
            let is_created = resp.created;
            cl[i].borrow_mut().push(resp);
            if is_created {
                cr.set(cr.get() + 1);
                if cr.get() == 2 {
                    c1.request_progress();
                }
            }
            fin();
        }));
    }
    drive(&c, Duration::from_secs(20));
    assert_eq!(acks.get(), 2);

    for i in 0..2 {
        let calls = calls[i].borrow();
        assert!(calls[0].created, "watch {i}: {calls:?}");
        let own_id = calls[0].watch_id;
        for r in calls.iter() {
            assert!(r.events.is_empty() && !r.canceled, "watch {i}: {r:?}");
            assert_eq!(
                r.header.as_ref().expect("header").revision,
                rev,
                "watch {i}: progress at the current revision"
            );
        }
        let broadcast: Vec<&WatchResponse> = calls.iter().filter(|r| r.watch_id == -1).collect();
        assert_eq!(broadcast.len(), 1, "watch {i}: one reply to request_progress: {calls:?}");
        assert!(!broadcast[0].created);
        let own: Vec<&WatchResponse> = calls[1..].iter().filter(|r| r.watch_id != -1).collect();
        if i == 0 {
            assert!(own.is_empty(), "no periodic progress without the option: {calls:?}");
        } else {
            assert!(own.len() >= 2, "{calls:?}");
            assert!(own.iter().all(|r| r.watch_id == own_id && !r.created), "{calls:?}");
        }
    }
}

#[test]
fn a_duplicate_watch_id_fails_that_create_with_the_servers_reason() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("dupid");
    let (ka, kb): (Rc<str>, Rc<str>) = (format!("{p}a").into(), format!("{p}b").into());

    let first: Rc<RefCell<Vec<WatchResponse>>> = Rc::default();
    let second: Rc<RefCell<Vec<Result<WatchResponse, EtcdError>>>> = Rc::default();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let (f, s, h2, cd, a, c1, ka1, kb1) = (
        first.clone(),
        second.clone(),
        h.clone(),
        cancelled.clone(),
        Rc::clone(&acks),
        c.clone(),
        ka.clone(),
        kb.clone(),
    );
    h.set(c.watch(ka.to_string(), WatchOptions::new().watch_id(7), move |r| {
        assert!(!cd.get(), "callback after cancel returned");
        let resp = r.expect("first watch");
        let created = resp.created;
        let has_events = !resp.events.is_empty();
        f.borrow_mut().push(resp);
        if created {
            // The same explicit id again on the same stream.
            let (s2, c2, ka2, kb2) = (s.clone(), c1.clone(), ka1.clone(), kb1.clone());
            let _dup = c1.watch(kb1.to_string(), WatchOptions::new().watch_id(7), move |r| {
                let failed = r.is_err();
                s2.borrow_mut().push(r);
                assert!(failed, "the duplicate create succeeded: {:?}", s2.borrow());
                {
                    // Write both keys: only the first watch may see anything.
                    c2.put(kb2.to_string(), "b", PutOptions::new(), |r| {
                        r.expect("put b");
                    });
                    c2.put(ka2.to_string(), "a", PutOptions::new(), |r| {
                        r.expect("put a");
                    });
                }
            });
        } else if has_events {
            h2.cancel(&cd, &a);
        }
    }));
    drive(&c, Duration::from_secs(20));

    let second = second.borrow();
    assert_eq!(second.len(), 1, "one call for the failed create: {second:?}");
    let e = second[0].as_ref().expect_err("the duplicate id fails");
    assert_eq!(
        (e.operation(), e.message()),
        ("watch", "mvcc: duplicate watch ID provided on the WatchStream"),
        "{e}"
    );
    assert_eq!(e.compact_revision(), None);

    let first = first.borrow();
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first[0].created && first[0].watch_id == 7, "{:?}", first[0]);
    assert_eq!(first[1].watch_id, 7);
    let evs = events_of(&first[1]);
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].0, &evs[0].1[..], &evs[0].2[..]), (PUT, &*ka, "a"));
    assert_eq!(acks.get(), 1);
}

#[test]
fn handle_semantics_drop_cancel_twice_and_cancel_after_the_client_is_gone() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("handle");

    // 1. Dropping the only handle does not cancel: events keep coming. (Such a watch lives
    //    as long as the client: the client stays busy, so the loop runs until `done`.)
    let seen: Rc<RefCell<Vec<Ev>>> = Rc::default();
    let done = Rc::new(Cell::new(false));
    {
        let (s, d, c1, key) = (seen.clone(), done.clone(), c.clone(), format!("{p}dropped"));
        let w = c.watch(key.clone(), WatchOptions::new(), move |r| {
            assert!(!d.get(), "no third response");
            let resp = r.expect("watch response");
            if resp.created {
                c1.put(key.clone(), "1", PutOptions::new(), |r| {
                    r.expect("put");
                });
                return;
            }
            s.borrow_mut().extend(events_of(&resp));
            if s.borrow().len() == 1 {
                // The second write only after the first event: a second response.
                c1.put(key.clone(), "2", PutOptions::new(), |r| {
                    r.expect("put");
                });
            } else {
                d.set(true);
            }
        });
        drop(w);
    }
    drive_until(&c, Duration::from_secs(20), || done.get());
    assert!(!c.is_idle(), "the watch whose handle was dropped is still live");
    let vals: Vec<String> = seen.borrow().iter().map(|e| e.2.clone()).collect();
    assert_eq!(vals, ["1", "2"]);

    // 2. Cancelling twice: both callbacks get Ok, once each, and the watch is silent after.
    let c2 = client(&etcd.endpoint());
    let fired = Rc::new(Cell::new(0));
    let cancelled = Rc::new(Cell::new(false));
    let acks: Rc<RefCell<Vec<u32>>> = Rc::default();
    let h = Handle::default();
    let (f, cd, h2, a, c3, key) = (
        fired.clone(),
        cancelled.clone(),
        h.clone(),
        acks.clone(),
        c2.clone(),
        format!("{p}twice"),
    );
    h.set(c2.watch(key.clone(), WatchOptions::new(), move |r| {
        assert!(!cd.get(), "callback after cancel returned");
        assert!(r.expect("watch response").created);
        f.set(f.get() + 1);
        let w = h2.get();
        for n in 1..=2 {
            let a = a.clone();
            w.cancel(move |r| {
                r.expect("cancel");
                a.borrow_mut().push(n);
            });
        }
        cd.set(true);
        // A write that the cancelled watch must not see.
        c3.put(key.clone(), "x", PutOptions::new(), |r| {
            r.expect("put");
        });
    }));
    drive(&c2, Duration::from_secs(20));
    assert_eq!(fired.get(), 1);
    let mut acks = acks.borrow().clone();
    acks.sort();
    assert_eq!(acks, [1, 2], "each cancel called back once");
    // And a third time, after the watch is over.
    let again = Rc::new(Cell::new(false));
    let ag = again.clone();
    h.get().cancel(move |r| {
        r.expect("cancel after the end");
        ag.set(true);
    });
    drive(&c2, Duration::from_secs(5));
    assert!(again.get());

    // 3. Cancel after every clone of the client was dropped: Ok at once.
    let w = {
        let c4 = client(&etcd.endpoint());
        let w = c4.watch(format!("{p}gone"), WatchOptions::new(), |_| {});
        c4.process(); // connect and send the create
        w
    };
    let gone = Rc::new(Cell::new(0));
    let g = gone.clone();
    w.cancel(move |r| {
        r.expect("cancel without a client");
        g.set(g.get() + 1);
    });
    assert_eq!(gone.get(), 1, "called back at once when the client is gone");
    let g = gone.clone();
    w.cancel(move |r| {
        r.expect("cancel again without a client");
        g.set(g.get() + 1);
    });
    assert_eq!(gone.get(), 2);
    drop(c);
}

#[test]
fn a_watch_cancelled_before_its_create_is_answered_is_removed_from_the_server() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let c = client(&endpoint);
    let p: Rc<str> = support::unique_prefix("earlycancel").into();

    // Watch A is live, so the stream is open. From A's created callback: watch B and cancel
    // it at once (its create is already queued for the stream), then watch C. When C's
    // created reply arrives, B's has arrived before it (creates are answered in order), and
    // the client has told the server to drop B by the end of that turn: the server must end
    // up with A and C only.
    let (ha, hc) = (Handle::default(), Handle::default());
    let acks: Rc<Cell<u32>> = Rc::default();
    let b_calls = Rc::new(Cell::new(0));
    let c_created = Rc::new(Cell::new(false));
    let (a_cancelled, c_cancelled) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let (c1, p1, hc1, a1, bc, ccr, acd, ccd) = (
        c.clone(),
        p.clone(),
        hc.clone(),
        acks.clone(),
        b_calls.clone(),
        c_created.clone(),
        a_cancelled.clone(),
        c_cancelled.clone(),
    );
    ha.set(c.watch(format!("{p}a"), WatchOptions::new(), move |r| {
        assert!(!acd.get(), "A: callback after cancel returned");
        assert!(r.expect("A").created, "A gets only its created reply");
        let bc = bc.clone();
        let b = c1.watch(format!("{p1}b"), WatchOptions::new(), move |r| {
            bc.set(bc.get() + 1);
            panic!("B's callback ran after B was cancelled: {r:?}");
        });
        let a2 = a1.clone();
        b.cancel(move |r| {
            r.expect("cancel B");
            a2.set(a2.get() + 1);
        });
        let (ccr2, ccd2) = (ccr.clone(), ccd.clone());
        hc1.set(c1.watch(format!("{p1}c"), WatchOptions::new(), move |r| {
            assert!(!ccd2.get(), "C: callback after cancel returned");
            assert!(r.expect("C").created);
            ccr2.set(true);
        }));
    }));
    drive_until(&c, Duration::from_secs(20), || c_created.get());
    wait_for_metric(&endpoint, WATCHERS, 2.0, Duration::from_secs(5));
    ha.cancel(&a_cancelled, &acks);
    hc.cancel(&c_cancelled, &acks);
    drive(&c, Duration::from_secs(20));
    assert_eq!(b_calls.get(), 0);
    assert_eq!(acks.get(), 3);
    wait_for_metric(&endpoint, WATCHERS, 0.0, Duration::from_secs(5));
}

#[test]
fn fragmented_responses_are_merged_before_delivery() {
    // etcd splits a response (when asked to) above its request limit plus 512 KiB of gRPC
    // allowance; a small request limit keeps the writes small.
    let etcd = Etcd::start_with(&["--max-request-bytes=8192"]);
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("fragment");
    const N: usize = 100;
    const SIZE: usize = 7000;
    let value = "x".repeat(SIZE);
    for i in 0..N {
        put(&c, format!("{p}{i:03}"), value.clone());
    }
    // One delete of N keys: one revision, N events carrying 7 KB prev_kv each (~700 KB, so
    // at least two fragments).
    let calls: Rc<[RefCell<Vec<WatchResponse>>; 2]> = Rc::default();
    let created = Rc::new(Cell::new(0));
    let acks: Rc<Cell<u32>> = Rc::default();
    for i in 0..2 {
        let opts = WatchOptions::new().prefix(true).prev_kv(true).fragment(i == 0);
        let (h, cancelled) = (Handle::default(), Rc::new(Cell::new(false)));
        let (cl, cr, c1, p1, h2, a) =
            (calls.clone(), created.clone(), c.clone(), p.clone(), h.clone(), acks.clone());
        h.set(c.watch(p.clone(), opts, move |r| {
            assert!(!cancelled.get(), "watch {i}: callback after cancel returned");
            let resp = r.unwrap_or_else(|e| panic!("watch {i}: {e}"));
            if resp.created {
                cr.set(cr.get() + 1);
                if cr.get() == 2 {
                    c1.delete(p1.clone(), DeleteOptions::new().prefix(true), |r| {
                        assert_eq!(r.expect("delete").deleted, N as i64);
                    });
                }
                return;
            }
            cl[i].borrow_mut().push(resp);
            h2.cancel(&cancelled, &a);
        }));
    }
    drive(&c, Duration::from_secs(20));
    assert_eq!(acks.get(), 2);
    for i in 0..2 {
        let calls = calls[i].borrow();
        assert_eq!(calls.len(), 1, "watch {i}: one response for the revision");
        let r = &calls[0];
        assert!(!r.fragment, "watch {i}: delivered whole");
        assert_eq!(r.events.len(), N, "watch {i}");
        for (j, e) in r.events.iter().enumerate() {
            let prev = e.prev_kv.as_ref().expect("prev_kv");
            assert_eq!(
                (e.r#type, text(&prev.key), prev.value.len()),
                (DELETE, format!("{p}{j:03}"), SIZE),
                "watch {i}"
            );
        }
    }
}

/// Adds events `first..=last` to a trace, merging with a range that ends just before.
fn trace_events(trace: &mut Vec<String>, first: i64, last: i64) {
    if let Some(prev) = trace.last_mut() {
        if let Some((a, b)) = prev.strip_prefix("events ").and_then(|r| r.split_once("..=")) {
            if b.parse::<i64>().ok() == Some(first - 1) {
                *prev = format!("events {a}..={last}");
                return;
            }
        }
    }
    trace.push(format!("events {first}..={last}"));
}

/// Writes `{p}k0000`..`{p}k0599` in order with its own client, retrying failed puts (a put
/// whose outcome was ambiguous may so be applied twice), then `{p}done`. Before k0200 it
/// waits for the live watch to report on `stalled` that it has stopped its loop at k0199,
/// then asks for the restart of etcd; it sends on `resume` once it has written 50 keys to
/// the restarted etcd.
fn writer(
    endpoint: String,
    p: String,
    stalled: mpsc::Receiver<()>,
    restart: mpsc::Sender<()>,
    restarted: Arc<AtomicBool>,
    resume: mpsc::Sender<()>,
    deadline: Instant,
) {
    let c = client(&endpoint);
    let mut keys: Vec<String> = (0..600).map(|i| format!("k{i:04}")).collect();
    keys.push("done".into());
    let (mut failures, mut after_restart) = (0, 0);
    let mut resume = Some(resume);
    for (i, k) in keys.iter().enumerate() {
        if i == 200 {
            let wait = deadline.saturating_duration_since(Instant::now());
            stalled.recv_timeout(wait).expect("the live watch stalls at k0199");
            restart.send(()).expect("restarter is waiting");
        }
        loop {
            match support::client::block(&c, |cb| {
                c.put(format!("{p}{k}"), format!("v{i}"), PutOptions::new(), cb)
            }) {
                Ok(_) => break,
                Err(e) => {
                    failures += 1;
                    assert!(Instant::now() < deadline, "writer: put {k} still failing: {e}");
                    std::thread::sleep(Duration::from_millis(20)); // backoff
                }
            }
        }
        if restarted.load(Ordering::SeqCst) {
            after_restart += 1;
            if after_restart == 50 {
                eprintln!("writer: resuming the watch after {k}");
                resume.take().map(|r| r.send(()));
            }
        }
    }
    eprintln!("writer: {failures} failed attempts retried, {after_restart} puts after the restart");
}

#[test]
fn a_restart_of_etcd_while_another_client_writes_loses_and_repeats_nothing() {
    let deadline = Instant::now() + Duration::from_secs(60);
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let c = client(&endpoint);
    let p = support::unique_prefix("restart");
    let start = current_revision(&c) + 1; // the first write's revision, at the earliest

    // Restarts etcd when the writer asks; hands the member back when done.
    let (restart_tx, restart_rx) = mpsc::channel::<()>();
    let restarted = Arc::new(AtomicBool::new(false));
    let rs = restarted.clone();
    let restarter = std::thread::spawn(move || {
        let mut etcd = etcd;
        if restart_rx.recv().is_ok() {
            etcd.restart();
            rs.store(true, Ordering::SeqCst);
        }
        etcd
    });
    // The writer starts only once the live watch is created.
    let writer_failed = Arc::new(AtomicBool::new(false));
    let writer_thread: Rc<RefCell<Option<std::thread::JoinHandle<()>>>> = Rc::default();
    // To be sure the resume path is exercised (events written while the watch is not on the
    // server, which a watch re-created "from now" would lose), the live watch's callback
    // stalls this thread's loop at k0199, before etcd is restarted, until the writer has
    // written 50 keys to the restarted etcd. Channel-synchronised, not timed.
    let (stalled_tx, stalled_rx) = mpsc::channel::<()>();
    let mut stalled_rx = Some(stalled_rx);
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let mut resume_rx = Some(resume_rx);
    // What the live watch saw, for failure messages.
    let trace: Rc<RefCell<Vec<String>>> = Rc::default();

    let live: Rc<RefCell<Vec<Ev>>> = Rc::default();
    // Per created response: (events delivered before it, its header revision).
    let creates: Rc<RefCell<Vec<(usize, i64)>>> = Rc::default();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let done_key = format!("{p}done");
    {
        let (l, cr, h2, cd, a, wt, wf, ep, p1, dk) = (
            live.clone(),
            creates.clone(),
            h.clone(),
            cancelled.clone(),
            Rc::clone(&acks),
            writer_thread.clone(),
            writer_failed.clone(),
            endpoint.clone(),
            p.clone(),
            done_key.clone(),
        );
        let tr = trace.clone();
        let mut restart_tx = Some(restart_tx);
        let mut resume_tx = Some(resume_tx);
        let (rs, c1, k0199) = (restarted.clone(), c.clone(), format!("{p}k0199"));
        h.set(c.watch(
            p.clone(),
            WatchOptions::new().prefix(true).start_revision(start),
            move |r| {
                assert!(!cd.get(), "callback after cancel returned");
                assert!(Instant::now() < deadline, "safety deadline passed");
                let resp = r.expect("the live watch never fails");
                if resp.created {
                    assert!(resp.events.is_empty());
                    let rev = resp.header.as_ref().expect("header").revision;
                    cr.borrow_mut().push((l.borrow().len(), rev));
                    tr.borrow_mut().push(format!("created at {rev}"));
                    if let Some(tx) = restart_tx.take() {
                        let (ep, p1, wf, rs) = (ep.clone(), p1.clone(), wf.clone(), rs.clone());
                        let resume = resume_tx.take().expect("once");
                        let stalled = stalled_rx.take().expect("once");
                        *wt.borrow_mut() = Some(std::thread::spawn(move || {
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                writer(ep, p1, stalled, tx, rs, resume, deadline)
                            }));
                            if r.is_err() {
                                wf.store(true, Ordering::SeqCst);
                            }
                        }));
                    }
                    return;
                }
                if resp.events.is_empty() {
                    // A reply to request_progress().
                    assert_eq!(resp.watch_id, -1, "{resp:?}");
                    return;
                }
                let evs = events_of(&resp);
                let done = evs.iter().any(|e| e.1 == dk);
                let stall = evs.iter().any(|e| e.1 == k0199);
                // Only the writer writes, one key per revision, from `start` on.
                if l.borrow().is_empty() {
                    assert_eq!(evs[0].3, start, "the first event");
                }
                trace_events(&mut tr.borrow_mut(), evs[0].3, evs[evs.len() - 1].3);
                assert_contiguous(&l.borrow(), &evs);
                l.borrow_mut().extend(evs);
                if done {
                    h2.cancel(&cd, &a);
                    return;
                }
                // Progress replies the client asked for must never move where the watch
                // resumes (etcd 3.5 answers them even while a watcher is catching up).
                c1.request_progress();
                if let Some(rx) = resume_rx.take_if(|_| stall) {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    tr.borrow_mut().push("stalled".into());
                    stalled_tx.send(()).expect("the writer waits for the stall");
                    match rx.recv_timeout(wait) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
                        Err(e) => panic!("the writer never resumed the watch: {e}"),
                    }
                    tr.borrow_mut().push("resumed".into());
                }
            },
        ));
    }
    // Safety nets: fail early if the writer failed, or if the live watch has still not seen
    // everything 10 s after the writer finished (rather than at the 60 s deadline).
    let mut writer_done_at: Option<Instant> = None;
    drive_checking(&c, Duration::from_secs(60), || {
        assert!(!writer_failed.load(Ordering::SeqCst), "the writer thread failed");
        let finished = writer_thread.borrow().as_ref().is_some_and(|t| t.is_finished());
        if finished {
            let at = *writer_done_at.get_or_insert_with(Instant::now);
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "the writer is done but the live watch stalled: {} events, the last {:?}, \
                 created responses (events before, revision) {:?}",
                live.borrow().len(),
                live.borrow().last(),
                creates.borrow()
            );
        }
    });
    writer_thread.borrow_mut().take().expect("writer started").join().expect("writer");
    let etcd = restarter.join().expect("restarter");
    assert_eq!(acks.get(), 1);
    let creates = creates.borrow();
    assert!(creates.len() >= 2, "the watch was re-created after the restart: {creates:?}");

    // Ground truth: the same range replayed from the same revision by a fresh watch.
    let replay: Rc<RefCell<Vec<Ev>>> = Rc::default();
    let (h, cancelled, acks) = (Handle::default(), Rc::new(Cell::new(false)), Rc::default());
    let (rp, h2, cd, a, dk) =
        (replay.clone(), h.clone(), cancelled.clone(), Rc::clone(&acks), done_key.clone());
    h.set(c.watch(p.clone(), WatchOptions::new().prefix(true).start_revision(start), move |r| {
        assert!(!cd.get(), "callback after cancel returned");
        let evs = events_of(&r.expect("replay"));
        let done = evs.iter().any(|e| e.1 == dk);
        rp.borrow_mut().extend(evs);
        if done {
            h2.cancel(&cd, &a);
        }
    }));
    drive(&c, Duration::from_secs(20));
    drop(etcd);

    let live = live.borrow();
    let replay = replay.borrow();
    // The replay itself is complete: every key, in order (a retried put may appear twice).
    let mut distinct: Vec<&str> = replay.iter().map(|e| &e.1[p.len()..]).collect();
    distinct.dedup();
    let want: Vec<String> = (0..600).map(|i| format!("k{i:04}")).chain(["done".into()]).collect();
    assert_eq!(distinct, want, "the writer's keys, in order");
    assert!(replay.windows(2).all(|w| w[0].3 < w[1].3));
    if *live != *replay {
        let at = live.iter().zip(replay.iter()).position(|(a, b)| a != b);
        panic!(
            "live watch ({} events) differs from the replay ({} events) at index {at:?}: \
             live {:?}, replay {:?}",
            live.len(),
            replay.len(),
            at.map(|i| &live[i]),
            at.map(|i| &replay[i])
        );
    }
    // The re-created watch caught up on events written while it was off the server.
    let (before, rev) = creates[1];
    let replayed = live[before..].iter().filter(|e| e.3 <= rev).count();
    assert!(
        replayed >= 50,
        "{replayed} events replayed by the re-created watch: {creates:?}; trace {:?}",
        trace.borrow()
    );
    eprintln!(
        "{} events, created responses (events before, revision) {creates:?}, \
         {replayed} events replayed after the re-create",
        live.len(),
    );
}
