//! [`AsyncClient`]: the client's operations, one async method per callback method, with the
//! same name and arguments but the callback.

use super::{
    aborting, call, call_abortable, kick, stream, CallFuture, KeepaliveStream, ObserveStream,
};
use super::{PagedStream, SnapshotStream, WatchStream};
use crate::pb::etcdserverpb::{
    AlarmResponse, AuthDisableResponse, AuthEnableResponse, AuthRoleAddResponse,
    AuthRoleDeleteResponse, AuthRoleGetResponse, AuthRoleGrantPermissionResponse,
    AuthRoleListResponse, AuthRoleRevokePermissionResponse, AuthStatusResponse,
    AuthUserAddResponse, AuthUserChangePasswordResponse, AuthUserDeleteResponse,
    AuthUserGetResponse, AuthUserGrantRoleResponse, AuthUserListResponse,
    AuthUserRevokeRoleResponse, AuthenticateResponse, CompactionResponse, DefragmentResponse,
    DeleteRangeResponse, DowngradeResponse, HashKvResponse, HashResponse, LeaseGrantResponse,
    LeaseLeasesResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberAddResponse,
    MemberListResponse, MemberPromoteResponse, MemberRemoveResponse, MemberUpdateResponse,
    MoveLeaderResponse, PutResponse, RangeResponse, StatusResponse, TxnResponse,
};
use crate::pb::v3electionpb::{
    CampaignResponse, LeaderKey, LeaderResponse, ProclaimResponse, ResignResponse,
};
use crate::pb::v3lockpb::{LockResponse, UnlockResponse};
use crate::{
    AlarmAction, AlarmType, CallOptions, Client, CompactOptions, DeleteOptions, DowngradeAction,
    EtcdError, GetOptions, LeaseGrantOptions, PermissionType, PutOptions, StreamOptions, Txn,
    WatchOptions,
};
use bytes::Bytes;

/// The [`Client`]'s operations as futures and streams (feature `futures`): made by
/// [`Client::asynchronous`], it shares the client (its connection, loop, views and options).
///
/// Every method has the name and arguments of the client's method, without the callback,
/// and returns a [`CallFuture`] of the response the callback would get, or a stream of
/// what a stream's callback would get. See the [module docs](super) for driving the client,
/// dropping futures and where streams end.
///
/// ```no_run
/// # async fn example(client: evetcd::Client) -> Result<(), evetcd::EtcdError> {
/// use evetcd::{GetOptions, LeaseGrantOptions, PutOptions};
/// let etcd = client.asynchronous();
/// let lease = etcd.lease_grant(10, LeaseGrantOptions::new()).await?;
/// etcd.put("service/a", "10.0.0.1", PutOptions::new().lease(lease.id)).await?;
/// let found = etcd.get("service/", GetOptions::new().prefix(true)).await?;
/// assert_eq!(found.count, 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncClient {
    client: Client,
}

impl Client {
    /// This client's operations as futures and streams (see [`AsyncClient`]; feature
    /// `futures`). Views keep what they are: `client.namespaced("app/").asynchronous()`.
    pub fn asynchronous(&self) -> AsyncClient {
        AsyncClient { client: self.clone() }
    }
}

impl From<Client> for AsyncClient {
    fn from(client: Client) -> AsyncClient {
        AsyncClient { client }
    }
}

impl AsyncClient {
    /// The callback client this one wraps: to drive it (`run`, `process`, `next_timeout`,
    /// its fd), close it, or use the callback API.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// [`Client::with`]: a view whose unary calls use `opts`.
    pub fn with(&self, opts: CallOptions) -> AsyncClient {
        self.client.with(opts).asynchronous()
    }

    /// [`Client::namespaced`]: a view whose every key lives under `prefix`.
    pub fn namespaced(&self, prefix: impl Into<Bytes>) -> AsyncClient {
        self.client.namespaced(prefix).asynchronous()
    }

    /// [`Client::member`]: a view whose calls all go to member `endpoint`.
    pub fn member(&self, endpoint: &str) -> Result<AsyncClient, EtcdError> {
        Ok(self.client.member(endpoint)?.asynchronous())
    }
}

