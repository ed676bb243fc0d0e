//! Member views (`Client::member`) at their edges: `close()` with views busy (callbacks
//! that run the loop, panic, or hold a watch), views outliving or dying with their client,
//! re-entrant close and restart, `get_paged` and host-name lookups through a view.

mod support;

use evetcd::{CallOptions, Client, Code, Config, EtcdError, GetOptions, PutOptions, WatchOptions};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::client::{client, connections_to, drive_until, ok};
use support::{Etcd, SilentListener};

type Codes = Rc<RefCell<Vec<Code>>>;

fn record(
    codes: &Codes,
) -> impl FnOnce(Result<evetcd::pb::etcdserverpb::StatusResponse, EtcdError>) {
    let codes = codes.clone();
    move |r| codes.borrow_mut().push(r.map_or_else(|e| e.code(), |_| Code::Ok))
}

/// `close()` called outside the loop delivers the views' `CANCELLED` callbacks as the
/// client's own, so `run()` from such a callback returns at once (it is not a nested loop
/// of the client inside `close()`). Here
/// the host has a live watch, so that nested `run()` would never return; a second view's
/// 1.5 s deadline (whose callback calls `stop()`) is the only way out. Meanwhile that second
/// view's call, which `close()` should cancel, is run to its deadline instead.
#[test]
fn run_in_a_views_callback_during_close_returns_at_once() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    // The host is busy as long as this watch lives.
    let _w = c.watch("review-nested", WatchOptions::new(), |_| {});
    let (silent_a, silent_b) = (SilentListener::new(), SilentListener::new());
    let a = c.member(&silent_a.endpoint()).unwrap();
    let b = c
        .with(CallOptions::new().timeout(Duration::from_millis(1500)))
        .member(&silent_b.endpoint())
        .unwrap();
    // a first: close() cancels the views in the order they were given work.
    let nested: Rc<Cell<Option<Duration>>> = Rc::default();
    let (n, c3) = (nested.clone(), c.clone());
    a.status(move |r| {
        assert_eq!(r.unwrap_err().code(), Code::Cancelled);
        let t = Instant::now();
        c3.run(); // "Called from inside a callback it returns at once"
        n.set(Some(t.elapsed()));
    });
    let b_codes: Codes = Rc::default();
    let (bc, c2) = (b_codes.clone(), c.clone());
    b.status(move |r| {
        bc.borrow_mut().push(r.map_or_else(|e| e.code(), |_| Code::Ok));
        c2.stop(); // the only way out of the nested run() below
    });
    c.process(); // both views attached and connecting
    let t = Instant::now();
    c.close();
    let took = t.elapsed();
    let nested = nested.get().expect("a's callback ran in close()");
    assert!(
        nested < Duration::from_millis(200) && took < Duration::from_millis(200),
        "run() in a view's callback ran a nested loop for {nested:?}; close() took {took:?}; \
         the other view's call ended with {:?} (close() should cancel it)",
        b_codes.borrow()
    );
    assert_eq!(*b_codes.borrow(), [Code::Cancelled]);
}

/// `close()` with a live watch on a view leaves the client idle: the view is closed while
/// still attached, so delivering the watch's final item does not attach it again.
#[test]
fn close_with_a_views_watch_leaves_the_client_idle() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let v = c.member(&etcd.endpoint()).unwrap();
    let got: Rc<RefCell<Vec<Result<(), Code>>>> = Rc::default();
    let g = got.clone();
    let _w = v.watch("review-close-watch", WatchOptions::new(), move |r| {
        g.borrow_mut().push(r.map(|_| ()).map_err(|e| e.code()));
    });
    drive_until(&[&c], Duration::from_secs(10), || !got.borrow().is_empty());
    c.close();
    assert_eq!(got.borrow().last(), Some(&Err(Code::Cancelled)));
    assert!(
        c.is_idle(),
        "after close() the client is busy again (next_timeout {:?}): the view re-attached",
        c.next_timeout()
    );
}

