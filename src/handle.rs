//! Handles of long-lived calls and streams. A handle is a weak reference plus a
//! generation-checked key: it never keeps the client alive, and one that outlives its
//! stream or client is harmless. `Watch`, `Keepalive` and `Observe` are one implementation
//! ([`StreamHandle`]) under three names.

use crate::client::{Client, Inner};
use crate::core::{CallKey, StreamKey};
use crate::error::EtcdError;
use crate::grpc::Rpc;
use std::rc::Weak;

/// What every stream handle is: the client, weakly, and the stream's key in its registry.
#[derive(Clone)]
struct StreamHandle {
    client: Weak<Inner>,
    key: StreamKey,
}

impl StreamHandle {
    fn new(client: &Client, key: StreamKey) -> StreamHandle {
        StreamHandle { client: client.weak(), key }
    }

    /// See [`Watch::cancel`].
    fn cancel(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        match Client::upgrade(&self.client) {
            Some(client) => client.cancel_stream(self.key, callback),
            None => callback(Ok(())),
        }
    }
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle").field("key", &self.key).finish_non_exhaustive()
    }
}

/// A running watch, returned by [`Client::watch`].
///
/// Dropping the handle does **not** cancel the watch (as in EV::Etcd): its callback keeps
/// receiving events until [`cancel`](Watch::cancel) is called or the watch ends with an
/// error. Keep the handle to be able to cancel.
#[derive(Clone, Debug)]
pub struct Watch(StreamHandle);

impl Watch {
    pub(crate) fn new(client: &Client, key: StreamKey) -> Watch {
        Watch(StreamHandle::new(client, key))
    }

    /// Cancels the watch: from the moment this returns, the watch's callback never runs
    /// again, not even for events already received. The server is told to drop the watch.
    ///
    /// `callback` receives `Ok(())` on the client's next turn, or at once if the client no
    /// longer exists (there is no loop left to run it). Cancelling again, or after the watch
    /// ended, is harmless and succeeds the same way.
    pub fn cancel(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        self.0.cancel(callback);
    }
}

/// A running lease keepalive, returned by [`Client::lease_keepalive`].
///
/// Dropping the handle does **not** stop the keepalive; [`cancel`](Keepalive::cancel) does.
#[derive(Clone, Debug)]
pub struct Keepalive(StreamHandle);

impl Keepalive {
    pub(crate) fn new(client: &Client, key: StreamKey) -> Keepalive {
        Keepalive(StreamHandle::new(client, key))
    }

    /// Stops renewing the lease (which then expires on its own): from the moment this
    /// returns the keepalive's callback never runs again. `callback` receives `Ok(())` as
    /// for [`Watch::cancel`].
    pub fn cancel(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        self.0.cancel(callback);
    }
}

/// A running election observer, returned by [`Client::election_observe`].
///
/// Dropping the handle does **not** stop the observer; [`cancel`](Observe::cancel) does.
#[derive(Clone, Debug)]
pub struct Observe(StreamHandle);

impl Observe {
    pub(crate) fn new(client: &Client, key: StreamKey) -> Observe {
        Observe(StreamHandle::new(client, key))
    }

    /// Stops observing: from the moment this returns the observer's callback never runs
    /// again. `callback` receives `Ok(())` as for [`Watch::cancel`].
    pub fn cancel(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        self.0.cancel(callback);
    }
}

/// A call that waits for as long as it takes, returned by [`Client::lock`],
/// [`Client::election_campaign`] and [`Client::snapshot`].
///
/// Dropping the handle does not abandon the call.
#[derive(Clone)]
pub struct Pending {
    client: Weak<Inner>,
    key: Option<CallKey>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Pending {
    pub(crate) fn new(client: &Client, key: Option<CallKey>) -> Pending {
        Pending { client: client.weak(), key }
    }

    /// Abandons the call: its h2 stream is reset (etcd stops waiting on its behalf) and its
    /// callback receives `CANCELLED` on the next turn. Nothing happens if it already
    /// completed. A lock or leadership the server granted just before may still exist:
    /// revoke the lease to be sure.
    pub fn cancel(&self) {
        if let (Some(client), Some(key)) = (Client::upgrade(&self.client), self.key) {
            client.cancel_call(key);
        }
    }
}

impl Client {
    /// Starts unary call `R` without a deadline, for operations that wait as long as it
    /// takes (lock, campaign). Their errors are never retryable. The returned handle
    /// abandons the call.
    pub(crate) fn call_pending<R: Rpc>(
        &self,
        operation: &'static str,
        request: &R::Request,
        callback: impl FnOnce(Result<R::Response, EtcdError>) + 'static,
    ) -> Pending
    where
        R::Response: 'static,
    {
        let callback =
            move |r: Result<R::Response, EtcdError>| callback(r.map_err(EtcdError::not_retryable));
        self.call_handle::<R>(operation, request, false, callback)
    }

    /// Starts unary call `R`, with the usual deadline when `timed`, returning a handle that
    /// can abandon it (a cancelled call's callback gets `CANCELLED`).
    pub(crate) fn call_handle<R: Rpc>(
        &self,
        operation: &'static str,
        request: &R::Request,
        timed: bool,
        callback: impl FnOnce(Result<R::Response, EtcdError>) + 'static,
    ) -> Pending
    where
        R::Response: 'static,
    {
        let key = self.start::<R>(operation, request, timed, callback);
        Pending::new(self, key)
    }
}

/// Options of a keepalive or an observer (a watch has its own, in
/// [`WatchOptions`](crate::WatchOptions)).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    no_reconnect: bool,
}

impl StreamOptions {
    /// The defaults: the stream re-opens after failures (up to `Config::max_retries`).
    pub fn new() -> StreamOptions {
        StreamOptions::default()
    }

    /// Whether the stream re-opens when it breaks (default on). Off, the first failure
    /// ends the keepalive or observer with that error.
    pub fn auto_reconnect(mut self, on: bool) -> StreamOptions {
        self.no_reconnect = !on;
        self
    }

    pub(crate) fn reconnects(&self) -> bool {
        !self.no_reconnect
    }
}
