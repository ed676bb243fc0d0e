//! Software transactional memory (Go's `concurrency.NewSTM`, `clientv3/concurrency/stm.go`):
//! an `apply` function reads and writes keys as if it were alone, and commits in one Txn that
//! holds only if what it read is unchanged; otherwise it runs again on fresh values, until a
//! commit holds.
//!
//! Go's `apply` blocks in `Get` until etcd answers. Here `apply` never blocks: a read whose
//! value is not known yet records a miss and returns [`Miss`] (`?` ends the run there); the
//! runner fetches every key the run missed in one Txn of gets and runs `apply` again from the
//! start, now with those values known. A run that misses nothing is the attempt's last: its
//! writes are committed.
//!
//! ```text
//!   run apply ──missed keys──► Txn of gets (the misses) ──► run apply again
//!      │ missed nothing
//!      ├─ Stop::Abort ──► done(Err(Error::Aborted(..)))        nothing written
//!      ▼ Ok(())
//!   Txn: if [read set unchanged, write set untouched] then writes [else get the read set]
//!      ├─ succeeded ──► done(Ok(TxnResponse))
//!      └─ failed ──► next attempt; serializable levels take the else gets as its first reads
//! ```
//!
//! What each level does is Go's (see [`Isolation`]): the same reads with the same options,
//! the same compares, the same else branch; so evetcd and Go STM programs that share keys
//! exclude each other's conflicting commits. Where this differs from Go:
//!
//! - [`Stm::get`] tells a missing key (`None`) from an empty value; Go's `Get` returns `""`
//!   for both.
//! - Compares and ops are in the order keys were first read or written; Go's follow map
//!   iteration, in random order.
//! - A key that an earlier run of the attempt read stays in the read set, and is checked at
//!   commit, even if the last run did not read it (only an `apply` whose path depends on
//!   something other than its reads does that).
//! - [`Stm::rev`] of a key the run wrote, before anything was read: Go reads it outside the
//!   snapshot and then never pins the attempt's reads; here it is the attempt's first read
//!   like any other, and pins the later ones.

use super::error::Error;
use crate::client::Client;
use crate::error::{Code, EtcdError};
use crate::ops::kv::{DeleteOptions, GetOptions, PutOptions};
use crate::ops::txn::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use crate::pb::etcdserverpb::TxnResponse;
use crate::pb::mvccpb::KeyValue;
use bytes::Bytes;
use std::collections::HashMap;

/// Go's isolation levels (`concurrency.Isolation`): how reads are taken and what the commit
/// checks.
///
/// | level | reads | the commit holds if |
/// |---|---|---|
/// | `SerializableSnapshot` | the first linearizable, the rest at its revision | no key read changed, and no key written changed since the first read |
/// | `Serializable` | the first linearizable, the rest at its revision | no key read changed |
/// | `RepeatableReads` | serializable (the member's own state), each at its own revision | no key read changed |
/// | `ReadCommitted` | serializable, each at its own revision | always |
///
/// "Changed" means its mod revision is no longer the one read (a missing key: it now exists).
/// Within one attempt a key is read once: reading it again gives the same value at every
/// level. After a failed commit the serializable levels start the next attempt from the
/// values the failed Txn read in its else branch (Go's prefetch): no extra round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Serializable, and a write to a key the transaction writes (without reading it) since
    /// its first read also fails the commit (Go's `SerializableSnapshot`). The default.
    #[default]
    SerializableSnapshot,
    /// Every read sees the store at the revision of the attempt's first read; the commit
    /// fails if any key read changed since (Go's `Serializable`).
    Serializable,
    /// Reads are serializable, each at the revision the member has; the commit fails if any
    /// key read changed since (Go's `RepeatableReads`).
    RepeatableReads,
    /// Reads are serializable; the commit checks nothing, so it may overwrite what others
    /// wrote since (Go's `ReadCommitted`).
    ReadCommitted,
}

/// How [`stm_with`] runs: the isolation level and keys to read up front (Go's `NewSTM`
/// options).
#[derive(Clone, Debug, Default)]
pub struct StmOptions {
    isolation: Isolation,
    prefetch: Vec<Bytes>,
}

impl StmOptions {
    /// Serializable snapshot isolation, nothing prefetched.
    pub fn new() -> StmOptions {
        StmOptions::default()
    }

    /// The isolation level (Go's `WithIsolation`).
    pub fn isolation(mut self, isolation: Isolation) -> StmOptions {
        self.isolation = isolation;
        self
    }

    /// Keys that every attempt reads: each attempt reads them all in one Txn before `apply`
    /// first runs, instead of one round trip per key as `apply` reaches them (Go's
    /// `WithPrefetch`: a multi-key `Get` at the start of each attempt, which fetches nothing
    /// when one of the keys is known already).
    pub fn prefetch<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> StmOptions {
        self.prefetch.extend(keys.into_iter().map(|k| Bytes::copy_from_slice(k.as_ref())));
        self
    }
}