/// A view's callback that panics while `close()` cancels it loses nothing but that one
/// delivery (as among a client's own callbacks): the view stays attached until its
/// leftover events are delivered, and the client's own calls were cancelled first.
#[test]
fn a_panic_in_a_views_callback_during_close_loses_no_other_callback() {
    let (silent_host, silent_view) = (SilentListener::new(), SilentListener::new());
    let config = Config::new()
        .endpoints([silent_host.endpoint()])
        .timeout(Duration::from_secs(1))
        .retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();
    let (host, second): (Codes, Codes) = (Rc::default(), Rc::default());
    c.status(record(&host));
    let v = c.member(&silent_view.endpoint()).unwrap();
    v.status(|_| panic!("boom (expected)"));
    v.status(record(&second));
    c.process();
    assert!(catch_unwind(AssertUnwindSafe(|| c.close())).is_err());
    // As for a client's own callbacks: the loop delivers what did not run.
    let t = Instant::now();
    c.run();
    assert_eq!(
        (&*host.borrow(), &*second.borrow()),
        (&vec![Code::Cancelled], &vec![Code::Cancelled]),
        "run() returned after {:?} (host: its deadline, not close(); view: never delivered)",
        t.elapsed()
    );
}

/// As the test above, for comparison: the same panic among a client's own callbacks during
/// `close()` loses nothing else.
#[test]
fn a_panic_during_close_on_the_client_itself_loses_nothing() {
    let silent = SilentListener::new();
    let config = Config::new()
        .endpoints([silent.endpoint()])
        .timeout(Duration::from_secs(1))
        .retry(0, Duration::ZERO);
    let c = Client::new(config).unwrap();
    let second: Codes = Rc::default();
    c.status(|_| panic!("boom (expected)"));
    c.status(record(&second));
    c.process();
    assert!(catch_unwind(AssertUnwindSafe(|| c.close())).is_err());
    c.run();
    assert_eq!(*second.borrow(), [Code::Cancelled]);
}

/// The unbounded form of `run_in_a_views_callback_during_close_returns_at_once`:
/// with the views given work in the other order, the second view's callback (`stop()`) runs
/// first, the nested `run()` clears `stopped`, and with the host's watch alive `close()`
/// would never return: a watchdog aborts the process if it still runs after 5 s.
#[test]
fn close_returns_when_a_views_callback_runs_the_loop() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let _w = c.watch("review-hang", WatchOptions::new(), |_| {});
    let silent = SilentListener::new();
    let v = c.member(&silent.endpoint()).unwrap();
    let c2 = c.clone();
    v.status(move |_| c2.run());
    c.process();
    let (returned, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(Duration::from_secs(5)).is_err() {
            eprintln!("close() still running after 5 s: hung in the nested run()");
            std::process::abort();
        }
    });
    c.close();
    returned.send(()).unwrap();
}

/// a view that outlives its client drives itself: its pending call completes
/// through the view's own `run()`.
#[test]
fn a_view_outliving_its_client_drives_itself() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let v = c.member(&etcd.endpoint()).unwrap();
    let got: Codes = Rc::default();
    v.status(record(&got));
    c.process();
    drop(c);
    v.run();
    assert_eq!(*got.borrow(), [Code::Ok]);
    assert!(v.is_idle());
}

