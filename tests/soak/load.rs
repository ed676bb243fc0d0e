//! The load: one thread per client, each client driven by its own poll(2) loop, running a
//! few *parts* (a writer, watchers, a lock holder) that issue calls from their callbacks.
//!
//! Every unary call goes through [`Ctx::call`], which counts it issued and completed, so a
//! callback that never runs shows up at the end with what it was; every call into the
//! library is wrapped in [`heap::lib`] and every callback body in [`heap::ours`], so that the
//! heap check charges the library, not the test (see `heap`).
//!
//! A thread's life, in step with the main thread through [`Shared`]: build the client and
//! complete one call (the heap baseline), wait for `go`, run until `stop`, stop starting work
//! and let what is in flight finish (`quiet`), wait until every watch delivered the fence
//! revision, cancel streams and revoke leases, drive until idle, measure the heap, close.

pub mod locker;
pub mod watcher;
pub mod writer;

use super::heap::{self, lib, ours};
use super::records::{ClientReport, HeapMarks, LeaseLog};
use super::rng::Rng;
use evetcd::{Client, Code, Config, EtcdError, GetOptions, Keepalive, LeaseGrantOptions};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// TTL of every lease the load keeps alive. A client notices a silent member within its
/// keepalive PING time plus timeout (5 s + 2 s, see [`client_config`]) and renews at once on
/// the next one; renewals come every third of the TTL. 20 s leaves a lease at least 6 s of
/// slack after the worst detection, so an expiry means a client failed to renew, not bad
/// luck.
pub const LEASE_TTL: i64 = 20;
/// How long a thread waits for its in-flight calls after `stop` (a call waits at most its
/// 5 s deadline once everything is healed).
const QUIET_LIMIT: Duration = Duration::from_secs(60);
/// How long a thread waits for its calls to complete after cancelling its streams.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// How often the library's heap is sampled during the load (for the summary).
const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// Longest poll(2) wait, so parts get their `tick` this often.
const TICK: Duration = Duration::from_millis(20);

/// What the main thread and the client threads share.
pub struct Shared {
    pub t0: Instant,
    /// The revision of the setup write: watches "from the start" begin there.
    pub start_rev: i64,
    /// Threads that took their heap baseline and wait for `go`.
    pub ready: AtomicUsize,
    pub go: AtomicBool,
    /// End of the load phase: start no new work.
    pub stop: AtomicBool,
    /// Threads whose in-flight work is done after `stop`.
    pub quiet: AtomicUsize,
    /// The revision of the fence txn (0 until written): every watch must deliver it.
    pub fence: AtomicI64,
    /// The main thread stopped waiting for watches to catch up.
    pub give_up: AtomicBool,
    /// The lock holder that believes it holds the lock now, if any (see `locker`).
    pub holder: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(t0: Instant, start_rev: i64) -> Shared {
        Shared {
            t0,
            start_rev,
            ready: AtomicUsize::new(0),
            go: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            quiet: AtomicUsize::new(0),
            fence: AtomicI64::new(0),
            give_up: AtomicBool::new(false),
            holder: Mutex::new(None),
        }
    }

