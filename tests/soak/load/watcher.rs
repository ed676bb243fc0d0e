//! A watcher: one logical watch on a prefix, recording every response that carries events.
//!
//! With `churn`, the test cancels it every few seconds and re-creates it from the revision
//! after the last one it delivered, so cancel and re-create are exercised under faults too,
//! and the incarnations still form one stream the checker can hold to etcd's guarantees.
//! A callback from an incarnation whose cancel has returned (or after an error ended it) is
//! recorded as late: the client promises it never happens.

use super::super::heap::{lib, ours};
use super::super::records::{Ev, WatchLog};
use super::{Ctx, Part};
use evetcd::{EtcdError, Watch, WatchOptions, WatchResponse};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// What to watch, and how.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub name: String,
    pub prefix: String,
    /// From revision 1 (the whole history), else from the soak's start revision.
    pub from_rev1: bool,
    pub prev_kv: bool,
    pub no_delete: bool,
    pub churn: bool,
}

pub struct Watcher(Rc<State>);

struct State {
    ctx: Rc<Ctx>,
    spec: WatchSpec,
    log: RefCell<WatchLog>,
    handle: RefCell<Option<Watch>>,
    /// Incarnation number: callbacks of older ones are late.
    generation: Cell<u32>,
    /// Revision of the last event delivered.
    last_rev: Cell<i64>,
    next_churn: Cell<f64>,
    /// An error ended it.
    ended: Cell<bool>,
    /// Created, and no events delivered since.
    fresh: Cell<bool>,
}

impl Watcher {
    pub fn new(ctx: &Rc<Ctx>, spec: WatchSpec) -> Watcher {
        let start_rev = if spec.from_rev1 { 1 } else { ctx.shared.start_rev };
        let log = WatchLog {
            name: spec.name.clone(),
            client: ctx.name.clone(),
            prefix: spec.prefix.clone(),
            start_rev,
            prev_kv: spec.prev_kv,
            no_delete: spec.no_delete,
            ..WatchLog::default()
        };
        Watcher(Rc::new(State {
            ctx: ctx.clone(),
            spec,
            log: RefCell::new(log),
            handle: RefCell::new(None),
            generation: Cell::new(0),
            last_rev: Cell::new(0),
            next_churn: Cell::new(0.0),
            ended: Cell::new(false),
            fresh: Cell::new(false),
        }))
    }
}

impl Part for Watcher {
    fn start(&self) {
        let from = self.0.log.borrow().start_rev;
        open(&self.0, from);
        self.0.next_churn.set(self.0.ctx.now() + 2.0 + self.0.ctx.rand(4) as f64);
    }

    fn tick(&self) {
        let st = &self.0;
        let due = st.spec.churn && st.ctx.now() >= st.next_churn.get();
        if !due || st.ended.get() || st.ctx.stopping.get() {
            return;
        }
        st.next_churn.set(st.ctx.now() + 2.0 + st.ctx.rand(4) as f64);
        cancel(st);
        st.log.borrow_mut().churned += 1;
        let from = match st.last_rev.get() {
            0 => st.log.borrow().start_rev,
            last => last + 1,
        };
        open(st, from);
    }

    fn caught_up(&self, fence: i64) -> bool {
        self.0.ended.get() || self.0.last_rev.get() >= fence
    }

    fn finish(&self) {
        cancel(&self.0);
    }

    fn report(&self, report: &mut super::super::records::ClientReport) {
        report.watches.push(std::mem::take(&mut *self.0.log.borrow_mut()));
    }
}

/// Opens an incarnation from revision `from`.
fn open(st: &Rc<State>, from: i64) {
    let generation = st.generation.get() + 1;
    st.generation.set(generation);
    let options = WatchOptions::new()
        .prefix(true)
        .start_revision(from)
        .prev_kv(st.spec.prev_kv)
        .no_delete(st.spec.no_delete);
    let s = st.clone();
    let callback = move |r| ours(|| on_response(&s, generation, r));
    let handle = lib(|| st.ctx.client.watch(st.spec.prefix.clone(), options, callback));
    *st.handle.borrow_mut() = Some(handle);
}

/// Cancels the current incarnation; its callback must not run after this.
fn cancel(st: &Rc<State>) {
    if let Some(handle) = st.handle.borrow_mut().take() {
        let done = st.ctx.call("watch_cancel", |_, _: Result<(), _>| ());
        lib(|| handle.cancel(done));
    }
    st.generation.set(st.generation.get() + 1);
}

fn on_response(st: &State, generation: u32, r: Result<WatchResponse, EtcdError>) {
    let now = st.ctx.now();
    if generation != st.generation.get() || st.ended.get() {
        let what = match &r {
            Ok(resp) => format!("{} events", resp.events.len()),
            Err(e) => e.to_string(),
        };
        st.log.borrow_mut().late.push(format!("{now:.1}s: {what}"));
        return;
    }
    let mut log = st.log.borrow_mut();
    match r {
        Ok(resp) => {
            if resp.created {
                log.created += 1;
                st.fresh.set(true);
            }
            let events: Vec<Ev> = resp.events.iter().map(Ev::of).collect();
            if let Some(last) = events.last() {
                st.last_rev.set(last.rev);
                if st.fresh.replace(false) {
                    let index = log.responses.len();
                    log.first_after_create.push(index);
                }
                log.responses.push(events);
            }
        }
        Err(e) => {
            st.ended.set(true);
            log.errors.push(format!("{now:.1}s: {e}"));
        }
    }
}