/// What a read returns when its value is not known yet: the key is recorded, and `apply`
/// runs again once it is fetched. Propagate it with `?` (into [`Stop`]). It cannot be made
/// outside this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Miss(());

/// Why `apply` stopped before the end: a read missed (`?` on [`Stm::get`] or [`Stm::rev`]),
/// or the user ends the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A read whose value is not known yet: the runner fetches it and runs `apply` again.
    Miss(Miss),
    /// Ends the transaction: nothing is written, and `done` receives
    /// [`Error::Aborted`] with this reason (Go: `apply` returns an error).
    Abort(String),
}

impl Stop {
    /// `Stop::Abort(reason)`: `return Err(Stop::abort("insufficient funds"));`
    pub fn abort(reason: impl Into<String>) -> Stop {
        Stop::Abort(reason.into())
    }
}

impl From<Miss> for Stop {
    fn from(miss: Miss) -> Stop {
        Stop::Miss(miss)
    }
}

/// A transaction's view of the keys, handed to `apply` (Go's `concurrency.STM`: `Get`,
/// `Put`, `Rev`, `Del`). Writes are buffered, and go out in the commit's Txn in the order
/// their keys were first written (one op per key: the last write of a key wins); reads of a
/// key written earlier in the run return what was written.
///
/// A run of `apply` starts with no writes: each run must write everything it means to
/// commit. Reads made in earlier runs of the same attempt stay known.
#[derive(Debug)]
pub struct Stm {
    isolation: Isolation,
    /// Go's read set: each key read in this attempt, as etcd answered it, in first-read order.
    reads: Keyed<Read>,
    /// Go's write set: what this run wrote.
    writes: Keyed<Write>,
    /// Serializable levels: the failed commit's else gets (Go's `prefetch`), moved into the
    /// read set as keys are read again.
    prefetched: HashMap<Bytes, Read>,
    /// Serializable levels: the revision of the attempt's first read, at which every later
    /// read of the attempt is taken (Go's `getOpts` `WithRev` + `WithSerializable`).
    pin: Option<i64>,
    /// The keys this run read without a known value, each once, in order.
    misses: Vec<Bytes>,
}

/// A key as a read answered it.
#[derive(Clone, Debug, PartialEq)]
struct Read {
    kv: Option<KeyValue>,
    /// The store revision the read observed (the range response's header; Go's
    /// `resp.Header.Revision`).
    revision: i64,
}

impl Read {
    fn mod_revision(&self) -> i64 {
        self.kv.as_ref().map_or(0, |kv| kv.mod_revision)
    }
}

/// A buffered write: the value later reads see (`None` after a delete) and its op.
#[derive(Clone, Debug)]
struct Write {
    value: Option<Bytes>,
    op: TxnOp,
}

/// What the runner does after a run of `apply`.
#[derive(Debug, PartialEq)]
enum Step {
    /// Fetch the missed keys ([`Stm::fetch_txn`]), then run again.
    Fetch,
    /// Commit ([`Stm::commit_txn`]).
    Commit,
    /// End with this error, writing nothing.
    End(Error),
}

impl Stm {
    fn new(isolation: Isolation) -> Stm {
        Stm {
            isolation,
            reads: Keyed::default(),
            writes: Keyed::default(),
            prefetched: HashMap::new(),
            pin: None,
            misses: Vec::new(),
        }
    }

    /// The value of `key`: what this run wrote to it if it did (`None` after [`del`]), else
    /// its value as read in this attempt (`None`: the key does not exist), or [`Miss`] when
    /// it has not been read yet (Go's `Get`, whose empty string is `None` here).
    ///
    /// [`del`]: Stm::del
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Miss> {
        let key = key.as_ref();
        if let Some(w) = self.writes.get(key) {
            return Ok(w.value.clone());
        }
        Ok(self.read(key)?.kv.as_ref().map(|kv| kv.value.clone()))
    }

