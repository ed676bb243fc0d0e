//! A property test of the watch hub against a model: a scripted etcd (one store, one watch
//! stream at a time) and random sequences of watches added and cancelled, writes, creates
//! answered, events sent whole or in fragments, repeats, progress notifications, progress
//! requests, server cancels and lost streams. For every watch, the revisions its callback
//! receives strictly increase (none repeated), are exactly the store's revisions of its key
//! from its start on (none skipped), and once the stream is left to settle, all of them.
//! Case counts: see `grpc::proptest_config`.

use super::*;
use crate::core::registry::StreamItem;
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::{Event, KeyValue};
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The keys watched and written.
const KEYS: [&str; 3] = ["a", "b", "c"];

/// One step of a run.
#[derive(Clone, Debug)]
enum Op {
    /// The client adds a watch on `KEYS[key]`: from "now" (`None`), or from the current
    /// revision plus `Some(offset)` (at least 1; it may lie in the future).
    Add { key: usize, start: Option<i64> },
    /// The client cancels one of its watches (by position among those added).
    Cancel(usize),
    /// A write: the next revision changes `KEYS[key]`.
    Write(usize),
    /// The client opens a stream (when none is open).
    Open,
    /// The stream breaks: the server forgets its watches and unsent responses.
    Lost,
    /// The server reads the client's requests (creates, cancels, progress requests).
    Pump,
    /// The server scans up to `revs` revisions for one of its watches and sends the events
    /// found, in fragments of `frag` events (0: whole).
    Sync { watch: usize, revs: i64, frag: usize },
    /// The server sends one of its watches a progress notification, if it has sent that
    /// watch every event up to the current revision (as etcd does).
    Progress(usize),
    /// The client asks for progress (etcd 3.5 answers at once, caught up or not).
    RequestProgress,
    /// The server goes back `by` revisions for one of its watches: it sends again events
    /// already sent, which the hub must drop.
    Rewind { watch: usize, by: i64 },
    /// The server cancels one of its watches (a compaction).
    ServerCancel(usize),
    /// The client reads up to `n` responses: as one batch (every delivery queued before any
    /// callback runs) or one at a time.
    Deliver { n: usize, batch: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS.len(), prop::option::of(-3i64..4)).prop_map(|(key, start)| Op::Add { key, start }),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => (0..KEYS.len()).prop_map(Op::Write),
        2 => Just(Op::Open),
        1 => Just(Op::Lost),
        3 => Just(Op::Pump),
        4 => (any::<usize>(), 1i64..6, 0usize..3).prop_map(|(watch, revs, frag)| Op::Sync { watch, revs, frag }),
        1 => any::<usize>().prop_map(Op::Progress),
        1 => Just(Op::RequestProgress),
        1 => (any::<usize>(), 1i64..5).prop_map(|(watch, by)| Op::Rewind { watch, by }),
        1 => any::<usize>().prop_map(Op::ServerCancel),
        4 => (1usize..6, any::<bool>()).prop_map(|(n, batch)| Op::Deliver { n, batch }),
    ]
}

type Seen = Rc<RefCell<Vec<Result<WatchResponse, EtcdError>>>>;

/// A watch as the client made it.
struct ClientWatch {
    key: StreamKey,
    kv: usize,
    /// The requested start revision; 0 for "now".
    start: i64,
    seen: Seen,
    /// How many deliveries it had when it was cancelled.
    cancelled_at: Option<usize>,
}

/// A watch as the server knows it.
struct ServerWatch {
    kv: usize,
    /// The first revision not yet scanned.
    next: i64,
}

/// The scripted etcd and the client's watches, around the hub under test.
#[derive(Default)]
struct World {
    hub: super::tests::TestHub,
    watches: Vec<ClientWatch>,
    /// `writes[i]` is the key changed at revision `i + 2` (a new etcd is at revision 1).
    writes: Vec<usize>,
    open: bool,
    /// The current stream's watches by id, and the next id (ids restart on each stream).
    server: BTreeMap<i64, ServerWatch>,
    next_id: i64,
    /// Responses sent and not yet read by the client, in order.
    wire: VecDeque<WatchResponse>,
}

impl World {
    fn rev(&self) -> i64 {
        1 + self.writes.len() as i64
    }

