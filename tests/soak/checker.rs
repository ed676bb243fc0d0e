//! The checks, run after the load against etcd's own history (see `history`). Each returns
//! violation lines, one per problem, with what is needed to find it in the run's output.

use super::history::History;
use super::load::locker::{count_of, COUNTER, LOCK};
use super::records::{ClientReport, Ev, LeaseLog, WatchLog};
use super::schedule::Timeline;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Lines per kind of problem and watcher, then a count of the rest.
const PER_KIND: usize = 3;

/// Collects lines of one kind, keeping the first [`PER_KIND`].
struct Lines<'a> {
    out: &'a mut Vec<String>,
    head: String,
    kinds: HashMap<&'static str, usize>,
}

impl<'a> Lines<'a> {
    fn new(out: &'a mut Vec<String>, head: String) -> Self {
        Lines { out, head, kinds: HashMap::new() }
    }

    fn add(&mut self, kind: &'static str, line: String) {
        let n = self.kinds.entry(kind).or_default();
        *n += 1;
        if *n <= PER_KIND {
            self.out.push(format!("{}: {kind}: {line}", self.head));
        }
    }

    fn finish(self) {
        for (kind, n) in self.kinds {
            if n > PER_KIND {
                self.out.push(format!("{}: {kind}: ... and {} more", self.head, n - PER_KIND));
            }
        }
    }
}

/// etcd's watch guarantees for one watcher, against the history:
/// - ordered: revisions never go down within a response and strictly increase from one
///   response to the next;
/// - unique: no event (revision, key) delivered twice;
/// - atomic: all the events of one revision in one response;
/// - reliable: every event of its range from its start revision to the last revision it
///   delivered is there, exactly as etcd has it (value, revisions, version, lease, and
///   prev_kv when asked); with the fence, that it got to the end;
/// - resumable (after every fault and every churn the watch went on where it stopped)
///   follows from reliable and unique over the whole run.
///
/// Plus: it never ended with an error and no callback ran after its cancel.
///
/// One difference is etcd's, not the client's, and only noted: events without prev_kv in
/// the first response after a (re-)creation. etcd 3.5's watch server registers a new watcher
/// before it records that the watch asked for prev_kv, and fills prev_kv in as it takes
/// events from the watcher, so events taken in between go out without it (seen once in a
/// 10-minute run, on a watch re-created under load).
pub fn check_watch(
    w: &WatchLog,
    history: &History,
    fence: i64,
    out: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let head = format!("watch {} ({}, {} from rev {})", w.name, w.client, w.prefix, w.start_rev);
    let mut lines = Lines::new(out, head);
    for e in &w.errors {
        lines.add("ended with an error", e.clone());
    }
    for l in &w.late {
        lines.add("callback after its cancel or end", l.clone());
    }

    let mut seen: HashMap<(i64, &str), usize> = HashMap::new();
    let mut response_of_rev: HashMap<i64, usize> = HashMap::new();
    let mut split: HashSet<i64> = HashSet::new();
    let mut last_rev = 0;
    for (i, response) in w.responses.iter().enumerate() {
        let Some(first) = response.first().map(|ev| ev.rev) else { continue };
        if first <= last_rev {
            lines.add(
                "ordered",
                format!("response #{i} starts at rev {first}, the one before ended at {last_rev}"),
            );
        }
        let mut prev = first;
        for ev in response {
            if ev.rev < prev {
                lines.add("ordered", format!("response #{i}: rev {} after rev {prev}", ev.rev));
            }
            prev = ev.rev;
            if let Some(j) = seen.insert((ev.rev, ev.key.as_str()), i) {
                lines.add("unique", format!("{} delivered in responses #{j} and #{i}", ev.short()));
            }
            match response_of_rev.insert(ev.rev, i) {
                Some(j) if j != i && split.insert(ev.rev) => lines.add(
                    "atomic",
                    format!("revision {} split across responses #{j} and #{i}", ev.rev),
                ),
                _ => {}
            }
            last_rev = last_rev.max(ev.rev);
        }
    }

    let wanted = |ev: &Ev| {
        ev.key.starts_with(&w.prefix) && ev.rev >= w.start_rev && (ev.put || !w.no_delete)
    };
    let as_delivered =
        |ev: &Ev| Ev { prev: if w.prev_kv { ev.prev.clone() } else { None }, ..ev.clone() };
    let expected: HashMap<(i64, &str), Ev> = history
        .events
        .iter()
        .filter(|ev| wanted(ev) && ev.rev <= last_rev)
        .map(|ev| ((ev.rev, ev.key.as_str()), as_delivered(ev)))
        .collect();
    let mut missing: Vec<&Ev> = history
        .events
        .iter()
        .filter(|ev| {
            wanted(ev) && ev.rev <= last_rev && !seen.contains_key(&(ev.rev, ev.key.as_str()))
        })
        .collect();
    missing.sort_by_key(|ev| ev.rev);
    if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
        lines.add(
            "reliable",
            format!(
                "{} events missing (revisions {} to {}), first {}",
                missing.len(),
                first.rev,
                last.rev,
                first.short()
            ),
        );
    }
    let mut server_race = Vec::new();
    for (i, response) in w.responses.iter().enumerate() {
        for ev in response {
            match expected.get(&(ev.rev, ev.key.as_str())) {
                None => lines.add(
                    "reliable",
                    format!("{} is not in etcd's history for this watch", ev.short()),
                ),
                Some(truth) if prev_kv_race(w, i, ev, truth) => server_race.push(ev.short()),
                Some(truth) if truth != ev => {
                    lines.add("reliable", format!("event differs: got {ev:?}, etcd has {truth:?}"))
                }
                Some(_) => {}
            }
        }
    }
    if let (Some(first), n) = (server_race.first(), server_race.len()) {
        notes.push(format!(
            "watch {} ({}): {n} events without prev_kv in the first response after a \
             (re-)creation, first {first}: etcd's race, not the client's (v3rpc/watch.go \
             registers the watcher before it records that the watch wants prev_kv; events the \
             watcher gets in between are sent without it)",
            w.name, w.client
        ));
    }
    if w.errors.is_empty() && last_rev < fence {
        lines.add(
            "reliable",
            format!("never delivered the fence revision {fence} (last {last_rev})"),
        );
    }
    lines.finish();
}

