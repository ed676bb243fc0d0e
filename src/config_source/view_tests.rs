//! Unit tests of the view: the diff of two sorted snapshots, the hybrid overlay, and which
//! writes are visible as changes.

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn map(pairs: &[(&str, &str)]) -> Map {
    pairs.iter().map(|(k, v)| (b(k), b(v))).collect()
}

fn change(key: &str, value: Option<&str>, previous: Option<&str>) -> Change {
    Change { key: b(key), value: value.map(b), previous: previous.map(b) }
}

fn put(key: &str, value: &str) -> Write {
    (b(key), Some(b(value)))
}

fn del(key: &str) -> Write {
    (b(key), None)
}

fn entries(view: &View) -> Vec<(String, String)> {
    let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    view.entries().iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn diff_lists_added_removed_and_changed_keys_in_key_order() {
    let old = map(&[("a", "1"), ("b", "2"), ("d", "4"), ("e", "5")]);
    let new = map(&[("b", "2"), ("c", "3"), ("d", "40"), ("f", "6")]);
    let got = diff(&old, &new);
    let want = vec![
        (b("a"), Some(b("1")), None),
        (b("c"), None, Some(b("3"))),
        (b("d"), Some(b("4")), Some(b("40"))),
        (b("e"), Some(b("5")), None),
        (b("f"), None, Some(b("6"))),
    ];
    assert_eq!(got, want);
    assert!(diff(&old, &old).is_empty());
    assert!(diff(&Map::new(), &Map::new()).is_empty());
    assert_eq!(diff(&Map::new(), &new).len(), 4);
    assert_eq!(diff(&old, &Map::new()).len(), 4);
}

#[test]
fn diff_orders_keys_bytewise_as_etcd_does() {
    // "a/b" < "a0" < "a\xff": etcd compares raw bytes.
    let old: Map = [(b("a/b"), b("1")), (Bytes::from_static(b"a\xff"), b("2"))].into();
    let new: Map = [(b("a0"), b("3"))].into();
    let keys: Vec<Bytes> = diff(&old, &new).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, [b("a/b"), b("a0"), Bytes::from_static(b"a\xff")]);
}

#[test]
fn a_plain_view_reports_each_revision_as_its_changes() {
    let mut view = View::new(Map::new());
    assert_eq!((view.revision(), view.len()), (0, 0));
    assert!(view.replace(map(&[("x", "1"), ("y", "2")]), 10).len() == 2);
    assert_eq!(view.revision(), 10);
    assert_eq!(entries(&view), pairs(&[("x", "1"), ("y", "2")]));

    // A transaction: sorted by key, each key once.
    let got = view.apply(11, vec![put("z", "3"), del("x")]);
    assert_eq!(got, [change("x", None, Some("1")), change("z", Some("3"), None)]);
    assert_eq!(view.revision(), 11);
    // The same value put again, and a delete of a key not there: no change, but the
    // revision moves on.
    assert!(view.apply(12, vec![put("y", "2")]).is_empty());
    assert!(view.apply(13, vec![del("nope")]).is_empty());
    assert_eq!(view.revision(), 13);
    // Written twice in one revision: the last write, against the value before it.
    let got = view.apply(14, vec![put("y", "a"), put("y", "b")]);
    assert_eq!(got, [change("y", Some("b"), Some("2"))]);
    let got = view.apply(15, vec![put("w", "1"), del("w")]);
    assert!(got.is_empty(), "created and deleted in one revision: nothing visible");
    // The revision never goes back.
    view.apply(9, vec![]);
    assert_eq!(view.revision(), 15);
    view.advance(20);
    assert_eq!(view.revision(), 20);
    assert_eq!(entries(&view), pairs(&[("y", "b"), ("z", "3")]));
    assert_eq!(view.get(b"y"), Some(&b("b")));
    assert_eq!(view.get(b"x"), None);
}

#[test]
fn the_hybrid_overlay_lays_etcd_over_the_base() {
    let mut view = View::new(map(&[("a", "1"), ("b", "2"), ("c", "3")]));
    assert_eq!(entries(&view), pairs(&[("a", "1"), ("b", "2"), ("c", "3")]));
    assert_eq!(view.len(), 3);
    // The first snapshot: etcd's b overrides, d is etcd's alone.
    let got = view.replace(map(&[("b", "20"), ("d", "4")]), 5);
    assert_eq!(got, [change("b", Some("20"), Some("2")), change("d", Some("4"), None)]);
    assert_eq!(entries(&view), pairs(&[("a", "1"), ("b", "20"), ("c", "3"), ("d", "4")]));
    assert_eq!(view.len(), 4);
    assert_eq!(view.get(b"a"), Some(&b("1")));
    assert_eq!(view.get(b"b"), Some(&b("20")));
}

#[test]
fn hybrid_changes_are_those_of_the_merged_view() {
    let mut view = View::new(map(&[("a", "1"), ("b", "2"), ("c", "3")]));
    view.replace(map(&[("b", "20"), ("d", "4")]), 5);
    // etcd puts the value the base already gives: invisible; c changes.
    let got = view.apply(6, vec![put("a", "1"), put("c", "30")]);
    assert_eq!(got, [change("c", Some("30"), Some("3"))]);
    // Deleted in etcd: falls back to the base value.
    assert_eq!(view.apply(7, vec![del("b")]), [change("b", Some("2"), Some("20"))]);
    // Deleted in etcd, no base value: gone.
    assert_eq!(view.apply(8, vec![del("d")]), [change("d", None, Some("4"))]);
    // Deleted in etcd with the base value equal to etcd's: invisible.
    assert!(view.apply(9, vec![del("a")]).is_empty());
    assert_eq!(entries(&view), pairs(&[("a", "1"), ("b", "2"), ("c", "30")]));
    assert_eq!(view.len(), 3);
}

#[test]
fn a_hybrid_resync_delivers_only_merged_differences() {
    let mut view = View::new(map(&[("a", "1"), ("b", "2")]));
    view.replace(map(&[("a", "10"), ("c", "3"), ("e", "5")]), 5);
    // While blind: a deleted in etcd (back to base 1), b put with the base's value
    // (invisible), c changed, e unchanged, f added.
    let now = map(&[("b", "2"), ("c", "30"), ("e", "5"), ("f", "6")]);
    let got = view.replace(now, 9);
    let want = [
        change("a", Some("1"), Some("10")),
        change("c", Some("30"), Some("3")),
        change("f", Some("6"), None),
    ];
    assert_eq!(got, want);
    assert_eq!(view.revision(), 9);
    let all = [("a", "1"), ("b", "2"), ("c", "30"), ("e", "5"), ("f", "6")];
    assert_eq!(entries(&view), pairs(&all));
    // The same snapshot again: no difference.
    let again = map(&[("b", "2"), ("c", "30"), ("e", "5"), ("f", "6")]);
    assert!(view.replace(again, 12).is_empty());
    assert_eq!(view.revision(), 12);
}
