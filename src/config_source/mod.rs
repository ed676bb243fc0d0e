//! [`ConfigSource`]: a prefix of etcd kept as a local map of configuration values that always
//! converges to etcd's: a snapshot read in pages at one revision, then every change from the
//! next revision, and, when the watch cannot resume, a fresh read of which only the difference
//! is delivered.
//!
//! It follows three designs etcd users know:
//!
//! - **Go's mirror syncer** (`clientv3/mirror.Syncer`): `SyncBase` reads the prefix in pages of
//!   1,000 keys, all at the revision of the first, and `SyncUpdates` watches from the next
//!   revision. The source does the same through [`Client::get_paged`] and [`Client::watch`],
//!   so no change falls between the two and none is seen twice.
//! - **List, then watch, then list again** (Kubernetes' reflector): a watch whose start was
//!   compacted cannot be resumed, so the prefix is read again at a new revision. Here the
//!   new read is compared with the local view and only what changed while the source was
//!   blind is delivered, as one [`ConfigEvent::Resynced`].
//! - **go-core's `ConfigSource`**: the view is the product (`get`, `entries`, `revision`),
//!   writes go through to etcd, and a hybrid mode lays etcd's values over a base map the
//!   program supplies (defaults parsed from a file, say).
//!
//! ```text
//!              ┌─── failed: Error(e) ───► Backoff ──┐  0.5 s × failures in a row
//!              │                                    │  (at most 5 s, ± 20 %)
//!   open ──► Read (pages of 1,000 at one revision R) ◄┘
//!              │ last page: Snapshot the first time, then Resynced (only the difference)
//!              ▼
//!            Watch (from R + 1) ──events──► Changed, one per revision
//!              │ ended, compacted ──────────────► Read at once
//!              └ ended, other error: Error(e) ──► Backoff
//!
//!   close(), or the last handle dropped ──► closed: no callback after it
//!   Client::close ──► one Error (CANCELLED), then the source no longer follows etcd
//! ```
//!
//! The watch itself resumes across reconnects (the client re-creates it from the first
//! revision it has not delivered), so a lost connection is not a resync: only a watch that
//! ends — its start compacted, or its stream given up — is.

mod sync;
mod view;

use crate::client::Client;
use crate::error::EtcdError;
use crate::ops::kv::{DeleteOptions, PutOptions};
use crate::pb::etcdserverpb::{DeleteRangeResponse, PutResponse};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::rc::Rc;
use sync::Shared;

/// What a [`ConfigSource`] tells its callback. The view has already changed when the
/// callback hears of it: read it through the handle the callback receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigEvent {
    /// The first full view, read at `revision`. Comes once, before any other event except
    /// `Error`.
    Snapshot {
        /// The revision of the read.
        revision: i64,
    },
    /// What one etcd revision (one put, delete or transaction) changed in the view, in key
    /// order. A revision that changes no value of the view gives no event: the same value
    /// put again, or, in hybrid mode, a value equal to the base's.
    Changed {
        /// The revision of the change.
        revision: i64,
        /// Each key changed, once, in key order.
        changes: Vec<Change>,
    },
    /// The watch could not go on (its start revision was compacted, or it failed), so the
    /// prefix was read again at `revision`: `changes` is the difference between the view
    /// before and after, in key order. Delivered even when empty, as the sign that the view
    /// is current again.
    Resynced {
        /// The revision of the new read.
        revision: i64,
        /// Each key whose value differs, once, in key order.
        changes: Vec<Change>,
    },
    /// A read or a watch failed; the source tries again by itself (after 0.5 s × the
    /// failures in a row, at most 5 s, ± 20 %), until it works or is closed. A compaction
    /// is not an error: it gives a `Resynced`.
    Error(EtcdError),
}

/// One key's change in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key, relative to the prefix.
    pub key: Bytes,
    /// The value now; `None`: the key left the view.
    pub value: Option<Bytes>,
    /// The value before; `None`: the key was not in the view.
    pub previous: Option<Bytes>,
}

/// A prefix of etcd mirrored into a local, sorted map of configuration values (Go's mirror
/// syncer, go-core's `ConfigSource`; see the [module docs](self)). Cheap to clone; clones
/// are one source.
///
/// Keys in the view and in events are relative to the prefix (the prefix stripped), values
/// are etcd's. The callback runs from the client's loop, with the source as its first
/// argument so that it can read the view (`get`, `entries`, `revision`) or `close` it; no
/// internal borrow is held while it runs. Like a watch, an open source keeps
/// [`Client::run`] turning.
///
/// ```no_run
/// # let client = evetcd::Client::new(evetcd::Config::new()).unwrap();
/// use evetcd::config_source::{ConfigEvent, ConfigSource};
/// let config = ConfigSource::open(&client, "app/config/", |source, event| match event {
///     ConfigEvent::Snapshot { revision } => {
///         println!("{} keys at revision {revision}", source.len());
///     }
///     ConfigEvent::Changed { changes, .. } | ConfigEvent::Resynced { changes, .. } => {
///         for c in changes {
///             println!("{:?}: {:?} -> {:?}", c.key, c.previous, c.value);
///         }
///     }
///     ConfigEvent::Error(e) => eprintln!("config source: {e} (retrying)"),
/// });
/// config.put("log_level", "debug", |res| assert!(res.is_ok()));
/// client.run(); // runs until config.close()
/// ```
///
/// Dropping the last clone closes the source (as [`close`](Self::close)); a clone captured
/// by its own callback would keep it open until `close`, so the callback receives the
/// source instead.
#[derive(Clone)]
pub struct ConfigSource(Rc<Shared>);

