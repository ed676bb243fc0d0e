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
use super::registry::{tag, Slots, StreamKey, WatchKey};
use crate::error::{Code, EtcdError};
use crate::pb::etcdserverpb::{
    watch_request, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use std::collections::{HashMap, HashSet, VecDeque};

/// One delivery, for the callback of the watch's stream: a response or the watch's final
/// error (after which the hub has forgotten the watch).
pub(crate) type Delivery = (StreamKey, Result<WatchResponse, EtcdError>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unsent,
    Creating,
    Active(i64),
}

struct Entry {
    /// Whose callback hears of it.
    stream: StreamKey,
    /// Its create was refused for a stale token once already (a second time is final).
    reauthed: bool,
    /// Re-created when the stream breaks (otherwise it ends with the stream's error).
    auto_reconnect: bool,
    /// The create request as the caller asked for it.
    create: WatchCreateRequest,
    /// The first revision not yet delivered; 0 until known for a watch from "now".
    next_rev: i64,
    state: State,
    /// A fragmented response being reassembled (boxed: rare, and a `WatchResponse` inline
    /// would grow every watch by its size).
    partial: Option<Box<WatchResponse>>,
}

/// Every watch of a client.
#[derive(Default)]
pub(crate) struct WatchHub {
    entries: Slots<Entry, tag::Watch>,
    /// Server watch id → watch, for watches active on the current stream.
    by_id: HashMap<i64, WatchKey>,
    /// Creates sent on the current stream and not yet answered, in order (etcd answers
    /// creates in the order it receives them). A key whose entry is gone is a tombstone:
    /// the watch was cancelled while its create was in flight.
    creating: VecDeque<WatchKey>,
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
            create,
            next_rev,
            state: State::Unsent,
            partial: None,
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
        if let State::Active(id) = entry.state {
            self.by_id.remove(&id);
            // etcd acknowledges the cancel with this id: it is then known, not unknown.
            self.cancelled_ids.insert(id);
            self.push(watch_request::RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: id,
            }));
        }
        self.entries.remove(key);
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
        self.outbox.clear();
        self.cancelled_ids.clear();
        for (_, e) in self.entries.iter_mut() {
            e.state = State::Unsent;
            e.partial = None;
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
                if matches!(e.state, State::Active(_)) {
                    out.push((e.stream, Ok(resp.clone())));
                }
            }
            return;
        }
        let Some(&key) = self.by_id.get(&resp.watch_id) else {
            return self.cancel_unknown(resp.watch_id);
        };
        if resp.canceled {
            self.by_id.remove(&resp.watch_id);
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
        let mut create = entry.create.clone();
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
        entry.state = State::Active(resp.watch_id);
        if entry.next_rev == 0 {
            // A watch from "now" sees the revisions after the one it was created at.
            entry.next_rev = resp.header.as_ref().map_or(0, |h| h.revision).saturating_add(1);
        }
        self.by_id.insert(resp.watch_id, key);
        out.push((entry.stream, Ok(resp)));
    }

    fn on_events(&mut self, key: WatchKey, resp: WatchResponse, out: &mut Vec<Delivery>) {
        let Some(entry) = self.entries.get_mut(key) else { return };
        if resp.fragment {
            match &mut entry.partial {
                Some(p) => p.events.extend(resp.events),
                None => entry.partial = Some(Box::new(resp)),
            }
            return;
        }
        let mut resp = match entry.partial.take() {
            Some(mut p) => {
                p.events.extend(resp.events);
                p.fragment = false;
                *p
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
        if let Some(entry) = self.entries.remove(key) {
            if let State::Active(id) = entry.state {
                self.by_id.remove(&id);
            }
            out.push((entry.stream, Err(err)));
        }
    }

    fn cancel_unknown(&mut self, watch_id: i64) {
        if watch_id >= 0 && self.cancelled_ids.insert(watch_id) {
            self.push(watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
        }
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
