//! Wakers that only enqueue.
//!
//! h2 calls `wake()` while holding its internal lock, so a waker must never poll anything
//! itself: it pushes its key onto a ready queue that the core drains after h2 returns.
//! One waker per call slot is made once and reused, so starting a call allocates none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// The key of the h2 connection task in the ready queue: h2 wakes it when the connection
/// has something to do (bytes to read, frames to write, a stream slot freed).
pub(crate) const CONNECTION: usize = usize::MAX;
/// The core's own mark that it has work (a call queued, say) that needs a drive round but
/// not, by itself, a poll of the h2 connection.
pub(crate) const CORE: usize = usize::MAX - 1;

/// Keys woken since the last drain. `Mutex` only because `Waker` must be `Send + Sync`; it is
/// never contended (one thread).
#[derive(Debug, Default)]
struct ReadyQueue {
    keys: Mutex<Vec<usize>>,
}

impl ReadyQueue {
    fn push(&self, key: usize) {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).push(key);
    }
}

/// A key's waker. h2 wakes a stream several times per read (headers, data, trailers): the
/// `queued` flag enqueues the key once until the core drains it.
struct KeyWaker {
    key: usize,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl KeyWaker {
    fn enqueue(&self) {
        if !self.queued.swap(true, Ordering::Relaxed) {
            self.queue.push(self.key);
        }
    }
}

impl Wake for KeyWaker {
    fn wake(self: Arc<Self>) {
        self.enqueue();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.enqueue();
    }
}

/// The ready queue and a cache of one waker per key.
pub(crate) struct Wakers {
    queue: Arc<ReadyQueue>,
    /// Each call slot's waker, and the same `KeyWaker` (to clear its flag on drain).
    by_key: Vec<(Waker, Arc<KeyWaker>)>,
    connection: (Waker, Arc<KeyWaker>),
}

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakers").field("queue", &self.queue).finish_non_exhaustive()
    }
}

fn key_waker(key: usize, queue: &Arc<ReadyQueue>) -> (Waker, Arc<KeyWaker>) {
    let w = Arc::new(KeyWaker { key, queued: AtomicBool::new(false), queue: queue.clone() });
    (Waker::from(w.clone()), w)
}

impl Default for Wakers {
    fn default() -> Self {
        let queue = Arc::new(ReadyQueue::default());
        let connection = key_waker(CONNECTION, &queue);
        Wakers { queue, by_key: Vec::new(), connection }
    }
}

impl Wakers {
    /// The waker for call slot `key`.
    pub(crate) fn for_key(&mut self, key: usize) -> &Waker {
        while self.by_key.len() <= key {
            let w = key_waker(self.by_key.len(), &self.queue);
            self.by_key.push(w);
        }
        &self.by_key[key].0
    }

    /// The waker of the connection task.
    pub(crate) fn connection(&self) -> &Waker {
        &self.connection.0
    }

    /// Marks `key` ready without h2 having woken it (new input, a new call).
    pub(crate) fn wake(&self, key: usize) {
        match key {
            CONNECTION => self.connection.1.enqueue(),
            k => match self.by_key.get(k) {
                Some((_, w)) => w.enqueue(),
                None => self.queue.push(k),
            },
        }
    }

    /// Moves the woken keys into `out` (which must be empty), leaving the queue empty; each
    /// may be woken (and queued) again from now on.
    pub(crate) fn take_ready(&self, out: &mut Vec<usize>) {
        let mut keys = self.queue.keys.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *keys, out);
        drop(keys);
        for &key in out.iter() {
            let w = match key {
                CONNECTION => Some(&self.connection.1),
                k => self.by_key.get(k).map(|(_, w)| w),
            };
            if let Some(w) = w {
                w.queued.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Whether anything was woken since the last drain.
    pub(crate) fn any_ready(&self) -> bool {
        !self.queue.keys.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_woken_twice_before_a_drain_is_queued_once() {
        let mut w = Wakers::default();
        w.for_key(2).wake_by_ref();
        w.for_key(2).wake_by_ref();
        w.wake(2);
        w.connection().wake_by_ref();
        w.connection().wake_by_ref();
        let mut out = Vec::new();
        w.take_ready(&mut out);
        assert_eq!(out, vec![2, CONNECTION]);
        out.clear();
        w.for_key(2).wake_by_ref(); // queued again once drained
        w.take_ready(&mut out);
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn wakes_enqueue_keys_and_drain_empties() {
        let mut w = Wakers::default();
        w.for_key(3).wake_by_ref();
        w.connection().wake_by_ref();
        let owned = w.for_key(0).clone();
        owned.wake(); // by value, as h2 does with a stored waker
        assert!(w.any_ready());
        let mut out = Vec::new();
        w.take_ready(&mut out);
        assert_eq!(out, vec![3, CONNECTION, 0]);
        assert!(!w.any_ready());
    }
}
