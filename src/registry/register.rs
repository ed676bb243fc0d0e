//! [`register`]: an instance put under its service's prefix on a lease kept alive, and put
//! again on a new lease whenever that one is lost.
//!
//! ```text
//!   start ──► Session (grant, keepalive) ──► put {name}/{id} on its lease ──► Registered
//!     ▲   failed: Failed{retry_in}, alarm            │ lease lost: Lost(why)
//!     └──────────────────────────────────────────────┘ (at once; then backoff on failures)
//!   deregister: delete the key (if still ours), revoke the lease; nothing after it
//! ```

use super::{encode, ServiceInfo};
use crate::client::{Client, Fired};
use crate::concurrency::{Error, Lost, Session, SessionOptions};
use crate::error::{Code, EtcdError};
use crate::ops::kv::{DeleteOptions, PutOptions};
use crate::ops::txn::{Compare, CompareOp, Txn, TxnOp};
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// What [`register`]'s callback hears, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistrationEvent {
    /// The instance is registered (first time), on `lease`, written at `revision`.
    Registered {
        /// The lease the key is attached to.
        lease: i64,
        /// The revision of the put.
        revision: i64,
    },
    /// The lease was lost (expired during a partition, revoked, or its keepalive gave up):
    /// the key is gone or going. Registering again starts at once.
    Lost(Lost),
    /// Registered again after a loss or a failure, on a new lease.
    Reregistered {
        /// The new lease.
        lease: i64,
        /// The revision of the put.
        revision: i64,
    },
    /// An attempt failed. `retry_in`: when the next starts; `None`: the registration ended
    /// (bad input or a TTL etcd refuses, permission denied, or `CANCELLED`: the client was
    /// closed — then the lease is no longer kept alive and expires after its TTL).
    Failed {
        /// Why.
        error: EtcdError,
        /// The wait before the next attempt, or `None` when there is none.
        retry_in: Option<Duration>,
    },
}

/// A running registration; [`deregister`](Registration::deregister) ends it. Dropping the
/// handle does not (the instance stays registered while the client runs).
#[derive(Clone)]
pub struct Registration(Rc<RefCell<State>>);

type Callback = Box<dyn FnMut(RegistrationEvent)>;
type Done = Box<dyn FnOnce(Result<(), EtcdError>)>;

struct State {
    client: Client,
    key: Bytes,
    value: Bytes,
    ttl: Duration,
    /// Taken while it runs.
    callback: Option<Callback>,
    /// Events for the callback, delivered in order by the outermost `tell`.
    queue: VecDeque<RegistrationEvent>,
    delivering: bool,
    /// The session of the current attempt or registration.
    session: Option<Session>,
    /// The lease the key was last put on; kept after a loss (the lease may still live with
    /// the key on it: `deregister` removes both).
    lease: Option<i64>,
    /// Whether the instance is registered now.
    registered: bool,
    /// Whether it ever was (the next success is `Reregistered`).
    ever: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// The next attempt's alarm.
    alarm: Option<u64>,
    /// Numbers attempts: answers of an abandoned one are dropped.
    attempt: u64,
    /// A grant or a put is in flight.
    pending: bool,
    /// The client's `close()` count at the start: a `CANCELLED` means the client closed only
    /// if it moved (a stream the server cancelled is not a closed client).
    closes: u64,
    /// No more attempts: deregistered, or a final failure.
    ended: bool,
    /// `deregister` was called: the callback hears nothing more.
    deregistered: bool,
    /// `deregister` callbacks waiting for the attempt in flight to settle.
    waiting: Vec<Done>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("Registration")
            .field("key", &String::from_utf8_lossy(&s.key))
            .field("lease", &s.lease)
            .field("registered", &s.registered)
            .finish_non_exhaustive()
    }
}