    /// Seconds since the soak started.
    pub fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

/// The configuration every load client uses: its `endpoints` (the proxies, rotated so that
/// clients start on different members), a 5 s deadline, and HTTP/2 PINGs every 5 s (the
/// most often etcd allows) answered within 2 s, so a frozen or blackholed member is left
/// within 7 s.
pub fn client_config(endpoints: Vec<String>) -> Config {
    Config::new()
        .endpoints(endpoints)
        .timeout(Duration::from_secs(5))
        .keepalive(Duration::from_secs(5), Duration::from_secs(2))
}

/// One part of a client thread's load.
pub trait Part {
    /// Issues the first calls and opens streams.
    fn start(&self);
    /// Called every turn of the loop (at least every [`TICK`]): timed work.
    fn tick(&self) {}
    /// Start no new work (in-flight work finishes; `Ctx::stopping` is already set).
    fn stop(&self) {}
    /// Whether work started before `stop` is still in flight.
    fn busy(&self) -> bool {
        false
    }
    /// Whether every watch of this part delivered revision `fence`.
    fn caught_up(&self, _fence: i64) -> bool {
        true
    }
    /// Cancels streams and releases leases; the thread then drives until idle.
    fn finish(&self) {}
    /// Moves what the part recorded into the report.
    fn report(&self, _report: &mut ClientReport) {}
}

/// What builds a part on its thread (parts hold `Rc`s, so they cannot cross threads).
pub type PartFactory = Box<dyn FnOnce(&Rc<Ctx>) -> Box<dyn Part> + Send>;

/// One client thread's plan.
pub struct ClientPlan {
    pub name: String,
    /// Heap slot (see `heap`), unique per client.
    pub slot: usize,
    pub endpoints: Vec<String>,
    pub seed: u64,
    pub parts: Vec<PartFactory>,
}

/// A client thread's context, shared by its parts and captured by their callbacks.
pub struct Ctx {
    pub name: String,
    pub client: Client,
    pub shared: Arc<Shared>,
    pub rng: RefCell<Rng>,
    /// Set at `stop`: parts start no new work.
    pub stopping: Cell<bool>,
    calls: RefCell<Calls>,
    report: RefCell<ClientReport>,
}

#[derive(Default)]
struct Calls {
    next: u64,
    issued: u64,
    completed: u64,
    /// Call id → (operation, seconds when issued).
    outstanding: HashMap<u64, (&'static str, f64)>,
}

impl Ctx {
    pub fn now(&self) -> f64 {
        self.shared.secs()
    }

    /// Wraps the callback of one unary call named `op` (or of a stream's cancel): counts it
    /// issued now and completed when it runs, counts its error, and runs `f` uncharged.
    pub fn call<T: 'static>(
        self: &Rc<Self>,
        op: &'static str,
        f: impl FnOnce(&Rc<Ctx>, Result<T, EtcdError>) + 'static,
    ) -> impl FnOnce(Result<T, EtcdError>) + 'static {
        let id = ours(|| {
            let mut calls = self.calls.borrow_mut();
            calls.next += 1;
            calls.issued += 1;
            let id = calls.next;
            calls.outstanding.insert(id, (op, self.now()));
            id
        });
        let ctx = self.clone();
        move |r| {
            ours(|| {
                let known = {
                    let mut calls = ctx.calls.borrow_mut();
                    calls.completed += 1;
                    calls.outstanding.remove(&id).is_some()
                };
                if !known {
                    ctx.violation(format!("the callback of {op} (call {id}) ran twice"));
                }
                if let Err(e) = &r {
                    ctx.count_error(op, e);
                }
                f(&ctx, r)
            })
        }
    }

    pub fn count_error(&self, op: &str, e: &EtcdError) {
        let key = format!("{op} {}", e.code_name());
        let mut report = self.report.borrow_mut();
        let (n, _) =
            report.errors.entry(key).or_insert_with(|| (0, format!("{:.1}s {e}", self.now())));
        *n += 1;
    }

    /// Records a violation seen live, stamped with the time and the client.
    pub fn violation(&self, what: String) {
        let line = format!("{:.1}s {}: {what}", self.now(), self.name);
        self.report.borrow_mut().violations.push(line);
    }

    pub fn rand(&self, n: u64) -> u64 {
        self.rng.borrow_mut().below(n)
    }

    fn lease_log(&self, index: usize, f: impl FnOnce(&mut LeaseLog)) {
        f(&mut self.report.borrow_mut().leases[index]);
    }
}

