//! Leases against a real etcd: grant (server-chosen and chosen ids), time-to-live with keys,
//! the lease list, revoke (the attached keys go), and keepalives: one keeps a 2 s lease alive
//! for 10 s with a renewal every third of the TTL, a cancelled one lets its lease expire and
//! its key vanish, a lease that is gone ends its keepalives with exactly one NOT_FOUND each,
//! 1,000 keepalives share one stream, and renewals go on across a restart of etcd.
//!
//! After the setup, everything is driven from callbacks by one poll(2) loop over the test's
//! clients ([`drive_all`], [`drive_until`]), which fails after a deadline instead of hanging.
//! The only clocks are the keepalives' own renewals; no test sleeps to synchronise.

mod support;

use evetcd::{
    Client, Code, EtcdError, EventType, GetOptions, Keepalive, LeaseGrantOptions,
    LeaseTimeToLiveResponse, PutOptions, Watch, WatchOptions,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use support::client::{block, client, connections_to, drive_all, drive_until, ok, Slot};
use support::metrics::metric;
use support::Etcd;

/// LeaseKeepAlive streams the server has accepted (a counter; etcd has no gauge for them).
const KEEPALIVE_STREAMS: &str = r#"grpc_server_started_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"}"#;
/// Renewal requests the server has received on LeaseKeepAlive streams.
const KEEPALIVE_REQUESTS: &str = r#"grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"}"#;

/// Cancels a keepalive: `stopped` is set once `cancel()` has returned (its callback must never
/// run after that), and `acks` counts the cancel's callbacks, which must come later, with Ok.
fn stop_keepalive(ka: &Keepalive, stopped: &Cell<bool>, acks: &Rc<Cell<u32>>) {
    let (a, inside) = (acks.clone(), Rc::new(Cell::new(true)));
    let i = inside.clone();
    ka.cancel(move |r| {
        assert!(!i.get(), "cancel callback ran inside cancel()");
        r.expect("cancel succeeds");
        a.set(a.get() + 1);
    });
    inside.set(false);
    stopped.set(true);
}

/// The same for a watch.
fn stop_watch(w: &Watch, stopped: &Cell<bool>, acks: &Rc<Cell<u32>>) {
    let (a, inside) = (acks.clone(), Rc::new(Cell::new(true)));
    let i = inside.clone();
    w.cancel(move |r| {
        assert!(!i.get(), "cancel callback ran inside cancel()");
        r.expect("cancel succeeds");
        a.set(a.get() + 1);
    });
    inside.set(false);
    stopped.set(true);
}

/// Grants a lease of `ttl` seconds (the server must grant exactly that) and returns its id.
fn grant(c: &Client, ttl: i64) -> i64 {
    let g = ok(c, |cb| c.lease_grant(ttl, LeaseGrantOptions::new(), cb));
    assert_eq!(g.ttl, ttl, "{g:?}");
    assert!(g.id > 0, "{g:?}");
    g.id
}

/// Puts `key` attached to `lease` (0: none); returns the revision.
fn put(c: &Client, key: &str, value: &str, lease: i64) -> i64 {
    let opts = PutOptions::new().lease(lease);
    ok(c, |cb| c.put(key.to_owned(), value.to_owned(), opts, cb)).header.expect("header").revision
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sorted_keys(keys: &[bytes::Bytes]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| text(k)).collect();
    keys.sort();
    keys
}

fn lease_ids(c: &Client) -> Vec<i64> {
    let mut ids: Vec<i64> = ok(c, |cb| c.lease_leases(cb)).leases.iter().map(|l| l.id).collect();
    ids.sort();
    ids
}

#[track_caller]
fn assert_not_found(err: &EtcdError, operation: &str) {
    assert_eq!((err.code(), err.operation()), (Code::NotFound, operation), "{err}");
    assert!(!err.is_retryable(), "{err}");
}

#[test]
fn grant_time_to_live_leases_and_revoke() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("lease");

    // A server-chosen id, and one the caller chose.
    let g = ok(&c, |cb| c.lease_grant(30, LeaseGrantOptions::new(), cb));
    assert!(g.id > 0 && g.ttl == 30 && g.error.is_empty(), "{g:?}");
    let chosen: i64 = 0x0123_4567_89ab_cdef;
    let g2 = ok(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new().id(chosen), cb));
    assert_eq!((g2.id, g2.ttl), (chosen, 60), "{g2:?}");
    // That id is taken now.
    let err =
        block(&c, |cb| c.lease_grant(60, LeaseGrantOptions::new().id(chosen), cb)).unwrap_err();
    assert_eq!(
        (err.code(), err.operation(), err.message()),
        (Code::FailedPrecondition, "lease_grant", "etcdserver: lease already exists"),
        "{err}"
    );
    let mut both = vec![g.id, chosen];
    both.sort();
    assert_eq!(lease_ids(&c), both, "lease_leases lists both");

    // Two keys on the lease, one without.
    let (k1, k2, k3) = (format!("{p}k1"), format!("{p}k2"), format!("{p}k3"));
    put(&c, &k1, "1", g.id);
    put(&c, &k2, "2", g.id);
    put(&c, &k3, "3", 0);
    let t = ok(&c, |cb| c.lease_time_to_live(g.id, true, cb));
    assert_eq!((t.id, t.granted_ttl), (g.id, 30), "{t:?}");
    assert!(t.ttl > 0 && t.ttl <= 30, "{t:?}");
    assert_eq!(sorted_keys(&t.keys), [k1.clone(), k2.clone()]);
    let t = ok(&c, |cb| c.lease_time_to_live(g.id, false, cb));
    assert!(t.keys.is_empty() && t.ttl > 0, "keys only when asked: {t:?}");
    let t = ok(&c, |cb| c.lease_time_to_live(chosen, true, cb));
    assert_eq!((t.id, t.granted_ttl), (chosen, 60), "{t:?}");
    assert!(t.keys.is_empty(), "{t:?}");

    // Revoke deletes the attached keys and only those.
    ok(&c, |cb| c.lease_revoke(g.id, cb));
    let got = ok(&c, |cb| c.get(p.clone(), GetOptions::new().prefix(true), cb));
    let keys: Vec<String> = got.kvs.iter().map(|kv| text(&kv.key)).collect();
    assert_eq!(keys, [k3], "only the key without the lease is left");
    assert_eq!(ok(&c, |cb| c.get(k1.clone(), GetOptions::new(), cb)).count, 0);
    let t = ok(&c, |cb| c.lease_time_to_live(g.id, true, cb));
    assert_eq!((t.id, t.ttl), (g.id, -1), "a revoked lease: {t:?}");
    assert!(t.keys.is_empty(), "{t:?}");
    assert_eq!(lease_ids(&c), [chosen]);

    // Revoking it again, or a lease that never existed: NOT_FOUND.
    let err = block(&c, |cb| c.lease_revoke(g.id, cb)).unwrap_err();
    assert_not_found(&err, "lease_revoke");
    assert_eq!(err.message(), "etcdserver: requested lease not found");
    let err = block(&c, |cb| c.lease_revoke(0x7e57_0000_0000_0001, cb)).unwrap_err();
    assert_not_found(&err, "lease_revoke");

    ok(&c, |cb| c.lease_revoke(chosen, cb));
    assert_eq!(lease_ids(&c), Vec::<i64>::new());
}

