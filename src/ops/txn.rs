//! Txn: compares, then one branch of operations, applied atomically at one revision.

use crate::client::Client;
use crate::error::EtcdError;
use crate::namespace::Namespace;
use crate::ops::kv::{prefix_range_end, DeleteOptions, GetOptions, PutOptions};
use crate::pb::etcdserverpb::{self as pb, compare, kv_rpc, request_op};
use bytes::Bytes;

pub use pb::compare::CompareResult as CompareOp;
pub use pb::response_op::Response as TxnOpResponse;

/// One condition of a [`Txn`]: a key's value, version, create or mod revision, or lease,
/// compared with `=`, `!=`, `<` or `>`. A missing key has version, revisions and lease 0
/// and an empty value, so `Compare::version(key, Equal, 0)` means "key absent".
#[derive(Clone, Debug, PartialEq)]
pub struct Compare(pub(crate) pb::Compare);

impl Compare {
    fn new(
        key: Bytes,
        op: CompareOp,
        target: compare::CompareTarget,
        u: compare::TargetUnion,
    ) -> Self {
        Compare(pb::Compare {
            result: op as i32,
            target: target as i32,
            key,
            range_end: Bytes::new(),
            target_union: Some(u),
        })
    }

    /// Compares the key's value with `value`.
    pub fn value(key: impl Into<Bytes>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        let u = compare::TargetUnion::Value(value.into());
        Self::new(key.into(), op, compare::CompareTarget::Value, u)
    }

    /// Compares the key's version (number of writes since creation; 0 when absent).
    pub fn version(key: impl Into<Bytes>, op: CompareOp, version: i64) -> Self {
        let u = compare::TargetUnion::Version(version);
        Self::new(key.into(), op, compare::CompareTarget::Version, u)
    }

    /// Compares the revision at which the key was created.
    pub fn create_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        let u = compare::TargetUnion::CreateRevision(revision);
        Self::new(key.into(), op, compare::CompareTarget::Create, u)
    }

    /// Compares the revision of the key's last modification.
    pub fn mod_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        let u = compare::TargetUnion::ModRevision(revision);
        Self::new(key.into(), op, compare::CompareTarget::Mod, u)
    }

    /// Compares the key's lease id (0 when none).
    pub fn lease(key: impl Into<Bytes>, op: CompareOp, lease: i64) -> Self {
        let u = compare::TargetUnion::Lease(lease);
        Self::new(key.into(), op, compare::CompareTarget::Lease, u)
    }

    /// Applies the comparison to every key in `[key, range_end)`: it holds when it holds
    /// for each of them.
    pub fn with_range_end(mut self, range_end: impl Into<Bytes>) -> Self {
        self.0.range_end = range_end.into();
        self
    }

    /// Applies the comparison to every key with the compare's key as prefix.
    pub fn with_prefix(mut self) -> Self {
        self.0.range_end = prefix_range_end(&self.0.key);
        if self.0.key.is_empty() {
            self.0.key = Bytes::from_static(b"\0");
        }
        self
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq)]
pub struct TxnOp(pub(crate) pb::RequestOp);

impl TxnOp {
    fn of(r: request_op::Request) -> Self {
        TxnOp(pb::RequestOp { request: Some(r) })
    }

    /// A get; its result is a [`TxnOpResponse::ResponseRange`].
    pub fn get(key: impl Into<Bytes>, options: GetOptions) -> Self {
        Self::of(request_op::Request::RequestRange(options.request(key.into())))
    }

    /// A put; its result is a [`TxnOpResponse::ResponsePut`].
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>, options: PutOptions) -> Self {
        Self::of(request_op::Request::RequestPut(options.request(key.into(), value.into())))
    }

    /// A delete; its result is a [`TxnOpResponse::ResponseDeleteRange`].
    pub fn delete(key: impl Into<Bytes>, options: DeleteOptions) -> Self {
        Self::of(request_op::Request::RequestDeleteRange(options.request(key.into())))
    }

    /// A nested transaction; its result is a [`TxnOpResponse::ResponseTxn`].
    pub fn txn(txn: Txn) -> Self {
        Self::of(request_op::Request::RequestTxn(txn.0))
    }
}

/// A transaction: if every compare holds, the `and_then` operations run, otherwise the
/// `or_else` ones. The response says which (`succeeded`) and carries one result per op.
///
/// ```no_run
/// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
/// use evetcd::{Compare, CompareOp, PutOptions, Txn, TxnOp};
/// let txn = Txn::new()
///     .when([Compare::version("lock", CompareOp::Equal, 0)])
///     .and_then([TxnOp::put("lock", "me", PutOptions::new())])
///     .or_else([TxnOp::get("lock", Default::default())]);
/// client.txn(txn, |res| println!("acquired: {}", res.map(|r| r.succeeded).unwrap_or(false)));
/// client.run();
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Txn(pub(crate) pb::TxnRequest);

impl Txn {
    /// An empty transaction (no compares: the success branch runs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds compares; all must hold for the success branch.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.0.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }

    /// Adds operations to the success branch.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.success.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// Adds operations to the failure branch.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.failure.extend(ops.into_iter().map(|o| o.0));
        self
    }
}

impl Client {
    /// Runs `txn` atomically. etcd allows at most 128 operations per transaction (its
    /// `--max-txn-ops`) and no key written twice.
    pub fn txn(
        &self,
        txn: Txn,
        callback: impl FnOnce(Result<pb::TxnResponse, EtcdError>) + 'static,
    ) {
        let Some(ns) = self.namespace() else {
            return self.call::<kv_rpc::Txn>("txn", &txn.0, callback);
        };
        let mut req = txn.0;
        match ns.txn(&mut req, "txn") {
            Ok(()) => {
                let callback = ns.unprefixing(Namespace::strip_txn, callback);
                self.call::<kv_rpc::Txn>("txn", &req, callback);
            }
            Err(e) => self.fail(e, callback),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_carry_target_and_union() {
        let c = Compare::mod_revision("k", CompareOp::Less, 5).0;
        assert_eq!(c.target, compare::CompareTarget::Mod as i32);
        assert_eq!(c.result, CompareOp::Less as i32);
        assert_eq!(c.target_union, Some(compare::TargetUnion::ModRevision(5)));
        let c = Compare::value("", CompareOp::NotEqual, "x").with_prefix().0;
        assert_eq!((&c.key[..], &c.range_end[..]), (&b"\0"[..], &b"\0"[..]));
        let c = Compare::lease("a", CompareOp::Greater, 0).with_range_end("b").0;
        assert_eq!(&c.range_end[..], b"b");
    }

    #[test]
    fn branches_nest() {
        let inner = Txn::new().and_then([TxnOp::delete("x", DeleteOptions::new().prefix(true))]);
        let t = Txn::new()
            .when([Compare::version("k", CompareOp::Equal, 0)])
            .and_then([TxnOp::txn(inner.clone())])
            .or_else([TxnOp::get("k", GetOptions::new())]);
        assert_eq!(t.0.compare.len(), 1);
        assert_eq!(t.0.success[0].request, Some(request_op::Request::RequestTxn(inner.0)));
        assert!(matches!(t.0.failure[0].request, Some(request_op::Request::RequestRange(_))));
    }
}
