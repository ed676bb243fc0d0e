//! The recipes of `evetcd::concurrency` beside Go's `clientv3/concurrency` (through the Go
//! helper, `tests/goclient`) and the real etcdctl 3.5.1, on one real etcd (issue 18, point
//! 7): an evetcd `Mutex` and a Go `concurrency.Mutex` on one name exclude each other both
//! ways (and each side's try-lock fails while the other holds), so do `etcdctl lock` and
//! ours, and Go's `Election` and ours see each other's leaders and proclamations and queue
//! in create order. After each test no key is left under the recipe's prefix.
//!
//! "X waits" is checked once X is provably waiting: its key is on the server and (for a
//! mutex) etcd counts its watch on the key ahead (`etcd_debugging_mvcc_watcher_total`;
//! nothing else watches in those tests). Every other step waits for a callback, a Go result
//! or event, or a line from etcdctl; never for a sleep.
//!
//! Without Go (and without `CI=true`) the Go tests print `SKIP: go not found: <test>`.

mod support;

use evetcd::concurrency::{Election, Error, Mutex, Session, SessionOptions};
use evetcd::{Client, GetOptions, RangeResponse};
use serde_json::json;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;
use support::client::Got;
use support::client::{client, drive_until, ok};
use support::goclient::{skip_without_go, GoClient, Reply};
use support::metrics::metric;
use support::{etcd_bin_dir, unique_prefix, Etcd};

const LIMIT: Duration = Duration::from_secs(15);
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// Runs `clients` until `got` is set.
fn wait<T: 'static>(clients: &[&Client], got: &Got<T>) -> T {
    drive_until(clients, LIMIT, || got.is_set());
    got.take()
}

fn session(c: &Client) -> Session {
    let got = Got::new();
    Session::new(c, SessionOptions::new(), got.cb());
    wait(&[c], &got).expect("session")
}

/// Closes `s` (its lease revoked).
fn close(c: &Client, s: &Session) {
    let got = Got::new();
    s.close(got.cb());
    wait(&[c], &got).expect("close");
}

