//! One-shot server streams whose every message goes to the caller, such as a maintenance
//! snapshot: no deadline, no re-open (a snapshot cannot resume halfway), cancellable.
//!
//! ```text
//!  start ──► open ──message──► Some(bytes) to the callback (any number of times)
//!               ├──ends OK───► None: the clean end, the final delivery
//!               └──fails─────► Err: the final delivery
//! ```

use super::call::{CallKey, CallKind};
use super::{Event, Session};
use crate::error::{Code, EtcdError};
use bytes::Bytes;
use slab::Slab;

/// What a sink's callback receives: a message, `None` at the clean end, or the error.
pub(crate) type SinkCallback = Box<dyn FnMut(Result<Option<Bytes>, EtcdError>)>;

/// A sink's slab index plus a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SinkKey {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

/// One delivery.
pub(crate) type SinkDelivery = (SinkKey, Result<Option<Bytes>, EtcdError>);

struct Entry {
    generation: u64,
    callback: Option<SinkCallback>,
    /// The final delivery is queued: the entry goes once it has run.
    ended: bool,
    /// A final delivery that came while the callback was out running (it called
    /// `Client::close`): handed to it as soon as it returns.
    deferred: Option<Result<Option<Bytes>, EtcdError>>,
}

/// Every sink of a client.
#[derive(Default)]
pub(crate) struct Sinks {
    entries: Slab<Entry>,
    next_generation: u64,
}

impl Sinks {
    /// Whether no sink is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn get_mut(&mut self, key: SinkKey) -> Option<&mut Entry> {
        self.entries.get_mut(key.index).filter(|e| e.generation == key.generation)
    }
}

impl Session {
    /// Starts server stream `path` with the framed request `body`; returns the call's key
    /// (to cancel it with [`cancel_call`](Session::cancel_call)).
    pub(crate) fn start_sink(
        &mut self,
        path: &'static str,
        operation: &'static str,
        body: Bytes,
        callback: SinkCallback,
    ) -> CallKey {
        let sinks = &mut self.sinks;
        let generation = sinks.next_generation;
        sinks.next_generation += 1;
        let index = sinks.entries.insert(Entry {
            generation,
            callback: Some(callback),
            ended: false,
            deferred: None,
        });
        self.queue_call(path, operation, CallKind::Sink(SinkKey { index, generation }), body)
    }

    /// Takes a sink's callback out to run it.
    pub(crate) fn take_sink_callback(&mut self, key: SinkKey) -> Option<SinkCallback> {
        self.sinks.get_mut(key)?.callback.take()
    }

    /// Keeps `item`, a final delivery, when the sink's callback is out running; whether it
    /// was kept (else it is the caller's to deliver).
    pub(crate) fn defer_sink_final(
        &mut self,
        key: SinkKey,
        item: Result<Option<Bytes>, EtcdError>,
    ) -> Result<(), Result<Option<Bytes>, EtcdError>> {
        match self.sinks.get_mut(key) {
            Some(entry) if entry.callback.is_none() => {
                entry.deferred.get_or_insert(item);
                Ok(())
            }
            _ => Err(item),
        }
    }

    /// The final delivery kept by [`defer_sink_final`](Self::defer_sink_final), once the
    /// callback is back.
    pub(crate) fn take_deferred_sink_final(
        &mut self,
        key: SinkKey,
    ) -> Option<Result<Option<Bytes>, EtcdError>> {
        self.sinks.get_mut(key).filter(|e| e.callback.is_some())?.deferred.take()
    }

    /// Puts a sink's callback back after it ran; after the final delivery the entry goes
    /// and the callback is returned, to be dropped once no borrow is held.
    pub(crate) fn restore_sink_callback(
        &mut self,
        key: SinkKey,
        callback: SinkCallback,
        delivered_final: bool,
    ) -> Option<SinkCallback> {
        let Some(entry) = self.sinks.get_mut(key) else { return Some(callback) };
        if entry.ended && delivered_final {
            self.sinks.entries.remove(key.index);
            return Some(callback);
        }
        entry.callback = Some(callback);
        None
    }

    /// The sink's stream delivered messages.
    pub(super) fn on_sink_messages(&mut self, key: SinkKey, msgs: Vec<Bytes>) {
        for m in msgs {
            self.events.push_back(Event::Sink((key, Ok(Some(m)))));
        }
    }

    /// The sink's stream ended (already removed from the slab): its final delivery.
    pub(super) fn sink_ended(
        &mut self,
        key: SinkKey,
        operation: &'static str,
        result: Result<(), (Code, String)>,
    ) {
        let Some(entry) = self.sinks.get_mut(key) else { return };
        entry.ended = true;
        let item =
            result.map(|()| None).map_err(|(code, msg)| EtcdError::new(code, msg, operation));
        self.events.push_back(Event::Sink((key, item)));
    }
}
