//! The futures adapter (feature `futures`): every operation as a [`Future`], every stream
//! (watch, keepalive, observe, paged read, snapshot) as a [`Stream`].
//!
//! It wraps the callback API and nothing else: each future is resolved by the operation's
//! callback, each stream is fed by it. So everything said about an operation (deadlines,
//! retries, failover, namespaces, call options) holds for its async form, and its errors
//! arrive as `Err(EtcdError)`.
//!
//! ```no_run
//! use evetcd::{Client, Config, GetOptions, PutOptions, WatchOptions};
//! # async fn example(client: Client) -> Result<(), evetcd::EtcdError> {
//! let etcd = client.asynchronous();
//! etcd.put("greeting", "hello", PutOptions::new()).await?;
//! let got = etcd.get("greeting", GetOptions::new()).await?;
//! println!("{:?}", got.kvs[0].value);
//! let mut watch = etcd.watch("jobs/", WatchOptions::new().prefix(true));
//! // With any StreamExt (futures-util, tokio-stream): while let Some(r) = watch.next().await
//! # let _ = &mut watch;
//! # Ok(()) }
//! ```
//!
//! # Driving
//!
//! There is no executor and no runtime here: the client still runs on its loop, and a
//! future resolves only while something drives the client — [`Client::run`], or a task of
//! the program's runtime that waits for the client's fd to be readable (or for
//! [`Client::next_timeout`]) and calls [`Client::process`] (see `examples/tokio.rs`, with
//! tokio's `AsyncFd`). The callback runs inside `process()` and wakes the future's task.
//!
//! Such a driver sleeps on a `next_timeout()` it read before the operation started, so
//! each async method started outside a callback also makes the client's fd readable (one
//! eventfd write): the driver turns, sends the request and re-reads the timeout, with no
//! other signal needed. (Operations started with the callback API from a task need the
//! driver woken by the program, as the embedding contract says.)
//!
//! # What the futures are
//!
//! - **Started at once.** The call is sent when the method is called, not when the future
//!   is first polled (as with the callbacks): two futures made one after the other are two
//!   calls in flight.
//! - **Not `Send`**, as the client: they belong to the thread that drives it (a tokio
//!   `LocalSet` or current-thread runtime, say).
//! - **Dropping** a future before it resolves: for the calls that wait as long as it takes
//!   (`lock`, `election_campaign`) the call is abandoned, as by their
//!   [`Pending`](crate::Pending) (a lock or leadership granted before the drop but never
//!   polled stays: revoke its lease to be sure); every other call runs to its end and its
//!   answer is dropped (to abandon those too, start them through [`AsyncClient::with`] with
//!   a [`Cancel`](crate::Cancel) token). Dropping a stream cancels its watch, keepalive,
//!   observer, paged read or snapshot.
//! - **Streams end** after their last item: a watch, keepalive or observer after its one
//!   error (they end only so), a paged read after the page with `more == false` or an
//!   error, a snapshot after the chunk with `remaining_bytes == 0` or an error. Items that
//!   arrive while nobody polls are queued.

mod client;
mod recipes;

pub use client::AsyncClient;

use crate::client::Client;
use crate::error::EtcdError;
use crate::pb::etcdserverpb::{
    LeaseKeepAliveResponse, RangeResponse, SnapshotResponse, WatchResponse,
};
use crate::pb::v3electionpb::LeaderResponse;
use futures_core::{FusedFuture, FusedStream, Stream};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A [`Client::watch`](crate::Client::watch) as a stream: every response (the `created`
/// one, events, progress notifications), then its one error if it ends.
pub type WatchStream = ResponseStream<WatchResponse>;
/// A [`Client::lease_keepalive`](crate::Client::lease_keepalive) as a stream: each renewal,
/// then its one error (`NOT_FOUND` once the lease is gone) if it ends.
pub type KeepaliveStream = ResponseStream<LeaseKeepAliveResponse>;
/// A [`Client::election_observe`](crate::Client::election_observe) as a stream: each
/// leader and proclaimed value, then its one error if it ends.
pub type ObserveStream = ResponseStream<LeaderResponse>;
/// A [`Client::get_paged`](crate::Client::get_paged) as a stream of pages; the last has
/// `more == false`.
pub type PagedStream = ResponseStream<RangeResponse>;
/// A [`Client::snapshot`](crate::Client::snapshot) as a stream of chunks; the last has
/// `remaining_bytes == 0` and carries the checksum.
pub type SnapshotStream = ResponseStream<SnapshotResponse>;

/// The callback handed to an operation by [`call`].
type Callback<T, E> = Box<dyn FnOnce(Result<T, E>)>;

/// The callback handed to a stream operation by [`stream`].
type ItemCallback<T, E> = Box<dyn FnMut(Result<T, E>)>;

/// Cancels what a future or stream stands for, when dropped before its end.
type Abort = Box<dyn FnOnce()>;

// ===== CallFuture =====

/// The result of one call, or the task waiting for it.
struct Slot<T, E> {
    result: Option<Result<T, E>>,
    waker: Option<Waker>,
}

/// One operation's answer: resolves to what its callback receives, exactly once.
///
/// Made by the methods of [`AsyncClient`] (and the recipes' `_async` methods); see the
/// [module docs](self) for when it resolves and what dropping it does.
#[must_use = "the call is under way; dropping the future drops (or abandons) its answer"]
pub struct CallFuture<T, E = EtcdError> {
    slot: Rc<RefCell<Slot<T, E>>>,
    /// Abandons the call if the future is dropped before it resolved.
    abort: Option<Abort>,
    /// The result was returned.
    done: bool,
}

/// Starts a call with `start`, which hands the callback to the operation; the future
/// resolves with what the callback receives.
pub(crate) fn call<T: 'static, E: 'static>(start: impl FnOnce(Callback<T, E>)) -> CallFuture<T, E> {
    call_abortable(|done| {
        start(done);
        None
    })
}

/// [`call`] for an operation that can be abandoned: `start` returns how.
pub(crate) fn call_abortable<T: 'static, E: 'static>(
    start: impl FnOnce(Callback<T, E>) -> Option<Abort>,
) -> CallFuture<T, E> {
    let slot = Rc::new(RefCell::new(Slot { result: None, waker: None }));
    let filled = slot.clone();
    let abort = start(Box::new(move |result| {
        let waker = {
            let mut slot = filled.borrow_mut();
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }));
    CallFuture { slot, abort, done: false }
}

impl<T, E> Future for CallFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "CallFuture polled after it resolved");
        let mut slot = this.slot.borrow_mut();
        if let Some(result) = slot.result.take() {
            this.done = true;
            this.abort = None;
            return Poll::Ready(result);
        }
        remember(&mut slot.waker, cx);
        Poll::Pending
    }
}