    /// Writes `key` = `value` at commit (Go's `Put`, its options as [`PutOptions`]). A later
    /// [`get`](Stm::get) of the key in this run returns `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, options: PutOptions) {
        let key = Bytes::copy_from_slice(key.as_ref());
        let value = Bytes::copy_from_slice(value.as_ref());
        let op = TxnOp::put(key.clone(), value.clone(), options);
        self.writes.insert(key, Write { value: Some(value), op });
    }

    /// Deletes `key` at commit (Go's `Del`). A later [`get`](Stm::get) of the key in this
    /// run returns `None`.
    pub fn del(&mut self, key: impl AsRef<[u8]>) {
        let key = Bytes::copy_from_slice(key.as_ref());
        let op = TxnOp::delete(key.clone(), DeleteOptions::new());
        self.writes.insert(key, Write { value: None, op });
    }

    /// The mod revision of `key` as read in this attempt (0: it does not exist), reading it
    /// like [`get`](Stm::get) if needed, but never from this run's writes (Go's `Rev`).
    pub fn rev(&mut self, key: impl AsRef<[u8]>) -> Result<i64, Miss> {
        Ok(self.read(key.as_ref())?.mod_revision())
    }

    /// The isolation level this transaction runs at.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    fn serializable(&self) -> bool {
        matches!(self.isolation, Isolation::SerializableSnapshot | Isolation::Serializable)
    }

    /// `key` from the read set, taken from the prefetch if it is there (Go's `fetch`, with
    /// `stmSerializable.Get`'s prefetch step); or a recorded miss.
    fn read(&mut self, key: &[u8]) -> Result<&Read, Miss> {
        self.take_prefetched(key);
        if !self.reads.contains(key) {
            self.miss(key);
            return Err(Miss(()));
        }
        Ok(self.reads.get(key).expect("checked above"))
    }

    fn take_prefetched(&mut self, key: &[u8]) {
        if !self.reads.contains(key) {
            if let Some((key, read)) = self.prefetched.remove_entry(key) {
                self.enter(key, read);
            }
        }
    }

    /// Adds a read to the read set. On the serializable levels the attempt's first read
    /// pins every later one to its revision (Go's `firstRead`).
    fn enter(&mut self, key: Bytes, read: Read) {
        if self.serializable() && self.reads.is_empty() {
            self.pin = Some(read.revision);
        }
        self.reads.insert(key, read);
    }

    fn miss(&mut self, key: &[u8]) {
        if !self.misses.iter().any(|k| k == key) {
            self.misses.push(Bytes::copy_from_slice(key));
        }
    }

    /// Go's `WithPrefetch`, a multi-key `Get`: known when one of the keys is; otherwise
    /// every key is missed, to be fetched in one Txn.
    fn prefetch(&mut self, keys: &[Bytes]) -> Result<(), Miss> {
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            self.take_prefetched(key);
        }
        if keys.iter().any(|k| self.reads.contains(k)) {
            return Ok(());
        }
        for key in keys {
            self.miss(key);
        }
        Err(Miss(()))
    }

    /// One run of `apply` (after the prefetch, when one is asked for): what to do next. A run
    /// that missed a read is always run again once the read is fetched, whatever it
    /// returned, since what it decided may depend on the value it did not have.
    fn run<F>(&mut self, apply: &mut F, prefetch: &[Bytes]) -> Step
    where
        F: FnMut(&mut Stm) -> Result<(), Stop>,
    {
        self.writes.clear();
        self.misses.clear();
        if self.prefetch(prefetch).is_err() {
            return Step::Fetch;
        }
        let outcome = apply(self);
        if !self.misses.is_empty() {
            return Step::Fetch;
        }
        match outcome {
            Ok(()) => Step::Commit,
            Err(Stop::Abort(reason)) => Step::End(Error::Aborted(reason)),
            Err(Stop::Miss(_)) => Step::End(Error::Etcd(EtcdError::new(
                Code::InvalidArgument,
                "apply returned a Miss although no read of this run missed (one kept from an \
                 earlier run?)",
                "stm",
            ))),
        }
    }

    /// The options of a read: on the serializable levels linearizable until the first read,
    /// then serializable at its revision; on the others serializable (Go's `getOpts`).
    fn read_options(&self) -> GetOptions {
        match (self.serializable(), self.pin) {
            (true, None) => GetOptions::new(),
            (true, Some(revision)) => GetOptions::new().revision(revision).serializable(true),
            (false, _) => GetOptions::new().serializable(true),
        }
    }

    /// One Txn of gets of the missed keys (Go's `fetch`).
    fn fetch_txn(&self) -> Txn {
        Txn::new().and_then(self.misses.iter().map(|k| TxnOp::get(k.clone(), self.read_options())))
    }

    /// Takes the answer to [`fetch_txn`](Stm::fetch_txn) into the read set (Go's
    /// `readSet.add`).
    fn fetched(&mut self, resp: &TxnResponse) -> Result<(), Error> {
        let keys = std::mem::take(&mut self.misses);
        let reads = ranges(resp, keys.len(), "fetch")?;
        for (key, read) in keys.into_iter().zip(reads) {
            self.enter(key, read);
        }
        Ok(())
    }

    /// Go's `readSet.first`: the lowest revision a read of the attempt observed (`MaxInt64 -
    /// 1` when it read nothing, as in Go).
    fn first_revision(&self) -> i64 {
        self.reads.iter().map(|(_, r)| r.revision).min().unwrap_or(i64::MAX - 1)
    }

    /// The commit's compares (Go's `conflicts`): each key read still at the mod revision read
    /// (0: still absent), and on `SerializableSnapshot` each key written not modified since
    /// the first read (mod revision below it + 1).
    fn conflicts(&self) -> Vec<Compare> {
        let current = |(key, read): &(Bytes, Read)| {
            Compare::mod_revision(key.clone(), CompareOp::Equal, read.mod_revision())
        };
        match self.isolation {
            Isolation::ReadCommitted => Vec::new(),
            Isolation::Serializable | Isolation::RepeatableReads => {
                self.reads.iter().map(current).collect()
            }
            Isolation::SerializableSnapshot => {
                let below = self.first_revision().saturating_add(1);
                let untouched = |(key, _): &(Bytes, Write)| {
                    Compare::mod_revision(key.clone(), CompareOp::Less, below)
                };
                self.reads.iter().map(current).chain(self.writes.iter().map(untouched)).collect()
            }
        }
    }

    /// The commit: the compares, the writes, and on the serializable levels a get of every
    /// key read in the else branch, to start the next attempt from (Go's `commit`).
    fn commit_txn(&self) -> Txn {
        let txn = Txn::new()
            .when(self.conflicts())
            .and_then(self.writes.iter().map(|(_, w)| w.op.clone()));
        match self.serializable() {
            true => txn
                .or_else(self.reads.iter().map(|(k, _)| TxnOp::get(k.clone(), GetOptions::new()))),
            false => txn,
        }
    }

    /// Takes the commit's answer: `true` when it held; otherwise sets up the next attempt
    /// (on the serializable levels from the else gets) and returns `false`.
    fn committed(&mut self, resp: &TxnResponse) -> Result<bool, Error> {
        if resp.succeeded {
            return Ok(true);
        }
        let reads = self.reads.take();
        self.writes.clear();
        self.misses.clear();
        self.pin = None;
        if self.serializable() {
            let fresh = ranges(resp, reads.len(), "commit")?;
            self.prefetched = reads.into_iter().map(|(key, _)| key).zip(fresh).collect();
        }
        Ok(false)
    }
}

