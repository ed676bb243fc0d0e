//! Every watch of a client, multiplexed on one gRPC Watch stream: pure bookkeeping, no IO.
//!
//! The session feeds the hub what happens to the stream (opened, a response, lost) and sends
//! the requests the hub queues. The hub decides what each watch receives, and where it
//! resumes after the stream is re-opened.
//!
//! A watch's life:
//!
//! ```text
//!  add ──► Unsent ──stream open──► Creating ──created──► Active(id) ──compacted / cancelled
//!            ▲                        │                     │            by the server──► ended
//!            └──────── stream lost ───┴─────────────────────┘
//!  cancel (any state) ──► removed at once; the server is told when it knows the watch's id
//! ```
//!
//! Exactly once: each watch keeps `next_rev`, the first revision it has not seen. It starts at
//! the requested start revision (or, for a watch from "now", the created reply's revision + 1),
//! moves to the last delivered event's revision + 1, and to a server progress notification's
//! revision + 1 for that watch. Replies to the client's own progress requests never move it
//! (etcd 3.5 answers them even while a watcher is still catching up). A re-created watch starts
//! at `next_rev`, and any event below it is dropped. Each "+ 1" saturates: a revision of
//! `i64::MAX` from the server must not overflow (etcd never gets there; the hub must not panic).

