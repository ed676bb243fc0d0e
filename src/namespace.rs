//! Namespaces: the key mapping behind [`Client::namespaced`](crate::Client::namespaced), with
//! the rules of Go's `clientv3/namespace` package (`namespace.NewKV`, `NewWatcher`,
//! `NewLease`), so that a key written through an evetcd namespace is the key Go's namespaced
//! client reads, and the reverse.
//!
//! Everything here is pure: requests get the prefix on the way in, responses lose it on the
//! way out. The operations in `ops/` call in here only when their client has a namespace, so
//! a client without one pays nothing.
//!
//! ```text
//!   user key k, range end e            request                       response key K
//!   ─────────────────────────          ─────────────────────────     ──────────────
//!   k                                  pfx+k                         K - pfx
//!   e empty (one key)                  (empty)
//!   e = "\0" (from key, or a prefix    the prefix's own end (pfx
//!     with no end of its own)            incremented; all-0xFF: "\0")
//!   any other e                        pfx+e
//! ```
//!
//! A KV request with an empty key is refused (Go's `ErrEmptyKey`) unless it is a prefix or
//! from-key one, whose empty key became `"\0"` before it got here: under a namespace an empty
//! key would otherwise name the prefix itself, which etcd would have refused.

use crate::error::EtcdError;
use crate::ops::kv::prefix_range_end;
use crate::pb::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchResponse,
};
use crate::pb::mvccpb::KeyValue;
use crate::pb::v3electionpb::{CampaignResponse, LeaderKey, LeaderResponse};
use crate::pb::v3lockpb::LockResponse;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;

/// etcd's message for a request without a key (`rpctypes.ErrEmptyKey`), which Go's
/// namespaced KV returns before sending anything.
pub(crate) const EMPTY_KEY: &str = "etcdserver: key is not provided";

/// A key prefix every key of a namespaced view lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Namespace {
    prefix: Bytes,
}

/// `Err(INVALID_ARGUMENT "etcdserver: key is not provided")` when `key` is empty.
fn require_key(key: &[u8], operation: &'static str) -> Result<(), EtcdError> {
    match key.is_empty() {
        true => Err(EtcdError::invalid(EMPTY_KEY, operation)),
        false => Ok(()),
    }
}

/// `a` followed by `b`, in one allocation.
fn concat(a: &[u8], b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out.freeze()
}

/// Go's `prefixInterval`: the key and range end of `[key, end)` under `pfx`. An empty end
/// stays empty (one key); `"\0"` (to the end of the keyspace) becomes the end of the prefix
/// itself, so that a from-key range stops where the namespace does (`"\0"` again for an
/// empty or all-0xFF prefix, which has no end); any other end gets the prefix.
///
/// One difference from Go, on purpose: Go increments the prefix's last byte with a carry and
/// keeps the bytes that wrapped to zero, so for a prefix ending in 0xFF (`"a\xff"`) its end
/// is `"b\x00"`, which takes in the key `"b"`, outside the namespace (Go then slices a
/// prefix off a key too short for it, and panics). Here the end is etcd's prefix end
/// ([`prefix_range_end`]: trailing 0xFF dropped, then incremented: `"b"`), the same as Go's
/// for every other prefix.
pub(crate) fn prefix_interval(pfx: &[u8], key: &[u8], end: &[u8]) -> (Bytes, Bytes) {
    let key = concat(pfx, key);
    let end = match end {
        [] => Bytes::new(),
        [0] => prefix_range_end(pfx),
        end => concat(pfx, end),
    };
    (key, end)
}

impl Namespace {
    /// The namespace of keys starting with `prefix`.
    pub(crate) fn new(prefix: Bytes) -> Namespace {
        Namespace { prefix }
    }

    /// The namespace `inner` inside this one: the prefixes joined, as Go's namespaced KV
    /// wrapped in another gives.
    pub(crate) fn nest(&self, inner: &[u8]) -> Namespace {
        Namespace { prefix: concat(&self.prefix, inner) }
    }

    /// `key` under the namespace.
    pub(crate) fn key(&self, key: &[u8]) -> Bytes {
        concat(&self.prefix, key)
    }

