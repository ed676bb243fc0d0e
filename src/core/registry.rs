//! One registry for every call and stream: one typed key ([`Key`]), one generation-checked
//! table that every machine keeps its entries in ([`Slots`]), and one store of stream
//! callbacks ([`Streams`]) with one take/restore path, behind every public stream handle.
//!
//! A stream (watch, keepalive, observer, one-shot server stream) is two entries: its
//! callback here, under a [`StreamKey`] that its handle holds, and its state in the machine
//! that runs it (the [`Owner`]). When the machine ends the stream it forgets its entry and
//! queues the final delivery; the callback's entry goes once that delivery has run (a
//! cancel meanwhile finds the machine's side gone: keys are generation-checked).
//!
//! ```text
//!  add ──► live (callback in its slot) ──take──► running ──restore──► live
//!             │                                    │
//!             │ final delivery queued: ended       └ cancelled meanwhile: dropped
//!             └ cancel: removed at once (the machine forgets its side)
//! ```

use crate::error::EtcdError;
use crate::pb::etcdserverpb::{LeaseKeepAliveResponse, WatchResponse};
use crate::pb::v3electionpb::LeaderResponse;
use bytes::Bytes;
use slab::Slab;
use std::marker::PhantomData;

/// What a key points at: one empty type per table, so that a key of one cannot be used in
/// another.
pub(crate) mod tag {
    /// A gRPC call (unary or stream) in [`Calls`](super::super::calls::Calls).
    #[derive(Debug)]
    pub(crate) enum Call {}
    /// A watch in the watch hub.
    #[derive(Debug)]
    pub(crate) enum Watch {}
    /// A lease keepalive.
    #[derive(Debug)]
    pub(crate) enum Keepalive {}
    /// An election observer.
    #[derive(Debug)]
    pub(crate) enum Observe {}
    /// A stream's callback in [`Streams`](super::Streams).
    #[derive(Debug)]
    pub(crate) enum Stream {}
}

/// A slot index plus the generation it was filled with: a key that outlived its entry (a
/// timer of a call that finished, a handle of a cancelled watch) never reaches the entry
/// that reuses the slot.
///
/// Eight bytes (keys sit in every per-watch and per-keepalive table, and in timers): a `u32`
/// index (four billion live entries of one kind is beyond any client) and a `u32` generation
/// from a counter that wraps. A stale key could only reach a newcomer if its slot were reused
/// by the entry inserted exactly 2^32 insertions after its own.
pub(crate) struct Key<T> {
    index: u32,
    generation: u32,
    of: PhantomData<fn() -> T>,
}

pub(crate) type CallKey = Key<tag::Call>;
pub(crate) type WatchKey = Key<tag::Watch>;
pub(crate) type KeepaliveKey = Key<tag::Keepalive>;
pub(crate) type ObserveKey = Key<tag::Observe>;
pub(crate) type StreamKey = Key<tag::Stream>;

impl<T> Key<T> {
    /// The slot index (the h2 waker of a call is keyed by it).
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Key<T> {}
impl<T> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.index, self.generation) == (other.index, other.generation)
    }
}
impl<T> Eq for Key<T> {}
impl<T> std::hash::Hash for Key<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.index, self.generation).hash(state);
    }
}
impl<T> std::fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.index, self.generation)
    }
}

/// A slab whose entries are reached by generation-checked [`Key`]s.
///
/// A large table grows by a quarter of its size rather than doubling (see [`grow`]).
pub(crate) struct Slots<V, T> {
    entries: Slab<(u32, V)>,
    next_generation: u32,
    of: PhantomData<fn() -> T>,
}

impl<V, T> Default for Slots<V, T> {
    fn default() -> Self {
        Slots { entries: Slab::new(), next_generation: 0, of: PhantomData }
    }
}

/// Above this many entries a full table grows by a quarter instead of doubling: a table of
/// 10,000 watches then holds room for about 12,000 rather than 16,384 (each slot of the
/// watch, keepalive, stream and timer tables is paid for every watch or keepalive). Growth
/// stays geometric, so inserts stay amortized O(1); large blocks are `mremap`ed, not copied.
pub(crate) const GROW_BY_QUARTER_FROM: usize = 1024;

/// Makes room for one more entry in a full slab, by a quarter of its size once it is large.
pub(crate) fn grow<V>(slab: &mut Slab<V>) {
    let capacity = slab.capacity();
    if slab.len() == capacity && capacity >= GROW_BY_QUARTER_FROM {
        slab.reserve_exact(capacity / 4);
    }
}