use super::failure::is_stale_token;
use super::registry::{tag, IdIndex, Slots, StreamKey, WatchKey};
use crate::error::{Code, EtcdError};
use crate::pb::etcdserverpb::{
    watch_request, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use prost::Message;
use std::collections::{HashSet, VecDeque};

/// One delivery, for the callback of the watch's stream: a response or the watch's final
/// error (after which the hub has forgotten the watch).
pub(crate) type Delivery = (StreamKey, Result<WatchResponse, EtcdError>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unsent,
    Creating,
    /// Created: the server knows it as the entry's `watch_id`.
    Active,
}

/// One watch: 48 bytes, paid by every watch (a fragmented response being reassembled is
/// rare, and is kept beside the entries, in [`WatchHub::partials`]).
struct Entry {
    /// Whose callback hears of it.
    stream: StreamKey,
    /// The first revision not yet delivered; 0 until known for a watch from "now".
    next_rev: i64,
    /// The server's id of the watch while it is `Active`.
    watch_id: i64,
    /// The create request as the caller asked for it, encoded (see [`Create`]).
    create: Create,
    state: State,
    /// Its create was refused for a stale token once already (a second time is final).
    reauthed: bool,
    /// Re-created when the stream breaks (otherwise it ends with the stream's error).
    auto_reconnect: bool,
}

/// A create request kept for as long as its watch lives, to be sent again on every new
/// stream: its protobuf encoding, a few bytes more than the key, where a
/// `WatchCreateRequest` would take 112 bytes inline plus its key and range end on the heap.
struct Create(Box<[u8]>);

impl Create {
    fn new(request: &WatchCreateRequest) -> Create {
        Create(request.encode_to_vec().into_boxed_slice())
    }

    /// The request again, exactly as it was given.
    fn request(&self) -> WatchCreateRequest {
        // It was encoded by `new`: decoding it cannot fail.
        WatchCreateRequest::decode(&self.0[..]).unwrap_or_default()
    }
}

/// Every watch of a client.
#[derive(Default)]
pub(crate) struct WatchHub {
    entries: Slots<Entry, tag::Watch>,
    /// Server watch id → watch, for watches active on the current stream (the id is the
    /// entry's `watch_id`: see [`active_id`]).
    by_id: IdIndex,
    /// Creates sent on the current stream and not yet answered, in order (etcd answers
    /// creates in the order it receives them). A key whose entry is gone is a tombstone:
    /// the watch was cancelled while its create was in flight. Its room is given back once
    /// a large batch is answered (see [`release_if_drained`]).
    creating: VecDeque<WatchKey>,
    /// Fragmented responses being reassembled, by watch (rare: beside the entries).
    partials: Vec<(WatchKey, WatchResponse)>,
    /// Requests for the stream, in order.
    outbox: Vec<WatchRequest>,
    /// Unknown ids a cancel was already sent for on this stream (to send it once).
    cancelled_ids: HashSet<i64>,
    stream_open: bool,
    /// The client holds credentials: creates refused for a stale token are retried.
    pub(crate) reauth: bool,
    /// A create was refused for a stale token: the client must authenticate again and
    /// re-open the stream.
    needs_reauth: bool,
    /// This stream was opened with a token fetched because of a refusal: refusals on it
    /// are final (a real permission problem must not restart the stream again and again).
    pub(crate) reauth_spent: bool,
}

impl WatchHub {
    /// Adds a watch for stream `stream`'s callback; its create goes out now if the stream
    /// is open, else when it opens.
    pub(crate) fn add(
        &mut self,
        create: WatchCreateRequest,
        stream: StreamKey,
        auto_reconnect: bool,
    ) -> WatchKey {
        let next_rev = create.start_revision.max(0);
        let key = self.entries.insert(Entry {
            stream,
            next_rev,
            watch_id: 0,
            create: Create::new(&create),
            state: State::Unsent,
            reauthed: false,
            auto_reconnect,
        });
        if self.stream_open {
            self.send_create(key);
        }
        key
    }

    /// Removes a watch at once. The server is told if it knows the watch's id; a create
    /// still in flight is cancelled when its reply comes.
    pub(crate) fn cancel(&mut self, key: WatchKey) {
        let Some(entry) = self.entries.get(key) else { return };
        if entry.state == State::Active {
            let id = entry.watch_id;
            self.by_id.remove(id, |s| active_id(&self.entries, s));
            // etcd acknowledges the cancel with this id: it is then known, not unknown.
            self.cancelled_ids.insert(id);
            self.push(watch_request::RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: id,
            }));
        }
        self.entries.remove(key);
        self.drop_partial(key);
    }

    /// Asks the server for a progress notification (only while the stream is open; the
    /// reply reaches every active watch).
    pub(crate) fn request_progress(&mut self) {
        if self.stream_open {
            self.push(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {}));
        }
    }

    /// Whether no watch is live.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many watches are live.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a stream is wanted: some watch is live.
    pub(crate) fn wants_stream(&self) -> bool {
        !self.entries.is_empty()
    }

    /// A new stream is open: every live watch is (re-)created from where it stands.
    pub(crate) fn on_stream_opened(&mut self) {
        self.stream_open = true;
        for key in self.entries.keys_where(|_| true) {
            self.send_create(key);
        }
    }

    /// The stream ended: every watch waits to be re-created on the next one.
    pub(crate) fn on_stream_lost(&mut self) {
        self.stream_open = false;
        self.reauth_spent = false;
        self.by_id.clear();
        self.creating.clear();
        release_if_drained(&mut self.creating);
        self.partials = Vec::new();
        self.outbox.clear();
        self.cancelled_ids = HashSet::new();
        for (_, e) in self.entries.iter_mut() {
            e.state = State::Unsent;
        }
    }

    /// Whether a create was refused for a stale token since the last call (clears it).
    pub(crate) fn take_needs_reauth(&mut self) -> bool {
        std::mem::take(&mut self.needs_reauth)
    }

    /// Requests queued for the stream.
    pub(crate) fn take_outbox(&mut self) -> Vec<WatchRequest> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether requests are waiting to be sent.
    pub(crate) fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Applies one response from the stream; what the watches receive goes to `out`.
    pub(crate) fn on_response(&mut self, resp: WatchResponse, out: &mut Vec<Delivery>) {
        if resp.created {
            return self.on_created(resp, out);
        }
        if resp.watch_id == -1 {
            // A reply to request_progress(): for every active watch, moving nothing.
            for (_, e) in self.entries.iter() {
                if e.state == State::Active {
                    out.push((e.stream, Ok(resp.clone())));
                }
            }
            return;
        }
        let by_id = self.by_id.get(resp.watch_id, |s| active_id(&self.entries, s));
        let Some(key) = by_id.and_then(|s| self.entries.key_at(s as usize)) else {
            if resp.canceled && self.cancelled_ids.remove(&resp.watch_id) {
                // The server acknowledged a cancel: the id is done with (and the set does
                // not grow with every watch ever cancelled on a long-lived stream).
                return;
            }
            return self.cancel_unknown(resp.watch_id);
        };
        if resp.canceled {
            return self.end(key, cancel_error(&resp), out);
        }
        self.on_events(key, resp, out);
    }

    /// Ends every live watch (or, with `only_non_reconnecting`, those created with
    /// `auto_reconnect` off) with one error each: the stream gave up (a permanent status,
    /// retries used up), or it broke and those watches do not reconnect.
    pub(crate) fn end_all(
        &mut self,
        only_non_reconnecting: bool,
        (code, message): (Code, &str),
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        let chosen = self.entries.keys_where(|e| !only_non_reconnecting || !e.auto_reconnect);
        for key in chosen {
            self.end(key, EtcdError::new(code, message, "watch"), &mut out);
        }
        out
    }

    // ===== internals =====

    fn push(&mut self, request: watch_request::RequestUnion) {
        self.outbox.push(WatchRequest { request_union: Some(request) });
    }

    fn send_create(&mut self, key: WatchKey) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        entry.state = State::Creating;
        let mut create = entry.create.request();
        if entry.next_rev > 0 {
            create.start_revision = entry.next_rev;
        }
        self.creating.push_back(key);
        self.push(watch_request::RequestUnion::CreateRequest(create));
    }

    fn on_created(&mut self, resp: WatchResponse, out: &mut Vec<Delivery>) {
        let reauth = self.reauth && !self.reauth_spent;
        let Some(key) = self.creating.pop_front() else {
            // A create reply nobody waits for: make sure the server drops that watch.
            return self.cancel_unknown(resp.watch_id);
        };
        release_if_drained(&mut self.creating);
        let Some(entry) = self.entries.get_mut(key) else {
            // Cancelled while its create was in flight.
            return self.cancel_unknown(resp.watch_id);
        };
        if resp.canceled {
            // etcd 3.5 refuses a create on a stream whose token went stale as "permission
            // denied" (its watch permission check swallows the real reason): with
            // credentials, one fresh token and stream decide.
            let stale = is_stale_token(&resp.cancel_reason)
                || resp.cancel_reason.contains("permission denied");
            if reauth && !entry.reauthed && stale {
                // Refused for a stale token: re-created once the client has a fresh one,
                // from where it asked to start (a watch from "now" starts after the revision
                // of the refusal, so that nothing written since is missed).
                if let (0, Some(h)) = (entry.next_rev, resp.header.as_ref()) {
                    entry.next_rev = h.revision.saturating_add(1);
                }
                entry.reauthed = true;
                entry.state = State::Unsent;
                self.needs_reauth = true;
                return;
            }
            return self.end(key, cancel_error(&resp), out);
        }
        entry.reauthed = false;
        entry.state = State::Active;
        entry.watch_id = resp.watch_id;
        if entry.next_rev == 0 {
            // A watch from "now" sees the revisions after the one it was created at.
            entry.next_rev = resp.header.as_ref().map_or(0, |h| h.revision).saturating_add(1);
        }
        let stream = entry.stream;
        let (id, slot) = (resp.watch_id, key.index() as u32);
        self.by_id.insert(id, slot, |s| active_id(&self.entries, s));
        out.push((stream, Ok(resp)));
    }

    fn on_events(&mut self, key: WatchKey, resp: WatchResponse, out: &mut Vec<Delivery>) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        let partial = self.partials.iter().position(|(k, _)| *k == key);
        if resp.fragment {
            match partial {
                Some(at) => self.partials[at].1.events.extend(resp.events),
                None => self.partials.push((key, resp)),
            }
            return;
        }
        let mut resp = match partial {
            Some(at) => {
                let mut p = self.partials.swap_remove(at).1;
                p.events.extend(resp.events);
                p.fragment = false;
                p
            }
            None => resp,
        };
        if resp.events.is_empty() {
            // The server's progress notification for this watch: it has seen everything up
            // to the header revision.
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            entry.next_rev = entry.next_rev.max(rev.saturating_add(1));
            out.push((entry.stream, Ok(resp)));
            return;
        }
        let next_rev = entry.next_rev;
        resp.events.retain(|ev| ev.kv.as_ref().is_some_and(|kv| kv.mod_revision >= next_rev));
        let Some(last) = resp.events.last().and_then(|ev| ev.kv.as_ref()) else {
            return; // every event was a repeat of one already delivered
        };
        entry.next_rev = last.mod_revision.saturating_add(1);
        out.push((entry.stream, Ok(resp)));
    }

    /// Forgets a watch and queues its final error.
    fn end(&mut self, key: WatchKey, err: EtcdError, out: &mut Vec<Delivery>) {
        if let Some(entry) = self.entries.get(key) {
            if entry.state == State::Active {
                // Out of the index while the entry still says its id.
                let id = entry.watch_id;
                self.by_id.remove(id, |s| active_id(&self.entries, s));
            }
        }
        if let Some(entry) = self.entries.remove(key) {
            self.drop_partial(key);
            out.push((entry.stream, Err(err)));
        }
    }

    /// Forgets watch `key`'s response being reassembled, if any.
    fn drop_partial(&mut self, key: WatchKey) {
        if !self.partials.is_empty() {
            self.partials.retain(|(k, _)| *k != key);
        }
    }

    fn cancel_unknown(&mut self, watch_id: i64) {
        if watch_id >= 0 && self.cancelled_ids.insert(watch_id) {
            self.push(watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
        }
    }
}

/// The server's id of the watch in slot `slot`, if it is active (what [`WatchHub::by_id`]
/// indexes).
fn active_id(entries: &Slots<Entry, tag::Watch>, slot: u32) -> Option<i64> {
    let (_, e) = entries.at(slot)?;
    (e.state == State::Active).then_some(e.watch_id)
}

/// A queue keeps the room of its largest batch; once a large batch (every watch's create on
/// a new stream) is drained, that room is given back instead of being held for good.
fn release_if_drained<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 64 {
        *queue = VecDeque::new();
    }
}

/// The error for a watch the server cancelled: a compaction (with its revision), a failed
/// create, or another server-side cancel.
fn cancel_error(resp: &WatchResponse) -> EtcdError {
    if resp.compact_revision > 0 {
        let msg = format!(
            "required revision has been compacted; compaction revision {}",
            resp.compact_revision
        );
        return EtcdError::compacted(resp.compact_revision, msg);
    }
    let reason = if resp.cancel_reason.is_empty() {
        "watch canceled by the server"
    } else {
        &resp.cancel_reason
    };
    let code =
        if reason.contains("permission denied") { Code::PermissionDenied } else { Code::Cancelled };
    EtcdError::new(code, reason, "watch")
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "watch_props.rs"]
mod props;