/// The keys under `prefix`, in create order, read through `checker` (a client without
/// streams, which `ok` runs until idle).
fn keys(checker: &Client, prefix: &str) -> Vec<String> {
    let options = GetOptions::new().prefix(true).sort_target(evetcd::SortTarget::Create);
    let got = ok(checker, |cb| checker.get(prefix.to_string(), options, cb));
    got.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

/// Drives `clients` until `checker` sees `n` keys under `prefix`: returns them.
fn await_keys(clients: &[&Client], checker: &Client, prefix: &str, n: usize) -> Vec<String> {
    drive_until(clients, LIMIT, || keys(checker, prefix).len() == n);
    keys(checker, prefix)
}

/// Drives `clients` until etcd counts `n` watchers: the waiters' watches on the keys
/// ahead are in place.
fn await_watchers(clients: &[&Client], etcd: &Etcd, n: f64) {
    drive_until(clients, LIMIT, || metric(&etcd.endpoint(), WATCHERS) == n);
}

fn lease_key(prefix: &str, lease: i64) -> String {
    format!("{prefix}{lease:x}")
}

/// A Go session (TTL 60 s, as ours) and a Go mutex on `name`: (session, mutex id, key).
fn go_mutex(go: &GoClient, name: &str) -> (Reply, u64, String) {
    let s = go.ok(json!({"cmd": "session", "ttl": 60}));
    let m = go.ok(json!({"cmd": "mutex", "session": s.id(), "name": name})).id();
    let key = format!("{name}/{}", s.str("lease_hex"));
    (s, m, key)
}

#[test]
fn our_mutex_and_gos_exclude_each_other_both_ways() {
    let test = "our_mutex_and_gos_exclude_each_other_both_ways";
    if skip_without_go(test) {
        return;
    }
    let etcd = Etcd::start();
    let (a, b, checker) =
        (client(&etcd.endpoint()), client(&etcd.endpoint()), client(&etcd.endpoint()));
    let both = [&a, &b];
    let go = GoClient::start(&etcd.endpoint());
    let name = format!("{}lock", unique_prefix("mutex_interop"));
    let prefix = format!("{name}/");
    let (sa, sb) = (session(&a), session(&b));
    let (ma, mb) = (Mutex::new(&sa, &name), Mutex::new(&sb, &name));
    let (gs, gm, go_key) = go_mutex(&go, &name);
    let (a_key, b_key) = (lease_key(&prefix, sa.lease()), lease_key(&prefix, sb.lease()));

    // Ours holds: Go's TryLock fails (ErrLocked) and leaves no key.
    let held = Got::new();
    ma.lock(held.cb());
    wait(&both, &held).expect("a free mutex");
    let busy = go.call(json!({"cmd": "trylock", "mutex": gm})).expect_err("ours holds it");
    assert_eq!(busy.message, "mutex: Locked by another session");
    assert_eq!(keys(&checker, &prefix), [a_key.as_str()], "Go's failed TryLock left no key");

    // Go's Lock waits behind ours: its key is queued and it watches ours.
    let go_lock = go.ok(json!({"cmd": "lock", "mutex": gm})).id();
    assert_eq!(await_keys(&both, &checker, &prefix, 2), [a_key.clone(), go_key.clone()]);
    await_watchers(&both, &etcd, 1.0);
    // A second one of ours queues behind Go's (and watches Go's key).
    let b_held = Got::new();
    mb.lock(b_held.cb());
    assert_eq!(
        await_keys(&both, &checker, &prefix, 3),
        [a_key.as_str(), go_key.as_str(), b_key.as_str()]
    );
    await_watchers(&both, &etcd, 2.0);
    assert!(go.try_event(go_lock).is_none(), "Go got the lock while ours holds it");
    assert!(!b_held.is_set(), "b got the lock while a holds it");

    // Ours unlocks: Go gets the lock, b still waits (now on Go's key alone).
    let unlocked = Got::new();
    ma.unlock(unlocked.cb());
    wait(&both, &unlocked).expect("unlock");
    let got = go.done(go_lock).expect("Go gets the lock once ours unlocked");
    assert_eq!(got.str("key"), go_key);
    await_watchers(&both, &etcd, 1.0);
    assert_eq!(keys(&checker, &prefix), [go_key.as_str(), b_key.as_str()]);
    assert!(!b_held.is_set(), "b got the lock while Go holds it");

    // Go holds: our try_lock fails with Locked and leaves no key; b keeps waiting.
    let tried = Got::new();
    ma.try_lock(tried.cb());
    assert_eq!(wait(&both, &tried), Err(Error::Locked));
    assert!(ma.key().is_empty() && !ma.is_locked());
    assert_eq!(
        keys(&checker, &prefix),
        [go_key.as_str(), b_key.as_str()],
        "our failed try_lock left no key"
    );
    assert!(!b_held.is_set());

    // Go unlocks: b gets the lock; Go's TryLock fails again while b holds it.
    go.ok(json!({"cmd": "unlock", "mutex": gm}));
    wait(&both, &b_held).expect("b gets the lock once Go unlocked");
    assert_eq!(keys(&checker, &prefix), [b_key.as_str()]);
    let busy = go.call(json!({"cmd": "trylock", "mutex": gm})).expect_err("b holds it");
    assert_eq!(busy.message, "mutex: Locked by another session");
    let unlocked = Got::new();
    mb.unlock(unlocked.cb());
    wait(&both, &unlocked).expect("unlock");
    let got = go.ok(json!({"cmd": "trylock", "mutex": gm}));
    assert_eq!(got.str("key"), go_key, "Go's TryLock takes a free mutex");
    go.ok(json!({"cmd": "unlock", "mutex": gm}));

    assert!(keys(&checker, &prefix).is_empty(), "no stray key: {:?}", keys(&checker, &prefix));
    go.ok(json!({"cmd": "session_close", "session": gs.id()}));
    close(&a, &sa);
    close(&b, &sb);
    assert!(keys(&checker, &prefix).is_empty());
}

/// The real etcdctl, started on a command that runs until it ends or is interrupted: its
/// stdout read line by line by a thread, every wait bounded. Dropping it kills the process.
struct Etcdctl {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    what: String,
}

impl Etcdctl {
    fn start(ep: &str, args: &[&str]) -> Etcdctl {
        let bin = etcd_bin_dir().join("etcdctl");
        let mut child = support::etcdctl::command(&bin, ep, args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Etcdctl { child, lines, stderr: Some(stderr), what: format!("etcdctl {args:?}") }
    }

    /// A line it has printed already, if any.
    fn printed(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// The next line it prints.
    fn line(&self) -> String {
        match self.lines.recv_timeout(LIMIT) {
            Ok(line) => line,
            Err(e) => panic!("{}: no line within {LIMIT:?} ({e:?})", self.what),
        }
    }

    fn interrupt(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) of our own child, not reaped yet (`finish` and drop reap it).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "kill {}", self.what);
    }

    /// Waits for it to end (its stdout closes) and checks that it succeeded: the lines it
    /// printed from now on.
    fn finish(mut self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(LIMIT) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("{} did not end in {LIMIT:?}", self.what),
            }
        }
        let status = self.child.wait().expect("wait");
        let stderr = self.stderr.take().expect("once").join().expect("stderr reader");
        assert!(status.success(), "{} exited with {status}: {stderr}", self.what);
        rest
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn etcdctl_lock_and_our_mutex_exclude_each_other_both_ways() {
    let etcd = Etcd::start();
    let ep = etcd.endpoint();
    let (a, checker) = (client(&ep), client(&ep));
    let name = format!("{}lock", unique_prefix("etcdctl_lock_interop"));
    let prefix = format!("{name}/");
    let sa = session(&a);
    let ma = Mutex::new(&sa, &name);
    let a_key = lease_key(&prefix, sa.lease());

    // Ours holds: `etcdctl lock NAME -- CMD` queues and runs CMD only once ours unlocked.
    let held = Got::new();
    ma.lock(held.cb());
    wait(&[&a], &held).expect("a free mutex");
    let waiter = Etcdctl::start(&ep, &["lock", &name, "--", "echo", "etcdctl holds it"]);
    let queued = await_keys(&[&a], &checker, &prefix, 2);
    assert_eq!(queued[0], a_key);
    await_watchers(&[&a], &etcd, 1.0);
    assert_eq!(waiter.printed(), None, "etcdctl ran its command while ours holds the lock");
    let unlocked = Got::new();
    ma.unlock(unlocked.cb());
    wait(&[&a], &unlocked).expect("unlock");
    assert_eq!(waiter.line(), "etcdctl holds it");
    assert_eq!(waiter.finish(), Vec::<String>::new());
    assert!(keys(&checker, &prefix).is_empty(), "etcdctl released the lock after its command");

    // `etcdctl lock NAME` holds (it prints its key) until interrupted: our try_lock fails,
    // our lock waits for it.
    let holder = Etcdctl::start(&ep, &["lock", &name]);
    let etcdctl_key = holder.line();
    assert!(etcdctl_key.starts_with(&prefix), "{etcdctl_key:?}");
    assert_eq!(keys(&checker, &prefix), [etcdctl_key.as_str()]);
    await_watchers(&[&a], &etcd, 0.0); // the first etcdctl's watch went with it
    let tried = Got::new();
    ma.try_lock(tried.cb());
    assert_eq!(wait(&[&a], &tried), Err(Error::Locked));
    assert_eq!(keys(&checker, &prefix), [etcdctl_key.as_str()], "our try_lock left no key");
    let held = Got::new();
    ma.lock(held.cb());
    assert_eq!(await_keys(&[&a], &checker, &prefix, 2), [etcdctl_key.as_str(), a_key.as_str()]);
    await_watchers(&[&a], &etcd, 1.0);
    assert!(!held.is_set(), "ours got the lock while etcdctl holds it");
    holder.interrupt();
    wait(&[&a], &held).expect("ours gets the lock once etcdctl let go");
    assert_eq!(holder.finish(), [""], "etcdctl printed the key, then its (empty) value");
    assert_eq!(keys(&checker, &prefix), [a_key]);

    let unlocked = Got::new();
    ma.unlock(unlocked.cb());
    wait(&[&a], &unlocked).expect("unlock");
    assert!(keys(&checker, &prefix).is_empty(), "no stray key: {:?}", keys(&checker, &prefix));
    close(&a, &sa);
}

/// An observer's values, as they come.
fn observed(e: &Election) -> (evetcd::concurrency::Observer, Rc<RefCell<Vec<String>>>) {
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let s = seen.clone();
    let observer = e.observe(move |r: Result<RangeResponse, Error>| {
        let resp = r.expect("observe");
        let kv = &resp.kvs[0];
        s.borrow_mut().push(String::from_utf8_lossy(&kv.value).into_owned());
    });
    (observer, seen)
}

/// Our leader(): (key, value, create revision).
fn our_leader(clients: &[&Client], e: &Election) -> (String, String, i64) {
    let got = Got::new();
    e.leader(got.cb());
    let resp = wait(clients, &got).expect("a leader");
    let kv = &resp.kvs[0];
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&kv.key), text(&kv.value), kv.create_revision)
}