/// The `n` range responses of `resp`, one per get sent, as reads.
fn ranges(resp: &TxnResponse, n: usize, step: &str) -> Result<Vec<Read>, Error> {
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    let bad = |what: String| {
        let message = format!("{step}: {what}");
        Error::Etcd(EtcdError::new(Code::Internal, message, "stm"))
    };
    if resp.responses.len() != n {
        return Err(bad(format!("{} responses to {n} gets", resp.responses.len())));
    }
    resp.responses
        .iter()
        .map(|op| match &op.response {
            Some(TxnOpResponse::ResponseRange(range)) => Ok(Read {
                kv: range.kvs.first().cloned(),
                revision: range
                    .header
                    .as_ref()
                    .map(|h| h.revision)
                    .filter(|&r| r > 0)
                    .unwrap_or(revision),
            }),
            other => Err(bad(format!("a get answered with {other:?}"))),
        })
        .collect()
}

/// A map by key that keeps the order in which keys were first inserted.
#[derive(Debug)]
struct Keyed<T> {
    index: HashMap<Bytes, usize>,
    entries: Vec<(Bytes, T)>,
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Keyed { index: HashMap::new(), entries: Vec::new() }
    }
}

impl<T> Keyed<T> {
    fn get(&self, key: &[u8]) -> Option<&T> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// Sets `key`'s value; a key already there keeps its place.
    fn insert(&mut self, key: Bytes, value: T) {
        match self.index.get(&key[..]) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, (Bytes, T)> {
        self.entries.iter()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }

    /// Every entry, in order, leaving the map empty.
    fn take(&mut self) -> Vec<(Bytes, T)> {
        self.index.clear();
        std::mem::take(&mut self.entries)
    }
}

/// Runs an STM transaction at `isolation` (Go's `concurrency.NewSTM` with `WithIsolation`):
/// `apply` runs, as often as needed, until a commit of its writes holds; `done` then receives
/// the committed Txn's response (its `responses` are the writes' results, in order), or the
/// error that ended it: [`Error::Aborted`] when `apply` returned [`Stop::Abort`] (nothing was
/// written), [`Error::Etcd`] when a read or the commit failed (Go's `NewSTM` gives up on
/// those too; the commit may or may not have been applied when it failed with
/// `UNAVAILABLE` or `DEADLINE_EXCEEDED`).
///
/// `apply` first runs on the client's next turn, never inside `stm()`, and `done` runs
/// exactly once, from the client's loop. `apply` is run again after each round trip that
/// fetched what a run missed and after each failed commit, so it must decide only from what
/// it reads through the [`Stm`] (and what it captured), and leave side effects to `done`.
/// A run that misses no read is committed. To stop a transaction that keeps retrying, run it
/// on a [`Client::with`] view with a [`Cancel`](crate::Cancel) token (Go's
/// `WithAbortContext`): the call in flight fails with `CANCELLED`, which ends it.
///
/// ```no_run
/// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
/// use evetcd::concurrency::{stm, Isolation, Stop};
/// use evetcd::PutOptions;
///
/// fn balance(v: Option<bytes::Bytes>) -> i64 {
///     v.map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap())
/// }
///
/// stm(&client, Isolation::SerializableSnapshot, |s| {
///     // Two gets before the first `?`: one round trip fetches both.
///     let (from, to) = (s.get("accounts/alice"), s.get("accounts/bob"));
///     let (from, to) = (balance(from?), balance(to?));
///     if from < 10 {
///         return Err(Stop::abort("insufficient funds"));
///     }
///     s.put("accounts/alice", (from - 10).to_string(), PutOptions::new());
///     s.put("accounts/bob", (to + 10).to_string(), PutOptions::new());
///     Ok(())
/// }, |res| match res {
///     Ok(txn) => println!("moved at revision {}", txn.header.unwrap().revision),
///     Err(e) => println!("not moved: {e}"),
/// });
/// client.run();
/// ```
pub fn stm<F, D>(client: &Client, isolation: Isolation, apply: F, done: D)
where
    F: FnMut(&mut Stm) -> Result<(), Stop> + 'static,
    D: FnOnce(Result<TxnResponse, Error>) + 'static,
{
    stm_with(client, StmOptions::new().isolation(isolation), apply, done);
}

/// [`stm`] with [`StmOptions`]: an isolation level and keys to prefetch.
pub fn stm_with<F, D>(client: &Client, options: StmOptions, apply: F, done: D)
where
    F: FnMut(&mut Stm) -> Result<(), Stop> + 'static,
    D: FnOnce(Result<TxnResponse, Error>) + 'static,
{
    let runner = Box::new(Runner {
        client: client.clone(),
        stm: Stm::new(options.isolation),
        apply,
        prefetch: options.prefetch,
        done,
    });
    client.with_core(|c| c.defer(Box::new(move || runner.step())));
}

/// A transaction in progress: owned by the one callback (or deferred step) that continues
/// it, so that it ends once.
struct Runner<F, D> {
    client: Client,
    stm: Stm,
    apply: F,
    prefetch: Vec<Bytes>,
    done: D,
}

impl<F, D> Runner<F, D>
where
    F: FnMut(&mut Stm) -> Result<(), Stop> + 'static,
    D: FnOnce(Result<TxnResponse, Error>) + 'static,
{
    /// Runs `apply`, then fetches, commits or ends.
    fn step(mut self: Box<Self>) {
        let this = &mut *self;
        match this.stm.run(&mut this.apply, &this.prefetch) {
            Step::Fetch => {
                let (client, txn) = (self.client.clone(), self.stm.fetch_txn());
                client.txn(txn, move |res| self.fetched(res));
            }
            Step::Commit => {
                let (client, txn) = (self.client.clone(), self.stm.commit_txn());
                client.txn(txn, move |res| self.committed(res));
            }
            Step::End(e) => self.finish(Err(e)),
        }
    }

    fn fetched(mut self: Box<Self>, res: Result<TxnResponse, EtcdError>) {
        match res.map_err(Error::Etcd).and_then(|resp| self.stm.fetched(&resp)) {
            Ok(()) => self.step(),
            Err(e) => self.finish(Err(e)),
        }
    }

    fn committed(mut self: Box<Self>, res: Result<TxnResponse, EtcdError>) {
        let resp = match res {
            Ok(resp) => resp,
            Err(e) => return self.finish(Err(Error::Etcd(e))),
        };
        match self.stm.committed(&resp) {
            Ok(true) => self.finish(Ok(resp)),
            Ok(false) => self.step(),
            Err(e) => self.finish(Err(e)),
        }
    }

    fn finish(self, result: Result<TxnResponse, Error>) {
        (self.done)(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{
        compare, request_op, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    };

    const LEVELS: [Isolation; 4] = [
        Isolation::SerializableSnapshot,
        Isolation::Serializable,
        Isolation::RepeatableReads,
        Isolation::ReadCommitted,
    ];

    /// A range response as etcd sends it in a Txn: its own header at `revision`.
    fn range(revision: i64, kv: Option<(&str, &str, i64)>) -> ResponseOp {
        let kvs = kv
            .map(|(k, v, m)| KeyValue {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
                mod_revision: m,
                create_revision: m,
                version: 1,
                lease: 0,
            })
            .into_iter()
            .collect::<Vec<_>>();
        let count = kvs.len() as i64;
        let header = Some(ResponseHeader { revision, ..Default::default() });
        let r = RangeResponse { header, kvs, more: false, count };
        ResponseOp { response: Some(TxnOpResponse::ResponseRange(r)) }
    }

    fn txn_resp(revision: i64, succeeded: bool, responses: Vec<ResponseOp>) -> TxnResponse {
        let header = Some(ResponseHeader { revision, ..Default::default() });
        TxnResponse { header, succeeded, responses }
    }

    /// The compares of `txn` as "key mod = 5" / "key mod < 11".
    fn compares(txn: &Txn) -> Vec<String> {
        txn.0
            .compare
            .iter()
            .map(|c| {
                assert_eq!(c.target, compare::CompareTarget::Mod as i32, "only mod revisions");
                let op = match CompareOp::try_from(c.result).unwrap() {
                    CompareOp::Equal => "=",
                    CompareOp::Less => "<",
                    other => panic!("unexpected compare {other:?}"),
                };
                let Some(compare::TargetUnion::ModRevision(r)) = c.target_union else {
                    panic!("no mod revision")
                };
                format!("{} mod {op} {r}", String::from_utf8_lossy(&c.key))
            })
            .collect()
    }

    /// The gets of a branch as (key, revision, serializable).
    fn gets(ops: &[RequestOp]) -> Vec<(String, i64, bool)> {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    (String::from_utf8_lossy(&r.key).into_owned(), r.revision, r.serializable)
                }
                other => panic!("not a get: {other:?}"),
            })
            .collect()
    }

