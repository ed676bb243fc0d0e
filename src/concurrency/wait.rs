//! Waiting for the keys ahead in a queue to go (Go's `waitDeletes`): the fair queue under
//! both the mutex and the election.
//!
//! The queue is every key under a prefix, ordered by create revision. A waiter looks only
//! at the one key just ahead of it (the newest created before its own), watches that key
//! until it is deleted, and looks again: no watch on the whole prefix, so a release wakes
//! one waiter, not all of them.
//!
//! ```text
//!   Get(last created ≤ max) ──none──► done
//!        │ one key K, at revision R
//!        ▼
//!   Watch(K from R) ──DELETE──► Get again
//!        ├──compacted (after a reconnect)──► Get again
//!        └──other error──► done(error)
//! ```

use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::handle::Watch;
use crate::ops::kv::{GetOptions, SortOrder, SortTarget};
use crate::ops::watch::WatchOptions;
use crate::pb::mvccpb::event::EventType;
use bytes::Bytes;
use std::cell::RefCell;
use std::rc::Rc;

type Done = Box<dyn FnOnce(Result<(), EtcdError>)>;

/// A `lock` or `campaign` that waits for its turn; [`cancel`](Wait::cancel) ends it.
#[derive(Clone)]
pub struct Wait(Option<Rc<dyn Fn()>>);

impl Wait {
    /// A handle whose `cancel` runs `cancel`.
    pub(crate) fn new(cancel: impl Fn() + 'static) -> Wait {
        Wait(Some(Rc::new(cancel)))
    }

    /// A handle for a call refused at once: nothing to cancel.
    pub(crate) fn none() -> Wait {
        Wait(None)
    }

    /// Stops waiting: the key put for the wait is deleted and the callback receives
    /// `CANCELLED` (on a later turn). Nothing happens once the callback ran, nor to a later
    /// lock or campaign of the same recipe.
    pub fn cancel(&self) {
        if let Some(cancel) = &self.0 {
            cancel()
        }
    }
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}

/// Runs `f` on the client's next turn: a recipe never calls back from inside the call
/// that was given the callback.
pub(crate) fn later(client: &Client, f: impl FnOnce() + 'static) {
    client.with_core(|c| c.defer(Box::new(f)));
}

/// A wait in progress; [`cancel`](Waiting::cancel) ends it.
#[derive(Clone)]
pub(crate) struct Waiting(Rc<RefCell<State>>);

struct State {
    client: Client,
    prefix: Bytes,
    max_create_revision: i64,
    /// The watch on the key ahead, while there is one.
    watch: Option<Watch>,
    /// Taken when the wait ends: it ends once.
    done: Option<Done>,
}

/// Calls `done(Ok(()))` once no key under `prefix` created at or before
/// `max_create_revision` is left, or `done(Err(..))` when a read or a watch fails.
pub(crate) fn wait_deletes(
    client: &Client,
    prefix: Bytes,
    max_create_revision: i64,
    done: impl FnOnce(Result<(), EtcdError>) + 'static,
) -> Waiting {
    let state = State {
        client: client.clone(),
        prefix,
        max_create_revision,
        watch: None,
        done: Some(Box::new(done)),
    };
    let waiting = Waiting(Rc::new(RefCell::new(state)));
    waiting.look();
    waiting
}

/// The newest key under `prefix` created at or before `max` (Go's `WithLastCreate` and
/// `WithMaxCreateRev`).
fn last_created(max: i64) -> GetOptions {
    GetOptions::new()
        .prefix(true)
        .sort_target(SortTarget::Create)
        .sort_order(SortOrder::Descend)
        .limit(1)
        .max_create_revision(max)
}

/// The oldest key under a prefix: the queue's head (Go's `WithFirstCreate`).
pub(crate) fn first_created() -> GetOptions {
    GetOptions::new()
        .prefix(true)
        .sort_target(SortTarget::Create)
        .sort_order(SortOrder::Ascend)
        .limit(1)
}

impl Waiting {
    /// Reads the key just ahead; watches it, or ends the wait when there is none.
    fn look(&self) {
        let (client, prefix, max) = {
            let s = self.0.borrow();
            (s.client.clone(), s.prefix.clone(), s.max_create_revision)
        };
        let this = self.clone();
        client.get(prefix, last_created(max), move |res| {
            if this.0.borrow().done.is_none() {
                return; // cancelled meanwhile
            }
            match res {
                Err(e) => this.finish(Err(e)),
                Ok(resp) => match resp.kvs.first() {
                    None => this.finish(Ok(())),
                    Some(kv) => {
                        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                        this.watch_delete(kv.key.clone(), revision);
                    }
                },
            }
        });
    }

    /// Watches `key` from `revision` until it is deleted, then looks again.
    fn watch_delete(&self, key: Bytes, revision: i64) {
        let client = self.0.borrow().client.clone();
        let this = self.clone();
        let options = WatchOptions::new().start_revision(revision);
        let watch = client.watch(key, options, move |res| match res {
            // The watch re-opened after a reconnect from a revision since compacted: the
            // queue is read again (a read is safe to repeat), and the wait goes on.
            Err(e) if e.compact_revision().is_some() && this.0.borrow().done.is_some() => {
                this.0.borrow_mut().watch = None;
                this.look();
            }
            Err(e) => this.finish(Err(e)),
            Ok(resp) => {
                let deleted = resp.events.iter().any(|e| e.r#type() == EventType::Delete);
                if deleted && this.0.borrow().done.is_some() {
                    if let Some(w) = this.0.borrow_mut().watch.take() {
                        w.cancel(|_| ());
                    }
                    this.look();
                }
            }
        });
        self.0.borrow_mut().watch = Some(watch);
    }

    /// Ends the wait with `result`, once.
    fn finish(&self, result: Result<(), EtcdError>) {
        let (done, watch) = {
            let mut s = self.0.borrow_mut();
            (s.done.take(), s.watch.take())
        };
        if let Some(w) = watch {
            w.cancel(|_| ());
        }
        if let Some(done) = done {
            done(result);
        }
    }

    /// Ends the wait: its callback receives `CANCELLED` (at once; the caller is a recipe
    /// that reports on the next turn itself).
    pub(crate) fn cancel(&self) {
        self.finish(Err(EtcdError::new(Code::Cancelled, "the wait was cancelled", "wait")));
    }
}
