//! A lock holder: takes the lock `/soak/lock/m` with the Lock RPC, and while holding it runs
//! one to three guarded read-modify-write rounds on `/soak/lock/counter`, then unlocks.
//!
//! Each round reads the counter and writes `n+1` in a txn guarded by two compares: its own
//! lock key still exists (etcd's lock is that key: it is the holder's while its lease lives)
//! and the counter's mod revision is the one just read. While the lock is held both must
//! hold, so a txn that fails is a violation; the failure branch reads both keys to say which
//! compare failed. The one benign failure is this holder's own earlier txn whose outcome was
//! unknown (a call lost with its connection) landing late: the counter then names this
//! holder's own lease and round, and the checker's history pass covers it.
//!
//! A second, client-side check: the holder that believes it holds the lock is recorded in
//! [`Shared::holder`](super::Shared) from its lock response until just before it sends its
//! unlock; finding another holder there when the lock is granted is a violation.
//!
//! A failed lock or unlock leaves the lock key in an unknown state, so the lease is revoked
//! (deleting the key) and a new one granted, as the client's docs say to do.

use super::super::heap::lib;
use super::{grant_lease, release_lease, Ctx, Lease, Part};
use evetcd::{Compare, CompareOp, GetOptions, Pending, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub const LOCK: &str = "/soak/lock/m";
pub const COUNTER: &str = "/soak/lock/counter";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No lease: grant one (at `retry_at`).
    NoLease,
    Granting,
    /// A lease, not holding: lock.
    Idle,
    Locking,
    Holding,
    Unlocking,
    /// Revoking the lease after a failure.
    Releasing,
}

pub struct Locker(Rc<State>);

struct State {
    ctx: Rc<Ctx>,
    phase: Cell<Phase>,
    lease: RefCell<Option<Rc<Lease>>>,
    pending: RefCell<Option<Pending>>,
    /// The lock key while holding.
    key: RefCell<String>,
    rounds: Cell<u32>,
    round_seq: Cell<u64>,
    retry_at: Cell<f64>,
    locks: Cell<u64>,
    guarded: Cell<u64>,
}

impl Locker {
    pub fn new(ctx: &Rc<Ctx>) -> Locker {
        Locker(Rc::new(State {
            ctx: ctx.clone(),
            phase: Cell::new(Phase::NoLease),
            lease: RefCell::new(None),
            pending: RefCell::new(None),
            key: RefCell::new(String::new()),
            rounds: Cell::new(0),
            round_seq: Cell::new(0),
            retry_at: Cell::new(0.0),
            locks: Cell::new(0),
            guarded: Cell::new(0),
        }))
    }
}

impl Part for Locker {
    fn start(&self) {
        step(&self.0);
    }

    fn tick(&self) {
        if self.0.phase.get() == Phase::NoLease && self.0.ctx.now() >= self.0.retry_at.get() {
            step(&self.0);
        }
    }

    fn stop(&self) {
        if let Some(pending) = self.0.pending.borrow_mut().take() {
            lib(|| pending.cancel());
        }
    }

    fn busy(&self) -> bool {
        !matches!(self.0.phase.get(), Phase::NoLease | Phase::Idle)
    }

    fn finish(&self) {
        if let Some(lease) = self.0.lease.borrow_mut().take() {
            let l = lease.clone();
            super::check_lease(&self.0.ctx, &lease, move |ctx| release_lease(ctx, &l, |_| ()));
        }
    }

    fn report(&self, report: &mut super::super::records::ClientReport) {
        report.locks = self.0.locks.get();
        report.guarded = self.0.guarded.get();
    }
}

/// Moves on from `NoLease` (grant) or `Idle` (lock), unless stopping.
fn step(st: &Rc<State>) {
    if st.ctx.stopping.get() {
        return;
    }
    match st.phase.get() {
        Phase::NoLease => {
            st.phase.set(Phase::Granting);
            let s = st.clone();
            grant_lease(&st.ctx, move |ctx, lease| {
                if lease.is_none() {
                    s.phase.set(Phase::NoLease);
                    s.retry_at.set(ctx.now() + 0.2);
                    return;
                }
                *s.lease.borrow_mut() = lease;
                s.phase.set(Phase::Idle);
                step(&s);
            });
        }
        Phase::Idle => lock(st),
        _ => {}
    }
}

fn lease_id(st: &State) -> i64 {
    st.lease.borrow().as_ref().map_or(0, |l| l.id)
}

fn lock(st: &Rc<State>) {
    st.phase.set(Phase::Locking);
    let s = st.clone();
    let done = st.ctx.call("lock", move |ctx, r: Result<evetcd::LockResponse, _>| {
        s.pending.borrow_mut().take();
        match r {
            Ok(resp) => {
                let key = String::from_utf8_lossy(&resp.key).into_owned();
                s.locks.set(s.locks.get() + 1);
                claim(ctx, &key);
                *s.key.borrow_mut() = key;
                s.phase.set(Phase::Holding);
                s.rounds.set(1 + ctx.rand(3) as u32);
                round(&s);
            }
            // Cancelled at stop, or failed: the server may hold a lock key for this call,
            // so the lease goes either way.
            Err(_) => drop_lease(&s),
        }
    });
    let pending = lib(|| st.ctx.client.lock(LOCK, lease_id(st), done));
    *st.pending.borrow_mut() = Some(pending);
}

