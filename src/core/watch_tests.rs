//! Unit tests of the watch hub: matching, resume points, deduplication, cancels.

use super::*;
use crate::core::registry::{Owner, StreamCallback, StreamItem, Streams};
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::{Event, KeyValue};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

type WatchCallback = Box<dyn FnMut(Result<WatchResponse, EtcdError>)>;

/// The hub with the registry beside it, as the core holds them: callbacks live in the
/// registry, keyed by the stream key that deliveries carry.
#[derive(Default)]
pub(super) struct TestHub {
    hub: WatchHub,
    streams: Streams,
}

impl Deref for TestHub {
    type Target = WatchHub;
    fn deref(&self) -> &WatchHub {
        &self.hub
    }
}

impl DerefMut for TestHub {
    fn deref_mut(&mut self) -> &mut WatchHub {
        &mut self.hub
    }
}

impl TestHub {
    pub(super) fn add(&mut self, create: WatchCreateRequest, callback: WatchCallback) -> StreamKey {
        let stream = self.streams.add(StreamCallback::Watch(callback));
        let key = self.hub.add(create, stream, true);
        self.streams.bind(stream, Owner::Watch(key));
        stream
    }

    /// Cancels as the core does; whether the watch was there.
    pub(super) fn cancel(&mut self, stream: StreamKey) -> bool {
        match self.streams.remove(stream) {
            Some((owner, _callback)) => {
                if let Some(Owner::Watch(key)) = owner {
                    self.hub.cancel(key);
                }
                true
            }
            None => false,
        }
    }

    pub(super) fn take_callback(&mut self, stream: StreamKey) -> Option<StreamCallback> {
        self.streams.take(stream)
    }

    pub(super) fn restore_callback(
        &mut self,
        stream: StreamKey,
        callback: StreamCallback,
        last: bool,
    ) -> Option<StreamCallback> {
        self.streams.restore(stream, callback, last)
    }

    /// Whether no watch is left, its last delivery run.
    pub(super) fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.hub.is_empty()
    }
}

type Seen = Rc<RefCell<Vec<Result<WatchResponse, EtcdError>>>>;

fn create(key: &'static str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest { key: key.into(), start_revision: start, ..Default::default() }
}

