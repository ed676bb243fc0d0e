//! The view a [`ConfigSource`](super::ConfigSource) keeps: etcd's values under the prefix
//! (keys relative to it), the hybrid mode's base map beneath them, and the revision they
//! reflect. Pure data: no client, no IO, so the diff of two snapshots and the overlay are
//! tested here.
//!
//! The merged value of a key is etcd's when etcd has the key, else the base's. Every change
//! reported is a change of the merged value: a write that leaves it as it was (the same value
//! put again, or a key put in etcd with the value the base already gives) is no change.

use super::Change;
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Keys (relative to the prefix) to values, sorted by key as etcd sorts them (bytewise).
pub(super) type Map = BTreeMap<Bytes, Bytes>;

/// One key's new value in a revision: `None` deletes it.
pub(super) type Write = (Bytes, Option<Bytes>);

/// etcd's values over a base, at a revision.
#[derive(Debug, Default)]
pub(super) struct View {
    etcd: Map,
    base: Map,
    revision: i64,
}

impl View {
    /// An empty view at revision 0 over `base` (empty for a plain source).
    pub(super) fn new(base: Map) -> View {
        View { etcd: Map::new(), base, revision: 0 }
    }

    /// The merged value of `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.etcd.get(key).or_else(|| self.base.get(key))
    }

    /// The revision the view reflects: the snapshot's, or the last change's (or progress
    /// notification's) since.
    pub(super) fn revision(&self) -> i64 {
        self.revision
    }

    /// Every merged entry, in key order.
    pub(super) fn entries(&self) -> Vec<(Bytes, Bytes)> {
        join(&self.base, &self.etcd)
            .filter_map(|(key, base, etcd)| etcd.or(base).map(|v| (key.clone(), v.clone())))
            .collect()
    }

    /// How many keys the merged view has.
    pub(super) fn len(&self) -> usize {
        let base_only = self.base.keys().filter(|k| !self.etcd.contains_key(*k)).count();
        self.etcd.len() + base_only
    }

    /// Applies the writes of one etcd revision (a transaction: each key's last write wins)
    /// and returns the changes of the merged view, in key order. Moves the revision forward
    /// (never back).
    pub(super) fn apply(&mut self, revision: i64, writes: Vec<Write>) -> Vec<Change> {
        // The merged value of each key written, as it was before this revision.
        let mut before: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        for (key, value) in writes {
            if !before.contains_key(&key) {
                before.insert(key.clone(), self.get(&key).cloned());
            }
            match value {
                Some(value) => self.etcd.insert(key, value),
                None => self.etcd.remove(&key),
            };
        }
        self.advance(revision);
        before
            .into_iter()
            .filter_map(|(key, previous)| {
                let value = self.get(&key).cloned();
                (value != previous).then_some(Change { key, value, previous })
            })
            .collect()
    }

    /// Replaces etcd's part with a snapshot read at `revision` and returns how the merged
    /// view changed, in key order (a resync delivers exactly this).
    pub(super) fn replace(&mut self, etcd: Map, revision: i64) -> Vec<Change> {
        let changes = diff(&self.etcd, &etcd)
            .into_iter()
            .filter_map(|(key, old, new)| {
                let base = self.base.get(&key);
                let previous = old.or_else(|| base.cloned());
                let value = new.or_else(|| base.cloned());
                (value != previous).then_some(Change { key, value, previous })
            })
            .collect();
        self.etcd = etcd;
        self.revision = revision;
        changes
    }

    /// etcd said that nothing under the prefix changed up to `revision`.
    pub(super) fn advance(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }
}

/// The keys whose value differs between `old` and `new`, with both values (`None`: absent
/// there), in key order. One pass over both maps.
pub(super) fn diff(old: &Map, new: &Map) -> Vec<(Bytes, Option<Bytes>, Option<Bytes>)> {
    join(old, new)
        .filter(|(_, a, b)| a != b)
        .map(|(key, a, b)| (key.clone(), a.cloned(), b.cloned()))
        .collect()
}

/// One key of [`join`]: the key, its value in the first map, its value in the second.
type Joined<'a> = (&'a Bytes, Option<&'a Bytes>, Option<&'a Bytes>);

/// Walks two sorted maps side by side: every key of either once, in order.
fn join<'a>(a: &'a Map, b: &'a Map) -> impl Iterator<Item = Joined<'a>> + 'a {
    let mut a = a.iter().peekable();
    let mut b = b.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => a.next().map(|(k, v)| (k, Some(v), None)),
            Ordering::Greater => b.next().map(|(k, v)| (k, None, Some(v))),
            Ordering::Equal => {
                let (k, va) = a.next()?;
                let (_, vb) = b.next()?;
                Some((k, Some(va), Some(vb)))
            }
        }
    })
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "view_props.rs"]
mod props;
