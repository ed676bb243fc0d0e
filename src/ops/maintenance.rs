//! Maintenance: status, alarms, defragment, hashes, leadership transfer.

use crate::client::Client;
use crate::error::EtcdError;
use crate::pb::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_rpc, AlarmRequest, AlarmResponse, AlarmType,
    DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest,
    HashResponse, MoveLeaderRequest, MoveLeaderResponse, StatusRequest, StatusResponse,
};

impl Client {
    /// The status of the member the client is connected to: version, database size, leader,
    /// raft index and term, errors.
    pub fn status(&self, callback: impl FnOnce(Result<StatusResponse, EtcdError>) + 'static) {
        self.call::<maintenance_rpc::Status>("status", &StatusRequest {}, callback);
    }

    /// Gets, raises or clears alarms. `member_id` 0 and `AlarmType::None` mean every member
    /// and every alarm (for `Get` and `Deactivate`).
    pub fn alarm(
        &self,
        action: AlarmAction,
        member_id: u64,
        alarm: AlarmType,
        callback: impl FnOnce(Result<AlarmResponse, EtcdError>) + 'static,
    ) {
        let req = AlarmRequest { action: action as i32, member_id, alarm: alarm as i32 };
        self.call::<maintenance_rpc::Alarm>("alarm", &req, callback);
    }

    /// Defragments the connected member's backend (it stops serving meanwhile).
    pub fn defragment(
        &self,
        callback: impl FnOnce(Result<DefragmentResponse, EtcdError>) + 'static,
    ) {
        self.call::<maintenance_rpc::Defragment>("defragment", &DefragmentRequest {}, callback);
    }

    /// A hash of the connected member's whole backend (for tests and debugging).
    #[allow(clippy::should_implement_trait)] // etcd's RPC name, as in EV::Etcd
    pub fn hash(&self, callback: impl FnOnce(Result<HashResponse, EtcdError>) + 'static) {
        self.call::<maintenance_rpc::Hash>("hash", &HashRequest {}, callback);
    }

    /// A hash of the key-value store up to `revision` (0: the newest), comparable across
    /// members to detect divergence.
    pub fn hash_kv(
        &self,
        revision: i64,
        callback: impl FnOnce(Result<HashKvResponse, EtcdError>) + 'static,
    ) {
        self.call::<maintenance_rpc::HashKV>("hash_kv", &HashKvRequest { revision }, callback);
    }

    /// Transfers leadership to member `target_id`; must be sent to the current leader.
    pub fn move_leader(
        &self,
        target_id: u64,
        callback: impl FnOnce(Result<MoveLeaderResponse, EtcdError>) + 'static,
    ) {
        let req = MoveLeaderRequest { target_id };
        self.call::<maintenance_rpc::MoveLeader>("move_leader", &req, callback);
    }
}
