//! Wakers that only enqueue.
//!
//! h2 calls `wake()` while holding its internal lock, so a waker must never poll anything
//! itself: it pushes its key onto a ready queue that the core drains after h2 returns.
//! One waker per call slot is made once and reused, so starting a call allocates none.

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

struct KeyWaker {
    key: usize,
    queue: Arc<ReadyQueue>,
}

impl Wake for KeyWaker {
    fn wake(self: Arc<Self>) {
        self.queue.push(self.key);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.push(self.key);
    }
}

/// The ready queue and a cache of one waker per key.
#[derive(Debug)]
pub(crate) struct Wakers {
    queue: Arc<ReadyQueue>,
    by_key: Vec<Waker>,
    connection: Waker,
}

impl Default for Wakers {
    fn default() -> Self {
        let queue = Arc::new(ReadyQueue::default());
        let connection = Waker::from(Arc::new(KeyWaker { key: CONNECTION, queue: queue.clone() }));
        Wakers { queue, by_key: Vec::new(), connection }
    }
}

impl Wakers {
    /// The waker for call slot `key`.
    pub(crate) fn for_key(&mut self, key: usize) -> &Waker {
        while self.by_key.len() <= key {
            let k = self.by_key.len();
            let w = Arc::new(KeyWaker { key: k, queue: self.queue.clone() });
            self.by_key.push(Waker::from(w));
        }
        &self.by_key[key]
    }

    /// The waker of the connection task.
    pub(crate) fn connection(&self) -> &Waker {
        &self.connection
    }

    /// Marks `key` ready without h2 having woken it (new input, a new call).
    pub(crate) fn wake(&self, key: usize) {
        self.queue.push(key);
    }

    /// Moves the woken keys into `out` (which must be empty), leaving the queue empty.
    pub(crate) fn take_ready(&self, out: &mut Vec<usize>) {
        let mut keys = self.queue.keys.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *keys, out);
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
