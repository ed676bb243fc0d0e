//! How a [`ConfigSource`] keeps its view current: the paged read, the watch from the next
//! revision, the re-read when the watch ends, the backoff after failures, and the one path
//! to the user's callback.
//!
//! Every read, watch and backoff gets a new *epoch*; a callback of the client that carries an
//! older one (a read cancelled, a watch already replaced) is ignored, and so is everything
//! once the source is closed. Callbacks of the client hold the source weakly: dropping the
//! last handle closes it.

use super::view::{Map, View, Write};
use super::{ConfigEvent, ConfigSource};
use crate::client::{Client, Fired};
use crate::core::failure::backoff;
use crate::error::{Code, EtcdError};
use crate::handle::Watch;
use crate::ops::kv::GetOptions;
use crate::ops::paged::PagedRead;
use crate::ops::watch::WatchOptions;
use crate::pb::etcdserverpb::{RangeResponse, WatchResponse};
use crate::pb::mvccpb::event::EventType;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Keys per page of a snapshot read (Go's mirror syncer reads 1,000 at a time).
const PAGE_SIZE: i64 = 1000;

/// The user's callback.
pub(super) type OnEvent = Box<dyn FnMut(&ConfigSource, ConfigEvent)>;

/// What every clone of a source shares.
pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) prefix: Bytes,
    pub(super) state: RefCell<State>,
    pub(super) pages: Cell<u64>,
    /// Out (taken) while it runs; dropped on close.
    callback: RefCell<Option<OnEvent>>,
    /// Events waiting for the callback: delivered in order, one at a time.
    queue: RefCell<VecDeque<ConfigEvent>>,
    delivering: Cell<bool>,
}

pub(super) struct State {
    pub(super) view: View,
    pub(super) run: Run,
    /// Bumped by every read, watch and backoff started.
    epoch: u64,
    /// Failures in a row (reads, and watches that ended other than by a compaction): the
    /// backoff grows with them; a watch created resets them.
    failures: u32,
    /// The first snapshot was delivered: later reads are resyncs.
    snapshot_delivered: bool,
    /// `Client::close` calls when the source opened: one more stops it.
    closes: u64,
}

/// What the source is doing.
#[derive(Debug)]
pub(super) enum Run {
    /// Reading the prefix, a page at a time.
    Reading(PagedRead),
    /// Following changes.
    Watching(Watch),
    /// Waiting before reading again (the client's alarm key).
    Backoff(u64),
    /// Nothing runs: before the first read, and once the client was closed (the callback
    /// then had its last event, an `Error`).
    Stopped,
    /// Closed: nothing runs, the callback is gone.
    Closed,
}

impl Shared {
    pub(super) fn new(client: &Client, prefix: Bytes, base: Map, callback: OnEvent) -> Shared {
        let state = State {
            view: View::new(base),
            run: Run::Stopped,
            epoch: 0,
            failures: 0,
            snapshot_delivered: false,
            closes: client.inner().closes.get(),
        };
        Shared {
            client: client.clone(),
            prefix,
            state: RefCell::new(state),
            pages: Cell::new(0),
            callback: RefCell::new(Some(callback)),
            queue: RefCell::default(),
            delivering: Cell::new(false),
        }
    }

    /// The prefix followed by `key`.
    pub(super) fn full_key(&self, key: &[u8]) -> Bytes {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full.into()
    }

    pub(super) fn is_synced(&self) -> bool {
        let state = self.state.borrow();
        state.snapshot_delivered && matches!(state.run, Run::Watching(_))
    }

    pub(super) fn is_closed(&self) -> bool {
        matches!(self.state.borrow().run, Run::Closed)
    }

    /// Closes the source; returns the callback for the caller to drop outside the borrows
    /// (`None` while it is out running: the delivery loop drops it when it comes back).
    pub(super) fn close(&self) -> Option<OnEvent> {
        let run = std::mem::replace(&mut self.state.borrow_mut().run, Run::Closed);
        self.cancel(run);
        self.queue.borrow_mut().clear();
        self.callback.borrow_mut().take()
    }

    /// Abandons what `run` was doing.
    fn cancel(&self, run: Run) {
        match run {
            Run::Reading(read) => read.cancel(),
            Run::Watching(watch) => watch.cancel(|_| ()),
            Run::Backoff(alarm) => self.client.disarm(alarm),
            Run::Stopped | Run::Closed => {}
        }
    }

    /// Starts a new epoch: what runs under the old one is ignored from now on.
    fn next_epoch(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.epoch += 1;
        state.epoch
    }

    /// Whether `Client::close` was called since the source opened.
    fn client_closed(&self) -> bool {
        self.client.inner().closes.get() != self.state.borrow().closes
    }
}

impl Drop for Shared {
    /// The last handle is gone: nobody can read the view any more, so the source stops.
    fn drop(&mut self) {
        let run = std::mem::replace(&mut self.state.borrow_mut().run, Run::Closed);
        self.cancel(run);
    }
}