    /// `[key, end)` under the namespace (see [`prefix_interval`]).
    fn interval(&self, key: &mut Bytes, end: &mut Bytes) {
        (*key, *end) = prefix_interval(&self.prefix, key, end);
    }

    /// `key` without the prefix (no copy: a slice of the same buffer). A key that does not
    /// start with the prefix is left as it is (etcd never returns one for a range under the
    /// prefix).
    pub(crate) fn strip(&self, key: &mut Bytes) {
        if key.starts_with(&self.prefix) {
            *key = key.slice(self.prefix.len()..);
        }
    }

    fn strip_kv(&self, kv: &mut KeyValue) {
        self.strip(&mut kv.key);
    }

    // Requests.

    /// A get's request under the namespace; an empty key (not a prefix or from-key read,
    /// whose empty key is `"\0"` by now) is refused.
    pub(crate) fn range(&self, req: &mut RangeRequest, op: &'static str) -> Result<(), EtcdError> {
        require_key(&req.key, op)?;
        self.interval(&mut req.key, &mut req.range_end);
        Ok(())
    }

    /// A put's request under the namespace; an empty key is refused.
    pub(crate) fn put(&self, req: &mut PutRequest, op: &'static str) -> Result<(), EtcdError> {
        require_key(&req.key, op)?;
        req.key = self.key(&req.key);
        Ok(())
    }

    /// A delete's request under the namespace; an empty key (not a prefix or from-key
    /// delete) is refused.
    pub(crate) fn delete_range(
        &self,
        req: &mut DeleteRangeRequest,
        op: &'static str,
    ) -> Result<(), EtcdError> {
        require_key(&req.key, op)?;
        self.interval(&mut req.key, &mut req.range_end);
        Ok(())
    }

    /// A transaction under the namespace: every compare (key, and range end when it has
    /// one), every operation, nested transactions too. An operation with an empty key, at
    /// any depth, refuses the whole transaction (etcd refuses one without a namespace);
    /// compares are taken as they are, as Go does.
    pub(crate) fn txn(&self, req: &mut TxnRequest, op: &'static str) -> Result<(), EtcdError> {
        if has_empty_key(req) {
            return Err(EtcdError::invalid(EMPTY_KEY, op));
        }
        self.txn_unchecked(req);
        Ok(())
    }

    fn txn_unchecked(&self, req: &mut TxnRequest) {
        for cmp in &mut req.compare {
            self.compare(cmp);
        }
        for op in req.success.iter_mut().chain(req.failure.iter_mut()) {
            self.request_op(op);
        }
    }

    fn compare(&self, cmp: &mut Compare) {
        match cmp.range_end.is_empty() {
            true => cmp.key = self.key(&cmp.key),
            false => self.interval(&mut cmp.key, &mut cmp.range_end),
        }
    }

    fn request_op(&self, op: &mut RequestOp) {
        use request_op::Request;
        match &mut op.request {
            Some(Request::RequestRange(r)) => self.interval(&mut r.key, &mut r.range_end),
            Some(Request::RequestPut(r)) => r.key = self.key(&r.key),
            Some(Request::RequestDeleteRange(r)) => self.interval(&mut r.key, &mut r.range_end),
            Some(Request::RequestTxn(t)) => self.txn_unchecked(t),
            None => {}
        }
    }

    /// A watch's create request under the namespace. `key_was_empty`: the caller's key was
    /// empty (a prefix or from-key watch turned it into `"\0"`): Go's namespaced watcher
    /// prefixes the caller's key, not the `"\0"`, so such a watch starts at the prefix
    /// itself (a namespaced get starts just after it). Go does not refuse an empty key
    /// here: a plain watch of `""` watches the key that is the prefix.
    pub(crate) fn watch(&self, req: &mut WatchCreateRequest, key_was_empty: bool) {
        if key_was_empty {
            req.key = Bytes::new();
        }
        self.interval(&mut req.key, &mut req.range_end);
    }

