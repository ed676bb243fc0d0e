//! Failover on a 3-member cluster: the member a watching client uses is killed (-9) while
//! another client writes through the other members; the watch moves to the next endpoint and
//! delivers every event exactly once, in order.

mod support;

use evetcd::{Client, Config, PutOptions, WatchOptions};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;
use support::client::{drive_until, ok, Slot};
use support::Cluster;

const KEYS: usize = 5000;

/// (key, value, mod_revision) of every event a watch delivered.
type Seen = Rc<RefCell<Vec<(String, String, i64)>>>;

fn watch_all(
    c: &Client,
    prefix: &str,
    from: i64,
    seen: &Seen,
    created: &Rc<Cell<u32>>,
) -> evetcd::Watch {
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

/// Writes k0000..k4999 through `endpoints`, 50 in flight, retrying a put that fails; asks for
/// the kill once 1,000 are written.
fn writer(endpoints: Vec<String>, prefix: String, kill: mpsc::Sender<()>) {
    let c = Client::new(Config::new().endpoints(endpoints).timeout(Duration::from_secs(10)))
        .expect("config");
    let next = Rc::new(RefCell::new(0usize));
    let done = Rc::new(RefCell::new(0usize));
    let kill = Rc::new(RefCell::new(Some(kill)));
    fn put(
        c: &Client,
        p: &Rc<str>,
        i: usize,
        done: &Rc<RefCell<usize>>,
        next: &Rc<RefCell<usize>>,
        kill: &Rc<RefCell<Option<mpsc::Sender<()>>>>,
    ) {
        let (c2, p2, d, n, k) = (c.clone(), p.clone(), done.clone(), next.clone(), kill.clone());
        c.put(format!("{p}k{i:04}"), format!("v{i}"), PutOptions::new(), move |r| {
            if r.is_err() {
                return put(&c2, &p2, i, &d, &n, &k); // retried: may apply twice, as a replay shows
            }
            *d.borrow_mut() += 1;
            if *d.borrow() == 1000 {
                if let Some(tx) = k.borrow_mut().take() {
                    let _ = tx.send(());
                }
            }
            let i = {
                let mut n = n.borrow_mut();
                *n += 1;
                *n - 1
            };
            if i < KEYS {
                put(&c2, &p2, i, &d, &n, &k);
            }
        });
    }
    let p: Rc<str> = prefix.into();
    for _ in 0..50 {
        let i = {
            let mut n = next.borrow_mut();
            *n += 1;
            *n - 1
        };
        put(&c, &p, i, &done, &next, &kill);
    }
    c.run();
    assert_eq!(*done.borrow(), KEYS);
}

#[test]
fn a_watch_survives_a_kill_of_its_member_and_delivers_every_event_once() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader_index().expect("a leader");
    // The watching client starts on a follower (killing the leader would stall the writes
    // for an election, which is beside the point); the writer uses the two others.
    let victim = (leader + 1) % 3;
    let others: Vec<String> =
        (0..3).filter(|&i| i != victim).map(|i| cluster.members[i].endpoint()).collect();
    let mut watch_endpoints = vec![cluster.members[victim].endpoint()];
    watch_endpoints.extend(others.iter().cloned());
    let c = Client::new(Config::new().endpoints(watch_endpoints)).unwrap();
    let prefix = support::unique_prefix("failover");
    let start = ok(&c, |cb| c.put(format!("{prefix}start"), "", PutOptions::new(), cb))
        .header
        .unwrap()
        .revision;

    let seen: Seen = Rc::default();
    let handle = Slot::new();
    let created = Rc::new(Cell::new(0));
    handle.set(watch_all(&c, &prefix, start, &seen, &created));
    // The kill runs on its own thread, as soon as the writer asks.
    let (kill_tx, kill_rx) = mpsc::channel();
    let killer = std::thread::spawn(move || {
        let mut cluster = cluster;
        if kill_rx.recv().is_ok() {
            cluster.members[victim].kill();
        }
        cluster
    });
    let (w_others, w_prefix) = (others.clone(), prefix.clone());
    let writer = std::thread::spawn(move || writer(w_others, w_prefix, kill_tx));
    let keys_seen = || seen.borrow().iter().filter(|e| e.0.contains("/k")).count();
    // Every key at least once (a retried put may add a second event for its key).
    let all_keys = || {
        let s = seen.borrow();
        let mut keys: Vec<&str> =
            s.iter().map(|e| e.0.as_str()).filter(|k| k.contains("/k")).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len() == KEYS
    };
    drive_until(&[&c], Duration::from_secs(60), || all_keys() && writer.is_finished());
    writer.join().expect("writer");
    let _cluster = killer.join().expect("killer");
    handle.get().cancel(|_| ());

    // Ground truth: a fresh watch over the same range, from the same revision.
    let live = seen.borrow().clone();
    let last = live.last().expect("events").2;
    let replayed: Seen = Rc::default();
    let r = Client::new(Config::new().endpoints(others)).unwrap();
    let replay = watch_all(&r, &prefix, start, &replayed, &Rc::new(Cell::new(0)));
    drive_until(&[&r], Duration::from_secs(30), || {
        replayed.borrow().last().is_some_and(|e| e.2 >= last)
    });
    replay.cancel(|_| ());
    r.run();
    c.run();
    assert!(keys_seen() >= KEYS);
    assert!(created.get() >= 2, "the watch was re-created on another member after the kill");
    assert_eq!(live, *replayed.borrow(), "the live watch's events are exactly the history");
}