impl<T, E> FusedFuture for CallFuture<T, E> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T, E> Drop for CallFuture<T, E> {
    fn drop(&mut self) {
        let answered = self.slot.borrow().result.is_some();
        if let (false, Some(abort)) = (answered, self.abort.take()) {
            abort();
        }
    }
}

impl<T, E> std::fmt::Debug for CallFuture<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let answered = self.slot.borrow().result.is_some();
        f.debug_struct("CallFuture")
            .field("answered", &answered)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

// ===== ResponseStream =====

/// The items a stream's callback delivered and nobody took yet.
struct Queue<T, E> {
    items: VecDeque<Result<T, E>>,
    /// The last item arrived (it may still be queued).
    ended: bool,
    waker: Option<Waker>,
}

/// A stream operation's deliveries, as a [`Stream`]: what its callback receives, in order,
/// ending after the last (see the [module docs](self) for which item that is). Dropping it
/// cancels the stream.
#[must_use = "the stream is running; dropping it cancels it"]
pub struct ResponseStream<T, E = EtcdError> {
    queue: Rc<RefCell<Queue<T, E>>>,
    /// Cancels the stream if it is dropped before its last item arrived.
    abort: Option<Abort>,
    /// `None` was returned.
    finished: bool,
}

/// Starts a stream with `start`, which hands the callback to the operation and returns how
/// to cancel it; `is_last` says which item ends it.
pub(crate) fn stream<T: 'static, E: 'static>(
    is_last: fn(&Result<T, E>) -> bool,
    start: impl FnOnce(ItemCallback<T, E>) -> Abort,
) -> ResponseStream<T, E> {
    let queue = Rc::new(RefCell::new(Queue { items: VecDeque::new(), ended: false, waker: None }));
    let fed = queue.clone();
    let abort = start(Box::new(move |item| {
        let waker = {
            let mut queue = fed.borrow_mut();
            if queue.ended {
                return; // nothing comes after the last item
            }
            queue.ended = is_last(&item);
            queue.items.push_back(item);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }));
    ResponseStream { queue, abort: Some(abort), finished: false }
}

impl<T, E> Stream for ResponseStream<T, E> {
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let mut queue = this.queue.borrow_mut();
        if let Some(item) = queue.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if queue.ended {
            this.finished = true;
            this.abort = None;
            return Poll::Ready(None);
        }
        remember(&mut queue.waker, cx);
        Poll::Pending
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let queue = self.queue.borrow();
        match (self.finished, queue.ended) {
            (true, _) => (0, Some(0)),
            (false, true) => (queue.items.len(), Some(queue.items.len())),
            (false, false) => (queue.items.len(), None),
        }
    }
}

impl<T, E> FusedStream for ResponseStream<T, E> {
    fn is_terminated(&self) -> bool {
        self.finished
    }
}

impl<T, E> Drop for ResponseStream<T, E> {
    fn drop(&mut self) {
        let ended = self.queue.borrow().ended;
        if let (false, Some(abort)) = (ended, self.abort.take()) {
            abort();
        }
    }
}

impl<T, E> std::fmt::Debug for ResponseStream<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.queue.borrow();
        f.debug_struct("ResponseStream")
            .field("queued", &queue.items.len())
            .field("ended", &queue.ended)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// `abort`, then a [`kick`]: what a dropped future or stream cancels must reach the server,
/// and a driver asleep on its last `next_timeout()` would not send it before then. Holds the
/// client weakly (an unfinished future does not keep the client alive).
pub(crate) fn aborting(client: &Client, abort: impl FnOnce() + 'static) -> Box<dyn FnOnce()> {
    let weak = client.weak();
    Box::new(move || {
        abort();
        if let Some(client) = Client::upgrade(&weak) {
            kick(&client);
        }
    })
}

/// Makes `client`'s fd readable, so that a loop waiting on it turns, sends what was just
/// started and re-reads `next_timeout()`. Not needed (and skipped) inside a callback: the
/// turn running it flushes what it started.
pub(crate) fn kick(client: &Client) {
    let client = client.host().unwrap_or_else(|| client.clone());
    if client.inner().in_callbacks.get() {
        return;
    }
    let waker = match client.inner().driver().try_borrow() {
        Ok(driver) => driver.reactor.waker(),
        Err(_) => return, // inside the core: its turn flushes
    };
    // A failed wake leaves the call to the driver's next timeout or readiness.
    let _ = waker.wake();
}

/// Keeps the task to wake: the latest poll's (a future may move between tasks).
fn remember(waker: &mut Option<Waker>, cx: &Context<'_>) {
    match waker {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *waker = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests;
