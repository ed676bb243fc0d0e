//! Lease keepalives: all of a client's on the one LeaseKeepAlive stream, each renewed at a
//! third of the TTL the server last granted, from the timer wheel.
//!
//! ```text
//!  add ──stream open──► awaiting ──{ID, TTL>0}──► scheduled (TTL/3) ──timer──► awaiting ─┐
//!                          ▲                                                           │
//!                          └───────────────────────────────────────────────────────────┘
//!            {ID, TTL 0}: the lease is gone ──► NOT_FOUND, ended
//!  stream lost: nothing is scheduled; when it re-opens every live lease is renewed at once.
//! ```
//!
//! The server says nothing about a lease it does not know but a TTL of 0, so a renewal is
//! the only way to learn that a lease expired or was revoked.

use super::shared::{encode, Shared};
use super::{Event, Session, Timer};
use crate::config::MAX_TIMEOUT;
use crate::error::{Code, EtcdError};
use crate::h2io::wake::CONNECTION;
use crate::pb::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use crate::timer::TimerKey;
use bytes::Bytes;
use slab::Slab;
use std::collections::HashMap;
use std::time::Duration;

/// The shortest interval between two renewals of one lease.
const MIN_RENEWAL: Duration = Duration::from_millis(100);

/// What a keepalive's callback receives.
pub(crate) type KeepaliveCallback = Box<dyn FnMut(Result<LeaseKeepAliveResponse, EtcdError>)>;

/// A keepalive's slab index plus a generation (an ABA guard for handles that outlive it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeepaliveKey {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

/// One delivery: a renewal or the keepalive's final error.
pub(crate) type KeepaliveDelivery = (KeepaliveKey, Result<LeaseKeepAliveResponse, EtcdError>);

struct Entry {
    generation: u64,
    lease: i64,
    /// The next renewal, while one is scheduled.
    timer: Option<TimerKey>,
    /// A renewal was sent and not yet answered.
    awaiting: bool,
    /// Taken out while it runs.
    callback: Option<KeepaliveCallback>,
    /// Its final error is queued: the entry goes once the callback has run.
    ended: bool,
    /// Whether it carries on when the stream breaks (else it ends with the stream's error).
    auto_reconnect: bool,
}

/// Every keepalive of a client.
#[derive(Default)]
pub(crate) struct Keepalives {
    entries: Slab<Entry>,
    next_generation: u64,
    /// Lease id → entries keeping it alive.
    by_lease: HashMap<i64, Vec<usize>>,
    /// Lease ids to renew on the stream.
    outbox: Vec<i64>,
    stream_open: bool,
}

impl Keepalives {
    /// Whether a keepalive is live (ended ones waiting for their last delivery count).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the stream is needed: some keepalive has not ended.
    pub(crate) fn wants_stream(&self) -> bool {
        self.entries.iter().any(|(_, e)| !e.ended)
    }

    /// Whether renewals wait to be sent.
    pub(crate) fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The queued renewals, framed.
    pub(crate) fn take_outbox(&mut self) -> Bytes {
        let requests: Vec<LeaseKeepAliveRequest> =
            self.outbox.drain(..).map(|id| LeaseKeepAliveRequest { id }).collect();
        encode(&requests)
    }

    fn get_mut(&mut self, key: KeepaliveKey) -> Option<&mut Entry> {
        self.entries.get_mut(key.index).filter(|e| e.generation == key.generation)
    }

    fn remove(&mut self, index: usize) -> Entry {
        let entry = self.entries.remove(index);
        if let Some(list) = self.by_lease.get_mut(&entry.lease) {
            list.retain(|&i| i != index);
            if list.is_empty() {
                self.by_lease.remove(&entry.lease);
            }
        }
        entry
    }

    /// Queues a renewal of entry `index`'s lease (once, however many keepalives share it).
    fn request(&mut self, index: usize) {
        let lease = self.entries[index].lease;
        let already = self.by_lease[&lease].iter().any(|&i| self.entries[i].awaiting);
        self.entries[index].awaiting = true;
        if !already {
            self.outbox.push(lease);
        }
    }
}

impl Session {
    /// Starts keeping lease `lease` alive; the first renewal goes out as soon as the stream
    /// is open.
    pub(crate) fn keepalive(
        &mut self,
        lease: i64,
        callback: KeepaliveCallback,
        auto_reconnect: bool,
    ) -> KeepaliveKey {
        let ka = &mut self.keepalives;
        let generation = ka.next_generation;
        ka.next_generation += 1;
        let index = ka.entries.insert(Entry {
            generation,
            lease,
            timer: None,
            awaiting: false,
            callback: Some(callback),
            ended: false,
            auto_reconnect,
        });
        ka.by_lease.entry(lease).or_default().push(index);
        if ka.stream_open {
            ka.request(index);
        }
        self.ensure_shared(Shared::Keepalive);
        self.wakers.wake(CONNECTION);
        KeepaliveKey { index, generation }
    }