/// A lease the load keeps alive, from its grant until [`release_lease`].
pub struct Lease {
    pub id: i64,
    /// Index of its [`LeaseLog`] in the report.
    log: usize,
    keepalive: RefCell<Option<Keepalive>>,
    /// The test stopped keeping it alive.
    released: Cell<bool>,
    /// The keepalive ended (the lease is gone, or the stream gave up).
    pub gone: Cell<bool>,
}

/// Grants a lease of [`LEASE_TTL`], keeps it alive, and calls `then` with it, or with `None`
/// when the grant failed.
pub fn grant_lease(ctx: &Rc<Ctx>, then: impl FnOnce(&Rc<Ctx>, Option<Rc<Lease>>) + 'static) {
    let done = ctx.call("lease_grant", move |ctx, r: Result<evetcd::LeaseGrantResponse, _>| {
        let lease = r.ok().map(|resp| keep_alive(ctx, resp.id, resp.ttl));
        then(ctx, lease)
    });
    lib(|| ctx.client.lease_grant(LEASE_TTL, LeaseGrantOptions::new(), done));
}

/// Starts the keepalive of a freshly granted lease and its log.
fn keep_alive(ctx: &Rc<Ctx>, id: i64, ttl: i64) -> Rc<Lease> {
    let now = ctx.now();
    let log = {
        let mut report = ctx.report.borrow_mut();
        report.leases.push(LeaseLog {
            id,
            client: ctx.name.clone(),
            ttl,
            granted_at: now,
            last_ok: now,
            renewals: 0,
            expired: None,
            released_at: None,
        });
        report.leases.len() - 1
    };
    let lease = Rc::new(Lease {
        id,
        log,
        keepalive: RefCell::new(None),
        released: Cell::new(false),
        gone: Cell::new(false),
    });
    let (c, l) = (ctx.clone(), lease.clone());
    let callback = move |r: Result<evetcd::LeaseKeepAliveResponse, EtcdError>| {
        ours(|| on_renewal(&c, &l, r));
    };
    let handle = lib(|| ctx.client.lease_keepalive(id, callback));
    *lease.keepalive.borrow_mut() = Some(handle);
    lease
}

fn on_renewal(ctx: &Rc<Ctx>, lease: &Lease, r: Result<evetcd::LeaseKeepAliveResponse, EtcdError>) {
    let id = lease.id;
    if lease.released.get() || lease.gone.get() {
        let why = if lease.gone.get() { "after it ended" } else { "after its cancel returned" };
        ctx.violation(format!("keepalive of lease {id:x} called back {why}: {r:?}"));
        return;
    }
    let now = ctx.now();
    match r {
        Ok(resp) if resp.ttl > 0 => ctx.lease_log(lease.log, |l| {
            l.last_ok = now;
            l.renewals += 1;
        }),
        Ok(resp) => {
            lease.gone.set(true);
            let what = format!("renewal answered ttl {}", resp.ttl);
            ctx.lease_log(lease.log, |l| l.expired = Some((now, what)));
        }
        Err(e) if e.code() == Code::NotFound => {
            lease.gone.set(true);
            ctx.lease_log(lease.log, |l| l.expired = Some((now, e.to_string())));
        }
        Err(e) => {
            lease.gone.set(true);
            ctx.violation(format!("keepalive of lease {id:x} ended: {e}"));
        }
    }
}

/// Asks etcd whether a lease the load still keeps alive exists (the end-of-run check), then
/// calls `then`.
pub fn check_lease(ctx: &Rc<Ctx>, lease: &Rc<Lease>, then: impl FnOnce(&Rc<Ctx>) + 'static) {
    if lease.gone.get() || lease.released.get() {
        return then(ctx);
    }
    let l = lease.clone();
    let done = ctx.call("lease_time_to_live", move |ctx, r| {
        let r: Result<evetcd::LeaseTimeToLiveResponse, _> = r;
        match r {
            Ok(resp) if resp.ttl < 0 => {
                let now = ctx.now();
                ctx.lease_log(l.log, |log| {
                    log.expired = Some((now, "time-to-live -1 at the end of the run".into()))
                });
            }
            Ok(_) => {}
            Err(e) => ctx.violation(format!("time-to-live of lease {:x} failed: {e}", l.id)),
        }
        then(ctx)
    });
    lib(|| ctx.client.lease_time_to_live(lease.id, false, done));
}