/// Registers `info` as `{name}/{id}` with Go's endpoint value, on a lease of `ttl` (whole
/// seconds, at least 1) kept alive, and keeps it registered: a lost lease (a partition
/// longer than the TTL, a revoke) is replaced and the key put again, by itself. `callback`
/// hears every step ([`RegistrationEvent`]); bad input ends it with `INVALID_ARGUMENT`.
///
/// Go programs find the instance through `endpoints.NewManager(client, name)` and etcd's
/// gRPC resolver (`etcd:///name`).
pub fn register(
    client: &Client,
    info: ServiceInfo,
    ttl: Duration,
    callback: impl FnMut(RegistrationEvent) + 'static,
) -> Registration {
    let mut key = info.name.clone().into_bytes();
    key.push(b'/');
    key.extend_from_slice(info.id.as_bytes());
    let state = Rc::new(RefCell::new(State {
        client: client.clone(),
        key: key.into(),
        value: encode(&info.addr, &info.metadata),
        ttl,
        callback: Some(Box::new(callback)),
        queue: VecDeque::new(),
        delivering: false,
        session: None,
        lease: None,
        registered: false,
        ever: false,
        failures: 0,
        alarm: None,
        attempt: 0,
        pending: false,
        closes: client.inner().closes.get(),
        ended: false,
        deregistered: false,
        waiting: Vec::new(),
    }));
    let registration = Registration(state.clone());
    let refused = if info.name.is_empty() || info.id.is_empty() {
        Some("a service registration needs a name and an id")
    } else if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
        Some("a registration's TTL is a whole number of seconds, at least 1")
    } else {
        None
    };
    match refused {
        Some(why) => {
            let error = EtcdError::new(Code::InvalidArgument, why, "register");
            state.borrow_mut().ended = true;
            crate::concurrency::later(client, move || {
                tell(&state, RegistrationEvent::Failed { error, retry_in: None })
            });
        }
        None => attempt(&state),
    }
    registration
}

impl Registration {
    /// The instance's key, `{name}/{id}`.
    pub fn key(&self) -> Bytes {
        self.0.borrow().key.clone()
    }

    /// The lease of the current registration, or of the last one while registering again.
    pub fn lease(&self) -> Option<i64> {
        self.0.borrow().lease
    }

    /// Whether the instance is registered now.
    pub fn is_registered(&self) -> bool {
        self.0.borrow().registered
    }

    /// Ends the registration: deletes the key (while it is still on this registration's
    /// lease) and revokes the lease; `callback` gets the outcome once that is done (an
    /// attempt in flight is waited for). Nothing is told to the registration's callback
    /// after this. Calling it again, or after a final failure, succeeds at once.
    pub fn deregister(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        let done: Done = Box::new(callback);
        let (client, session, lease, alarm, pending) = {
            let mut s = self.0.borrow_mut();
            s.ended = true;
            s.deregistered = true;
            s.registered = false;
            s.callback = None;
            s.queue.clear();
            let lease = s.lease.take();
            (s.client.clone(), s.session.take(), lease, s.alarm.take(), s.pending)
        };
        if let Some(a) = alarm {
            client.disarm(a);
        }
        match (session, lease) {
            (Some(session), _) => remove(&client, self.key(), session.lease(), Some(session), done),
            (None, lease) if pending => {
                // Registering again after a loss: the old lease may still hold the key.
                if let Some(old) = lease {
                    remove(&client, self.key(), old, None, Box::new(|_| ()));
                }
                self.0.borrow_mut().waiting.push(done)
            }
            (None, Some(lease)) => remove(&client, self.key(), lease, None, done),
            (None, None) => crate::concurrency::later(&client, move || done(Ok(()))),
        }
    }
}

/// Deletes `key` if it is on `lease`, then revokes the lease (through `session` when there
/// is one, which also stops its keepalive); a lease already gone counts as revoked.
fn remove(client: &Client, key: Bytes, lease: i64, session: Option<Session>, done: Done) {
    let txn = Txn::new()
        .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
        .and_then([TxnOp::delete(key, DeleteOptions::new())]);
    let c = client.clone();
    client.txn(txn, move |res| {
        let deleted = res.map(|_| ());
        let finish = move |revoked: Result<(), EtcdError>| done(deleted.and(revoked));
        match session {
            Some(session) => session.close(move |closed| finish(closed.map_err(as_etcd))),
            None => c.lease_revoke(lease, move |res| match res {
                Err(e) if e.code() != Code::NotFound => finish(Err(e)),
                _ => finish(Ok(())),
            }),
        }
    });
}