/// Records this holder as the one holding the lock; another one there is a violation.
fn claim(ctx: &Rc<Ctx>, key: &str) {
    let me = format!("{} ({key})", ctx.name);
    let mut holder = ctx.shared.holder.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(other) = holder.as_ref() {
        let other = other.clone();
        drop(holder);
        ctx.violation(format!("mutual exclusion: granted {key} while {other} holds the lock"));
        holder = ctx.shared.holder.lock().unwrap_or_else(|e| e.into_inner());
    }
    *holder = Some(me);
}

fn unclaim(ctx: &Rc<Ctx>) {
    let mut holder = ctx.shared.holder.lock().unwrap_or_else(|e| e.into_inner());
    if holder.as_ref().is_some_and(|h| h.starts_with(&format!("{} (", ctx.name))) {
        *holder = None;
    }
}

/// One guarded round: read the counter, then write it in the guarded txn.
fn round(st: &Rc<State>) {
    if st.ctx.stopping.get() {
        return unlock(st);
    }
    let s = st.clone();
    let done = st.ctx.call("get", move |_, r: Result<evetcd::RangeResponse, _>| match r {
        Ok(resp) => {
            let (n, rev) =
                resp.kvs.first().map_or((0, 0), |kv| (count_of(&kv.value), kv.mod_revision));
            guarded_txn(&s, n, rev);
        }
        Err(_) => after_round(&s),
    });
    lib(|| st.ctx.client.get(COUNTER, GetOptions::new(), done));
}

/// `n=5;by=<lease hex>;r=<holder>#<round>` → 5.
pub fn count_of(value: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(value);
    text.split(';').find_map(|f| f.strip_prefix("n=")).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn guarded_txn(st: &Rc<State>, n: u64, counter_rev: i64) {
    let key = st.key.borrow().clone();
    let seq = st.round_seq.get() + 1;
    st.round_seq.set(seq);
    let me = format!("{}#{seq}", st.ctx.name);
    let value = format!("n={};by={:x};r={me}", n + 1, lease_id(st));
    let txn = Txn::new()
        .when([
            Compare::version(key.clone(), CompareOp::Greater, 0),
            Compare::mod_revision(COUNTER, CompareOp::Equal, counter_rev),
        ])
        .and_then([TxnOp::put(COUNTER, value, PutOptions::new())])
        .or_else([
            TxnOp::get(key.clone(), GetOptions::new()),
            TxnOp::get(COUNTER, GetOptions::new()),
        ]);
    let s = st.clone();
    let done = st.ctx.call("txn", move |ctx, r: Result<evetcd::TxnResponse, _>| {
        match r {
            Ok(resp) if resp.succeeded => s.guarded.set(s.guarded.get() + 1),
            Ok(resp) => {
                let got = |i: usize| match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
                    Some(TxnOpResponse::ResponseRange(range)) => range.kvs.first().cloned(),
                    _ => None,
                };
                let (own, counter) = (got(0), got(1));
                let counter_text = counter.as_ref().map_or("absent".to_string(), |kv| {
                    format!(
                        "mod_rev {} value {:?}",
                        kv.mod_revision,
                        String::from_utf8_lossy(&kv.value)
                    )
                });
                let own_late_write = own.is_some()
                    && counter.as_ref().is_some_and(|kv| {
                        String::from_utf8_lossy(&kv.value).contains(&format!(";r={}#", ctx.name))
                    });
                if !own_late_write {
                    ctx.violation(format!(
                        "guarded txn failed while holding {key}: own key {}, counter read at \
                         mod_rev {counter_rev}, now {counter_text}",
                        if own.is_some() { "exists" } else { "GONE (lock lost)" },
                    ));
                }
            }
            Err(_) => {}
        }
        after_round(&s);
    });
    lib(|| st.ctx.client.txn(txn, done));
}

fn after_round(st: &Rc<State>) {
    let left = st.rounds.get().saturating_sub(1);
    st.rounds.set(left);
    if left > 0 && !st.ctx.stopping.get() {
        round(st);
    } else {
        unlock(st);
    }
}

fn unlock(st: &Rc<State>) {
    unclaim(&st.ctx);
    st.phase.set(Phase::Unlocking);
    let key = std::mem::take(&mut *st.key.borrow_mut());
    let s = st.clone();
    let done = st.ctx.call("unlock", move |_, r: Result<evetcd::UnlockResponse, _>| match r {
        Ok(_) => {
            s.phase.set(Phase::Idle);
            step(&s);
        }
        Err(_) => drop_lease(&s),
    });
    lib(|| st.ctx.client.unlock(key, done));
}

/// After a failed lock or unlock: revoke the lease (deleting any lock key it holds), then
/// start over with a new one.
fn drop_lease(st: &Rc<State>) {
    let Some(lease) = st.lease.borrow_mut().take() else {
        st.phase.set(Phase::NoLease);
        return;
    };
    st.phase.set(Phase::Releasing);
    let s = st.clone();
    release_lease(&st.ctx, &lease, move |_| {
        s.phase.set(Phase::NoLease);
        step(&s);
    });
}