impl ConfigSource {
    /// The source behind a client callback's weak reference, if the callback is of the
    /// current epoch and the source neither closed nor stopped.
    fn current(weak: &Weak<Shared>, epoch: u64) -> Option<ConfigSource> {
        let source = ConfigSource(weak.upgrade()?);
        let live = {
            let state = source.0.state.borrow();
            state.epoch == epoch && !matches!(state.run, Run::Closed | Run::Stopped)
        };
        live.then_some(source)
    }

    /// Records what the source now does, unless it was closed meanwhile (then undoes it).
    fn set_run(&self, epoch: u64, run: Run) {
        let undo = {
            let mut state = self.0.state.borrow_mut();
            match state.epoch == epoch && !matches!(state.run, Run::Closed) {
                true => {
                    state.run = run;
                    None
                }
                false => Some(run),
            }
        };
        if let Some(run) = undo {
            self.0.cancel(run);
        }
    }

    /// Reads the whole prefix in pages at one revision: the snapshot, or a resync.
    pub(super) fn read(&self) {
        let epoch = self.0.next_epoch();
        let weak = Rc::downgrade(&self.0);
        let prefix = self.0.prefix.clone();
        let mut incoming = Map::new();
        let mut revision = 0;
        let options = GetOptions::new().prefix(true);
        let on_page = move |page: Result<RangeResponse, EtcdError>| {
            let Some(source) = ConfigSource::current(&weak, epoch) else { return };
            let page = match page {
                Ok(page) => page,
                Err(e) => return source.failed(e),
            };
            source.0.pages.set(source.0.pages.get() + 1);
            // The read is at the revision of the first header (on the RangeStream path only
            // the last page has one).
            if revision == 0 {
                revision = page.header.as_ref().map_or(0, |h| h.revision);
            }
            let kvs = page.kvs.into_iter();
            incoming.extend(kvs.filter_map(|kv| Some((relative(&prefix, kv.key)?, kv.value))));
            if !page.more {
                source.read_done(std::mem::take(&mut incoming), revision);
            }
        };
        let read = self.0.client.get_paged(self.0.prefix.clone(), options, PAGE_SIZE, on_page);
        self.set_run(epoch, Run::Reading(read));
    }

    /// The last page came: the view becomes the read, the watch starts after it.
    fn read_done(&self, incoming: Map, revision: i64) {
        if revision <= 0 {
            let msg = "the snapshot read carried no revision";
            return self.failed(EtcdError::new(Code::Internal, msg, "config_source"));
        }
        let event = {
            let mut state = self.0.state.borrow_mut();
            let changes = state.view.replace(incoming, revision);
            match std::mem::replace(&mut state.snapshot_delivered, true) {
                false => ConfigEvent::Snapshot { revision },
                true => ConfigEvent::Resynced { revision, changes },
            }
        };
        // Started before the callback runs, so that a `close` from it cancels the watch.
        self.watch_from(revision.saturating_add(1));
        self.deliver(event);
    }

    /// Watches the prefix from `revision` on.
    fn watch_from(&self, revision: i64) {
        let epoch = self.0.next_epoch();
        let weak = Rc::downgrade(&self.0);
        let prefix = self.0.prefix.clone();
        // Progress notifications move the view's revision on while nothing changes.
        let options =
            WatchOptions::new().prefix(true).start_revision(revision).progress_notify(true);
        let on_watch = move |res: Result<WatchResponse, EtcdError>| {
            let Some(source) = ConfigSource::current(&weak, epoch) else { return };
            match res {
                Ok(resp) => source.watched(&prefix, resp),
                Err(e) => source.watch_ended(e),
            }
        };
        let watch = self.0.client.watch(self.0.prefix.clone(), options, on_watch);
        self.set_run(epoch, Run::Watching(watch));
    }

    /// A watch response: each revision's writes applied and delivered in turn.
    fn watched(&self, prefix: &Bytes, resp: WatchResponse) {
        if resp.created {
            self.0.state.borrow_mut().failures = 0;
            return;
        }
        if resp.events.is_empty() {
            // The server's progress notification for this watch (not a reply to someone's
            // `request_progress`, id -1, which etcd may send while events are still due).
            if resp.watch_id != -1 {
                let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                self.0.state.borrow_mut().view.advance(revision);
            }
            return;
        }
        for (revision, writes) in by_revision(prefix, resp) {
            if self.is_closed() {
                return; // closed from the callback: the view stays as it was
            }
            if revision <= self.revision() {
                continue; // already in the view (the client drops repeats; not trusted)
            }
            let changes = self.0.state.borrow_mut().view.apply(revision, writes);
            if !changes.is_empty() {
                self.deliver(ConfigEvent::Changed { revision, changes });
            }
        }
    }

    /// The watch ended: a compaction is re-read at once, another error after a backoff.
    fn watch_ended(&self, e: EtcdError) {
        match e.compact_revision() {
            Some(_) if !self.0.client_closed() => self.read(),
            _ => self.failed(e),
        }
    }