/// Stops keeping `lease` alive and revokes it (its keys are deleted); calls `then` when the
/// revoke completed, whatever its outcome.
pub fn release_lease(ctx: &Rc<Ctx>, lease: &Rc<Lease>, then: impl FnOnce(&Rc<Ctx>) + 'static) {
    if !lease.released.replace(true) {
        let now = ctx.now();
        ctx.lease_log(lease.log, |l| l.released_at = Some(now));
        if let Some(keepalive) = lease.keepalive.borrow_mut().take() {
            let done = ctx.call("keepalive_cancel", |_, _: Result<(), _>| ());
            lib(|| keepalive.cancel(done));
        }
    }
    revoke(ctx, lease.clone(), REVOKE_ATTEMPTS, then);
}

/// Revokes issued per lease at most: a revoke sent while the cluster elects a leader can
/// time out, and a lock key left behind would block every lock holder for a whole TTL.
const REVOKE_ATTEMPTS: u32 = 3;

fn revoke(ctx: &Rc<Ctx>, lease: Rc<Lease>, left: u32, then: impl FnOnce(&Rc<Ctx>) + 'static) {
    let id = lease.id;
    let done = ctx.call("lease_revoke", move |ctx, r: Result<evetcd::LeaseRevokeResponse, _>| {
        let Err(e) = r else { return then(ctx) };
        let first = left == REVOKE_ATTEMPTS;
        match e.code() {
            // Not found on the first attempt, although its keepalive never said so: it
            // expired while kept alive (a lock call reports that as "session is expired").
            // After an attempt with an unknown outcome it proves nothing.
            Code::NotFound if first && !lease.gone.get() => {
                let now = ctx.now();
                ctx.lease_log(lease.log, |log| log.expired = Some((now, e.to_string())));
            }
            Code::Unavailable | Code::DeadlineExceeded if left > 1 => {
                return revoke(ctx, lease, left - 1, then);
            }
            _ => {}
        }
        then(ctx)
    });
    lib(|| ctx.client.lease_revoke(id, done));
}

