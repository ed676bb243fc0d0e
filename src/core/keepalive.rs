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

use super::cx::{Cx, Timer};
use super::registry::{tag, IdIndex, KeepaliveKey, Slots, StreamItem, StreamKey};
use crate::error::{Code, EtcdError};
use crate::grpc::codec;
use crate::pb::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use crate::timer::{TimerKey, MAX_DELAY};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::time::Duration;

/// The shortest interval between two renewals of one lease.
const MIN_RENEWAL: Duration = Duration::from_millis(100);

/// One keepalive: 32 bytes, paid by every keepalive (with its timer's slot on the wheel).
struct Entry {
    /// Whose callback hears of it.
    stream: StreamKey,
    lease: i64,
    /// The next renewal, while one is scheduled.
    timer: Option<TimerKey>,
    /// A renewal was sent and not yet answered.
    awaiting: bool,
    /// Whether it carries on when the stream breaks (else it ends with the stream's error).
    auto_reconnect: bool,
}

/// Every keepalive of a client.
#[derive(Default)]
pub(crate) struct Keepalives {
    entries: Slots<Entry, tag::Keepalive>,
    /// Lease id → its first keepalive (almost always its only one; the id is the entry's
    /// `lease`).
    by_lease: IdIndex,
    /// Lease id → its further keepalives, in order (rare: two keepalives of one lease).
    more_by_lease: HashMap<i64, Vec<KeepaliveKey>>,
    /// Lease ids to renew on the stream.
    outbox: Vec<i64>,
    stream_open: bool,
}

impl Keepalives {
    /// Whether the stream is needed.
    pub(crate) fn wants_stream(&self) -> bool {
        !self.entries.is_empty()
    }

    /// How many keepalives are live.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Starts keeping lease `lease` alive for stream `stream`'s callback; the first renewal
    /// goes out as soon as the stream is open.
    pub(crate) fn add(
        &mut self,
        stream: StreamKey,
        lease: i64,
        auto_reconnect: bool,
    ) -> KeepaliveKey {
        let key = self.entries.insert(Entry {
            stream,
            lease,
            timer: None,
            awaiting: false,
            auto_reconnect,
        });
        if self.first_of(lease).is_some() {
            self.more_by_lease.entry(lease).or_default().push(key);
        } else {
            self.by_lease.insert(lease, key.index() as u32, |s| lease_of(&self.entries, s));
        }
        if self.stream_open {
            self.request(key);
        }
        key
    }

    /// Stops a keepalive at once (the lease then expires on its own).
    pub(crate) fn cancel(&mut self, key: KeepaliveKey, cx: &mut Cx) {
        if let Some(entry) = self.remove(key) {
            if let Some(timer) = entry.timer {
                cx.cancel(timer);
            }
        }
    }