impl<V, T> Slots<V, T> {
    /// Stores `value` under a fresh key.
    pub(crate) fn insert(&mut self, value: V) -> Key<T> {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        grow(&mut self.entries);
        let index = self.entries.insert((generation, value));
        let index = u32::try_from(index).expect("fewer than 2^32 live entries");
        Key { index, generation, of: PhantomData }
    }

    pub(crate) fn get(&self, key: Key<T>) -> Option<&V> {
        let slot = self.entries.get(key.index as usize);
        slot.filter(|(g, _)| *g == key.generation).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: Key<T>) -> Option<&mut V> {
        let slot = self.entries.get_mut(key.index as usize);
        slot.filter(|(g, _)| *g == key.generation).map(|(_, v)| v)
    }

    pub(crate) fn contains(&self, key: Key<T>) -> bool {
        self.get(key).is_some()
    }

    /// Takes the entry out; `None` for a stale key.
    pub(crate) fn remove(&mut self, key: Key<T>) -> Option<V> {
        self.contains(key).then(|| self.entries.remove(key.index as usize).1)
    }

    /// The entry in slot `index`, if any, with its key.
    pub(crate) fn at(&self, index: u32) -> Option<(Key<T>, &V)> {
        let (generation, v) = self.entries.get(index as usize)?;
        Some((Key { index, generation: *generation, of: PhantomData }, v))
    }

