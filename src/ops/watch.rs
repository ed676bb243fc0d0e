//! Watch: options, `Client::watch` and `Client::request_progress`.

use crate::client::Client;
use crate::core::StreamCallback;
use crate::error::EtcdError;
use crate::handle::Watch;
use crate::namespace::Namespace;
use crate::ops::kv::KeyRange;
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::{WatchCreateRequest, WatchResponse};
use bytes::Bytes;

/// Options of [`Client::watch`]. Every option defaults to off or zero.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    range: KeyRange,
    req: WatchCreateRequest,
    /// Set by `auto_reconnect(false)`.
    no_reconnect: bool,
}

impl WatchOptions {
    /// No options: the single key, from the next revision on.
    pub fn new() -> Self {
        Self::default()
    }

    range_setters!();

    /// Start at this revision (0: after the current one). Older revisions are replayed in
    /// order; a compacted one ends the watch with an error carrying the compaction revision.
    pub fn start_revision(mut self, revision: i64) -> Self {
        self.req.start_revision = revision;
        self
    }

    /// Include each event's previous key-value pair.
    pub fn prev_kv(mut self, on: bool) -> Self {
        self.req.prev_kv = on;
        self
    }

    /// Ask the server for periodic progress notifications (no events, the current revision)
    /// while the watch is idle; etcd sends them every 10 minutes by default.
    pub fn progress_notify(mut self, on: bool) -> Self {
        self.req.progress_notify = on;
        self
    }

    /// Leave out put events.
    pub fn no_put(mut self, on: bool) -> Self {
        self.set_filter(FilterType::Noput, on);
        self
    }

    /// Leave out delete events.
    pub fn no_delete(mut self, on: bool) -> Self {
        self.set_filter(FilterType::Nodelete, on);
        self
    }

    /// Let the server split responses larger than its request limit; the pieces are joined
    /// again before the callback sees them.
    pub fn fragment(mut self, on: bool) -> Self {
        self.req.fragment = on;
        self
    }

    /// Use this watch id on the stream (0: the server picks). It is kept across reconnects;
    /// an id already in use on the stream makes the watch fail.
    pub fn watch_id(mut self, id: i64) -> Self {
        self.req.watch_id = id;
        self
    }

    /// Whether the watch is re-created when its stream breaks (default on). Off, it ends
    /// with the stream's error instead.
    pub fn auto_reconnect(mut self, on: bool) -> Self {
        self.no_reconnect = !on;
        self
    }

    fn set_filter(&mut self, filter: FilterType, on: bool) {
        self.req.filters.retain(|f| *f != filter as i32);
        if on {
            self.req.filters.push(filter as i32);
        }
    }

    /// The create request for `key`.
    pub(crate) fn request(self, key: Bytes) -> WatchCreateRequest {
        let (key, range_end) = self.range.resolve(key);
        WatchCreateRequest { key, range_end, ..self.req }
    }
}

impl Client {
    /// Watches `key` (or a range, see [`WatchOptions`]). `callback` receives every response:
    /// first one with `created` set and no events (again after each reconnect), then batches
    /// of events in revision order, and progress notifications (no events).
    ///
    /// All watches share one gRPC stream. When it breaks, every watch is re-created from the
    /// first revision it has not delivered, so no event is lost or repeated. A watch ends
    /// with one error when the server cancels it (its start revision was compacted:
    /// [`EtcdError::compact_revision`] says where to re-list from; or its create failed).
    ///
    /// ```no_run
    /// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
    /// use evetcd::WatchOptions;
    /// let watch = client.watch("jobs/", WatchOptions::new().prefix(true), |res| match res {
    ///     Ok(resp) => {
    ///         for ev in &resp.events {
    ///             println!("{:?} {:?}", ev.r#type(), ev.kv.as_ref().map(|kv| &kv.key));
    ///         }
    ///     }
    ///     Err(e) => eprintln!("watch ended: {e}"),
    /// });
    /// // Later: watch.cancel(|_| ());
    /// # drop(watch);
    /// ```
    pub fn watch(
        &self,
        key: impl Into<Bytes>,
        options: WatchOptions,
        callback: impl FnMut(Result<WatchResponse, EtcdError>) + 'static,
    ) -> Watch {
        let reconnect = !options.no_reconnect;
        let key = key.into();
        let key_was_empty = key.is_empty();
        let mut create = options.request(key);
        let callback = match self.namespace() {
            None => StreamCallback::Watch(Box::new(callback)),
            Some(ns) => {
                ns.watch(&mut create, key_was_empty);
                // Stripped on delivery, so that a watch re-created after a reconnect (with
                // the prefixed request the core keeps) is stripped as well.
                let callback = ns.unprefixing_each(Namespace::strip_watch, callback);
                StreamCallback::Watch(Box::new(callback))
            }
        };
        let key = self.with_core(|c| c.watch(create, callback, reconnect));
        Watch::new(self, key)
    }

    /// Asks the server for a progress notification on the watch stream. When every watch is
    /// synced, each active watch's callback receives a response with no events, `watch_id`
    /// -1 and the current revision in its header. Does nothing while no watch stream is open.
    pub fn request_progress(&self) {
        self.with_core(|c| c.request_progress());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fill_the_create_request() {
        let req = WatchOptions::new()
            .prefix(true)
            .start_revision(5)
            .prev_kv(true)
            .progress_notify(true)
            .no_put(true)
            .no_delete(true)
            .no_put(false)
            .fragment(true)
            .watch_id(9)
            .request(Bytes::from_static(b"a/"));
        assert_eq!((&req.key[..], &req.range_end[..]), (&b"a/"[..], &b"a0"[..]));
        assert_eq!((req.start_revision, req.watch_id), (5, 9));
        assert!(req.prev_kv && req.progress_notify && req.fragment);
        assert_eq!(req.filters, vec![FilterType::Nodelete as i32]);
    }
}