/// Settles the `deregister` calls that waited for an attempt in flight, once it is over:
/// `session` (granted meanwhile) is removed with its key, if any.
fn settle(state: &Rc<RefCell<State>>, session: Option<Session>) {
    let (client, key, waiting) = {
        let mut s = state.borrow_mut();
        s.pending = false;
        (s.client.clone(), s.key.clone(), std::mem::take(&mut s.waiting))
    };
    match session {
        Some(session) => {
            let done: Done = Box::new(move |res| {
                for w in waiting {
                    w(res.clone());
                }
            });
            remove(&client, key, session.lease(), Some(session), done);
        }
        None => {
            for w in waiting {
                w(Ok(()));
            }
        }
    }
}

/// Starts an attempt: a session, then the put.
fn attempt(state: &Rc<RefCell<State>>) {
    let (client, ttl, id) = {
        let mut s = state.borrow_mut();
        s.attempt += 1;
        s.pending = true;
        (s.client.clone(), s.ttl, s.attempt)
    };
    let st = state.clone();
    Session::new(&client, SessionOptions::new().ttl(ttl), move |res| match res {
        Ok(session) => session_ready(&st, id, session),
        Err(e) => failed(&st, id, as_etcd(e)),
    });
}

fn session_ready(state: &Rc<RefCell<State>>, id: u64, session: Session) {
    {
        let mut s = state.borrow_mut();
        if s.attempt != id {
            drop(s);
            return session.close(|_| ());
        }
        if s.deregistered {
            drop(s);
            return settle(state, Some(session));
        }
        s.session = Some(session.clone());
        s.lease = Some(session.lease());
    }
    let (client, key, value) = {
        let s = state.borrow();
        (s.client.clone(), s.key.clone(), s.value.clone())
    };
    let st = state.clone();
    let options = PutOptions::new().lease(session.lease());
    client.put(key, value, options, move |res| match res {
        Err(e) => {
            if e.code() == Code::Cancelled {
                // The client closed: a revoke would open a new connection. The lease
                // expires after its TTL.
                session.orphan();
            } else {
                session.close(|_| ());
            }
            failed(&st, id, e)
        }
        Ok(resp) => registered(&st, id, &session, resp.header.map_or(0, |h| h.revision)),
    });
}

fn registered(state: &Rc<RefCell<State>>, id: u64, session: &Session, revision: i64) {
    let event = {
        let mut s = state.borrow_mut();
        s.pending = false;
        if s.ended || s.attempt != id {
            return;
        }
        s.registered = true;
        s.failures = 0;
        let lease = session.lease();
        if std::mem::replace(&mut s.ever, true) {
            RegistrationEvent::Reregistered { lease, revision }
        } else {
            RegistrationEvent::Registered { lease, revision }
        }
    };
    let st = state.clone();
    session.on_lost(move |lost| lost_lease(&st, id, lost));
    tell(state, event);
}

/// Whether `error` says the client was closed since the registration started.
fn closed_client(state: &Rc<RefCell<State>>, error: &EtcdError) -> bool {
    let s = state.borrow();
    error.code() == Code::Cancelled && s.client.inner().closes.get() != s.closes
}

fn lost_lease(state: &Rc<RefCell<State>>, id: u64, lost: Lost) {
    {
        let mut s = state.borrow_mut();
        if s.ended || s.attempt != id {
            return;
        }
        s.registered = false;
        s.session = None;
    }
    // A keepalive cancelled by `close()` of the client: the registration ends there (the
    // lease was not lost; it expires after its TTL unless the program registers again).
    if let Lost::KeepaliveFailed(e) = &lost {
        if closed_client(state, e) {
            let event = RegistrationEvent::Failed { error: e.clone(), retry_in: None };
            state.borrow_mut().ended = true;
            return tell(state, event);
        }
    }
    tell(state, RegistrationEvent::Lost(lost));
    if !state.borrow().ended {
        attempt(state);
    }
}