    /// Stops a keepalive at once (the lease then expires on its own). Returns its callback
    /// (`None` if the keepalive is gone or its callback is running), to be dropped once no
    /// borrow is held.
    pub(crate) fn cancel_keepalive(&mut self, key: KeepaliveKey) -> Option<KeepaliveCallback> {
        self.keepalives.get_mut(key)?;
        let entry = self.keepalives.remove(key.index);
        if let Some(timer) = entry.timer {
            self.timers.cancel(timer);
        }
        self.close_shared_if_unused(Shared::Keepalive);
        self.wakers.wake(CONNECTION);
        entry.callback
    }

    /// Takes a keepalive's callback out to run it.
    pub(crate) fn take_keepalive_callback(
        &mut self,
        key: KeepaliveKey,
    ) -> Option<KeepaliveCallback> {
        self.keepalives.get_mut(key)?.callback.take()
    }

    /// Puts a keepalive's callback back after it ran; one not put back (cancelled meanwhile,
    /// or its final delivery) is returned, to be dropped once no borrow is held.
    pub(crate) fn restore_keepalive_callback(
        &mut self,
        key: KeepaliveKey,
        callback: KeepaliveCallback,
        delivered_final: bool,
    ) -> Option<KeepaliveCallback> {
        let Some(entry) = self.keepalives.get_mut(key) else { return Some(callback) };
        if entry.ended && delivered_final {
            self.keepalives.remove(key.index);
            self.close_shared_if_unused(Shared::Keepalive);
            return Some(callback);
        }
        entry.callback = Some(callback);
        None
    }

    /// Ends every live keepalive with `CANCELLED` (the client is closing).
    pub(super) fn close_keepalives(&mut self, reason: &str) -> Vec<KeepaliveDelivery> {
        self.end_keepalives(false, Code::Cancelled, reason)
    }

    /// Ends every live keepalive with one error (the client is closing, or the stream gave
    /// up: a permanent status, or its retries are used up).
    pub(super) fn end_keepalives(
        &mut self,
        only_no_reconnect: bool,
        code: Code,
        message: &str,
    ) -> Vec<KeepaliveDelivery> {
        let mut out = Vec::new();
        let ending = |e: &Entry| !(e.ended || only_no_reconnect && e.auto_reconnect);
        for (index, e) in self.keepalives.entries.iter_mut().filter(|(_, e)| ending(e)) {
            e.ended = true;
            if let Some(timer) = e.timer.take() {
                self.timers.cancel(timer);
            }
            let key = KeepaliveKey { index, generation: e.generation };
            out.push((key, Err(EtcdError::new(code, message, "keepalive"))));
        }
        self.keepalive_lost();
        out
    }

    /// The stream is being opened: every live lease is renewed at once.
    pub(super) fn keepalive_opened(&mut self) -> Bytes {
        self.keepalives.stream_open = true;
        let live: Vec<usize> =
            self.keepalives.entries.iter().filter(|(_, e)| !e.ended).map(|(i, _)| i).collect();
        for index in live {
            if let Some(timer) = self.keepalives.entries[index].timer.take() {
                self.timers.cancel(timer);
            }
            self.keepalives.request(index);
        }
        self.keepalives.take_outbox()
    }

    /// The stream ended: nothing is scheduled until it re-opens.
    pub(super) fn keepalive_lost(&mut self) {
        let ka = &mut self.keepalives;
        ka.stream_open = false;
        ka.outbox.clear();
        for (_, e) in ka.entries.iter_mut() {
            e.awaiting = false;
            if let Some(timer) = e.timer.take() {
                self.timers.cancel(timer);
            }
        }
    }

    /// A renewal's answer, for every keepalive of that lease waiting for one.
    pub(super) fn on_keepalive_response(&mut self, resp: LeaseKeepAliveResponse) {
        let Some(indexes) = self.keepalives.by_lease.get(&resp.id).cloned() else {
            return;
        };
        for index in indexes {
            let entry = &mut self.keepalives.entries[index];
            if !entry.awaiting || entry.ended {
                continue;
            }
            entry.awaiting = false;
            let key = KeepaliveKey { index, generation: entry.generation };
            let item = if resp.ttl <= 0 {
                entry.ended = true;
                let msg = format!("lease {:x} expired or was revoked", resp.id);
                Err(EtcdError::new(Code::NotFound, msg, "keepalive"))
            } else {
                let ttl_ms = (resp.ttl as u64).saturating_mul(1000);
                let every = Duration::from_millis(ttl_ms / 3).clamp(MIN_RENEWAL, MAX_TIMEOUT);
                entry.timer = Some(self.timers.insert(self.now + every, Timer::Renew(key)));
                Ok(resp)
            };
            self.events.push_back(Event::Keepalive((key, item)));
        }
    }

    /// Keepalive `key`'s timer fired: renew now if the stream is open (otherwise the
    /// re-opened stream renews it).
    pub(super) fn renewal_due(&mut self, key: KeepaliveKey) {
        let Some(entry) = self.keepalives.get_mut(key) else {
            return;
        };
        entry.timer = None;
        let ended = entry.ended;
        if self.keepalives.stream_open && !ended {
            self.keepalives.request(key.index);
            self.wakers.wake(CONNECTION);
        }
    }
}
