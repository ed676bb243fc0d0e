//! [`Mutex`]: a fair distributed lock (Go's `concurrency.Mutex`), interoperable with Go
//! programs and `etcdctl lock` on the same name.
//!
//! ```text
//!            lock / try_lock                    the key just ahead is gone
//!   Idle ──────────────────► Acquiring ──(queue head)──────────────────────► Held
//!    ▲                          │  cancel, failure, session lost                │
//!    │                          ▼  (own key deleted)                            │
//!    └────────────── the callback gets the error ◄─── unlock (own key deleted) ─┘
//! ```

use super::error::Error;
use super::keys::{lease_key, range_of, with_slash};
use super::session::Session;
use super::wait::{first_created, later, wait_deletes, Wait, Waiting};
use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::ops::kv::{DeleteOptions, GetOptions, PutOptions};
use crate::ops::txn::{Compare, CompareOp, Txn, TxnOp};
use crate::pb::etcdserverpb::ResponseHeader;
use bytes::Bytes;
use std::cell::RefCell;
use std::rc::Rc;

type Done = Box<dyn FnOnce(Result<(), Error>)>;

/// A distributed lock with Go's key layout and algorithm (Go's `concurrency.Mutex`).
///
/// Each contender puts the key `{prefix}/{lease id in lowercase hex}` attached to its
/// session's lease; the contender whose key has the lowest create revision holds the lock.
/// A waiter watches only the key just ahead of it (see the `wait` module), so a release wakes one
/// waiter. Go programs, etcdctl's `lock` and etcd's own Lock RPC use the same keys: they
/// exclude each other.
///
/// **One key per session and prefix.** As in Go, two `Mutex`es of one session on one prefix
/// share the key: they are one contender. The second `lock` finds the key already there and
/// stands where the first does (it holds at once if the first holds), and an `unlock`
/// through either deletes the key and so releases both. Use one session per contender.
///
/// A session lost while the lock is awaited fails the `lock` with [`Error::SessionLost`]; lost
/// while held, the lock is gone with the lease: `unlock` reports it the same way (and the
/// session's `on_lost` tells at once). A guarded write made while holding fences itself with
/// [`is_owner`](Mutex::is_owner).
#[derive(Clone)]
pub struct Mutex(Rc<Inner>);

struct Inner {
    session: Session,
    /// `{prefix}/`.
    prefix: Bytes,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// `{prefix}/{lease:x}` while contending or holding; empty otherwise.
    key: Bytes,
    /// The key's create revision (-1: none).
    revision: i64,
    /// The response header of the acquisition.
    header: Option<ResponseHeader>,
    /// A lock or try_lock in progress.
    attempt: Option<Attempt>,
    /// Numbers the attempts: a [`Wait`] cancels its own attempt only.
    attempts: u64,
    /// An unlock in flight: a new attempt waits for its answer (it would race the delete).
    releasing: bool,
    held: bool,
}

/// A lock in progress.
struct Attempt {
    id: u64,
    done: Option<Done>,
    /// The wait for the keys ahead, once it started.
    wait: Option<Waiting>,
    /// The session-loss listener's id.
    listener: u64,
    cancelled: bool,
}

impl std::fmt::Debug for Mutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.state.borrow();
        f.debug_struct("Mutex")
            .field("prefix", &self.0.prefix)
            .field("key", &s.key)
            .field("held", &s.held)
            .finish_non_exhaustive()
    }
}

impl Mutex {
    /// A mutex named `prefix` for `session` (its key will be `{prefix}/{lease:x}`).
    pub fn new(session: &Session, prefix: impl AsRef<[u8]>) -> Mutex {
        let state = State { revision: -1, ..State::default() };
        Mutex(Rc::new(Inner {
            session: session.clone(),
            prefix: with_slash(prefix.as_ref()),
            state: RefCell::new(state),
        }))
    }

    fn client(&self) -> &Client {
        self.0.session.client()
    }

    /// Takes the lock, waiting for the contenders ahead (first come, first served);
    /// `callback` gets `Ok(())` once held. The returned [`Wait`] cancels the wait (its key
    /// is removed). Fails with [`Error::SessionLost`] if the session is or gets lost first.
    pub fn lock(&self, callback: impl FnOnce(Result<(), Error>) + 'static) -> Wait {
        let id = match self.begin(Box::new(callback)) {
            Ok(id) => id,
            Err((done, e)) => {
                later(self.client(), move || done(Err(e)));
                return Wait::none();
            }
        };
        let this = self.clone();
        let wait = Wait::new(move || this.cancel(id));
        let this = self.clone();
        self.try_acquire(move |res| match res {
            Err(e) => this.finish(Err(e)),
            Ok((true, _)) => this.finish(Ok(())),
            Ok((false, _)) => this.wait_turn(),
        });
        wait
    }