    /// An unlock's key under the namespace; an empty key is refused (etcd refuses one).
    pub(crate) fn unlock_key(&self, key: &[u8], op: &'static str) -> Result<Bytes, EtcdError> {
        require_key(key, op)?;
        Ok(self.key(key))
    }

    /// A leader key (from a namespaced campaign) as the server knows it: its election name
    /// and key get the prefix.
    pub(crate) fn leader_key(&self, leader: &mut LeaderKey) {
        leader.name = self.key(&leader.name);
        leader.key = self.key(&leader.key);
    }

    // Responses: the prefix comes off every key, as Go's `unprefix*Response`.

    pub(crate) fn strip_range(&self, resp: &mut RangeResponse) {
        resp.kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    pub(crate) fn strip_put(&self, resp: &mut PutResponse) {
        resp.prev_kv.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    pub(crate) fn strip_delete(&self, resp: &mut DeleteRangeResponse) {
        resp.prev_kvs.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    /// Every operation's result, nested transactions' at every depth.
    pub(crate) fn strip_txn(&self, resp: &mut TxnResponse) {
        use response_op::Response;
        for r in &mut resp.responses {
            match &mut r.response {
                Some(Response::ResponseRange(r)) => self.strip_range(r),
                Some(Response::ResponsePut(r)) => self.strip_put(r),
                Some(Response::ResponseDeleteRange(r)) => self.strip_delete(r),
                Some(Response::ResponseTxn(t)) => self.strip_txn(t),
                None => {}
            }
        }
    }

    /// Each event's key and previous key.
    pub(crate) fn strip_watch(&self, resp: &mut WatchResponse) {
        for ev in &mut resp.events {
            ev.kv.iter_mut().chain(ev.prev_kv.iter_mut()).for_each(|kv| self.strip_kv(kv));
        }
    }

    /// The lease's keys under the namespace, without the prefix; the others are left out
    /// (Go's `leasePrefix.TimeToLive`).
    pub(crate) fn strip_lease_keys(&self, resp: &mut LeaseTimeToLiveResponse) {
        resp.keys.retain(|k| k.starts_with(&self.prefix));
        resp.keys.iter_mut().for_each(|k| self.strip(k));
    }

    pub(crate) fn strip_lock(&self, resp: &mut LockResponse) {
        self.strip(&mut resp.key);
    }

    pub(crate) fn strip_campaign(&self, resp: &mut CampaignResponse) {
        if let Some(leader) = &mut resp.leader {
            self.strip(&mut leader.name);
            self.strip(&mut leader.key);
        }
    }

    pub(crate) fn strip_leader(&self, resp: &mut LeaderResponse) {
        resp.kv.iter_mut().for_each(|kv| self.strip_kv(kv));
    }

    /// `callback`, given responses with the prefix taken off by `strip`.
    pub(crate) fn unprefixing<T: 'static>(
        self: &Rc<Self>,
        strip: fn(&Namespace, &mut T),
        callback: impl FnOnce(Result<T, EtcdError>) + 'static,
    ) -> impl FnOnce(Result<T, EtcdError>) + 'static {
        let ns = self.clone();
        move |r| {
            callback(r.map(|mut t| {
                strip(&ns, &mut t);
                t
            }))
        }
    }

    /// [`unprefixing`](Self::unprefixing) for a stream's callback: every item on its way to
    /// the caller, after a re-opened stream too.
    pub(crate) fn unprefixing_each<T: 'static>(
        self: &Rc<Self>,
        strip: fn(&Namespace, &mut T),
        mut callback: impl FnMut(Result<T, EtcdError>) + 'static,
    ) -> impl FnMut(Result<T, EtcdError>) + 'static {
        let ns = self.clone();
        move |r| {
            callback(r.map(|mut t| {
                strip(&ns, &mut t);
                t
            }))
        }
    }
}

