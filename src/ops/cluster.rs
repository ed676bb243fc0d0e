//! Cluster: list, add, remove, update and promote members.

use crate::client::Client;
use crate::error::EtcdError;
use crate::pb::etcdserverpb::{
    cluster_rpc, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};

impl Client {
    /// The cluster's members. With `linearizable` the answer goes through a quorum (etcd
    /// 3.5+); otherwise the member answers from what it knows.
    pub fn member_list(
        &self,
        linearizable: bool,
        callback: impl FnOnce(Result<MemberListResponse, EtcdError>) + 'static,
    ) {
        let req = MemberListRequest { linearizable };
        self.call::<cluster_rpc::MemberList>("member_list", &req, callback);
    }

    /// Adds a member reachable at `peer_urls`, as a non-voting learner if `learner`.
    pub fn member_add(
        &self,
        peer_urls: impl IntoIterator<Item = impl Into<String>>,
        learner: bool,
        callback: impl FnOnce(Result<MemberAddResponse, EtcdError>) + 'static,
    ) {
        let req = MemberAddRequest {
            peer_ur_ls: peer_urls.into_iter().map(Into::into).collect(),
            is_learner: learner,
        };
        self.call::<cluster_rpc::MemberAdd>("member_add", &req, callback);
    }

    /// Removes member `id`.
    pub fn member_remove(
        &self,
        id: u64,
        callback: impl FnOnce(Result<MemberRemoveResponse, EtcdError>) + 'static,
    ) {
        self.call::<cluster_rpc::MemberRemove>(
            "member_remove",
            &MemberRemoveRequest { id },
            callback,
        );
    }

    /// Changes member `id`'s peer URLs.
    pub fn member_update(
        &self,
        id: u64,
        peer_urls: impl IntoIterator<Item = impl Into<String>>,
        callback: impl FnOnce(Result<MemberUpdateResponse, EtcdError>) + 'static,
    ) {
        let req =
            MemberUpdateRequest { id, peer_ur_ls: peer_urls.into_iter().map(Into::into).collect() };
        self.call::<cluster_rpc::MemberUpdate>("member_update", &req, callback);
    }

    /// Promotes learner `id` to a voting member (it must have caught up with the leader).
    pub fn member_promote(
        &self,
        id: u64,
        callback: impl FnOnce(Result<MemberPromoteResponse, EtcdError>) + 'static,
    ) {
        let req = MemberPromoteRequest { id };
        self.call::<cluster_rpc::MemberPromote>("member_promote", &req, callback);
    }
}
