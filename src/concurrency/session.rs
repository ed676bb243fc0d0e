//! [`Session`]: a lease kept alive for as long as the program wants to hold something
//! (Go's `concurrency.Session`).

use super::error::{Error, Lost};
use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::handle::Keepalive;
use crate::ops::lease::LeaseGrantOptions;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Go's default session TTL.
const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How a [`Session`] starts.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    ttl: Duration,
    lease: Option<i64>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { ttl: DEFAULT_TTL, lease: None }
    }
}

impl SessionOptions {
    /// A new lease with a TTL of 60 s (Go's default).
    pub fn new() -> Self {
        Self::default()
    }

    /// The TTL of the lease granted, in whole seconds (rounded up; at least 1 s). Go's
    /// `WithTTL`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adopts lease `id` instead of granting one, for example to take back after a
    /// restart what a previous run of the program held (Go's `WithLease`).
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = Some(id);
        self
    }

    fn ttl_seconds(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        secs.clamp(1, i64::MAX as u64) as i64
    }
}

/// A lease kept alive (Go's `concurrency.Session`): the liveness that the [`Mutex`] and
/// [`Election`] recipes hang their keys on. Cheap to clone; clones are one session.
///
/// Its loss is reported exactly once to [`on_lost`](Session::on_lost): the lease expired
/// (etcd no longer knows it and its last granted TTL had passed), was revoked by someone
/// else (it vanished before its TTL ran out), or the keepalive gave up (its stream could not
/// be re-opened, or the client was closed). [`orphan`](Session::orphan) and
/// [`close`](Session::close) end it on purpose and report nothing; so does dropping the
/// last clone (the lease then expires after its TTL).
///
/// [`Mutex`]: super::Mutex
/// [`Election`]: super::Election
#[derive(Clone)]
pub struct Session(Rc<Shared>);

struct Shared {
    client: Client,
    lease: i64,
    ttl: Cell<i64>,
    state: RefCell<State>,
    /// Told once when the session is lost: the user's callback and the recipes waiting on
    /// the session.
    listeners: RefCell<Vec<(u64, Listener)>>,
    next_listener: Cell<u64>,
    /// An adopted lease's `done`, until its first renewal or its loss.
    ready: RefCell<Option<Ready>>,
}

type Ready = Box<dyn FnOnce(Result<(), Error>)>;
type Listener = Box<dyn FnOnce(Lost)>;

enum State {
    /// Kept alive; the lease lasts at least until `expires` (as of the last renewal).
    Alive { keepalive: Option<Keepalive>, expires: Instant },
    /// Lost, for this reason.
    Lost(Lost),
    /// Orphaned or closed by the program.
    Ended,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease", &self.0.lease)
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

/// Listener id of the user's `on_lost` callback (the recipes' ids start at 1).
const USER: u64 = 0;

impl Drop for Shared {
    /// The last clone is gone (no mutex or election holds one either): nobody can use the
    /// lease any more, so its keepalive stops and it expires after its TTL (as `orphan`).
    fn drop(&mut self) {
        if let State::Alive { keepalive: Some(k), .. } = &*self.state.borrow() {
            k.cancel(|_| ());
        }
    }
}

impl Session {
    /// Grants a lease (or adopts the one in `options`) and keeps it alive; `done` receives
    /// the session. A granted session is ready once the grant answered; an adopted lease
    /// must answer its first renewal (a lease etcd no longer knows fails with
    /// [`Error::SessionLost`]).
    #[allow(clippy::new_ret_no_self)] // callback style: the session arrives through `done`
    pub fn new(
        client: &Client,
        options: SessionOptions,
        done: impl FnOnce(Result<Session, Error>) + 'static,
    ) {
        let ttl = options.ttl_seconds();
        let Some(id) = options.lease else {
            let c = client.clone();
            return client.lease_grant(ttl, LeaseGrantOptions::new(), move |res| match res {
                Err(e) => done(Err(e.into())),
                Ok(granted) => {
                    let session = Session::start(&c, granted.id, granted.ttl);
                    done(Ok(session));
                }
            });
        };
        // Adopted: ready after the first renewal says the lease lives (its TTL unknown
        // until then: a lease already gone counts as expired).
        let session = Session::start(client, id, 0);
        let s = session.clone();
        *session.0.ready.borrow_mut() = Some(Box::new(move |res| done(res.map(|()| s))));
    }

    /// A session on lease `id`, its keepalive started.
    fn start(client: &Client, id: i64, ttl: i64) -> Session {
        let session = Session(Rc::new(Shared {
            client: client.clone(),
            lease: id,
            ttl: Cell::new(ttl),
            state: RefCell::new(State::Alive {
                keepalive: None,
                expires: Instant::now() + Duration::from_secs(ttl.max(0) as u64),
            }),
            listeners: RefCell::default(),
            next_listener: Cell::new(USER + 1),
            ready: RefCell::new(None),
        }));
        let weak = Rc::downgrade(&session.0);
        let keepalive = client.lease_keepalive(id, move |res| {
            if let Some(shared) = weak.upgrade() {
                Session(shared).renewed(res);
            }
        });
        if let State::Alive { keepalive: slot, .. } = &mut *session.0.state.borrow_mut() {
            *slot = Some(keepalive);
        }
        session
    }

