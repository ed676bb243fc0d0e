//! KV: get, put, delete, compact, and the key-range rules they share.

use crate::client::Client;
use crate::error::EtcdError;
use crate::namespace::Namespace;
use crate::pb::etcdserverpb::{self as pb, kv_rpc};
use bytes::Bytes;

pub use pb::range_request::{SortOrder, SortTarget};

/// The range end that selects every key starting with `prefix`: the prefix with trailing
/// 0xFF bytes dropped and its last byte incremented. An empty or all-0xFF prefix has no
/// such bound, so it gets `"\0"`, which etcd reads as "to the end of the keyspace".
pub fn prefix_range_end(prefix: &[u8]) -> Bytes {
    let trimmed_len = prefix.iter().rposition(|&b| b != 0xff).map_or(0, |i| i + 1);
    if trimmed_len == 0 {
        return Bytes::from_static(b"\0");
    }
    let mut end = prefix[..trimmed_len].to_vec();
    *end.last_mut().expect("non-empty") += 1;
    Bytes::from(end)
}

/// Where a request's range starts and ends.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyRange {
    pub(crate) prefix: bool,
    pub(crate) from_key: bool,
    pub(crate) range_end: Option<Bytes>,
}

impl KeyRange {
    /// `(key, range_end)` for the request. An explicit range end wins; otherwise `from_key`
    /// gives `"\0"` and `prefix` the prefix's end. With either, an empty key means `"\0"`
    /// (the first key), since etcd rejects an empty key.
    pub(crate) fn resolve(&self, key: Bytes) -> (Bytes, Bytes) {
        if let Some(end) = &self.range_end {
            return (key, end.clone());
        }
        if !(self.prefix || self.from_key) {
            return (key, Bytes::new());
        }
        let end = if self.from_key { Bytes::from_static(b"\0") } else { prefix_range_end(&key) };
        let key = if key.is_empty() { Bytes::from_static(b"\0") } else { key };
        (key, end)
    }
}

/// Generates the range setters shared by get, delete and watch options.
macro_rules! range_setters {
    () => {
        /// Every key starting with the given key (an empty key means every key).
        pub fn prefix(mut self, on: bool) -> Self {
            self.range.prefix = on;
            self
        }

        /// Every key from the given key on (etcdctl's `--from-key`).
        pub fn from_key(mut self, on: bool) -> Self {
            self.range.from_key = on;
            self
        }

        /// Keys in `[key, range_end)`; wins over `prefix` and `from_key`. `"\0"` means "to
        /// the end of the keyspace".
        pub fn range_end(mut self, range_end: impl Into<Bytes>) -> Self {
            self.range.range_end = Some(range_end.into());
            self
        }
    };
}

/// Options of [`Client::get`]. Every option defaults to off or zero.
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    range: KeyRange,
    req: pb::RangeRequest,
}

impl GetOptions {
    /// No options: the single key, linearizable, at the newest revision.
    pub fn new() -> Self {
        Self::default()
    }

    range_setters!();

    /// At most `limit` keys (0: no limit); `more` in the response says whether others exist.
    pub fn limit(mut self, limit: i64) -> Self {
        self.req.limit = limit;
        self
    }

    /// Read the keyspace as of `revision` (0: the newest).
    pub fn revision(mut self, revision: i64) -> Self {
        self.req.revision = revision;
        self
    }

    /// Return keys without values.
    pub fn keys_only(mut self, on: bool) -> Self {
        self.req.keys_only = on;
        self
    }

    /// Return only the count of matching keys.
    pub fn count_only(mut self, on: bool) -> Self {
        self.req.count_only = on;
        self
    }

    /// Answer from the member's local state, without a quorum round (may be stale).
    pub fn serializable(mut self, on: bool) -> Self {
        self.req.serializable = on;
        self
    }

    /// Order of the returned keys.
    pub fn sort_order(mut self, order: SortOrder) -> Self {
        self.req.sort_order = order as i32;
        self
    }

    /// What the order sorts by.
    pub fn sort_target(mut self, target: SortTarget) -> Self {
        self.req.sort_target = target as i32;
        self
    }

    /// Only keys last modified at or after `revision`.
    pub fn min_mod_revision(mut self, revision: i64) -> Self {
        self.req.min_mod_revision = revision;
        self
    }