    /// The key of the entry in slot `index`, if any.
    pub(crate) fn key_at(&self, index: usize) -> Option<Key<T>> {
        let (generation, _) = self.entries.get(index)?;
        Some(Key { index: index as u32, generation: *generation, of: PhantomData })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key<T>, &V)> {
        self.entries.iter().map(|(index, (generation, v))| {
            (Key { index: index as u32, generation: *generation, of: PhantomData }, v)
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Key<T>, &mut V)> {
        self.entries.iter_mut().map(|(index, (generation, v))| {
            (Key { index: index as u32, generation: *generation, of: PhantomData }, v)
        })
    }

    /// The keys of the entries that pass `keep`, in slot order.
    pub(crate) fn keys_where(&self, keep: impl Fn(&V) -> bool) -> Vec<Key<T>> {
        self.iter().filter(|(_, v)| keep(v)).map(|(k, _)| k).collect()
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A hash index from an `i64` id (a watch id, a lease id) to the slot of the [`Slots`] entry
/// that carries it: 4 bytes a bucket, where a `HashMap<i64, Key>` takes 17. The id is not
/// stored: every operation is given `id_of`, which reads it from the entry in a slot, and
/// every slot in the index must have an entry that carries an id while it is there (remove
/// a slot from the index before its entry goes).
///
/// Open addressing with linear probing, at most three quarters full, and deletion by
/// backward shift (no tombstones). Ids come from the server, not from the network at large:
/// a multiplicative hash is enough.
#[derive(Default)]
pub(crate) struct IdIndex {
    /// Slot indexes, [`IdIndex::EMPTY`] where none; a power of two long, or empty.
    buckets: Vec<u32>,
    len: usize,
}

impl IdIndex {
    const EMPTY: u32 = u32::MAX;

    /// The slot of the entry with `id`.
    pub(crate) fn get(&self, id: i64, id_of: impl Fn(u32) -> Option<i64>) -> Option<u32> {
        self.find(id, &id_of).map(|at| self.buckets[at])
    }

    /// Points `id` at `slot` (in place of the slot it pointed at, if any).
    pub(crate) fn insert(&mut self, id: i64, slot: u32, id_of: impl Fn(u32) -> Option<i64>) {
        debug_assert_ne!(slot, Self::EMPTY);
        if let Some(at) = self.find(id, &id_of) {
            self.buckets[at] = slot;
            return;
        }
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow(&id_of);
        }
        let at = self.free_bucket(id);
        self.buckets[at] = slot;
        self.len += 1;
    }

    /// Forgets `id`; the slot it pointed at, if any.
    pub(crate) fn remove(&mut self, id: i64, id_of: impl Fn(u32) -> Option<i64>) -> Option<u32> {
        let mut hole = self.find(id, &id_of)?;
        let slot = std::mem::replace(&mut self.buckets[hole], Self::EMPTY);
        self.len -= 1;
        // Backward shift: an entry after the hole whose probe passes over the hole moves
        // into it, so that every probe still finds what it looks for before an empty bucket.
        let mask = self.buckets.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let moved = self.buckets[at];
            if moved == Self::EMPTY {
                break;
            }
            let Some(moved_id) = id_of(moved) else {
                debug_assert!(false, "a slot without an id in the index");
                continue;
            };
            let home = home(moved_id, mask);
            let stays =
                if hole <= at { hole < home && home <= at } else { hole < home || home <= at };
            if !stays {
                self.buckets[hole] = moved;
                self.buckets[at] = Self::EMPTY;
                hole = at;
            }
        }
        Some(slot)
    }

    /// Forgets every id, and gives the room back.
    pub(crate) fn clear(&mut self) {
        *self = IdIndex::default();
    }

    /// How many ids are indexed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bucket that holds `id`.
    fn find(&self, id: i64, id_of: &impl Fn(u32) -> Option<i64>) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut at = home(id, mask);
        loop {
            match self.buckets[at] {
                Self::EMPTY => return None,
                slot if id_of(slot) == Some(id) => return Some(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// The first empty bucket of `id`'s probe (there is one: the index is never full).
    fn free_bucket(&self, id: i64) -> usize {
        let mask = self.buckets.len() - 1;
        let mut at = home(id, mask);
        while self.buckets[at] != Self::EMPTY {
            at = (at + 1) & mask;
        }
        at
    }

    fn grow(&mut self, id_of: &impl Fn(u32) -> Option<i64>) {
        let size = (self.buckets.len() * 2).max(8);
        let old = std::mem::replace(&mut self.buckets, vec![Self::EMPTY; size]);
        for slot in old.into_iter().filter(|&s| s != Self::EMPTY) {
            let Some(id) = id_of(slot) else {
                debug_assert!(false, "a slot without an id in the index");
                self.len -= 1;
                continue;
            };
            let at = self.free_bucket(id);
            self.buckets[at] = slot;
        }
    }
}

/// The bucket where `id`'s probe starts (Fibonacci hashing: the high bits of the product).
fn home(id: i64, mask: usize) -> usize {
    let h = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as usize & mask
}

/// What a stream's callback receives, one kind per stream kind. An `Err` is always the
/// stream's final delivery; a one-shot server stream also ends with `Ok(None)`.
#[derive(Debug)]
pub(crate) enum StreamItem {
    Watch(Result<WatchResponse, EtcdError>),
    Keepalive(Result<LeaseKeepAliveResponse, EtcdError>),
    Observe(Result<LeaderResponse, EtcdError>),
    /// A message of a one-shot server stream (snapshot, RangeStream), `None` at its clean end.
    Sink(Result<Option<Bytes>, EtcdError>),
}

impl StreamItem {
    /// Whether nothing follows this item.
    pub(crate) fn is_final(&self) -> bool {
        match self {
            StreamItem::Watch(r) => r.is_err(),
            StreamItem::Keepalive(r) => r.is_err(),
            StreamItem::Observe(r) => r.is_err(),
            StreamItem::Sink(r) => !matches!(r, Ok(Some(_))),
        }
    }
}

/// A stream's callback, of the kind its [`StreamItem`]s are.
pub(crate) enum StreamCallback {
    Watch(Box<dyn FnMut(Result<WatchResponse, EtcdError>)>),
    Keepalive(Box<dyn FnMut(Result<LeaseKeepAliveResponse, EtcdError>)>),
    Observe(Box<dyn FnMut(Result<LeaderResponse, EtcdError>)>),
    Sink(Box<dyn FnMut(Result<Option<Bytes>, EtcdError>)>),
}

impl StreamCallback {
    /// Runs the callback with `item` (an item of another kind cannot be made: it is dropped).
    pub(crate) fn call(&mut self, item: StreamItem) {
        match (self, item) {
            (StreamCallback::Watch(cb), StreamItem::Watch(r)) => cb(r),
            (StreamCallback::Keepalive(cb), StreamItem::Keepalive(r)) => cb(r),
            (StreamCallback::Observe(cb), StreamItem::Observe(r)) => cb(r),
            (StreamCallback::Sink(cb), StreamItem::Sink(r)) => cb(r),
            _ => debug_assert!(false, "a stream item of another kind"),
        }
    }
}

/// The machine entry that runs a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Watch(WatchKey),
    Keepalive(KeepaliveKey),
    Observe(ObserveKey),
    /// A one-shot server stream: its call is all its state.
    Sink(CallKey),
}

struct Entry {
    /// `None` once the machine ended the stream (its final delivery is queued).
    owner: Option<Owner>,
    /// Taken out while it runs.
    callback: Option<StreamCallback>,
}

/// Every stream's callback.
#[derive(Default)]
pub(crate) struct Streams {
    slots: Slots<Entry, tag::Stream>,
    /// Final deliveries that came while their callback was out running (it called
    /// `Client::close`): handed to it as soon as it is back. Beside the entries, not in
    /// them: rare, and inline every stream would pay for a `StreamItem`.
    deferred: Vec<(StreamKey, StreamItem)>,
}

impl Streams {
    /// Registers `callback`; the owner is bound right after (see [`bind`](Self::bind)).
    pub(crate) fn add(&mut self, callback: StreamCallback) -> StreamKey {
        self.slots.insert(Entry { owner: None, callback: Some(callback) })
    }

    /// Names the machine entry that runs stream `key`.
    pub(crate) fn bind(&mut self, key: StreamKey, owner: Owner) {
        if let Some(e) = self.slots.get_mut(key) {
            e.owner = Some(owner);
        }
    }

    /// Removes stream `key` at once (cancelled, or the client closed): returns the machine
    /// entry to stop, if it still runs, and the callback, if not out running, to be dropped
    /// once no borrow is held.
    pub(crate) fn remove(
        &mut self,
        key: StreamKey,
    ) -> Option<(Option<Owner>, Option<StreamCallback>)> {
        let entry = self.slots.remove(key)?;
        self.forget_deferred(key);
        Some((entry.owner, entry.callback))
    }

    /// Takes stream `key`'s callback out to run it.
    pub(crate) fn take(&mut self, key: StreamKey) -> Option<StreamCallback> {
        self.slots.get_mut(key)?.callback.take()
    }

    /// Puts a callback back after it ran. `delivered_final`: what it ran was the stream's
    /// final delivery, so the entry goes. A callback not put back (cancelled meanwhile, or
    /// final) is returned, for the caller to drop once no borrow is held.
    pub(crate) fn restore(
        &mut self,
        key: StreamKey,
        callback: StreamCallback,
        delivered_final: bool,
    ) -> Option<StreamCallback> {
        let Some(entry) = self.slots.get_mut(key) else { return Some(callback) };
        if delivered_final {
            self.slots.remove(key);
            self.forget_deferred(key);
            return Some(callback);
        }
        entry.callback = Some(callback);
        None
    }

    /// Keeps `item`, a final delivery, when the callback is out running; `Some(item)` when
    /// it was not kept (it is the caller's to deliver).
    pub(crate) fn defer_final(&mut self, key: StreamKey, item: StreamItem) -> Option<StreamItem> {
        match self.slots.get(key) {
            Some(entry) if entry.callback.is_none() => {
                if !self.deferred.iter().any(|(k, _)| *k == key) {
                    self.deferred.push((key, item));
                }
                None
            }
            _ => Some(item),
        }
    }

    /// The final delivery kept by [`defer_final`](Self::defer_final), once the callback is
    /// back.
    pub(crate) fn take_deferred(&mut self, key: StreamKey) -> Option<StreamItem> {
        self.slots.get(key).filter(|e| e.callback.is_some())?;
        let at = self.deferred.iter().position(|(k, _)| *k == key)?;
        Some(self.deferred.swap_remove(at).1)
    }

    fn forget_deferred(&mut self, key: StreamKey) {
        if !self.deferred.is_empty() {
            self.deferred.retain(|(k, _)| *k != key);
        }
    }

    /// Whether no stream is registered (ended ones waiting for their last delivery count).
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn sink(seen: &Rc<RefCell<Vec<String>>>) -> StreamCallback {
        let seen = seen.clone();
        StreamCallback::Sink(Box::new(move |r| seen.borrow_mut().push(format!("{r:?}"))))
    }

    #[test]
    fn a_stale_key_never_reaches_the_entry_that_reuses_its_slot() {
        let mut slots: Slots<&str, tag::Call> = Slots::default();
        let a = slots.insert("a");
        assert_eq!(slots.remove(a), Some("a"));
        let b = slots.insert("b");
        assert_eq!(a.index(), b.index(), "the slot is reused");
        assert_eq!((slots.get(a), slots.get(b)), (None, Some(&"b")));
        assert_eq!(slots.remove(a), None);
        assert_eq!(slots.key_at(b.index()), Some(b));
        assert_eq!(slots.keys_where(|v| *v == "b"), vec![b]);
    }

    #[test]
    fn take_run_restore_and_the_final_delivery_removes_the_entry() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut streams = Streams::default();
        let key = streams.add(sink(&seen));
        streams.bind(key, Owner::Sink(Slots::<(), tag::Call>::default().insert(())));
        let mut cb = streams.take(key).unwrap();
        assert!(streams.take(key).is_none(), "out while it runs");
        cb.call(StreamItem::Sink(Ok(Some(Bytes::from_static(b"x")))));
        assert!(streams.restore(key, cb, false).is_none());
        let mut cb = streams.take(key).unwrap();
        cb.call(StreamItem::Sink(Ok(None)));
        assert!(streams.restore(key, cb, true).is_some(), "handed back to be dropped");
        assert!(streams.is_empty());
        assert_eq!(seen.borrow().len(), 2);
    }

    #[test]
    fn a_cancel_while_the_callback_runs_drops_it_when_it_comes_back() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut streams = Streams::default();
        let key = streams.add(sink(&seen));
        let cb = streams.take(key).unwrap();
        assert!(matches!(streams.remove(key), Some((None, None))));
        assert!(streams.restore(key, cb, false).is_some());
        assert!(streams.is_empty());
    }

    #[test]
    fn a_final_delivery_while_the_callback_runs_waits_for_it() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut streams = Streams::default();
        let key = streams.add(sink(&seen));
        let cb = streams.take(key).unwrap();
        let err = EtcdError::new(Code::Cancelled, "closed", "snapshot");
        assert!(streams.defer_final(key, StreamItem::Sink(Err(err))).is_none());
        assert!(streams.take_deferred(key).is_none(), "not while the callback is out");
        assert!(streams.restore(key, cb, false).is_none());
        assert!(streams.take_deferred(key).unwrap().is_final());
    }

    #[test]
    fn keys_are_eight_bytes() {
        assert_eq!(std::mem::size_of::<StreamKey>(), 8);
        assert_eq!(std::mem::size_of::<Option<Owner>>(), 12);
    }

    #[test]
    fn a_large_table_grows_by_a_quarter() {
        let mut slots: Slots<u64, tag::Call> = Slots::default();
        for i in 0..10_000 {
            slots.insert(i);
        }
        let capacity = slots.entries.capacity();
        assert!((10_000..=12_500).contains(&capacity), "{capacity}");
    }

    #[test]
    fn the_id_index_matches_a_map_under_random_operations() {
        use std::collections::HashMap;
        // The entries: slot → id, as a `Slots` entry would carry it.
        let mut ids: HashMap<u32, i64> = HashMap::new();
        let mut model: HashMap<i64, u32> = HashMap::new();
        let mut index = IdIndex::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next_slot = 0u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct ids (collisions, re-pointing), some huge or negative.
            let id = match x % 3 {
                0 => (x >> 8) as i64 % 300,
                1 => ((x >> 8) as i64 % 300) << 40,
                _ => -((x >> 8) as i64 % 300),
            };
            let view = ids.clone();
            let id_of = |s: u32| view.get(&s).copied();
            match (x >> 4) % 4 {
                0 | 1 => {
                    let slot = next_slot;
                    next_slot += 1;
                    // Re-pointing an id: the old entry still says it while the index
                    // changes (as in the hub), then it is out of the index.
                    ids.insert(slot, id);
                    let view = ids.clone();
                    index.insert(id, slot, |s| view.get(&s).copied());
                    if let Some(old) = model.insert(id, slot) {
                        ids.remove(&old);
                    }
                }
                2 => {
                    let expected = model.remove(&id);
                    assert_eq!(index.remove(id, id_of), expected);
                    if let Some(slot) = expected {
                        ids.remove(&slot);
                    }
                }
                _ => assert_eq!(index.get(id, id_of), model.get(&id).copied()),
            }
            assert_eq!(index.len(), model.len());
        }
        let view = ids.clone();
        for (id, slot) in &model {
            assert_eq!(index.get(*id, |s| view.get(&s).copied()), Some(*slot));
        }
        index.clear();
        assert_eq!(index.get(1, |s| view.get(&s).copied()), None);
    }
}
