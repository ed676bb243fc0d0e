//! Mutex safety under failover (issue 18, point 8): on a 3-member cluster, 5 clients, each
//! with its own short-TTL `Session` and a `Mutex` on one name, take the lock [`TOTAL`] times
//! in turn while the member they use is killed (-9) and restarted [`KILLS`] times.
//!
//! While it believes it holds the lock, each holder reads a counter and writes it back plus
//! one in a Txn guarded by `is_owner()`, by its key being the oldest under the prefix (a
//! range compare: the holder in Go's algorithm, which `is_owner()` alone does not say, as
//! it holds for a waiting contender too) and by the counter's mod revision: every such Txn
//! must succeed (a failed guard while holding means another holder, or a lock lost without
//! the holder knowing), so the counter ends at the number of acquisitions. A guard that fails
//! because the holder's session was lost is counted apart (it is what fencing is for), and
//! must not happen here either. Besides: at most one client believes it holds the lock at
//! any time (from its lock callback until it calls unlock), every lock and unlock callback
//! runs exactly once, and no lock key is left once all are done.
//!
//! Failures the kills cause (a lock, read, Txn or unlock that fails with the connection) are
//! retried, by the test, on a later turn: a lock retried with the same session finds its key
//! and keeps its place; an ambiguous Txn is recognised by the token the counter carries.
//!
//! The kills come at set numbers of acquisitions ([`KILL_AT`]): some wherever the clients
//! are at that moment, the others aimed at a write: the member is frozen (SIGSTOP) right
//! after a client sent its lock Txn, its guarded Txn or its unlock, so that the write is in
//! flight, unanswered, when the member dies.
//!
//! Everything runs on this thread, driven by `drive_until`; a helper thread owns the cluster
//! and kills or restarts a member when told (a restart blocks until the member is ready).

mod support;

use evetcd::concurrency::{Error, Mutex, Session, SessionOptions};
use evetcd::{Client, Compare, CompareOp, Config, GetOptions, PutOptions, Txn, TxnOp};
use evetcd::{SortOrder, SortTarget, TxnOpResponse, TxnResponse};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use support::client::{connections_to, drive_until, ok};
use support::failover::victim_first;
use support::Cluster;

/// Acquisitions, all clients together.
const TOTAL: u32 = 200;
const CLIENTS: usize = 5;
/// The sessions' TTL: short, so that a keepalive that fell behind would show as a lost
/// session.
const TTL: Duration = Duration::from_secs(5);
/// A write that can be in flight when the member dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The Txn that puts a contender's key (`lock`).
    Lock,
    /// The holder's guarded Txn.
    Txn,
    /// The delete of `unlock`.
    Unlock,
}

/// The member in use is killed once this many acquisitions are done: wherever the clients
/// are (`None`), or frozen first as soon as a client sent the step...
const KILL_AT: [(u32, Option<Step>); 7] = [
    (20, None),
    (45, Some(Step::Lock)),
    (70, None),
    (95, Some(Step::Txn)),
    (120, None),
    (145, Some(Step::Unlock)),
    (170, None),
];
const KILLS: usize = KILL_AT.len();
/// ... and restarted this many acquisitions later.
const DOWN_FOR: u32 = 10;
/// How long a failed step waits before it is tried again.
const BACKOFF: Duration = Duration::from_millis(50);
/// The whole run's limit.
const LIMIT: Duration = Duration::from_secs(90);

const LOCK: &str = "/mutex-safety/lock";
const LOCK_KEYS: &str = "/mutex-safety/lock/";
const COUNTER: &str = "/mutex-safety/counter";

fn bump(c: &Cell<u32>) {
    c.set(c.get() + 1);
}

/// What the run saw.
#[derive(Default)]
struct Stats {
    acquisitions: Cell<u32>,
    /// Guarded Txns that succeeded (or were found applied after their answer was lost).
    increments: Cell<u32>,
    /// Of those, applied although their answer was lost.
    applied_unseen: Cell<u32>,
    lock_calls: Cell<u32>,
    lock_callbacks: Cell<u32>,
    unlock_calls: Cell<u32>,
    unlock_callbacks: Cell<u32>,
    /// Retried failures, by step and error.
    retries: RefCell<BTreeMap<String, u32>>,
    /// Sessions reported lost (`on_lost`).
    lost_sessions: Cell<u32>,
    /// Guarded Txns that failed while their holder believed it held: (worker, what etcd
    /// showed). Violations, unless the worker's session was lost.
    failed_guards: RefCell<Vec<(usize, String)>>,
    /// Two clients believing they hold at once.
    overlaps: RefCell<Vec<String>>,
    /// Errors no retry can mend (`Locked`, `NotLocked`...), which stop their worker.
    unexpected: RefCell<Vec<String>>,
}