    /// The writes of a branch as "put key=value" / "del key".
    fn writes(ops: &[RequestOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => format!(
                    "put {}={}",
                    String::from_utf8_lossy(&p.key),
                    String::from_utf8_lossy(&p.value)
                ),
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    assert!(d.range_end.is_empty());
                    format!("del {}", String::from_utf8_lossy(&d.key))
                }
                other => panic!("not a write: {other:?}"),
            })
            .collect()
    }

    fn text(v: Option<Bytes>) -> String {
        v.map_or("<none>".into(), |v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Reads a and b (a first, `?` between) and writes their concatenation to w, logging
    /// what each run saw.
    fn copy_ab(
        log: &std::rc::Rc<std::cell::RefCell<Vec<String>>>,
    ) -> impl FnMut(&mut Stm) -> Result<(), Stop> {
        let log = log.clone();
        move |s: &mut Stm| {
            let a = s.get("a");
            log.borrow_mut().push(format!("a={}", a.clone().map_or("miss".into(), text)));
            let a = text(a?);
            let b = text(s.get("b")?);
            log.borrow_mut().push(format!("b={b}"));
            s.put("w", format!("{a}{b}"), PutOptions::new());
            Ok(())
        }
    }

    #[test]
    fn reads_miss_then_replay_with_values_pinned_on_serializable_levels() {
        for level in LEVELS {
            let log = Default::default();
            let mut apply = copy_ab(&log);
            let mut s = Stm::new(level);
            let serializable = s.serializable();

            assert_eq!(s.run(&mut apply, &[]), Step::Fetch, "{level:?}");
            assert_eq!(s.misses, [Bytes::from("a")]);
            // The first read: linearizable on the serializable levels, else serializable.
            let f = s.fetch_txn();
            assert_eq!(gets(&f.0.success), [("a".into(), 0, !serializable)], "{level:?}");
            assert!(f.0.compare.is_empty() && f.0.failure.is_empty());
            s.fetched(&txn_resp(10, true, vec![range(10, Some(("a", "1", 4)))])).unwrap();
            assert_eq!(s.pin, serializable.then_some(10), "{level:?}");

            assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
            assert_eq!(s.misses, [Bytes::from("b")]);
            // Later reads: at the first read's revision on the serializable levels.
            let f = s.fetch_txn();
            let rev = if serializable { 10 } else { 0 };
            assert_eq!(gets(&f.0.success), [("b".into(), rev, true)], "{level:?}");
            // etcd answers a pinned read with its current revision in the header.
            s.fetched(&txn_resp(12, true, vec![range(12, None)])).unwrap();
            assert_eq!(s.pin, serializable.then_some(10), "the pin stays");

            assert_eq!(s.run(&mut apply, &[]), Step::Commit);
            assert_eq!(
                *log.borrow(),
                ["a=miss", "a=1", "a=1", "b=<none>"].map(String::from),
                "{level:?}"
            );
            let c = s.commit_txn();
            assert_eq!(writes(&c.0.success), ["put w=1<none>"]);
            let expected: &[&str] = match level {
                Isolation::SerializableSnapshot => &["a mod = 4", "b mod = 0", "w mod < 11"],
                Isolation::Serializable | Isolation::RepeatableReads => &["a mod = 4", "b mod = 0"],
                Isolation::ReadCommitted => &[],
            };
            assert_eq!(compares(&c), expected, "{level:?}");
            // Go's else branch: plain gets of the read set, on the serializable levels only.
            let expected_else: Vec<(String, i64, bool)> = match serializable {
                true => vec![("a".into(), 0, false), ("b".into(), 0, false)],
                false => vec![],
            };
            assert_eq!(gets(&c.0.failure), expected_else, "{level:?}");
            assert!(s.committed(&txn_resp(13, true, vec![])).unwrap());
        }
    }

    #[test]
    fn misses_of_one_run_are_fetched_in_one_txn_once_each() {
        let mut s = Stm::new(Isolation::Serializable);
        let mut apply = |s: &mut Stm| {
            let (a, b, a2) = (s.get("a"), s.rev("b"), s.get("a"));
            let (_, _, _) = (a?, b?, a2?);
            Ok(())
        };
        assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
        assert_eq!(
            gets(&s.fetch_txn().0.success),
            [("a".into(), 0, false), ("b".into(), 0, false)]
        );
        let resp = txn_resp(7, true, vec![range(7, Some(("a", "x", 3))), range(7, None)]);
        s.fetched(&resp).unwrap();
        assert_eq!((s.pin, s.first_revision()), (Some(7), 7));
        assert_eq!(s.run(&mut apply, &[]), Step::Commit);
        assert_eq!((s.get("a"), s.rev("a"), s.rev("b")), (Ok(Some("x".into())), Ok(3), Ok(0)));
    }

    #[test]
    fn a_run_that_missed_runs_again_whatever_it_returned() {
        // It ignored the miss and would have committed, or aborted on a value it did not
        // have: both are run again once the value is known.
        let mut s = Stm::new(Isolation::SerializableSnapshot);
        let mut ignoring = |s: &mut Stm| {
            let v = s.get("k").unwrap_or(None);
            s.put("k", format!("{}+1", text(v)), PutOptions::new());
            Ok(())
        };
        assert_eq!(s.run(&mut ignoring, &[]), Step::Fetch);
        s.fetched(&txn_resp(5, true, vec![range(5, Some(("k", "v", 5)))])).unwrap();
        assert_eq!(s.run(&mut ignoring, &[]), Step::Commit);
        assert_eq!(writes(&s.commit_txn().0.success), ["put k=v+1"]);

        let mut s = Stm::new(Isolation::SerializableSnapshot);
        let mut aborting = |s: &mut Stm| match s.get("k") {
            Ok(Some(v)) if v == "stop" => Err(Stop::abort("told to stop")),
            _ => Err(Stop::abort("stopped without looking")),
        };
        assert_eq!(s.run(&mut aborting, &[]), Step::Fetch);
        s.fetched(&txn_resp(5, true, vec![range(5, Some(("k", "stop", 5)))])).unwrap();
        assert_eq!(s.run(&mut aborting, &[]), Step::End(Error::Aborted("told to stop".into())));
    }

    #[test]
    fn an_abort_without_misses_ends_and_a_stale_miss_is_an_error() {
        let mut s = Stm::new(Isolation::Serializable);
        let mut abort = |s: &mut Stm| {
            s.put("x", "1", PutOptions::new());
            Err(Stop::abort("no"))
        };
        assert_eq!(s.run(&mut abort, &[]), Step::End(Error::Aborted("no".into())));

        let mut stale = |_: &mut Stm| Err(Stop::Miss(Miss(())));
        let Step::End(Error::Etcd(e)) = s.run(&mut stale, &[]) else { panic!("not an error") };
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    #[test]
    fn writes_shadow_reads_and_each_run_starts_without_writes() {
        let mut s = Stm::new(Isolation::SerializableSnapshot);
        s.put("k", "v", PutOptions::new().lease(7));
        assert_eq!(s.get("k"), Ok(Some("v".into())), "a write is read back without a miss");
        s.del("k");
        assert_eq!(s.get("k"), Ok(None));
        s.put("j", "1", PutOptions::new());
        s.put("k", "2", PutOptions::new());
        assert!(s.misses.is_empty() && s.reads.is_empty());
        // One op per key, in the order keys were first written; the last write wins.
        let c = s.commit_txn();
        assert_eq!(writes(&c.0.success), ["put k=2", "put j=1"]);
        // Nothing read: the write compares hold for any revision (Go's MaxInt64 - 1 + 1).
        assert_eq!(
            compares(&c),
            [format!("k mod < {}", i64::MAX), format!("j mod < {}", i64::MAX)]
        );
        // rev reads the key, not the write.
        assert_eq!(s.rev("k"), Err(Miss(())));
        assert_eq!(s.misses, [Bytes::from("k")]);

        let mut apply = |s: &mut Stm| {
            s.put("only-once", "x", PutOptions::new());
            Ok(())
        };
        assert_eq!(s.run(&mut apply, &[]), Step::Commit);
        assert_eq!(writes(&s.commit_txn().0.success), ["put only-once=x"]);
    }

    #[test]
    fn put_options_reach_the_op() {
        let mut s = Stm::new(Isolation::ReadCommitted);
        s.put("k", "v", PutOptions::new().lease(9).prev_kv(true));
        let c = s.commit_txn();
        let Some(request_op::Request::RequestPut(p)) = &c.0.success[0].request else { panic!() };
        assert_eq!((p.lease, p.prev_kv), (9, true));
    }

    #[test]
    fn a_failed_commit_prefetches_the_read_set_on_serializable_levels() {
        for level in LEVELS {
            let log = Default::default();
            let mut apply = copy_ab(&log);
            let mut s = Stm::new(level);
            assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
            s.fetched(&txn_resp(10, true, vec![range(10, Some(("a", "1", 4)))])).unwrap();
            assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
            s.fetched(&txn_resp(10, true, vec![range(10, Some(("b", "2", 6)))])).unwrap();
            assert_eq!(s.run(&mut apply, &[]), Step::Commit);
            let c = s.commit_txn();
            // The compares failed: b changed at 15. The else branch read a and b at 20.
            let failed = match s.serializable() {
                true => txn_resp(
                    20,
                    false,
                    vec![range(20, Some(("a", "1", 4))), range(20, Some(("b", "9", 15)))],
                ),
                false => txn_resp(20, false, vec![]),
            };
            assert_eq!(c.0.failure.len(), failed.responses.len());
            assert!(!s.committed(&failed).unwrap(), "{level:?}");
            assert!(s.reads.is_empty() && s.writes.is_empty() && s.pin.is_none());

            log.borrow_mut().clear();
            if s.serializable() {
                // The next attempt needs no round trip, and is pinned to the else branch's
                // revision.
                assert_eq!(s.run(&mut apply, &[]), Step::Commit, "{level:?}");
                assert_eq!(*log.borrow(), ["a=1", "b=9"]);
                assert_eq!(s.pin, Some(20));
                let expected: &[&str] = match level {
                    Isolation::SerializableSnapshot => &["a mod = 4", "b mod = 15", "w mod < 21"],
                    _ => &["a mod = 4", "b mod = 15"],
                };
                assert_eq!(compares(&s.commit_txn()), expected);
                assert!(s.prefetched.is_empty(), "both taken");
            } else {
                // Go's repeatable-read STM fetches again.
                assert_eq!(s.run(&mut apply, &[]), Step::Fetch, "{level:?}");
                assert_eq!(*log.borrow(), ["a=miss"]);
            }
        }
    }

    #[test]
    fn a_key_not_in_the_prefetch_is_read_at_the_prefetch_revision() {
        let mut s = Stm::new(Isolation::Serializable);
        let mut apply = |s: &mut Stm| {
            s.get("a")?;
            Ok(())
        };
        assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
        s.fetched(&txn_resp(3, true, vec![range(3, Some(("a", "1", 2)))])).unwrap();
        assert_eq!(s.run(&mut apply, &[]), Step::Commit);
        let failed = txn_resp(8, false, vec![range(8, Some(("a", "2", 8)))]);
        assert!(!s.committed(&failed).unwrap());
        // This attempt also reads c: the prefetched a pins it to revision 8.
        let mut more = |s: &mut Stm| {
            s.get("a")?;
            s.get("c")?;
            Ok(())
        };
        assert_eq!(s.run(&mut more, &[]), Step::Fetch);
        assert_eq!(gets(&s.fetch_txn().0.success), [("c".into(), 8, true)]);
    }

    #[test]
    fn the_prefetch_option_reads_every_key_in_one_txn_before_apply() {
        for level in LEVELS {
            let runs = std::rc::Rc::new(std::cell::Cell::new(0));
            let r = runs.clone();
            let mut apply = move |s: &mut Stm| {
                r.set(r.get() + 1);
                let a = s.get("a")?;
                let b = s.get("b")?;
                s.put("w", format!("{}{}", text(a), text(b)), PutOptions::new());
                Ok(())
            };
            let keys = [Bytes::from("a"), Bytes::from("b")];
            let mut s = Stm::new(level);
            assert_eq!(s.run(&mut apply, &keys), Step::Fetch);
            assert_eq!(runs.get(), 0, "apply waits for the prefetch");
            let first = !s.serializable();
            assert_eq!(
                gets(&s.fetch_txn().0.success),
                [("a".into(), 0, first), ("b".into(), 0, first)],
                "{level:?}"
            );
            let resp = txn_resp(4, true, vec![range(4, Some(("a", "1", 2))), range(4, None)]);
            s.fetched(&resp).unwrap();
            assert_eq!(s.run(&mut apply, &keys), Step::Commit);
            assert_eq!(runs.get(), 1, "{level:?}");
        }
        // Go's multi-key Get: nothing is fetched when one of the keys is known.
        let mut s = Stm::new(Isolation::RepeatableReads);
        s.reads.insert("b".into(), Read { kv: None, revision: 1 });
        assert_eq!(s.prefetch(&[Bytes::from("a"), Bytes::from("b")]), Ok(()));
        assert!(s.misses.is_empty());
    }

    #[test]
    fn the_first_revision_is_the_lowest_read() {
        let mut s = Stm::new(Isolation::SerializableSnapshot);
        s.enter("a".into(), Read { kv: None, revision: 9 });
        s.enter("b".into(), Read { kv: None, revision: 5 });
        assert_eq!((s.pin, s.first_revision()), (Some(9), 5));
        s.put("w", "x", PutOptions::new());
        assert_eq!(compares(&s.commit_txn()), ["a mod = 0", "b mod = 0", "w mod < 6"]);
    }

    #[test]
    fn answers_that_do_not_match_the_gets_are_errors() {
        let mut s = Stm::new(Isolation::Serializable);
        let mut apply = |s: &mut Stm| s.get("a").map(drop).map_err(Stop::from);
        assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
        let Err(Error::Etcd(e)) = s.fetched(&txn_resp(3, true, vec![])) else { panic!() };
        assert_eq!(e.code(), Code::Internal);
        let put = ResponseOp { response: Some(TxnOpResponse::ResponsePut(Default::default())) };
        assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
        assert!(s.fetched(&txn_resp(3, true, vec![put])).is_err());
        // A range without a header: the Txn's revision.
        let mut bare = range(0, None);
        if let Some(TxnOpResponse::ResponseRange(r)) = &mut bare.response {
            r.header = None;
        }
        assert_eq!(s.run(&mut apply, &[]), Step::Fetch);
        s.fetched(&txn_resp(6, true, vec![bare])).unwrap();
        assert_eq!(s.pin, Some(6));
    }
}
