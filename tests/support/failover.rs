//! A watch that must see every write while a fault hits its connection: a writer thread puts
//! [`KEYS`] keys through other members, the fault is injected once [`FAULT_AT`] of them are
//! written, and the watch's events are compared with a replay of the history.

use super::client::{drive_until, ok};
use evetcd::{Client, Config, PutOptions, Watch, WatchOptions};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Keys the writer puts: `k0000` .. `k4999`.
pub const KEYS: usize = 5000;
/// Puts done when the fault is injected.
pub const FAULT_AT: usize = 1000;
/// Puts the writer keeps in flight.
const IN_FLIGHT: usize = 50;

/// (key, value, mod_revision) of every event a watch delivered.
pub type Seen = Rc<RefCell<Vec<(String, String, i64)>>>;

/// The member a watching client should start on, and the endpoints of the others (the
/// writer's), in a 3-member `cluster`: a follower, since killing the leader would stall the
/// writes for an election, which is beside the point. Returns (victim, the watcher's
/// endpoints with the victim first, the others).
pub fn victim_first(cluster: &super::Cluster) -> (usize, Vec<String>, Vec<String>) {
    let leader = cluster.leader_index().expect("a leader");
    let victim = (leader + 1) % 3;
    let others: Vec<String> =
        (0..3).filter(|&i| i != victim).map(|i| cluster.members[i].endpoint()).collect();
    let mut watcher = vec![cluster.members[victim].endpoint()];
    watcher.extend(others.iter().cloned());
    (victim, watcher, others)
}

/// Watches everything under `prefix` from revision `from`, recording every event in `seen`
/// and counting the times the watch was created in `created`. The watch must never fail.
pub fn watch_all(
    c: &Client,
    prefix: &str,
    from: i64,
    seen: &Seen,
    created: &Rc<Cell<u32>>,
) -> Watch {
    let (s, cr) = (seen.clone(), created.clone());
    c.watch(prefix.to_string(), WatchOptions::new().prefix(true).start_revision(from), move |r| {
        let resp = r.expect("the watch never fails");
        if resp.created {
            cr.set(cr.get() + 1);
        }
        for ev in resp.events {
            let kv = ev.kv.expect("kv");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            s.borrow_mut().push((text(&kv.key), text(&kv.value), kv.mod_revision));
        }
    })
}

/// Whether every key the writer puts has been seen at least once (a retried put may add a
/// second event for its key).
fn every_key_seen(seen: &Seen) -> bool {
    let s = seen.borrow();
    let mut keys: Vec<&str> = s.iter().map(|e| e.0.as_str()).filter(|k| k.contains("/k")).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.len() == KEYS
}

/// Writes every key through `endpoints`, [`IN_FLIGHT`] at a time, retrying a put that fails;
/// sends on `fault` once [`FAULT_AT`] are written.
fn writer(config: Config, prefix: String, fault: mpsc::Sender<()>) {
    struct Writer {
        c: Client,
        prefix: String,
        next: Cell<usize>,
        done: Cell<usize>,
        fault: RefCell<Option<mpsc::Sender<()>>>,
    }
    fn put(w: &Rc<Writer>, i: usize) {
        let w2 = w.clone();
        let key = format!("{}k{i:04}", w.prefix);
        w.c.put(key, format!("v{i}"), PutOptions::new(), move |r| {
            if r.is_err() {
                return put(&w2, i); // retried: may apply twice, as the replay shows
            }
            w2.done.set(w2.done.get() + 1);
            if w2.done.get() == FAULT_AT {
                if let Some(tx) = w2.fault.borrow_mut().take() {
                    let _ = tx.send(());
                }
            }
            start_next(&w2);
        });
    }
    fn start_next(w: &Rc<Writer>) {
        let i = w.next.get();
        if i < KEYS {
            w.next.set(i + 1);
            put(w, i);
        }
    }
    let c = Client::new(config.timeout(Duration::from_secs(10))).expect("config");
    let w = Rc::new(Writer {
        c,
        prefix,
        next: Cell::new(0),
        done: Cell::new(0),
        fault: RefCell::new(Some(fault)),
    });
    for _ in 0..IN_FLIGHT {
        start_next(&w);
    }
    w.c.run();
    assert_eq!(w.done.get(), KEYS, "the writer put every key");
}

/// Watches a fresh prefix on `c` while a writer thread puts [`KEYS`] keys through
/// `writer_endpoints`; runs `fault()` (on this thread, between two turns of `c`) once
/// [`FAULT_AT`] are written, and `each_turn()` before every turn. Returns, with the number of
/// times the watch was created, once every key was seen, after checking that the watch
/// delivered exactly the history: every event once, in order, as a fresh watch from the same
/// revision (through `writer_endpoints`) replays it.
pub fn watch_through_a_fault(
    c: &Client,
    test: &str,
    writer_endpoints: Vec<String>,
    fault: impl FnOnce(),
    each_turn: impl FnMut(),
) -> u32 {
    let writer = Config::new().endpoints(writer_endpoints);
    watch_through_a_fault_with(c, test, writer, fault, each_turn)
}

/// [`watch_through_a_fault`] with the writer's (and the replay's) whole configuration, for
/// endpoints that need more than their address (TLS).
pub fn watch_through_a_fault_with(
    c: &Client,
    test: &str,
    writer: Config,
    fault: impl FnOnce(),
    mut each_turn: impl FnMut(),
) -> u32 {
    let prefix = super::unique_prefix(test);
    let start = ok(c, |cb| c.put(format!("{prefix}start"), "", PutOptions::new(), cb))
        .header
        .expect("header")
        .revision;
    let seen: Seen = Rc::default();
    let created = Rc::new(Cell::new(0));
    let watch = watch_all(c, &prefix, start, &seen, &created);
    let (tx, rx) = mpsc::channel();
    let (w_config, w_prefix) = (writer.clone(), prefix.clone());
    let mut writing = Some(thread::spawn(move || self::writer(w_config, w_prefix, tx)));
    let mut fault = Some(fault);
    drive_until(&[c], Duration::from_secs(60), || {
        if rx.try_recv().is_ok() {
            (fault.take().expect("one fault"))();
        }
        each_turn();
        if writing.as_ref().is_some_and(|w| w.is_finished()) {
            let w = writing.take().expect("checked");
            // A writer that failed fails the test now, not at the deadline.
            w.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        writing.is_none() && every_key_seen(&seen)
    });
    assert!(fault.is_none(), "the fault was injected");
    watch.cancel(|_| ());
    c.run();

    // Ground truth: a fresh watch over the same range, from the same revision.
    let live = seen.borrow().clone();
    let last = live.last().expect("events").2;
    let replayed: Seen = Rc::default();
    let r = Client::new(writer).expect("config");
    let replay = watch_all(&r, &prefix, start, &replayed, &Rc::new(Cell::new(0)));
    drive_until(&[&r], Duration::from_secs(30), || {
        replayed.borrow().last().is_some_and(|e| e.2 >= last)
    });
    replay.cancel(|_| ());
    r.run();
    assert_eq!(live, *replayed.borrow(), "the live watch's events are exactly the history");
    created.get()
}
