//! Alarms: work of the crate's own recipes (a registration's retry, a config source's
//! re-sync) that must run after a delay, on the client's timer wheel, so that `run()` keeps
//! turning while one is armed and a foreign loop's `next_timeout` covers it.
//!
//! Every armed alarm's work runs exactly once: [`Fired::Due`] at its time, or
//! [`Fired::Closed`] when the client closes first (so that a recipe waiting out a backoff can
//! end with `CANCELLED` instead of vanishing). Disarmed work is handed back to be dropped
//! outside the core's borrow (it may own handles whose `Drop` calls into the client).

use super::cx::{Cx, Timer};
use crate::timer::TimerKey;
use std::collections::HashMap;
use std::time::Duration;

/// An armed alarm's id (never reused).
pub(crate) type AlarmKey = u64;

/// Why an alarm's work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fired {
    /// Its time came.
    Due,
    /// The client closed before it.
    Closed,
}

pub(crate) type Work = Box<dyn FnOnce(Fired)>;

/// The armed alarms.
#[derive(Default)]
pub(crate) struct Alarms {
    armed: HashMap<AlarmKey, (TimerKey, Work)>,
    next: AlarmKey,
}

impl Alarms {
    /// Arms `work` to be queued `delay` from now.
    pub(crate) fn arm(&mut self, delay: Duration, work: Work, cx: &mut Cx) -> AlarmKey {
        self.next += 1;
        let key = self.next;
        let timer = cx.after(delay, Timer::Alarm(key));
        self.armed.insert(key, (timer, work));
        key
    }

    /// Disarms alarm `key`; its work is handed back, never to be called (a spent key is
    /// harmless).
    pub(crate) fn disarm(&mut self, key: AlarmKey, cx: &mut Cx) -> Option<Work> {
        let (timer, work) = self.armed.remove(&key)?;
        cx.cancel(timer);
        Some(work)
    }

    /// The work of alarm `key`, which just fired.
    pub(crate) fn fired(&mut self, key: AlarmKey) -> Option<Work> {
        self.armed.remove(&key).map(|(_, work)| work)
    }

    /// Whether no alarm is armed.
    pub(crate) fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Disarms every alarm (the client closes): their work, in the order armed, to be run
    /// with [`Fired::Closed`].
    pub(crate) fn drain(&mut self, cx: &mut Cx) -> Vec<Work> {
        let mut armed: Vec<_> = self.armed.drain().collect();
        armed.sort_by_key(|(key, _)| *key);
        armed
            .into_iter()
            .map(|(_, (timer, work))| {
                cx.cancel(timer);
                work
            })
            .collect()
    }
}
