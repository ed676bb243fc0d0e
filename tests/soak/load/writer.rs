//! A writer: keeps [`IN_FLIGHT`] writes going under its own prefix (`/soak/wN/`, in three
//! sub-prefixes `a/`, `b/`, `c/` that watchers cover in overlapping ways), and a small pool
//! of leases it churns and attaches some keys to.
//!
//! The mix is chosen for what the watch checks need: single puts and deletes, puts with a
//! lease (deleted together when the lease is revoked: several events in one revision),
//! ranged deletes and multi-key txns (several events in one revision, across sub-prefixes:
//! the atomicity check), and some reads so that not every call is a write.

use super::super::heap::lib;
use super::{grant_lease, release_lease, Ctx, Lease, Part};
use evetcd::{DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Writes each writer keeps in flight.
const IN_FLIGHT: usize = 4;
/// Keys per sub-prefix.
const KEYS: u64 = 40;
const SUBS: [&str; 3] = ["a/", "b/", "c/"];
/// Leases in the pool; one more is granted, and the oldest revoked, every few seconds.
const POOL: usize = 2;

pub struct Writer(Rc<State>);

struct State {
    ctx: Rc<Ctx>,
    /// `/soak/wN/`.
    prefix: String,
    seq: Cell<u64>,
    in_flight: Cell<usize>,
    pool: RefCell<Vec<Rc<Lease>>>,
    /// Grants and revokes in flight.
    lease_ops: Cell<usize>,
    next_churn: Cell<f64>,
}

impl Writer {
    pub fn new(ctx: &Rc<Ctx>, prefix: String) -> Writer {
        Writer(Rc::new(State {
            ctx: ctx.clone(),
            prefix,
            seq: Cell::new(0),
            in_flight: Cell::new(0),
            pool: RefCell::new(Vec::new()),
            lease_ops: Cell::new(0),
            next_churn: Cell::new(0.0),
        }))
    }
}

impl Part for Writer {
    fn start(&self) {
        for _ in 0..POOL {
            grant(&self.0);
        }
        self.0.next_churn.set(self.0.ctx.now() + 5.0);
        for _ in 0..IN_FLIGHT {
            next(&self.0);
        }
    }

    fn tick(&self) {
        let st = &self.0;
        if !st.ctx.stopping.get() && st.ctx.now() >= st.next_churn.get() {
            st.next_churn.set(st.ctx.now() + 4.0 + st.ctx.rand(5) as f64);
            grant(st);
        }
    }

    fn busy(&self) -> bool {
        self.0.in_flight.get() > 0 || self.0.lease_ops.get() > 0
    }

    fn finish(&self) {
        let pool = std::mem::take(&mut *self.0.pool.borrow_mut());
        for lease in pool {
            let l = lease.clone();
            super::check_lease(&self.0.ctx, &lease, move |ctx| release_lease(ctx, &l, |_| ()));
        }
    }
}

/// Grants one more lease; once the pool is above [`POOL`], revokes the oldest.
fn grant(st: &Rc<State>) {
    st.lease_ops.set(st.lease_ops.get() + 1);
    let s = st.clone();
    grant_lease(&st.ctx, move |ctx, lease| {
        s.lease_ops.set(s.lease_ops.get() - 1);
        let Some(lease) = lease else { return };
        let old = {
            let mut pool = s.pool.borrow_mut();
            pool.push(lease);
            (pool.len() > POOL).then(|| pool.remove(0))
        };
        if let Some(old) = old {
            s.lease_ops.set(s.lease_ops.get() + 1);
            let s2 = s.clone();
            release_lease(ctx, &old, move |_| s2.lease_ops.set(s2.lease_ops.get() - 1));
        }
    });
}

/// Starts the next write, unless stopping; its completion starts the one after.
fn next(st: &Rc<State>) {
    let ctx = &st.ctx;
    if ctx.stopping.get() {
        return;
    }
    st.in_flight.set(st.in_flight.get() + 1);
    let seq = st.seq.get() + 1;
    st.seq.set(seq);
    let value = format!("{}-{seq}", ctx.name);
    let key = |st: &State| {
        let sub = SUBS[ctx.rand(SUBS.len() as u64) as usize];
        format!("{}{sub}k{:02}", st.prefix, ctx.rand(KEYS))
    };
    let s = st.clone();
    let done = move |_: &Rc<Ctx>| {
        s.in_flight.set(s.in_flight.get() - 1);
        next(&s);
    };
    let c = &ctx.client;
    match ctx.rand(100) {
        0..=49 => {
            let mut opts = PutOptions::new();
            if ctx.rand(3) == 0 {
                if let Some(lease) = pick_lease(st) {
                    opts = opts.lease(lease);
                }
            }
            let cb = ctx.call("put", move |ctx, _| done(ctx));
            lib(|| c.put(key(st), value, opts, cb));
        }
        50..=64 => {
            let cb = ctx.call("delete", move |ctx, _| done(ctx));
            lib(|| c.delete(key(st), DeleteOptions::new(), cb));
        }
        65..=67 => {
            // A ranged delete: every key of one sub-prefix in one revision.
            let sub = format!("{}{}", st.prefix, SUBS[ctx.rand(SUBS.len() as u64) as usize]);
            let cb = ctx.call("delete", move |ctx, _| done(ctx));
            lib(|| c.delete(sub, DeleteOptions::new().prefix(true), cb));
        }
        68..=87 => {
            // 2 to 4 distinct keys across sub-prefixes, one revision.
            let n = 2 + ctx.rand(3) as usize;
            let mut keys: Vec<String> = Vec::new();
            while keys.len() < n {
                let k = key(st);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let ops: Vec<TxnOp> = keys
                .into_iter()
                .enumerate()
                .map(|(i, k)| match i {
                    3 => TxnOp::delete(k, DeleteOptions::new()),
                    _ => TxnOp::put(k, format!("{value}.{i}"), PutOptions::new()),
                })
                .collect();
            let cb = ctx.call("txn", move |ctx, _| done(ctx));
            lib(|| c.txn(Txn::new().and_then(ops), cb));
        }
        _ => {
            let sub = format!("{}{}", st.prefix, SUBS[ctx.rand(SUBS.len() as u64) as usize]);
            let opts = GetOptions::new().prefix(true).serializable(ctx.rand(2) == 0);
            let cb = ctx.call("get", move |ctx, _| done(ctx));
            lib(|| c.get(sub, opts, cb));
        }
    }
}

/// A lease of the pool that is still kept alive.
fn pick_lease(st: &State) -> Option<i64> {
    let pool = st.pool.borrow();
    let live: Vec<i64> = pool.iter().filter(|l| !l.gone.get()).map(|l| l.id).collect();
    (!live.is_empty()).then(|| live[st.ctx.rand(live.len() as u64) as usize])
}