/// Go's Leader: (key, value).
fn go_leader(go: &GoClient, e: u64) -> (String, String) {
    let l = go.ok(json!({"cmd": "leader", "election": e}));
    (l.str("key").to_string(), l.str("value").to_string())
}

/// The next "leader" event of Go's observer `obs`: (key, value).
fn go_observed(go: &GoClient, obs: u64) -> (String, String) {
    let ev = go.event(obs);
    assert_eq!(ev.str("event"), "leader", "{ev:?}");
    (ev.str("key").to_string(), ev.str("value").to_string())
}

#[test]
fn go_and_our_elections_see_each_others_leaders_and_queue_in_create_order() {
    let test = "go_and_our_elections_see_each_others_leaders_and_queue_in_create_order";
    if skip_without_go(test) {
        return;
    }
    let etcd = Etcd::start();
    let (a, b, checker) =
        (client(&etcd.endpoint()), client(&etcd.endpoint()), client(&etcd.endpoint()));
    let both = [&a, &b];
    let go = GoClient::start(&etcd.endpoint());
    let name = format!("{}election", unique_prefix("election_interop"));
    let prefix = format!("{name}/");
    let (sa, sb) = (session(&a), session(&b));
    let (ea, eb) = (Election::new(&sa, &name), Election::new(&sb, &name));
    let (a_key, b_key) = (lease_key(&prefix, sa.lease()), lease_key(&prefix, sb.lease()));
    // Two Go candidates, each with its session.
    let g1s = go.ok(json!({"cmd": "session", "ttl": 60}));
    let g1 = go.ok(json!({"cmd": "election", "session": g1s.id(), "name": name})).id();
    let g2s = go.ok(json!({"cmd": "session", "ttl": 60}));
    let g2 = go.ok(json!({"cmd": "election", "session": g2s.id(), "name": name})).id();
    let g1_key = format!("{prefix}{}", g1s.str("lease_hex"));
    let g2_key = format!("{prefix}{}", g2s.str("lease_hex"));

    // Observers on both sides from before the first campaign.
    let (observer, seen) = observed(&Election::new(&sa, &name));
    let go_obs = go.ok(json!({"cmd": "observe", "election": g2})).id();

    // Go campaigns: our leader() and observer report Go's value.
    let won = go.run(json!({"cmd": "campaign", "election": g1, "value": "go-1"})).expect("elected");
    assert_eq!(won.str("key"), g1_key);
    assert_eq!(our_leader(&both, &ea), (g1_key.clone(), "go-1".into(), won.i64("revision")));
    drive_until(&both, LIMIT, || seen.borrow().len() == 1);
    assert_eq!(go_observed(&go, go_obs), (g1_key.clone(), "go-1".into()));
    // Go proclaims: ours sees it.
    go.ok(json!({"cmd": "proclaim", "election": g1, "value": "go-2"}));
    drive_until(&both, LIMIT, || seen.borrow().len() == 2);
    assert_eq!(*seen.borrow(), ["go-1", "go-2"]);
    assert_eq!(our_leader(&both, &ea).1, "go-2");
    assert_eq!(go_observed(&go, go_obs), (g1_key.clone(), "go-2".into()));

    // The queue, in create order: Go's g1 leads, then ours (a), Go's g2, ours (b).
    let a_won = Got::new();
    ea.campaign("rs-1", a_won.cb());
    drive_until(&both, LIMIT, || !ea.key().is_empty());
    let g2_camp = go.ok(json!({"cmd": "campaign", "election": g2, "value": "go-3"})).id();
    assert_eq!(
        await_keys(&both, &checker, &prefix, 3),
        [g1_key.as_str(), a_key.as_str(), g2_key.as_str()]
    );
    let b_won = Got::new();
    eb.campaign("rs-b", b_won.cb());
    drive_until(&both, LIMIT, || !eb.key().is_empty());
    assert_eq!(
        keys(&checker, &prefix),
        [g1_key.as_str(), a_key.as_str(), g2_key.as_str(), b_key.as_str()]
    );
    assert!(!a_won.is_set() && !b_won.is_set(), "ours won while Go leads");
    assert!(go.try_event(g2_camp).is_none(), "Go's second candidate won while Go's first leads");

    // g1 resigns: a (ours) leads; Go's Leader and Observe report it.
    go.ok(json!({"cmd": "resign", "election": g1}));
    wait(&both, &a_won).expect("a leads once g1 resigned");
    assert_eq!(go_leader(&go, g1), (a_key.clone(), "rs-1".into()));
    assert_eq!(go_observed(&go, go_obs), (a_key.clone(), "rs-1".into()));
    // Ours proclaims: Go sees it.
    let p = Got::new();
    ea.proclaim("rs-2", p.cb());
    wait(&both, &p).expect("proclaim");
    assert_eq!(go_observed(&go, go_obs), (a_key.clone(), "rs-2".into()));
    assert_eq!(go_leader(&go, g2), (a_key.clone(), "rs-2".into()));
    assert!(go.try_event(g2_camp).is_none(), "g2 won while a leads");

    // a resigns: g2 (Go) leads, not b, which was queued after it.
    let r = Got::new();
    ea.resign(r.cb());
    wait(&both, &r).expect("resign");
    let won = go.done(g2_camp).expect("g2 leads once a resigned");
    assert_eq!(won.str("key"), g2_key);
    drive_until(&both, LIMIT, || seen.borrow().len() == 5);
    assert!(!b_won.is_set(), "b won while g2 leads");
    assert_eq!(our_leader(&both, &eb), (g2_key.clone(), "go-3".into(), won.i64("revision")));
    assert_eq!(go_observed(&go, go_obs), (g2_key.clone(), "go-3".into()));

    // g2 resigns: b leads.
    go.ok(json!({"cmd": "resign", "election": g2}));
    wait(&both, &b_won).expect("b leads once g2 resigned");
    assert_eq!(go_leader(&go, g1), (b_key.clone(), "rs-b".into()));
    assert_eq!(go_observed(&go, go_obs), (b_key.clone(), "rs-b".into()));
    drive_until(&both, LIMIT, || seen.borrow().len() == 6);
    assert_eq!(*seen.borrow(), ["go-1", "go-2", "rs-1", "rs-2", "go-3", "rs-b"]);

    let r = Got::new();
    eb.resign(r.cb());
    wait(&both, &r).expect("resign");
    observer.cancel();
    go.cancel(go_obs).expect_err("a cancelled observer ends with the cancellation");
    assert!(keys(&checker, &prefix).is_empty(), "no stray key: {:?}", keys(&checker, &prefix));
    for s in [&g1s, &g2s] {
        go.ok(json!({"cmd": "session_close", "session": s.id()}));
    }
    close(&a, &sa);
    close(&b, &sb);
    assert!(keys(&checker, &prefix).is_empty());
}
