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
use crate::client::Client;
use crate::concurrency::{Error, Lost, Session, SessionOptions};
use crate::error::{Code, EtcdError};
use crate::ops::kv::{DeleteOptions, PutOptions};
use crate::ops::txn::{Compare, CompareOp, Txn, TxnOp};
use bytes::Bytes;
use std::cell::RefCell;
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
    /// The session of the current attempt or registration.
    session: Option<Session>,
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
    /// Ended by `deregister` or a final failure.
    ended: bool,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.borrow();
        f.debug_struct("Registration")
            .field("key", &String::from_utf8_lossy(&s.key))
            .field("lease", &s.session.as_ref().map(Session::lease))
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
        session: None,
        registered: false,
        ever: false,
        failures: 0,
        alarm: None,
        attempt: 0,
        ended: false,
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

    /// The lease of the current registration (or attempt).
    pub fn lease(&self) -> Option<i64> {
        self.0.borrow().session.as_ref().map(Session::lease)
    }

    /// Whether the instance is registered now.
    pub fn is_registered(&self) -> bool {
        self.0.borrow().registered
    }

    /// Ends the registration: deletes the key (if it is still this registration's) and
    /// revokes the lease; `callback` gets the outcome. Nothing is told to the registration's
    /// callback after this. Calling it again (or after a final failure) succeeds at once.
    pub fn deregister(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        let (client, session, alarm) = {
            let mut s = self.0.borrow_mut();
            let already = s.ended && s.session.is_none();
            s.ended = true;
            s.registered = false;
            s.callback = None;
            if already {
                drop(s);
                let client = self.0.borrow().client.clone();
                return crate::concurrency::later(&client, move || callback(Ok(())));
            }
            (s.client.clone(), s.session.take(), s.alarm.take())
        };
        if let Some(a) = alarm {
            client.disarm(a);
        }
        let Some(session) = session else {
            return crate::concurrency::later(&client, move || callback(Ok(())));
        };
        let done: Done = Box::new(callback);
        // Delete the key only while it is on this lease: an instance registered again under
        // the same id elsewhere keeps its key.
        let key = self.key();
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, session.lease())])
            .and_then([TxnOp::delete(key, DeleteOptions::new())]);
        client.txn(txn, move |res| {
            let deleted = res.map(|_| ());
            session.close(move |closed| {
                let closed = closed.map_err(|e| match e {
                    Error::Etcd(e) => e,
                    other => EtcdError::new(Code::Unknown, other.to_string(), "deregister"),
                });
                done(deleted.and(closed));
            });
        });
    }
}

/// Starts an attempt: a session, then the put.
fn attempt(state: &Rc<RefCell<State>>) {
    let (client, ttl, id) = {
        let mut s = state.borrow_mut();
        s.attempt += 1;
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
        if s.ended || s.attempt != id {
            drop(s);
            return session.close(|_| ());
        }
        s.session = Some(session.clone());
    }
    let (client, key, value) = {
        let s = state.borrow();
        (s.client.clone(), s.key.clone(), s.value.clone())
    };
    let st = state.clone();
    let options = PutOptions::new().lease(session.lease());
    client.put(key, value, options, move |res| match res {
        Err(e) => {
            session.close(|_| ());
            failed(&st, id, e)
        }
        Ok(resp) => registered(&st, id, &session, resp.header.map_or(0, |h| h.revision)),
    });
}

fn registered(state: &Rc<RefCell<State>>, id: u64, session: &Session, revision: i64) {
    let event = {
        let mut s = state.borrow_mut();
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
    // lease was not lost; it expires unless the program registers again).
    if let Lost::KeepaliveFailed(e) = &lost {
        if e.code() == Code::Cancelled {
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
    let event = {
        let mut s = state.borrow_mut();
        if s.ended || s.attempt != id {
            return;
        }
        s.session = None;
        s.registered = false;
        // What a retry cannot mend: bad input (a TTL above etcd's maximum is OUT_OF_RANGE,
        // a value above its request limit INVALID_ARGUMENT), refused credentials or
        // permissions, a closed client (CANCELLED). A lease gone between grant and put
        // (NOT_FOUND) is retried.
        let hopeless = matches!(
            error.code(),
            Code::InvalidArgument
                | Code::OutOfRange
                | Code::FailedPrecondition
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::Cancelled
                | Code::Unimplemented
        );
        if hopeless {
            s.ended = true;
            RegistrationEvent::Failed { error, retry_in: None }
        } else {
            s.failures += 1;
            let delay = backoff(s.failures, s.ttl);
            let st = state.clone();
            let alarm = s.client.after(delay, move || {
                st.borrow_mut().alarm = None;
                attempt(&st);
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

/// Delivers `event` with nothing borrowed (the callback may deregister).
fn tell(state: &Rc<RefCell<State>>, event: RegistrationEvent) {
    let Some(mut callback) = state.borrow_mut().callback.take() else {
        return;
    };
    callback(event);
    let mut s = state.borrow_mut();
    // Not put back once ended: `deregister` (maybe from this callback) or a final failure.
    if !s.ended && s.callback.is_none() {
        s.callback = Some(callback);
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
