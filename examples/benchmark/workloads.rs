//! The request/response benchmarks: put, range, txn-put and lease-keepalive, each a
//! [`Requests`] for the engine, with etcd's keys and values.

use crate::args::Options;
use crate::driver::{Conns, Done, Requests};
use bytes::Bytes;
use evetcd::{Client, GetOptions, Keepalive, LeaseGrantOptions, PutOptions, Txn, TxnOp};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// xorshift64*: random keys and values without a dependency; quality is no concern here.
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        Rng(Cell::new(seed | 1))
    }

    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// etcd's benchmark keys: `prefix` + the zigzag varint of `n` at the start of `size` zero
/// bytes (Go's `binary.PutVarint` into a `make([]byte, size)`). `size` was checked to fit.
pub fn key(prefix: &str, n: u64, size: usize) -> Bytes {
    let mut k = Vec::with_capacity(prefix.len() + size);
    k.extend_from_slice(prefix.as_bytes());
    let mut v = n << 1; // zigzag of a non-negative number
    let mut written = 0;
    loop {
        let more = v >= 0x80;
        k.push((v as u8 & 0x7f) | if more { 0x80 } else { 0 });
        written += 1;
        v >>= 7;
        if !more {
            break;
        }
    }
    k.resize(prefix.len() + size.max(written), 0);
    Bytes::from(k)
}

/// The text of a failure, as counted in the error distribution.
fn text<T>(r: Result<T, evetcd::EtcdError>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.to_string())
}

pub struct Put {
    prefix: String,
    key_size: usize,
    space: u64,
    sequential: bool,
    value: Bytes,
    rng: Rng,
}

impl Put {
    pub fn new(o: &Options) -> Put {
        let rng = Rng::new();
        Put {
            prefix: o.key_prefix.clone(),
            key_size: o.key_size,
            space: o.key_space_size,
            sequential: o.sequential_keys,
            value: Bytes::from(rng.bytes(o.val_size)),
            rng,
        }
    }
}

impl Requests for Put {
    fn start(&self, client: &Client, _: usize, index: usize, done: Done) {
        let n =
            if self.sequential { index as u64 % self.space } else { self.rng.next() % self.space };
        let k = key(&self.prefix, n, self.key_size);
        client.put(k, self.value.clone(), PutOptions::new(), move |r| done(text(r)));
    }
}

pub struct Range {
    key: Bytes,
    options: GetOptions,
}

impl Range {
    pub fn new(o: &Options) -> Range {
        let mut options = GetOptions::new()
            .serializable(o.serializable)
            .limit(o.limit)
            .count_only(o.count_only)
            .keys_only(o.keys_only);
        if o.range_prefix {
            options = options.prefix(true);
        } else if let Some(end) = &o.range_end {
            options = options.range_end(end.clone());
        }
        Range { key: Bytes::from(o.range_key.clone()), options }
    }
}

impl Requests for Range {
    fn start(&self, client: &Client, _: usize, _: usize, done: Done) {
        client.get(self.key.clone(), self.options.clone(), move |r| done(text(r)));
    }
}

pub struct TxnPut {
    prefix: String,
    key_size: usize,
    space: u64,
    ops: usize,
    value: Bytes,
}

impl TxnPut {
    pub fn new(o: &Options) -> TxnPut {
        TxnPut {
            prefix: o.key_prefix.clone(),
            key_size: o.key_size,
            space: o.key_space_size,
            ops: o.txn_ops,
            value: Bytes::from(Rng::new().bytes(o.val_size)),
        }
    }
}

impl Requests for TxnPut {
    fn start(&self, client: &Client, _: usize, index: usize, done: Done) {
        // etcd's keys: request i writes keys i*ops .. i*ops+ops-1, modulo the key space.
        let first = index as u64 * self.ops as u64;
        let ops = (0..self.ops as u64).map(|j| {
            let k = key(&self.prefix, (first + j) % self.space, self.key_size);
            TxnOp::put(k, self.value.clone(), PutOptions::new())
        });
        client.txn(Txn::new().and_then(ops), move |r| done(text(r)));
    }
}

/// One keepalive round trip per request, on a lease per requester (etcd's `KeepAliveOnce`).
/// The crate offers keepalives as a stream: a request starts one on its lease and cancels
/// it at the first answer. Each connection also keeps an "anchor" lease alive for the whole
/// run, so the shared LeaseKeepAlive stream stays open between requests (the crate closes it
/// when no keepalive is left) and no request pays for opening it.
#[derive(Clone)]
pub struct LeaseKeepalive {
    /// The lease of each requester.
    leases: Vec<i64>,
}

