//! Lock (`v3lockpb`): a distributed lock held as long as a lease lives.

use crate::client::Client;
use crate::error::EtcdError;
use crate::handle::Pending;
use crate::namespace::Namespace;
use crate::pb::v3lockpb::{lock_rpc, LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use bytes::Bytes;

impl Client {
    /// Acquires lock `name` with lease `lease`, waiting as long as it takes (no deadline).
    /// The response's `key` is the lock's ownership key, to pass to [`unlock`](Client::unlock);
    /// the lock is held while the lease lives, so keep it alive.
    ///
    /// Lease 0 is rejected with `INVALID_ARGUMENT` (etcd would otherwise create a lease
    /// nobody keeps alive). Errors are never retryable: the server may still acquire the
    /// lock for a call that failed, so retry with a fresh lease. The returned [`Pending`]
    /// abandons the wait.
    pub fn lock(
        &self,
        name: impl Into<Bytes>,
        lease: i64,
        callback: impl FnOnce(Result<LockResponse, EtcdError>) + 'static,
    ) -> Pending {
        if lease <= 0 {
            let err = EtcdError::invalid("lock needs a lease id > 0", "lock").not_retryable();
            self.fail(err, callback);
            return Pending::new(self, None);
        }
        let name = name.into();
        let Some(ns) = self.namespace() else {
            let req = LockRequest { name, lease };
            return self.call_pending::<lock_rpc::Lock>("lock", &req, callback);
        };
        let req = LockRequest { name: ns.key(&name), lease };
        let callback = ns.unprefixing(Namespace::strip_lock, callback);
        self.call_pending::<lock_rpc::Lock>("lock", &req, callback)
    }

    /// Releases the lock whose ownership key is `key` (from [`lock`](Client::lock); through a
    /// [namespaced](Client::namespaced) view, the key that view's `lock` returned).
    pub fn unlock(
        &self,
        key: impl Into<Bytes>,
        callback: impl FnOnce(Result<UnlockResponse, EtcdError>) + 'static,
    ) {
        let mut key = key.into();
        if let Some(ns) = self.namespace() {
            match ns.unlock_key(&key, "unlock") {
                Ok(prefixed) => key = prefixed,
                Err(e) => return self.fail(e, callback),
            }
        }
        self.call::<lock_rpc::Unlock>("unlock", &UnlockRequest { key }, callback);
    }
}