impl Stats {
    fn retried(&self, step: &str, e: &Error) {
        let kind = match e {
            Error::Etcd(e) => format!("{step}: {:?}", e.code()),
            e => format!("{step}: {e}"),
        };
        *self.retries.borrow_mut().entry(kind).or_default() += 1;
    }

    fn retry_count(&self) -> u32 {
        self.retries.borrow().values().sum()
    }

    fn unexpected(&self, w: &Worker, what: String) {
        self.unexpected.borrow_mut().push(format!("worker {}: {what}", w.id));
        w.finished.set(true);
    }

    /// Retries of `step`.
    fn retries_of(&self, step: &str) -> u32 {
        let retries = self.retries.borrow();
        retries.iter().filter(|(k, _)| k.starts_with(&format!("{step}:"))).map(|(_, n)| n).sum()
    }
}

type Deferred = Box<dyn FnOnce()>;

struct Shared {
    stats: Stats,
    /// The worker that believes it holds the lock (from its lock callback to its unlock
    /// call).
    holder: Cell<Option<usize>>,
    /// Lock requests made (each ends in one acquisition: failed locks are retried).
    requested: Cell<u32>,
    /// Steps to run again once their time has come.
    later: RefCell<Vec<(Instant, Deferred)>>,
    /// Armed: the pid of the member to freeze once a client sent the step.
    freeze: Cell<Option<(Step, u32)>>,
    /// The armed freeze happened (the member is stopped).
    frozen: Cell<bool>,
}

struct Worker {
    id: usize,
    client: Client,
    session: Session,
    mutex: Mutex,
    shared: Rc<Shared>,
    /// This worker's acquisitions.
    acquired: Cell<u32>,
    /// No more requests: the budget is spent (or the session lost).
    finished: Cell<bool>,
}

/// Runs `step` for `w` again after [`BACKOFF`].
fn later(w: &Rc<Worker>, step: fn(&Rc<Worker>)) {
    let w2 = w.clone();
    w.shared.later.borrow_mut().push((Instant::now() + BACKOFF, Box::new(move || step(&w2))));
}

/// `step` was just sent (queued, to be written on this turn): freezes the member in use if
/// that is what is armed.
fn sent(w: &Worker, step: Step) {
    let s = &w.shared;
    match s.freeze.get() {
        Some((armed, pid)) if armed == step => {
            s.freeze.set(None);
            let pid = i32::try_from(pid).expect("pid");
            // SAFETY: kill(2) of a child of this process (an etcd member) that the fault
            // thread has not reaped: it reaps only when told to kill it, after this.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP {pid}");
            s.frozen.set(true);
        }
        _ => {}
    }
}

/// The next lock request, while the budget lasts.
fn next(w: &Rc<Worker>) {
    let s = &w.shared;
    if s.requested.get() >= TOTAL || w.session.lost().is_some() {
        w.finished.set(true);
        return;
    }
    bump(&s.requested);
    lock(w);
}

/// The session is gone: give the request back to the others and stop.
fn give_up(w: &Rc<Worker>) {
    w.shared.requested.set(w.shared.requested.get() - 1);
    w.finished.set(true);
}

fn lock(w: &Rc<Worker>) {
    bump(&w.shared.stats.lock_calls);
    let w2 = w.clone();
    // The callback is an FnOnce: it runs at most once; the counts show it runs.
    w.mutex.lock(move |r| {
        let stats = &w2.shared.stats;
        bump(&stats.lock_callbacks);
        match r {
            Ok(()) => acquired(&w2),
            Err(Error::SessionLost(_)) => give_up(&w2),
            Err(e @ Error::Etcd(_)) => {
                stats.retried("lock", &e);
                later(&w2, lock);
            }
            Err(e) => stats.unexpected(&w2, format!("lock: {e}")),
        }
    });
    sent(w, Step::Lock);
}

