//! Maintenance: status, alarms, defragment, hashes, leadership transfer.

use crate::client::Client;
use crate::core::StreamCallback;
use crate::error::{Code, EtcdError};
use crate::grpc::{codec, Rpc};
use crate::handle::Pending;
use crate::pb::etcdserverpb::{
    alarm_request::AlarmAction, downgrade_request::DowngradeAction, maintenance_rpc, AlarmRequest,
    AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use bytes::{Bytes, BytesMut};
use prost::Message;

impl Client {
    /// The status of the member the client is connected to: version, database size, leader,
    /// raft index and term, errors.
    pub fn status(&self, callback: impl FnOnce(Result<StatusResponse, EtcdError>) + 'static) {
        self.call::<maintenance_rpc::Status>("status", &StatusRequest {}, callback);
    }

    /// Gets, raises or clears alarms. For `Get`, `member_id` 0 and `AlarmType::None` mean
    /// every member and every alarm. `Deactivate` clears only the alarm named exactly (its
    /// member id and type): to clear them all, `Get` them and deactivate each.
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

    /// The cluster downgrade (etcd 3.5+): `Validate` checks that the cluster may go down to
    /// `version` (major.minor, exactly one minor release below the cluster's: `"3.5"` for a
    /// 3.6 cluster; anything else is `INVALID_ARGUMENT`), `Enable` starts the downgrade
    /// (members may then be replaced by binaries of that version), `Cancel` stops one in
    /// progress (etcd 3.5 answers `FAILED_PRECONDITION` when none is). The response carries
    /// the cluster version.
    pub fn downgrade(
        &self,
        action: DowngradeAction,
        version: impl Into<String>,
        callback: impl FnOnce(Result<DowngradeResponse, EtcdError>) + 'static,
    ) {
        let req = DowngradeRequest { action: action as i32, version: version.into() };
        self.call::<maintenance_rpc::Downgrade>("downgrade", &req, callback);
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

    /// Streams a snapshot of the connected member's backend to `callback`, chunk by chunk,
    /// so that a caller can write it to a file without holding it in memory. Chunks arrive
    /// in order; the last has `remaining_bytes == 0` and ends with the database's 32-byte
    /// SHA-256, which etcd sends after the data and `etcdutl snapshot restore` checks: write
    /// every blob as it comes and the file is what `etcdctl snapshot save` writes. Otherwise
    /// the callback's last call is one error. There is no deadline (a large database takes
    /// a while); the returned [`Pending`] abandons it.
    pub fn snapshot(
        &self,
        mut callback: impl FnMut(Result<SnapshotResponse, EtcdError>) + 'static,
    ) -> Pending {
        // The chunk with remaining_bytes 0 is held until the stream ends, gathering what
        // follows it (the checksum), so that the callback sees it last and whole.
        let mut last: Option<(SnapshotResponse, BytesMut)> = None;
        let mut failed = false;
        let sink = Box::new(move |item: Result<Option<Bytes>, EtcdError>| {
            if failed {
                return;
            }
            let chunk = match item {
                Ok(Some(bytes)) => SnapshotResponse::decode(bytes).map_err(|e| {
                    EtcdError::new(
                        Code::Internal,
                        format!("cannot decode a chunk: {e}"),
                        "snapshot",
                    )
                }),
                Ok(None) => match last.take() {
                    Some((mut chunk, blob)) => {
                        chunk.blob = blob.freeze();
                        return callback(Ok(chunk));
                    }
                    None => Err(EtcdError::new(
                        Code::Internal,
                        "the snapshot stream ended before its last chunk",
                        "snapshot",
                    )),
                },
                Err(e) => Err(e),
            };
            match chunk {
                Ok(chunk) => match &mut last {
                    Some((_, blob)) => blob.extend_from_slice(&chunk.blob),
                    None if chunk.remaining_bytes == 0 => {
                        let blob = BytesMut::from(&chunk.blob[..]);
                        last = Some((chunk, blob));
                    }
                    None => callback(Ok(chunk)),
                },
                Err(e) => {
                    failed = true;
                    callback(Err(e));
                }
            }
        });
        let body = codec::encode(&SnapshotRequest {});
        let path = <maintenance_rpc::Snapshot as Rpc>::PATH;
        let sink = StreamCallback::Sink(sink);
        let key = self.with_core(|c| c.start_sink(path, "snapshot", body, sink));
        Pending::new(self, Some(key))
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
