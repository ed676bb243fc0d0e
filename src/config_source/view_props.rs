//! Property tests of the view: whatever etcd's content before and after, and whatever the
//! base, the changes a resync reports are exactly the keys whose merged value differs, and
//! replaying the changes of any write sequence on the old merged view gives the new one.
//! Case counts: see `grpc::proptest_config`.

use super::*;
use proptest::prelude::*;

/// A few short keys and values, so that maps overlap often.
fn small_map() -> impl Strategy<Value = Map> {
    prop::collection::btree_map(key(), value(), 0..12)
}

fn key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0xff]), 0..3).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec!["1", "2", "3"]).prop_map(|s| Bytes::from_static(s.as_bytes()))
}

fn merged(view: &View) -> Map {
    view.entries().into_iter().collect()
}

/// `changes` applied to `map`, checking each change's previous value on the way.
fn replay(mut map: Map, changes: &[Change]) -> Result<Map, TestCaseError> {
    for c in changes {
        prop_assert_eq!(map.get(&c.key), c.previous.as_ref(), "previous of {:?}", c.key);
        prop_assert_ne!(&c.value, &c.previous, "a change that changes nothing");
        match &c.value {
            Some(v) => map.insert(c.key.clone(), v.clone()),
            None => map.remove(&c.key),
        };
    }
    Ok(map)
}

fn sorted_and_unique(changes: &[Change]) -> bool {
    changes.windows(2).all(|w| w[0].key < w[1].key)
}

proptest! {
    #![proptest_config(crate::grpc::proptest_config(256))]

    #[test]
    fn a_resync_reports_exactly_the_merged_difference(
        base in small_map(), old in small_map(), new in small_map(),
    ) {
        let mut view = View::new(base);
        view.replace(old, 1);
        let before = merged(&view);
        let changes = view.replace(new, 2);
        let after = merged(&view);
        prop_assert!(sorted_and_unique(&changes));
        prop_assert_eq!(replay(before.clone(), &changes)?, after.clone());
        // Exactly the keys that differ, none more.
        let differing = diff(&before, &after).len();
        prop_assert_eq!(changes.len(), differing);
        prop_assert_eq!(view.len(), after.len());
    }

    #[test]
    fn each_revisions_changes_turn_the_old_view_into_the_new(
        base in small_map(),
        start in small_map(),
        revisions in prop::collection::vec(
            prop::collection::vec((key(), prop::option::of(value())), 0..5), 0..10),
    ) {
        let mut view = View::new(base);
        view.replace(start, 1);
        for (i, writes) in revisions.into_iter().enumerate() {
            let before = merged(&view);
            let changes = view.apply(2 + i as i64, writes);
            prop_assert!(sorted_and_unique(&changes));
            prop_assert_eq!(replay(before, &changes)?, merged(&view));
            prop_assert_eq!(view.revision(), 2 + i as i64);
        }
    }
}
