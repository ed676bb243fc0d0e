//! Lease: grant, revoke, time-to-live, list, and keepalives on the shared stream.

use crate::client::Client;
use crate::core::StreamCallback;
use crate::error::EtcdError;
use crate::handle::{Keepalive, StreamOptions};
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{
    lease_rpc, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};

/// Options of [`Client::lease_grant`].
#[derive(Clone, Debug, Default)]
pub struct LeaseGrantOptions {
    id: i64,
}

impl LeaseGrantOptions {
    /// No options: the server picks the lease id.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask for this lease id (0: the server picks); an id in use fails the grant.
    pub fn id(mut self, id: i64) -> Self {
        self.id = id;
        self
    }
}

impl Client {
    /// Grants a lease of `ttl` seconds. The response carries its `id` and the TTL the server
    /// chose (at least its minimum, about 1.5 election timeouts).
    pub fn lease_grant(
        &self,
        ttl: i64,
        options: LeaseGrantOptions,
        callback: impl FnOnce(Result<LeaseGrantResponse, EtcdError>) + 'static,
    ) {
        let req = LeaseGrantRequest { ttl, id: options.id };
        self.call::<lease_rpc::LeaseGrant>("lease_grant", &req, callback);
    }

    /// Revokes lease `id`: every key attached to it is deleted. An unknown lease fails with
    /// `NOT_FOUND`.
    pub fn lease_revoke(
        &self,
        id: i64,
        callback: impl FnOnce(Result<LeaseRevokeResponse, EtcdError>) + 'static,
    ) {
        self.call::<lease_rpc::LeaseRevoke>("lease_revoke", &LeaseRevokeRequest { id }, callback);
    }

    /// The remaining and granted TTL of lease `id` (`ttl` is -1 once it expired), and with
    /// `keys` the keys attached to it (through a [namespaced](Client::namespaced) view: those
    /// in its namespace, without the prefix).
    pub fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
        callback: impl FnOnce(Result<LeaseTimeToLiveResponse, EtcdError>) + 'static,
    ) {
        let req = LeaseTimeToLiveRequest { id, keys };
        let Some(ns) = self.namespace() else {
            return self.call::<lease_rpc::LeaseTimeToLive>("lease_time_to_live", &req, callback);
        };
        let callback = ns.unprefixing(Namespace::strip_lease_keys, callback);
        self.call::<lease_rpc::LeaseTimeToLive>("lease_time_to_live", &req, callback);
    }

    /// Every lease the cluster holds.
    pub fn lease_leases(
        &self,
        callback: impl FnOnce(Result<LeaseLeasesResponse, EtcdError>) + 'static,
    ) {
        self.call::<lease_rpc::LeaseLeases>("lease_leases", &LeaseLeasesRequest {}, callback);
    }

    /// Keeps lease `id` alive until cancelled: it is renewed at once, then every third of the
    /// TTL the server grants, on the client's one keepalive stream. `callback` receives each
    /// renewal's response. If the lease is gone (expired or revoked) the callback receives
    /// one `NOT_FOUND` error (operation `"keepalive"`) and the keepalive ends. After a lost
    /// connection the stream re-opens and every live lease is renewed at once.
    ///
    /// ```no_run
    /// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
    /// # let lease_id = 1;
    /// let ka = client.lease_keepalive(lease_id, |res| match res {
    ///     Ok(r) => println!("lease {:x} renewed for {} s", r.id, r.ttl),
    ///     Err(e) => eprintln!("lease lost: {e}"),
    /// });
    /// // Later: ka.cancel(|_| ());
    /// # drop(ka);
    /// ```
    pub fn lease_keepalive(
        &self,
        id: i64,
        callback: impl FnMut(Result<LeaseKeepAliveResponse, EtcdError>) + 'static,
    ) -> Keepalive {
        self.lease_keepalive_with(id, StreamOptions::new(), callback)
    }

    /// [`lease_keepalive`](Client::lease_keepalive) with options: with
    /// `auto_reconnect(false)` the keepalive ends with the error of the first stream failure
    /// instead of carrying on on a new stream.
    pub fn lease_keepalive_with(
        &self,
        id: i64,
        options: StreamOptions,
        callback: impl FnMut(Result<LeaseKeepAliveResponse, EtcdError>) + 'static,
    ) -> Keepalive {
        let reconnect = options.reconnects();
        let callback = StreamCallback::Keepalive(Box::new(callback));
        let key = self.with_core(|c| c.keepalive(id, callback, reconnect));
        Keepalive::new(self, key)
    }
}