/// Whether an operation of `txn` (nested ones included) has an empty key.
fn has_empty_key(txn: &TxnRequest) -> bool {
    use request_op::Request;
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(Request::RequestRange(r)) => r.key.is_empty(),
        Some(Request::RequestPut(r)) => r.key.is_empty(),
        Some(Request::RequestDeleteRange(r)) => r.key.is_empty(),
        Some(Request::RequestTxn(t)) => has_empty_key(t),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::ops::kv::{DeleteOptions, GetOptions, PutOptions};
    use crate::ops::txn::{Compare, CompareOp, Txn, TxnOp};
    use crate::ops::watch::WatchOptions;
    use crate::pb::etcdserverpb::ResponseOp;
    use crate::pb::mvccpb::Event;

    fn ns(p: &'static [u8]) -> Namespace {
        Namespace::new(Bytes::from_static(p))
    }

    fn pair(k: Bytes, e: Bytes) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), e.to_vec())
    }

    fn kv(key: &'static [u8]) -> KeyValue {
        KeyValue { key: Bytes::from_static(key), ..Default::default() }
    }

    #[test]
    fn prefix_interval_matches_gos_vectors() {
        // Go's namespace/util_test.go, TestPrefixInterval.
        let v = |pfx: &[u8], key: &[u8], end: &[u8]| pair_of(prefix_interval(pfx, key, end));
        fn pair_of((k, e): (Bytes, Bytes)) -> (Vec<u8>, Vec<u8>) {
            (k.to_vec(), e.to_vec())
        }
        assert_eq!(v(b"pfx/", b"a", b""), (b"pfx/a".to_vec(), vec![]));
        assert_eq!(v(b"pfx/", b"abc", b"def"), (b"pfx/abc".to_vec(), b"pfx/def".to_vec()));
        assert_eq!(v(b"pfx/", b"abc", b"\0"), (b"pfx/abc".to_vec(), b"pfx0".to_vec()));
        assert_eq!(v(b"\xff\xff", b"abc", b"\0"), (b"\xff\xffabc".to_vec(), b"\0".to_vec()));
        // More: an empty prefix has no end either; only a lone "\0" is the keyspace's edge.
        assert_eq!(v(b"", b"k", b"\0"), (b"k".to_vec(), b"\0".to_vec()));
        assert_eq!(v(b"p", b"k", b"\0\0"), (b"pk".to_vec(), b"p\0\0".to_vec()));
        assert_eq!(v(b"p", b"", b""), (b"p".to_vec(), vec![]));
        // Where Go would give "b\x00" (taking in the key "b"), the namespace's real end.
        assert_eq!(v(b"a\xff", b"k", b"\0"), (b"a\xffk".to_vec(), b"b".to_vec()));
        assert_eq!(v(b"a\xfe\xff", b"", b"\0"), (b"a\xfe\xff".to_vec(), b"a\xff".to_vec()));
    }

    #[test]
    fn gets_and_deletes_follow_gos_ranges() {
        let n = ns(b"ns/");
        let get = |key: &'static [u8], o: GetOptions| {
            let mut r = o.request(Bytes::from_static(key));
            n.range(&mut r, "get").map(|()| pair(r.key, r.range_end))
        };
        assert_eq!(get(b"k", GetOptions::new()), Ok((b"ns/k".to_vec(), vec![])));
        assert_eq!(
            get(b"k", GetOptions::new().prefix(true)),
            Ok((b"ns/k".to_vec(), b"ns/l".to_vec()))
        );
        // An empty prefix is every key of the namespace: from "\0" (Go's too), to its end.
        assert_eq!(
            get(b"", GetOptions::new().prefix(true)),
            Ok((b"ns/\0".to_vec(), b"ns0".to_vec()))
        );
        assert_eq!(
            get(b"", GetOptions::new().from_key(true)),
            Ok((b"ns/\0".to_vec(), b"ns0".to_vec()))
        );
        assert_eq!(
            get(b"m", GetOptions::new().from_key(true)),
            Ok((b"ns/m".to_vec(), b"ns0".to_vec()))
        );
        assert_eq!(
            get(b"a", GetOptions::new().range_end("c")),
            Ok((b"ns/a".to_vec(), b"ns/c".to_vec()))
        );
        assert_eq!(
            get(b"a", GetOptions::new().range_end("\0")),
            Ok((b"ns/a".to_vec(), b"ns0".to_vec()))
        );
        // A prefix with no end of its own ("\xff") ends where the namespace does.
        assert_eq!(
            get(b"\xff", GetOptions::new().prefix(true)),
            Ok((b"ns/\xff".to_vec(), b"ns0".to_vec()))
        );
        let refused = get(b"", GetOptions::new()).expect_err("empty key");
        assert_eq!(
            (refused.code(), refused.message(), refused.operation()),
            (Code::InvalidArgument, EMPTY_KEY, "get")
        );
        assert!(!refused.is_retryable());
        // An explicit range end does not make an empty key a prefix read (nor in Go).
        assert!(get(b"", GetOptions::new().range_end("z")).is_err());

        let del = |key: &'static [u8], o: DeleteOptions| {
            let mut r = o.request(Bytes::from_static(key));
            n.delete_range(&mut r, "delete").map(|()| pair(r.key, r.range_end))
        };
        assert_eq!(del(b"k", DeleteOptions::new()), Ok((b"ns/k".to_vec(), vec![])));
        assert_eq!(
            del(b"", DeleteOptions::new().prefix(true)),
            Ok((b"ns/\0".to_vec(), b"ns0".to_vec()))
        );
        assert_eq!(del(b"", DeleteOptions::new()).map_err(|e| e.operation()), Err("delete"));

        let mut put = PutOptions::new().request("k".into(), "v".into());
        n.put(&mut put, "put").expect("a key");
        assert_eq!((&put.key[..], &put.value[..]), (&b"ns/k"[..], &b"v"[..]));
        let mut empty = PutOptions::new().request(Bytes::new(), "v".into());
        assert_eq!(
            n.put(&mut empty, "put").map_err(|e| e.message().to_string()),
            Err(EMPTY_KEY.into())
        );
    }

    #[test]
    fn an_all_0xff_namespace_reads_to_the_end_of_the_keyspace() {
        let n = ns(b"\xff");
        let mut r = GetOptions::new().prefix(true).request(Bytes::new());
        n.range(&mut r, "get").unwrap();
        assert_eq!(pair(r.key, r.range_end), (b"\xff\0".to_vec(), b"\0".to_vec()));
    }

    #[test]
    fn watches_prefix_the_callers_key_as_go_does() {
        let n = ns(b"ns/");
        let w = |key: &'static [u8], o: WatchOptions| {
            let mut r = o.request(Bytes::from_static(key));
            n.watch(&mut r, key.is_empty());
            pair(r.key, r.range_end)
        };
        assert_eq!(w(b"k", WatchOptions::new()), (b"ns/k".to_vec(), vec![]));
        assert_eq!(w(b"k", WatchOptions::new().prefix(true)), (b"ns/k".to_vec(), b"ns/l".to_vec()));
        // Go's watcher starts at the prefix itself for an empty prefix or from-key watch.
        assert_eq!(w(b"", WatchOptions::new().prefix(true)), (b"ns/".to_vec(), b"ns0".to_vec()));
        assert_eq!(w(b"", WatchOptions::new().from_key(true)), (b"ns/".to_vec(), b"ns0".to_vec()));
        assert_eq!(w(b"", WatchOptions::new()), (b"ns/".to_vec(), vec![]));
        assert_eq!(
            w(b"a", WatchOptions::new().range_end("b")),
            (b"ns/a".to_vec(), b"ns/b".to_vec())
        );
    }

    #[test]
    fn nesting_joins_the_prefixes() {
        let n = ns(b"a/").nest(b"b/");
        assert_eq!(&n.prefix[..], b"a/b/");
        let mut r = GetOptions::new().from_key(true).request("k".into());
        n.range(&mut r, "get").unwrap();
        assert_eq!(pair(r.key, r.range_end), (b"a/b/k".to_vec(), b"a/b0".to_vec()));
    }

    #[test]
    fn txns_are_prefixed_at_every_depth() {
        let n = ns(b"p/");
        let inner = Txn::new()
            .when([Compare::value("c", CompareOp::Equal, "v").with_prefix()])
            .and_then([TxnOp::put("x", "1", PutOptions::new())])
            .or_else([TxnOp::delete("", DeleteOptions::new().from_key(true))]);
        let txn = Txn::new()
            .when([
                Compare::version("k", CompareOp::Equal, 0),
                Compare::mod_revision("a", CompareOp::Less, 9).with_range_end("b"),
                Compare::lease("f", CompareOp::Greater, 0).with_range_end("\0"),
            ])
            .and_then([TxnOp::get("g", GetOptions::new().prefix(true)), TxnOp::txn(inner)])
            .or_else([TxnOp::put("e", "v", PutOptions::new())]);
        let mut req = txn.0;
        n.txn(&mut req, "txn").expect("no empty key");
        let cmps: Vec<_> =
            req.compare.iter().map(|c| pair(c.key.clone(), c.range_end.clone())).collect();
        assert_eq!(
            cmps,
            [
                (b"p/k".to_vec(), vec![]),
                (b"p/a".to_vec(), b"p/b".to_vec()),
                (b"p/f".to_vec(), b"p0".to_vec()),
            ]
        );
        use request_op::Request;
        let Some(Request::RequestRange(g)) = &req.success[0].request else { panic!() };
        assert_eq!(pair(g.key.clone(), g.range_end.clone()), (b"p/g".to_vec(), b"p/h".to_vec()));
        let Some(Request::RequestTxn(t)) = &req.success[1].request else { panic!() };
        assert_eq!(
            pair(t.compare[0].key.clone(), t.compare[0].range_end.clone()),
            (b"p/c".to_vec(), b"p/d".to_vec())
        );
        let Some(Request::RequestPut(x)) = &t.success[0].request else { panic!() };
        assert_eq!(&x.key[..], b"p/x");
        let Some(Request::RequestDeleteRange(d)) = &t.failure[0].request else { panic!() };
        assert_eq!(pair(d.key.clone(), d.range_end.clone()), (b"p/\0".to_vec(), b"p0".to_vec()));
        let Some(Request::RequestPut(e)) = &req.failure[0].request else { panic!() };
        assert_eq!(&e.key[..], b"p/e");
    }

    #[test]
    fn a_txn_with_an_empty_key_anywhere_is_refused() {
        let n = ns(b"p/");
        let deep = Txn::new()
            .or_else([TxnOp::txn(Txn::new().and_then([TxnOp::get("", GetOptions::new())]))]);
        let mut req = Txn::new().and_then([TxnOp::txn(deep)]).0;
        let before = req.clone();
        let e = n.txn(&mut req, "txn").expect_err("empty key three levels down");
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, EMPTY_KEY));
        assert_eq!(req, before, "nothing prefixed");
        for op in [
            TxnOp::put("", "v", PutOptions::new()),
            TxnOp::delete("", DeleteOptions::new()),
            TxnOp::get("", GetOptions::new().range_end("z")),
        ] {
            assert!(n.txn(&mut Txn::new().or_else([op]).0, "txn").is_err());
        }
        // Prefix and from-key ops and compares on "" are fine, as in Go.
        let fine = Txn::new()
            .when([Compare::version("", CompareOp::Equal, 0)])
            .and_then([TxnOp::get("", GetOptions::new().prefix(true))])
            .or_else([TxnOp::delete("", DeleteOptions::new().from_key(true))]);
        let mut req = fine.0;
        n.txn(&mut req, "txn").unwrap();
        assert_eq!(&req.compare[0].key[..], b"p/");
    }

    #[test]
    fn responses_lose_the_prefix_at_every_depth() {
        let n = ns(b"p/");
        let range = RangeResponse { kvs: vec![kv(b"p/a"), kv(b"p/b")], ..Default::default() };
        let put = PutResponse { prev_kv: Some(kv(b"p/c")), ..Default::default() };
        let del = DeleteRangeResponse { prev_kvs: vec![kv(b"p/d")], ..Default::default() };
        let op = |r: response_op::Response| ResponseOp { response: Some(r) };
        let inner = TxnResponse {
            responses: vec![op(response_op::Response::ResponsePut(put.clone()))],
            ..Default::default()
        };
        let mut txn = TxnResponse {
            responses: vec![
                op(response_op::Response::ResponseRange(range.clone())),
                op(response_op::Response::ResponseDeleteRange(del.clone())),
                op(response_op::Response::ResponseTxn(inner)),
                ResponseOp { response: None },
            ],
            ..Default::default()
        };
        n.strip_txn(&mut txn);
        use response_op::Response;
        let Some(Response::ResponseRange(r)) = &txn.responses[0].response else { panic!() };
        let keys: Vec<&[u8]> = r.kvs.iter().map(|kv| &kv.key[..]).collect();
        assert_eq!(keys, [&b"a"[..], b"b"]);
        let Some(Response::ResponseDeleteRange(d)) = &txn.responses[1].response else { panic!() };
        assert_eq!(&d.prev_kvs[0].key[..], b"d");
        let Some(Response::ResponseTxn(t)) = &txn.responses[2].response else { panic!() };
        let Some(Response::ResponsePut(p)) = &t.responses[0].response else { panic!() };
        assert_eq!(&p.prev_kv.as_ref().unwrap().key[..], b"c");
    }

    #[test]
    fn stripping_slices_without_copying_and_keeps_foreign_keys() {
        let n = ns(b"p/");
        let mut k = Bytes::from_static(b"p/key");
        let start = k[2..].as_ptr();
        n.strip(&mut k);
        assert_eq!((&k[..], k.as_ptr()), (&b"key"[..], start));
        let mut other = Bytes::from_static(b"q/key");
        n.strip(&mut other);
        assert_eq!(&other[..], b"q/key");
    }

    #[test]
    fn watch_events_lose_the_prefix_on_both_kvs() {
        let n = ns(b"p/");
        let mut resp = WatchResponse {
            events: vec![Event {
                kv: Some(kv(b"p/a")),
                prev_kv: Some(kv(b"p/a")),
                ..Default::default()
            }],
            ..Default::default()
        };
        n.strip_watch(&mut resp);
        let ev = &resp.events[0];
        assert_eq!(
            (&ev.kv.as_ref().unwrap().key[..], &ev.prev_kv.as_ref().unwrap().key[..]),
            (&b"a"[..], &b"a"[..])
        );
    }

    #[test]
    fn lease_keys_are_filtered_then_stripped() {
        let n = ns(b"p/");
        let mut resp = LeaseTimeToLiveResponse {
            keys: ["p/a", "q/b", "p", "p/", "p/c"].map(Bytes::from).to_vec(),
            ..Default::default()
        };
        n.strip_lease_keys(&mut resp);
        assert_eq!(resp.keys, ["a", "", "c"].map(Bytes::from).to_vec());
    }

    #[test]
    fn lock_and_election_keys_go_in_and_out() {
        let n = ns(b"p/");
        let mut lock = LockResponse { key: "p/l/694d".into(), ..Default::default() };
        n.strip_lock(&mut lock);
        assert_eq!(&lock.key[..], b"l/694d");
        assert_eq!(n.unlock_key(b"l/694d", "unlock").unwrap(), &b"p/l/694d"[..]);
        assert!(n.unlock_key(b"", "unlock").is_err());

        let mut leader = LeaderKey { name: "e".into(), key: "e/1".into(), rev: 3, lease: 1 };
        n.leader_key(&mut leader);
        assert_eq!((&leader.name[..], &leader.key[..]), (&b"p/e"[..], &b"p/e/1"[..]));
        let mut campaign = CampaignResponse { leader: Some(leader), ..Default::default() };
        n.strip_campaign(&mut campaign);
        let l = campaign.leader.unwrap();
        assert_eq!((&l.name[..], &l.key[..], l.rev, l.lease), (&b"e"[..], &b"e/1"[..], 3, 1));
        let mut resp = LeaderResponse { kv: Some(kv(b"p/e/1")), ..Default::default() };
        n.strip_leader(&mut resp);
        assert_eq!(&resp.kv.unwrap().key[..], b"e/1");
    }
}
