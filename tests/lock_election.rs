//! Lock and election against a real etcd: two clients contend for a lock (the second gets it
//! only once the first unlocks or its lease is revoked, even after waiting longer than its
//! client's deadline); lease 0 is rejected on the next turn and never sent; lock and campaign
//! errors are never retryable, not even UNAVAILABLE; a pending lock and a pending campaign can
//! be abandoned (CANCELLED, and etcd drops the waiter's key); campaign, leader, proclaim,
//! resign; an observer sees every leader and proclaimed value once, in order, also across a
//! restart of etcd.
//!
//! etcd keeps a lock's or an election's keys under `<name>/`, one per contender, named after
//! its lease in hex: a watch on that prefix shows who waits, so each step starts when the
//! previous one is visible on the server, never after a sleep. After the setup everything is
//! driven from callbacks by one poll(2) loop over the test's clients ([`drive_all`]), which
//! fails after a deadline instead of hanging.

mod support;

use evetcd::{
    Client, Code, Config, EtcdError, Event, EventType, GetOptions, Keepalive, LeaderKey,
    LeaderResponse, LeaseGrantOptions, LeaseKeepAliveResponse, Observe, Pending, Watch,
    WatchOptions, WatchResponse,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support::client::{block, client, drive_all, drive_all_explained, drive_until, ok, Slot};
use support::metrics::metric;
use support::Etcd;

const PUT: i32 = EventType::Put as i32;
const DELETE: i32 = EventType::Delete as i32;
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// How a stream is cancelled: `stopped` is set once `cancel()` has returned (its callback must
/// never run after that), and `acks` counts the cancel's callbacks, which must come later,
/// with Ok.
fn ack(acks: &Rc<Cell<u32>>) -> (Rc<Cell<bool>>, impl FnOnce(Result<(), EtcdError>)) {
    let (a, inside) = (acks.clone(), Rc::new(Cell::new(true)));
    let i = inside.clone();
    let cb = move |r: Result<(), EtcdError>| {
        assert!(!i.get(), "cancel callback ran inside cancel()");
        r.expect("cancel succeeds");
        a.set(a.get() + 1);
    };
    (inside, cb)
}

fn stop_watch(w: &Watch, stopped: &Cell<bool>, acks: &Rc<Cell<u32>>) {
    let (inside, cb) = ack(acks);
    w.cancel(cb);
    inside.set(false);
    stopped.set(true);
}

fn stop_observe(o: &Observe, stopped: &Cell<bool>, acks: &Rc<Cell<u32>>) {
    let (inside, cb) = ack(acks);
    o.cancel(cb);
    inside.set(false);
    stopped.set(true);
}

fn stop_keepalive(k: &Keepalive, stopped: &Cell<bool>, acks: &Rc<Cell<u32>>) {
    let (inside, cb) = ack(acks);
    k.cancel(cb);
    inside.set(false);
    stopped.set(true);
}

/// A lease of `ttl` seconds.
fn grant(c: &Client, ttl: i64) -> i64 {
    let g = ok(c, |cb| c.lease_grant(ttl, LeaseGrantOptions::new(), cb));
    assert_eq!(g.ttl, ttl);
    g.id
}

/// The key etcd's lock and election services create for a contender with `lease`.
fn contender_key(name: &str, lease: i64) -> String {
    format!("{name}/{lease:x}")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The keys under `prefix`, in key order.
fn keys_under(c: &Client, prefix: &str) -> Vec<String> {
    ok(c, |cb| c.get(prefix.to_owned(), GetOptions::new().prefix(true), cb))
        .kvs
        .iter()
        .map(|kv| text(&kv.key))
        .collect()
}

/// (type, key, mod_revision) of each event of a watch response.
fn events(r: Result<WatchResponse, EtcdError>) -> Vec<(i32, String, i64)> {
    let resp = r.expect("the watch never fails");
    resp.events
        .iter()
        .map(|e: &Event| {
            let kv = e.kv.as_ref().expect("kv");
            (e.r#type, text(&kv.key), kv.mod_revision)
        })
        .collect()
}

/// A client whose unary deadline (1 s, the minimum) is shorter than the waits in the tests:
/// a lock or campaign must not be subject to it.
fn impatient_client(endpoint: &str) -> Client {
    Client::new(Config::new().endpoints([endpoint]).timeout(Duration::from_secs(1)))
        .expect("valid config")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Release {
    Unlock,
    Revoke,
}

/// The state of one contention for a lock, shared by its callbacks: `a` holds the lock, `b`
/// asks for it and must wait until `a` releases it, which `a` does once `b` is seen waiting
/// on the server plus five renewals of a 1 s lease (≥ 1.3 s, longer than `b`'s deadline).
struct Contention {
    name: String,
    a: Client,
    b: Client,
    release: Release,
    /// a's lease, b's lease, and a 1 s lease whose renewals are the test's clock.
    la: i64,
    lb: i64,
    ticker: i64,
    a_key: String,
    b_key: String,
    /// The unlock or revoke was sent; its answer's revision.
    released: Cell<bool>,
    release_rev: Cell<i64>,
    /// The deletion of a's key, as watched.
    a_deleted_rev: Cell<i64>,
    /// b's lock: its key and its answer's revision.
    b_got: RefCell<Option<(String, i64)>>,
    b_waiting_since: Cell<Option<Instant>>,
    watch: Slot<Watch>,
    watch_stopped: Rc<Cell<bool>>,
    ticks: Cell<u32>,
    ticker_ka: Slot<Keepalive>,
    ticker_stopped: Rc<Cell<bool>>,
    acks: Rc<Cell<u32>>,
}

impl Contention {
    /// b asks once the watch is in place.
    fn b_locks(self: &Rc<Self>) {
        let s = self.clone();
        self.b.lock(self.name.clone(), self.lb, move |r| {
            let got = r.unwrap_or_else(|e| panic!("b's lock ({:?}): {e}", s.release));
            assert!(s.released.get(), "b got the lock before a released it");
            let rev = got.header.expect("header").revision;
            *s.b_got.borrow_mut() = Some((text(&got.key), rev));
            s.finish_when_done();
        });
    }

    fn on_keys(self: &Rc<Self>, r: Result<WatchResponse, EtcdError>) {
        assert!(!self.watch_stopped.get(), "watch callback after cancel returned");
        for (ty, key, mod_rev) in events(r) {
            match (ty, key == self.b_key, key == self.a_key) {
                // b waits on the server: let it wait past its client's deadline.
                (PUT, true, _) => {
                    self.b_waiting_since.set(Some(Instant::now()));
                    let s = self.clone();
                    self.ticker_ka.set(self.a.lease_keepalive(self.ticker, move |r| s.on_tick(r)));
                }
                (DELETE, _, true) => {
                    assert!(self.released.get(), "a's key vanished before it released the lock");
                    self.a_deleted_rev.set(mod_rev);
                    self.finish_when_done();
                }
                other => panic!("unexpected event {other:?} ({:?})", self.release),
            }
        }
    }

    fn on_tick(self: &Rc<Self>, r: Result<LeaseKeepAliveResponse, EtcdError>) {
        assert!(!self.ticker_stopped.get(), "ticker: callback after cancel returned");
        r.expect("ticker");
        self.ticks.set(self.ticks.get() + 1);
        if self.ticks.get() < 5 {
            return;
        }
        stop_keepalive(&self.ticker_ka.get(), &self.ticker_stopped, &self.acks);
        self.released.set(true);
        let s = self.clone();
        let done = move |rev: i64| s.release_rev.set(rev);
        match self.release {
            Release::Unlock => self.a.unlock(self.a_key.clone(), move |r| {
                done(r.expect("unlock").header.expect("header").revision)
            }),
            Release::Revoke => self.a.lease_revoke(self.la, move |r| {
                done(r.expect("revoke").header.expect("header").revision)
            }),
        }
    }

    /// Once b holds the lock and the watch saw a's key go (two connections: either may come
    /// first): stop watching, and b unlocks.
    fn finish_when_done(self: &Rc<Self>) {
        let Some((key, _)) = self.b_got.borrow().clone() else {
            return;
        };
        if self.a_deleted_rev.get() == 0 {
            return;
        }
        stop_watch(&self.watch.get(), &self.watch_stopped, &self.acks);
        self.b.unlock(key, |r| {
            r.expect("b's unlock");
        });
    }
}

fn contend(a: &Client, b: &Client, name: &str, release: Release) {
    let (la, lb, ticker) = (grant(a, 30), grant(b, 30), grant(a, 1));
    let a_lock = ok(a, |cb| {
        a.lock(name.to_owned(), la, cb);
    });
    let s = Rc::new(Contention {
        name: name.to_owned(),
        a: a.clone(),
        b: b.clone(),
        release,
        la,
        lb,
        ticker,
        a_key: contender_key(name, la),
        b_key: contender_key(name, lb),
        released: Cell::new(false),
        release_rev: Cell::new(0),
        a_deleted_rev: Cell::new(0),
        b_got: RefCell::default(),
        b_waiting_since: Cell::default(),
        watch: Slot::new(),
        watch_stopped: Rc::default(),
        ticks: Cell::new(0),
        ticker_ka: Slot::new(),
        ticker_stopped: Rc::default(),
        acks: Rc::default(),
    });
    assert_eq!(text(&a_lock.key), s.a_key, "{release:?}");
    let rev = a_lock.header.expect("header").revision;
    let s1 = s.clone();
    s.watch.set(a.watch(
        format!("{name}/"),
        WatchOptions::new().prefix(true).start_revision(rev + 1),
        move |r| match r {
            Ok(resp) if resp.created => s1.b_locks(),
            r => s1.on_keys(r),
        },
    ));
    drive_all(&[a, b], Duration::from_secs(30));

    let (key, b_rev) = s.b_got.borrow_mut().take().expect("b got the lock");
    assert_eq!(key, s.b_key);
    assert_eq!(s.acks.get(), 2, "watch and ticker cancelled");
    let deleted = s.a_deleted_rev.get();
    assert_eq!(s.release_rev.get(), deleted, "the release deleted a's key");
    assert!(
        b_rev >= deleted,
        "b's lock (revision {b_rev}) was granted after a's key went (revision {deleted})"
    );
    let waited = s.b_waiting_since.get().expect("b waited").elapsed();
    assert!(waited > Duration::from_secs(1), "b waited {waited:?}");
    assert_eq!(
        keys_under(a, &format!("{name}/")),
        Vec::<String>::new(),
        "b unlocked, a's key is gone"
    );
    if release == Release::Revoke {
        assert_eq!(ok(a, |cb| a.lease_time_to_live(la, false, cb)).ttl, -1);
    }
}

#[test]
fn two_clients_contend_and_the_second_gets_the_lock_only_once_the_first_releases_it() {
    let etcd = Etcd::start();
    let a = client(&etcd.endpoint());
    let b = impatient_client(&etcd.endpoint());
    let p = support::unique_prefix("contend");
    contend(&a, &b, &format!("{p}unlock"), Release::Unlock);
    contend(&a, &b, &format!("{p}revoke"), Release::Revoke);
}

#[test]
fn lease_zero_is_rejected_on_the_next_turn_and_never_sent() {
    let etcd = Etcd::start();
    let c = client(&etcd.endpoint());
    let p = support::unique_prefix("zero");
    let name = format!("{p}lock");
    for lease in [0, -1] {
        let err = block(&c, |cb| {
            c.lock(name.clone(), lease, cb);
        })
        .unwrap_err();
        assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "lock"), "{err}");
        assert!(!err.is_retryable(), "{err}");
        let err = block(&c, |cb| {
            c.election_campaign(format!("{p}election"), lease, "v", cb);
        })
        .unwrap_err();
        assert_eq!(
            (err.code(), err.operation()),
            (Code::InvalidArgument, "election_campaign"),
            "{err}"
        );
        assert!(!err.is_retryable(), "{err}");
    }
    // The handle of a rejected lock cancels nothing: the callback still runs once, with
    // the rejection.
    let calls: Rc<RefCell<Vec<Code>>> = Rc::default();
    let cl = calls.clone();
    let pending = c.lock(name.clone(), 0, move |r| cl.borrow_mut().push(r.unwrap_err().code()));
    pending.cancel();
    assert!(calls.borrow().is_empty(), "called back synchronously");
    c.run();
    assert_eq!(*calls.borrow(), [Code::InvalidArgument]);

    // A leader key that did not come from a campaign.
    let err = block(&c, |cb| c.election_proclaim(LeaderKey::default(), "v", cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "election_proclaim"));
    let err = block(&c, |cb| c.election_resign(LeaderKey::default(), cb)).unwrap_err();
    assert_eq!((err.code(), err.operation()), (Code::InvalidArgument, "election_resign"));
    // Nothing reached etcd: it would have granted a 60 s lease for lease 0 and put keys.
    assert!(ok(&c, |cb| c.lease_leases(cb)).leases.is_empty());
    assert_eq!(keys_under(&c, &p), Vec::<String>::new());
}

#[test]
fn lock_and_campaign_errors_are_never_retryable_not_even_unavailable() {
    let etcd = Rc::new(RefCell::new(Etcd::start()));
    let endpoint = etcd.borrow().endpoint();
    let a = client(&endpoint);
    let b = client(&endpoint);
    let p = support::unique_prefix("noretry");
    let (lock, election) = (format!("{p}lock"), format!("{p}election"));
    let (la, lb) = (grant(&a, 30), grant(&b, 30));
    ok(&a, |cb| {
        a.lock(lock.clone(), la, cb);
    });
    let led = ok(&a, |cb| {
        a.election_campaign(election.clone(), la, "a", cb);
    });
    let rev = led.header.expect("header").revision;

    // b waits for both; once both its keys are on the server, etcd dies.
    let errors: Rc<RefCell<Vec<EtcdError>>> = Rc::default();
    let seen = Rc::new(Cell::new(0));
    let (w_slot, w_stopped, acks) =
        (Slot::<Watch>::new(), Rc::new(Cell::new(false)), Rc::new(Cell::new(0u32)));
    let (b1, e1, s1, ws, wst, ac, et) = (
        b.clone(),
        errors.clone(),
        seen.clone(),
        w_slot.clone(),
        w_stopped.clone(),
        Rc::clone(&acks),
        etcd.clone(),
    );
    let want = [contender_key(&lock, lb), contender_key(&election, lb)];
    let (lk, el) = (lock.clone(), election.clone());
    w_slot.set(a.watch(
        p.clone(),
        WatchOptions::new().prefix(true).start_revision(rev + 1),
        move |r| {
            assert!(!wst.get(), "watch callback after cancel returned");
            let r = r.expect("watch");
            if r.created {
                let e2 = e1.clone();
                b1.lock(lk.clone(), lb, move |r| {
                    e2.borrow_mut().push(r.expect_err("no lock while etcd is gone"))
                });
                let e2 = e1.clone();
                b1.election_campaign(el.clone(), lb, "b", move |r| {
                    e2.borrow_mut().push(r.expect_err("no leadership while etcd is gone"))
                });
                return;
            }
            for (ty, key, _) in events(Ok(r)) {
                assert!(ty == PUT && want.contains(&key), "unexpected {key}");
                s1.set(s1.get() + 1);
            }
            if s1.get() == 2 {
                stop_watch(&ws.get(), &wst, &ac);
                et.borrow_mut().kill();
            }
        },
    ));
    drive_all(&[&a, &b], Duration::from_secs(20));

    assert_eq!(acks.get(), 1);
    let mut errors = errors.borrow().clone();
    errors.sort_by_key(|e| e.operation());
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (e, op) in errors.iter().zip(["election_campaign", "lock"]) {
        assert_eq!((e.code(), e.operation()), (Code::Unavailable, op), "{e}");
        assert!(!e.is_retryable(), "{e}: the server may have granted it; retry with a fresh lease");
    }
}

/// The state of the abandoned-lock test, shared by its callbacks: `a` holds the lock, `b`
/// waits and gives up, then `c` waits and gets the lock when `a` unlocks.
struct Abandon {
    name: String,
    a: Client,
    b: Client,
    c: Client,
    lb: i64,
    lc: i64,
    keys: [String; 3],
    /// What happened, in order: keys put and deleted (as watched), b's callback.
    trace: RefCell<Vec<String>>,
    b_pending: Slot<Pending>,
    b_cancel_returned: Cell<bool>,
    b_results: RefCell<Vec<EtcdError>>,
    /// c's lock key, once it holds the lock; and the keys under the lock's name then.
    c_key: RefCell<Option<bytes::Bytes>>,
    c_saw: RefCell<Option<Vec<String>>>,
    watch: Slot<Watch>,
    watch_stopped: Rc<Cell<bool>>,
    acks: Rc<Cell<u32>>,
}

impl Abandon {
    fn traced(&self, step: &str) -> bool {
        self.trace.borrow().iter().any(|s| s == step)
    }

    fn b_locks(self: &Rc<Self>) {
        let s = self.clone();
        self.b_pending.set(self.b.lock(self.name.clone(), self.lb, move |r| {
            assert!(s.b_cancel_returned.get(), "b's callback ran before or inside cancel()");
            s.trace.borrow_mut().push("b called back".into());
            s.b_results.borrow_mut().push(r.expect_err("b gave up"));
            // etcd deletes an abandoned waiter's key itself, unless the cancel races the
            // handler's own write (its commit then fails and the key stays until its lease
            // ends): revoking the lease settles it, as `Pending::cancel` advises.
            s.b.lease_revoke(s.lb, |r| {
                r.expect("revoke b's lease");
            });
        }));
    }

    fn c_locks(self: &Rc<Self>) {
        let s = self.clone();
        self.c.lock(self.name.clone(), self.lc, move |r| {
            *s.c_key.borrow_mut() = Some(r.expect("c's lock").key);
            s.b_pending.get().cancel(); // b is over: harmless
            s.finish_when_done();
        });
    }

    fn on_keys(self: &Rc<Self>, r: Result<WatchResponse, EtcdError>) {
        assert!(!self.watch_stopped.get(), "watch callback after cancel returned");
        for (ty, key, _) in events(r) {
            let step = step_name(&self.keys, ty, &key);
            self.trace.borrow_mut().push(step.clone());
            match step.as_str() {
                // b waits on the server: abandon it.
                "put b" => {
                    self.b_pending.get().cancel();
                    self.b_cancel_returned.set(true);
                }
                // etcd dropped b's key; now c asks.
                "delete b" => self.c_locks(),
                // c waits behind a: a unlocks.
                "put c" => self.a.unlock(self.keys[0].clone(), |r| {
                    r.expect("a's unlock");
                }),
                "delete a" => self.finish_when_done(),
                other => panic!("unexpected {other}"),
            }
        }
    }

    /// Once c holds the lock and the watch saw a's key go (two connections: either may come
    /// first): stop watching, list the lock's keys, and c unlocks.
    fn finish_when_done(self: &Rc<Self>) {
        let Some(key) = self.c_key.borrow().clone() else {
            return;
        };
        if !self.traced("delete a") {
            return;
        }
        stop_watch(&self.watch.get(), &self.watch_stopped, &self.acks);
        let s = self.clone();
        self.c.get(format!("{}/", self.name), GetOptions::new().prefix(true), move |r| {
            let keys = r.expect("get").kvs.iter().map(|kv| text(&kv.key)).collect();
            *s.c_saw.borrow_mut() = Some(keys);
            s.c.unlock(key, |r| {
                r.expect("c's unlock");
            });
        });
    }
}

#[test]
fn a_pending_lock_can_be_abandoned_and_never_gets_the_lock() {
    let etcd = Etcd::start();
    let (a, b, c) = (client(&etcd.endpoint()), client(&etcd.endpoint()), client(&etcd.endpoint()));
    let name = format!("{}mutex", support::unique_prefix("abandon"));
    let (la, lb, lc) = (grant(&a, 30), grant(&b, 30), grant(&c, 30));
    let keys = [la, lb, lc].map(|l| contender_key(&name, l));

    // a takes the lock; cancelling its completed lock afterwards changes nothing.
    let a_got: Rc<RefCell<Vec<String>>> = Rc::default();
    let ag = a_got.clone();
    let a_pending =
        a.lock(name.clone(), la, move |r| ag.borrow_mut().push(text(&r.expect("a's lock").key)));
    a.run();
    a_pending.cancel();
    a.run();
    assert_eq!(*a_got.borrow(), [keys[0].as_str()]);
    assert_eq!(keys_under(&a, &format!("{name}/")), [keys[0].as_str()]);
    let rev =
        ok(&a, |cb| a.get(name.clone(), GetOptions::new(), cb)).header.expect("header").revision;

    let s = Rc::new(Abandon {
        name: name.clone(),
        a: a.clone(),
        b: b.clone(),
        c: c.clone(),
        lb,
        lc,
        keys: keys.clone(),
        trace: RefCell::default(),
        b_pending: Slot::new(),
        b_cancel_returned: Cell::new(false),
        b_results: RefCell::default(),
        c_key: RefCell::default(),
        c_saw: RefCell::default(),
        watch: Slot::new(),
        watch_stopped: Rc::default(),
        acks: Rc::default(),
    });
    let s1 = s.clone();
    s.watch.set(a.watch(
        format!("{name}/"),
        WatchOptions::new().prefix(true).start_revision(rev + 1),
        move |r| match r {
            Ok(resp) if resp.created => s1.b_locks(),
            r => s1.on_keys(r),
        },
    ));
    drive_all_explained(&[&a, &b, &c], Duration::from_secs(20), || {
        format!("trace {:?}", s.trace.borrow())
    });

    let b_results = s.b_results.borrow();
    assert_eq!(b_results.len(), 1, "b called back once: {b_results:?}");
    let e = &b_results[0];
    assert_eq!((e.code(), e.operation()), (Code::Cancelled, "lock"), "{e}");
    assert!(!e.is_retryable());
    // etcd 3.5 deletes an abandoned waiter's key itself (its Lock handler unlocks when the
    // call's context ends), before c even asks.
    assert_eq!(
        *s.trace.borrow(),
        ["put b", "b called back", "delete b", "put c", "delete a"],
        "what happened, in order"
    );
    assert_eq!(
        s.c_saw.borrow_mut().take().expect("c got the lock"),
        [keys[2].as_str()],
        "only c's key is left while c holds the lock"
    );
    assert_eq!(s.acks.get(), 1);
    assert_eq!(keys_under(&a, &format!("{name}/")), Vec::<String>::new());
}

/// "put a", "delete c", …: a watch event on one of the three participants' keys.
fn step_name(keys: &[String], ty: i32, key: &str) -> String {
    let who = ["a", "b", "c"]
        [keys.iter().position(|k| k == key).unwrap_or_else(|| panic!("unexpected key {key}"))];
    format!("{} {who}", if ty == PUT { "put" } else { "delete" })
}

/// What the observer saw: (value, key, mod_revision) per leader response.
type Seen = Rc<RefCell<Vec<(String, String, i64)>>>;

/// The election script's state, shared by its callbacks. A, B and C campaign; O observes and
/// watches the election's keys. Each step starts when the previous one is visible: an
/// observed leader value, or a contender's key put or deleted on the server.
struct Script {
    name: String,
    a: Client,
    b: Client,
    c: Client,
    o: Client,
    leases: [i64; 3],
    keys: [String; 3],
    /// B campaigns as soon as A leads, so that B's key is older than A's proclaimed value
    /// (else B campaigns once the observer has seen A's proclaimed value).
    b_first: bool,
    trace: RefCell<Vec<String>>,
    seen: Seen,
    a_leader: RefCell<Option<LeaderKey>>,
    b_leader: RefCell<Option<LeaderKey>>,
    a_read_back: RefCell<Option<String>>,
    late_proclaim: RefCell<Option<EtcdError>>,
    no_leader_at_end: RefCell<Option<EtcdError>>,
    c_results: RefCell<Vec<EtcdError>>,
    c_pending: Slot<Pending>,
    observer: Slot<Observe>,
    observer_stopped: Rc<Cell<bool>>,
    watch: Slot<Watch>,
    watch_stopped: Rc<Cell<bool>>,
    acks: Rc<Cell<u32>>,
    proclaimed: Cell<bool>,
    t0: Instant,
}

impl Script {
    fn log(&self, step: impl Into<String>) {
        let step = step.into();
        eprintln!("{:?} {step}", self.t0.elapsed());
        self.trace.borrow_mut().push(step);
    }

    fn traced(&self, step: &str) -> bool {
        self.trace.borrow().iter().any(|s| s == step)
    }

    fn a_campaigns(self: &Rc<Self>) {
        let s = self.clone();
        self.a.election_campaign(self.name.clone(), self.leases[0], "a1", move |r| {
            let leader = r.expect("a's campaign").leader.expect("leader key");
            assert_eq!(
                (text(&leader.name), text(&leader.key), leader.lease),
                (s.name.clone(), s.keys[0].clone(), s.leases[0])
            );
            assert!(leader.rev > 0, "{leader:?}");
            s.log("a leads");
            *s.a_leader.borrow_mut() = Some(leader);
            let s2 = s.clone();
            s.a.election_leader(s.name.clone(), move |r| {
                let kv = r.expect("leader").kv.expect("kv");
                assert_eq!(text(&kv.key), s2.keys[0]);
                *s2.a_read_back.borrow_mut() = Some(text(&kv.value));
                s2.a_proclaims_when_ready();
            });
        });
    }

    /// A proclaims a2 once the observer has seen a1 and A has read its value back (and,
    /// with `b_first`, once B waits).
    fn a_proclaims_when_ready(self: &Rc<Self>) {
        let ready = self.traced("observed a1")
            && self.a_read_back.borrow().is_some()
            && (!self.b_first || self.traced("put b"));
        if !ready || self.proclaimed.replace(true) {
            return;
        }
        let leader = self.a_leader.borrow().clone().expect("a leads");
        self.a.election_proclaim(leader, "a2", |r| {
            r.expect("a proclaims");
        });
    }

    fn b_campaigns(self: &Rc<Self>) {
        let s = self.clone();
        self.b.election_campaign(self.name.clone(), self.leases[1], "b1", move |r| {
            // (Its answer and A's resignation travel on different connections: no order.)
            let leader = r.expect("b's campaign").leader.expect("leader key");
            s.log("b leads");
            *s.b_leader.borrow_mut() = Some(leader);
            s.b_resigns_when_ready();
        });
    }

    /// B resigns once it knows it leads and etcd dropped C's key; then nobody leads.
    fn b_resigns_when_ready(self: &Rc<Self>) {
        let Some(leader) = self.b_leader.borrow().clone() else {
            return;
        };
        if !self.traced("delete c") {
            return;
        }
        let s = self.clone();
        self.b.election_resign(leader, move |r| {
            r.expect("b resigns");
            let s2 = s.clone();
            s.o.election_leader(s.name.clone(), move |r| {
                *s2.no_leader_at_end.borrow_mut() = Some(r.expect_err("nobody leads"));
                stop_observe(&s2.observer.get(), &s2.observer_stopped, &s2.acks);
                stop_watch(&s2.watch.get(), &s2.watch_stopped, &s2.acks);
            });
        });
    }

    fn a_resigns(self: &Rc<Self>) {
        let leader = self.a_leader.borrow().clone().expect("a leads");
        let s = self.clone();
        self.a.election_resign(leader, move |r| {
            r.expect("a resigns");
            s.log("a resigned");
        });
    }

    fn c_campaigns(self: &Rc<Self>) {
        let s = self.clone();
        self.c_pending.set(self.c.election_campaign(
            self.name.clone(),
            self.leases[2],
            "c1",
            move |r| {
                s.log("c called back");
                s.c_results.borrow_mut().push(r.expect_err("c gave up"));
                // As for the abandoned lock: the lease makes sure the key goes.
                s.c.lease_revoke(s.leases[2], |r| {
                    r.expect("revoke c's lease");
                });
            },
        ));
    }

    fn on_leader(self: &Rc<Self>, r: Result<LeaderResponse, EtcdError>) {
        assert!(!self.observer_stopped.get(), "observer callback after cancel returned");
        let kv = r.expect("observer").kv.expect("the leader's kv");
        let value = text(&kv.value);
        self.log(format!("observed {value}"));
        self.seen.borrow_mut().push((value.clone(), text(&kv.key), kv.mod_revision));
        match value.as_str() {
            "a1" => self.a_proclaims_when_ready(),
            "a2" if self.b_first => self.a_resigns(),
            "a2" => self.b_campaigns(),
            // B leads: C campaigns behind it, then gives up (see on_keys).
            "b1" => self.c_campaigns(),
            other => panic!("observed {other:?}: {:?}", self.trace.borrow()),
        }
    }

    fn on_keys(self: &Rc<Self>, r: Result<WatchResponse, EtcdError>) {
        assert!(!self.watch_stopped.get(), "watch callback after cancel returned");
        for (ty, key, _) in events(r) {
            let step = step_name(&self.keys, ty, &key);
            let first = !self.traced(&step);
            self.log(step.clone());
            match step.as_str() {
                // A's campaign (the first put), then its proclaim.
                "put a" if first && self.b_first => self.b_campaigns(),
                "put a" => {}
                // B waits behind A.
                "put b" if self.b_first => self.a_proclaims_when_ready(),
                "put b" => self.a_resigns(),
                // A no longer leads: it cannot proclaim.
                "delete a" => {
                    let leader = self.a_leader.borrow().clone().expect("a led");
                    let s = self.clone();
                    self.a.election_proclaim(leader, "too late", move |r| {
                        *s.late_proclaim.borrow_mut() = Some(r.expect_err("a no longer leads"));
                    });
                }
                // C waits behind B: abandon its campaign.
                "put c" => self.c_pending.get().cancel(),
                // etcd dropped C's key.
                "delete c" => self.b_resigns_when_ready(),
                "delete b" => {}
                other => panic!("unexpected {other}"),
            }
        }
    }
}

/// Campaign, leader, proclaim, resign, a cancelled campaign, and an observer that must see
/// a1, a2, b1: each leader and each proclaimed value once, in order.
fn election(b_first: bool) {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let (a, b, c, o) = (client(&ep), client(&ep), client(&ep), client(&ep));
    let name = format!("{}election", support::unique_prefix("elect"));
    let leases = [grant(&a, 30), grant(&b, 30), grant(&c, 30)];
    let keys = leases.map(|l| contender_key(&name, l));
    let rev =
        ok(&o, |cb| o.get(name.clone(), GetOptions::new(), cb)).header.expect("header").revision;
    // Nobody leads yet.
    let err = block(&o, |cb| o.election_leader(name.clone(), cb)).unwrap_err();
    assert_eq!(err.operation(), "election_leader");
    assert!(err.message().contains("no leader"), "{err}");
    let no_leader = (err.code(), err.message().to_owned());

    let s = Rc::new(Script {
        name: name.clone(),
        a: a.clone(),
        b: b.clone(),
        c: c.clone(),
        o: o.clone(),
        leases,
        keys: keys.clone(),
        b_first,
        trace: RefCell::default(),
        seen: Seen::default(),
        a_leader: RefCell::default(),
        b_leader: RefCell::default(),
        a_read_back: RefCell::default(),
        late_proclaim: RefCell::default(),
        no_leader_at_end: RefCell::default(),
        c_results: RefCell::default(),
        c_pending: Slot::new(),
        observer: Slot::new(),
        observer_stopped: Rc::default(),
        watch: Slot::new(),
        watch_stopped: Rc::default(),
        acks: Rc::default(),
        proclaimed: Cell::new(false),
        t0: Instant::now(),
    });
    let s1 = s.clone();
    s.observer.set(o.election_observe(name.clone(), move |r| s1.on_leader(r)));
    let s1 = s.clone();
    s.watch.set(o.watch(
        format!("{name}/"),
        WatchOptions::new().prefix(true).start_revision(rev + 1),
        move |r| {
            if !matches!(&r, Ok(resp) if resp.created) {
                s1.on_keys(r)
            }
        },
    ));
    s.a_campaigns();
    drive_all_explained(&[&a, &b, &c, &o], Duration::from_secs(20), || {
        format!("trace {:?}; observed {:?}", s.trace.borrow(), s.seen.borrow())
    });

    let trace = s.trace.borrow();
    let seen = s.seen.borrow();
    let values: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(values, ["a1", "a2", "b1"], "observed; trace {trace:?}");
    let observed_keys: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(observed_keys, [&keys[0], &keys[0], &keys[1]]);
    assert!(seen[0].2 < seen[1].2, "{seen:?}");
    if b_first {
        assert!(
            seen[2].2 < seen[1].2,
            "b's key was written before a proclaimed (the case under test): {seen:?}"
        );
    }
    assert_eq!(s.a_read_back.borrow().as_deref(), Some("a1"));
    let c_results = s.c_results.borrow();
    assert_eq!(c_results.len(), 1, "{c_results:?}");
    assert_eq!(
        (c_results[0].code(), c_results[0].operation()),
        (Code::Cancelled, "election_campaign")
    );
    assert!(!c_results[0].is_retryable());
    let late = s.late_proclaim.borrow_mut().take().expect("late proclaim");
    assert_eq!(late.operation(), "election_proclaim");
    assert!(late.message().contains("not leader"), "{late}");
    let end = s.no_leader_at_end.borrow_mut().take().expect("checked");
    assert_eq!((end.code(), end.message().to_owned()), no_leader, "{end}");
    assert_eq!(s.acks.get(), 2, "observer and watch cancelled");
    assert_eq!(keys_under(&o, &format!("{name}/")), Vec::<String>::new());
    eprintln!("trace {trace:?}; no leader: {no_leader:?}; late proclaim: {late}");
}

#[test]
fn campaign_proclaim_resign_and_an_observer_sees_every_leader_once_in_order() {
    election(false);
}

#[test]
fn an_observer_sees_a_new_leader_whose_key_is_older_than_the_last_proclaimed_value() {
    election(true);
}

#[test]
fn an_observer_resumes_after_a_restart_of_etcd_without_repeating_the_leader() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let (a, o) = (client(&ep), client(&ep));
    let name = format!("{}election", support::unique_prefix("resume"));
    let la = grant(&a, 60); // etcd restores leases with their full TTL after a restart
    let leader = ok(&a, |cb| {
        a.election_campaign(name.clone(), la, "a1", cb);
    })
    .leader
    .expect("leader");
    let deadline = Instant::now() + Duration::from_secs(40);

    // Restarts etcd when asked, then waits until the re-opened Observe, having sent the
    // current leader again, watches the leader's key on the server (etcd's Observe does
    // that after sending): only then may A proclaim.
    let (restart_tx, restart_rx) = mpsc::channel::<()>();
    let (ready, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (rd, fl) = (ready.clone(), failed.clone());
    let restarter = std::thread::spawn(move || {
        let mut etcd = etcd;
        if restart_rx.recv().is_ok() {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                etcd.restart();
                while metric(&etcd.endpoint(), WATCHERS) < 1.0 {
                    assert!(Instant::now() < deadline, "the observer never re-opened");
                    std::thread::sleep(Duration::from_millis(10)); // polling a metric
                }
            }));
            match r {
                Ok(()) => rd.store(true, Ordering::SeqCst),
                Err(_) => fl.store(true, Ordering::SeqCst),
            }
        }
        etcd
    });

    let seen: Seen = Rc::default();
    let (o_slot, o_stopped, acks) =
        (Slot::<Observe>::new(), Rc::new(Cell::new(false)), Rc::new(Cell::new(0u32)));
    {
        let (sn, os, ost, ac) = (seen.clone(), o_slot.clone(), o_stopped.clone(), Rc::clone(&acks));
        let mut restart_tx = Some(restart_tx);
        o_slot.set(o.election_observe(name.clone(), move |r| {
            assert!(!ost.get(), "observer callback after cancel returned");
            let kv = r.expect("observer").kv.expect("kv");
            let value = text(&kv.value);
            sn.borrow_mut().push((value.clone(), text(&kv.key), kv.mod_revision));
            match value.as_str() {
                "a1" => {
                    let tx = restart_tx.take().expect("a1 observed once");
                    tx.send(()).expect("restarter waits");
                }
                "a2" => stop_observe(&os.get(), &ost, &ac),
                other => panic!("observed {other:?}"),
            }
        }));
    }
    let proclaimed = Cell::new(false);
    drive_until(&[&a, &o], Duration::from_secs(40), || {
        assert!(!failed.load(Ordering::SeqCst), "restarting etcd failed");
        if ready.load(Ordering::SeqCst) && !proclaimed.replace(true) {
            a.election_proclaim(leader.clone(), "a2", |r| {
                r.expect("proclaim after the restart");
            });
        }
        proclaimed.get() && a.is_idle() && o.is_idle()
    });
    let etcd = restarter.join().expect("restarter");
    let seen = seen.borrow();
    let values: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(values, ["a1", "a2"], "a1 is not delivered again after the re-open");
    assert_eq!(acks.get(), 1);
    drop(etcd);
}