/// Whether `ev`, in response `i` of `w`, differs from etcd's `truth` only by a missing
/// prev_kv, in the first response after the watch was (re-)created: the window of a race in
/// etcd's watch server (see `check_watch`). A client that lost the option would lose it on
/// every event of the incarnation, which stays a violation.
fn prev_kv_race(w: &WatchLog, i: usize, ev: &Ev, truth: &Ev) -> bool {
    w.prev_kv
        && ev.prev.is_none()
        && truth.prev.is_some()
        && Ev { prev: None, ..truth.clone() } == *ev
        && w.first_after_create.contains(&i)
}

/// No lease expired while a working quorum stayed reachable for a whole TTL window.
///
/// The expiry happened between a TTL after the last successful renewal (minus a second for
/// the round trip) and when the client noticed it, so its TTL window lies within
/// `[last renewal - 1 s, noticed]`. If that span holds a stretch of at least the TTL without
/// any no-quorum window, the client had a full TTL with a quorum to renew in and did not: a
/// violation. Otherwise the quorum losses are the excuse, noted rather than counted.
pub fn check_leases(
    leases: &[LeaseLog],
    timeline: &Timeline,
    out: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    for l in leases {
        let Some((at, how)) = &l.expired else { continue };
        let (from, to) = (l.last_ok - 1.0, *at);
        let stretch = timeline.longest_quorum_stretch(from, to);
        let what = format!(
            "lease {:x} ({}, TTL {} s, granted {:.1}s, {} renewals, the last at {:.1}s) expired, \
             noticed at {at:.1}s: {how}",
            l.id, l.client, l.ttl, l.granted_at, l.renewals, l.last_ok
        );
        if stretch >= l.ttl as f64 {
            out.push(format!(
                "lease: {what}; a quorum was reachable for {stretch:.1}s on end in that span"
            ));
        } else {
            notes.push(format!("{what}; excused: a quorum for at most {stretch:.1}s on end"));
        }
    }
}

/// Mutual exclusion from the history: every counter write was made by the lease whose lock
/// key was the lock's owner (the oldest key under the lock's prefix) at that revision, and
/// the counter went up by one each time.
pub fn check_lock_history(history: &History, out: &mut Vec<String>) -> u64 {
    let prefix = format!("{LOCK}/");
    let mut keys: BTreeMap<String, i64> = BTreeMap::new();
    let mut last: Option<u64> = None;
    let mut writes = 0;
    for ev in &history.events {
        if let Some(lease) = ev.key.strip_prefix(&prefix) {
            if ev.put {
                keys.entry(lease.to_string()).or_insert(ev.create);
            } else {
                keys.remove(lease);
            }
        }
        if ev.key != COUNTER || !ev.put {
            continue;
        }
        writes += 1;
        let owner = keys.iter().min_by_key(|(_, create)| **create).map(|(lease, _)| lease.clone());
        let by = ev.value.split(';').find_map(|f| f.strip_prefix("by=")).unwrap_or("?");
        match owner {
            Some(owner) if owner == by => {}
            Some(owner) => out.push(format!(
                "mutual exclusion: {} written by lease {by} while lease {owner} owned the lock",
                ev.short()
            )),
            None => out.push(format!(
                "mutual exclusion: {} written while nobody held the lock",
                ev.short()
            )),
        }
        let n = count_of(ev.value.as_bytes());
        if let Some(prev) = last {
            if n != prev + 1 {
                out.push(format!(
                    "mutual exclusion: counter went from {prev} to {n} at rev {}",
                    ev.rev
                ));
            }
        }
        last = Some(n);
    }
    writes
}

/// The client's heap (bytes the library allocated on the client's thread and still holds,
/// see `heap`): flat across the run, with and without its connection, and nothing left once
/// the client is dropped. `bounds` = (flat, closed, dropped).
pub fn check_heap(r: &ClientReport, bounds: (i64, i64, i64), out: &mut Vec<String>) {
    let (flat, closed, dropped) = bounds;
    let h = r.heap;
    let mut check = |what: &str, grown: i64, bound: i64| {
        if grown > bound {
            out.push(format!("heap: {}: {what}: {grown:+} bytes (bound {bound})", r.name));
        }
    };
    check("after the run, connection open, against the baseline", h.end - h.baseline, flat);
    check("after close(), against right after Client::new", h.closed - h.created, closed);
    check("after dropping the client, against before it", h.dropped - h.before_client, dropped);
}

/// Every call's callback ran exactly once: issued equals completed.
pub fn check_calls(r: &ClientReport, out: &mut Vec<String>) {
    if r.issued != r.completed {
        out.push(format!(
            "calls: {} issued {} calls, {} callbacks ran; never ran: {:?}",
            r.name, r.issued, r.completed, r.outstanding
        ));
    }
}