    /// Whether renewals wait to be sent.
    pub(crate) fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The queued renewals, framed back to back for one DATA frame.
    pub(crate) fn take_outbox(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.outbox.len() * 16);
        for id in self.outbox.drain(..) {
            codec::encode_into(&mut out, &LeaseKeepAliveRequest { id });
        }
        if self.outbox.capacity() > 64 {
            // Every lease's renewal on a new stream: that room is not kept for good.
            self.outbox = Vec::new();
        }
        out.freeze()
    }

    /// The stream is being opened: every lease is renewed at once; its first messages.
    pub(crate) fn on_stream_opened(&mut self, cx: &mut Cx) -> Bytes {
        self.stream_open = true;
        for key in self.entries.keys_where(|_| true) {
            if let Some(timer) = self.entries.get_mut(key).and_then(|e| e.timer.take()) {
                cx.cancel(timer);
            }
            self.request(key);
        }
        self.take_outbox()
    }

    /// The stream ended: nothing is scheduled until it re-opens.
    pub(crate) fn on_stream_lost(&mut self, cx: &mut Cx) {
        self.stream_open = false;
        self.outbox = Vec::new();
        for (_, e) in self.entries.iter_mut() {
            e.awaiting = false;
            if let Some(timer) = e.timer.take() {
                cx.cancel(timer);
            }
        }
    }

    /// A renewal's answer, for every keepalive of that lease waiting for one.
    pub(crate) fn on_response(&mut self, resp: LeaseKeepAliveResponse, cx: &mut Cx) {
        let Some(first) = self.first_of(resp.id) else { return };
        let more = self.more_by_lease.get(&resp.id).cloned().unwrap_or_default();
        for key in std::iter::once(first).chain(more) {
            let Some(entry) = self.entries.get_mut(key).filter(|e| e.awaiting) else {
                continue;
            };
            entry.awaiting = false;
            let stream = entry.stream;
            if resp.ttl <= 0 {
                self.remove(key);
                let msg = format!("lease {:x} expired or was revoked", resp.id);
                let err = EtcdError::new(Code::NotFound, msg, "keepalive");
                cx.deliver(stream, StreamItem::Keepalive(Err(err)));
                continue;
            }
            let ttl_ms = (resp.ttl as u64).saturating_mul(1000);
            let every = Duration::from_millis(ttl_ms / 3).clamp(MIN_RENEWAL, MAX_DELAY);
            entry.timer = Some(cx.after(every, Timer::Renew(key)));
            cx.deliver(stream, StreamItem::Keepalive(Ok(resp)));
        }
    }

    /// Keepalive `key`'s timer fired: renew now if the stream is open (otherwise the
    /// re-opened stream renews it). Whether a renewal was queued.
    pub(crate) fn renewal_due(&mut self, key: KeepaliveKey) -> bool {
        let Some(entry) = self.entries.get_mut(key) else { return false };
        entry.timer = None;
        if self.stream_open {
            self.request(key);
            return true;
        }
        false
    }

    /// Ends every keepalive (or only those with `auto_reconnect` off) with one error each:
    /// the stream gave up, or it broke and those do not reconnect, or the client closed.
    pub(crate) fn end_all(
        &mut self,
        only_no_reconnect: bool,
        code: Code,
        message: &str,
        cx: &mut Cx,
    ) {
        let ending = self.entries.keys_where(|e| !(only_no_reconnect && e.auto_reconnect));
        for key in ending {
            let Some(entry) = self.remove(key) else { continue };
            if let Some(timer) = entry.timer {
                cx.cancel(timer);
            }
            let err = EtcdError::new(code, message, "keepalive");
            cx.deliver(entry.stream, StreamItem::Keepalive(Err(err)));
        }
    }

    fn remove(&mut self, key: KeepaliveKey) -> Option<Entry> {
        let lease = self.entries.get(key)?.lease;
        // The index is updated while the entry is still there to say its lease.
        let more = self.more_by_lease.get_mut(&lease);
        let id_of = |s| lease_of(&self.entries, s);
        if self.by_lease.get(lease, id_of) == Some(key.index() as u32) {
            // The first goes: the next in line (if any) takes its place.
            match more {
                Some(list) => {
                    let next = list.remove(0);
                    self.by_lease.insert(lease, next.index() as u32, id_of);
                    if list.is_empty() {
                        self.more_by_lease.remove(&lease);
                    }
                }
                None => {
                    self.by_lease.remove(lease, id_of);
                }
            }
        } else if let Some(list) = more {
            list.retain(|&k| k != key);
            if list.is_empty() {
                self.more_by_lease.remove(&lease);
            }
        }
        self.entries.remove(key)
    }

    /// The first keepalive of lease `lease`.
    fn first_of(&self, lease: i64) -> Option<KeepaliveKey> {
        let slot = self.by_lease.get(lease, |s| lease_of(&self.entries, s))?;
        self.entries.key_at(slot as usize)
    }

    /// Queues a renewal of `key`'s lease (once, however many keepalives share it).
    fn request(&mut self, key: KeepaliveKey) {
        let Some(lease) = self.entries.get(key).map(|e| e.lease) else { return };
        let more = self.more_by_lease.get(&lease).map_or(&[][..], |v| &v[..]);
        let already = self
            .first_of(lease)
            .iter()
            .chain(more)
            .any(|&k| self.entries.get(k).is_some_and(|e| e.awaiting));
        if let Some(e) = self.entries.get_mut(key) {
            e.awaiting = true;
        }
        if !already {
            self.outbox.push(lease);
        }
    }
}