fn acquired(w: &Rc<Worker>) {
    let s = &w.shared;
    assert!(w.mutex.is_locked());
    if let Some(other) = s.holder.replace(Some(w.id)) {
        let n = s.stats.acquisitions.get();
        let what = format!("acquisition {n}: worker {} while worker {other} holds", w.id);
        s.stats.overlaps.borrow_mut().push(what);
    }
    bump(&s.stats.acquisitions);
    bump(&w.acquired);
    increment(w);
}

/// What the holder writes with the counter: which acquisition wrote it.
fn token(w: &Worker) -> String {
    format!("w{}#{}", w.id, w.acquired.get())
}

/// `N TOKEN` → (N, TOKEN).
fn parse(value: &[u8]) -> (u32, String) {
    let text = std::str::from_utf8(value).expect("UTF-8");
    let (n, token) = text.split_once(' ').unwrap_or_else(|| panic!("counter {text:?}"));
    (n.parse().unwrap_or_else(|_| panic!("counter {text:?}")), token.to_string())
}

/// Reads the holder's key as etcd has it (its create revision places it in the queue),
/// then the counter, then writes the counter back plus one, guarded.
fn increment(w: &Rc<Worker>) {
    let key = w.mutex.key();
    assert!(!key.is_empty(), "worker {}: a holder has a key", w.id);
    let w2 = w.clone();
    w.client.get(key.clone(), GetOptions::new(), move |r| match r {
        Err(e) => {
            w2.shared.stats.retried("read", &e.into());
            later(&w2, increment);
        }
        Ok(resp) => match resp.kvs.first() {
            Some(kv) => read_counter(&w2, kv.create_revision),
            None => {
                let what = format!("key {} gone before the Txn", String::from_utf8_lossy(&key));
                w2.shared.stats.failed_guards.borrow_mut().push((w2.id, what));
                release(&w2);
            }
        },
    });
}

fn read_counter(w: &Rc<Worker>, mine: i64) {
    let w2 = w.clone();
    w.client.get(COUNTER, GetOptions::new(), move |r| match r {
        Err(e) => {
            w2.shared.stats.retried("read", &e.into());
            later(&w2, increment);
        }
        Ok(resp) => {
            let kv = resp.kvs.first().expect("the counter exists");
            let (n, written_by) = parse(&kv.value);
            if written_by == token(&w2) {
                // A Txn of this acquisition whose answer was lost had been applied.
                let stats = &w2.shared.stats;
                bump(&stats.applied_unseen);
                bump(&stats.increments);
                return release(&w2);
            }
            guarded(&w2, n, kv.mod_revision, mine);
        }
    });
}

/// The oldest key under the lock's prefix: the holder's, in Go's algorithm.
fn queue_head() -> GetOptions {
    GetOptions::new()
        .prefix(true)
        .sort_target(SortTarget::Create)
        .sort_order(SortOrder::Ascend)
        .limit(1)
}

/// The Txn guarded by `is_owner()`, by the holder's key (created at `mine`) being the
/// oldest in the queue (no key under the prefix created before it: nobody else can hold the
/// lock), and by the counter being as read (`seen`): `n + 1` with this acquisition's token.
fn guarded(w: &Rc<Worker>, n: u32, seen: i64, mine: i64) {
    let key = w.mutex.key();
    let head = Compare::create_revision(LOCK_KEYS, CompareOp::Greater, mine - 1).with_prefix();
    let txn = Txn::new()
        .when([w.mutex.is_owner(), head, Compare::mod_revision(COUNTER, CompareOp::Equal, seen)])
        .and_then([TxnOp::put(COUNTER, format!("{} {}", n + 1, token(w)), PutOptions::new())])
        .or_else([
            TxnOp::get(key.clone(), GetOptions::new()),
            TxnOp::get(LOCK_KEYS, queue_head()),
            TxnOp::get(COUNTER, GetOptions::new()),
        ]);
    let w2 = w.clone();
    w.client.txn(txn, move |r| {
        let stats = &w2.shared.stats;
        match r {
            Err(e) => {
                // Applied or not: the next read tells by the token.
                stats.retried("txn", &e.into());
                later(&w2, increment);
            }
            Ok(resp) if resp.succeeded => {
                bump(&stats.increments);
                release(&w2);
            }
            Ok(resp) => {
                let what = explain(&resp, &key, mine, seen, w2.mutex.is_owner());
                stats.failed_guards.borrow_mut().push((w2.id, what));
                release(&w2);
            }
        }
    });
    sent(w, Step::Txn);
}