/// Async forms of unary operations: each `fn name(args) -> Response;` becomes a method that
/// starts `Client::name(args, callback)` and returns the future of its answer.
macro_rules! unary {
    ($($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $resp:ty;)*) => {$(
        #[doc = concat!("[`Client::", stringify!($name), "`] as a future.")]
        $(#[$attr])*
        pub fn $name(&self, $($arg: $ty),*) -> CallFuture<$resp> {
            let future = call(|done| self.client.$name($($arg,)* done));
            kick(&self.client);
            future
        }
    )*};
}

/// [`unary!`] for the calls that wait as long as it takes and return a
/// [`Pending`](crate::Pending): dropping the future abandons the call.
macro_rules! waiting {
    ($($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $resp:ty;)*) => {$(
        #[doc = concat!("[`Client::", stringify!($name), "`] as a future.")]
        ///
        /// Dropping the future before it resolves abandons the call (as
        /// [`Pending::cancel`](crate::Pending::cancel)).
        $(#[$attr])*
        pub fn $name(&self, $($arg: $ty),*) -> CallFuture<$resp> {
            let future = call_abortable(|done| {
                let pending = self.client.$name($($arg,)* done);
                Some(aborting(&self.client, move || pending.cancel()))
            });
            kick(&self.client);
            future
        }
    )*};
}

/// KV and Txn.
impl AsyncClient {
    unary! {
        fn get(key: impl Into<Bytes>, options: GetOptions) -> RangeResponse;
        fn put(key: impl Into<Bytes>, value: impl Into<Bytes>, options: PutOptions) -> PutResponse;
        fn delete(key: impl Into<Bytes>, options: DeleteOptions) -> DeleteRangeResponse;
        fn compact(revision: i64, options: CompactOptions) -> CompactionResponse;
        fn txn(txn: Txn) -> TxnResponse;
    }

    /// [`Client::get_paged`] as a stream of pages (the last has `more == false`, or is the
    /// one error). Dropping the stream cancels the read.
    pub fn get_paged(
        &self,
        key: impl Into<Bytes>,
        options: GetOptions,
        page_size: i64,
    ) -> PagedStream {
        let is_last = |r: &Result<RangeResponse, EtcdError>| r.as_ref().map_or(true, |p| !p.more);
        let items = stream(is_last, |on_page| {
            let read = self.client.get_paged(key, options, page_size, on_page);
            aborting(&self.client, move || read.cancel())
        });
        kick(&self.client);
        items
    }
}

/// Watch.
impl AsyncClient {
    /// [`Client::watch`] as a stream of its responses, ending after its one error (a
    /// compacted start revision, a failed create, a stream that could not be re-opened, or
    /// `CANCELLED` from [`Client::close`]). Dropping the stream cancels the watch.
    pub fn watch(&self, key: impl Into<Bytes>, options: WatchOptions) -> WatchStream {
        let items = stream(Result::is_err, |callback| {
            let watch = self.client.watch(key, options, callback);
            aborting(&self.client, move || watch.cancel(|_| ()))
        });
        kick(&self.client);
        items
    }

    /// [`Client::request_progress`] (no answer of its own: the watch streams get it).
    pub fn request_progress(&self) {
        self.client.request_progress();
    }
}

/// Lease.
impl AsyncClient {
    unary! {
        fn lease_grant(ttl: i64, options: LeaseGrantOptions) -> LeaseGrantResponse;
        fn lease_revoke(id: i64) -> LeaseRevokeResponse;
        fn lease_time_to_live(id: i64, keys: bool) -> LeaseTimeToLiveResponse;
        fn lease_leases() -> LeaseLeasesResponse;
    }

    /// [`Client::lease_keepalive`] as a stream of renewals, ending after its one error
    /// (`NOT_FOUND` once the lease is gone). Dropping the stream stops the keepalive.
    pub fn lease_keepalive(&self, id: i64) -> KeepaliveStream {
        self.lease_keepalive_with(id, StreamOptions::new())
    }

    /// [`Client::lease_keepalive_with`] as a stream (see
    /// [`lease_keepalive`](AsyncClient::lease_keepalive)).
    pub fn lease_keepalive_with(&self, id: i64, options: StreamOptions) -> KeepaliveStream {
        let items = stream(Result::is_err, |callback| {
            let keepalive = self.client.lease_keepalive_with(id, options, callback);
            aborting(&self.client, move || keepalive.cancel(|_| ()))
        });
        kick(&self.client);
        items
    }
}

/// Lock and election.
impl AsyncClient {
    waiting! {
        fn lock(name: impl Into<Bytes>, lease: i64) -> LockResponse;
        fn election_campaign(name: impl Into<Bytes>, lease: i64, value: impl Into<Bytes>) -> CampaignResponse;
    }

    unary! {
        fn unlock(key: impl Into<Bytes>) -> UnlockResponse;
        fn election_proclaim(leader: LeaderKey, value: impl Into<Bytes>) -> ProclaimResponse;
        fn election_leader(name: impl Into<Bytes>) -> LeaderResponse;
        fn election_resign(leader: LeaderKey) -> ResignResponse;
    }

    /// [`Client::election_observe`] as a stream of leaders, ending after its one error.
    /// Dropping the stream stops observing.
    pub fn election_observe(&self, name: impl Into<Bytes>) -> ObserveStream {
        self.election_observe_with(name, StreamOptions::new())
    }

    /// [`Client::election_observe_with`] as a stream (see
    /// [`election_observe`](AsyncClient::election_observe)).
    pub fn election_observe_with(
        &self,
        name: impl Into<Bytes>,
        options: StreamOptions,
    ) -> ObserveStream {
        let items = stream(Result::is_err, |callback| {
            let observe = self.client.election_observe_with(name, options, callback);
            aborting(&self.client, move || observe.cancel(|_| ()))
        });
        kick(&self.client);
        items
    }
}

/// Cluster.
impl AsyncClient {
    unary! {
        fn member_list(linearizable: bool) -> MemberListResponse;
        fn member_add(peer_urls: impl IntoIterator<Item = impl Into<String>>, learner: bool) -> MemberAddResponse;
        fn member_remove(id: u64) -> MemberRemoveResponse;
        fn member_update(id: u64, peer_urls: impl IntoIterator<Item = impl Into<String>>) -> MemberUpdateResponse;
        fn member_promote(id: u64) -> MemberPromoteResponse;
    }
}

/// Maintenance.
impl AsyncClient {
    unary! {
        fn status() -> StatusResponse;
        fn alarm(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmResponse;
        fn downgrade(action: DowngradeAction, version: impl Into<String>) -> DowngradeResponse;
        fn defragment() -> DefragmentResponse;
        #[allow(clippy::should_implement_trait)] // etcd's RPC name, as on the client
        fn hash() -> HashResponse;
        fn hash_kv(revision: i64) -> HashKvResponse;
        fn move_leader(target_id: u64) -> MoveLeaderResponse;
    }

    /// [`Client::snapshot`] as a stream of chunks (the last has `remaining_bytes == 0` and
    /// ends with the checksum, or is the one error). Dropping the stream abandons it.
    pub fn snapshot(&self) -> SnapshotStream {
        let is_last = |r: &Result<crate::pb::etcdserverpb::SnapshotResponse, EtcdError>| {
            r.as_ref().map_or(true, |c| c.remaining_bytes == 0)
        };
        let items = stream(is_last, |callback| {
            let pending = self.client.snapshot(callback);
            aborting(&self.client, move || pending.cancel())
        });
        kick(&self.client);
        items
    }
}

/// Auth.
impl AsyncClient {
    unary! {
        fn authenticate(user: impl Into<String>, password: impl Into<String>) -> AuthenticateResponse;
        fn auth_enable() -> AuthEnableResponse;
        fn auth_disable() -> AuthDisableResponse;
        fn auth_status() -> AuthStatusResponse;
        fn user_add(user: impl Into<String>, password: impl Into<String>) -> AuthUserAddResponse;
        fn user_add_no_password(user: impl Into<String>) -> AuthUserAddResponse;
        fn user_delete(user: impl Into<String>) -> AuthUserDeleteResponse;
        fn user_change_password(user: impl Into<String>, password: impl Into<String>) -> AuthUserChangePasswordResponse;
        fn user_get(user: impl Into<String>) -> AuthUserGetResponse;
        fn user_list() -> AuthUserListResponse;
        fn user_grant_role(user: impl Into<String>, role: impl Into<String>) -> AuthUserGrantRoleResponse;
        fn user_revoke_role(user: impl Into<String>, role: impl Into<String>) -> AuthUserRevokeRoleResponse;
        fn role_add(role: impl Into<String>) -> AuthRoleAddResponse;
        fn role_delete(role: impl Into<String>) -> AuthRoleDeleteResponse;
        fn role_get(role: impl Into<String>) -> AuthRoleGetResponse;
        fn role_list() -> AuthRoleListResponse;
        fn role_grant_permission(role: impl Into<String>, perm: PermissionType, key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> AuthRoleGrantPermissionResponse;
        fn role_revoke_permission(role: impl Into<String>, key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> AuthRoleRevokePermissionResponse;
    }
}