fn callback(seen: &Seen) -> WatchCallback {
    let seen = seen.clone();
    Box::new(move |r| seen.borrow_mut().push(r))
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

fn created(id: i64, revision: i64) -> WatchResponse {
    WatchResponse { created: true, watch_id: id, header: header(revision), ..Default::default() }
}

fn events(id: i64, revs: &[i64]) -> WatchResponse {
    let events = revs
        .iter()
        .map(|&r| Event {
            kv: Some(KeyValue { mod_revision: r, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    WatchResponse {
        watch_id: id,
        header: header(*revs.last().unwrap()),
        events,
        ..Default::default()
    }
}

fn revs(resp: &WatchResponse) -> Vec<i64> {
    resp.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect()
}

/// The start revisions of the creates in the outbox, and the cancelled ids.
fn sent(hub: &mut TestHub) -> (Vec<i64>, Vec<i64>) {
    let (mut creates, mut cancels) = (Vec::new(), Vec::new());
    for r in hub.take_outbox() {
        match r.request_union.unwrap() {
            watch_request::RequestUnion::CreateRequest(c) => creates.push(c.start_revision),
            watch_request::RequestUnion::CancelRequest(c) => cancels.push(c.watch_id),
            watch_request::RequestUnion::ProgressRequest(_) => {}
        }
    }
    (creates, cancels)
}

/// Applies `resp` and runs the deliveries' callbacks the way the client does.
fn feed(hub: &mut TestHub, resp: WatchResponse) {
    let mut out = Vec::new();
    hub.on_response(resp, &mut out);
    for (key, item) in out {
        if let Some(mut cb) = hub.take_callback(key) {
            let last = item.is_err();
            cb.call(StreamItem::Watch(item));
            hub.restore_callback(key, cb, last);
        }
    }
}

#[test]
fn creates_are_matched_in_order_and_a_watch_from_now_resumes_after_its_created_revision() {
    let mut hub = TestHub::default();
    let (a, b): (Seen, Seen) = Default::default();
    hub.add(create("a", 0), callback(&a));
    hub.add(create("b", 7), callback(&b));
    assert_eq!(sent(&mut hub), (vec![], vec![]), "nothing is sent before the stream opens");
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0, [0, 7]);
    feed(&mut hub, created(10, 20));
    feed(&mut hub, created(11, 20));
    assert!(a.borrow()[0].as_ref().unwrap().created && b.borrow()[0].as_ref().unwrap().created);
    // Re-created on a new stream: a from 21 (created at 20), b from its start revision.
    hub.on_stream_lost();
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0, [21, 7]);
}

#[test]
fn a_resumed_watch_starts_after_its_last_event_and_drops_repeats() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    hub.add(create("k", 5), callback(&seen));
    hub.on_stream_opened();
    sent(&mut hub);
    feed(&mut hub, created(0, 9));
    feed(&mut hub, events(0, &[5, 6, 6]));
    hub.on_stream_lost();
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0, [7]);
    feed(&mut hub, created(0, 9));
    feed(&mut hub, events(0, &[6])); // a repeat only: not delivered
    feed(&mut hub, events(0, &[6, 7, 8]));
    let got: Vec<Vec<i64>> =
        seen.borrow().iter().filter_map(|r| r.as_ref().ok()).map(revs).collect();
    assert_eq!(got, [vec![], vec![5, 6, 6], vec![], vec![7, 8]]);
}

#[test]
fn requested_progress_reaches_every_watch_but_moves_no_resume_point() {
    let mut hub = TestHub::default();
    let (a, b): (Seen, Seen) = Default::default();
    hub.add(create("a", 3), callback(&a));
    hub.add(create("b", 3), callback(&b));
    hub.on_stream_opened();
    hub.request_progress();
    feed(&mut hub, created(0, 9));
    feed(&mut hub, created(1, 9));
    feed(&mut hub, WatchResponse { watch_id: -1, header: header(50), ..Default::default() });
    assert_eq!((a.borrow().len(), b.borrow().len()), (2, 2));
    assert_eq!(a.borrow()[1].as_ref().unwrap().watch_id, -1);
    hub.on_stream_lost();
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0, [3, 3], "still from the start revision");
}

#[test]
fn the_servers_progress_notification_moves_that_watchs_resume_point() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    hub.add(create("a", 3), callback(&seen));
    hub.on_stream_opened();
    feed(&mut hub, created(4, 9));
    feed(&mut hub, WatchResponse { watch_id: 4, header: header(40), ..Default::default() });
    assert_eq!(seen.borrow().len(), 2);
    hub.on_stream_lost();
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0.last(), Some(&41));
}

#[test]
fn fragments_are_joined_before_delivery() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    hub.add(create("a", 1), callback(&seen));
    hub.on_stream_opened();
    feed(&mut hub, created(0, 1));
    feed(&mut hub, WatchResponse { fragment: true, ..events(0, &[2, 2]) });
    feed(&mut hub, WatchResponse { fragment: true, ..events(0, &[2]) });
    assert_eq!(seen.borrow().len(), 1, "nothing delivered mid-fragment");
    feed(&mut hub, events(0, &[2]));
    let last = seen.borrow().last().unwrap().clone().unwrap();
    assert_eq!((revs(&last), last.fragment), (vec![2, 2, 2, 2], false));
}

#[test]
fn compaction_ends_the_watch_once_with_its_revision() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    hub.add(create("a", 1), callback(&seen));
    hub.on_stream_opened();
    feed(&mut hub, created(0, 30));
    feed(
        &mut hub,
        WatchResponse { watch_id: 0, canceled: true, compact_revision: 25, ..Default::default() },
    );
    feed(&mut hub, events(0, &[26])); // too late: the watch is gone
    assert_eq!(seen.borrow().len(), 2);
    let err = seen.borrow()[1].clone().unwrap_err();
    assert_eq!(
        (err.code(), err.compact_revision(), err.operation()),
        (Code::Cancelled, Some(25), "watch")
    );
    assert!(hub.is_empty() && !hub.wants_stream());
    hub.on_stream_lost();
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0, Vec::<i64>::new(), "never re-created");
}