/// The leases a lease-keepalive run made, to revoke afterwards, and the anchors to cancel.
pub struct LeaseSetup {
    pub work: LeaseKeepalive,
    pub anchors: Vec<(Keepalive, i64)>,
}

/// Grants a lease (TTL 100 s, as etcd's) per requester on its connection, and an anchor
/// per connection, then starts the anchors; drives the clients until all of that answered.
/// Each step starts from the loop, not from a callback (see `driver::run_requests`).
pub fn lease_setup(conns: &mut Conns, requesters: usize) -> Result<LeaseSetup, String> {
    let n = conns.clients.len();
    // Slots 0..requesters: the requesters' leases; then one anchor per connection.
    let ids = Rc::new(RefCell::new(vec![0i64; requesters + n]));
    let pending = Rc::new(Cell::new(requesters + n));
    let failure: Rc<RefCell<Option<String>>> = Rc::default();
    for slot in 0..requesters + n {
        let (ids, pending, failure) = (ids.clone(), pending.clone(), failure.clone());
        let (client, ttl) = match slot < requesters {
            true => (&conns.clients[slot % n], 100),
            false => (&conns.clients[slot - requesters], 600),
        };
        client.lease_grant(ttl, LeaseGrantOptions::new(), move |res| {
            match res {
                Ok(g) => ids.borrow_mut()[slot] = g.id,
                Err(e) => *failure.borrow_mut() = Some(format!("lease grant: {e}")),
            }
            pending.set(pending.get() - 1);
        });
    }
    conns.drive(|_| (pending.get() > 0).then_some(None));
    if let Some(e) = failure.take() {
        return Err(e);
    }
    let mut leases = ids.take();
    let anchor_ids = leases.split_off(requesters);
    pending.set(n);
    let anchors: Vec<(Keepalive, i64)> = anchor_ids
        .into_iter()
        .zip(&conns.clients)
        .map(|(id, client)| {
            let (first, pending, failure) = (Cell::new(true), pending.clone(), failure.clone());
            let ka = client.lease_keepalive(id, move |res| {
                if first.replace(false) {
                    if let Err(e) = res {
                        *failure.borrow_mut() = Some(format!("keepalive: {e}"));
                    }
                    pending.set(pending.get() - 1);
                }
            });
            (ka, id)
        })
        .collect();
    conns.drive(|_| (pending.get() > 0).then_some(None));
    if let Some(e) = failure.take() {
        return Err(e);
    }
    Ok(LeaseSetup { work: LeaseKeepalive { leases }, anchors })
}

impl LeaseSetup {
    /// Stops the anchors and revokes every lease made, waiting for the answers.
    pub fn clean_up(&self, conns: &mut Conns) {
        let pending = Rc::new(Cell::new(0usize));
        let n = conns.clients.len();
        let revoke = |client: &Client, id: i64| {
            pending.set(pending.get() + 1);
            let pending = pending.clone();
            client.lease_revoke(id, move |_| pending.set(pending.get() - 1));
        };
        for (i, (ka, id)) in self.anchors.iter().enumerate() {
            ka.cancel(|_| ());
            revoke(&conns.clients[i % n], *id);
        }
        for (r, id) in self.work.leases.iter().enumerate() {
            revoke(&conns.clients[r % n], *id);
        }
        conns.drive(|_| (pending.get() > 0).then_some(None));
    }
}

impl Requests for LeaseKeepalive {
    fn start(&self, client: &Client, requester: usize, _: usize, done: Done) {
        let handle: Rc<RefCell<Option<Keepalive>>> = Rc::default();
        let mut done = Some(done);
        let h = handle.clone();
        let ka = client.lease_keepalive(self.leases[requester], move |res| {
            // The first answer is the round trip; stop before the next renewal is scheduled.
            if let Some(ka) = h.borrow_mut().take() {
                ka.cancel(|_| ());
            }
            if let Some(done) = done.take() {
                done(text(res));
            }
        });
        // Set before the callback can run: callbacks never run inside the call that
        // registered them.
        *handle.borrow_mut() = Some(ka);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_etcds_varints_padded_to_the_key_size() {
        assert_eq!(&key("", 0, 8)[..], [0u8; 8]);
        assert_eq!(&key("p/", 1, 4)[..], b"p/\x02\0\0\0");
        assert_eq!(&key("", 200, 3)[..], [0x90, 0x03, 0]);
    }
}