/// What a failed guarded Txn found: the holder's key, the queue's head and the counter.
fn explain(resp: &TxnResponse, key: &[u8], mine: i64, seen: i64, owner: Compare) -> String {
    let range = |i: usize| match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(TxnOpResponse::ResponseRange(r)) => r.kvs.first().cloned(),
        _ => None,
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let at = |kv: Option<evetcd::KeyValue>| match kv {
        None => "none".to_string(),
        Some(kv) => format!("{} created at {}", text(&kv.key), kv.create_revision),
    };
    let counter = range(2).map(|kv| format!("{:?} at {}", text(&kv.value), kv.mod_revision));
    format!(
        "key {} read as created at {mine}, now {} (is_owner: {owner:?}); head of the queue {}; \
         counter read at {seen}, now {counter:?}",
        text(key),
        at(range(0)),
        at(range(1)),
    )
}

/// Ends the holding (as far as the other clients' check goes), then unlocks.
fn release(w: &Rc<Worker>) {
    let s = &w.shared;
    if s.holder.get() == Some(w.id) {
        s.holder.set(None);
    }
    unlock(w);
}

fn unlock(w: &Rc<Worker>) {
    bump(&w.shared.stats.unlock_calls);
    let w2 = w.clone();
    w.mutex.unlock(move |r| {
        let stats = &w2.shared.stats;
        bump(&stats.unlock_callbacks);
        match r {
            Ok(()) => next(&w2),
            Err(Error::SessionLost(_)) => w2.finished.set(true),
            Err(e @ Error::Etcd(_)) => {
                stats.retried("unlock", &e);
                later(&w2, unlock);
            }
            Err(e) => stats.unexpected(&w2, format!("unlock: {e}")),
        }
    });
    sent(w, Step::Unlock);
}

/// A session for `c`, driven to completion.
fn session(c: &Client) -> Session {
    let slot: Rc<RefCell<Option<Result<Session, Error>>>> = Rc::default();
    let s = slot.clone();
    Session::new(c, SessionOptions::new().ttl(TTL), move |r| *s.borrow_mut() = Some(r));
    drive_until(&[c], Duration::from_secs(15), || slot.borrow().is_some());
    let r = slot.borrow_mut().take().expect("checked");
    r.expect("session")
}

fn client(endpoints: &[String]) -> Client {
    Client::new(Config::new().endpoints(endpoints.to_vec()).timeout(Duration::from_secs(5)))
        .expect("config")
}

/// What the fault thread is told to do.
enum Fault {
    /// Kill member `.0` (-9); `.1`: it is frozen (so not asked whether it leads).
    Kill(usize, bool),
    Restart(usize),
}

/// The fault thread's answer: a line for the log, and a restarted member's new pid.
struct Report {
    line: String,
    pid: Option<(usize, u32)>,
}

/// Owns the cluster; kills or restarts members when told, answers each; gives the cluster
/// back when the sender is dropped.
fn faults(
    mut cluster: Cluster,
    todo: mpsc::Receiver<Fault>,
    done: mpsc::Sender<Report>,
) -> Cluster {
    for fault in todo {
        let report = match fault {
            Fault::Kill(i, frozen) => {
                let leader = !frozen && cluster.leader_index() == Some(i);
                cluster.members[i].kill();
                let line = format!("killed m{i}{}", if leader { " (the leader)" } else { "" });
                Report { line, pid: None }
            }
            Fault::Restart(i) => {
                let started = Instant::now();
                cluster.members[i].start_again();
                cluster.members[i].wait_ready();
                let line = format!("restarted m{i} in {:.1?}", started.elapsed());
                Report { line, pid: Some((i, cluster.members[i].pid())) }
            }
        };
        if done.send(report).is_err() {
            break;
        }
    }
    cluster
}

/// Where the schedule of kills stands.
#[derive(Clone, Copy, Debug)]
enum Schedule {
    /// Waiting for the next kill's acquisition count.
    Up,
    /// Member `.0` is to be frozen after a step.
    Armed(usize),
    Killing(usize),
    /// Member `.0` is down since acquisition `.1`.
    Down(usize, u32),
    Restarting,
}

/// The member the clients are connected to: the one with the most of this process's
/// connections.
fn in_use(ports: &[u16]) -> usize {
    let counts: Vec<usize> = ports.iter().map(|&p| connections_to(p)).collect();
    let (i, &n) = counts.iter().enumerate().max_by_key(|&(_, n)| *n).expect("members");
    assert!(n > 0, "no connection to any member: {counts:?}");
    i
}