#[test]
fn a_keepalive_keeps_a_two_second_lease_alive_for_ten_seconds() {
    const TTL: i64 = 2;
    const FOR: Duration = Duration::from_secs(10);
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let key = format!("{}k", support::unique_prefix("alive"));
    let id = grant(&c, TTL);
    put(&c, &key, "v", id);

    let start = Instant::now();
    // When each renewal's answer arrived, since `start`.
    let renewals: Rc<RefCell<Vec<Duration>>> = Rc::default();
    let at_end: Rc<RefCell<Option<(LeaseTimeToLiveResponse, i64)>>> = Rc::default();
    let (slot, stopped, acks) =
        (Slot::<Keepalive>::new(), Rc::new(Cell::new(false)), Rc::new(Cell::new(0u32)));
    let checking = Rc::new(Cell::new(false));
    let (rn, ae, s, st, a, ch, c1, k) = (
        renewals.clone(),
        at_end.clone(),
        slot.clone(),
        stopped.clone(),
        Rc::clone(&acks),
        checking.clone(),
        c.clone(),
        key.clone(),
    );
    slot.set(c.lease_keepalive(id, move |r| {
        assert!(!st.get(), "callback after cancel returned");
        let resp = r.unwrap_or_else(|e| panic!("renewal {}: {e}", rn.borrow().len()));
        assert_eq!((resp.id, resp.ttl), (id, TTL), "{resp:?}");
        let at = start.elapsed();
        rn.borrow_mut().push(at);
        if at < FOR || ch.replace(true) {
            return;
        }
        // 10 s on: the lease and its key are still there. Then stop renewing.
        let (ae, s, st, a, c2, k) =
            (ae.clone(), s.clone(), st.clone(), a.clone(), c1.clone(), k.clone());
        c1.lease_time_to_live(id, true, move |r| {
            let t = r.expect("time to live");
            c2.get(k, GetOptions::new(), move |r| {
                *ae.borrow_mut() = Some((t, r.expect("get").count));
                stop_keepalive(&s.get(), &st, &a);
            });
        });
    }));
    drive_all(&[&c], FOR + Duration::from_secs(10));

    let renewals = renewals.borrow();
    let (t, count) = at_end.borrow_mut().take().expect("checked at the end");
    assert!(t.ttl > 0, "the lease is alive after {FOR:?}: {t:?}");
    assert_eq!(t.granted_ttl, TTL);
    assert_eq!(sorted_keys(&t.keys), [key.as_str()]);
    assert_eq!(count, 1, "its key is still there");
    assert_eq!(acks.get(), 1);
    // Renewed at once, then every TTL/3 (667 ms): 15 renewals in 10 s when timers are exact.
    assert!(
        renewals[0] < Duration::from_millis(500),
        "the first renewal came after {:?}",
        renewals[0]
    );
    let within = renewals.iter().filter(|&&at| at < FOR).count();
    assert!(
        (12..=17).contains(&within),
        "{within} renewals in {FOR:?} (expected about 15): {renewals:?}"
    );
    let gaps: Vec<Duration> = renewals.windows(2).map(|w| w[1] - w[0]).collect();
    let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    assert!(
        *max < Duration::from_millis(1200) && *min > Duration::from_millis(400),
        "renewals should come every ~667 ms; gaps {gaps:?}"
    );
    eprintln!("{} renewals, gaps {min:?}..{max:?}", renewals.len());
    ok(&c, |cb| c.lease_revoke(id, cb));
}