#[test]
fn a_failed_create_ends_that_watch_and_the_next_reply_goes_to_the_next_watch() {
    let mut hub = TestHub::default();
    let (a, b): (Seen, Seen) = Default::default();
    hub.add(create("a", 0), callback(&a));
    hub.add(create("b", 0), callback(&b));
    hub.on_stream_opened();
    let reason = "mvcc: duplicate watch ID provided on the WatchStream";
    feed(
        &mut hub,
        WatchResponse {
            created: true,
            canceled: true,
            watch_id: -1,
            cancel_reason: reason.into(),
            ..Default::default()
        },
    );
    feed(&mut hub, created(3, 9));
    let err = a.borrow()[0].clone().unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Cancelled, reason));
    assert!(b.borrow()[0].as_ref().unwrap().created);
}

#[test]
fn cancelling_while_the_create_is_in_flight_cancels_the_id_the_server_then_assigns() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    let key = hub.add(create("a", 0), callback(&seen));
    hub.on_stream_opened();
    sent(&mut hub);
    assert!(hub.cancel(key));
    assert!(!hub.cancel(key), "a second cancel finds nothing");
    feed(&mut hub, created(8, 9));
    assert_eq!(sent(&mut hub).1, [8]);
    assert!(seen.borrow().is_empty());
}

#[test]
fn after_cancel_nothing_is_delivered_and_unknown_ids_are_cancelled_once() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    let key = hub.add(create("a", 1), callback(&seen));
    hub.on_stream_opened();
    feed(&mut hub, created(5, 9));
    sent(&mut hub);
    hub.cancel(key);
    assert_eq!(sent(&mut hub).1, [5]);
    feed(&mut hub, events(5, &[10]));
    feed(&mut hub, events(6, &[11]));
    feed(&mut hub, events(6, &[12]));
    assert_eq!(sent(&mut hub).1, [6], "5 was cancelled already; 6 is unknown: once");
    assert_eq!(seen.borrow().len(), 1, "only the created reply");
}

#[test]
fn a_watch_cancelled_from_its_own_callback_receives_nothing_more_from_the_same_batch() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    let key = hub.add(create("a", 1), callback(&seen));
    hub.on_stream_opened();
    feed(&mut hub, created(0, 9));
    let mut out = Vec::new();
    hub.on_response(events(0, &[2]), &mut out);
    hub.on_response(events(0, &[3]), &mut out);
    let (k, item) = out.remove(0);
    let mut cb = hub.take_callback(k).unwrap();
    cb.call(StreamItem::Watch(item));
    hub.cancel(key); // as if the callback cancelled its own watch
    assert!(hub.restore_callback(k, cb, false).is_some(), "handed back, to be dropped");
    let (k, _) = out.remove(0);
    assert!(hub.take_callback(k).is_none(), "the second batch never reaches the callback");
    assert!(hub.is_empty());
}

#[test]
fn a_final_error_in_the_same_batch_as_a_response_is_still_delivered() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    hub.add(create("a", 1), callback(&seen));
    hub.on_stream_opened();
    // created and the compaction cancel read together: both queued before either runs.
    let mut out = Vec::new();
    hub.on_response(created(0, 30), &mut out);
    let compacted =
        WatchResponse { watch_id: 0, canceled: true, compact_revision: 25, ..Default::default() };
    hub.on_response(compacted, &mut out);
    for (key, item) in out {
        let mut cb = hub.take_callback(key).expect("callback for every delivery");
        let last = item.is_err();
        cb.call(StreamItem::Watch(item));
        hub.restore_callback(key, cb, last);
    }
    assert_eq!(seen.borrow().len(), 2);
    assert_eq!(seen.borrow()[1].clone().unwrap_err().compact_revision(), Some(25));
    assert!(hub.is_empty());
}