/// An attempt failed: try again after a backoff, unless retrying cannot help.
fn failed(state: &Rc<RefCell<State>>, id: u64, error: EtcdError) {
    let closed = closed_client(state, &error);
    let event = {
        let mut s = state.borrow_mut();
        if s.attempt != id {
            return;
        }
        s.session = None;
        s.registered = false;
        if s.deregistered {
            drop(s);
            return settle(state, None);
        }
        s.pending = false;
        if s.ended {
            return;
        }
        // What a retry cannot mend: bad input (a TTL above etcd's maximum is OUT_OF_RANGE,
        // a value above its request limit INVALID_ARGUMENT), refused credentials or
        // permissions, a closed client. A lease gone between grant and put (NOT_FOUND) is
        // retried.
        let hopeless = closed
            || matches!(
                error.code(),
                Code::InvalidArgument
                    | Code::OutOfRange
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::Unimplemented
            );
        if hopeless {
            s.ended = true;
            RegistrationEvent::Failed { error, retry_in: None }
        } else {
            s.failures += 1;
            let delay = backoff(s.failures, s.ttl);
            let st = state.clone();
            let alarm = s.client.after(delay, move |fired| {
                st.borrow_mut().alarm = None;
                match fired {
                    Fired::Due => attempt(&st),
                    Fired::Closed => {
                        st.borrow_mut().ended = true;
                        let error = EtcdError::new(Code::Cancelled, "client closed", "register");
                        tell(&st, RegistrationEvent::Failed { error, retry_in: None });
                    }
                }
            });
            s.alarm = Some(alarm);
            RegistrationEvent::Failed { error, retry_in: Some(delay) }
        }
    };
    tell(state, event);
}

/// Wait before attempt `failures + 1`: 100 ms doubling, at most a third of the TTL (so the
/// instance is back within one TTL of etcd becoming reachable) and at most 5 s.
fn backoff(failures: u32, ttl: Duration) -> Duration {
    let cap = (ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(5));
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(10))).min(cap)
}

fn as_etcd(e: Error) -> EtcdError {
    match e {
        Error::Etcd(e) => e,
        Error::SessionLost(lost) => {
            EtcdError::new(Code::Unavailable, format!("session lost: {lost}"), "register")
        }
        other => EtcdError::new(Code::Unknown, other.to_string(), "register"),
    }
}

/// Queues `event` and, unless a delivery further up the stack is under way, delivers the
/// queue in order with nothing borrowed (the callback may deregister or close the client,
/// whose own events then queue behind). Nothing is told once deregistered.
fn tell(state: &Rc<RefCell<State>>, event: RegistrationEvent) {
    {
        let mut s = state.borrow_mut();
        if s.deregistered {
            return;
        }
        s.queue.push_back(event);
        if std::mem::replace(&mut s.delivering, true) {
            return;
        }
    }
    loop {
        let (event, callback) = {
            let mut s = state.borrow_mut();
            let ready = !s.deregistered && !s.queue.is_empty() && s.callback.is_some();
            if !ready {
                s.delivering = false;
                return;
            }
            (s.queue.pop_front().expect("queued"), s.callback.take().expect("present"))
        };
        let mut callback = callback;
        callback(event);
        let mut s = state.borrow_mut();
        if !s.deregistered && s.callback.is_none() {
            s.callback = Some(callback);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stays_within_a_third_of_the_ttl() {
        let ttl = Duration::from_secs(3);
        let waits: Vec<_> = (1..6).map(|n| backoff(n, ttl).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000]);
        assert_eq!(backoff(40, Duration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(backoff(1, Duration::from_secs(1)), Duration::from_millis(100));
    }
}