#[test]
fn after_cancel_the_lease_expires_and_its_key_vanishes() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let key = format!("{}k", support::unique_prefix("expire"));
    let id = grant(&c, 1); // etcd's minimum on the harness's member
    let rev = put(&c, &key, "v", id);

    let renewals: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let cancelled_at: Rc<Cell<Option<Instant>>> = Rc::default();
    let deleted_at: Rc<Cell<Option<Instant>>> = Rc::default();
    let ttl_after: Rc<Cell<Option<i64>>> = Rc::default();
    let (ka_slot, ka_stopped, ka_acks) = (Slot::new(), Rc::new(Cell::new(false)), Rc::default());
    let (w_slot, w_stopped, w_acks) =
        (Slot::<Watch>::new(), Rc::new(Cell::new(false)), Rc::default());

    // The key's deletion, seen by a watch: it must come after the cancel, and not before the
    // lease's TTL ran out after the last renewal.
    {
        let (ca, da, ta, s, st, a, c1, k) = (
            cancelled_at.clone(),
            deleted_at.clone(),
            ttl_after.clone(),
            w_slot.clone(),
            w_stopped.clone(),
            Rc::clone(&w_acks),
            c.clone(),
            key.clone(),
        );
        w_slot.set(c.watch(key.clone(), WatchOptions::new().start_revision(rev + 1), move |r| {
            assert!(!st.get(), "watch callback after cancel returned");
            let resp = r.expect("watch");
            if resp.created {
                return;
            }
            assert_eq!(resp.events.len(), 1, "{resp:?}");
            let ev = &resp.events[0];
            let kv = ev.kv.as_ref().expect("kv");
            assert_eq!((ev.r#type, text(&kv.key)), (EventType::Delete as i32, k.clone()));
            assert!(ca.get().is_some(), "the key vanished while the keepalive was running");
            da.set(Some(Instant::now()));
            let ta = ta.clone();
            c1.lease_time_to_live(id, false, move |r| ta.set(Some(r.expect("ttl").ttl)));
            stop_watch(&s.get(), &st, &a);
        }));
    }
    // Three renewals (~0.7 s), then cancel.
    {
        let (rn, ca, s, st, a) = (
            renewals.clone(),
            cancelled_at.clone(),
            ka_slot.clone(),
            ka_stopped.clone(),
            Rc::clone(&ka_acks),
        );
        ka_slot.set(c.lease_keepalive(id, move |r| {
            assert!(!st.get(), "keepalive callback after cancel returned");
            let resp = r.expect("renewal");
            assert_eq!((resp.id, resp.ttl), (id, 1));
            rn.borrow_mut().push(Instant::now());
            if rn.borrow().len() == 3 {
                stop_keepalive(&s.get(), &st, &a);
                ca.set(Some(Instant::now()));
            }
        }));
    }
    drive_all(&[&c], Duration::from_secs(20));

    assert_eq!(renewals.borrow().len(), 3);
    assert_eq!((ka_acks.get(), w_acks.get()), (1, 1));
    let last = *renewals.borrow().last().unwrap();
    let (cancelled, deleted) = (cancelled_at.get().unwrap(), deleted_at.get().unwrap());
    // The server renewed before its answer arrived, so allow a little for the round trip.
    assert!(
        deleted - last >= Duration::from_millis(800),
        "the key vanished {:?} after the last renewal, before the 1 s TTL ran out",
        deleted - last
    );
    assert!(
        deleted - cancelled < Duration::from_secs(5),
        "the lease took {:?} to expire",
        deleted - cancelled
    );
    assert_eq!(ttl_after.get(), Some(-1), "the lease is gone");
    assert_eq!(ok(&c, |cb| c.get(key.clone(), GetOptions::new(), cb)).count, 0);
    eprintln!("expired {:?} after the last renewal", deleted.duration_since(last));
}

/// What a keepalive's callback received: the TTL of each renewal, or the error.
type Log = Rc<RefCell<Vec<Result<i64, EtcdError>>>>;

/// Whether a keepalive's log ends with its final error.
fn ended(log: &Log) -> bool {
    log.borrow().last().is_some_and(|r| r.is_err())
}

#[test]
fn a_lease_that_is_gone_ends_its_keepalives_with_exactly_one_not_found() {
    let etcd = Etcd::start();
    let a = client(&etcd.endpoint());
    let b = client(&etcd.endpoint()); // revokes the lease behind a's back
    let revoked = grant(&a, 3); // renewed every second
    let ticker = grant(&a, 1); // renewed every 333 ms: the test's clock
    let never: i64 = 0x0bad_1ea5e; // never granted

    // Keepalives 0 and 1 on the lease b revokes after the first renewal, 2 on `never`.
    let logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    let handles: Vec<Keepalive> = Vec::new();
    let handles = Rc::new(RefCell::new(handles));
    let revoke_sent = Rc::new(Cell::new(false));
    for (i, log) in logs.iter().enumerate() {
        let lease = if i < 2 { revoked } else { never };
        let (l, rs, b1) = (log.clone(), revoke_sent.clone(), b.clone());
        let ka = a.lease_keepalive(lease, move |r| {
            assert!(!ended(&l), "keepalive {i}: a callback after its final error: {r:?}");
            match &r {
                Ok(resp) => assert_eq!(resp.id, lease),
                Err(_) => assert!(i == 2 || rs.get(), "keepalive {i} ended before the revoke"),
            }
            l.borrow_mut().push(r.map(|resp| resp.ttl));
            if i == 0 && !rs.replace(true) {
                b1.lease_revoke(lease, |r| {
                    r.expect("revoke");
                });
            }
        });
        handles.borrow_mut().push(ka);
    }
    // Once all three ended, five more ticks (1.7 s, longer than the revoked lease's renewal
    // interval) to be sure nothing follows an error; then cancel everything, including the
    // ended keepalives (harmless: Ok, and still no callback).
    let (t_slot, t_stopped, acks) = (Slot::new(), Rc::new(Cell::new(false)), Rc::default());
    let ticks_after = Rc::new(Cell::new(0));
    {
        let (ls, hs, s, st, a1, ta) = (
            logs.clone(),
            handles.clone(),
            t_slot.clone(),
            t_stopped.clone(),
            Rc::clone(&acks),
            ticks_after.clone(),
        );
        t_slot.set(a.lease_keepalive(ticker, move |r| {
            assert!(!st.get(), "ticker: callback after cancel returned");
            r.expect("ticker renewal");
            if !ls.iter().all(ended) {
                return;
            }
            ta.set(ta.get() + 1);
            if ta.get() == 5 {
                stop_keepalive(&s.get(), &st, &a1);
                let never_again = Cell::new(false);
                for h in hs.borrow().iter() {
                    stop_keepalive(h, &never_again, &a1);
                }
            }
        }));
    }
    drive_all(&[&a, &b], Duration::from_secs(20));

    assert_eq!(acks.get(), 4, "every cancel acknowledged");
    for (i, log) in logs.iter().enumerate() {
        let log = log.borrow();
        let (last, renewals) = log.split_last().expect("called back");
        let err = last.as_ref().unwrap_err();
        assert_not_found(err, "keepalive");
        assert!(renewals.iter().all(|r| r == &Ok(3)), "keepalive {i}: {log:?}");
        if i < 2 {
            assert!(!renewals.is_empty(), "keepalive {i}: renewed before the revoke");
        } else {
            assert!(renewals.is_empty(), "a lease never granted: {log:?}");
        }
    }
    let t = ok(&a, |cb| a.lease_time_to_live(revoked, false, cb));
    assert_eq!(t.ttl, -1);
}

#[test]
fn a_thousand_keepalives_share_one_stream() {
    const N: usize = 1000;
    const TTL: i64 = 60; // the next renewal is 20 s away: each keepalive is renewed once here
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let port = etcd.client_port();
    let c = client(&endpoint);

    let ids: Rc<RefCell<Vec<i64>>> = Rc::default();
    for _ in 0..N {
        let ids = ids.clone();
        c.lease_grant(TTL, LeaseGrantOptions::new(), move |r| {
            let g = r.expect("grant");
            assert_eq!(g.ttl, TTL);
            ids.borrow_mut().push(g.id);
        });
    }
    c.run();
    let ids = ids.take();
    assert_eq!(ids.len(), N);
    let streams_before = metric(&endpoint, KEEPALIVE_STREAMS);
    let requests_before = metric(&endpoint, KEEPALIVE_REQUESTS);

    let handles: Rc<RefCell<Vec<Keepalive>>> = Rc::default();
    let renewed: Rc<Vec<Cell<u32>>> = Rc::new((0..N).map(|_| Cell::new(0)).collect());
    let first = Rc::new(Cell::new(0usize));
    let (stopped, acks, checked) =
        (Rc::new(Cell::new(false)), Rc::default(), Rc::new(Cell::new(false)));
    for (i, &id) in ids.iter().enumerate() {
        let (hs, rn, f, st, a, ck, ep) = (
            handles.clone(),
            renewed.clone(),
            first.clone(),
            stopped.clone(),
            Rc::clone(&acks),
            checked.clone(),
            endpoint.clone(),
        );
        let ka = c.lease_keepalive(id, move |r| {
            assert!(!st.get(), "keepalive {i}: callback after cancel returned");
            let resp = r.unwrap_or_else(|e| panic!("keepalive {i}: {e}"));
            assert_eq!((resp.id, resp.ttl), (id, TTL));
            rn[i].set(rn[i].get() + 1);
            assert_eq!(rn[i].get(), 1, "keepalive {i} renewed twice");
            f.set(f.get() + 1);
            if f.get() < N {
                return;
            }
            // Every lease is renewed: one stream carried all of it, on one connection.
            assert_eq!(
                metric(&ep, KEEPALIVE_STREAMS) - streams_before,
                1.0,
                "LeaseKeepAlive streams opened"
            );
            assert_eq!(
                metric(&ep, KEEPALIVE_REQUESTS) - requests_before,
                N as f64,
                "renewal requests: one per lease"
            );
            assert_eq!(connections_to(port), 1, "TCP connections");
            ck.set(true);
            let never_again = Cell::new(false);
            for h in hs.borrow().iter() {
                stop_keepalive(h, &never_again, &a);
            }
            st.set(true);
        });
        handles.borrow_mut().push(ka);
    }
    drive_all(&[&c], Duration::from_secs(40));

    assert!(checked.get(), "all {N} keepalives were renewed");
    assert_eq!(acks.get(), N as u32);
    assert_eq!(connections_to(port), 1);
    assert!(renewed.iter().all(|n| n.get() == 1));
}

#[test]
fn renewals_go_on_across_a_restart_of_etcd() {
    const TTL: i64 = 2;
    let deadline = Instant::now() + Duration::from_secs(45);
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let c = client(&endpoint);
    let key = format!("{}k", support::unique_prefix("restart"));
    let id = grant(&c, TTL);
    put(&c, &key, "v", id);

    // Restarts etcd (graceful stop, start, wait until it serves) when asked.
    let (restart_tx, restart_rx) = mpsc::channel::<()>();
    let restarted_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let restarter_failed = Arc::new(AtomicBool::new(false));
    let (ra, rf) = (restarted_at.clone(), restarter_failed.clone());
    let restarter = std::thread::spawn(move || {
        let mut etcd = etcd;
        if restart_rx.recv().is_ok() {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| etcd.restart()));
            if r.is_err() {
                rf.store(true, Ordering::SeqCst);
            }
            *ra.lock().unwrap() = Some(Instant::now());
        }
        etcd
    });

    let renewals: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let at_end: Rc<RefCell<Option<LeaseTimeToLiveResponse>>> = Rc::default();
    let (slot, stopped, acks) =
        (Slot::<Keepalive>::new(), Rc::new(Cell::new(false)), Rc::new(Cell::new(0u32)));
    let mut restart_tx = Some(restart_tx);
    let checking = Rc::new(Cell::new(false));
    {
        let (rn, ae, s, st, a, ch, c1, ra) = (
            renewals.clone(),
            at_end.clone(),
            slot.clone(),
            stopped.clone(),
            Rc::clone(&acks),
            checking.clone(),
            c.clone(),
            restarted_at.clone(),
        );
        slot.set(c.lease_keepalive(id, move |r| {
            assert!(!st.get(), "callback after cancel returned");
            assert!(Instant::now() < deadline, "safety deadline passed");
            let resp = r.unwrap_or_else(|e| panic!("the lease was lost: {e}"));
            assert_eq!((resp.id, resp.ttl), (id, TTL));
            let now = Instant::now();
            rn.borrow_mut().push(now);
            if rn.borrow().len() == 2 {
                restart_tx.take().expect("once").send(()).expect("restarter waits");
            }
            let Some(up) = *ra.lock().unwrap() else {
                return;
            };
            let after = rn.borrow().iter().filter(|&&t| t > up).count();
            if after < 3 || ch.replace(true) {
                return;
            }
            let (ae, s, st, a) = (ae.clone(), s.clone(), st.clone(), a.clone());
            c1.lease_time_to_live(id, true, move |r| {
                *ae.borrow_mut() = Some(r.expect("time to live"));
                stop_keepalive(&s.get(), &st, &a);
            });
        }));
    }
    drive_until(&[&c], Duration::from_secs(45), || {
        assert!(!restarter_failed.load(Ordering::SeqCst), "restarting etcd failed");
        c.is_idle()
    });
    let etcd = restarter.join().expect("restarter");
    assert!(!restarter_failed.load(Ordering::SeqCst));

    let t = at_end.borrow_mut().take().expect("checked at the end");
    assert!(t.ttl > 0, "the lease outlived the restart: {t:?}");
    assert_eq!(t.granted_ttl, TTL);
    assert_eq!(sorted_keys(&t.keys), [key.as_str()]);
    assert_eq!(acks.get(), 1);
    assert_eq!(
        metric(&etcd.endpoint(), KEEPALIVE_STREAMS),
        1.0,
        "the restarted etcd saw the stream re-opened once"
    );
    let up = restarted_at.lock().unwrap().expect("restarted");
    let renewals = renewals.borrow();
    let gaps: Vec<Duration> = renewals.windows(2).map(|w| w[1] - w[0]).collect();
    let first_after = renewals.iter().find(|&&t| t > up);
    eprintln!(
        "{} renewals; gaps {gaps:?}; first renewal {:?} after etcd was ready again",
        renewals.len(),
        first_after.map(|t| *t - up)
    );
    ok(&c, |cb| c.lease_revoke(id, cb));
    drop(etcd);
}