    /// Only keys last modified at or before `revision`.
    pub fn max_mod_revision(mut self, revision: i64) -> Self {
        self.req.max_mod_revision = revision;
        self
    }

    /// Only keys created at or after `revision`.
    pub fn min_create_revision(mut self, revision: i64) -> Self {
        self.req.min_create_revision = revision;
        self
    }

    /// Only keys created at or before `revision`.
    pub fn max_create_revision(mut self, revision: i64) -> Self {
        self.req.max_create_revision = revision;
        self
    }

    /// The request for `key`.
    pub(crate) fn request(self, key: Bytes) -> pb::RangeRequest {
        let (key, range_end) = self.range.resolve(key);
        pb::RangeRequest { key, range_end, ..self.req }
    }
}

/// Options of [`Client::put`].
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    req: pb::PutRequest,
}

impl PutOptions {
    /// No options: no lease, no previous value returned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach the key to lease `id` (0: none).
    pub fn lease(mut self, id: i64) -> Self {
        self.req.lease = id;
        self
    }

    /// Return the key-value pair as it was before this put.
    pub fn prev_kv(mut self, on: bool) -> Self {
        self.req.prev_kv = on;
        self
    }

    /// Keep the current value (the key must exist); the value given is ignored.
    pub fn ignore_value(mut self, on: bool) -> Self {
        self.req.ignore_value = on;
        self
    }

    /// Keep the current lease (the key must exist).
    pub fn ignore_lease(mut self, on: bool) -> Self {
        self.req.ignore_lease = on;
        self
    }

    /// The request for `key` = `value`.
    pub(crate) fn request(self, key: Bytes, value: Bytes) -> pb::PutRequest {
        pb::PutRequest { key, value, ..self.req }
    }
}

/// Options of [`Client::delete`].
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    range: KeyRange,
    prev_kv: bool,
}

impl DeleteOptions {
    /// No options: the single key.
    pub fn new() -> Self {
        Self::default()
    }

    range_setters!();

    /// Return the deleted key-value pairs.
    pub fn prev_kv(mut self, on: bool) -> Self {
        self.prev_kv = on;
        self
    }

    /// The request for `key`.
    pub(crate) fn request(self, key: Bytes) -> pb::DeleteRangeRequest {
        let (key, range_end) = self.range.resolve(key);
        pb::DeleteRangeRequest { key, range_end, prev_kv: self.prev_kv }
    }
}

/// Options of [`Client::compact`].
#[derive(Clone, Debug, Default)]
pub struct CompactOptions {
    physical: bool,
}

impl CompactOptions {
    /// No options: returns once the compaction is scheduled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Return only once the compacted revisions are removed from the backend.
    pub fn physical(mut self, on: bool) -> Self {
        self.physical = on;
        self
    }
}

impl Client {
    /// Reads `key` (or a range of keys, see [`GetOptions`]).
    ///
    /// ```no_run
    /// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
    /// use evetcd::GetOptions;
    /// client.get("config/", GetOptions::new().prefix(true), |res| match res {
    ///     Ok(r) => println!("{} keys", r.count),
    ///     Err(e) => eprintln!("{e}"),
    /// });
    /// client.run();
    /// ```
    pub fn get(
        &self,
        key: impl Into<Bytes>,
        options: GetOptions,
        callback: impl FnOnce(Result<pb::RangeResponse, EtcdError>) + 'static,
    ) {
        let mut req = options.request(key.into());
        let Some(ns) = self.namespace() else {
            return self.call::<kv_rpc::Range>("get", &req, callback);
        };
        match ns.range(&mut req, "get") {
            Ok(()) => {
                let callback = ns.unprefixing(Namespace::strip_range, callback);
                self.call::<kv_rpc::Range>("get", &req, callback);
            }
            Err(e) => self.fail(e, callback),
        }
    }

