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
pub(crate) struct Key<T> {
    index: usize,
    generation: u64,
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
        self.index
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
pub(crate) struct Slots<V, T> {
    entries: Slab<(u64, V)>,
    next_generation: u64,
    of: PhantomData<fn() -> T>,
}

impl<V, T> Default for Slots<V, T> {
    fn default() -> Self {
        Slots { entries: Slab::new(), next_generation: 0, of: PhantomData }
    }
}

impl<V, T> Slots<V, T> {
    /// Stores `value` under a fresh key.
    pub(crate) fn insert(&mut self, value: V) -> Key<T> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let index = self.entries.insert((generation, value));
        Key { index, generation, of: PhantomData }
    }

    pub(crate) fn get(&self, key: Key<T>) -> Option<&V> {
        self.entries.get(key.index).filter(|(g, _)| *g == key.generation).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: Key<T>) -> Option<&mut V> {
        self.entries.get_mut(key.index).filter(|(g, _)| *g == key.generation).map(|(_, v)| v)
    }

    pub(crate) fn contains(&self, key: Key<T>) -> bool {
        self.get(key).is_some()
    }

    /// Takes the entry out; `None` for a stale key.
    pub(crate) fn remove(&mut self, key: Key<T>) -> Option<V> {
        self.contains(key).then(|| self.entries.remove(key.index).1)
    }

    /// The key of the entry in slot `index`, if any.
    pub(crate) fn key_at(&self, index: usize) -> Option<Key<T>> {
        let (generation, _) = self.entries.get(index)?;
        Some(Key { index, generation: *generation, of: PhantomData })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key<T>, &V)> {
        self.entries.iter().map(|(index, (generation, v))| {
            (Key { index, generation: *generation, of: PhantomData }, v)
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Key<T>, &mut V)> {
        self.entries.iter_mut().map(|(index, (generation, v))| {
            (Key { index, generation: *generation, of: PhantomData }, v)
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
    /// A final delivery that came while the callback was out running (it called
    /// `Client::close`): handed to it as soon as it is back.
    /// Boxed: rare, and inline it would grow every stream by a `WatchResponse`.
    deferred: Option<Box<StreamItem>>,
}

/// Every stream's callback.
#[derive(Default)]
pub(crate) struct Streams {
    slots: Slots<Entry, tag::Stream>,
}

impl Streams {
    /// Registers `callback`; the owner is bound right after (see [`bind`](Self::bind)).
    pub(crate) fn add(&mut self, callback: StreamCallback) -> StreamKey {
        self.slots.insert(Entry { owner: None, callback: Some(callback), deferred: None })
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
        self.slots.remove(key).map(|e| (e.owner, e.callback))
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
            return Some(callback);
        }
        entry.callback = Some(callback);
        None
    }

    /// Keeps `item`, a final delivery, when the callback is out running; `Some(item)` when
    /// it was not kept (it is the caller's to deliver).
    pub(crate) fn defer_final(&mut self, key: StreamKey, item: StreamItem) -> Option<StreamItem> {
        match self.slots.get_mut(key) {
            Some(entry) if entry.callback.is_none() => {
                entry.deferred.get_or_insert(Box::new(item));
                None
            }
            _ => Some(item),
        }
    }

    /// The final delivery kept by [`defer_final`](Self::defer_final), once the callback is
    /// back.
    pub(crate) fn take_deferred(&mut self, key: StreamKey) -> Option<StreamItem> {
        self.slots.get_mut(key).filter(|e| e.callback.is_some())?.deferred.take().map(|b| *b)
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
}