/// etcd gives every lease a full TTL again when it restarts, so a keepalive that renews
/// promptly once etcd is back keeps a short lease through an outage longer than its TTL.
#[test]
fn a_keepalive_keeps_a_short_lease_through_an_outage_longer_than_its_ttl() {
    let mut etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let id = ok(&c, |cb| c.lease_grant(2, LeaseGrantOptions::new(), cb)).id;
    type Renewals = Vec<(Instant, Result<i64, String>)>;
    let log: Rc<RefCell<Renewals>> = Rc::default();
    let l = log.clone();
    let ka = c.lease_keepalive(id, move |r| {
        l.borrow_mut().push((Instant::now(), r.map(|x| x.ttl).map_err(|e| e.to_string())));
    });
    drive_until(&[&c], Duration::from_secs(5), || !log.borrow().is_empty());
    // The outage runs on another thread while this one keeps driving the client.
    let (tx, rx) = std::sync::mpsc::channel();
    let outage = std::thread::spawn(move || {
        etcd.kill();
        std::thread::sleep(Duration::from_millis(5200)); // the outage itself
        etcd.start_again();
        etcd.wait_ready();
        tx.send(Instant::now()).unwrap();
        etcd
    });
    let mut up = None;
    drive_until(&[&c], Duration::from_secs(30), || {
        up = up.or_else(|| rx.try_recv().ok());
        let renewed_after = |u: Instant| log.borrow().iter().filter(|(t, _)| *t > u).count();
        up.is_some_and(|u| renewed_after(u) >= 2) || log.borrow().iter().any(|(_, r)| r.is_err())
    });
    let _etcd = outage.join().unwrap();
    let log = log.borrow();
    assert!(log.iter().all(|(_, r)| r.is_ok()), "the lease was lost: {log:?}");
    let up = up.expect("etcd came back");
    let first = log.iter().find(|(t, _)| *t > up).expect("a renewal after the outage").0;
    assert!(
        first - up < Duration::from_millis(1500),
        "renewed {:?} after etcd was back",
        first - up
    );
    ka.cancel(|_| ());
    c.run();
}
