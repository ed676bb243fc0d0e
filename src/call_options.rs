//! Per-call options: a deadline of the call's own, a cancel token, and opting a write in to
//! retries. They ride on a view of the client ([`Client::with`]), so every operation takes
//! them without a second signature: `client.with(opts).get(..)`.

use crate::client::{Client, Inner};
use crate::core::CallKey;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Options for the unary calls started through [`Client::with`].
///
/// ```no_run
/// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
/// use evetcd::{CallOptions, Cancel, GetOptions};
/// use std::time::Duration;
/// let cancel = Cancel::new();
/// let opts = CallOptions::new().timeout(Duration::from_millis(200)).cancel(&cancel);
/// client.with(opts).get("k", GetOptions::new(), |r| println!("{r:?}"));
/// cancel.cancel(); // the get's callback receives CANCELLED (once), unless it already ran
/// ```
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    cancel: Option<Cancel>,
    retry_writes: bool,
}

impl CallOptions {
    /// No options: the configured deadline, no cancel token, writes not retried.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// The call's own deadline, taken as given (the 1 s floor of
    /// [`Config::timeout`](crate::Config::timeout) does not apply). It also bounds calls
    /// that otherwise wait as long as it takes (`lock`, `election_campaign`): they then end
    /// with `DEADLINE_EXCEEDED`. Retries happen within it.
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Cancels the call with `cancel`: once [`Cancel::cancel`] runs, its callback receives
    /// `CANCELLED` (once) unless it already ran; a call started after that fails at once.
    pub fn cancel(mut self, cancel: &Cancel) -> CallOptions {
        self.cancel = Some(cancel.clone());
        self
    }

    /// Lets a write (put, delete, txn, lease grant, …) be retried like a read after a
    /// transient failure (see [`Config::retry`](crate::Config::retry)), for a write the
    /// caller knows to be safe to apply twice. Off by default: a write is sent again only
    /// when provably never processed.
    pub fn retry_writes(mut self, on: bool) -> CallOptions {
        self.retry_writes = on;
        self
    }

    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.timeout
    }

    pub(crate) fn retries_writes(&self) -> bool {
        self.retry_writes
    }

    pub(crate) fn canceller(&self) -> Option<&Cancel> {
        self.cancel.as_ref()
    }
}

/// A cancel token for any number of calls (as Go's `context.WithCancel`): see
/// [`CallOptions::cancel`]. Cheap to clone; clones are one token.
#[derive(Clone, Default)]
pub struct Cancel(Rc<Token>);

#[derive(Default)]
struct Token {
    cancelled: Cell<bool>,
    /// The calls started with the token, and their clients (weakly).
    calls: RefCell<Vec<(Weak<Inner>, CallKey)>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel").field("cancelled", &self.0.cancelled.get()).finish()
    }
}

impl Cancel {
    /// A token not cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels every call started with this token that is still pending (each callback
    /// receives `CANCELLED` on the client's next turn), and every later one.
    pub fn cancel(&self) {
        self.0.cancelled.set(true);
        let calls = std::mem::take(&mut *self.0.calls.borrow_mut());
        for (client, key) in calls {
            if let Some(client) = Client::upgrade(&client) {
                client.cancel_call(key);
            }
        }
    }

    /// Whether [`cancel`](Self::cancel) ran.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.get()
    }

    /// Call `key` of `client` was started with this token.
    pub(crate) fn track(&self, client: &Client, key: CallKey) {
        if self.is_cancelled() {
            return client.cancel_call(key);
        }
        let mut calls = self.0.calls.borrow_mut();
        // A long-lived token forgets the calls that ended, now and then.
        if calls.len() >= 64 && calls.len().is_power_of_two() {
            calls.retain(|(c, k)| Client::upgrade(c).is_some_and(|c| c.is_pending(*k)));
        }
        calls.push((client.weak(), key));
    }
}