    /// Takes the lock if no other session holds it; fails with [`Error::Locked`] otherwise,
    /// leaving no key behind (Go's `TryLock`).
    pub fn try_lock(&self, callback: impl FnOnce(Result<(), Error>) + 'static) {
        if let Err((done, e)) = self.begin(Box::new(callback)) {
            return later(self.client(), move || done(Err(e)));
        }
        let this = self.clone();
        self.try_acquire(move |res| match res {
            Err(e) => this.finish(Err(e)),
            Ok((true, _)) => this.finish(Ok(())),
            Ok((false, key)) => {
                let t = this.clone();
                this.client().delete(key, DeleteOptions::new(), move |res| match res {
                    Ok(_) => {
                        t.forget_key();
                        t.finish(Err(Error::Locked));
                    }
                    // The key stays known, so that `unlock` can delete it.
                    Err(e) => t.finish(Err(e.into())),
                });
            }
        });
    }

    /// Releases the lock: deletes its key. [`Error::NotLocked`] if it is not held (Go's
    /// `ErrLockReleased`), or while a lock or another unlock is under way;
    /// [`Error::SessionLost`] if the lock was lost meanwhile (its key was already gone with
    /// the lease: what it guarded may have been taken by another).
    pub fn unlock(&self, callback: impl FnOnce(Result<(), Error>) + 'static) {
        let key = {
            let mut s = self.0.state.borrow_mut();
            let free = s.attempt.is_none() && !s.releasing && !s.key.is_empty();
            s.releasing |= free;
            free.then(|| s.key.clone())
        };
        let Some(key) = key else {
            return later(self.client(), move || callback(Err(Error::NotLocked)));
        };
        let this = self.clone();
        self.client().delete(key.clone(), DeleteOptions::new(), move |res| {
            this.0.state.borrow_mut().releasing = false;
            let deleted = match res {
                Err(e) => return callback(Err(e.into())),
                Ok(resp) => resp.deleted,
            };
            if this.0.state.borrow().key == key {
                this.forget_key();
            }
            match (this.0.session.lost(), deleted) {
                (Some(lost), _) => callback(Err(Error::SessionLost(lost))),
                // Already gone: the lease went before the keepalive could tell.
                (None, 0) => callback(Err(Error::SessionLost(this.0.session.gone_now()))),
                (None, _) => callback(Ok(())),
            }
        });
    }

    /// The compare that holds while this mutex's key exists (Go's `IsOwner`): put it in
    /// a Txn's conditions, once `lock` succeeded, so that the Txn's writes happen only while
    /// the lock is still held (fencing against a session lost meanwhile). As in Go it is
    /// true for a waiting contender too, whose key also exists.
    pub fn is_owner(&self) -> Compare {
        let s = self.0.state.borrow();
        // Without a key, Go's placeholder `\0` at revision -1: a compare that never holds
        // (an empty key is not a valid compare).
        let key = if s.key.is_empty() { Bytes::from_static(b"\0") } else { s.key.clone() };
        Compare::create_revision(key, CompareOp::Equal, s.revision)
    }

    /// The lock's key while contending or holding (empty otherwise).
    pub fn key(&self) -> Bytes {
        self.0.state.borrow().key.clone()
    }

    /// Whether the lock is held (as far as this handle knows: see [`is_owner`]).
    ///
    /// [`is_owner`]: Mutex::is_owner
    pub fn is_locked(&self) -> bool {
        self.0.state.borrow().held
    }

    /// The response header of the acquisition (its revision orders the holders).
    pub fn header(&self) -> Option<ResponseHeader> {
        self.0.state.borrow().header
    }

    /// Starts an attempt (its id); refuses a second one, one during an unlock, or a lost
    /// session.
    #[allow(clippy::type_complexity)]
    fn begin(&self, done: Done) -> Result<u64, (Done, Error)> {
        let busy = {
            let s = self.0.state.borrow();
            match (s.attempt.is_some(), s.releasing) {
                (true, _) => Some("a lock is already in progress"),
                (_, true) => Some("an unlock is in progress"),
                _ => None,
            }
        };
        if let Some(why) = busy {
            let e = EtcdError::new(Code::FailedPrecondition, why, "lock");
            return Err((done, e.into()));
        }
        if let Some(lost) = self.0.session.lost() {
            return Err((done, Error::SessionLost(lost)));
        }
        let this = Rc::downgrade(&self.0);
        let listener = self.0.session.listen(Box::new(move |lost| {
            if let Some(inner) = this.upgrade() {
                Mutex(inner).finish(Err(Error::SessionLost(lost)));
            }
        }));
        let mut s = self.0.state.borrow_mut();
        s.attempts += 1;
        let id = s.attempts;
        s.attempt = Some(Attempt { id, done: Some(done), wait: None, listener, cancelled: false });
        Ok(id)
    }