    fn key_at(&self, rev: i64) -> usize {
        self.writes[(rev - 2) as usize]
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision: self.rev(), ..Default::default() })
    }

    fn server_watch(&self, n: usize) -> Option<i64> {
        (!self.server.is_empty()).then(|| *self.server.keys().nth(n % self.server.len()).unwrap())
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Add { key, start } => {
                let start = start.map_or(0, |off| (self.rev() + off).max(1));
                let seen: Seen = Default::default();
                let cb = seen.clone();
                let create = WatchCreateRequest {
                    key: KEYS[key].into(),
                    start_revision: start,
                    ..Default::default()
                };
                let key_ = self.hub.add(create, Box::new(move |r| cb.borrow_mut().push(r)));
                self.watches.push(ClientWatch {
                    key: key_,
                    kv: key,
                    start,
                    seen,
                    cancelled_at: None,
                });
            }
            Op::Cancel(n) => {
                if self.watches.is_empty() {
                    return;
                }
                let len = self.watches.len();
                let w = &mut self.watches[n % len];
                if w.cancelled_at.is_none() {
                    self.hub.cancel(w.key);
                    w.cancelled_at = Some(w.seen.borrow().len());
                }
            }
            Op::Write(key) => self.writes.push(key),
            Op::Open => {
                if !self.open {
                    self.open = true;
                    self.next_id = 0;
                    self.hub.on_stream_opened();
                }
            }
            Op::Lost => {
                if self.open {
                    self.open = false;
                    self.server.clear();
                    self.wire.clear();
                    self.hub.on_stream_lost();
                }
            }
            Op::Pump => self.pump(),
            Op::Sync { watch, revs, frag } => {
                if let Some(id) = self.server_watch(watch) {
                    self.sync(id, revs, frag);
                }
            }
            Op::Progress(n) => {
                let Some(id) = self.server_watch(n) else { return };
                if self.server[&id].next > self.rev() {
                    let resp =
                        WatchResponse { watch_id: id, header: self.header(), ..Default::default() };
                    self.wire.push_back(resp);
                }
            }
            Op::RequestProgress => self.hub.request_progress(),
            Op::Rewind { watch, by } => {
                if let Some(id) = self.server_watch(watch) {
                    let w = self.server.get_mut(&id).unwrap();
                    w.next = (w.next - by).max(2);
                }
            }
            Op::ServerCancel(n) => {
                let Some(id) = self.server_watch(n) else { return };
                self.server.remove(&id);
                let resp = WatchResponse {
                    watch_id: id,
                    canceled: true,
                    compact_revision: self.rev(),
                    header: self.header(),
                    ..Default::default()
                };
                self.wire.push_back(resp);
            }
            Op::Deliver { n, batch } => self.deliver(n, batch),
        }
        if !self.open {
            assert!(!self.hub.has_outbox(), "nothing is queued for a stream that is not open");
        }
    }

    /// The server reads and answers the client's requests, as etcd does.
    fn pump(&mut self) {
        for req in self.hub.take_outbox() {
            match req.request_union.expect("a request") {
                watch_request::RequestUnion::CreateRequest(c) => {
                    let kv = KEYS.iter().position(|k| k.as_bytes() == &c.key[..]).unwrap();
                    let id = self.next_id;
                    self.next_id += 1;
                    let next = if c.start_revision > 0 { c.start_revision } else { self.rev() + 1 };
                    self.server.insert(id, ServerWatch { kv, next });
                    let resp = WatchResponse {
                        created: true,
                        watch_id: id,
                        header: self.header(),
                        ..Default::default()
                    };
                    self.wire.push_back(resp);
                }
                watch_request::RequestUnion::CancelRequest(c) => {
                    // etcd answers a cancel only for a watch it has.
                    if self.server.remove(&c.watch_id).is_some() {
                        let resp = WatchResponse {
                            watch_id: c.watch_id,
                            canceled: true,
                            header: self.header(),
                            ..Default::default()
                        };
                        self.wire.push_back(resp);
                    }
                }
                watch_request::RequestUnion::ProgressRequest(_) => {
                    let resp =
                        WatchResponse { watch_id: -1, header: self.header(), ..Default::default() };
                    self.wire.push_back(resp);
                }
            }
        }
    }

    /// Scans up to `revs` revisions for watch `id` and sends its events, if any.
    fn sync(&mut self, id: i64, revs: i64, frag: usize) {
        let (kv, from) = (self.server[&id].kv, self.server[&id].next.max(2));
        let to = (from + revs - 1).min(self.rev());
        if to < from {
            return;
        }
        self.server.get_mut(&id).unwrap().next = to + 1;
        let events: Vec<Event> = (from..=to)
            .filter(|&r| self.key_at(r) == kv)
            .map(|r| Event {
                kv: Some(KeyValue { key: KEYS[kv].into(), mod_revision: r, ..Default::default() }),
                ..Default::default()
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let parts: Vec<Vec<Event>> = if frag == 0 {
            vec![events]
        } else {
            events.chunks(frag).map(<[Event]>::to_vec).collect()
        };
        let last = parts.len() - 1;
        for (i, events) in parts.into_iter().enumerate() {
            let resp = WatchResponse {
                watch_id: id,
                header: self.header(),
                events,
                fragment: i < last,
                ..Default::default()
            };
            self.wire.push_back(resp);
        }
    }

    /// The client reads up to `n` responses and runs the callbacks as the client does.
    fn deliver(&mut self, n: usize, batch: bool) {
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(resp) = self.wire.pop_front() else { break };
            self.hub.on_response(resp, &mut out);
            if !batch {
                self.run(&mut out);
            }
        }
        self.run(&mut out);
    }

    fn run(&mut self, out: &mut Vec<Delivery>) {
        for (key, item) in out.drain(..) {
            if let Some(mut cb) = self.hub.take_callback(key) {
                let last = item.is_err();
                cb.call(StreamItem::Watch(item));
                drop(self.hub.restore_callback(key, cb, last));
            }
        }
    }

    /// Lets the stream settle: open, every request answered, every event sent and read.
    fn settle(&mut self) {
        self.apply(Op::Open);
        for _ in 0..10 {
            self.pump();
            let ids: Vec<i64> = self.server.keys().copied().collect();
            for id in ids {
                self.sync(id, i64::MAX / 4, 0);
            }
            self.deliver(usize::MAX, false);
            if !self.hub.has_outbox() && self.wire.is_empty() {
                return;
            }
        }
        panic!("the stream does not settle");
    }

    /// Checks every watch's deliveries; with `settled`, that each live one has them all.
    fn check(&self, settled: bool) -> Result<(), TestCaseError> {
        for (i, w) in self.watches.iter().enumerate() {
            let seen = w.seen.borrow();
            if let Some(at) = w.cancelled_at {
                prop_assert_eq!(seen.len(), at, "watch {}: a delivery after its cancel", i);
            }
            let errors = seen.iter().filter(|r| r.is_err()).count();
            prop_assert!(errors <= 1, "watch {}: {} final errors", i, errors);
            if errors == 1 {
                prop_assert!(
                    seen.last().unwrap().is_err(),
                    "watch {}: a delivery after its end",
                    i
                );
            }
            let ok: Vec<&WatchResponse> = seen.iter().filter_map(|r| r.as_ref().ok()).collect();
            let Some(first) = ok.first() else { continue };
            prop_assert!(first.created, "watch {}: the first delivery is its created reply", i);
            prop_assert!(ok.iter().all(|r| !r.fragment), "watch {}: a fragment delivered", i);
            let start =
                if w.start > 0 { w.start } else { first.header.as_ref().unwrap().revision + 1 };
            let got: Vec<i64> = ok
                .iter()
                .flat_map(|r| &r.events)
                .map(|ev| {
                    let kv = ev.kv.as_ref().unwrap();
                    assert_eq!(
                        &kv.key[..],
                        KEYS[w.kv].as_bytes(),
                        "watch {i}: another key's event"
                    );
                    kv.mod_revision
                })
                .collect();
            prop_assert!(
                got.windows(2).all(|p| p[0] < p[1]),
                "watch {}: revisions {:?} not increasing",
                i,
                got
            );
            let want: Vec<i64> =
                (start.max(2)..=self.rev()).filter(|&r| self.key_at(r) == w.kv).collect();
            prop_assert!(
                want.starts_with(&got),
                "watch {} from {}: got {:?}, the store has {:?}",
                i,
                start,
                got,
                want
            );
            if settled && errors == 0 && w.cancelled_at.is_none() {
                prop_assert_eq!(
                    &got,
                    &want,
                    "watch {} from {}: events missing once settled",
                    i,
                    start
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(crate::grpc::proptest_config(256))]

    #[test]
    fn every_watch_sees_each_revision_of_its_key_once_and_in_order(
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut world = World::default();
        for op in ops {
            world.apply(op);
            world.check(false)?;
        }
        world.settle();
        world.check(true)?;
        let live = world
            .watches
            .iter()
            .filter(|w| w.cancelled_at.is_none() && !w.seen.borrow().iter().any(Result::is_err))
            .count();
        prop_assert_eq!(world.hub.wants_stream(), live > 0);
    }
}