    /// Writes `key` = `value`.
    pub fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: PutOptions,
        callback: impl FnOnce(Result<pb::PutResponse, EtcdError>) + 'static,
    ) {
        let mut req = options.request(key.into(), value.into());
        let Some(ns) = self.namespace() else {
            return self.call::<kv_rpc::Put>("put", &req, callback);
        };
        match ns.put(&mut req, "put") {
            Ok(()) => {
                let callback = ns.unprefixing(Namespace::strip_put, callback);
                self.call::<kv_rpc::Put>("put", &req, callback);
            }
            Err(e) => self.fail(e, callback),
        }
    }

    /// Deletes `key` (or a range of keys, see [`DeleteOptions`]).
    pub fn delete(
        &self,
        key: impl Into<Bytes>,
        options: DeleteOptions,
        callback: impl FnOnce(Result<pb::DeleteRangeResponse, EtcdError>) + 'static,
    ) {
        let mut req = options.request(key.into());
        let Some(ns) = self.namespace() else {
            return self.call::<kv_rpc::DeleteRange>("delete", &req, callback);
        };
        match ns.delete_range(&mut req, "delete") {
            Ok(()) => {
                let callback = ns.unprefixing(Namespace::strip_delete, callback);
                self.call::<kv_rpc::DeleteRange>("delete", &req, callback);
            }
            Err(e) => self.fail(e, callback),
        }
    }

    /// Discards the history before `revision`: older revisions can no longer be read or
    /// watched from.
    pub fn compact(
        &self,
        revision: i64,
        options: CompactOptions,
        callback: impl FnOnce(Result<pb::CompactionResponse, EtcdError>) + 'static,
    ) {
        let req = pb::CompactionRequest { revision, physical: options.physical };
        self.call::<kv_rpc::Compact>("compact", &req, callback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_range_end(b"abc"), &b"abd"[..]);
        assert_eq!(prefix_range_end(b"a\xff"), &b"b"[..]);
        assert_eq!(prefix_range_end(b"a\xfe\xff\xff"), &b"a\xff"[..]);
        assert_eq!(prefix_range_end(b"\x00"), &b"\x01"[..]);
        assert_eq!(prefix_range_end(b"\xff\xff"), &b"\0"[..]);
        assert_eq!(prefix_range_end(b""), &b"\0"[..]);
    }

    #[test]
    fn ranges_resolve_as_etcd_expects() {
        let r = |range: KeyRange, key: &'static [u8]| {
            let (k, e) = range.resolve(Bytes::from_static(key));
            (k.to_vec(), e.to_vec())
        };
        let prefix = KeyRange { prefix: true, ..Default::default() };
        let from = KeyRange { from_key: true, ..Default::default() };
        let explicit = KeyRange { prefix: true, range_end: Some("z".into()), ..Default::default() };
        assert_eq!(r(KeyRange::default(), b"k"), (b"k".to_vec(), vec![]));
        assert_eq!(r(prefix.clone(), b"k/"), (b"k/".to_vec(), b"k0".to_vec()));
        assert_eq!(r(prefix.clone(), b""), (b"\0".to_vec(), b"\0".to_vec()));
        assert_eq!(r(prefix, b"\xff"), (b"\xff".to_vec(), b"\0".to_vec()));
        assert_eq!(r(from.clone(), b"k"), (b"k".to_vec(), b"\0".to_vec()));
        assert_eq!(r(from, b""), (b"\0".to_vec(), b"\0".to_vec()));
        assert_eq!(r(explicit, b"a"), (b"a".to_vec(), b"z".to_vec()));
    }

    #[test]
    fn options_fill_the_request() {
        let req = GetOptions::new()
            .limit(5)
            .revision(7)
            .keys_only(true)
            .count_only(true)
            .serializable(true)
            .sort_order(SortOrder::Descend)
            .sort_target(SortTarget::Mod)
            .min_mod_revision(1)
            .max_mod_revision(2)
            .min_create_revision(3)
            .max_create_revision(4)
            .request(Bytes::from_static(b"k"));
        assert_eq!((req.limit, req.revision, req.keys_only, req.count_only), (5, 7, true, true));
        assert!(req.serializable);
        assert_eq!(req.sort_order, SortOrder::Descend as i32);
        assert_eq!(req.sort_target, SortTarget::Mod as i32);
        assert_eq!(
            (
                req.min_mod_revision,
                req.max_mod_revision,
                req.min_create_revision,
                req.max_create_revision
            ),
            (1, 2, 3, 4)
        );
        let put = PutOptions::new().lease(9).prev_kv(true).ignore_value(true).ignore_lease(true);
        let p = put.request("k".into(), "v".into());
        assert_eq!((p.lease, p.prev_kv, p.ignore_value, p.ignore_lease), (9, true, true, true));
    }
}