/// The lease of the keepalive in slot `slot` (what [`Keepalives::by_lease`] indexes).
fn lease_of(entries: &Slots<Entry, tag::Keepalive>, slot: u32) -> Option<i64> {
    entries.at(slot).map(|(_, e)| e.lease)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cx::Event;
    use crate::core::registry::StreamCallback;
    use crate::core::registry::Streams;
    use prost::Message;
    use std::time::Instant;

    fn stream() -> StreamKey {
        Streams::default().add(StreamCallback::Keepalive(Box::new(|_| {})))
    }

    fn sent(ka: &mut Keepalives) -> Vec<i64> {
        ids(ka.take_outbox())
    }

    fn ids(mut bytes: Bytes) -> Vec<i64> {
        let mut ids = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
            ids.push(LeaseKeepAliveRequest::decode(&bytes[5..5 + len]).unwrap().id);
            bytes = bytes.slice(5 + len..);
        }
        ids
    }

    fn items(cx: &mut Cx) -> Vec<Result<i64, Code>> {
        cx.events
            .drain(..)
            .map(|e| match e {
                Event::Stream(_, StreamItem::Keepalive(r)) => {
                    r.map(|r| r.ttl).map_err(|e| e.code())
                }
                _ => panic!("not a keepalive item"),
            })
            .collect()
    }

    #[test]
    fn two_keepalives_of_one_lease_share_a_renewal_every_third_of_the_ttl() {
        let t0 = Instant::now();
        let mut cx = Cx::new(t0, 1);
        let mut ka = Keepalives::default();
        let a = ka.add(stream(), 7, true);
        ka.add(stream(), 7, true);
        assert!(!ka.has_outbox(), "nothing before the stream opens");
        ka.on_stream_opened(&mut cx);
        ka.on_response(LeaseKeepAliveResponse { id: 7, ttl: 9, ..Default::default() }, &mut cx);
        assert_eq!(items(&mut cx), vec![Ok(9), Ok(9)]);
        let due = cx.timers.next_deadline().expect("armed");
        assert!(due <= t0 + Duration::from_secs(3) && due > t0 + Duration::from_millis(2900));
        assert!(ka.renewal_due(a));
        assert_eq!(sent(&mut ka), vec![7]);
    }

    #[test]
    fn a_ttl_of_zero_ends_the_keepalive_with_not_found() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut ka = Keepalives::default();
        ka.add(stream(), 7, true);
        assert_eq!(ids(ka.on_stream_opened(&mut cx)), vec![7]);
        ka.on_response(LeaseKeepAliveResponse { id: 7, ttl: 0, ..Default::default() }, &mut cx);
        assert_eq!(items(&mut cx), vec![Err(Code::NotFound)]);
        assert!(!ka.wants_stream());
    }

    #[test]
    fn a_lost_stream_cancels_the_renewals_and_the_next_one_renews_every_lease_at_once() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut ka = Keepalives::default();
        ka.add(stream(), 1, true);
        ka.add(stream(), 2, false);
        assert_eq!(ids(ka.on_stream_opened(&mut cx)), vec![1, 2]);
        ka.on_response(LeaseKeepAliveResponse { id: 1, ttl: 30, ..Default::default() }, &mut cx);
        assert_eq!(items(&mut cx), vec![Ok(30)]);
        assert!(cx.timers.next_deadline().is_some());
        ka.on_stream_lost(&mut cx);
        assert_eq!(cx.timers.next_deadline(), None, "nothing scheduled while it is down");
        ka.end_all(true, Code::Unavailable, "gone", &mut cx);
        assert_eq!(items(&mut cx), vec![Err(Code::Unavailable)], "only the one without reconnect");
        assert_eq!(ka.len(), 1);
        assert_eq!(ids(ka.on_stream_opened(&mut cx)), vec![1], "renewed at once");
    }

    #[test]
    fn the_second_keepalive_of_a_lease_carries_on_when_the_first_is_cancelled() {
        let mut cx = Cx::new(Instant::now(), 1);
        let mut ka = Keepalives::default();
        let a = ka.add(stream(), 7, true);
        let b = ka.add(stream(), 7, true);
        let c = ka.add(stream(), 7, true);
        ka.add(stream(), 8, true);
        assert_eq!(ids(ka.on_stream_opened(&mut cx)), vec![7, 8], "one renewal per lease");
        ka.cancel(a, &mut cx);
        ka.cancel(c, &mut cx);
        ka.on_response(LeaseKeepAliveResponse { id: 7, ttl: 9, ..Default::default() }, &mut cx);
        assert_eq!(items(&mut cx), vec![Ok(9)], "b alone");
        assert!(ka.renewal_due(b));
        assert_eq!(sent(&mut ka), vec![7]);
        ka.cancel(b, &mut cx);
        ka.on_response(LeaseKeepAliveResponse { id: 7, ttl: 9, ..Default::default() }, &mut cx);
        assert!(items(&mut cx).is_empty());
        assert!(ka.more_by_lease.is_empty());
        assert_eq!(ka.len(), 1);
    }

    #[test]
    fn a_keepalive_costs_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }
}
