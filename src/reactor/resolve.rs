//! Name resolution that never blocks the loop.
//!
//! An IP literal (`127.0.0.1:2379`, `[::1]:2379`) is parsed on the spot: no thread, no system
//! call beyond the connect's own, as before. A host name goes through the system resolver
//! (`getaddrinfo`, which blocks for as long as DNS takes) on a helper thread; the thread sends
//! its answer over a channel and wakes the reactor's `Poll` through the reactor's one
//! [`mio::Waker`], so `run()` and a foreign loop polling the epoll fd both see it at once.
//!
//! One short-lived thread per lookup, rather than one long-lived resolver thread with a
//! queue: lookups are rare (one per connection attempt to a named endpoint), `getaddrinfo`
//! cannot be cancelled, and a lookup that hangs must not hold up the next one (the core's
//! connect timeout gives up on it and the next endpoint is looked up at once). No thread
//! lingers while the client is idle, and there is nothing to shut down: a thread whose reactor
//! is gone finds the channel closed and ends. A hung lookup leaves at most one thread behind
//! per connect timeout, until the system resolver gives up on its own.
//!
//! Each lookup has a number. The reactor waits for one lookup at a time; when the core gives
//! up on it (a `Close`, or a `Connect` elsewhere) it is [`cancel`](Resolver::cancel)led, and
//! its answer, when it comes, is discarded.

use crate::endpoint::Endpoint;
use mio::Waker;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Looks `host:port` up, blocking (it runs on a helper thread). Replaceable in tests.
pub(super) type LookupFn = dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// A lookup the reactor waits for: what to connect with once its addresses are known.
#[derive(Debug)]
pub(super) struct Lookup {
    id: u64,
    pub(super) endpoint: Endpoint,
    /// TCP keepalive interval and timeout, if on (from the core's `Connect`).
    pub(super) keepalive: Option<(Duration, Duration)>,
}

/// A helper thread's answer: the lookup's number and its addresses.
type Answer = (u64, io::Result<Vec<SocketAddr>>);

/// The lookups of one reactor (see the module comment).
pub(super) struct Resolver {
    lookup: Arc<LookupFn>,
    /// Wakes the reactor's `Poll` once an answer is in the channel.
    waker: Arc<Waker>,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    /// Numbers the lookups: an answer is used only if it is the pending lookup's.
    started: u64,
    /// The lookup the reactor waits for, if any.
    pending: Option<Lookup>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("started", &self.started)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver whose threads wake the loop through `waker`, using the system resolver.
    pub(super) fn new(waker: Arc<Waker>) -> Resolver {
        let (tx, rx) = channel();
        Resolver { lookup: Arc::new(system), waker, tx, rx, started: 0, pending: None }
    }

    /// Replaces the system resolver (tests: one that blocks until released).
    #[cfg(test)]
    pub(super) fn set_lookup(&mut self, lookup: Arc<LookupFn>) {
        self.lookup = lookup;
    }

    /// Starts looking up the `host:port` of `endpoint` on a new thread; its answer is for a
    /// connect to `endpoint`. A lookup still pending is forgotten. `Err`: the thread could not
    /// be started.
    pub(super) fn start(
        &mut self,
        endpoint: &Endpoint,
        keepalive: Option<(Duration, Duration)>,
    ) -> io::Result<()> {
        self.started += 1;
        let id = self.started;
        let (lookup, waker, tx) = (self.lookup.clone(), self.waker.clone(), self.tx.clone());
        let authority = endpoint.authority().as_str().to_string();
        std::thread::Builder::new().name("evetcd-resolve".into()).spawn(move || {
            let answer = lookup(&authority);
            // Sent before the wake, so the woken loop finds it. Either fails only once the
            // reactor is gone, and then nobody waits.
            if tx.send((id, answer)).is_ok() {
                let _ = waker.wake();
            }
        })?;
        self.pending = Some(Lookup { id, endpoint: endpoint.clone(), keepalive });
        Ok(())
    }

    /// Forgets the pending lookup: its answer, when it comes, is discarded.
    pub(super) fn cancel(&mut self) {
        self.pending = None;
    }

    /// The pending lookup and its addresses, once its answer arrived; answers to forgotten
    /// lookups are dropped on the way.
    pub(super) fn poll(&mut self) -> Option<(Lookup, io::Result<Vec<SocketAddr>>)> {
        while let Ok((id, answer)) = self.rx.try_recv() {
            if self.pending.as_ref().is_some_and(|p| p.id == id) {
                let lookup = self.pending.take().expect("checked above");
                return Some((lookup, answer));
            }
        }
        None
    }

    /// Whether a lookup is pending.
    #[cfg(test)]
    pub(super) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// `authority` as an IP address and port, when it is one: it needs no lookup.
pub(super) fn literal(authority: &str) -> Option<SocketAddr> {
    authority.parse().ok()
}

/// The system resolver: the addresses of `host:port`, in its order of preference. Blocks.
fn system(authority: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(ErrorKind::NotFound, "no address"));
    }
    Ok(addrs)
}
