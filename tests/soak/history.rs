//! Ground truth: etcd's own history of `/soak/`, read after the run from a healthy member
//! (directly, not through a proxy), with nothing else going on.
//!
//! Watches with `prev_kv` replay every event. They are read with the client under test, so
//! the result is checked before it is trusted: every revision from 2 to the last must be
//! there (every write of the soak is under `/soak/`, so each revision has an event), and
//! replaying the events must give exactly what a Range at the last revision returns.
//!
//! One watch from revision 1 would do, but etcd catches an old watch up 1000 revisions per
//! round, each round reading every revision from the watch's position to the end: a long
//! run's million revisions would take hours. So the history is read in up to [`WINDOWS`]
//! windows, one watch each, all catching up in the same rounds, each cancelled once it
//! passed its window's end.

use super::records::Ev;
use crate::support::client::{block, drive_until};
use evetcd::{Client, Config, GetOptions, Watch, WatchOptions};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const ROOT: &str = "/soak/";
/// Most watches the history is read with (etcd syncs up to 512 per round).
const WINDOWS: i64 = 128;
/// Revisions per window at least: one catch-up round's worth.
const MIN_WINDOW: i64 = 1000;
/// How long reading the history may take.
const READ_LIMIT: Duration = Duration::from_secs(600);

/// Every event under [`ROOT`], in revision order (within a revision, as etcd sends them).
pub struct History {
    pub events: Vec<Ev>,
    pub last_rev: i64,
}

/// A client straight to the members (no proxy), for the harness's own reads and writes.
pub fn harness_client(endpoints: &[String]) -> Client {
    Client::new(Config::new().endpoints(endpoints).timeout(Duration::from_secs(10)))
        .expect("harness config")
}

/// Reads and self-checks the history; `Err` says why it cannot be trusted.
pub fn fetch(endpoints: &[String]) -> Result<History, String> {
    let c = harness_client(endpoints);
    let opts = GetOptions::new().prefix(true);
    let now = block(&c, |cb| c.get(ROOT, opts, cb)).map_err(|e| format!("range: {e}"))?;
    let last_rev = now.header.as_ref().map_or(0, |h| h.revision);

    let events = read_windows(&c, last_rev)?;

    // Every revision 2..=last_rev, in order.
    let mut expect = 2;
    for ev in &events {
        if ev.rev == expect {
            expect += 1;
        } else if ev.rev != expect - 1 {
            return Err(format!("history jumps from revision {} to {}", expect - 1, ev.rev));
        }
    }
    if expect != last_rev + 1 {
        return Err(format!("history ends at revision {}, Range says {last_rev}", expect - 1));
    }

    // Replaying it gives the Range at last_rev.
    let mut state: BTreeMap<&str, (&str, i64, i64, i64, i64)> = BTreeMap::new();
    for ev in &events {
        if ev.put {
            state.insert(&ev.key, (&ev.value, ev.rev, ev.create, ev.version, ev.lease));
        } else {
            state.remove(ev.key.as_str());
        }
    }
    let range: Vec<(String, String, i64, i64, i64, i64)> = now
        .kvs
        .iter()
        .map(|kv| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (
                text(&kv.key),
                text(&kv.value),
                kv.mod_revision,
                kv.create_revision,
                kv.version,
                kv.lease,
            )
        })
        .collect();
    let replayed: Vec<(String, String, i64, i64, i64, i64)> =
        state.iter().map(|(k, v)| (k.to_string(), v.0.to_string(), v.1, v.2, v.3, v.4)).collect();
    if range != replayed {
        let diff = range.iter().zip(&replayed).find(|(a, b)| a != b);
        return Err(format!(
            "replaying the history gives {} keys, Range {} keys; first difference: {diff:?}",
            replayed.len(),
            range.len()
        ));
    }
    Ok(History { events, last_rev })
}

/// One window of the history: the events of revisions `from..=to`.
struct Window {
    from: i64,
    to: i64,
    events: Rc<RefCell<Vec<Ev>>>,
    /// Delivered revision `to` (every revision has an event), or failed.
    done: Rc<Cell<bool>>,
    watch: Option<Watch>,
}

/// Every event of revisions 1..=`last_rev` under [`ROOT`], read in windows.
fn read_windows(c: &Client, last_rev: i64) -> Result<Vec<Ev>, String> {
    let step = MIN_WINDOW.max((last_rev + WINDOWS - 1) / WINDOWS);
    let failed: Rc<RefCell<Option<String>>> = Rc::default();
    let mut windows: Vec<Window> = (0..)
        .map(|i| 1 + i * step)
        .take_while(|&from| from <= last_rev)
        .map(|from| {
            let to = (from + step - 1).min(last_rev);
            let (events, done) = (Rc::new(RefCell::new(Vec::new())), Rc::new(Cell::new(false)));
            let (e, d, f) = (events.clone(), done.clone(), failed.clone());
            let options = WatchOptions::new().prefix(true).start_revision(from).prev_kv(true);
            let watch = c.watch(ROOT, options, move |r| match r {
                Ok(resp) => {
                    let mut e = e.borrow_mut();
                    for ev in resp.events.iter().map(Ev::of) {
                        d.set(d.get() || ev.rev >= to);
                        if ev.rev <= to {
                            e.push(ev);
                        }
                    }
                }
                Err(err) => {
                    d.set(true);
                    *f.borrow_mut() = Some(format!("watch from revision {from}: {err}"));
                }
            });
            Window { from, to, events, done, watch: Some(watch) }
        })
        .collect();
    let deadline = Instant::now() + READ_LIMIT;
    let mut timed_out = false;
    drive_until(&[c], READ_LIMIT + Duration::from_secs(10), || {
        for w in windows.iter_mut().filter(|w| w.done.get()) {
            if let Some(watch) = w.watch.take() {
                watch.cancel(|_| ());
            }
        }
        timed_out = Instant::now() >= deadline;
        timed_out || windows.iter().all(|w| w.done.get())
    });
    for w in &mut windows {
        if let Some(watch) = w.watch.take() {
            watch.cancel(|_| ());
        }
    }
    c.run();
    if let Some(e) = failed.borrow().clone() {
        return Err(e);
    }
    if timed_out {
        let left: Vec<String> = windows
            .iter()
            .filter(|w| !w.done.get())
            .map(|w| format!("{}..={}", w.from, w.to))
            .collect();
        return Err(format!("not read within {READ_LIMIT:?}: windows {left:?}"));
    }
    Ok(windows.iter_mut().flat_map(|w| std::mem::take(&mut *w.events.borrow_mut())).collect())
}
