//! Handles of long-lived streams. A handle is a weak reference plus a generation-checked
//! key: it never keeps the client alive, and one that outlives its stream or client is
//! harmless.

use crate::client::{Client, Inner};
use crate::error::EtcdError;
use crate::session::watch::WatchKey;
use std::rc::Weak;

/// A running watch, returned by [`Client::watch`].
///
/// Dropping the handle does **not** cancel the watch (as in EV::Etcd): its callback keeps
/// receiving events until [`cancel`](Watch::cancel) is called or the watch ends with an
/// error. Keep the handle to be able to cancel.
#[derive(Clone)]
pub struct Watch {
    client: Weak<Inner>,
    key: WatchKey,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Watch {
    pub(crate) fn new(client: &Client, key: WatchKey) -> Watch {
        Watch {
            client: client.downgrade(),
            key,
        }
    }

    /// Cancels the watch: from the moment this returns, the watch's callback never runs
    /// again, not even for events already received. The server is told to drop the watch.
    ///
    /// `callback` receives `Ok(())` on the client's next turn, or at once if the client no
    /// longer exists (there is no loop left to run it). Cancelling again, or after the watch
    /// ended, is harmless and succeeds the same way.
    pub fn cancel(&self, callback: impl FnOnce(Result<(), EtcdError>) + 'static) {
        match Client::upgrade(&self.client) {
            Some(client) => client.cancel_watch(self.key, callback),
            None => callback(Ok(())),
        }
    }
}