/// Questionable: once a view's work is done and the user dropped the view, a handle made
/// through it calls back from inside `cancel` (the view "no longer exists") although the
/// client that drives it is alive; through the client itself the callback waits for a turn.
#[test]
fn get_paged_through_a_view() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("paged");
    for i in 0..25 {
        ok(&c, |cb| c.put(format!("{p}{i:02}"), "v", PutOptions::new(), cb));
    }
    let v = c.member(&etcd.endpoint()).unwrap();
    let pages: Rc<RefCell<Vec<Result<usize, Code>>>> = Rc::default();
    let pg = pages.clone();
    v.get_paged(p.clone(), GetOptions::new().prefix(true), 10, move |r| {
        pg.borrow_mut().push(r.map(|r| r.kvs.len()).map_err(|e| e.code()))
    });
    c.run();
    // Pages of 10 through Range (etcd < 3.7); etcd 3.7's RangeStream chunks as it likes.
    let got = pages.borrow().clone();
    assert!(got.len() >= 2 && got[0] == Ok(10), "{got:?}");
    assert_eq!(got.iter().map(|p| p.unwrap()).sum::<usize>(), 25, "{got:?}");
    assert!(c.is_idle());

    let pages: Rc<RefCell<Vec<Result<usize, Code>>>> = Rc::default();
    let (pg, c2) = (pages.clone(), c.clone());
    v.get_paged(p, GetOptions::new().prefix(true), 10, move |r| {
        pg.borrow_mut().push(r.map(|r| r.kvs.len()).map_err(|e| e.code()));
        if pg.borrow().len() == 1 {
            c2.close();
        }
    });
    c.run();
    // Cancelled once after the first page, unless the rest had already arrived (a stream's
    // last chunk can be in hand when the close comes).
    let got = pages.borrow().clone();
    let complete =
        got.iter().all(|p| p.is_ok()) && got.iter().map(|p| p.unwrap()).sum::<usize>() == 25;
    assert!(got == [Ok(10), Err(Code::Cancelled)] || complete, "{got:?}");
    assert!(c.is_idle());
}

/// callbacks of views and of the host that close and restart work on each other
/// (re-entrancy into `turn_members`, `detach`, `attach`): no RefCell panic, each callback
/// once, everything finishes.
#[test]
fn reentrant_close_and_restart_across_client_and_views() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let a = c.member(&etcd.endpoint()).unwrap();
    let b = c.member(&etcd.endpoint()).unwrap();
    let log: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    // A watch on a that closes everything on its first response and starts work on a, b
    // and the host from inside.
    let (l, c2, a2, b2) = (log.clone(), c.clone(), a.clone(), b.clone());
    let fired = Rc::new(Cell::new(false));
    let _w = a.watch("review-reentrant", WatchOptions::new(), move |r| {
        if r.is_err() {
            return l.borrow_mut().push("watch ended");
        }
        if fired.replace(true) {
            return;
        }
        c2.close();
        let l2 = l.clone();
        a2.status(move |r| l2.borrow_mut().push(if r.is_ok() { "a ok" } else { "a err" }));
        let (l3, a3) = (l.clone(), a2.clone());
        b2.status(move |r| {
            l3.borrow_mut().push(if r.is_ok() { "b ok" } else { "b err" });
            a3.close(); // a view's close is the client's, from inside a view's callback
        });
        let l4 = l.clone();
        c2.get("x", GetOptions::new(), move |r| {
            l4.borrow_mut().push(if r.is_ok() { "host ok" } else { "host err" })
        });
    });
    drive_until(&[&c], Duration::from_secs(10), || c.is_idle());
    let mut log = log.borrow().clone();
    log.sort();
    // b's callback closes everything, so the host's get and a's status may each be cancelled
    // (a race with their answers, which can come after b's): either outcome, once each.
    for who in ["host", "a "] {
        assert_eq!(log.iter().filter(|e| e.starts_with(who)).count(), 1, "{log:?}");
    }
    log.retain(|e| !e.starts_with("host") && !e.starts_with("a "));
    assert_eq!(log, ["b ok", "watch ended"]);
}

/// dropping the client with a view's call pending drops the view and its link.
#[test]
fn dropping_the_client_drops_an_attached_view() {
    let silent = SilentListener::new();
    let port: u16 = silent.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    c.member(&silent.endpoint()).unwrap().status(|_| {});
    c.process();
    drive_until(&[&c], Duration::from_secs(5), || connections_to(port) == 1);
    drop(c);
    assert_eq!(connections_to(port), 0);
}

/// a view to a host name (looked up on a helper thread, whose waker is the view's
/// Poll) wakes the client's loop through the nested fd, not only at a timer.
#[test]
fn a_views_lookup_wakes_the_clients_loop() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    ok(&c, |cb| c.status(cb));
    let port = etcd.endpoint().rsplit(':').next().unwrap().to_string();
    let v = c.member(&format!("localhost:{port}")).unwrap();
    let t = Instant::now();
    ok(&c, |cb| v.status(cb));
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
}