#[test]
#[allow(clippy::field_reassign_with_default)] // `reauth` is the hub's, behind the adapter
fn a_revision_of_i64_max_from_the_server_saturates_the_resume_points() {
    const MAX: i64 = i64::MAX;
    let mut hub = TestHub::default();
    hub.reauth = true;
    let seen: Seen = Default::default();
    hub.add(create("now", 0), callback(&seen)); // resumes after its created revision
    hub.add(create("progress", 1), callback(&seen)); // after a progress notification
    hub.add(create("event", 1), callback(&seen)); // after its last event
    hub.add(create("refused", 0), callback(&seen)); // after a stale token's refusal
    hub.on_stream_opened();
    sent(&mut hub);
    feed(&mut hub, created(0, MAX));
    feed(&mut hub, created(1, 9));
    feed(&mut hub, created(2, 9));
    feed(
        &mut hub,
        WatchResponse {
            created: true,
            canceled: true,
            watch_id: -1,
            cancel_reason: "etcdserver: invalid auth token".into(),
            header: header(MAX),
            ..Default::default()
        },
    );
    assert!(hub.take_needs_reauth());
    feed(&mut hub, WatchResponse { watch_id: 1, header: header(MAX), ..Default::default() });
    feed(&mut hub, events(2, &[MAX]));
    assert_eq!(seen.borrow().len(), 5, "three created replies, the progress, the event");
    assert!(seen.borrow().iter().all(Result::is_ok));
    hub.on_stream_lost();
    hub.on_stream_opened();
    assert_eq!(sent(&mut hub).0, [MAX; 4], "each resumes at the last revision there is");
}

#[test]
fn a_kept_create_request_is_sent_again_exactly_as_given() {
    let full = WatchCreateRequest {
        key: "a/".into(),
        range_end: "a0".into(),
        start_revision: 5,
        progress_notify: true,
        filters: vec![0, 1],
        prev_kv: true,
        watch_id: 9,
        fragment: true,
    };
    for req in [full, WatchCreateRequest::default(), create("k", 0)] {
        assert_eq!(Create::new(&req).request(), req);
    }
    // Re-created after a lost stream: the same request, from where it stands.
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    let asked = WatchCreateRequest {
        key: "k".into(),
        range_end: "l".into(),
        start_revision: 3,
        prev_kv: true,
        filters: vec![1],
        ..Default::default()
    };
    hub.add(asked.clone(), callback(&seen));
    hub.on_stream_opened();
    sent(&mut hub);
    feed(&mut hub, created(4, 3));
    feed(&mut hub, events(4, &[7]));
    hub.on_stream_lost();
    hub.on_stream_opened();
    let again = hub.take_outbox().pop().and_then(|r| r.request_union);
    let Some(watch_request::RequestUnion::CreateRequest(again)) = again else {
        panic!("a create, not {again:?}");
    };
    assert_eq!(again, WatchCreateRequest { start_revision: 8, ..asked });
}

#[test]
fn a_watch_costs_48_bytes_in_the_hub() {
    assert_eq!(std::mem::size_of::<Entry>(), 48);
}

#[test]
fn an_acknowledged_cancel_forgets_the_id_and_a_drained_batch_its_room() {
    let mut hub = TestHub::default();
    let seen: Seen = Default::default();
    let streams: Vec<_> = (0..100).map(|_| hub.add(create("k", 0), callback(&seen))).collect();
    hub.on_stream_opened();
    sent(&mut hub);
    for id in 0..100 {
        feed(&mut hub, created(id, 1));
    }
    assert_eq!(hub.creating.capacity(), 0, "the batch's room is given back");
    for s in streams {
        assert!(hub.cancel(s));
    }
    assert_eq!(sent(&mut hub).1.len(), 100);
    for id in 0..100 {
        let ack = WatchResponse { watch_id: id, canceled: true, ..Default::default() };
        feed(&mut hub, ack);
    }
    assert!(hub.cancelled_ids.is_empty());
    assert!(!hub.has_outbox(), "an acknowledged cancel is not sent again");
}