/// Runs one client thread to the end; see the module doc.
pub fn run_client(plan: ClientPlan, shared: Arc<Shared>) -> ClientReport {
    heap::set_thread_slot(plan.slot);
    let mut marks = HeapMarks { before_client: heap::live(plan.slot), ..HeapMarks::default() };
    let client = lib(|| Client::new(client_config(plan.endpoints)))
        .unwrap_or_else(|e| panic!("{}: config: {e}", plan.name));
    marks.created = heap::live(plan.slot);
    let ctx = Rc::new(Ctx {
        name: plan.name.clone(),
        client,
        shared: shared.clone(),
        rng: RefCell::new(Rng::new(plan.seed)),
        stopping: Cell::new(false),
        calls: RefCell::default(),
        report: RefCell::new(ClientReport { name: plan.name.clone(), ..Default::default() }),
    });
    let parts: Vec<Box<dyn Part>> = plan.parts.into_iter().map(|f| f(&ctx)).collect();

    warm_up(&ctx);
    marks.baseline = heap::live(plan.slot);
    shared.ready.fetch_add(1, Ordering::SeqCst);
    while !shared.go.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }

    for p in &parts {
        p.start();
    }
    // Samples of the library's heap during the load, to show a trend if the end is off.
    let mut samples = Vec::new();
    let mut next_sample = Instant::now();
    drive(&ctx, &parts, || {
        if Instant::now() >= next_sample {
            samples.push((ctx.now(), heap::live(plan.slot)));
            next_sample += SAMPLE_EVERY;
        }
        !shared.stop.load(Ordering::SeqCst)
    });

    ctx.stopping.set(true);
    for p in &parts {
        p.stop();
    }
    let deadline = Instant::now() + QUIET_LIMIT;
    drive(&ctx, &parts, || parts.iter().any(|p| p.busy()) && Instant::now() < deadline);
    if parts.iter().any(|p| p.busy()) {
        let calls = outstanding(&ctx);
        ctx.violation(format!("work still in flight {QUIET_LIMIT:?} after stop: {calls:?}"));
    }
    shared.quiet.fetch_add(1, Ordering::SeqCst);

    drive(&ctx, &parts, || {
        let fence = shared.fence.load(Ordering::SeqCst);
        let done = fence > 0 && parts.iter().all(|p| p.caught_up(fence));
        !done && !shared.give_up.load(Ordering::SeqCst)
    });

    for p in &parts {
        p.finish();
    }
    let deadline = Instant::now() + IDLE_LIMIT;
    drive(&ctx, &parts, || !lib(|| ctx.client.is_idle()) && Instant::now() < deadline);
    let left = outstanding(&ctx);
    if !left.is_empty() {
        ctx.violation(format!("callbacks that never ran, {IDLE_LIMIT:?} after the end: {left:?}"));
    }
    if !lib(|| ctx.client.is_idle()) {
        ctx.violation("the client is not idle once every call completed".to_string());
    }
    marks.end = heap::live(plan.slot);

    lib(|| ctx.client.close());
    marks.closed = heap::live(plan.slot);
    let mut report = std::mem::take(&mut *ctx.report.borrow_mut());
    for p in &parts {
        p.report(&mut report);
    }
    {
        let calls = ctx.calls.borrow();
        report.issued = calls.issued;
        report.completed = calls.completed;
        report.outstanding = left;
    }
    drop(parts);
    match Rc::try_unwrap(ctx) {
        Ok(ctx) => drop(ctx),
        Err(ctx) => {
            report.violations.push(format!(
                "{}: the client context is still referenced {} times after close (a callback \
                 kept alive)",
                plan.name,
                Rc::strong_count(&ctx) - 1
            ));
        }
    }
    marks.dropped = heap::live(plan.slot);
    report.heap = marks;
    report.heap_samples = samples;
    report
}

/// Completes one call before the load, so that the heap baseline includes a connection.
fn warm_up(ctx: &Rc<Ctx>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = Rc::new(Cell::new(None));
        let d = done.clone();
        let cb =
            ctx.call("get", move |_, r: Result<evetcd::RangeResponse, _>| d.set(Some(r.is_ok())));
        lib(|| ctx.client.get("/soak/start", GetOptions::new(), cb));
        while done.get().is_none() {
            turn(&ctx.client);
        }
        if done.get() == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{}: no successful call within 30 s", ctx.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Turns the loop (ticking every part) while `more()`.
fn drive(ctx: &Rc<Ctx>, parts: &[Box<dyn Part>], mut more: impl FnMut() -> bool) {
    while more() {
        turn(&ctx.client);
        for p in parts {
            p.tick();
        }
    }
}

/// One turn: waits for the client's fd (at most its next timeout, capped at [`TICK`]), then
/// lets it process.
fn turn(client: &Client) {
    let timeout = lib(|| client.next_timeout()).map_or(TICK, |t| t.min(TICK));
    let mut fd = libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    lib(|| client.process());
}

/// The calls whose callback has not run yet, oldest first.
fn outstanding(ctx: &Ctx) -> Vec<String> {
    let calls = ctx.calls.borrow();
    let mut left: Vec<(f64, &str)> = calls.outstanding.values().map(|&(op, at)| (at, op)).collect();
    left.sort_by(|a, b| a.0.total_cmp(&b.0));
    left.iter().map(|(at, op)| format!("{op} issued at {at:.1}s")).collect()
}