#[test]
fn five_clients_take_one_mutex_in_turn_while_the_member_in_use_is_killed() {
    let started = Instant::now();
    let cluster = Cluster::start(3);
    let ports: Vec<u16> = cluster.members.iter().map(|m| m.client_port()).collect();
    let mut pids: Vec<u32> = cluster.members.iter().map(|m| m.pid()).collect();
    // Every client starts on the same follower, then moves on in the same order.
    let (_, endpoints, _) = victim_first(&cluster);
    let all = cluster.endpoints();

    let setup = client(&all);
    let init = TxnOp::put(COUNTER, "0 init", PutOptions::new());
    let wiped = TxnOp::delete(LOCK_KEYS, evetcd::DeleteOptions::new().prefix(true));
    let ready = Rc::new(Cell::new(false));
    let r = ready.clone();
    setup.txn(Txn::new().and_then([init, wiped]), move |res| {
        res.expect("setup");
        r.set(true);
    });
    drive_until(&[&setup], Duration::from_secs(15), || ready.get());
    setup.close(); // its connection would count in `in_use`

    let shared = Rc::new(Shared {
        stats: Stats::default(),
        holder: Cell::new(None),
        requested: Cell::new(0),
        later: RefCell::default(),
        freeze: Cell::new(None),
        frozen: Cell::new(false),
    });
    let workers: Vec<Rc<Worker>> = (0..CLIENTS)
        .map(|id| {
            let client = client(&endpoints);
            let session = session(&client);
            let s = shared.clone();
            session.on_lost(move |_| bump(&s.stats.lost_sessions));
            let mutex = Mutex::new(&session, LOCK);
            Rc::new(Worker {
                id,
                client,
                session,
                mutex,
                shared: shared.clone(),
                acquired: Cell::new(0),
                finished: Cell::new(false),
            })
        })
        .collect();
    let clients: Vec<&Client> = workers.iter().map(|w| &w.client).collect();

    let (todo, todo_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let mut fault_thread = Some(thread::spawn(move || faults(cluster, todo_rx, done_tx)));
    let mut schedule = Schedule::Up;
    let mut kills = 0;
    let mut fault_log: Vec<String> = Vec::new();

    for w in &workers {
        next(w);
    }
    let stats = &shared.stats;
    // Failed guards: violations, or (counted apart) those of a holder whose session was lost.
    let failed_guards = || -> (Vec<_>, Vec<_>) {
        let failed = stats.failed_guards.borrow();
        failed.iter().cloned().partition(|(id, _)| workers[*id].session.lost().is_none())
    };
    let summary = |fault_log: &[String]| {
        let (violations, lost) = failed_guards();
        format!(
            "acquisitions {}, increments {} ({} found applied after a lost answer), \
             {} kills [{}], retries {} {:?}, sessions lost {}, guards failed: {} violations \
             {violations:?} + {} with a lost session {lost:?}, overlaps {:?}, unexpected {:?}, \
             per worker {:?}",
            stats.acquisitions.get(),
            stats.increments.get(),
            stats.applied_unseen.get(),
            fault_log.iter().filter(|l| l.starts_with("killed")).count(),
            fault_log.join(", "),
            stats.retry_count(),
            stats.retries.borrow(),
            stats.lost_sessions.get(),
            violations.len(),
            lost.len(),
            stats.overlaps.borrow(),
            stats.unexpected.borrow(),
            workers.iter().map(|w| w.acquired.get()).collect::<Vec<_>>(),
        )
    };
    let deadline = Instant::now() + LIMIT;
    drive_until(&clients, LIMIT + Duration::from_secs(5), || {
        assert!(
            Instant::now() < deadline,
            "not done after {LIMIT:?} (schedule {schedule:?}): {}",
            summary(&fault_log)
        );
        if fault_thread.as_ref().is_some_and(|t| t.is_finished()) {
            let t = fault_thread.take().expect("checked");
            match t.join() {
                Err(e) => std::panic::resume_unwind(e),
                Ok(_) => panic!("the fault thread ended early"),
            }
        }
        let acquisitions = stats.acquisitions.get();
        let all_finished = workers.iter().all(|w| w.finished.get());
        while let Ok(report) = done.try_recv() {
            fault_log.push(report.line);
            if let Some((i, pid)) = report.pid {
                pids[i] = pid;
            }
            schedule = match schedule {
                Schedule::Killing(i) => Schedule::Down(i, acquisitions),
                Schedule::Restarting => Schedule::Up,
                s => panic!("a fault answer in state {s:?}"),
            };
        }
        match schedule {
            Schedule::Up if kills < KILLS && acquisitions >= KILL_AT[kills].0 => {
                let victim = in_use(&ports);
                match KILL_AT[kills].1 {
                    Some(step) => {
                        shared.freeze.set(Some((step, pids[victim])));
                        schedule = Schedule::Armed(victim);
                    }
                    None => {
                        todo.send(Fault::Kill(victim, false)).expect("fault thread");
                        schedule = Schedule::Killing(victim);
                    }
                }
                kills += 1;
            }
            Schedule::Armed(i) if shared.frozen.replace(false) => {
                // The step is stuck in flight: kill.
                let step = KILL_AT[kills - 1].1.expect("a step");
                fault_log.push(format!("froze m{i} after a {step:?}"));
                todo.send(Fault::Kill(i, true)).expect("fault thread");
                schedule = Schedule::Killing(i);
            }
            Schedule::Down(i, since) if acquisitions >= since + DOWN_FOR || all_finished => {
                todo.send(Fault::Restart(i)).expect("fault thread");
                schedule = Schedule::Restarting;
            }
            _ => {}
        }
        // Failed steps whose time has come.
        let now = Instant::now();
        let due: Vec<Deferred> = {
            let mut later = shared.later.borrow_mut();
            let (due, rest) = later.drain(..).partition(|(at, _)| *at <= now);
            *later = rest;
            due.into_iter().map(|(_, step)| step).collect()
        };
        for step in due {
            step();
        }
        all_finished && matches!(schedule, Schedule::Up) && shared.later.borrow().is_empty()
    });
    drop(todo);
    let _cluster = fault_thread.take().expect("running").join().expect("the fault thread");

    let line = summary(&fault_log);
    // Straight to stderr, past libtest's capture: the run's one-line summary.
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("mutex_safety: {line} in {:.1?}\n", started.elapsed()).as_bytes());

    // The checks.
    assert_eq!(kills, KILLS, "{line}");
    assert!(stats.unexpected.borrow().is_empty(), "{line}");
    assert!(stats.overlaps.borrow().is_empty(), "two holders at once: {line}");
    let (violations, lost) = failed_guards();
    assert!(violations.is_empty(), "a guarded Txn failed while its holder held: {violations:?}");
    assert!(lost.is_empty(), "a holder's session was lost: {lost:?}");
    assert_eq!(stats.lost_sessions.get(), 0, "{line}");
    assert_eq!((stats.acquisitions.get(), stats.increments.get()), (TOTAL, TOTAL), "{line}");
    assert_eq!(stats.lock_calls.get(), stats.lock_callbacks.get(), "every lock answered once");
    assert_eq!(
        stats.unlock_calls.get(),
        stats.unlock_callbacks.get(),
        "every unlock answered once"
    );
    assert_eq!(stats.lock_calls.get() - stats.retries_of("lock"), TOTAL, "one request each");
    assert_eq!(shared.holder.get(), None);
    assert!(workers.iter().all(|w| !w.mutex.is_locked() && w.mutex.key().is_empty()));

    // What etcd holds: the counter, and no lock key.
    let checker = client(&all);
    let read = |key: &str, prefix: bool| {
        ok(&checker, |cb| checker.get(key.to_string(), GetOptions::new().prefix(prefix), cb)).kvs
    };
    let counter = read(COUNTER, false);
    assert_eq!(parse(&counter[0].value).0, TOTAL, "the counter counts every acquisition");
    let keys = |kvs: Vec<evetcd::KeyValue>| -> Vec<String> {
        kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
    };
    assert_eq!(keys(read(LOCK_KEYS, true)), Vec::<String>::new(), "no stray lock key");

    // Closing the sessions revokes their leases.
    let closed = Rc::new(Cell::new(0));
    for w in &workers {
        let c = closed.clone();
        w.session.close(move |r| {
            r.expect("close");
            c.set(c.get() + 1);
        });
    }
    drive_until(&clients, Duration::from_secs(15), || closed.get() == CLIENTS);
    assert_eq!(keys(read(LOCK_KEYS, true)), Vec::<String>::new());
    for w in &workers {
        w.client.close();
    }
}