    /// Go's `tryAcquire`: puts the key unless it exists, and reads the queue's head in the
    /// same Txn. `then` gets whether this key heads the queue, and the key.
    fn try_acquire(&self, then: impl FnOnce(Result<(bool, Bytes), Error>) + 'static) {
        let lease = self.0.session.lease();
        let key = lease_key(&self.0.prefix, lease);
        self.0.state.borrow_mut().key = key.clone();
        let owner = TxnOp::get(self.0.prefix.clone(), first_created());
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), "", PutOptions::new().lease(lease)), owner.clone()])
            .or_else([TxnOp::get(key.clone(), GetOptions::new()), owner]);
        let this = self.clone();
        self.client().txn(txn, move |res| {
            let resp = match res {
                Err(e) => return then(Err(e.into())),
                Ok(resp) => resp,
            };
            let mut revision = resp.header.as_ref().map_or(0, |h| h.revision);
            if !resp.succeeded {
                let mine = range_of(&resp, 0).and_then(|r| r.kvs.first());
                revision = mine.map_or(revision, |kv| kv.create_revision);
            }
            let head = range_of(&resp, 1).and_then(|r| r.kvs.first());
            let first = head.is_none_or(|kv| kv.create_revision == revision);
            {
                let mut s = this.0.state.borrow_mut();
                s.revision = revision;
                if first {
                    s.header = resp.header;
                }
            }
            then(Ok((first, key)))
        });
    }

    /// Waits for the keys ahead to go, then checks the own key still exists (Go's `Lock`
    /// after `tryAcquire`).
    fn wait_turn(&self) {
        let (prefix, revision, cancelled) = {
            let s = self.0.state.borrow();
            let cancelled = s.attempt.as_ref().is_none_or(|a| a.cancelled);
            (self.0.prefix.clone(), s.revision, cancelled)
        };
        if cancelled {
            return self.abandon(EtcdError::new(Code::Cancelled, "lock cancelled", "lock").into());
        }
        let this = self.clone();
        let waiting = wait_deletes(self.client(), prefix, revision - 1, move |res| {
            if let Err(e) = res {
                return this.abandon(e.into());
            }
            let key = this.key();
            let t = this.clone();
            this.client().get(key, GetOptions::new(), move |res| match res {
                Err(e) => t.abandon(e.into()),
                Ok(resp) if resp.kvs.is_empty() => {
                    // The key went with the lease, before the keepalive could tell.
                    t.finish(Err(Error::SessionLost(t.0.session.gone_now())))
                }
                Ok(resp) => {
                    t.0.state.borrow_mut().header = resp.header;
                    t.finish(Ok(()))
                }
            });
        });
        if let Some(a) = self.0.state.borrow_mut().attempt.as_mut() {
            a.wait = Some(waiting);
        }
    }

    /// Gives up an attempt that put a key: deletes it (Go's `Unlock` after a failed wait),
    /// then reports `error`.
    fn abandon(&self, error: Error) {
        let key = self.key();
        let this = self.clone();
        self.client().delete(key, DeleteOptions::new(), move |res| {
            // A failed delete keeps the key known: `unlock` can still remove it.
            if res.is_ok() {
                this.forget_key();
            }
            this.finish(Err(error));
        });
    }

    /// `cancel` of attempt `id`'s [`Wait`]: ends the wait for the keys ahead (which deletes
    /// the key and reports `CANCELLED`), or marks the attempt for when its Txn answers.
    fn cancel(&self, id: u64) {
        let wait = {
            let mut s = self.0.state.borrow_mut();
            let Some(a) = s.attempt.as_mut().filter(|a| a.id == id && !a.cancelled) else {
                return;
            };
            a.cancelled = true;
            a.wait.take()
        };
        // Still in the Txn, there is no wait yet: `wait_turn` or `finish` sees the mark.
        if let Some(w) = wait {
            w.cancel();
        }
    }

    /// Ends the attempt with `result`, once: the callback runs and the session listener
    /// goes.
    fn finish(&self, result: Result<(), Error>) {
        let attempt = self.0.state.borrow_mut().attempt.take();
        let Some(mut attempt) = attempt else { return };
        self.0.session.forget(attempt.listener);
        if let Some(w) = attempt.wait.take() {
            w.cancel();
        }
        if attempt.cancelled && result.is_ok() {
            // Cancelled while the Txn that made it the holder was on its way: the attempt
            // goes back in place while its key is deleted, then ends as cancelled.
            let error = EtcdError::new(Code::Cancelled, "lock cancelled", "lock").into();
            self.0.state.borrow_mut().attempt = Some(attempt);
            return self.abandon(error);
        }
        self.0.state.borrow_mut().held = result.is_ok();
        if let Some(done) = attempt.done.take() {
            done(result);
        }
    }

    /// The key is gone (deleted, or never put).
    fn forget_key(&self) {
        let mut s = self.0.state.borrow_mut();
        s.key = Bytes::new();
        s.revision = -1;
        s.held = false;
    }
}
