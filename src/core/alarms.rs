//! Alarms: work of the crate's own recipes (a registration's retry, a config source's
//! re-sync) that must run after a delay, on the client's timer wheel, so that `run()` keeps
//! turning while one is armed and a foreign loop's `next_timeout` covers it.

use super::cx::{Cx, Timer};
use crate::timer::TimerKey;
use std::collections::HashMap;
use std::time::Duration;

/// An armed alarm's id (never reused).
pub(crate) type AlarmKey = u64;

type Work = Box<dyn FnOnce()>;

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

    /// Disarms alarm `key`; its work is dropped uncalled (a spent key is harmless).
    pub(crate) fn disarm(&mut self, key: AlarmKey, cx: &mut Cx) {
        if let Some((timer, _)) = self.armed.remove(&key) {
            cx.cancel(timer);
        }
    }

    /// The work of alarm `key`, which just fired.
    pub(crate) fn fired(&mut self, key: AlarmKey) -> Option<Work> {
        self.armed.remove(&key).map(|(_, work)| work)
    }

    /// Whether no alarm is armed.
    pub(crate) fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Disarms every alarm (the client closes): their work is dropped uncalled.
    pub(crate) fn clear(&mut self, cx: &mut Cx) {
        for (_, (timer, _)) in self.armed.drain() {
            cx.cancel(timer);
        }
    }
}