    /// A read or watch failed: `Error(e)`, then a new read after the backoff; or, once the
    /// client was closed, `Error(e)` and nothing more.
    fn failed(&self, e: EtcdError) {
        if self.0.client_closed() {
            self.0.state.borrow_mut().run = Run::Stopped;
            return self.deliver(ConfigEvent::Error(e));
        }
        let delay = {
            let mut state = self.0.state.borrow_mut();
            state.failures = state.failures.saturating_add(1);
            jittered(backoff(state.failures))
        };
        let epoch = self.0.next_epoch();
        let weak = Rc::downgrade(&self.0);
        let alarm = self.0.client.after(delay, move |fired| {
            if let Some(source) = ConfigSource::current(&weak, epoch) {
                match fired {
                    Fired::Due => source.read(),
                    // Closed during the backoff: the source ends with that (see `failed`).
                    Fired::Closed => source.failed(EtcdError::new(
                        Code::Cancelled,
                        "client closed",
                        "config source",
                    )),
                }
            }
        });
        self.set_run(epoch, Run::Backoff(alarm));
        self.deliver(ConfigEvent::Error(e));
    }

    /// Queues `event` for the callback and delivers what is queued, in order, unless a
    /// delivery further up the stack is already doing so. No borrow is held while the
    /// callback runs; once the source is closed nothing more is delivered.
    fn deliver(&self, event: ConfigEvent) {
        if self.is_closed() {
            return;
        }
        self.0.queue.borrow_mut().push_back(event);
        if self.0.delivering.replace(true) {
            return;
        }
        let _delivering = Delivering(&self.0);
        loop {
            let next = self.0.queue.borrow_mut().pop_front();
            let Some(event) = next else { break };
            let taken = self.0.callback.borrow_mut().take();
            let Some(callback) = taken else { break };
            let mut out = Out { shared: &self.0, callback: Some(callback) };
            if let Some(callback) = out.callback.as_mut() {
                callback(self, event);
            }
            drop(out);
            if self.is_closed() {
                self.0.queue.borrow_mut().clear();
                break;
            }
        }
    }
}

/// Marks a delivery loop as running; its end (or a panicking callback) clears the mark.
struct Delivering<'a>(&'a Shared);

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        self.0.delivering.set(false);
    }
}

/// The callback while it runs: put back afterwards (also when it panics), unless it closed
/// the source, in which case it is dropped here, with no borrow held.
struct Out<'a> {
    shared: &'a Shared,
    callback: Option<OnEvent>,
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        let callback = self.callback.take();
        if !self.shared.is_closed() {
            *self.shared.callback.borrow_mut() = callback;
        }
    }
}

/// `key` without `prefix`; `None` for a key outside it (never sent for a prefix watch or
/// read, but not trusted).
fn relative(prefix: &Bytes, key: Bytes) -> Option<Bytes> {
    key.starts_with(prefix).then(|| key.slice(prefix.len()..))
}

/// A watch response's events as the writes of each revision, in order.
fn by_revision(prefix: &Bytes, resp: WatchResponse) -> Vec<(i64, Vec<Write>)> {
    let mut out: Vec<(i64, Vec<Write>)> = Vec::new();
    for event in resp.events {
        let deleted = event.r#type() == EventType::Delete;
        let Some(kv) = event.kv else { continue };
        let Some(key) = relative(prefix, kv.key) else { continue };
        let write = (key, (!deleted).then_some(kv.value));
        match out.last_mut() {
            Some((revision, writes)) if *revision == kv.mod_revision => writes.push(write),
            _ => out.push((kv.mod_revision, vec![write])),
        }
    }
    out
}

/// `delay` moved by a random fraction of at most ±20 %, so that many sources that lost etcd
/// together do not all read their prefix again at the same moment.
fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // std's hasher keys are random per process and change with every `RandomState`.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(delay.subsec_nanos());
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::{Event, KeyValue};

    fn event(kind: EventType, key: &'static str, value: &'static str, revision: i64) -> Event {
        let kv = KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
            mod_revision: revision,
            ..KeyValue::default()
        };
        Event { r#type: kind as i32, kv: Some(kv), prev_kv: None }
    }

    #[test]
    fn events_are_grouped_by_revision_and_stripped_of_the_prefix() {
        let p = Bytes::from_static(b"cfg/");
        let resp = WatchResponse {
            events: vec![
                event(EventType::Put, "cfg/a", "1", 5),
                event(EventType::Delete, "cfg/b", "", 5),
                event(EventType::Put, "cfg/", "root", 6),
                event(EventType::Put, "other/x", "1", 6),
                Event { r#type: 0, kv: None, prev_kv: None },
                event(EventType::Put, "cfg/a", "2", 7),
            ],
            ..WatchResponse::default()
        };
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let got = by_revision(&p, resp);
        let want = vec![
            (5, vec![(b("a"), Some(b("1"))), (b("b"), None)]),
            (6, vec![(b(""), Some(b("root")))]),
            (7, vec![(b("a"), Some(b("2")))]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn the_backoff_is_jittered_within_a_fifth() {
        for n in 1..50 {
            let d = backoff(n);
            let j = jittered(d);
            assert!(j >= d.mul_f64(0.8) && j <= d.mul_f64(1.2), "{d:?} -> {j:?}");
        }
        assert!(jittered(Duration::ZERO).is_zero());
    }
}