impl ConfigSource {
    /// Opens `prefix` (every key starting with it; an empty prefix is the whole keyspace):
    /// reads it in pages of 1,000 keys at one revision (on etcd 3.7+, the server's
    /// RangeStream chunks), delivers [`ConfigEvent::Snapshot`], then one
    /// [`ConfigEvent::Changed`] per revision. Returns at once; the callback never runs
    /// inside this call.
    pub fn open(
        client: &Client,
        prefix: impl Into<Bytes>,
        callback: impl FnMut(&ConfigSource, ConfigEvent) + 'static,
    ) -> ConfigSource {
        ConfigSource::hybrid(client, prefix, BTreeMap::new(), callback)
    }

    /// [`open`](Self::open) over `base` (relative keys to values; defaults parsed from a
    /// file, say): the view and the events are of the merged map, where etcd's value of a
    /// key wins and the base's shows where etcd has none. A key deleted in etcd falls back
    /// to its base value; a write that leaves the merged value as it was is no event. The
    /// base is never written to etcd. Until the snapshot arrives the view is the base alone.
    pub fn hybrid(
        client: &Client,
        prefix: impl Into<Bytes>,
        base: BTreeMap<Bytes, Bytes>,
        callback: impl FnMut(&ConfigSource, ConfigEvent) + 'static,
    ) -> ConfigSource {
        let shared = Shared::new(client, prefix.into(), base, Box::new(callback));
        let source = ConfigSource(Rc::new(shared));
        source.read();
        source
    }

    /// The value of `key` (relative to the prefix) in the view.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        self.0.state.borrow().view.get(key.as_ref()).cloned()
    }

    /// Every key and value of the view, sorted by key (bytewise, as etcd sorts).
    pub fn entries(&self) -> Vec<(Bytes, Bytes)> {
        self.0.state.borrow().view.entries()
    }

    /// How many keys the view holds.
    pub fn len(&self) -> usize {
        self.0.state.borrow().view.len()
    }

    /// Whether the view holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The etcd revision the view reflects: that of the last read, or of the last change
    /// (or watch progress notification) since; 0 before the snapshot. etcd's own revision
    /// may be later when keys outside the prefix changed since.
    pub fn revision(&self) -> i64 {
        self.0.state.borrow().view.revision()
    }

    /// Whether the view is being kept current: the snapshot was delivered and the watch
    /// runs. False before the snapshot, during a re-read or a backoff, and once closed. A
    /// watch resuming after a reconnect counts as running (it loses nothing).
    pub fn is_synced(&self) -> bool {
        self.0.is_synced()
    }

    /// Pages read so far, over every snapshot and re-read (each Range call, or each
    /// RangeStream chunk on etcd 3.7+): shows the paging at work.
    pub fn pages_read(&self) -> u64 {
        self.0.pages.get()
    }

    /// The prefix, as given.
    pub fn prefix(&self) -> &Bytes {
        &self.0.prefix
    }

    /// The client the source works through (for a [`Txn`](crate::Txn) over its keys: the
    /// full key is [`prefix`](Self::prefix) followed by the relative key).
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// Puts `value` at `key` (relative to the prefix) in etcd. The view changes when the
    /// watch reports the write (a [`ConfigEvent::Changed`], usually on a turn soon after
    /// `callback` ran), not before: the view only ever holds what etcd held at a revision.
    /// Works after `close` too (it is a plain put).
    pub fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        callback: impl FnOnce(Result<PutResponse, EtcdError>) + 'static,
    ) {
        let key = self.0.full_key(key.as_ref());
        self.0.client.put(key, value, PutOptions::new(), callback);
    }

    /// Deletes `key` (relative to the prefix) in etcd; the view changes when the watch
    /// reports it, as for [`put`](Self::put). In hybrid mode a key with a base value falls
    /// back to it; deleting a key only the base has changes nothing.
    pub fn delete(
        &self,
        key: impl AsRef<[u8]>,
        callback: impl FnOnce(Result<DeleteRangeResponse, EtcdError>) + 'static,
    ) {
        let key = self.0.full_key(key.as_ref());
        self.0.client.delete(key, DeleteOptions::new(), callback);
    }

    /// Stops the source: the read, watch or backoff in progress is cancelled, and from the
    /// moment this returns the callback never runs again (also when called from it). The
    /// view stays readable, frozen. Closing again is harmless.
    pub fn close(&self) {
        let callback = self.0.close();
        drop(callback); // outside every borrow: what it captured may use the source
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.state.borrow();
        f.debug_struct("ConfigSource")
            .field("prefix", &self.0.prefix)
            .field("revision", &state.view.revision())
            .field("keys", &state.view.len())
            .field("run", &state.run)
            .finish_non_exhaustive()
    }
}