    /// A keepalive answer: the lease lives until `now + ttl`, or it is lost.
    fn renewed(&self, res: Result<crate::pb::etcdserverpb::LeaseKeepAliveResponse, EtcdError>) {
        let now = Instant::now();
        let lost = match res {
            Ok(resp) if resp.ttl > 0 => {
                self.0.ttl.set(resp.ttl);
                if let State::Alive { expires, .. } = &mut *self.0.state.borrow_mut() {
                    *expires = now + Duration::from_secs(resp.ttl as u64);
                }
                let ready = self.0.ready.borrow_mut().take();
                if let Some(ready) = ready {
                    ready(Ok(()));
                }
                return;
            }
            // A lease that vanished before its last granted TTL ran out was revoked.
            Ok(_) => self.gone(now),
            Err(e) if e.code() == Code::NotFound => self.gone(now),
            Err(e) => Lost::KeepaliveFailed(e),
        };
        self.lose(lost);
    }

    /// Why the lease would be gone if etcd no longer knew it now (for a recipe that finds
    /// its key gone before the keepalive tells): the session's loss if already known.
    pub(crate) fn gone_now(&self) -> Lost {
        self.lost().unwrap_or_else(|| self.gone(Instant::now()))
    }

    /// Why a lease etcd no longer knows is gone, as of `now`.
    fn gone(&self, now: Instant) -> Lost {
        match &*self.0.state.borrow() {
            State::Alive { expires, .. } if now < *expires => Lost::Revoked,
            _ => Lost::Expired,
        }
    }

    /// Marks the session lost and tells every listener, once.
    fn lose(&self, lost: Lost) {
        let previous =
            std::mem::replace(&mut *self.0.state.borrow_mut(), State::Lost(lost.clone()));
        let State::Alive { keepalive, .. } = previous else {
            *self.0.state.borrow_mut() = previous; // already lost or ended
            return;
        };
        if let Some(k) = keepalive {
            k.cancel(|_| ());
        }
        let ready = self.0.ready.borrow_mut().take();
        if let Some(ready) = ready {
            ready(Err(Error::SessionLost(lost.clone())));
        }
        let listeners: Vec<_> = self.0.listeners.borrow_mut().drain(..).collect();
        for (_, listener) in listeners {
            listener(lost.clone());
        }
    }

    /// The lease's id (the recipes' keys end with it in lowercase hex).
    pub fn lease(&self) -> i64 {
        self.0.lease
    }

    /// The lease's TTL in seconds, as etcd last granted it.
    pub fn ttl(&self) -> i64 {
        self.0.ttl.get()
    }

    /// The client the session works through.
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// Why the session was lost, once it was.
    pub fn lost(&self) -> Option<Lost> {
        match &*self.0.state.borrow() {
            State::Lost(lost) => Some(lost.clone()),
            _ => None,
        }
    }

    /// Whether the session is still kept alive (not lost, orphaned or closed).
    pub fn is_alive(&self) -> bool {
        matches!(*self.0.state.borrow(), State::Alive { .. })
    }

    /// Registers `callback`, called once if the session is lost (replacing an earlier
    /// one). Registered after the loss, it runs on the client's next turn.
    pub fn on_lost(&self, callback: impl FnOnce(Lost) + 'static) {
        self.forget(USER);
        match self.lost() {
            Some(lost) => self.0.client.with_core(|c| c.defer(Box::new(move || callback(lost)))),
            None if self.is_alive() => {
                self.0.listeners.borrow_mut().push((USER, Box::new(callback)));
            }
            None => {} // ended on purpose: never lost
        }
    }

    /// Stops the keepalive without revoking the lease, which then expires after its TTL
    /// (Go's `Orphan`): for handing the lease to another process, or when revoking cannot
    /// work. `on_lost` is not called; a lock or campaign still waiting on the session ends
    /// with [`Lost::Closed`] (its key is left to expire with the lease).
    pub fn orphan(&self) {
        let previous = std::mem::replace(&mut *self.0.state.borrow_mut(), State::Ended);
        match previous {
            State::Alive { keepalive, .. } => {
                if let Some(k) = keepalive {
                    k.cancel(|_| ());
                }
            }
            other => *self.0.state.borrow_mut() = other,
        }
        let listeners: Vec<_> = self.0.listeners.borrow_mut().drain(..).collect();
        for (id, listener) in listeners {
            if id != USER {
                listener(Lost::Closed);
            }
        }
    }

    /// Orphans the session and revokes its lease, deleting every key attached to it (Go's
    /// `Close`). A lease already gone counts as revoked. `on_lost` is not called.
    pub fn close(&self, callback: impl FnOnce(Result<(), Error>) + 'static) {
        self.orphan();
        self.0.client.lease_revoke(self.0.lease, move |res| match res {
            Ok(_) => callback(Ok(())),
            Err(e) if e.code() == Code::NotFound => callback(Ok(())),
            Err(e) => callback(Err(e.into())),
        });
    }

    /// Calls `listener` once if the session is lost; returns an id for
    /// [`forget`](Self::forget). A session already lost or ended calls nobody: callers check
    /// [`lost`](Self::lost) first.
    pub(crate) fn listen(&self, listener: Box<dyn FnOnce(Lost)>) -> u64 {
        let id = self.0.next_listener.get();
        self.0.next_listener.set(id + 1);
        if self.is_alive() {
            self.0.listeners.borrow_mut().push((id, listener));
        }
        id
    }

    /// Drops listener `id`.
    pub(crate) fn forget(&self, id: u64) {
        self.0.listeners.borrow_mut().retain(|(i, _)| *i != id);
    }
}
